//! `run_daemon` in-process: shutdown is a parameter, so a test stops it at a chosen moment;
//! start-up failures come back as errors with DESIGN.md's exit codes.

use std::time::Duration;

use farmsync::config::Settings;
use farmsync::daemon::{DaemonError, DaemonOptions, run_daemon};
use farmsync::exit::Exit;
use farmsync::lock::InstanceLock;
use farmsync::sandbox::{Sandbox, SandboxOptions, sample_farm};
use farmsync::store::Store;

use crate::support::Workdir;
use crate::sync_smoke::sandbox_config;

const YEARLY: &str = "[schedule]\ncron = \"0 0 0 1 1 *\"\nquick_cron = \"\"\n";

fn settings(w: &Workdir) -> Settings {
    Settings::builder().file(w.config_path()).build().unwrap()
}

fn options() -> DaemonOptions {
    DaemonOptions {
        watchdog: None,
        ..DaemonOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_the_first_cycle_drains_it_and_stops_cleanly() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, YEARLY));
    let mut writes = sb.farmflow().writes_applied();

    // Stop as soon as the first sync has written something: mid-cycle.
    let shutdown = async move {
        writes.wait_for(|n| *n >= 1).await.unwrap();
    };
    let stop = tokio::time::timeout(
        Duration::from_secs(30),
        run_daemon(&settings(&w), options(), shutdown),
    )
    .await
    .expect("the daemon stops")
    .expect("the daemon ran");

    assert!(stop.drained && !stop.worker_died);
    assert_eq!(stop.exit(), Exit::Ok);
    assert_eq!(stop.stats.cycles, 1);
    let store = Store::open_read_only(&w.state_path()).unwrap();
    assert!(store.unsettled_intents().unwrap().is_empty());
    let runs = store.recent_runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].exit_code, Some(0));
    // The lock went with the daemon.
    InstanceLock::acquire(&w.state_path()).expect("the lock is free again");
}

#[tokio::test]
async fn a_held_lock_is_exit_4_and_opens_nothing_else() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let w = Workdir::new(&sandbox_config(&sb, YEARLY));
    let _held = InstanceLock::acquire(&w.state_path()).unwrap();
    let err = run_daemon(&settings(&w), options(), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, DaemonError::Lock(_)), "{err}");
    assert_eq!(err.exit(), Exit::Unavailable);
    assert!(!w.state_path().exists(), "no state DB was created");
    assert_eq!(sb.kounta().stats().total, 0);
}

#[tokio::test]
async fn a_taken_webhook_port_is_exit_4_naming_the_key() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let w = Workdir::new(&sandbox_config(
        &sb,
        &format!(
            "{YEARLY}[webhooks]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\nsignature_token = \"t\"\nshared_secret = \"s\"\n"
        ),
    ));
    let err = run_daemon(&settings(&w), options(), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, DaemonError::Listen { .. }), "{err}");
    assert_eq!(err.exit(), Exit::Unavailable);
    assert!(err.to_string().contains("webhooks.listen"), "{err}");
    assert_eq!(sb.kounta().stats().total, 0, "no sync ran");
    InstanceLock::acquire(&w.state_path()).expect("the lock was released");
}

/// DESIGN.md, "The daemon and OAuth": a cycle in which some records failed (exit 1) is not
/// retried — the next fire time retries them. Hourly sweeps, quick cycles every second, and one
/// CRM customer whose FarmFlow create is refused every time: no sweep between fire times, and
/// the quick cycles (which create nothing) never retry that create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_every_time_waits_for_the_next_fire_time() {
    use farmsync::sandbox::{FarmflowEndpoint, Fault, FaultAction, KountaEndpoint, When};
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.kounta().insert(crate::sync_support::crm_person(
        "Rita",
        "Refused",
        "rita@example.com",
        "0412 555 000",
    ));
    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Create,
        When::Every,
        FaultAction::Status(400),
    ));
    let w = Workdir::new(&sandbox_config(
        &sb,
        "[schedule]\ncron = \"0 0 * * * *\"\nquick_cron = \"* * * * * *\"\n",
    ));
    // Run for a little over four seconds: the start-up sweep and four quick cycles or so.
    let shutdown = tokio::time::sleep(Duration::from_millis(4_300));
    let stop = tokio::time::timeout(
        Duration::from_secs(30),
        run_daemon(&settings(&w), options(), shutdown),
    )
    .await
    .expect("the daemon stops")
    .expect("the daemon ran");

    assert_eq!(stop.exit(), Exit::Ok);
    assert_eq!(stop.stats.retries, 0, "exit 1 is not retried");
    assert!(stop.stats.cycles >= 3, "quick cycles ran: {:?}", stop.stats);
    assert_eq!(
        sb.farmflow().stats().count(FarmflowEndpoint::Create),
        1,
        "only the start-up sweep tried the create"
    );
    assert_eq!(
        sb.kounta().stats().count(KountaEndpoint::List),
        1,
        "one CRM listing: no sweep between fire times"
    );
    let store = Store::open_read_only(&w.state_path()).unwrap();
    let runs = store.recent_runs(100).unwrap();
    assert_eq!(runs.last().and_then(|r| r.exit_code), Some(1), "the sweep");
    assert!(
        runs.iter().rev().skip(1).all(|r| r.exit_code == Some(0)),
        "the quick cycles apply cleanly: {runs:?}"
    );
}
