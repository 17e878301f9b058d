//! What people see and decide (DESIGN.md, "Operator control"): the history of settled writes,
//! conflicts a person settles, and deletions waiting for a person.
//!
//! History rows are written only inside the transaction that settles a journalled write (see
//! [`Store::settle_intent`]), from the before → after the intent carried: a dry run, which
//! journals nothing, leaves no history, and a write recovered from the journal leaves the same
//! row a normal one does.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{FieldChange, Link, Side, Store, StoreError, Written, now};

/// One settled write, as `farmsync history` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// Row id (increasing).
    pub id: i64,
    /// Unix seconds the write was settled.
    pub at: i64,
    /// The run that made it.
    pub run_id: String,
    /// `sweep` or `quick`.
    pub cycle: String,
    /// `kounta` or `farmflow`: where the write went.
    pub side: String,
    /// `create`, `update`, `delete`, `tag`, `unlink`, `reference`.
    pub action: String,
    /// The link (`farmflow:<id>`), when known.
    pub reference_id: Option<String>,
    /// The CRM customer, when known.
    pub kounta_id: Option<i64>,
    /// The FarmFlow customer, when known.
    pub farmflow_id: Option<i64>,
    /// `applied`, or `unconfirmed` for a write whose answer was lost and that was re-planned
    /// rather than looked up (it may not have happened).
    pub outcome: String,
    /// Per field, before → after.
    pub changes: Vec<FieldChange>,
}

/// Which history rows to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only this link (`farmflow:<id>`), or a CRM or FarmFlow id given as `crm:<id>` /
    /// `farmflow:<id>`.
    pub reference: Option<String>,
    /// Only rows at or after this Unix second.
    pub since: Option<i64>,
    /// At most this many rows (newest first).
    pub limit: Option<usize>,
}

/// How a person settles a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictDecision {
    /// Keep this side's value (the one recorded with the conflict): it is written to whichever
    /// side lacks it at the next cycle.
    Take(Side),
    /// Close the conflict as things stand.
    Dismiss,
}

/// A decision to carry out at the next cycle: write `value` to every side whose `field`
/// differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingResolution {
    /// The link.
    pub reference_id: String,
    /// The canonical field.
    pub field: String,
    /// Whose value was taken.
    pub take: Side,
    /// The value to hold on both sides (canonical spelling).
    pub value: String,
}

/// What a person decided about a queued deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteDecision {
    /// Apply it at the next cycle.
    Approved,
    /// Do not: recreate the deleted side's twin from the other side at the next cycle.
    Rejected,
}

impl DeleteDecision {
    fn as_str(self) -> &'static str {
        match self {
            DeleteDecision::Approved => "approved",
            DeleteDecision::Rejected => "rejected",
        }
    }
}

/// A confirmed deletion waiting for a person (`[sync] deletes = "approve"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuedDelete {
    /// The link.
    pub reference_id: String,
    /// `delete_farmflow`, `tag_kounta` or `unlink_kounta`: what approving does.
    pub action: String,
    /// The CRM customer.
    pub kounta_id: Option<i64>,
    /// The FarmFlow customer.
    pub farmflow_id: i64,
    /// Why, operator-facing (no contact details).
    pub detail: String,
    /// Unix seconds it was first queued.
    pub queued_at: i64,
    /// Unix seconds a cycle last confirmed it.
    pub last_seen: i64,
    /// What a person decided, if anything yet.
    pub decision: Option<DeleteDecision>,
}

/// Stores the history row of a settled intent, in the settling transaction. Intents journalled
/// before history existed carry no changes and leave none.
pub(super) fn record_history(
    conn: &Connection,
    intent: i64,
    written: Written,
    link: Option<&Link>,
) -> Result<(), StoreError> {
    let outcome = match written {
        Written::Applied => "applied",
        Written::Unconfirmed => "unconfirmed",
        Written::No => return Ok(()),
    };
    let row = conn
        .query_row(
            "SELECT run_id, cycle, side, op, reference_id, kounta_id, farmflow_id, changes \
             FROM journal WHERE id = ?1",
            [intent],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            },
        )
        .optional()?;
    let Some((run_id, cycle, side, op, reference, kounta_id, farmflow_id, Some(changes))) = row
    else {
        return Ok(());
    };
    // A FarmFlow create learns its link only from the answer.
    let reference = reference.or_else(|| link.map(|l| l.reference_id.as_str().to_owned()));
    let kounta_id = kounta_id.or_else(|| link.and_then(|l| l.kounta_id.map(|k| k.0)));
    let farmflow_id = farmflow_id.or_else(|| link.map(|l| l.farmflow_id.0));
    conn.prepare_cached(
        "INSERT INTO history (at, run_id, cycle, side, action, reference_id, kounta_id, \
         farmflow_id, outcome, changes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        now(),
        run_id,
        cycle.unwrap_or_else(|| "sweep".to_owned()),
        side,
        op,
        reference,
        kounta_id,
        farmflow_id,
        outcome,
        changes,
    ])?;
    Ok(())
}

/// Reads a journal row's changes (absent before history existed).
pub(super) fn parse_changes(text: Option<&str>) -> Result<Vec<FieldChange>, StoreError> {
    match text {
        None => Ok(Vec::new()),
        Some(t) => serde_json::from_str(t)
            .map_err(|e| StoreError::Corrupt(format!("journal changes: {e}"))),
    }
}

impl Store {
    // ----- history -----

    /// History rows, newest first.
    pub fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>, StoreError> {
        let (column, value) = match filter.reference.as_deref().map(str::trim) {
            None | Some("") => ("1", None),
            Some(r) => match r.strip_prefix("crm:") {
                Some(k) => (
                    "kounta_id = ?2",
                    Some(rusqlite::types::Value::Integer(
                        k.parse()
                            .map_err(|_| StoreError::Corrupt(format!("crm id {k:?}")))?,
                    )),
                ),
                None => (
                    "reference_id = ?2",
                    Some(rusqlite::types::Value::Text(r.to_owned())),
                ),
            },
        };
        let sql = format!(
            "SELECT id, at, run_id, cycle, side, action, reference_id, kounta_id, farmflow_id, \
             outcome, changes FROM history WHERE at >= ?1 AND {column} \
             ORDER BY at DESC, id DESC LIMIT ?3"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let since = filter.since.unwrap_or(i64::MIN);
        let limit = filter.limit.map_or(-1, |l| l as i64);
        let value = value.unwrap_or(rusqlite::types::Value::Null);
        let rows = stmt.query_map(params![since, value, limit], |r| {
            Ok((
                HistoryEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    run_id: r.get(2)?,
                    cycle: r.get(3)?,
                    side: r.get(4)?,
                    action: r.get(5)?,
                    reference_id: r.get(6)?,
                    kounta_id: r.get(7)?,
                    farmflow_id: r.get(8)?,
                    outcome: r.get(9)?,
                    changes: Vec::new(),
                },
                r.get::<_, String>(10)?,
            ))
        })?;
        rows.map(|r| {
            let (mut entry, changes) = r?;
            entry.changes = parse_changes(Some(&changes))?;
            Ok(entry)
        })
        .collect()
    }

    /// Drops history rows older than `before` (Unix seconds); returns how many.
    pub fn prune_history(&self, before: i64) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM history WHERE at < ?1", [before])?)
    }

    // ----- conflicts -----

    /// Settles every open conflict on `field` of `reference_id`; returns how many (0: there
    /// is none, which the caller reports as unknown).
    pub fn decide_conflict(
        &self,
        reference_id: &str,
        field: &str,
        decision: ConflictDecision,
    ) -> Result<usize, StoreError> {
        let resolution = match decision {
            ConflictDecision::Take(side) => side.as_str(),
            ConflictDecision::Dismiss => "dismissed",
        };
        // Only the newest conflict's values matter; older open rows of the same field close
        // with it.
        Ok(self.conn.execute(
            "UPDATE conflicts SET resolution = ?3, resolved_at = ?4, \
             applied_at = CASE WHEN ?3 = 'dismissed' THEN ?4 ELSE NULL END \
             WHERE reference_id = ?1 AND field = ?2 AND acknowledged = 0 AND resolution IS NULL",
            params![reference_id, field, resolution, now()],
        )?)
    }

    /// Decisions to carry out: the newest taken conflict of each link and field not yet
    /// applied.
    pub fn pending_resolutions(&self) -> Result<Vec<PendingResolution>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT reference_id, field, resolution, kounta_value, farmflow_value FROM conflicts \
             WHERE resolution IN ('kounta', 'farmflow') AND applied_at IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out: Vec<PendingResolution> = Vec::new();
        for row in rows {
            let (reference_id, field, take, kounta_value, farmflow_value) = row?;
            let take = Side::parse(&take)?;
            let value = match take {
                Side::Kounta => kounta_value,
                Side::Farmflow => farmflow_value,
            };
            // Newest wins: a later row for the same field replaces an earlier one.
            out.retain(|p| !(p.reference_id == reference_id && p.field == field));
            out.push(PendingResolution {
                reference_id,
                field,
                take,
                value,
            });
        }
        Ok(out)
    }

    /// Marks a link's taken conflicts on `field` as carried out.
    pub fn resolution_applied(&self, reference_id: &str, field: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE conflicts SET applied_at = ?3 WHERE reference_id = ?1 AND field = ?2 \
             AND resolution IN ('kounta', 'farmflow') AND applied_at IS NULL",
            params![reference_id, field, now()],
        )?;
        Ok(())
    }

    // ----- deletions waiting for a person -----

    /// Queues a confirmed deletion, or notes that a cycle confirmed it again (a decision
    /// already made is kept). Returns whether it is new to the queue.
    pub fn queue_delete(&self, entry: &QueuedDelete) -> Result<bool, StoreError> {
        let known = self
            .conn
            .query_row(
                "SELECT 1 FROM delete_queue WHERE reference_id = ?1",
                [&entry.reference_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        self.conn
            .prepare_cached(
                "INSERT INTO delete_queue (reference_id, action, kounta_id, farmflow_id, detail, \
                 queued_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
                 ON CONFLICT (reference_id) DO UPDATE SET action = excluded.action, \
                 kounta_id = excluded.kounta_id, farmflow_id = excluded.farmflow_id, \
                 detail = excluded.detail, last_seen = excluded.last_seen",
            )?
            .execute(params![
                entry.reference_id,
                entry.action,
                entry.kounta_id,
                entry.farmflow_id,
                entry.detail,
                now(),
            ])?;
        Ok(!known)
    }

    /// Takes a link off the queue (applied, rejected and recreated, or its record reappeared).
    pub fn unqueue_delete(&self, reference_id: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM delete_queue WHERE reference_id = ?1",
            [reference_id],
        )?;
        Ok(())
    }

    /// The queue, oldest first.
    pub fn delete_queue(&self) -> Result<Vec<QueuedDelete>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT reference_id, action, kounta_id, farmflow_id, detail, queued_at, last_seen, \
             decision FROM delete_queue ORDER BY queued_at, reference_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                QueuedDelete {
                    reference_id: r.get(0)?,
                    action: r.get(1)?,
                    kounta_id: r.get(2)?,
                    farmflow_id: r.get(3)?,
                    detail: r.get(4)?,
                    queued_at: r.get(5)?,
                    last_seen: r.get(6)?,
                    decision: None,
                },
                r.get::<_, Option<String>>(7)?,
            ))
        })?;
        rows.map(|r| {
            let (mut entry, decision) = r?;
            entry.decision = match decision.as_deref() {
                None => None,
                Some("approved") => Some(DeleteDecision::Approved),
                Some("rejected") => Some(DeleteDecision::Rejected),
                Some(other) => {
                    return Err(StoreError::Corrupt(format!("delete decision {other:?}")));
                }
            };
            Ok(entry)
        })
        .collect()
    }

    /// Records a person's decision on one queued deletion (`Some(reference)`) or on every one
    /// not decided yet (`None`); returns how many entries it reached.
    pub fn decide_delete(
        &self,
        reference_id: Option<&str>,
        decision: DeleteDecision,
    ) -> Result<usize, StoreError> {
        Ok(match reference_id {
            Some(r) => self.conn.execute(
                "UPDATE delete_queue SET decision = ?2, decided_at = ?3 WHERE reference_id = ?1",
                params![r, decision.as_str(), now()],
            )?,
            None => self.conn.execute(
                "UPDATE delete_queue SET decision = ?1, decided_at = ?2 WHERE decision IS NULL",
                params![decision.as_str(), now()],
            )?,
        })
    }
}
