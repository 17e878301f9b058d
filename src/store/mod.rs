//! The state store: SQLite with versioned migrations — links, the write journal, runs,
//! conflicts, OAuth tokens, webhook hints, records needing attention, and the request ledger
//! the rate limiters share.
//!
//! No SQL lives outside this module, and this module never calls an API nor decides anything
//! about the sync: it keeps what the sync, the commands and the listener hand it. rusqlite is
//! blocking: callers on the async side keep calls short and run them off the reactor
//! (`spawn_blocking`).

mod decisions;
mod ledger;
mod model;
mod ops;
mod schema;
mod shared;
mod tokens;

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

pub use decisions::{
    ConflictDecision, DeleteDecision, HistoryEntry, HistoryFilter, PendingResolution, QueuedDelete,
};
pub use ledger::RequestLedger;
pub use model::{FieldChange, Link, LinkState, Parked};
pub use ops::{AnnouncedHealth, MetricLabels, MetricOp, MetricUpdate, MetricValue};
pub use shared::{KOUNTA_TOKENS, SharedStore};
pub use tokens::DbTokens;

use crate::customer::Customer;
use crate::ids::{FarmflowId, KountaId, ReferenceId};

/// A state store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// There is no state DB at the path (read-only open).
    #[error("farmsync has not run yet (no state at {0})")]
    Missing(PathBuf),
    /// The DB was written by a newer farmsync.
    #[error(
        "the state DB {path} has schema version {found}, newer than this farmsync understands ({supported}); upgrade farmsync or restore an older state DB"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The DB is older than this farmsync and must be migrated by a writer first.
    #[error(
        "the state DB {path} has schema version {found}, older than this farmsync's {supported}; run farmsync sync or restart the service to upgrade the state DB (commands that only read never change it)"
    )]
    NeedsMigration {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The file could not be created or its mode set.
    #[error("cannot create the state DB {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("state DB error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be read back.
    #[error("state DB holds a value farmsync cannot read ({0}); was it edited by hand?")]
    Corrupt(String),
}

/// Which system a journalled write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Kounta,
    Farmflow,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Kounta => "kounta",
            Side::Farmflow => "farmflow",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "kounta" => Ok(Side::Kounta),
            "farmflow" => Ok(Side::Farmflow),
            other => Err(StoreError::Corrupt(format!("journal side {other:?}"))),
        }
    }
}

/// A write about to be made, committed to the journal before the request is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIntent {
    pub run_id: String,
    pub side: Side,
    /// `create`, `update`, `delete`, `tag`, `unlink`.
    pub op: String,
    pub reference_id: Option<ReferenceId>,
    pub kounta_id: Option<KountaId>,
    pub farmflow_id: Option<FarmflowId>,
    /// The body sent, as JSON.
    pub payload: String,
    /// FarmFlow creates: the highest FarmFlow id seen before the create.
    pub watermark: Option<i64>,
    /// The kind of cycle that makes the write (`sweep`, `quick`), for history.
    pub cycle: String,
    /// The fields the write changes, before and after; history takes them once it is settled.
    pub changes: Vec<FieldChange>,
}

/// Whether a settled write happened, for history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The API took it (or a lookup found it).
    Applied,
    /// Its answer was lost and it was not looked up (an idempotent write re-planned from what
    /// the next run reads): it may or may not have happened.
    Unconfirmed,
    /// It failed, was refused, blocked or abandoned: nothing changed.
    No,
}

/// A journalled write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub id: i64,
    pub created_at: i64,
    pub settled_at: Option<i64>,
    pub outcome: Option<String>,
    pub intent: NewIntent,
}

/// One sync run as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub dry_run: bool,
    pub exit_code: Option<i32>,
    /// The run's counts, as JSON.
    pub summary: Option<serde_json::Value>,
}

/// A field both sides changed to different values, settled by `conflict_winner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictRecord {
    pub id: i64,
    pub run_id: String,
    pub created_at: i64,
    pub reference_id: String,
    pub field: String,
    pub kounta_value: String,
    pub farmflow_value: String,
    pub winner: String,
}

/// OAuth tokens as stored (the newest refresh token is the only one that works).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTokens")
            .field("access_token", &"[redacted]")
            .field("refresh_token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A webhook delivery kept as a hint to re-read one CRM customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hint {
    pub kounta_id: KountaId,
    pub topic: String,
    pub received_at: i64,
    pub deliveries: i64,
}

/// A record that needs a person: a skipped record, a `reference_id` collision, an unmappable country.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attention {
    pub kind: String,
    pub subject: String,
    pub message: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// The state DB.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Opened with [`Store::open_read_only`]: every write fails.
    read_only: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Store {
    /// Opens the state DB for writing, creating it (mode 0600) and migrating it as needed.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_private(path)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            tighten(Path::new(&side));
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
            read_only: false,
        };
        store.migrate()?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            tighten(Path::new(&side));
        }
        Ok(store)
    }

    /// A store that lives in memory only (a dry run with no state DB yet).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory()?;
        let mut store = Store {
            conn,
            path: PathBuf::from(":memory:"),
            read_only: false,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing state DB read-only, for the commands that only read it (`status`,
    /// `check`, `sync --dry-run`): creates nothing and never migrates. A DB older than this
    /// farmsync is [`StoreError::NeedsMigration`]: a writer (`sync`, `run`) upgrades it.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let store = Store {
            conn,
            path: path.to_owned(),
            read_only: true,
        };
        let found = store.schema_version()?;
        if found > schema::CURRENT_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found,
                supported: schema::CURRENT_VERSION,
            });
        }
        if found < schema::CURRENT_VERSION {
            return Err(StoreError::NeedsMigration {
                path: path.to_owned(),
                found,
                supported: schema::CURRENT_VERSION,
            });
        }
        Ok(store)
    }

    /// The DB's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this store was opened read-only ([`Store::open_read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether this store lives in memory only ([`Store::open_in_memory`]).
    pub fn is_in_memory(&self) -> bool {
        self.path == Path::new(":memory:")
    }

    /// The schema version recorded in the DB.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Creates a state DB at `path` as an older farmsync left it: migrated up to `version`
    /// only. For upgrade tests.
    #[doc(hidden)]
    pub fn create_at_version(path: &Path, version: i64) -> Result<(), StoreError> {
        create_private(path)?;
        let mut conn = Connection::open(path)?;
        for (index, sql) in schema::MIGRATIONS.iter().enumerate().take(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        if found > schema::CURRENT_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                supported: schema::CURRENT_VERSION,
            });
        }
        for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    // ----- links -----

    /// Every link, ordered by reference id.
    pub fn links(&self) -> Result<Vec<Link>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LINK_COLUMNS} FROM links ORDER BY reference_id"
        ))?;
        let rows = stmt.query_map([], read_link)?;
        rows.map(|r| r?).collect()
    }

    /// One link by its reference id.
    pub fn link(&self, reference_id: &ReferenceId) -> Result<Option<Link>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LINK_COLUMNS} FROM links WHERE reference_id = ?1"
        ))?;
        stmt.query_row([reference_id.as_str()], read_link)
            .optional()?
            .transpose()
    }

    /// Inserts or replaces a link.
    pub fn upsert_link(&self, link: &Link) -> Result<(), StoreError> {
        upsert_link(&self.conn, link)
    }

    /// Inserts or replaces several links in one transaction (one disk sync for all of them).
    pub fn upsert_links(&mut self, links: &[Link]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for link in links {
            upsert_link(&tx, link)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// How many links are in each state.
    pub fn link_counts(&self) -> Result<Vec<(LinkState, i64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM links GROUP BY state ORDER BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| {
            let (state, n) = r?;
            LinkState::parse(&state)
                .map(|s| (s, n))
                .ok_or_else(|| StoreError::Corrupt(format!("link state {state:?}")))
        })
        .collect()
    }

    // ----- journal -----

    /// Commits a write intent before the request is sent; returns its id.
    pub fn begin_intent(&self, intent: &NewIntent) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO journal (run_id, created_at, side, op, reference_id, kounta_id, \
             farmflow_id, payload, watermark, cycle, changes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                intent.run_id,
                now(),
                intent.side.as_str(),
                intent.op,
                intent.reference_id.as_ref().map(|r| r.as_str()),
                intent.kounta_id.map(|k| k.0),
                intent.farmflow_id.map(|f| f.0),
                intent.payload,
                intent.watermark,
                intent.cycle,
                serde_json::to_string(&intent.changes)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Settles an intent; with `link`, stores the link in the same transaction, so a crash can
    /// never leave a settled write without its link (or the other way round). A write that
    /// `written` says happened (or may have) goes into history in that transaction too.
    pub fn settle_intent(
        &mut self,
        id: i64,
        outcome: &str,
        link: Option<&Link>,
        written: Written,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE journal SET settled_at = ?2, outcome = ?3 WHERE id = ?1",
            params![id, now(), outcome],
        )?;
        if let Some(link) = link {
            upsert_link(&tx, link)?;
        }
        decisions::record_history(&tx, id, written, link)?;
        tx.commit()?;
        Ok(())
    }

    /// Settles a create that replaces an old link (a recreation): the old row becomes a
    /// tombstone without a CRM id, and the new row is stored, in one transaction.
    pub fn settle_intent_replacing(
        &mut self,
        id: i64,
        outcome: &str,
        old: &ReferenceId,
        link: &Link,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE journal SET settled_at = ?2, outcome = ?3 WHERE id = ?1",
            params![id, now(), outcome],
        )?;
        tx.execute(
            "UPDATE links SET state = 'tombstone', kounta_id = NULL WHERE reference_id = ?1",
            [old.as_str()],
        )?;
        upsert_link(&tx, link)?;
        // A deletion waiting on the replaced link (a rejected one, whose recreation this is)
        // is settled with it: no later run visits the old reference to take it off the queue.
        tx.execute(
            "DELETE FROM delete_queue WHERE reference_id = ?1",
            [old.as_str()],
        )?;
        decisions::record_history(&tx, id, Written::Applied, Some(link))?;
        tx.commit()?;
        Ok(())
    }

    /// Notes a failed write on a link: its error, and one more consecutive failure.
    pub fn record_link_failure(
        &self,
        reference_id: &ReferenceId,
        error: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE links SET last_error = ?2, consecutive_failures = consecutive_failures + 1 \
             WHERE reference_id = ?1",
            params![reference_id.as_str(), error],
        )?;
        Ok(())
    }

    /// Intents whose outcome is not known yet, oldest first.
    pub fn unsettled_intents(&self) -> Result<Vec<Intent>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, created_at, settled_at, outcome, run_id, side, op, reference_id, \
             kounta_id, farmflow_id, payload, watermark, cycle, changes FROM journal \
             WHERE settled_at IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<i64>>(8)?,
                r.get::<_, Option<i64>>(9)?,
                r.get::<_, String>(10)?,
                r.get::<_, Option<i64>>(11)?,
                r.get::<_, Option<String>>(12)?,
                r.get::<_, Option<String>>(13)?,
            ))
        })?;
        rows.map(|r| {
            let (
                id,
                created_at,
                settled_at,
                outcome,
                run_id,
                side,
                op,
                rid,
                kid,
                fid,
                payload,
                wm,
                cycle,
                changes,
            ) = r?;
            Ok(Intent {
                id,
                created_at,
                settled_at,
                outcome,
                intent: NewIntent {
                    run_id,
                    side: Side::parse(&side)?,
                    op,
                    reference_id: rid.as_deref().map(parse_reference).transpose()?,
                    kounta_id: kid.map(KountaId),
                    farmflow_id: fid.map(FarmflowId),
                    payload,
                    watermark: wm,
                    cycle: cycle.unwrap_or_else(|| "sweep".to_owned()),
                    changes: decisions::parse_changes(changes.as_deref())?,
                },
            })
        })
        .collect()
    }

    // ----- runs -----

    /// Records the start of a run.
    pub fn start_run(&self, run_id: &str, dry_run: bool) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO runs (run_id, started_at, dry_run) VALUES (?1, ?2, ?3)",
            params![run_id, now(), dry_run],
        )?;
        Ok(())
    }

    /// Records the end of a run with its exit code and counts.
    pub fn finish_run(
        &self,
        run_id: &str,
        exit_code: i32,
        summary: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE runs SET finished_at = ?2, exit_code = ?3, summary = ?4 WHERE run_id = ?1",
            params![run_id, now(), exit_code, summary.to_string()],
        )?;
        Ok(())
    }

    /// The most recent runs, newest first.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT run_id, started_at, finished_at, dry_run, exit_code, summary FROM runs \
             ORDER BY started_at DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], read_run)?;
        rows.map(|r| r?).collect()
    }

    /// The last finished run that was not a dry run.
    pub fn last_finished_run(&self) -> Result<Option<RunRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT run_id, started_at, finished_at, dry_run, exit_code, summary FROM runs \
             WHERE finished_at IS NOT NULL AND dry_run = 0 \
             ORDER BY finished_at DESC, rowid DESC LIMIT 1",
        )?;
        stmt.query_row([], read_run).optional()?.transpose()
    }

    // ----- conflicts -----

    /// Records a conflict settled by `conflict_winner`.
    pub fn record_conflict(
        &self,
        run_id: &str,
        reference_id: &ReferenceId,
        field: &str,
        kounta_value: &str,
        farmflow_value: &str,
        winner: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO conflicts (run_id, created_at, reference_id, field, kounta_value, \
             farmflow_value, winner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                run_id,
                now(),
                reference_id.as_str(),
                field,
                kounta_value,
                farmflow_value,
                winner
            ],
        )?;
        Ok(())
    }

    /// Conflicts nobody has acknowledged yet, newest first.
    pub fn open_conflicts(&self) -> Result<Vec<ConflictRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, run_id, created_at, reference_id, field, kounta_value, farmflow_value, \
             winner FROM conflicts WHERE acknowledged = 0 AND resolution IS NULL ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ConflictRecord {
                id: r.get(0)?,
                run_id: r.get(1)?,
                created_at: r.get(2)?,
                reference_id: r.get(3)?,
                field: r.get(4)?,
                kounta_value: r.get(5)?,
                farmflow_value: r.get(6)?,
                winner: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ----- tokens -----

    /// The newest OAuth tokens for `name` (e.g. `kounta`).
    pub fn tokens(&self, name: &str) -> Result<Option<StoredTokens>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT access_token, refresh_token, expires_at FROM tokens WHERE name = ?1",
                [name],
                |r| {
                    Ok(StoredTokens {
                        access_token: r.get(0)?,
                        refresh_token: r.get(1)?,
                        expires_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Durably replaces the OAuth tokens for `name`; committed when this returns.
    pub fn save_tokens(&self, name: &str, tokens: &StoredTokens) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO tokens (name, access_token, refresh_token, expires_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET \
             access_token = excluded.access_token, refresh_token = excluded.refresh_token, \
             expires_at = excluded.expires_at, updated_at = excluded.updated_at",
            params![
                name,
                tokens.access_token,
                tokens.refresh_token,
                tokens.expires_at,
                now()
            ],
        )?;
        Ok(())
    }

    // ----- webhook hints -----

    /// Records (or refreshes) a hint to re-read one CRM customer.
    pub fn add_hint(&self, kounta_id: KountaId, topic: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO hints (kounta_id, topic, received_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (kounta_id) DO UPDATE SET topic = excluded.topic, \
             received_at = excluded.received_at, deliveries = deliveries + 1",
            params![kounta_id.0, topic, now()],
        )?;
        Ok(())
    }

    /// Pending hints, oldest first.
    pub fn hints(&self) -> Result<Vec<Hint>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT kounta_id, topic, received_at, deliveries FROM hints ORDER BY received_at, kounta_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Hint {
                kounta_id: KountaId(r.get(0)?),
                topic: r.get(1)?,
                received_at: r.get(2)?,
                deliveries: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drops hints that were acted on: each only if no delivery came since it was read (its
    /// delivery count is unchanged), so a delivery that arrives after the run looked is never
    /// lost, whatever the clock's resolution.
    pub fn clear_hints(&self, seen: &[Hint]) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM hints WHERE kounta_id = ?1 AND deliveries = ?2")?;
        for hint in seen {
            stmt.execute(params![hint.kounta_id.0, hint.deliveries])?;
        }
        Ok(())
    }

    // ----- attention -----

    /// Records (or refreshes) something that needs a person. Returns true when it is new.
    pub fn note_attention(
        &self,
        kind: &str,
        subject: &str,
        message: &str,
    ) -> Result<bool, StoreError> {
        let t = now();
        let existed: bool = self
            .conn
            .query_row(
                "SELECT 1 FROM attention WHERE kind = ?1 AND subject = ?2",
                [kind, subject],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        self.conn.execute(
            "INSERT INTO attention (kind, subject, message, first_seen, last_seen) \
             VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (kind, subject) DO UPDATE SET \
             message = excluded.message, last_seen = excluded.last_seen",
            params![kind, subject, message, t],
        )?;
        Ok(!existed)
    }

    /// Forgets every attention item of `kind` not in `still_present` (it was dealt with).
    pub fn retain_attention(&self, kind: &str, still_present: &[String]) -> Result<(), StoreError> {
        let existing: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT subject FROM attention WHERE kind = ?1")?;
            stmt.query_map([kind], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for subject in existing {
            if !still_present.contains(&subject) {
                self.conn.execute(
                    "DELETE FROM attention WHERE kind = ?1 AND subject = ?2",
                    [kind, subject.as_str()],
                )?;
            }
        }
        Ok(())
    }

    /// Everything that needs a person, by kind then subject.
    pub fn attention(&self) -> Result<Vec<Attention>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, subject, message, first_seen, last_seen FROM attention ORDER BY kind, subject",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Attention {
                kind: r.get(0)?,
                subject: r.get(1)?,
                message: r.get(2)?,
                first_seen: r.get(3)?,
                last_seen: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const LINK_COLUMNS: &str = "reference_id, farmflow_id, kounta_id, kounta_snapshot, \
    farmflow_snapshot, kounta_verified, state, last_verified_at, last_synced_at, last_error, \
    consecutive_failures, parked";

fn read_link(r: &Row<'_>) -> rusqlite::Result<Result<Link, StoreError>> {
    let reference_id: String = r.get(0)?;
    let kounta_snapshot: Option<String> = r.get(3)?;
    let farmflow_snapshot: Option<String> = r.get(4)?;
    let state: String = r.get(6)?;
    let parked: Option<String> = r.get(11)?;
    let link = (|| {
        Ok(Link {
            reference_id: parse_reference(&reference_id)?,
            farmflow_id: FarmflowId(r.get(1)?),
            kounta_id: r.get::<_, Option<i64>>(2)?.map(KountaId),
            kounta_snapshot: parse_snapshot(kounta_snapshot)?,
            farmflow_snapshot: parse_snapshot(farmflow_snapshot)?,
            kounta_verified: r.get(5)?,
            state: LinkState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("link state {state:?}")))?,
            last_verified_at: r.get(7)?,
            last_synced_at: r.get(8)?,
            last_error: r.get(9)?,
            consecutive_failures: r.get(10)?,
            parked: parked
                .map(|p| {
                    Parked::parse(&p).ok_or_else(|| StoreError::Corrupt(format!("parked {p:?}")))
                })
                .transpose()?,
        })
    })();
    match link {
        Err(StoreError::Sqlite(e)) => Err(e),
        other => Ok(other),
    }
}

fn read_run(r: &Row<'_>) -> rusqlite::Result<Result<RunRecord, StoreError>> {
    let summary: Option<String> = r.get(5)?;
    let summary = match summary.map(|s| serde_json::from_str(&s)).transpose() {
        Ok(s) => s,
        Err(e) => return Ok(Err(StoreError::Corrupt(format!("run summary: {e}")))),
    };
    Ok(Ok(RunRecord {
        run_id: r.get(0)?,
        started_at: r.get(1)?,
        finished_at: r.get(2)?,
        dry_run: r.get(3)?,
        exit_code: r.get(4)?,
        summary,
    }))
}

fn parse_reference(text: &str) -> Result<ReferenceId, StoreError> {
    ReferenceId::parse(text).ok_or_else(|| StoreError::Corrupt(format!("reference id {text:?}")))
}

fn parse_snapshot(text: Option<String>) -> Result<Option<Customer>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("snapshot: {e}")))
    })
    .transpose()
}

fn upsert_link(conn: &Connection, link: &Link) -> Result<(), StoreError> {
    let snapshot = |c: &Option<Customer>| {
        c.as_ref()
            .map(|c| serde_json::to_string(c).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    };
    conn.prepare_cached(
        "INSERT INTO links (reference_id, farmflow_id, kounta_id, kounta_snapshot, \
         farmflow_snapshot, kounta_verified, state, last_verified_at, last_synced_at, last_error, \
         consecutive_failures, parked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (reference_id) DO UPDATE SET farmflow_id = excluded.farmflow_id, \
         kounta_id = excluded.kounta_id, kounta_snapshot = excluded.kounta_snapshot, \
         farmflow_snapshot = excluded.farmflow_snapshot, kounta_verified = excluded.kounta_verified, \
         state = excluded.state, last_verified_at = excluded.last_verified_at, \
         last_synced_at = excluded.last_synced_at, last_error = excluded.last_error, \
         consecutive_failures = excluded.consecutive_failures, parked = excluded.parked",
    )?
    .execute(params![
        link.reference_id.as_str(),
        link.farmflow_id.0,
        link.kounta_id.map(|k| k.0),
        snapshot(&link.kounta_snapshot)?,
        snapshot(&link.farmflow_snapshot)?,
        link.kounta_verified,
        link.state.as_str(),
        link.last_verified_at,
        link.last_synced_at,
        link.last_error,
        link.consecutive_failures,
        link.parked.map(Parked::as_str),
    ])?;
    Ok(())
}

/// Creates the file with mode 0600 if it does not exist, and tightens an existing one.
fn create_private(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Create {
            path: path.to_owned(),
            source,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::Create {
            path: path.to_owned(),
            source,
        })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        StoreError::Create {
            path: path.to_owned(),
            source,
        }
    })
}

/// SQLite creates `-wal` and `-shm` with the umask's mode; they hold the same data, so keep them private.
fn tighten(path: &Path) {
    if path.exists() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

#[cfg(test)]
mod tests;
