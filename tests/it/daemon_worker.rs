//! The daemon's worker on paused time, with scripted cycles: triggers are coalesced, webhook
//! bursts debounced, failures retried with capped backoff, and a stop waits for the cycle.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farmsync::daemon::{Backoff, Cycle, CycleResult, Trigger, Worker, WorkerOptions, WorkerStats};
use farmsync::sync::engine::CycleKind;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One scripted cycle: how long it takes, and whether it fails.
#[derive(Clone, Copy)]
struct Step {
    takes: Duration,
    fails: bool,
}

fn ok(secs: f64) -> Step {
    Step {
        takes: Duration::from_secs_f64(secs),
        fails: false,
    }
}

fn fail(secs: f64) -> Step {
    Step {
        takes: Duration::from_secs_f64(secs),
        fails: true,
    }
}

#[derive(Default)]
struct Script {
    steps: Mutex<VecDeque<Step>>,
    /// A sweep, and a quick cycle, running now (each kind runs one at a time).
    running: [AtomicBool; 2],
    overlaps: AtomicU32,
    saw_cancel: AtomicBool,
    /// The kind of each cycle run, in order.
    kinds: Mutex<Vec<CycleKind>>,
}

/// A cycle that follows the script (then succeeds at once), reports each start, and counts
/// overlapping runs.
#[derive(Clone)]
struct Scripted {
    script: Arc<Script>,
    started: mpsc::UnboundedSender<Instant>,
}

impl Cycle for Scripted {
    async fn run(&self, kind: CycleKind, cancel: CancellationToken) -> CycleResult {
        self.script.kinds.lock().unwrap().push(kind);
        let lane = usize::from(kind == CycleKind::Quick);
        if self.script.running[lane].swap(true, Ordering::SeqCst) {
            self.script.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let _ = self.started.send(Instant::now());
        let step = self
            .script
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(ok(0.0));
        tokio::select! {
            _ = tokio::time::sleep(step.takes) => {}
            _ = cancel.cancelled() => {
                // Finishing and settling the write in flight takes a moment.
                self.script.saw_cancel.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        self.script.running[lane].store(false, Ordering::SeqCst);
        CycleResult {
            failed: step.fails,
            summary: format!("failed: {}", step.fails),
        }
    }
}

struct Harness {
    triggers: mpsc::Sender<Trigger>,
    started: mpsc::UnboundedReceiver<Instant>,
    stop: CancellationToken,
    worker: JoinHandle<WorkerStats>,
    script: Arc<Script>,
    t0: Instant,
}

impl Harness {
    fn start(steps: Vec<Step>, options: WorkerOptions) -> Harness {
        let script = Arc::new(Script {
            steps: Mutex::new(steps.into()),
            ..Script::default()
        });
        let (started_tx, started) = mpsc::unbounded_channel();
        let (triggers, rx) = farmsync::daemon::trigger_channel();
        let stop = CancellationToken::new();
        let cycle = Scripted {
            script: script.clone(),
            started: started_tx,
        };
        let t0 = Instant::now();
        let worker = tokio::spawn(Worker::new(cycle, rx, stop.clone(), options).run());
        Harness {
            triggers,
            started,
            stop,
            worker,
            script,
            t0,
        }
    }

    /// Seconds since the harness started, when the next cycle starts.
    async fn next_start(&mut self) -> f64 {
        let at = self.started.recv().await.expect("a cycle starts");
        (at - self.t0).as_secs_f64()
    }

    async fn send_at(&self, secs: f64, trigger: Trigger) {
        tokio::time::sleep_until(self.t0 + Duration::from_secs_f64(secs)).await;
        self.triggers.send(trigger).await.unwrap();
    }

    /// No cycle starts within the next `secs`.
    async fn quiet_for(&mut self, secs: u64) {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        assert!(
            self.started.try_recv().is_err(),
            "no cycle was expected in these {secs} s"
        );
    }

    async fn stop(self) -> (WorkerStats, Arc<Script>) {
        self.stop.cancel();
        let stats = self.worker.await.unwrap();
        assert_eq!(self.script.overlaps.load(Ordering::SeqCst), 0);
        (stats, self.script)
    }
}

fn options(debounce_ms: u64, base_secs: u64, cap_secs: u64) -> WorkerOptions {
    WorkerOptions {
        debounce: Duration::from_millis(debounce_ms),
        backoff: Backoff {
            base: Duration::from_secs(base_secs),
            cap: Duration::from_secs(cap_secs),
        },
    }
}

fn near(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 0.05
}

#[tokio::test(start_paused = true)]
async fn fire_times_arriving_mid_sweep_become_one_follow_up_sweep() {
    let mut h = Harness::start(vec![ok(10.0), ok(3.0)], options(500, 5, 60));
    assert!(near(h.next_start().await, 0.0));
    h.send_at(1.0, Trigger::Schedule).await;
    h.send_at(3.0, Trigger::Schedule).await;

    let second = h.next_start().await;
    assert!(
        near(second, 10.0),
        "the follow-up starts when the first ends: {second}"
    );
    h.quiet_for(120).await;
    let (stats, script) = h.stop().await;
    assert_eq!(
        stats,
        WorkerStats {
            cycles: 2,
            coalesced: 2,
            retries: 0
        }
    );
    assert_eq!(kinds(&script), vec![CycleKind::Sweep; 2]);
}

#[tokio::test(start_paused = true)]
async fn a_webhook_during_a_long_sweep_runs_its_quick_cycle_at_once() {
    use CycleKind::{Quick, Sweep};
    // The start-up sweep takes 100 s (a long CRM listing at a low rate).
    let mut h = Harness::start(vec![ok(100.0)], options(500, 5, 60));
    assert!(near(h.next_start().await, 0.0));
    h.send_at(5.0, Trigger::Webhook).await;
    let quick = h.next_start().await;
    assert!(near(quick, 5.5), "not behind the sweep: {quick}");
    h.send_at(30.0, Trigger::Quick).await;
    assert!(near(h.next_start().await, 30.0));
    let (stats, script) = h.stop().await;
    assert_eq!(kinds(&script), vec![Sweep, Quick, Quick]);
    assert_eq!(stats.coalesced, 0);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_webhooks_costs_one_cycle_half_a_second_after_the_first() {
    let mut h = Harness::start(vec![], options(500, 5, 60));
    assert!(near(h.next_start().await, 0.0));
    for i in 0..5 {
        h.send_at(10.0 + 0.1 * f64::from(i), Trigger::Webhook).await;
    }
    let start = h.next_start().await;
    assert!(
        near(start, 10.5),
        "debounced from the first delivery: {start}"
    );
    h.quiet_for(60).await;
    let (stats, _) = h.stop().await;
    assert_eq!(stats.cycles, 2);
    assert_eq!(stats.coalesced, 0, "none arrived mid-cycle");
}

#[tokio::test(start_paused = true)]
async fn a_fire_time_starts_a_cycle_at_once() {
    let mut h = Harness::start(vec![], options(500, 5, 60));
    h.next_start().await;
    h.send_at(30.0, Trigger::Schedule).await;
    assert!(near(h.next_start().await, 30.0));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failed_cycles_are_retried_with_doubling_jittered_capped_delays() {
    let mut h = Harness::start(
        vec![fail(0.0), fail(0.0), fail(0.0), fail(0.0), ok(0.0)],
        options(500, 2, 5),
    );
    let mut starts = vec![h.next_start().await];
    for _ in 0..4 {
        starts.push(h.next_start().await);
    }
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // full delays 2, 4, 5 (cap), 5; each jittered into [half, full].
    let bounds = [(1.0, 2.0), (2.0, 4.0), (2.5, 5.0), (2.5, 5.0)];
    for (gap, (lo, hi)) in gaps.iter().zip(bounds) {
        assert!(
            *gap >= lo - 0.01 && *gap <= hi + 0.01,
            "gap {gap} outside [{lo}, {hi}]: {gaps:?}"
        );
    }
    // After the success, no more retries.
    h.quiet_for(600).await;
    let (stats, _) = h.stop().await;
    assert_eq!(stats.retries, 4);
    assert_eq!(stats.cycles, 5);
}

#[tokio::test(start_paused = true)]
async fn during_a_backoff_a_webhook_waits_for_the_retry_but_a_fire_time_does_not() {
    // The start-up sweep works; the first quick cycle cannot run (exit 4) and backs off 10–20 s.
    let mut h = Harness::start(vec![ok(0.0), fail(0.0)], options(500, 20, 60));
    assert!(near(h.next_start().await, 0.0));
    h.send_at(1.0, Trigger::Webhook).await;
    assert!(near(h.next_start().await, 1.5));
    h.send_at(3.0, Trigger::Webhook).await;
    h.send_at(4.0, Trigger::Quick).await;
    let next = h.next_start().await;
    assert!(
        near(next, 4.0),
        "the quick fire time ran at once, not the webhook at 3.5 s: {next}"
    );
    h.quiet_for(120).await;
    let (stats, _) = h.stop().await;
    assert_eq!(stats.cycles, 3);
}

#[tokio::test(start_paused = true)]
async fn a_stop_cancels_the_cycle_waits_for_it_and_starts_nothing_more() {
    let mut h = Harness::start(vec![ok(100.0)], options(500, 5, 60));
    h.next_start().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.triggers.send(Trigger::Schedule).await.unwrap();
    let asked = Instant::now();
    h.stop.cancel();
    let stats = h.worker.await.unwrap();
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(1),
        "the worker waited for the cycle to settle, and no longer: {took:?}"
    );
    assert!(h.script.saw_cancel.load(Ordering::SeqCst));
    assert_eq!(
        stats.cycles, 1,
        "the coalesced trigger did not run after the stop"
    );
    assert!(h.started.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_stop_before_the_first_cycle_runs_nothing() {
    let script = Arc::new(Script::default());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (_triggers, rx) = farmsync::daemon::trigger_channel();
    let stop = CancellationToken::new();
    stop.cancel();
    let stats = Worker::new(
        Scripted {
            script,
            started: started_tx,
        },
        rx,
        stop,
        WorkerOptions::default(),
    )
    .run()
    .await;
    assert_eq!(stats.cycles, 0);
    assert!(started.try_recv().is_err());
}

fn kinds(script: &Script) -> Vec<CycleKind> {
    script.kinds.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn fire_times_sweep_while_quick_fire_times_and_webhooks_run_quick_cycles() {
    use CycleKind::{Quick, Sweep};
    let mut h = Harness::start(vec![], options(500, 5, 60));
    assert!(near(h.next_start().await, 0.0));
    h.send_at(10.0, Trigger::Quick).await;
    assert!(near(h.next_start().await, 10.0));
    h.send_at(20.0, Trigger::Webhook).await;
    assert!(near(h.next_start().await, 20.5), "debounced");
    h.send_at(30.0, Trigger::Schedule).await;
    assert!(near(h.next_start().await, 30.0));
    let (_, script) = h.stop().await;
    assert_eq!(kinds(&script), vec![Sweep, Quick, Quick, Sweep]);
}

#[tokio::test(start_paused = true)]
async fn a_sweep_runs_beside_a_long_quick_cycle_and_deliveries_make_one_follow_up() {
    use CycleKind::{Quick, Sweep};
    let mut h = Harness::start(vec![ok(0.0), ok(10.0)], options(500, 5, 60));
    h.next_start().await;
    h.send_at(5.0, Trigger::Webhook).await;
    assert!(near(h.next_start().await, 5.5));
    // Mid quick cycle: a delivery, a fire time (its sweep starts at once), another delivery.
    h.send_at(7.0, Trigger::Webhook).await;
    h.send_at(8.0, Trigger::Schedule).await;
    assert!(near(h.next_start().await, 8.0));
    h.send_at(9.0, Trigger::Webhook).await;
    assert!(
        near(h.next_start().await, 15.5),
        "one follow-up quick cycle"
    );
    h.quiet_for(30).await;
    let (stats, script) = h.stop().await;
    assert_eq!(kinds(&script), vec![Sweep, Quick, Sweep, Quick]);
    assert_eq!(stats.coalesced, 2);
}
