//! Whole runs against the sandbox: a lost state DB relinked through `reference_id`, dry runs
//! that write nothing anywhere, credentials refused and APIs unreachable, one bad record among
//! good ones, and convergence with normalising writes and the tolerated wire variants.

use farmsync::sandbox::{
    Envelope, FarmflowEndpoint, Fault, FaultAction, KountaEndpoint, ReadShape, SandboxOptions, When,
};
use farmsync::store::LinkState;
use farmsync::sync::engine::Outcome;

use crate::sync_matrix::three_linked;
use crate::sync_support::{
    Harness, assert_in_agreement, assert_no_duplicates, assert_settled_state, crm_person, ff_person,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_state_db_is_rebuilt_through_reference_ids_with_zero_creates() {
    let mut h = Harness::start().await;
    let [(ana_k, ana_f), _, (cleo_k, cleo_f)] = three_linked(&h).await;
    // A tombstone before the loss: Cleo was deleted in FarmFlow and tagged in the CRM.
    h.sb.farmflow().delete(cleo_f).unwrap();
    h.run_ok().await;
    assert!(
        h.sb.kounta()
            .get(cleo_k)
            .unwrap()
            .tags
            .contains(&"farmflow-deleted".to_owned())
    );
    let crm_before = h.sb.kounta().customers();
    let ff_before = h.sb.farmflow().customers();

    h.lose_state_db();
    assert!(h.links().await.is_empty());
    let (report, writes) = h.run_counting_writes().await;

    assert_eq!(report.outcome, Outcome::Applied);
    assert_eq!(report.summary.created, 0);
    assert_eq!(
        report.summary.linked, 2,
        "Ana and Ben relinked by reference_id"
    );
    assert_eq!(writes, 0, "nothing differs, so nothing is written");
    assert_eq!(h.sb.kounta().customers(), crm_before);
    assert_eq!(h.sb.farmflow().customers(), ff_before);
    let links = h.links().await;
    let cleo = links.iter().find(|l| l.farmflow_id.0 == cleo_f).unwrap();
    assert_eq!(
        cleo.state,
        LinkState::Tombstone,
        "never recreated in FarmFlow"
    );
    let ana = links.iter().find(|l| l.farmflow_id.0 == ana_f).unwrap();
    assert_eq!(ana.kounta_id.map(|k| k.0), Some(ana_k));
    h.converge().await;
    assert_eq!(h.sb.farmflow().customers().len(), 2);
    assert_settled_state(&h).await;
}

/// Every row a dry run could have touched, and the DB files' bytes.
async fn state_of(h: &Harness) -> (String, Vec<Vec<u8>>) {
    let rows = h
        .engine
        .store
        .call(|s| {
            Ok(format!(
                "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
                s.links()?,
                s.unsettled_intents()?,
                s.recent_runs(1000)?,
                s.open_conflicts()?,
                s.attention()?,
                s.hints()?
            ))
        })
        .await
        .unwrap();
    let files = ["", "-wal"]
        .iter()
        .map(|suffix| {
            let mut p = h.state_path().into_os_string();
            p.push(suffix);
            std::fs::read(p).unwrap_or_default()
        })
        .collect();
    (rows, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_nothing_remote_or_local() {
    let h = Harness::start().await;
    let [(ana_k, _), (ben_k, ben_f), _] = three_linked(&h).await;
    // An unsettled write from an earlier run: a dry run reports it and leaves it be.
    h.sb.kounta().inject(Fault::new(
        KountaEndpoint::Create,
        When::Nth(1),
        FaultAction::ApplyThenDrop,
    ));
    h.sb.farmflow()
        .insert(ff_person("Fin", "Ford", "fin@example.com", "0412 000 006"));
    let partial = h.run().await;
    assert_eq!(partial.outcome, Outcome::Partial);
    // Then a day's work on both sides.
    h.sb.kounta()
        .insert(crm_person("Dee", "Dunn", "dee@example.com", "0412 000 004"));
    h.sb.farmflow()
        .insert(ff_person("Eve", "Ellis", "eve@example.com", "0412 000 005"));
    h.sb.kounta()
        .edit(ana_k, |c| c.phone = "0499 999 999".into());
    h.sb.farmflow().edit(ben_f, |c| c.city = "Forbes".into());
    h.sb.kounta().edit(ben_k, |c| {
        if let Some(a) = c.primary_address.as_mut() {
            a.city = "Young".into();
        }
    });
    let crm_before = h.sb.kounta().customers();
    let ff_before = h.sb.farmflow().customers();
    let state_before = state_of(&h).await;
    let writes_before = h.writes();

    let report = h.dry_run().await;

    assert!(report.dry_run);
    assert_eq!(report.outcome, Outcome::Applied);
    assert_eq!(report.unsettled, 1);
    let plan = report.plan.expect("a dry run shows its plan");
    assert!(plan.remote_writes() >= 3, "{:#?}", plan.actions);
    assert!(report.summary.created >= 1 && report.summary.updated >= 1);
    assert_eq!(h.writes(), writes_before, "no write reached either API");
    assert_eq!(h.sb.kounta().customers(), crm_before);
    assert_eq!(h.sb.farmflow().customers(), ff_before);
    assert_eq!(
        state_of(&h).await,
        state_before,
        "the state DB is untouched"
    );

    // The real run then does it all, settling the journal first.
    h.run_ok().await;
    h.converge().await;
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_the_guard_a_real_run_would_trip() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), (ben_k, ben_f), _] = three_linked(&h).await;
    h.sb.kounta().backoffice_delete(ana_k);
    h.sb.kounta().backoffice_delete(ben_k);
    let writes_before = h.writes();

    let report = h.dry_run().await;

    assert_eq!(report.outcome, Outcome::Guarded);
    assert_eq!(report.outcome.exit_code(), 3);
    assert_eq!(h.writes(), writes_before);
    assert!(h.sb.farmflow().get(ana_f).is_some() && h.sb.farmflow().get(ben_f).is_some());
    assert_eq!(
        h.run().await.outcome,
        Outcome::Guarded,
        "as the dry run said"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_make_the_run_unavailable_and_write_nothing() {
    for (key, value) in [
        ("farmflow.api_key", "not-the-key"),
        ("kounta.client_secret", "not-the-secret"),
    ] {
        let mut h = Harness::start().await;
        h.sb.kounta().insert(crm_person(
            "Ana",
            "Alves",
            "ana@example.com",
            "0412 000 001",
        ));
        h.sb.farmflow()
            .insert(ff_person("Ben", "Brook", "ben@example.com", "0412 000 002"));
        h.reconfigure(&[(key, value)]);

        let report = h.run().await;

        assert!(
            matches!(report.outcome, Outcome::Unavailable(_)),
            "{key}: {:?}",
            report.outcome
        );
        assert_eq!(report.outcome.exit_code(), 4);
        assert_eq!(h.writes(), 0, "{key}");
        assert!(h.links().await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_refused_while_writing_stop_the_run() {
    let h = Harness::start().await;
    for i in 0..3 {
        h.sb.farmflow().insert(ff_person(
            &format!("Q{i}"),
            "Quinn",
            &format!("q{i}@example.com"),
            &format!("0412 800 {i:03}"),
        ));
    }
    h.sb.kounta().inject(Fault::new(
        KountaEndpoint::Create,
        When::Every,
        FaultAction::Status(401),
    ));

    let report = h.run().await;

    assert!(
        matches!(report.outcome, Outcome::Unavailable(_)),
        "{:?}",
        report.outcome
    );
    assert_eq!(
        h.sb.kounta().stats().count(KountaEndpoint::Create),
        1,
        "the first refusal stops the run"
    );
    h.sb.kounta().clear_faults();
    h.run_ok().await;
    h.converge().await;
    assert_eq!(h.sb.kounta().customers().len(), 3);
    assert_settled_state(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_makes_the_run_unavailable_and_writes_nothing() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    for key in ["farmflow.base_url", "kounta.base_url"] {
        let mut h = Harness::start().await;
        h.sb.kounta().insert(crm_person(
            "Ana",
            "Alves",
            "ana@example.com",
            "0412 000 001",
        ));
        h.sb.farmflow()
            .insert(ff_person("Ben", "Brook", "ben@example.com", "0412 000 002"));
        let url = if key.starts_with("kounta") {
            format!("{closed}/v1")
        } else {
            closed.clone()
        };
        h.reconfigure(&[(key, url.as_str())]);

        let report = h.run().await;

        assert!(
            matches!(&report.outcome, Outcome::Unavailable(m) if m.contains("cannot read")),
            "{key}: {:?}",
            report.outcome
        );
        assert_eq!(report.outcome.exit_code(), 4);
        assert_eq!(h.writes(), 0, "{key}");
    }
}

async fn one_bad_record(status: u16) {
    let h = Harness::start().await;
    let ids: Vec<i64> = (0..4)
        .map(|i| {
            h.sb.farmflow().insert(ff_person(
                &format!("R{i}"),
                "Roe",
                &format!("r{i}@example.com"),
                &format!("0412 900 {i:03}"),
            ))
        })
        .collect();
    let crm_only =
        h.sb.kounta()
            .insert(crm_person("Sol", "Roe", "sol@example.com", "0412 900 100"));
    h.sb.kounta().inject(Fault::new(
        KountaEndpoint::Create,
        When::Nth(2),
        FaultAction::Status(status),
    ));

    let report = h.run().await;

    assert_eq!(report.outcome, Outcome::Partial, "{status}");
    assert_eq!(report.outcome.exit_code(), 1);
    assert_eq!(report.summary.failed, 1);
    assert_eq!(
        report.summary.created, 4,
        "three CRM creates and one FarmFlow create"
    );
    assert_eq!(h.sb.kounta().customers().len(), 4);
    assert!(h.ff_named("Sol").is_some(), "the rest went on");
    assert_eq!(
        h.sb.kounta().get(crm_only).unwrap().reference_id,
        format!("farmflow:{}", h.ff_named("Sol").unwrap().id)
    );
    assert_journal_has_no_open_create(&h).await;

    // The next run makes the one that failed.
    let next = h.run_ok().await;
    assert_eq!(next.summary.created, 1);
    for id in ids {
        assert!(h.crm_for(id).is_some());
    }
    h.converge().await;
    assert_settled_state(&h).await;
}

async fn assert_journal_has_no_open_create(h: &Harness) {
    let open = h.unsettled().await;
    assert!(
        open.is_empty(),
        "a refused create is settled as failed: {open:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_the_crm_rejects_with_400_does_not_stop_the_others() {
    one_bad_record(400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_the_crm_rejects_with_409_does_not_stop_the_others() {
    one_bad_record(409).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farmflow_update_that_keeps_failing_does_not_stop_the_others() {
    let h = Harness::start().await;
    let [(ana_k, ana_f), (ben_k, ben_f), _] = three_linked(&h).await;
    h.sb.kounta()
        .edit(ana_k, |c| c.last_name = "Changed".into());
    h.sb.kounta()
        .edit(ben_k, |c| c.last_name = "Changed".into());
    h.sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Update,
        When::Every,
        FaultAction::Html502,
    ));

    let report = h.run().await;
    assert_eq!(report.outcome, Outcome::Partial);
    assert_eq!(report.summary.failed, 2);
    assert_eq!(h.sb.farmflow().get(ana_f).unwrap().lastname, "Alves");
    let again = h.run().await;
    assert_eq!(again.outcome, Outcome::Partial);
    let ana = h
        .links()
        .await
        .into_iter()
        .find(|l| l.farmflow_id.0 == ana_f)
        .unwrap();
    assert_eq!(
        ana.consecutive_failures, 2,
        "two failed runs are counted on the link"
    );

    h.sb.farmflow().clear_faults();
    h.run_ok().await;
    assert_eq!(h.sb.farmflow().get(ana_f).unwrap().lastname, "Changed");
    assert_eq!(h.sb.farmflow().get(ben_f).unwrap().lastname, "Changed");
    h.converge().await;
    assert_settled_state(&h).await;
}

/// The change matrix's moves with both APIs reformatting what they store: FarmFlow upper-cases
/// `state`, the CRM reformats phones. The next run after settling still writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalising_writes_converge_to_zero_writes() {
    let mut options = SandboxOptions::default();
    options.kounta.normalise_phones = true;
    options.farmflow.uppercase_state = true;
    let h = Harness::start_with(options, &[]).await;
    let mut ana = crm_person("Ana", "Alves", "ana@example.com", "0412000001");
    ana.primary_address.as_mut().unwrap().state = "nsw".into();
    h.sb.kounta().insert(ana);
    let mut ben = ff_person("Ben", "Brook", "ben@example.com", "(04) 1200-0002");
    ben.state = "vic".into();
    h.sb.farmflow().insert(ben);
    let mut cleo_k = crm_person("Cleo", "Cruz", "cleo@example.com", "0412000003");
    cleo_k.primary_address.as_mut().unwrap().state = "qld".into();
    h.sb.kounta().insert(cleo_k);
    h.sb.farmflow().insert(ff_person(
        "Cleo",
        "Cruz",
        "cleo@example.com",
        "0412 000 003",
    ));

    h.run_ok().await;
    h.converge().await;
    assert_no_duplicates(&h.sb);

    // Edits both ways in the reformatted fields.
    let ana_k = h.crm_named("Ana").unwrap().id;
    let ben_f = h.ff_named("Ben").unwrap().id;
    h.sb.kounta().edit(ana_k, |c| {
        c.phone = "0499111222".into();
        if let Some(a) = c.primary_address.as_mut() {
            a.state = "act".into();
        }
    });
    h.sb.farmflow().edit(ben_f, |c| {
        c.phone = "0288887777".into();
        c.state = "tas".into();
    });
    h.run_ok().await;
    h.converge().await;
    assert_eq!(h.ff_named("Ana").unwrap().state, "ACT");
    assert_eq!(h.crm_named("Ben").unwrap().phone, "02 8888 7777");

    // Switching normalisation off and on again changes nothing either.
    h.sb.kounta().set_normalise_phones(false);
    h.sb.farmflow().set_uppercase_state(false);
    h.assert_quiet().await;
    assert_settled_state(&h).await;
}

/// The tolerated wire variants of both APIs, all at once, converge the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerated_wire_variants_converge_to_zero_writes() {
    let mut options = SandboxOptions::default();
    options.kounta.read_shape = ReadShape {
        legacy_address: true,
        primary_email_address: true,
        id_str: true,
        ids_as_strings: true,
        null_for_empty: true,
        extra_fields: true,
    };
    options.kounta.update_answers_empty = true;
    options.farmflow.envelope = Envelope::ResourceKey;
    options.farmflow.ids_as_numbers = true;
    options.farmflow.null_for_empty = true;
    options.farmflow.create_returns_id_only = true;
    let h = Harness::start_with(options, &[]).await;
    let [(ana_k, _), (_, ben_f), _] = three_linked(&h).await;
    h.sb.kounta()
        .edit(ana_k, |c| c.phone = "0400 123 123".into());
    h.sb.farmflow().edit(ben_f, |c| c.address2 = "Rear".into());

    h.run_ok().await;
    h.converge().await;

    assert_eq!(h.ff_named("Ana").unwrap().phone, "0400 123 123");
    assert_eq!(
        h.crm_named("Ben").unwrap().primary_address.unwrap().address,
        "3 Ben Road\nRear"
    );
    assert_in_agreement(&h);
    assert_settled_state(&h).await;
}

/// Requests one run makes are bounded: the FarmFlow side makes one list call, the CRM side its
/// company lookup and pages plus the reads the budget allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_run_reads_only_what_the_budget_allows() {
    let mut h = Harness::start().await;
    for i in 0..12 {
        h.sb.farmflow().insert(ff_person(
            &format!("B{i}"),
            "Budget",
            &format!("b{i}@example.com"),
            &format!("0412 910 {i:03}"),
        ));
    }
    h.run_ok().await;
    h.converge().await;
    // Ten requests a minute, five of them the quick cycles' reserve: the company lookup, one
    // list page and three verification reads.
    h.reconfigure(&[("kounta.requests_per_minute", "10")]);
    h.sb.kounta().reset_stats();
    h.sb.farmflow().reset_stats();

    let report = h.run_ok().await;

    let k = h.sb.kounta().stats();
    let f = h.sb.farmflow().stats();
    assert_eq!(f.total, 1, "one FarmFlow list call");
    assert_eq!(k.count(KountaEndpoint::List), 1);
    assert_eq!(
        k.total, 5,
        "the verification budget fills the rate less the reserve, and no more"
    );
    assert_eq!(
        k.count(KountaEndpoint::Get),
        5 - k.count(KountaEndpoint::List) - k.count(KountaEndpoint::Me)
    );
    assert_eq!(k.writes + f.writes, 0);
    assert_eq!(report.summary.kounta_requests, k.total);
    assert_eq!(report.summary.farmflow_requests, f.total);
}
