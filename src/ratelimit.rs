//! The per-API rate limiter, and the request ledger through which the limiters of every
//! farmsync process on one state DB share their grants.
//!
//! Depends only on [`crate::ids`]: the ledger is a trait ([`GrantLedger`]) that the store
//! implements, so the limiter never touches SQL itself; [`crate::http`] waits on it before every
//! attempt.
//!
//! A limiter alone keeps one process under its rate. DESIGN.md asks more: "no minute ever
//! carries more CRM requests than the configured rate, across processes" — a restart, a timer
//! run right after a daemon, or `check` beside a daemon must not double it. So a limiter given a
//! [`GrantLedger`] (the state DB's `request_grants` table) counts the grants every other holder
//! recorded in the window, and records its own.
//!
//! Recording each grant would cost a database transaction per request, which the sandbox tests
//! at a million requests a minute cannot afford. So a limiter takes grants from the ledger in
//! *leases*: one atomic exchange reads the other holders' grants in the window and, when there
//! is room, records a row of `n` grants stamped at the end of a short lease period (a sixtieth of
//! the window, at most a second). The limiter then grants those `n` without touching the
//! database until the lease is used up or its period ends; the next exchange settles the row to
//! the number actually used. A lease is an eighth of the room left (at least one), so far from
//! the limit a whole run costs a handful of exchanges, and near it every grant is one exchange.
//!
//! Why no window ever holds more than the limit, whichever processes made the grants: every
//! exchange is atomic (an immediate SQLite transaction), and the row of a lease counts for the
//! others from the moment it is taken until a window after its period ends, so it covers every
//! grant made under it. Take the lease with the latest exchange among those whose grants fall in
//! some window: at its exchange every other lease with grants in that window was already
//! recorded and still counted, and the exchanging process's own earlier grants were in its own
//! window; the exchange took no more than the room left. Each holder counts its own grants
//! exactly, by the instants it granted them.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ids::Api;

/// A lease is this share of the room left in the window (at least one grant).
const LEASE_SHARE: u64 = 8;

/// The longest lease period: a lease's row counts for the others this much longer than the
/// grants under it need.
const MAX_LEASE: Duration = Duration::from_secs(1);

/// The wait was ended by cancellation: nothing was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// A ledger failure, in the ledger's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LedgerError(pub String);

/// One exchange with a [`GrantLedger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerRequest {
    /// Whose grants.
    pub api: Api,
    /// The limiter asking (random, one per limiter: a new process is a new holder).
    pub holder: i64,
    /// Now, on the wall clock, in Unix milliseconds.
    pub now_ms: i64,
    /// Rows stamped after `now_ms - window_ms` are in the window.
    pub window_ms: i64,
    /// The holder's previous lease: its row and how many grants were made under it (0 removes
    /// the row).
    pub settle: Option<(i64, u32)>,
    /// Take a lease whose period ends then (Unix ms); `None` only reads (and settles).
    pub lease_until_ms: Option<i64>,
    /// Whether to write anything. A dry run writes nothing to the state DB: it counts the
    /// others' grants but records none of its own.
    pub record: bool,
}

/// What an exchange found and took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerAnswer {
    /// The other holders' grants in the window: (Unix ms, how many), oldest first.
    pub others: Vec<(i64, u32)>,
    /// The lease taken: its row (0 when nothing was recorded) and how many grants it holds.
    pub lease: Option<(i64, u32)>,
}

/// Where the limiters of every farmsync process on one state DB share their grants
/// ([`crate::store::RequestLedger`] is the state DB's). Calls block; the limiter makes them in
/// the blocking pool.
pub trait GrantLedger: Send + Sync + 'static {
    /// One exchange, atomic with respect to every other holder's: settles `request.settle`,
    /// reads the other holders' grants in the window, then — when `request.lease_until_ms` is
    /// set — records a lease of `lease_size(sum of those grants)` grants (none when it is 0).
    fn exchange(
        &self,
        request: &LedgerRequest,
        lease_size: &dyn Fn(u64) -> u32,
    ) -> Result<LedgerAnswer, LedgerError>;
}

/// A sliding-window rate limiter: no window of the configured length ever holds more grants
/// than the limit. A token bucket would not do: a full bucket plus a window's refill lets
/// through nearly twice the limit in one minute.
///
/// With a ledger ([`RateLimiter::with_ledger`]) the grants of other processes count too.
pub struct RateLimiter {
    limit: usize,
    /// The window as configured, then kept a little longer (see [`RateLimiter::new`]).
    window: Duration,
    lease_period: Duration,
    state: Mutex<State>,
    shared: Option<Shared>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .field("window", &self.window)
            .field("shared", &self.shared.as_ref().map(|s| s.api))
            .finish()
    }
}

struct Shared {
    ledger: Arc<dyn GrantLedger>,
    api: Api,
    holder: i64,
    record: AtomicBool,
    /// One exchange at a time: the tasks that find no lease wait here for the one under way.
    gate: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// This limiter's own grants in the window.
    own: VecDeque<Instant>,
    /// The other holders' grants in the window as last read: when, and how many.
    others: VecDeque<(Instant, u32)>,
    others_total: u64,
    /// Grants taken from the ledger and not yet made.
    lease: Option<Lease>,
    /// The last exchange found no room: none before this.
    full_until: Option<Instant>,
    /// A ledger failure was logged (once; the next success logs the recovery).
    ledger_failing: bool,
}

struct Lease {
    /// Its ledger row (0: none).
    row: i64,
    until: Instant,
    left: u32,
    used: u32,
}

impl State {
    fn expire(&mut self, now: Instant, window: Duration) {
        while self.own.front().is_some_and(|t| *t + window <= now) {
            self.own.pop_front();
        }
        while let Some((at, n)) = self.others.front().copied() {
            if at + window > now {
                break;
            }
            self.others.pop_front();
            self.others_total -= u64::from(n);
        }
        if self.full_until.is_some_and(|t| t <= now) {
            self.full_until = None;
        }
    }

    fn counted(&self) -> u64 {
        self.own.len() as u64 + self.others_total
    }

    /// Grants one from the lease, if it is still good.
    fn take_leased(&mut self, now: Instant) -> bool {
        match &mut self.lease {
            Some(lease) if lease.left > 0 && now < lease.until => {
                lease.left -= 1;
                lease.used += 1;
                self.own.push_back(now);
                true
            }
            _ => false,
        }
    }

    /// When the oldest counted grant leaves the window.
    fn next_expiry(&self, window: Duration) -> Option<Instant> {
        let own = self.own.front().map(|t| *t + window);
        let other = self.others.front().map(|(t, _)| *t + window);
        match (own, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// How many grants a lease takes when `counted` of `limit` are in the window.
fn lease_size(limit: usize, counted: u64) -> u32 {
    let room = (limit as u64).saturating_sub(counted);
    if room == 0 {
        0
    } else {
        u32::try_from((room / LEASE_SHARE).max(1)).unwrap_or(u32::MAX)
    }
}

/// The wall clock in Unix milliseconds: what every process on the host agrees on.
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests in any 60-second window (0 is treated as 1).
    pub fn per_minute(per_minute: u32) -> Self {
        Self::new(per_minute, Duration::from_secs(60))
    }

    /// A limiter allowing `limit` grants in any `window`.
    ///
    /// The window is kept a little longer than asked (half a second a minute, at least a
    /// quarter second) so that a server timing arrivals, which lag grants by a varying few
    /// milliseconds (more on a loaded machine), also never counts more than `limit` in its own
    /// window.
    pub fn new(limit: u32, window: Duration) -> Self {
        let limit = limit.max(1) as usize;
        let mut state = State::default();
        state.own.reserve(limit.min(4096));
        RateLimiter {
            limit,
            window: window + (window / 120).max(Duration::from_millis(250)),
            lease_period: (window / 60).clamp(Duration::from_millis(5), MAX_LEASE),
            state: Mutex::new(state),
            shared: None,
        }
    }

    /// The same limiter, sharing its grants for `api` with every other holder of `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<dyn GrantLedger>, api: Api) -> Self {
        self.shared = Some(Shared {
            ledger,
            api,
            holder: rand::random::<i64>(),
            record: AtomicBool::new(true),
            gate: tokio::sync::Mutex::new(()),
        });
        self
    }

    /// Whether grants are recorded in the ledger (the default) or only the others' counted (a
    /// dry run writes nothing to the state DB).
    pub fn set_recording(&self, record: bool) {
        if let Some(shared) = &self.shared {
            shared.record.store(record, Ordering::Relaxed);
        }
    }

    /// Whether this limiter shares its grants through a ledger.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The configured limit per window.
    pub fn limit(&self) -> u32 {
        u32::try_from(self.limit).unwrap_or(u32::MAX)
    }

    /// Waits until one more request fits in the window, then records it.
    pub async fn acquire(&self) {
        // A token nobody holds is never cancelled.
        let _ = self.acquire_unless(&CancellationToken::new()).await;
    }

    /// Waits until one more request fits in the window, then records it — or, once `cancel`
    /// is cancelled, stops waiting at once and grants nothing.
    pub async fn acquire_unless(&self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        if cancel.is_cancelled() {
            return Err(Cancelled);
        }
        match &self.shared {
            None => self.acquire_alone(cancel).await,
            Some(shared) => self.acquire_shared(shared, cancel).await,
        }
    }

    async fn acquire_alone(&self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        loop {
            let wait_until = {
                let mut state = self.lock();
                let now = Instant::now();
                state.expire(now, self.window);
                if state.own.len() < self.limit {
                    state.own.push_back(now);
                    return Ok(());
                }
                state.next_expiry(self.window).unwrap_or(now)
            };
            sleep_unless(wait_until, cancel).await?;
        }
    }

    async fn acquire_shared(
        &self,
        shared: &Shared,
        cancel: &CancellationToken,
    ) -> Result<(), Cancelled> {
        loop {
            if self.lock().take_leased(Instant::now()) {
                return Ok(());
            }
            let gate = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Cancelled),
                gate = shared.gate.lock() => gate,
            };
            // Another task may have exchanged while this one waited at the gate.
            let known_full = {
                let mut state = self.lock();
                let now = Instant::now();
                state.expire(now, self.window);
                if state.take_leased(now) {
                    return Ok(());
                }
                state.full_until
            };
            let full_until = match known_full {
                Some(until) => Some(until),
                None => self.exchange(shared, true).await,
            };
            drop(gate);
            if let Some(until) = full_until {
                sleep_unless(until, cancel).await?;
            }
        }
    }

    /// Settles the previous lease, reads the others' grants and, when `lease` is asked, takes
    /// a new one. Returns when to try again if there was no room.
    async fn exchange(&self, shared: &Shared, lease: bool) -> Option<Instant> {
        let (settle, own) = {
            let mut state = self.lock();
            state.expire(Instant::now(), self.window);
            let settle = if lease { state.lease.take() } else { None };
            (settle.filter(|l| l.row != 0), state.own.len() as u64)
        };
        let now = Instant::now();
        let now_ms = wall_ms();
        let request = LedgerRequest {
            api: shared.api,
            holder: shared.holder,
            now_ms,
            window_ms: millis(self.window),
            settle: settle.map(|l| (l.row, l.used)),
            lease_until_ms: lease.then(|| now_ms + millis(self.lease_period)),
            record: shared.record.load(Ordering::Relaxed),
        };
        let ledger = shared.ledger.clone();
        let limit = self.limit;
        let answer = tokio::task::spawn_blocking(move || {
            ledger.exchange(&request, &|others| lease_size(limit, others + own))
        })
        .await
        .map_err(|e| LedgerError(format!("the ledger call did not finish: {e}")))
        .and_then(|answer| answer);

        let mut state = self.lock();
        match answer {
            Ok(answer) => {
                if state.ledger_failing {
                    state.ledger_failing = false;
                    tracing::info!(api = %shared.api, "http.ratelimit.ledger_recovered");
                }
                state.others = answer
                    .others
                    .iter()
                    .map(|&(at_ms, n)| (instant_of(at_ms, request.now_ms, now), n))
                    .collect();
                state.others_total = state.others.iter().map(|(_, n)| u64::from(*n)).sum();
                state.expire(Instant::now(), self.window);
                match answer.lease {
                    Some((row, n)) if lease && n > 0 => {
                        state.lease = Some(Lease {
                            row,
                            until: now + self.lease_period,
                            left: n,
                            used: 0,
                        });
                        None
                    }
                    _ if lease => self.full(&mut state),
                    _ => None,
                }
            }
            Err(error) => {
                // The rate still holds within this process; across processes it cannot be
                // known until the ledger answers again.
                if !state.ledger_failing {
                    state.ledger_failing = true;
                    tracing::warn!(api = %shared.api, error = %error, "http.ratelimit.ledger_failed");
                }
                if !lease {
                    return None;
                }
                let n = lease_size(self.limit, state.counted());
                if n == 0 {
                    return self.full(&mut state);
                }
                state.lease = Some(Lease {
                    row: 0,
                    until: now + self.lease_period,
                    left: n,
                    used: 0,
                });
                None
            }
        }
    }

    fn full(&self, state: &mut State) -> Option<Instant> {
        let now = Instant::now();
        // No room, yet nothing counted that will leave the window (only after a clock step):
        // look again after a lease period.
        let until = state
            .next_expiry(self.window)
            .unwrap_or(now + self.lease_period)
            .max(now);
        state.full_until = Some(until);
        Some(until)
    }

    /// Waits, without taking a grant, until the window has room for one more request with
    /// `reserve` grants still left over — or until `cancel`. A sweep's listing pages wait here,
    /// so the reserve stays free for quick cycles (DESIGN.md, "Sweeps and quick cycles").
    pub async fn room_leaving(
        &self,
        reserve: u32,
        cancel: &CancellationToken,
    ) -> Result<(), Cancelled> {
        if reserve == 0 {
            return Ok(());
        }
        loop {
            let wait_until = {
                let mut state = self.lock();
                let now = Instant::now();
                state.expire(now, self.window);
                if state.counted() + u64::from(reserve) < self.limit as u64 {
                    return Ok(());
                }
                state
                    .next_expiry(self.window)
                    .unwrap_or(now + self.lease_period)
                    .max(now)
            };
            sleep_unless(wait_until, cancel).await?;
        }
    }

    /// How many grants the current window holds: this limiter's own, and the other holders'
    /// as last read from the ledger.
    pub fn recent(&self) -> u32 {
        let mut state = self.lock();
        state.expire(Instant::now(), self.window);
        u32::try_from(state.counted()).unwrap_or(u32::MAX)
    }

    /// [`RateLimiter::recent`] after reading the ledger afresh: the requests of the last
    /// window by every farmsync process on the state DB.
    pub async fn recent_shared(&self) -> u32 {
        if let Some(shared) = &self.shared {
            let _gate = shared.gate.lock().await;
            self.exchange(shared, false).await;
        }
        self.recent()
    }

    /// Hands back what is left of the lease, so the others do not count grants this limiter
    /// will not make (at the end of a run; the limiter stays usable).
    pub async fn release(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let _gate = shared.gate.lock().await;
        let Some(lease) = self.lock().lease.take() else {
            return;
        };
        if lease.row == 0 || lease.left == 0 {
            return;
        }
        let request = LedgerRequest {
            api: shared.api,
            holder: shared.holder,
            now_ms: wall_ms(),
            window_ms: millis(self.window),
            settle: Some((lease.row, lease.used)),
            lease_until_ms: None,
            record: shared.record.load(Ordering::Relaxed),
        };
        let ledger = shared.ledger.clone();
        let settled = tokio::task::spawn_blocking(move || ledger.exchange(&request, &|_| 0)).await;
        if let Ok(Err(error)) = settled {
            tracing::debug!(api = %shared.api, error = %error, "http.ratelimit.release_failed");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The guarded state is always consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The local instant of a wall-clock time, given one moment read on both clocks.
fn instant_of(at_ms: i64, now_ms: i64, now: Instant) -> Instant {
    let offset = Duration::from_millis(at_ms.abs_diff(now_ms));
    if at_ms >= now_ms {
        now + offset
    } else {
        // Before this host's monotonic clock began (a grant made before a reboot a moment
        // ago): the ledger says it is in the window, so count it from now.
        now.checked_sub(offset).unwrap_or(now)
    }
}

/// Sleeps until `until`, or until `cancel` is cancelled.
async fn sleep_unless(until: Instant, cancel: &CancellationToken) -> Result<(), Cancelled> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Cancelled),
        _ = tokio::time::sleep_until(until) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limiter_never_exceeds_the_limit_in_any_window() {
        let limiter = Arc::new(RateLimiter::per_minute(5));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..17 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                limiter.acquire().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(60))
                .count();
            assert!(
                in_window <= 5,
                "{in_window} grants within a minute of grant {i}"
            );
        }
        // 17 grants at 5 a minute need three full windows of waiting, and not much more.
        let took = times.last().unwrap().duration_since(start);
        assert!(took >= Duration::from_secs(180), "{took:?}");
        assert!(took < Duration::from_secs(190), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_at_a_very_high_rate_does_not_wait() {
        let limiter = RateLimiter::per_minute(100_000);
        let start = Instant::now();
        for _ in 0..10_000 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start);
        assert_eq!(limiter.recent(), 10_000);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(limiter.recent(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_ends_at_once_and_grants_nothing() {
        let limiter = RateLimiter::per_minute(1);
        let cancel = CancellationToken::new();
        limiter.acquire_unless(&cancel).await.unwrap();
        let start = Instant::now();
        let stopper = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stopper.cancel();
        });

        let waited = limiter.acquire_unless(&cancel).await;

        assert_eq!(waited, Err(Cancelled));
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        assert_eq!(limiter.recent(), 1);
        assert_eq!(limiter.acquire_unless(&cancel).await, Err(Cancelled));
    }

    /// A ledger row: id, API, holder, stamp (Unix ms), grants.
    type Row = (i64, Api, i64, i64, u32);

    /// The state DB's ledger in memory: one mutex makes each exchange atomic, as SQLite's
    /// write lock does.
    #[derive(Default)]
    struct MemoryLedger {
        rows: Mutex<Vec<Row>>,
        exchanges: AtomicU64,
        failing: AtomicBool,
    }

    impl GrantLedger for MemoryLedger {
        fn exchange(
            &self,
            r: &LedgerRequest,
            lease_size: &dyn Fn(u64) -> u32,
        ) -> Result<LedgerAnswer, LedgerError> {
            self.exchanges.fetch_add(1, Ordering::Relaxed);
            if self.failing.load(Ordering::Relaxed) {
                return Err(LedgerError("disk I/O error".into()));
            }
            let mut rows = self.rows.lock().unwrap();
            if r.record
                && let Some((id, used)) = r.settle
            {
                rows.retain(|row| !(row.0 == id && used == 0));
                for row in rows.iter_mut().filter(|row| row.0 == id) {
                    row.4 = used;
                }
            }
            let others: Vec<(i64, u32)> = rows
                .iter()
                .filter(|row| row.1 == r.api && row.2 != r.holder)
                .filter(|row| row.3 > r.now_ms - r.window_ms)
                .map(|row| (row.3, row.4))
                .collect();
            let mut lease = None;
            if let Some(until) = r.lease_until_ms {
                let n = lease_size(others.iter().map(|(_, n)| u64::from(*n)).sum());
                if n > 0 {
                    let id = if r.record {
                        let id = rows.len() as i64 + 1;
                        rows.push((id, r.api, r.holder, until, n));
                        id
                    } else {
                        0
                    };
                    lease = Some((id, n));
                }
            }
            Ok(LedgerAnswer { others, lease })
        }
    }

    impl MemoryLedger {
        fn recorded(&self) -> u64 {
            self.rows
                .lock()
                .unwrap()
                .iter()
                .map(|r| u64::from(r.4))
                .sum()
        }
    }

    fn shared(ledger: &Arc<MemoryLedger>, limit: u32, window: Duration) -> Arc<RateLimiter> {
        Arc::new(RateLimiter::new(limit, window).with_ledger(ledger.clone(), Api::Kounta))
    }

    /// The most grants any `window` holds.
    fn max_in_window(mut times: Vec<std::time::Instant>, window: Duration) -> usize {
        times.sort();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    /// `n` grants from `limiter` by `tasks` concurrent tasks, timed on the real clock.
    async fn grants(limiter: &Arc<RateLimiter>, tasks: usize, n: usize) -> Vec<std::time::Instant> {
        let mut set = tokio::task::JoinSet::new();
        for t in 0..tasks {
            let limiter = limiter.clone();
            let mine = n / tasks + usize::from(t < n % tasks);
            set.spawn(async move {
                let mut times = Vec::new();
                for _ in 0..mine {
                    limiter.acquire().await;
                    times.push(std::time::Instant::now());
                }
                times
            });
        }
        let mut times = Vec::new();
        while let Some(done) = set.join_next().await {
            times.extend(done.unwrap());
        }
        times
    }

    // The ledger speaks wall-clock time, so these run in real time, over short windows.

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_limiters_on_one_ledger_never_exceed_the_limit_together() {
        let window = Duration::from_millis(300);
        let ledger = Arc::new(MemoryLedger::default());
        let a = shared(&ledger, 10, window);
        let b = shared(&ledger, 10, window);
        let started = std::time::Instant::now();

        let (mut times, more) = tokio::join!(grants(&a, 3, 20), grants(&b, 3, 20));
        times.extend(more);

        assert_eq!(times.len(), 40);
        assert!(max_in_window(times, window) <= 10);
        // 40 grants, 10 a window: three windows of waiting at least, as for one process.
        assert!(started.elapsed() >= 3 * window, "{:?}", started.elapsed());
        a.release().await;
        b.release().await;
        assert_eq!(ledger.recorded(), 40, "every grant is in the ledger");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_holder_waits_for_the_grants_an_earlier_one_made() {
        let window = Duration::from_millis(400);
        let ledger = Arc::new(MemoryLedger::default());
        let before = shared(&ledger, 5, window);
        let first = grants(&before, 1, 5).await;
        before.release().await;
        drop(before);

        // A restart: a new limiter on the same ledger.
        let after = shared(&ledger, 5, window);
        assert_eq!(after.recent_shared().await, 5);
        let second = grants(&after, 1, 5).await;

        let all: Vec<_> = first.iter().chain(&second).copied().collect();
        assert!(max_in_window(all, window) <= 5);
        assert!(second[0] - first[0] >= window, "{:?}", second[0] - first[0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn far_from_the_limit_a_thousand_grants_cost_a_few_exchanges() {
        let ledger = Arc::new(MemoryLedger::default());
        let limiter = shared(&ledger, 1_000_000, Duration::from_secs(60));

        grants(&limiter, 4, 10_000).await;
        limiter.release().await;

        let exchanges = ledger.exchanges.load(Ordering::Relaxed);
        assert!(exchanges <= 4, "{exchanges} exchanges");
        assert_eq!(ledger.recorded(), 10_000);
        assert_eq!(limiter.recent_shared().await, 10_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn near_the_limit_every_grant_is_an_exchange_and_the_lease_is_settled() {
        let ledger = Arc::new(MemoryLedger::default());
        let limiter = shared(&ledger, 16, Duration::from_secs(60));

        // Leases of 2, 1, 1, …: an eighth of the room left.
        grants(&limiter, 1, 16).await;

        assert_eq!(ledger.recorded(), 16);
        assert!(ledger.exchanges.load(Ordering::Relaxed) >= 8);
        let other = shared(&ledger, 16, Duration::from_secs(60));
        assert_eq!(other.recent_shared().await, 16);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unused_lease_is_handed_back_at_release() {
        let ledger = Arc::new(MemoryLedger::default());
        let limiter = shared(&ledger, 800, Duration::from_secs(60));

        limiter.acquire().await;
        assert_eq!(ledger.recorded(), 100, "a lease of an eighth of the room");
        limiter.release().await;

        assert_eq!(ledger.recorded(), 1);
        let other = shared(&ledger, 800, Duration::from_secs(60));
        assert_eq!(other.recent_shared().await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_limiter_not_recording_counts_the_others_and_writes_nothing() {
        let window = Duration::from_millis(400);
        let ledger = Arc::new(MemoryLedger::default());
        let other = shared(&ledger, 4, window);
        grants(&other, 1, 3).await;
        other.release().await;
        let dry = shared(&ledger, 4, window);
        dry.set_recording(false);

        let times = grants(&dry, 1, 2).await;

        assert_eq!(ledger.recorded(), 3, "nothing recorded");
        // Only one fitted beside the others' three; the second waited for one to expire.
        assert!(
            times[1] - times[0] >= window / 2,
            "{:?}",
            times[1] - times[0]
        );
        assert!(dry.recent() <= 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_ledger_still_limits_within_the_process() {
        let window = Duration::from_millis(300);
        let ledger = Arc::new(MemoryLedger::default());
        ledger.failing.store(true, Ordering::Relaxed);
        let limiter = shared(&ledger, 5, window);

        let times = grants(&limiter, 2, 12).await;

        assert!(max_in_window(times, window) <= 5);
        assert_eq!(ledger.recorded(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_wait_ends_at_once_when_cancelled() {
        let ledger = Arc::new(MemoryLedger::default());
        let limiter = shared(&ledger, 1, Duration::from_secs(60));
        let cancel = CancellationToken::new();
        limiter.acquire_unless(&cancel).await.unwrap();
        let stopper = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stopper.cancel();
        });
        let started = std::time::Instant::now();

        assert_eq!(limiter.acquire_unless(&cancel).await, Err(Cancelled));

        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(ledger.recorded(), 1);
    }
}
