//! Lost answers: a write applied by the API whose answer never arrives (a 500 after applying,
//! a dropped connection, an answer that hangs past the timeout, or the process killed while
//! waiting) at every step of a scenario, on either side. Further runs must settle every
//! journal entry by lookup, create no one twice, and converge.

use farmsync::sandbox::{FarmflowEndpoint, Fault, FaultAction, KountaEndpoint, Target, When};
use farmsync::store::LinkState;
use farmsync::sync::engine::Outcome;

use crate::sync_support::{
    Harness, assert_settled_state, crm_person, ff_person, link_state, linked_people,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Kounta,
    Farmflow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Two people only in the CRM, two only in FarmFlow, one on both with differing data: a
    /// first run makes creates on both sides, reference writes and merge updates.
    FirstSync,
    /// Ten linked people, then a busy day: changed-vs-deleted on both sides (recreations),
    /// a CRM deletion (a FarmFlow delete), a FarmFlow deletion (a CRM tag), edits and new
    /// people on both sides.
    BusyDay,
}

impl Scenario {
    /// (CRM customers, FarmFlow customers) once the scenario has converged.
    fn expected(self) -> (usize, usize) {
        match self {
            Scenario::FirstSync => (5, 5),
            Scenario::BusyDay => (11, 10),
        }
    }
}

const NAMES: [&str; 10] = [
    "Ana", "Ben", "Cleo", "Dee", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kit",
];

/// Sets the sandboxes up; for `BusyDay` this runs the baseline syncs too. After it, the next
/// run is the one whose writes are faulted.
async fn prepare(h: &Harness, scenario: Scenario) {
    match scenario {
        Scenario::FirstSync => {
            h.sb.kounta()
                .insert(crm_person("Kai", "Kim", "kai@example.com", "0412 500 001"));
            h.sb.kounta()
                .insert(crm_person("Lea", "Lund", "lea@example.com", "0412 500 002"));
            h.sb.farmflow()
                .insert(ff_person("Max", "Mohr", "max@example.com", "0412 500 003"));
            h.sb.farmflow()
                .insert(ff_person("Nia", "Noor", "", "0412 500 004"));
            h.sb.kounta().insert(crm_person(
                "Oli",
                "Ortiz",
                "oli@example.com",
                "0412 500 005",
            ));
            h.sb.farmflow()
                .insert(ff_person("Oli", "Ortiz", "oli@example.com", "0412 500 999"));
        }
        Scenario::BusyDay => {
            for (i, name) in NAMES.iter().enumerate() {
                let email = format!("{}@example.com", name.to_lowercase());
                let phone = format!("0412 600 {i:03}");
                if i % 2 == 0 {
                    h.sb.kounta()
                        .insert(crm_person(name, "Day", &email, &phone));
                } else {
                    h.sb.farmflow()
                        .insert(ff_person(name, "Day", &email, &phone));
                }
            }
            h.run_ok().await;
            h.converge().await;
            let crm = |n: &str| h.crm_named(n).unwrap().id;
            let ff = |n: &str| h.ff_named(n).unwrap().id;
            // Changed in the CRM, deleted in FarmFlow: recreated in FarmFlow.
            h.sb.kounta()
                .edit(crm("Ana"), |c| c.phone = "0499 000 001".into());
            h.sb.farmflow().delete(ff("Ana")).unwrap();
            // Changed in FarmFlow, deleted in the CRM: recreated in the CRM.
            h.sb.farmflow().edit(ff("Ben"), |c| c.city = "Cowra".into());
            h.sb.kounta().backoffice_delete(crm("Ben"));
            // Deleted in FarmFlow: tagged in the CRM.
            h.sb.farmflow().delete(ff("Cleo")).unwrap();
            // Deleted in the CRM: deleted in FarmFlow.
            h.sb.kounta().backoffice_delete(crm("Dee"));
            // Edits both ways.
            h.sb.kounta()
                .edit(crm("Fay"), |c| c.last_name = "Dayton".into());
            h.sb.farmflow().edit(ff("Gus"), |c| c.zip = "2795".into());
            // New people on both sides.
            h.sb.kounta()
                .insert(crm_person("Lou", "Day", "lou@example.com", "0412 600 100"));
            h.sb.farmflow()
                .insert(ff_person("Mo", "Day", "mo@example.com", "0412 600 101"));
        }
    }
}

/// The writes a clean run of the scenario makes on `side`.
async fn writes_of_a_clean_run(scenario: Scenario, side: Side) -> u64 {
    let h = Harness::start().await;
    prepare(&h, scenario).await;
    let before = (h.sb.kounta().stats().writes, h.sb.farmflow().stats().writes);
    h.run_ok().await;
    let writes = match side {
        Side::Kounta => h.sb.kounta().stats().writes - before.0,
        Side::Farmflow => h.sb.farmflow().stats().writes - before.1,
    };
    assert!(writes >= 2, "the scenario writes to {side:?}");
    h.converge().await;
    let (crm, ff) = scenario.expected();
    assert_eq!(h.sb.kounta().customers().len(), crm);
    assert_eq!(h.sb.farmflow().customers().len(), ff);
    assert_settled_state(&h).await;
    writes
}

/// Whether some write of `side` went unanswered or was answered 500.
fn a_write_was_lost(h: &Harness, side: Side) -> bool {
    let lost = |status: Option<u16>| status.is_none_or(|s| s == 500);
    match side {
        Side::Kounta => h.sb.kounta().request_log().iter().any(|r| {
            r.endpoint
                .is_some_and(|e| matches!(e, KountaEndpoint::Create | KountaEndpoint::Update))
                && lost(r.status)
        }),
        Side::Farmflow => h.sb.farmflow().request_log().iter().any(|r| {
            r.endpoint.is_some_and(|e| {
                matches!(
                    e,
                    FarmflowEndpoint::Create | FarmflowEndpoint::Update | FarmflowEndpoint::Delete
                )
            }) && lost(r.status)
        }),
    }
}

fn inject(h: &Harness, side: Side, k: u64, action: FaultAction) {
    match side {
        Side::Kounta => {
            h.sb.kounta()
                .inject(Fault::new(Target::AnyWrite, When::Nth(k), action));
        }
        Side::Farmflow => {
            h.sb.farmflow()
                .inject(Fault::new(Target::AnyWrite, When::Nth(k), action));
        }
    }
}

async fn lost_at_every_step(scenario: Scenario, side: Side, action: FaultAction) {
    let writes = writes_of_a_clean_run(scenario, side).await;
    for k in 1..=writes {
        let h = Harness::start().await;
        prepare(&h, scenario).await;
        inject(&h, side, k, action);

        let first = h.run().await;
        assert_ne!(
            first.outcome,
            Outcome::Guarded,
            "{side:?} write {k} {action:?}"
        );
        assert!(
            a_write_was_lost(&h, side),
            "{side:?} write {k}: the fault fired"
        );

        h.converge().await;
        let (crm, ff) = scenario.expected();
        assert_eq!(
            h.sb.kounta().customers().len(),
            crm,
            "{scenario:?} {side:?} write {k} {action:?}: {:#?}",
            h.sb.kounta().customers()
        );
        assert_eq!(
            h.sb.farmflow().customers().len(),
            ff,
            "{scenario:?} {side:?} write {k} {action:?}: {:#?}",
            h.sb.farmflow().customers()
        );
        assert_settled_state(&h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_crm_writes_applied_then_500() {
    lost_at_every_step(Scenario::FirstSync, Side::Kounta, FaultAction::ApplyThen500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_crm_writes_applied_then_dropped() {
    lost_at_every_step(
        Scenario::FirstSync,
        Side::Kounta,
        FaultAction::ApplyThenDrop,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_crm_writes_applied_then_hung_past_the_timeout() {
    lost_at_every_step(
        Scenario::FirstSync,
        Side::Kounta,
        FaultAction::ApplyThenHang,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_farmflow_writes_applied_then_500() {
    lost_at_every_step(
        Scenario::FirstSync,
        Side::Farmflow,
        FaultAction::ApplyThen500,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_farmflow_writes_applied_then_dropped() {
    lost_at_every_step(
        Scenario::FirstSync,
        Side::Farmflow,
        FaultAction::ApplyThenDrop,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_farmflow_writes_applied_then_hung_past_the_timeout() {
    lost_at_every_step(
        Scenario::FirstSync,
        Side::Farmflow,
        FaultAction::ApplyThenHang,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_day_crm_writes_applied_then_500() {
    lost_at_every_step(Scenario::BusyDay, Side::Kounta, FaultAction::ApplyThen500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_day_crm_writes_applied_then_dropped() {
    lost_at_every_step(Scenario::BusyDay, Side::Kounta, FaultAction::ApplyThenDrop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_day_crm_writes_applied_then_hung_past_the_timeout() {
    lost_at_every_step(Scenario::BusyDay, Side::Kounta, FaultAction::ApplyThenHang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_day_farmflow_writes_applied_then_500() {
    lost_at_every_step(Scenario::BusyDay, Side::Farmflow, FaultAction::ApplyThen500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_day_farmflow_writes_applied_then_dropped() {
    lost_at_every_step(
        Scenario::BusyDay,
        Side::Farmflow,
        FaultAction::ApplyThenDrop,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_day_farmflow_writes_applied_then_hung_past_the_timeout() {
    lost_at_every_step(
        Scenario::BusyDay,
        Side::Farmflow,
        FaultAction::ApplyThenHang,
    )
    .await;
}

/// The process dies while the k-th write's answer is on its way: the write is stored by the
/// API, the journal entry stays open, and the next process settles it by lookup.
async fn killed_at_every_step(scenario: Scenario, side: Side) {
    let writes = writes_of_a_clean_run(scenario, side).await;
    for k in 1..=writes {
        let mut h = Harness::start().await;
        prepare(&h, scenario).await;
        inject(&h, side, k, FaultAction::ApplyThenHang);
        // Faults count from injection; the applied-writes watch counts from the start.
        let applied_before = match side {
            Side::Kounta => *h.sb.kounta().writes_applied().borrow(),
            Side::Farmflow => *h.sb.farmflow().writes_applied().borrow(),
        };
        let target = applied_before + k;
        let killed = tokio::select! {
            report = h.run() => Err(report),
            () = async {
                match side {
                    Side::Kounta => h.sb.kounta().wait_for_writes(target).await,
                    Side::Farmflow => h.sb.farmflow().wait_for_writes(target).await,
                }
            } => Ok(()),
        };
        if let Err(report) = killed {
            panic!("{side:?} write {k}: the run ended before the write: {report:?}");
        }
        assert!(
            !h.unsettled().await.is_empty(),
            "{side:?} write {k}: the write in flight is journalled"
        );
        // A new process on the same state DB.
        h.reconfigure(&[]);
        h.converge().await;
        let (crm, ff) = scenario.expected();
        assert_eq!(
            h.sb.kounta().customers().len(),
            crm,
            "{scenario:?} {side:?} write {k}: {:#?}",
            h.sb.kounta().customers()
        );
        assert_eq!(
            h.sb.farmflow().customers().len(),
            ff,
            "{scenario:?} {side:?} write {k}: {:#?}",
            h.sb.farmflow().customers()
        );
        assert_settled_state(&h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_killed_while_a_crm_write_is_answered() {
    killed_at_every_step(Scenario::FirstSync, Side::Kounta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_killed_while_a_farmflow_write_is_answered() {
    killed_at_every_step(Scenario::FirstSync, Side::Farmflow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_day_killed_while_a_crm_write_is_answered() {
    killed_at_every_step(Scenario::BusyDay, Side::Kounta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_day_killed_while_a_farmflow_write_is_answered() {
    killed_at_every_step(Scenario::BusyDay, Side::Farmflow).await;
}

/// The CRM tag showing a FarmFlow deletion lands, the process is killed waiting for its answer,
/// and a person edits that CRM customer before the next run. The edit came after the sync
/// showed the deletion: the next run makes the link a tombstone, as the killed run would have
/// had the answer arrived, rather than recreate the customer in FarmFlow beside a CRM record
/// tagged `farmflow-deleted`. Found by `sync_model_scope` (a lost answer alone does not show
/// it: the tag is retried, and the retry's answer tombstones the link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_edit_after_a_tag_whose_run_was_killed_brings_nobody_back() {
    let mut h = Harness::start().await;
    let people = linked_people(&h, 3).await;
    let (k, f) = people[1];
    h.sb.farmflow().delete(f).expect("no order blocks it");
    inject(&h, Side::Kounta, 1, FaultAction::ApplyThenHang);
    let target = *h.sb.kounta().writes_applied().borrow() + 1;
    tokio::select! {
        report = h.run() => panic!("the run ended before its tag: {report:?}"),
        () = h.sb.kounta().wait_for_writes(target) => {}
    }
    // A new process on the same state DB.
    h.reconfigure(&[]);
    let tagged = |h: &Harness| {
        h.sb.kounta()
            .get(k)
            .expect("kept")
            .tags
            .contains(&"farmflow-deleted".to_owned())
    };
    assert!(tagged(&h), "the tag landed");
    h.sb.kounta()
        .edit(k, |c| c.email = "later@example.com".into());

    h.converge().await;

    assert_eq!(h.sb.farmflow().customers().len(), 2, "nobody recreated");
    assert!(tagged(&h));
    assert_eq!(link_state(&h, f).await, LinkState::Tombstone);
    assert_settled_state(&h).await;
}

/// The same under `kounta_on_farmflow_delete = "unlink"`: the unlink (the CRM customer's
/// `reference_id` cleared) lands, the process is killed waiting for its answer, and a person
/// edits that CRM customer before the next run. Nobody is recreated in FarmFlow, the CRM
/// customer stays unlinked, and the link is a tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_edit_after_an_unlink_whose_run_was_killed_brings_nobody_back() {
    let unlink = [("sync.kounta_on_farmflow_delete", "unlink")];
    let mut h = Harness::with_settings(&unlink).await;
    let people = linked_people(&h, 3).await;
    let (k, f) = people[1];
    h.sb.farmflow().delete(f).expect("no order blocks it");
    inject(&h, Side::Kounta, 1, FaultAction::ApplyThenHang);
    let target = *h.sb.kounta().writes_applied().borrow() + 1;
    tokio::select! {
        report = h.run() => panic!("the run ended before its unlink: {report:?}"),
        () = h.sb.kounta().wait_for_writes(target) => {}
    }
    h.reconfigure(&unlink);
    let reference = |h: &Harness| h.sb.kounta().get(k).expect("kept").reference_id;
    assert_eq!(reference(&h), "", "the unlink landed");
    h.sb.kounta()
        .edit(k, |c| c.email = "later@example.com".into());

    h.converge().await;

    assert_eq!(h.sb.farmflow().customers().len(), 2, "nobody recreated");
    assert_eq!(reference(&h), "");
    assert_eq!(link_state(&h, f).await, LinkState::Tombstone);
    assert_settled_state(&h).await;
}
