//! The rate limit holds across processes (DESIGN.md, "Reading the CRM on a budget": "no minute
//! ever carries more CRM requests than the configured rate, across processes"): a restarted
//! daemon, a `farmsync sync` right after a daemon stops, and `check` beside a running sync each
//! count the others' requests through the state DB's ledger. Measured at the sandbox, which
//! times every arrival.
//!
//! Each process here measures its rate over one second instead of a minute
//! (`FARMSYNC_TEST_RATE_WINDOW_MS`, debug builds only), so a test spans a few windows in a few
//! seconds.

use std::time::Duration;

use farmsync::sandbox::{Sandbox, SandboxOptions, max_in_window};

use crate::daemon_support::{Daemon, event, farmsync_with_env, linked_farm, with_crm_rate};
use crate::support::{Workdir, farmsync, text};
use crate::sync_smoke::sandbox_config;

/// Once a year: only the start-up cycle runs during a test.
const YEARLY: &str = "[schedule]\ncron = \"0 0 0 1 1 *\"\n";
const WINDOW: Duration = Duration::from_secs(1);
/// CRM requests allowed in any window.
const LIMIT: u32 = 10;
const MINUTE: Duration = Duration::from_secs(60);

/// The environment every farmsync process of these tests runs with.
fn one_second_windows() -> Vec<(&'static str, String)> {
    vec![(
        "FARMSYNC_TEST_RATE_WINDOW_MS",
        WINDOW.as_millis().to_string(),
    )]
}

/// A sandbox holding `people` linked people, and a config at [`LIMIT`] CRM requests a window.
async fn setup(people: usize) -> (Sandbox, Workdir) {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&linked_farm(people)).unwrap();
    let w = Workdir::new(&with_crm_rate(&sandbox_config(&sb, YEARLY), LIMIT));
    (sb, w)
}

/// The most CRM requests that arrived within any one window.
fn busiest_window(sb: &Sandbox) -> usize {
    max_in_window(&sb.kounta().request_log(), WINDOW)
}

/// Starts `farmsync run`, waits until the CRM has seen `total` requests in all, then stops it
/// with SIGTERM: it exits 0 at once.
async fn daemon_until(w: &Workdir, sb: &Sandbox, total: u64) {
    let mut seen = sb.kounta().requests_seen();
    let mut d = Daemon::spawn(w, &one_second_windows());
    d.wait_for(MINUTE, |l| event(l) == "sync.run.started").await;
    seen.wait_for(|n| *n >= total).await.unwrap();
    d.signal("TERM");
    let (status, _) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_counts_the_requests_of_the_one_before() {
    let (sb, w) = setup(60).await;
    let limit = u64::from(LIMIT);

    // The first daemon spends a window's requests, and is stopped.
    daemon_until(&w, &sb, limit).await;
    // At once a new one starts: without the ledger it would spend a whole window's more.
    daemon_until(&w, &sb, 2 * limit + 2).await;

    let busiest = busiest_window(&sb);
    assert!(
        busiest <= LIMIT as usize,
        "{busiest} CRM requests in one window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_right_after_a_daemon_counts_the_daemons_requests() {
    let (sb, w) = setup(20).await;

    daemon_until(&w, &sb, u64::from(LIMIT)).await;
    let out = farmsync_with_env(&w, &["sync"], &one_second_windows()).await;

    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0 created, 0 updated"),
        "{}",
        text(&out.stdout)
    );
    let busiest = busiest_window(&sb);
    assert!(
        busiest <= LIMIT as usize,
        "{busiest} CRM requests in one window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_beside_a_running_sync_shares_its_rate() {
    let (sb, w) = setup(30).await;
    let mut seen = sb.kounta().requests_seen();
    let sync = tokio::process::Command::from({
        let mut cmd = farmsync();
        cmd.arg("--config")
            .arg(w.config_path())
            .arg("sync")
            .envs(one_second_windows())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    })
    .kill_on_drop(true)
    .spawn()
    .expect("farmsync sync starts");
    // The sync keeps every window full: it has 33 CRM requests to make at 10 a window.
    seen.wait_for(|n| *n >= u64::from(LIMIT)).await.unwrap();

    for _ in 0..2 {
        let out = farmsync_with_env(&w, &["check"], &one_second_windows()).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
        assert!(
            text(&out.stdout).contains("kounta: ok"),
            "{}",
            text(&out.stdout)
        );
    }
    let synced = tokio::time::timeout(MINUTE, sync.wait_with_output())
        .await
        .expect("the sync finishes")
        .unwrap();

    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced.stderr));
    let busiest = busiest_window(&sb);
    assert!(
        busiest <= LIMIT as usize,
        "{busiest} CRM requests in one window"
    );
}
