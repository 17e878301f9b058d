//! No surprises: commands that only read open the state DB read-only and never migrate it,
//! `check` tells a config problem (exit 2) from an unreachable API (exit 4), with JSON logs every
//! stderr line is one JSON object, and `farmsync sandbox` hands out a config that works.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use farmsync::sandbox::{Sandbox, SandboxOptions, sample_farm};
use farmsync::store::Store;
use rusqlite::Connection;

use crate::support::{Workdir, assert_exit_0, farmsync, output_of, text};
use crate::sync_smoke::{run, sandbox_config};

const UPGRADE: &str = "run farmsync sync or restart the service to upgrade the state DB";

async fn sandbox() -> Sandbox {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    sb
}

/// The DB's schema version and whether it has the request ledger.
fn schema(path: &std::path::Path) -> (i64, bool) {
    let conn = Connection::open(path).unwrap();
    let version = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let ledger = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'request_grants')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (version, ledger)
}

fn count(path: &std::path::Path, table: &str) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_only_read_never_migrate_an_older_state_db() {
    let sb = sandbox().await;
    let w = Workdir::new(&sandbox_config(&sb, ""));
    // A state DB as the previous farmsync left it: schema 1, before the request ledger.
    Store::create_at_version(&w.state_path(), 1).unwrap();
    let before = std::fs::read(w.state_path()).unwrap();

    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["check"],
        vec!["sync", "--dry-run"],
        vec!["history"],
        vec!["conflicts", "--json"],
        vec!["deletes"],
    ] {
        let out = run(&w, &args).await;
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains(UPGRADE), "{args:?}: {said}");
        assert_eq!(schema(&w.state_path()), (1, false), "{args:?} migrated it");
    }
    assert_eq!(
        std::fs::read(w.state_path()).unwrap(),
        before,
        "not a byte changed"
    );
    assert_eq!(sb.kounta().stats().writes + sb.farmflow().stats().writes, 0);

    // A writer upgrades it; then the readers work.
    let out = run(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(schema(&w.state_path()).1, "upgraded");
    let out = run(&w, &["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_and_a_dry_run_write_nothing_but_the_checks_own_requests() {
    let sb = sandbox().await;
    let w = Workdir::new(&sandbox_config(&sb, ""));
    // No state DB: a dry run plans against an empty store and creates none.
    let out = run(&w, &["sync", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("would create"),
        "{}",
        text(&out.stdout)
    );
    assert!(!w.state_path().exists());

    let out = run(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut grants = count(&w.state_path(), "request_grants");
    let runs = count(&w.state_path(), "runs");
    assert!(grants > 0, "the sync recorded its requests");
    for args in [vec!["check"], vec!["sync", "--dry-run"]] {
        let out = run(&w, &args).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        // The ledger was read (it counts the others' requests), without a failed write. A
        // dry run recorded nothing; a check only its own requests, so that a daemon beside it
        // counts them (the rate holds across processes).
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("http.ratelimit"), "{args:?}: {stderr}");
        let now = count(&w.state_path(), "request_grants");
        if args == ["check"] {
            assert!(now > grants, "the check's requests are in the ledger");
            grants = now;
        } else {
            assert_eq!(now, grants, "{args:?}");
        }
        assert_eq!(count(&w.state_path(), "runs"), runs, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_dry_run_without_a_state_db_keeps_only_the_rotated_token() {
    let sb = sandbox().await;
    let w = Workdir::new(&sandbox_config(&sb, ""));
    let first = sb.kounta().refresh_token();
    let mut cmd = farmsync();
    cmd.arg("--config")
        .arg(w.config_path())
        .args(["sync", "--dry-run"])
        .env("FARMSYNC__KOUNTA__AUTH", "oauth")
        .env("FARMSYNC__KOUNTA__REFRESH_TOKEN", &first);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(sb.kounta().refresh_token(), first, "the dry run refreshed");
    // Losing the rotated token would lock farmsync out: it is the one thing kept.
    let store = Store::open_read_only(&w.state_path()).unwrap();
    let tokens = store
        .tokens(farmsync::store::KOUNTA_TOKENS)
        .unwrap()
        .unwrap();
    assert_eq!(tokens.refresh_token, sb.kounta().refresh_token());
    assert_eq!(store.recent_runs(10).unwrap().len(), 0);
    assert_eq!(store.links().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_2_for_a_config_problem_and_4_for_an_unreachable_api() {
    let sb = sandbox().await;
    // A FarmFlow key no HTTP header can carry: the config's fault, not FarmFlow's.
    let w = Workdir::new(&sandbox_config(&sb, "").replace(
        &format!("api_key = {:?}", sb.farmflow().api_key()),
        "api_key = \"key-with\\na-newline\"",
    ));
    let out = run(&w, &["check"]).await;
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("kounta: ok"), "{said}");
    assert!(said.contains("farmflow: FAILED"), "{said}");
    assert!(said.contains("farmflow.api_key"), "{said}");
    assert!(!said.contains("a-newline"), "{said}");

    // The same key with the other API unreachable: still exit 2, the config comes first.
    let w = Workdir::new(
        "[kounta]\nbase_url = \"http://127.0.0.1:9/v1\"\nclient_id = \"a\"\nclient_secret = \"b\"\n\
         [farmflow]\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"key-with\\na-newline\"\n",
    );
    let out = run(&w, &["check"]).await;
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("kounta: FAILED"), "{said}");

    // Unreachable, with a sound config: exit 4.
    let w = Workdir::new(
        "[kounta]\nbase_url = \"http://127.0.0.1:9/v1\"\nclient_id = \"a\"\nclient_secret = \"b\"\n\
         [farmflow]\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\n",
    );
    let out = run(&w, &["check"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
}

/// Every line of `stderr` parsed as a JSON object; the last one returned.
fn all_json(stderr: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut last = None;
    for line in stderr.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nin:\n{stderr}"));
        last = Some(value.as_object().cloned().expect("an object"));
    }
    last.unwrap_or_else(|| panic!("nothing on stderr"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_logs_every_stderr_line_is_a_json_object_the_final_error_too() {
    let sb = sandbox().await;
    let unreachable = Workdir::new(
        "[kounta]\nbase_url = \"http://127.0.0.1:9/v1\"\nclient_id = \"a\"\nclient_secret = \"b\"\n\
         [farmflow]\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\n",
    );
    let bad_key = Workdir::new("[kounta]\nbse_url = \"x\"\n");
    let webhooks = Workdir::new(&sandbox_config(
        &sb,
        "[webhooks]\nenabled = true\nsignature_token = \"sig-token\"\nshared_secret = \"shared-secret-1\"\n",
    ));
    // (workdir, arguments, JOURNAL_STREAM set, exit code, the last line's event)
    let cases: Vec<(&Workdir, Vec<&str>, bool, i32, &str)> = vec![
        // Logs of a run, then the error that ended it.
        (
            &unreachable,
            vec!["--log-format", "json", "sync"],
            false,
            4,
            "command.failed",
        ),
        // Under systemd, without asking.
        (&unreachable, vec!["sync"], true, 4, "command.failed"),
        // A config error, before any log line.
        (
            &bad_key,
            vec!["--log-format", "json", "status"],
            false,
            2,
            "command.failed",
        ),
        // A command line clap refuses.
        (
            &bad_key,
            vec!["--log-format", "json", "sync", "--bogus"],
            false,
            2,
            "command.failed",
        ),
        (&bad_key, vec!["sync", "--bogus"], true, 2, "command.failed"),
        // A hint beside a command's output.
        (
            &webhooks,
            vec!["--log-format", "json", "webhooks", "register"],
            false,
            0,
            "command.hint",
        ),
    ];
    for (w, args, journal, code, event) in cases {
        let mut cmd = farmsync();
        cmd.arg("--config").arg(w.config_path()).args(&args);
        if journal {
            cmd.env("JOURNAL_STREAM", "8:12345");
        }
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        let last = if event == "command.hint" {
            // The hint comes first; the run's own lines may follow.
            all_json(&stderr);
            stderr
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|v| v["message"] == event)
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_else(|| panic!("no {event}: {stderr}"))
        } else {
            all_json(&stderr)
        };
        assert_eq!(last["message"], event, "{args:?}: {stderr}");
        assert!(
            last.contains_key("timestamp") && last.contains_key("level"),
            "{last:?}"
        );
        if event == "command.failed" {
            assert_eq!(last["exit_code"], code, "{last:?}");
            assert!(
                last["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{last:?}"
            );
        } else {
            assert!(
                last["hint"].as_str().unwrap().contains("public_url"),
                "{last:?}"
            );
        }
    }
}

/// A running `farmsync sandbox`, stopped (SIGTERM) and reaped when dropped.
struct SandboxProcess(std::process::Child);

impl SandboxProcess {
    fn start(
        args: &[&str],
    ) -> (
        SandboxProcess,
        std::io::Lines<BufReader<std::process::ChildStdout>>,
    ) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_farmsync"))
            .arg("sandbox")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        (SandboxProcess(child), lines)
    }

    fn stop(&mut self) {
        // SIGTERM, as systemd or `kill` would: the sandbox removes its state directory.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn state_path_in(config: &str) -> std::path::PathBuf {
    let table: toml::Table = toml::from_str(config).unwrap();
    std::path::PathBuf::from(table["state"]["path"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_prints_a_complete_config_and_writes_it_with_write_config() {
    // Printed: everything from its first line to its last is a config that works as it is.
    let (mut printed, mut lines) = SandboxProcess::start(&[]);
    let mut config = String::new();
    let mut inside = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        inside |= line.starts_with(farmsync::sandbox::SANDBOX_CONFIG_FIRST_LINE);
        if inside {
            config.push_str(&line);
            config.push('\n');
        }
        if line == farmsync::sandbox::SANDBOX_CONFIG_LAST_LINE {
            break;
        }
    }
    assert!(config.ends_with(&format!(
        "{}\n",
        farmsync::sandbox::SANDBOX_CONFIG_LAST_LINE
    )));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pasted.toml");
    std::fs::write(&file, &config).unwrap();
    let check = |file: &std::path::Path, args: &[&str]| {
        let mut cmd = farmsync();
        cmd.arg("--config").arg(file).args(args);
        cmd
    };
    let out = output_of(check(&file, &["check"])).await;
    assert_exit_0(&out, "check");
    printed.stop();
    // Stopped at once after printing, it still takes its state directory with it.
    let state = state_path_in(&config);
    assert!(!state.parent().unwrap().exists(), "{}", state.display());

    // Written: the same, to the file named; a sync runs against it, its state DB where the
    // config says, removed when the sandbox stops.
    let file = dir.path().join("written.toml");
    let (mut written, mut lines) =
        SandboxProcess::start(&["--write-config", file.to_str().unwrap()]);
    let announced = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("config written to"))
        .expect("the sandbox says where the config is");
    assert!(announced.contains(file.to_str().unwrap()), "{announced}");
    let config = std::fs::read_to_string(&file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for args in [vec!["sync", "--dry-run"], vec!["sync"], vec!["status"]] {
        let out = output_of(check(&file, &args)).await;
        assert_exit_0(&out, &format!("{args:?}"));
    }
    let state = state_path_in(&config);
    assert!(state.exists());
    written.stop();
    assert!(
        !state.parent().unwrap().exists(),
        "the sandbox's state went with it"
    );

    // A file the sandbox did not write is never replaced.
    let mine = dir.path().join("mine.toml");
    std::fs::write(&mine, "[log]\nlevel = \"debug\"\n").unwrap();
    let out = farmsync()
        .args(["sandbox", "--write-config", mine.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not a config farmsync sandbox wrote"));
    assert_eq!(
        std::fs::read_to_string(&mine).unwrap(),
        "[log]\nlevel = \"debug\"\n"
    );
}
