//! The sync: planning (pure), applying, and the run that ties them together.
//!
//! The only module that decides what to write where. It reads and writes both sides through
//! the clients and keeps its state in the store; it parses no config (it is handed
//! [`crate::config::Settings`] and [`policy::Policy`]) and logs no metric of its own.
//!
//! - [`plan`]: the rules, as one pure function from both sides and the links to actions.
//! - [`action`]: what a plan holds: actions, skip and block reasons, attention items.
//! - [`matching`]: linking new records (reference id, email, phone, name), pure.
//! - [`budget`]: which CRM records a run reads in full within the rate, pure.
//! - [`engine`]: one run — read, settle the journal, read the CRM on a budget, plan, apply.
//! - `run`: a run's options and report, and the clients and store its steps work through.
//! - `apply`: carries actions out, journalling every write.
//! - `recover`: settles writes an earlier run left unsettled, by lookup.
//! - [`policy`]: the user's choices, re-exported from [`crate::policy`].

pub mod action;
mod apply;
pub mod budget;
pub mod engine;
pub mod matching;
pub mod plan;
pub use crate::policy;
mod recover;
mod run;

#[cfg(test)]
pub(crate) mod testkit;
