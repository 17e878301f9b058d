//! The request pipeline both fakes share: counting, added latency, rate limits and injected
//! faults, applied in that order before (or around) the API's own handler.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rate::{RateLimit, ResetStyle, Verdict, Window};

/// What an endpoint does to the service's state, for counters and fault selectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only.
    Read,
    /// Creates, changes or removes something (or tries to).
    Write,
    /// Obtains credentials (Kounta's `/token`): neither a read nor a write of the data.
    Auth,
}

/// An endpoint of one fake API, named by a small enum.
pub trait Endpoint: Copy + Eq + Ord + Hash + Debug + Send + Sync + 'static {
    /// Whether the endpoint reads, writes or authenticates.
    fn access(self) -> Access;
}

/// Which requests a fault, a rate limit or a latency applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<E> {
    /// One endpoint.
    Endpoint(E),
    /// Every reading endpoint.
    AnyRead,
    /// Every writing endpoint.
    AnyWrite,
    /// Every endpoint.
    Any,
}

impl<E: Endpoint> Target<E> {
    /// Whether a request to `endpoint` is selected.
    pub fn matches(self, endpoint: E) -> bool {
        match self {
            Target::Endpoint(e) => e == endpoint,
            Target::AnyRead => endpoint.access() == Access::Read,
            Target::AnyWrite => endpoint.access() == Access::Write,
            Target::Any => true,
        }
    }
}

impl<E> From<E> for Target<E> {
    fn from(endpoint: E) -> Self {
        Target::Endpoint(endpoint)
    }
}

/// Which of the selected requests a fault fires on. Requests are counted from the moment the
/// fault is injected; requests refused by a rate limit are not counted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    /// Only the n-th selected request (1-based).
    Nth(u64),
    /// The next n selected requests.
    Next(u64),
    /// Every selected request.
    Every,
    /// Each selected request with this probability, drawn from the sandbox's seeded RNG.
    Probability(f64),
}

/// What an injected fault does to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer this status with the API's JSON error body; nothing is applied.
    Status(u16),
    /// Answer this status with an empty body (no JSON, no envelope); nothing is applied. A
    /// `200` or `204` with nothing in it is how a service says "unreadable" without an error.
    Empty(u16),
    /// Answer `502` with a proxy's HTML page; nothing is applied.
    Html502,
    /// Serve the request (a write is applied), then send only the first half of the body.
    TruncatedJson,
    /// Never answer (until the sandbox shuts down); nothing is applied.
    Hang,
    /// Close the connection without answering; nothing is applied.
    Drop,
    /// Apply the request, then answer `500` instead of its response.
    ApplyThen500,
    /// Apply the request, then close the connection without answering.
    ApplyThenDrop,
    /// Apply the request, then never answer: lets a test stop the client after the write is
    /// stored and before its answer arrives (see `wait_for_writes`).
    ApplyThenHang,
}

/// A fault injected into one fake API.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault<E> {
    /// The requests it applies to.
    pub target: Target<E>,
    /// Which of them it fires on.
    pub when: When,
    /// What it does.
    pub action: FaultAction,
}

impl<E> Fault<E> {
    /// A fault on `target` (an endpoint or a selector) firing `when`, doing `action`.
    pub fn new(target: impl Into<Target<E>>, when: When, action: FaultAction) -> Self {
        Fault {
            target: target.into(),
            when,
            action,
        }
    }
}

/// Names an injected fault so it can be removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultId(pub u64);

/// Request counters of one fake API since start or the last `reset_stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats<E: Ord> {
    /// Every request received, routed or not, whatever its answer.
    pub total: u64,
    /// Requests to reading endpoints.
    pub reads: u64,
    /// Requests to writing endpoints (including refused and faulted ones).
    pub writes: u64,
    /// Requests for credentials (Kounta's `/token`).
    pub auth: u64,
    /// Requests that matched no endpoint (`404`/`405`).
    pub unrouted: u64,
    /// Requests answered `429` by a rate limit.
    pub rate_limited: u64,
    /// Requests per endpoint.
    pub by_endpoint: BTreeMap<E, u64>,
}

impl<E: Ord> Default for Stats<E> {
    fn default() -> Self {
        Stats {
            total: 0,
            reads: 0,
            writes: 0,
            auth: 0,
            unrouted: 0,
            rate_limited: 0,
            by_endpoint: BTreeMap::new(),
        }
    }
}

impl<E: Ord + Copy> Stats<E> {
    /// Requests made to `endpoint`.
    pub fn count(&self, endpoint: E) -> u64 {
        self.by_endpoint.get(&endpoint).copied().unwrap_or(0)
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord<E> {
    /// When it arrived (tokio's clock, so paused-time tests see paused time).
    pub at: Instant,
    /// Its method.
    pub method: Method,
    /// Its path and query, as sent.
    pub path: String,
    /// The endpoint it was routed to, `None` when it matched none.
    pub endpoint: Option<E>,
    /// The status answered, `None` when no answer was sent (dropped or hung).
    pub status: Option<u16>,
}

/// The largest number of records whose arrival times fit in any span of `window`: the figure to
/// compare with a rate limit.
pub fn max_in_window<E>(log: &[RequestRecord<E>], window: Duration) -> usize {
    let mut times: Vec<Instant> = log.iter().map(|r| r.at).collect();
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].saturating_duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Per-connection control, put into each request's extensions by the server loop.
#[derive(Clone, Debug)]
pub(crate) struct ConnControl {
    /// Cancelling it makes the server loop drop the connection at once.
    pub(crate) kill: CancellationToken,
}

/// The path a request was sent to, before the server loop rewrote it (Kounta's `.json`).
#[derive(Clone, Debug)]
pub(crate) struct OriginalPath(pub(crate) String);

/// What the pipeline needs to know about a request besides its endpoint.
pub(crate) struct RequestMeta {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) conn: Option<ConnControl>,
}

impl RequestMeta {
    /// Reads method, original path and connection control off a request.
    pub(crate) fn of(req: &axum::extract::Request) -> Self {
        let path = match req.extensions().get::<OriginalPath>() {
            Some(p) => p.0.clone(),
            None => req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| req.uri().path().to_owned()),
        };
        RequestMeta {
            method: req.method().clone(),
            path,
            conn: req.extensions().get::<ConnControl>().cloned(),
        }
    }
}

/// Which API's conventions the pipeline's own answers follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    Kounta,
    Farmflow,
}

impl Flavor {
    /// The API's JSON error answer.
    pub(crate) fn error(self, status: StatusCode, code: &str, message: &str) -> Response {
        let body = match self {
            Flavor::Kounta => json!({ "error": code, "error_description": message }),
            Flavor::Farmflow => json!({ "status": "error", "message": message }),
        };
        (status, axum::Json(body)).into_response()
    }
}

/// A proxy's error page, as a real `502` often is.
const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

struct ArmedFault<E> {
    id: FaultId,
    fault: Fault<E>,
    seen: u64,
}

struct PipeState<E: Ord> {
    rng: StdRng,
    next_fault: u64,
    faults: Vec<ArmedFault<E>>,
    limits: Vec<(Target<E>, Window)>,
    latency: Vec<(Target<E>, Duration)>,
    stats: Stats<E>,
    log: Vec<RequestRecord<E>>,
}

/// Counters, knobs and the seeded RNG of one fake API.
pub(crate) struct Pipeline<E: Ord> {
    state: Mutex<PipeState<E>>,
    writes: watch::Sender<u64>,
    requests: watch::Sender<u64>,
    flavor: Flavor,
}

/// What the fault check decided for one request.
enum Plan {
    Serve,
    Act(FaultAction),
}

impl<E: Endpoint> Pipeline<E> {
    /// A pipeline with no knobs set, drawing randomness from `seed`.
    pub(crate) fn new(seed: u64, flavor: Flavor) -> Self {
        Pipeline {
            state: Mutex::new(PipeState {
                rng: StdRng::seed_from_u64(seed),
                next_fault: 1,
                faults: Vec::new(),
                limits: Vec::new(),
                latency: Vec::new(),
                stats: Stats::default(),
                log: Vec::new(),
            }),
            writes: watch::Sender::new(0),
            requests: watch::Sender::new(0),
            flavor,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PipeState<E>> {
        // A panic while holding this lock cannot leave the counters inconsistent enough to
        // matter to a test, so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with the seeded RNG.
    pub(crate) fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self.lock().rng)
    }

    /// Draws `true` with probability `p` from the seeded RNG.
    pub(crate) fn chance(&self, p: f64) -> bool {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.with_rng(|rng| rng.random_bool(p))
    }

    /// Injects a fault.
    pub(crate) fn inject(&self, fault: Fault<E>) -> FaultId {
        let mut s = self.lock();
        let id = FaultId(s.next_fault);
        s.next_fault += 1;
        s.faults.push(ArmedFault { id, fault, seen: 0 });
        id
    }

    /// Removes one fault; `false` if it was not there.
    pub(crate) fn remove(&self, id: FaultId) -> bool {
        let mut s = self.lock();
        let before = s.faults.len();
        s.faults.retain(|f| f.id != id);
        s.faults.len() != before
    }

    /// Removes every injected fault.
    pub(crate) fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Sets (or replaces) the rate limit on `target`.
    pub(crate) fn set_rate_limit(&self, target: Target<E>, limit: RateLimit) {
        let mut s = self.lock();
        s.limits.retain(|(t, _)| *t != target);
        s.limits.push((target, Window::new(limit, Instant::now())));
    }

    /// Removes every rate limit.
    pub(crate) fn clear_rate_limits(&self) {
        self.lock().limits.clear();
    }

    /// Sets (or, with zero, removes) the latency added to requests on `target`.
    pub(crate) fn set_latency(&self, target: Target<E>, latency: Duration) {
        let mut s = self.lock();
        s.latency.retain(|(t, _)| *t != target);
        if !latency.is_zero() {
            s.latency.push((target, latency));
        }
    }

    /// Removes every added latency.
    pub(crate) fn clear_latency(&self) {
        self.lock().latency.clear();
    }

    /// The counters.
    pub(crate) fn stats(&self) -> Stats<E> {
        self.lock().stats.clone()
    }

    /// The request log, in order of arrival.
    pub(crate) fn request_log(&self) -> Vec<RequestRecord<E>> {
        let mut log = self.lock().log.clone();
        log.sort_by_key(|r| r.at);
        log
    }

    /// Zeroes the counters and empties the log (the write counter keeps counting).
    pub(crate) fn reset_stats(&self) {
        let mut s = self.lock();
        s.stats = Stats::default();
        s.log.clear();
    }

    /// Tells watchers that one more write was stored.
    pub(crate) fn write_applied(&self) {
        self.writes.send_modify(|n| *n += 1);
    }

    /// A receiver of the number of writes stored through the API so far.
    pub(crate) fn writes(&self) -> watch::Receiver<u64> {
        self.writes.subscribe()
    }

    /// A receiver of the number of requests recorded in the log so far (never reset).
    pub(crate) fn requests(&self) -> watch::Receiver<u64> {
        self.requests.subscribe()
    }

    fn record(&self, at: Instant, meta: &RequestMeta, endpoint: Option<E>, status: Option<u16>) {
        let mut s = self.lock();
        s.stats.total += 1;
        match endpoint {
            Some(e) => {
                match e.access() {
                    Access::Read => s.stats.reads += 1,
                    Access::Write => s.stats.writes += 1,
                    Access::Auth => s.stats.auth += 1,
                }
                *s.stats.by_endpoint.entry(e).or_insert(0) += 1;
            }
            None => s.stats.unrouted += 1,
        }
        if status == Some(429) {
            s.stats.rate_limited += 1;
        }
        s.log.push(RequestRecord {
            at,
            method: meta.method.clone(),
            path: meta.path.clone(),
            endpoint,
            status,
        });
        drop(s);
        self.requests.send_modify(|n| *n += 1);
    }

    /// Offers a request to every matching rate limit: any refusal refuses it (taking no slot
    /// anywhere); otherwise it takes a slot in each and the tightest remaining count is returned.
    #[allow(clippy::type_complexity)]
    fn admit(
        &self,
        endpoint: E,
        now: Instant,
    ) -> Result<Option<(RateLimit, u32)>, (RateLimit, Duration)> {
        let mut s = self.lock();
        let mut tightest: Option<(RateLimit, u32)> = None;
        for (target, window) in s.limits.iter_mut() {
            if !target.matches(endpoint) {
                continue;
            }
            match window.check(now) {
                Verdict::Refuse { reset_in } => return Err((window.limit, reset_in)),
                Verdict::Admit { remaining } => {
                    if tightest.is_none_or(|(_, r)| remaining < r) {
                        tightest = Some((window.limit, remaining));
                    }
                }
            }
        }
        for (target, window) in s.limits.iter_mut() {
            if target.matches(endpoint) {
                window.take(now);
            }
        }
        Ok(tightest)
    }

    fn plan(&self, endpoint: E) -> Plan {
        let mut s = self.lock();
        let PipeState { rng, faults, .. } = &mut *s;
        let mut chosen = None;
        for armed in faults.iter_mut() {
            if !armed.fault.target.matches(endpoint) {
                continue;
            }
            armed.seen += 1;
            let fires = match armed.fault.when {
                When::Nth(n) => armed.seen == n,
                When::Next(n) => armed.seen <= n,
                When::Every => true,
                When::Probability(p) => {
                    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
                    rng.random_bool(p)
                }
            };
            if fires && chosen.is_none() {
                chosen = Some(armed.fault.action);
            }
        }
        match chosen {
            Some(action) => Plan::Act(action),
            None => Plan::Serve,
        }
    }

    fn latency_for(&self, endpoint: E) -> Duration {
        self.lock()
            .latency
            .iter()
            .filter(|(t, _)| t.matches(endpoint))
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }

    /// Runs one request through latency, rate limits and faults, calling `handler` to serve it
    /// when nothing stops it. Unrouted requests (`endpoint` `None`) are only counted.
    pub(crate) async fn run<F, Fut>(
        &self,
        meta: RequestMeta,
        endpoint: Option<E>,
        handler: F,
    ) -> Response
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Response>,
    {
        let at = Instant::now();
        let Some(endpoint) = endpoint else {
            let response = handler().await;
            self.record(at, &meta, None, Some(response.status().as_u16()));
            return response;
        };

        let latency = self.latency_for(endpoint);
        if !latency.is_zero() {
            // No need to watch for shutdown: the server loop drops the whole connection then.
            tokio::time::sleep(latency).await;
        }

        let admitted = match self.admit(endpoint, Instant::now()) {
            Ok(admitted) => admitted,
            Err((limit, reset_in)) => {
                self.record(at, &meta, Some(endpoint), Some(429));
                return self.too_many(limit, reset_in);
            }
        };

        let action = match self.plan(endpoint) {
            Plan::Serve => {
                let mut response = handler().await;
                self.decorate(&mut response, admitted);
                self.record(at, &meta, Some(endpoint), Some(response.status().as_u16()));
                return response;
            }
            Plan::Act(action) => action,
        };

        match action {
            FaultAction::Status(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                self.record(at, &meta, Some(endpoint), Some(status.as_u16()));
                self.flavor
                    .error(status, "server_error", "injected failure")
            }
            FaultAction::Empty(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                self.record(at, &meta, Some(endpoint), Some(status.as_u16()));
                status.into_response()
            }
            FaultAction::Html502 => {
                self.record(at, &meta, Some(endpoint), Some(502));
                (
                    StatusCode::BAD_GATEWAY,
                    [(header::CONTENT_TYPE, "text/html")],
                    HTML_502,
                )
                    .into_response()
            }
            FaultAction::TruncatedJson => {
                let response = handler().await;
                let (mut parts, body) = response.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let cut = if bytes.len() < 2 {
                    bytes::Bytes::from_static(b"{\"")
                } else {
                    bytes.slice(..bytes.len() / 2)
                };
                parts.headers.remove(header::CONTENT_LENGTH);
                parts.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                self.record(at, &meta, Some(endpoint), Some(parts.status.as_u16()));
                Response::from_parts(parts, Body::from(cut))
            }
            FaultAction::Hang => {
                self.record(at, &meta, Some(endpoint), None);
                self.hang().await
            }
            FaultAction::Drop => {
                self.record(at, &meta, Some(endpoint), None);
                self.drop_connection(&meta).await
            }
            FaultAction::ApplyThen500 => {
                let _lost = handler().await;
                self.record(at, &meta, Some(endpoint), Some(500));
                self.flavor.error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "injected failure",
                )
            }
            FaultAction::ApplyThenDrop => {
                let _lost = handler().await;
                self.record(at, &meta, Some(endpoint), None);
                self.drop_connection(&meta).await
            }
            FaultAction::ApplyThenHang => {
                let _lost = handler().await;
                self.record(at, &meta, Some(endpoint), None);
                self.hang().await
            }
        }
    }

    /// Never answers. The server loop drops the connection, and this future with it, on
    /// shutdown; waiting for shutdown here instead would race the loop and could let an answer
    /// out.
    async fn hang(&self) -> Response {
        std::future::pending().await
    }

    async fn drop_connection(&self, meta: &RequestMeta) -> Response {
        if let Some(conn) = &meta.conn {
            // The server loop drops the connection, and this future with it, at once.
            conn.kill.cancel();
        }
        self.hang().await
    }

    fn too_many(&self, limit: RateLimit, reset_in: Duration) -> Response {
        let secs = reset_in.as_secs() + u64::from(reset_in.subsec_nanos() > 0);
        let mut response = self.flavor.error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests, slow down",
        );
        let headers = response.headers_mut();
        if limit.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.flavor == Flavor::Kounta {
            let reset = match limit.reset_header {
                ResetStyle::DelaySeconds => secs,
                ResetStyle::EpochSeconds => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs();
                    now + secs
                }
            };
            headers.insert("x-ratelimit-limit", HeaderValue::from(limit.limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
            headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
        }
        response
    }

    /// Kounta tells every caller under a limit how much of it is left.
    fn decorate(&self, response: &mut Response, admitted: Option<(RateLimit, u32)>) {
        if let (Flavor::Kounta, Some((limit, remaining))) = (self.flavor, admitted) {
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from(limit.limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: Instant) -> RequestRecord<()> {
        RequestRecord {
            at,
            method: Method::GET,
            path: "/".into(),
            endpoint: None,
            status: Some(200),
        }
    }

    #[test]
    fn max_in_window_finds_the_busiest_span() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let log = vec![
            rec(t0 + s(70)),
            rec(t0),
            rec(t0 + s(10)),
            rec(t0 + s(59)),
            rec(t0 + s(60)),
        ];
        // [0, 60) holds 0, 10, 59; [10, 70) holds 10, 59, 60; [59, 119) holds 59, 60, 70.
        assert_eq!(max_in_window(&log, s(60)), 3);
        // 59 and 60 fit in two seconds but not in one (a window is half-open).
        assert_eq!(max_in_window(&log, s(2)), 2);
        assert_eq!(max_in_window(&log, s(1)), 1);
        assert_eq!(max_in_window::<()>(&[], s(60)), 0);
    }
}
