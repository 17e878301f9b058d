//! The crash campaign for the daemon: the real `farmsync run` (a yearly schedule, so only its
//! start-up cycle runs) is killed with SIGKILL right after its k-th write reaches the sandbox
//! (the write is applied, its answer never sent), for every k of two start-up cycles: the first
//! over a two-sided farm (links, creates, updates), and one after people deleted, edited and
//! added customers on both sides since a first sync (deletes, tags, updates, creates). Then
//! `farmsync sync` runs until a run writes nothing. After each k: no duplicate on either side,
//! no customer lost or changed compared with a cycle that was never killed, no link pointing at
//! nothing, the journal settled, and the last run wrote nothing. A second campaign keeps
//! listings faulty while the killed cycle and the two runs after it read them (live customers
//! left out of both sides' lists, the CRM's pages drifting forward and back, FarmFlow's list
//! lagging in the killed cycle), then turns the faults off for the convergence check.
//!
//! A third campaign kills quick cycles: with a sweep only at start and a quick cycle every second,
//! the daemon's start-up sweep finds the farm agreeing (a `farmsync sync` ran before), then people
//! edit and delete in FarmFlow (the next `quick_cron` cycle carries it), then edit on both sides
//! and delete in the CRM's back office (webhook deliveries announce it; a quick cycle carries
//! it). The fault is armed only after the start-up sweep has finished, so every write killed is
//! a quick cycle's; the same checks follow. `proof_daemon_scope` runs quick cycles the same way
//! on a wholesale farm (`deletes = "approve"`, `kounta_tag`), with a person deciding beside the
//! daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use farmsync::sandbox::{FarmflowRecord, Sandbox};
use tokio::sync::Semaphore;

use crate::daemon_support::{Daemon, event, free_port};
use crate::proof_support::{
    ArmedWrite, EVERY_WRITE_KIND, ListingFaults, MAX_RERUNS, People, Person, Scenario, Side, World,
    assert_kinds, assert_none_failed, converge, converge_and_check, expected_outcome,
    kill_after_write, listing_figures, recover_and_check, reset_stats, run_farmsync,
    sandbox_config, sound_world, spawn_killable, sync_ok, writes, writes_in_order,
};
use crate::support::{Workdir, text};

/// Once a year: only the start-up cycle runs while the test watches.
const YEARLY: &str = "[schedule]\ncron = \"0 0 0 1 1 *\"\nquick_cron = \"\"\n";
/// Crash points tried at once; each has its own sandbox, state DB and daemon. Shared with
/// `proof_daemon_scope`, so the daemon campaigns together run no more at once.
pub static GATE: Semaphore = Semaphore::const_new(3);

/// CRM pages of five: the scenario's 21 CRM customers span five pages. After page 2 the later
/// pages skip two customers; after page 3 they step back two, listing two customers twice.
const PAGE_SIZE: usize = 5;
const DRIFTS: &[(u32, i64)] = &[(2, 2), (3, -2)];

/// What the listings leave out while the killed cycle (after people's changes or not) and the
/// runs after it read them. FarmFlow's list lags only in the killed cycle; the sync crash
/// campaign's `a_lagging_farmflow_list_during_recovery_never_duplicates_a_lost_create` lags it
/// during recovery too.
fn listing_faults(after_changes: bool) -> ListingFaults {
    if after_changes {
        // Linked people left out: edited in the CRM (Cy0, Ray1), in FarmFlow (Cy1, Dee1), or
        // unchanged (Fatima); and Oto0, new in FarmFlow. The lag hides the people's last two
        // FarmFlow writes (Oto1 and Oto2 arriving).
        ListingFaults {
            crm_omitted: &[("Cy0", "Cycle"), ("Fatima", "Haddad"), ("Ray1", "Daemon")],
            ff_omitted: &[("Cy1", "Cycle"), ("Dee1", "Daemon"), ("Oto0", "Later")],
            page_size: PAGE_SIZE,
            drifts: DRIFTS,
            lag: 2,
        }
    } else {
        // Nothing is linked yet, so only people on one side are left out: the omitted ones and
        // the two the forward drift skips (Chloe Martin and Ethan Brown, once Fatima and Dee1
        // are omitted). A person on both sides left out of one list would be created a second
        // time; FarmFlow's last writes are such people (Cy0–Cy2), so its list does not lag.
        ListingFaults {
            crm_omitted: &[("Dee1", "Daemon"), ("Fatima", "Haddad")],
            ff_omitted: &[("Ray2", "Daemon"), ("Ruby", "Thompson")],
            page_size: PAGE_SIZE,
            drifts: DRIFTS,
            lag: 0,
        }
    }
}

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
pub fn scenario() -> Scenario {
    Scenario::sample_farm()
        .in_crm(Person::numbered("Dee", "Daemon", "02 7100 10", 5).map(|(_, p)| p.crm()))
        .in_farmflow(
            Person::numbered("Ray", "Daemon", "03 7100 20", 5).map(|(i, p)| FarmflowRecord {
                city: "Hobart".into(),
                ..p.ff(600 + i)
            }),
        )
        .on_both_sides(
            Person::numbered("Cy", "Cycle", "07 7100 30", 3).map(|(i, p)| {
                let address = format!("{i} Cycle Way");
                (
                    p.crm(),
                    FarmflowRecord {
                        address,
                        city: "Darwin".into(),
                        ..p.ff_twin(700 + i)
                    },
                )
            }),
        )
}

/// What people change after a first sync: deletions on both sides, edits on either side and
/// both, and new people on each side.
fn people_change(people: &People) {
    people.delete_in_crm("Dee0");
    people.delete_in_farmflow("Ray0");
    people.edit_crm("Cy0", |c| c.phone = "07 7199 0000".into());
    people.edit_farmflow("Cy1", |c| c.city = "Alice Springs".into());
    people.edit_crm("Ray1", |c| c.email = "ray1.new@daemon.example".into());
    people.edit_farmflow("Dee1", |c| c.phone = "02 7199 1111".into());
    for (_, p) in Person::numbered("Nia", "Later", "", 3) {
        people.add_to_crm(p.crm());
    }
    for (_, p) in Person::numbered("Oto", "Later", "", 3) {
        people.add_to_farmflow(p.ff(0));
    }
}

/// A fresh sandbox seeded with `data` and a workdir whose config runs the daemon yearly; with
/// `after_changes`, a first sync has run and people have changed things since.
async fn prepare(data: &Scenario, after_changes: bool) -> (Sandbox, Workdir) {
    let (sb, w) = data.start(YEARLY).await;
    if after_changes {
        sync_ok(&w).await;
        people_change(&People(&sb));
    }
    reset_stats(&sb);
    (sb, w)
}

/// One `farmsync sync` that is never killed: the writes of a first cycle, in order, and the
/// outcome every crashed daemon must reach too (after the same faulty runs as a crashed one,
/// with `faulty_listings`). (The daemon's start-up cycle is the same run.)
async fn uncrashed(
    data: &Scenario,
    after_changes: bool,
    faulty_listings: bool,
) -> (Vec<CrashPoint>, World) {
    let (sb, w) = prepare(data, after_changes).await;
    let faults = faulty_listings.then(|| listing_faults(after_changes));
    if let Some(faults) = &faults {
        faults.arm(&sb);
    }
    let since = tokio::time::Instant::now();
    let out = run_farmsync(&w, &["sync"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let points = writes_in_order(&sb, since)
        .into_iter()
        .map(|write| CrashPoint {
            after_changes,
            k: write.k,
            side: write.side,
            nth: write.nth,
            what: write.what,
        })
        .collect();
    // A second run writes nothing; after faulty listings, one of the runs once they are whole.
    let recovery = faults.map(ListingFaults::without_lag);
    let world = expected_outcome(&sb, &w, recovery.as_ref()).await;
    sb.shutdown().await;
    (points, world)
}

/// What one crash point came to.
#[derive(Debug)]
struct Verdict {
    /// Invariant violations; empty when the point passed.
    violations: Vec<String>,
    /// Live records the listings left out (or showed stale) while the faults were on.
    listing_faults: u64,
    /// Of those, the ones the killed cycle and the faulty runs after it read by id and found
    /// present (`sync.listing.omission`).
    confirmed_present: u64,
}

/// Kills `farmsync run` right after the write at `point` is applied, reruns `farmsync sync`
/// until a run writes nothing (the first `FAULTY_RERUNS` with faulty listings, if
/// `faulty_listings`), and checks every invariant against `expected`.
async fn crash_daemon_at(
    point: &CrashPoint,
    data: &Scenario,
    expected: &World,
    fault_env: &[(&str, &str)],
    faulty_listings: bool,
) -> Verdict {
    let (sb, w) = prepare(data, point.after_changes).await;
    let faults = faulty_listings.then(|| listing_faults(point.after_changes));
    if let Some(faults) = &faults {
        faults.arm(&sb);
    }
    let mut violations =
        kill_after_write(&sb, point.side, point.nth, point.k, "farmsync run", || {
            spawn_killable(&w, "run", fault_env)
        })
        .await;
    let recovery = faults.map(ListingFaults::without_lag);
    let recovery = recover_and_check(&sb, &w, fault_env, recovery.as_ref(), expected).await;
    violations.extend(recovery.violations);
    sb.shutdown().await;
    Verdict {
        violations,
        listing_faults: recovery.listing_faults,
        confirmed_present: recovery.confirmed_present,
    }
}

/// Every crash point of the start-up cycles of `phases` (after people's changes or not), a few
/// at a time: the points with their verdicts and, for each that broke an invariant, a line
/// saying how.
async fn campaign(
    phases: &[bool],
    fault_env: &'static [(&'static str, &'static str)],
    faulty_listings: bool,
) -> (Vec<(CrashPoint, Verdict)>, Vec<String>) {
    let data = Arc::new(scenario());
    let mut tasks = tokio::task::JoinSet::new();
    for &after_changes in phases {
        let (points, expected) = uncrashed(&data, after_changes, faulty_listings).await;
        let expected = Arc::new(expected);
        for point in points {
            let (data, expected) = (data.clone(), expected.clone());
            tasks.spawn(async move {
                let _permit = GATE.acquire().await.unwrap();
                let verdict =
                    crash_daemon_at(&point, &data, &expected, fault_env, faulty_listings).await;
                (point, verdict)
            });
        }
    }
    let mut points = Vec::new();
    let mut failed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (point, verdict) = joined.expect("crash point task");
        if !verdict.violations.is_empty() {
            failed.push(format!(
                "{} k={} ({}): {}",
                if point.after_changes {
                    "after changes"
                } else {
                    "first cycle"
                },
                point.k,
                point.what,
                verdict.violations.join("\n    ")
            ));
        }
        points.push((point, verdict));
    }
    points.sort_by_key(|(p, _)| (p.after_changes, p.k));
    failed.sort();
    (points, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_after_any_write_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let (points, failed) = campaign(&[false, true], &[], false).await;
    let total = points.len();
    let on = |after: bool, side| {
        points
            .iter()
            .filter(|(p, _)| p.after_changes == after && p.side == side)
            .count()
    };
    let kinds: BTreeSet<String> = points.iter().map(|(p, _)| p.what.clone()).collect();
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
    assert_kinds(&kinds, EVERY_WRITE_KIND);
    for after in [false, true] {
        assert!(
            on(after, Side::Kounta) >= 3 && on(after, Side::Farmflow) >= 3,
            "both sides take writes (after changes: {after})"
        );
    }
    assert_none_failed(total, &failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_journal_is_never_settled_fails_the_campaign() {
    let (points, failed) = campaign(
        &[false],
        &[("FARMSYNC_TEST_FAULT", "skip-journal-recovery")],
        false,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_while_listings_leave_customers_out_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let (points, failed) = campaign(&[false, true], &[], true).await;
    let total = points.len();
    let figures = |after: bool| {
        let of_phase = points.iter().filter(|(p, _)| p.after_changes == after);
        let count = of_phase.clone().count();
        let served: u64 = of_phase.clone().map(|(_, v)| v.listing_faults).sum();
        let confirmed: u64 = of_phase.map(|(_, v)| v.confirmed_present).sum();
        (count, served, confirmed)
    };
    let (first, after) = (figures(false), figures(true));
    println!(
        "faulty-listing daemon crash campaign: {total} crash points; listing faults served \
         (customers left out, skipped by a drift or shown stale) / omissions confirmed present \
         by a read by id — {}; {}; {} crash points broke an invariant; {:.1} s",
        listing_figures("first cycle", first),
        listing_figures("after changes", after),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        total >= 30,
        "the cycles need dozens of writes, made {total}"
    );
    assert!(
        points.iter().all(|(_, v)| v.listing_faults > 0),
        "every crash point had listings leave live customers out"
    );
    // After the first sync the omitted people are linked: every run must read them by id.
    assert!(
        points
            .iter()
            .filter(|(p, _)| p.after_changes)
            .all(|(_, v)| v.confirmed_present >= 2),
        "linked customers left out were not confirmed present"
    );
    assert_none_failed(total, &failed);
}

// ---------------------------------------------------------------------------------------------
// Quick cycles

/// How long the quick campaign waits for the daemon's log before giving up.
pub const MINUTE: Duration = Duration::from_secs(60);

/// A sweep once a year (so only the start-up one), a quick cycle every second, webhooks
/// delivered to `port`, and `extra` (more sections of the config, such as `[sync]`).
fn quick_config(sb: &Sandbox, port: u16, extra: &str) -> String {
    sandbox_config(
        sb,
        &format!(
            "[schedule]\ncron = \"0 0 0 1 1 *\"\nquick_cron = \"* * * * * *\"\n\
             [webhooks]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
             signature_token = {:?}\nshared_secret = \"the-quick-campaign-secret\"\n{extra}",
            sb.kounta().signature_token()
        ),
    )
}

/// A fresh sandbox seeded with `data`, synced until a run writes nothing, with the CRM's
/// webhooks registered to the daemon's listener; `extra` is added to the quick config.
pub async fn prepare_agreed(data: &Scenario, extra: &str) -> (Sandbox, Workdir) {
    let sb = data.sandbox().await;
    let w = Workdir::new(&quick_config(&sb, free_port(), extra));
    let (unsettled, _) = converge(&sb, &w, &[], MAX_RERUNS).await;
    assert!(unsettled.is_empty(), "{unsettled:?}");
    let out = run_farmsync(&w, &["webhooks", "register"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    reset_stats(&sb);
    (sb, w)
}

/// Reads the daemon's log until the run it started with `started` has finished; returns the
/// run's `sync.run.finished` line.
pub async fn finished(d: &mut Daemon, started: &serde_json::Value) -> serde_json::Value {
    let run_id = started["run_id"].clone();
    assert!(run_id.is_string(), "{started}");
    d.wait_for(MINUTE, |l| {
        event(l) == "sync.run.finished" && l["run_id"] == run_id
    })
    .await
}

/// Whether a run's `sync.run.finished` line counts a write.
pub fn wrote(finished: &serde_json::Value) -> bool {
    ["created", "updated", "deleted", "linked"]
        .iter()
        .any(|n| finished[n].as_u64().unwrap_or(0) > 0)
}

/// Starts `farmsync run` and waits until its start-up sweep has finished, then a quick cycle
/// started after it: the farm agrees, and what people change now waits for the next quick
/// cycle (within a second, or half a second after a webhook delivery).
pub async fn daemon_after_sweep(w: &Workdir) -> Daemon {
    let mut d = Daemon::spawn(w, &[]);
    let sweep = d
        .wait_for(MINUTE, |l| {
            event(l) == "sync.run.started" && l["kind"] == "sweep"
        })
        .await;
    finished(&mut d, &sweep).await;
    let quick = d
        .wait_for(MINUTE, |l| {
            event(l) == "sync.run.started" && l["kind"] == "quick"
        })
        .await;
    finished(&mut d, &quick).await;
    d
}

/// People's first round of changes once the farm agrees: FarmFlow edits and a FarmFlow
/// deletion, which no webhook announces: the next `quick_cron` cycle finds them in FarmFlow's
/// list.
fn farmflow_people_change(sb: &Sandbox) {
    let people = People(sb);
    people.edit_farmflow("Cy1", |c| c.city = "Alice Springs".into());
    people.edit_farmflow("Ray2", |c| c.phone = "03 7199 2222".into());
    people.edit_farmflow("Dee3", |c| c.city = "Broome".into());
    people.delete_in_farmflow("Ray0");
}

/// People's second round: CRM edits, a person edited on both sides, and a CRM back-office
/// deletion, each announced by a webhook delivery. Returns the CRM customers the deliveries
/// name.
fn crm_people_change(sb: &Sandbox) -> Vec<i64> {
    let people = People(sb);
    let announced = ["Ray3", "Cy0", "Cy2", "Dee2", "Dee0"].map(|name| people.crm_id(name));
    people.edit_farmflow("Ray3", |c| c.city = "Launceston".into());
    people.edit_crm("Ray3", |c| c.email = "ray3.new@daemon.example".into());
    people.edit_crm("Cy0", |c| c.phone = "07 7199 0000".into());
    people.edit_crm("Cy2", |c| c.phone = "07 7199 0002".into());
    people.edit_crm("Dee2", |c| c.email = "dee2.new@daemon.example".into());
    people.delete_in_crm("Dee0");
    announced.to_vec()
}

/// Reads the daemon's log until a cycle has finished having written something (`writes` counts
/// every write since the sandbox's stats were reset): the one that carried the FarmFlow round.
/// Its CRM writes come back as webhook deliveries; once the daemon has received them all and a
/// cycle started after them has finished, it is idle again.
async fn farmflow_round_carried(d: &mut Daemon, sb: &Sandbox, writes_before: u64) {
    while writes(sb) == writes_before {
        let next = d.wait_for(MINUTE, |l| event(l) == "sync.run.started").await;
        finished(d, &next).await;
    }
    let echoes = sb.kounta().stats().writes as usize;
    d.wait_for_count("webhook.received", echoes, MINUTE).await;
    let next = d.wait_for(MINUTE, |l| event(l) == "sync.run.started").await;
    finished(d, &next).await;
}

/// Reads the daemon's log until it has received a delivery for each of `announced`, then until
/// a cycle started after those has finished: it found every change people made.
async fn crm_round_carried(d: &mut Daemon, announced: &[i64]) {
    let mut waiting: BTreeSet<i64> = announced.iter().copied().collect();
    while !waiting.is_empty() {
        let received = d.wait_for(MINUTE, |l| event(l) == "webhook.received").await;
        if let Some(id) = received["kounta_id"].as_i64() {
            waiting.remove(&id);
        }
    }
    let next = d.wait_for(MINUTE, |l| event(l) == "sync.run.started").await;
    finished(d, &next).await;
}

/// A write of the quick cycles after people's changes: the k-th of all, the `nth` of its side,
/// in the cycle that carried people's first round (FarmFlow's changes) or their second.
#[derive(Debug, Clone)]
struct QuickPoint {
    k: usize,
    side: Side,
    nth: u64,
    what: String,
    first_round: bool,
}

/// What a daemon that is never killed did after its start-up sweep.
struct UncrashedQuick {
    /// The writes of its quick cycles, in order.
    points: Vec<QuickPoint>,
    /// The quick cycles that wrote, by the trigger that started them.
    writing_cycles: BTreeMap<String, usize>,
    /// The outcome every crashed daemon must reach.
    world: World,
}

/// A daemon that is never killed: its start-up sweep finds the farm agreeing, then a quick
/// cycle carries each round of people's changes.
async fn uncrashed_quick(data: &Scenario) -> UncrashedQuick {
    let (sb, w) = prepare_agreed(data, "").await;
    let mut d = daemon_after_sweep(&w).await;
    assert_eq!(
        writes(&sb),
        0,
        "the farm agreed: the start-up sweep writes nothing\n{}",
        d.dump()
    );
    let since = tokio::time::Instant::now();
    let mark = d.log.len();
    farmflow_people_change(&sb);
    farmflow_round_carried(&mut d, &sb, 0).await;
    let first_round = writes(&sb) as usize;
    let announced = crm_people_change(&sb);
    crm_round_carried(&mut d, &announced).await;
    d.signal("TERM");
    let (status, _) = d.exit(MINUTE).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    // Only the quick lane runs now, so a cycle's `daemon.cycle.started` (naming its trigger)
    // comes just before its run's lines.
    let mut trigger = String::new();
    let mut writing_cycles: BTreeMap<String, usize> = BTreeMap::new();
    for l in &d.log[mark..] {
        match event(l) {
            "daemon.cycle.started" => trigger = l["trigger"].as_str().unwrap_or("").to_owned(),
            "sync.run.finished" if wrote(l) => {
                *writing_cycles.entry(trigger.clone()).or_default() += 1;
            }
            _ => {}
        }
    }
    let points = writes_in_order(&sb, since)
        .into_iter()
        .map(|write| QuickPoint {
            k: write.k,
            side: write.side,
            nth: write.nth,
            what: write.what,
            first_round: write.k <= first_round,
        })
        .collect();
    // The quick cycles carried everything: a sweep after them writes nothing.
    let (left, _) = converge(&sb, &w, &[], 1).await;
    assert!(left.is_empty(), "{left:?}\n{}", d.dump());
    let world = sound_world(&sb, &w);
    sb.shutdown().await;
    UncrashedQuick {
        points,
        writing_cycles,
        world,
    }
}

/// Runs `crash` at every point, a few at a time (`GATE`): how many runs each point needed after
/// its kill, and for each point that broke an invariant a line (`label` names the point) saying
/// how, sorted.
pub async fn crash_every_point<P, Fut>(
    points: &[P],
    label: impl Fn(&P) -> String,
    crash: impl Fn(P) -> Fut,
) -> (Vec<usize>, Vec<String>)
where
    P: Clone + Send + 'static,
    Fut: std::future::Future<Output = (Vec<String>, usize)> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for point in points.iter().cloned() {
        let run = crash(point.clone());
        tasks.spawn(async move {
            let _permit = GATE.acquire().await.unwrap();
            let (violations, runs) = run.await;
            (point, violations, runs)
        });
    }
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (point, violations, after) = joined.expect("crash point task");
        runs.push(after);
        if !violations.is_empty() {
            failed.push(format!("{}: {}", label(&point), violations.join("\n    ")));
        }
    }
    failed.sort();
    (runs, failed)
}

/// Kills `farmsync run` right after the write at `point` of its quick cycles is applied (armed
/// once the start-up sweep has finished), reruns `farmsync sync` until a run writes nothing, and
/// checks every invariant against `expected`. People make their second round of changes after
/// the first round's cycle, as in the uncrashed run — or, when that cycle is the one killed,
/// while the daemon is down (their deliveries find no listener). Returns the violations and the
/// runs after the kill.
async fn crash_quick_cycle_at(
    point: &QuickPoint,
    data: &Scenario,
    expected: &World,
) -> (Vec<String>, usize) {
    let (sb, w) = prepare_agreed(data, "").await;
    let mut d = daemon_after_sweep(&w).await;
    let mut violations = Vec::new();
    if writes(&sb) != 0 {
        violations.push(format!(
            "{} writes before people's changes: the start-up sweep or an idle quick cycle wrote",
            writes(&sb)
        ));
    }
    let agreed = writes(&sb);
    let armed = ArmedWrite::arm(&sb, point.side, point.nth, point.k);
    farmflow_people_change(&sb);
    if point.first_round {
        violations.extend(
            armed
                .kill_when_applied(&sb, d.process(), "farmsync run")
                .await,
        );
        crm_people_change(&sb);
    } else {
        farmflow_round_carried(&mut d, &sb, agreed).await;
        crm_people_change(&sb);
        violations.extend(
            armed
                .kill_when_applied(&sb, d.process(), "farmsync run")
                .await,
        );
    }
    let (found, runs) = converge_and_check(&sb, &w, &[], expected, MAX_RERUNS).await;
    violations.extend(found);
    sb.shutdown().await;
    (violations, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_cycles_killed_after_any_write_lose_and_duplicate_nothing() {
    let started = Instant::now();
    let data = Arc::new(scenario());
    let UncrashedQuick {
        points,
        writing_cycles,
        world: expected,
    } = uncrashed_quick(&data).await;
    let expected = Arc::new(expected);
    let (runs, failed) = crash_every_point(
        &points,
        |p| format!("k={} ({}, write {} of its side)", p.k, p.what, p.nth),
        |point| {
            let (data, expected) = (data.clone(), expected.clone());
            async move { crash_quick_cycle_at(&point, &data, &expected).await }
        },
    )
    .await;
    let total = points.len();
    let on = |first_round: bool, side| {
        points
            .iter()
            .filter(|p| p.first_round == first_round && p.side == side)
            .count()
    };
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &points {
        *kinds.entry(p.what.as_str()).or_default() += 1;
    }
    println!(
        "quick-cycle daemon crash campaign: {total} crash points, every k of the quick cycles \
         after the start-up sweep (those that wrote, by trigger: {writing_cycles:?}) — FarmFlow's \
         changes: {} crm + {} farmflow writes; the CRM's changes: {} crm + {} farmflow writes; \
         kinds {kinds:?}; {} runs after the kills, at most {} for one point; {} crash points \
         broke an invariant; {:.1} s",
        on(true, Side::Kounta),
        on(true, Side::Farmflow),
        on(false, Side::Kounta),
        on(false, Side::Farmflow),
        runs.iter().sum::<usize>(),
        runs.iter().max().unwrap_or(&0),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        total >= 8,
        "people's changes need at least 8 writes, made {total}"
    );
    assert!(
        writing_cycles.get("quick").is_some_and(|n| *n >= 1),
        "a quick_cron cycle carried FarmFlow's changes: {writing_cycles:?}"
    );
    for first_round in [true, false] {
        assert!(
            on(first_round, Side::Kounta) + on(first_round, Side::Farmflow) >= 3,
            "each round of changes takes writes (FarmFlow's: {first_round})"
        );
    }
    for kind in ["crm Update", "farmflow Update", "farmflow Delete"] {
        assert!(
            kinds.contains_key(kind),
            "no {kind} among the crash points: {kinds:?}"
        );
    }
    assert_none_failed(total, &failed);
}
