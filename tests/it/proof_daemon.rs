//! The crash campaign for the daemon: the real `farmsync run` (a yearly schedule, so only its
//! start-up cycle runs) is killed with SIGKILL right after its k-th write reaches the sandbox
//! (the write is applied, its answer never sent), for every k of two start-up cycles: the first
//! over a two-sided farm (links, creates, updates), and one after people deleted, edited and
//! added customers on both sides since a first sync (deletes, tags, updates, creates). Then
//! `farmsync sync` runs until a run writes nothing. After each k: no duplicate on either side, no customer lost or changed compared with a cycle that was never
//! killed, no link pointing at nothing, the journal settled, and the last run wrote nothing.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use farmsync::sandbox::{
    Access, Endpoint, FarmflowRecord, KountaRecord, SampleData, Sandbox, SandboxOptions,
    sample_farm,
};
use tokio::sync::Semaphore;

use crate::proof_support::{
    Side, World, converge_and_check, kill_after_write, run_farmsync, sandbox_config, writes,
};
use crate::support::{Workdir, text};

/// Once a year: only the start-up cycle runs while the test watches.
const YEARLY: &str = "[schedule]\ncron = \"0 0 0 1 1 *\"\nquick_cron = \"\"\n";
/// Runs after the kill before one writes nothing (as in the sync campaign).
const MAX_RERUNS: usize = 3;
/// Crash points tried at once; each has its own sandbox, state DB and daemon.
static GATE: Semaphore = Semaphore::const_new(3);

/// The k-th write of the uncrashed cycle: which side, which write of that side, what it was.
#[derive(Debug, Clone)]
struct CrashPoint {
    /// The start-up cycle after people's changes (else the first cycle of all).
    after_changes: bool,
    k: usize,
    side: Side,
    nth: u64,
    what: String,
}

/// The sample farm plus people on one side only and people on both sides that differ, so that
/// the first cycle links, creates and updates on both sides.
fn scenario() -> SampleData {
    let mut data = sample_farm();
    for i in 0..5 {
        data.kounta.push(KountaRecord {
            first_name: format!("Dee{i}"),
            last_name: "Daemon".into(),
            email: format!("dee{i}@daemon.example"),
            phone: format!("02 7100 10{i:02}"),
            ..KountaRecord::default()
        });
        data.farmflow.push(FarmflowRecord {
            id: 600 + i,
            firstname: format!("Ray{i}"),
            lastname: "Daemon".into(),
            email: format!("ray{i}@daemon.example"),
            phone: format!("03 7100 20{i:02}"),
            city: "Hobart".into(),
            ..FarmflowRecord::default()
        });
    }
    for i in 0..3 {
        data.kounta.push(KountaRecord {
            first_name: format!("Cy{i}"),
            last_name: "Cycle".into(),
            email: format!("cy{i}@cycle.example"),
            phone: format!("07 7100 30{i:02}"),
            ..KountaRecord::default()
        });
        data.farmflow.push(FarmflowRecord {
            id: 700 + i,
            firstname: format!("Cy{i}"),
            lastname: "Cycle".into(),
            email: format!("CY{i}@cycle.example"),
            address: format!("{i} Cycle Way"),
            city: "Darwin".into(),
            ..FarmflowRecord::default()
        });
    }
    data
}

/// What people change after a first sync: deletions on both sides, edits on either side and
/// both, and new people on each side.
fn people_change(sb: &Sandbox) {
    let crm = sb.kounta().customers();
    let ff = sb.farmflow().customers();
    let crm_id = |first: &str| crm.iter().find(|c| c.first_name == first).unwrap().id;
    let ff_id = |first: &str| ff.iter().find(|c| c.firstname == first).unwrap().id;
    assert!(sb.kounta().backoffice_delete(crm_id("Dee0")));
    sb.farmflow().delete(ff_id("Ray0")).unwrap();
    assert!(
        sb.kounta()
            .edit(crm_id("Cy0"), |c| c.phone = "07 7199 0000".into())
    );
    assert!(
        sb.farmflow()
            .edit(ff_id("Cy1"), |c| c.city = "Alice Springs".into())
    );
    assert!(sb.kounta().edit(crm_id("Ray1"), |c| c.email =
        "ray1.new@daemon.example".into()));
    assert!(
        sb.farmflow()
            .edit(ff_id("Dee1"), |c| c.phone = "02 7199 1111".into())
    );
    for i in 0..3 {
        sb.kounta().insert(KountaRecord {
            first_name: format!("Nia{i}"),
            last_name: "Later".into(),
            email: format!("nia{i}@later.example"),
            ..KountaRecord::default()
        });
        sb.farmflow().insert(FarmflowRecord {
            firstname: format!("Oto{i}"),
            lastname: "Later".into(),
            email: format!("oto{i}@later.example"),
            ..FarmflowRecord::default()
        });
    }
}

/// A fresh sandbox seeded with `data` and a workdir whose config runs the daemon yearly; with
/// `after_changes`, a first sync has run and people have changed things since.
async fn prepare(data: &SampleData, after_changes: bool) -> (Sandbox, Workdir) {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(data).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, YEARLY));
    if after_changes {
        let out = run_farmsync(&w, &["sync"], &[]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        people_change(&sb);
    }
    sb.kounta().reset_stats();
    sb.farmflow().reset_stats();
    (sb, w)
}

/// Starts `farmsync run` with its output discarded (it is killed, so there is none to read).
fn spawn_daemon(w: &Workdir, fault_env: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = crate::support::farmsync();
    cmd.env_remove("FARMSYNC_TEST_FAULT");
    for (k, v) in fault_env {
        cmd.env(k, v);
    }
    cmd.arg("--config")
        .arg(w.config_path())
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn farmsync run")
}

/// One `farmsync sync` that is never killed: the writes of a first cycle, in order, and the
/// outcome every crashed daemon must reach too. (The daemon's start-up cycle is the same run.)
async fn uncrashed(data: &SampleData, after_changes: bool) -> (Vec<CrashPoint>, World) {
    let (sb, w) = prepare(data, after_changes).await;
    let out = run_farmsync(&w, &["sync"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut log: Vec<(tokio::time::Instant, Side, String)> = Vec::new();
    for r in sb.kounta().request_log() {
        if let Some(e) = r.endpoint.filter(|e| e.access() == Access::Write) {
            log.push((r.at, Side::Kounta, format!("crm {e:?}")));
        }
    }
    for r in sb.farmflow().request_log() {
        if let Some(e) = r.endpoint.filter(|e| e.access() == Access::Write) {
            log.push((r.at, Side::Farmflow, format!("farmflow {e:?}")));
        }
    }
    log.sort_by_key(|(at, _, _)| *at);
    let (mut kounta, mut farmflow) = (0, 0);
    let points = log
        .into_iter()
        .enumerate()
        .map(|(i, (_, side, what))| {
            let counter = match side {
                Side::Kounta => &mut kounta,
                Side::Farmflow => &mut farmflow,
            };
            *counter += 1;
            CrashPoint {
                after_changes,
                k: i + 1,
                side,
                nth: *counter,
                what,
            }
        })
        .collect();
    let before = writes(&sb);
    let again = run_farmsync(&w, &["sync"], &[]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(writes(&sb), before, "{}", text(&again.stdout));
    let world = World::read(&sb, &w.state_path()).unwrap();
    assert!(
        world.duplicate_people().is_empty(),
        "{:?}",
        world.duplicate_people()
    );
    assert!(
        world.broken_links().is_empty(),
        "{:?}",
        world.broken_links()
    );
    sb.shutdown().await;
    (points, world)
}

/// Kills `farmsync run` right after the write at `point` is applied, reruns `farmsync sync`
/// until a run writes nothing, and returns every invariant violation against `expected`.
async fn crash_daemon_at(
    point: &CrashPoint,
    data: &SampleData,
    expected: &World,
    fault_env: &[(&str, &str)],
) -> Vec<String> {
    let (sb, w) = prepare(data, point.after_changes).await;
    let mut violations =
        kill_after_write(&sb, point.side, point.nth, point.k, "farmsync run", || {
            spawn_daemon(&w, fault_env)
        })
        .await;

    let (found, _) = converge_and_check(&sb, &w, fault_env, expected, MAX_RERUNS).await;
    violations.extend(found);
    sb.shutdown().await;
    violations
}

/// Every crash point of the start-up cycles of `phases` (after people's changes or not), a few
/// at a time: the points and, for each that broke
/// an invariant, a line saying how.
async fn campaign(
    phases: &[bool],
    fault_env: &'static [(&'static str, &'static str)],
) -> (Vec<CrashPoint>, Vec<String>) {
    let data = Arc::new(scenario());
    let mut tasks = tokio::task::JoinSet::new();
    let mut all = Vec::new();
    for &after_changes in phases {
        let (points, expected) = uncrashed(&data, after_changes).await;
        let expected = Arc::new(expected);
        all.extend(points.iter().cloned());
        for point in points {
            let (data, expected) = (data.clone(), expected.clone());
            tasks.spawn(async move {
                let _permit = GATE.acquire().await.unwrap();
                let violations = crash_daemon_at(&point, &data, &expected, fault_env).await;
                (point, violations)
            });
        }
    }
    let points = all;
    let mut failed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (point, violations) = joined.expect("crash point task");
        if !violations.is_empty() {
            failed.push(format!(
                "{} k={} ({}): {}",
                if point.after_changes {
                    "after changes"
                } else {
                    "first cycle"
                },
                point.k,
                point.what,
                violations.join("\n    ")
            ));
        }
    }
    failed.sort();
    (points, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_after_any_write_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let (points, failed) = campaign(&[false, true], &[]).await;
    let total = points.len();
    let on = |after: bool, side| {
        points
            .iter()
            .filter(|p| p.after_changes == after && p.side == side)
            .count()
    };
    let kinds: std::collections::BTreeSet<&str> = points.iter().map(|p| p.what.as_str()).collect();
    println!(
        "daemon crash campaign: {total} crash points, every k — first cycle: {} crm + {} \
         farmflow writes; after changes: {} crm + {} farmflow writes; kinds {kinds:?}; {:.1} s",
        on(false, Side::Kounta),
        on(false, Side::Farmflow),
        on(true, Side::Kounta),
        on(true, Side::Farmflow),
        started.elapsed().as_secs_f64()
    );
    assert!(
        total >= 40,
        "the cycles need dozens of writes, made {total}"
    );
    for kind in [
        "crm Create",
        "crm Update",
        "farmflow Create",
        "farmflow Update",
        "farmflow Delete",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} among the crash points: {kinds:?}"
        );
    }
    for after in [false, true] {
        assert!(
            on(after, Side::Kounta) >= 3 && on(after, Side::Farmflow) >= 3,
            "both sides take writes (after changes: {after})"
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {total} crash points failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_journal_is_never_settled_fails_the_campaign() {
    let (points, failed) = campaign(
        &[false],
        &[("FARMSYNC_TEST_FAULT", "skip-journal-recovery")],
    )
    .await;
    println!(
        "daemon, broken journal: {} of {} crash points caught",
        failed.len(),
        points.len()
    );
    assert!(
        failed.iter().any(|f| f.contains("unsettled journal entry")),
        "the campaign passed a journal that is never settled: {failed:?}"
    );
}
