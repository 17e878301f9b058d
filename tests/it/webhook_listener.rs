//! The webhook listener in-process, over real HTTP: what it accepts, what it refuses and with
//! which status, that a hint is durable before the 200, and that slow clients are cut off.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use farmsync::ids::KountaId;
use farmsync::store::{SharedStore, Store};
use farmsync::webhook::{
    self, ListenerOptions, MAX_BODY_BYTES, SECRET_HEADER, SIGNATURE_HEADER, Topic, WebhookReceiver,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The signing token and shared secret the in-process listener is configured with.
pub(crate) const TOKEN: &str = "signing-token";
pub(crate) const SECRET: &str = "shared-secret";

/// The listener served in-process on a free port, with its own store, recording every hint
/// it tells the worker about.
pub(crate) struct Listener {
    pub(crate) url: String,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) store: SharedStore,
    hints: Arc<Mutex<Vec<(Topic, KountaId)>>>,
    stop: CancellationToken,
    tracker: TaskTracker,
    _dir: tempfile::TempDir,
}

impl Listener {
    pub(crate) async fn start(options: ListenerOptions) -> Listener {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedStore::new(Store::open(&dir.path().join("s.db")).unwrap());
        let hints = Arc::new(Mutex::new(Vec::new()));
        let seen = hints.clone();
        let receiver = WebhookReceiver::new(
            store.clone(),
            TOKEN.to_owned().into(),
            SECRET.to_owned().into(),
            Arc::new(move |topic, id| seen.lock().unwrap().push((topic, id))),
        )
        .with_body_timeout(options.body_timeout);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        webhook::spawn(
            listener,
            webhook::router(receiver),
            options,
            stop.clone(),
            &tracker,
        );
        Listener {
            url: format!("http://{addr}{}", webhook::PATH_PREFIX),
            addr,
            store,
            hints,
            stop,
            tracker,
            _dir: dir,
        }
    }

    async fn post(
        &self,
        topic: &str,
        body: &[u8],
        secret: Option<&str>,
        signature: Option<String>,
    ) -> u16 {
        let mut req = reqwest::Client::new()
            .post(format!("{}/{topic}", self.url))
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        if let Some(s) = secret {
            req = req.header(SECRET_HEADER, s);
        }
        if let Some(s) = signature {
            req = req.header(SIGNATURE_HEADER, s);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// A correctly signed delivery.
    async fn deliver(&self, topic: &str, body: &[u8]) -> u16 {
        self.post(topic, body, Some(SECRET), Some(webhook::sign(body, TOKEN)))
            .await
    }

    /// How many hints the listener has told the worker about.
    pub(crate) fn told(&self) -> usize {
        self.hints.lock().unwrap().len()
    }

    async fn stored(&self) -> Vec<farmsync::store::Hint> {
        self.store.call(|s| s.hints()).await.unwrap()
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
            .await
            .expect("the listener stops");
    }
}

fn quick() -> ListenerOptions {
    ListenerOptions {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        connection_deadline: Duration::from_secs(5),
        max_connections: 8,
    }
}

#[tokio::test]
async fn a_signed_delivery_is_stored_before_the_200_and_a_replay_is_idempotent() {
    let l = Listener::start(quick()).await;
    let body = br#"{"id": 389427, "first_name": "Jamie", "email": "jamie@example.com"}"#;
    assert_eq!(l.deliver("updated", body).await, 200);
    // The answer came after the hint was stored: it is there now.
    let hints = l.stored().await;
    assert_eq!(hints.len(), 1);
    assert_eq!(hints[0].kounta_id, KountaId(389427));
    assert_eq!(hints[0].topic, "customers/updated");
    assert_eq!(
        *l.hints.lock().unwrap(),
        vec![(Topic::Updated, KountaId(389427))]
    );

    assert_eq!(l.deliver("updated", body).await, 200);
    let hints = l.stored().await;
    assert_eq!(hints.len(), 1, "one hint per customer");
    assert_eq!(hints[0].deliveries, 2);

    assert_eq!(l.deliver("deleted", br#"{"id_str": "77"}"#).await, 200);
    assert_eq!(l.deliver("created", br#"{"id": "78"}"#).await, 200);
    let topics: Vec<String> = l.stored().await.into_iter().map(|h| h.topic).collect();
    assert!(topics.contains(&"customers/deleted".to_owned()));
    assert!(topics.contains(&"customers/created".to_owned()));
    l.stop().await;
}

#[tokio::test]
async fn bad_signatures_and_secrets_are_refused_401_and_store_nothing() {
    let l = Listener::start(quick()).await;
    let body = br#"{"id": 5}"#;
    let good = webhook::sign(body, TOKEN);
    let forged = webhook::sign(body, "someone-elses-token");
    let tampered = webhook::sign(br#"{"id": 6}"#, TOKEN);
    let cases: [(Option<&str>, Option<String>); 6] = [
        (Some(SECRET), Some(forged)),
        (Some(SECRET), Some(tampered)),
        (Some(SECRET), Some("not hex".to_owned())),
        (Some(SECRET), None),
        (Some("wrong-secret"), Some(good.clone())),
        (None, Some(good)),
    ];
    for (secret, signature) in cases {
        let shown = format!("{secret:?} {signature:?}");
        assert_eq!(
            l.post("updated", body, secret, signature).await,
            401,
            "{shown}"
        );
    }
    assert!(l.stored().await.is_empty());
    assert!(l.hints.lock().unwrap().is_empty());
    l.stop().await;
}

#[tokio::test]
async fn oversized_malformed_and_idless_bodies_are_refused_with_their_own_status() {
    let l = Listener::start(quick()).await;
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    assert_eq!(l.deliver("updated", &big).await, 413);
    let exactly = {
        let mut b = br#"{"id": 9}"#.to_vec();
        b.resize(MAX_BODY_BYTES, b' ');
        b
    };
    assert_eq!(
        l.deliver("updated", &exactly).await,
        200,
        "1 MiB itself is fine"
    );
    assert_eq!(l.deliver("updated", b"{\"id\": ").await, 400);
    assert_eq!(l.deliver("updated", br#"{"first_name": "A"}"#).await, 400);
    assert_eq!(l.deliver("updated", br#"[{"id": 3}]"#).await, 400);
    assert_eq!(l.deliver("orders", br#"{"id": 3}"#).await, 404);
    let get = reqwest::get(format!("{}/updated", l.url)).await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    let hints = l.stored().await;
    assert_eq!(hints.len(), 1);
    assert_eq!(hints[0].kounta_id, KountaId(9));
    l.stop().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_413() {
    let l = Listener::start(quick()).await;
    let mut stream = TcpStream::connect(l.addr).await.unwrap();
    let head = format!(
        "POST {}/updated HTTP/1.1\r\nHost: x\r\n{SECRET_HEADER}: {SECRET}\r\n{SIGNATURE_HEADER}: 00\r\nTransfer-Encoding: chunked\r\n\r\n",
        webhook::PATH_PREFIX
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    // The server may answer and close before all of it is sent; that is the point.
    for _ in 0..20 {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(l.stored().await.is_empty());
    l.stop().await;
}

async fn read_answer(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("the server answers or closes within 5 s");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_client_that_stalls_in_its_headers_is_disconnected() {
    let l = Listener::start(quick()).await;
    let mut stream = TcpStream::connect(l.addr).await.unwrap();
    stream
        .write_all(b"POST /webhooks/kounta/customers/updated HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let answer = read_answer(&mut stream).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after the 300 ms header timeout"
    );
    assert!(!answer.contains("200 OK"), "{answer}");
    l.stop().await;
}

#[tokio::test]
async fn a_client_that_stalls_in_its_body_gets_408_and_stores_nothing() {
    let l = Listener::start(quick()).await;
    let mut stream = TcpStream::connect(l.addr).await.unwrap();
    let head = format!(
        "POST {}/updated HTTP/1.1\r\nHost: x\r\n{SECRET_HEADER}: {SECRET}\r\nContent-Length: 100\r\n\r\n{{\"id\": 4",
        webhook::PATH_PREFIX
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(l.stored().await.is_empty());
    l.stop().await;
}

#[tokio::test]
async fn the_listener_stops_promptly_with_an_idle_client_connected() {
    let l = Listener::start(ListenerOptions {
        header_timeout: Duration::from_secs(60),
        connection_deadline: Duration::from_secs(120),
        ..quick()
    })
    .await;
    let _idle = TcpStream::connect(l.addr).await.unwrap();
    assert_eq!(l.deliver("updated", br#"{"id": 1}"#).await, 200);
    // `stop` fails the test unless every task ends within 5 s.
    l.stop().await;
}
