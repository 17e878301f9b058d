//! The quick-cycle crash campaign on a wholesale farm: `farmsync run` with `[sync] deletes =
//! "approve"` and `kounta_tag = "wholesale"` (a sweep at start only, a quick cycle every second,
//! webhooks on; see `proof_daemon`'s quick campaign, whose helpers this one shares). The
//! daemon's start-up sweep finds the farm agreeing: every CRM customer carries the tag but one
//! walk-in, who is in the CRM only. Then people delete Dee0 in the CRM's back office (a webhook
//! delivery announces it) and Ray0 in FarmFlow; quick cycles queue both deletions and write
//! nothing, and the deletions stay queued through the next quick cycle. Then, while the daemon
//! runs, a person approves Dee0's (FarmFlow's twin is to go) and rejects Ray0's (no
//! `farmflow-deleted` tag; Ray0 is to be recreated in FarmFlow) with the real `farmsync deletes
//! approve|reject`, and people edit on either side and both, the walk-in too. The quick cycles carry out
//! the approval and the edits; the rejection's recreation waits for a sweep, by design, which
//! the `farmsync sync` runs after the daemon make.
//!
//! The daemon is killed with SIGKILL right after each write of those quick cycles (every k);
//! then `farmsync sync` runs until a run writes nothing, and besides the checks of every
//! campaign (nobody twice, nobody lost or changed compared with the uncrashed run, no broken
//! link, the journal settled, the queue as the uncrashed run leaves it) the wholesale rules
//! hold on their own: the walk-in not in FarmFlow, only Dee0 deleted, nobody tagged
//! `farmflow-deleted`, Ray0 recreated in FarmFlow exactly once and linked, the queue empty.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use farmsync::sandbox::{FarmflowRecord, KountaRecord, Sandbox};

use crate::daemon_support::{Daemon, event};
use crate::proof_daemon::{
    MINUTE, crash_every_point, daemon_after_sweep, finished, prepare_agreed, scenario, wrote,
};
use crate::proof_support::{
    ArmedWrite, MAX_RERUNS, People, Person, Scenario, Side, World, assert_none_failed, converge,
    converge_and_check, crm_name, ff_name, fold, run_farmsync, sound_world, store_state, writes,
    writes_in_order,
};
use crate::support::{Workdir, text};

/// The `[sync]` section of the wholesale farm.
const CONFIG: &str = "[sync]\ndeletes = \"approve\"\nkounta_tag = \"wholesale\"\n";
/// The scope tag (`kounta_tag`).
const TAG: &str = "wholesale";
/// The default `deleted_tag`.
const DELETED_TAG: &str = "farmflow-deleted";
/// Deleted in the CRM; the person approves its deletion.
const APPROVED: &str = "Dee0";
/// Deleted in FarmFlow; the person rejects its deletion.
const REJECTED: &str = "Ray0";
/// In the CRM only, without the tag.
const WALKIN: &str = "Walt";

fn has(tags: &[String], tag: &str) -> bool {
    tags.iter().any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// `proof_daemon`'s farm with every CRM customer tagged, and a walk-in.
fn wholesale_scenario() -> Scenario {
    let mut farm = scenario().in_crm([Person::new(WALKIN, "Walkin", "02 7100 9999").crm()]);
    for c in &mut farm.data.kounta {
        if c.first_name != WALKIN && !has(&c.tags, TAG) {
            c.tags.push(TAG.into());
        }
    }
    farm
}

/// People delete one customer on each side: Dee0 in the CRM's back office (announced by a
/// webhook delivery), Ray0 in FarmFlow. Returns the CRM customer the delivery names.
fn people_delete(sb: &Sandbox) -> i64 {
    let people = People(sb);
    let dee0 = people.crm_id(APPROVED);
    people.delete_in_crm(APPROVED);
    people.delete_in_farmflow(REJECTED);
    dee0
}

/// People edit on both sides once the person has decided; returns how many CRM changes they
/// made (each one a webhook delivery).
fn people_edit(sb: &Sandbox) -> usize {
    let people = People(sb);
    people.edit_crm("Cy0", |c| c.phone = "07 7199 0000".into());
    people.edit_crm("Cy2", |c| c.phone = "07 7199 0002".into());
    people.edit_crm("Dee2", |c| c.email = "dee2.new@daemon.example".into());
    people.edit_crm(WALKIN, |c| c.phone = "02 7199 9999".into());
    people.edit_farmflow("Cy1", |c| c.city = "Alice Springs".into());
    people.edit_farmflow("Ray2", |c| c.phone = "03 7199 2222".into());
    // Someone edited on both sides, a field each.
    people.edit_farmflow("Ray3", |c| c.city = "Launceston".into());
    people.edit_crm("Ray3", |c| c.email = "ray3.new@daemon.example".into());
    5
}

/// Polls the state DB (read-only, beside the daemon) until its deletion queue holds `n`
/// entries, for at most a minute.
async fn queue_holds(w: &Workdir, n: usize) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + MINUTE;
    loop {
        let queue = store_state(&w.state_path())?.queue;
        if queue.len() == n {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the queue never held {n} entries: {queue:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until quick cycles have queued both deletions (the CRM's announced by its delivery),
/// then until a cycle started after the queuing one has finished: the deletions still wait,
/// and nothing was written. Returns what went wrong.
async fn deletions_queued(d: &mut Daemon, sb: &Sandbox, w: &Workdir, dee0: i64) -> Vec<String> {
    d.wait_for(MINUTE, |l| {
        event(l) == "webhook.received" && l["kounta_id"].as_i64() == Some(dee0)
    })
    .await;
    if let Err(e) = queue_holds(w, 2).await {
        return vec![format!("{e}\n{}", d.dump())];
    }
    // The log is read as it comes: the first start read now may be the queuing cycle's own.
    // Quick cycles run one at a time, so the second started after it finished.
    d.wait_for(MINUTE, |l| event(l) == "sync.run.started").await;
    let next = d.wait_for(MINUTE, |l| event(l) == "sync.run.started").await;
    finished(d, &next).await;
    let mut violations = Vec::new();
    match store_state(&w.state_path()) {
        Ok(s) if s.queue.len() == 2 => {}
        Ok(s) => violations.push(format!(
            "a quick cycle took a waiting deletion off the queue: {:?}",
            s.queue
        )),
        Err(e) => violations.push(e),
    }
    if writes(sb) != 0 {
        violations.push(format!(
            "{} writes while the deletions wait for a person",
            writes(sb)
        ));
    }
    violations
}

/// The person decides beside the running daemon with the real binary: approves Dee0's
/// deletion (FarmFlow's twin is to go) and rejects Ray0's (Ray0 is to come back to FarmFlow).
async fn person_decides(w: &Workdir) -> Vec<String> {
    let queue = match store_state(&w.state_path()) {
        Ok(s) => s.queue,
        Err(e) => return vec![e],
    };
    let mut violations = Vec::new();
    for (decision, action) in [("approve", "delete_farmflow"), ("reject", "tag_kounta")] {
        let Some(q) = queue.iter().find(|q| q.action == action) else {
            violations.push(format!("no queued {action} to {decision}: {queue:?}"));
            continue;
        };
        let out = run_farmsync(w, &["deletes", decision, &q.reference_id], &[]).await;
        if out.status.code() != Some(0) {
            violations.push(format!(
                "deletes {decision} {} exited {:?}: {}",
                q.reference_id,
                out.status.code(),
                text(&out.stderr)
            ));
        }
    }
    violations
}

/// Reads the daemon's log until it is idle after the person's decisions and people's edits:
/// every delivery received (people's `crm_changes` and the echo of each CRM write the daemon
/// made since the sandbox's stats were reset), then a cycle started after them that wrote
/// nothing.
async fn decided_round_carried(d: &mut Daemon, sb: &Sandbox, crm_changes: usize) {
    loop {
        let echoes = sb.kounta().stats().writes as usize;
        d.wait_for_count("webhook.received", crm_changes + echoes, MINUTE)
            .await;
        let next = d.wait_for(MINUTE, |l| event(l) == "sync.run.started").await;
        let done = finished(d, &next).await;
        if !wrote(&done) && sb.kounta().stats().writes as usize == echoes {
            return;
        }
    }
}

/// The wholesale rules of the settled world, on their own: `seeded` is who the farm started
/// with (by folded name).
fn rules(world: &World, seeded: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let count_crm = |name: &str| world.crm.iter().filter(|c| crm_name(c) == name).count();
    let count_ff = |name: &str| world.ff.iter().filter(|c| ff_name(c) == name).count();
    let approved = format!("{} daemon", fold(APPROVED));
    let walkin = format!("{} walkin", fold(WALKIN));
    for name in seeded {
        let (crm, ff) = (count_crm(name), count_ff(name));
        let want_ff = usize::from(*name != approved && *name != walkin);
        let want_crm = usize::from(*name != approved);
        if crm != want_crm || ff != want_ff {
            out.push(format!(
                "{name} is {crm} times in the crm and {ff} in farmflow, not {want_crm} and {want_ff}"
            ));
        }
    }
    for c in &world.crm {
        if has(&c.tags, DELETED_TAG) {
            out.push(format!(
                "{} is tagged {DELETED_TAG}, which nobody approved",
                crm_name(c)
            ));
        }
        if c.first_name != WALKIN && !has(&c.tags, TAG) {
            out.push(format!("{} lacks the tag {TAG}", crm_name(c)));
        }
    }
    let rejected = format!("{} daemon", fold(REJECTED));
    let linked = world
        .crm
        .iter()
        .filter(|c| crm_name(c) == rejected)
        .any(|c| {
            world
                .ff
                .iter()
                .any(|f| ff_name(f) == rejected && c.reference_id == format!("farmflow:{}", f.id))
        });
    if !linked {
        out.push(format!(
            "rejected {REJECTED}: its records are not linked again"
        ));
    }
    if !world.queue.is_empty() {
        out.push(format!("the queue is not empty: {:?}", world.queue));
    }
    out
}

/// Everyone the farm starts with, by folded name, but FarmFlow's customers with no email and no
/// phone (the sample farm's Isla Robertson), which cannot exist in the CRM.
fn seeded(data: &Scenario) -> Vec<String> {
    let mut names: Vec<String> = data
        .data
        .kounta
        .iter()
        .map(crm_name)
        .chain(
            data.data
                .farmflow
                .iter()
                .filter(|f| !f.email.trim().is_empty() || !f.phone.trim().is_empty())
                .map(ff_name),
        )
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A write of the quick cycles after the person decided: the k-th of all, the `nth` of its side.
#[derive(Debug, Clone)]
struct Point {
    k: usize,
    side: Side,
    nth: u64,
    what: String,
}

/// A daemon that is never killed: its writes after the person decided, in order, the quick
/// cycles that wrote (by trigger), and the outcome every crashed daemon must reach.
async fn uncrashed(data: &Scenario) -> (Vec<Point>, BTreeMap<String, usize>, World) {
    let (sb, w) = prepare_agreed(data, CONFIG).await;
    let mut d = daemon_after_sweep(&w).await;
    assert_eq!(writes(&sb), 0, "the farm agreed\n{}", d.dump());
    let dee0 = people_delete(&sb);
    let queued = deletions_queued(&mut d, &sb, &w, dee0).await;
    assert!(queued.is_empty(), "{queued:?}\n{}", d.dump());
    let since = tokio::time::Instant::now();
    let mark = d.log.len();
    let decided = person_decides(&w).await;
    assert!(decided.is_empty(), "{decided:?}");
    let crm_changes = people_edit(&sb);
    decided_round_carried(&mut d, &sb, 1 + crm_changes).await;
    d.signal("TERM");
    let (status, _) = d.exit(MINUTE).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());
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
    // The quick cycles carried the approval: FarmFlow's Dee0 is gone, the rejected deletion
    // waits for a sweep.
    let waiting = store_state(&w.state_path()).unwrap().queue;
    assert!(
        waiting.len() == 1 && waiting[0].action == "tag_kounta",
        "only the rejected deletion waits for a sweep: {waiting:?}\n{}",
        d.dump()
    );
    let points: Vec<Point> = writes_in_order(&sb, since)
        .into_iter()
        .map(|write| Point {
            k: write.k,
            side: write.side,
            nth: write.nth,
            what: write.what,
        })
        .collect();
    let (left, runs) = converge(&sb, &w, &[], MAX_RERUNS).await;
    assert!(left.is_empty(), "{left:?}");
    assert!(runs >= 2, "a sweep recreated the rejected {REJECTED}");
    let world = sound_world(&sb, &w);
    let broken = rules(&world, &seeded(data));
    assert!(broken.is_empty(), "the uncrashed run: {broken:?}");
    sb.shutdown().await;
    (points, writing_cycles, world)
}

/// Kills `farmsync run` right after the write at `point` of its quick cycles after the person
/// decided, reruns `farmsync sync` until a run writes nothing, and checks every invariant
/// against `expected` and the wholesale rules. Returns the violations and the runs after the
/// kill.
async fn crash_at(point: &Point, data: &Scenario, expected: &World) -> (Vec<String>, usize) {
    let (sb, w) = prepare_agreed(data, CONFIG).await;
    let mut d = daemon_after_sweep(&w).await;
    let dee0 = people_delete(&sb);
    let mut violations = deletions_queued(&mut d, &sb, &w, dee0).await;
    let armed = ArmedWrite::arm(&sb, point.side, point.nth, point.k);
    violations.extend(person_decides(&w).await);
    people_edit(&sb);
    violations.extend(
        armed
            .kill_when_applied(&sb, d.process(), "farmsync run")
            .await,
    );
    let (found, runs) = converge_and_check(&sb, &w, &[], expected, MAX_RERUNS).await;
    violations.extend(found);
    match World::read(&sb, &w.state_path()) {
        Ok(world) => violations.extend(rules(&world, &seeded(data))),
        Err(e) => violations.push(e),
    }
    sb.shutdown().await;
    (violations, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_cycles_carrying_a_decided_deletion_killed_after_any_write_lose_nothing() {
    let started = Instant::now();
    let data = Arc::new(wholesale_scenario());
    let (points, writing_cycles, expected) = uncrashed(&data).await;
    let expected = Arc::new(expected);
    let (runs, failed) = crash_every_point(
        &points,
        |p| format!("k={} ({}, write {} of its side)", p.k, p.what, p.nth),
        |point| {
            let (data, expected) = (data.clone(), expected.clone());
            async move { crash_at(&point, &data, &expected).await }
        },
    )
    .await;
    let total = points.len();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &points {
        *kinds.entry(p.what.as_str()).or_default() += 1;
    }
    println!(
        "wholesale quick-cycle daemon crash campaign (deletes = approve, kounta_tag): {total} \
         crash points, every k of the quick cycles after a person approved one queued deletion \
         and rejected the other beside the daemon (cycles that wrote, by trigger: \
         {writing_cycles:?}); kinds {kinds:?}; {} runs after the kills, at most {} for one \
         point; {} crash points broke an invariant; {:.1} s",
        runs.iter().sum::<usize>(),
        runs.iter().max().unwrap_or(&0),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(total >= 5, "the decided round needs writes, made {total}");
    for kind in ["crm Update", "farmflow Update", "farmflow Delete"] {
        assert!(
            kinds.contains_key(kind),
            "no {kind} among the crash points: {kinds:?}"
        );
    }
    assert_none_failed(total, &failed);
}

/// The rules see a walk-in in FarmFlow, an unapproved tag and a rejected deletion recreated
/// twice.
#[test]
fn the_scope_rules_see_walkins_unapproved_tags_and_double_recreations() {
    let data = wholesale_scenario();
    let seeded = seeded(&data);
    // Settled as the rules want it: Dee0 gone, everyone else on both sides (the walk-in in the
    // crm only), linked by reference.
    let mut crm: Vec<KountaRecord> = data.data.kounta.clone();
    crm.retain(|c| c.first_name != APPROVED);
    let mut ff: Vec<FarmflowRecord> = data.data.farmflow.clone();
    for (i, c) in crm.iter().enumerate() {
        if c.first_name != WALKIN && !ff.iter().any(|f| ff_name(f) == crm_name(c)) {
            ff.push(Person::new(&c.first_name, &c.last_name, "").ff(9_000 + i as i64));
        }
    }
    for f in &ff {
        if !crm.iter().any(|c| crm_name(c) == ff_name(f)) {
            let mut c = Person::new(&f.firstname, &f.lastname, "").crm();
            c.tags.push(TAG.into());
            crm.push(c);
        }
    }
    for (i, c) in crm.iter_mut().enumerate() {
        c.id = i as i64 + 1;
        if let Some(f) = ff.iter().find(|f| ff_name(f) == crm_name(c)) {
            c.reference_id = format!("farmflow:{}", f.id);
        }
    }
    let world = World {
        crm,
        ff,
        links: Vec::new(),
        unsettled: Vec::new(),
        queue: Vec::new(),
    };
    assert_eq!(rules(&world, &seeded), Vec::<String>::new());

    let mut walkin = world.clone();
    walkin.ff.push(Person::new(WALKIN, "Walkin", "").ff(9_999));
    assert!(
        rules(&walkin, &seeded)
            .iter()
            .any(|f| f.contains("walt walkin is 1 times in the crm and 1 in farmflow")),
        "{:?}",
        rules(&walkin, &seeded)
    );
    let mut tagged = world.clone();
    tagged.crm[0].tags.push(DELETED_TAG.into());
    assert!(
        rules(&tagged, &seeded)
            .iter()
            .any(|f| f.contains("which nobody approved")),
        "{:?}",
        rules(&tagged, &seeded)
    );
    let mut twice = world.clone();
    twice.ff.push(Person::new(REJECTED, "Daemon", "").ff(9_998));
    assert!(
        rules(&twice, &seeded)
            .iter()
            .any(|f| f.contains("ray0 daemon is 1 times in the crm and 2 in farmflow")),
        "{:?}",
        rules(&twice, &seeded)
    );
}
