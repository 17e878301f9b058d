//! The FarmFlow client and its wire models.
//!
//! Talks to FarmFlow only, and only through [`crate::http`]'s request path; knows nothing of
//! the store, the links or the sync.
//!
//! - [`model`]: the wire records.
//! - [`decode`]: pure, envelope-tolerant decoders of FarmFlow's answers.
//! - [`client`]: [`FarmflowClient`], one method per remote call.

pub mod client;
pub mod decode;
pub mod model;

pub use client::{DeleteOutcome, FarmflowClient, FarmflowOptions};

/// Errors of the FarmFlow client: the shared taxonomy.
pub type FarmflowError = crate::http::ApiError;
