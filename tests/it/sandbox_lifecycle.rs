//! Starting, seeding, serving and stopping the sandbox.

use std::io::Write;
use std::time::{Duration, Instant};

use farmsync::sandbox::{
    Fault, FaultAction, KountaEndpoint, RecurringStatus, SampleData, Sandbox, SandboxOptions,
    SeedDataError, When, load_seed_data, sample_farm, serve,
};
use serde_json::json;

use crate::sandbox_support::{Crm, Farm, start, status_json};

#[tokio::test]
async fn both_fakes_start_in_under_50_ms() {
    let started = Instant::now();
    let sb = Sandbox::start(SandboxOptions::default())
        .await
        .expect("starts");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(50), "start took {took:?}");
    assert!(sb.kounta_url().starts_with("http://127.0.0.1:"));
    assert!(sb.kounta_url().ends_with("/v1"));
    assert!(sb.farmflow_url().starts_with("http://127.0.0.1:"));
    assert_ne!(sb.kounta_url(), sb.farmflow_url());
    sb.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_hung_requests_and_closes_the_ports() {
    let sb = start().await;
    sb.kounta().inject(Fault::new(
        KountaEndpoint::Me,
        When::Every,
        FaultAction::Hang,
    ));
    let crm = Crm::new(&sb);
    let me = format!("{}/companies/me", crm.base);
    let hung = tokio::spawn(crm.req(reqwest::Method::GET, &me).send());
    // The request is in (and hanging) once it shows up in the log.
    while sb.kounta().request_log().is_empty() {
        tokio::task::yield_now().await;
    }
    let farmflow_url = sb.farmflow_url();
    sb.shutdown().await;
    let outcome = hung.await.expect("task ran");
    assert!(outcome.is_err(), "the hung request ends without an answer");
    let after = reqwest::get(format!("{farmflow_url}/customers-get")).await;
    assert!(after.is_err(), "nothing listens any more");
}

#[tokio::test]
async fn the_sample_farm_seeds_both_sides() {
    let sb = start().await;
    sb.seed(&sample_farm()).expect("seeds");
    let k = sb.kounta().customers();
    let f = sb.farmflow().customers();
    assert_eq!(k.len(), 13);
    assert_eq!(f.len(), 15);
    assert!(
        k.iter().all(|c| c.reference_id.is_empty()),
        "nobody is linked yet"
    );
    let both = k
        .iter()
        .filter(|c| {
            f.iter()
                .any(|g| g.firstname.eq_ignore_ascii_case(&c.first_name))
        })
        .count();
    assert_eq!(both, 8);
    assert!(f.iter().any(|c| c.email.is_empty() && c.phone.is_empty()));
    assert!(f.iter().any(|c| c.country == "USA"));
    assert!(k.iter().any(|c| {
        c.primary_address
            .as_ref()
            .is_some_and(|a| a.country == "US")
    }));
    let orders = sb.farmflow().recurring_orders();
    assert!(orders.iter().any(|o| o.status == RecurringStatus::Active));
    assert!(orders.iter().any(|o| o.status == RecurringStatus::Paused));
    assert!(!sb.farmflow().one_time_orders().is_empty());

    // Seeded data is served, and a customer with an active order cannot be deleted.
    let farm = Farm::new(&sb);
    let (_, body) = status_json(farm.get("/customers-get")).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(15));
    let (status, _) = status_json(farm.post("/customer-delete", &json!({"id": "301"}))).await;
    assert_eq!(status, 409);
    // New records get fresh ids above the seeded ones.
    let next = sb.farmflow().insert(Default::default());
    assert!(next > 315);

    let err = sb.seed(&sample_farm()).expect_err("ids are taken now");
    assert!(err.to_string().contains("already taken"), "{err}");
}

const DOC_EXAMPLE: &str = r#"{
  "kounta": [
    {"first_name": "Jamie", "last_name": "McDonald", "email": "jamie@example.com",
     "phone": "02 8765 4321", "mobile": "0412 345 678", "reference_id": "",
     "tags": ["Newsletter"], "image": null, "accepts_marketing": true,
     "primary_address": {"address": "44 Mutton Street\nSuite 5", "city": "Beeftown",
                         "state": "NSW", "postal_code": "2112", "country": "AU"},
     "shipping_address": null}
  ],
  "farmflow": [
    {"id": 301, "company": "", "firstname": "Jamie", "lastname": "McDonald",
     "address": "44 Mutton Street", "address2": "Suite 5", "city": "Beeftown",
     "state": "NSW", "zip": "2112", "phone": "0287654321", "email": "jamie@example.com",
     "country": "Australia", "notes": ""}
  ],
  "recurring_orders": [
    {"customer_id": 301, "status": "active", "start_date": "2026-01-05", "end_date": ""}
  ],
  "one_time_orders": [
    {"customer_id": 301, "pickup_location_id": 1, "fulfillment": "Delivery",
     "instructions": "", "fulfill_date": "2030-06-01"}
  ]
}"#;

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("written");
    file
}

#[tokio::test]
async fn seed_files_in_the_documented_format_load() {
    let file = file_with(DOC_EXAMPLE);
    let data = load_seed_data(file.path()).expect("loads");
    assert_eq!(data.kounta.len(), 1);
    assert_eq!(data.kounta[0].mobile, "0412 345 678");
    assert_eq!(data.farmflow[0].id, 301);
    assert_eq!(data.recurring_orders[0].status, RecurringStatus::Active);

    let sb = start().await;
    sb.seed(&data).expect("seeds");
    assert_eq!(
        sb.farmflow().get(301).map(|c| c.firstname),
        Some("Jamie".into())
    );
    assert_eq!(sb.farmflow().one_time_orders()[0].customer_id, 301);
    let empty = load_seed_data(file_with("{}").path()).expect("all keys optional");
    assert_eq!(empty, SampleData::default());
}

#[test]
fn bad_seed_files_get_clear_errors() {
    let missing = std::path::Path::new("/nonexistent/seed.json");
    let err = load_seed_data(missing).expect_err("missing file");
    assert!(matches!(err, SeedDataError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/seed.json"), "{err}");

    let file = file_with("{\n  \"kounta\": [\n    {\"first_name\": 3}\n  ]\n}");
    let err = load_seed_data(file.path()).expect_err("bad type");
    assert!(matches!(err, SeedDataError::Parse { .. }));
    let text = err.to_string();
    assert!(text.contains(&file.path().display().to_string()), "{text}");
    assert!(text.contains("line 3"), "{text}");

    let file = file_with(r#"{"farmflow": [{"firstname": "A", "emial": "a@b"}]}"#);
    let err = load_seed_data(file.path()).expect_err("typo");
    assert!(err.to_string().contains("emial"), "{err}");

    let file = file_with(r#"{"one_time_orders": [{"customer_id": 5}]}"#);
    let err = load_seed_data(file.path()).expect_err("orphan order");
    assert!(matches!(err, SeedDataError::Invalid(_)));
    assert!(err.to_string().contains("customer 5"), "{err}");
}

#[tokio::test]
async fn serve_runs_until_shutdown_and_refuses_bad_data() {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(
        SandboxOptions::default(),
        sample_farm(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    stop_tx.send(()).expect("still serving");
    served.await.expect("task ran").expect("served cleanly");

    let mut bad = sample_farm();
    bad.recurring_orders[0].customer_id = 1;
    let err = serve(SandboxOptions::default(), bad, async {})
        .await
        .expect_err("bad data");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn the_banner_names_urls_and_credentials() {
    let sb = start().await;
    let banner = sb.banner();
    for needle in [
        sb.kounta_url(),
        sb.farmflow_url(),
        "5678".to_owned(),
        "sandbox-client".to_owned(),
        "sandbox-secret".to_owned(),
        sb.kounta().refresh_token(),
        sb.kounta().access_token(),
        "sandbox-farmflow-key".to_owned(),
        "Authorization: Bearer sandbox-farmflow-key".to_owned(),
    ] {
        assert!(banner.contains(&needle), "{needle} in\n{banner}");
    }
}

#[tokio::test]
async fn given_ports_are_used() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let sb = Sandbox::start(SandboxOptions {
        farmflow_port: port,
        ..SandboxOptions::default()
    })
    .await
    .expect("starts on the given port");
    assert_eq!(sb.farmflow_url(), format!("http://127.0.0.1:{port}"));
    let err = Sandbox::start(SandboxOptions {
        kounta_port: port,
        ..SandboxOptions::default()
    })
    .await
    .expect_err("the port is busy");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}
