//! The webhook endpoint under bad input and the daemon under bad deliveries.
//!
//! In-process, over real HTTP: arbitrary bodies, headers and topics never panic the listener,
//! store a hint only when the shared secret and the signature are right, and are refused with
//! the status each refusal has (404 unknown topic, 401 secret or signature, 400 body, 413 size);
//! clients that trickle their headers or body are cut off by the timeouts within a bound.
//! With a running `farmsync run`: duplicated, delayed, dropped and replayed deliveries bring
//! each CRM edit to FarmFlow exactly once, the dropped one by the next scheduled cycle.

use std::collections::BTreeMap;
use std::time::Duration;

use farmsync::sandbox::{DeliveryOutcome, Sandbox, WebhookAction, WebhookFault, When};
use farmsync::webhook::{
    self, ListenerOptions, MAX_BODY_BYTES, SECRET_HEADER, SIGNATURE_HEADER, Topic,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::daemon_support::{Daemon, converge, event, farmsync_in, free_port, linked};
use crate::proof_support::{Scenario, sandbox_config, sound_world, writes};
use crate::support::{Workdir, text};
use crate::webhook_listener::{Listener, SECRET, TOKEN};

/// Every stored hint: customer id → deliveries.
async fn hint_counts(l: &Listener) -> BTreeMap<i64, i64> {
    let hints = l.store.call(|s| s.hints()).await.unwrap();
    hints
        .into_iter()
        .map(|h| (h.kounta_id.0, h.deliveries))
        .collect()
}

fn quick() -> ListenerOptions {
    ListenerOptions {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        connection_deadline: Duration::from_secs(5),
        max_connections: 8,
    }
}

/// What goes into `X-Kounta-Signature`.
#[derive(Debug, Clone)]
enum Signature {
    Missing,
    /// The body's signature with the right token (in upper case when `true`).
    Right(bool),
    /// The body's signature with another token.
    OtherToken(String),
    /// The right token's signature of another body.
    OtherBody(Vec<u8>),
    /// Any printable text.
    Garbage(String),
}

/// One delivery as a stranger (or Kounta) might send it.
#[derive(Debug, Clone)]
struct Attempt {
    topic: String,
    secret: Option<String>,
    signature: Signature,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
}

/// Bodies: arbitrary bytes, and JSON that names a customer in every way the CRM might (and
/// some it must not): ids of any size and sign, digit strings, wrapped, nulls, other types.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (1i64..1_000_000).prop_map(|n| n.to_string()),
        (1i64..1_000_000).prop_map(|n| format!("\"{n}\"")),
        "\"[ -~]{0,12}\"",
        Just("null".to_owned()),
        Just("1.5".to_owned()),
        (1i64..1_000_000).prop_map(|n| format!("{n}.0")),
        (1i64..1_000_000).prop_map(|n| format!("\" {n} \"")),
        Just("1e3".to_owned()),
        Just("-0".to_owned()),
        Just("[1]".to_owned()),
        Just("{}".to_owned()),
    ];
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        3 => id.clone()
            .prop_map(|v| format!("{{\"id\": {v}, \"first_name\": \"Jo\"}}").into_bytes()),
        1 => id.clone()
            .prop_map(|v| format!("{{\"id_str\": {v}}}").into_bytes()),
        1 => id.prop_map(|v| format!("{{\"customer\": {{\"id\": {v}}}}}").into_bytes()),
        1 => any::<String>().prop_map(String::into_bytes),
    ]
}

fn attempt() -> impl Strategy<Value = Attempt> {
    let topic = prop_oneof![
        2 => Just("created".to_owned()),
        2 => Just("updated".to_owned()),
        2 => Just("deleted".to_owned()),
        // Unreserved characters only, so the URL keeps the segment as it is.
        1 => "[a-zA-Z0-9_~-]{0,12}",
    ];
    let secret = prop_oneof![
        5 => Just(Some(SECRET.to_owned())),
        1 => Just(None),
        1 => "[!-~]{0,24}".prop_map(Some),
        1 => Just(Some(format!("{SECRET}x"))),
    ];
    let signature = prop_oneof![
        1 => Just(Signature::Missing),
        5 => any::<bool>().prop_map(Signature::Right),
        1 => "[!-~]{1,16}".prop_map(Signature::OtherToken),
        1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Signature::OtherBody),
        1 => "[!-~]{0,70}".prop_map(Signature::Garbage),
    ];
    let headers = prop::collection::vec(("x-[a-z]{1,8}", "[!-~]{0,20}"), 0..4);
    (topic, secret, signature, body(), headers).prop_map(
        |(topic, secret, signature, body, headers)| Attempt {
            topic,
            secret,
            signature,
            body,
            headers,
        },
    )
}

impl Attempt {
    fn signature_header(&self) -> Option<String> {
        match &self.signature {
            Signature::Missing => None,
            Signature::Right(upper) => {
                let s = webhook::sign(&self.body, TOKEN);
                Some(if *upper { s.to_uppercase() } else { s })
            }
            Signature::OtherToken(token) => Some(webhook::sign(&self.body, token)),
            Signature::OtherBody(other) => Some(webhook::sign(other, TOKEN)),
            Signature::Garbage(s) => Some(s.clone()),
        }
    }

    /// The status the listener must answer and, for a 200, the customer it stores a hint for.
    /// Worked out from the attempt itself, not from the listener's code.
    fn expected(&self) -> (u16, Option<i64>) {
        if Topic::from_suffix(&self.topic).is_none() {
            return (404, None);
        }
        if self.secret.as_deref() != Some(SECRET) {
            return (401, None);
        }
        let right = hex::decode(webhook::sign(&self.body, TOKEN)).unwrap();
        let given = self
            .signature_header()
            .and_then(|s| hex::decode(s.trim()).ok());
        if given.as_deref() != Some(&right[..]) {
            return (401, None);
        }
        match customer(&self.body) {
            Some(id) => (200, Some(id)),
            None => (400, None),
        }
    }
}

/// The customer id a delivery body names, by the CRM's contract and its tolerated variants: a
/// positive whole number `id` (or a string of digits, surrounding spaces allowed), else
/// `id_str`, at the top level or inside `customer`.
fn customer(body: &[u8]) -> Option<i64> {
    let serde_json::Value::Object(top) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let record = match top.get("customer") {
        Some(serde_json::Value::Object(inner))
            if !top.contains_key("id") && !top.contains_key("id_str") =>
        {
            inner
        }
        _ => &top,
    };
    let as_id = |v: &serde_json::Value| {
        match v {
            serde_json::Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f > 0.0 && *f < 9.0e15)
                    .map(|f| f as i64)
            }),
            serde_json::Value::String(s) if s.trim().bytes().all(|b| b.is_ascii_digit()) => {
                s.trim().parse().ok()
            }
            _ => None,
        }
        .filter(|n: &i64| *n > 0)
    };
    match record.get("id") {
        Some(v) if !v.is_null() => as_id(v).or_else(|| record.get("id_str").and_then(as_id)),
        _ => record.get("id_str").and_then(as_id),
    }
}

#[test]
fn any_delivery_is_answered_and_only_a_signed_one_stores_a_hint() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let l = rt.block_on(Listener::start(quick()));
    let client = reqwest::Client::new();
    // 400 in CI; `PROPTEST_CASES` asks for a longer run.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = std::sync::Mutex::new(BTreeMap::<u16, u64>::new());
    let result = runner.run(&attempt(), |a| {
        rt.block_on(async {
            let before = hint_counts(&l).await;
            let told_before = l.told();
            let mut req = client
                .post(format!("{}/{}", l.url, a.topic))
                .body(a.body.clone());
            for (k, v) in &a.headers {
                req = req.header(k, v);
            }
            if let Some(s) = &a.secret {
                req = req.header(SECRET_HEADER, s);
            }
            if let Some(s) = a.signature_header() {
                req = req.header(SIGNATURE_HEADER, s);
            }
            // A panic in the handler would drop the connection: an error here.
            let status = req
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?
                .status()
                .as_u16();
            *statuses.lock().unwrap().entry(status).or_default() += 1;
            let (want, id) = a.expected();
            prop_assert_eq!(status, want);
            let mut after_want = before.clone();
            if let Some(id) = id {
                *after_want.entry(id).or_default() += 1;
            }
            prop_assert_eq!(hint_counts(&l).await, after_want);
            prop_assert_eq!(l.told() - told_before, usize::from(id.is_some()));
            Ok(())
        })
    });
    let seen = statuses.into_inner().unwrap();
    println!("webhook endpoint: {cases} random deliveries, statuses {seen:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    for status in [200, 400, 401, 404] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }
    rt.block_on(l.stop());
}

/// Reads whatever the server answers until it closes, within `bound`.
async fn answer_within(stream: &mut TcpStream, bound: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(bound, stream.read_to_end(&mut buf))
        .await
        .expect("the server answers or closes in time");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn oversized_and_trickling_requests_are_cut_off_within_a_bound() {
    let l = Listener::start(quick()).await;
    let head = |extra: &str| {
        format!(
            "POST {}/updated HTTP/1.1\r\nHost: x\r\n{SECRET_HEADER}: {SECRET}\r\n{extra}",
            webhook::PATH_PREFIX
        )
    };

    // A declared length over the limit: 413 before a byte of the body is read.
    let mut stream = TcpStream::connect(l.addr).await.unwrap();
    let declared = head(&format!(
        "{SIGNATURE_HEADER}: 00\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    ));
    stream.write_all(declared.as_bytes()).await.unwrap();
    let answer = answer_within(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Headers sent a byte every 50 ms, each well within any idle timeout: cut off once the
    // 300 ms header timeout is spent, not served.
    let mut stream = TcpStream::connect(l.addr).await.unwrap();
    let started = Instant::now();
    let slow_head = head("Content-Length: 9\r\n\r\n{\"id\": 1}");
    let mut cut_off = false;
    for byte in slow_head.as_bytes() {
        if stream.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let answer = answer_within(&mut stream, Duration::from_secs(3)).await;
    assert!(
        cut_off || !answer.contains("200 OK"),
        "a trickled request was served: {answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A body sent a byte every 50 ms: 408 once the 300 ms body timeout is spent.
    let body = br#"{"id": 12345, "first_name": "Slow"}"#;
    let mut stream = TcpStream::connect(l.addr).await.unwrap();
    let body_head = head(&format!(
        "{SIGNATURE_HEADER}: {}\r\nContent-Length: {}\r\n\r\n",
        webhook::sign(body, TOKEN),
        body.len()
    ));
    stream.write_all(body_head.as_bytes()).await.unwrap();
    let started = Instant::now();
    for byte in body {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = answer_within(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));

    assert!(
        hint_counts(&l).await.is_empty(),
        "none of them stored a hint"
    );
    assert_eq!(l.told(), 0);
    l.stop().await;
}

const SHARED: &str = "the-proof-shared-secret";
const MINUTE: Duration = Duration::from_secs(60);

/// A config with webhooks on `port` and a scheduled cycle every `seconds` seconds.
fn webhook_config(sb: &Sandbox, port: u16, seconds: u32) -> String {
    sandbox_config(
        sb,
        &format!(
            "[schedule]\ncron = \"*/{seconds} * * * * *\"\n\
             [webhooks]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
             signature_token = {:?}\nshared_secret = {SHARED:?}\n",
            sb.kounta().signature_token()
        ),
    )
}

/// The digits of the FarmFlow phone of customer `f`.
fn farmflow_phone(sb: &Sandbox, f: i64) -> String {
    sb.farmflow()
        .get(f)
        .map(|c| crate::proof_support::digits(&c.phone))
        .unwrap_or_default()
}

/// The phone edit number `i` puts in the CRM, and the digits FarmFlow must end up with.
fn edited_phone(i: usize) -> (String, String) {
    (format!("08 7222 00{i:02}"), format!("87222{i:04}"))
}

/// Cycles the daemon started so far because of `trigger`.
fn cycles(d: &Daemon, trigger: &str) -> usize {
    d.log
        .iter()
        .filter(|l| event(l) == "daemon.cycle.started" && l["trigger"] == trigger)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_delayed_dropped_and_replayed_deliveries_bring_each_edit_once() {
    let sb = Scenario::sample_farm().sandbox().await;
    let port = free_port();
    let w = Workdir::new(&webhook_config(&sb, port, 3));
    converge(&w).await;
    let out = farmsync_in(&w, &["webhooks", "register"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let people = (
        sb.kounta().customers().len(),
        sb.farmflow().customers().len(),
    );
    let pairs: Vec<(i64, i64)> = linked(&sb).into_iter().take(4).collect();
    assert_eq!(pairs.len(), 4);

    let mut d = Daemon::spawn(&w, &[]);
    d.wait_for(MINUTE, |l| event(l) == "sync.run.finished")
        .await;
    let before = writes(&sb);
    let farmflow_before = sb.farmflow().stats().writes;

    // `when` counts events: the first is dropped, the second delivered twice, the third late.
    for (n, action) in [
        (1, WebhookAction::Drop),
        (2, WebhookAction::Duplicate),
        (3, WebhookAction::Delay(Duration::from_millis(600))),
    ] {
        sb.kounta().inject_webhook_fault(WebhookFault {
            when: When::Nth(n),
            action,
        });
    }
    let edit = |i: usize| {
        let (phone, _) = edited_phone(i);
        assert!(sb.kounta().edit(pairs[i].0, |c| c.phone = phone));
    };

    // The dropped delivery: no webhook cycle starts, the next scheduled one brings the edit.
    edit(0);
    sb.kounta().wait_for_deliveries(1).await;
    assert_eq!(
        sb.kounta().deliveries()[0].outcome,
        DeliveryOutcome::Dropped
    );
    // Cycles finish until one has brought it (one already under way may not have).
    while !farmflow_phone(&sb, pairs[0].1).ends_with(&edited_phone(0).1) {
        d.wait_for(MINUTE, |l| event(l) == "sync.run.finished")
            .await;
    }
    assert!(cycles(&d, "schedule") >= 1, "{}", d.dump());
    assert_eq!(d.count("webhook.received"), 0, "{}", d.dump());
    assert_eq!(cycles(&d, "webhook"), 0, "{}", d.dump());

    // Duplicated, delayed and plain deliveries: each edit arrives by webhook.
    for i in 1..4 {
        edit(i);
    }
    // Four attempts: the second event's twice, the third's late, the fourth's.
    sb.kounta().wait_for_deliveries(5).await;
    let deliveries = sb.kounta().deliveries();
    let delivered = deliveries
        .iter()
        .filter(|x| x.outcome == DeliveryOutcome::Delivered(200))
        .count();
    assert_eq!(delivered, 4, "{deliveries:?}");
    let arrived =
        |sb: &Sandbox| (1..4).all(|i| farmflow_phone(sb, pairs[i].1).ends_with(&edited_phone(i).1));
    while !arrived(&sb) {
        d.wait_for(MINUTE, |l| event(l) == "sync.run.finished")
            .await;
    }
    // The daemon took each of the four deliveries (the duplicate too).
    d.wait_for_count("webhook.received", 4, MINUTE).await;

    // Kounta retrying a delivery it already made: the same signed body, twice more.
    let replayed = deliveries
        .iter()
        .find(|x| x.outcome == DeliveryOutcome::Delivered(200))
        .unwrap();
    for _ in 0..2 {
        let answer = reqwest::Client::new()
            .post(&replayed.address)
            .header(SECRET_HEADER, SHARED)
            .header(
                SIGNATURE_HEADER,
                webhook::sign(&replayed.body, sb.kounta().signature_token()),
            )
            .body(replayed.body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
    }
    // Whatever the replay caused is done once a scheduled cycle has started and finished.
    d.wait_for(MINUTE, |l| {
        event(l) == "daemon.cycle.started" && l["trigger"] == "schedule"
    })
    .await;
    d.wait_for(MINUTE, |l| event(l) == "sync.run.finished")
        .await;
    d.signal("TERM");
    let (status, _) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());

    assert_eq!(
        sb.farmflow().stats().writes - farmflow_before,
        4,
        "one FarmFlow write per edit, none for duplicates, delays or the replay:\n{}",
        d.dump()
    );
    assert_eq!(writes(&sb) - before, 4, "nothing written to the CRM");
    assert_eq!(
        (
            sb.kounta().customers().len(),
            sb.farmflow().customers().len()
        ),
        people,
        "no record added"
    );
    sound_world(&sb, &w);

    // Converged: a sync now writes nothing.
    let settled = writes(&sb);
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(writes(&sb), settled, "{}", text(&out.stdout));
    println!(
        "webhook faults: {} delivery attempts (1 dropped, 1 duplicated, 1 delayed) and 2 \
         replays; 4 edits, 4 FarmFlow writes; {} webhook cycles, {} scheduled",
        deliveries.len(),
        cycles(&d, "webhook"),
        cycles(&d, "schedule")
    );
}
