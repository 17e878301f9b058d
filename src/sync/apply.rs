//! Carrying a plan out: every remote write is journalled (intent committed before the request,
//! settled after, together with the link row it leads to), one failing record never stops the
//! others, and a subject's later actions are skipped once one of its actions failed.

use std::collections::HashMap;

use tracing::{info, warn};

use crate::customer::Customer;
use crate::farmflow::client::DeleteOutcome;
use crate::farmflow::model::{FarmflowCustomer, FarmflowFields};
use crate::http::ApiError;
use crate::http::mask_contacts;
use crate::ids::{FarmflowId, KountaId, ReferenceId};
use crate::kounta::model::KountaCustomerWrite;
use crate::store::{
    FieldChange, Link, LinkState, NewIntent, QueuedDelete, Side, StoreError, Written, now,
};
use crate::sync::action::{Action, BlockReason, FarmflowCreate, KountaCreate, LinkAfter, Subject};
use crate::sync::plan::Plan;
use crate::sync::run::{Io, RunOptions, Summary};

/// Why one action failed.
#[derive(Debug)]
enum Failure {
    /// The API refused or could not be reached; the record is retried next run.
    Api(ApiError),
    /// The state DB refused: nothing more can be trusted this run.
    Store(StoreError),
}

/// What the read made just before a FarmFlow update found.
enum Fresh {
    /// The customer is as the plan saw it: the planned whole-record update stands.
    AsPlanned,
    /// The customer changed since the plan read it, or is gone: the link waits (re-planned on
    /// the fresh read, or by the next run).
    Deferred,
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api(e) => write!(f, "{e}"),
            Failure::Store(e) => write!(f, "{e}"),
        }
    }
}

/// Applies one plan.
pub(super) struct Applier<'a> {
    io: Io<'a>,
    run_id: &'a str,
    /// `sweep` or `quick`, for history.
    cycle: &'static str,
    /// The link rows as read at the start of the run, updated as actions land.
    links: HashMap<ReferenceId, Link>,
    /// The highest FarmFlow id seen: the watermark of FarmFlow creates.
    watermark: i64,
    /// FarmFlow's customers as the plan saw them: what a fresh read before an update is
    /// compared with.
    farmflow_base: HashMap<FarmflowId, FarmflowFields>,
    /// FarmFlow customers whose fresh read differed from what the plan saw, as read: their
    /// links were not touched and want planning again on this read.
    pub(super) stale: Vec<FarmflowCustomer>,
    /// Link rows of actions with no remote write (links, refreshes, tombstones, blocks), kept
    /// until the next write's intent or the end of the run and then stored in one transaction:
    /// one disk sync instead of one per row. Losing them to a crash only means the next run
    /// plans them again.
    pending: Vec<Link>,
    pub(super) summary: Summary,
    /// Set when the run must stop (credentials refused, state DB failing).
    pub(super) fatal: Option<String>,
    /// The run was cancelled before every action was applied.
    pub(super) stopped_early: bool,
}

impl<'a> Applier<'a> {
    pub(super) fn new(
        io: Io<'a>,
        run_id: &'a str,
        cycle: &'static str,
        links: &[Link],
        farmflow: &[FarmflowCustomer],
    ) -> Self {
        Applier {
            io,
            run_id,
            cycle,
            links: links
                .iter()
                .map(|l| (l.reference_id.clone(), l.clone()))
                .collect(),
            watermark: farmflow.iter().map(|c| c.id.0).max().unwrap_or(0),
            farmflow_base: farmflow.iter().map(|c| (c.id, c.fields.clone())).collect(),
            stale: Vec::new(),
            pending: Vec::new(),
            summary: Summary::default(),
            fatal: None,
            stopped_early: false,
        }
    }

    /// Takes FarmFlow's customers as a new plan sees them (after re-planning stale links).
    pub(super) fn rebase(&mut self, farmflow: &[FarmflowCustomer]) {
        for c in farmflow {
            self.farmflow_base.insert(c.id, c.fields.clone());
        }
    }

    /// Applies every action in order.
    pub(super) async fn apply(&mut self, plan: &Plan, options: &RunOptions) {
        self.apply_actions(plan, options).await;
        if let Err(e) = self.flush().await {
            self.fatal
                .get_or_insert_with(|| format!("the state DB failed: {e}"));
        }
    }

    async fn apply_actions(&mut self, plan: &Plan, options: &RunOptions) {
        let mut failed: Option<Subject> = None;
        let mut current: Option<Subject> = None;
        for (i, action) in plan.actions.iter().enumerate() {
            // Stop between actions, never inside one: the write in flight is settled first.
            if options.cancelled() {
                self.stopped_early = true;
                return;
            }
            let subject = action.subject();
            if current.as_ref() != Some(&subject) {
                current = Some(subject.clone());
                failed = None;
                // A FarmFlow update replaces the whole record, and a CRM update copies what
                // FarmFlow's list showed (which may lag): before the link's first action, read
                // the FarmFlow customer afresh and go on only if it is as the plan saw it.
                let update = plan.actions[i..]
                    .iter()
                    .take_while(|a| a.subject() == subject)
                    .find_map(|a| match a {
                        Action::UpdateFarmflow { farmflow_id, .. } => Some(*farmflow_id),
                        Action::UpdateKounta { fields, link, .. } if !fields.is_empty() => {
                            Some(link.farmflow_id)
                        }
                        _ => None,
                    });
                let fresh = match update {
                    Some(id) => self.read_fresh(id).await,
                    None => Ok(Fresh::AsPlanned),
                };
                match fresh {
                    Ok(Fresh::AsPlanned) => {}
                    Ok(Fresh::Deferred) => {
                        failed = Some(subject);
                        continue;
                    }
                    Err(failure) => {
                        if self.fail(action, &subject, failure).await {
                            return;
                        }
                        failed = Some(subject);
                        continue;
                    }
                }
            }
            if failed.as_ref() == Some(&subject) {
                continue;
            }
            if let Err(failure) = self.apply_one(action).await {
                if self.fail(action, &subject, failure).await {
                    return;
                }
                failed = Some(subject);
            }
        }
    }

    /// Reads a FarmFlow customer just before its update (DESIGN.md, "Writes that replace a
    /// whole record"): a field the grower typed since the list was read must survive.
    async fn read_fresh(&mut self, id: FarmflowId) -> Result<Fresh, Failure> {
        match self.io.farmflow.get(id).await {
            Ok(Some(fresh)) if self.farmflow_base.get(&id) == Some(&fresh.fields) => {
                Ok(Fresh::AsPlanned)
            }
            Ok(Some(fresh)) => {
                info!(farmflow_id = id.0, "sync.record.changed_during_run");
                self.stale.push(fresh);
                Ok(Fresh::Deferred)
            }
            Ok(None) => {
                // Deleted since the list was read: the next run sees the deletion.
                info!(farmflow_id = id.0, "sync.record.gone_during_run");
                self.summary.skipped += 1;
                Ok(Fresh::Deferred)
            }
            Err(e) => Err(Failure::Api(e)),
        }
    }

    /// Counts and reports a failed action; returns whether the run must stop.
    async fn fail(&mut self, action: &Action, subject: &Subject, failure: Failure) -> bool {
        // farmsync is stopping: a wait was cut short, nothing failed. The write in flight (if
        // any) was finished and settled; the rest waits for the next run.
        if matches!(&failure, Failure::Api(e) if e.is_cancelled()) {
            self.stopped_early = true;
            return true;
        }
        self.summary.failed += 1;
        // API errors may quote a record back: no contact details above debug.
        let message = mask_contacts(&failure.to_string());
        warn!(
            subject = %subject,
            action = action.kind(),
            error = %message,
            "sync.record.failed"
        );
        match &failure {
            Failure::Api(e) if e.is_auth() => {
                self.fatal = Some(message);
                return true;
            }
            Failure::Store(e) => {
                self.fatal = Some(format!("the state DB failed: {e}"));
                return true;
            }
            Failure::Api(_) => {}
        }
        if let Subject::Link(reference) = subject {
            let reference = reference.clone();
            let _ = self
                .io
                .store
                .call(move |s| s.record_link_failure(&reference, &message))
                .await;
        }
        false
    }

    async fn apply_one(&mut self, action: &Action) -> Result<(), Failure> {
        match action {
            Action::Link {
                rule,
                kounta_id,
                farmflow_id,
                link,
            } => {
                self.save(link, None).await?;
                self.summary.linked += 1;
                info!(
                    rule = rule.as_str(),
                    kounta_id = kounta_id.0,
                    farmflow_id = farmflow_id.0,
                    "sync.record.linked"
                );
            }
            Action::UpdateKounta {
                kounta_id,
                write,
                changes,
                link,
                ..
            } => {
                self.kounta_update(*kounta_id, write, changes, link, "update")
                    .await?;
                self.summary.updated += 1;
            }
            Action::UpdateFarmflow {
                farmflow_id,
                body,
                changes,
                link,
                ..
            } => {
                let intent = self
                    .begin(
                        Side::Farmflow,
                        "update",
                        Some(&link.reference_id),
                        link.kounta_id,
                        Some(*farmflow_id),
                        json(body),
                        None,
                        changes.clone(),
                    )
                    .await?;
                let customer = FarmflowCustomer {
                    id: *farmflow_id,
                    fields: body.clone(),
                };
                let answer = self.io.farmflow.update(&customer).await;
                let updated = self.settle_or_fail(intent, answer).await?;
                // The snapshot is what FarmFlow answered: a side that reformats a value must
                // not make the next run see a change.
                let mut after = link.clone();
                after.farmflow_snapshot = Some(Customer::from_farmflow(&updated.fields).customer);
                self.settle_with_link(intent, "updated", &after).await?;
                self.summary.updated += 1;
            }
            Action::CreateKounta(create) => {
                self.kounta_create(create).await?;
                self.summary.created += 1;
            }
            Action::RecreateKounta { create, .. } => {
                self.kounta_create(create).await?;
                self.summary.created += 1;
            }
            Action::CreateFarmflow(create) => {
                self.farmflow_create(create, None).await?;
                self.summary.created += 1;
            }
            Action::RecreateFarmflow {
                old_reference_id,
                create,
            } => {
                self.farmflow_create(create, Some(old_reference_id)).await?;
                self.summary.created += 1;
            }
            Action::Conflict(c) => {
                let (run_id, reference, field) = (
                    self.run_id.to_owned(),
                    c.reference_id.clone(),
                    c.field.name(),
                );
                let (kv, fv) = (c.kounta_value.clone(), c.farmflow_value.clone());
                let winner = match c.winner {
                    crate::sync::policy::ConflictWinner::Kounta => "kounta",
                    crate::sync::policy::ConflictWinner::Farmflow => "farmflow",
                };
                self.io
                    .store
                    .call(move |s| s.record_conflict(&run_id, &reference, field, &kv, &fv, winner))
                    .await?;
                self.summary.conflicts += 1;
                warn!(
                    reference_id = %c.reference_id,
                    field,
                    winner,
                    "sync.conflict"
                );
            }
            Action::DeleteFarmflow {
                farmflow_id,
                kounta_id,
                link,
            } => {
                self.delete_farmflow(*farmflow_id, *kounta_id, link).await?;
            }
            Action::BlockDelete {
                farmflow_id,
                reason,
                link,
            } => {
                self.save(link, Some(reason.to_string())).await?;
                self.summary.blocked += 1;
                warn!(
                    farmflow_id = farmflow_id.0,
                    reference_id = %link.reference_id,
                    reason = %reason,
                    "sync.delete.blocked"
                );
            }
            Action::TagKounta {
                kounta_id,
                write,
                changes,
                link,
            } => {
                self.kounta_update(*kounta_id, write, changes, link, "tag")
                    .await?;
                self.summary.deleted += 1;
            }
            Action::UnlinkKounta {
                kounta_id,
                write,
                changes,
                link,
            } => {
                self.kounta_update(*kounta_id, write, changes, link, "unlink")
                    .await?;
                self.summary.deleted += 1;
            }
            Action::QueueDelete {
                reference_id,
                would,
                kounta_id,
                farmflow_id,
                detail,
            } => {
                let entry = QueuedDelete {
                    reference_id: reference_id.as_str().to_owned(),
                    action: (*would).to_owned(),
                    kounta_id: kounta_id.map(|k| k.0),
                    farmflow_id: farmflow_id.0,
                    detail: detail.clone(),
                    queued_at: 0,
                    last_seen: 0,
                    decision: None,
                };
                let new = self.io.store.call(move |s| s.queue_delete(&entry)).await?;
                self.summary.queued += 1;
                // Once when it starts waiting, not every cycle it goes on waiting.
                if new {
                    warn!(
                        reference_id = %reference_id,
                        would = *would,
                        "sync.delete.queued"
                    );
                }
            }
            Action::Unqueue { reference_id, why } => {
                let reference = reference_id.as_str().to_owned();
                self.io
                    .store
                    .call(move |s| s.unqueue_delete(&reference))
                    .await?;
                info!(reference_id = %reference_id, why = *why, "sync.delete.unqueued");
            }
            Action::ResolutionApplied {
                reference_id,
                field,
            } => {
                let (reference, name) = (reference_id.as_str().to_owned(), field.name());
                self.io
                    .store
                    .call(move |s| s.resolution_applied(&reference, name))
                    .await?;
                info!(reference_id = %reference_id, field = name, "sync.conflict.resolved");
            }
            Action::Park { reason, link } => {
                let newly = self
                    .links
                    .get(&link.reference_id)
                    .is_none_or(|l| l.parked != Some(*reason));
                self.save(link, None).await?;
                if newly {
                    info!(
                        reference_id = %link.reference_id,
                        reason = reason.as_str(),
                        "sync.record.parked"
                    );
                }
            }
            Action::Tombstone { reason, link } => {
                self.save(link, None).await?;
                info!(reference_id = %link.reference_id, reason = %reason, "sync.record.tombstoned");
            }
            Action::Refresh { link } => {
                self.save(link, None).await?;
            }
            Action::Skip { subject, reason } => {
                tracing::debug!(subject = %subject, reason = %reason, "sync.record.skipped");
            }
        }
        Ok(())
    }

    async fn kounta_update(
        &mut self,
        kounta_id: KountaId,
        write: &KountaCustomerWrite,
        changes: &[FieldChange],
        link: &LinkAfter,
        op: &str,
    ) -> Result<(), Failure> {
        let intent = self
            .begin(
                Side::Kounta,
                op,
                Some(&link.reference_id),
                Some(kounta_id),
                Some(link.farmflow_id),
                json(write),
                None,
                changes.to_vec(),
            )
            .await?;
        let answer = self.io.kounta.update(kounta_id, write).await;
        self.settle_or_fail(intent, answer).await?;
        self.settle_with_link(intent, op, link).await
    }

    async fn kounta_create(&mut self, create: &KountaCreate) -> Result<(), Failure> {
        let intent = self
            .begin(
                Side::Kounta,
                "create",
                Some(&create.reference_id),
                None,
                Some(create.farmflow_id),
                json(&create.write),
                None,
                create.changes(),
            )
            .await?;
        let answer = self.io.kounta.create(&create.write).await;
        let kounta_id = self.settle_or_fail(intent, answer).await?;
        self.settle_with_link(intent, "created", &create.link_after(kounta_id))
            .await?;
        info!(
            kounta_id = kounta_id.0,
            farmflow_id = create.farmflow_id.0,
            "sync.record.created"
        );
        Ok(())
    }

    async fn farmflow_create(
        &mut self,
        create: &FarmflowCreate,
        replaces: Option<&ReferenceId>,
    ) -> Result<(), Failure> {
        let intent = self
            .begin(
                Side::Farmflow,
                "create",
                None,
                Some(create.kounta_id),
                None,
                json(&create.fields),
                Some(self.watermark),
                create.changes(),
            )
            .await?;
        let answer = self.io.farmflow.create(&create.fields).await;
        let created = self.settle_or_fail(intent, answer).await?;
        self.watermark = self.watermark.max(created.id.0);
        let mut after = create.link_after(created.id);
        after.farmflow_snapshot = Some(Customer::from_farmflow(&created.fields).customer);
        let link = self.to_link(&after, None);
        let outcome = format!("created {}", created.id);
        match replaces {
            None => {
                self.io
                    .store
                    .call(move |s| s.settle_intent(intent, &outcome, Some(&link), Written::Applied))
                    .await?
            }
            Some(old) => {
                let old = old.clone();
                self.io
                    .store
                    .call(move |s| s.settle_intent_replacing(intent, &outcome, &old, &link))
                    .await?
            }
        }
        self.remember(&after);
        info!(
            kounta_id = create.kounta_id.0,
            farmflow_id = created.id.0,
            "sync.record.created"
        );
        // Record the link in the CRM customer's reference_id. If this fails, the link row says
        // the CRM side is unverified, so the next run reads it and writes the reference again.
        let write = create.reference_write(created.id);
        let mut with_reference = create.link_after_reference(created.id);
        with_reference.farmflow_snapshot = after.farmflow_snapshot.clone();
        let changes = [FieldChange {
            field: "reference_id".to_owned(),
            before: String::new(),
            after: with_reference.reference_id.as_str().to_owned(),
        }];
        self.kounta_update(
            create.kounta_id,
            &write,
            &changes,
            &with_reference,
            "reference",
        )
        .await
    }

    async fn delete_farmflow(
        &mut self,
        farmflow_id: FarmflowId,
        kounta_id: Option<KountaId>,
        link: &LinkAfter,
    ) -> Result<(), Failure> {
        // The plan emits a delete only once a read by id answered 404 for the CRM customer
        // this run (DESIGN.md step 5): the confirmation is already made.
        let changes = Action::DeleteFarmflow {
            farmflow_id,
            kounta_id,
            link: link.clone(),
        }
        .changes();
        let intent = self
            .begin(
                Side::Farmflow,
                "delete",
                Some(&link.reference_id),
                kounta_id,
                Some(farmflow_id),
                format!("{{\"id\":\"{farmflow_id}\"}}"),
                None,
                changes,
            )
            .await?;
        let answer = self.io.farmflow.delete(farmflow_id).await;
        match self.settle_or_fail(intent, answer).await? {
            DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone => {
                self.settle_with_link(intent, "deleted", link).await?;
                self.summary.deleted += 1;
                info!(farmflow_id = farmflow_id.0, "sync.record.deleted");
            }
            DeleteOutcome::Blocked { reason } => {
                let reason = BlockReason::Refused {
                    message: mask_contacts(&reason),
                };
                let mut blocked = link.clone();
                blocked.state = LinkState::DeleteBlocked;
                let row = self.to_link(&blocked, Some(reason.to_string()));
                self.io
                    .store
                    .call(move |s| s.settle_intent(intent, "blocked", Some(&row), Written::No))
                    .await?;
                self.remember(&blocked);
                self.summary.blocked += 1;
                warn!(
                    farmflow_id = farmflow_id.0,
                    reference_id = %link.reference_id,
                    reason = %reason,
                    "sync.delete.blocked"
                );
            }
        }
        Ok(())
    }

    /// Stores the link rows kept back so far.
    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        self.io.store.call(move |s| s.upsert_links(&rows)).await
    }

    /// Commits the intent of a write before it is sent (after the rows kept back, so the
    /// state DB sees everything in plan order).
    #[allow(clippy::too_many_arguments)]
    async fn begin(
        &mut self,
        side: Side,
        op: &str,
        reference_id: Option<&ReferenceId>,
        kounta_id: Option<KountaId>,
        farmflow_id: Option<FarmflowId>,
        payload: String,
        watermark: Option<i64>,
        changes: Vec<FieldChange>,
    ) -> Result<i64, Failure> {
        self.flush().await?;
        let intent = NewIntent {
            run_id: self.run_id.to_owned(),
            cycle: self.cycle.to_owned(),
            changes,
            side,
            op: op.to_owned(),
            reference_id: reference_id.cloned(),
            kounta_id,
            farmflow_id,
            payload,
            watermark,
        };
        Ok(self.io.store.call(move |s| s.begin_intent(&intent)).await?)
    }

    /// Passes a success through; settles a failed write as failed unless its outcome is
    /// unknown (a create whose answer was lost stays unsettled, to be looked up next run). A
    /// write given up because farmsync is stopping (not sent, or not sent again after an answer
    /// it would have retried) is settled as stopped: the next run plans it from what it reads.
    async fn settle_or_fail<T>(
        &self,
        intent: i64,
        answer: Result<T, ApiError>,
    ) -> Result<T, Failure> {
        match answer {
            Ok(v) => Ok(v),
            Err(e) => {
                if !matches!(e, ApiError::OutcomeUnknown { .. }) {
                    let outcome = if e.is_cancelled() {
                        "stopped: farmsync was stopping; the next run plans it again".to_owned()
                    } else {
                        format!("failed: {e}")
                    };
                    self.io
                        .store
                        .call(move |s| s.settle_intent(intent, &outcome, None, Written::No))
                        .await?;
                }
                Err(Failure::Api(e))
            }
        }
    }

    async fn settle_with_link(
        &mut self,
        intent: i64,
        outcome: &str,
        after: &LinkAfter,
    ) -> Result<(), Failure> {
        let row = self.to_link(after, None);
        let outcome = outcome.to_owned();
        self.io
            .store
            .call(move |s| s.settle_intent(intent, &outcome, Some(&row), Written::Applied))
            .await?;
        self.remember(after);
        Ok(())
    }

    /// Stores a link row with no remote write behind it (kept back; see `pending`).
    async fn save(&mut self, after: &LinkAfter, error: Option<String>) -> Result<(), Failure> {
        let row = self.to_link(after, error);
        self.pending.push(row);
        self.remember(after);
        Ok(())
    }

    fn to_link(&self, after: &LinkAfter, error: Option<String>) -> Link {
        let mut link = after.to_link(self.links.get(&after.reference_id), now());
        if let Some(e) = error {
            link.last_error = Some(e);
        }
        link
    }

    fn remember(&mut self, after: &LinkAfter) {
        let link = self.to_link(after, None);
        self.links.insert(after.reference_id.clone(), link);
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The FarmFlow fields of a create intent's payload.
pub(super) fn payload_fields(payload: &str) -> Option<FarmflowFields> {
    serde_json::from_str(payload).ok()
}
