//! What a plan asks for: the actions `sync::apply` carries out, and what each leaves behind in
//! the link row once it succeeds.
//!
//! Actions of one subject (see [`Action::subject`]) are contiguous in a plan and ordered. Each
//! carries the link row as it will be once it *and every earlier action of the same subject*
//! succeeded, so apply must skip the rest of a subject's actions after one of them fails. That is
//! what keeps a half-applied link honest: a side's snapshot only moves once the other side has
//! taken the change.

use std::fmt;

use serde::Serialize;

use crate::customer::{Customer, Field};
use crate::farmflow::model::FarmflowFields;
use crate::ids::{FarmflowId, KountaId, ReferenceId};
use crate::kounta::model::KountaCustomerWrite;
use crate::store::{FieldChange, Link, LinkState, Parked};
use crate::sync::policy::ConflictWinner;

/// The rule that matched two unlinked records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchRule {
    /// The CRM customer's `reference_id` names the FarmFlow customer.
    ReferenceId,
    /// The one unlinked customer on each side with this normalised email.
    Email,
    /// The one unlinked customer on each side with this phone (digits).
    Phone,
    /// The one unlinked customer on each side with this first and last name.
    Name,
}

impl MatchRule {
    /// The rule's name, as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchRule::ReferenceId => "reference_id",
            MatchRule::Email => "email",
            MatchRule::Phone => "phone",
            MatchRule::Name => "name",
        }
    }
}

/// What a link row becomes once an action (and the subject's earlier actions) succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkAfter {
    /// The link key.
    pub reference_id: ReferenceId,
    /// The FarmFlow side.
    pub farmflow_id: FarmflowId,
    /// The CRM side; `None` only for a tombstone whose CRM side was never known.
    pub kounta_id: Option<KountaId>,
    /// The link's state.
    pub state: LinkState,
    /// The CRM record as last read or written.
    pub kounta_snapshot: Option<Customer>,
    /// The FarmFlow record as last read or written.
    pub farmflow_snapshot: Option<Customer>,
    /// False while a CRM write has not been read back.
    pub kounta_verified: bool,
    /// The CRM record was read in full this run: `last_verified_at` moves to now.
    pub kounta_read: bool,
    /// Set while the customer is out of scope (see [`Action::Park`]).
    pub parked: Option<Parked>,
}

impl LinkAfter {
    /// The store row, given the row it replaces (if any) and the current time (Unix seconds).
    pub fn to_link(&self, previous: Option<&Link>, now: i64) -> Link {
        Link {
            reference_id: self.reference_id.clone(),
            farmflow_id: self.farmflow_id,
            kounta_id: self.kounta_id,
            kounta_snapshot: self.kounta_snapshot.clone(),
            farmflow_snapshot: self.farmflow_snapshot.clone(),
            kounta_verified: self.kounta_verified,
            state: self.state,
            last_verified_at: if self.kounta_read {
                Some(now)
            } else {
                previous.and_then(|p| p.last_verified_at)
            },
            last_synced_at: Some(now),
            last_error: None,
            consecutive_failures: 0,
            parked: self.parked,
        }
    }
}

/// A customer to create in the CRM (its `reference_id` is known before the create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KountaCreate {
    /// The link key, `farmflow:<farmflow_id>`.
    pub reference_id: ReferenceId,
    /// The FarmFlow customer the CRM customer is made from.
    pub farmflow_id: FarmflowId,
    /// The create body; carries `reference_id`.
    pub write: KountaCustomerWrite,
    /// The CRM record as the create will make it (unverified until read back).
    pub kounta_snapshot: Customer,
    /// The FarmFlow record it was made from.
    pub farmflow_snapshot: Customer,
}

impl KountaCreate {
    /// The link row once the create answered with the new CRM id.
    pub fn link_after(&self, kounta_id: KountaId) -> LinkAfter {
        LinkAfter {
            reference_id: self.reference_id.clone(),
            farmflow_id: self.farmflow_id,
            kounta_id: Some(kounta_id),
            state: LinkState::Active,
            kounta_snapshot: Some(self.kounta_snapshot.clone()),
            farmflow_snapshot: Some(self.farmflow_snapshot.clone()),
            kounta_verified: false,
            kounta_read: false,
            parked: None,
        }
    }

    /// The create's fields, before (none) → after.
    pub fn changes(&self) -> Vec<FieldChange> {
        let mut changes = created(&self.kounta_snapshot);
        changes.push(FieldChange {
            field: "reference_id".to_owned(),
            before: String::new(),
            after: self.reference_id.as_str().to_owned(),
        });
        if let Some(tags) = &self.write.tags {
            changes.push(FieldChange {
                field: "tags".to_owned(),
                before: String::new(),
                after: tags.join(", "),
            });
        }
        changes
    }
}

/// Every non-empty field of a record being created: "" → value.
fn created(c: &Customer) -> Vec<FieldChange> {
    Field::ALL
        .into_iter()
        .filter(|f| !c.get(*f).is_empty())
        .map(|f| FieldChange {
            field: f.name().to_owned(),
            before: String::new(),
            after: c.get(f).to_owned(),
        })
        .collect()
}

/// Every non-empty field of a record being deleted: value → "".
fn deleted(c: &Customer) -> Vec<FieldChange> {
    Field::ALL
        .into_iter()
        .filter(|f| !c.get(*f).is_empty())
        .map(|f| FieldChange {
            field: f.name().to_owned(),
            before: c.get(f).to_owned(),
            after: String::new(),
        })
        .collect()
}

/// A customer to create in FarmFlow. The link key is only known once FarmFlow answers with the
/// new id; apply then writes `farmflow:<id>` into the CRM customer's `reference_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FarmflowCreate {
    /// The CRM customer the FarmFlow customer is made from.
    pub kounta_id: KountaId,
    /// The create body.
    pub fields: FarmflowFields,
    /// The CRM record it was made from (read in full this run).
    pub kounta_snapshot: Customer,
    /// The FarmFlow record as the create will make it.
    pub farmflow_snapshot: Customer,
}

impl FarmflowCreate {
    /// The link row right after the create (the CRM `reference_id` is not written yet, so the
    /// CRM side stays unverified and is read again next run if the reference write is lost).
    pub fn link_after(&self, farmflow_id: FarmflowId) -> LinkAfter {
        LinkAfter {
            reference_id: ReferenceId::for_farmflow(farmflow_id),
            farmflow_id,
            kounta_id: Some(self.kounta_id),
            state: LinkState::Active,
            kounta_snapshot: Some(self.kounta_snapshot.clone()),
            farmflow_snapshot: Some(self.farmflow_snapshot.clone()),
            kounta_verified: false,
            kounta_read: true,
            parked: None,
        }
    }

    /// The create's fields, before (none) → after.
    pub fn changes(&self) -> Vec<FieldChange> {
        created(&self.farmflow_snapshot)
    }

    /// The CRM write that records the link in the CRM customer's `reference_id`.
    pub fn reference_write(&self, farmflow_id: FarmflowId) -> KountaCustomerWrite {
        KountaCustomerWrite {
            reference_id: Some(ReferenceId::for_farmflow(farmflow_id).as_str().to_owned()),
            ..KountaCustomerWrite::default()
        }
    }

    /// The link row once the reference write succeeded too.
    pub fn link_after_reference(&self, farmflow_id: FarmflowId) -> LinkAfter {
        LinkAfter {
            kounta_verified: true,
            ..self.link_after(farmflow_id)
        }
    }
}

/// One field changed to different values on both sides, and how it was settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictRecord {
    /// The link.
    pub reference_id: ReferenceId,
    /// The field.
    pub field: Field,
    /// The CRM's value (canonical spelling).
    pub kounta_value: String,
    /// FarmFlow's value (canonical spelling; country as alpha-2).
    pub farmflow_value: String,
    /// Whose value was kept.
    pub winner: ConflictWinner,
}

/// Why a FarmFlow delete is not made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BlockReason {
    /// `farmflow_delete = "never"`.
    PolicyNever,
    /// The customer has an active recurring order.
    ActiveRecurringOrder {
        /// The order.
        order_id: i64,
    },
    /// Under `protect-orders`: a one-time order due today or later (or with no readable date).
    UpcomingOneTimeOrder {
        /// The order.
        order_id: i64,
        /// Its `fulfill-date` as FarmFlow wrote it.
        fulfill_date: String,
    },
    /// FarmFlow's order lists answered something that is not a list (empty, `204`, not JSON):
    /// unreadable is not "no orders", so the delete waits (DESIGN.md, "Writes that replace a
    /// whole record").
    OrdersUnreadable,
    /// FarmFlow refused the delete (set by apply, never by the plan).
    Refused {
        /// FarmFlow's message.
        message: String,
    },
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::PolicyNever => f.write_str("farmflow_delete is \"never\""),
            BlockReason::ActiveRecurringOrder { order_id } => {
                write!(f, "active recurring order {order_id}")
            }
            BlockReason::UpcomingOneTimeOrder {
                order_id,
                fulfill_date,
            } => {
                if fulfill_date.trim().is_empty() {
                    write!(f, "one-time order {order_id} with no fulfill date")
                } else {
                    write!(f, "one-time order {order_id} due {fulfill_date}")
                }
            }
            BlockReason::OrdersUnreadable => f.write_str("orders unreadable"),
            BlockReason::Refused { message } => write!(f, "farmflow refused: {message}"),
        }
    }
}

/// Why a link becomes a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TombstoneReason {
    /// Deleted in FarmFlow; the CRM customer is kept (already tagged, or the policy is ignore).
    DeletedInFarmflow,
    /// Gone from both sides.
    DeletedOnBoth,
    /// A CRM customer's `reference_id` names a FarmFlow customer that no longer exists.
    DanglingReference,
}

impl fmt::Display for TombstoneReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TombstoneReason::DeletedInFarmflow => "deleted in farmflow",
            TombstoneReason::DeletedOnBoth => "deleted on both sides",
            TombstoneReason::DanglingReference => {
                "its reference_id names a deleted farmflow customer"
            }
        })
    }
}

/// Why a record or link is left alone this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// The CRM needs an email or a phone; this FarmFlow customer has neither.
    NoContact,
    /// Both sides need a first name; this customer has none.
    NoFirstName,
    /// The CRM listing did not complete: nothing is created in the CRM (the twin may be on the
    /// missing page), and a record missing from it is not known to be gone.
    KountaListIncomplete,
    /// The CRM record must be read in full first (see `Plan::needs_kounta_reads`).
    KountaNotRead,
    /// New CRM records were not read in full, so nothing is created in the CRM this run: one of
    /// them may be this customer's twin.
    UnreadKountaRecords,
    /// The safety guard tripped: nothing destructive, nothing created into an empty side.
    GuardTripped,
    /// FarmFlow's orders must be read before deciding this delete (see `Plan::needs_orders`).
    OrdersNotRead,
    /// The CRM customer's `reference_id` names a FarmFlow customer that is linked to another
    /// CRM customer, or that several CRM customers name.
    ReferenceCollision {
        /// The FarmFlow id the `reference_id` names.
        farmflow_id: FarmflowId,
        /// The CRM customer linked to it, if one is.
        linked_to: Option<KountaId>,
    },
    /// A FarmFlow customer whose id belongs to a tombstone.
    LinkedToTombstone,
    /// The link row has no CRM id.
    NoKountaId,
    /// A record is missing from a listing and has not been read by id yet: absence is a
    /// question, never an answer (DESIGN.md step 5). The read comes before anything is done.
    /// Also a queued deletion's record that a FarmFlow list shows again: the list may lag behind
    /// the deletion, so the entry leaves the queue only once the record reads back by id.
    AbsenceUnconfirmed,
    /// Out of scope (DESIGN.md, "Operator control"): left alone until that changes.
    Parked {
        /// Why.
        reason: Parked,
    },
    /// `[sync] create_in_kounta = false`: never created in the CRM.
    CreateInKountaOff,
    /// `[sync] create_in_farmflow = false`: never created in FarmFlow.
    CreateInFarmflowOff,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoContact => f.write_str("no email or phone, which the crm requires"),
            SkipReason::NoFirstName => f.write_str("no first name"),
            SkipReason::KountaListIncomplete => f.write_str("the crm listing is incomplete"),
            SkipReason::KountaNotRead => f.write_str("the crm record must be read in full first"),
            SkipReason::UnreadKountaRecords => {
                f.write_str("new crm records were not read in full; creating could duplicate")
            }
            SkipReason::GuardTripped => f.write_str("the safety guard tripped"),
            SkipReason::OrdersNotRead => f.write_str("farmflow orders not read yet"),
            SkipReason::ReferenceCollision {
                farmflow_id,
                linked_to: Some(k),
            } => write!(
                f,
                "reference_id names farmflow {farmflow_id}, already linked to crm {k}"
            ),
            SkipReason::ReferenceCollision {
                farmflow_id,
                linked_to: None,
            } => write!(
                f,
                "reference_id names farmflow {farmflow_id}, which other crm customers name too"
            ),
            SkipReason::LinkedToTombstone => {
                f.write_str("its id belongs to a deleted (tombstone) link")
            }
            SkipReason::NoKountaId => f.write_str("the link has no crm id"),
            SkipReason::AbsenceUnconfirmed => {
                f.write_str("missing from a listing; waiting for a read by id to confirm it")
            }
            SkipReason::Parked { reason } => write!(f, "out of scope: {reason}"),
            SkipReason::CreateInKountaOff => f.write_str("sync.create_in_kounta is false"),
            SkipReason::CreateInFarmflowOff => f.write_str("sync.create_in_farmflow is false"),
        }
    }
}

/// What an action concerns; a plan keeps each subject's actions together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Subject {
    /// An existing or newly matched link.
    Link(ReferenceId),
    /// An unlinked CRM customer.
    Kounta(KountaId),
    /// An unlinked FarmFlow customer.
    Farmflow(FarmflowId),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Link(r) => write!(f, "{r}"),
            Subject::Kounta(k) => write!(f, "crm {k}"),
            Subject::Farmflow(id) => write!(f, "farmflow {id}"),
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Store a new link between two matched records (no remote write). The merge's writes follow.
    Link {
        /// The rule that matched.
        rule: MatchRule,
        /// The CRM customer.
        kounta_id: KountaId,
        /// The FarmFlow customer.
        farmflow_id: FarmflowId,
        /// The new link row.
        link: LinkAfter,
    },
    /// Partial update of a CRM customer.
    UpdateKounta {
        /// The CRM customer.
        kounta_id: KountaId,
        /// The canonical fields being changed.
        fields: Vec<Field>,
        /// The partial update body.
        write: KountaCustomerWrite,
        /// Per field, the CRM's value before → after (for history and `--dry-run`).
        changes: Vec<FieldChange>,
        /// The link row once written.
        link: LinkAfter,
    },
    /// Whole-record update of a FarmFlow customer (merged onto the latest read).
    UpdateFarmflow {
        /// The FarmFlow customer.
        farmflow_id: FarmflowId,
        /// The canonical fields being changed.
        fields: Vec<Field>,
        /// The whole record to send (apply adds the id).
        body: FarmflowFields,
        /// Per field, FarmFlow's value before → after (for history and `--dry-run`).
        changes: Vec<FieldChange>,
        /// The link row once written.
        link: LinkAfter,
    },
    /// Create an unlinked FarmFlow customer in the CRM.
    CreateKounta(KountaCreate),
    /// Create an unlinked CRM customer in FarmFlow, then write its `reference_id`.
    CreateFarmflow(FarmflowCreate),
    /// Record a settled conflict (no remote write).
    Conflict(ConflictRecord),
    /// Delete a FarmFlow customer gone from the CRM: apply first confirms with a direct CRM read
    /// answering 404, and treats a refusal as blocked.
    DeleteFarmflow {
        /// The FarmFlow customer to delete.
        farmflow_id: FarmflowId,
        /// The CRM customer whose `404` confirms the delete.
        kounta_id: Option<KountaId>,
        /// The link row once deleted (a tombstone).
        link: LinkAfter,
    },
    /// A FarmFlow delete that may not be made; the link is (or stays) `delete_blocked`.
    BlockDelete {
        /// The FarmFlow customer kept.
        farmflow_id: FarmflowId,
        /// Why it is kept.
        reason: BlockReason,
        /// The link row (`delete_blocked`).
        link: LinkAfter,
    },
    /// Tag a CRM customer whose FarmFlow twin was deleted.
    TagKounta {
        /// The CRM customer.
        kounta_id: KountaId,
        /// The body: the customer's tags plus `deleted_tag`.
        write: KountaCustomerWrite,
        /// The tags before → after.
        changes: Vec<FieldChange>,
        /// The link row once tagged (a tombstone).
        link: LinkAfter,
    },
    /// Clear the `reference_id` of a CRM customer whose FarmFlow twin was deleted.
    UnlinkKounta {
        /// The CRM customer.
        kounta_id: KountaId,
        /// The body: an empty `reference_id`.
        write: KountaCustomerWrite,
        /// The `reference_id` before → after.
        changes: Vec<FieldChange>,
        /// The link row once unlinked (a tombstone).
        link: LinkAfter,
    },
    /// Make the link a tombstone (no remote write).
    Tombstone {
        /// Why.
        reason: TombstoneReason,
        /// The link row (a tombstone).
        link: LinkAfter,
    },
    /// Deleted in the CRM but changed in FarmFlow since the last sync: the change wins, the CRM
    /// customer is created again and the link moves to the new CRM id.
    RecreateKounta {
        /// The deleted CRM customer.
        old_kounta_id: KountaId,
        /// The create.
        create: KountaCreate,
    },
    /// Deleted in FarmFlow but changed in the CRM since the last sync: a new FarmFlow customer is
    /// created; apply replaces the old link row by the new one and writes the new
    /// `reference_id` into the CRM customer.
    RecreateFarmflow {
        /// The link row being replaced.
        old_reference_id: ReferenceId,
        /// The create.
        create: FarmflowCreate,
    },
    /// `[sync] deletes = "approve"`: a confirmed deletion waits for a person instead of being
    /// applied (no remote write; the link stays as it is).
    QueueDelete {
        /// The link.
        reference_id: ReferenceId,
        /// What approving it does: `delete_farmflow`, `tag_kounta` or `unlink_kounta`.
        would: &'static str,
        /// The CRM customer.
        kounta_id: Option<KountaId>,
        /// The FarmFlow customer.
        farmflow_id: FarmflowId,
        /// Why, operator-facing.
        detail: String,
    },
    /// Take a link off the deletion queue: its deletion was applied, it was rejected and the
    /// twin recreated, or the record read back (it reappeared). Follows the subject's writes,
    /// so a failed write leaves the entry queued; a run that stopped between the two leaves a
    /// tombstone, which the next plan takes off the queue.
    Unqueue {
        /// The link.
        reference_id: ReferenceId,
        /// Why, for the log.
        why: &'static str,
    },
    /// A person's conflict decision was carried out (the field now holds the chosen value on
    /// both sides). Follows the subject's writes, so a failed write leaves it pending.
    ResolutionApplied {
        /// The link.
        reference_id: ReferenceId,
        /// The field decided.
        field: Field,
    },
    /// The customer is out of scope (`kounta_tag` lost, or `pause_tag` carried): the link is
    /// kept and marked, nothing is written either way and nothing deleted.
    Park {
        /// Why.
        reason: Parked,
        /// The link row (marked parked; snapshots unchanged).
        link: LinkAfter,
    },
    /// Store new snapshots or a verification (no remote write).
    Refresh {
        /// The link row with its new snapshots.
        link: LinkAfter,
    },
    /// Leave a record alone this run.
    Skip {
        /// What is skipped.
        subject: Subject,
        /// Why.
        reason: SkipReason,
    },
}

impl Action {
    /// What the action concerns; actions of one subject stand together in a plan.
    pub fn subject(&self) -> Subject {
        match self {
            Action::Link { link, .. }
            | Action::UpdateKounta { link, .. }
            | Action::UpdateFarmflow { link, .. }
            | Action::DeleteFarmflow { link, .. }
            | Action::BlockDelete { link, .. }
            | Action::TagKounta { link, .. }
            | Action::UnlinkKounta { link, .. }
            | Action::Tombstone { link, .. }
            | Action::Park { link, .. }
            | Action::Refresh { link } => Subject::Link(link.reference_id.clone()),
            Action::QueueDelete { reference_id, .. }
            | Action::Unqueue { reference_id, .. }
            | Action::ResolutionApplied { reference_id, .. } => Subject::Link(reference_id.clone()),
            Action::CreateKounta(c) => Subject::Farmflow(c.farmflow_id),
            Action::CreateFarmflow(c) => Subject::Kounta(c.kounta_id),
            Action::Conflict(c) => Subject::Link(c.reference_id.clone()),
            Action::RecreateKounta { create, .. } => Subject::Link(create.reference_id.clone()),
            Action::RecreateFarmflow {
                old_reference_id, ..
            } => Subject::Link(old_reference_id.clone()),
            Action::Skip { subject, .. } => subject.clone(),
        }
    }

    /// The link row once this action succeeded, when it is known before the action runs
    /// (creates know it only from their answer: see [`KountaCreate::link_after`] and
    /// [`FarmflowCreate::link_after`]).
    pub fn link_after(&self) -> Option<&LinkAfter> {
        match self {
            Action::Link { link, .. }
            | Action::UpdateKounta { link, .. }
            | Action::UpdateFarmflow { link, .. }
            | Action::DeleteFarmflow { link, .. }
            | Action::BlockDelete { link, .. }
            | Action::TagKounta { link, .. }
            | Action::UnlinkKounta { link, .. }
            | Action::Tombstone { link, .. }
            | Action::Park { link, .. }
            | Action::Refresh { link } => Some(link),
            _ => None,
        }
    }

    /// Whether the action writes to the CRM or FarmFlow.
    pub fn is_remote_write(&self) -> bool {
        matches!(
            self,
            Action::UpdateKounta { .. }
                | Action::UpdateFarmflow { .. }
                | Action::CreateKounta(_)
                | Action::CreateFarmflow(_)
                | Action::DeleteFarmflow { .. }
                | Action::TagKounta { .. }
                | Action::UnlinkKounta { .. }
                | Action::RecreateKounta { .. }
                | Action::RecreateFarmflow { .. }
        )
    }

    /// Whether the safety guard holds this kind of action back.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Action::DeleteFarmflow { .. }
                | Action::TagKounta { .. }
                | Action::UnlinkKounta { .. }
                | Action::Tombstone { .. }
                | Action::RecreateKounta { .. }
                | Action::RecreateFarmflow { .. }
        )
    }

    /// The action's short name, as used in tables and counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Link { .. } => "link",
            Action::UpdateKounta { .. } => "update_kounta",
            Action::UpdateFarmflow { .. } => "update_farmflow",
            Action::CreateKounta(_) => "create_kounta",
            Action::CreateFarmflow(_) => "create_farmflow",
            Action::Conflict(_) => "conflict",
            Action::DeleteFarmflow { .. } => "delete_farmflow",
            Action::BlockDelete { .. } => "block_delete",
            Action::TagKounta { .. } => "tag_kounta",
            Action::UnlinkKounta { .. } => "unlink_kounta",
            Action::Tombstone { .. } => "tombstone",
            Action::RecreateKounta { .. } => "recreate_kounta",
            Action::RecreateFarmflow { .. } => "recreate_farmflow",
            Action::QueueDelete { .. } => "queue_delete",
            Action::Unqueue { .. } => "unqueue",
            Action::ResolutionApplied { .. } => "resolution_applied",
            Action::Park { .. } => "park",
            Action::Refresh { .. } => "refresh",
            Action::Skip { .. } => "skip",
        }
    }

    /// Per field, before → after, for every action that writes to either API (empty for the
    /// others): what history keeps and `--dry-run` shows.
    pub fn changes(&self) -> Vec<FieldChange> {
        match self {
            Action::UpdateKounta { changes, .. }
            | Action::UpdateFarmflow { changes, .. }
            | Action::TagKounta { changes, .. }
            | Action::UnlinkKounta { changes, .. } => changes.clone(),
            Action::CreateKounta(c) | Action::RecreateKounta { create: c, .. } => c.changes(),
            Action::CreateFarmflow(c) | Action::RecreateFarmflow { create: c, .. } => c.changes(),
            Action::DeleteFarmflow { link, .. } => link
                .farmflow_snapshot
                .as_ref()
                .map(deleted)
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// A one-line description for `--dry-run` and logs. It names ids and fields, never
    /// customer values (emails and phones only go to debug logs).
    pub fn describe(&self) -> String {
        let fields = |fs: &[Field]| fs.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ");
        match self {
            Action::Link {
                rule,
                kounta_id,
                farmflow_id,
                ..
            } => format!(
                "link crm {kounta_id} with farmflow {farmflow_id} by {}",
                rule.as_str()
            ),
            Action::UpdateKounta {
                kounta_id,
                fields: fs,
                write,
                link,
                ..
            } => {
                let mut what = fields(fs);
                for (extra, set) in [
                    ("reference_id", write.reference_id.is_some()),
                    ("tags", write.tags.is_some()),
                ] {
                    if set {
                        if !what.is_empty() {
                            what.push_str(", ");
                        }
                        what.push_str(extra);
                    }
                }
                format!("update crm {kounta_id} ({}): {what}", link.reference_id)
            }
            Action::UpdateFarmflow {
                farmflow_id,
                fields: fs,
                ..
            } => format!("update farmflow {farmflow_id}: {}", fields(fs)),
            Action::CreateKounta(c) => {
                format!(
                    "create in crm from farmflow {} ({})",
                    c.farmflow_id, c.reference_id
                )
            }
            Action::CreateFarmflow(c) => format!("create in farmflow from crm {}", c.kounta_id),
            Action::Conflict(c) => format!(
                "conflict on {} ({}): changed on both sides, {} wins",
                c.field,
                c.reference_id,
                winner_name(c.winner)
            ),
            Action::DeleteFarmflow {
                farmflow_id,
                kounta_id,
                ..
            } => match kounta_id {
                Some(k) => format!("delete farmflow {farmflow_id} (crm {k} was deleted)"),
                None => format!("delete farmflow {farmflow_id}"),
            },
            Action::BlockDelete {
                farmflow_id,
                reason,
                ..
            } => format!("keep farmflow {farmflow_id}: delete blocked by {reason}"),
            Action::TagKounta {
                kounta_id, link, ..
            } => format!(
                "tag crm {kounta_id} (farmflow {} was deleted)",
                link.farmflow_id
            ),
            Action::UnlinkKounta {
                kounta_id, link, ..
            } => format!(
                "unlink crm {kounta_id} (farmflow {} was deleted)",
                link.farmflow_id
            ),
            Action::Tombstone { reason, link } => {
                format!("tombstone {}: {reason}", link.reference_id)
            }
            Action::RecreateKounta {
                old_kounta_id,
                create,
            } => format!(
                "recreate in crm from farmflow {} (crm {old_kounta_id} was deleted, farmflow changed since)",
                create.farmflow_id
            ),
            Action::RecreateFarmflow {
                old_reference_id,
                create,
            } => format!(
                "recreate in farmflow from crm {} ({old_reference_id} was deleted, crm changed since)",
                create.kounta_id
            ),
            Action::QueueDelete {
                reference_id,
                would,
                detail,
                ..
            } => format!(
                "queue for approval: {} of {reference_id} ({detail})",
                would.replace('_', " ")
            ),
            Action::Unqueue { reference_id, why } => {
                format!("take {reference_id} off the deletion queue: {why}")
            }
            Action::ResolutionApplied {
                reference_id,
                field,
            } => format!("conflict decision on {field} of {reference_id} carried out"),
            Action::Park { reason, link } => {
                format!("park {}: {reason}", link.reference_id)
            }
            Action::Refresh { link } => format!("refresh snapshots of {}", link.reference_id),
            Action::Skip { subject, reason } => format!("skip {subject}: {reason}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn winner_name(w: ConflictWinner) -> &'static str {
    match w {
        ConflictWinner::Kounta => "crm",
        ConflictWinner::Farmflow => "farmflow",
    }
}

/// What a person should look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// A record that cannot be synced as it is (no contact, no first name).
    Skipped,
    /// A CRM `reference_id` naming a FarmFlow customer linked elsewhere or named several times.
    ReferenceCollision,
    /// FarmFlow country text that names no country; left out of CRM writes.
    UnmappableCountry,
    /// A FarmFlow customer whose id belongs to a tombstone.
    TombstoneReappeared,
}

/// One record needing a person's attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attention {
    /// What kind of attention.
    pub kind: AttentionKind,
    /// The CRM customer concerned, if any.
    pub kounta_id: Option<KountaId>,
    /// The FarmFlow customer concerned, if any.
    pub farmflow_id: Option<FarmflowId>,
    /// Operator-facing, lower-case; no customer contact details.
    pub detail: String,
}
