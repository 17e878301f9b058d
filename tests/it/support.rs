//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `farmsync` binary under test, with a clean environment: no `FARMSYNC__…`, `RUST_LOG`
/// or `JOURNAL_STREAM` leaks in from the shell that runs the tests.
pub fn farmsync() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_farmsync"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().to_string();
        if key.starts_with("FARMSYNC__") || key == "RUST_LOG" || key == "JOURNAL_STREAM" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A temp dir with a config file pointing the state DB into it.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    /// A new temp dir with `farmsync.toml` holding `[state] path` and `extra`.
    pub fn new(extra: &str) -> Workdir {
        let dir = tempfile::tempdir().expect("temp dir");
        let w = Workdir { dir };
        w.set_config(extra);
        w
    }

    /// Rewrites `farmsync.toml`: `[state] path` as before, then `extra`.
    pub fn set_config(&self, extra: &str) {
        let state = self.state_path();
        std::fs::write(
            self.config_path(),
            format!("[state]\npath = {:?}\n{extra}", state.display().to_string()),
        )
        .expect("write config");
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("farmsync.toml")
    }

    /// The state DB.
    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// `farmsync --config <this config> args…`.
    pub fn run(&self, args: &[&str]) -> Output {
        farmsync()
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .output()
            .expect("run farmsync")
    }
}

/// Lossy text of a byte stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `path` exists.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// Runs `cmd` (the binary with its config and arguments) to completion off the async reactor.
pub async fn output_of(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run farmsync"))
        .await
        .expect("join farmsync")
}

/// Fails unless `out` exited 0, saying `what` ran and what it printed.
pub fn assert_exit_0(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
