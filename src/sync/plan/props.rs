//! Property tests: random pairs of worlds and links, and random histories of edits, deletes,
//! runs and failed writes, checked against the plan's promises and DESIGN.md's invariants.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::farmflow::model::FarmflowFields;
use crate::kounta::model::KountaAddress;
use crate::sync::policy::CountryFormat;
use crate::sync::testkit::{Reads, Sim, one_time, recurring};

const FIRST: &[&str] = &["Ann", "ann ", "Bob", "Cy", ""];
const LAST: &[&str] = &["Lee", "Ng", "LEE", ""];
const EMAIL: &[&str] = &["a@x.com", "A@X.com ", "b@x.com", "c@x.com", ""];
const PHONE: &[&str] = &["0400 000 001", "0400000001", "0400 000 002", "", "--"];
const LINES: &[&str] = &["1 Main St", "1 Main St\nUnit 2", "", "9 Side Rd"];
const CITY: &[&str] = &["Hobart", "Perth", ""];
const KOUNTA_COUNTRY: &[&str] = &["AU", "US", "NZ", ""];
const FARMFLOW_COUNTRY: &[&str] = &[
    "Australia",
    "AU",
    "USA",
    "United States",
    "Tasmania",
    "",
    "nz",
];
const DATES: &[&str] = &["2026-02-01", "2026-03-01", "2026-04-01", "", "someday"];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    (0..pool.len()).prop_map(move |i| pool[i].to_owned())
}

/// A CRM customer with id in 1..=8.
fn kounta_customer() -> impl Strategy<Value = KountaCustomer> {
    (
        1i64..=8,
        (pick(FIRST), pick(LAST), pick(EMAIL), pick(PHONE)),
        (
            prop_oneof![Just(String::new()), Just("0411 111 111".to_owned())],
            any::<bool>(),
        ),
        (pick(LINES), pick(CITY), pick(KOUNTA_COUNTRY), any::<bool>()),
        prop_oneof![
            Just(String::new()),
            Just("ABC".to_owned()),
            (11i64..=20).prop_map(|f| format!("farmflow:{f}")),
        ],
    )
        .prop_map(
            |(
                id,
                (first, last, email, phone),
                (mobile, tagged),
                (lines, city, country, has_address),
                reference,
            )| {
                KountaCustomer {
                    id: KountaId(id),
                    first_name: first,
                    last_name: last,
                    email,
                    phone,
                    mobile,
                    reference_id: reference,
                    tags: if tagged {
                        vec!["farmflow-deleted".to_owned()]
                    } else {
                        Vec::new()
                    },
                    primary_address: has_address.then(|| KountaAddress {
                        address: lines,
                        city,
                        state: String::new(),
                        postal_code: String::new(),
                        country,
                    }),
                }
            },
        )
}

/// A FarmFlow customer with id in 11..=18.
fn farmflow_customer() -> impl Strategy<Value = FarmflowCustomer> {
    (
        11i64..=18,
        (pick(FIRST), pick(LAST), pick(EMAIL), pick(PHONE)),
        (
            pick(LINES),
            pick(CITY),
            pick(FARMFLOW_COUNTRY),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(id, (first, last, email, phone), (lines, city, country, company))| {
                let (line1, line2) = lines.split_once('\n').unwrap_or((&lines, ""));
                FarmflowCustomer {
                    id: FarmflowId(id),
                    fields: FarmflowFields {
                        company: if company { "Co".into() } else { String::new() },
                        firstname: first,
                        lastname: last,
                        address: line1.to_owned(),
                        address2: line2.to_owned(),
                        city,
                        state: String::new(),
                        zip: String::new(),
                        phone,
                        email,
                        country,
                        notes: "private".into(),
                    },
                }
            },
        )
}

#[derive(Debug, Clone)]
struct LinkSpec {
    kounta: i64,
    farmflow: i64,
    state: LinkState,
    /// 0: none; 1: the side's current record; 2: a made-up record.
    snap_k: u8,
    snap_f: u8,
    verified: bool,
}

fn link_spec() -> impl Strategy<Value = LinkSpec> {
    (
        1i64..=10,
        11i64..=20,
        prop_oneof![
            4 => Just(LinkState::Active),
            1 => Just(LinkState::DeleteBlocked),
            1 => Just(LinkState::Tombstone),
        ],
        0u8..3,
        0u8..3,
        any::<bool>(),
    )
        .prop_map(
            |(kounta, farmflow, state, snap_k, snap_f, verified)| LinkSpec {
                kounta,
                farmflow,
                state,
                snap_k,
                snap_f,
                verified,
            },
        )
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![Just(ConflictWinner::Kounta), Just(ConflictWinner::Farmflow)],
        prop_oneof![
            Just(FarmflowDelete::Never),
            Just(FarmflowDelete::ProtectOrders),
            Just(FarmflowDelete::Allow)
        ],
        prop_oneof![
            Just(KountaOnFarmflowDelete::Tag),
            Just(KountaOnFarmflowDelete::Unlink),
            Just(KountaOnFarmflowDelete::Ignore)
        ],
        prop_oneof![Just(0.3), Just(0.5), Just(1.0)],
        any::<bool>(),
        prop_oneof![
            Just(CountryFormat::Alpha2),
            Just(CountryFormat::Alpha3),
            Just(CountryFormat::Name)
        ],
    )
        .prop_map(
            |(winner, delete, on_delete, fraction, allow, format)| Policy {
                conflict_winner: winner,
                farmflow_delete: delete,
                kounta_on_farmflow_delete: on_delete,
                deleted_tag: "farmflow-deleted".into(),
                max_delete_fraction: fraction,
                allow_mass_delete: allow,
                country_format: format,
                ..Policy::default()
            },
        )
}

#[derive(Debug, Clone)]
struct WorldSpec {
    crm: Vec<KountaCustomer>,
    ff: Vec<FarmflowCustomer>,
    links: Vec<LinkSpec>,
    made_up: KountaCustomer,
    recurring: Vec<(i64, bool)>,
    one_time: Vec<(i64, String)>,
    policy: Policy,
}

fn world() -> impl Strategy<Value = WorldSpec> {
    (
        prop::collection::vec(kounta_customer(), 0..8),
        prop::collection::vec(farmflow_customer(), 0..8),
        prop::collection::vec(link_spec(), 0..8),
        kounta_customer(),
        prop::collection::vec((11i64..=20, any::<bool>()), 0..3),
        prop::collection::vec((11i64..=20, pick(DATES)), 0..3),
        policy(),
    )
        .prop_map(
            |(crm, ff, links, made_up, recurring, one_time, policy)| WorldSpec {
                crm,
                ff,
                links,
                made_up,
                recurring,
                one_time,
                policy,
            },
        )
}

/// Builds the simulated world: records keyed by id (later duplicates dropped), links unique on
/// both ids as the store guarantees.
fn build(spec: &WorldSpec) -> Sim {
    let mut sim = Sim {
        policy: spec.policy.clone(),
        ..Sim::default()
    };
    for c in &spec.crm {
        sim.crm.entry(c.id).or_insert_with(|| c.clone());
    }
    for f in &spec.ff {
        sim.ff.entry(f.id).or_insert_with(|| f.fields.clone());
    }
    let mut used_k = BTreeSet::new();
    let mut used_f = BTreeSet::new();
    for l in &spec.links {
        if !used_k.insert(l.kounta) || !used_f.insert(l.farmflow) {
            continue;
        }
        let made_up = Customer::from_kounta(&spec.made_up);
        let snap_k = match l.snap_k {
            0 => None,
            1 => sim
                .crm
                .get(&KountaId(l.kounta))
                .map(Customer::from_kounta)
                .or(Some(made_up.clone())),
            _ => Some(made_up.clone()),
        };
        let snap_f = match l.snap_f {
            0 => None,
            1 => sim
                .ff
                .get(&FarmflowId(l.farmflow))
                .map(|f| Customer::from_farmflow(f).customer)
                .or(Some(made_up.clone())),
            _ => Some(made_up),
        };
        let reference_id = ReferenceId::for_farmflow(FarmflowId(l.farmflow));
        sim.links.insert(
            reference_id.clone(),
            Link {
                reference_id,
                farmflow_id: FarmflowId(l.farmflow),
                kounta_id: Some(KountaId(l.kounta)),
                kounta_snapshot: snap_k,
                farmflow_snapshot: snap_f,
                kounta_verified: l.verified,
                state: l.state,
                last_verified_at: None,
                last_synced_at: None,
                last_error: None,
                consecutive_failures: 0,
                parked: None,
            },
        );
    }
    for (i, (customer, active)) in spec.recurring.iter().enumerate() {
        let status = if *active { "active" } else { "cancelled" };
        sim.orders
            .recurring
            .push(recurring(i as i64 + 1, *customer, status));
    }
    for (i, (customer, date)) in spec.one_time.iter().enumerate() {
        sim.orders
            .one_time
            .push(one_time(i as i64 + 1, *customer, date));
    }
    sim
}

/// Plans `sim` directly with the given reads and listing completeness.
fn plan_of(sim: &Sim, full_ids: &BTreeSet<KountaId>, reverse: bool) -> Plan {
    let mut list = sim.kounta_list();
    let mut farmflow = sim.farmflow_list();
    let mut links = sim.link_rows();
    if reverse {
        list.reverse();
        farmflow.reverse();
        links.reverse();
    }
    let full: HashMap<KountaId, KountaCustomer> = full_ids
        .iter()
        .filter_map(|k| sim.crm.get(k).map(|c| (*k, c.clone())))
        .collect();
    plan(
        &PlanInput {
            farmflow: &farmflow,
            kounta_list: &list,
            kounta_list_complete: sim.list_complete,
            kounta_full: &full,
            links: &links,
            orders: Some(&sim.orders),
            direct: &DirectReads::default(),
            decisions: &Default::default(),
            today: sim.today,
        },
        &sim.policy,
    )
}

/// Promises every plan keeps, whatever the world.
fn check_plan_promises(sim: &Sim, p: &Plan) -> Result<(), TestCaseError> {
    let mut linked_k = BTreeSet::new();
    let mut linked_f = BTreeSet::new();
    let mut created_from_k = BTreeSet::new();
    let mut created_from_f = BTreeSet::new();
    for a in &p.actions {
        match a {
            Action::Link {
                kounta_id,
                farmflow_id,
                ..
            } => {
                prop_assert!(linked_k.insert(*kounta_id), "crm {kounta_id} linked twice");
                prop_assert!(
                    linked_f.insert(*farmflow_id),
                    "farmflow {farmflow_id} linked twice"
                );
            }
            Action::CreateKounta(c) => {
                prop_assert!(
                    created_from_f.insert(c.farmflow_id),
                    "two creates for one record"
                );
                prop_assert!(
                    sim.link_of(c.farmflow_id).is_none(),
                    "create for a linked record"
                );
            }
            Action::CreateFarmflow(c) => {
                prop_assert!(
                    created_from_k.insert(c.kounta_id),
                    "two creates for one record"
                );
                prop_assert!(
                    !sim.links.values().any(|l| l.kounta_id == Some(c.kounta_id)),
                    "create for a linked record"
                );
            }
            _ => {}
        }
    }
    prop_assert!(
        linked_k.is_disjoint(&created_from_k),
        "a crm record both linked and created"
    );
    prop_assert!(
        linked_f.is_disjoint(&created_from_f),
        "a farmflow record both linked and created"
    );
    if p.guard.is_some() {
        prop_assert!(
            p.actions.iter().all(|a| !a.is_destructive()),
            "destructive action despite the guard: {:#?}",
            p.actions
        );
    }
    if !sim.list_complete {
        for a in &p.actions {
            // What only a complete CRM listing could justify.
            let inferred = match a {
                Action::DeleteFarmflow { .. }
                | Action::RecreateKounta { .. }
                | Action::CreateKounta(_) => true,
                Action::BlockDelete { link, .. } => sim
                    .links
                    .get(&link.reference_id)
                    .is_some_and(|l| l.state == LinkState::Active),
                Action::Tombstone {
                    reason: TombstoneReason::DeletedOnBoth,
                    ..
                } => true,
                _ => false,
            };
            prop_assert!(!inferred, "inferred from an incomplete listing: {a:?}");
        }
    }
    // Subjects stand together.
    let mut seen = BTreeSet::new();
    let mut last: Option<Subject> = None;
    for a in &p.actions {
        let s = a.subject();
        if last.as_ref() != Some(&s) {
            prop_assert!(seen.insert(s.clone()), "subject {s} split in the plan");
            last = Some(s);
        }
    }
    Ok(())
}

/// DESIGN.md's invariants over the model: no duplicate links, nothing lost.
fn check_world(before: &Sim, after: &Sim, p: &Plan) -> Result<(), TestCaseError> {
    let deleted: BTreeSet<FarmflowId> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteFarmflow { farmflow_id, .. } => Some(*farmflow_id),
            _ => None,
        })
        .collect();
    for id in before.ff.keys() {
        if !after.ff.contains_key(id) {
            prop_assert!(deleted.contains(id), "farmflow {id} lost");
        }
    }
    for id in before.crm.keys() {
        prop_assert!(after.crm.contains_key(id), "crm {id} lost");
    }
    let mut live_k = BTreeSet::new();
    for l in after.links.values() {
        prop_assert_eq!(&l.reference_id, &ReferenceId::for_farmflow(l.farmflow_id));
        if l.state != LinkState::Tombstone
            && let Some(k) = l.kounta_id
        {
            prop_assert!(live_k.insert(k), "crm {k} in two live links");
        }
    }
    Ok(())
}

/// The records an action writes to or is made from.
fn ids_of(a: &Action) -> (Vec<KountaId>, Vec<FarmflowId>) {
    match a {
        Action::UpdateKounta {
            kounta_id, link, ..
        }
        | Action::TagKounta {
            kounta_id, link, ..
        }
        | Action::UnlinkKounta {
            kounta_id, link, ..
        } => (vec![*kounta_id], vec![link.farmflow_id]),
        Action::UpdateFarmflow {
            farmflow_id, link, ..
        }
        | Action::DeleteFarmflow {
            farmflow_id, link, ..
        } => (link.kounta_id.into_iter().collect(), vec![*farmflow_id]),
        Action::CreateKounta(c) => (vec![], vec![c.farmflow_id]),
        Action::RecreateKounta {
            old_kounta_id,
            create,
        } => (vec![*old_kounta_id], vec![create.farmflow_id]),
        Action::CreateFarmflow(c) | Action::RecreateFarmflow { create: c, .. } => {
            (vec![c.kounta_id], vec![])
        }
        _ => (vec![], vec![]),
    }
}

fn write_kinds(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .filter(|a| a.is_remote_write())
        .map(Action::describe)
        .collect()
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Op {
    AddKounta(KountaCustomer),
    AddFarmflow(FarmflowCustomer),
    EditKounta(usize, KountaCustomer),
    EditFarmflow(usize, FarmflowCustomer),
    DeleteKounta(usize),
    DeleteFarmflow(usize),
    /// A run in which writes fail where the mask says so.
    Run(u64),
    LoseStateDb,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => kounta_customer().prop_map(Op::AddKounta),
        2 => farmflow_customer().prop_map(Op::AddFarmflow),
        3 => (any::<usize>(), kounta_customer()).prop_map(|(i, c)| Op::EditKounta(i, c)),
        3 => (any::<usize>(), farmflow_customer()).prop_map(|(i, c)| Op::EditFarmflow(i, c)),
        1 => any::<usize>().prop_map(Op::DeleteKounta),
        1 => any::<usize>().prop_map(Op::DeleteFarmflow),
        4 => any::<u64>().prop_map(Op::Run),
        1 => Just(Op::LoseStateDb),
    ]
}

fn nth_key<K: Copy, V>(map: &BTreeMap<K, V>, i: usize) -> Option<K> {
    if map.is_empty() {
        return None;
    }
    map.keys().nth(i % map.len()).copied()
}

// 256 cases each by default; `PROPTEST_CASES=5000 cargo test props` digs deeper.
proptest! {
    #[test]
    fn plans_are_deterministic_and_keep_their_promises(
        spec in world(),
        hidden in prop::collection::btree_set(1i64..=8, 0..3),
        complete in any::<bool>(),
        read_mask in any::<u16>(),
    ) {
        let mut sim = build(&spec);
        sim.list_complete = complete || hidden.is_empty();
        if !sim.list_complete {
            sim.hidden_from_list = hidden.into_iter().map(KountaId).collect();
        }
        let full: BTreeSet<KountaId> = sim
            .crm
            .keys()
            .filter(|k| read_mask & (1 << (k.0 % 16)) != 0)
            .copied()
            .collect();
        let a = plan_of(&sim, &full, false);
        let b = plan_of(&sim, &full, false);
        prop_assert_eq!(&a, &b);
        let reversed = plan_of(&sim, &full, true);
        prop_assert_eq!(&a, &reversed);
        check_plan_promises(&sim, &a)?;
        for k in &a.needs_kounta_reads {
            prop_assert!(!full.contains(k), "asked to read crm {} again", k);
        }
    }

    #[test]
    fn one_run_converges_and_the_next_writes_nothing(spec in world()) {
        let mut sim = build(&spec);
        let before = sim.clone();
        let first = sim.sync(Reads::All);
        check_plan_promises(&before, &first)?;
        check_world(&before, &sim, &first)?;
        let snapshot = sim.clone();
        let second = sim.sync(Reads::All);
        check_world(&snapshot, &sim, &second)?;
        if first.guard.is_none() {
            // No record the first run wrote (or created) is written again. Records the first
            // run left alone (say, unmatched for want of a first name, or a reference collision)
            // may move once their look-alikes are settled.
            let mut touched_k: BTreeSet<KountaId> =
                snapshot.crm.keys().filter(|k| !before.crm.contains_key(k)).copied().collect();
            let mut touched_f: BTreeSet<FarmflowId> =
                snapshot.ff.keys().filter(|f| !before.ff.contains_key(f)).copied().collect();
            for a in first.actions.iter().filter(|a| a.is_remote_write()) {
                let (k, f) = ids_of(a);
                touched_k.extend(k);
                touched_f.extend(f);
            }
            let stray: Vec<String> = second
                .actions
                .iter()
                .filter(|a| a.is_remote_write())
                .filter(|a| {
                    let (k, f) = ids_of(a);
                    k.iter().any(|k| touched_k.contains(k)) || f.iter().any(|f| touched_f.contains(f))
                })
                .map(Action::describe)
                .collect();
            prop_assert!(
                stray.is_empty(),
                "second run writes {:?} again\nfirst: {:?}",
                stray,
                write_kinds(&first)
            );
        }
        // Whatever happened, a few runs settle it.
        sim.sync(Reads::All);
        let settled = sim.sync(Reads::All);
        prop_assert_eq!(settled.remote_writes(), 0, "{:?}", write_kinds(&settled));
    }

    #[test]
    fn random_histories_keep_the_invariants_and_converge(
        spec in world(),
        ops in prop::collection::vec(op(), 1..25),
        budget in prop_oneof![Just(None), (0usize..4).prop_map(Some)],
    ) {
        let mut sim = build(&spec);
        // Histories start from an honest link table: the one the first run builds.
        sim.links.clear();
        let reads = budget.map_or(Reads::All, Reads::Budget);
        for op in ops {
            match op {
                Op::AddKounta(mut c) => {
                    sim.next_kounta += 1;
                    c.id = KountaId(sim.next_kounta);
                    sim.crm.insert(c.id, c);
                }
                Op::AddFarmflow(f) => {
                    sim.next_farmflow += 1;
                    sim.ff.insert(FarmflowId(sim.next_farmflow), f.fields);
                }
                Op::EditKounta(i, mut c) => {
                    if let Some(k) = nth_key(&sim.crm, i) {
                        // Staff edit contact fields; the reference and tags stay farmsync's.
                        let old = &sim.crm[&k];
                        c.id = k;
                        c.reference_id = old.reference_id.clone();
                        c.tags = old.tags.clone();
                        sim.crm.insert(k, c);
                    }
                }
                Op::EditFarmflow(i, f) => {
                    if let Some(id) = nth_key(&sim.ff, i) {
                        sim.ff.insert(id, f.fields);
                    }
                }
                Op::DeleteKounta(i) => {
                    if let Some(k) = nth_key(&sim.crm, i) {
                        sim.crm.remove(&k);
                    }
                }
                Op::DeleteFarmflow(i) => {
                    if let Some(id) = nth_key(&sim.ff, i) {
                        sim.ff.remove(&id);
                    }
                }
                Op::Run(mask) => {
                    let before = sim.clone();
                    let p = sim.plan(reads);
                    check_plan_promises(&before, &p)?;
                    let mut n = 0u32;
                    sim.apply(&p, |a| {
                        n += 1;
                        a.is_remote_write() && mask & (1 << (n % 64)) != 0 && mask % 3 == 0
                    });
                    check_world(&before, &sim, &p)?;
                }
                Op::LoseStateDb => sim.links.clear(),
            }
        }
        // Changes stop: a few clean runs with every link verified settle everything.
        for _ in 0..3 {
            let before = sim.clone();
            let p = sim.sync(Reads::All);
            check_world(&before, &sim, &p)?;
        }
        let last = sim.sync(Reads::All);
        prop_assert_eq!(last.remote_writes(), 0, "{:?}", write_kinds(&last));
    }
}
