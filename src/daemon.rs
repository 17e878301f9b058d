//! `farmsync run`: the daemon. One worker task runs every sync cycle; everything else — the
//! cron schedule, webhook deliveries, retries after a failure — only sends it a [`Trigger`].
//!
//! So two cycles can never overlap: a trigger that arrives while a cycle runs is coalesced
//! into one follow-up cycle (and logged as `sync.trigger.coalesced`), which runs as soon as the
//! current one ends. (tokio-cron-scheduler starts jobs without waiting for the previous one and
//! does not wait for running jobs when it shuts down, so it must not own the work.)
//!
//! Shutdown is a parameter of [`run_daemon`]: when it completes, the daemon stops taking work,
//! cancels the cycle in progress — every wait in it ends at once (the rate limiter, a retry's
//! backoff, a listing or read in progress); the write in flight finishes and is settled — waits
//! for it at most [`DaemonOptions::drain_timeout`], and returns.
//!
//! systemd hears about all of it through `sd_notify`: `READY=1` once the config is valid, the
//! store open and the listener bound; `STATUS=` with each cycle's one-line summary;
//! `WATCHDOG=1` at half the watchdog interval; `STOPPING=1` on shutdown.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::cli::Exit;
use crate::config::Settings;
use crate::lock::{InstanceLock, LockError};
use crate::store::{SharedStore, Store, StoreError};
use crate::sync::engine::{Engine, Outcome, RunOptions, RunReport};
use crate::webhook::{self, ListenerOptions, WebhookReceiver};

/// How many triggers may wait for the worker; more are dropped, which loses nothing: one
/// waiting trigger already means "run again".
pub const TRIGGER_QUEUE: usize = 64;

/// Why the worker should run a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The daemon just started.
    Startup,
    /// A fire time of `[schedule] cron`.
    Schedule,
    /// A webhook delivery was stored as a hint.
    Webhook,
    /// The retry after a failed cycle.
    Retry,
    /// Triggers coalesced during the previous cycle.
    FollowUp,
}

impl Trigger {
    /// The trigger's name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Schedule => "schedule",
            Trigger::Webhook => "webhook",
            Trigger::Retry => "retry",
            Trigger::FollowUp => "follow_up",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A channel for triggers, sized [`TRIGGER_QUEUE`].
pub fn trigger_channel() -> (mpsc::Sender<Trigger>, mpsc::Receiver<Trigger>) {
    mpsc::channel(TRIGGER_QUEUE)
}

/// Retry delays after failed cycles: doubling from `base`, capped at `cap`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure (before jitter).
    pub base: Duration,
    /// No delay is longer than this.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay before retry number `failures` (1 after the first failed cycle): between half
    /// and all of `min(cap, base × 2^(failures-1))`. Never less than half, so a failing API is
    /// not hammered; randomised, so daemons that failed together do not retry together.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1u32 << doublings).min(self.cap);
        let half = full / 2;
        half + (full - half).mul_f64(rand::random::<f64>())
    }
}

/// How the worker paces cycles.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// After a webhook trigger, wait this long for more deliveries before syncing, so a burst
    /// of edits costs one cycle.
    pub debounce: Duration,
    /// Retries after failed cycles.
    pub backoff: Backoff,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            debounce: Duration::from_millis(500),
            backoff: Backoff::default(),
        }
    }
}

/// What one cycle tells the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleResult {
    /// The cycle failed in a way a retry may fix (exit code 1 or 4): retry with backoff.
    pub failed: bool,
    /// The one-line summary for `STATUS=`.
    pub summary: String,
}

impl CycleResult {
    /// The result of one engine run. A tripped safety guard (exit 3) is not retried: it waits
    /// for a person, and the next fire time checks again.
    pub fn from_report(report: &RunReport) -> CycleResult {
        let s = &report.summary;
        let outcome = match &report.outcome {
            Outcome::Applied if report.interrupted => {
                "interrupted (farmsync is stopping)".to_owned()
            }
            Outcome::Applied => "ok".to_owned(),
            Outcome::Partial => "some records failed".to_owned(),
            Outcome::Guarded => "stopped by the safety guard".to_owned(),
            Outcome::Unavailable(message) => format!("could not run: {message}"),
        };
        let summary = format!(
            "last sync {} at {}: {outcome}; {} created, {} updated, {} deleted, {} linked, {} blocked, {} conflicts, {} failed, {} skipped",
            report.run_id,
            chrono::Local::now().format("%H:%M:%S"),
            s.created,
            s.updated,
            s.deleted,
            s.linked,
            s.blocked,
            s.conflicts,
            s.failed,
            s.skipped,
        );
        CycleResult {
            failed: matches!(report.outcome.exit_code(), 1 | 4),
            // `STATUS=` is one line.
            summary: summary.replace(['\n', '\r'], " "),
        }
    }
}

/// One sync cycle, as the worker sees it. [`Engine`] is the real one; tests script their own.
pub trait Cycle: Send + Sync + 'static {
    /// Runs one cycle; `cancel` asks it to stop after the write in flight.
    fn run(&self, cancel: CancellationToken) -> impl Future<Output = CycleResult> + Send;
}

impl Cycle for Engine {
    async fn run(&self, cancel: CancellationToken) -> CycleResult {
        let report = self
            .run_once(RunOptions {
                dry_run: false,
                allow_mass_delete: false,
                cancel: Some(cancel),
            })
            .await;
        CycleResult::from_report(&report)
    }
}

/// What the worker did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Cycles run.
    pub cycles: u64,
    /// Triggers that arrived mid-cycle and were folded into a follow-up cycle.
    pub coalesced: u64,
    /// Retries scheduled after failed cycles.
    pub retries: u64,
}

/// Called after every cycle (the daemon updates `STATUS=` here).
pub type OnCycle = Box<dyn FnMut(&CycleResult) + Send>;

enum Next {
    Now(Trigger),
    Idle,
    RetryAt(Instant),
}

/// The one task that runs cycles.
pub struct Worker<C: Cycle> {
    cycle: C,
    triggers: mpsc::Receiver<Trigger>,
    triggers_open: bool,
    stop: CancellationToken,
    options: WorkerOptions,
    on_cycle: OnCycle,
    stats: WorkerStats,
}

impl<C: Cycle> Worker<C> {
    /// A worker running `cycle` on each trigger received, until `stop` is cancelled.
    pub fn new(
        cycle: C,
        triggers: mpsc::Receiver<Trigger>,
        stop: CancellationToken,
        options: WorkerOptions,
    ) -> Self {
        Worker {
            cycle,
            triggers,
            triggers_open: true,
            stop,
            options,
            on_cycle: Box::new(|_| {}),
            stats: WorkerStats::default(),
        }
    }

    /// The same worker, calling `on_cycle` after every cycle.
    pub fn with_on_cycle(mut self, on_cycle: OnCycle) -> Self {
        self.on_cycle = on_cycle;
        self
    }

    /// Runs a cycle at once, then one per trigger, until `stop` is cancelled (or every trigger
    /// sender is gone and no retry is pending). A cycle in progress when `stop` is cancelled is
    /// waited for: it was handed the same token and stops after its write in flight.
    pub async fn run(mut self) -> WorkerStats {
        let mut next = Next::Now(Trigger::Startup);
        let mut failures = 0u32;
        loop {
            let trigger = match next {
                Next::Now(t) => t,
                Next::Idle => match self.wait(None).await {
                    Some(t) => t,
                    None => break,
                },
                Next::RetryAt(at) => match self.wait(Some(at)).await {
                    Some(t) => t,
                    None => break,
                },
            };
            if trigger == Trigger::Webhook && !self.debounce().await {
                break;
            }
            // Triggers already waiting are answered by the cycle about to start.
            while self.triggers.try_recv().is_ok() {}
            if self.stop.is_cancelled() {
                break;
            }
            let (result, pending) = self.cycle_once(trigger).await;
            self.stats.cycles += 1;
            (self.on_cycle)(&result);
            if self.stop.is_cancelled() {
                break;
            }
            next = if result.failed {
                failures = failures.saturating_add(1);
                let delay = self.options.backoff.delay(failures);
                self.stats.retries += 1;
                warn!(
                    attempt = failures,
                    delay_ms = delay.as_millis() as u64,
                    "daemon.retry.scheduled"
                );
                // Triggers coalesced during a failed cycle ride on the retry.
                Next::RetryAt(Instant::now() + delay)
            } else {
                failures = 0;
                match pending {
                    Some(_) => Next::Now(Trigger::FollowUp),
                    None => Next::Idle,
                }
            };
        }
        self.stats
    }

    /// Waits for a trigger, the retry time, or the stop. A fire time ends a retry wait early
    /// (backoff only delays retries, never the schedule); a webhook does not (the API just
    /// failed, and the hint is stored: the retry reads it).
    async fn wait(&mut self, retry_at: Option<Instant>) -> Option<Trigger> {
        loop {
            if !self.triggers_open && retry_at.is_none() {
                return None;
            }
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return None,
                _ = retry => return Some(Trigger::Retry),
                received = self.triggers.recv(), if self.triggers_open => match received {
                    None => self.triggers_open = false,
                    Some(Trigger::Webhook) if retry_at.is_some() => {
                        debug!("daemon.trigger.deferred");
                    }
                    Some(t) => return Some(t),
                },
            }
        }
    }

    /// Gathers a burst of webhook triggers into one cycle: waits `debounce` from the first.
    /// False when stopped meanwhile.
    async fn debounce(&mut self) -> bool {
        let until = Instant::now() + self.options.debounce;
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep_until(until) => return true,
                received = self.triggers.recv(), if self.triggers_open => {
                    if received.is_none() {
                        self.triggers_open = false;
                    }
                }
            }
        }
    }

    /// Runs one cycle; triggers arriving meanwhile are coalesced into the returned one.
    async fn cycle_once(&mut self, trigger: Trigger) -> (CycleResult, Option<Trigger>) {
        info!(trigger = %trigger, "daemon.cycle.started");
        let run = self.cycle.run(self.stop.clone());
        tokio::pin!(run);
        let mut pending = None;
        loop {
            tokio::select! {
                biased;
                result = &mut run => return (result, pending),
                received = self.triggers.recv(), if self.triggers_open => match received {
                    Some(t) => {
                        self.stats.coalesced += 1;
                        // Once a cycle at info: a burst of deliveries is one fact, not fifty.
                        if pending.is_none() {
                            info!(trigger = %t, "sync.trigger.coalesced");
                        } else {
                            debug!(trigger = %t, "sync.trigger.coalesced");
                        }
                        pending = Some(t);
                    }
                    None => self.triggers_open = false,
                },
            }
        }
    }
}

/// Everything about the daemon that is not in the config: pacing, deadlines, the watchdog.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// How the worker paces cycles.
    pub worker: WorkerOptions,
    /// After shutdown is asked, wait at most this long for the cycle in progress. Shorter than
    /// the unit's `TimeoutStopSec`, and than the 10 s farmsync promises.
    pub drain_timeout: Duration,
    /// The systemd watchdog interval (`WATCHDOG_USEC`); pinged at half of it.
    pub watchdog: Option<Duration>,
    /// The webhook listener's timeouts and limits.
    pub listener: ListenerOptions,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            worker: WorkerOptions::default(),
            drain_timeout: Duration::from_secs(8),
            watchdog: sd_notify::watchdog_enabled(),
            listener: ListenerOptions::default(),
        }
    }
}

/// How the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonStop {
    /// What the worker did.
    pub stats: WorkerStats,
    /// False when the cycle in progress did not stop within the drain timeout and was
    /// abandoned (its unsettled write is looked up at the next start).
    pub drained: bool,
    /// True when the worker ended without being asked to (it panicked): the daemon stopped.
    pub worker_died: bool,
}

impl DaemonStop {
    /// The process exit code: 0 on a clean stop; 1 when the drain timed out or the worker
    /// died (so `Restart=on-failure` starts farmsync again).
    pub fn exit(&self) -> Exit {
        if self.drained && !self.worker_died {
            Exit::Ok
        } else {
            Exit::Failed
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another farmsync holds the state DB.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The state DB could not be opened.
    #[error("cannot open the state database: {0}")]
    Store(#[from] StoreError),
    /// The API clients could not be built from the settings.
    #[error("{0}")]
    Clients(crate::http::ApiError),
    /// The webhook listener could not bind.
    #[error("cannot listen for webhooks on {addr} (webhooks.listen): {source}")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The scheduler did not start.
    #[error("cannot start the scheduler for schedule.cron {cron:?}: {message}")]
    Scheduler {
        /// The expression.
        cron: String,
        /// The scheduler's error.
        message: String,
    },
}

impl DaemonError {
    /// The exit code DESIGN.md gives this failure.
    pub fn exit(&self) -> Exit {
        match self {
            DaemonError::Store(StoreError::TooNew { .. })
            | DaemonError::Clients(_)
            | DaemonError::Scheduler { .. } => Exit::Config,
            DaemonError::Lock(_) | DaemonError::Store(_) | DaemonError::Listen { .. } => {
                Exit::Unavailable
            }
        }
    }
}

fn notify(states: &[NotifyState<'_>]) {
    // Without NOTIFY_SOCKET this does nothing; a failure to reach systemd is not fatal.
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "daemon.notify.failed");
    }
}

/// The daemon: takes the single-instance lock and keeps it, opens the store, serves webhooks
/// when enabled, syncs at once and then at every fire time of `[schedule] cron` (local time),
/// until `shutdown` completes. The caller checks credentials first.
pub async fn run_daemon(
    settings: &Settings,
    options: DaemonOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<DaemonStop, DaemonError> {
    let lock = InstanceLock::acquire(&settings.state.path)?;
    let store = SharedStore::new(Store::open(&settings.state.path)?);
    let engine =
        Engine::from_settings(settings, store.clone(), false).map_err(DaemonError::Clients)?;
    let (triggers, receiver) = trigger_channel();
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();

    let listener_stop = CancellationToken::new();
    if settings.webhooks.enabled {
        let addr = settings.webhooks.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        let wake = triggers.clone();
        let receiver = WebhookReceiver::new(
            store.clone(),
            settings.webhooks.signature_token.clone(),
            settings.webhooks.shared_secret.clone(),
            std::sync::Arc::new(move |_topic, _id| {
                // A full queue already holds a trigger: nothing is lost.
                let _ = wake.try_send(Trigger::Webhook);
            }),
        )
        .with_body_timeout(options.listener.body_timeout);
        webhook::spawn(
            listener,
            webhook::router(receiver),
            options.listener,
            listener_stop.clone(),
            &tasks,
        );
        info!(listen = %local, public_url = %settings.webhooks.public_url, "webhook.listening");
    }

    let (mut scheduler, offset_guard) =
        match start_scheduler(&settings.schedule.cron, triggers.clone()).await {
            Ok(started) => started,
            Err(e) => {
                listener_stop.cancel();
                return Err(e);
            }
        };
    drop(triggers);

    info!(
        cron = %settings.schedule.cron,
        webhooks = settings.webhooks.enabled,
        state = %settings.state.path.display(),
        "daemon.started"
    );
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("started; the first sync is running"),
    ]);
    let watchdog = options.watchdog.filter(|d| !d.is_zero()).map(|interval| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        })
    });

    let worker = Worker::new(engine, receiver, stop.clone(), options.worker).with_on_cycle(
        Box::new(|result: &CycleResult| {
            notify(&[NotifyState::Status(&result.summary)]);
        }),
    );
    let mut worker: JoinHandle<WorkerStats> = tokio::spawn(worker.run());

    let early = tokio::select! {
        _ = shutdown => None,
        ended = &mut worker => Some(ended),
    };

    info!("daemon.stopping");
    notify(&[NotifyState::Stopping]);
    offset_guard.abort();
    if let Err(e) = scheduler.shutdown().await {
        debug!(error = %e, "daemon.scheduler.shutdown_failed");
    }
    stop.cancel();
    let worker_died = early.is_some();
    let (stats, drained) = match early {
        Some(ended) => {
            // The worker only returns early when its triggers are gone, which cannot happen
            // while the scheduler runs; in practice this is a panic.
            let detail = match &ended {
                Ok(_) => "it returned".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::error!(detail = %detail, "daemon.worker.died");
            (ended.unwrap_or_default(), true)
        }
        None => match tokio::time::timeout(options.drain_timeout, &mut worker).await {
            Ok(ended) => (ended.unwrap_or_default(), true),
            Err(_) => {
                warn!(
                    drain_timeout_ms = options.drain_timeout.as_millis() as u64,
                    "daemon.drain.timeout"
                );
                worker.abort();
                (WorkerStats::default(), false)
            }
        },
    };
    // Hints keep arriving until the worker has stopped; they are durable, so the next start
    // reads them. Only now does the listener close.
    listener_stop.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(1), tasks.wait())
        .await
        .is_err()
    {
        debug!("webhook.shutdown.slow");
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    info!(
        cycles = stats.cycles,
        coalesced = stats.coalesced,
        drained,
        "daemon.stopped"
    );
    drop(lock);
    Ok(DaemonStop {
        stats,
        drained,
        worker_died,
    })
}

/// How often the daemon checks whether the local UTC offset changed (daylight saving).
const OFFSET_CHECK: Duration = Duration::from_secs(60);

/// The local time zone's offset from UTC now, in seconds.
fn local_offset() -> i32 {
    chrono::Local::now().offset().local_minus_utc()
}

/// The scheduler's one job: on each fire time, send [`Trigger::Schedule`], nothing more.
fn schedule_job(
    cron: &str,
    triggers: mpsc::Sender<Trigger>,
) -> Result<tokio_cron_scheduler::Job, tokio_cron_scheduler::JobSchedulerError> {
    tokio_cron_scheduler::Job::new_async_tz(cron, chrono::Local, move |_id, _scheduler| {
        // Full means a trigger is already waiting: the worker runs once either way.
        let _ = triggers.try_send(Trigger::Schedule);
        Box::pin(async {})
    })
}

/// Starts tokio-cron-scheduler with the job of [`schedule_job`], and a task that keeps it on
/// local time: the crate fixes a job's UTC offset when the job is made, so when daylight saving
/// moves the offset, the job is made anew (the new one is added before the old one goes, so a
/// fire time can be doubled — the worker coalesces it — but never lost).
async fn start_scheduler(
    cron: &str,
    triggers: mpsc::Sender<Trigger>,
) -> Result<(tokio_cron_scheduler::JobScheduler, JoinHandle<()>), DaemonError> {
    use tokio_cron_scheduler::JobScheduler;
    let failed = |e: tokio_cron_scheduler::JobSchedulerError| DaemonError::Scheduler {
        cron: cron.to_owned(),
        message: e.to_string(),
    };
    let scheduler = JobScheduler::new().await.map_err(failed)?;
    let mut offset = local_offset();
    let mut job_id = scheduler
        .add(schedule_job(cron, triggers.clone()).map_err(failed)?)
        .await
        .map_err(failed)?;
    scheduler.start().await.map_err(failed)?;
    let keeper = scheduler.clone();
    let cron = cron.to_owned();
    let guard = tokio::spawn(async move {
        let mut tick = tokio::time::interval(OFFSET_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = local_offset();
            if now == offset {
                continue;
            }
            let added = match schedule_job(&cron, triggers.clone()) {
                Ok(job) => keeper.add(job).await,
                Err(e) => Err(e),
            };
            match added {
                Ok(new_id) => {
                    if let Err(e) = keeper.remove(&job_id).await {
                        warn!(error = %e, "daemon.schedule.refresh_failed");
                    }
                    job_id = new_id;
                    offset = now;
                    info!(utc_offset_secs = now, "daemon.schedule.offset_changed");
                }
                // Keep the old job (an hour off is better than none); try again next check.
                Err(e) => warn!(error = %e, "daemon.schedule.refresh_failed"),
            }
        }
    });
    Ok((scheduler, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stays_under_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(4),
            cap: Duration::from_secs(30),
        };
        for _ in 0..200 {
            let first = b.delay(1);
            assert!(first >= Duration::from_secs(2) && first <= Duration::from_secs(4));
            let third = b.delay(3);
            assert!(third >= Duration::from_secs(8) && third <= Duration::from_secs(16));
            let late = b.delay(40);
            assert!(late >= Duration::from_secs(15) && late <= Duration::from_secs(30));
        }
    }

    #[test]
    fn a_guarded_run_is_not_retried_but_partial_and_unavailable_ones_are() {
        let mut report = RunReport {
            run_id: "r1".into(),
            dry_run: false,
            outcome: Outcome::Applied,
            summary: Default::default(),
            plan: None,
            listing_cut: None,
            unsettled: 0,
            interrupted: false,
            omissions: 0,
        };
        assert!(!CycleResult::from_report(&report).failed);
        report.outcome = Outcome::Guarded;
        assert!(!CycleResult::from_report(&report).failed);
        report.outcome = Outcome::Partial;
        assert!(CycleResult::from_report(&report).failed);
        report.outcome = Outcome::Unavailable("the CRM\nis down".into());
        let result = CycleResult::from_report(&report);
        assert!(result.failed);
        assert!(!result.summary.contains('\n'), "{}", result.summary);
        assert!(result.summary.contains("could not run: the CRM is down"));
    }
}
