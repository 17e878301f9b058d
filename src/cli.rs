//! The command line: parses arguments, runs a command, maps its outcome to an exit code.
//!
//! Owns the grammar (clap) and the dispatch, nothing else: each command's work, and the
//! argument enums a command alone reads, live in the command's module. Nothing depends on this
//! module, so a command can be moved or tested without it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::WebhooksAction;
use crate::config::Settings;
use crate::exit::{CliError, Exit};
use crate::operator::{ConflictsAction, DeletesAction};
use crate::telemetry::{self, LogFormat};

/// farmsync keeps the customers of a Kounta-style point-of-sale CRM and of FarmFlow in step,
/// in both directions, without losing, duplicating or wrongly deleting anyone.
#[derive(Debug, Parser)]
#[command(name = "farmsync", version, about, long_about = None)]
pub struct Cli {
    /// A TOML config file, layered over the built-in defaults (then FARMSYNC__SECTION__KEY variables).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format: human text, or one JSON object a line (the default under systemd).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

/// farmsync's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reconcile both sides once, then exit.
    ///
    /// Exit codes: 0 all applied (blocked deletes and skipped records are reported, not
    /// failed) · 1 some records failed, others applied · 2 config or usage error · 3 stopped by
    /// the safety guard · 4 could not run (lock held, an API unreachable, credentials refused).
    Sync {
        /// Print the plan and write nothing, remote or local (a rotated OAuth token is still
        /// stored, since losing it would lock farmsync out). Exits 3 when a real run would.
        #[arg(long)]
        dry_run: bool,
        /// Lift the safety guard that stops a run planning to delete more than
        /// `sync.max_delete_fraction` of the links, or facing an empty list.
        #[arg(long)]
        allow_mass_delete: bool,
    },
    /// Run a small farm through farmsync in a sandbox: sync, staff edits, sync again, report.
    ///
    /// Starts both simulated APIs in-process with sample data and a throw-away state DB;
    /// touches nothing outside it. Needs no config.
    Demo,
    /// Serve the two simulated APIs on localhost for manual trials (until Ctrl-C).
    ///
    /// Prints their URLs and credentials, and a complete farmsync config for them to save as a
    /// file (or writes it with --write-config), to try farmsync by hand.
    Sandbox {
        /// Port for the simulated CRM (0: any free port).
        #[arg(long, default_value_t = 0)]
        kounta_port: u16,
        /// Port for the simulated FarmFlow (0: any free port).
        #[arg(long, default_value_t = 0)]
        farmflow_port: u16,
        /// Seed the fakes from this JSON file instead of the built-in sample farm.
        #[arg(long, value_name = "FILE")]
        seed_data: Option<PathBuf>,
        /// Write the farmsync config for the sandbox to this file instead of printing it
        /// (never over a file it did not write).
        #[arg(long, value_name = "PATH")]
        write_config: Option<PathBuf>,
    },
    /// Validate the config, then reach both APIs read-only and say exactly what is wrong.
    ///
    /// Exit codes: 0 both APIs answered · 2 config error · 4 an API unreachable or refusing the
    /// credentials.
    Check {
        /// Also save what each read endpoint answers (status, headers, body) into DIR, with
        /// emails, phones, names, street addresses, free text and secrets replaced by
        /// placeholders, to check farmsync's assumptions against a live account and share them.
        #[arg(long, value_name = "DIR")]
        capture: Option<PathBuf>,
    },
    /// Report the last runs, link counts, blocked deletes, conflicts and records needing attention.
    ///
    /// Reads the state DB without taking the lock, so it works while the daemon runs. Exits 0
    /// when healthy, 1 when the last run failed or none finished within 3 schedule periods —
    /// usable directly as a monitoring check.
    Status {
        /// Print the report as one JSON object (the shape is documented in the README).
        #[arg(long)]
        json: bool,
    },
    /// The daemon: sync at once, then on `[schedule] cron`; serve webhooks if enabled.
    ///
    /// Holds the single-instance lock for its whole life. SIGTERM or SIGINT stops it cleanly:
    /// the write in flight finishes and is settled, then it exits 0 (a second signal exits at
    /// once). Under systemd it reports READY, STATUS, WATCHDOG and STOPPING (Type=notify).
    Run,
    /// Manage farmsync's webhook registrations on the CRM (customers/created|updated|deleted).
    ///
    /// Exit codes: 0 ok · 2 config error (or `register` with webhooks.enabled = false) · 4 the
    /// CRM unreachable or refusing the credentials.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// Every write farmsync made, newest first: per field, the value before → after.
    ///
    /// Reads the state DB read-only, without the lock (works beside the daemon). History is
    /// kept `[history] keep_days` (default 90). Emails and phones are shown here, at the
    /// terminal; the logs never carry them at info. Exit codes: 0 · 2 bad input or config.
    History {
        /// Only this customer: its link (`farmflow:<id>`, or just the FarmFlow id) or `crm:<id>`.
        #[arg(value_name = "REF")]
        reference: Option<String>,
        /// Only writes since WHEN: RFC 3339, a date (2026-12-01), a date and time
        /// ("2026-12-01 14:30"), or a span back from now (90m, 12h, 7d, 2w).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most N writes.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print a JSON array (the shape is documented in the README).
        #[arg(long)]
        json: bool,
    },
    /// Open conflicts (a field both sides changed differently) with both values; settle one.
    ///
    /// `conflict_winner` already kept one value when the conflict was seen; `resolve --take`
    /// makes the other choice stick (or confirms this one), `--dismiss` closes it as is.
    /// Exit codes: 0 · 2 config, or no such open conflict.
    Conflicts {
        #[command(subcommand)]
        action: Option<ConflictsAction>,
        /// Print a JSON array (the shape is documented in the README).
        #[arg(long, global = true)]
        json: bool,
    },
    /// Deletions waiting for a person (`[sync] deletes = "approve"`); approve or reject them.
    ///
    /// Approving applies the deletion at the next cycle; rejecting recreates the deleted side's
    /// customer from the other side. A waiting deletion whose record reappears leaves the queue
    /// by itself. Exit codes: 0 · 2 config, or no such waiting deletion.
    Deletes {
        #[command(subcommand)]
        action: Option<DeletesAction>,
        /// Print a JSON array (the shape is documented in the README).
        #[arg(long, global = true)]
        json: bool,
    },
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return crate::ops::usage_error(e),
    };
    let format = LogFormat::resolve(cli.log_format);
    crate::ops::json_panics(format);
    match run(cli, format) {
        Ok(exit) => exit.into(),
        Err(e) => {
            // The last line, in the log format: under systemd one more JSON object.
            telemetry::command_failed(format, &e.message, e.exit as u8);
            e.exit.into()
        }
    }
}

fn load_settings(cli: &Cli) -> Result<Settings, CliError> {
    Ok(Settings::load(cli.config.as_deref())?)
}

/// Every secret in the settings, for the log redactor.
fn secrets_of(settings: &Settings) -> Vec<String> {
    use secrecy::ExposeSecret;
    [
        &settings.kounta.client_secret,
        &settings.kounta.refresh_token,
        &settings.farmflow.api_key,
        &settings.webhooks.signature_token,
        &settings.webhooks.shared_secret,
    ]
    .into_iter()
    .chain(&settings.alerts.healthcheck_url)
    .chain(&settings.alerts.webhook_url)
    .map(|s| s.expose_secret().to_owned())
    .collect()
}

fn run(cli: Cli, format: LogFormat) -> Result<Exit, CliError> {
    match &cli.command {
        Command::Demo => return crate::commands::demo(format),
        Command::Sandbox {
            kounta_port,
            farmflow_port,
            seed_data,
            write_config,
        } => {
            return crate::commands::sandbox(
                *kounta_port,
                *farmflow_port,
                seed_data.as_deref(),
                write_config.as_deref(),
                format,
            );
        }
        _ => {}
    }
    let settings = load_settings(&cli)?;
    telemetry::init(format, &settings.log.level, secrets_of(&settings));
    tracing::debug!(config = ?cli.config, "config.loaded");
    match cli.command {
        Command::Status { json } => status(&settings, json),
        Command::Sync {
            dry_run,
            allow_mass_delete,
        } => crate::commands::sync(&settings, dry_run, allow_mass_delete, format),
        Command::Check { capture: None } => crate::commands::check(&settings),
        Command::Check { capture: Some(dir) } => crate::capture::run(&settings, &dir),
        Command::Run => crate::commands::run(&settings),
        Command::Webhooks { action } => crate::commands::webhooks(&settings, action),
        Command::History {
            reference,
            since,
            limit,
            json,
        } => crate::operator::history(
            &settings,
            reference.as_deref(),
            since.as_deref(),
            limit,
            json,
        ),
        Command::Conflicts { action, json } => {
            crate::operator::conflicts(&settings, action.as_ref(), json)
        }
        Command::Deletes { action, json } => {
            crate::operator::deletes(&settings, action.as_ref(), json)
        }
        Command::Demo | Command::Sandbox { .. } => Ok(Exit::Ok), // handled above
    }
}

fn status(settings: &Settings, json: bool) -> Result<Exit, CliError> {
    use crate::store::StoreError;
    let report = match crate::status::report(settings, chrono::Local::now()) {
        Ok(r) => r,
        Err(e @ StoreError::Missing(_)) => return Err(CliError::new(Exit::Failed, e.to_string())),
        Err(e @ (StoreError::TooNew { .. } | StoreError::NeedsMigration { .. })) => {
            return Err(CliError::new(Exit::Config, e.to_string()));
        }
        Err(e) => return Err(CliError::new(Exit::Failed, e.to_string())),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
    } else {
        print!("{}", report.render_text());
    }
    Ok(if report.healthy {
        Exit::Ok
    } else {
        Exit::Failed
    })
}
