//! # farmsync
//!
//! Keeps the customers of a Kounta-style CRM and of FarmFlow in step, in both directions.
//!
//! ## Layout
//! - [`cli`]: the command line: parses arguments and calls the command; depended on by nothing.
//! - [`exit`]: DESIGN.md's exit codes and [`exit::CliError`], what every command returns.
//! - [`commands`]: the commands that talk to the APIs (`sync`, `check`).
//! - [`capture`]: `check --capture`, each read endpoint's real answer saved with people and secrets replaced.
//! - [`daemon`]: `farmsync run` — the worker that runs every cycle, the schedule, signals, sd_notify.
//! - [`webhook`]: the listener for Kounta's webhook deliveries.
//! - [`config`]: settings — built-in defaults, a file, environment — strictly validated.
//! - [`telemetry`]: the tracing subscriber (pretty or JSON lines) and secret redaction.
//! - [`demo`]: `farmsync demo`, a small farm synced in the sandbox.
//! - [`ops`]: the command line's edge: usage errors and panics in the log format, the
//!   sandbox's config file.
//! - [`ids`]: identifier newtypes (`KountaId`, `FarmflowId`, `ReferenceId`).
//! - [`customer`]: the canonical customer, field mapping and normalisation.
//! - [`country`]: country spellings to ISO alpha-2 and back.
//! - [`http`]: shared client plumbing: error taxonomy, retries, cancellation, counters.
//! - [`ratelimit`]: the sliding-window rate limiter, and the ledger that shares its grants
//!   with every farmsync process on the state DB.
//! - [`kounta`], [`farmflow`]: the two API clients and their wire models.
//! - [`store`]: the SQLite state store (links, journal, history, runs, conflicts, the deletion
//!   queue, tokens, hints).
//! - [`lock`]: the single-instance lock beside the state DB.
//! - [`metrics`]: Prometheus metrics, served by the daemon and written to a textfile.
//! - [`alerts`]: healthchecks pings around sweeps, and one webhook post per change of health.
//! - [`observe`]: what happens around every run: metrics recorded, pings, health judged.
//! - [`schedule`]: the cron expression, parsed as the scheduler parses it.
//! - [`status`]: the health report behind `farmsync status`.
//! - [`operator`]: what people see and decide: `history`, `conflicts`, `deletes`.
//! - [`policy`]: the user's choices that steer the sync (`[sync]`, `[fields]`).
//! - [`sync`]: the pure plan, apply and the run.
//! - [`sandbox`]: simulated CRM and FarmFlow APIs with fault injection, for tests and trials.

pub mod alerts;
pub mod capture;
pub mod cli;
pub mod commands;
pub mod config;
pub mod country;
pub mod customer;
pub mod daemon;
pub mod demo;
pub mod exit;
pub mod farmflow;
pub mod http;
pub mod ids;
pub mod kounta;
pub mod lock;
pub mod metrics;
pub mod observe;
pub mod operator;
pub mod ops;
pub mod policy;
pub mod ratelimit;
pub mod sandbox;
pub mod schedule;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod webhook;
