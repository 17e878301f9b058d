//! Shared client plumbing: the one request path, the error taxonomy, retries with backoff,
//! cancellation, request counters and the lenient JSON helpers both clients decode with.
//!
//! Both API clients describe each call as a `Request` (method, URL, body, whether it may be
//! sent twice, the operation's name) and send it through `HttpCore::send`, which waits for
//! the rate limiter ([`crate::ratelimit`]) before *each* attempt (so retries count against the
//! limit too), retries what is safe to retry, ends its waits when farmsync stops, and turns
//! what is not into a typed [`ApiError`]. `HttpCore` also reads the answers the same way for
//! both: a status that is not a success becomes the same error, worded by each API only where
//! its credentials were refused. A client keeps only what is its own: authentication, its
//! endpoints and its decoders. This module knows neither API's wire format and touches no
//! store.

use std::error::Error as _;
use std::fmt;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use crate::ids::Api;
pub use crate::ratelimit::RateLimiter;

/// The `User-Agent` every request carries.
pub const USER_AGENT: &str = concat!("farmsync/", env!("CARGO_PKG_VERSION"));

/// The largest answer body read; a longer one is a `Decode` error (FarmFlow's unpaged customer
/// list of 100,000 customers is about 40 MiB).
pub const MAX_BODY_BYTES: usize = 256 << 20;

/// Longest excerpt of a response body an error carries, in characters.
pub const EXCERPT_CHARS: usize = 200;

/// How a request failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The connection was refused: the request was never sent.
    Refused,
    /// The connection could not be opened for another reason: the request was never sent.
    Connect,
    /// The host name did not resolve: the request was never sent.
    Dns,
    /// The TLS handshake failed (certificate, protocol): the request was never sent.
    Tls,
    /// No complete answer within the timeout: the request may have been applied.
    Timeout,
    /// The connection broke after the request went out: it may have been applied.
    Connection,
}

impl TransportKind {
    /// Whether the request certainly never reached the server, so even a create may be resent.
    pub fn never_sent(self) -> bool {
        matches!(
            self,
            TransportKind::Refused
                | TransportKind::Connect
                | TransportKind::Dns
                | TransportKind::Tls
        )
    }

    /// Whether trying again can help (a bad certificate will not fix itself).
    pub fn is_transient(self) -> bool {
        !matches!(self, TransportKind::Tls)
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Refused => "connection refused",
            TransportKind::Connect => "could not connect",
            TransportKind::Dns => "host name did not resolve",
            TransportKind::Tls => "TLS handshake failed",
            TransportKind::Timeout => "timed out",
            TransportKind::Connection => "connection lost",
        })
    }
}

/// Every way a call to either API can fail. Messages are lower-case where they can be and say
/// what to check next; none carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The API refused the credentials; `message` names the header sent and the settings to check.
    #[error("{message}")]
    Auth {
        /// Which API.
        api: Api,
        /// What was refused, with which header, and what to check.
        message: String,
    },
    /// The record (or company) does not exist.
    #[error("{api} has no {what} (404)")]
    NotFound {
        /// Which API.
        api: Api,
        /// What was looked for, e.g. `customer 42`.
        what: String,
    },
    /// The API rejected the request's content (400, 422, or a 2xx whose body says error).
    #[error("{api} rejected the request ({status}): {message}")]
    Validation {
        /// Which API.
        api: Api,
        /// The HTTP status.
        status: u16,
        /// The API's own explanation.
        message: String,
    },
    /// The write clashes with existing data (409), e.g. a duplicate mobile.
    #[error("{api} reported a conflict (409): {message}")]
    Conflict {
        /// Which API.
        api: Api,
        /// The API's own explanation.
        message: String,
    },
    /// Still answered 429 after every retry, or asked for a longer wait than farmsync will make.
    #[error(
        "{api} is rate limiting farmsync (429){}; lower {}.requests_per_minute or try later",
        retry_after.map(|d| format!(", asked to wait {}s", d.as_secs())).unwrap_or_default(),
        api.config_section()
    )]
    RateLimited {
        /// Which API.
        api: Api,
        /// The wait the API advised, if any.
        retry_after: Option<Duration>,
    },
    /// A 5xx answer, still failing after every retry.
    #[error("{api} server error ({status}): {excerpt}")]
    Server {
        /// Which API.
        api: Api,
        /// The HTTP status.
        status: u16,
        /// A short excerpt of the body.
        excerpt: String,
    },
    /// The request did not get an HTTP answer.
    #[error("could not reach {api} at {url} ({kind}): {detail}")]
    Transport {
        /// Which API.
        api: Api,
        /// How it failed.
        kind: TransportKind,
        /// The URL tried, without its query.
        url: String,
        /// The underlying error chain.
        detail: String,
    },
    /// A success answer farmsync cannot read.
    #[error("{api} sent an answer farmsync cannot read ({reason}): {excerpt:?}")]
    Decode {
        /// Which API.
        api: Api,
        /// What was wrong with it.
        reason: String,
        /// A short excerpt of the body (at most [`EXCERPT_CHARS`] characters).
        excerpt: String,
    },
    /// A create whose answer was lost: it may or may not have happened. Never retried blindly.
    #[error(
        "{api} {operation} may or may not have happened ({cause}); look the record up before creating it again"
    )]
    OutcomeUnknown {
        /// Which API.
        api: Api,
        /// The operation, e.g. `customer create`.
        operation: String,
        /// Why the outcome is unknown.
        cause: String,
    },
    /// The OAuth token store failed; a rotated token that could not be stored was not used.
    #[error(
        "the Kounta token store failed ({message}); no unstored token was used — fix the state database, then authorise farmsync again if Kounta refuses the old token"
    )]
    TokenStore {
        /// The store's error.
        message: String,
    },
    /// The client's own settings cannot work (a header name with a space, a base URL that is
    /// not a URL).
    #[error("{api} client settings are invalid: {message}")]
    Config {
        /// Which API.
        api: Api,
        /// What is wrong and which key to check.
        message: String,
    },
    /// farmsync is stopping: the request was not sent (or not sent again), or — a read — its
    /// answer was not waited for. Never a write cut short: a write on the wire always finishes.
    #[error("{api} request given up: farmsync is stopping")]
    Cancelled {
        /// Which API.
        api: Api,
    },
}

impl ApiError {
    /// Whether the same request may succeed later without anyone changing anything.
    ///
    /// `OutcomeUnknown` is not transient: it must be resolved by a lookup, never by a resend.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::RateLimited { .. } | ApiError::Server { .. } => true,
            ApiError::Transport { kind, .. } => kind.is_transient(),
            _ => false,
        }
    }

    /// Whether this failure means the credentials were refused (exit 4, not a per-record failure).
    pub fn is_auth(&self) -> bool {
        matches!(self, ApiError::Auth { .. } | ApiError::TokenStore { .. })
    }

    /// Whether the request was given up because farmsync is stopping (not a failure).
    pub fn is_cancelled(&self) -> bool {
        matches!(self, ApiError::Cancelled { .. })
    }

    /// The API this error came from, when it came from one.
    pub fn api(&self) -> Option<Api> {
        match self {
            ApiError::Auth { api, .. }
            | ApiError::NotFound { api, .. }
            | ApiError::Validation { api, .. }
            | ApiError::Conflict { api, .. }
            | ApiError::RateLimited { api, .. }
            | ApiError::Server { api, .. }
            | ApiError::Transport { api, .. }
            | ApiError::Decode { api, .. }
            | ApiError::OutcomeUnknown { api, .. }
            | ApiError::Config { api, .. }
            | ApiError::Cancelled { api } => Some(*api),
            ApiError::TokenStore { .. } => Some(Api::Kounta),
        }
    }
}

/// A body a pure decoder could not read: why, and a short excerpt of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// What was wrong, e.g. `customer 12: "phone" is an object`.
    pub reason: String,
    /// At most [`EXCERPT_CHARS`] characters of the body.
    pub excerpt: String,
}

impl DecodeError {
    /// A decode error for `body` with the given reason.
    pub fn new(reason: impl Into<String>, body: &[u8]) -> Self {
        DecodeError {
            reason: reason.into(),
            excerpt: excerpt(body),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}", self.reason, self.excerpt)
    }
}

/// A short, single-line excerpt of a body for an error message: whitespace and control
/// characters collapsed, customer contact details masked, at most [`EXCERPT_CHARS`] characters.
/// Only the body's first [`EXCERPT_SCAN_BYTES`] are read.
pub fn excerpt(body: &[u8]) -> String {
    let (head, cut) = excerpt_head(body);
    finish_excerpt(&String::from_utf8_lossy(head), cut)
}

/// The most of a body an excerpt reads. An answer may be up to [`MAX_BODY_BYTES`]; copying,
/// masking and scanning all of it to keep [`EXCERPT_CHARS`] characters would cost a gigabyte of
/// memory for one error message. A few KiB hold any error text a person reads.
pub const EXCERPT_SCAN_BYTES: usize = 4096;

/// The start of `body` an excerpt reads, ending on a character boundary, and whether it was cut.
fn excerpt_head(body: &[u8]) -> (&[u8], bool) {
    if body.len() <= EXCERPT_SCAN_BYTES {
        return (body, false);
    }
    let mut end = EXCERPT_SCAN_BYTES;
    // Step back over UTF-8 continuation bytes, so the cut never splits a character.
    while end > EXCERPT_SCAN_BYTES - 3 && body[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    (&body[..end], true)
}

/// The excerpt of `text`, the start of a body: when the body was cut, the word the cut went
/// through is dropped (a half email or phone number would slip past the masks) and `…` says so.
fn finish_excerpt(text: &str, cut: bool) -> String {
    if !cut {
        return excerpt_text(text);
    }
    let kept = match text.rfind(|c: char| c.is_whitespace() || "\"',;<>{}[]".contains(c)) {
        Some(at) => &text[..at],
        None => "",
    };
    let mut out = excerpt_text(kept);
    if !out.ends_with('…') {
        out.push('…');
    }
    out
}

/// Drops the end of `text` when it is the start of one of `secrets`: the cut of an excerpt went
/// through that secret, so the redactor could not recognise it.
fn trim_partial_secret<'a>(text: &mut String, secrets: impl Iterator<Item = &'a str>) {
    for secret in secrets {
        let longest = (1..secret.len())
            .rev()
            .filter(|k| secret.is_char_boundary(*k))
            .find(|k| text.ends_with(&secret[..*k]));
        if let Some(k) = longest {
            text.truncate(text.len() - k);
        }
    }
}

/// [`excerpt`] over text already decoded.
pub fn excerpt_text(text: &str) -> String {
    // Error messages are logged above debug level, where customer emails and phones must not
    // appear: an API that echoes the rejected record would otherwise leak them.
    collapse(&mask_contacts(text))
}

/// Masks what looks like an email address or a phone number in operator-facing text.
///
/// DESIGN.md allows customer emails and phones only at debug level, but an API's error text
/// may quote a record back (the excerpt of an answer cut short, a refusal naming a value).
/// Everything the engine logs above debug that carries such text goes through here. A phone
/// is a run of at least eight digits standing alone, either ungrouped or in groups of at most
/// five separated by spaces, dashes, dots or parentheses, optionally led by `+`; an ISO date
/// (`2026-03-12`) is not one.
pub fn mask_contacts(text: &str) -> String {
    const MIN_PHONE_DIGITS: usize = 8;
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let is_local = |c: char| c.is_alphanumeric() || "._%+-".contains(c);
    let is_domain = |c: char| c.is_alphanumeric() || ".-".contains(c);
    let is_phone_sep = |c: char| " -.()".contains(c);
    while i < chars.len() {
        let c = chars[i];
        // An email: the local part was copied already; take it back if the domain holds a dot.
        if c == '@' {
            let mut start = out.len();
            for (pos, ch) in out.char_indices().rev() {
                if !is_local(ch) {
                    break;
                }
                start = pos;
            }
            let mut end = i + 1;
            while end < chars.len() && is_domain(chars[end]) {
                end += 1;
            }
            // A trailing dot ends the sentence, not the domain.
            while end > i + 1 && chars[end - 1] == '.' {
                end -= 1;
            }
            let domain: String = chars[i + 1..end].iter().collect();
            let dotted = domain
                .split_once('.')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty());
            if start < out.len() && dotted {
                out.truncate(start);
                out.push_str("[email]");
                i = end;
                continue;
            }
        }
        let standalone = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let starts_phone = c.is_ascii_digit()
            || (matches!(c, '+' | '(') && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit()));
        if standalone && starts_phone {
            let mut end = i + 1;
            while end < chars.len() && (chars[end].is_ascii_digit() || is_phone_sep(chars[end])) {
                end += 1;
            }
            // Separators at the end belong to the text around the number.
            while end > i + 1 && is_phone_sep(chars[end - 1]) && chars[end - 1] != ')' {
                end -= 1;
            }
            let run: String = chars[i..end].iter().collect();
            let groups: Vec<usize> = run
                .split(|c: char| !c.is_ascii_digit())
                .map(str::len)
                .filter(|n| *n > 0)
                .collect();
            let digits: usize = groups.iter().sum();
            // Phones are written in short groups or not grouped at all; "customer 389403
            // (404)" is an id and a status.
            let grouped_like_a_phone = groups.len() == 1 || groups.iter().all(|n| *n <= 5);
            let glued = chars
                .get(end)
                .is_some_and(|n| n.is_alphanumeric() || *n == '_');
            if digits >= MIN_PHONE_DIGITS && grouped_like_a_phone && !glued && !is_iso_date(&run) {
                out.push_str("[phone]");
                i = end;
                continue;
            }
            out.push_str(&run);
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// `YYYY-MM-DD`, possibly followed by the rest of a timestamp's separators.
fn is_iso_date(run: &str) -> bool {
    let b = run.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && b[10..].iter().all(|c| !c.is_ascii_digit())
}

fn collapse(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0usize;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = chars > 0;
            continue;
        }
        let needed = if pending_space { 2 } else { 1 };
        if chars + needed > EXCERPT_CHARS - 1 {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        out.push(c);
        chars += 1;
    }
    out
}

/// The answer of a successful read-only probe (`farmsync check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Which API answered.
    pub api: Api,
    /// What was read, e.g. `company 5678: 25 customers on the first page`.
    pub detail: String,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ok — {}", self.api, self.detail)
    }
}

/// Request counters of one API, for the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// Read attempts sent (retries included).
    pub reads: u64,
    /// Write attempts sent (retries included).
    pub writes: u64,
    /// How many of the reads and writes were retries.
    pub retries: u64,
    /// OAuth token refreshes sent.
    pub refreshes: u64,
    /// Answers that were 429.
    pub throttled: u64,
}

impl RequestCounts {
    /// Every request sent to the API.
    pub fn total(&self) -> u64 {
        self.reads + self.writes + self.refreshes
    }
}

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    retries: AtomicU64,
    refreshes: AtomicU64,
    throttled: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }
}

/// When and how often to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff ceiling; it doubles with each retry.
    pub base: Duration,
    /// The largest backoff ceiling.
    pub cap: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The longest wait a 429 may ask for; a longer one ends the request with `RateLimited`.
    pub max_advised_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retries: 5,
            max_advised_wait: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (for a quick `check`).
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// Full-jitter backoff before retry number `retry` (0 = the first retry): `unit` (in
    /// `[0, 1]`, drawn at random) times `min(cap, base × 2^retry)`.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = self
            .base
            .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.cap)
            .min(self.cap);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The wait a 429 advises: the later of `X-Ratelimit-Reset` (below 10⁹ a delay in seconds,
/// else epoch seconds) and `Retry-After` (seconds, or an HTTP date). `now` is the wall clock.
pub fn advised_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let now_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let reset = header_text(headers, "x-ratelimit-reset").and_then(|text| {
        let value: f64 = text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
        if value < 1e9 {
            Some(Duration::from_secs_f64(value.min(1e7)))
        } else {
            Some(Duration::from_secs_f64(value.min(1e12)).saturating_sub(now_epoch))
        }
    });
    let retry_after = header_text(headers, RETRY_AFTER.as_str()).and_then(|text| {
        if let Ok(secs) = text.parse::<u64>() {
            return Some(Duration::from_secs(secs.min(10_000_000)));
        }
        let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
        let at = u64::try_from(at.timestamp()).ok()?;
        Some(Duration::from_secs(at).saturating_sub(now_epoch))
    });
    match (reset, retry_after) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// What a request is, which decides what may be retried and how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A read: retried on 429, 5xx, timeouts and connection errors.
    Read,
    /// A write that may safely be sent twice (Kounta PUT, FarmFlow update and delete).
    IdempotentWrite,
    /// A create: resent only when it certainly was not applied (429, never sent).
    Create,
    /// An OAuth token refresh: retried like a read, counted apart.
    Refresh,
}

/// A complete HTTP answer, body read.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Raw {
    /// A header's value, when it is present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a request carries, encoded once and sent again as is on a retry.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// Nothing.
    Empty,
    /// JSON (`Content-Type: application/json`).
    Json(Bytes),
    /// A form (`Content-Type: application/x-www-form-urlencoded`).
    Form(String),
    /// A value that cannot be encoded as JSON, and why: the request is never sent.
    Unencodable(String),
}

/// One request to either API: method, URL, body, whether it may be sent twice ([`Call`]: a
/// `Create` whose answer is lost is [`ApiError::OutcomeUnknown`], never resent), and the
/// operation's name for errors and logs (e.g. `customer create`). Both clients send every
/// request through [`HttpCore::send`].
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    method: reqwest::Method,
    url: url::Url,
    body: Body,
    call: Call,
    operation: &'a str,
}

impl<'a> Request<'a> {
    /// A request with no body.
    pub fn new(method: reqwest::Method, url: url::Url, call: Call, operation: &'a str) -> Self {
        Request {
            method,
            url,
            body: Body::Empty,
            call,
            operation,
        }
    }

    /// A `GET` read.
    pub fn read(url: url::Url, operation: &'a str) -> Self {
        Self::new(reqwest::Method::GET, url, Call::Read, operation)
    }

    /// The request carrying `value` as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.body = match serde_json::to_vec(value) {
            Ok(bytes) => Body::Json(Bytes::from(bytes)),
            Err(e) => Body::Unencodable(e.to_string()),
        };
        self
    }

    /// The request carrying `pairs` as a form.
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.body = Body::Form(encoded);
        self
    }
}

/// How an API words a refusal of its credentials: the status (401 or 403) and the API's
/// explanation in; out, the operator's message, naming what was sent and the settings to check.
pub(crate) type Refusal = Box<dyn Fn(u16, &str) -> String + Send + Sync>;

/// The part of each client that sends requests and reads their answers: one
/// `reqwest::Client`, one rate limiter, one retry policy, one set of counters, and how an answer
/// that is not a success becomes an [`ApiError`].
pub(crate) struct HttpCore {
    pub api: Api,
    /// The API's base URL: every request goes below it.
    base: url::Url,
    /// How this API's refusals of the credentials are worded.
    refusal: Refusal,
    client: reqwest::Client,
    limiter: RateLimiter,
    retry: RetryPolicy,
    counters: Counters,
    /// Values that must never appear in an error message, even if a server echoes them.
    secrets: RwLock<Vec<SecretString>>,
    /// Once cancelled, every wait ends with [`ApiError::Cancelled`] (see [`HttpCore::execute`]).
    cancel: RwLock<CancellationToken>,
}

impl fmt::Debug for HttpCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCore")
            .field("api", &self.api)
            .field("base", &self.base.as_str())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl HttpCore {
    /// A core for `api` at `base` with the given per-request timeout and rate; `refusal` words
    /// a refusal of the credentials.
    pub fn new(
        api: Api,
        base: url::Url,
        timeout: Duration,
        requests_per_minute: u32,
        refusal: Refusal,
    ) -> Result<Self, ApiError> {
        check_base_url(api, &base)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .timeout(timeout)
            // Lookups answer 302 with the id in `Location`; following it would also risk
            // sending credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            // Every attempt must pass the rate limiter, so the library may not resend on its own.
            .retry(reqwest::retry::never())
            .build()
            .map_err(|e| ApiError::Config {
                api,
                message: format!("cannot build the HTTP client: {}", error_chain(&e)),
            })?;
        Ok(HttpCore {
            api,
            base,
            refusal,
            client,
            limiter: RateLimiter::per_minute(requests_per_minute),
            retry: RetryPolicy::default(),
            counters: Counters::default(),
            secrets: RwLock::new(Vec::new()),
            cancel: RwLock::new(CancellationToken::new()),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// A URL below the base, `segments` appended (see [`endpoint`]).
    pub fn url(&self, segments: &[&str]) -> url::Url {
        endpoint(&self.base, segments)
    }

    /// Waits until the rate leaves `reserve` requests free after one more (see
    /// [`RateLimiter::room_leaving`]); ends with [`ApiError::Cancelled`] on the cancel token.
    pub async fn room_leaving(&self, reserve: u32) -> Result<(), ApiError> {
        let cancel = self
            .cancel
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.limiter
            .room_leaving(reserve, &cancel)
            .await
            .map_err(|_| ApiError::Cancelled { api: self.api })
    }

    /// From now on, `cancel` ends this client's waits (see [`HttpCore::execute`]).
    pub fn set_cancel(&self, cancel: CancellationToken) {
        *self.cancel.write().unwrap_or_else(|e| e.into_inner()) = cancel;
    }

    /// Replaces the retry policy.
    pub fn set_retry_policy(&mut self, policy: RetryPolicy) {
        self.retry = policy;
    }

    /// Replaces the rate limiter.
    pub fn set_limiter(&mut self, limiter: RateLimiter) {
        self.limiter = limiter;
    }

    /// The rate limiter, so the run can see the requests of the last minute.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// The counters so far.
    pub fn counts(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    /// Adds a value that must be blanked out of every excerpt, and of every log line from now
    /// on (a token rotated in during the run is registered with the log redactor here).
    pub fn add_secret(&self, secret: &SecretString) {
        if secret.expose_secret().len() >= 4 {
            crate::telemetry::register_secret(secret.expose_secret());
            let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
            if !secrets
                .iter()
                .any(|s| s.expose_secret() == secret.expose_secret())
            {
                secrets.push(secret.clone());
            }
        }
    }

    /// `text` with every known secret blanked out.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        for secret in secrets.iter() {
            text = text.replace(secret.expose_secret(), "[redacted]");
        }
        text
    }

    /// An excerpt of `body` with every known secret blanked out. Only the body's first
    /// [`EXCERPT_SCAN_BYTES`] are read; where they cut a secret short, its start is dropped too.
    pub fn excerpt(&self, body: &[u8]) -> String {
        let (head, cut) = excerpt_head(body);
        let mut text = self.redact(&String::from_utf8_lossy(head));
        if cut {
            let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
            trim_partial_secret(&mut text, secrets.iter().map(|s| s.expose_secret()));
        }
        finish_excerpt(&text, cut)
    }

    /// A decode error for `body`, its excerpt redacted.
    pub fn decode_error(&self, err: DecodeError, body: &[u8]) -> ApiError {
        ApiError::Decode {
            api: self.api,
            reason: err.reason,
            excerpt: self.excerpt(body),
        }
    }

    /// A `Decode` error for `body`: `reason` says what was wrong.
    pub fn undecodable(&self, reason: impl Into<String>, body: &[u8]) -> ApiError {
        ApiError::Decode {
            api: self.api,
            reason: reason.into(),
            excerpt: self.excerpt(body),
        }
    }

    /// A `Decode` error for an answer whose status the caller did not expect.
    pub fn unexpected(&self, raw: &Raw) -> ApiError {
        self.undecodable(
            format!("unexpected status {}", raw.status.as_u16()),
            &raw.body,
        )
    }

    /// A create (or registration) whose outcome cannot be known: `operation` names it.
    pub fn outcome_unknown(&self, operation: &str, cause: String) -> ApiError {
        ApiError::OutcomeUnknown {
            api: self.api,
            operation: operation.to_owned(),
            cause,
        }
    }

    /// The API refused the credentials (`status`, with its explanation `message`).
    pub fn credentials_refused(&self, status: u16, message: &str) -> ApiError {
        ApiError::Auth {
            api: self.api,
            message: (self.refusal)(status, message),
        }
    }

    /// The API's explanation of an error answer, or an excerpt of a body that is not JSON.
    pub fn explanation(&self, raw: &Raw) -> String {
        let message = serde_json::from_slice::<Value>(&raw.body)
            .ok()
            .and_then(|v| lenient::error_message(&v));
        let text = match message {
            Some(message) => self.excerpt(message.as_bytes()),
            None => self.excerpt(&raw.body),
        };
        if text.is_empty() {
            "no explanation given".to_owned()
        } else {
            text
        }
    }

    /// The error for an answer that is not a success; `what` names the missing thing for a
    /// 404 (e.g. `customer 42`).
    pub fn status_error(&self, raw: &Raw, what: impl Into<String>) -> ApiError {
        let api = self.api;
        let status = raw.status.as_u16();
        let message = self.explanation(raw);
        match status {
            401 | 403 => self.credentials_refused(status, &message),
            404 => ApiError::NotFound {
                api,
                what: what.into(),
            },
            409 => ApiError::Conflict { api, message },
            400..=499 => ApiError::Validation {
                api,
                status,
                message,
            },
            _ => self.unexpected(raw),
        }
    }

    /// `Ok` for a success, else [`HttpCore::status_error`].
    pub fn expect_success(&self, raw: &Raw, what: impl Into<String>) -> Result<(), ApiError> {
        if raw.status.is_success() {
            Ok(())
        } else {
            Err(self.status_error(raw, what))
        }
    }

    /// A read or removal by id: `Ok(false)` when the API answers 404 (not there), `Ok(true)`
    /// for a success, else [`HttpCore::status_error`].
    pub fn found(&self, raw: &Raw, what: impl Into<String>) -> Result<bool, ApiError> {
        if raw.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.expect_success(raw, what).map(|()| true)
    }

    /// A create's answer: a 4xx refused it (nothing was created: [`HttpCore::status_error`]);
    /// any other answer that is not a success leaves its outcome unknown.
    pub fn expect_created(
        &self,
        raw: &Raw,
        operation: &str,
        what: impl Into<String>,
    ) -> Result<(), ApiError> {
        if raw.status.is_client_error() {
            return Err(self.status_error(raw, what));
        }
        if !raw.status.is_success() {
            let cause = format!("unexpected answer {}", raw.status.as_u16());
            return Err(self.outcome_unknown(operation, cause));
        }
        Ok(())
    }

    /// Sends `request`, with `auth` (a header carrying the credentials) when given: the one
    /// request path of both clients. Retries as [`HttpCore::execute`] says.
    pub async fn send(
        &self,
        request: &Request<'_>,
        auth: Option<(&HeaderName, &HeaderValue)>,
    ) -> Result<Raw, ApiError> {
        if let Body::Unencodable(reason) = &request.body {
            return Err(ApiError::Config {
                api: self.api,
                message: format!("cannot encode the {} request: {reason}", request.operation),
            });
        }
        self.execute(request.call, request.operation, || {
            let builder = self
                .client
                .request(request.method.clone(), request.url.clone());
            let builder = match &request.body {
                Body::Empty | Body::Unencodable(_) => builder,
                Body::Json(bytes) => builder
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(bytes.clone()),
                Body::Form(form) => builder
                    .header(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    )
                    .body(form.clone()),
            };
            match auth {
                Some((name, value)) => builder.header(name.clone(), value.clone()),
                None => builder,
            }
        })
        .await
    }

    /// Sends the request `build` makes, retrying what may be retried. Answers 429 and 5xx never
    /// come back as `Ok`; every other status does, for the caller to interpret.
    ///
    /// Once the cancel token ([`HttpCore::set_cancel`]) is cancelled, every wait ends at once
    /// with [`ApiError::Cancelled`]: the rate limiter's, a retry's backoff, and a read's answer
    /// (a read has no effect, so its answer may be dropped). A write or a token refresh already
    /// sent is waited for: its effect must be known and settled (a refresh rotates the token).
    ///
    /// `operation` names the call in errors and logs, e.g. `customer create`.
    async fn execute<F>(&self, call: Call, operation: &str, build: F) -> Result<Raw, ApiError>
    where
        F: Fn() -> reqwest::RequestBuilder,
    {
        let api = self.api;
        let cancel = self
            .cancel
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let cancelled = ApiError::Cancelled { api };
        let mut retries = 0u32;
        loop {
            if self.limiter.acquire_unless(&cancel).await.is_err() {
                return Err(cancelled);
            }
            self.count_attempt(call, retries > 0);
            let request = build();
            let attempt = if call == Call::Read {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(cancelled),
                    attempt = self.attempt(request) => attempt,
                }
            } else {
                self.attempt(request).await
            };
            note_status(api, &attempt);
            let wait = match attempt {
                Attempt::Answer(raw) if raw.status == StatusCode::TOO_MANY_REQUESTS => {
                    // Refused by the limiter: not applied, so even a create may be resent.
                    self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    let advised = advised_wait(&raw.headers, SystemTime::now());
                    let too_long = advised.is_some_and(|d| d > self.retry.max_advised_wait);
                    if retries >= self.retry.max_retries || too_long {
                        return Err(ApiError::RateLimited {
                            api,
                            retry_after: advised,
                        });
                    }
                    advised.unwrap_or_else(|| self.jitter(retries))
                }
                Attempt::Answer(raw) if raw.status.is_server_error() => {
                    let excerpt = self.excerpt(&raw.body);
                    if call == Call::Create {
                        return Err(ApiError::OutcomeUnknown {
                            api,
                            operation: operation.to_owned(),
                            cause: format!("answered {}: {excerpt}", raw.status.as_u16()),
                        });
                    }
                    if retries >= self.retry.max_retries {
                        return Err(ApiError::Server {
                            api,
                            status: raw.status.as_u16(),
                            excerpt,
                        });
                    }
                    self.jitter(retries)
                }
                Attempt::Answer(raw) => return Ok(raw),
                Attempt::TooLarge { status, url } => {
                    let reason = format!(
                        "answer {} from {url} is larger than {} MiB",
                        status.as_u16(),
                        MAX_BODY_BYTES >> 20
                    );
                    if call == Call::Create && !status.is_client_error() {
                        return Err(ApiError::OutcomeUnknown {
                            api,
                            operation: operation.to_owned(),
                            cause: reason,
                        });
                    }
                    return Err(ApiError::Decode {
                        api,
                        reason,
                        excerpt: String::new(),
                    });
                }
                Attempt::Failed { kind, url, detail } => {
                    if call == Call::Create && !kind.never_sent() {
                        return Err(ApiError::OutcomeUnknown {
                            api,
                            operation: operation.to_owned(),
                            cause: format!("{kind}: {detail}"),
                        });
                    }
                    if !kind.is_transient() || retries >= self.retry.max_retries {
                        return Err(ApiError::Transport {
                            api,
                            kind,
                            url,
                            detail,
                        });
                    }
                    self.jitter(retries)
                }
            };
            tracing::debug!(
                api = %api,
                operation,
                retry = retries + 1,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "http.retry"
            );
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(cancelled),
                _ = tokio::time::sleep(wait) => {}
            }
            retries += 1;
        }
    }

    async fn attempt(&self, request: reqwest::RequestBuilder) -> Attempt {
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Attempt::failed(&err),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let url = strip_query(response.url());
        let mut response = response;
        let mut body = bytes::BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    // Bounded: a runaway answer must not exhaust memory.
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Attempt::TooLarge { status, url };
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => {
                    return Attempt::Answer(Raw {
                        status,
                        headers,
                        body: body.freeze(),
                    });
                }
                // A 429 is a refusal whatever happened to its body.
                Err(_) if status == StatusCode::TOO_MANY_REQUESTS => {
                    return Attempt::Answer(Raw {
                        status,
                        headers,
                        body: Bytes::new(),
                    });
                }
                Err(err) => {
                    return Attempt::Failed {
                        kind: if err.is_timeout() {
                            TransportKind::Timeout
                        } else {
                            TransportKind::Connection
                        },
                        url,
                        detail: format!(
                            "answer {} cut short: {}",
                            status.as_u16(),
                            error_chain(&err)
                        ),
                    };
                }
            }
        }
    }

    fn jitter(&self, retry: u32) -> Duration {
        self.retry.backoff(retry, rand::random::<f64>())
    }

    fn count_attempt(&self, call: Call, is_retry: bool) {
        let counter = match call {
            Call::Read => &self.counters.reads,
            Call::IdempotentWrite | Call::Create => &self.counters.writes,
            Call::Refresh => &self.counters.refreshes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = RUN_COUNTS.try_with(|run| run.add(self.api));
        if is_retry {
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The methods of every API client that only hand over to its `core` ([`HttpCore`]): retry
/// policy, rate limiter, cancellation, counters. Expanded inside each client's `impl` (a trait
/// would make every caller import it); `$side` names the API's requests in the docs.
macro_rules! client_plumbing {
    ($side:literal) => {
        /// Replaces the retry policy (e.g.
        /// [`RetryPolicy::none`](crate::http::RetryPolicy::none) for a quick `check`).
        pub fn with_retry_policy(mut self, policy: $crate::http::RetryPolicy) -> Self {
            self.core.set_retry_policy(policy);
            self
        }

        /// Replaces the rate limiter (one sharing the state DB's request ledger, or one with a
        /// shorter window in tests).
        pub fn with_rate_limiter(mut self, limiter: $crate::http::RateLimiter) -> Self {
            self.core.set_limiter(limiter);
            self
        }

        /// From now on, once `cancel` is cancelled, every wait of this client — the rate limiter,
        /// a retry's backoff, a read's answer — ends at once with
        /// [`ApiError::Cancelled`](crate::http::ApiError::Cancelled); a write already sent
        /// still finishes. (The engine hands each run's token here.)
        pub fn cancel_waits_on(&self, cancel: ::tokio_util::sync::CancellationToken) {
            self.core.set_cancel(cancel);
        }

        /// Requests sent so far, by kind.
        pub fn counts(&self) -> $crate::http::RequestCounts {
            self.core.counts()
        }

        #[doc = concat!(
            "The rate limiter: [`RateLimiter::recent`](crate::http::RateLimiter::recent) is the ",
            $side,
            " requests of the last minute."
        )]
        pub fn limiter(&self) -> &$crate::http::RateLimiter {
            self.core.limiter()
        }
    };
}
pub(crate) use client_plumbing;

/// The requests one sync run sent, counted apart from the clients' totals: the daemon's sweep
/// and quick cycle share the clients, and each reports only its own (`sync.run.finished`).
#[derive(Debug, Default)]
pub struct RunCounts {
    kounta: AtomicU64,
    farmflow: AtomicU64,
}

impl RunCounts {
    /// Requests sent to `api` so far by the run.
    pub fn get(&self, api: Api) -> u64 {
        match api {
            Api::Kounta => self.kounta.load(Ordering::Relaxed),
            Api::Farmflow => self.farmflow.load(Ordering::Relaxed),
        }
    }

    fn add(&self, api: Api) {
        match api {
            Api::Kounta => self.kounta.fetch_add(1, Ordering::Relaxed),
            Api::Farmflow => self.farmflow.fetch_add(1, Ordering::Relaxed),
        };
    }
}

tokio::task_local! {
    static RUN_COUNTS: std::sync::Arc<RunCounts>;
}

/// Runs `run`, counting into `counts` every request it sends (in its own task) to either API.
pub async fn counting_requests<F: std::future::Future>(
    counts: std::sync::Arc<RunCounts>,
    run: F,
) -> F::Output {
    RUN_COUNTS.scope(counts, run).await
}

/// How one attempt ended, for the request metrics: its answer's status class, or `Error` when
/// no answer came (refused, timed out, cut short).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 2xx.
    Success,
    /// 3xx (the CRM's lookups answer 302).
    Redirect,
    /// 4xx, 429 included.
    ClientError,
    /// 5xx.
    ServerError,
    /// No complete answer.
    Error,
}

impl StatusClass {
    /// Every class, in label order.
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Success,
        StatusClass::Redirect,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::Error,
    ];

    /// The class's label value: `2xx`, `3xx`, `4xx`, `5xx` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Error => "error",
        }
    }

    /// The class of an answer's status.
    pub fn of(status: StatusCode) -> StatusClass {
        match status.as_u16() {
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => StatusClass::Error,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Attempts by API and status class, counted for the task that asked (see
/// [`counting_statuses`]), retries included.
#[derive(Debug, Default)]
pub struct StatusCounts {
    counts: [[AtomicU64; 5]; 2],
}

impl StatusCounts {
    /// Attempts to `api` that ended in `class` so far.
    pub fn get(&self, api: Api, class: StatusClass) -> u64 {
        self.counts[api_index(api)][class.index()].load(Ordering::Relaxed)
    }

    fn add(&self, api: Api, class: StatusClass) {
        self.counts[api_index(api)][class.index()].fetch_add(1, Ordering::Relaxed);
    }
}

fn api_index(api: Api) -> usize {
    match api {
        Api::Kounta => 0,
        Api::Farmflow => 1,
    }
}

tokio::task_local! {
    static STATUS_COUNTS: std::sync::Arc<StatusCounts>;
}

/// Runs `run`, counting into `counts` how every attempt it sends (in its own task) to either
/// API ends.
pub async fn counting_statuses<F: std::future::Future>(
    counts: std::sync::Arc<StatusCounts>,
    run: F,
) -> F::Output {
    STATUS_COUNTS.scope(counts, run).await
}

fn note_status(api: Api, attempt: &Attempt) {
    let class = match attempt {
        Attempt::Answer(raw) => StatusClass::of(raw.status),
        Attempt::TooLarge { status, .. } => StatusClass::of(*status),
        Attempt::Failed { .. } => StatusClass::Error,
    };
    let _ = STATUS_COUNTS.try_with(|counts| counts.add(api, class));
}

enum Attempt {
    Answer(Raw),
    TooLarge {
        status: StatusCode,
        url: String,
    },
    Failed {
        kind: TransportKind,
        url: String,
        detail: String,
    },
}

impl Attempt {
    fn failed(err: &reqwest::Error) -> Self {
        Attempt::Failed {
            kind: classify(err),
            url: err.url().map(strip_query).unwrap_or_default(),
            detail: error_chain(err),
        }
    }
}

/// Sorts a transport error into a [`TransportKind`].
fn classify(err: &reqwest::Error) -> TransportKind {
    let chain = error_chain(err).to_ascii_lowercase();
    let mentions_tls = ["certificate", "tls", "handshake", "ssl"]
        .iter()
        .any(|word| chain.contains(word));
    if err.is_connect() {
        let io = io_kinds(err);
        // rustls reports handshake failures as `InvalidData` I/O errors.
        if mentions_tls || io.contains(&std::io::ErrorKind::InvalidData) {
            TransportKind::Tls
        } else if err.is_dns() {
            TransportKind::Dns
        } else if io.contains(&std::io::ErrorKind::ConnectionRefused) {
            TransportKind::Refused
        } else {
            TransportKind::Connect
        }
    } else if err.is_timeout() {
        TransportKind::Timeout
    } else {
        TransportKind::Connection
    }
}

/// Every I/O error kind in the chain, looking inside I/O errors that wrap others (their
/// `source()` skips the wrapped error itself, where rustls puts its `InvalidData`).
fn io_kinds(err: &reqwest::Error) -> Vec<std::io::ErrorKind> {
    let mut kinds = Vec::new();
    let mut source = err.source();
    while let Some(e) = source {
        let mut io = e.downcast_ref::<std::io::Error>();
        while let Some(this) = io {
            kinds.push(this.kind());
            io = this
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<std::io::Error>());
        }
        source = e.source();
    }
    kinds
}

/// The error's sources joined by `: ` (reqwest's own message names the URL, said elsewhere).
fn error_chain(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        source = e.source();
    }
    if parts.is_empty() {
        parts.push(err.to_string());
    }
    excerpt_text(&parts.join(": "))
}

fn strip_query(url: &url::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// A URL under `base` with `segments` appended as path segments (each percent-encoded).
pub(crate) fn endpoint(base: &url::Url, segments: &[&str]) -> url::Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Checks that a base URL can carry paths (`http(s)://host/...`).
fn check_base_url(api: Api, base: &url::Url) -> Result<(), ApiError> {
    if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
        return Err(ApiError::Config {
            api,
            message: format!(
                "{}.base_url {base} is not an http(s) URL",
                api.config_section()
            ),
        });
    }
    Ok(())
}

/// Lenient readers over `serde_json::Value`, shared by both clients' decoders.
///
/// They accept the spellings the contracts tolerate (numbers for strings, `null` for empty)
/// and reject what would silently blank a value (an object where text belongs).
pub(crate) mod lenient {
    use super::Value;
    use serde_json::Map;

    /// What kind of JSON value this is, for error messages (`a list`, `text`, …).
    pub fn kind(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "text",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        }
    }

    /// A record being decoded: its fields, and its id, which every error about it names.
    pub struct Record<'v> {
        /// The record's fields.
        pub obj: &'v Map<String, Value>,
        /// Its id.
        pub id: i64,
        what: &'static str,
    }

    impl<'v> Record<'v> {
        /// `value` as a `what` record (e.g. `customer`), its id read by `id`.
        pub fn new(
            value: &'v Value,
            what: &'static str,
            id: impl FnOnce(&Map<String, Value>) -> Result<i64, String>,
        ) -> Result<Self, String> {
            let obj = value
                .as_object()
                .ok_or_else(|| format!("expected a {what} object, found {}", kind(value)))?;
            let id = id(obj).map_err(|e| format!("{what} id {e}"))?;
            Ok(Record { obj, id, what })
        }

        /// The text of field `key` (see [`text`]).
        pub fn text(&self, key: &str) -> Result<String, String> {
            text(self.obj.get(key)).map_err(|e| format!("{} {}: {key:?} {e}", self.what, self.id))
        }
    }

    /// Text of a field: strings as they are, numbers and booleans spelled out, missing or
    /// `null` as `""`. Arrays and objects are an error: reading them as empty would blank data.
    pub fn text(value: Option<&Value>) -> Result<String, String> {
        match value {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            Some(Value::Array(_)) => Err("is a list, not text".to_owned()),
            Some(Value::Object(_)) => Err("is an object, not text".to_owned()),
        }
    }

    /// A positive integer id given as a number or a string of digits.
    pub fn id(value: Option<&Value>) -> Result<i64, String> {
        let id = match value {
            None | Some(Value::Null) => return Err("is missing".to_owned()),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f > 0.0 && *f < 9.0e15)
                        .map(|f| f as i64)
                })
                .ok_or_else(|| format!("{n} is not a whole number"))?,
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("{:?} is not a number", super::excerpt_text(s)));
                }
                s.parse::<i64>().map_err(|_| "is out of range".to_owned())?
            }
            Some(_) => return Err("is not a number".to_owned()),
        };
        if id > 0 {
            Ok(id)
        } else {
            Err(format!("{id} is not a positive id"))
        }
    }

    /// The first of `keys` present with a non-empty text value, else `""`.
    pub fn first_text(
        obj: &serde_json::Map<String, Value>,
        keys: &[&str],
    ) -> Result<String, String> {
        for key in keys {
            let value = text(obj.get(*key)).map_err(|e| format!("{key:?} {e}"))?;
            if !value.is_empty() {
                return Ok(value);
            }
        }
        Ok(String::new())
    }

    /// The API's own explanation in an error body, from whichever of the usual keys it uses.
    pub fn error_message(value: &Value) -> Option<String> {
        let obj = value.as_object()?;
        let pick = |key: &str| match obj.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(Value::Object(inner)) => inner
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned),
            Some(Value::Array(items)) if !items.is_empty() => Some(
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            _ => None,
        };
        let description = ["error_description", "error_message", "message", "errors"]
            .iter()
            .find_map(|k| pick(k));
        match (pick("error"), description) {
            (Some(code), Some(text)) if code != text => Some(format!("{code}: {text}")),
            (code, text) => text.or(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_into_status_classes() {
        let class = |code: u16| StatusClass::of(StatusCode::from_u16(code).unwrap()).as_str();
        assert_eq!(class(200), "2xx");
        assert_eq!(class(204), "2xx");
        assert_eq!(class(302), "3xx");
        assert_eq!(class(404), "4xx");
        assert_eq!(class(429), "4xx");
        assert_eq!(class(503), "5xx");
        assert_eq!(StatusClass::Error.as_str(), "error");
    }

    #[test]
    fn excerpt_is_short_single_line() {
        let long = "<html>\n<body>\n".to_owned() + &"x".repeat(1000);
        let e = excerpt(long.as_bytes());
        assert!(e.chars().count() <= EXCERPT_CHARS, "{}", e.chars().count());
        assert!(e.starts_with("<html> <body> xxx"));
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b"  short\r\n body "), "short body");
        assert_eq!(excerpt(b""), "");
        assert_eq!(excerpt(&[0xff, 0xfe, b'a']), "\u{fffd}\u{fffd}a");
    }

    #[test]
    fn backoff_is_full_jitter_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0, 1.0), Duration::from_millis(500));
        assert_eq!(p.backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(4, 1.0), Duration::from_secs(8));
        assert_eq!(p.backoff(6, 1.0), Duration::from_secs(30));
        assert_eq!(p.backoff(40, 1.0), Duration::from_secs(30));
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(2, 0.5), Duration::from_secs(1));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn advised_wait_reads_both_headers_and_takes_the_later() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(advised_wait(&headers(&[]), now), None);
        assert_eq!(
            advised_wait(&headers(&[("x-ratelimit-reset", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            advised_wait(&headers(&[("x-ratelimit-reset", "1800000012")]), now),
            Some(Duration::from_secs(12))
        );
        // An epoch already past means "now".
        assert_eq!(
            advised_wait(&headers(&[("x-ratelimit-reset", "1700000000")]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            advised_wait(&headers(&[("retry-after", "3")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            advised_wait(
                &headers(&[("x-ratelimit-reset", "2"), ("retry-after", "5")]),
                now
            ),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            advised_wait(
                &headers(&[("x-ratelimit-reset", "1800000020"), ("retry-after", "5")]),
                now
            ),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            advised_wait(
                &headers(&[("retry-after", "soon"), ("x-ratelimit-reset", "-4")]),
                now
            ),
            None
        );
    }

    #[test]
    fn lenient_text_and_ids() {
        use serde_json::json;
        assert_eq!(lenient::text(Some(&json!("a"))).unwrap(), "a");
        assert_eq!(lenient::text(Some(&json!(2112))).unwrap(), "2112");
        assert_eq!(lenient::text(Some(&json!(null))).unwrap(), "");
        assert_eq!(lenient::text(None).unwrap(), "");
        assert!(lenient::text(Some(&json!({"a": 1}))).is_err());
        assert!(lenient::text(Some(&json!(["a"]))).is_err());
        assert_eq!(lenient::id(Some(&json!(42))).unwrap(), 42);
        assert_eq!(lenient::id(Some(&json!(" 42 "))).unwrap(), 42);
        assert_eq!(lenient::id(Some(&json!(42.0))).unwrap(), 42);
        for bad in [
            json!(0),
            json!(-3),
            json!("4a"),
            json!(""),
            json!(1.5),
            json!(null),
            json!("99999999999999999999"),
            json!([1]),
        ] {
            assert!(lenient::id(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_message_reads_each_shape() {
        use serde_json::json;
        let m = |v| lenient::error_message(&v);
        assert_eq!(
            m(json!({"error": "invalid_token", "error_description": "expired"})).as_deref(),
            Some("invalid_token: expired")
        );
        assert_eq!(
            m(json!({"error_message": "bad country"})).as_deref(),
            Some("bad country")
        );
        assert_eq!(
            m(json!({"status": "error", "message": "nope"})).as_deref(),
            Some("nope")
        );
        assert_eq!(m(json!({"error": "x"})).as_deref(), Some("x"));
        assert_eq!(m(json!([1])), None);
    }

    #[test]
    fn endpoint_appends_segments() {
        let base = url::Url::parse("http://h:1/v1/").unwrap();
        assert_eq!(
            endpoint(&base, &["companies", "5", "customers"]).as_str(),
            "http://h:1/v1/companies/5/customers"
        );
        let base = url::Url::parse("http://h:1").unwrap();
        assert_eq!(
            endpoint(&base, &["customers-get"]).as_str(),
            "http://h:1/customers-get"
        );
    }
}

/// Test helpers shared by the decoders' property tests.
#[cfg(test)]
pub(crate) mod testing {
    use proptest::prelude::*;
    use serde_json::Value;

    /// Arbitrary JSON, nested up to 4 levels, whose object keys are mostly the names in `keys`
    /// (separated by white space: the decoders meet their own fields with wrong types) and
    /// text leaves match `text`.
    pub(crate) fn json_value(
        keys: &'static str,
        text: &'static str,
    ) -> impl Strategy<Value = Value> {
        let keys: Vec<&'static str> = keys.split_whitespace().collect();
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text.prop_map(Value::from),
            Just(Value::from("error")),
            Just(Value::from("success")),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            let key = prop_oneof![
                3 => prop::sample::select(keys.clone()).prop_map(str::to_owned),
                1 => "[a-z_-]{1,8}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

#[cfg(test)]
mod contact_tests {
    use super::*;

    #[test]
    fn emails_and_phones_are_masked() {
        let text =
            r#"cannot read: "{\"email\":\"dee.private@example.com\",\"phone\":\"0412 654 321\"…""#;
        let masked = mask_contacts(text);
        assert!(!masked.contains("dee.private"), "{masked}");
        assert!(!masked.contains("0412"), "{masked}");
        assert!(
            masked.contains("[email]") && masked.contains("[phone]"),
            "{masked}"
        );
        for phone in [
            "+1 503 555 0142",
            "(04) 1230-0001",
            "02 8765 4321",
            "0287654321",
            "8765-4321",
        ] {
            let masked = mask_contacts(&format!("phone {phone}, again"));
            assert_eq!(masked, "phone [phone], again", "{phone}");
        }
        assert_eq!(
            mask_contacts("mail Tom.OBrien@Example.com."),
            "mail [email]."
        );
    }

    #[test]
    fn ids_dates_and_ordinary_text_are_kept() {
        for text in [
            "customer 389403 (404)",
            "one-time order 9001 due 2026-03-12",
            "created_at 2026-11-26T12:03:30+10:00",
            "could not reach Kounta at http://127.0.0.1:41234/v1 (timed out)",
            "not JSON (EOF while parsing a string at line 1 column 203)",
            "user@localhost has no domain",
            "token at-3f9a123456789012 stays",
            "farmflow:301 and crm 389400",
        ] {
            assert_eq!(mask_contacts(text), text);
        }
    }

    #[test]
    fn excerpts_mask_emails_and_phones_but_keep_the_message() {
        let body = r#"{"error":"invalid","error_description":"mobile 0412 345 678 already used by jamie+x@example.com (customer 389427)"}"#;
        let e = excerpt(body.as_bytes());
        assert!(!e.contains("jamie"), "{e}");
        assert!(!e.contains("345"), "{e}");
        assert!(e.contains("[email]"), "{e}");
        assert!(e.contains("[phone]"), "{e}");
        assert!(e.contains("already used by"), "{e}");
        assert!(e.contains("389427"), "short ids stay: {e}");
        assert_eq!(excerpt(b"+61 (02) 8765-4321."), "[phone].");
        assert_eq!(
            excerpt(b"<h1>502 Bad Gateway</h1>"),
            "<h1>502 Bad Gateway</h1>"
        );
    }
}

#[cfg(test)]
mod excerpt_cut_tests {
    use super::*;

    fn core_with_secret(secret: &str) -> HttpCore {
        let refusal: Refusal = Box::new(|status, message| format!("refused ({status}): {message}"));
        let base = url::Url::parse("http://127.0.0.1:1/").unwrap();
        let core = HttpCore::new(Api::Farmflow, base, Duration::from_secs(5), 60, refusal).unwrap();
        core.add_secret(&SecretString::from(secret.to_owned()));
        core
    }

    #[test]
    fn an_excerpt_reads_only_the_start_of_a_body() {
        // Cut first, then masked: what lies past the first few KiB is never copied or scanned
        // (an answer may be hundreds of MiB), so it cannot reach the excerpt either.
        let mut body = vec![b' '; 2 * EXCERPT_SCAN_BYTES];
        body.extend_from_slice(b"text far down the body");
        assert_eq!(excerpt(&body), "…");
        let core = core_with_secret("s3cr3t-value");
        assert_eq!(core.excerpt(&body), "…");
        let mut short = b"error: ".to_vec();
        short.extend(std::iter::repeat_n(b' ', EXCERPT_SCAN_BYTES));
        short.extend_from_slice(b"detail");
        assert_eq!(excerpt(&short), "error:…");
    }

    #[test]
    fn the_cut_never_leaves_part_of_a_secret_or_a_contact() {
        let secret = "s3cr3t-value-0123";
        let core = core_with_secret(secret);
        for at in 1..secret.len() {
            // The body's first EXCERPT_SCAN_BYTES end `at` bytes into the secret, which is
            // spaced from what comes before so the excerpt reaches it.
            let mut body = vec![b' '; EXCERPT_SCAN_BYTES - at];
            body.extend_from_slice(secret.as_bytes());
            body.extend_from_slice(b" and more");
            let e = core.excerpt(&body);
            assert!(!e.contains(&secret[..at.min(4)]), "cut at {at}: {e:?}");
        }
        // A secret with a space in it, cut after the space: the redactor cannot recognise
        // what is left, so the excerpt drops the secret's start itself.
        let spaced = "open sesame-42";
        let core = core_with_secret(spaced);
        for at in 1..spaced.len() {
            let mut body = vec![b' '; EXCERPT_SCAN_BYTES - at];
            body.extend_from_slice(spaced.as_bytes());
            let e = core.excerpt(&body);
            assert!(!e.contains("open"), "cut at {at}: {e:?}");
        }
        // A phone number cut short by the limit is no longer a phone to the mask: it is
        // dropped with the word it is in.
        let mut body = vec![b' '; EXCERPT_SCAN_BYTES - 6];
        body.extend_from_slice(b"0412345678 more");
        assert_eq!(excerpt(&body), "…");
        // A character split by the cut is not half kept.
        let mut body = vec![b'a'; EXCERPT_SCAN_BYTES - 1];
        body.extend_from_slice("é tail".as_bytes());
        assert!(!excerpt(&body).contains('\u{fffd}'));
    }
}
