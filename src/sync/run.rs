//! What one run is given and what it reports: its options, the clients and store its steps
//! work through, and its outcome and counts.
//!
//! Shared by the engine, apply and recover, so neither apply nor recover reaches back into the
//! engine; `sync::engine` re-exports the public types. Holds no logic beyond the types' own.

use std::sync::Arc;

use serde::Serialize;

use crate::farmflow::client::FarmflowClient;
use crate::kounta::client::KountaClient;
use crate::store::SharedStore;
use crate::sync::plan::Plan;

/// How a run ended, in DESIGN.md's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything applied (exit 0).
    Applied,
    /// Some records failed or the CRM listing stayed incomplete; the rest applied (exit 1).
    Partial,
    /// The safety guard tripped (exit 3).
    Guarded,
    /// The run could not happen: a list unreadable, credentials refused (exit 4).
    Unavailable(String),
}

impl Outcome {
    /// The process exit code DESIGN.md gives this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Applied => 0,
            Outcome::Partial => 1,
            Outcome::Guarded => 3,
            Outcome::Unavailable(_) => 4,
        }
    }
}

/// The counts of `sync.run.finished`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Customers created (or recreated) on either side.
    pub created: u64,
    /// Customers updated on either side.
    pub updated: u64,
    /// FarmFlow customers deleted, and CRM customers tagged or unlinked for a FarmFlow deletion.
    pub deleted: u64,
    /// New links made by matching.
    pub linked: u64,
    /// FarmFlow deletes blocked (by policy, an order, or FarmFlow's refusal).
    pub blocked: u64,
    /// Fields both sides changed differently, settled by `conflict_winner`.
    pub conflicts: u64,
    /// Writes that failed, and reads whose failure left a record unsynced.
    pub failed: u64,
    /// Records left alone this run, with a reason.
    pub skipped: u64,
    /// Requests sent to the CRM (retries and token refreshes included).
    pub kounta_requests: u64,
    /// Requests sent to FarmFlow (retries included).
    pub farmflow_requests: u64,
    /// Confirmed deletions waiting for a person (`[sync] deletes = "approve"`).
    pub queued: u64,
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run's id, as in its log span and the `runs` table.
    pub run_id: String,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// Its counts (for a dry run: what it would have done).
    pub summary: Summary,
    /// The final plan (absent when the run could not read both sides).
    pub plan: Option<Plan>,
    /// Why the CRM listing is incomplete, when it is.
    pub listing_cut: Option<String>,
    /// Unsettled journal entries a dry run saw (a real run settles them first).
    pub unsettled: usize,
    /// The run was cancelled before it was done: stopped between two writes, or before it
    /// wrote anything (a listing or read cut short infers nothing). The rest waits for the next.
    pub interrupted: bool,
    /// Records a listing left out that a read by id found present (`sync.listing.omission`).
    pub omissions: u64,
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plan and report; write nothing remote and nothing to the state DB.
    pub dry_run: bool,
    /// `--allow-mass-delete`: the safety guard never trips.
    pub allow_mass_delete: bool,
    /// Cancelled on shutdown: every wait of the run ends at once (the rate limiter, a retry's
    /// backoff, a listing or read in progress); the write in flight finishes and is settled;
    /// nothing more is done (the rest waits for the next run).
    pub cancel: Option<tokio_util::sync::CancellationToken>,
    /// A sweep (the full reconcile, `farmsync sync`) or a quick cycle (the daemon's, between
    /// sweeps: no CRM listing, no creates, no new links).
    pub kind: CycleKind,
    /// Shared by cycles that may run at once (the daemon's sweep and quick cycle): only the
    /// holder plans and applies. A sweep takes it after its CRM listing, a quick cycle at once.
    pub writer: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// The two kinds of cycle (DESIGN.md, "Sweeps and quick cycles").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleKind {
    /// Steps 1–6 in full: the CRM listed page by page, matching, creates, verification.
    #[default]
    Sweep,
    /// FarmFlow's list (one request) and, by id, only the CRM records that webhooks named or
    /// whose FarmFlow side changed; updates both ways and confirmed deletions of existing links
    /// only. Its cost does not grow with the number of customers.
    Quick,
}

impl CycleKind {
    /// The kind's name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CycleKind::Sweep => "sweep",
            CycleKind::Quick => "quick",
        }
    }
}

impl RunOptions {
    /// Whether the run has been asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.is_cancelled())
    }
}

/// What apply and recover work through: both clients and the state DB, borrowed from the
/// engine for one run.
#[derive(Clone, Copy)]
pub(super) struct Io<'a> {
    /// The CRM client.
    pub kounta: &'a KountaClient,
    /// The FarmFlow client.
    pub farmflow: &'a FarmflowClient,
    /// The state DB.
    pub store: &'a SharedStore,
}
