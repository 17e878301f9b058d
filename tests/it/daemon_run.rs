//! `farmsync run` as a subprocess against the sandbox: cycles every second never overlap,
//! SIGTERM stops it cleanly mid-cycle (even mid-write, even mid-listing at a low rate), and
//! systemd hears about it all.

use std::time::Duration;

use farmsync::sandbox::{
    FarmflowEndpoint, Fault, FaultAction, KountaEndpoint, Sandbox, SandboxOptions, Target, When,
    sample_farm,
};
use farmsync::store::Store;

use crate::daemon_support::{
    Daemon, converge, event, farmsync_in, linked, linked_farm, with_crm_rate, writes,
};
use crate::support::{Workdir, text};
use crate::sync_smoke::sandbox_config;

const EVERY_SECOND: &str = "[schedule]\ncron = \"* * * * * *\"\nquick_cron = \"\"\n";
/// Once a year: only the start-up cycle runs during a test.
const YEARLY: &str = "[schedule]\ncron = \"0 0 0 1 1 *\"\nquick_cron = \"\"\n";
const MINUTE: Duration = Duration::from_secs(60);

/// Every run recorded in the state DB: finished, exit 0, and no two overlapping.
fn assert_runs_finished_in_sequence(w: &Workdir) {
    let store = Store::open_read_only(&w.state_path()).unwrap();
    assert!(
        store.unsettled_intents().unwrap().is_empty(),
        "the journal is settled"
    );
    // Newest first, ties (same second) by insertion: reversed, that is the order they started.
    let mut runs = store.recent_runs(10_000).unwrap();
    runs.reverse();
    for r in &runs {
        assert!(r.finished_at.is_some(), "run {} never finished", r.run_id);
    }
    for pair in runs.windows(2) {
        assert!(
            pair[0].finished_at.unwrap() <= pair[1].started_at,
            "runs overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// Staff edit the city of every linked CRM customer with an address (at least four): the
/// (CRM id, FarmFlow id) pairs, each now in "Newtown <CRM id>".
fn edit_every_crm_city(sb: &Sandbox) -> Vec<(i64, i64)> {
    let edited: Vec<(i64, i64)> = linked(sb)
        .into_iter()
        .filter(|(k, _)| sb.kounta().get(*k).unwrap().primary_address.is_some())
        .collect();
    assert!(edited.len() >= 4, "{edited:?}");
    for (k, _) in &edited {
        sb.kounta().edit(*k, |c| {
            if let Some(a) = c.primary_address.as_mut() {
                a.city = format!("Newtown {}", c.id);
            }
        });
    }
    edited
}

/// In the daemon's log, runs start and finish strictly in turn.
fn assert_runs_alternate(d: &Daemon) {
    let runs: Vec<&str> = d
        .events()
        .into_iter()
        .filter(|e| *e == "sync.run.started" || *e == "sync.run.finished")
        .collect();
    assert!(!runs.is_empty());
    for (i, e) in runs.iter().enumerate() {
        let expected = if i % 2 == 0 {
            "sync.run.started"
        } else {
            "sync.run.finished"
        };
        assert_eq!(*e, expected, "run {i} out of turn:\n{}", d.dump());
    }
    assert_eq!(runs.len() % 2, 0, "the last run finished:\n{}", d.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_second_cycles_never_overlap_and_sigterm_mid_cycle_stops_cleanly() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, EVERY_SECOND));
    converge(&w).await;
    // A slow CRM makes each cycle longer than the schedule's period, so fire times arrive
    // mid-cycle.
    sb.kounta()
        .set_latency(Target::<KountaEndpoint>::Any, Duration::from_millis(100));

    let mut d = Daemon::spawn(&w, &[]);
    d.wait_for_count("sync.run.finished", 2, MINUTE).await;
    d.wait_for_count("sync.trigger.coalesced", 1, MINUTE).await;
    // Steady state: SIGTERM as the next cycle starts.
    d.wait_for(MINUTE, |l| event(l) == "sync.run.started").await;
    d.signal("TERM");
    let (status, took) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    assert!(took < Duration::from_secs(10));

    let events = d.events();
    let stopping = events.iter().position(|e| *e == "daemon.stopping").unwrap();
    let last_start = events
        .iter()
        .rposition(|e| *e == "sync.run.started")
        .unwrap();
    let last_finish = events
        .iter()
        .rposition(|e| *e == "sync.run.finished")
        .unwrap();
    assert!(
        last_start < stopping && stopping < last_finish,
        "the signal arrived mid-cycle and the cycle was finished:\n{}",
        d.dump()
    );
    assert_eq!(events.last(), Some(&"daemon.stopped"));
    assert_runs_alternate(&d);
    assert_runs_finished_in_sequence(&w);

    // The next one-shot sync agrees with what the daemon left: nothing to write.
    sb.kounta().clear_latency();
    let before = writes(&sb);
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(writes(&sb), before, "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_write_settles_it_and_the_rest_waits_for_the_next_sync() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, YEARLY));
    converge(&w).await;
    let farmflow_count = sb.farmflow().customers().len();

    let edited = edit_every_crm_city(&sb);
    sb.farmflow().set_latency(
        Target::<FarmflowEndpoint>::AnyWrite,
        Duration::from_millis(400),
    );
    let mut applied = sb.farmflow().writes_applied();
    let first = *applied.borrow();

    let mut d = Daemon::spawn(&w, &[]);
    // The first FarmFlow update is stored; its answer is on the way.
    applied.wait_for(|n| *n > first).await.unwrap();
    d.signal("TERM");
    let (status, took) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    assert!(took < Duration::from_secs(10));
    assert_eq!(d.count("sync.run.interrupted"), 1, "{}", d.dump());
    let done_by_daemon = *applied.borrow() - first;
    assert!(
        done_by_daemon >= 1 && (done_by_daemon as usize) < edited.len(),
        "the daemon stopped after the write in flight: {done_by_daemon} of {}",
        edited.len()
    );
    assert_runs_finished_in_sequence(&w);

    // The next sync applies the rest, and the one after it has nothing left to do.
    sb.farmflow().clear_latency();
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = writes(&sb);
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(writes(&sb), before, "{}", text(&out.stdout));
    for (k, f) in &edited {
        assert_eq!(
            sb.farmflow().get(*f).unwrap().city,
            format!("Newtown {k}"),
            "every edit arrived"
        );
    }
    assert_eq!(
        sb.farmflow().customers().len(),
        farmflow_count,
        "no duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_status_watchdog_and_stopping() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, YEARLY));
    let socket_path = w.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();

    let mut d = Daemon::spawn(
        &w,
        &[
            ("NOTIFY_SOCKET", socket_path.display().to_string()),
            // 200 ms: pings every 100 ms.
            ("WATCHDOG_USEC", "200000".to_owned()),
        ],
    );
    let mut received: Vec<String> = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut next = async |received: &mut Vec<String>| {
        let n = tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buf))
            .await
            .expect("a notification within 30 s")
            .unwrap();
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        received.extend(message.lines().map(str::to_owned));
    };
    while !received.iter().any(|m| m.starts_with("STATUS=last sync")) {
        next(&mut received).await;
    }
    while received.iter().filter(|m| *m == "WATCHDOG=1").count() < 3 {
        next(&mut received).await;
    }
    d.signal("TERM");
    while !received.iter().any(|m| m == "STOPPING=1") {
        next(&mut received).await;
    }
    let (status, _) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());

    let ready = received
        .iter()
        .position(|m| m == "READY=1")
        .expect("READY=1");
    let status_line = received
        .iter()
        .position(|m| m.starts_with("STATUS=last sync"))
        .unwrap();
    let stopping = received.iter().position(|m| m == "STOPPING=1").unwrap();
    assert!(
        ready < status_line && status_line < stopping,
        "{received:#?}"
    );
    assert!(
        received[status_line].contains("ok;") && received[status_line].contains("created"),
        "{}",
        received[status_line]
    );
    assert!(!received[status_line].contains('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_exits_4() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let w = Workdir::new(&sandbox_config(&sb, YEARLY));
    let mut d = Daemon::spawn(&w, &[]);
    d.wait_for(MINUTE, |l| event(l) == "daemon.started").await;
    let second = farmsync_in(&w, &["run"]).await;
    assert_eq!(second.status.code(), Some(4));
    assert!(
        text(&second.stderr).contains("another farmsync"),
        "{}",
        text(&second.stderr)
    );
    d.signal("INT");
    let (status, _) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());
}

#[tokio::test]
async fn run_without_credentials_exits_2() {
    let w = Workdir::new("[schedule]\ncron = \"0 0 0 1 1 *\"\nquick_cron = \"\"\n");
    let out = farmsync_in(&w, &["run"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("kounta.client_id"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_the_next_syncs_converge() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, YEARLY));
    converge(&w).await;
    let farmflow_count = sb.farmflow().customers().len();
    let edited = edit_every_crm_city(&sb);
    // The first FarmFlow update is stored and never answered: the drain waits for that write
    // (a write on the wire always finishes, here by its 5 s timeout) when the signals come.
    let hang = sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Update,
        When::Nth(1),
        FaultAction::ApplyThenHang,
    ));
    let mut applied = sb.farmflow().writes_applied();
    let first = *applied.borrow();

    let mut d = Daemon::spawn(&w, &[]);
    applied.wait_for(|n| *n > first).await.unwrap();
    d.signal("TERM");
    d.wait_for(MINUTE, |l| event(l) == "daemon.stopping").await;
    d.signal("TERM");
    let (status, took) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(143), "{}", d.dump());
    assert!(
        took < Duration::from_secs(2),
        "at once, not after the drain: {took:?}"
    );
    assert_eq!(d.count("daemon.signal.forced"), 1);
    assert_eq!(d.count("sync.run.finished"), 0, "the cycle was cut short");

    // The next sync settles the unanswered write by looking, applies the rest; then quiet.
    sb.farmflow().remove_fault(hang);
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = writes(&sb);
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(writes(&sb), before, "{}", text(&out.stdout));
    for (k, f) in &edited {
        assert_eq!(sb.farmflow().get(*f).unwrap().city, format!("Newtown {k}"));
    }
    assert_eq!(sb.farmflow().customers().len(), farmflow_count);
}

/// DESIGN.md: on SIGTERM "every wait (the rate limiter, a retry's backoff, a listing in
/// progress) ends at once; … exit 0 within 10 s at any rate limit". At 60 CRM requests a minute
/// an 81-page listing spends its first minute's 60 at once and then waits for the next minute:
/// the signal ends that wait, nothing is inferred from the cut listing, and the next sync (at a
/// high rate) links everyone and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_listing_at_60_a_minute_exits_0_at_once_and_the_next_sync_converges() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&linked_farm(2_000)).unwrap();
    let fast = sandbox_config(&sb, YEARLY);
    let w = Workdir::new(&with_crm_rate(&fast, 60));
    let mut seen = sb.kounta().requests_seen();

    let mut d = Daemon::spawn(&w, &[]);
    // The company lookup and 44 pages; the next page waits for room that leaves the quick
    // cycles' reserve (15 of the 60) free.
    seen.wait_for(|n| *n >= 45).await.unwrap();
    d.signal("TERM");
    let (status, took) = d.exit(Duration::from_secs(10)).await;

    assert_eq!(status.code(), Some(0), "{}", d.dump());
    assert!(took < Duration::from_secs(3), "stopped at once: {took:?}");
    assert_eq!(d.count("sync.run.interrupted"), 1, "{}", d.dump());
    assert_eq!(d.count("sync.run.finished"), 1, "{}", d.dump());
    let pages = sb.kounta().stats().count(KountaEndpoint::List);
    assert!(pages < 81, "the listing was cut: {pages} pages");
    assert_eq!(writes(&sb), 0, "nothing written or inferred");
    assert_runs_finished_in_sequence(&w);

    w.set_config(&fast);
    for run in 0..2 {
        let out = farmsync_in(&w, &["sync"]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {run}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(writes(&sb), 0, "everyone linked, nothing to write");
    let store = Store::open_read_only(&w.state_path()).unwrap();
    assert_eq!(store.links().unwrap().len(), 2_000);
    assert_runs_finished_in_sequence(&w);
}

/// The same for a one-shot `farmsync sync` (a timer unit stopped, Ctrl-C): SIGTERM in the
/// middle of a long listing ends the run at once with exit 0, nothing written or inferred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_listing_stops_a_sync_at_once_with_exit_0() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&linked_farm(2_000)).unwrap();
    let fast = sandbox_config(&sb, YEARLY);
    let w = Workdir::new(&with_crm_rate(&fast, 60));
    let mut seen = sb.kounta().requests_seen();

    let mut sync = Daemon::spawn_command(&w, "sync", &[]);
    // The company lookup and 59 pages; the 60th page waits for the next minute.
    seen.wait_for(|n| *n >= 60).await.unwrap();
    sync.signal("TERM");
    let (status, took) = sync.exit(Duration::from_secs(10)).await;

    assert_eq!(status.code(), Some(0), "{}", sync.dump());
    assert!(took < Duration::from_secs(3), "stopped at once: {took:?}");
    assert_eq!(sync.count("sync.run.interrupted"), 1, "{}", sync.dump());
    assert!(sb.kounta().stats().count(KountaEndpoint::List) < 81);
    assert_eq!(writes(&sb), 0, "nothing written or inferred");
    w.set_config(&fast);
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// `farmsync run` holds the instance lock for its whole life; a person deciding beside it
/// (`conflicts resolve`, `deletes approve`) writes one row under SQLite's own lock, and the
/// daemon's next cycle — here a quick cycle, the sweep running at start only — carries it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_decides_while_the_daemon_runs_and_its_next_cycle_carries_it_out() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&linked_farm(10)).unwrap();
    let w = Workdir::new(&sandbox_config(
        &sb,
        "[schedule]\ncron = \"0 0 0 1 1 *\"\nquick_cron = \"* * * * * *\"\n\
         [sync]\ndeletes = \"approve\"\n",
    ));
    converge(&w).await;
    let pairs = linked(&sb);
    let (ana_k, ana_f) = *pairs.iter().find(|(_, f)| *f == 1_000).unwrap();
    let (ben_k, ben_f) = *pairs.iter().find(|(_, f)| *f == 1_001).unwrap();

    // Before the daemon starts: Ana's phone changed on both sides (the CRM wins by default),
    // and Ben was deleted in the CRM's back office (his deletion waits for a person).
    sb.kounta().edit(ana_k, |c| c.phone = "0400 000 111".into());
    sb.farmflow()
        .edit(ana_f, |c| c.phone = "0400 000 222".into());
    assert!(sb.kounta().backoffice_delete(ben_k));
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(sb.farmflow().get(ana_f).unwrap().phone, "0400 000 111");
    assert!(sb.farmflow().get(ben_f).is_some(), "waits for a person");

    let mut d = Daemon::spawn(&w, &[]);
    // The start-up sweep and two quick cycles after it: the deletion still waits.
    d.wait_for_count("sync.run.finished", 3, MINUTE).await;
    assert!(sb.farmflow().get(ben_f).is_some(), "{}", d.dump());
    let held = farmsync_in(&w, &["sync"]).await;
    assert_eq!(held.status.code(), Some(4), "the daemon holds the lock");

    let ana = format!("farmflow:{ana_f}");
    let ben = format!("farmflow:{ben_f}");
    let take = farmsync_in(
        &w,
        &["conflicts", "resolve", &ana, "phone", "--take", "farmflow"],
    )
    .await;
    assert_eq!(take.status.code(), Some(0), "{}", text(&take.stderr));
    let approve = farmsync_in(&w, &["deletes", "approve", &ben]).await;
    assert_eq!(approve.status.code(), Some(0), "{}", text(&approve.stderr));

    // The next cycles carry both out, without a restart.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sb.kounta().get(ana_k).unwrap().phone != "0400 000 222"
        || sb.farmflow().get(ben_f).is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not carried out within 30 s:\n{}",
            d.dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.wait_for(MINUTE, |l| event(l) == "sync.run.finished")
        .await;
    assert_eq!(sb.farmflow().get(ana_f).unwrap().phone, "0400 000 222");

    // Read beside the daemon: nothing open, nothing waiting, and the write in history.
    for (args, empty) in [
        (["conflicts", "--json"], true),
        (["deletes", "--json"], true),
    ] {
        let out = farmsync_in(&w, &args).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v.as_array().unwrap().is_empty(), empty, "{args:?}: {v}");
    }
    let out = farmsync_in(&w, &["history", &ana, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // FarmFlow had taken the CRM's value when the conflict was settled by rule: both sides now
    // get FarmFlow's, each write kept with its before → after.
    for side in ["kounta", "farmflow"] {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["side"] == side && r["cycle"] == "quick")
            .unwrap_or_else(|| panic!("no quick-cycle write to {side}: {rows:#}"));
        let phone = row["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["field"] == "phone")
            .expect("the phone change is kept");
        assert_eq!(phone["before"], "0400 000 111", "{side}");
        assert_eq!(phone["after"], "0400 000 222", "{side}");
    }
    let out = farmsync_in(&w, &["history", &ben, "--json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["action"], "delete", "{rows:#}");

    d.signal("TERM");
    let (status, _) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    assert_runs_finished_in_sequence(&w);
    // Carried out once: a sync after the daemon writes nothing.
    let before = writes(&sb);
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(writes(&sb), before, "{}", text(&out.stdout));
}
