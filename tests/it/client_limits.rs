//! Rate limits, 429 handling, request counters and headers, against the sandbox.
//!
//! The minute-long tests run on tokio's paused clock: the sandbox stamps its request log with
//! tokio's clock too, so "no 60-second window above the limit" is checked in the same time the
//! client waited in, without the test taking minutes.

use std::sync::Arc;
use std::time::Duration;

use farmsync::farmflow::FarmflowOptions;
use farmsync::http::{ApiError, RateLimiter, RetryPolicy, USER_AGENT};
use farmsync::ids::{FarmflowId, KountaId};
use farmsync::kounta::model::KountaCustomerWrite;
use farmsync::kounta::{KountaAuth, KountaOptions};
use farmsync::sandbox::{
    FarmflowEndpoint, KountaEndpoint, RateLimit, Sandbox, WindowKind, max_in_window,
};
use tokio::time::Instant;

use crate::client_support::*;

const MINUTE: Duration = Duration::from_secs(60);

/// A burst of `n` concurrent full reads through one client.
async fn burst_of_reads(client: Arc<farmsync::kounta::KountaClient>, ids: &[i64], n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = client.clone();
        let id = KountaId(ids[i % ids.len()]);
        tasks.spawn(async move { client.get(id).await });
    }
    while let Some(done) = tasks.join_next().await {
        let found = done.expect("task").expect("every read finishes");
        assert!(found.is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn at_60_a_minute_no_minute_holds_more_than_60_and_all_work_finishes() {
    let sb = sandbox().await;
    sb.kounta()
        .set_rate_limit(farmsync::sandbox::Target::Any, RateLimit::per_minute(60));
    let ids: Vec<i64> = (0..10).map(|i| sb.kounta().insert(crm_person(i))).collect();
    let client = Arc::new(
        kounta_with(KountaOptions {
            requests_per_minute: 60,
            // Long enough that paused time never fires it while a request is on the wire.
            timeout: Duration::from_secs(3600),
            ..kounta_options(&sb)
        })
        .with_retry_policy(RetryPolicy::default()),
    );
    let start = Instant::now();

    // 150 reads plus the company lookup: three minutes' worth at 60 a minute.
    burst_of_reads(client.clone(), &ids, 150).await;

    let log = sb.kounta().request_log();
    assert_eq!(log.len(), 151);
    assert!(
        max_in_window(&log, MINUTE) <= 60,
        "{}",
        max_in_window(&log, MINUTE)
    );
    assert!(
        log.iter().all(|r| r.status == Some(200)),
        "the sandbox never had to refuse"
    );
    let took = Instant::now() - start;
    assert!(took >= Duration::from_secs(120), "{took:?}");
    assert!(took < Duration::from_secs(130), "{took:?}");
    assert_eq!(client.counts().reads, 151);
    assert_eq!(client.counts().throttled, 0);
}

#[tokio::test(start_paused = true)]
async fn farmflow_at_120_a_minute_with_writes_and_reads_mixed() {
    let sb = sandbox().await;
    sb.farmflow().set_rate_limit(
        farmsync::sandbox::Target::Any,
        RateLimit::per_minute(120).fixed_window(),
    );
    let client = Arc::new(
        farmflow_with(FarmflowOptions {
            requests_per_minute: 120,
            timeout: Duration::from_secs(3600),
            ..farmflow_options(&sb)
        })
        .with_retry_policy(RetryPolicy::default()),
    );

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..150 {
        let client = client.clone();
        tasks.spawn(async move {
            let fields = farmsync::farmflow::model::FarmflowFields {
                firstname: format!("Grower{n}"),
                ..Default::default()
            };
            let created = client.create(&fields).await.expect("create");
            client.get(created.id).await.expect("read").expect("found");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }

    let log = sb.farmflow().request_log();
    assert_eq!(log.len(), 300);
    assert!(max_in_window(&log, MINUTE) <= 120);
    assert_eq!(
        sb.farmflow().customers().len(),
        150,
        "no create was lost or doubled"
    );
    assert!(log.iter().all(|r| r.status == Some(200)));
}

#[tokio::test]
async fn a_scaled_burst_in_real_time_keeps_within_a_short_window() {
    // The same limiter over a 2-second window, in real time: 60 per window, 150 requests.
    let window = Duration::from_secs(2);
    let sb = sandbox().await;
    sb.kounta().set_rate_limit(
        farmsync::sandbox::Target::Any,
        RateLimit {
            window,
            ..RateLimit::per_minute(60)
        },
    );
    let ids: Vec<i64> = (0..10).map(|i| sb.kounta().insert(crm_person(i))).collect();
    let client = Arc::new(kounta(&sb).with_rate_limiter(RateLimiter::new(60, window)));

    burst_of_reads(client.clone(), &ids, 149).await;

    let log = sb.kounta().request_log();
    assert_eq!(log.len(), 150);
    assert!(
        max_in_window(&log, window) <= 60,
        "{}",
        max_in_window(&log, window)
    );
    assert_eq!(client.counts().throttled, 0);
}

/// A sandbox whose CRM allows 2 requests a minute, in the given `X-Ratelimit-Reset` style.
async fn tight_crm(limit: RateLimit) -> (Sandbox, i64) {
    let sb = sandbox().await;
    let id = sb.kounta().insert(crm_person(1));
    sb.kounta()
        .set_rate_limit(farmsync::sandbox::Target::Any, limit);
    (sb, id)
}

async fn third_read_waits_for_the_reset(limit: RateLimit) {
    let (sb, id) = tight_crm(limit).await;
    // The client believes it may go fast: only the 429 can slow it down.
    let client = kounta_with(KountaOptions {
        company_id: Some(sb.kounta().company_id()),
        timeout: Duration::from_secs(3600),
        ..kounta_options(&sb)
    })
    .with_retry_policy(RetryPolicy::default());

    for _ in 0..3 {
        client.get(KountaId(id)).await.expect("read");
    }

    let log = sb.kounta().request_log();
    let statuses: Vec<Option<u16>> = log.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![Some(200), Some(200), Some(429), Some(200)],
        "{limit:?}"
    );
    let waited = log[3].at - log[2].at;
    assert!(
        waited >= Duration::from_secs(59),
        "{limit:?}: waited {waited:?}"
    );
    assert!(
        waited <= Duration::from_secs(62),
        "{limit:?}: waited {waited:?}"
    );
    assert_eq!(client.counts().throttled, 1);
    assert_eq!(client.counts().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_for_the_epoch_reset_and_retry_after() {
    third_read_waits_for_the_reset(RateLimit::per_minute(2)).await;
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_for_a_reset_given_as_a_delay_without_retry_after() {
    third_read_waits_for_the_reset(
        RateLimit::per_minute(2)
            .reset_as_delay()
            .without_retry_after(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_429_with_only_retry_after_is_honoured_by_farmflow_too() {
    let sb = sandbox().await;
    sb.farmflow().insert(farm_person(1));
    sb.farmflow().set_rate_limit(
        farmsync::sandbox::Target::Any,
        RateLimit {
            kind: WindowKind::Fixed,
            ..RateLimit::per_minute(1)
        },
    );
    let client = farmflow_with(FarmflowOptions {
        timeout: Duration::from_secs(3600),
        ..farmflow_options(&sb)
    })
    .with_retry_policy(RetryPolicy::default());

    client.list().await.unwrap();
    client.list().await.unwrap();

    let log = sb.farmflow().request_log();
    let statuses: Vec<Option<u16>> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(200), Some(429), Some(200)]);
    assert!(log[2].at - log[0].at >= MINUTE);
}

#[tokio::test(start_paused = true)]
async fn a_429_asking_for_too_long_a_wait_gives_up_with_rate_limited() {
    let (sb, id) = tight_crm(RateLimit {
        window: Duration::from_secs(3600),
        ..RateLimit::per_minute(1)
    })
    .await;
    let client = kounta_with(KountaOptions {
        company_id: Some(sb.kounta().company_id()),
        timeout: Duration::from_secs(3600),
        ..kounta_options(&sb)
    });
    client.get(KountaId(id)).await.unwrap();

    let err = client.get(KountaId(id)).await.unwrap_err();

    match &err {
        ApiError::RateLimited {
            retry_after: Some(wait),
            ..
        } => assert!(*wait > Duration::from_secs(3000), "{wait:?}"),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(err.is_transient());
    assert!(
        err.to_string().contains("kounta.requests_per_minute"),
        "{err}"
    );
    assert_eq!(sb.kounta().request_log().len(), 2, "no blind resend");
}

#[tokio::test]
async fn counters_match_what_the_sandbox_received() {
    let sb = sandbox().await;
    let k = kounta(&sb);
    let f = farmflow(&sb);
    let kid = sb.kounta().insert(crm_person(1));
    let fid = sb.farmflow().insert(farm_person(1));
    sb.farmflow().inject(farmsync::sandbox::Fault::new(
        FarmflowEndpoint::List,
        farmsync::sandbox::When::Nth(1),
        farmsync::sandbox::FaultAction::Status(500),
    ));

    k.list().await.unwrap();
    k.get(KountaId(kid)).await.unwrap();
    k.update(
        KountaId(kid),
        &KountaCustomerWrite {
            last_name: Some("Changed".to_owned()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    f.list().await.unwrap();
    f.get(FarmflowId(fid)).await.unwrap();
    f.delete(FarmflowId(fid)).await.unwrap();

    let ks = sb.kounta().stats();
    let kc = k.counts();
    assert_eq!((kc.reads, kc.writes, kc.retries), (3, 1, 0));
    assert_eq!(kc.total(), ks.total);
    assert_eq!(ks.count(KountaEndpoint::Update), 1);
    let fs = sb.farmflow().stats();
    let fc = f.counts();
    assert_eq!((fc.reads, fc.writes, fc.retries), (3, 1, 1));
    assert_eq!(fc.total(), fs.total);
    assert_eq!(k.limiter().recent(), 4);
    assert_eq!(f.limiter().recent(), 4);
}

#[tokio::test]
async fn every_request_carries_user_agent_accept_and_content_type() {
    let (url, mut seen) = recorder(
        201,
        vec![("location", "/v1/companies/7/customers/55".to_owned())],
        "",
    )
    .await;
    let client = kounta_with(KountaOptions {
        base_url: format!("{url}/v1").parse().unwrap(),
        company_id: Some(7),
        auth: KountaAuth::Basic {
            client_id: "cid".into(),
            client_secret: "csecret".into(),
        },
        requests_per_minute: FAST_RATE,
        timeout: Duration::from_secs(5),
    });

    let id = client
        .create(&KountaCustomerWrite {
            first_name: Some("A".to_owned()),
            email: Some("a@example.com".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(id, KountaId(55));
    let _ = client.find_by_email("a@example.com").await;

    let post = seen.recv().await.unwrap();
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, "/v1/companies/7/customers");
    assert_eq!(post.headers["user-agent"], USER_AGENT);
    assert!(USER_AGENT.starts_with("farmsync/"));
    assert_eq!(post.headers["accept"], "application/json");
    assert_eq!(post.headers["content-type"], "application/json");
    // base64("cid:csecret")
    assert_eq!(post.headers["authorization"], "Basic Y2lkOmNzZWNyZXQ=");
    assert_eq!(post.body, r#"{"first_name":"A","email":"a@example.com"}"#);
    let get = seen.recv().await.unwrap();
    assert_eq!(get.method, "GET");
    assert_eq!(get.path, "/v1/companies/7/customers?email=a%40example.com");
    assert_eq!(get.headers["accept"], "application/json");
    assert_eq!(get.headers["user-agent"], USER_AGENT);
    assert!(get.headers.get("content-type").is_none());
}

#[tokio::test]
async fn farmflow_sends_ids_as_strings_under_its_configured_header() {
    let (url, mut seen) = recorder(200, vec![], r#"{"status":"success","data":{"id":"9"}}"#).await;
    let client = farmflow_with(FarmflowOptions {
        base_url: url.parse().unwrap(),
        api_key: "k-123".into(),
        auth_header: "X-Api-Key".to_owned(),
        auth_prefix: String::new(),
        requests_per_minute: FAST_RATE,
        timeout: Duration::from_secs(5),
    });

    let outcome = client.delete(FarmflowId(9)).await.unwrap();

    assert_eq!(outcome, farmsync::farmflow::DeleteOutcome::Deleted);
    let req = seen.recv().await.unwrap();
    assert_eq!(req.path, "/customer-delete");
    assert_eq!(req.headers["x-api-key"], "k-123");
    assert!(req.headers.get("authorization").is_none());
    assert_eq!(req.headers["accept"], "application/json");
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.body, r#"{"id":"9"}"#);
}
