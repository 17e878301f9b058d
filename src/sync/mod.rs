//! The sync: policy, planning (pure), applying, and the run that ties them together.

pub mod action;
pub mod budget;
pub mod matching;
pub mod plan;
pub mod policy;

#[cfg(test)]
pub(crate) mod testkit;
