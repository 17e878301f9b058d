//! Table tests for the rules of the sync, each run through the in-memory model of both sides
//! (`sync::testkit`) and, where it matters, checked to converge: the next run writes nothing.

use super::*;
use crate::farmflow::model::FarmflowFields;
use crate::sync::action::MatchRule;
use crate::sync::policy::{CountryFormat, Direction};
use crate::sync::testkit::{Reads, Sim, address, farmflow, kounta, one_time, recurring};

/// A world with one person on both sides, already linked by a first sync.
fn linked() -> (Sim, KountaId, FarmflowId) {
    let mut sim = Sim::default();
    let mut k = kounta(1, "Jamie", "McDonald", "jamie@example.com", "02 8765 4321");
    k.mobile = "0412 345 678".into();
    k.tags = vec!["Newsletter".into()];
    k.primary_address = address("44 Mutton Street\nSuite 5", "Beeftown", "AU");
    let kid = sim.add_kounta(k);
    let mut f = farmflow("Jamie", "McDonald", "Jamie@Example.com", "(02) 8765-4321");
    f.address = "44 Mutton Street".into();
    f.address2 = "Suite 5".into();
    f.city = "Beeftown".into();
    f.country = "Australia".into();
    f.company = "Green Leaf Cafe".into();
    f.notes = "Leave at back door".into();
    let fid = sim.add_farmflow(10, f);
    // Bystanders, so that one deletion stays under the guard's share.
    for i in 1..=3 {
        let email = format!("bystander{i}@example.com");
        sim.add_kounta(kounta(100 + i, "By", "Stander", &email, ""));
        sim.add_farmflow(200 + i, farmflow("By", "Stander", &email, ""));
    }
    let first = sim.sync(Reads::All);
    assert_eq!(first.counts.linked, 4, "{:#?}", first.actions);
    assert_eq!(
        first.counts.kounta_creates + first.counts.farmflow_creates,
        0
    );
    assert_converged(&mut sim);
    (sim, kid, fid)
}

/// [`linked`], then each side edited by a person: `crm` changes the CRM customer, `farmflow`
/// the FarmFlow one.
fn linked_then_edited(
    crm: impl FnOnce(&mut KountaCustomer),
    farmflow: impl FnOnce(&mut FarmflowFields),
) -> (Sim, KountaId, FarmflowId) {
    let (mut sim, kid, fid) = linked();
    crm(sim.crm.get_mut(&kid).unwrap());
    farmflow(sim.ff.get_mut(&fid).unwrap());
    (sim, kid, fid)
}

/// The next run makes no remote write.
fn assert_converged(sim: &mut Sim) {
    let again = sim.sync(Reads::All);
    assert_eq!(
        again.remote_writes(),
        0,
        "expected no writes, got {:#?}",
        again
            .actions
            .iter()
            .filter(|a| a.is_remote_write())
            .collect::<Vec<_>>()
    );
}

/// The plan's actions without the verification refreshes every full read brings.
fn acts(p: &Plan) -> Vec<&Action> {
    p.actions
        .iter()
        .filter(|a| !matches!(a, Action::Refresh { .. }))
        .collect()
}

fn kinds(p: &Plan) -> Vec<&'static str> {
    acts(p).into_iter().map(Action::kind).collect()
}

fn writes(p: &Plan) -> Vec<&'static str> {
    p.actions
        .iter()
        .filter(|a| a.is_remote_write())
        .map(Action::kind)
        .collect()
}

// ----- the change matrix ---------------------------------------------------------------------

#[test]
fn first_run_links_by_email_and_records_a_reference() {
    let (sim, kid, fid) = linked();
    assert_eq!(sim.crm[&kid].reference_id, "farmflow:10");
    let link = sim.link_of(fid).expect("linked");
    assert_eq!(link.kounta_id, Some(kid));
    assert_eq!(link.state, LinkState::Active);
    assert!(sim.disagreements().is_empty());
}

#[test]
fn new_in_farmflow_is_created_in_the_crm_with_its_reference() {
    let (mut sim, _, _) = linked();
    sim.add_farmflow(11, farmflow("Ava", "Stone", "ava@example.com", ""));
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["create_kounta"]);
    let created = sim
        .crm
        .values()
        .find(|c| c.email == "ava@example.com")
        .expect("created");
    assert_eq!(created.reference_id, "farmflow:11");
    let link = sim.link_of(FarmflowId(11)).expect("linked");
    assert_eq!(link.kounta_id, Some(created.id));
    assert!(
        !link.kounta_verified,
        "a create is unverified until read back"
    );
    assert_converged(&mut sim);
    assert!(sim.link_of(FarmflowId(11)).unwrap().kounta_verified);
}

#[test]
fn new_in_crm_is_created_in_farmflow_and_linked_back() {
    let (mut sim, _, _) = linked();
    let mut k = kounta(2, "Bo", "Lam", "bo@example.com", "");
    k.primary_address = address("1 Farm Rd", "Hobart", "US");
    k.reference_id = "ABC123".into();
    sim.add_kounta(k);
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["create_farmflow"]);
    let (fid, f) = sim
        .ff
        .iter()
        .find(|(_, f)| f.email == "bo@example.com")
        .expect("created");
    assert_eq!(f.country, "USA", "written in the default alpha3 format");
    assert_eq!(
        sim.crm[&KountaId(2)].reference_id,
        format!("farmflow:{fid}"),
        "a foreign reference_id is overwritten"
    );
    assert_converged(&mut sim);
}

#[test]
fn changed_in_crm_is_copied_to_farmflow_keeping_its_spelling() {
    let (mut sim, kid, fid) = linked();
    sim.crm.get_mut(&kid).unwrap().email = "jamie@new.example".into();
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["update_farmflow"]);
    let f = &sim.ff[&fid];
    assert_eq!(f.email, "jamie@new.example");
    assert_eq!(
        f.phone, "(02) 8765-4321",
        "unchanged phone keeps its spelling"
    );
    assert_eq!(f.country, "Australia", "unchanged country is not rewritten");
    assert_eq!(f.company, "Green Leaf Cafe");
    assert_eq!(f.notes, "Leave at back door");
    assert_converged(&mut sim);
}

#[test]
fn changed_in_farmflow_is_copied_to_the_crm_phone_not_mobile() {
    let (mut sim, kid, fid) = linked();
    sim.ff.get_mut(&fid).unwrap().phone = "03 1111 2222".into();
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["update_kounta"]);
    let Some(Action::UpdateKounta { write, fields, .. }) =
        p.actions.iter().find(|a| a.kind() == "update_kounta")
    else {
        panic!("no crm update");
    };
    assert_eq!(fields, &vec![Field::Phone]);
    assert_eq!(
        write,
        &KountaCustomerWrite {
            phone: Some("03 1111 2222".into()),
            ..KountaCustomerWrite::default()
        }
    );
    assert_eq!(sim.crm[&kid].mobile, "0412 345 678");
    assert_converged(&mut sim);
}

#[test]
fn a_farmflow_address_edit_sends_the_whole_crm_address() {
    let (mut sim, kid, fid) = linked();
    sim.ff.get_mut(&fid).unwrap().city = "Porkville".into();
    let p = sim.sync(Reads::All);
    let Some(Action::UpdateKounta { write, .. }) =
        p.actions.iter().find(|a| a.kind() == "update_kounta")
    else {
        panic!("no crm update");
    };
    let sent = write.primary_address.as_ref().expect("address sent whole");
    assert_eq!(sent.address, "44 Mutton Street\nSuite 5");
    assert_eq!(sent.city, "Porkville");
    assert_eq!(sent.country, "AU");
    assert_eq!(
        sim.crm[&kid].primary_address.as_ref().unwrap().city,
        "Porkville"
    );
    assert_converged(&mut sim);
}

#[test]
fn a_crm_country_change_is_written_in_the_configured_format() {
    for (format, want) in [
        (CountryFormat::Alpha2, "NZ"),
        (CountryFormat::Alpha3, "NZL"),
        (CountryFormat::Name, "New Zealand"),
    ] {
        let (mut sim, kid, fid) = linked();
        sim.policy.country_format = format;
        sim.crm
            .get_mut(&kid)
            .unwrap()
            .primary_address
            .as_mut()
            .unwrap()
            .country = "NZ".into();
        sim.sync(Reads::All);
        assert_eq!(sim.ff[&fid].country, want);
        assert_converged(&mut sim);
    }
}

#[test]
fn disjoint_edits_on_both_sides_are_merged() {
    let (mut sim, kid, fid) = linked_then_edited(
        |k| k.email = "jamie@crm.example".into(),
        |f| f.city = "Porkville".into(),
    );
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["update_kounta", "update_farmflow"]);
    assert_eq!(p.counts.conflicts, 0);
    assert_eq!(sim.ff[&fid].email, "jamie@crm.example");
    assert_eq!(
        sim.crm[&kid].primary_address.as_ref().unwrap().city,
        "Porkville"
    );
    assert!(sim.disagreements().is_empty());
    assert_converged(&mut sim);
}

#[test]
fn same_field_conflict_is_settled_by_the_winner_and_recorded() {
    for winner in [ConflictWinner::Kounta, ConflictWinner::Farmflow] {
        let (mut sim, kid, fid) = linked();
        sim.policy.conflict_winner = winner;
        sim.crm.get_mut(&kid).unwrap().last_name = "CrmName".into();
        sim.ff.get_mut(&fid).unwrap().lastname = "FfName".into();
        let p = sim.sync(Reads::All);
        let want = match winner {
            ConflictWinner::Kounta => "CrmName",
            ConflictWinner::Farmflow => "FfName",
        };
        assert_eq!(sim.crm[&kid].last_name, want);
        assert_eq!(sim.ff[&fid].lastname, want);
        assert_eq!(
            sim.conflicts,
            vec![ConflictRecord {
                reference_id: ReferenceId::for_farmflow(fid),
                field: Field::LastName,
                kounta_value: "CrmName".into(),
                farmflow_value: "FfName".into(),
                winner,
            }]
        );
        assert_eq!(p.counts.conflicts, 1);
        assert_converged(&mut sim);
        assert_eq!(sim.conflicts.len(), 1, "recorded once");
    }
}

#[test]
fn both_changed_to_the_same_value_is_no_conflict() {
    let (mut sim, _, fid) = linked_then_edited(
        |k| k.email = "same@example.com".into(),
        |f| f.email = "SAME@example.com".into(),
    );
    let p = sim.sync(Reads::All);
    assert_eq!(p.remote_writes(), 0);
    assert_eq!(p.counts.conflicts, 0);
    assert!(p.actions.iter().any(
        |a| matches!(a, Action::Refresh { link } if link.farmflow_id == fid
        && link.kounta_snapshot.as_ref().is_some_and(|s| s.email == "same@example.com"))
    ));
}

#[test]
fn a_new_link_copies_one_sided_fields_and_conflicts_on_differing_ones() {
    let mut sim = Sim::default();
    let mut k = kounta(1, "Ann", "Lee", "ann@example.com", "0400 000 001");
    k.primary_address = address("", "Hobart", "AU");
    sim.add_kounta(k);
    let mut f = farmflow("Ann", "Lee", "ann@example.com", "0400 999 999");
    f.zip = "7000".into();
    sim.add_farmflow(10, f);
    let p = sim.sync(Reads::All);
    assert_eq!(p.counts.linked, 1);
    assert_eq!(p.counts.conflicts, 1, "phone set differently on both sides");
    let k = &sim.crm[&KountaId(1)];
    let f = &sim.ff[&FarmflowId(10)];
    assert_eq!(k.phone, "0400 000 001", "crm wins by default");
    assert_eq!(f.phone, "0400 000 001");
    assert_eq!(f.city, "Hobart");
    assert_eq!(f.country, "AUS");
    assert_eq!(k.primary_address.as_ref().unwrap().postal_code, "7000");
    assert_converged(&mut sim);
}

#[test]
fn deleted_in_the_crm_is_deleted_in_farmflow_after_confirmation() {
    let (mut sim, kid, fid) = linked();
    sim.crm.remove(&kid);
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["delete_farmflow"]);
    assert!(!sim.ff.contains_key(&fid));
    assert_eq!(sim.link_of(fid).unwrap().state, LinkState::Tombstone);
    assert_converged(&mut sim);
}

/// A run that stopped between a decided deletion's write and taking the entry off the queue
/// (killed right after an approved FarmFlow delete or CRM tag, or after a rejected deletion's
/// recreation replaced the link) leaves a tombstone with its entry still queued: the next plan
/// takes it off, or it would wait in `farmsync deletes` and `status` for ever. The crash
/// campaign on a wholesale farm found it (`proof_crash_scope`, 4 of 35 crash points).
#[test]
fn a_queued_deletion_whose_link_is_a_tombstone_leaves_the_queue() {
    let (mut sim, kid, fid) = linked();
    sim.crm.remove(&kid);
    sim.sync(Reads::All);
    assert_eq!(sim.link_of(fid).unwrap().state, LinkState::Tombstone);
    let reference = ReferenceId::for_farmflow(fid);
    let policy = Policy {
        deletes: DeleteMode::Approve,
        ..sim.policy.clone()
    };
    let (links, list, farmflow) = (sim.link_rows(), sim.kounta_list(), sim.farmflow_list());
    let full: HashMap<KountaId, KountaCustomer> =
        sim.crm.iter().map(|(k, c)| (*k, c.clone())).collect();
    for decision in [
        Some(DeleteDecision::Approved),
        Some(DeleteDecision::Rejected),
        None,
    ] {
        let decisions = Decisions {
            queued: [(reference.clone(), decision)].into(),
            ..Decisions::default()
        };
        let input = PlanInput {
            farmflow: &farmflow,
            kounta_list: &list,
            kounta_list_complete: true,
            kounta_full: &full,
            links: &links,
            orders: None,
            direct: &DirectReads::default(),
            decisions: &decisions,
            today: sim.today,
        };
        let p = plan(&input, &policy);
        assert!(
            p.actions.iter().any(|a| matches!(
                a,
                Action::Unqueue { reference_id, .. } if *reference_id == reference
            )),
            "{decision:?}: {:#?}",
            p.actions
        );
        assert_eq!(p.remote_writes(), 0);
    }
}

#[test]
fn a_delete_needs_orders_first() {
    let (mut sim, kid, _) = linked();
    sim.crm.remove(&kid);
    sim.with_input(|input| {
        // Missing from the listing is a question: the first plan asks for a read by id.
        let p = plan(&input, &sim.policy);
        assert_eq!(p.needs_kounta_reads, vec![kid]);
        assert!(!p.needs_orders);
        assert_eq!(kinds(&p), vec!["skip"]);
        assert_eq!(p.remote_writes(), 0);
        // The read answered 404: now the orders.
        let confirmed = DirectReads {
            kounta_gone: [kid].into(),
            ..DirectReads::default()
        };
        let input = PlanInput {
            direct: &confirmed,
            ..input
        };
        let p = plan(&input, &sim.policy);
        assert!(p.needs_orders);
        assert_eq!(kinds(&p), vec!["skip"]);
        let orders = OrderBook::default();
        let p = plan(
            &PlanInput {
                orders: Some(&orders),
                ..input
            },
            &sim.policy,
        );
        assert!(!p.needs_orders);
        assert_eq!(kinds(&p), vec!["delete_farmflow"]);
        // "never" needs no orders.
        let never = Policy {
            farmflow_delete: FarmflowDelete::Never,
            ..sim.policy.clone()
        };
        let p = plan(&input, &never);
        assert!(!p.needs_orders);
        assert_eq!(kinds(&p), vec!["block_delete"]);
    });
}

#[test]
fn deleted_in_farmflow_tags_the_crm_customer_and_never_recreates_it() {
    let (mut sim, kid, fid) = linked();
    sim.ff.remove(&fid);
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["tag_kounta"]);
    assert_eq!(
        sim.crm[&kid].tags,
        vec!["Newsletter".to_owned(), "farmflow-deleted".to_owned()]
    );
    assert_eq!(sim.link_of(fid).unwrap().state, LinkState::Tombstone);
    assert_converged(&mut sim);
    // Even when the CRM customer is edited afterwards.
    sim.crm.get_mut(&kid).unwrap().email = "later@example.com".into();
    assert_converged(&mut sim);
    assert_eq!(sim.ff.len(), 3, "only the bystanders");
}

#[test]
fn deleted_in_farmflow_under_unlink_and_ignore() {
    let (mut sim, kid, fid) = linked();
    sim.policy.kounta_on_farmflow_delete = KountaOnFarmflowDelete::Unlink;
    sim.ff.remove(&fid);
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["unlink_kounta"]);
    assert_eq!(sim.crm[&kid].reference_id, "");
    assert_converged(&mut sim);

    let (mut sim, kid, fid) = linked();
    sim.policy.kounta_on_farmflow_delete = KountaOnFarmflowDelete::Ignore;
    sim.ff.remove(&fid);
    let p = sim.sync(Reads::All);
    assert_eq!(kinds(&p), vec!["tombstone"]);
    assert_eq!(sim.crm[&kid].reference_id, "farmflow:10");
    assert_converged(&mut sim);
}

#[test]
fn an_already_tagged_customer_is_not_tagged_again() {
    let (mut sim, kid, fid) = linked();
    sim.crm
        .get_mut(&kid)
        .unwrap()
        .tags
        .push("FarmFlow-Deleted".into());
    sim.sync(Reads::All);
    sim.ff.remove(&fid);
    let p = sim.sync(Reads::All);
    assert_eq!(kinds(&p), vec!["tombstone"]);
}

/// A run tagged the CRM customer but lost the answer (or died waiting for it), so the link is
/// still live; then a person edited the customer. The edit came after the deletion was shown:
/// the link becomes a tombstone, as it would have had the answer arrived — not a FarmFlow
/// customer recreated beside a CRM one tagged `farmflow-deleted`.
#[test]
fn a_crm_edit_after_a_tag_whose_answer_was_lost_does_not_recreate() {
    let (mut sim, kid, fid) = linked();
    sim.ff.remove(&fid);
    let crm = sim.crm.get_mut(&kid).unwrap();
    crm.tags.push("farmflow-deleted".into());
    crm.email = "later@example.com".into();
    let p = sim.sync(Reads::All);
    assert_eq!(kinds(&p), vec!["tombstone"]);
    assert_eq!(sim.link_of(fid).unwrap().state, LinkState::Tombstone);
    assert_converged(&mut sim);
    assert_eq!(sim.ff.len(), 3, "only the bystanders");
}

/// The same under `unlink`: the CRM customer's `reference_id` was cleared but the answer lost,
/// then a person edited the customer. The link becomes a tombstone; nothing is recreated.
#[test]
fn a_crm_edit_after_an_unlink_whose_answer_was_lost_does_not_recreate() {
    let (mut sim, kid, fid) = linked();
    sim.policy.kounta_on_farmflow_delete = KountaOnFarmflowDelete::Unlink;
    sim.ff.remove(&fid);
    let crm = sim.crm.get_mut(&kid).unwrap();
    crm.reference_id = String::new();
    crm.email = "later@example.com".into();
    let p = sim.sync(Reads::All);
    assert_eq!(kinds(&p), vec!["tombstone"]);
    assert_eq!(sim.link_of(fid).unwrap().state, LinkState::Tombstone);
    assert_converged(&mut sim);
    assert_eq!(sim.ff.len(), 3, "only the bystanders");
    assert_eq!(sim.crm[&kid].reference_id, "");
}

#[test]
fn changed_in_farmflow_but_deleted_in_the_crm_is_recreated_in_the_crm() {
    let (mut sim, kid, fid) = linked();
    sim.crm.remove(&kid);
    sim.ff.get_mut(&fid).unwrap().city = "Porkville".into();
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["recreate_kounta"]);
    assert!(sim.ff.contains_key(&fid), "the edit survives");
    let link = sim.link_of(fid).unwrap();
    let new_k = link.kounta_id.unwrap();
    assert_ne!(new_k, kid);
    assert_eq!(sim.crm[&new_k].reference_id, "farmflow:10");
    assert_eq!(
        sim.crm[&new_k].primary_address.as_ref().unwrap().city,
        "Porkville"
    );
    assert_converged(&mut sim);
}

#[test]
fn changed_in_the_crm_but_deleted_in_farmflow_is_recreated_in_farmflow() {
    let (mut sim, kid, fid) = linked();
    sim.ff.remove(&fid);
    sim.crm.get_mut(&kid).unwrap().email = "jamie@moved.example".into();
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["recreate_farmflow"]);
    assert!(sim.link_of(fid).is_none(), "the old link row is replaced");
    let (new_f, f) = sim
        .ff
        .iter()
        .find(|(_, f)| f.firstname == "Jamie")
        .expect("recreated");
    assert_eq!(f.email, "jamie@moved.example");
    assert_eq!(sim.crm[&kid].reference_id, format!("farmflow:{new_f}"));
    assert_eq!(
        sim.crm[&kid].tags,
        vec!["Newsletter".to_owned()],
        "not tagged"
    );
    assert_converged(&mut sim);
}

#[test]
fn deleted_on_both_sides_becomes_a_tombstone_without_writes() {
    let (mut sim, kid, fid) = linked();
    sim.crm.remove(&kid);
    sim.ff.remove(&fid);
    let p = sim.sync(Reads::All);
    assert_eq!(kinds(&p), vec!["tombstone"]);
    assert_eq!(sim.link_of(fid).unwrap().state, LinkState::Tombstone);
    assert_converged(&mut sim);
}

// ----- matching ------------------------------------------------------------------------------

#[test]
fn first_run_over_overlapping_data_links_by_each_rule_without_duplicates() {
    let mut sim = Sim::default();
    let mut by_ref = kounta(1, "Rae", "Ref", "rae@crm.example", "");
    by_ref.reference_id = "farmflow:10".into();
    sim.add_kounta(by_ref);
    sim.add_farmflow(10, farmflow("Rae", "Ref", "rae@ff.example", ""));
    sim.add_kounta(kounta(2, "Em", "Mail", "EM@example.com", ""));
    sim.add_farmflow(20, farmflow("Emma", "Mail", "em@example.com ", ""));
    sim.add_kounta(kounta(3, "Phil", "Phone", "", "0400 111 222"));
    sim.add_farmflow(
        30,
        farmflow("Phil", "Phone", "phil@example.com", "0400111222"),
    );
    sim.add_kounta(kounta(4, "Nat", "Name", "nat@crm.example", ""));
    sim.add_farmflow(
        40,
        farmflow(" nat ", "NAME", "nat@ff.example", "0400 444 444"),
    );
    let p = sim.sync(Reads::All);
    let rules: Vec<(i64, i64, MatchRule)> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Link {
                rule,
                kounta_id,
                farmflow_id,
                ..
            } => Some((kounta_id.0, farmflow_id.0, *rule)),
            _ => None,
        })
        .collect();
    assert_eq!(
        rules,
        vec![
            (1, 10, MatchRule::ReferenceId),
            (2, 20, MatchRule::Email),
            (3, 30, MatchRule::Phone),
            (4, 40, MatchRule::Name),
        ]
    );
    assert_eq!(p.counts.kounta_creates + p.counts.farmflow_creates, 0);
    assert_eq!(sim.crm.len(), 4);
    assert_eq!(sim.ff.len(), 4);
    assert_converged(&mut sim);
}

#[test]
fn ambiguity_on_every_rule_creates_instead_of_guessing() {
    let mut sim = Sim::default();
    sim.add_kounta(kounta(1, "Sam", "Lee", "sam@example.com", ""));
    sim.add_farmflow(10, farmflow("Sam", "Lee", "sam@example.com", ""));
    sim.add_farmflow(11, farmflow("Sam", "Lee", "sam@example.com", ""));
    let p = sim.sync(Reads::All);
    assert_eq!(p.counts.linked, 0);
    assert_eq!(p.counts.kounta_creates, 2);
    assert_eq!(p.counts.farmflow_creates, 1);
    assert_converged(&mut sim);
}

#[test]
fn a_reference_to_a_customer_linked_elsewhere_is_reported_not_linked_or_created() {
    let (mut sim, _, _) = linked();
    let mut copy = kounta(2, "Jamie", "McDonald", "other@example.com", "");
    copy.reference_id = "farmflow:10".into();
    sim.add_kounta(copy);
    let p = sim.sync(Reads::All);
    assert_eq!(p.remote_writes(), 0);
    assert_eq!(p.counts.linked, 0);
    assert!(
        p.attention.iter().any(
            |a| a.kind == AttentionKind::ReferenceCollision && a.kounta_id == Some(KountaId(2))
        )
    );
    assert!(p.actions.contains(&Action::Skip {
        subject: Subject::Kounta(KountaId(2)),
        reason: SkipReason::ReferenceCollision {
            farmflow_id: FarmflowId(10),
            linked_to: Some(KountaId(1)),
        },
    }));
}

#[test]
fn a_reference_to_a_deleted_farmflow_customer_becomes_a_tombstone() {
    let mut sim = Sim::default();
    let mut k = kounta(1, "Old", "Gone", "old@example.com", "");
    k.reference_id = "farmflow:77".into();
    sim.add_kounta(k);
    for i in 0..3 {
        let mut k = kounta(10 + i, "Live", "One", &format!("l{i}@example.com"), "");
        k.reference_id = format!("farmflow:{}", 100 + i);
        sim.add_kounta(k);
        sim.add_farmflow(
            100 + i,
            farmflow("Live", "One", &format!("l{i}@example.com"), ""),
        );
    }
    let p = sim.sync(Reads::All);
    assert_eq!(
        p.counts.farmflow_creates, 0,
        "never a new farmflow customer"
    );
    assert_eq!(p.counts.tagged, 1);
    let link = sim.link_of(FarmflowId(77)).expect("tombstone row");
    assert_eq!(link.state, LinkState::Tombstone);
    assert_eq!(link.kounta_id, Some(KountaId(1)));
    assert_converged(&mut sim);
}

/// A CRM customer out of scope is left alone when its reference names a deleted FarmFlow
/// customer too, as a parked link is: neither tagged nor (the deletion rejected) recreated in
/// FarmFlow. `sync_model_scope` found the recreation of an untagged one after a lost state DB
/// (`known_scope_a_rejected_dangling_deletion_of_an_untagged_customer`).
#[test]
fn a_reference_to_a_deleted_farmflow_customer_out_of_scope_is_left_alone() {
    for (tags, kounta_tag) in [
        (vec!["farmsync-pause"], ""),
        (vec!["Newsletter"], "wholesale"),
    ] {
        let mut sim = Sim::default();
        sim.policy.kounta_tag = kounta_tag.to_owned();
        let mut k = kounta(1, "Old", "Gone", "old@example.com", "");
        k.reference_id = "farmflow:77".into();
        k.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        sim.add_kounta(k);
        for i in 0..3 {
            let mut k = kounta(10 + i, "Live", "One", &format!("l{i}@example.com"), "");
            k.reference_id = format!("farmflow:{}", 100 + i);
            k.tags = vec!["wholesale".into()];
            sim.add_kounta(k);
            sim.add_farmflow(
                100 + i,
                farmflow("Live", "One", &format!("l{i}@example.com"), ""),
            );
        }
        let p = sim.sync(Reads::All);
        assert_eq!(p.counts.tagged, 0, "{tags:?}: {:#?}", p.actions);
        assert_eq!(p.counts.farmflow_creates + p.counts.recreated, 0);
        assert!(sim.link_of(FarmflowId(77)).is_none(), "{tags:?}");
        assert!(
            p.actions.iter().any(|a| matches!(
                a,
                Action::Skip {
                    subject: Subject::Kounta(KountaId(1)),
                    reason: SkipReason::Parked { .. },
                }
            )),
            "{:#?}",
            p.actions
        );
        assert_converged(&mut sim);
    }
}

#[test]
fn a_lost_state_db_relinks_through_reference_ids_with_no_creates() {
    let mut sim = Sim::default();
    sim.add_kounta(kounta(1, "A", "One", "a@example.com", ""));
    sim.add_farmflow(10, farmflow("B", "Two", "b@example.com", "0400 000 002"));
    sim.add_kounta(kounta(2, "C", "Three", "c@example.com", ""));
    sim.add_farmflow(20, farmflow("C", "Three", "c@example.com", ""));
    sim.sync(Reads::All);
    assert_converged(&mut sim);
    let before = sim.links.len();
    sim.links.clear();
    let p = sim.sync(Reads::All);
    assert_eq!(p.counts.linked, before);
    assert!(
        p.actions.iter().all(|a| match a {
            Action::Link { rule, .. } => *rule == MatchRule::ReferenceId,
            _ => true,
        }),
        "{:#?}",
        p.actions
    );
    assert_eq!(p.remote_writes(), 0, "{:#?}", p.actions);
}

// ----- guard ---------------------------------------------------------------------------------

fn many_linked(n: i64) -> Sim {
    let mut sim = Sim::default();
    for i in 0..n {
        sim.add_kounta(kounta(
            i + 1,
            "P",
            &format!("{i}"),
            &format!("p{i}@example.com"),
            "",
        ));
        sim.add_farmflow(
            100 + i,
            farmflow("P", &format!("{i}"), &format!("p{i}@example.com"), ""),
        );
    }
    let p = sim.sync(Reads::All);
    assert_eq!(p.counts.linked, n as usize);
    sim
}

#[test]
fn guard_trips_on_an_empty_crm_list() {
    let mut sim = many_linked(5);
    sim.crm.clear();
    sim.add_farmflow(200, farmflow("New", "Person", "new@example.com", ""));
    let p = sim.sync(Reads::All);
    assert_eq!(
        p.guard.map(|g| g.reason),
        Some(GuardReason::EmptyKountaList)
    );
    assert_eq!(
        p.remote_writes(),
        0,
        "nothing deleted, nothing created into the empty crm"
    );
    assert!(p.actions.iter().all(|a| !a.is_destructive()));
    assert_eq!(sim.ff.len(), 6);
}

#[test]
fn guard_trips_on_an_empty_farmflow_list() {
    let mut sim = many_linked(5);
    sim.ff.clear();
    sim.add_kounta(kounta(99, "New", "Person", "new@example.com", ""));
    let p = sim.sync(Reads::All);
    assert_eq!(
        p.guard.map(|g| g.reason),
        Some(GuardReason::EmptyFarmflowList)
    );
    assert_eq!(p.remote_writes(), 0);
    assert!(sim.crm.values().all(|c| c.tags.is_empty()));
}

#[test]
fn guard_trips_on_mass_deletion_yet_updates_still_apply() {
    let mut sim = many_linked(10);
    for i in 1..=6 {
        sim.crm.remove(&KountaId(i));
    }
    sim.crm.get_mut(&KountaId(10)).unwrap().email = "moved@example.com".into();
    let p = sim.sync(Reads::All);
    let guard = p.guard.expect("tripped");
    assert_eq!(guard.planned_deletions, 6);
    assert_eq!(guard.live_links, 10);
    assert_eq!(guard.reason, GuardReason::TooManyDeletions);
    assert!(p.actions.iter().all(|a| !a.is_destructive()));
    assert_eq!(sim.ff.len(), 10);
    assert_eq!(sim.ff[&FarmflowId(109)].email, "moved@example.com");

    sim.policy.allow_mass_delete = true;
    let p = sim.sync(Reads::All);
    assert!(p.guard.is_none());
    assert_eq!(p.counts.farmflow_deletes, 6);
    assert_eq!(sim.ff.len(), 4);
}

#[test]
fn guard_counts_changed_vs_deleted_but_not_blocked_retries() {
    let mut sim = many_linked(4);
    sim.orders.recurring.push(recurring(1, 100, "active"));
    sim.crm.remove(&KountaId(1));
    let p = sim.sync(Reads::All);
    assert!(p.guard.is_none(), "1 of 4 is within the default half");
    assert_eq!(p.counts.blocked, 1);
    // Now two more go, one of them edited in FarmFlow (a recreation, which counts).
    sim.crm.remove(&KountaId(2));
    sim.crm.remove(&KountaId(3));
    sim.ff.get_mut(&FarmflowId(102)).unwrap().city = "Edited".into();
    let p = sim.plan(Reads::All);
    assert!(
        p.guard.is_none(),
        "2 of 4 is not more than half: {:?}",
        p.guard
    );
    sim.policy.max_delete_fraction = 0.4;
    let p = sim.plan(Reads::All);
    assert_eq!(p.guard.map(|g| g.planned_deletions), Some(2));
}

#[test]
fn an_incomplete_crm_listing_infers_no_deletion_and_creates_nothing_in_the_crm() {
    let (mut sim, kid, fid) = linked();
    sim.add_kounta(kounta(2, "Seen", "Person", "seen@example.com", ""));
    sim.add_farmflow(20, farmflow("Seen", "Person", "seen@example.com", ""));
    sim.sync(Reads::All);
    sim.hidden_from_list.insert(kid);
    sim.list_complete = false;
    sim.add_farmflow(30, farmflow("New", "Person", "new@example.com", ""));
    sim.ff.get_mut(&FarmflowId(20)).unwrap().city = "Updated".into();
    let p = sim.sync(Reads::Budget(0));
    assert!(sim.ff.contains_key(&fid));
    assert_eq!(p.counts.farmflow_deletes + p.counts.kounta_creates, 0);
    assert!(p.actions.contains(&Action::Skip {
        subject: Subject::Farmflow(FarmflowId(30)),
        reason: SkipReason::KountaListIncomplete,
    }));
    assert_eq!(
        sim.crm[&KountaId(2)].primary_address.as_ref().unwrap().city,
        "Updated",
        "updates to seen records still go through"
    );
}

// ----- blocked deletes -----------------------------------------------------------------------

fn deleted_in_crm() -> (Sim, KountaId, FarmflowId) {
    let (mut sim, kid, fid) = linked();
    sim.crm.remove(&kid);
    (sim, kid, fid)
}

#[test]
fn an_active_recurring_order_blocks_the_delete_until_released() {
    let (mut sim, _, fid) = deleted_in_crm();
    sim.orders.recurring.push(recurring(7, fid.0, "active"));
    let p = sim.sync(Reads::All);
    assert_eq!(
        acts(&p),
        vec![&Action::BlockDelete {
            farmflow_id: fid,
            reason: BlockReason::ActiveRecurringOrder { order_id: 7 },
            link: LinkAfter {
                state: LinkState::DeleteBlocked,
                ..keep(sim.link_of(fid).unwrap())
            },
        }]
    );
    assert_eq!(sim.link_of(fid).unwrap().state, LinkState::DeleteBlocked);
    // Retried every run, FarmFlow edits notwithstanding: never recreated in the CRM.
    sim.ff.get_mut(&fid).unwrap().city = "Edited".into();
    let p = sim.sync(Reads::All);
    assert_eq!(kinds(&p), vec!["block_delete"]);
    assert_eq!(sim.crm.len(), 3, "only the bystanders");
    // Released.
    sim.orders.recurring[0].status = "cancelled".into();
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["delete_farmflow"]);
    assert!(!sim.ff.contains_key(&fid));
    assert_converged(&mut sim);
}

#[test]
fn one_time_orders_block_under_protect_orders_only() {
    let today = Sim::default().today;
    let table = [
        // (fulfill date, protect-orders blocks?)
        ("2026-03-01", true),
        ("2026-03-02", true),
        ("2026-02-28", false),
        ("", true),
        ("soon", true),
    ];
    assert_eq!(today.to_string(), "2026-03-01");
    for (date, blocks) in table {
        let (mut sim, _, fid) = deleted_in_crm();
        sim.orders.one_time.push(one_time(3, fid.0, date));
        let p = sim.plan(Reads::All);
        assert_eq!(p.counts.blocked == 1, blocks, "{date:?}: {:?}", kinds(&p));
        assert_eq!(p.counts.farmflow_deletes == 1, !blocks, "{date:?}");
        sim.policy.farmflow_delete = FarmflowDelete::Allow;
        let p = sim.plan(Reads::All);
        assert_eq!(
            p.counts.farmflow_deletes, 1,
            "allow ignores one-time orders"
        );
    }
}

#[test]
fn paused_recurring_orders_and_other_customers_orders_do_not_block() {
    let (mut sim, _, fid) = deleted_in_crm();
    sim.orders.recurring.push(recurring(1, fid.0, "paused"));
    sim.orders.recurring.push(recurring(2, fid.0 + 1, "active"));
    sim.orders
        .one_time
        .push(one_time(3, fid.0 + 1, "2099-01-01"));
    let p = sim.plan(Reads::All);
    assert_eq!(kinds(&p), vec!["delete_farmflow"]);
}

#[test]
fn farmflow_delete_never_blocks_every_delete() {
    let (mut sim, _, fid) = deleted_in_crm();
    sim.policy.farmflow_delete = FarmflowDelete::Never;
    let p = sim.sync(Reads::All);
    assert!(matches!(
        acts(&p).as_slice(),
        [Action::BlockDelete {
            reason: BlockReason::PolicyNever,
            ..
        }]
    ));
    assert!(sim.ff.contains_key(&fid));
    assert_converged(&mut sim);
}

#[test]
fn a_refused_delete_becomes_blocked_and_is_retried() {
    let (mut sim, _, fid) = deleted_in_crm();
    sim.policy.farmflow_delete = FarmflowDelete::Allow;
    // FarmFlow refuses: an active order the plan did not know about.
    let p = sim.plan(Reads::All);
    sim.orders.recurring.push(recurring(9, fid.0, "active"));
    sim.apply(&p, |_| false);
    assert_eq!(sim.link_of(fid).unwrap().state, LinkState::DeleteBlocked);
    let p = sim.sync(Reads::All);
    assert_eq!(kinds(&p), vec!["block_delete"]);
}

// ----- reading on a budget -------------------------------------------------------------------

#[test]
fn an_unread_crm_record_with_unchanged_listed_fields_counts_as_unchanged() {
    let (mut sim, _, _) = linked();
    let p = sim.plan(Reads::Budget(0));
    assert!(p.actions.is_empty(), "{:#?}", p.actions);
    assert!(p.guard.is_none());
    assert!(p.needs_kounta_reads.is_empty());
    assert_converged(&mut sim);
}

#[test]
fn an_unread_crm_record_with_changed_listed_fields_waits_for_its_read() {
    let (mut sim, kid, fid) = linked();
    sim.crm.get_mut(&kid).unwrap().email = "changed@example.com".into();
    let p = sim.plan_unread();
    assert_eq!(p.remote_writes(), 0);
    assert_eq!(p.needs_kounta_reads, vec![kid]);
    assert_eq!(sim.ff[&fid].email, "Jamie@Example.com");
    sim.sync(Reads::Budget(0));
    assert_eq!(sim.ff[&fid].email, "changed@example.com");
    assert_converged(&mut sim);
}

#[test]
fn a_farmflow_change_reads_the_crm_record_before_writing_it() {
    let (mut sim, kid, fid) = linked();
    sim.ff.get_mut(&fid).unwrap().email = "ff@example.com".into();
    let p = sim.plan_unread();
    assert_eq!(p.needs_kounta_reads, vec![kid]);
    assert_eq!(p.remote_writes(), 0);
    let p = sim.sync(Reads::Budget(0));
    assert_eq!(writes(&p), vec!["update_kounta"]);
    assert_eq!(sim.crm[&kid].email, "ff@example.com");
}

#[test]
fn new_crm_records_not_read_hold_creates_into_the_crm() {
    let (sim, _, _) = linked();
    let mut sim = sim;
    sim.add_kounta(kounta(2, "Twin", "Maybe", "twin@example.com", ""));
    sim.add_farmflow(20, farmflow("Twin", "Maybe", "", "0400 123 123"));
    let p = sim.plan_unread();
    assert_eq!(p.counts.kounta_creates, 0);
    assert_eq!(p.needs_kounta_reads, vec![KountaId(2)]);
    let p = sim.sync(Reads::Budget(0));
    assert_eq!(p.counts.linked, 1, "{:#?}", p.actions);
    assert_eq!(p.counts.kounta_creates, 0);
}

#[test]
fn unverified_crm_writes_are_verified_by_the_next_read() {
    let (mut sim, kid, fid) = linked();
    sim.ff.get_mut(&fid).unwrap().phone = "0400 555 555".into();
    sim.sync(Reads::All);
    assert!(!sim.link_of(fid).unwrap().kounta_verified);
    let p = sim.sync(Reads::Budget(0));
    assert_eq!(p.remote_writes(), 0);
    assert!(sim.link_of(fid).unwrap().kounta_verified);
    assert_eq!(sim.link_of(fid).unwrap().kounta_id, Some(kid));
}

// ----- mapping cases -------------------------------------------------------------------------

#[test]
fn an_unmappable_farmflow_country_is_reported_and_never_overwritten() {
    let mut sim = Sim::default();
    let mut k = kounta(1, "Tas", "Grower", "tas@example.com", "");
    k.primary_address = address("1 Hill Rd", "Hobart", "AU");
    sim.add_kounta(k);
    let mut f = farmflow("Tas", "Grower", "tas@example.com", "");
    f.country = "Tasmania".into();
    sim.add_farmflow(10, f);
    let p = sim.sync(Reads::All);
    assert!(
        p.attention
            .iter()
            .any(|a| a.kind == AttentionKind::UnmappableCountry && a.detail.contains("Tasmania"))
    );
    assert_eq!(sim.ff[&FarmflowId(10)].country, "Tasmania");
    assert_eq!(
        sim.crm[&KountaId(1)]
            .primary_address
            .as_ref()
            .unwrap()
            .country,
        "AU"
    );
    assert_converged(&mut sim);
    // A country change made in the CRM later is a real edit and is written.
    sim.crm
        .get_mut(&KountaId(1))
        .unwrap()
        .primary_address
        .as_mut()
        .unwrap()
        .country = "NZ".into();
    sim.sync(Reads::All);
    assert_eq!(sim.ff[&FarmflowId(10)].country, "NZL");
    assert_converged(&mut sim);
}

#[test]
fn an_unmappable_country_is_left_out_of_crm_creates() {
    let mut sim = Sim::default();
    let mut f = farmflow("Tas", "Grower", "tas@example.com", "");
    f.country = "Tasmania".into();
    f.city = "Hobart".into();
    sim.add_farmflow(10, f);
    sim.sync(Reads::All);
    let k = sim.crm.values().next().expect("created");
    assert_eq!(k.primary_address.as_ref().unwrap().country, "");
    assert_eq!(sim.ff[&FarmflowId(10)].country, "Tasmania");
    assert_converged(&mut sim);
}

#[test]
fn a_farmflow_customer_without_contact_is_skipped_and_reported() {
    let mut sim = Sim::default();
    sim.add_farmflow(10, farmflow("No", "Contact", "", " - "));
    let p = sim.sync(Reads::All);
    assert_eq!(
        p.actions,
        vec![Action::Skip {
            subject: Subject::Farmflow(FarmflowId(10)),
            reason: SkipReason::NoContact,
        }]
    );
    assert_eq!(p.attention.len(), 1);
    assert_eq!(p.attention[0].kind, AttentionKind::Skipped);
    assert!(sim.crm.is_empty());
}

#[test]
fn phone_from_mobile_does_not_ping_pong() {
    let mut sim = Sim::default();
    let mut k = kounta(1, "Mo", "Bile", "mo@example.com", "");
    k.mobile = "0412 000 000".into();
    sim.add_kounta(k);
    sim.add_farmflow(10, farmflow("Mo", "Bile", "mo@example.com", "0412000000"));
    sim.sync(Reads::All);
    assert_converged(&mut sim);
    // FarmFlow clears the phone: the CRM's phone is already empty, the mobile stays.
    sim.ff.get_mut(&FarmflowId(10)).unwrap().phone = String::new();
    let p = sim.sync(Reads::All);
    assert_eq!(p.remote_writes(), 0, "{:#?}", p.actions);
    assert_eq!(sim.crm[&KountaId(1)].mobile, "0412 000 000");
    assert_converged(&mut sim);
}

// ----- apply contract ------------------------------------------------------------------------

#[test]
fn a_failed_write_leaves_the_change_to_be_retried() {
    let (mut sim, _, fid) = linked_then_edited(
        |k| k.email = "crm@example.com".into(),
        |f| f.city = "Porkville".into(),
    );
    let p = sim.plan(Reads::All);
    // The CRM write fails; the FarmFlow write of the same link must not be applied either.
    sim.apply(&p, |a| a.kind() == "update_kounta");
    assert_eq!(sim.ff[&fid].email, "Jamie@Example.com");
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["update_kounta", "update_farmflow"]);
    assert!(sim.disagreements().is_empty());
    assert_converged(&mut sim);
}

#[test]
fn a_failed_second_write_does_not_lose_the_first_sides_change() {
    let (mut sim, kid, fid) = linked_then_edited(
        |k| k.email = "crm@example.com".into(),
        |f| f.city = "Porkville".into(),
    );
    let p = sim.plan(Reads::All);
    sim.apply(&p, |a| a.kind() == "update_farmflow");
    assert_eq!(
        sim.crm[&kid].primary_address.as_ref().unwrap().city,
        "Porkville"
    );
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["update_farmflow"]);
    assert_eq!(sim.ff[&fid].email, "crm@example.com");
    assert_converged(&mut sim);
}

#[test]
fn a_failed_first_write_of_a_new_link_does_not_turn_a_conflict_into_a_copy() {
    let mut sim = Sim::default();
    sim.add_kounta(kounta(1, "Ann", "Lee", "ann@example.com", "0400 000 001"));
    sim.add_farmflow(
        10,
        farmflow("Ann", "Lee", "ann@example.com", "0400 999 999"),
    );
    let p = sim.plan(Reads::All);
    sim.apply(&p, |a| a.is_remote_write());
    // The link is stored (so the pair stays matched) but nothing else moved.
    let link = sim.link_of(FarmflowId(10)).expect("link stored first");
    assert_eq!(link.kounta_snapshot, None);
    let p = sim.sync(Reads::All);
    assert_eq!(p.counts.conflicts, 1, "still a conflict, crm wins");
    assert_eq!(sim.ff[&FarmflowId(10)].phone, "0400 000 001");
    assert_converged(&mut sim);
}

// ----- output --------------------------------------------------------------------------------

#[test]
fn actions_describe_themselves_without_customer_values() {
    let (sim, _, _) = linked_then_edited(
        |k| k.email = "secret@example.com".into(),
        |f| f.phone = "0499 999 999".into(),
    );
    let p = sim.plan(Reads::All);
    let text: Vec<String> = acts(&p).into_iter().map(Action::describe).collect();
    assert_eq!(
        text,
        vec![
            "update crm 1 (farmflow:10): phone".to_owned(),
            "update farmflow 10: email".to_owned(),
        ]
    );
    for line in &text {
        assert!(!line.contains("secret") && !line.contains("0499"));
    }
    let json = serde_json::to_value(&p).expect("serialises");
    let actions = json["actions"].as_array().expect("a list");
    assert!(actions.iter().any(|a| a["action"] == "update_kounta"));
    assert!(
        actions
            .iter()
            .any(|a| a["action"] == "update_farmflow" && a["body"]["email"] == "secret@example.com")
    );
    assert_eq!(json["counts"]["kounta_updates"], 1);
}

#[test]
fn link_after_builds_the_store_row() {
    let (sim, _, fid) = linked();
    let row = sim.link_of(fid).unwrap().clone();
    let after = LinkAfter {
        kounta_read: false,
        ..keep(&row)
    };
    let next = after.to_link(Some(&row), 42);
    assert_eq!(next.last_verified_at, row.last_verified_at);
    assert_eq!(next.last_synced_at, Some(42));
    let read = LinkAfter {
        kounta_read: true,
        ..after
    };
    assert_eq!(read.to_link(Some(&row), 42).last_verified_at, Some(42));
}

// ----- choices where DESIGN.md leaves room ---------------------------------------------------

#[test]
fn every_full_read_is_recorded_as_a_verification() {
    let (sim, _, _) = linked();
    let p = sim.plan(Reads::All);
    assert_eq!(p.remote_writes(), 0);
    assert_eq!(p.counts.refreshed, 4);
    assert!(p.actions.iter().all(|a| matches!(
        a,
        Action::Refresh { link } if link.kounta_read && link.kounta_verified
    )));
}

#[test]
fn a_lost_state_db_with_an_empty_farmflow_list_tombstones_nothing() {
    let mut sim = many_linked(3);
    sim.links.clear();
    sim.ff.clear();
    let p = sim.sync(Reads::All);
    assert_eq!(
        p.guard
            .map(|g| (g.reason, g.planned_deletions, g.live_links)),
        Some((GuardReason::EmptyFarmflowList, 3, 3))
    );
    assert!(sim.links.is_empty());
    assert_eq!(p.remote_writes(), 0);
}

#[test]
fn a_crm_that_cleared_the_first_name_does_not_pass_it_to_farmflow() {
    let (mut sim, kid, fid) = linked();
    sim.crm.get_mut(&kid).unwrap().first_name = String::new();
    sim.crm.get_mut(&kid).unwrap().email = "new@example.com".into();
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["update_farmflow"]);
    assert_eq!(sim.ff[&fid].firstname, "Jamie");
    assert_eq!(sim.ff[&fid].email, "new@example.com");
    assert!(
        p.attention
            .iter()
            .any(|a| a.kind == AttentionKind::Skipped && a.kounta_id == Some(kid))
    );
    assert_converged(&mut sim);
}

#[test]
fn a_farmflow_record_without_first_name_is_not_written() {
    let (mut sim, kid, fid) = linked();
    sim.ff.get_mut(&fid).unwrap().firstname = String::new();
    sim.sync(Reads::All);
    // The CRM took the cleared first name; FarmFlow cannot take a CRM email edit now.
    assert_eq!(sim.crm[&kid].first_name, "");
    sim.crm.get_mut(&kid).unwrap().email = "new@example.com".into();
    let p = sim.sync(Reads::All);
    assert_eq!(p.remote_writes(), 0);
    assert!(p.actions.iter().any(|a| matches!(
        a,
        Action::Skip {
            reason: SkipReason::NoFirstName,
            ..
        }
    )));
    // Once FarmFlow has a first name again, the edit goes through.
    sim.ff.get_mut(&fid).unwrap().firstname = "Jay".into();
    sim.sync(Reads::All);
    assert_eq!(sim.ff[&fid].email, "new@example.com");
    assert_eq!(sim.crm[&kid].first_name, "Jay");
    assert_converged(&mut sim);
}

#[test]
fn a_changed_customer_without_contact_is_kept_when_the_crm_deleted_it() {
    let (mut sim, kid, fid) = linked();
    sim.crm.remove(&kid);
    let f = sim.ff.get_mut(&fid).unwrap();
    f.email = String::new();
    f.phone = String::new();
    let p = sim.sync(Reads::All);
    assert_eq!(p.remote_writes(), 0);
    assert!(sim.ff.contains_key(&fid), "neither deleted");
    assert_eq!(
        sim.link_of(fid).unwrap().state,
        LinkState::Active,
        "nor recreated"
    );
    assert!(p.attention.iter().any(|a| a.kind == AttentionKind::Skipped));
    assert_converged(&mut sim);
}

#[test]
fn a_tombstone_whose_farmflow_id_reappears_is_reported() {
    let (mut sim, _, fid) = linked();
    sim.ff.remove(&fid);
    sim.sync(Reads::All);
    sim.add_farmflow(fid.0, farmflow("Re", "Used", "reused@example.com", ""));
    let p = sim.sync(Reads::All);
    assert_eq!(p.remote_writes(), 0);
    assert!(
        p.attention
            .iter()
            .any(|a| a.kind == AttentionKind::TombstoneReappeared && a.farmflow_id == Some(fid))
    );
}

#[test]
fn a_no_op_run_reads_only_its_budget_and_writes_nothing() {
    let mut sim = Sim::default();
    for i in 0..2_000i64 {
        let email = format!("p{i}@example.com");
        let mut k = kounta(i + 1, "P", &format!("{i}"), &email, "0400 000 000");
        k.primary_address = address("1 Main St\nUnit 2", "Hobart", "AU");
        sim.add_kounta(k);
        let mut f = farmflow("P", &format!("{i}"), &email, "0400000000");
        f.address = "1 Main St".into();
        f.address2 = "Unit 2".into();
        f.city = "Hobart".into();
        f.country = "Australia".into();
        sim.add_farmflow(100_000 + i, f);
    }
    let first = sim.sync(Reads::All);
    assert_eq!(first.counts.linked, 2_000);
    assert_eq!(
        first.counts.kounta_updates, 2_000,
        "reference_id written once"
    );
    assert!(
        sim.links.values().all(|l| l.kounta_verified),
        "a reference-only write needs no read-back"
    );
    let p = sim.sync(Reads::Budget(60));
    assert_eq!(p.remote_writes(), 0);
    assert_eq!(p.counts.refreshed, 60, "one verification per budgeted read");
    assert!(!p.wants_more_input());
}

#[test]
fn an_upcoming_one_time_order_blocks_until_its_day_has_passed() {
    let (mut sim, _, fid) = deleted_in_crm();
    sim.orders.one_time.push(one_time(3, fid.0, "2026-03-02"));
    let p = sim.sync(Reads::All);
    assert_eq!(kinds(&p), vec!["block_delete"]);
    sim.today = NaiveDate::from_ymd_opt(2026, 3, 2).expect("a date");
    let p = sim.sync(Reads::All);
    assert_eq!(kinds(&p), vec!["block_delete"], "due today still blocks");
    sim.today = NaiveDate::from_ymd_opt(2026, 3, 3).expect("a date");
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["delete_farmflow"]);
    assert!(!sim.ff.contains_key(&fid));
}

// ----- absence is a question (DESIGN.md step 5) ----------------------------------------------

/// Plans `sim` as one run that reads nothing but what the plan asks for.
fn plan_once(sim: &Sim, direct: &DirectReads) -> Plan {
    sim.with_input(|input| {
        let input = PlanInput {
            kounta_list_complete: sim.list_complete,
            orders: Some(&sim.orders),
            direct,
            ..input
        };
        plan(&input, &sim.policy)
    })
}

#[test]
fn a_crm_customer_missing_from_the_listing_is_read_before_anything_is_done() {
    let (mut sim, kid, fid) = linked();
    sim.hidden_from_list.insert(kid);
    sim.ff.get_mut(&fid).unwrap().notes = "unchanged canonical".into();
    sim.ff.get_mut(&fid).unwrap().city = "Edited".into();
    let p = plan_once(&sim, &DirectReads::default());
    assert_eq!(p.needs_kounta_reads, vec![kid]);
    assert_eq!(p.remote_writes(), 0, "{:#?}", p.actions);
    assert!(p.actions.contains(&Action::Skip {
        subject: Subject::Link(ReferenceId::for_farmflow(fid)),
        reason: SkipReason::AbsenceUnconfirmed,
    }));
    // The read finds it present: the FarmFlow edit reaches the existing CRM customer, nobody is
    // recreated (before the fix this was a second CRM customer for one person).
    let crm_before = sim.crm.len();
    let p = sim.sync(Reads::Budget(0));
    assert_eq!(writes(&p), vec!["update_kounta"]);
    assert_eq!(sim.crm.len(), crm_before);
    assert_eq!(
        sim.crm[&kid].primary_address.as_ref().unwrap().city,
        "Edited"
    );
}

#[test]
fn a_farmflow_customer_missing_from_its_list_is_read_before_tagging_or_recreating() {
    let (mut sim, kid, fid) = linked();
    sim.hidden_from_farmflow_list.insert(fid);
    sim.crm.get_mut(&kid).unwrap().last_name = "McDonald-Smith".into();
    let p = plan_once(&sim, &DirectReads::default());
    assert_eq!(p.needs_farmflow_reads, vec![fid]);
    assert_eq!(p.remote_writes(), 0, "{:#?}", p.actions);
    // Present: the CRM edit reaches it; no tag, no tombstone, no FarmFlow duplicate.
    let ff_before = sim.ff.len();
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["update_farmflow"]);
    assert_eq!(sim.ff.len(), ff_before);
    assert_eq!(sim.ff[&fid].lastname, "McDonald-Smith");
    assert!(sim.crm[&kid].tags.iter().all(|t| t != "farmflow-deleted"));
    assert_eq!(sim.link_of(fid).unwrap().state, LinkState::Active);
}

#[test]
fn a_confirmed_absence_is_acted_on_and_an_unanswered_one_waits() {
    let (mut sim, kid, fid) = linked();
    sim.ff.remove(&fid);
    // No answer yet (the read failed): nothing happens to the CRM customer.
    let p = plan_once(&sim, &DirectReads::default());
    assert_eq!(p.needs_farmflow_reads, vec![fid]);
    assert_eq!(p.remote_writes(), 0);
    // A 404 confirms it: tagged.
    let gone = DirectReads {
        farmflow_gone: [fid].into(),
        ..DirectReads::default()
    };
    let p = plan_once(&sim, &gone);
    assert!(
        p.needs_kounta_reads.contains(&kid),
        "the tag needs the full record"
    );
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["tag_kounta"]);
}

#[test]
fn a_link_without_snapshots_has_not_changed_so_a_deletion_is_applied_not_undone() {
    // A lost FarmFlow create settled by journal recovery: linked, no snapshots.
    let (mut sim, kid, fid) = linked();
    let link = sim.links.get_mut(&ReferenceId::for_farmflow(fid)).unwrap();
    link.kounta_snapshot = None;
    link.farmflow_snapshot = None;
    link.kounta_verified = false;
    // A person deletes the CRM side: the FarmFlow copy goes, nothing is recreated in the CRM.
    sim.crm.remove(&kid);
    let crm_before = sim.crm.len();
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["delete_farmflow"], "{:#?}", p.actions);
    assert_eq!(sim.crm.len(), crm_before);
    assert!(!sim.ff.contains_key(&fid));
}

#[test]
fn an_unverified_crm_snapshot_has_not_changed_so_a_farmflow_deletion_is_applied() {
    let (mut sim, kid, fid) = linked();
    let link = sim.links.get_mut(&ReferenceId::for_farmflow(fid)).unwrap();
    link.kounta_verified = false;
    sim.crm.get_mut(&kid).unwrap().first_name = "Jamie-Lee".into();
    sim.ff.remove(&fid);
    let ff_before = sim.ff.len();
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["tag_kounta"], "{:#?}", p.actions);
    assert_eq!(sim.ff.len(), ff_before, "nothing recreated in farmflow");
}

#[test]
fn twin_claimants_of_one_farmflow_id_create_nothing_on_either_side() {
    // No state DB; two CRM copies of one person both name farmflow:10.
    let mut sim = Sim::default();
    for id in [1, 2] {
        let mut k = kounta(id, "Jamie", "McDonald", "jamie@example.com", "");
        k.reference_id = "farmflow:10".into();
        sim.add_kounta(k);
    }
    sim.add_farmflow(10, farmflow("Jamie", "McDonald", "jamie@example.com", ""));
    let p = sim.sync(Reads::All);
    assert_eq!(p.remote_writes(), 0, "{:#?}", p.actions);
    assert_eq!(sim.crm.len(), 2);
    assert_eq!(sim.ff.len(), 1);
    assert!(p.attention.iter().any(|a| {
        a.kind == AttentionKind::ReferenceCollision && a.farmflow_id == Some(FarmflowId(10))
    }));
}

#[test]
fn the_guard_share_is_of_links_not_of_persistent_collisions() {
    let mut sim = many_linked(4);
    // Three CRM customers name FarmFlow customers already linked elsewhere: collisions, read
    // every run, but not links.
    for i in 0..3 {
        let mut k = kounta(
            50 + i,
            "Copy",
            "Person",
            &format!("copy{i}@example.com"),
            "",
        );
        k.reference_id = format!("farmflow:{}", 100 + i);
        sim.add_kounta(k);
    }
    for i in 1..=3 {
        sim.crm.remove(&KountaId(i));
    }
    let p = sim.plan(Reads::All);
    let guard = p.guard.expect("3 of 4 links is more than half");
    assert_eq!(guard.live_links, 4);
    assert_eq!(guard.planned_deletions, 3);
}

#[test]
fn unreadable_orders_block_the_delete_for_this_run() {
    let (mut sim, kid, fid) = linked();
    sim.crm.remove(&kid);
    let direct = DirectReads {
        kounta_gone: [kid].into(),
        orders_unreadable: true,
        ..DirectReads::default()
    };
    let p = sim.with_input(|input| {
        let input = PlanInput {
            direct: &direct,
            ..input
        };
        plan(&input, &sim.policy)
    });
    assert!(!p.needs_orders);
    assert_eq!(writes(&p), Vec::<&str>::new());
    assert!(p.actions.iter().any(|a| matches!(
        a,
        Action::BlockDelete { farmflow_id, reason: BlockReason::OrdersUnreadable, .. } if *farmflow_id == fid
    )));
}

// ----- operator control: scope and field directions --------------------------------------------

#[test]
fn a_customer_losing_the_scope_tag_is_parked_and_never_written_or_deleted() {
    let (mut sim, kid, fid) = linked();
    sim.policy.kounta_tag = "wholesale".into();
    // Jamie carries only "Newsletter": the next full read parks the link, writing nothing.
    let parked = sim.sync(Reads::All);
    assert!(writes(&parked).is_empty(), "{:#?}", parked.actions);
    assert!(parked.actions.iter().any(|a| matches!(
        a,
        Action::Park { reason: Parked::Untagged, link } if link.farmflow_id == fid
    )));
    assert_eq!(sim.link_of(fid).unwrap().parked, Some(Parked::Untagged));

    // FarmFlow edits and a CRM deletion change nothing while parked, read or not.
    sim.ff.get_mut(&fid).unwrap().city = "Orange".into();
    assert!(writes(&sim.sync(Reads::Budget(0))).is_empty());
    sim.crm.remove(&kid);
    let gone = sim.sync(Reads::Budget(0));
    assert!(writes(&gone).is_empty(), "{:#?}", gone.actions);
    assert!(!gone.needs_kounta_reads.contains(&kid));
    assert!(gone.guard.is_none(), "a parked link is no planned deletion");
    assert!(sim.ff.contains_key(&fid));
    assert_eq!(sim.link_of(fid).unwrap().state, LinkState::Active);
}

#[test]
fn the_scope_tag_returning_unparks_and_copies_what_changed_meanwhile() {
    let (mut sim, kid, fid) = linked();
    sim.policy.kounta_tag = "wholesale".into();
    sim.sync(Reads::All);
    sim.ff.get_mut(&fid).unwrap().city = "Orange".into();
    sim.sync(Reads::All);
    sim.crm.get_mut(&kid).unwrap().tags.push("Wholesale".into());
    let back = sim.sync(Reads::All);
    assert_eq!(writes(&back), vec!["update_kounta"], "{:#?}", back.actions);
    assert_eq!(
        sim.crm[&kid].primary_address.as_ref().unwrap().city,
        "Orange"
    );
    assert_eq!(sim.link_of(fid).unwrap().parked, None);
    assert_converged(&mut sim);
}

#[test]
fn one_way_and_never_fields_hold_without_ping_pong() {
    let (mut sim, kid, fid) = linked();
    sim.policy.fields.set(Field::Phone, Direction::ToFarmflow);
    sim.policy.fields.set(Field::City, Direction::None);
    sim.ff.get_mut(&fid).unwrap().phone = "03 1111 2222".into();
    sim.ff.get_mut(&fid).unwrap().city = "Orange".into();
    sim.crm
        .get_mut(&kid)
        .unwrap()
        .primary_address
        .as_mut()
        .unwrap()
        .city = "Dubbo".into();
    let p = sim.sync(Reads::All);
    assert!(writes(&p).is_empty(), "{:#?}", p.actions);
    assert!(p.counts.conflicts == 0);
    assert_converged(&mut sim);
    sim.crm.get_mut(&kid).unwrap().phone = "02 5555 0000".into();
    let p = sim.sync(Reads::All);
    assert_eq!(writes(&p), vec!["update_farmflow"]);
    assert_eq!(sim.ff[&fid].phone, "02 5555 0000");
    assert_eq!(sim.ff[&fid].city, "Orange");
    assert_converged(&mut sim);
}

#[test]
fn with_approve_a_confirmed_deletion_is_queued_not_applied() {
    let (mut sim, kid, fid) = linked();
    sim.policy.deletes = crate::sync::policy::DeleteMode::Approve;
    sim.crm.remove(&kid);
    let p = sim.sync(Reads::All);
    assert!(writes(&p).is_empty(), "{:#?}", p.actions);
    assert_eq!(p.counts.queued, 1);
    assert!(p.actions.iter().any(|a| matches!(
        a,
        Action::QueueDelete { would: "delete_farmflow", farmflow_id, .. } if *farmflow_id == fid
    )));
    assert!(sim.ff.contains_key(&fid));
}

/// A queued deletion's record that a FarmFlow list shows again (a list that lags behind the
/// person's delete) has not reappeared until it reads back by id: the entry stays queued, the
/// person's decision with it, and the plan asks for the read. A `404` keeps it queued; a read
/// that answers takes it off. `sync_model_scope_omissions` found it: [New(Crm, 0), Twins(0),
/// New(Crm, 2), Sync(Clean), Del(Ff, 2), Sync(Clean), Quick(FfLag(1), false)] under approve.
#[test]
fn a_queued_deletion_whose_record_a_lagging_list_shows_stays_queued_until_read() {
    let (mut sim, _, fid) = linked();
    sim.policy.deletes = crate::sync::policy::DeleteMode::Approve;
    let record = sim.ff.remove(&fid).unwrap();
    let p = sim.sync(Reads::All);
    assert_eq!(p.counts.queued, 1, "{:#?}", p.actions);
    let reference = ReferenceId::for_farmflow(fid);
    // The list lags: it still shows the deleted customer.
    let (links, list) = (sim.link_rows(), sim.kounta_list());
    let lagging = vec![FarmflowCustomer {
        id: fid,
        fields: record.clone(),
    }];
    let full: HashMap<KountaId, KountaCustomer> =
        sim.crm.iter().map(|(k, c)| (*k, c.clone())).collect();
    let unqueued = |p: &Plan| {
        p.actions.iter().any(
            |a| matches!(a, Action::Unqueue { reference_id, .. } if *reference_id == reference),
        )
    };
    for decision in [
        Some(DeleteDecision::Approved),
        Some(DeleteDecision::Rejected),
        None,
    ] {
        let decisions = Decisions {
            queued: [(reference.clone(), decision)].into(),
            ..Decisions::default()
        };
        let with = |direct: &DirectReads| {
            plan(
                &PlanInput {
                    farmflow: &lagging,
                    kounta_list: &list,
                    kounta_list_complete: true,
                    kounta_full: &full,
                    links: &links,
                    orders: Some(&sim.orders),
                    direct,
                    decisions: &decisions,
                    today: sim.today,
                },
                &sim.policy,
            )
        };
        let p = with(&DirectReads::default());
        assert!(!unqueued(&p), "{decision:?}: {:#?}", p.actions);
        assert_eq!(p.needs_farmflow_reads, vec![fid], "{decision:?}");
        assert_eq!(p.remote_writes(), 0, "{decision:?}: {:#?}", p.actions);
        let gone = DirectReads {
            farmflow_gone: [fid].into(),
            ..DirectReads::default()
        };
        let p = with(&gone);
        assert!(!unqueued(&p), "{decision:?}: {:#?}", p.actions);
        let read_back = DirectReads {
            farmflow: [(
                fid,
                FarmflowCustomer {
                    id: fid,
                    fields: record.clone(),
                },
            )]
            .into(),
            ..DirectReads::default()
        };
        let p = with(&read_back);
        assert!(unqueued(&p), "{decision:?}: {:#?}", p.actions);
    }
}
