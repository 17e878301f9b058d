//! Deletions against the sandbox: blocked by an active recurring order, by an upcoming one-time
//! order or by FarmFlow's own refusal, and released later; and the safety guards (an empty list
//! on either side, 60 % deleted, a list page that keeps failing) that stop them.

use farmsync::sandbox::{FarmflowEndpoint, Fault, FaultAction, RecurringStatus, When};
use farmsync::store::LinkState;
use farmsync::sync::action::{Action, BlockReason};
use farmsync::sync::engine::Outcome;
use farmsync::sync::plan::GuardReason;

use crate::sync_matrix::three_linked;
use crate::sync_support::{
    Harness, assert_settled_state, crm_person, ff_person, link_state, linked_people,
};

fn block_reason(report: &farmsync::sync::engine::RunReport) -> Option<BlockReason> {
    report.plan.as_ref()?.actions.iter().find_map(|a| match a {
        Action::BlockDelete { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_recurring_order_blocks_the_delete_until_it_is_cancelled() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    let order =
        h.sb.farmflow()
            .add_recurring_order(ana_f, RecurringStatus::Active);
    h.sb.kounta().backoffice_delete(ana_k);

    let (report, writes) = h.run_counting_writes().await;

    assert_eq!(
        report.outcome,
        Outcome::Applied,
        "a blocked delete is reported, not failed"
    );
    assert_eq!(report.summary.blocked, 1);
    assert_eq!(
        writes, 0,
        "the plan saw the order: no delete was even tried"
    );
    assert_eq!(
        block_reason(&report),
        Some(BlockReason::ActiveRecurringOrder { order_id: order })
    );
    assert!(h.sb.farmflow().get(ana_f).is_some());
    assert_eq!(link_state(&h, ana_f).await, LinkState::DeleteBlocked);

    // Retried every run; a FarmFlow edit meanwhile never recreates the CRM customer.
    h.sb.farmflow().edit(ana_f, |c| c.city = "Parkes".into());
    let (again, writes) = h.run_counting_writes().await;
    assert_eq!(again.summary.blocked, 1);
    assert_eq!(writes, 0);
    assert!(h.crm_named("Ana").is_none(), "never recreated in the CRM");

    // Paused is not active, but a one-time order is not there either: released.
    h.sb.farmflow()
        .set_recurring_status(order, RecurringStatus::Paused);
    let released = h.run_ok().await;
    assert_eq!(released.summary.deleted, 1);
    assert!(h.sb.farmflow().get(ana_f).is_none());
    assert_eq!(link_state(&h, ana_f).await, LinkState::Tombstone);
    h.converge().await;
    assert!(h.crm_named("Ana").is_none());
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_recurring_order_releases_the_delete() {
    let h = Harness::start().await;
    let [_, (ben_k, ben_f), _] = three_linked(&h).await;
    let order =
        h.sb.farmflow()
            .add_recurring_order(ben_f, RecurringStatus::Active);
    h.sb.kounta().backoffice_delete(ben_k);
    assert_eq!(h.run_ok().await.summary.blocked, 1);

    h.sb.farmflow()
        .set_recurring_status(order, RecurringStatus::Cancelled);
    let report = h.run_ok().await;

    assert_eq!(report.summary.deleted, 1);
    assert!(h.sb.farmflow().get(ben_f).is_none());
    h.converge().await;
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcoming_one_time_order_blocks_the_delete_until_its_date_passes() {
    let mut h = Harness::start().await;
    let today = chrono::NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
    h.engine.today = Some(today);
    let [(ana_k, ana_f), (_, ben_f), _] = three_linked(&h).await;
    let order = h.sb.farmflow().add_one_time_order(ana_f, "2026-03-12");
    // A past order does not protect anyone.
    h.sb.farmflow().add_one_time_order(ben_f, "2026-03-09");
    h.sb.kounta().backoffice_delete(ana_k);

    let report = h.run_ok().await;

    assert_eq!(report.summary.blocked, 1);
    assert_eq!(
        block_reason(&report),
        Some(BlockReason::UpcomingOneTimeOrder {
            order_id: order,
            fulfill_date: "2026-03-12".into()
        })
    );
    assert!(h.sb.farmflow().get(ana_f).is_some());

    // Due today still protects.
    h.engine.today = Some(today.succ_opt().unwrap().succ_opt().unwrap());
    assert_eq!(h.run_ok().await.summary.blocked, 1);

    // The day after, it has passed: the delete goes through.
    h.engine.today = Some(chrono::NaiveDate::from_ymd_opt(2026, 3, 13).unwrap());
    let released = h.run_ok().await;
    assert_eq!(released.summary.deleted, 1);
    assert!(h.sb.farmflow().get(ana_f).is_none());
    h.converge().await;
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undated_one_time_order_counts_as_upcoming() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.farmflow().add_one_time_order(ana_f, "");
    h.sb.kounta().backoffice_delete(ana_k);

    let report = h.run_ok().await;

    assert_eq!(report.summary.blocked, 1);
    assert!(h.sb.farmflow().get(ana_f).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn farmflow_delete_never_keeps_everyone() {
    let h = Harness::with_settings(&[("sync.farmflow_delete", "never")]).await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.kounta().backoffice_delete(ana_k);

    let (report, writes) = h.run_counting_writes().await;

    assert_eq!(report.summary.blocked, 1);
    assert_eq!(writes, 0);
    assert_eq!(block_reason(&report), Some(BlockReason::PolicyNever));
    assert!(h.sb.farmflow().get(ana_f).is_some());
    h.assert_quiet().await;
}

/// FarmFlow refuses a delete the order list did not predict (a standing order placed between
/// farmsync's read of the orders and its delete): blocked, not failed, and released later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farmflow_refusal_counts_as_blocked() {
    let h = Harness::start().await;
    let people = linked_people(&h, 5).await;
    let (first_k, first_f) = people[0];
    let (second_k, second_f) = people[1];
    h.sb.kounta().backoffice_delete(first_k);
    h.sb.kounta().backoffice_delete(second_k);
    // The first delete is applied but its answer hangs until the client's timeout; the test
    // places the standing order meanwhile, before the second delete is sent.
    h.sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Delete,
        When::Nth(1),
        FaultAction::ApplyThenHang,
    ));
    let applied = *h.sb.farmflow().writes_applied().borrow();
    let farmflow = h.sb.farmflow().clone();
    let place_order = async move {
        farmflow.wait_for_writes(applied + 1).await;
        farmflow.add_recurring_order(second_f, RecurringStatus::Active)
    };

    let (report, order) = tokio::join!(h.run(), place_order);

    assert_eq!(report.outcome, Outcome::Applied, "{:#?}", report.summary);
    assert_eq!(report.summary.deleted, 1);
    assert_eq!(report.summary.blocked, 1);
    assert!(h.sb.farmflow().get(first_f).is_none());
    assert!(
        h.sb.farmflow().get(second_f).is_some(),
        "the refusal was respected"
    );
    assert_eq!(link_state(&h, second_f).await, LinkState::DeleteBlocked);
    let refused =
        h.sb.farmflow()
            .request_log()
            .iter()
            .filter(|r| r.endpoint == Some(FarmflowEndpoint::Delete) && r.status == Some(409))
            .count();
    assert_eq!(refused, 1);

    // Retried each run (now predicted by the order list), released once the order ends.
    let again = h.run_ok().await;
    assert_eq!(again.summary.blocked, 1);
    h.sb.farmflow()
        .set_recurring_status(order, RecurringStatus::Cancelled);
    assert_eq!(h.run_ok().await.summary.deleted, 1);
    assert!(h.sb.farmflow().get(second_f).is_none());
    h.converge().await;
    assert_settled_state(&h).await;
}

// ----- guards ------------------------------------------------------------------------------------

/// The CRM answers an empty list and keeps doing so (a wiped or wrongly chosen account):
/// every link looks deleted, and the guard holds every deletion back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_crm_list_trips_the_guard_and_deletes_nothing() {
    let h = Harness::start().await;
    let people = linked_people(&h, 4).await;
    h.sb.farmflow()
        .insert(ff_person("Zed", "New", "zed@example.com", "0412 799 000"));
    for (k, _) in &people {
        h.sb.kounta().backoffice_delete(*k);
    }

    for _ in 0..2 {
        let (report, writes) = h.run_counting_writes().await;

        assert_eq!(report.outcome, Outcome::Guarded);
        assert_eq!(report.outcome.exit_code(), 3);
        let guard = report.plan.as_ref().unwrap().guard.unwrap();
        assert_eq!(guard.reason, GuardReason::EmptyKountaList);
        assert_eq!((guard.planned_deletions, guard.live_links), (4, 4));
        assert_eq!(
            writes, 0,
            "nothing deleted, nothing created into the empty side"
        );
        assert_eq!(h.sb.farmflow().customers().len(), 5);
        assert!(h.links().await.iter().all(|l| l.state == LinkState::Active));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_farmflow_list_trips_the_guard_and_tags_nothing() {
    let h = Harness::start().await;
    let people = linked_people(&h, 4).await;
    let zed =
        h.sb.kounta()
            .insert(crm_person("Zed", "New", "zed@example.com", "0412 799 000"));
    for (_, f) in &people {
        h.sb.farmflow().delete(*f).unwrap();
    }

    for _ in 0..2 {
        let (report, writes) = h.run_counting_writes().await;

        assert_eq!(report.outcome, Outcome::Guarded);
        assert_eq!(
            report.plan.as_ref().unwrap().guard.unwrap().reason,
            GuardReason::EmptyFarmflowList
        );
        assert_eq!(
            writes, 0,
            "nothing tagged, nothing created into the empty side"
        );
        assert!(h.sb.kounta().customers().iter().all(|c| c.tags.is_empty()));
        assert_eq!(h.sb.kounta().get(zed).unwrap().reference_id, "");
        assert!(h.links().await.iter().all(|l| l.state == LinkState::Active));
    }
}

/// A list that answers empty once (a replica or a proxy glitch) is read again before it is
/// believed: nothing is guarded, deleted or created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_list_answered_once_is_read_again() {
    let h = Harness::start().await;
    linked_people(&h, 4).await;
    for kounta in [true, false] {
        if kounta {
            h.sb.kounta().empty_list_once();
        } else {
            h.sb.farmflow().empty_list_once();
        }

        let (report, writes) = h.run_counting_writes().await;

        assert_eq!(report.outcome, Outcome::Applied, "crm: {kounta}");
        assert_eq!(writes, 0, "crm: {kounta}");
    }
    assert_eq!(h.sb.kounta().customers().len(), 4);
    assert_eq!(h.sb.farmflow().customers().len(), 4);
    assert_settled_state(&h).await;
}

/// On a first run there are no links for the guard to count: an empty answer read as the
/// truth would create every customer of the other side a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_over_a_glitchy_empty_list_duplicates_no_one() {
    for kounta in [true, false] {
        let h = Harness::start().await;
        for i in 0..3 {
            let (first, email, phone) = (
                format!("G{i}"),
                format!("g{i}@example.com"),
                format!("0412 880 {i:03}"),
            );
            h.sb.kounta()
                .insert(crm_person(&first, "Glitch", &email, &phone));
            h.sb.farmflow()
                .insert(ff_person(&first, "Glitch", &email, &phone));
        }
        if kounta {
            h.sb.kounta().empty_list_once();
        } else {
            h.sb.farmflow().empty_list_once();
        }

        let report = h.run_ok().await;

        assert_eq!(report.summary.created, 0, "crm: {kounta}");
        assert_eq!(report.summary.linked, 3, "crm: {kounta}");
        h.converge().await;
        assert_eq!(h.sb.kounta().customers().len(), 3);
        assert_eq!(h.sb.farmflow().customers().len(), 3);
        assert_settled_state(&h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_percent_deleted_trips_the_guard_until_mass_delete_is_allowed() {
    let h = Harness::start().await;
    let people = linked_people(&h, 10).await;
    for (k, _) in &people[..6] {
        h.sb.kounta().backoffice_delete(*k);
    }
    // An unrelated edit still goes through while the guard holds the deletions back.
    let (edited_k, edited_f) = people[9];
    h.sb.kounta()
        .edit(edited_k, |c| c.phone = "0488 000 999".into());

    let report = h.run().await;

    assert_eq!(report.outcome, Outcome::Guarded);
    let guard = report.plan.as_ref().unwrap().guard.unwrap();
    assert_eq!(guard.reason, GuardReason::TooManyDeletions);
    assert_eq!((guard.planned_deletions, guard.live_links), (6, 10));
    assert_eq!(h.sb.farmflow().customers().len(), 10, "nothing deleted");
    assert_eq!(h.sb.farmflow().get(edited_f).unwrap().phone, "0488 000 999");
    assert!(h.crm_named("P0").is_none(), "nothing recreated either");

    // Still guarded on the next run: the deletions have not gone away.
    assert_eq!(h.run().await.outcome, Outcome::Guarded);

    let allowed = h.run_allowing_mass_delete().await;
    assert_eq!(allowed.outcome, Outcome::Applied);
    assert_eq!(allowed.summary.deleted, 6);
    assert_eq!(h.sb.farmflow().customers().len(), 4);
    h.converge().await;
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_page_that_keeps_failing_deletes_and_creates_nothing_in_the_crm() {
    let h = Harness::start().await;
    let people = linked_people(&h, 8).await;
    h.sb.kounta().set_page_size(3);
    // Someone on the first page is edited, someone is deleted (the gap may be the failing page).
    let (edited_k, edited_f) = people[0];
    h.sb.kounta()
        .edit(edited_k, |c| c.phone = "0477 111 000".into());
    h.sb.kounta().backoffice_delete(people[7].0);
    h.sb.farmflow()
        .insert(ff_person("Zed", "New", "zed@example.com", "0412 799 000"));
    h.sb.kounta().fail_list_page(2);

    let report = h.run().await;

    assert_eq!(report.outcome, Outcome::Partial);
    assert_eq!(report.outcome.exit_code(), 1);
    assert!(report.listing_cut.is_some());
    assert_eq!(h.sb.farmflow().customers().len(), 9, "nothing deleted");
    assert!(h.crm_named("Zed").is_none(), "nothing created in the CRM");
    assert_eq!(
        h.sb.farmflow().get(edited_f).unwrap().phone,
        "0477 111 000",
        "updates to the records seen still go through"
    );
    // It stays incomplete on the next run too.
    assert_eq!(h.run().await.outcome, Outcome::Partial);
    assert_eq!(h.sb.farmflow().customers().len(), 9);

    h.sb.kounta().clear_faults();
    h.run_ok().await;
    h.converge().await;
    assert_eq!(
        h.sb.farmflow().customers().len(),
        8,
        "the deletion, now seen, is applied"
    );
    assert!(h.crm_named("Zed").is_some());
    assert_settled_state(&h).await;
}
