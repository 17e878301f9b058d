//! What the command line's edge needs beyond the commands themselves: usage errors and panics
//! in the log format (with JSON, every stderr line is one JSON object), and the config file
//! `farmsync sandbox --write-config` writes.
//!
//! Depends on the sandbox (for its config file's marker) and telemetry only; it runs no
//! command.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::exit::{CliError, Exit};
use crate::telemetry::{self, LogFormat};

/// Reports a command line clap refused: help and `--version` as clap prints them; a usage
/// error as clap prints it, or — when the JSON format was asked for, or `JOURNAL_STREAM` is set
/// — as one `command.failed` JSON object. Exit 2 for a usage error, as DESIGN.md says.
pub fn usage_error(error: clap::Error) -> ExitCode {
    if !error.use_stderr() {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let asked = json_asked(
        std::env::args_os()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned()),
    );
    let format = LogFormat::resolve(asked.then_some(LogFormat::Json));
    match format {
        LogFormat::Json => {
            let text = error.render().to_string();
            telemetry::command_failed(format, text.trim_end(), Exit::Config as u8);
        }
        LogFormat::Pretty => {
            let _ = error.print();
        }
    }
    Exit::Config.into()
}

/// Whether `args` ask for `--log-format json` (clap could not tell: it refused the line).
fn json_asked(args: impl Iterator<Item = String>) -> bool {
    let args: Vec<String> = args.collect();
    args.iter().enumerate().any(|(i, arg)| {
        arg == "--log-format=json"
            || (arg == "--log-format" && args.get(i + 1).is_some_and(|v| v == "json"))
    })
}

/// With the JSON format, a panic (a bug) is reported as one `command.panicked` JSON object
/// rather than Rust's text.
pub fn json_panics(format: LogFormat) {
    if format != LogFormat::Json {
        return;
    }
    std::panic::set_hook(Box::new(move |info| {
        telemetry::say(
            format,
            tracing::Level::ERROR,
            "command.panicked",
            "error",
            &info.to_string(),
            &[],
        );
    }));
}

/// Refuses (exit 2) to let `farmsync sandbox --write-config` replace a file it did not write:
/// a config of the person's own must not be lost to a trial.
pub fn may_write_sandbox_config(path: &Path) -> Result<(), CliError> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(text) if text.starts_with(crate::sandbox::SANDBOX_CONFIG_FIRST_LINE) => Ok(()),
        Ok(_) => Err(CliError::new(
            Exit::Config,
            format!(
                "{} exists and is not a config farmsync sandbox wrote; give --write-config another path",
                path.display()
            ),
        )),
        Err(e) => Err(CliError::new(
            Exit::Config,
            format!("cannot write the sandbox config to {}: {e}", path.display()),
        )),
    }
}

/// Writes the sandbox's config to `path`, readable by its owner only (it holds credentials,
/// if only the sandbox's).
pub fn write_sandbox_config(path: &Path, config: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(config.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_format_is_found_on_a_line_clap_refused() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(json_asked(
            args(&["--log-format", "json", "sync", "--bogus"]).into_iter()
        ));
        assert!(json_asked(
            args(&["sync", "--log-format=json", "--x"]).into_iter()
        ));
        assert!(!json_asked(
            args(&["--log-format", "pretty", "x"]).into_iter()
        ));
        assert!(!json_asked(args(&["--config", "json"]).into_iter()));
    }
}
