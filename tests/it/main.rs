//! farmsync's integration tests: one binary, one module per topic.

mod cli;
mod client_farmflow;
mod client_kounta;
mod client_limits;
mod client_oauth;
mod client_support;
mod client_wire;
mod commands;
mod proof_crash;
mod proof_input;
mod proof_security;
mod proof_soak;
mod proof_support;
mod sandbox_farmflow;
mod sandbox_faults;
mod sandbox_kounta;
mod sandbox_lifecycle;
mod sandbox_support;
mod sandbox_webhooks;
mod support;
mod sync_smoke;
