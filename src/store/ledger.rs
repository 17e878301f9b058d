//! The request ledger in the state DB (table `request_grants`): what every farmsync process on
//! it was granted of each API's rate, so the limit holds across processes
//! ([`crate::ratelimit`] explains the leases).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::StoreError;
use crate::http::Api;
use crate::ratelimit::{GrantLedger, LedgerAnswer, LedgerError, LedgerRequest};

/// Rows are kept at least this long, whatever window the reader uses.
const KEEP_MS: i64 = 120_000;

/// The state DB's request ledger, on a connection of its own: a limiter waits for neither the
/// run's store calls nor their disk syncs.
pub struct RequestLedger {
    conn: Mutex<Connection>,
    /// Opened read-only ([`RequestLedger::open_read_only`]): reads the others' grants, never
    /// records, settles or prunes any.
    read_only: bool,
}

impl std::fmt::Debug for RequestLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLedger").finish_non_exhaustive()
    }
}

impl RequestLedger {
    /// Opens the ledger of an existing, migrated state DB; creates nothing.
    pub fn open(path: &Path) -> Result<RequestLedger, StoreError> {
        Self::open_with(path, false)
    }

    /// Opens the ledger of an existing state DB read-only, for a command that only reads the
    /// state DB (`check`, `sync --dry-run`): it counts every other process's requests but
    /// records none of its own, so the others do not see its few; creates nothing.
    pub fn open_read_only(path: &Path) -> Result<RequestLedger, StoreError> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, read_only: bool) -> Result<RequestLedger, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        let mode = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        };
        let conn = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        if !read_only {
            // A grant lost to a power cut is a minute old by the time the host is back: no
            // need to sync the disk for each one.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let has_table: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'request_grants')",
            [],
            |r| r.get(0),
        )?;
        if !has_table {
            return Err(StoreError::NeedsMigration {
                path: path.to_owned(),
                found: conn.pragma_query_value(None, "user_version", |r| r.get(0))?,
                supported: super::schema::CURRENT_VERSION,
            });
        }
        Ok(RequestLedger {
            conn: Mutex::new(conn),
            read_only,
        })
    }

    fn exchange_in(
        &self,
        request: &LedgerRequest,
        lease_size: &dyn Fn(u64) -> u32,
    ) -> Result<LedgerAnswer, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let api = api_name(request.api);
        // Read-only: the exchange reads and takes a lease that is recorded nowhere (row 0),
        // exactly as a limiter that is not recording asks.
        let request = &LedgerRequest {
            record: request.record && !self.read_only,
            ..*request
        };
        // Immediate: the read and the lease it leads to are one step for every other process.
        let behavior = if request.record {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = conn.transaction_with_behavior(behavior)?;
        if request.record {
            if let Some((row, used)) = request.settle {
                if used == 0 {
                    tx.execute(
                        "DELETE FROM request_grants WHERE id = ?1 AND holder = ?2",
                        params![row, request.holder],
                    )?;
                } else {
                    tx.execute(
                        "UPDATE request_grants SET n = ?3 WHERE id = ?1 AND holder = ?2",
                        params![row, request.holder, used],
                    )?;
                }
            }
            let keep = request.window_ms.saturating_mul(2).max(KEEP_MS);
            tx.execute(
                "DELETE FROM request_grants WHERE api = ?1 AND at_ms <= ?2",
                params![api, request.now_ms.saturating_sub(keep)],
            )?;
        }
        let others: Vec<(i64, u32)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT at_ms, n FROM request_grants \
                 WHERE api = ?1 AND holder <> ?2 AND at_ms > ?3 ORDER BY at_ms",
            )?;
            let rows = stmt.query_map(
                params![
                    api,
                    request.holder,
                    request.now_ms.saturating_sub(request.window_ms)
                ],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u32>(1)?)),
            )?;
            rows.collect::<Result<_, _>>()?
        };
        let mut lease = None;
        if let Some(until) = request.lease_until_ms {
            let total = others.iter().map(|(_, n)| u64::from(*n)).sum();
            let n = lease_size(total);
            if n > 0 {
                let row = if request.record {
                    tx.execute(
                        "INSERT INTO request_grants (api, holder, at_ms, n) VALUES (?1, ?2, ?3, ?4)",
                        params![api, request.holder, until, n],
                    )?;
                    tx.last_insert_rowid()
                } else {
                    0
                };
                lease = Some((row, n));
            }
        }
        tx.commit()?;
        Ok(LedgerAnswer { others, lease })
    }
}

impl GrantLedger for RequestLedger {
    fn exchange(
        &self,
        request: &LedgerRequest,
        lease_size: &dyn Fn(u64) -> u32,
    ) -> Result<LedgerAnswer, LedgerError> {
        self.exchange_in(request, lease_size)
            .map_err(|e| LedgerError(e.to_string()))
    }
}

fn api_name(api: Api) -> &'static str {
    match api {
        Api::Kounta => "kounta",
        Api::Farmflow => "farmflow",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn ask(holder: i64, now_ms: i64) -> LedgerRequest {
        LedgerRequest {
            api: Api::Kounta,
            holder,
            now_ms,
            window_ms: 60_000,
            settle: None,
            lease_until_ms: Some(now_ms + 1_000),
            record: true,
        }
    }

    fn rows(path: &Path) -> Vec<(i64, i64, u32)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT holder, at_ms, n FROM request_grants ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_read_only_ledger_counts_the_others_and_records_nothing_even_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Store::open(&path).unwrap();
        let now = 1_800_000_000_000;
        RequestLedger::open(&path)
            .unwrap()
            .exchange(&ask(1, now), &|_| 5)
            .unwrap();
        let before = rows(&path);

        let reader = RequestLedger::open_read_only(&path).unwrap();
        // Asked to record and settle as a writer would: it only reads.
        let answer = reader
            .exchange(
                &LedgerRequest {
                    settle: Some((1, 0)),
                    ..ask(2, now + 5)
                },
                &|others| 9 - others as u32,
            )
            .unwrap();
        assert_eq!(answer.others, vec![(now + 1_000, 5)]);
        assert_eq!(answer.lease, Some((0, 4)), "granted, recorded nowhere");
        assert_eq!(rows(&path), before);
        assert!(matches!(
            RequestLedger::open_read_only(&dir.path().join("none.db")),
            Err(StoreError::Missing(_))
        ));
        assert!(!dir.path().join("none.db").exists());
    }
}
