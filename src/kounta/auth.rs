//! OAuth tokens and where they are kept.
//!
//! Kounta rotates refresh tokens: each refresh answers a new one and the old one stops working.
//! A rotated token therefore goes to durable storage (a [`TokenStore`], implemented by the state
//! store) *before* the new access token is used; a restart then always finds a token that works.

use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::http::{DecodeError, lenient};

/// A set of OAuth tokens.
#[derive(Debug, Clone)]
pub struct OAuthTokens {
    /// The bearer token sent with each request.
    pub access_token: SecretString,
    /// The token that buys the next access token (rotated on each refresh).
    pub refresh_token: SecretString,
    /// When the access token expires, in epoch seconds, if Kounta said.
    pub expires_at: Option<i64>,
}

impl OAuthTokens {
    /// Whether the access token is present and will not expire within `margin_secs` of `now`.
    pub fn access_usable(&self, now: i64, margin_secs: i64) -> bool {
        !self.access_token.expose_secret().is_empty()
            && self
                .expires_at
                .is_none_or(|at| at > now.saturating_add(margin_secs))
    }
}

/// A failure of the token store (the state database).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TokenStoreError {
    /// What went wrong.
    pub message: String,
}

impl TokenStoreError {
    /// An error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        TokenStoreError {
            message: message.into(),
        }
    }
}

/// Durable storage of the newest OAuth tokens, implemented by the state store.
pub trait TokenStore: Send + Sync {
    /// The newest tokens, if any were stored.
    fn load(&self) -> Result<Option<OAuthTokens>, TokenStoreError>;
    /// Stores `tokens`; when this returns `Ok` they survive a crash.
    fn save(&self, tokens: &OAuthTokens) -> Result<(), TokenStoreError>;
}

/// Tokens kept in memory only: for basic auth (which has none) and for tests. With OAuth a
/// restart loses a rotated token, so the daemon uses the state store instead.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    tokens: Mutex<Option<OAuthTokens>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TokenStore for MemoryTokenStore {
    fn load(&self) -> Result<Option<OAuthTokens>, TokenStoreError> {
        Ok(self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    fn save(&self, tokens: &OAuthTokens) -> Result<(), TokenStoreError> {
        *self.tokens.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokens.clone());
        Ok(())
    }
}

/// What a token refresh answered.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The new access token.
    pub access_token: SecretString,
    /// The rotated refresh token, when Kounta sent one (else the old one stays valid).
    pub refresh_token: Option<SecretString>,
    /// Lifetime of the access token in seconds, if given.
    pub expires_in: Option<i64>,
}

/// Decodes the answer to `POST {base}/token`. The error never quotes the body: it holds tokens.
pub fn token_grant(body: &[u8]) -> Result<TokenGrant, DecodeError> {
    let withheld = |reason: &str| DecodeError {
        reason: reason.to_owned(),
        excerpt: format!("[token answer of {} bytes withheld]", body.len()),
    };
    let value: Value =
        serde_json::from_slice(body).map_err(|_| withheld("token answer is not JSON"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| withheld("token answer is not an object"))?;
    let token = |key: &str| match obj.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(SecretString::from(s.trim())),
        _ => None,
    };
    let access_token =
        token("access_token").ok_or_else(|| withheld("token answer has no access_token"))?;
    let expires_in = match obj.get("expires_in") {
        None | Some(Value::Null) => None,
        some => lenient::text(some)
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| s.min(1e9) as i64),
    };
    Ok(TokenGrant {
        access_token,
        refresh_token: token("refresh_token"),
        expires_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_a_grant() {
        let g = token_grant(
            br#"{"access_token":"a1","refresh_token":"r2","expires_in":3600,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(g.access_token.expose_secret(), "a1");
        assert_eq!(g.refresh_token.unwrap().expose_secret(), "r2");
        assert_eq!(g.expires_in, Some(3600));
        let g = token_grant(br#"{"access_token":"a1","expires_in":"60"}"#).unwrap();
        assert!(g.refresh_token.is_none());
        assert_eq!(g.expires_in, Some(60));
    }

    #[test]
    fn a_bad_grant_never_quotes_the_body() {
        let err = token_grant(br#"{"refresh_token":"secret-r2"}"#).unwrap_err();
        assert!(!err.excerpt.contains("secret-r2"), "{}", err.excerpt);
        assert!(err.reason.contains("access_token"));
        let err = token_grant(b"{\"access_token\": \"secret-a").unwrap_err();
        assert!(!err.excerpt.contains("secret"), "{}", err.excerpt);
    }

    #[test]
    fn usable_access_token() {
        let t = OAuthTokens {
            access_token: SecretString::from("a"),
            refresh_token: SecretString::from("r"),
            expires_at: Some(1000),
        };
        assert!(t.access_usable(900, 60));
        assert!(!t.access_usable(950, 60));
        let t = OAuthTokens {
            access_token: SecretString::from(""),
            expires_at: None,
            ..t
        };
        assert!(!t.access_usable(0, 0));
    }

    #[test]
    fn memory_store_round_trips() {
        let store = MemoryTokenStore::new();
        assert!(store.load().unwrap().is_none());
        store
            .save(&OAuthTokens {
                access_token: SecretString::from("a"),
                refresh_token: SecretString::from("r"),
                expires_at: None,
            })
            .unwrap();
        assert_eq!(
            store.load().unwrap().unwrap().refresh_token.expose_secret(),
            "r"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Err(e) = token_grant(&bytes) {
                prop_assert!(e.excerpt.starts_with("[token answer"));
            }
        }
    }
}
