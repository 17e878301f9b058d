//! The sync: policy, planning (pure), applying, and the run that ties them together.
//!
//! - [`plan`]: the rules, as one pure function from both sides and the links to actions.
//! - [`engine`]: one run — read, settle the journal, read the CRM on a budget, plan, apply.
//! - `apply`: carries actions out, journalling every write.
//! - `recover`: settles writes an earlier run left unsettled, by lookup.

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
