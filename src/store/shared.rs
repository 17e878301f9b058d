//! The store shared by async tasks: one connection behind a mutex, used off the reactor.

use std::sync::{Arc, Mutex, MutexGuard};

use secrecy::{ExposeSecret, SecretString};

use super::{Store, StoreError, StoredTokens};
use crate::kounta::auth::{OAuthTokens, TokenStore, TokenStoreError};

/// The name under which the CRM's OAuth tokens are stored.
pub const KOUNTA_TOKENS: &str = "kounta";

/// A cheaply cloned handle on the one [`Store`] of a process.
#[derive(Clone, Debug)]
pub struct SharedStore(Arc<Mutex<Store>>);

impl SharedStore {
    /// Shares `store`.
    pub fn new(store: Store) -> Self {
        SharedStore(Arc::new(Mutex::new(store)))
    }

    /// Runs `f` on the store in the blocking pool, so SQLite never stalls the reactor. No
    /// transaction outlives `f`, so none is ever held across an `.await`.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner)))
            .await
            .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
    }

    /// Runs `f` on the store on this thread (for synchronous callers and short calls).
    pub fn blocking<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut lock(&self.0))
    }
}

fn lock(m: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A panic while holding the lock cannot leave SQLite half-written (transactions roll back),
    // so the store stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TokenStore for SharedStore {
    fn load(&self) -> Result<Option<OAuthTokens>, TokenStoreError> {
        let stored = self
            .blocking(|s| s.tokens(KOUNTA_TOKENS))
            .map_err(|e| TokenStoreError::new(e.to_string()))?;
        Ok(stored.map(|t| OAuthTokens {
            access_token: SecretString::from(t.access_token),
            refresh_token: SecretString::from(t.refresh_token),
            expires_at: t.expires_at,
        }))
    }

    fn save(&self, tokens: &OAuthTokens) -> Result<(), TokenStoreError> {
        let stored = StoredTokens {
            access_token: tokens.access_token.expose_secret().to_owned(),
            refresh_token: tokens.refresh_token.expose_secret().to_owned(),
            expires_at: tokens.expires_at,
        };
        self.blocking(|s| s.save_tokens(KOUNTA_TOKENS, &stored))
            .map_err(|e| TokenStoreError::new(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let shared = SharedStore::new(Store::open(&path).unwrap());
        assert!(shared.load().unwrap().is_none());
        shared
            .save(&OAuthTokens {
                access_token: "acc".to_owned().into(),
                refresh_token: "ref-2".to_owned().into(),
                expires_at: Some(5),
            })
            .unwrap();
        drop(shared);
        let reopened = SharedStore::new(Store::open(&path).unwrap());
        let t = reopened.load().unwrap().unwrap();
        assert_eq!(t.refresh_token.expose_secret(), "ref-2");
        assert_eq!(t.expires_at, Some(5));
        let n = reopened.call(|s| Ok(s.links()?.len())).await.unwrap();
        assert_eq!(n, 0);
    }
}
