//! `check`, `sync` and `sandbox` as a user runs them: the real binary against the sandbox.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use farmsync::lock::InstanceLock;
use farmsync::sandbox::{Sandbox, SandboxOptions, sample_farm};
use farmsync::store::{KOUNTA_TOKENS, Store};

use crate::support::{Workdir, assert_exit_0, farmsync, output_of, text};
use crate::sync_smoke::sandbox_config;

/// Runs the binary with `w`'s config off the async reactor.
async fn run(w: &Workdir, args: &[&str]) -> Output {
    let mut cmd = farmsync();
    cmd.arg("--config").arg(w.config_path()).args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run farmsync"))
        .await
        .unwrap()
}

async fn sandbox() -> Sandbox {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    sb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_ok_for_both_apis() {
    let sb = sandbox().await;
    let w = Workdir::new(&sandbox_config(&sb, ""));
    let out = run(&w, &["check"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("config: ok"), "{stdout}");
    assert!(stdout.contains("kounta: ok"), "{stdout}");
    assert!(stdout.contains("farmflow: ok"), "{stdout}");
    // Read-only: nothing was written, and no state DB was created.
    assert_eq!(sb.kounta().stats().writes + sb.farmflow().stats().writes, 0);
    assert!(!w.state_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_a_wrong_farmflow_key_names_farmflow_the_401_and_the_header() {
    let sb = sandbox().await;
    let w = Workdir::new(&sandbox_config(&sb, ""));
    let out = farmsync()
        .arg("--config")
        .arg(w.config_path())
        .arg("check")
        .env("FARMSYNC__FARMFLOW__API_KEY", "wrong-key-123")
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(4), "{all}");
    assert!(all.contains("kounta: ok"), "{all}");
    let line = all
        .lines()
        .find(|l| l.starts_with("farmflow:"))
        .unwrap_or_else(|| panic!("no farmflow line: {all}"));
    assert!(line.contains("FarmFlow"), "{line}");
    assert!(line.contains("401"), "{line}");
    assert!(line.contains("Authorization"), "{line}");
    assert!(!all.contains("wrong-key-123"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_an_unreachable_api_exits_4() {
    let w = Workdir::new(
        "[kounta]\nbase_url = \"http://127.0.0.1:9/v1\"\nclient_id = \"a\"\nclient_secret = \"b\"\n\
         [farmflow]\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\n",
    );
    let out = run(&w, &["check"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains("kounta: FAILED"), "{stdout}");
    assert!(stdout.contains("farmflow: FAILED"), "{stdout}");
}

#[test]
fn sync_without_credentials_exits_2_naming_the_key() {
    let w = Workdir::new("");
    let out = w.run(&["sync"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("kounta.client_id"),
        "{}",
        text(&out.stderr)
    );
    assert!(!w.state_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_exits_4_naming_the_holder() {
    let sb = sandbox().await;
    let w = Workdir::new(&sandbox_config(&sb, ""));
    let held = InstanceLock::acquire(&w.state_path()).unwrap();
    let out = run(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "another farmsync (pid {}) is using {}",
            std::process::id(),
            w.state_path().display()
        )),
        "{err}"
    );
    assert_eq!(sb.kounta().stats().total + sb.farmflow().stats().total, 0);
    drop(held);
    let out = run(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_rotation_across_three_processes_never_locks_farmsync_out() {
    let sb = sandbox().await;
    let first_refresh = sb.kounta().refresh_token();
    let w = Workdir::new(&sandbox_config(&sb, ""));
    for process in 1..=3 {
        // Every process finds its access token expired and must refresh (which rotates).
        sb.kounta().expire_access_tokens();
        let mut cmd = farmsync();
        cmd.arg("--config")
            .arg(w.config_path())
            .arg("sync")
            .env("FARMSYNC__KOUNTA__AUTH", "oauth")
            .env("FARMSYNC__KOUNTA__REFRESH_TOKEN", &first_refresh);
        let out = output_of(cmd).await;
        assert_exit_0(&out, &format!("process {process}"));
        let stored = Store::open_read_only(&w.state_path())
            .unwrap()
            .tokens(KOUNTA_TOKENS)
            .unwrap()
            .expect("tokens stored");
        assert_eq!(
            stored.refresh_token,
            sb.kounta().refresh_token(),
            "process {process}"
        );
    }
    assert_ne!(sb.kounta().refresh_token(), first_refresh);
    assert!(sb.kounta().stats().auth >= 3);

    // While another farmsync holds the lock, `check` uses the stored access token if it is
    // still good, and refuses (exit 4) rather than rotate the token behind the holder's back.
    let held = InstanceLock::acquire(&w.state_path()).unwrap();
    let check = |w: &Workdir| {
        let mut cmd = farmsync();
        cmd.arg("--config")
            .arg(w.config_path())
            .arg("check")
            .env("FARMSYNC__KOUNTA__AUTH", "oauth")
            .env("FARMSYNC__KOUNTA__REFRESH_TOKEN", &first_refresh);
        cmd
    };
    let out = output_of(check(&w)).await;
    assert_exit_0(&out, "check");
    sb.kounta().expire_access_tokens();
    let rotated = sb.kounta().refresh_token();
    let mut cmd = check(&w);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(4), "{all}");
    assert!(all.contains("lock"), "{all}");
    assert_eq!(
        sb.kounta().refresh_token(),
        rotated,
        "nothing was refreshed"
    );
    drop(held);
}

#[test]
fn the_sandbox_command_serves_what_it_prints() {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_farmsync"))
            .args(["sandbox", "--kounta-port", "0", "--farmflow-port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut kounta_url = None;
    let mut farmflow_url = None;
    let mut key = None;
    while let Some(Ok(line)) = lines.next() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["kounta", url] => kounta_url = Some(url.to_string()),
            ["farmflow", url] => farmflow_url = Some(url.to_string()),
            ["api", "key", k] => key = Some(k.to_string()),
            _ => {}
        }
        if kounta_url.is_some() && farmflow_url.is_some() && key.is_some() {
            break;
        }
    }
    let (kounta_url, farmflow_url, key) =
        (kounta_url.unwrap(), farmflow_url.unwrap(), key.unwrap());
    let http = reqwest::Client::new();
    let me = http
        .get(format!("{kounta_url}/companies/me"))
        .basic_auth("sandbox-client", Some("sandbox-secret"))
        .header("Accept", "application/json");
    let customers = http
        .get(format!("{farmflow_url}/customers-get"))
        .header("Authorization", format!("Bearer {key}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (me, customers) = rt.block_on(async {
        let me: serde_json::Value = me.send().await.unwrap().json().await.unwrap();
        let customers: serde_json::Value = customers.send().await.unwrap().json().await.unwrap();
        (me, customers)
    });
    assert_eq!(me["id"], 5678);
    assert_eq!(customers["status"], "success");
    assert_eq!(customers["data"].as_array().unwrap().len(), 15);
}

/// Stops the sandbox process when the test ends, however it ends: SIGTERM, on which it removes
/// its temporary state directory (SIGKILL would leave it behind).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn demo_resolves_a_conflict_approves_a_delete_and_ends_in_agreement() {
    let out = farmsync().arg("demo").output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for needle in [
        "conflict on line1 of farmflow:304",
        "waiting for a person (farmsync deletes)",
        "$ farmsync conflicts resolve farmflow:304 line1 --take farmflow",
        "$ farmsync deletes approve farmflow:",
        "Mei's address: 90 Harbour Road in the point of sale, 90 Harbour Road in FarmFlow",
        "Ethan Brown was removed from FarmFlow",
        "line1  \"12 Quay Street\" → \"90 Harbour Road\"",
        "both sides agree: nothing to write",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    // Before the decision, nothing was deleted: the deletion waited.
    let before = stdout.split("5. A person decides").next().unwrap();
    assert!(!before.contains("Ethan Brown was removed"), "{before}");
}
