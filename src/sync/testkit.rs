//! Test support: an in-memory model of both systems and of the link table, and an applier that
//! carries a plan out the way `sync::apply` is specified to (each subject's actions in order,
//! the rest of a subject skipped after a failure, link rows stored from `LinkAfter`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;

use crate::country::CountryCode;
use crate::customer::{self, Customer};
use crate::farmflow::model::{FarmflowCustomer, FarmflowFields, OneTimeOrder, RecurringOrder};
use crate::ids::{FarmflowId, KountaId, ReferenceId};
use crate::kounta::model::{KountaAddress, KountaCustomer, KountaCustomerWrite, KountaListItem};
use crate::store::{Link, LinkState};
use crate::sync::action::{Action, ConflictRecord, LinkAfter, Subject};
use crate::sync::budget;
use crate::sync::plan::{DirectReads, OrderBook, Plan, PlanInput, plan};
use crate::sync::policy::Policy;

/// How much of the CRM a simulated run reads in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Every CRM record.
    All,
    /// `select_full_reads` with this verification budget, plus what the plan asks for.
    Budget(usize),
}

/// Both systems, the link table, and what happened to them.
#[derive(Debug, Clone)]
pub struct Sim {
    pub crm: BTreeMap<KountaId, KountaCustomer>,
    pub ff: BTreeMap<FarmflowId, FarmflowFields>,
    pub links: BTreeMap<ReferenceId, Link>,
    pub orders: OrderBook,
    pub policy: Policy,
    pub today: NaiveDate,
    pub next_kounta: i64,
    pub next_farmflow: i64,
    pub now: i64,
    /// CRM ids left out of the listing, and whether the listing says it completed.
    pub hidden_from_list: BTreeSet<KountaId>,
    pub list_complete: bool,
    /// FarmFlow ids its list leaves out (a lagging replica); `customer-get` still finds them.
    pub hidden_from_farmflow_list: BTreeSet<FarmflowId>,
    pub conflicts: Vec<ConflictRecord>,
    pub remote_writes: usize,
    pub failed_subjects: Vec<Subject>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim {
            crm: BTreeMap::new(),
            ff: BTreeMap::new(),
            links: BTreeMap::new(),
            orders: OrderBook::default(),
            policy: Policy::default(),
            today: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap_or_default(),
            next_kounta: 5000,
            next_farmflow: 9000,
            now: 1_000_000,
            hidden_from_list: BTreeSet::new(),
            list_complete: true,
            hidden_from_farmflow_list: BTreeSet::new(),
            conflicts: Vec::new(),
            remote_writes: 0,
            failed_subjects: Vec::new(),
        }
    }
}

/// A CRM customer.
pub fn kounta(id: i64, first: &str, last: &str, email: &str, phone: &str) -> KountaCustomer {
    KountaCustomer {
        id: KountaId(id),
        first_name: first.into(),
        last_name: last.into(),
        email: email.into(),
        phone: phone.into(),
        ..KountaCustomer::default()
    }
}

/// A FarmFlow customer's fields.
pub fn farmflow(first: &str, last: &str, email: &str, phone: &str) -> FarmflowFields {
    FarmflowFields {
        firstname: first.into(),
        lastname: last.into(),
        email: email.into(),
        phone: phone.into(),
        ..FarmflowFields::default()
    }
}

/// An address for a CRM customer.
pub fn address(lines: &str, city: &str, country: &str) -> Option<KountaAddress> {
    Some(KountaAddress {
        address: lines.into(),
        city: city.into(),
        country: country.into(),
        ..KountaAddress::default()
    })
}

/// A recurring order.
pub fn recurring(id: i64, customer: i64, status: &str) -> RecurringOrder {
    RecurringOrder {
        id,
        customer_id: FarmflowId(customer),
        status: status.into(),
        start_date: "2026-01-01".into(),
        end_date: String::new(),
    }
}

/// A one-time order.
pub fn one_time(id: i64, customer: i64, fulfill_date: &str) -> OneTimeOrder {
    OneTimeOrder {
        id,
        customer_id: FarmflowId(customer),
        fulfillment: "Delivery".into(),
        fulfill_date: fulfill_date.into(),
    }
}

impl Sim {
    /// Adds a CRM customer.
    pub fn add_kounta(&mut self, c: KountaCustomer) -> KountaId {
        let id = c.id;
        self.crm.insert(id, c);
        id
    }

    /// Adds a FarmFlow customer.
    pub fn add_farmflow(&mut self, id: i64, f: FarmflowFields) -> FarmflowId {
        self.ff.insert(FarmflowId(id), f);
        FarmflowId(id)
    }

    /// The CRM list as the API shows it.
    pub fn kounta_list(&self) -> Vec<KountaListItem> {
        self.crm
            .values()
            .filter(|c| !self.hidden_from_list.contains(&c.id))
            .map(|c| KountaListItem {
                id: c.id,
                first_name: c.first_name.clone(),
                last_name: c.last_name.clone(),
                email: c.email.clone(),
            })
            .collect()
    }

    /// FarmFlow's list.
    pub fn farmflow_list(&self) -> Vec<FarmflowCustomer> {
        self.ff
            .iter()
            .filter(|(id, _)| !self.hidden_from_farmflow_list.contains(id))
            .map(|(id, fields)| FarmflowCustomer {
                id: *id,
                fields: fields.clone(),
            })
            .collect()
    }

    /// The link rows.
    pub fn link_rows(&self) -> Vec<Link> {
        self.links.values().cloned().collect()
    }

    /// The link of a FarmFlow id.
    pub fn link_of(&self, id: FarmflowId) -> Option<&Link> {
        self.links.get(&ReferenceId::for_farmflow(id))
    }

    /// Calls `f` with the input of a run that read no CRM record in full, from a complete
    /// listing, with no orders, no direct reads and no decisions: the tables adjust it
    /// (`PlanInput { direct: &gone, ..input }`) and plan.
    pub fn with_input<R>(&self, f: impl FnOnce(PlanInput<'_>) -> R) -> R {
        let list = self.kounta_list();
        let farmflow = self.farmflow_list();
        let links = self.link_rows();
        let full = HashMap::new();
        let direct = DirectReads::default();
        let decisions = Default::default();
        f(PlanInput {
            farmflow: &farmflow,
            kounta_list: &list,
            kounta_list_complete: true,
            kounta_full: &full,
            links: &links,
            orders: None,
            direct: &direct,
            decisions: &decisions,
            today: self.today,
        })
    }

    /// One plan of a run that read no CRM record in full (see [`Sim::with_input`]).
    pub fn plan_unread(&self) -> Plan {
        self.with_input(|input| plan(&input, &self.policy))
    }

    /// Plans as the run would: read, plan, read what the plan asks for, plan again.
    pub fn plan(&self, reads: Reads) -> Plan {
        let list = self.kounta_list();
        let farmflow = self.farmflow_list();
        let links = self.link_rows();
        let mut wanted: BTreeSet<KountaId> = match reads {
            Reads::All => self.crm.keys().copied().collect(),
            Reads::Budget(n) => {
                let hints = budget::kounta_reads_for_farmflow_changes(&farmflow, &links);
                budget::select_full_reads(&list, &links, &hints, &[], n, None)
                    .into_iter()
                    .collect()
            }
        };
        let mut orders = None;
        let mut attempt = 0;
        let mut farmflow_wanted: BTreeSet<FarmflowId> = BTreeSet::new();
        let mut probed = false;
        loop {
            attempt += 1;
            let full: HashMap<KountaId, KountaCustomer> = wanted
                .iter()
                .filter_map(|k| self.crm.get(k).map(|c| (*k, c.clone())))
                .collect();
            // Reads by id answer from the world itself, whatever the listing showed.
            // The probe finds every customer above the newest one the list shows.
            let newest = farmflow.iter().map(|c| c.id).max().unwrap_or(FarmflowId(0));
            let newer: Vec<FarmflowId> = if probed {
                self.ff.keys().filter(|id| **id > newest).copied().collect()
            } else {
                Vec::new()
            };
            let direct = DirectReads {
                farmflow: farmflow_wanted
                    .iter()
                    .chain(&newer)
                    .filter_map(|id| {
                        self.ff.get(id).map(|fields| {
                            (
                                *id,
                                FarmflowCustomer {
                                    id: *id,
                                    fields: fields.clone(),
                                },
                            )
                        })
                    })
                    .collect(),
                farmflow_gone: farmflow_wanted
                    .iter()
                    .filter(|id| !self.ff.contains_key(id))
                    .copied()
                    .collect(),
                kounta_gone: wanted
                    .iter()
                    .filter(|k| !self.crm.contains_key(k))
                    .copied()
                    .collect(),
                orders_unreadable: false,
                farmflow_probed: probed.then_some(true),
            };
            let input = PlanInput {
                farmflow: &farmflow,
                kounta_list: &list,
                kounta_list_complete: self.list_complete,
                kounta_full: &full,
                links: &links,
                orders,
                direct: &direct,
                decisions: &Default::default(),
                today: self.today,
            };
            let p = plan(&input, &self.policy);
            let again = p.needs_orders && orders.is_none()
                || p.needs_kounta_reads.iter().any(|k| !wanted.contains(k))
                || p.needs_farmflow_reads
                    .iter()
                    .any(|f| !farmflow_wanted.contains(f))
                || p.needs_farmflow_probe && !probed;
            if !again || attempt == 5 {
                return p;
            }
            if p.needs_orders {
                orders = Some(&self.orders);
            }
            wanted.extend(p.needs_kounta_reads.iter().copied());
            farmflow_wanted.extend(p.needs_farmflow_reads.iter().copied());
            probed |= p.needs_farmflow_probe;
        }
    }

    /// Plans and applies one run.
    pub fn sync(&mut self, reads: Reads) -> Plan {
        let p = self.plan(reads);
        self.apply(&p, |_| false);
        p
    }

    /// Carries a plan out. `fail` injects a failure into an action (it is not applied).
    pub fn apply(&mut self, plan: &Plan, mut fail: impl FnMut(&Action) -> bool) {
        self.now += 300;
        let mut failed: BTreeSet<Subject> = BTreeSet::new();
        for action in &plan.actions {
            let subject = action.subject();
            if failed.contains(&subject) {
                continue;
            }
            if fail(action) || !self.apply_one(action) {
                failed.insert(subject.clone());
                self.failed_subjects.push(subject);
            }
        }
    }

    fn store(&mut self, after: &LinkAfter) {
        let previous = self.links.get(&after.reference_id);
        let row = after.to_link(previous, self.now);
        self.links.insert(after.reference_id.clone(), row);
    }

    fn kounta_write(&mut self, id: KountaId, write: &KountaCustomerWrite) -> bool {
        let Some(current) = self.crm.get(&id) else {
            return false;
        };
        if !valid_kounta_country(write) {
            return false;
        }
        let next = customer::kounta_after_write(current, write);
        self.crm.insert(id, next);
        self.remote_writes += 1;
        true
    }

    fn kounta_create(&mut self, write: &KountaCustomerWrite) -> Option<KountaId> {
        let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        if !has(&write.first_name) || !(has(&write.email) || has(&write.phone)) {
            return None;
        }
        if !valid_kounta_country(write) {
            return None;
        }
        self.next_kounta += 1;
        let id = KountaId(self.next_kounta);
        let mut record = customer::kounta_created(write);
        record.id = id;
        self.crm.insert(id, record);
        self.remote_writes += 1;
        Some(id)
    }

    fn farmflow_create(&mut self, fields: &FarmflowFields) -> Option<FarmflowId> {
        if fields.firstname.trim().is_empty() {
            return None;
        }
        self.next_farmflow += 1;
        let id = FarmflowId(self.next_farmflow);
        self.ff.insert(id, fields.clone());
        self.remote_writes += 1;
        Some(id)
    }

    fn apply_one(&mut self, action: &Action) -> bool {
        match action {
            Action::Link { link, .. } | Action::Refresh { link } | Action::Park { link, .. } => {
                self.store(link);
                true
            }
            // Decisions are the state DB's; the simulation keeps none.
            Action::QueueDelete { .. }
            | Action::Unqueue { .. }
            | Action::ResolutionApplied { .. } => true,
            Action::BlockDelete { link, .. } | Action::Tombstone { link, .. } => {
                self.store(link);
                true
            }
            Action::UpdateKounta {
                kounta_id,
                write,
                link,
                ..
            }
            | Action::TagKounta {
                kounta_id,
                write,
                link,
                ..
            }
            | Action::UnlinkKounta {
                kounta_id,
                write,
                link,
                ..
            } => {
                if !self.kounta_write(*kounta_id, write) {
                    return false;
                }
                self.store(link);
                true
            }
            Action::UpdateFarmflow {
                farmflow_id,
                body,
                link,
                ..
            } => {
                if !self.ff.contains_key(farmflow_id) || body.firstname.trim().is_empty() {
                    return false;
                }
                self.ff.insert(*farmflow_id, body.clone());
                self.remote_writes += 1;
                self.store(link);
                true
            }
            Action::CreateKounta(c) | Action::RecreateKounta { create: c, .. } => {
                let Some(id) = self.kounta_create(&c.write) else {
                    return false;
                };
                self.store(&c.link_after(id));
                true
            }
            Action::CreateFarmflow(c) | Action::RecreateFarmflow { create: c, .. } => {
                let Some(id) = self.farmflow_create(&c.fields) else {
                    return false;
                };
                if let Action::RecreateFarmflow {
                    old_reference_id, ..
                } = action
                {
                    self.links.remove(old_reference_id);
                }
                self.store(&c.link_after(id));
                if !self.kounta_write(c.kounta_id, &c.reference_write(id)) {
                    return false;
                }
                self.store(&c.link_after_reference(id));
                true
            }
            Action::Conflict(c) => {
                self.conflicts.push(c.clone());
                true
            }
            Action::DeleteFarmflow {
                farmflow_id,
                kounta_id,
                link,
            } => {
                // The 404 confirmation.
                if kounta_id.is_some_and(|k| self.crm.contains_key(&k)) {
                    return false;
                }
                let refused = self
                    .orders
                    .recurring
                    .iter()
                    .any(|o| o.customer_id == *farmflow_id && o.is_active());
                if refused {
                    let blocked = LinkAfter {
                        state: LinkState::DeleteBlocked,
                        ..link.clone()
                    };
                    self.store(&blocked);
                    return true;
                }
                self.ff.remove(farmflow_id);
                self.orders
                    .recurring
                    .retain(|o| o.customer_id != *farmflow_id);
                self.orders
                    .one_time
                    .retain(|o| o.customer_id != *farmflow_id);
                self.remote_writes += 1;
                self.store(link);
                true
            }
            Action::Skip { .. } => true,
        }
    }

    /// Whether every live link's two records agree in every field, normalised.
    pub fn disagreements(&self) -> Vec<(ReferenceId, Vec<crate::customer::Field>)> {
        let mut out = Vec::new();
        for link in self.links.values() {
            if link.state != LinkState::Active {
                continue;
            }
            let (Some(k), Some(f)) = (
                link.kounta_id.and_then(|k| self.crm.get(&k)),
                self.ff.get(&link.farmflow_id),
            ) else {
                continue;
            };
            let k = Customer::from_kounta(k);
            let f = Customer::from_farmflow(f).customer;
            let fields = k.differing_fields(&f);
            if !fields.is_empty() {
                out.push((link.reference_id.clone(), fields));
            }
        }
        out
    }
}

fn valid_kounta_country(write: &KountaCustomerWrite) -> bool {
    write.primary_address.as_ref().is_none_or(|a| {
        a.country.is_empty()
            || CountryCode::from_alpha2(&a.country).is_some_and(|c| c.alpha2() == a.country)
    })
}
