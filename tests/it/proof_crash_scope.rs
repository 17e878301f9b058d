//! The crash campaign on a wholesale farm (issue #12): farmsync runs with
//! `[sync] deletes = "approve"` and `kounta_tag = "wholesale"`, and the real `farmsync sync` is
//! killed with SIGKILL right after each write of two runs (see `proof_crash` for how):
//!
//! - the first sync: most CRM customers carry the tag and are created in FarmFlow; walk-ins
//!   (no tag) are not; FarmFlow's customers are created in the CRM with the tag; an untagged
//!   CRM twin of a FarmFlow customer is linked and tagged, never duplicated; paused customers
//!   (one with a FarmFlow twin) are left alone;
//! - the run after a person decided queued deletions with the real binary
//!   (`farmsync deletes approve|reject REF`): an approved FarmFlow delete and CRM tag are
//!   applied, a rejected FarmFlow delete is undone by recreating the CRM customer and a rejected
//!   CRM tag by recreating the FarmFlow customer; a new deletion is queued and waits; a parked
//!   customer (the tag removed, then deleted in the CRM) and a paused one (edited meanwhile)
//!   are left alone; edits, creates, a walk-in that joins by getting the tag, new walk-ins.
//!
//! After each crash point farmsync runs until a run writes nothing; then, besides the checks
//! of every campaign (nobody twice, nobody lost or changed compared with the uncrashed run, no
//! broken link, the journal settled), the deletion queue holds what the uncrashed run's holds
//! (nothing decided left over, nothing naming a tombstone or a replaced link), and the rules
//! below hold on their own: no walk-in in FarmFlow, nothing deleted or tagged that a person did
//! not approve, each rejected deletion recreated exactly once, parked and paused customers
//! untouched.

use std::time::Instant;

use farmsync::sandbox::{FarmflowRecord, KountaRecord, KountaRecordAddress, Sandbox};
use farmsync::store::LinkState;

use crate::proof_crash::{Phase, assert_all_passed, whole_campaign};
use crate::proof_support::{People, Person, Scenario, World, run_farmsync, sync_ok};
use crate::support::{Workdir, text};

/// The `[sync]` section of the wholesale farm.
pub const CONFIG: &str = "[sync]\ndeletes = \"approve\"\nkounta_tag = \"wholesale\"\n";
/// The scope tag (`kounta_tag`).
const TAG: &str = "wholesale";
/// The default `pause_tag`.
const PAUSE: &str = "farmsync-pause";
/// The default `deleted_tag`.
const DELETED_TAG: &str = "farmflow-deleted";

fn crm(first: &str, last: &str, i: usize, tags: &[&str]) -> KountaRecord {
    KountaRecord {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        primary_address: Some(KountaRecordAddress {
            address: format!("{i} Market Street"),
            city: "Orange".into(),
            state: "NSW".into(),
            postal_code: "2800".into(),
            country: "AU".into(),
        }),
        ..Person::new(first, last, &format!("02 7100 {i:04}")).crm()
    }
}

fn ff(id: i64, first: &str, last: &str) -> FarmflowRecord {
    FarmflowRecord {
        address: format!("{id} Paddock Road"),
        city: "Molong".into(),
        state: "NSW".into(),
        zip: "2866".into(),
        country: "Australia".into(),
        ..Person::new(first, last, &format!("03 7200 {:04}", id % 10_000)).ff(id)
    }
}

/// Wholesale customers in the CRM (Wendy0–3, one tagged in another case) and FarmFlow (Fern0–3),
/// walk-ins (Walt0–2, one with an unrelated tag), a tagged pair spelt differently on each side
/// (Bo0–2), an untagged CRM twin of a FarmFlow customer (Tina), and two paused CRM customers:
/// Pam, tagged too, and Paula, who has a FarmFlow twin.
pub fn wholesale_farm() -> Scenario {
    let mut farm = Scenario::empty();
    for i in 0..4 {
        let tag = if i == 3 { "Wholesale" } else { TAG };
        farm = farm
            .in_crm([crm(&format!("Wendy{i}"), "Whole", i, &[tag])])
            .in_farmflow([ff(600 + i as i64, &format!("Fern{i}"), "Field")]);
    }
    for i in 0..3 {
        let tags: &[&str] = if i == 1 { &["Newsletter"] } else { &[] };
        // Each side knows fields the other lacks: updates both ways.
        let bo = KountaRecord {
            primary_address: None,
            ..crm(&format!("Bo{i}"), "Bulk", 20 + i, &[TAG])
        };
        let mut twin = ff(620 + i as i64, &format!("Bo{i}"), "Bulk");
        twin.email = twin.email.to_uppercase();
        twin.phone = String::new();
        farm = farm
            .in_crm([crm(&format!("Walt{i}"), "Walkin", 10 + i, tags)])
            .on_both_sides([(bo, twin)]);
    }
    let tina = FarmflowRecord {
        phone: "02 7100 0030".into(),
        ..ff(610, "Tina", "Twin")
    };
    farm.on_both_sides([(crm("Tina", "Twin", 30, &[]), tina)])
        .in_crm([crm("Pam", "Paused", 40, &[TAG, PAUSE])])
        .on_both_sides([(
            crm("Paula", "Paused", 41, &[PAUSE]),
            ff(630, "Paula", "Paused"),
        )])
}

/// The state for the decided run: the first sync settled; people deleted two customers on
/// each side, removed Wendy2's tag and paused Bo0; a run queued the four deletions and parked
/// the two; a person approved Wendy0's and Fern0's and rejected Wendy1's and Fern1's with the
/// binary; then people changed more (see the module documentation).
pub async fn prepare_decided(sb: &Sandbox, w: &Workdir) {
    let people = People(sb);
    sync_ok(w).await;
    sync_ok(w).await;

    for first in ["Wendy0", "Wendy1"] {
        people.delete_in_crm(first);
    }
    for first in ["Fern0", "Fern1"] {
        people.delete_in_farmflow(first);
    }
    people.edit_crm("Wendy2", |c| c.tags.clear());
    people.edit_crm("Bo0", |c| c.tags.push(PAUSE.into()));
    let before = World::read(sb, &w.state_path()).unwrap();
    sync_ok(w).await;

    // Nothing deleted or tagged: four deletions wait for a person.
    let queued = World::read(sb, &w.state_path()).unwrap();
    assert_eq!(
        queued.ff.len(),
        before.ff.len(),
        "nothing deleted unapproved"
    );
    assert!(
        queued.crm.iter().all(|c| !has(&c.tags, DELETED_TAG)),
        "nothing tagged unapproved"
    );
    let waiting: Vec<(String, String)> = queued
        .queue
        .iter()
        .map(|q| (q.action.clone(), q.reference_id.clone()))
        .collect();
    assert_eq!(waiting.len(), 4, "{waiting:?}");
    let reference = |action: &str, name: &str| -> String {
        let q = queued
            .queue
            .iter()
            .find(|q| {
                q.action == action
                    && match action {
                        "delete_farmflow" => queued
                            .ff
                            .iter()
                            .any(|f| f.id == q.farmflow_id && f.firstname == name),
                        _ => queued
                            .crm
                            .iter()
                            .any(|c| Some(c.id) == q.kounta_id && c.first_name == name),
                    }
            })
            .unwrap_or_else(|| panic!("no queued {action} of {name}: {waiting:?}"));
        q.reference_id.clone()
    };
    for (decision, action, name) in [
        ("approve", "delete_farmflow", "Wendy0"),
        ("reject", "delete_farmflow", "Wendy1"),
        ("approve", "tag_kounta", "Fern0"),
        ("reject", "tag_kounta", "Fern1"),
    ] {
        let r = reference(action, name);
        let out = run_farmsync(w, &["deletes", decision, &r], &[]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }

    // More changes: the parked Wendy2 and a queued-to-be Wendy3 deleted in the CRM, the paused
    // Bo0 edited on both sides, edits on linked customers, a walk-in joins, new people.
    for first in ["Wendy2", "Wendy3"] {
        people.delete_in_crm(first);
    }
    people.edit_farmflow("Bo0", |c| c.city = "Cudal".into());
    people.edit_crm("Bo0", |c| c.last_name = "Bulk-Paused".into());
    people.edit_crm("Bo1", |c| c.phone = "02 7999 0001".into());
    people.edit_farmflow("Bo2", |c| c.city = "Manildra".into());
    people.edit_farmflow("Tina", |c| c.zip = "2867".into());
    people.edit_crm("Walt0", |c| c.tags.push(TAG.into()));
    people.add_to_crm(crm("Nina", "Later", 50, &[TAG]));
    people.add_to_crm(crm("Wes", "Walkin", 51, &[]));
    people.add_to_farmflow(FarmflowRecord {
        id: 0,
        ..ff(652, "Omar", "Later")
    });
    people.add_to_crm(crm("Ted", "Twin", 53, &[]));
    people.add_to_farmflow(FarmflowRecord {
        id: 0,
        phone: "02 7100 0053".into(),
        ..ff(653, "Ted", "Twin")
    });
}

fn has(tags: &[String], tag: &str) -> bool {
    tags.iter().any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// Pushes a violation unless `first` is on `side` exactly `want` times.
fn count(out: &mut Vec<String>, side: &str, first: &str, n: usize, want: usize, why: &str) {
    if n != want {
        out.push(format!("{first} is in {side} {n} times, not {want}: {why}"));
    }
}

/// The wholesale farm's rules after the first sync (`decided` false) or after the decided run
/// (`decided` true), settled, whatever crashed on the way.
pub fn rules(decided: bool, world: &World) -> Vec<String> {
    let mut out = Vec::new();
    let crm = |first: &str| -> Vec<&KountaRecord> {
        world.crm.iter().filter(|c| c.first_name == first).collect()
    };
    let ff = |first: &str| -> Vec<&FarmflowRecord> {
        world.ff.iter().filter(|c| c.firstname == first).collect()
    };
    let o = &mut out;
    // Walk-ins never reach FarmFlow (Walt0 joins once tagged, in the decided run).
    let walkins: &[&str] = if decided {
        &["Walt1", "Walt2", "Wes"]
    } else {
        &["Walt0", "Walt1", "Walt2"]
    };
    for first in walkins {
        count(o, "the crm", first, crm(first).len(), 1, "a walk-in");
        count(
            o,
            "farmflow",
            first,
            ff(first).len(),
            0,
            "an untagged walk-in",
        );
    }
    // Paused customers: Pam never created, Paula never linked (her twin never duplicated).
    count(o, "farmflow", "Pam", ff("Pam").len(), 0, "paused");
    count(o, "the crm", "Paula", crm("Paula").len(), 1, "paused");
    count(o, "farmflow", "Paula", ff("Paula").len(), 1, "paused");
    for c in crm("Paula").into_iter().chain(crm("Pam")) {
        if !c.reference_id.is_empty() || has(&c.tags, DELETED_TAG) {
            o.push(format!("paused {} was written: {c:?}", c.first_name));
        }
    }
    // Matched untagged twins get the tag; customers farmsync creates in the crm carry it.
    let joined: &[&str] = if decided {
        &[
            "Tina", "Ted", "Fern1", "Fern2", "Fern3", "Omar", "Walt0", "Wendy1",
        ]
    } else {
        &["Tina", "Fern0", "Fern1", "Fern2", "Fern3"]
    };
    for first in joined {
        count(o, "the crm", first, crm(first).len(), 1, "in scope");
        count(o, "farmflow", first, ff(first).len(), 1, "in scope");
        for c in crm(first) {
            if !has(&c.tags, TAG) {
                o.push(format!("{first} in the crm lacks the tag {TAG}: {c:?}"));
            }
        }
    }
    // Only an approved deletion is shown: Fern0's tag, after the decided run.
    for c in &world.crm {
        let approved = decided && c.first_name == "Fern0";
        if has(&c.tags, DELETED_TAG) && !approved {
            o.push(format!(
                "{} is tagged {DELETED_TAG}, which nobody approved",
                c.first_name
            ));
        }
    }
    if !decided {
        if !world.queue.is_empty() {
            o.push(format!("nothing to queue, yet: {:?}", world.queue));
        }
        return out;
    }
    // Approved: Fern0 tagged, Wendy0 gone from FarmFlow. Rejected: Wendy1 back in the crm and
    // Fern1 back in FarmFlow, each once and linked again. Waiting: Wendy3 stays in FarmFlow.
    // Parked: Wendy2 stays in FarmFlow though deleted in the crm. Paused: Bo0's edits stay
    // on their side.
    if !crm("Fern0").iter().any(|c| has(&c.tags, DELETED_TAG)) {
        o.push(format!("Fern0's approved {DELETED_TAG} tag is missing"));
    }
    count(
        o,
        "farmflow",
        "Wendy0",
        ff("Wendy0").len(),
        0,
        "approved delete",
    );
    count(
        o,
        "farmflow",
        "Fern0",
        ff("Fern0").len(),
        0,
        "deleted by a person",
    );
    count(
        o,
        "farmflow",
        "Wendy3",
        ff("Wendy3").len(),
        1,
        "waiting, not deleted",
    );
    count(
        o,
        "farmflow",
        "Wendy2",
        ff("Wendy2").len(),
        1,
        "parked, not deleted",
    );
    for first in ["Wendy1", "Fern1"] {
        let linked = crm(first).iter().any(|c| {
            ff(first)
                .iter()
                .any(|f| c.reference_id == format!("farmflow:{}", f.id))
        });
        if !linked {
            o.push(format!(
                "rejected {first}: its records are not linked again"
            ));
        }
    }
    for c in crm("Bo0") {
        if c.primary_address
            .as_ref()
            .is_some_and(|a| a.city == "Cudal")
        {
            o.push("paused Bo0's farmflow edit reached the crm".into());
        }
    }
    for f in ff("Bo0") {
        if f.lastname == "Bulk-Paused" {
            o.push("paused Bo0's crm edit reached farmflow".into());
        }
    }
    let waiting: Vec<String> = world
        .queue
        .iter()
        .map(|q| format!("{} {:?}", q.action, q.decision))
        .collect();
    if waiting != ["delete_farmflow None"] {
        o.push(format!(
            "the queue should hold Wendy3's undecided delete only: {waiting:?}"
        ));
    }
    let parked = world
        .links
        .iter()
        .filter(|l| l.parked.is_some() && l.state == LinkState::Active)
        .count();
    if parked != 2 {
        o.push(format!("{parked} parked links, not 2 (Wendy2 and Bo0)"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_sync_with_deletes_waiting_for_a_person_and_a_kounta_tag_loses_nothing() {
    let started = Instant::now();
    let (total, verdicts) =
        whole_campaign(&[Phase::WholesaleFirstSync, Phase::WholesaleDecided]).await;
    let ops: std::collections::BTreeSet<String> = verdicts
        .iter()
        .map(|v| {
            let mut words = v.point.op.split(' ');
            format!(
                "{} {}",
                words.next().unwrap_or(""),
                words.next().unwrap_or("")
            )
        })
        .collect();
    let reruns: usize = verdicts.iter().map(|v| v.reruns).sum();
    let of = |phase: Phase| verdicts.iter().filter(|v| v.point.phase == phase).count();
    println!(
        "wholesale crash campaign (deletes = approve, kounta_tag): {total} crash points — first \
         sync {}, decided run {}; writes {ops:?}; {reruns} runs after the kills; {:.1} s",
        of(Phase::WholesaleFirstSync),
        of(Phase::WholesaleDecided),
        started.elapsed().as_secs_f64()
    );
    // Every kind of write, the approved and rejected deletions' among them.
    for op in [
        "kounta create",
        "kounta update",
        "kounta reference",
        "kounta tag",
        "farmflow create",
        "farmflow update",
        "farmflow delete",
    ] {
        assert!(ops.contains(op), "no {op} among the crash points: {ops:?}");
    }
    let decided: Vec<&str> = verdicts
        .iter()
        .filter(|v| v.point.phase == Phase::WholesaleDecided)
        .map(|v| v.point.op.as_str())
        .collect();
    for op in [
        "farmflow delete wendy0 whole",
        "kounta tag fern0 field",
        "kounta create wendy1 whole",
        "farmflow create fern1 field",
    ] {
        assert!(
            decided.contains(&op),
            "the decided run lacks {op}: {decided:?}"
        );
    }
    assert_all_passed(total, &verdicts);
}

/// The wholesale rules can fail: a walk-in in FarmFlow, an unapproved tag and a rejected
/// deletion recreated twice are each reported.
#[test]
fn the_wholesale_rules_see_walkins_unapproved_tags_and_double_recreations() {
    let data = wholesale_farm().data;
    let world = World {
        crm: data.kounta,
        ff: data.farmflow,
        links: Vec::new(),
        unsettled: Vec::new(),
        queue: Vec::new(),
    };
    let seen = |w: &World| rules(false, w);
    let base = seen(&world);

    let mut walkin = world.clone();
    walkin.ff.push(ff(700, "Walt1", "Walkin"));
    let found = seen(&walkin);
    assert_eq!(found.len(), base.len() + 1, "{found:?}");
    assert!(
        found
            .iter()
            .any(|f| f.contains("Walt1 is in farmflow 1 times, not 0")),
        "{found:?}"
    );

    let mut tagged = world.clone();
    tagged.crm[0].tags.push(DELETED_TAG.into());
    let found = seen(&tagged);
    assert!(
        found
            .iter()
            .any(|f| f.contains("Wendy0 is tagged farmflow-deleted, which nobody approved")),
        "{found:?}"
    );

    let mut twice = world.clone();
    twice.ff.push(ff(701, "Fern1", "Field"));
    let found = rules(true, &twice);
    assert!(
        found
            .iter()
            .any(|f| f.contains("Fern1 is in farmflow 2 times, not 1")),
        "{found:?}"
    );
}
