//! The sync: policy, planning (pure), applying, and the run that ties them together.

pub mod policy;
