//! `farmsync run`: the daemon. One worker task starts every sync cycle; everything else — the
//! two cron schedules, webhook deliveries, retries after a failure — only sends it a
//! [`Trigger`]. (tokio-cron-scheduler starts jobs without waiting for the previous one and does
//! not wait for running jobs when it shuts down, so it must not own the work.)
//!
//! Owns the worker, its lanes and triggers, the schedules, signals and sd_notify. What a cycle
//! does is [`crate::sync::engine`]'s, what is recorded around it [`crate::observe`]'s, and the
//! webhook listener is [`crate::webhook`]'s: this module only decides when cycles run.
//!
//! ## Two kinds of cycle, and who may write when
//! A **sweep** (start-up and `[schedule] cron`) is the full reconcile; a **quick cycle**
//! (`[schedule] quick_cron` and webhook deliveries) reads FarmFlow's list and only the CRM
//! records that changed, and writes updates and confirmed deletions of existing links (see
//! `sync::engine::CycleKind`). The worker keeps one lane per kind: at most one sweep and one
//! quick cycle run at a time, and a trigger for a busy lane is coalesced into one follow-up
//! cycle of that lane (logged as `sync.trigger.coalesced`).
//!
//! A sweep and a quick cycle may run at once, but only one of them plans and applies: the
//! engine's writer lock (`RunOptions::writer`) is taken by a quick cycle before it reads
//! anything, and by a sweep once its CRM listing is read — the one long phase, ⌈N ÷ 25⌉ pages,
//! whose pages leave a quarter of the CRM rate free for quick cycles. Why no write is lost:
//! - everything a cycle plans on besides the CRM listing — FarmFlow's list, the journal, the
//!   link rows with their snapshots, the CRM records read in full, the order lists — is read
//!   while it holds the lock, so it sees every write the other cycle made;
//! - a sweep's listing may predate a quick cycle's write. A listed item whose names or email a
//!   quick cycle changed differs from its new snapshot, so the plan reads that record in full
//!   again (under the lock) before acting; an unchanged item stands for the new snapshot; and
//!   absence from the listing is never acted on without a read by id;
//! - a webhook hint is cleared only by compare-and-delete on its delivery count, so a delivery
//!   arriving while a cycle runs is never spent by it.
//!
//! A cycle that could not run (exit 4) is retried with backoff on its own lane; one in which
//! some records failed (exit 1) is not: the next fire time retries them.
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

use crate::config::Settings;
use crate::exit::Exit;
use crate::lock::{InstanceLock, LockError};
use crate::observe::RunObserver;
use crate::store::{SharedStore, Store, StoreError};
use crate::sync::engine::{CycleKind, Engine, Outcome, RunOptions, RunReport};
use crate::webhook::{self, ListenerOptions, WebhookReceiver};

/// How many triggers may wait for the worker; more are dropped, which loses nothing: one
/// waiting trigger already means "run again".
pub const TRIGGER_QUEUE: usize = 64;

/// Why the worker should run a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The daemon just started.
    Startup,
    /// A fire time of `[schedule] cron`: a sweep.
    Schedule,
    /// A fire time of `[schedule] quick_cron`: a quick cycle.
    Quick,
    /// A webhook delivery was stored as a hint: a quick cycle.
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
            Trigger::Quick => "quick",
            Trigger::Webhook => "webhook",
            Trigger::Retry => "retry",
            Trigger::FollowUp => "follow_up",
        }
    }
}

impl Trigger {
    /// The kind of cycle this trigger asks for (`None` for a retry or a follow-up, which run
    /// the kind of the cycle they follow).
    pub fn kind(self) -> Option<CycleKind> {
        match self {
            Trigger::Startup | Trigger::Schedule => Some(CycleKind::Sweep),
            Trigger::Quick | Trigger::Webhook => Some(CycleKind::Quick),
            Trigger::Retry | Trigger::FollowUp => None,
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
    /// The cycle could not run (exit code 4: an API unreachable, credentials refused): retry
    /// with backoff. A cycle in which some records failed (exit 1) is not retried — the next
    /// fire time retries them, so one bad record never turns an hourly schedule into a resync
    /// every few minutes.
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
            failed: report.outcome.exit_code() == 4,
            // `STATUS=` is one line.
            summary: summary.replace(['\n', '\r'], " "),
        }
    }
}

/// One sync cycle, as the worker sees it. [`Engine`] is the real one; tests script their own.
pub trait Cycle: Send + Sync + 'static {
    /// Runs one cycle of `kind`; `cancel` asks it to stop after the write in flight.
    fn run(
        &self,
        kind: CycleKind,
        cancel: CancellationToken,
    ) -> impl Future<Output = CycleResult> + Send;
}

/// The daemon's cycles: one engine, and the writer lock its sweep and quick cycle share.
pub struct EngineCycles {
    engine: Engine,
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    observer: RunObserver,
}

impl EngineCycles {
    /// Cycles of `engine`.
    pub fn new(engine: Engine) -> Self {
        EngineCycles {
            engine,
            writer: std::sync::Arc::default(),
            observer: RunObserver::disabled(),
        }
    }

    /// The same cycles, each recorded and reported by `observer` (metrics, pings, health).
    pub fn with_observer(mut self, observer: RunObserver) -> Self {
        self.observer = observer;
        self
    }
}

impl Cycle for EngineCycles {
    async fn run(&self, kind: CycleKind, cancel: CancellationToken) -> CycleResult {
        let run = self.engine.run_once(RunOptions {
            dry_run: false,
            allow_mass_delete: false,
            cancel: Some(cancel),
            kind,
            writer: Some(self.writer.clone()),
        });
        let report = self.observer.observe(kind, run).await;
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

/// One lane of the worker: sweeps, or quick cycles. A lane runs one cycle at a time; a trigger
/// for a busy lane is coalesced into one follow-up cycle of that lane.
struct Lane {
    kind: CycleKind,
    /// The cycle running now.
    running: Option<JoinHandle<CycleResult>>,
    /// When to start the next cycle (and the trigger it answers), if one is wanted.
    due: Option<(Instant, Trigger)>,
    /// A trigger that arrived while a cycle ran: one follow-up when it ends.
    pending: Option<Trigger>,
    /// The next cycle is a retry after a failure: only a fire time ends its wait early (a
    /// webhook does not — the API just failed, and the hint is stored: the retry reads it).
    retrying: bool,
    failures: u32,
}

impl Lane {
    fn new(kind: CycleKind) -> Lane {
        Lane {
            kind,
            running: None,
            due: None,
            pending: None,
            retrying: false,
            failures: 0,
        }
    }
}

/// Waits until `due` (forever when `None`); returns its trigger.
async fn when_due(due: Option<(Instant, Trigger)>) -> Trigger {
    match due {
        Some((at, trigger)) => {
            tokio::time::sleep_until(at).await;
            trigger
        }
        None => std::future::pending().await,
    }
}

/// Waits for the running cycle to end (forever when none runs).
async fn when_ended(running: &mut Option<JoinHandle<CycleResult>>) -> CycleResult {
    match running {
        Some(handle) => {
            let result = handle.await;
            *running = None;
            result.unwrap_or_else(|e| CycleResult {
                failed: true,
                summary: format!("the cycle ended abnormally: {e}"),
            })
        }
        None => std::future::pending().await,
    }
}

/// The task that runs cycles: at most one sweep and one quick cycle at a time, so a long
/// sweep never holds a webhook's quick cycle back. The engine lets only one of them plan and
/// apply at a time (its writer lock: see `sync::engine`).
pub struct Worker<C: Cycle> {
    cycle: std::sync::Arc<C>,
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
            cycle: std::sync::Arc::new(cycle),
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

    /// Runs a sweep at once, then cycles as triggers ask, until `stop` is cancelled (or every
    /// trigger sender is gone and nothing is running or due). Cycles in progress when `stop` is
    /// cancelled are waited for: they were handed the same token and stop after their write in
    /// flight.
    pub async fn run(mut self) -> WorkerStats {
        let mut sweeps = Lane::new(CycleKind::Sweep);
        let mut quick = Lane::new(CycleKind::Quick);
        sweeps.due = Some((Instant::now(), Trigger::Startup));
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let idle = |l: &Lane| l.running.is_none() && l.due.is_none();
            if !self.triggers_open && idle(&sweeps) && idle(&quick) {
                break;
            }
            let (sweep_due, quick_due) = (sweeps.due, quick.due);
            let sweep_idle = sweeps.running.is_none();
            let quick_idle = quick.running.is_none();
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                result = when_ended(&mut sweeps.running) => self.ended(&mut sweeps, result),
                result = when_ended(&mut quick.running) => self.ended(&mut quick, result),
                trigger = when_due(sweep_due), if sweep_idle => self.start(&mut sweeps, trigger),
                trigger = when_due(quick_due), if quick_idle => self.start(&mut quick, trigger),
                received = self.triggers.recv(), if self.triggers_open => match received {
                    None => self.triggers_open = false,
                    Some(t) if t.kind() == Some(CycleKind::Sweep) => self.received(&mut sweeps, t),
                    Some(t) => self.received(&mut quick, t),
                },
            }
        }
        // Cycles in progress got the stop too: wait for them to settle their write in flight.
        for lane in [&mut sweeps, &mut quick] {
            if lane.running.is_some() {
                let result = when_ended(&mut lane.running).await;
                self.stats.cycles += 1;
                (self.on_cycle)(&result);
            }
        }
        self.stats
    }

    /// A trigger arrived for `lane`.
    fn received(&mut self, lane: &mut Lane, trigger: Trigger) {
        if lane.running.is_some() {
            self.stats.coalesced += 1;
            // Once a cycle at info: a burst of deliveries is one fact, not fifty.
            if lane.pending.is_none() {
                info!(trigger = %trigger, kind = lane.kind.as_str(), "sync.trigger.coalesced");
            } else {
                debug!(trigger = %trigger, kind = lane.kind.as_str(), "sync.trigger.coalesced");
            }
            lane.pending = Some(trigger);
            return;
        }
        match trigger {
            Trigger::Webhook if lane.retrying => debug!("daemon.trigger.deferred"),
            // A burst of deliveries costs one cycle: wait `debounce` from the first.
            Trigger::Webhook => {
                if lane.due.is_none() {
                    lane.due = Some((Instant::now() + self.options.debounce, trigger));
                }
            }
            // A fire time runs at once, and ends a retry's wait (backoff only delays retries,
            // never the schedule).
            _ => {
                lane.due = Some((Instant::now(), trigger));
                lane.retrying = false;
            }
        }
    }

    /// Starts `lane`'s cycle.
    fn start(&mut self, lane: &mut Lane, trigger: Trigger) {
        lane.due = None;
        lane.retrying = false;
        info!(trigger = %trigger, kind = lane.kind.as_str(), "daemon.cycle.started");
        let cycle = self.cycle.clone();
        let stop = self.stop.clone();
        let kind = lane.kind;
        lane.running = Some(tokio::spawn(async move { cycle.run(kind, stop).await }));
    }

    /// `lane`'s cycle ended with `result`.
    fn ended(&mut self, lane: &mut Lane, result: CycleResult) {
        self.stats.cycles += 1;
        (self.on_cycle)(&result);
        if self.stop.is_cancelled() {
            return;
        }
        if result.failed {
            lane.failures = lane.failures.saturating_add(1);
            let delay = self.options.backoff.delay(lane.failures);
            self.stats.retries += 1;
            warn!(
                attempt = lane.failures,
                kind = lane.kind.as_str(),
                delay_ms = delay.as_millis() as u64,
                "daemon.retry.scheduled"
            );
            // Triggers coalesced during a failed cycle ride on the retry.
            lane.pending = None;
            lane.retrying = true;
            lane.due = Some((Instant::now() + delay, Trigger::Retry));
        } else {
            lane.failures = 0;
            if lane.pending.take().is_some() {
                lane.due = Some((Instant::now(), Trigger::FollowUp));
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
    /// The metrics endpoint could not bind.
    #[error("cannot serve metrics on {addr} (metrics.listen): {source}")]
    MetricsListen {
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
            DaemonError::Lock(_)
            | DaemonError::Store(_)
            | DaemonError::Listen { .. }
            | DaemonError::MetricsListen { .. } => Exit::Unavailable,
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
    let observer = RunObserver::new(settings, store.clone());
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
        .with_body_timeout(options.listener.body_timeout)
        .with_on_result({
            let counts = observer.webhook_counts();
            std::sync::Arc::new(move |result| counts.count(result))
        });
        webhook::spawn(
            listener,
            webhook::router(receiver),
            options.listener,
            listener_stop.clone(),
            &tasks,
        );
        info!(listen = %local, public_url = %settings.webhooks.public_url, "webhook.listening");
    }
    if let Some(addr) = settings.metrics.listen {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(source) => {
                listener_stop.cancel();
                return Err(DaemonError::MetricsListen { addr, source });
            }
        };
        let local = listener.local_addr().unwrap_or(addr);
        webhook::spawn(
            listener,
            crate::observe::metrics_router(observer.clone()),
            options.listener,
            listener_stop.clone(),
            &tasks,
        );
        info!(listen = %local, "metrics.listening");
    }

    let mut schedules = vec![(settings.schedule.cron.clone(), Trigger::Schedule)];
    if let Some(quick) = &settings.schedule.quick_cron {
        schedules.push((quick.clone(), Trigger::Quick));
    }
    let mut schedulers = Vec::new();
    for (cron, trigger) in schedules {
        match start_scheduler(&cron, trigger, triggers.clone()).await {
            Ok(started) => schedulers.push(started),
            Err(e) => {
                listener_stop.cancel();
                for (mut scheduler, guard) in schedulers {
                    guard.abort();
                    let _ = scheduler.shutdown().await;
                }
                return Err(e);
            }
        }
    }
    drop(triggers);

    info!(
        cron = %settings.schedule.cron,
        quick_cron = settings.schedule.quick_cron.as_deref().unwrap_or(""),
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

    let worker = Worker::new(
        EngineCycles::new(engine).with_observer(observer.clone()),
        receiver,
        stop.clone(),
        options.worker,
    )
    .with_on_cycle(Box::new(|result: &CycleResult| {
        notify(&[NotifyState::Status(&result.summary)]);
    }));
    let mut worker: JoinHandle<WorkerStats> = tokio::spawn(worker.run());

    let early = tokio::select! {
        _ = shutdown => None,
        ended = &mut worker => Some(ended),
    };

    info!("daemon.stopping");
    notify(&[NotifyState::Stopping]);
    for (mut scheduler, offset_guard) in schedulers {
        offset_guard.abort();
        if let Err(e) = scheduler.shutdown().await {
            debug!(error = %e, "daemon.scheduler.shutdown_failed");
        }
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
    // A last ping or announcement still queued gets a moment, within the 10 s promised.
    observer.close(Duration::from_secs(1)).await;
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

/// A scheduler's one job: on each fire time, send `trigger`, nothing more.
fn schedule_job(
    cron: &str,
    trigger: Trigger,
    triggers: mpsc::Sender<Trigger>,
) -> Result<tokio_cron_scheduler::Job, tokio_cron_scheduler::JobSchedulerError> {
    tokio_cron_scheduler::Job::new_async_tz(cron, chrono::Local, move |_id, _scheduler| {
        // Full means a trigger is already waiting: the worker runs once either way.
        let _ = triggers.try_send(trigger);
        Box::pin(async {})
    })
}

/// Starts tokio-cron-scheduler with the job of [`schedule_job`], and a task that keeps it on
/// local time: the crate fixes a job's UTC offset when the job is made, so when daylight saving
/// moves the offset, the job is made anew (the new one is added before the old one goes, so a
/// fire time can be doubled — the worker coalesces it — but never lost).
async fn start_scheduler(
    cron: &str,
    trigger: Trigger,
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
        .add(schedule_job(cron, trigger, triggers.clone()).map_err(failed)?)
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
            let added = match schedule_job(&cron, trigger, triggers.clone()) {
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
    fn only_a_cycle_that_could_not_run_is_retried() {
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
        // Some records failed (exit 1): the next fire time retries them, not a backoff.
        report.outcome = Outcome::Partial;
        assert!(!CycleResult::from_report(&report).failed);
        report.outcome = Outcome::Unavailable("the CRM\nis down".into());
        let result = CycleResult::from_report(&report);
        assert!(result.failed);
        assert!(!result.summary.contains('\n'), "{}", result.summary);
        assert!(result.summary.contains("could not run: the CRM is down"));
    }
}
