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
}

impl std::fmt::Debug for RequestLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLedger").finish_non_exhaustive()
    }
}

impl RequestLedger {
    /// Opens the ledger of an existing, migrated state DB; creates nothing.
    pub fn open(path: &Path) -> Result<RequestLedger, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // A grant lost to a power cut is a minute old by the time the host is back: no need to
        // sync the disk for each one.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
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
        })
    }

    fn exchange_in(
        &self,
        request: &LedgerRequest,
        lease_size: &dyn Fn(u64) -> u32,
    ) -> Result<LedgerAnswer, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let api = api_name(request.api);
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
