//! `farmsync status`: what the state DB says about farmsync's health, read without the lock.
//!
//! Reads the state DB only (read-only, through [`crate::store`]); calls neither API.

use std::collections::BTreeMap;

use chrono::{DateTime, Local, TimeZone, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::store::{
    Attention, ConflictRecord, LinkState, QueuedDelete, RunRecord, Store, StoreError,
};

/// Everything `status` reports. Its JSON form is documented in the README and kept stable.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// False when the last run failed or none finished within 3 schedule periods.
    pub healthy: bool,
    /// Why it is not healthy, one sentence each.
    pub problems: Vec<String>,
    pub state_path: String,
    /// The last finished run that was not a dry run.
    pub last_run: Option<RunView>,
    /// The most recent runs (dry runs included), newest first.
    pub recent_runs: Vec<RunView>,
    /// When the schedule fires next (local time, RFC 3339).
    pub next_run: Option<String>,
    /// The schedule's period in seconds.
    pub schedule_period_secs: Option<i64>,
    /// Link counts by state, plus `total`.
    pub links: BTreeMap<String, i64>,
    /// CRM deletions FarmFlow refused or was not allowed to apply.
    pub blocked_deletes: Vec<LinkIssue>,
    /// Records whose last two or more writes failed.
    pub failing_records: Vec<LinkIssue>,
    pub open_conflicts: usize,
    /// The newest open conflicts (at most 20).
    pub recent_conflicts: Vec<ConflictRecord>,
    /// Skipped records, reference_id collisions, unmappable countries.
    pub attention: Vec<Attention>,
    /// Webhook deliveries waiting for the next cycle.
    pub pending_hints: usize,
    /// Confirmed deletions waiting for a person (`[sync] deletes = "approve"`).
    pub queued_deletes: usize,
    /// The queued deletions, oldest first (at most 20; `farmsync deletes` lists them all).
    pub deletes_waiting: Vec<QueuedDelete>,
    /// Links parked out of scope (`untagged`, `paused`), by reason.
    pub parked: BTreeMap<String, usize>,
}

/// A run, with readable times.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub dry_run: bool,
    pub exit_code: Option<i32>,
    pub summary: Option<serde_json::Value>,
}

/// One link that needs a look.
#[derive(Debug, Clone, Serialize)]
pub struct LinkIssue {
    pub reference_id: String,
    pub kounta_id: Option<i64>,
    pub farmflow_id: i64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

fn rfc3339(unix: i64) -> String {
    Utc.timestamp_opt(unix, 0)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| unix.to_string())
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        RunView {
            run_id: r.run_id,
            started_at: rfc3339(r.started_at),
            finished_at: r.finished_at.map(rfc3339),
            dry_run: r.dry_run,
            exit_code: r.exit_code,
            summary: r.summary,
        }
    }
}

/// Why farmsync is not healthy at `now` (Unix seconds), judged on `last`, the last finished
/// run that was not a dry run, and the schedule's `period`: it failed, or none finished within
/// 3 periods. Empty when healthy.
pub fn problems(
    last: Option<&RunRecord>,
    period: Option<chrono::Duration>,
    now: i64,
) -> Vec<String> {
    let mut problems = Vec::new();
    match last {
        None => problems.push("no sync run has finished yet".to_owned()),
        Some(run) => {
            if run.exit_code != Some(0) {
                problems.push(format!(
                    "the last run ({}) exited {}",
                    run.run_id,
                    run.exit_code
                        .map_or("without a code".to_owned(), |c| c.to_string())
                ));
            }
            if let (Some(period), Some(finished)) = (period, run.finished_at) {
                let age = now - finished;
                if age > 3 * period.num_seconds() {
                    problems.push(format!(
                        "no run has finished for {age} s, more than 3 schedule periods ({} s)",
                        3 * period.num_seconds()
                    ));
                }
            }
        }
    }
    problems
}

/// Reads the state DB read-only and judges health at `now`.
pub fn report(settings: &Settings, now: DateTime<Local>) -> Result<StatusReport, StoreError> {
    let store = Store::open_read_only(&settings.state.path)?;
    let cron = crate::schedule::parse(&settings.schedule.cron).ok();
    let next = cron
        .as_ref()
        .and_then(|c| crate::schedule::next_after(c, &now));
    let period = cron
        .as_ref()
        .and_then(|c| crate::schedule::period_after(c, &now));

    let last = store.last_finished_run()?;
    let problems = problems(last.as_ref(), period, now.timestamp());

    let mut links = BTreeMap::new();
    let mut total = 0;
    for state in [
        LinkState::Active,
        LinkState::DeleteBlocked,
        LinkState::Tombstone,
    ] {
        links.insert(state.as_str().to_owned(), 0);
    }
    for (state, n) in store.link_counts()? {
        links.insert(state.as_str().to_owned(), n);
        total += n;
    }
    links.insert("total".to_owned(), total);

    let mut blocked_deletes = Vec::new();
    let mut failing_records = Vec::new();
    let mut parked: BTreeMap<String, usize> = BTreeMap::new();
    for link in store.links()? {
        if let Some(reason) = link.parked {
            *parked.entry(reason.as_str().to_owned()).or_default() += 1;
        }
        let issue = || LinkIssue {
            reference_id: link.reference_id.to_string(),
            kounta_id: link.kounta_id.map(|k| k.0),
            farmflow_id: link.farmflow_id.0,
            consecutive_failures: link.consecutive_failures,
            last_error: link.last_error.clone(),
        };
        if link.state == LinkState::DeleteBlocked {
            blocked_deletes.push(issue());
        }
        if link.consecutive_failures >= 2 {
            failing_records.push(issue());
        }
    }
    let conflicts = store.open_conflicts()?;
    let queue = store.delete_queue()?;

    Ok(StatusReport {
        healthy: problems.is_empty(),
        problems,
        state_path: settings.state.path.display().to_string(),
        last_run: last.map(RunView::from),
        recent_runs: store
            .recent_runs(5)?
            .into_iter()
            .map(RunView::from)
            .collect(),
        next_run: next.map(|t| t.to_rfc3339()),
        schedule_period_secs: period.map(|p| p.num_seconds()),
        links,
        blocked_deletes,
        failing_records,
        open_conflicts: conflicts.len(),
        recent_conflicts: conflicts.into_iter().take(20).collect(),
        attention: store.attention()?,
        pending_hints: store.hints()?.len(),
        queued_deletes: queue.len(),
        deletes_waiting: queue.into_iter().take(20).collect(),
        parked,
    })
}

impl StatusReport {
    /// The human-readable form.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "farmsync: {}",
            if self.healthy { "healthy" } else { "UNHEALTHY" }
        ));
        for p in &self.problems {
            line(format!("  ! {p}"));
        }
        line(format!("state:        {}", self.state_path));
        match &self.last_run {
            Some(r) => line(format!(
                "last run:     {} finished {} exit {}{}",
                r.run_id,
                r.finished_at.as_deref().unwrap_or("-"),
                r.exit_code.map_or("-".to_owned(), |c| c.to_string()),
                r.summary
                    .as_ref()
                    .map(|s| format!("  {s}"))
                    .unwrap_or_default()
            )),
            None => line("last run:     none".to_owned()),
        }
        line(format!(
            "next run:     {}",
            self.next_run.as_deref().unwrap_or("-")
        ));
        line(format!(
            "links:        {} total ({} active, {} delete blocked, {} tombstones)",
            self.links.get("total").unwrap_or(&0),
            self.links.get("active").unwrap_or(&0),
            self.links.get("delete_blocked").unwrap_or(&0),
            self.links.get("tombstone").unwrap_or(&0),
        ));
        line(format!(
            "conflicts:    {} open{}",
            self.open_conflicts,
            if self.open_conflicts > 0 {
                " (farmsync conflicts)"
            } else {
                ""
            }
        ));
        if self.queued_deletes > 0 {
            line(format!(
                "deletes:      {} waiting for approval (farmsync deletes)",
                self.queued_deletes
            ));
        }
        if !self.parked.is_empty() {
            let parts: Vec<String> = self
                .parked
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            line(format!("parked:       {}", parts.join(", ")));
        }
        line(format!(
            "webhooks:     {} pending hints",
            self.pending_hints
        ));
        if !self.blocked_deletes.is_empty() {
            line(format!("blocked deletes ({}):", self.blocked_deletes.len()));
            for b in &self.blocked_deletes {
                line(format!(
                    "  {}  {}",
                    b.reference_id,
                    b.last_error.as_deref().unwrap_or("")
                ));
            }
        }
        if !self.failing_records.is_empty() {
            line(format!("failing records ({}):", self.failing_records.len()));
            for f in &self.failing_records {
                line(format!(
                    "  {}  {} failures: {}",
                    f.reference_id,
                    f.consecutive_failures,
                    f.last_error.as_deref().unwrap_or("")
                ));
            }
        }
        if !self.attention.is_empty() {
            line(format!("needs attention ({}):", self.attention.len()));
            for a in &self.attention {
                line(format!("  [{}] {}: {}", a.kind, a.subject, a.message));
            }
        }
        out
    }
}
