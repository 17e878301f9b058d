//! What operations keep in the state DB: metric values that outlive a process, the writes of
//! one run by side and action, and the health last announced to `[alerts] webhook_url`.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, now};

/// The labels of one metric series, by name (kept sorted, so one series has one spelling).
pub type MetricLabels = BTreeMap<String, String>;

/// How a stored metric value changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricOp {
    /// A counter: add to the stored value (starting from 0).
    Add,
    /// A gauge: replace the stored value.
    Set,
}

/// One change to a stored metric series.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricUpdate {
    pub name: String,
    pub labels: MetricLabels,
    pub op: MetricOp,
    pub value: f64,
}

/// One stored metric series.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    pub name: String,
    pub labels: MetricLabels,
    pub value: f64,
}

/// The health farmsync last announced, and what was wrong then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncedHealth {
    pub healthy: bool,
    pub problems: Vec<String>,
    /// Unix seconds.
    pub announced_at: i64,
}

fn labels_text(labels: &MetricLabels) -> Result<String, StoreError> {
    serde_json::to_string(labels).map_err(|e| StoreError::Corrupt(format!("metric labels: {e}")))
}

impl Store {
    /// Applies metric updates in one transaction.
    pub fn update_metrics(&mut self, updates: &[MetricUpdate]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for u in updates {
            let sql = match u.op {
                MetricOp::Add => {
                    "INSERT INTO metric_values (name, labels, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value"
                }
                MetricOp::Set => {
                    "INSERT INTO metric_values (name, labels, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name, labels) DO UPDATE SET value = excluded.value"
                }
            };
            tx.prepare_cached(sql)?
                .execute(params![u.name, labels_text(&u.labels)?, u.value])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stored metric series, by name then labels.
    pub fn metric_values(&self) -> Result<Vec<MetricValue>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, labels, value FROM metric_values ORDER BY name, labels",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })?;
        rows.map(|r| {
            let (name, labels, value) = r?;
            let labels = serde_json::from_str(&labels)
                .map_err(|e| StoreError::Corrupt(format!("metric labels {labels:?}: {e}")))?;
            Ok(MetricValue {
                name,
                labels,
                value,
            })
        })
        .collect()
    }

    /// The remote writes of run `run_id` that the API accepted, counted by (side, op): `op` is
    /// the journal's `create`, `update`, `delete`, `tag` or `unlink`. Failed, stopped and
    /// blocked writes are not counted, nor creates whose answer was lost (found later).
    pub fn accepted_writes(&self, run_id: &str) -> Result<Vec<(String, String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT side, op, COUNT(*) FROM journal WHERE run_id = ?1 AND settled_at IS NOT NULL \
             AND (outcome IN ('created', 'updated', 'update', 'deleted', 'tag', 'unlink') \
                  OR outcome LIKE 'created %') \
             GROUP BY side, op ORDER BY side, op",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletions waiting for a person (`[sync] deletes = "approve"`), decided or not yet.
    pub fn queued_deletes(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM delete_queue", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The health last announced, if any was.
    pub fn announced_health(&self) -> Result<Option<AnnouncedHealth>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT healthy, problems, announced_at FROM announced_health WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, bool>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(healthy, problems, announced_at)| {
            let problems = serde_json::from_str(&problems)
                .map_err(|e| StoreError::Corrupt(format!("announced problems: {e}")))?;
            Ok(AnnouncedHealth {
                healthy,
                problems,
                announced_at,
            })
        })
        .transpose()
    }

    /// Records the health just announced.
    pub fn set_announced_health(
        &self,
        healthy: bool,
        problems: &[String],
    ) -> Result<(), StoreError> {
        let problems = serde_json::to_string(problems)
            .map_err(|e| StoreError::Corrupt(format!("announced problems: {e}")))?;
        self.conn.execute(
            "INSERT INTO announced_health (id, healthy, problems, announced_at) \
             VALUES (1, ?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET healthy = excluded.healthy, \
             problems = excluded.problems, announced_at = excluded.announced_at",
            params![healthy, problems, now()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> MetricLabels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn counters_add_up_and_gauges_are_replaced_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let runs = |n| MetricUpdate {
            name: "farmsync_runs_total".into(),
            labels: labels(&[("outcome", "ok"), ("kind", "sweep")]),
            op: MetricOp::Add,
            value: n,
        };
        let last = |t| MetricUpdate {
            name: "farmsync_last_run_timestamp_seconds".into(),
            labels: labels(&[("kind", "sweep")]),
            op: MetricOp::Set,
            value: t,
        };
        let mut store = Store::open(&path).unwrap();
        store.update_metrics(&[runs(1.0), last(100.0)]).unwrap();
        drop(store);
        let mut store = Store::open(&path).unwrap();
        store.update_metrics(&[runs(2.0), last(200.0)]).unwrap();
        let values = store.metric_values().unwrap();
        assert_eq!(values.len(), 2, "{values:?}");
        let get = |name: &str| values.iter().find(|v| v.name == name).unwrap();
        assert_eq!(get("farmsync_runs_total").value, 3.0);
        assert_eq!(
            get("farmsync_runs_total").labels,
            labels(&[("kind", "sweep"), ("outcome", "ok")])
        );
        assert_eq!(get("farmsync_last_run_timestamp_seconds").value, 200.0);
    }

    #[test]
    fn accepted_writes_count_only_what_the_api_took_in_that_run() {
        use crate::store::{NewIntent, Side, Written};
        let mut store = Store::open_in_memory().unwrap();
        let mut write = |run: &str, side, op: &str, outcome: Option<&str>| {
            let id = store
                .begin_intent(&NewIntent {
                    run_id: run.into(),
                    side,
                    op: op.into(),
                    reference_id: None,
                    kounta_id: None,
                    farmflow_id: None,
                    payload: "{}".into(),
                    watermark: None,
                    cycle: "sweep".into(),
                    changes: Vec::new(),
                })
                .unwrap();
            if let Some(outcome) = outcome {
                store.settle_intent(id, outcome, None, Written::No).unwrap();
            }
        };
        write("r1", Side::Farmflow, "create", Some("created 17"));
        write("r1", Side::Kounta, "create", Some("created"));
        write("r1", Side::Kounta, "update", Some("update"));
        write("r1", Side::Kounta, "update", Some("updated"));
        write("r1", Side::Kounta, "tag", Some("tag"));
        write("r1", Side::Farmflow, "delete", Some("deleted"));
        write("r1", Side::Farmflow, "delete", Some("blocked"));
        write("r1", Side::Farmflow, "update", Some("failed: 400"));
        write("r1", Side::Kounta, "create", None);
        write("r2", Side::Farmflow, "update", Some("updated"));
        let counts = store.accepted_writes("r1").unwrap();
        let get = |side: &str, op: &str| {
            counts
                .iter()
                .find(|(s, o, _)| s == side && o == op)
                .map_or(0, |c| c.2)
        };
        assert_eq!(get("farmflow", "create"), 1);
        assert_eq!(get("kounta", "create"), 1);
        assert_eq!(get("kounta", "tag"), 1);
        assert_eq!(get("farmflow", "delete"), 1);
        assert_eq!(get("farmflow", "update"), 0);
        // A CRM write is settled with its op ("update", "tag", "unlink"), FarmFlow's with "updated".
        assert_eq!(get("kounta", "update"), 2);
    }

    #[test]
    fn the_queued_deletes_gauge_counts_the_approval_queue() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.queued_deletes().unwrap(), 0);
        let entry = |r: &str| crate::store::QueuedDelete {
            reference_id: r.into(),
            action: "delete_farmflow".into(),
            kounta_id: Some(1),
            farmflow_id: 2,
            detail: "deleted in the crm".into(),
            queued_at: 0,
            last_seen: 0,
            decision: None,
        };
        assert!(store.queue_delete(&entry("farmflow:2")).unwrap());
        assert!(!store.queue_delete(&entry("farmflow:2")).unwrap());
        assert!(store.queue_delete(&entry("farmflow:3")).unwrap());
        assert_eq!(store.queued_deletes().unwrap(), 2);
        store.unqueue_delete("farmflow:2").unwrap();
        assert_eq!(store.queued_deletes().unwrap(), 1);
    }

    #[test]
    fn announced_health_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.announced_health().unwrap(), None);
        store
            .set_announced_health(false, &["the last run (r1) exited 4".to_owned()])
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let h = store.announced_health().unwrap().unwrap();
        assert!(!h.healthy);
        assert_eq!(h.problems, vec!["the last run (r1) exited 4".to_owned()]);
        store.set_announced_health(true, &[]).unwrap();
        assert!(store.announced_health().unwrap().unwrap().healthy);
    }
}
