//! The change matrix against the sandbox, one test each: new, changed and deleted on either
//! side, changed on one side and deleted on the other, deleted on both, disjoint edits merged,
//! and same-field conflicts under both `conflict_winner` values. Every test ends converged.

use farmsync::sync::action::{Action, MatchRule};
use farmsync::sync::engine::Outcome;

use crate::sync_support::{
    Harness, assert_no_duplicates, assert_settled_state, crm_person, ff_person,
};

/// Three linked people: Ana (on both sides, matched by email), Ben (FarmFlow only, created in
/// the CRM) and Cleo (CRM only, created in FarmFlow). Returns their (CRM id, FarmFlow id).
pub async fn three_linked(h: &Harness) -> [(i64, i64); 3] {
    let ana_k = h.sb.kounta().insert(crm_person(
        "Ana",
        "Alves",
        "ana@example.com",
        "0412 000 001",
    ));
    // The same person typed in on both sides (spelt a little differently, same meaning).
    let mut ana = ff_person("Ana", "Alves", "ANA@example.com", "0412000001");
    ana.address = "3 Ana Street".into();
    ana.city = "Beeftown".into();
    ana.zip = "2112".into();
    let ana_f = h.sb.farmflow().insert(ana);
    let ben_f =
        h.sb.farmflow()
            .insert(ff_person("Ben", "Brook", "ben@example.com", "0412 000 002"));
    let cleo_k = h.sb.kounta().insert(crm_person(
        "Cleo",
        "Cruz",
        "cleo@example.com",
        "0412 000 003",
    ));
    let first = h.run_ok().await;
    assert_eq!(first.summary.linked, 1);
    assert_eq!(first.summary.created, 2);
    assert_eq!(first.summary.conflicts, 0);
    h.converge().await;
    let ben_k = h.crm_for(ben_f).expect("Ben was created in the CRM").id;
    let cleo_f = h.ff_named("Cleo").expect("Cleo was created in FarmFlow").id;
    assert_eq!(
        h.sb.kounta().get(cleo_k).unwrap().reference_id,
        format!("farmflow:{cleo_f}")
    );
    assert_settled_state(h).await;
    [(ana_k, ana_f), (ben_k, ben_f), (cleo_k, cleo_f)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_in_the_crm_is_created_in_farmflow_and_linked_back() {
    let h = Harness::start().await;
    three_linked(&h).await;
    let dee =
        h.sb.kounta()
            .insert(crm_person("Dee", "Dunn", "dee@example.com", "0412 000 004"));

    let report = h.run_ok().await;

    assert_eq!(report.summary.created, 1);
    let ff = h.ff_named("Dee").expect("Dee is in FarmFlow");
    assert_eq!(ff.email, "dee@example.com");
    assert_eq!(
        ff.country, "AUS",
        "written in farmflow.country_format (alpha3)"
    );
    assert_eq!(
        h.sb.kounta().get(dee).unwrap().reference_id,
        format!("farmflow:{}", ff.id)
    );
    h.converge().await;
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_in_farmflow_is_created_in_the_crm() {
    let h = Harness::start().await;
    three_linked(&h).await;
    let mut eve = ff_person("Eve", "Ellis", "eve@example.com", "0412 000 005");
    eve.address2 = "Unit 2".into();
    eve.company = "Ellis Orchards".into();
    let eve = h.sb.farmflow().insert(eve);

    let report = h.run_ok().await;

    assert_eq!(report.summary.created, 1);
    let crm = h.crm_for(eve).expect("Eve is in the CRM");
    let address = crm.primary_address.expect("address copied");
    assert_eq!(address.address, "3 Eve Road\nUnit 2");
    assert_eq!(address.country, "AU");
    h.converge().await;
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_change_reaches_farmflow_and_keeps_farmflow_only_fields() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.farmflow()
        .edit(ana_f, |c| c.notes = "gate code 1234".into());
    h.sb.kounta().edit(ana_k, |c| {
        c.phone = "0499 111 222".into();
        c.last_name = "Alves-Smith".into();
    });

    let report = h.run_ok().await;

    assert_eq!(report.summary.updated, 1);
    let ff = h.sb.farmflow().get(ana_f).unwrap();
    assert_eq!(ff.phone, "0499 111 222");
    assert_eq!(ff.lastname, "Alves-Smith");
    assert_eq!(
        ff.notes, "gate code 1234",
        "FarmFlow-only fields are never overwritten"
    );
    assert_eq!(
        ff.country, "Australia",
        "an unchanged country keeps FarmFlow's spelling"
    );
    h.converge().await;
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farmflow_change_reaches_the_crm_and_leaves_mobile_and_tags_alone() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.kounta().edit(ana_k, |c| {
        c.mobile = "0400 999 888".into();
        c.tags = vec!["VIP".into()];
    });
    h.run_ok().await;
    h.sb.farmflow().edit(ana_f, |c| {
        c.phone = "02 9999 0000".into();
        c.city = "Bathurst".into();
    });

    let report = h.run_ok().await;

    assert_eq!(report.summary.updated, 1);
    let crm = h.sb.kounta().get(ana_k).unwrap();
    assert_eq!(crm.phone, "02 9999 0000");
    assert_eq!(crm.mobile, "0400 999 888");
    assert_eq!(crm.tags, vec!["VIP".to_owned()]);
    assert_eq!(crm.primary_address.unwrap().city, "Bathurst");
    h.converge().await;
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_in_the_crm_is_deleted_in_farmflow() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.kounta().backoffice_delete(ana_k);

    let report = h.run_ok().await;

    assert_eq!(report.summary.deleted, 1);
    assert!(h.sb.farmflow().get(ana_f).is_none());
    let link = h
        .links()
        .await
        .into_iter()
        .find(|l| l.farmflow_id.0 == ana_f)
        .unwrap();
    assert_eq!(link.state, farmsync::store::LinkState::Tombstone);
    h.converge().await;
    assert!(h.crm_named("Ana").is_none(), "never recreated in the CRM");
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_in_farmflow_is_tagged_in_the_crm_and_never_recreated() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.farmflow().delete(ana_f).unwrap();

    let report = h.run_ok().await;

    assert_eq!(report.summary.deleted, 1);
    let crm =
        h.sb.kounta()
            .get(ana_k)
            .expect("the CRM keeps its customer");
    assert!(crm.tags.contains(&"farmflow-deleted".to_owned()));
    h.converge().await;
    assert!(h.ff_named("Ana").is_none(), "never recreated in FarmFlow");
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_in_farmflow_is_unlinked_under_the_unlink_policy() {
    let h = Harness::with_settings(&[("sync.kounta_on_farmflow_delete", "unlink")]).await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.farmflow().delete(ana_f).unwrap();

    h.run_ok().await;

    let crm = h.sb.kounta().get(ana_k).unwrap();
    assert_eq!(crm.reference_id, "");
    assert!(crm.tags.is_empty());
    h.converge().await;
    assert!(h.ff_named("Ana").is_none(), "never recreated in FarmFlow");
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_in_the_crm_and_deleted_in_farmflow_the_change_survives() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.farmflow().delete(ana_f).unwrap();
    h.sb.kounta()
        .edit(ana_k, |c| c.phone = "0455 123 456".into());

    let report = h.run_ok().await;

    assert_eq!(report.summary.created, 1);
    let ff = h.ff_named("Ana").expect("recreated in FarmFlow");
    assert_ne!(ff.id, ana_f);
    assert_eq!(ff.phone, "0455 123 456");
    let crm = h.sb.kounta().get(ana_k).unwrap();
    assert_eq!(crm.reference_id, format!("farmflow:{}", ff.id));
    assert!(crm.tags.is_empty(), "not tagged as deleted");
    h.converge().await;
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_in_farmflow_and_deleted_in_the_crm_the_change_survives() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.kounta().backoffice_delete(ana_k);
    h.sb.farmflow().edit(ana_f, |c| c.city = "Dubbo".into());

    let report = h.run_ok().await;

    assert_eq!(report.summary.created, 1);
    assert!(h.sb.farmflow().get(ana_f).is_some(), "not deleted");
    let crm = h.crm_for(ana_f).expect("recreated in the CRM");
    assert_ne!(crm.id, ana_k);
    assert_eq!(crm.primary_address.unwrap().city, "Dubbo");
    h.converge().await;
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_on_both_sides_leaves_a_tombstone_and_creates_nothing() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.kounta().backoffice_delete(ana_k);
    h.sb.farmflow().delete(ana_f).unwrap();

    let (report, writes) = h.run_counting_writes().await;

    assert_eq!(report.outcome, Outcome::Applied);
    assert_eq!(writes, 0);
    assert!(
        report
            .plan
            .unwrap()
            .actions
            .iter()
            .any(|a| matches!(a, Action::Tombstone { .. }))
    );
    h.converge().await;
    assert!(h.crm_named("Ana").is_none() && h.ff_named("Ana").is_none());
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_edits_on_both_sides_are_merged() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.kounta()
        .edit(ana_k, |c| c.phone = "0466 000 111".into());
    h.sb.farmflow().edit(ana_f, |c| c.city = "Mudgee".into());

    let report = h.run_ok().await;

    assert_eq!(report.summary.conflicts, 0);
    let crm = h.sb.kounta().get(ana_k).unwrap();
    let ff = h.sb.farmflow().get(ana_f).unwrap();
    assert_eq!(crm.phone, "0466 000 111");
    assert_eq!(ff.phone, "0466 000 111");
    assert_eq!(crm.primary_address.unwrap().city, "Mudgee");
    assert_eq!(ff.city, "Mudgee");
    assert!(h.conflicts().await.is_empty());
    h.converge().await;
    assert_settled_state(&h).await;
}

async fn same_field_conflict(winner: &str) {
    let h = Harness::with_settings(&[("sync.conflict_winner", winner)]).await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.kounta().edit(ana_k, |c| {
        if let Some(a) = c.primary_address.as_mut() {
            a.city = "Crmville".into();
        }
    });
    h.sb.farmflow().edit(ana_f, |c| c.city = "Farmtown".into());

    let report = h.run_ok().await;

    assert_eq!(report.summary.conflicts, 1);
    let expected = if winner == "kounta" {
        "Crmville"
    } else {
        "Farmtown"
    };
    let crm = h.sb.kounta().get(ana_k).unwrap();
    assert_eq!(crm.primary_address.unwrap().city, expected);
    assert_eq!(h.sb.farmflow().get(ana_f).unwrap().city, expected);
    let conflicts = h.conflicts().await;
    assert_eq!(conflicts.len(), 1, "{conflicts:#?}");
    let c = &conflicts[0];
    assert_eq!(c.field, "city");
    assert_eq!(c.kounta_value, "Crmville");
    assert_eq!(c.farmflow_value, "Farmtown");
    assert_eq!(c.winner, winner);
    assert_eq!(c.reference_id, format!("farmflow:{ana_f}"));
    h.converge().await;
    assert_eq!(h.conflicts().await.len(), 1, "recorded once, not every run");
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_field_conflict_goes_to_the_crm_when_it_wins() {
    same_field_conflict("kounta").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_field_conflict_goes_to_farmflow_when_it_wins() {
    same_field_conflict("farmflow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_run_links_by_reference_email_phone_and_name_without_duplicates() {
    let h = Harness::start().await;
    // By reference_id: the CRM already names FarmFlow's id; every other key differs.
    let ref_f = h.sb.farmflow().insert(ff_person(
        "Rita",
        "Reyes",
        "rita@farm.example",
        "0412 100 001",
    ));
    let mut rita = crm_person("Rita", "Reyes-Old", "rita@shop.example", "0412 100 999");
    rita.reference_id = format!("farmflow:{ref_f}");
    let ref_k = h.sb.kounta().insert(rita);
    // By email (case differs), phones differ.
    let em_k = h.sb.kounta().insert(crm_person(
        "Emil",
        "Engel",
        "Emil@Example.com",
        "0412 200 001",
    ));
    let em_f = h.sb.farmflow().insert(ff_person(
        "Emil",
        "Engel",
        "emil@example.com",
        "0412 200 999",
    ));
    // By phone: no email on either side, formatting differs, last names differ.
    let ph_k =
        h.sb.kounta()
            .insert(crm_person("Pia", "Park", "", "0412 300 001"));
    let ph_f =
        h.sb.farmflow()
            .insert(ff_person("Pia", "Park-Lee", "", "(04) 1230-0001"));
    // By name: emails differ, FarmFlow has no phone.
    let nm_k = h.sb.kounta().insert(crm_person(
        "Nora",
        "Nash",
        "nora@shop.example",
        "0412 400 001",
    ));
    let nm_f =
        h.sb.farmflow()
            .insert(ff_person(" nora", "NASH ", "nora@farm.example", ""));

    let report = h.run_ok().await;

    assert_eq!(report.summary.created, 0);
    assert_eq!(report.summary.linked, 4);
    let rules: Vec<(MatchRule, i64, i64)> = report
        .plan
        .as_ref()
        .unwrap()
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Link {
                rule,
                kounta_id,
                farmflow_id,
                ..
            } => Some((*rule, kounta_id.0, farmflow_id.0)),
            _ => None,
        })
        .collect();
    let mut expected = vec![
        (MatchRule::ReferenceId, ref_k, ref_f),
        (MatchRule::Email, em_k, em_f),
        (MatchRule::Phone, ph_k, ph_f),
        (MatchRule::Name, nm_k, nm_f),
    ];
    let mut rules = rules;
    rules.sort_by_key(|r| r.1);
    expected.sort_by_key(|r| r.1);
    assert_eq!(rules, expected);
    for (k, f) in [(ref_k, ref_f), (em_k, em_f), (ph_k, ph_f), (nm_k, nm_f)] {
        assert_eq!(
            h.sb.kounta().get(k).unwrap().reference_id,
            format!("farmflow:{f}")
        );
    }
    assert_eq!(h.sb.kounta().customers().len(), 4);
    assert_eq!(h.sb.farmflow().customers().len(), 4);
    assert_no_duplicates(&h.sb);
    h.converge().await;
    assert_eq!(h.sb.kounta().customers().len(), 4);
    assert_eq!(h.sb.farmflow().customers().len(), 4);
    assert_settled_state(&h).await;
}
