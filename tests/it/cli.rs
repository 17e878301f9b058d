//! The command line as a user meets it: config errors, secrets, status, the lock.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use farmsync::lock::InstanceLock;
use farmsync::store::Store;

use crate::support::{Workdir, exists, farmsync, text};

#[test]
fn help_and_version_explain_themselves() {
    let out = farmsync().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("status"), "{help}");
    assert!(help.contains("--config"), "{help}");
    let out = farmsync().args(["status", "--help"]).output().unwrap();
    assert!(text(&out.stdout).contains("monitoring"));
    let out = farmsync().arg("--version").output().unwrap();
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn an_unknown_key_exits_2_naming_key_and_file() {
    let w = Workdir::new("[kounta]\nbse_url = \"x\"\n");
    let out = w.run(&["status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("kounta.bse_url"), "{err}");
    assert!(
        err.contains(&w.config_path().display().to_string()),
        "{err}"
    );
    assert!(!exists(&w.state_path()));
}

#[test]
fn a_usage_error_exits_2() {
    let out = farmsync().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn status_without_state_says_so_and_creates_nothing() {
    let w = Workdir::new("");
    let out = w.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "farmsync has not run yet (no state at {})",
            w.state_path().display()
        )),
        "{err}"
    );
    assert!(!exists(&w.state_path()));
    assert_eq!(std::fs::read_dir(w.dir.path()).unwrap().count(), 1);
}

#[test]
fn secrets_never_reach_the_output_even_at_trace() {
    let w = Workdir::new("");
    Store::open(&w.state_path()).unwrap();
    let out = farmsync()
        .env("FARMSYNC__FARMFLOW__API_KEY", "s3cr3t-XYZ")
        .env("FARMSYNC__KOUNTA__CLIENT_SECRET", "s3cr3t-KOUNTA")
        .env("RUST_LOG", "trace")
        .args(["--config", w.config_path().to_str().unwrap()])
        .args(["--log-format", "json", "status"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stdout.contains("s3cr3t"), "{stdout}");
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
    // Every log line on stderr is one JSON object.
    let mut lines = 0;
    for line in stderr.lines() {
        if line.starts_with("farmsync: ") {
            continue; // the final error sentence, not a log line
        }
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("timestamp").is_some() && v.get("message").is_some(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines > 0, "trace level should log something: {stderr}");
}

#[test]
fn status_reports_an_empty_store_as_unhealthy_in_json() {
    let w = Workdir::new("");
    Store::open(&w.state_path()).unwrap();
    let out = w.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["links"]["total"], 0);
    assert!(v["problems"][0].as_str().unwrap().contains("no sync run"));
    assert!(v["next_run"].is_string());
}

#[test]
fn status_is_healthy_after_a_recent_successful_run_and_not_after_a_failed_one() {
    let w = Workdir::new("");
    {
        let store = Store::open(&w.state_path()).unwrap();
        store.start_run("r1", false).unwrap();
        store
            .finish_run("r1", 0, &serde_json::json!({"created": 1}))
            .unwrap();
    }
    let out = w.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("healthy"));
    {
        let store = Store::open(&w.state_path()).unwrap();
        store.start_run("r2", false).unwrap();
        store
            .finish_run("r2", 1, &serde_json::json!({"failed": 1}))
            .unwrap();
        // A dry run after it does not hide the failure.
        store.start_run("r3", true).unwrap();
        store.finish_run("r3", 0, &serde_json::json!({})).unwrap();
    }
    let out = w.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("the last run (r2) exited 1"));
}

#[test]
fn status_refuses_a_db_from_a_newer_farmsync_with_exit_2() {
    let w = Workdir::new("");
    Store::open(&w.state_path()).unwrap();
    let conn = rusqlite::Connection::open(w.state_path()).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let out = w.run(&["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("newer than this farmsync"));
}

const HOLDER_ENV: &str = "FARMSYNC_TEST_LOCK_HOLDER";

/// Runs as the parent (the test) or, re-executed with `HOLDER_ENV` set, as the lock holder.
#[test]
fn the_lock_is_exclusive_across_processes_and_freed_by_sigkill() {
    if let Ok(state) = std::env::var(HOLDER_ENV) {
        let state = std::path::PathBuf::from(state);
        Store::open(&state).unwrap();
        let _lock = InstanceLock::acquire(&state).unwrap();
        let mut ready = state.as_os_str().to_owned();
        ready.push(".ready");
        std::fs::write(ready, std::process::id().to_string()).unwrap();
        loop {
            std::thread::park();
        }
    }

    let w = Workdir::new("");
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cli::the_lock_is_exclusive_across_processes_and_freed_by_sigkill",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLDER_ENV, w.state_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Cross-process wait, bounded: the holder writes its pid once it holds the lock.
    let ready = w.dir.path().join("state.db.ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| t.parse::<u32>().ok())
        {
            break pid;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the lock holder exited early"
        );
        assert!(
            Instant::now() < deadline,
            "the lock holder never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    let err = InstanceLock::acquire(&w.state_path())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "another farmsync (pid {pid}) is using {}",
            w.state_path().display()
        )
    );
    // A reader is not refused while the lock is held.
    let out = w.run(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no sync run has finished yet"));

    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let lock = InstanceLock::acquire(&w.state_path());
    assert!(lock.is_ok(), "{:?}", lock.err());
}

/// Kills the child process when the test ends, however it ends, so no holder outlives it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_setting_that_is_not_utf8_is_refused_naming_the_variable() {
    use std::os::unix::ffi::OsStrExt;
    let w = Workdir::new("");
    let out = farmsync()
        .env(
            "FARMSYNC__FARMFLOW__API_KEY",
            std::ffi::OsStr::from_bytes(b"key-\xff"),
        )
        .args(["--config", w.config_path().to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("FARMSYNC__FARMFLOW__API_KEY"), "{err}");
    assert!(err.contains("UTF-8"), "{err}");
}
