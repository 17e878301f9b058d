//! # farmsync
//!
//! Keeps the customers of a Kounta-style CRM and of FarmFlow in step, in both directions.
//!
//! ## Layout
//! - [`ids`]: identifier newtypes (`KountaId`, `FarmflowId`, `ReferenceId`).
//! - [`customer`]: the canonical customer, field mapping and normalisation.
//! - [`http`]: shared client plumbing: error taxonomy, rate limiter, retries, counters.
//! - [`kounta`], [`farmflow`]: the two API clients and their wire models.
//! - [`store`]: the SQLite state store.
//! - [`sync`]: policy, the pure plan, apply and the run.
//! - [`sandbox`]: simulated CRM and FarmFlow APIs with fault injection, for tests and trials.

pub mod customer;
pub mod farmflow;
pub mod http;
pub mod ids;
pub mod kounta;
pub mod sandbox;
pub mod store;
pub mod sync;
