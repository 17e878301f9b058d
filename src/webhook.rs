//! The webhook listener: Kounta's `customers/created|updated|deleted` deliveries, verified,
//! recorded as hints in the state DB, then handed to the daemon's worker.
//!
//! Owns the listener and the hints it stores. It never calls either API and never syncs: the
//! worker's next quick cycle reads the customer, and clears the hint.
//!
//! A delivery is only a hint to re-read one customer (deliveries repeat, arrive late or never),
//! so the listener does as little as it can: check both secrets, read at most 1 MiB, find the
//! customer id, store the hint durably, answer 200. The sync itself happens in the worker.
//!
//! Requests are served by a small hand-rolled hyper loop rather than `axum::serve`, because a
//! slow client must not be able to hold a connection: headers have a read timeout, bodies a
//! read timeout, every connection a deadline, and connections are capped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{info, warn};
use url::Url;

use crate::ids::KountaId;
use crate::store::SharedStore;

/// The largest body accepted (1 MiB); larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The path under which the three topics are served (`…/created`, `…/updated`, `…/deleted`).
pub const PATH_PREFIX: &str = "/webhooks/kounta/customers";
/// The custom header Kounta sends with every delivery: `webhooks.shared_secret`.
pub const SECRET_HEADER: &str = "X-Farmsync-Secret";
/// Kounta's signature: hex HMAC-SHA256 of the raw body, keyed with `webhooks.signature_token`.
pub const SIGNATURE_HEADER: &str = "X-Kounta-Signature";

/// The three customer topics farmsync listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `customers/created`.
    Created,
    /// `customers/updated`.
    Updated,
    /// `customers/deleted`.
    Deleted,
}

impl Topic {
    /// Every topic, in registration order.
    pub const ALL: [Topic; 3] = [Topic::Created, Topic::Updated, Topic::Deleted];

    /// The last path segment of the topic's address.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::Created => "created",
            Topic::Updated => "updated",
            Topic::Deleted => "deleted",
        }
    }

    /// The topic as Kounta names it, e.g. `customers/updated`.
    pub fn kounta_name(self) -> &'static str {
        match self {
            Topic::Created => "customers/created",
            Topic::Updated => "customers/updated",
            Topic::Deleted => "customers/deleted",
        }
    }

    /// The topic whose path suffix is `suffix`.
    pub fn from_suffix(suffix: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.suffix() == suffix)
    }

    /// The topic Kounta names `name`.
    pub fn from_kounta_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.kounta_name() == name)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kounta_name())
    }
}

/// The address Kounta posts `topic` to: `<public_url>/webhooks/kounta/customers/<suffix>`.
pub fn address(public_url: &Url, topic: Topic) -> Url {
    let mut url = public_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty()
            .extend(["webhooks", "kounta", "customers", topic.suffix()]);
    }
    url
}

/// The hex HMAC-SHA256 of `body` keyed with `token`, as Kounta signs deliveries.
pub fn sign(body: &[u8], token: &str) -> String {
    let mut mac = hmac_for(token);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn hmac_for(token: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps it panic-free.
    Hmac::<Sha256>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| Hmac::<Sha256>::new_from_slice(&[0u8]).expect("one-byte key"))
}

/// Timeouts and limits of the listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ListenerOptions {
    /// A client must send its complete request headers within this.
    pub header_timeout: Duration,
    /// …and its complete body within this.
    pub body_timeout: Duration,
    /// No connection lives longer than this, whatever it is doing.
    pub connection_deadline: Duration,
    /// At most this many connections are served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            connection_deadline: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

/// Called once a hint is durably stored: the daemon wakes its worker here.
pub type OnHint = Arc<dyn Fn(Topic, KountaId) + Send + Sync>;

/// Called once per delivery with how it ended: `accepted`, or the rejection's reason (the
/// metrics count them).
pub type OnResult = Arc<dyn Fn(&'static str) + Send + Sync>;

/// What the listener needs: the store for hints, both secrets, and whom to tell.
#[derive(Clone)]
pub struct WebhookReceiver {
    store: SharedStore,
    signature_token: SecretString,
    shared_secret: SecretString,
    on_hint: OnHint,
    on_result: Option<OnResult>,
    body_timeout: Duration,
}

impl std::fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("signature_token", &"[redacted]")
            .field("shared_secret", &"[redacted]")
            .field("body_timeout", &self.body_timeout)
            .finish()
    }
}

impl WebhookReceiver {
    /// A receiver storing hints in `store` and calling `on_hint` after each.
    pub fn new(
        store: SharedStore,
        signature_token: SecretString,
        shared_secret: SecretString,
        on_hint: OnHint,
    ) -> Self {
        WebhookReceiver {
            store,
            signature_token,
            shared_secret,
            on_hint,
            on_result: None,
            body_timeout: ListenerOptions::default().body_timeout,
        }
    }

    /// The same receiver, telling `on_result` how each delivery ended.
    pub fn with_on_result(mut self, on_result: OnResult) -> Self {
        self.on_result = Some(on_result);
        self
    }

    fn result(&self, result: &'static str) {
        if let Some(on_result) = &self.on_result {
            on_result(result);
        }
    }

    /// The same receiver with another body read timeout.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }
}

/// Why a delivery was refused; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// `X-Farmsync-Secret` missing or wrong.
    #[error("the {SECRET_HEADER} header is missing or wrong")]
    Secret,
    /// `X-Kounta-Signature` missing, not hex, or not the body's signature.
    #[error("the {SIGNATURE_HEADER} header is missing or does not sign the body")]
    Signature,
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("the body is over 1 MiB")]
    TooLarge,
    /// The body did not arrive in time.
    #[error("the body did not arrive within {0:?}")]
    SlowBody(Duration),
    /// The body could not be read (the client went away).
    #[error("the body could not be read: {0}")]
    Read(String),
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    Malformed(String),
    /// The body names no customer.
    #[error("the body names no customer id: {0}")]
    NoCustomer(String),
    /// The hint could not be stored: Kounta should try again.
    #[error("the hint could not be stored: {0}")]
    Store(String),
}

impl Rejection {
    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Secret | Rejection::Signature => StatusCode::UNAUTHORIZED,
            Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            Rejection::Read(_) | Rejection::Malformed(_) | Rejection::NoCustomer(_) => {
                StatusCode::BAD_REQUEST
            }
            Rejection::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short machine-readable reason, for logs and alerts.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Secret => "bad_shared_secret",
            Rejection::Signature => "bad_signature",
            Rejection::TooLarge => "too_large",
            Rejection::SlowBody(_) => "slow_body",
            Rejection::Read(_) => "unreadable_body",
            Rejection::Malformed(_) => "malformed_json",
            Rejection::NoCustomer(_) => "no_customer_id",
            Rejection::Store(_) => "store_failed",
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        // Nothing about the expected secrets is echoed back.
        let body =
            serde_json::json!({ "error": self.reason(), "error_description": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}

/// The router: `POST /webhooks/kounta/customers/{created|updated|deleted}`.
pub fn router(receiver: WebhookReceiver) -> Router {
    Router::new()
        .route(&format!("{PATH_PREFIX}/{{topic}}"), post(deliver))
        .with_state(receiver)
}

async fn deliver(
    State(receiver): State<WebhookReceiver>,
    Path(suffix): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(topic) = Topic::from_suffix(&suffix) else {
        warn!(
            path_topic = %crate::http::excerpt_text(&suffix),
            peer = %peer,
            status = 404,
            reason = "unknown_topic",
            "webhook.rejected"
        );
        receiver.result("unknown_topic");
        return StatusCode::NOT_FOUND.into_response();
    };
    match accept(&receiver, topic, &headers, body).await {
        Ok(id) => {
            info!(topic = %topic, kounta_id = id.0, "webhook.received");
            receiver.result("accepted");
            (receiver.on_hint)(topic, id);
            StatusCode::OK.into_response()
        }
        Err(rejection) => {
            // Logged without the body: it holds a person's details, and a forged one may be
            // built to poison logs.
            warn!(
                topic = %topic,
                peer = %peer,
                status = rejection.status().as_u16(),
                reason = rejection.reason(),
                detail = %rejection,
                "webhook.rejected"
            );
            receiver.result(rejection.reason());
            rejection.into_response()
        }
    }
}

/// Checks one delivery and stores its hint; the customer it names.
async fn accept(
    receiver: &WebhookReceiver,
    topic: Topic,
    headers: &HeaderMap,
    body: Body,
) -> Result<KountaId, Rejection> {
    // The shared secret first: it costs nothing and needs no body, so a stranger cannot make
    // farmsync read (or wait for) a megabyte.
    let secret = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let expected = receiver.shared_secret.expose_secret().as_bytes();
    if expected.is_empty() || !bool::from(secret.ct_eq(expected)) {
        return Err(Rejection::Secret);
    }
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Rejection::TooLarge);
    }
    let raw = read_body(body, receiver.body_timeout).await?;
    verify_signature(headers, &raw, &receiver.signature_token)?;
    let id = customer_id(&raw)?;
    receiver
        .store
        .call(move |s| s.add_hint(id, topic.kounta_name()))
        .await
        .map_err(|e| Rejection::Store(e.to_string()))?;
    Ok(id)
}

async fn read_body(body: Body, timeout: Duration) -> Result<bytes::Bytes, Rejection> {
    let limited = Limited::new(body, MAX_BODY_BYTES);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(Rejection::SlowBody(timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Rejection::TooLarge),
        Ok(Err(e)) => Err(Rejection::Read(e.to_string())),
    }
}

/// Checks `X-Kounta-Signature` against the body in constant time.
fn verify_signature(
    headers: &HeaderMap,
    body: &[u8],
    token: &SecretString,
) -> Result<(), Rejection> {
    let given = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or(Rejection::Signature)?;
    let given = hex::decode(given).map_err(|_| Rejection::Signature)?;
    let mut mac = hmac_for(token.expose_secret());
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| Rejection::Signature)
}

/// The customer a delivery is about: the record's `id` (or `id_str`), numbers or digit strings,
/// also inside a `{"customer": {...}}` wrapper.
pub fn customer_id(body: &[u8]) -> Result<KountaId, Rejection> {
    use crate::http::lenient;
    use serde_json::Value;
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Rejection::Malformed(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(Rejection::NoCustomer(
            "the body is not a JSON object".to_owned(),
        ));
    };
    if !obj.contains_key("id")
        && !obj.contains_key("id_str")
        && let Some(Value::Object(inner)) = obj.remove("customer")
    {
        obj = inner;
    }
    let id = lenient::id(obj.get("id")).or_else(|e| match obj.get("id_str") {
        Some(v) if !v.is_null() => lenient::id(Some(v)),
        _ => Err(e),
    });
    id.map(KountaId)
        .map_err(|e| Rejection::NoCustomer(format!("\"id\" {e}")))
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets requests in progress
/// finish (each is bounded by the connection deadline). Every task it starts is tracked by
/// `tracker`, so the caller can wait for them.
pub fn spawn(
    listener: TcpListener,
    router: Router,
    options: ListenerOptions,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let connections = tracker.clone();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    tracker.spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors or similar: back off rather than spin on the error.
                    warn!(error = %e, "webhook.accept.failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move {
                    let req = req.map(Body::new);
                    Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {}))
                }
            });
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let _permit = permit;
                let mut builder = hyper::server::conn::http1::Builder::new();
                // One request a connection: nothing idles on a kept-alive socket.
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(options.header_timeout)
                    .keep_alive(false);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                let deadline = tokio::time::sleep(options.connection_deadline);
                tokio::pin!(deadline);
                tokio::select! {
                    _ = &mut connection => return,
                    _ = &mut deadline => return,
                    _ = shutdown.cancelled() => {}
                }
                // Shutting down: finish the request in progress (its hint may be half-stored),
                // accept no other.
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = &mut connection => {}
                    _ = &mut deadline => {}
                }
            });
        }
    });
}

/// What `webhooks register` must do, decided from the CRM's current registrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationPlan {
    /// Topics already registered at the right address with the right secret (registration id).
    pub present: Vec<(Topic, i64)>,
    /// Topics registered at the right address whose headers the CRM does not show: kept, but
    /// the secret cannot be checked.
    pub unverified: Vec<(Topic, i64)>,
    /// Topics to register.
    pub create: Vec<Topic>,
    /// Registrations to remove once the new ones exist: at farmsync's address but with another
    /// secret (it was changed), or duplicates of a present one.
    pub remove: Vec<(Topic, i64)>,
}

/// Whether a registration's address is `expected` (compared as URLs, so `…/x` and an
/// equivalent spelling match).
pub fn same_address(registered: &str, expected: &Url) -> bool {
    match Url::parse(registered.trim()) {
        Ok(url) => &url == expected,
        Err(_) => registered.trim() == expected.as_str(),
    }
}

/// Plans `webhooks register` for `public_url` and `secret` against the CRM's `existing`
/// registrations. Running the plan, then planning again, yields nothing to create or remove.
pub fn plan_registration(
    existing: &[crate::kounta::client::KountaWebhook],
    public_url: &Url,
    secret: &str,
) -> RegistrationPlan {
    let mut plan = RegistrationPlan::default();
    for topic in Topic::ALL {
        let expected = address(public_url, topic);
        let ours: Vec<_> = existing
            .iter()
            .filter(|w| w.topic == topic.kounta_name() && same_address(&w.address, &expected))
            .collect();
        let matching: Vec<_> = ours
            .iter()
            .filter(|w| w.header(SECRET_HEADER) == Some(secret))
            .collect();
        let hidden: Vec<_> = ours.iter().filter(|w| w.headers.is_none()).collect();
        if let Some((first, duplicates)) = matching.split_first() {
            plan.present.push((topic, first.id));
            plan.remove.extend(duplicates.iter().map(|w| (topic, w.id)));
        } else if let Some((first, duplicates)) = hidden.split_first() {
            plan.unverified.push((topic, first.id));
            plan.remove.extend(duplicates.iter().map(|w| (topic, w.id)));
        } else {
            plan.create.push(topic);
        }
        // Shown with another secret: deliveries would be refused (401). Replace them.
        plan.remove.extend(
            ours.iter()
                .filter(|w| w.headers.is_some() && w.header(SECRET_HEADER) != Some(secret))
                .map(|w| (topic, w.id)),
        );
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_hang_under_the_public_url_with_or_without_a_path() {
        let root = Url::parse("https://sync.example.com").unwrap();
        assert_eq!(
            address(&root, Topic::Updated).as_str(),
            "https://sync.example.com/webhooks/kounta/customers/updated"
        );
        let proxied = Url::parse("https://example.com/farmsync/?x=1").unwrap();
        assert_eq!(
            address(&proxied, Topic::Deleted).as_str(),
            "https://example.com/farmsync/webhooks/kounta/customers/deleted"
        );
    }

    #[test]
    fn topics_round_trip_through_suffixes_and_kounta_names() {
        for t in Topic::ALL {
            assert_eq!(Topic::from_suffix(t.suffix()), Some(t));
            assert_eq!(Topic::from_kounta_name(t.kounta_name()), Some(t));
        }
        assert_eq!(Topic::from_suffix("orders"), None);
    }

    #[test]
    fn the_signature_is_hex_hmac_sha256_and_matches_the_sandbox() {
        let body = br#"{"id": 7}"#;
        let ours = sign(body, "tok");
        assert_eq!(ours.len(), 64);
        assert_eq!(ours, crate::sandbox::webhook_signature(body, "tok"));
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, ours.to_uppercase().parse().unwrap());
        let token = SecretString::from("tok".to_owned());
        assert!(verify_signature(&headers, body, &token).is_ok());
        assert!(verify_signature(&headers, br#"{"id": 8}"#, &token).is_err());
        headers.insert(SIGNATURE_HEADER, "zz".parse().unwrap());
        assert!(verify_signature(&headers, body, &token).is_err());
        assert!(verify_signature(&HeaderMap::new(), body, &token).is_err());
    }

    #[test]
    fn customer_ids_are_read_leniently_and_bad_bodies_are_told_apart() {
        assert_eq!(customer_id(br#"{"id": 12}"#).unwrap(), KountaId(12));
        assert_eq!(customer_id(br#"{"id": "12"}"#).unwrap(), KountaId(12));
        assert_eq!(customer_id(br#"{"id_str": "13"}"#).unwrap(), KountaId(13));
        assert_eq!(
            customer_id(br#"{"customer": {"id": 14}}"#).unwrap(),
            KountaId(14)
        );
        assert!(matches!(
            customer_id(b"{nope"),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(customer_id(b"[1]"), Err(Rejection::NoCustomer(_))));
        assert!(matches!(
            customer_id(br#"{"id": -1}"#),
            Err(Rejection::NoCustomer(_))
        ));
        assert!(matches!(
            customer_id(br#"{"first_name": "A"}"#),
            Err(Rejection::NoCustomer(_))
        ));
    }

    fn hook(
        id: i64,
        topic: Topic,
        url: &Url,
        secret: Option<&str>,
    ) -> crate::kounta::client::KountaWebhook {
        crate::kounta::client::KountaWebhook {
            id,
            topic: topic.kounta_name().to_owned(),
            address: address(url, topic).to_string(),
            headers: secret.map(|s| [(SECRET_HEADER.to_owned(), s.to_owned())].into()),
        }
    }

    #[test]
    fn registration_creates_what_is_missing_and_replaces_a_changed_secret() {
        let url = Url::parse("https://sync.example.com/").unwrap();
        let other = Url::parse("https://elsewhere.example.com/").unwrap();
        assert_eq!(
            plan_registration(&[], &url, "s").create,
            Topic::ALL.to_vec()
        );
        let existing = vec![
            hook(1, Topic::Created, &url, Some("s")),
            hook(2, Topic::Updated, &url, Some("old")),
            hook(3, Topic::Deleted, &url, None),
            hook(4, Topic::Created, &other, Some("s")),
            hook(5, Topic::Created, &url, Some("s")),
        ];
        let plan = plan_registration(&existing, &url, "s");
        assert_eq!(plan.present, vec![(Topic::Created, 1)]);
        assert_eq!(plan.unverified, vec![(Topic::Deleted, 3)]);
        assert_eq!(plan.create, vec![Topic::Updated]);
        assert_eq!(plan.remove, vec![(Topic::Created, 5), (Topic::Updated, 2)]);
    }

    #[test]
    fn a_complete_registration_plans_nothing() {
        let url = Url::parse("http://127.0.0.1:8787").unwrap();
        let existing: Vec<_> = Topic::ALL
            .iter()
            .enumerate()
            .map(|(i, t)| hook(i as i64 + 1, *t, &url, Some("s")))
            .collect();
        let plan = plan_registration(&existing, &url, "s");
        assert!(plan.create.is_empty() && plan.remove.is_empty());
        assert_eq!(plan.present.len(), 3);
    }
}
