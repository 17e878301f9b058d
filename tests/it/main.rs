//! The integration tests, in one binary.

mod sandbox_farmflow;
mod sandbox_faults;
mod sandbox_kounta;
mod sandbox_lifecycle;
mod sandbox_support;
mod sandbox_webhooks;
