//! `run_daemon` in-process: shutdown is a parameter, so a test stops it at a chosen moment;
//! start-up failures come back as errors with DESIGN.md's exit codes.

use std::time::Duration;

use farmsync::cli::Exit;
use farmsync::config::Settings;
use farmsync::daemon::{DaemonError, DaemonOptions, run_daemon};
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
