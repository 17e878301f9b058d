//! The Kounta-style CRM client and its wire models.
//!
//! Talks to the CRM only, and only through [`crate::http`]'s request path; knows nothing of
//! the store, the links or the sync (rotated OAuth tokens go to a [`TokenStore`], a trait the
//! store implements).
//!
//! - [`model`]: the wire records.
//! - [`decode`]: pure, tolerant decoders of the CRM's answers.
//! - [`auth`]: OAuth tokens and the [`TokenStore`] that keeps rotated ones.
//! - [`client`]: [`KountaClient`], one method per remote call.

pub mod auth;
pub mod client;
pub mod decode;
pub mod model;

pub use auth::{MemoryTokenStore, OAuthTokens, TokenStore, TokenStoreError};
pub use client::{KountaAuth, KountaClient, KountaListing, KountaOptions, ListingCut};

/// Errors of the CRM client: the shared taxonomy.
pub type KountaError = crate::http::ApiError;
