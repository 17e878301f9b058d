//! Alerts on change: healthchecks pings reach a local server in order around each sweep, a
//! dead endpoint never fails a run, and a change of health is posted exactly once per change,
//! across a daemon restart.

use std::time::Duration;

use farmsync::sandbox::{
    FarmflowEndpoint, Fault, FaultAction, Sandbox, SandboxOptions, When, sample_farm,
};
use farmsync::store::Store;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::daemon_support::{Daemon, event, farmsync_in, free_port};
use crate::sandbox_support::{Received, receiver};
use crate::support::{Workdir, text};
use crate::sync_smoke::sandbox_config;

const MINUTE: Duration = Duration::from_secs(60);
/// Once a year: only the start-up sweep (and retries after it) run during a test.
const YEARLY: &str = "[schedule]\ncron = \"0 0 0 1 1 *\"\nquick_cron = \"\"\n";

/// Everything the receiver got so far.
fn drain(rx: &mut mpsc::UnboundedReceiver<Received>) -> Vec<Received> {
    let mut got = Vec::new();
    while let Ok(r) = rx.try_recv() {
        got.push(r);
    }
    got
}

/// FarmFlow refuses the key: every sweep exits 4 at once (no retries inside the run).
fn refuse_farmflow(sb: &Sandbox) -> farmsync::sandbox::FaultId {
    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::List,
        When::Every,
        FaultAction::Status(401),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_pings_reach_the_server_in_order_for_a_good_and_a_failed_sweep() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let (url, mut rx) = receiver(false).await;
    let w = Workdir::new(&sandbox_config(
        &sb,
        &format!("[alerts]\nhealthcheck_url = \"{url}/ping/abc-123\"\n"),
    ));

    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // farmsync waits for its last pings before it exits: they are all in.
    let got = drain(&mut rx);
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/ping/abc-123/start", "/ping/abc-123"]);
    let body = String::from_utf8_lossy(&got[1].body);
    assert!(body.contains("exit 0"), "{body}");

    refuse_farmflow(&sb);
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let got = drain(&mut rx);
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/ping/abc-123/start", "/ping/abc-123/fail"]);
    let body = String::from_utf8_lossy(&got[1].body);
    assert!(
        body.contains("exit 4") && body.contains("unavailable"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_healthcheck_endpoint_never_fails_a_run() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    // Nothing listens there: every ping is refused.
    let dead = format!("http://127.0.0.1:{}/ping/x", free_port());
    let w = Workdir::new(&sandbox_config(
        &sb,
        &format!("[alerts]\nhealthcheck_url = \"{dead}\"\n"),
    ));
    let out = farmsync_in(&w, &["--log-format", "json", "sync"]).await;
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("alerts.healthcheck.failed"), "{log}");
    // The URL is a credential: never logged.
    assert!(!log.contains("/ping/x"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_health_is_posted_once_per_change_across_a_daemon_restart() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let (url, mut rx) = receiver(false).await;
    let w = Workdir::new(&sandbox_config(
        &sb,
        &format!(
            "{YEARLY}[log]\nlevel = \"info,farmsync::alerts=debug\"\n\
             [alerts]\nwebhook_url = \"{url}/hooks/farm\"\n"
        ),
    ));
    let judged =
        |l: &Value| event(l) == "alerts.health.announced" || event(l) == "alerts.health.unchanged";

    // First daemon: its sweeps fail. The first failure is news; the retry's is not.
    let fault = refuse_farmflow(&sb);
    let mut d = Daemon::spawn(&w, &[]);
    let first = d.wait_for(MINUTE, judged).await;
    assert_eq!(event(&first), "alerts.health.announced", "{}", d.dump());
    let second = d.wait_for(MINUTE, judged).await;
    assert_eq!(event(&second), "alerts.health.unchanged", "{}", d.dump());
    d.signal("TERM");
    let (status, _) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());

    // Second daemon: still failing, which was announced already; then the API is back.
    let mut d = Daemon::spawn(&w, &[]);
    let again = d.wait_for(MINUTE, judged).await;
    assert_eq!(event(&again), "alerts.health.unchanged", "{}", d.dump());
    assert!(sb.farmflow().remove_fault(fault));
    let recovered = d.wait_for(MINUTE, judged).await;
    assert_eq!(event(&recovered), "alerts.health.announced", "{}", d.dump());
    d.signal("TERM");
    let (status, _) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());

    let posts = drain(&mut rx);
    assert_eq!(posts.len(), 2, "{posts:?}");
    let json: Vec<Value> = posts
        .iter()
        .map(|p| {
            assert_eq!(p.path, "/hooks/farm");
            assert_eq!(p.headers["content-type"], "application/json");
            serde_json::from_slice(&p.body).unwrap()
        })
        .collect();
    assert_eq!(json[0]["healthy"], false, "{}", json[0]);
    let problem = json[0]["problems"][0].as_str().unwrap();
    assert!(problem.contains("exited 4"), "{problem}");
    assert!(
        json[0]["text"].as_str().unwrap().contains("UNHEALTHY"),
        "{}",
        json[0]
    );
    assert_eq!(json[1]["healthy"], true, "{}", json[1]);
    assert_eq!(json[1]["previous_healthy"], false);

    let store = Store::open_read_only(&w.state_path()).unwrap();
    assert!(store.announced_health().unwrap().unwrap().healthy);
}
