//! Helpers for the client tests: the sandbox, clients pointed at it, token stores, and a tiny
//! server that records what a client sent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderMap;
use farmsync::farmflow::{FarmflowClient, FarmflowOptions};
use farmsync::http::RetryPolicy;
use farmsync::kounta::{
    KountaAuth, KountaClient, KountaOptions, MemoryTokenStore, OAuthTokens, TokenStore,
    TokenStoreError,
};
use farmsync::sandbox::{
    FarmflowRecord, KountaRecord, KountaRecordAddress, Sandbox, SandboxOptions,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use url::Url;

/// A rate no test gets near, so only the tests about limits wait for the limiter.
pub const FAST_RATE: u32 = 1_000_000;

/// Starts both fakes with default options.
pub async fn sandbox() -> Sandbox {
    sandbox_with(SandboxOptions::default()).await
}

/// Starts both fakes.
pub async fn sandbox_with(options: SandboxOptions) -> Sandbox {
    Sandbox::start(options).await.expect("sandbox starts")
}

/// The documented retry policy with millisecond backoffs, so retry tests run in real time.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(2),
        cap: Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

/// Basic-auth options for the sandbox's CRM (company discovered via `/companies/me`).
pub fn kounta_options(sb: &Sandbox) -> KountaOptions {
    KountaOptions {
        base_url: Url::parse(&sb.kounta_url()).expect("url"),
        company_id: None,
        auth: KountaAuth::Basic {
            client_id: sb.kounta().client_id().to_owned(),
            client_secret: SecretString::from(sb.kounta().client_secret()),
        },
        requests_per_minute: FAST_RATE,
        timeout: Duration::from_secs(10),
    }
}

/// OAuth options for the sandbox's CRM, with its current refresh token.
pub fn kounta_oauth_options(sb: &Sandbox) -> KountaOptions {
    KountaOptions {
        auth: KountaAuth::OAuth {
            client_id: sb.kounta().client_id().to_owned(),
            client_secret: SecretString::from(sb.kounta().client_secret()),
            refresh_token: SecretString::from(sb.kounta().refresh_token()),
        },
        ..kounta_options(sb)
    }
}

/// A basic-auth CRM client with quick retries.
pub fn kounta(sb: &Sandbox) -> KountaClient {
    kounta_with(kounta_options(sb))
}

/// A CRM client for `options` with quick retries and an in-memory token store.
pub fn kounta_with(options: KountaOptions) -> KountaClient {
    KountaClient::new(options, Arc::new(MemoryTokenStore::new()))
        .expect("client builds")
        .with_retry_policy(quick_retries())
}

/// Options for the sandbox's FarmFlow with its key and header.
pub fn farmflow_options(sb: &Sandbox) -> FarmflowOptions {
    let f = sb.farmflow();
    FarmflowOptions {
        base_url: Url::parse(&sb.farmflow_url()).expect("url"),
        api_key: SecretString::from(f.api_key()),
        auth_header: f.auth_header().to_owned(),
        auth_prefix: f.auth_prefix().to_owned(),
        requests_per_minute: FAST_RATE,
        timeout: Duration::from_secs(10),
    }
}

/// A FarmFlow client with quick retries.
pub fn farmflow(sb: &Sandbox) -> FarmflowClient {
    farmflow_with(farmflow_options(sb))
}

/// A FarmFlow client for `options` with quick retries.
pub fn farmflow_with(options: FarmflowOptions) -> FarmflowClient {
    FarmflowClient::new(options)
        .expect("client builds")
        .with_retry_policy(quick_retries())
}

/// A CRM customer as a person would enter it in the back office.
pub fn crm_person(n: usize) -> KountaRecord {
    KountaRecord {
        first_name: format!("First{n}"),
        last_name: format!("Last{n}"),
        email: format!("person{n}@example.com"),
        phone: format!("02 8765 {n:04}"),
        mobile: format!("0412 {n:06}"),
        tags: vec!["Newsletter".to_owned()],
        primary_address: Some(KountaRecordAddress {
            address: format!("{n} Mutton Street\nSuite 5"),
            city: "Beeftown".to_owned(),
            state: "NSW".to_owned(),
            postal_code: "2112".to_owned(),
            country: "AU".to_owned(),
        }),
        ..KountaRecord::default()
    }
}

/// A FarmFlow customer as a person would enter it.
pub fn farm_person(n: usize) -> FarmflowRecord {
    FarmflowRecord {
        company: format!("Greens {n}"),
        firstname: format!("Grower{n}"),
        lastname: format!("Field{n}"),
        address: format!("{n} Farm Road"),
        address2: String::new(),
        city: "Hobart".to_owned(),
        state: "TAS".to_owned(),
        zip: "7000".to_owned(),
        phone: format!("0362 00{n:04}"),
        email: format!("grower{n}@example.com"),
        country: "Australia".to_owned(),
        notes: "keeps the trays".to_owned(),
        ..FarmflowRecord::default()
    }
}

/// A token store in a file, as a separate process would see it: every load reads the file,
/// every save writes and syncs it before returning.
pub struct FileTokenStore {
    path: PathBuf,
}

impl FileTokenStore {
    /// A store at `path` (absent until the first save).
    pub fn new(path: PathBuf) -> Self {
        FileTokenStore { path }
    }
}

impl TokenStore for FileTokenStore {
    fn load(&self) -> Result<Option<OAuthTokens>, TokenStoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TokenStoreError::new(e.to_string())),
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TokenStoreError::new(e.to_string()))?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Ok(Some(OAuthTokens {
            access_token: SecretString::from(text("access")),
            refresh_token: SecretString::from(text("refresh")),
            expires_at: v["expires_at"].as_i64(),
        }))
    }

    fn save(&self, tokens: &OAuthTokens) -> Result<(), TokenStoreError> {
        use std::io::Write;
        let body = serde_json::json!({
            "access": tokens.access_token.expose_secret(),
            "refresh": tokens.refresh_token.expose_secret(),
            "expires_at": tokens.expires_at,
        });
        let tmp = self.path.with_extension("tmp");
        let mut file =
            std::fs::File::create(&tmp).map_err(|e| TokenStoreError::new(e.to_string()))?;
        file.write_all(body.to_string().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| TokenStoreError::new(e.to_string()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| TokenStoreError::new(e.to_string()))
    }
}

/// A token store that runs `on_save` (e.g. to look at the sandbox) before it stores, and can
/// be told to fail.
pub struct ProbeTokenStore {
    inner: MemoryTokenStore,
    fail: bool,
    on_save: Box<dyn Fn(&OAuthTokens) + Send + Sync>,
    /// Refresh tokens saved, in order.
    pub saved: Mutex<Vec<String>>,
}

impl ProbeTokenStore {
    /// A store calling `on_save` first; with `fail` every save is refused.
    pub fn new(fail: bool, on_save: impl Fn(&OAuthTokens) + Send + Sync + 'static) -> Self {
        ProbeTokenStore {
            inner: MemoryTokenStore::new(),
            fail,
            on_save: Box::new(on_save),
            saved: Mutex::new(Vec::new()),
        }
    }
}

impl TokenStore for ProbeTokenStore {
    fn load(&self) -> Result<Option<OAuthTokens>, TokenStoreError> {
        self.inner.load()
    }

    fn save(&self, tokens: &OAuthTokens) -> Result<(), TokenStoreError> {
        (self.on_save)(tokens);
        if self.fail {
            return Err(TokenStoreError::new("disk full"));
        }
        self.saved
            .lock()
            .unwrap()
            .push(tokens.refresh_token.expose_secret().to_owned());
        self.inner.save(tokens)
    }
}

/// One request the recording server got.
#[derive(Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

/// A server on 127.0.0.1 that records each request and answers `status` with `body`.
pub async fn recorder(
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: &'static str,
) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("recorder binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new().fallback(move |req: Request| {
        let tx = tx.clone();
        let headers = headers.clone();
        async move {
            let method = req.method().to_string();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let request_headers = req.headers().clone();
            let received = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let _ = tx.send(Seen {
                method,
                path,
                headers: request_headers,
                body: String::from_utf8_lossy(&received).into_owned(),
            });
            let mut response = axum::response::Response::new(axum::body::Body::from(body));
            *response.status_mut() = axum::http::StatusCode::from_u16(status).expect("status");
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(name, value.parse().expect("header value"));
            }
            response
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rx)
}

/// A local port nothing listens on.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    listener.local_addr().expect("address").port()
}
