//! The Kounta-style CRM client and its wire models.
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
