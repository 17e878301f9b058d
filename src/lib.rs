//! # farmsync
//!
//! Keeps the customers of a Kounta-style CRM and of FarmFlow in step, in both directions.
//!
//! ## Layout
//! From the command line down to the leaves: a module uses only modules listed after it
//! (`tests/it/layout.rs` checks it), so none reaches back to one that uses it.
//!
//! The command line and the commands:
//! - [`cli`]: the command line: parses arguments and calls the command; used by nothing.
//! - [`operator`]: what people see and decide: `history`, `conflicts`, `deletes`.
//! - [`capture`]: `check --capture`, each read endpoint's real answer saved with people and
//!   secrets replaced.
//! - [`commands`]: `sync`, `check`, `run`, `webhooks`, `demo` and `sandbox`, each put together
//!   from the settings (clients, engine, lock, request ledger).
//!
//! Cycles, and what is reported about them:
//! - [`daemon`]: `farmsync run` — the worker that runs every cycle, the schedules, signals,
//!   sd_notify.
//! - [`observe`]: what happens around every run: metrics recorded, pings, health judged.
//! - [`status`]: the health report behind `farmsync status`, read from the state DB.
//! - [`metrics`]: Prometheus metrics, served by the daemon and written to a textfile.
//! - [`alerts`]: healthchecks pings around sweeps, and one webhook post per change of health.
//! - [`webhook`]: the listener for Kounta's webhook deliveries, which stores them as hints.
//!
//! What the commands share:
//! - [`demo`]: `farmsync demo`, a small farm synced in the sandbox.
//! - [`ops`]: the command line's edge: usage errors and panics in the log format, the
//!   sandbox's config file.
//! - [`exit`]: DESIGN.md's exit codes and [`exit::CliError`], what every command returns.
//!
//! The sync:
//! - [`sync`]: the only module that decides what to write where: the pure plan, apply (which
//!   journals every write) and the run.
//! - [`config`]: settings — built-in defaults, a file, environment — strictly validated.
//! - [`policy`]: the user's choices that steer the sync (`[sync]`, `[fields]`).
//! - [`schedule`]: the cron expression, parsed as the scheduler parses it.
//! - [`store`]: the SQLite state store (links, journal, history, runs, conflicts, the deletion
//!   queue, tokens, hints, metrics, the request ledger); no SQL lives elsewhere.
//! - [`lock`]: the single-instance lock beside the state DB.
//! - [`customer`]: the canonical customer, field mapping and normalisation (pure).
//! - [`country`]: country spellings to ISO alpha-2 and back (pure).
//!
//! The two APIs, and the leaves:
//! - [`kounta`], [`farmflow`]: the two API clients, their wire models and decoders.
//! - [`http`]: the one request path both clients send through: retries, cancellation, the
//!   error taxonomy, counters, and reading answers the same way for both.
//! - [`ratelimit`]: the sliding-window rate limiter, and the ledger that shares its grants
//!   with every farmsync process on the state DB.
//! - [`telemetry`]: the tracing subscriber (pretty or JSON lines) and secret redaction.
//! - [`ids`]: identifier newtypes (`KountaId`, `FarmflowId`, `ReferenceId`) and [`ids::Api`],
//!   which names a side.
//!
//! Beside farmsync:
//! - [`sandbox`]: simulated CRM and FarmFlow APIs with fault injection, for tests and trials;
//!   it shares no code with the clients.

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
