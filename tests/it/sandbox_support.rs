//! Plain-HTTP helpers for the sandbox's own tests: they speak to the fakes with bare `reqwest`,
//! never through farmsync's clients.

use std::convert::Infallible;

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use farmsync::sandbox::{Sandbox, SandboxOptions};
use reqwest::{Client, RequestBuilder, Response};
use serde_json::Value;
use tokio::sync::mpsc;

/// Starts both fakes with default options.
pub async fn start() -> Sandbox {
    start_with(SandboxOptions::default()).await
}

/// Starts both fakes.
pub async fn start_with(options: SandboxOptions) -> Sandbox {
    Sandbox::start(options).await.expect("sandbox starts")
}

/// A client that does not follow redirects (lookups answer 302).
pub fn http() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client builds")
}

/// Calls the fake CRM as a well-behaved client would (basic auth, JSON).
pub struct Crm {
    pub http: Client,
    pub base: String,
    pub cid: i64,
    pub user: String,
    pub pass: String,
}

impl Crm {
    pub fn new(sb: &Sandbox) -> Self {
        Crm {
            http: http(),
            base: sb.kounta_url(),
            cid: sb.kounta().company_id(),
            user: sb.kounta().client_id().to_owned(),
            pass: sb.kounta().client_secret().to_owned(),
        }
    }

    /// `{base}/companies/{cid}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/companies/{}{}", self.base, self.cid, path)
    }

    /// An authenticated request accepting JSON.
    pub fn req(&self, method: reqwest::Method, url: &str) -> RequestBuilder {
        self.http
            .request(method, url)
            .basic_auth(&self.user, Some(&self.pass))
            .header("Accept", "application/json")
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.req(reqwest::Method::GET, &self.url(path))
    }

    pub fn post(&self, path: &str, body: &Value) -> RequestBuilder {
        self.req(reqwest::Method::POST, &self.url(path)).json(body)
    }

    pub fn put(&self, path: &str, body: &Value) -> RequestBuilder {
        self.req(reqwest::Method::PUT, &self.url(path)).json(body)
    }

    /// Creates a customer and returns the id named by `Location`.
    pub async fn create(&self, body: &Value) -> i64 {
        let r = self
            .post("/customers", body)
            .send()
            .await
            .expect("create sent");
        assert_eq!(r.status(), 201, "create answered {}", r.status());
        id_from_location(&r)
    }
}

/// The id at the end of a `Location` header.
pub fn id_from_location(r: &Response) -> i64 {
    let location = r
        .headers()
        .get("location")
        .expect("location header")
        .to_str()
        .expect("ascii location");
    location
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .expect("numeric id at the end of location")
}

/// Calls the fake FarmFlow with its key.
pub struct Farm {
    pub http: Client,
    pub base: String,
    pub header: String,
    pub value: String,
}

impl Farm {
    pub fn new(sb: &Sandbox) -> Self {
        let f = sb.farmflow();
        Farm {
            http: http(),
            base: sb.farmflow_url(),
            header: f.auth_header().to_owned(),
            value: format!("{}{}", f.auth_prefix(), f.api_key()),
        }
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.http
            .get(format!("{}{}", self.base, path))
            .header(&self.header, &self.value)
    }

    pub fn post(&self, path: &str, body: &Value) -> RequestBuilder {
        self.http
            .post(format!("{}{}", self.base, path))
            .header(&self.header, &self.value)
            .json(body)
    }
}

/// Status and JSON body of a response (`Value::Null` when the body is not JSON).
pub async fn status_json(r: RequestBuilder) -> (u16, Value) {
    let r = r.send().await.expect("request sent");
    let status = r.status().as_u16();
    let body = r.bytes().await.expect("body read");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// One request a webhook receiver got.
#[derive(Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A webhook receiver on 127.0.0.1: every request is passed on and answered 200 (or never,
/// when `hang`).
pub async fn receiver(hang: bool) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new().fallback(move |req: Request| {
        let tx = tx.clone();
        async move {
            let path = req.uri().path().to_owned();
            let headers = req.headers().clone();
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let _ = tx.send(Received {
                path,
                headers,
                body,
            });
            if hang {
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(StatusCode::OK)
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rx)
}
