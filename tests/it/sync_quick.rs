//! Quick cycles against the sandbox (DESIGN.md, "Sweeps and quick cycles"): no CRM listing,
//! CRM reads by id only for hinted links and links whose FarmFlow side changed, updates both
//! ways and confirmed deletions, nothing created or linked — and a cost that does not grow with
//! the number of customers.

use farmsync::ids::KountaId;
use farmsync::sandbox::{FarmflowEndpoint, KountaEndpoint};
use farmsync::sync::engine::{CycleKind, Outcome, RunOptions, RunReport};

use crate::sync_support::{Harness, assert_no_duplicates, crm_person, ff_person, linked_people};

async fn quick(h: &Harness) -> RunReport {
    h.engine
        .run_once(RunOptions {
            kind: CycleKind::Quick,
            ..RunOptions::default()
        })
        .await
}

async fn hint(h: &Harness, kounta_id: i64, topic: &str) {
    let topic = topic.to_owned();
    h.engine
        .store
        .call(move |s| s.add_hint(KountaId(kounta_id), &topic))
        .await
        .expect("hint stored");
}

/// Requests each API received during `f`, as (CRM list pages, CRM total, FarmFlow total).
fn counts(h: &Harness) -> (u64, u64, u64) {
    (
        h.sb.kounta().stats().count(KountaEndpoint::List),
        h.sb.kounta().stats().total,
        h.sb.farmflow().stats().total,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hinted_crm_edit_reaches_farmflow_without_listing_the_crm() {
    let h = Harness::start().await;
    let people = linked_people(&h, 6).await;
    let (k, f) = people[3];
    h.sb.kounta()
        .edit(k, |c| c.email = "q3.new@example.com".into());
    hint(&h, k, "customers/updated").await;
    let before = counts(&h);

    let report = quick(&h).await;

    let after = counts(&h);
    assert_eq!(report.outcome, Outcome::Applied, "{:#?}", report.plan);
    assert_eq!(h.sb.farmflow().get(f).unwrap().email, "q3.new@example.com");
    assert_eq!(after.0 - before.0, 0, "no CRM list page");
    assert_eq!(after.1 - before.1, 1, "one CRM read by id");
    // FarmFlow: its list, the fresh read before the update, the update.
    assert_eq!(after.2 - before.2, 3);
    assert!(
        h.engine.store.call(|s| s.hints()).await.unwrap().is_empty(),
        "the hint is spent"
    );
    h.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farmflow_edit_reaches_the_crm_in_a_quick_cycle() {
    let h = Harness::start().await;
    let people = linked_people(&h, 4).await;
    let (k, f) = people[1];
    h.sb.farmflow().edit(f, |c| c.city = "Quickville".into());
    let before = counts(&h);

    let report = quick(&h).await;

    let after = counts(&h);
    assert_eq!(report.outcome, Outcome::Applied, "{:#?}", report.plan);
    let crm = h.sb.kounta().get(k).unwrap();
    assert_eq!(crm.primary_address.unwrap().city, "Quickville");
    assert_eq!(after.0 - before.0, 0, "no CRM list page");
    // The CRM: a read by id before writing, the update.
    assert_eq!(after.1 - before.1, 2);
    h.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_cycle_creates_and_links_nothing_and_the_next_sweep_does() {
    let h = Harness::start().await;
    linked_people(&h, 3).await;
    let new_f =
        h.sb.farmflow()
            .insert(ff_person("New", "Grower", "new.grower@example.com", ""));
    let new_k = h.sb.kounta().insert(crm_person(
        "New",
        "Shop",
        "new.shop@example.com",
        "0412 111 222",
    ));
    hint(&h, new_k, "customers/created").await;
    let (crm_before, ff_before) = (
        h.sb.kounta().customers().len(),
        h.sb.farmflow().customers().len(),
    );

    let report = quick(&h).await;

    assert_eq!(report.outcome, Outcome::Applied);
    assert_eq!(report.summary.created + report.summary.linked, 0);
    assert_eq!(h.sb.kounta().customers().len(), crm_before);
    assert_eq!(h.sb.farmflow().customers().len(), ff_before);
    assert_eq!(
        h.engine.store.call(|s| s.hints()).await.unwrap().len(),
        1,
        "a hint for an unlinked customer waits for the sweep"
    );

    let sweep = h.run_ok().await;
    assert_eq!(sweep.summary.created, 2);
    assert!(h.crm_for(new_f).is_some());
    assert!(h.ff_named("New").is_some());
    assert_no_duplicates(&h.sb);
    h.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_hint_is_confirmed_and_deletes_in_farmflow() {
    let h = Harness::start().await;
    let people = linked_people(&h, 4).await;
    let (k, f) = people[0];
    h.sb.kounta().backoffice_delete(k);
    hint(&h, k, "customers/deleted").await;

    let report = quick(&h).await;

    assert_eq!(report.outcome, Outcome::Applied, "{:#?}", report.plan);
    assert_eq!(report.summary.deleted, 1);
    assert!(h.sb.farmflow().get(f).is_none());
    h.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farmflow_deletion_is_confirmed_and_tags_the_crm_customer() {
    let h = Harness::start().await;
    let people = linked_people(&h, 4).await;
    let (k, f) = people[2];
    h.sb.farmflow().delete(f).unwrap();

    let report = quick(&h).await;

    assert_eq!(report.outcome, Outcome::Applied, "{:#?}", report.plan);
    assert!(
        h.sb.kounta()
            .get(k)
            .unwrap()
            .tags
            .iter()
            .any(|t| t == "farmflow-deleted")
    );
    h.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_of_farmsyncs_own_write_costs_one_crm_read_and_no_write() {
    let h = Harness::start().await;
    let people = linked_people(&h, 3).await;
    let (k, _) = people[1];
    // The CRM announces a customer exactly as farmsync last wrote it.
    hint(&h, k, "customers/updated").await;
    let before = (counts(&h), h.writes());

    let report = quick(&h).await;

    let after = (counts(&h), h.writes());
    assert_eq!(report.outcome, Outcome::Applied);
    assert_eq!(after.1 - before.1, 0, "no write");
    assert_eq!(after.0.1 - before.0.1, 1, "one CRM read");
    assert_eq!(after.0.2 - before.0.2, 1, "FarmFlow's list only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_cycles_cost_does_not_grow_with_the_number_of_customers() {
    let mut costs = Vec::new();
    for n in [10, 80] {
        let h = Harness::start().await;
        let people = linked_people(&h, n).await;
        let (k, _) = people[n / 2];
        let (_, f) = people[n / 3];
        h.sb.kounta().edit(k, |c| c.last_name = "Edited".into());
        hint(&h, k, "customers/updated").await;
        h.sb.farmflow().edit(f, |c| c.state = "VIC".into());
        let before = (
            h.sb.kounta().stats().total,
            h.sb.farmflow().stats().total,
            h.sb.farmflow().stats().count(FarmflowEndpoint::List),
        );
        let report = quick(&h).await;
        assert_eq!(report.outcome, Outcome::Applied);
        assert_eq!(report.summary.updated, 2);
        costs.push((
            h.sb.kounta().stats().total - before.0,
            h.sb.farmflow().stats().total - before.1,
            h.sb.farmflow().stats().count(FarmflowEndpoint::List) - before.2,
        ));
    }
    assert_eq!(costs[0], costs[1], "10 vs 80 customers: {costs:?}");
    assert_eq!(costs[0].2, 1, "one FarmFlow list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_and_a_quick_cycle_side_by_side_each_report_their_own_requests() {
    let h = Harness::start().await;
    let people = linked_people(&h, 30).await;
    let (k, f) = people[7];
    h.sb.kounta()
        .edit(k, |c| c.email = "q7.side@example.com".into());
    hint(&h, k, "customers/updated").await;
    // A slow CRM listing keeps the sweep busy while the quick cycle runs.
    h.sb.kounta().set_page_size(5);
    h.sb.kounta()
        .set_latency(KountaEndpoint::List, std::time::Duration::from_millis(40));
    let writer = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let before = (h.sb.kounta().stats().total, h.sb.farmflow().stats().total);

    let (sweep, quick) = tokio::join!(
        h.engine.run_once(RunOptions {
            writer: Some(writer.clone()),
            ..RunOptions::default()
        }),
        h.engine.run_once(RunOptions {
            kind: CycleKind::Quick,
            writer: Some(writer.clone()),
            ..RunOptions::default()
        }),
    );

    assert_eq!(h.sb.farmflow().get(f).unwrap().email, "q7.side@example.com");
    assert_eq!(
        quick.summary.kounta_requests, 1,
        "the quick cycle's one read, not the sweep's pages"
    );
    assert!(sweep.summary.kounta_requests >= 6, "{:?}", sweep.summary);
    assert_eq!(
        sweep.summary.kounta_requests + quick.summary.kounta_requests,
        h.sb.kounta().stats().total - before.0,
        "every CRM request is counted once"
    );
    assert_eq!(
        sweep.summary.farmflow_requests + quick.summary.farmflow_requests,
        h.sb.farmflow().stats().total - before.1
    );
}
