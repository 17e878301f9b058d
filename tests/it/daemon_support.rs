//! Helpers for the daemon tests: `farmsync run` as a child process whose JSON log is read
//! line by line, and a converged sandbox.

use std::process::ExitStatus;
use std::time::Duration;

use farmsync::sandbox::{FarmflowRecord, KountaRecord, KountaRecordAddress, SampleData, Sandbox};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::support::{Workdir, farmsync, text};

/// `farmsync --config <w> args…`, off the async workers.
pub async fn farmsync_in(w: &Workdir, args: &[&str]) -> std::process::Output {
    farmsync_with_env(w, args, &[]).await
}

/// `farmsync --config <w> args…` with extra environment, off the async workers.
pub async fn farmsync_with_env(
    w: &Workdir,
    args: &[&str],
    env: &[(&str, String)],
) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let config = w.config_path();
    tokio::task::spawn_blocking(move || {
        farmsync()
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(env)
            .output()
            .expect("run farmsync")
    })
    .await
    .expect("farmsync ran")
}

/// A sandbox config (see `sandbox_config`) with the CRM's rate set to `per_minute` (FarmFlow's
/// stays high).
pub fn with_crm_rate(config: &str, per_minute: u32) -> String {
    config.replacen(
        "requests_per_minute = 100000",
        &format!("requests_per_minute = {per_minute}"),
        1,
    )
}

/// `n` people on both sides, each CRM customer naming its FarmFlow twin in `reference_id`, the
/// same in every field: a first sync links them all and writes nothing.
pub fn linked_farm(n: usize) -> SampleData {
    let mut data = SampleData::default();
    for i in 0..n {
        let id = 1_000 + i as i64;
        data.farmflow.push(FarmflowRecord {
            id,
            firstname: format!("First{i}"),
            lastname: format!("Last{i}"),
            email: format!("person{i}@example.com"),
            phone: format!("04{i:08}"),
            address: format!("{i} Orchard Lane"),
            city: "Orange".into(),
            state: "NSW".into(),
            zip: "2800".into(),
            country: "AU".into(),
            ..FarmflowRecord::default()
        });
        data.kounta.push(KountaRecord {
            first_name: format!("First{i}"),
            last_name: format!("Last{i}"),
            email: format!("person{i}@example.com"),
            phone: format!("04{i:08}"),
            reference_id: format!("farmflow:{id}"),
            primary_address: Some(KountaRecordAddress {
                address: format!("{i} Orchard Lane"),
                city: "Orange".into(),
                state: "NSW".into(),
                postal_code: "2800".into(),
                country: "AU".into(),
            }),
            ..KountaRecord::default()
        });
    }
    data
}

/// Runs `farmsync sync` until both sides agree: three runs, each exiting 0.
pub async fn converge(w: &Workdir) {
    for _ in 0..3 {
        let out = farmsync_in(w, &["sync"]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// Customer writes both fakes have been asked for so far.
pub fn writes(sb: &Sandbox) -> u64 {
    sb.kounta().stats().writes + sb.farmflow().stats().writes
}

/// Linked pairs (CRM id, FarmFlow id) as the CRM's `reference_id`s say.
pub fn linked(sb: &Sandbox) -> Vec<(i64, i64)> {
    sb.kounta()
        .customers()
        .iter()
        .filter_map(|c| {
            let ff = c.reference_id.strip_prefix("farmflow:")?.parse().ok()?;
            Some((c.id, ff))
        })
        .collect()
}

/// A TCP port free a moment ago on 127.0.0.1, for a daemon to bind later. Taken below the
/// kernel's ephemeral range (32768–60999 on Linux), from which every port-0 bind (the
/// sandboxes) and every outgoing connection of the other tests running meanwhile is given: a
/// port from that range, free when asked, could be handed to one of them before the daemon
/// binds it, and the daemon would exit at start. Each call in this process gets a new port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Start where another test process (a second checkout's suite) is unlikely to.
    let offset = (std::process::id() * 97) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (offset + n) % SPAN).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// The event name of a JSON log line (`message`), or "" for other lines.
pub fn event(line: &Value) -> &str {
    line.get("message").and_then(Value::as_str).unwrap_or("")
}

/// A running `farmsync run`.
pub struct Daemon {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every line read so far (JSON objects; other lines as strings).
    pub log: Vec<Value>,
}

impl Daemon {
    /// Starts `farmsync --log-format json --config <w> run` with extra environment.
    pub fn spawn(w: &Workdir, env: &[(&str, String)]) -> Daemon {
        Daemon::spawn_command(w, "run", env)
    }

    /// Starts `farmsync --log-format json --config <w> <command>` (`run`, `sync`) with extra
    /// environment, its JSON log read as it comes.
    pub fn spawn_command(w: &Workdir, command: &str, env: &[(&str, String)]) -> Daemon {
        let mut cmd = farmsync();
        cmd.arg("--log-format")
            .arg("json")
            .arg("--config")
            .arg(w.config_path())
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .expect("farmsync run starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The process, for a test that waits for it or kills it itself.
    pub fn process(&mut self) -> &mut tokio::process::Child {
        &mut self.child
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Reads log lines until one satisfies `what`; panics with the log after `within`.
    pub async fn wait_for(&mut self, within: Duration, what: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.log.push(line.clone());
                    if what(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!("farmsync run ended early:\n{}", self.dump()),
                Err(_) => panic!("timed out after {within:?}; log so far:\n{}", self.dump()),
            }
        }
    }

    /// Waits until `name` has been logged `n` times in all.
    pub async fn wait_for_count(&mut self, name: &str, n: usize, within: Duration) {
        while self.count(name) < n {
            self.wait_for(within, |l| event(l) == name).await;
        }
    }

    /// How often `name` was logged so far.
    pub fn count(&self, name: &str) -> usize {
        self.log.iter().filter(|l| event(l) == name).count()
    }

    /// The event names logged so far, in order.
    pub fn events(&self) -> Vec<&str> {
        self.log
            .iter()
            .map(event)
            .filter(|e| !e.is_empty())
            .collect()
    }

    /// Sends a signal (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit (at most `within`), then reads the rest of its log.
    pub async fn exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running after {within:?}:\n{}", self.dump()))
            .expect("wait");
        let took = started.elapsed();
        while let Some(line) = self.lines.recv().await {
            self.log.push(line);
        }
        (status, took)
    }

    /// The log so far, one line each.
    pub fn dump(&self) -> String {
        self.log
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
