//! Fault and realism knobs of both fakes, with plain `reqwest`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use farmsync::sandbox::{
    FarmflowEndpoint, FarmflowRecord, Fault, FaultAction, KountaEndpoint, KountaRecord, RateLimit,
    SandboxOptions, Target, When, max_in_window,
};
use serde_json::json;

use crate::sandbox_support::{Crm, Farm, start, start_with, status_json};

fn kounta_person(n: usize) -> KountaRecord {
    KountaRecord {
        first_name: format!("P{n}"),
        email: format!("p{n}@example.com"),
        ..KountaRecord::default()
    }
}

fn farm_person(first: &str) -> FarmflowRecord {
    FarmflowRecord {
        firstname: first.into(),
        ..FarmflowRecord::default()
    }
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
}

#[tokio::test]
async fn the_nth_matching_request_fails_and_the_rest_are_served() {
    let sb = start().await;
    let id = sb.kounta().insert(kounta_person(1));
    sb.kounta().inject(Fault::new(
        KountaEndpoint::Get,
        When::Nth(2),
        FaultAction::Status(500),
    ));
    let crm = Crm::new(&sb);
    let path = format!("/customers/{id}");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(status_json(crm.get(&path)).await.0);
        // Requests to other endpoints are not counted by the fault.
        assert_eq!(status_json(crm.get("/customers")).await.0, 200);
    }
    assert_eq!(statuses, vec![200, 500, 200]);
    let (_, body) = {
        sb.kounta().inject(Fault::new(
            KountaEndpoint::Get,
            When::Every,
            FaultAction::Status(503),
        ));
        status_json(crm.get(&path)).await
    };
    assert_eq!(body["error"], "server_error", "the API's own error shape");
}

#[tokio::test]
async fn next_n_every_and_removal() {
    let sb = start().await;
    let farm = Farm::new(&sb);
    let f = sb.farmflow();
    f.inject(Fault::new(
        FarmflowEndpoint::List,
        When::Next(2),
        FaultAction::Status(500),
    ));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(status_json(farm.get("/customers-get")).await.0);
    }
    assert_eq!(statuses, vec![500, 500, 200]);

    let every = f.inject(Fault::new(
        Target::Any,
        When::Every,
        FaultAction::Status(503),
    ));
    for _ in 0..3 {
        assert_eq!(status_json(farm.get("/customers-get")).await.0, 503);
    }
    assert!(f.remove_fault(every));
    assert!(!f.remove_fault(every));
    assert_eq!(status_json(farm.get("/customers-get")).await.0, 200);
}

#[tokio::test]
async fn an_html_502_page_is_not_json() {
    let sb = start().await;
    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::List,
        When::Nth(1),
        FaultAction::Html502,
    ));
    let farm = Farm::new(&sb);
    let r = farm.get("/customers-get").send().await.expect("sent");
    assert_eq!(r.status(), 502);
    assert_eq!(header(&r, "content-type").as_deref(), Some("text/html"));
    let body = r.text().await.expect("text");
    assert!(body.contains("<html>") && body.contains("502 Bad Gateway"));
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
}

#[tokio::test]
async fn a_truncated_body_is_unreadable_but_the_write_happened() {
    let sb = start().await;
    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Create,
        When::Nth(1),
        FaultAction::TruncatedJson,
    ));
    let farm = Farm::new(&sb);
    let r = farm
        .post("/customer-create", &json!({"firstname": "Ruby"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("body");
    assert!(!body.is_empty());
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
    assert_eq!(sb.farmflow().customers().len(), 1);

    // The CRM's create has an empty body: a truncated one is still not JSON.
    sb.kounta().inject(Fault::new(
        KountaEndpoint::Create,
        When::Nth(1),
        FaultAction::TruncatedJson,
    ));
    let crm = Crm::new(&sb);
    let r = crm
        .post(
            "/customers",
            &json!({"first_name": "Ada", "email": "a@example.com"}),
        )
        .send()
        .await
        .expect("sent");
    let body = r.bytes().await.expect("body");
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
    assert_eq!(sb.kounta().customers().len(), 1);
}

#[tokio::test]
async fn a_hang_outlasts_the_client_timeout_and_applies_nothing() {
    let sb = start().await;
    sb.kounta().inject(Fault::new(
        KountaEndpoint::Create,
        When::Every,
        FaultAction::Hang,
    ));
    let crm = Crm::new(&sb);
    let err = crm
        .post(
            "/customers",
            &json!({"first_name": "Ada", "email": "a@example.com"}),
        )
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    assert!(sb.kounta().customers().is_empty());
    let log = sb.kounta().request_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, None, "no answer was sent");
    sb.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_applies_nothing_and_the_next_request_is_served() {
    let sb = start().await;
    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Create,
        When::Nth(1),
        FaultAction::Drop,
    ));
    let farm = Farm::new(&sb);
    let err = farm
        .post("/customer-create", &json!({"firstname": "Ruby"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect_err("connection dropped");
    assert!(!err.is_timeout(), "dropped, not timed out: {err}");
    assert!(sb.farmflow().customers().is_empty());
    assert_eq!(*sb.farmflow().writes_applied().borrow(), 0);

    let (status, _) =
        status_json(farm.post("/customer-create", &json!({"firstname": "Ruby"}))).await;
    assert_eq!(status, 200);
    assert_eq!(sb.farmflow().customers().len(), 1);
}

#[tokio::test]
async fn apply_then_500_stores_the_write_and_reports_failure() {
    let sb = start().await;
    sb.kounta().inject(Fault::new(
        KountaEndpoint::Create,
        When::Nth(1),
        FaultAction::ApplyThen500,
    ));
    let crm = Crm::new(&sb);
    let (status, body) = status_json(crm.post(
        "/customers",
        &json!({"first_name": "Ada", "email": "a@example.com", "reference_id": "farmflow:9"}),
    ))
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"], "server_error");
    assert_eq!(sb.kounta().customers().len(), 1, "the create happened");
    assert_eq!(*sb.kounta().writes_applied().borrow(), 1);
    // The way back: look the create up before trying again.
    let (_, found) = status_json(crm.get("/customers?reference_id=farmflow:9")).await;
    assert_eq!(found.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn apply_then_drop_stores_the_write_and_drops_the_connection() {
    let sb = start().await;
    let id = sb.farmflow().insert(farm_person("Ruby"));
    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Update,
        When::Nth(1),
        FaultAction::ApplyThenDrop,
    ));
    let farm = Farm::new(&sb);
    let err = farm
        .post(
            "/customer-update",
            &json!({"id": id.to_string(), "firstname": "Rubes"}),
        )
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect_err("connection dropped");
    assert!(!err.is_timeout(), "{err}");
    assert_eq!(sb.farmflow().get(id).expect("there").firstname, "Rubes");
    let log = sb.farmflow().request_log();
    assert_eq!(log.last().map(|r| r.status), Some(None));
}

#[tokio::test]
async fn apply_then_hang_lets_a_test_catch_the_kth_write_before_its_answer() {
    let sb = start().await;
    sb.farmflow().inject(Fault::new(
        Target::AnyWrite,
        When::Nth(2),
        FaultAction::ApplyThenHang,
    ));
    let farm = Farm::new(&sb);
    let (answered_tx, mut answered_rx) = tokio::sync::mpsc::unbounded_channel();
    let client = tokio::spawn(async move {
        for name in ["A", "B", "C"] {
            let r = farm
                .post("/customer-create", &json!({"firstname": name}))
                .send()
                .await;
            let _ = answered_tx.send(r.map(|r| r.status().as_u16()).ok());
        }
    });
    sb.farmflow().wait_for_writes(2).await;
    let names: Vec<String> = sb
        .farmflow()
        .customers()
        .into_iter()
        .map(|c| c.firstname)
        .collect();
    assert_eq!(names, vec!["A", "B"], "the second write is stored");
    assert_eq!(
        answered_rx.recv().await,
        Some(Some(200)),
        "the first was answered"
    );
    assert!(
        answered_rx.try_recv().is_err(),
        "the second is stored but unanswered"
    );
    client.abort();
    assert_eq!(sb.farmflow().customers().len(), 2, "the third never ran");
    sb.shutdown().await;
}

#[tokio::test]
async fn probabilities_repeat_with_the_seed() {
    async fn run(seed: u64) -> Vec<u16> {
        let sb = start_with(SandboxOptions {
            seed,
            ..SandboxOptions::default()
        })
        .await;
        sb.farmflow().inject(Fault::new(
            FarmflowEndpoint::List,
            When::Probability(0.5),
            FaultAction::Status(500),
        ));
        let farm = Farm::new(&sb);
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(status_json(farm.get("/customers-get")).await.0);
        }
        statuses
    }
    let first = run(7).await;
    assert_eq!(run(7).await, first);
    assert!(first.contains(&200) && first.contains(&500), "{first:?}");
    assert_ne!(run(8).await, first, "another seed, another sequence");
}

#[tokio::test]
async fn selectors_pick_reads_or_writes() {
    let sb = start().await;
    sb.farmflow().inject(Fault::new(
        Target::AnyWrite,
        When::Every,
        FaultAction::Status(500),
    ));
    let farm = Farm::new(&sb);
    assert_eq!(status_json(farm.get("/customers-get")).await.0, 200);
    assert_eq!(status_json(farm.get("/recurring-orders-get")).await.0, 200);
    let (status, _) = status_json(farm.post("/customer-create", &json!({"firstname": "R"}))).await;
    assert_eq!(status, 500);
    sb.farmflow().clear_faults();

    sb.farmflow().inject(Fault::new(
        Target::AnyRead,
        When::Every,
        FaultAction::Status(500),
    ));
    assert_eq!(status_json(farm.get("/customers-get")).await.0, 500);
    let (status, _) = status_json(farm.post("/customer-create", &json!({"firstname": "R"}))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn kounta_rate_limits_answer_429_with_ratelimit_headers() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    sb.kounta()
        .set_rate_limit(Target::Any, RateLimit::per_minute(3));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = crm.get("/customers").send().await.expect("sent");
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("3"));
        remaining.push(header(&r, "x-ratelimit-remaining").expect("remaining"));
    }
    assert_eq!(remaining, vec!["2", "1", "0"]);

    let r = crm.get("/customers").send().await.expect("sent");
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let reset: u64 = header(&r, "x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("numeric reset");
    assert!(reset >= now && reset <= now + 61, "epoch seconds: {reset}");
    let retry: u64 = header(&r, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((1..=60).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["error"].is_string());

    sb.kounta().set_rate_limit(
        Target::Any,
        RateLimit::per_minute(0)
            .reset_as_delay()
            .without_retry_after(),
    );
    let r = crm.get("/customers").send().await.expect("sent");
    assert_eq!(r.status(), 429);
    let reset: u64 = header(&r, "x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("numeric reset");
    assert!((1..=60).contains(&reset), "a delay: {reset}");
    assert!(header(&r, "retry-after").is_none());

    let stats = sb.kounta().stats();
    assert_eq!((stats.total, stats.rate_limited), (5, 2));
    sb.kounta().clear_rate_limits();
    assert_eq!(status_json(crm.get("/customers")).await.0, 200);
}

#[tokio::test]
async fn farmflow_rate_limits_answer_429_with_retry_after_per_endpoint() {
    let sb = start().await;
    let farm = Farm::new(&sb);
    sb.farmflow().set_rate_limit(
        FarmflowEndpoint::List,
        RateLimit::per_minute(2).fixed_window(),
    );
    for _ in 0..2 {
        assert_eq!(status_json(farm.get("/customers-get")).await.0, 200);
    }
    let r = farm.get("/customers-get").send().await.expect("sent");
    assert_eq!(r.status(), 429);
    assert!(header(&r, "retry-after").is_some());
    assert!(header(&r, "x-ratelimit-reset").is_none(), "a Kounta header");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["status"], "error");
    // Other endpoints are not limited.
    assert_eq!(status_json(farm.get("/recurring-orders-get")).await.0, 200);
}

#[tokio::test]
async fn rate_limited_requests_do_not_count_towards_faults() {
    let sb = start().await;
    let farm = Farm::new(&sb);
    let f = sb.farmflow();
    f.set_rate_limit(Target::Any, RateLimit::per_minute(0));
    f.inject(Fault::new(
        Target::Any,
        When::Nth(1),
        FaultAction::Status(500),
    ));
    assert_eq!(status_json(farm.get("/customers-get")).await.0, 429);
    f.clear_rate_limits();
    assert_eq!(status_json(farm.get("/customers-get")).await.0, 500);
    assert_eq!(status_json(farm.get("/customers-get")).await.0, 200);
}

#[tokio::test]
async fn the_documented_limits_are_one_option_away() {
    let sb = start_with(SandboxOptions::default().with_documented_limits()).await;
    let farm = Farm::new(&sb);
    let mut statuses = Vec::new();
    for _ in 0..121 {
        statuses.push(status_json(farm.get("/recurring-orders-get")).await.0);
    }
    assert!(statuses[..120].iter().all(|s| *s == 200));
    assert_eq!(statuses[120], 429);
    let crm = Crm::new(&sb);
    for _ in 0..60 {
        assert_eq!(status_json(crm.get("/customers")).await.0, 200);
    }
    assert_eq!(status_json(crm.get("/customers")).await.0, 429);
    assert_eq!(
        max_in_window(&sb.kounta().request_log(), Duration::from_secs(60)),
        61
    );
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let sb = start().await;
    let farm = Farm::new(&sb);
    let latency = Duration::from_millis(150);
    sb.farmflow().set_latency(FarmflowEndpoint::List, latency);
    let started = std::time::Instant::now();
    assert_eq!(status_json(farm.get("/customers-get")).await.0, 200);
    assert!(started.elapsed() >= latency);

    sb.farmflow()
        .set_latency(FarmflowEndpoint::List, Duration::ZERO);
    sb.farmflow()
        .set_latency(FarmflowEndpoint::Get, Duration::from_secs(3600));
    // Only the list was slowed and it is not any more: this answers at once.
    let quick = farm
        .get("/customers-get")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("answered");
    assert_eq!(quick.status(), 200);
}

#[tokio::test]
async fn a_list_page_can_fail_persistently() {
    let sb = start().await;
    for n in 0..30 {
        sb.kounta().insert(kounta_person(n));
    }
    sb.kounta().fail_list_page(2);
    let crm = Crm::new(&sb);
    assert_eq!(status_json(crm.get("/customers")).await.0, 200);
    for _ in 0..3 {
        assert_eq!(status_json(crm.get("/customers?page=2")).await.0, 500);
    }
    sb.kounta().clear_faults();
    let (status, page) = status_json(crm.get("/customers?page=2")).await;
    assert_eq!(status, 200);
    assert_eq!(page.as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn a_list_can_come_back_empty_once() {
    let sb = start().await;
    for n in 0..30 {
        sb.kounta().insert(kounta_person(n));
    }
    sb.farmflow().insert(farm_person("Ruby"));
    sb.kounta().empty_list_once();
    sb.farmflow().empty_list_once();
    let crm = Crm::new(&sb);
    let r = crm.get("/customers").send().await.expect("sent");
    assert!(r.headers().get("x-next-page").is_none());
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json"),
        json!([])
    );
    let r = crm.get("/customers").send().await.expect("sent");
    assert!(r.headers().get("x-next-page").is_some());

    let farm = Farm::new(&sb);
    let (_, body) = status_json(farm.get("/customers-get")).await;
    assert_eq!(body["data"], json!([]));
    let (_, body) = status_json(farm.get("/customers-get")).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn stats_count_reads_and_writes_per_endpoint_and_the_log_keeps_each_request() {
    let sb = start().await;
    let farm = Farm::new(&sb);
    let id = sb.farmflow().insert(farm_person("Ruby"));
    status_json(farm.get("/customers-get")).await;
    status_json(farm.get("/customers-get")).await;
    status_json(farm.post("/customer-get", &json!({"id": id}))).await;
    status_json(farm.post("/customer-create", &json!({"firstname": "A"}))).await;
    status_json(farm.post("/customer-create", &json!({}))).await;
    status_json(farm.get("/nowhere")).await;

    let stats = sb.farmflow().stats();
    assert_eq!(stats.total, 6);
    assert_eq!(stats.reads, 3);
    assert_eq!(stats.writes, 2, "refused writes are requests too");
    assert_eq!(stats.unrouted, 1);
    assert_eq!(stats.count(FarmflowEndpoint::List), 2);
    assert_eq!(stats.count(FarmflowEndpoint::Create), 2);
    assert_eq!(stats.count(FarmflowEndpoint::Delete), 0);
    assert_eq!(
        *sb.farmflow().writes_applied().borrow(),
        1,
        "one write stored"
    );

    let log = sb.farmflow().request_log();
    let seen: Vec<(String, Option<u16>)> = log
        .iter()
        .map(|r| (format!("{} {}", r.method, r.path), r.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("GET /customers-get".into(), Some(200)),
            ("GET /customers-get".into(), Some(200)),
            ("POST /customer-get".into(), Some(200)),
            ("POST /customer-create".into(), Some(200)),
            ("POST /customer-create".into(), Some(400)),
            ("GET /nowhere".into(), Some(404)),
        ]
    );
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(log[0].endpoint, Some(FarmflowEndpoint::List));
    assert_eq!(log[5].endpoint, None);

    sb.farmflow().reset_stats();
    assert_eq!(sb.farmflow().stats().total, 0);
    assert!(sb.farmflow().request_log().is_empty());
    assert_eq!(
        *sb.farmflow().writes_applied().borrow(),
        1,
        "writes keep counting"
    );

    // The Kounta log keeps the query, as sent (including a .json suffix).
    let crm = Crm::new(&sb);
    let url = format!("{}.json?page=1", crm.url("/customers"));
    status_json(crm.req(reqwest::Method::GET, &url)).await;
    let log = sb.kounta().request_log();
    assert_eq!(log[0].path, "/v1/companies/5678/customers.json?page=1");
    assert_eq!(log[0].endpoint, Some(KountaEndpoint::List));
}
