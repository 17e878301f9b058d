//! The OAuth tokens of the state DB for the commands that otherwise only read it (`check`,
//! `sync --dry-run`).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use secrecy::{ExposeSecret, SecretString};

use super::{KOUNTA_TOKENS, Store, StoreError, StoredTokens, schema};
use crate::kounta::auth::{OAuthTokens, TokenStore, TokenStoreError};

/// The CRM's OAuth tokens in the state DB at a path, for a command that opens that DB
/// read-only. Tokens are read through a read-only connection. A token Kounta rotated during the
/// command is the one thing such a command writes (DESIGN.md: losing it would lock farmsync
/// out): it is saved through a connection opened for that write alone, which never migrates an
/// existing DB, and creates a new one only when there is none yet.
#[derive(Debug, Clone)]
pub struct DbTokens {
    path: PathBuf,
}

impl DbTokens {
    /// The tokens of the state DB at `path` (which need not exist yet).
    pub fn new(path: &Path) -> Self {
        DbTokens {
            path: path.to_owned(),
        }
    }
}

impl TokenStore for DbTokens {
    fn load(&self) -> Result<Option<OAuthTokens>, TokenStoreError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let stored = Store::open_read_only(&self.path)
            .and_then(|s| s.tokens(KOUNTA_TOKENS))
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
        let store = if self.path.exists() {
            open_for_tokens(&self.path)
        } else {
            // No state yet: a new DB, created as a writer creates it.
            Store::open(&self.path)
        };
        store
            .and_then(|s| s.save_tokens(KOUNTA_TOKENS, &stored))
            .map_err(|e| TokenStoreError::new(e.to_string()))
    }
}

/// An existing state DB opened for writing its tokens only: never created, never migrated.
fn open_for_tokens(path: &Path) -> Result<Store, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Durable when `save` returns, as with the writers' connection.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let store = Store {
        conn,
        path: path.to_owned(),
        read_only: false,
    };
    let found = store.schema_version()?;
    if found != schema::CURRENT_VERSION {
        let (path, supported) = (path.to_owned(), schema::CURRENT_VERSION);
        return Err(if found > supported {
            StoreError::TooNew {
                path,
                found,
                supported,
            }
        } else {
            StoreError::NeedsMigration {
                path,
                found,
                supported,
            }
        });
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(refresh: &str) -> OAuthTokens {
        OAuthTokens {
            access_token: SecretString::from("access-1"),
            refresh_token: SecretString::from(refresh.to_owned()),
            expires_at: Some(9),
        }
    }

    #[test]
    fn a_rotated_token_is_kept_without_migrating_or_touching_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let db = DbTokens::new(&path);
        assert!(db.load().unwrap().is_none());
        assert!(!path.exists(), "loading creates nothing");
        // No DB yet: the rotated token must survive, so the first save creates one.
        db.save(&tokens("refresh-2")).unwrap();
        assert_eq!(
            db.load().unwrap().unwrap().refresh_token.expose_secret(),
            "refresh-2"
        );
        db.save(&tokens("refresh-3")).unwrap();
        let stored = Store::open_read_only(&path).unwrap();
        assert_eq!(
            stored.tokens(KOUNTA_TOKENS).unwrap().unwrap().refresh_token,
            "refresh-3"
        );
        assert_eq!(stored.recent_runs(10).unwrap().len(), 0);
        drop(stored);

        // An older DB is left for a writer to migrate: the save says so and changes nothing.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        let err = db.save(&tokens("refresh-4")).unwrap_err().to_string();
        assert!(err.contains("run farmsync sync"), "{err}");
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1);
    }
}
