//! Exit codes and the error every command returns: what to print, and which code to exit with.
//!
//! Owns DESIGN.md's exit codes. Depends on nothing but the config's error, so every command
//! module can return [`CliError`] without reaching back into [`crate::cli`], which prints it
//! and exits with its code.

use std::process::ExitCode;

use crate::config::ConfigError;

/// The exit codes of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything applied / healthy.
    Ok = 0,
    /// Some records failed (others applied) / unhealthy.
    Failed = 1,
    /// Configuration or usage error.
    Config = 2,
    /// Stopped by a safety guard.
    Guard = 3,
    /// Could not run: lock held, API unreachable, credentials refused.
    Unavailable = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// A command's failure: what to print, and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// The code to exit with.
    pub exit: Exit,
    /// What to print (one line, operator-facing).
    pub message: String,
}

impl CliError {
    /// A failure with the given exit code.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::new(Exit::Config, e.to_string())
    }
}
