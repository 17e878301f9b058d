//! Absence from a list is a question (DESIGN.md step 5), against the sandbox: listings that
//! leave live records out (a lagging replica, pages shifted by a deletion mid-listing), a
//! FarmFlow list that lags a grower's edit, twin claimants of one FarmFlow id, a lost create
//! whose other side a person then deletes, and order lists that answer nothing. Each test here
//! failed before the engine read a record by id before acting on its absence.

use farmsync::sandbox::{FarmflowEndpoint, Fault, FaultAction, When};
use farmsync::store::LinkState;
use farmsync::sync::action::{Action, BlockReason};
use farmsync::sync::engine::Outcome;

use crate::sync_matrix::three_linked;
use crate::sync_support::{
    Harness, assert_no_duplicates, crm_person, ff_person, link_state, linked_people,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_drift_with_an_edit_on_the_drifted_twin_updates_the_existing_crm_customer() {
    let h = Harness::start().await;
    h.sb.kounta().set_page_size(2);
    let people = linked_people(&h, 6).await;
    // Page 2 starts one position late: the third customer is on no page of this listing.
    let (drifted_k, drifted_f) = people[2];
    h.sb.kounta().drift_after_page(1, 1);
    h.sb.farmflow()
        .edit(drifted_f, |c| c.city = "Drifted Town".into());
    let crm_before = h.sb.kounta().customers().len();

    let report = h.run().await;

    assert_eq!(report.outcome, Outcome::Applied, "{:#?}", report.plan);
    assert!(h.sb.kounta().omissions_served() >= 1, "the drift happened");
    assert_eq!(report.omissions, 1, "the read by id found it present");
    assert_eq!(
        h.sb.kounta().customers().len(),
        crm_before,
        "no second CRM customer for one person"
    );
    let crm = h.sb.kounta().get(drifted_k).expect("still there");
    assert_eq!(crm.primary_address.unwrap().city, "Drifted Town");
    assert_eq!(link_state(&h, drifted_f).await, LinkState::Active);
    assert_no_duplicates(&h.sb);
    h.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_mid_listing_deletes_that_one_and_keeps_the_customer_it_shifted() {
    let h = Harness::start().await;
    h.sb.kounta().set_page_size(2);
    let people = linked_people(&h, 6).await;
    // A person deletes the first customer right after page 1 was read: the third customer
    // shifts onto page 1, which was read already, and no page of this listing shows it.
    let (deleted_k, deleted_f) = people[0];
    let (shifted_k, shifted_f) = people[2];
    h.sb.kounta().delete_after_page(1, deleted_k);
    h.sb.farmflow().edit(shifted_f, |c| c.state = "TAS".into());

    let report = h.run().await;

    assert_eq!(report.outcome, Outcome::Applied, "{:#?}", report.plan);
    assert!(h.sb.kounta().get(deleted_k).is_none());
    // Not deleted here: the listing that saw it gone started before the deletion. The next
    // run's listing misses it, the read confirms it, and FarmFlow follows the person.
    h.run_ok().await;
    assert!(
        h.sb.farmflow().get(deleted_f).is_none(),
        "the person's deletion reached FarmFlow"
    );
    let shifted = h.sb.kounta().get(shifted_k).expect("the shifted one stays");
    assert_eq!(shifted.primary_address.unwrap().state, "TAS");
    assert!(h.sb.farmflow().get(shifted_f).is_some());
    assert_eq!(link_state(&h, shifted_f).await, LinkState::Active);
    assert_no_duplicates(&h.sb);
    h.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farmflow_omission_with_a_crm_edit_writes_the_edit_and_nothing_else() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.farmflow().omit_from_list([ana_f]);
    h.sb.kounta()
        .edit(ana_k, |c| c.last_name = "Alves-Costa".into());
    let farmflow_before = h.sb.farmflow().customers().len();

    let report = h.run().await;

    assert_eq!(report.outcome, Outcome::Applied, "{:#?}", report.plan);
    assert_eq!(report.omissions, 1);
    assert_eq!(
        h.sb.farmflow().customers().len(),
        farmflow_before,
        "no FarmFlow duplicate"
    );
    assert_eq!(h.sb.farmflow().get(ana_f).unwrap().lastname, "Alves-Costa");
    let crm = h.sb.kounta().get(ana_k).unwrap();
    assert!(
        crm.tags.iter().all(|t| t != "farmflow-deleted"),
        "not tagged"
    );
    assert_eq!(
        link_state(&h, ana_f).await,
        LinkState::Active,
        "no tombstone"
    );
    h.sb.farmflow().clear_faults();
    h.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_omission_read_that_fails_postpones_the_tag() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.farmflow().omit_from_list([ana_f]);
    let fault = h.sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Get,
        When::Every,
        FaultAction::Status(503),
    ));

    let report = h.run().await;

    assert_eq!(report.outcome, Outcome::Partial, "a read failed: exit 1");
    let crm = h.sb.kounta().get(ana_k).unwrap();
    assert!(crm.tags.is_empty(), "no guess: nothing is tagged");
    assert_eq!(link_state(&h, ana_f).await, LinkState::Active);
    h.sb.farmflow().remove_fault(fault);
    h.sb.farmflow().clear_faults();
    h.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_claimants_of_one_farmflow_id_without_a_state_db_create_nothing() {
    let h = Harness::start().await;
    let f =
        h.sb.farmflow()
            .insert(ff_person("Dee", "Dunn", "dee@example.com", "0412 000 004"));
    // Two CRM copies of one person, both naming the FarmFlow customer (a lost state DB after
    // staff copied the record).
    for _ in 0..2 {
        let mut copy = crm_person("Dee", "Dunn", "dee@example.com", "");
        copy.reference_id = format!("farmflow:{f}");
        h.sb.kounta().insert(copy);
    }

    let (report, writes) = h.run_counting_writes().await;

    assert_eq!(writes, 0, "{:#?}", report.plan.as_ref().map(|p| &p.actions));
    assert_eq!(h.sb.kounta().customers().len(), 2);
    assert_eq!(h.sb.farmflow().customers().len(), 1);
    let attention = report.plan.as_ref().unwrap().attention.clone();
    assert!(
        attention
            .iter()
            .any(|a| a.farmflow_id.map(|i| i.0) == Some(f)),
        "{attention:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_farmflow_create_whose_crm_side_a_person_deletes_is_deleted_not_recreated() {
    let h = Harness::start().await;
    // Bystanders, so that one deletion stays within the guard's share.
    three_linked(&h).await;
    let eve_k =
        h.sb.kounta()
            .insert(crm_person("Eve", "Egan", "eve@example.com", "0412 000 005"));
    // The create reaches FarmFlow; its answer is lost.
    let lost = h.sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Create,
        When::Nth(1),
        FaultAction::ApplyThenDrop,
    ));
    let first = h.run().await;
    assert_eq!(first.outcome, Outcome::Partial);
    h.sb.farmflow().remove_fault(lost);
    assert_eq!(h.unsettled().await.len(), 1);
    let eve_f = h.ff_named("Eve").expect("the create happened").id;
    // Then a person deletes her in the CRM.
    h.sb.kounta().backoffice_delete(eve_k);

    h.run().await;
    h.run().await;

    assert!(h.unsettled().await.is_empty());
    assert!(
        h.sb.farmflow().get(eve_f).is_none(),
        "the FarmFlow copy follows the person's deletion"
    );
    assert!(h.crm_named("Eve").is_none(), "nothing recreated in the CRM");
    assert_no_duplicates(&h.sb);
    h.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growers_edit_the_list_has_not_caught_up_with_is_kept_by_the_update() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), (ben_k, ben_f), _] = three_linked(&h).await;
    // The grower types notes for Ana and changes Ben's phone; FarmFlow's list still shows the
    // records from before (a replica one write behind each).
    h.sb.farmflow()
        .edit(ana_f, |c| c.notes = "Gate code 1234".into());
    h.sb.farmflow()
        .edit(ben_f, |c| c.phone = "0412 999 002".into());
    h.sb.farmflow().set_list_lag(2);
    // Staff edit both in the CRM: Ana's email, Ben's phone (the same field: a conflict).
    h.sb.kounta()
        .edit(ana_k, |c| c.email = "ana.alves@example.com".into());
    h.sb.kounta()
        .edit(ben_k, |c| c.phone = "0412 777 002".into());

    let report = h.run().await;

    assert_eq!(report.outcome, Outcome::Applied, "{:#?}", report.plan);
    let ana = h.sb.farmflow().get(ana_f).unwrap();
    assert_eq!(ana.email, "ana.alves@example.com");
    assert_eq!(ana.notes, "Gate code 1234", "the grower's notes survive");
    // Ben: both sides changed the phone; the CRM wins by default and the conflict is recorded.
    assert_eq!(h.sb.farmflow().get(ben_f).unwrap().phone, "0412 777 002");
    let conflicts = h.conflicts().await;
    assert_eq!(conflicts.len(), 1, "{conflicts:#?}");
    h.sb.farmflow().set_list_lag(0);
    h.converge().await;
    assert_eq!(h.sb.farmflow().get(ana_f).unwrap().notes, "Gate code 1234");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_200_or_a_204_order_list_blocks_the_delete() {
    for status in [200, 204] {
        let h = Harness::start().await;
        let [(ana_k, ana_f), ..] = three_linked(&h).await;
        h.sb.kounta().backoffice_delete(ana_k);
        let fault = h.sb.farmflow().inject(Fault::new(
            FarmflowEndpoint::RecurringOrders,
            When::Every,
            FaultAction::Empty(status),
        ));

        let report = h.run().await;

        assert!(
            h.sb.farmflow().get(ana_f).is_some(),
            "{status}: an unreadable order list is not \"no orders\""
        );
        let reason = report.plan.as_ref().and_then(|p| {
            p.actions.iter().find_map(|a| match a {
                Action::BlockDelete { reason, .. } => Some(reason.clone()),
                _ => None,
            })
        });
        assert_eq!(reason, Some(BlockReason::OrdersUnreadable), "{status}");
        assert_eq!(reason.unwrap().to_string(), "orders unreadable");
        assert_eq!(report.summary.blocked, 1);
        assert_eq!(report.outcome, Outcome::Partial, "{status}: a read failed");

        // Readable again: the person's deletion goes through.
        h.sb.farmflow().remove_fault(fault);
        h.run_ok().await;
        assert!(h.sb.farmflow().get(ana_f).is_none(), "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_farmflow_recreation_the_grower_edits_before_the_lookup_is_found_not_made_twice() {
    let h = Harness::start().await;
    let [_, _, (cleo_k, cleo_f)] = three_linked(&h).await;
    // The grower deletes Cleo while staff edit her: the change wins, she is recreated in
    // FarmFlow — and that create's answer is lost.
    h.sb.farmflow().delete(cleo_f).unwrap();
    h.sb.kounta()
        .edit(cleo_k, |c| c.last_name = "Cruz-Lane".into());
    let lost = h.sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Create,
        When::Nth(1),
        FaultAction::ApplyThen500,
    ));
    assert_eq!(h.run().await.outcome, Outcome::Partial);
    h.sb.farmflow().remove_fault(lost);
    assert_eq!(h.unsettled().await.len(), 1);
    let again = h.ff_named("Cleo").expect("the recreation happened").id;
    // The grower corrects the new customer's first name before farmsync looks the create up.
    h.sb.farmflow()
        .edit(again, |c| c.firstname = "Cleopatra".into());

    h.run().await;
    h.converge().await;

    assert!(h.unsettled().await.is_empty());
    assert_no_duplicates(&h.sb);
    let in_farmflow =
        h.sb.farmflow()
            .customers()
            .iter()
            .filter(|c| c.lastname.starts_with("Cruz"))
            .count();
    let in_crm =
        h.sb.kounta()
            .customers()
            .iter()
            .filter(|c| c.last_name.starts_with("Cruz"))
            .count();
    assert_eq!((in_farmflow, in_crm), (1, 1), "Cleo once on each side");
}
