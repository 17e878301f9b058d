//! What the engine logs: the stable event names with their counts, and never a customer's email
//! or phone above debug level — not even inside an API's error text that quotes a record back.

use farmsync::sandbox::{FarmflowEndpoint, Fault, FaultAction, KountaEndpoint, When};
use farmsync::sync::engine::Outcome;
use farmsync::telemetry::{CapturedLogs, JsonLayer};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;

use crate::sync_matrix::three_linked;
use crate::sync_support::{Harness, crm_person, ff_person};

/// Every email and phone (as typed, and as digits) the sandboxes hold.
fn contact_details(h: &Harness) -> Vec<String> {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let mut out = Vec::new();
    for c in h.sb.kounta().customers() {
        out.extend([c.email.clone(), c.phone.clone(), digits(&c.phone)]);
    }
    for c in h.sb.farmflow().customers() {
        out.extend([c.email.clone(), c.phone.clone(), digits(&c.phone)]);
    }
    out.retain(|v| v.len() >= 6);
    out.sort();
    out.dedup();
    out
}

fn assert_no_contact_details(logs: &str, details: &[String]) {
    for value in details {
        assert!(
            !logs.contains(value.as_str()),
            "{value:?} was logged above debug level:\n{logs}"
        );
    }
}

/// tracing caches, per call site and for the whole process, whether any subscriber wants an
/// event; with other tests' subscribers coming and going on other threads, that cache can hide
/// this test's events from its own subscriber. So each test here runs alone in a child process
/// (this test binary again), on one thread so its subscriber sees every event of the run.
fn alone(name: &str, body: impl std::future::Future<Output = ()>) {
    const ALONE: &str = "FARMSYNC_TEST_ALONE";
    if std::env::var_os(ALONE).is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(ALONE, "1")
        .output()
        .expect("re-run the test alone");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{name} failed when run alone:\n{text}"
    );
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
}

#[test]
fn contact_details_never_reach_info_logs_even_in_api_error_text() {
    alone(
        "sync_logs::contact_details_never_reach_info_logs_even_in_api_error_text",
        contact_details_body(),
    );
}

async fn contact_details_body() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(JsonLayer::new(logs.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::start().await;
    let [(ana_k, _), ..] = three_linked(&h).await;
    h.sb.kounta()
        .edit(ana_k, |c| c.phone = "0433 222 111".into());
    h.sb.kounta().insert(crm_person(
        "Dee",
        "Dunn",
        "dee.private@example.com",
        "0412 654 321",
    ));
    h.sb.farmflow().insert(ff_person(
        "Eve",
        "Ellis",
        "eve.private@example.com",
        "0413 765 432",
    ));
    // Answers cut in half quote records back in the errors farmsync reports.
    h.sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Create,
        When::Nth(1),
        FaultAction::TruncatedJson,
    ));
    h.sb.kounta().inject(Fault::new(
        KountaEndpoint::Get,
        When::Nth(1),
        FaultAction::TruncatedJson,
    ));
    h.run().await;
    h.sb.kounta().set_page_size(2);
    h.sb.kounta().inject(Fault::new(
        KountaEndpoint::List,
        When::Nth(2),
        FaultAction::TruncatedJson,
    ));
    let cut = h.run().await;
    assert_eq!(cut.outcome, Outcome::Partial);
    h.sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::List,
        When::Nth(1),
        FaultAction::TruncatedJson,
    ));
    let unreadable = h.run().await;
    let Outcome::Unavailable(message) = &unreadable.outcome else {
        panic!(
            "a FarmFlow list cut in half is unreadable: {:?}",
            unreadable.outcome
        );
    };
    h.converge().await;

    let details = contact_details(&h);
    assert!(details.iter().any(|d| d == "dee.private@example.com"));
    let text = logs.text();
    assert!(text.contains("sync.record.failed"), "{text}");
    assert!(text.contains("sync.read.failed"), "{text}");
    assert!(text.contains("sync.listing.incomplete"), "{text}");
    assert!(text.contains("sync.run.unavailable"), "{text}");
    assert_no_contact_details(&text, &details);
    assert_no_contact_details(message, &details);
    if let Some(cut) = &cut.listing_cut {
        assert_no_contact_details(cut, &details);
    }
}

#[test]
fn run_finished_carries_the_counts_and_requests_per_api() {
    alone(
        "sync_logs::run_finished_carries_the_counts_and_requests_per_api",
        run_finished_body(),
    );
}

async fn run_finished_body() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(JsonLayer::new(logs.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = Harness::start().await;
    h.sb.farmflow()
        .insert(ff_person("Ben", "Brook", "ben@example.com", "0412 000 002"));

    let report = h.run_ok().await;

    let lines = logs.json_lines().unwrap();
    let finished = lines
        .iter()
        .find(|l| l["message"] == "sync.run.finished")
        .expect("sync.run.finished is logged");
    assert_eq!(finished["run_id"], report.run_id.as_str());
    assert_eq!(finished["created"], 1);
    for key in [
        "created",
        "updated",
        "deleted",
        "linked",
        "blocked",
        "conflicts",
        "failed",
        "skipped",
        "kounta_requests",
        "farmflow_requests",
    ] {
        assert!(finished.contains_key(key), "{key} missing: {finished:?}");
    }
    assert_eq!(finished["kounta_requests"], report.summary.kounta_requests);
    assert!(report.summary.kounta_requests > 0 && report.summary.farmflow_requests > 0);
    assert!(lines.iter().any(|l| l["message"] == "sync.run.started"));
}
