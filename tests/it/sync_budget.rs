//! Reading the CRM on a budget against the sandbox: convergence within ⌈links ÷ budget⌉ runs,
//! webhook hints read first, failed reads reported and retried, and a cancelled run that
//! stops between writes with its journal settled.

use std::time::Duration;

use farmsync::http::{Api, RateLimiter};
use farmsync::ids::KountaId;
use farmsync::sandbox::{Fault, FaultAction, KountaEndpoint, When};
use farmsync::sync::engine::{Engine, Outcome, RunOptions, request_ledger};
use tokio_util::sync::CancellationToken;

use crate::sync_matrix::three_linked;
use crate::sync_support::{Harness, assert_in_agreement, assert_settled_state, ff_person};

/// Moves every link's last verification `secs` into the past: time passing between runs,
/// without waiting for it.
async fn age_verifications(h: &Harness, secs: i64) {
    h.engine
        .store
        .call(move |s| {
            let mut links = s.links()?;
            for l in &mut links {
                l.last_verified_at = l.last_verified_at.map(|t| t - secs);
            }
            s.upsert_links(&links)
        })
        .await
        .unwrap();
}

async fn people(h: &Harness, n: usize) -> Vec<i64> {
    let ids = (0..n)
        .map(|i| {
            h.sb.farmflow().insert(ff_person(
                &format!("V{i}"),
                "Verify",
                &format!("v{i}@example.com"),
                &format!("0412 920 {i:03}"),
            ))
        })
        .collect();
    h.run_ok().await;
    h.converge().await;
    ids
}

fn crm_reads(h: &Harness) -> u64 {
    h.sb.kounta().stats().count(KountaEndpoint::Get)
}

/// Edits the list does not show (phones) reach FarmFlow within ⌈links ÷ budget⌉ runs, each run
/// reading only its budget; then the runs are quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_crm_edits_arrive_within_links_over_budget_runs() {
    let mut h = Harness::start().await;
    let ff = people(&h, 12).await;
    for f in &ff {
        let k = h.crm_for(*f).unwrap().id;
        h.sb.kounta()
            .edit(k, |c| c.phone = format!("0499 {:06}", c.id % 1_000_000));
    }
    // Ten CRM requests a minute: five are the quick cycles' reserve; the company lookup and
    // one list page leave three reads.
    h.reconfigure(&[("kounta.requests_per_minute", "10")]);

    for run in 1..=4 {
        // Each run is a new process a while after the last (a fresh limiter, older stamps).
        h.reconfigure(&[]);
        age_verifications(&h, 600).await;
        let before = crm_reads(&h);
        h.run_ok().await;
        assert_eq!(crm_reads(&h) - before, 3, "run {run} reads its budget");
    }

    assert_in_agreement(&h);
    for _ in 0..2 {
        h.reconfigure(&[]);
        age_verifications(&h, 600).await;
        let (report, writes) = h.run_counting_writes().await;
        assert_eq!((report.outcome, writes), (Outcome::Applied, 0));
    }
    assert_settled_state(&h).await;
}

/// The budget leaves out the CRM requests of the last minute by every farmsync process on the
/// state DB (DESIGN.md), as the state DB's request ledger records them — not this one's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_leaves_out_the_requests_other_processes_made() {
    let mut h = Harness::start().await;
    people(&h, 12).await;
    h.reconfigure(&[("kounta.requests_per_minute", "40")]);
    // Another farmsync on this state DB (a `check`, a daemon stopped a moment ago) made 20 CRM
    // requests this minute.
    let ledger = request_ledger(&h.state_path()).unwrap();
    let other = RateLimiter::per_minute(40).with_ledger(ledger, Api::Kounta);
    for _ in 0..20 {
        other.acquire().await;
    }
    other.release().await;
    // This process shares the rate through the ledger, as `farmsync sync` does.
    let engine = Engine::from_settings(&h.settings, h.engine.store.clone(), false).unwrap();
    age_verifications(&h, 600).await;
    let before = crm_reads(&h);

    let report = engine.run_once(RunOptions::default()).await;

    assert_eq!(report.outcome, Outcome::Applied);
    // 40 a minute: 10 the quick cycles' reserve, 20 the other's, 2 this run's company lookup
    // and list page, 8 reads.
    assert_eq!(crm_reads(&h) - before, 8);
}

/// A webhook hint makes the run read that customer whatever the budget says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hinted_customer_is_read_first_and_the_hint_is_spent_once_read() {
    let mut h = Harness::start().await;
    let [_, (ben_k, ben_f), _] = three_linked(&h).await;
    // Three requests a minute: the quick cycles' reserve (two), the lookup and the list page
    // leave no verification read, so Ben is not read.
    h.reconfigure(&[("kounta.requests_per_minute", "3")]);
    h.sb.kounta()
        .edit(ben_k, |c| c.phone = "0477 000 111".into());
    let (_, writes) = h.run_counting_writes().await;
    assert_eq!(
        writes, 0,
        "the budget did not reach Ben: the edit is not seen yet"
    );

    h.engine
        .store
        .call(move |s| s.add_hint(KountaId(ben_k), "customers/updated"))
        .await
        .unwrap();
    // The read of the hinted customer fails (an answer cut short is not retried): the hint
    // stays for the next run.
    h.reconfigure(&[]);
    h.sb.kounta().inject(Fault::new(
        KountaEndpoint::Get,
        When::Every,
        FaultAction::TruncatedJson,
    ));
    let before = crm_reads(&h);
    let failed = h.run().await;
    assert_eq!(
        crm_reads(&h) - before,
        1,
        "only the hinted customer: no budget is left"
    );
    assert_eq!(
        failed.outcome,
        Outcome::Partial,
        "a read that failed is reported"
    );
    assert_eq!(failed.summary.failed, 1);
    assert_eq!(h.engine.store.call(|s| s.hints()).await.unwrap().len(), 1);

    h.sb.kounta().clear_faults();
    h.reconfigure(&[]);
    h.run_ok().await;
    assert_eq!(h.sb.farmflow().get(ben_f).unwrap().phone, "0477 000 111");
    assert!(h.engine.store.call(|s| s.hints()).await.unwrap().is_empty());
}

/// A CRM record that cannot be read is reported (exit 1) and synced once it can be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_read_is_a_failure_and_waits() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), ..] = three_linked(&h).await;
    h.sb.kounta().edit(ana_k, |c| c.last_name = "Unread".into());
    h.sb.kounta().inject(Fault::new(
        KountaEndpoint::Get,
        When::Every,
        FaultAction::Html502,
    ));

    let report = h.run().await;

    assert_eq!(report.outcome, Outcome::Partial);
    assert!(report.summary.failed >= 1);
    assert_eq!(h.sb.farmflow().get(ana_f).unwrap().lastname, "Alves");
    h.sb.kounta().clear_faults();
    h.run_ok().await;
    assert_eq!(h.sb.farmflow().get(ana_f).unwrap().lastname, "Unread");
    h.converge().await;
    assert_settled_state(&h).await;
}

/// Shutdown mid-run: the write in flight is settled, the rest waits for the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_between_writes_and_the_next_run_finishes() {
    let h = Harness::start().await;
    for i in 0..6 {
        h.sb.farmflow().insert(ff_person(
            &format!("C{i}"),
            "Cancel",
            &format!("c{i}@example.com"),
            &format!("0412 930 {i:03}"),
        ));
    }
    // Each create takes a while, so the cancellation lands between two of them.
    h.sb.kounta()
        .set_latency(KountaEndpoint::Create, Duration::from_millis(50));
    let cancel = CancellationToken::new();
    let options = RunOptions {
        cancel: Some(cancel.clone()),
        ..RunOptions::default()
    };
    let kounta = h.sb.kounta().clone();
    let stop = async move {
        kounta.wait_for_writes(2).await;
        cancel.cancel();
    };

    let (report, ()) = tokio::join!(h.engine.run_once(options), stop);

    let created = h.sb.kounta().customers().len();
    assert!(
        (2..6).contains(&created),
        "stopped early: {created} created"
    );
    assert_eq!(report.summary.created as usize, created);
    assert!(
        h.unsettled().await.is_empty(),
        "the write in flight was settled"
    );
    h.sb.kounta().clear_latency();
    let rest = h.run_ok().await;
    assert!(!rest.interrupted);
    assert_eq!(rest.summary.created as usize, 6 - created);
    h.converge().await;
    assert_settled_state(&h).await;
}
