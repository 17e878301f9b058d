//! `plan`: the rules of the sync, as one pure function from both sides' records and the links
//! to an ordered list of actions (DESIGN.md, "The sync, precisely", steps 1–6).
//!
//! No I/O, no clock (today's date is an input), no randomness: the same input always gives the
//! same plan. `sync::apply` carries the actions out; `--dry-run` prints them.
//!
//! Reading guide:
//! - [`plan`] classifies every link (both present, gone from one side, gone from both, unknown),
//!   matches new records ([`crate::sync::matching`]), counts planned deletions for the guard,
//!   then emits actions link by link, then creates.
//! - `merge` is the three-way merge of one link against each side's own snapshot.
//! - Deletions: `crm_gone` and `farmflow_gone`.
//!
//! Three places where the plan asks the caller for more before it acts, rather than guess:
//! [`Plan::needs_orders`] (a FarmFlow delete must check orders), [`Plan::needs_kounta_reads`]
//! (a CRM write needs the full current record: a partial update must not clobber an address
//! line or a same-field edit the list could not show) and [`Plan::needs_farmflow_reads`]. The
//! caller reads those and plans again, handing the answers back in [`DirectReads`].
//!
//! Absence from a list is a question, never an answer (DESIGN.md step 5): every action taken
//! because a record is missing from a listing — a FarmFlow delete, a CRM tag/unlink, a
//! tombstone, a blocked-delete retry, a recreation on either side, a dangling reference — waits
//! for a read by id of that record. A record that reads back is present and planned as such; a
//! 404 confirms the absence; no answer leaves the link alone (`SkipReason::AbsenceUnconfirmed`).
//! The guard counts absences from the lists themselves, before any confirmation, and when it
//! trips nothing is read for them.
//!
//! Choices made where DESIGN.md leaves room (each with a test in `plan/tests.rs`):
//! - Every link whose CRM record was read in full gets a `Refresh` (at least), so apply can
//!   move `last_verified_at` and the verification budget rotates.
//! - The guard counts CRM customers whose `reference_id` no link row accounts for as links
//!   (after a lost state DB they are), and a dangling one as a planned deletion: an empty or
//!   broken FarmFlow list can never tombstone them all.
//! - A CRM customer whose `reference_id` names a live FarmFlow id is never created in FarmFlow:
//!   it is linked, or reported as a collision (also when several CRM customers name that id).
//! - A dangling reference is shown in the CRM like any FarmFlow deletion (tag/unlink/ignore).
//! - FarmFlow needs a first name: a CRM that cleared it does not pass that on (reported), and no
//!   FarmFlow write without one is planned.
//! - An unmappable FarmFlow country is overwritten only by a CRM country change made since a
//!   known snapshot, never by the values of a new link.
//! - A deleted-in-the-CRM customer that changed in FarmFlow but has no email or phone cannot be
//!   recreated in the CRM; it is reported and kept (neither deleted nor recreated).
//!
//! Operator control (DESIGN.md, "Operator control"), also tested in `plan/tests.rs`:
//! - Scope is decided on a full CRM read (only it shows tags) and remembered in the link row
//!   (`parked`); a parked link is neither written nor deleted, nor counted by the guard.
//! - A one-way field (`[fields]`) has no conflicts: the source side's change is copied, the
//!   other side's own change is taken as seen (its snapshot follows it). Creates copy only what
//!   may go that way, but the first name.
//! - A person's conflict decision writes the chosen value wherever it differs, then reports
//!   itself carried out (`ResolutionApplied`) after the link's writes, so a failed write leaves
//!   it pending. Deletions under `deletes = "approve"` are queued at the point they would be
//!   applied, after every other rule (orders, guard, confirmation by a read by id).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;
use serde::Serialize;

use crate::customer::{self, Customer, Field, FromFarmflow};
use crate::farmflow::model::{FarmflowCustomer, OneTimeOrder, RecurringOrder};
use crate::ids::{FarmflowId, KountaId, ReferenceId};
use crate::kounta::model::{KountaCustomer, KountaCustomerWrite, KountaListItem};
use crate::store::{DeleteDecision, FieldChange, Link, LinkState, Parked};
use crate::sync::action::{
    Action, Attention, AttentionKind, BlockReason, ConflictRecord, FarmflowCreate, KountaCreate,
    LinkAfter, SkipReason, Subject, TombstoneReason,
};
use crate::sync::matching::{self, CrmCandidate, FfCandidate, KnownIds};
use crate::sync::policy::{
    ConflictWinner, DeleteMode, Direction, FarmflowDelete, KountaOnFarmflowDelete, Policy,
};

/// FarmFlow's orders, read only to respect its delete restrictions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderBook {
    /// Standing orders (`recurring-orders-get`).
    pub recurring: Vec<RecurringOrder>,
    /// One-time orders (`one-time-orders-get`).
    pub one_time: Vec<OneTimeOrder>,
}

impl OrderBook {
    /// Why deleting this FarmFlow customer is not allowed under `policy`, if it is not.
    pub fn block_reason(
        &self,
        customer: FarmflowId,
        policy: FarmflowDelete,
        today: NaiveDate,
    ) -> Option<BlockReason> {
        if policy == FarmflowDelete::Never {
            return Some(BlockReason::PolicyNever);
        }
        if let Some(order) = self
            .recurring
            .iter()
            .filter(|o| o.customer_id == customer && o.is_active())
            .min_by_key(|o| o.id)
        {
            return Some(BlockReason::ActiveRecurringOrder { order_id: order.id });
        }
        if policy == FarmflowDelete::ProtectOrders
            && let Some(order) = self
                .one_time
                .iter()
                .filter(|o| o.customer_id == customer && is_upcoming(o, today))
                .min_by_key(|o| o.id)
        {
            return Some(BlockReason::UpcomingOneTimeOrder {
                order_id: order.id,
                fulfill_date: order.fulfill_date.clone(),
            });
        }
        None
    }
}

/// Due today or later; an empty or unreadable date counts as upcoming.
fn is_upcoming(order: &OneTimeOrder, today: NaiveDate) -> bool {
    match NaiveDate::parse_from_str(order.fulfill_date.trim(), "%Y-%m-%d") {
        Ok(date) => date >= today,
        Err(_) => true,
    }
}

/// Everything the plan is made from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// FarmFlow's full list (it has no paging).
    pub farmflow: &'a [FarmflowCustomer],
    /// Every CRM list item seen.
    pub kounta_list: &'a [KountaListItem],
    /// False when the CRM listing was cut short.
    pub kounta_list_complete: bool,
    /// Full CRM records read this run.
    pub kounta_full: &'a HashMap<KountaId, KountaCustomer>,
    /// Every link row.
    pub links: &'a [Link],
    /// Recurring and one-time orders, when read.
    pub orders: Option<&'a OrderBook>,
    /// What reads by id said this run: records a listing left out, and confirmed absences.
    pub direct: &'a DirectReads,
    /// What people decided: conflicts settled by hand, deletions approved or rejected.
    pub decisions: &'a Decisions,
    /// The local date, for "due today or later".
    pub today: NaiveDate,
}

/// What reads by id said this run (DESIGN.md step 5: absence from a list is a question, never
/// an answer). The plan acts on a record's absence only once a read by id answered `404`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirectReads {
    /// FarmFlow customers read by id (`customer-get`): present whatever the list said; they win
    /// over the list's version.
    pub farmflow: BTreeMap<FarmflowId, FarmflowCustomer>,
    /// FarmFlow ids a read by id answered `404` for: absence confirmed.
    pub farmflow_gone: BTreeSet<FarmflowId>,
    /// CRM ids a read by id answered `404` for: absence confirmed.
    pub kounta_gone: BTreeSet<KountaId>,
    /// The order lists were asked for and could not be read: the deletes waiting on them are
    /// blocked for this run (unreadable is not empty).
    pub orders_unreadable: bool,
    /// FarmFlow was asked by id for customers newer than its list showed (see
    /// [`Plan::needs_farmflow_probe`]): `Some(true)` when that probe answered, `Some(false)`
    /// when it failed; what it found is in `farmflow`.
    pub farmflow_probed: Option<bool>,
}

/// What people decided (DESIGN.md, "Operator control"), as the plan carries it out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decisions {
    /// Conflicts settled with `--take`: per link and field, the value both sides must hold
    /// (canonical spelling). Written wherever it differs, then reported carried out.
    pub resolutions: BTreeMap<ReferenceId, BTreeMap<Field, String>>,
    /// Deletions waiting for a person (`[sync] deletes = "approve"`), with the decision made
    /// so far (`None`: still waiting).
    pub queued: BTreeMap<ReferenceId, Option<DeleteDecision>>,
}

/// Why the safety guard stopped destructive actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardReason {
    /// More planned deletions than `max_delete_fraction` of the links.
    TooManyDeletions,
    /// The CRM list came back empty while links exist.
    EmptyKountaList,
    /// The FarmFlow list came back empty while links exist.
    EmptyFarmflowList,
}

/// The safety guard tripped (DESIGN.md step 6): the numbers for `sync.guard.tripped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GuardTrip {
    /// Live links whose record is missing from a complete listing on either side (plus CRM
    /// customers whose `reference_id` names a FarmFlow customer that no longer exists).
    pub planned_deletions: usize,
    /// Links that are not tombstones (plus CRM customers carrying a `reference_id` that no link
    /// row accounts for yet, as after a lost state DB).
    pub live_links: usize,
    /// Which condition tripped.
    pub reason: GuardReason,
}

/// How many actions of each kind a plan holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    /// New links made by matching.
    pub linked: usize,
    /// CRM partial updates.
    pub kounta_updates: usize,
    /// FarmFlow whole-record updates.
    pub farmflow_updates: usize,
    /// Customers created in the CRM.
    pub kounta_creates: usize,
    /// Customers created in FarmFlow.
    pub farmflow_creates: usize,
    /// Conflicts settled.
    pub conflicts: usize,
    /// FarmFlow deletes (before the 404 confirmation).
    pub farmflow_deletes: usize,
    /// Deletes blocked (first seen or retried).
    pub blocked: usize,
    /// CRM customers tagged.
    pub tagged: usize,
    /// CRM customers unlinked.
    pub unlinked: usize,
    /// Links made tombstones without a remote write.
    pub tombstoned: usize,
    /// Customers recreated on either side.
    pub recreated: usize,
    /// Links whose snapshots or verification are refreshed.
    pub refreshed: usize,
    /// Records skipped.
    pub skipped: usize,
    /// Confirmed deletions queued for a person.
    pub queued: usize,
    /// Links parked out of scope.
    pub parked: usize,
}

impl PlanCounts {
    /// Counts the actions of each kind.
    pub fn of(actions: &[Action]) -> PlanCounts {
        let mut c = PlanCounts::default();
        for a in actions {
            let slot = match a {
                Action::Link { .. } => &mut c.linked,
                Action::UpdateKounta { .. } => &mut c.kounta_updates,
                Action::UpdateFarmflow { .. } => &mut c.farmflow_updates,
                Action::CreateKounta(_) => &mut c.kounta_creates,
                Action::CreateFarmflow(_) => &mut c.farmflow_creates,
                Action::Conflict(_) => &mut c.conflicts,
                Action::DeleteFarmflow { .. } => &mut c.farmflow_deletes,
                Action::BlockDelete { .. } => &mut c.blocked,
                Action::TagKounta { .. } => &mut c.tagged,
                Action::UnlinkKounta { .. } => &mut c.unlinked,
                Action::Tombstone { .. } => &mut c.tombstoned,
                Action::RecreateKounta { .. } | Action::RecreateFarmflow { .. } => &mut c.recreated,
                Action::Refresh { .. } => &mut c.refreshed,
                Action::Skip { .. } => &mut c.skipped,
                Action::QueueDelete { .. } => &mut c.queued,
                Action::Park { .. } => &mut c.parked,
                Action::Unqueue { .. } | Action::ResolutionApplied { .. } => continue,
            };
            *slot += 1;
        }
        c
    }
}

/// The result of planning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// In a stable order; each subject's actions stand together (see `sync::action`).
    pub actions: Vec<Action>,
    /// Set when the safety guard tripped (never with `allow_mass_delete`).
    pub guard: Option<GuardTrip>,
    /// Records needing a person: skipped records, reference collisions, unmappable countries.
    pub attention: Vec<Attention>,
    /// A FarmFlow delete was considered but orders were not provided: read them, plan again.
    pub needs_orders: bool,
    /// CRM records that must be read in full before the plan can act on them: read, plan again.
    pub needs_kounta_reads: Vec<KountaId>,
    /// FarmFlow customers missing from its list that must be read by id (`customer-get`) before
    /// the plan acts on their absence: read, plan again.
    pub needs_farmflow_reads: Vec<FarmflowId>,
    /// A customer is to be created in FarmFlow because its list shows no twin: first ask
    /// FarmFlow by id for customers newer than the list (a list that lags, or leaves the newest
    /// out, would hide a twin the grower just typed), then plan again.
    pub needs_farmflow_probe: bool,
    /// How many actions of each kind.
    pub counts: PlanCounts,
}

impl Plan {
    /// How many actions write to either API.
    pub fn remote_writes(&self) -> usize {
        self.actions.iter().filter(|a| a.is_remote_write()).count()
    }

    /// Whether the caller should read more (orders, CRM records) and plan again.
    pub fn wants_more_input(&self) -> bool {
        self.needs_orders
            || !self.needs_kounta_reads.is_empty()
            || !self.needs_farmflow_reads.is_empty()
            || self.needs_farmflow_probe
    }
}

/// The CRM side of a link as this run sees it.
enum CrmView<'a> {
    /// Read in full this run.
    Full(&'a KountaCustomer, Customer),
    /// Listed, not read in full; the listed fields equal the snapshot, so the snapshot stands.
    Unchanged(Customer),
    /// Listed, not read in full, and the listed fields differ from the snapshot.
    ListedChanged,
    /// Missing from a complete listing, and a read by id answered `404`.
    Gone,
    /// Missing from a complete listing, not read by id yet: a question, not an answer.
    Missing,
    /// Missing from an incomplete listing: unknown.
    Unknown,
}

/// The FarmFlow side of a link as this run sees it.
enum FfView<'a> {
    /// In the list, or read by id this run.
    Present(&'a FarmflowCustomer, &'a FromFarmflow),
    /// Missing from the list, and a read by id answered `404`.
    Gone,
    /// Missing from the list, not read by id yet.
    Missing,
}

/// Builds the plan. Pure: see the module documentation.
pub fn plan(input: &PlanInput<'_>, policy: &Policy) -> Plan {
    let world = World::new(input, policy);
    Planner::new(&world).run()
}

/// The inputs, indexed once; read-only while planning.
struct World<'a> {
    input: &'a PlanInput<'a>,
    policy: &'a Policy,
    /// FarmFlow's list, with the records read by id this run in place of (or beside) it.
    farmflow: BTreeMap<FarmflowId, (&'a FarmflowCustomer, FromFarmflow)>,
    /// The ids FarmFlow's list itself showed (the guard counts absence from the list).
    farmflow_listed: BTreeSet<FarmflowId>,
    listed: BTreeMap<KountaId, &'a KountaListItem>,
    full: BTreeMap<KountaId, &'a KountaCustomer>,
    full_mapped: BTreeMap<KountaId, Customer>,
    /// Link rows by FarmFlow id (the link key is derived from it).
    links: BTreeMap<FarmflowId, &'a Link>,
    linked_kounta: BTreeSet<KountaId>,
}

impl<'a> World<'a> {
    fn new(input: &'a PlanInput<'a>, policy: &'a Policy) -> Self {
        let mut farmflow = BTreeMap::new();
        for f in input.direct.farmflow.values() {
            farmflow.insert(f.id, (f, Customer::from_farmflow(&f.fields)));
        }
        // A list that lags can show a customer deleted since: a read by id that answered 404
        // wins over the list.
        for f in input
            .farmflow
            .iter()
            .filter(|f| !input.direct.farmflow_gone.contains(&f.id))
        {
            farmflow
                .entry(f.id)
                .or_insert_with(|| (f, Customer::from_farmflow(&f.fields)));
        }
        let farmflow_listed = input.farmflow.iter().map(|f| f.id).collect();
        let mut listed = BTreeMap::new();
        for item in input.kounta_list {
            listed.entry(item.id).or_insert(item);
        }
        let full: BTreeMap<KountaId, &KountaCustomer> =
            input.kounta_full.iter().map(|(k, v)| (*k, v)).collect();
        let full_mapped = full
            .iter()
            .map(|(k, v)| (*k, Customer::from_kounta(v)))
            .collect();
        let mut links: BTreeMap<FarmflowId, &Link> = BTreeMap::new();
        for l in input.links {
            links.entry(l.farmflow_id).or_insert(l);
        }
        let linked_kounta = links.values().filter_map(|l| l.kounta_id).collect();
        World {
            input,
            policy,
            farmflow,
            farmflow_listed,
            listed,
            full,
            full_mapped,
            links,
            linked_kounta,
        }
    }
}

/// The plan being built.
struct Planner<'a> {
    w: &'a World<'a>,
    actions: Vec<Action>,
    attention: Vec<Attention>,
    needs_orders: bool,
    needs_reads: BTreeSet<KountaId>,
    needs_farmflow_reads: BTreeSet<FarmflowId>,
    needs_farmflow_probe: bool,
    guard: Option<GuardTrip>,
}

impl<'a> Planner<'a> {
    fn new(w: &'a World<'a>) -> Self {
        Planner {
            w,
            actions: Vec::new(),
            attention: Vec::new(),
            needs_orders: false,
            needs_reads: BTreeSet::new(),
            needs_farmflow_reads: BTreeSet::new(),
            needs_farmflow_probe: false,
            guard: None,
        }
    }

    fn run(mut self) -> Plan {
        let matching = self.match_new_records();
        self.guard = self.check_guard(&matching);

        let links: Vec<&Link> = self.w.links.values().copied().collect();
        for link in links {
            self.plan_link(link);
        }
        for pair in &matching.pairs {
            self.plan_new_link(pair);
        }
        for d in &matching.dangling {
            self.plan_dangling(d);
        }
        for c in &matching.collisions {
            self.attention.push(Attention {
                kind: AttentionKind::ReferenceCollision,
                kounta_id: Some(c.kounta_id),
                farmflow_id: Some(c.farmflow_id),
                detail: SkipReason::ReferenceCollision {
                    farmflow_id: c.farmflow_id,
                    linked_to: c.linked_to,
                }
                .to_string(),
            });
            self.actions.push(Action::Skip {
                subject: Subject::Kounta(c.kounta_id),
                reason: SkipReason::ReferenceCollision {
                    farmflow_id: c.farmflow_id,
                    linked_to: c.linked_to,
                },
            });
        }
        for &k in &matching.unread_kounta {
            self.needs_reads.insert(k);
            self.actions.push(Action::Skip {
                subject: Subject::Kounta(k),
                reason: SkipReason::KountaNotRead,
            });
        }
        self.plan_creates_in_kounta(&matching);
        self.plan_creates_in_farmflow(&matching);
        self.report_unmappable_countries();

        let counts = PlanCounts::of(&self.actions);
        Plan {
            actions: self.actions,
            guard: self.guard,
            attention: self.attention,
            needs_orders: self.needs_orders,
            needs_kounta_reads: self.needs_reads.into_iter().collect(),
            needs_farmflow_reads: self.needs_farmflow_reads.into_iter().collect(),
            needs_farmflow_probe: self.needs_farmflow_probe,
            counts,
        }
    }

    // ----- classification ------------------------------------------------------------------

    /// Runs the matching rules over every record without a link row.
    fn match_new_records(&self) -> matching::Matching {
        let mut crm_records: Vec<(KountaId, Customer, Option<ReferenceId>, bool)> = Vec::new();
        let crm_ids: BTreeSet<KountaId> = self
            .w
            .listed
            .keys()
            .chain(self.w.full.keys())
            .copied()
            .collect();
        for id in crm_ids {
            if self.w.linked_kounta.contains(&id) {
                continue;
            }
            match (self.w.full.get(&id), self.w.full_mapped.get(&id)) {
                (Some(record), Some(mapped)) => crm_records.push((
                    id,
                    mapped.clone(),
                    ReferenceId::parse(&record.reference_id),
                    true,
                )),
                _ => {
                    if let Some(item) = self.w.listed.get(&id) {
                        let listed = Customer::from_kounta_listed(item);
                        crm_records.push((id, listed, None, false));
                    }
                }
            }
        }
        let crm: Vec<CrmCandidate<'_>> = crm_records
            .iter()
            .map(|(id, customer, reference, read)| CrmCandidate {
                id: *id,
                customer,
                reference: reference.clone(),
                read: *read,
            })
            .collect();
        let ff: Vec<FfCandidate<'_>> = self
            .w
            .farmflow
            .iter()
            .filter(|(id, _)| !self.w.links.contains_key(id))
            .map(|(id, (_, f))| FfCandidate {
                id: *id,
                customer: &f.customer,
            })
            .collect();
        let known = KnownIds {
            linked_farmflow: self
                .w
                .links
                .iter()
                .map(|(id, l)| (*id, l.kounta_id))
                .collect(),
            existing_farmflow: self.w.farmflow.keys().copied().collect(),
        };
        matching::match_new(&crm, &ff, &known)
    }

    fn crm_view(&self, link: &Link) -> CrmView<'a> {
        let Some(k) = link.kounta_id else {
            return CrmView::Unknown;
        };
        if let (Some(record), Some(mapped)) = (self.w.full.get(&k), self.w.full_mapped.get(&k)) {
            return CrmView::Full(record, mapped.clone());
        }
        match self.w.listed.get(&k) {
            Some(item) => match &link.kounta_snapshot {
                Some(snapshot) if Customer::from_kounta_listed(item).listed_eq(snapshot) => {
                    CrmView::Unchanged(snapshot.clone())
                }
                _ => CrmView::ListedChanged,
            },
            None if !self.w.input.kounta_list_complete => CrmView::Unknown,
            None if self.w.input.direct.kounta_gone.contains(&k) => CrmView::Gone,
            None => CrmView::Missing,
        }
    }

    fn ff_view(&self, id: FarmflowId) -> FfView<'a> {
        match self.w.farmflow.get(&id) {
            Some((record, f)) => FfView::Present(record, f),
            None if self.w.input.direct.farmflow_gone.contains(&id) => FfView::Gone,
            None => FfView::Missing,
        }
    }

    /// Whether the CRM side of a link is missing from a complete listing, whatever a read by
    /// id said since: the guard counts planned deletions before their confirmation.
    fn crm_unlisted(&self, link: &Link) -> bool {
        link.kounta_id
            .is_some_and(|k| self.w.input.kounta_list_complete && !self.w.listed.contains_key(&k))
    }

    /// "Changed" needs a known snapshot that differs (DESIGN.md step 5): a link without one
    /// (written by journal recovery) has not changed, so a person's deletion of its other side
    /// is applied, never undone by a recreation.
    fn farmflow_changed(&self, link: &Link, f: &FromFarmflow) -> bool {
        link.farmflow_snapshot
            .as_ref()
            .is_some_and(|s| !f.customer.eq_normalised(s))
    }

    /// Live links whose record is missing from a complete listing, counted before any 404
    /// confirmation, plus dangling references; and the links the share is taken of.
    fn check_guard(&self, matching: &matching::Matching) -> Option<GuardTrip> {
        let mut planned = matching.dangling.len();
        let mut live = 0;
        for link in self.w.links.values() {
            if link.state == LinkState::Tombstone {
                continue;
            }
            live += 1;
            // A parked link is never deleted (DESIGN.md, "Operator control": scope).
            if link.state != LinkState::Active || link.parked.is_some() {
                continue;
            }
            // Absence from the lists themselves: counted before any read by id confirms it.
            let crm_gone = self.crm_unlisted(link);
            let ff_gone = !self.w.farmflow_listed.contains(&link.farmflow_id);
            if crm_gone || ff_gone {
                planned += 1;
            }
        }
        // CRM customers carrying a reference that no link row accounts for (neither their CRM
        // id nor the FarmFlow id it names has one: a lost state DB) are links in all but name:
        // count them so an empty FarmFlow list cannot tombstone them all. A collision (the
        // FarmFlow id is linked to another CRM customer) is accounted for by that link's row.
        live += self
            .w
            .full
            .iter()
            .filter(|(k, r)| {
                !self.w.linked_kounta.contains(k)
                    && ReferenceId::parse(&r.reference_id)
                        .is_some_and(|rid| !self.w.links.contains_key(&rid.farmflow_id()))
            })
            .count();
        if self.w.policy.allow_mass_delete {
            return None;
        }
        let reason = if live > 0 && self.w.input.farmflow.is_empty() {
            Some(GuardReason::EmptyFarmflowList)
        } else if live > 0
            && self.w.input.kounta_list_complete
            && self.w.input.kounta_list.is_empty()
        {
            Some(GuardReason::EmptyKountaList)
        } else if planned as f64 > self.w.policy.max_delete_fraction * live as f64 {
            Some(GuardReason::TooManyDeletions)
        } else {
            None
        };
        reason.map(|reason| GuardTrip {
            planned_deletions: planned,
            live_links: live,
            reason,
        })
    }

    fn guard_blocks_creates_into_kounta(&self) -> bool {
        matches!(
            self.guard,
            Some(GuardTrip {
                reason: GuardReason::EmptyKountaList,
                ..
            })
        )
    }

    fn guard_blocks_creates_into_farmflow(&self) -> bool {
        matches!(
            self.guard,
            Some(GuardTrip {
                reason: GuardReason::EmptyFarmflowList,
                ..
            })
        )
    }

    // ----- existing links ------------------------------------------------------------------

    fn plan_link(&mut self, link: &'a Link) {
        if link.state == LinkState::Tombstone {
            if self
                .w
                .input
                .decisions
                .queued
                .contains_key(&link.reference_id)
            {
                // Nothing is left to decide: the deletion was carried out, or the twin recreated
                // under a new link, by a run that stopped before it took the entry off the queue
                // (or the record went from both sides meanwhile).
                self.actions.push(Action::Unqueue {
                    reference_id: link.reference_id.clone(),
                    why: "its link is a tombstone; nothing is left to decide",
                });
            }
            if self.w.farmflow.contains_key(&link.farmflow_id) {
                self.skip_link(link, SkipReason::LinkedToTombstone);
                self.attention.push(Attention {
                    kind: AttentionKind::TombstoneReappeared,
                    kounta_id: link.kounta_id,
                    farmflow_id: Some(link.farmflow_id),
                    detail: format!(
                        "farmflow {} exists but its link is a tombstone; it is not synced",
                        link.farmflow_id
                    ),
                });
            }
            return;
        }
        let Some(kounta_id) = link.kounta_id else {
            self.skip_link(link, SkipReason::NoKountaId);
            return;
        };
        let crm = self.crm_view(link);
        if self.plan_parked(link, kounta_id, &crm) {
            return;
        }
        let ff_view = self.ff_view(link.farmflow_id);
        let crm_missing = matches!(crm, CrmView::Missing);
        let ff_missing = matches!(ff_view, FfView::Missing);
        if self.guard.is_none() && (crm_missing || ff_missing) {
            // Absence is a question (DESIGN.md step 5): every action taken because a record is
            // missing from a listing waits for a read by id. A record that reads back is
            // present and is planned as such; a 404 confirms the absence.
            if crm_missing {
                self.needs_reads.insert(kounta_id);
            }
            if ff_missing {
                self.needs_farmflow_reads.insert(link.farmflow_id);
            }
            self.skip_link(link, SkipReason::AbsenceUnconfirmed);
            return;
        }
        // From here on a missing record is only seen with the guard tripped, where every path
        // that would act on its absence stands still.
        let crm = if crm_missing { CrmView::Gone } else { crm };
        let ff = match ff_view {
            FfView::Present(record, f) => Some((record, f)),
            FfView::Gone | FfView::Missing => None,
        };
        let blocked = link.state == LinkState::DeleteBlocked;
        match (crm, ff) {
            (CrmView::Unknown, _) => {
                if ff.is_none() && !blocked && self.guard.is_none() {
                    // Gone from FarmFlow; what the CRM did is unknown until it is read.
                    self.needs_reads.insert(kounta_id);
                    self.skip_link(link, SkipReason::KountaNotRead);
                } else {
                    self.skip_link(link, SkipReason::KountaListIncomplete);
                }
            }
            (CrmView::Gone, Some((record, _))) if blocked => {
                // Retried every run; never recreated in the CRM, whatever FarmFlow did since.
                self.plan_delete(link, record.id, Some(kounta_id));
            }
            (CrmView::Gone, None) => {
                if self.guard.is_some() {
                    self.skip_link(link, SkipReason::GuardTripped);
                } else {
                    self.actions.push(Action::Tombstone {
                        reason: TombstoneReason::DeletedOnBoth,
                        link: LinkAfter {
                            state: LinkState::Tombstone,
                            ..keep(link)
                        },
                    });
                }
            }
            (CrmView::Gone, Some((record, f))) => self.crm_gone(link, record, f),
            (crm, None) => self.farmflow_gone(link, kounta_id, crm),
            (crm, Some((record, f))) => {
                if self
                    .w
                    .input
                    .decisions
                    .queued
                    .contains_key(&link.reference_id)
                {
                    if !self.w.input.direct.farmflow.contains_key(&link.farmflow_id) {
                        // A read by id confirmed a queued deletion; a list showing the record
                        // again may lag behind it. Reappearing is a question too: read it.
                        self.needs_farmflow_reads.insert(link.farmflow_id);
                        self.skip_link(link, SkipReason::AbsenceUnconfirmed);
                        return;
                    }
                    // The record a deletion was queued for reads back: it reappeared.
                    self.actions.push(Action::Unqueue {
                        reference_id: link.reference_id.clone(),
                        why: "the record reappeared",
                    });
                }
                self.plan_merge(link, kounta_id, crm, record, f);
            }
        }
    }

    /// Scope (DESIGN.md, "Operator control"): a CRM customer that carries `pause_tag`, or lacks
    /// a set `kounta_tag`, is parked — the link is kept and marked, nothing is written either
    /// way and nothing deleted, whatever either side does meanwhile. Only a full read can show
    /// tags; until one does, the stored mark stands. Returns whether the link is parked.
    fn plan_parked(&mut self, link: &Link, kounta_id: KountaId, crm: &CrmView<'a>) -> bool {
        let (parked, read) = match crm {
            CrmView::Full(full, _) => (self.w.policy.parked_by(&full.tags), true),
            _ => (link.parked, false),
        };
        let Some(reason) = parked else {
            return false;
        };
        if matches!(crm, CrmView::ListedChanged) {
            // Edited in the CRM: its tags may have changed too.
            self.needs_reads.insert(kounta_id);
        }
        if read || link.parked != Some(reason) {
            self.actions.push(Action::Park {
                reason,
                link: LinkAfter {
                    parked: Some(reason),
                    kounta_read: read,
                    ..keep(link)
                },
            });
        } else {
            self.skip_link(link, SkipReason::Parked { reason });
        }
        true
    }

    fn skip_link(&mut self, link: &Link, reason: SkipReason) {
        self.actions.push(Action::Skip {
            subject: Subject::Link(link.reference_id.clone()),
            reason,
        });
    }

    fn plan_merge(
        &mut self,
        link: &Link,
        kounta_id: KountaId,
        crm: CrmView<'a>,
        record: &FarmflowCustomer,
        f: &FromFarmflow,
    ) {
        match crm {
            CrmView::Full(full, k) => self.merge(MergeInput {
                reference_id: link.reference_id.clone(),
                farmflow_id: link.farmflow_id,
                kounta_id,
                stored: Some(link),
                full: Some(full),
                k,
                farmflow: record,
                f,
            }),
            // The common no-op: neither side moved (FarmFlow's text is exactly its snapshot).
            CrmView::Unchanged(_)
                if link.state == LinkState::Active
                    && link.farmflow_snapshot.as_ref() == Some(&f.customer)
                    && !self
                        .w
                        .input
                        .decisions
                        .resolutions
                        .contains_key(&link.reference_id) => {}
            CrmView::Unchanged(k) => self.merge(MergeInput {
                reference_id: link.reference_id.clone(),
                farmflow_id: link.farmflow_id,
                kounta_id,
                stored: Some(link),
                full: None,
                k,
                farmflow: record,
                f,
            }),
            CrmView::ListedChanged => {
                self.needs_reads.insert(kounta_id);
                self.skip_link(link, SkipReason::KountaNotRead);
            }
            CrmView::Gone | CrmView::Missing | CrmView::Unknown => {}
        }
    }

    // ----- deletions -----------------------------------------------------------------------

    /// Gone from a complete CRM listing (first seen): changed-beats-deleted, else delete.
    fn crm_gone(&mut self, link: &Link, record: &FarmflowCustomer, f: &FromFarmflow) {
        if self.guard.is_some() {
            self.skip_link(link, SkipReason::GuardTripped);
            return;
        }
        if self.farmflow_changed(link, f) {
            let Some(old_kounta_id) = link.kounta_id else {
                return;
            };
            if !self.w.policy.create_in_kounta {
                // The change must not be lost, and nothing may be created: a person decides.
                self.skip_link(link, SkipReason::CreateInKountaOff);
                self.attention.push(Attention {
                    kind: AttentionKind::Skipped,
                    kounta_id: link.kounta_id,
                    farmflow_id: Some(record.id),
                    detail: format!(
                        "crm {old_kounta_id} was deleted but farmflow {} changed since; sync.create_in_kounta is false, so it is neither recreated nor deleted",
                        record.id
                    ),
                });
                return;
            }
            if let Err(reason) = kounta_can_hold(&f.customer) {
                self.skip_link(link, reason.clone());
                self.attention.push(Attention {
                    kind: AttentionKind::Skipped,
                    kounta_id: link.kounta_id,
                    farmflow_id: Some(record.id),
                    detail: format!(
                        "crm {old_kounta_id} was deleted but farmflow {} changed since; it cannot be recreated in the crm: {reason}",
                        record.id
                    ),
                });
                return;
            }
            let create = self.kounta_create(link.reference_id.clone(), record.id, &f.customer);
            self.actions.push(Action::RecreateKounta {
                old_kounta_id,
                create,
            });
            return;
        }
        self.plan_delete(link, record.id, link.kounta_id);
    }

    /// A FarmFlow delete, unless the policy or an order forbids it.
    fn plan_delete(&mut self, link: &Link, farmflow_id: FarmflowId, kounta_id: Option<KountaId>) {
        if self.guard.is_some() {
            self.skip_link(link, SkipReason::GuardTripped);
            return;
        }
        let reason = if self.w.policy.farmflow_delete == FarmflowDelete::Never {
            Some(BlockReason::PolicyNever)
        } else {
            match self.w.input.orders {
                Some(orders) => orders.block_reason(
                    farmflow_id,
                    self.w.policy.farmflow_delete,
                    self.w.input.today,
                ),
                // Unreadable is not "no orders": the delete waits for a run that can read them.
                None if self.w.input.direct.orders_unreadable => {
                    Some(BlockReason::OrdersUnreadable)
                }
                None => {
                    self.needs_orders = true;
                    self.skip_link(link, SkipReason::OrdersNotRead);
                    return;
                }
            }
        };
        match reason {
            Some(reason) => self.actions.push(Action::BlockDelete {
                farmflow_id,
                reason,
                link: LinkAfter {
                    state: LinkState::DeleteBlocked,
                    ..keep(link)
                },
            }),
            None => self.confirmed_deletion(Action::DeleteFarmflow {
                farmflow_id,
                kounta_id,
                link: LinkAfter {
                    state: LinkState::Tombstone,
                    ..keep(link)
                },
            }),
        }
    }

    /// Gone from FarmFlow, present in the CRM: changed-beats-deleted, else show the deletion in
    /// the CRM per policy and tombstone the link.
    fn farmflow_gone(&mut self, link: &Link, kounta_id: KountaId, crm: CrmView<'a>) {
        if self.guard.is_some() {
            self.skip_link(link, SkipReason::GuardTripped);
            return;
        }
        let CrmView::Full(full, k) = crm else {
            // Both the changed-since check and a tag need the full record.
            self.needs_reads.insert(kounta_id);
            self.skip_link(link, SkipReason::KountaNotRead);
            return;
        };
        // "Changed" needs a known, verified snapshot that differs (DESIGN.md step 5).
        let crm_changed = link.kounta_verified
            && link
                .kounta_snapshot
                .as_ref()
                .is_some_and(|s| !k.eq_normalised(s));
        // The deletion was shown already: the CRM customer carries `deleted_tag`, or under
        // `unlink` its `reference_id` is empty (a tag or unlink whose answer was
        // lost, or whose run died before it could tombstone the link). A change made since came
        // after the sync acted on the deletion, as an edit of a tombstone's customer does: the
        // link becomes a tombstone, as it would have had the answer arrived.
        let deleted_tag = self.w.policy.deleted_tag.trim();
        let shown = match self.w.policy.kounta_on_farmflow_delete {
            KountaOnFarmflowDelete::Tag => {
                !deleted_tag.is_empty()
                    && full
                        .tags
                        .iter()
                        .any(|t| t.trim().eq_ignore_ascii_case(deleted_tag))
            }
            KountaOnFarmflowDelete::Unlink => full.reference_id.trim().is_empty(),
            KountaOnFarmflowDelete::Ignore => false,
        };
        // A blocked delete was seen before: changed-beats-deleted applies only at first sight.
        if crm_changed && !shown && link.state == LinkState::Active {
            if !self.w.policy.create_in_farmflow {
                self.skip_link(link, SkipReason::CreateInFarmflowOff);
                self.attention.push(Attention {
                    kind: AttentionKind::Skipped,
                    kounta_id: Some(kounta_id),
                    farmflow_id: Some(link.farmflow_id),
                    detail: format!(
                        "farmflow {} was deleted but crm {kounta_id} changed since; sync.create_in_farmflow is false, so it is neither recreated nor tagged",
                        link.farmflow_id
                    ),
                });
                return;
            }
            if k.first_name.trim().is_empty() {
                self.skip_link(link, SkipReason::NoFirstName);
                self.attention.push(Attention {
                    kind: AttentionKind::Skipped,
                    kounta_id: Some(kounta_id),
                    farmflow_id: Some(link.farmflow_id),
                    detail: format!(
                        "farmflow {} was deleted but crm {kounta_id} changed since; it cannot be recreated in farmflow without a first name",
                        link.farmflow_id
                    ),
                });
                return;
            }
            let create = self.farmflow_create(kounta_id, &k);
            self.actions.push(Action::RecreateFarmflow {
                old_reference_id: link.reference_id.clone(),
                create,
            });
            return;
        }
        let tombstone = LinkAfter {
            state: LinkState::Tombstone,
            kounta_snapshot: Some(k.clone()),
            kounta_read: true,
            kounta_verified: true,
            ..keep(link)
        };
        self.show_farmflow_deletion(full, tombstone, TombstoneReason::DeletedInFarmflow);
    }

    /// Tag, unlink or ignore per policy; the link becomes a tombstone either way.
    fn show_farmflow_deletion(
        &mut self,
        full: &KountaCustomer,
        tombstone: LinkAfter,
        reason: TombstoneReason,
    ) {
        let kounta_id = full.id;
        match self.w.policy.kounta_on_farmflow_delete {
            KountaOnFarmflowDelete::Tag => {
                let tag = self.w.policy.deleted_tag.trim();
                let tagged = full.tags.iter().any(|t| t.trim().eq_ignore_ascii_case(tag));
                if !tagged && !tag.is_empty() {
                    let mut tags = full.tags.clone();
                    tags.push(tag.to_owned());
                    let changes = vec![FieldChange {
                        field: "tags".to_owned(),
                        before: full.tags.join(", "),
                        after: tags.join(", "),
                    }];
                    self.confirmed_deletion(Action::TagKounta {
                        kounta_id,
                        write: KountaCustomerWrite {
                            tags: Some(tags),
                            ..KountaCustomerWrite::default()
                        },
                        changes,
                        link: tombstone,
                    });
                    return;
                }
            }
            KountaOnFarmflowDelete::Unlink => {
                if !full.reference_id.trim().is_empty() {
                    let changes = vec![FieldChange {
                        field: "reference_id".to_owned(),
                        before: full.reference_id.clone(),
                        after: String::new(),
                    }];
                    self.confirmed_deletion(Action::UnlinkKounta {
                        kounta_id,
                        write: KountaCustomerWrite {
                            reference_id: Some(String::new()),
                            ..KountaCustomerWrite::default()
                        },
                        changes,
                        link: tombstone,
                    });
                    return;
                }
            }
            KountaOnFarmflowDelete::Ignore => {}
        }
        self.actions.push(Action::Tombstone {
            reason,
            link: tombstone,
        });
    }

    /// A confirmed deletion (a FarmFlow delete, a CRM tag or unlink): applied at once, or with
    /// `[sync] deletes = "approve"` queued until a person decides. Approved: applied, then off
    /// the queue. Rejected: the deleted side's twin is recreated from the other side, then off
    /// the queue.
    fn confirmed_deletion(&mut self, action: Action) {
        if self.w.policy.deletes == DeleteMode::Auto {
            self.actions.push(action);
            return;
        }
        let Subject::Link(reference_id) = action.subject() else {
            self.actions.push(action);
            return;
        };
        let (kounta_id, farmflow_id, detail) = match &action {
            Action::DeleteFarmflow {
                farmflow_id,
                kounta_id,
                ..
            } => (
                *kounta_id,
                *farmflow_id,
                "deleted in the crm; farmflow's customer would be deleted".to_owned(),
            ),
            Action::TagKounta {
                kounta_id, link, ..
            } => (
                Some(*kounta_id),
                link.farmflow_id,
                "deleted in farmflow; the crm customer would be tagged".to_owned(),
            ),
            Action::UnlinkKounta {
                kounta_id, link, ..
            } => (
                Some(*kounta_id),
                link.farmflow_id,
                "deleted in farmflow; the crm customer would be unlinked".to_owned(),
            ),
            _ => {
                self.actions.push(action);
                return;
            }
        };
        match self.w.input.decisions.queued.get(&reference_id) {
            Some(Some(DeleteDecision::Approved)) => {
                self.actions.push(action);
                self.actions.push(Action::Unqueue {
                    reference_id,
                    why: "approved and applied",
                });
            }
            Some(Some(DeleteDecision::Rejected)) => {
                if self.recreate_rejected(&action, &reference_id) {
                    self.actions.push(Action::Unqueue {
                        reference_id,
                        why: "rejected; the deleted side was recreated",
                    });
                }
            }
            _ => self.actions.push(Action::QueueDelete {
                reference_id,
                would: action.kind(),
                kounta_id,
                farmflow_id,
                detail,
            }),
        }
    }

    /// A rejected deletion: the side that was deleted gets the customer back, made from the
    /// other side. Returns whether a recreation was planned (else it is reported and waits).
    fn recreate_rejected(&mut self, action: &Action, reference_id: &ReferenceId) -> bool {
        match action {
            Action::DeleteFarmflow {
                farmflow_id,
                kounta_id: Some(old_kounta_id),
                ..
            } => {
                let Some((_, f)) = self.w.farmflow.get(farmflow_id) else {
                    return false;
                };
                let customer = f.customer.clone();
                if let Err(reason) = kounta_can_hold(&customer) {
                    self.attention.push(Attention {
                        kind: AttentionKind::Skipped,
                        kounta_id: Some(*old_kounta_id),
                        farmflow_id: Some(*farmflow_id),
                        detail: format!(
                            "the deletion of farmflow {farmflow_id} was rejected, but it cannot be recreated in the crm: {reason}"
                        ),
                    });
                    self.actions.push(Action::Skip {
                        subject: Subject::Link(reference_id.clone()),
                        reason,
                    });
                    return false;
                }
                let create = self.kounta_create(reference_id.clone(), *farmflow_id, &customer);
                self.actions.push(Action::RecreateKounta {
                    old_kounta_id: *old_kounta_id,
                    create,
                });
                true
            }
            Action::TagKounta { kounta_id, .. } | Action::UnlinkKounta { kounta_id, .. } => {
                let Some(k) = self.w.full_mapped.get(kounta_id).cloned() else {
                    return false;
                };
                if k.first_name.trim().is_empty() {
                    self.actions.push(Action::Skip {
                        subject: Subject::Link(reference_id.clone()),
                        reason: SkipReason::NoFirstName,
                    });
                    return false;
                }
                let create = self.farmflow_create(*kounta_id, &k);
                self.actions.push(Action::RecreateFarmflow {
                    old_reference_id: reference_id.clone(),
                    create,
                });
                true
            }
            _ => false,
        }
    }

    /// A CRM customer whose `reference_id` names a FarmFlow customer that no longer exists.
    fn plan_dangling(&mut self, d: &matching::Dangling) {
        let reference_id = ReferenceId::for_farmflow(d.farmflow_id);
        if self.guard.is_some() {
            self.actions.push(Action::Skip {
                subject: Subject::Kounta(d.kounta_id),
                reason: SkipReason::GuardTripped,
            });
            return;
        }
        if let Some(reason) = self
            .w
            .full
            .get(&d.kounta_id)
            .and_then(|r| self.w.policy.parked_by(&r.tags))
        {
            // Out of scope (DESIGN.md, "Operator control"), as a parked link is: the CRM customer
            // is left alone — the deletion neither shown nor, rejected by a person, undone by a
            // recreation in FarmFlow — until it is in scope again.
            self.actions.push(Action::Skip {
                subject: Subject::Kounta(d.kounta_id),
                reason: SkipReason::Parked { reason },
            });
            return;
        }
        if !self.w.input.direct.farmflow_gone.contains(&d.farmflow_id) {
            // Absent from FarmFlow's list only: read it by id before tagging or tombstoning.
            self.needs_farmflow_reads.insert(d.farmflow_id);
            self.actions.push(Action::Skip {
                subject: Subject::Kounta(d.kounta_id),
                reason: SkipReason::AbsenceUnconfirmed,
            });
            return;
        }
        let (Some(full), Some(k)) = (
            self.w.full.get(&d.kounta_id),
            self.w.full_mapped.get(&d.kounta_id),
        ) else {
            return;
        };
        let previous = self.w.links.get(&d.farmflow_id);
        let tombstone = LinkAfter {
            reference_id,
            farmflow_id: d.farmflow_id,
            kounta_id: Some(d.kounta_id),
            state: LinkState::Tombstone,
            kounta_snapshot: Some(k.clone()),
            farmflow_snapshot: previous.and_then(|l| l.farmflow_snapshot.clone()),
            kounta_verified: true,
            kounta_read: true,
            parked: None,
        };
        self.show_farmflow_deletion(full, tombstone, TombstoneReason::DanglingReference);
    }

    // ----- new links and the merge ---------------------------------------------------------

    fn plan_new_link(&mut self, pair: &matching::MatchedPair) {
        let (Some(full), Some(k)) = (
            self.w.full.get(&pair.kounta_id).copied(),
            self.w.full_mapped.get(&pair.kounta_id).cloned(),
        ) else {
            return;
        };
        let Some((record, f)) = self.w.farmflow.get(&pair.farmflow_id) else {
            return;
        };
        if self.w.policy.parked_by(&full.tags) == Some(Parked::Paused) {
            // Left alone both ways, not even linked; matched all the same, so its FarmFlow
            // twin is not created in the CRM either.
            self.actions.push(Action::Skip {
                subject: Subject::Kounta(pair.kounta_id),
                reason: SkipReason::Parked {
                    reason: Parked::Paused,
                },
            });
            return;
        }
        let reference_id = ReferenceId::for_farmflow(pair.farmflow_id);
        self.actions.push(Action::Link {
            rule: pair.rule,
            kounta_id: pair.kounta_id,
            farmflow_id: pair.farmflow_id,
            link: LinkAfter {
                reference_id: reference_id.clone(),
                farmflow_id: pair.farmflow_id,
                kounta_id: Some(pair.kounta_id),
                state: LinkState::Active,
                kounta_snapshot: None,
                farmflow_snapshot: None,
                kounta_verified: false,
                kounta_read: false,
                parked: None,
            },
        });
        self.merge(MergeInput {
            reference_id,
            farmflow_id: pair.farmflow_id,
            kounta_id: pair.kounta_id,
            stored: None,
            full: Some(full),
            k,
            farmflow: record,
            f,
        });
    }

    /// The three-way merge of one link, each side against its own snapshot (DESIGN.md step 3).
    fn merge(&mut self, m: MergeInput<'_>) {
        let stored_k = m.stored.and_then(|l| l.kounta_snapshot.as_ref());
        let stored_f = m.stored.and_then(|l| l.farmflow_snapshot.as_ref());
        let base_k = stored_k.cloned().unwrap_or_default();
        let base_f = stored_f.cloned().unwrap_or_default();
        let fc = &m.f.customer;
        let decided = self
            .w
            .input
            .decisions
            .resolutions
            .get(&m.reference_id)
            .cloned()
            .unwrap_or_default();

        let mut agree = Vec::new();
        let mut to_kounta = Vec::new();
        let mut to_farmflow = Vec::new();
        let mut conflicts = Vec::new();
        let mut chosen: Vec<(Field, String)> = Vec::new();
        for field in Field::ALL {
            if let Some(value) = decided.get(&field) {
                // A person settled a conflict on this field: the chosen value goes wherever it
                // is not held yet, whatever changed since.
                let mut target = Customer::default();
                target.set(field, value.clone());
                let k_holds = Customer::field_eq_normalised(&m.k, &target, field);
                let f_holds = Customer::field_eq_normalised(fc, &target, field);
                if !k_holds {
                    to_kounta.push(field);
                }
                if !f_holds {
                    to_farmflow.push(field);
                }
                if k_holds && f_holds {
                    agree.push(field);
                }
                chosen.push((field, value.clone()));
                continue;
            }
            let direction = self.w.policy.fields.get(field);
            if direction == Direction::None {
                // Never copied: each side keeps its own, and its snapshot follows it.
                agree.push(field);
                continue;
            }
            if field == Field::Country && m.f.unmapped_country.is_some() {
                // FarmFlow's text names no country: it is never copied to the CRM, and only a
                // country change made in the CRM since a known snapshot overwrites it.
                if stored_k.is_some() && !Customer::field_eq_normalised(&m.k, &base_k, field) {
                    to_farmflow.push(field);
                } else {
                    agree.push(field);
                }
                continue;
            }
            if Customer::field_eq_normalised(&m.k, fc, field) {
                agree.push(field);
                continue;
            }
            let k_changed = !Customer::field_eq_normalised(&m.k, &base_k, field);
            let f_changed = !Customer::field_eq_normalised(fc, &base_f, field);
            if field == Field::FirstName && k_changed && m.k.first_name.trim().is_empty() {
                // FarmFlow requires a first name, so a CRM that cleared it cannot pass that on.
                // Both sides' values are taken as seen (no ping-pong); FarmFlow keeps its own.
                agree.push(field);
                self.attention.push(Attention {
                    kind: AttentionKind::Skipped,
                    kounta_id: Some(m.kounta_id),
                    farmflow_id: Some(m.farmflow_id),
                    detail: format!(
                        "crm {} has no first name, which farmflow requires; farmflow {} keeps its own",
                        m.kounta_id, m.farmflow_id
                    ),
                });
                continue;
            }
            match direction {
                // One way only: the source side's change is copied (it is the authority, so
                // there is no conflict); the other side's own change is taken as seen.
                Direction::ToFarmflow => {
                    if k_changed {
                        to_farmflow.push(field);
                    } else {
                        agree.push(field);
                    }
                    continue;
                }
                Direction::ToKounta => {
                    if f_changed {
                        to_kounta.push(field);
                    } else {
                        agree.push(field);
                    }
                    continue;
                }
                Direction::Both | Direction::None => {}
            }
            match (k_changed, f_changed) {
                (true, false) => to_farmflow.push(field),
                (false, true) => to_kounta.push(field),
                (true, true) => {
                    conflicts.push(field);
                    match self.w.policy.conflict_winner {
                        ConflictWinner::Kounta => to_farmflow.push(field),
                        ConflictWinner::Farmflow => to_kounta.push(field),
                    }
                }
                // Neither side moved since its snapshot: a difference the sides cannot hold
                // alike (a CRM phone that falls back to mobile). Writing would only ping-pong.
                (false, false) => {}
            }
        }

        if m.full.is_none() && !to_kounta.is_empty() {
            // A CRM write needs the full current record (partial update, address replaced
            // whole), and a listed-only record may hide a same-field edit: read it first.
            self.needs_reads.insert(m.kounta_id);
            self.actions.push(Action::Skip {
                subject: Subject::Link(m.reference_id),
                reason: SkipReason::KountaNotRead,
            });
            return;
        }
        self.merge_writes(
            &m,
            Flows {
                agree,
                to_kounta,
                to_farmflow,
                conflicts,
                chosen,
            },
        );
    }

    /// Emits a link's writes, each carrying the snapshots as they will be once it and the
    /// link's earlier actions succeeded: a side's snapshot of a field moves only when the
    /// other side holds the value too.
    fn merge_writes(&mut self, m: &MergeInput<'_>, flows: Flows) {
        let Flows {
            agree,
            to_kounta,
            to_farmflow,
            conflicts,
            chosen,
        } = flows;
        let f_now = &m.f.customer;
        // What each side is written from: the other side's record, with a person's chosen
        // values in place.
        let mut fc_source = f_now.clone();
        let mut k_source = m.k.clone();
        for (field, value) in &chosen {
            fc_source.set(*field, value.clone());
            k_source.set(*field, value.clone());
        }
        let full = m.full;
        let mut snap_k = m
            .stored
            .and_then(|l| l.kounta_snapshot.clone())
            .unwrap_or_default();
        let mut snap_f = m
            .stored
            .and_then(|l| l.farmflow_snapshot.clone())
            .unwrap_or_default();
        for &field in &agree {
            snap_k.set(field, m.k.get(field));
            snap_f.set(field, f_now.get(field));
        }
        let read = full.is_some();
        let stored_verified = m.stored.is_some_and(|l| l.kounta_verified);
        let mut verified = if read { true } else { stored_verified };
        let after = |snap_k: &Customer, snap_f: &Customer, verified: bool| LinkAfter {
            reference_id: m.reference_id.clone(),
            farmflow_id: m.farmflow_id,
            kounta_id: Some(m.kounta_id),
            state: LinkState::Active,
            kounta_snapshot: Some(snap_k.clone()),
            farmflow_snapshot: Some(snap_f.clone()),
            kounta_verified: verified,
            kounta_read: read,
            parked: None,
        };
        let mut wrote = false;

        if let Some(full) = full {
            let mut write = customer::kounta_update(full, &fc_source, &to_kounta);
            let k_after = Customer::from_kounta(&customer::kounta_after_write(full, &write));
            let mut changes = field_changes(&m.k, &k_after, &to_kounta);
            if ReferenceId::parse(&full.reference_id).as_ref() != Some(&m.reference_id) {
                write.reference_id = Some(m.reference_id.as_str().to_owned());
                changes.push(FieldChange {
                    field: "reference_id".to_owned(),
                    before: full.reference_id.clone(),
                    after: m.reference_id.as_str().to_owned(),
                });
            }
            if m.stored.is_none()
                && let Some(tags) = self.with_scope_tag(&full.tags)
            {
                // A twin matched in the CRM joins the synced set: it gets the tag.
                changes.push(FieldChange {
                    field: "tags".to_owned(),
                    before: full.tags.join(", "),
                    after: tags.join(", "),
                });
                write.tags = Some(tags);
            }
            for &field in &to_kounta {
                snap_k.set(field, k_after.get(field));
                if !to_farmflow.contains(&field) {
                    snap_f.set(field, f_now.get(field));
                }
            }
            if !customer::kounta_write_is_empty(&write) {
                // A reference-only write changes nothing the snapshot holds.
                if customer::kounta_write_touches_fields(&write) {
                    verified = false;
                }
                wrote = true;
                self.actions.push(Action::UpdateKounta {
                    kounta_id: m.kounta_id,
                    fields: to_kounta.clone(),
                    write,
                    changes,
                    link: after(&snap_k, &snap_f, verified),
                });
            }
        }

        let mut farmflow_refused = false;
        if !to_farmflow.is_empty() {
            let body = customer::farmflow_update(
                &m.farmflow.fields,
                &k_source,
                &to_farmflow,
                self.w.policy.country_format,
            );
            if body.firstname.trim().is_empty() {
                // FarmFlow refuses any update without a first name (its record lacks one and
                // the CRM has none to give): writing would fail every run. The snapshots of
                // these fields stay, so the change is still seen once a first name exists.
                farmflow_refused = true;
                self.attention.push(Attention {
                    kind: AttentionKind::Skipped,
                    kounta_id: Some(m.kounta_id),
                    farmflow_id: Some(m.farmflow_id),
                    detail: format!(
                        "farmflow {} has no first name, which farmflow requires to update it",
                        m.farmflow_id
                    ),
                });
                self.actions.push(Action::Skip {
                    subject: Subject::Link(m.reference_id.clone()),
                    reason: SkipReason::NoFirstName,
                });
            } else {
                let f_after = Customer::from_farmflow(&body).customer;
                for &field in &to_farmflow {
                    snap_f.set(field, f_after.get(field));
                    if !to_kounta.contains(&field) {
                        snap_k.set(field, m.k.get(field));
                    }
                }
                if body != m.farmflow.fields {
                    wrote = true;
                    self.actions.push(Action::UpdateFarmflow {
                        farmflow_id: m.farmflow_id,
                        fields: to_farmflow.clone(),
                        changes: field_changes(f_now, &f_after, &to_farmflow),
                        body,
                        link: after(&snap_k, &snap_f, verified),
                    });
                }
            }
        }

        for field in conflicts {
            if farmflow_refused && to_farmflow.contains(&field) {
                // Not settled this run; it will be seen (and recorded) again.
                continue;
            }
            self.actions.push(Action::Conflict(ConflictRecord {
                reference_id: m.reference_id.clone(),
                field,
                kounta_value: m.k.get(field).to_owned(),
                farmflow_value: f_now.get(field).to_owned(),
                winner: self.w.policy.conflict_winner,
            }));
        }

        if !wrote {
            let link = after(&snap_k, &snap_f, verified);
            let unchanged = m.stored.is_some_and(|l| {
                l.state == LinkState::Active
                    && l.parked.is_none()
                    && l.kounta_snapshot.as_ref() == link.kounta_snapshot.as_ref()
                    && l.farmflow_snapshot.as_ref() == link.farmflow_snapshot.as_ref()
                    && l.kounta_verified == link.kounta_verified
            });
            // A full read is a verification worth recording even when nothing else moved.
            if !unchanged || read {
                self.actions.push(Action::Refresh { link });
            }
        }

        // After the writes: a failed one leaves the decision pending for the next cycle.
        for (field, _) in chosen {
            if farmflow_refused && to_farmflow.contains(&field) {
                continue;
            }
            if to_kounta.contains(&field) && full.is_none() {
                continue;
            }
            self.actions.push(Action::ResolutionApplied {
                reference_id: m.reference_id.clone(),
                field,
            });
        }
    }

    /// The CRM customer's tags with `kounta_tag` added, when it is set and missing.
    fn with_scope_tag(&self, tags: &[String]) -> Option<Vec<String>> {
        let tag = self.w.policy.kounta_tag.trim();
        if tag.is_empty() || tags.iter().any(|t| t.trim().eq_ignore_ascii_case(tag)) {
            return None;
        }
        let mut tags = tags.to_vec();
        tags.push(tag.to_owned());
        Some(tags)
    }

    // ----- creates -------------------------------------------------------------------------

    fn kounta_create(
        &self,
        reference_id: ReferenceId,
        farmflow_id: FarmflowId,
        source: &Customer,
    ) -> KountaCreate {
        let mut write = customer::kounta_create(&self.outbound(source, true), &reference_id);
        if let Some(tags) = self.with_scope_tag(&[]) {
            write.tags = Some(tags);
        }
        let kounta_snapshot = Customer::from_kounta(&customer::kounta_created(&write));
        KountaCreate {
            reference_id,
            farmflow_id,
            write,
            kounta_snapshot,
            farmflow_snapshot: source.clone(),
        }
    }

    fn farmflow_create(&self, kounta_id: KountaId, source: &Customer) -> FarmflowCreate {
        let fields =
            customer::farmflow_create(&self.outbound(source, false), self.w.policy.country_format);
        let farmflow_snapshot = Customer::from_farmflow(&fields).customer;
        FarmflowCreate {
            kounta_id,
            fields,
            kounta_snapshot: source.clone(),
            farmflow_snapshot,
        }
    }

    /// What a create copies: `[fields]` leaves out each field that may not be copied that way,
    /// but the first name, which both systems require.
    fn outbound(&self, source: &Customer, into_kounta: bool) -> Customer {
        let mut out = source.clone();
        for field in Field::ALL {
            let direction = self.w.policy.fields.get(field);
            let allowed = if into_kounta {
                direction.into_kounta()
            } else {
                direction.into_farmflow()
            };
            if !allowed && field != Field::FirstName {
                out.set(field, "");
            }
        }
        out
    }

    fn plan_creates_in_kounta(&mut self, matching: &matching::Matching) {
        let paired: BTreeSet<FarmflowId> = matching.pairs.iter().map(|p| p.farmflow_id).collect();
        let held: BTreeSet<FarmflowId> = matching.held_farmflow.iter().copied().collect();
        // A FarmFlow customer that any CRM customer's reference_id names already has a twin
        // in the CRM, whether or not matching could pick one of the claimants: never create it.
        let claimed: BTreeSet<FarmflowId> = self
            .w
            .full
            .values()
            .filter_map(|r| ReferenceId::parse(&r.reference_id))
            .map(|r| r.farmflow_id())
            .collect();
        let candidates: Vec<FarmflowId> = self
            .w
            .farmflow
            .keys()
            .filter(|id| !self.w.links.contains_key(id) && !paired.contains(id))
            .copied()
            .collect();
        for id in candidates {
            let Some((_, f)) = self.w.farmflow.get(&id) else {
                continue;
            };
            let customer = self.outbound(&f.customer, true);
            let reason = if claimed.contains(&id) {
                self.attention.push(Attention {
                    kind: AttentionKind::ReferenceCollision,
                    kounta_id: None,
                    farmflow_id: Some(id),
                    detail: format!(
                        "farmflow {id} is named by the reference_id of crm customers that could not be told apart; nothing is created"
                    ),
                });
                Some(SkipReason::ReferenceCollision {
                    farmflow_id: id,
                    linked_to: None,
                })
            } else if !self.w.input.kounta_list_complete {
                Some(SkipReason::KountaListIncomplete)
            } else if held.contains(&id) || !matching.unread_kounta.is_empty() {
                Some(SkipReason::UnreadKountaRecords)
            } else if self.guard_blocks_creates_into_kounta() {
                Some(SkipReason::GuardTripped)
            } else if !self.w.policy.create_in_kounta {
                Some(SkipReason::CreateInKountaOff)
            } else {
                kounta_can_hold(&customer).err()
            };
            if let Some(reason) = reason {
                if matches!(reason, SkipReason::NoContact | SkipReason::NoFirstName) {
                    self.attention.push(Attention {
                        kind: AttentionKind::Skipped,
                        kounta_id: None,
                        farmflow_id: Some(id),
                        detail: format!("farmflow {id} is not created in the crm: {reason}"),
                    });
                }
                self.actions.push(Action::Skip {
                    subject: Subject::Farmflow(id),
                    reason,
                });
                continue;
            }
            let create = self.kounta_create(ReferenceId::for_farmflow(id), id, &f.customer.clone());
            self.actions.push(Action::CreateKounta(create));
        }
    }

    fn plan_creates_in_farmflow(&mut self, matching: &matching::Matching) {
        let candidates: Vec<KountaId> = self
            .w
            .full
            .keys()
            .filter(|k| !self.w.linked_kounta.contains(k) && !matching.kounta_settled(**k))
            .copied()
            .collect();
        for kounta_id in candidates {
            let Some(k) = self.w.full_mapped.get(&kounta_id).cloned() else {
                continue;
            };
            let parked = self
                .w
                .full
                .get(&kounta_id)
                .and_then(|r| self.w.policy.parked_by(&r.tags));
            let reason = if let Some(reason) = parked {
                // Out of scope: a walk-in without the tag, or a paused customer.
                Some(SkipReason::Parked { reason })
            } else if !self.w.policy.create_in_farmflow {
                Some(SkipReason::CreateInFarmflowOff)
            } else if self.guard_blocks_creates_into_farmflow() {
                Some(SkipReason::GuardTripped)
            } else if k.first_name.trim().is_empty() {
                Some(SkipReason::NoFirstName)
            } else if self.w.input.direct.farmflow_probed != Some(true) {
                // No twin in FarmFlow's list is a question too: ask for newer customers first.
                if self.w.input.direct.farmflow_probed.is_none() {
                    self.needs_farmflow_probe = true;
                }
                Some(SkipReason::AbsenceUnconfirmed)
            } else {
                None
            };
            if let Some(reason) = reason {
                if reason == SkipReason::NoFirstName {
                    self.attention.push(Attention {
                        kind: AttentionKind::Skipped,
                        kounta_id: Some(kounta_id),
                        farmflow_id: None,
                        detail: format!("crm {kounta_id} is not created in farmflow: {reason}"),
                    });
                }
                self.actions.push(Action::Skip {
                    subject: Subject::Kounta(kounta_id),
                    reason,
                });
                continue;
            }
            let create = self.farmflow_create(kounta_id, &k);
            self.actions.push(Action::CreateFarmflow(create));
        }
    }

    fn report_unmappable_countries(&mut self) {
        for (id, (_, f)) in &self.w.farmflow {
            if let Some(text) = &f.unmapped_country {
                self.attention.push(Attention {
                    kind: AttentionKind::UnmappableCountry,
                    kounta_id: self.w.links.get(id).and_then(|l| l.kounta_id),
                    farmflow_id: Some(*id),
                    detail: format!(
                        "farmflow {id} country {text:?} names no country; left out of crm writes"
                    ),
                });
            }
        }
    }
}

/// How each field of a link flows, as the merge decided.
struct Flows {
    /// Equal on both sides (or never copied): each snapshot takes its side's value.
    agree: Vec<Field>,
    /// Copied into the CRM.
    to_kounta: Vec<Field>,
    /// Copied into FarmFlow.
    to_farmflow: Vec<Field>,
    /// Changed differently on both sides (settled by `conflict_winner`).
    conflicts: Vec<Field>,
    /// Fields a person decided, with the value both sides must hold.
    chosen: Vec<(Field, String)>,
}

/// Before → after of the fields a write sets (those whose text changes).
fn field_changes(before: &Customer, after: &Customer, fields: &[Field]) -> Vec<FieldChange> {
    fields
        .iter()
        .filter(|f| before.get(**f) != after.get(**f))
        .map(|f| FieldChange {
            field: f.name().to_owned(),
            before: before.get(*f).to_owned(),
            after: after.get(*f).to_owned(),
        })
        .collect()
}

struct MergeInput<'m> {
    reference_id: ReferenceId,
    farmflow_id: FarmflowId,
    kounta_id: KountaId,
    /// The link row; `None` for a link made this run.
    stored: Option<&'m Link>,
    /// The CRM record read in full this run.
    full: Option<&'m KountaCustomer>,
    /// The CRM side's canonical record (read, or the snapshot when unchanged).
    k: Customer,
    farmflow: &'m FarmflowCustomer,
    f: &'m FromFarmflow,
}

/// The link row as it is, to be adjusted with struct-update syntax.
fn keep(link: &Link) -> LinkAfter {
    LinkAfter {
        reference_id: link.reference_id.clone(),
        farmflow_id: link.farmflow_id,
        kounta_id: link.kounta_id,
        state: link.state,
        kounta_snapshot: link.kounta_snapshot.clone(),
        farmflow_snapshot: link.farmflow_snapshot.clone(),
        kounta_verified: link.kounta_verified,
        kounta_read: false,
        parked: link.parked,
    }
}

/// Whether the CRM can hold this customer: a first name and an email or phone.
fn kounta_can_hold(c: &Customer) -> Result<(), SkipReason> {
    if !c.has_contact() {
        Err(SkipReason::NoContact)
    } else if c.first_name.trim().is_empty() {
        Err(SkipReason::NoFirstName)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
