//! Helpers shared by the proof tests: running the real binary against a sandbox, reading the
//! state DB behind it, and checking DESIGN.md's invariants on what both fakes hold.
//!
//! The checks use their own normalisation (trim and case-fold, digits of phones) rather than
//! farmsync's, so a normalisation bug in farmsync cannot hide a duplicate from them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

use farmsync::sandbox::{
    FarmflowRecord, KountaRecord, SampleData, Sandbox, SandboxOptions, sample_farm,
};
use farmsync::store::{Intent, Link, LinkState, QueuedDelete, Store};

use crate::support::Workdir;

/// A config pointing farmsync at `sb`, with high rates and short timeouts (tests are fast).
pub fn sandbox_config(sb: &Sandbox, extra: &str) -> String {
    format!(
        "[kounta]\nbase_url = {:?}\nclient_id = {:?}\nclient_secret = {:?}\nrequests_per_minute = 1000000\ntimeout_secs = 5\n\
         [farmflow]\nbase_url = {:?}\napi_key = {:?}\nrequests_per_minute = 1000000\ntimeout_secs = 5\n{extra}",
        sb.kounta_url(),
        sb.kounta().client_id(),
        sb.kounta().client_secret(),
        sb.farmflow_url(),
        sb.farmflow().api_key(),
    )
}

/// Runs `farmsync --config <w> args…` to completion off the async reactor, with `env` added.
pub async fn run_farmsync(w: &Workdir, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = crate::support::farmsync();
    cmd.env_remove("FARMSYNC_TEST_FAULT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.arg("--config").arg(w.config_path()).args(args);
    crate::support::output_of(cmd).await
}

/// Write requests both fakes have received so far (refused and faulted ones included).
pub fn writes(sb: &Sandbox) -> u64 {
    sb.kounta().stats().writes + sb.farmflow().stats().writes
}

/// What the state DB at `path` holds that the checks read.
pub struct StoreState {
    /// Every link row.
    pub links: Vec<Link>,
    /// Journal entries not settled.
    pub unsettled: Vec<Intent>,
    /// The deletion queue (`[sync] deletes = "approve"`).
    pub queue: Vec<QueuedDelete>,
}

/// The links, the unsettled journal entries and the deletion queue of the state DB at `path`.
pub fn store_state(path: &Path) -> Result<StoreState, String> {
    let store = Store::open_read_only(path).map_err(|e| format!("state DB unreadable: {e}"))?;
    let links = store
        .links()
        .map_err(|e| format!("links unreadable: {e}"))?;
    let unsettled = store
        .unsettled_intents()
        .map_err(|e| format!("journal unreadable: {e}"))?;
    let queue = store
        .delete_queue()
        .map_err(|e| format!("deletion queue unreadable: {e}"))?;
    Ok(StoreState {
        links,
        unsettled,
        queue,
    })
}

/// Trimmed and case-folded.
pub fn fold(s: &str) -> String {
    s.trim().to_lowercase()
}

/// The digits of a phone number.
pub fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// A CRM customer's person key: folded first and last name.
pub fn crm_name(c: &KountaRecord) -> String {
    format!("{} {}", fold(&c.first_name), fold(&c.last_name))
}

/// A FarmFlow customer's person key: folded first and last name.
pub fn ff_name(c: &FarmflowRecord) -> String {
    format!("{} {}", fold(&c.firstname), fold(&c.lastname))
}

/// The CRM phone farmsync compares: `phone`, or `mobile` when `phone` is empty.
fn crm_phone(c: &KountaRecord) -> &str {
    if c.phone.trim().is_empty() {
        &c.mobile
    } else {
        &c.phone
    }
}

/// Values that occur on more than one record of one side, as messages.
fn duplicates<'a>(
    side: &str,
    what: &str,
    values: impl Iterator<Item = (String, i64)>,
    out: &'a mut Vec<String>,
) -> &'a mut Vec<String> {
    let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (value, id) in values {
        if !value.is_empty() {
            seen.entry(value).or_default().push(id);
        }
    }
    for (value, ids) in seen {
        if ids.len() > 1 {
            out.push(format!(
                "duplicate on {side}: {what} {value:?} on ids {ids:?}"
            ));
        }
    }
    out
}

/// What both sides and the state DB hold at one moment.
#[derive(Debug, Clone)]
pub struct World {
    /// Every CRM customer.
    pub crm: Vec<KountaRecord>,
    /// Every FarmFlow customer.
    pub ff: Vec<FarmflowRecord>,
    /// Every link row.
    pub links: Vec<Link>,
    /// Journal entries not settled.
    pub unsettled: Vec<Intent>,
    /// Deletions waiting for a person (`[sync] deletes = "approve"`), decided or not.
    pub queue: Vec<QueuedDelete>,
}

impl World {
    /// Reads both fakes and the state DB at `state`.
    pub fn read(sb: &Sandbox, state: &Path) -> Result<World, String> {
        let StoreState {
            links,
            unsettled,
            queue,
        } = store_state(state)?;
        Ok(World {
            crm: sb.kounta().customers(),
            ff: sb.farmflow().customers(),
            links,
            unsettled,
            queue,
        })
    }

    /// Whether a link may name a record that is gone without being broken: a queued deletion
    /// leaves its link as it is until a person decides, and a parked link (out of scope) is
    /// never deleted, whatever happened to either record.
    fn waits_by_design(&self, link: &Link) -> bool {
        link.parked.is_some()
            || self
                .queue
                .iter()
                .any(|q| q.reference_id == link.reference_id.as_str())
    }

    /// Duplicates on either side: two records with one folded name, one folded email or one
    /// phone (digits). Only valid where every person has a distinct name, email and phone.
    pub fn duplicate_people(&self) -> Vec<String> {
        let mut out = Vec::new();
        duplicates(
            "crm",
            "name",
            self.crm.iter().map(|c| (crm_name(c), c.id)),
            &mut out,
        );
        duplicates(
            "crm",
            "email",
            self.crm.iter().map(|c| (fold(&c.email), c.id)),
            &mut out,
        );
        duplicates(
            "crm",
            "phone",
            self.crm.iter().map(|c| (digits(crm_phone(c)), c.id)),
            &mut out,
        );
        duplicates(
            "farmflow",
            "name",
            self.ff.iter().map(|c| (ff_name(c), c.id)),
            &mut out,
        );
        duplicates(
            "farmflow",
            "email",
            self.ff.iter().map(|c| (fold(&c.email), c.id)),
            &mut out,
        );
        duplicates(
            "farmflow",
            "phone",
            self.ff.iter().map(|c| (digits(&c.phone), c.id)),
            &mut out,
        );
        out
    }

    /// Links that point at nothing, CRM references that name no link, ids held by two links,
    /// and unsettled journal entries.
    pub fn broken_links(&self) -> Vec<String> {
        let mut out = Vec::new();
        let crm: BTreeMap<i64, &KountaRecord> = self.crm.iter().map(|c| (c.id, c)).collect();
        let ff: BTreeSet<i64> = self.ff.iter().map(|c| c.id).collect();
        let by_reference: BTreeMap<&str, &Link> = self
            .links
            .iter()
            .map(|l| (l.reference_id.as_str(), l))
            .collect();
        let mut kounta_owners: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
        for l in &self.links {
            let reference = l.reference_id.as_str();
            let waits = self.waits_by_design(l);
            match l.state {
                LinkState::Active if waits => {}
                LinkState::Active => {
                    if !ff.contains(&l.farmflow_id.0) {
                        out.push(format!(
                            "active link {reference} names a missing farmflow customer"
                        ));
                    }
                    match l.kounta_id {
                        Some(k) if crm.contains_key(&k.0) => {}
                        Some(k) => out.push(format!(
                            "active link {reference} names missing crm customer {k}"
                        )),
                        None => out.push(format!("active link {reference} has no crm id")),
                    }
                }
                LinkState::DeleteBlocked => {
                    if !ff.contains(&l.farmflow_id.0) && !waits {
                        out.push(format!(
                            "delete-blocked link {reference} names a missing farmflow customer"
                        ));
                    }
                }
                LinkState::Tombstone => {}
            }
            if l.state != LinkState::Tombstone
                && let Some(k) = l.kounta_id
            {
                kounta_owners.entry(k.0).or_default().push(reference);
            }
        }
        for (k, owners) in kounta_owners {
            if owners.len() > 1 {
                out.push(format!("crm customer {k} is held by links {owners:?}"));
            }
        }
        for c in &self.crm {
            let Some(id) = c.reference_id.strip_prefix("farmflow:") else {
                continue;
            };
            match by_reference.get(c.reference_id.as_str()) {
                None => out.push(format!(
                    "crm customer {} names {} but no link has it",
                    c.id, c.reference_id
                )),
                Some(l) if l.state == LinkState::Tombstone => {}
                Some(l) => {
                    if l.kounta_id.map(|k| k.0) != Some(c.id) {
                        out.push(format!(
                            "crm customer {} names {} but that link holds crm {:?}",
                            c.id, c.reference_id, l.kounta_id
                        ));
                    }
                    if !id.parse::<i64>().is_ok_and(|id| ff.contains(&id))
                        && !self.waits_by_design(l)
                    {
                        out.push(format!(
                            "crm customer {} names {}, which does not exist",
                            c.id, c.reference_id
                        ));
                    }
                }
            }
        }
        for i in &self.unsettled {
            out.push(format!(
                "unsettled journal entry {}: {:?} {} (crm {:?}, farmflow {:?})",
                i.id, i.intent.side, i.intent.op, i.intent.kounta_id, i.intent.farmflow_id
            ));
        }
        out
    }

    /// What a settled deletion queue must not hold: an entry a person decided (a cycle carries
    /// every decision out, then takes the entry off) unless its link waits by design (parked,
    /// or its delete blocked by an order), or an entry whose link is a tombstone or gone (its
    /// deletion was applied, or its twin recreated under a new link): either would wait in
    /// `farmsync deletes` and `status` forever.
    pub fn queue_problems(&self) -> Vec<String> {
        let by_reference: BTreeMap<&str, &Link> = self
            .links
            .iter()
            .map(|l| (l.reference_id.as_str(), l))
            .collect();
        let mut out = Vec::new();
        for q in &self.queue {
            let link = by_reference.get(q.reference_id.as_str());
            let waits =
                link.is_some_and(|l| l.parked.is_some() || l.state == LinkState::DeleteBlocked);
            if let Some(decision) = q.decision
                && !waits
            {
                out.push(format!(
                    "queued {} of {} was {decision:?} but is still queued",
                    q.action, q.reference_id
                ));
            }
            match link {
                None => out.push(format!(
                    "queued {} of {} names no link",
                    q.action, q.reference_id
                )),
                Some(l) if l.state == LinkState::Tombstone => out.push(format!(
                    "queued {} of {} names a tombstone",
                    q.action, q.reference_id
                )),
                Some(_) => {}
            }
        }
        out
    }

    /// The queue by person: what approving would do, whose record survives (by name), and the
    /// decision. Ids left out: a crash may change which ids a create gets.
    pub fn queued_people(&self) -> BTreeSet<(String, String, String)> {
        self.queue
            .iter()
            .map(|q| {
                let crm = q
                    .kounta_id
                    .and_then(|k| self.crm.iter().find(|c| c.id == k))
                    .map(crm_name);
                let ff = self.ff.iter().find(|c| c.id == q.farmflow_id).map(ff_name);
                let who = crm.or(ff).unwrap_or_else(|| "nobody".to_owned());
                (q.action.clone(), who, format!("{:?}", q.decision))
            })
            .collect()
    }

    /// Every person on each side by name, with the fields that must survive (ids and
    /// references left out: a crash may change which ids a create gets).
    pub fn people(
        &self,
    ) -> (
        BTreeMap<String, KountaRecord>,
        BTreeMap<String, FarmflowRecord>,
    ) {
        let crm = self
            .crm
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.id = 0;
                c.reference_id = c.reference_id.split(':').next().unwrap_or("").to_owned();
                (crm_name(&c), c)
            })
            .collect();
        let ff = self
            .ff
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.id = 0;
                (ff_name(&c), c)
            })
            .collect();
        (crm, ff)
    }

    /// How these people differ from `expected`'s: lost, extra or changed, side by side; and the
    /// deletion queue, by person.
    pub fn differences_from(&self, expected: &World) -> Vec<String> {
        let mut out = Vec::new();
        let (crm, ff) = self.people();
        let (want_crm, want_ff) = expected.people();
        compare("crm", &crm, &want_crm, &mut out);
        compare("farmflow", &ff, &want_ff, &mut out);
        let (queued, want_queued) = (self.queued_people(), expected.queued_people());
        if queued != want_queued {
            out.push(format!(
                "the deletion queue differs from the uncrashed outcome:\n  got  {queued:?}\n  want {want_queued:?}"
            ));
        }
        out
    }
}

fn compare<T: PartialEq + std::fmt::Debug>(
    side: &str,
    got: &BTreeMap<String, T>,
    want: &BTreeMap<String, T>,
    out: &mut Vec<String>,
) {
    for (name, record) in want {
        match got.get(name) {
            None => out.push(format!("lost on {side}: {name}")),
            Some(r) if r != record => out.push(format!(
                "{side} record of {name} differs from the uncrashed outcome:\n  got  {r:?}\n  want {record:?}"
            )),
            Some(_) => {}
        }
    }
    for name in got.keys() {
        if !want.contains_key(name) {
            out.push(format!("unexpected on {side}: {name}"));
        }
    }
}

/// Reruns `farmsync sync` until a run writes nothing (at most `max_runs` runs). Returns what
/// is wrong (still writing, or the quiet run did not exit 0) and how many runs it took.
pub async fn converge(
    sb: &Sandbox,
    w: &Workdir,
    env: &[(&str, &str)],
    max_runs: usize,
) -> (Vec<String>, usize) {
    let mut violations = Vec::new();
    let mut runs = 0;
    let mut converged = false;
    let mut last = String::new();
    while runs < max_runs {
        runs += 1;
        let before = writes(sb);
        let out = run_farmsync(w, &["sync"], env).await;
        last = format!(
            "exit {:?}\n{}{}",
            out.status.code(),
            crate::support::text(&out.stdout),
            crate::support::text(&out.stderr)
        );
        if writes(sb) == before {
            converged = true;
            if out.status.code() != Some(0) {
                violations.push(format!("the run that wrote nothing did not exit 0: {last}"));
            }
            break;
        }
    }
    if !converged {
        violations.push(format!(
            "still writing after {max_runs} runs; the last one said: {last}"
        ));
    }
    (violations, runs)
}

/// Reruns `farmsync sync` until a run writes nothing (at most `max_runs` runs), then checks the
/// world against `expected`: no person twice, no broken link, everyone as in `expected`.
/// Returns what is wrong and how many runs it took.
pub async fn converge_and_check(
    sb: &Sandbox,
    w: &Workdir,
    env: &[(&str, &str)],
    expected: &World,
    max_runs: usize,
) -> (Vec<String>, usize) {
    let (mut violations, runs) = converge(sb, w, env, max_runs).await;
    match World::read(sb, &w.state_path()) {
        Ok(world) => {
            violations.extend(world.duplicate_people());
            violations.extend(world.broken_links());
            violations.extend(world.queue_problems());
            violations.extend(world.differences_from(expected));
        }
        Err(e) => violations.push(e),
    }
    (violations, runs)
}

/// Which fake a write went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Kounta,
    Farmflow,
}

/// How long a crash point waits for its write before giving up.
const REACH_WRITE: std::time::Duration = std::time::Duration::from_secs(30);

/// A write the sandbox will apply and never answer (`FaultAction::ApplyThenHang`), armed
/// before the process under test makes it: the `nth` write to `side` from now, the campaign's
/// write `k`.
pub struct ArmedWrite {
    side: Side,
    nth: u64,
    k: usize,
    /// Writes the side had applied when the fault was armed.
    base: u64,
    fault: farmsync::sandbox::FaultId,
}

impl ArmedWrite {
    /// Arms the fault on `sb`.
    pub fn arm(sb: &Sandbox, side: Side, nth: u64, k: usize) -> ArmedWrite {
        use farmsync::sandbox::{Fault, FaultAction, Target, When};
        let (base, fault) = match side {
            Side::Kounta => (
                *sb.kounta().writes_applied().borrow(),
                sb.kounta().inject(Fault::new(
                    Target::AnyWrite,
                    When::Nth(nth),
                    FaultAction::ApplyThenHang,
                )),
            ),
            Side::Farmflow => (
                *sb.farmflow().writes_applied().borrow(),
                sb.farmflow().inject(Fault::new(
                    Target::AnyWrite,
                    When::Nth(nth),
                    FaultAction::ApplyThenHang,
                )),
            ),
        };
        ArmedWrite {
            side,
            nth,
            k,
            base,
            fault,
        }
    }

    /// Waits until the armed write is applied, then kills `child` with SIGKILL — no destructor,
    /// no flush, no settling: the write is applied, its answer unsent — and disarms the fault.
    /// Returns what went wrong on the way (`label` names the process in those messages).
    pub async fn kill_when_applied(
        self,
        sb: &Sandbox,
        child: &mut tokio::process::Child,
        label: &str,
    ) -> Vec<String> {
        let (k, target) = (self.k, self.base + self.nth);
        let mut violations = Vec::new();
        let reached = async {
            match self.side {
                Side::Kounta => sb.kounta().wait_for_writes(target).await,
                Side::Farmflow => sb.farmflow().wait_for_writes(target).await,
            }
        };
        tokio::select! {
            () = reached => {}
            status = child.wait() => {
                violations.push(format!("{label} exited ({status:?}) before write {k}"));
            }
            () = tokio::time::sleep(REACH_WRITE) => {
                violations.push(format!("write {k} never arrived"));
            }
        }
        child.kill().await.expect("kill the process under test");
        match self.side {
            Side::Kounta => sb.kounta().remove_fault(self.fault),
            Side::Farmflow => sb.farmflow().remove_fault(self.fault),
        };
        violations
    }
}

/// Makes the sandbox apply the `nth` write to `side` (counted from now) and never answer it,
/// starts the process under test with `spawn`, waits until that write is applied, and kills the
/// process with SIGKILL (see [`ArmedWrite`]). Returns what went wrong on the way (`label` names
/// the process in those messages).
pub async fn kill_after_write(
    sb: &Sandbox,
    side: Side,
    nth: u64,
    k: usize,
    label: &str,
    spawn: impl FnOnce() -> tokio::process::Child,
) -> Vec<String> {
    let armed = ArmedWrite::arm(sb, side, nth, k);
    let mut child = spawn();
    armed.kill_when_applied(sb, &mut child, label).await
}

/// Live records a campaign's listings leave out while its faults are on, named by person (a
/// record a run creates has its id only then), how the CRM's pages drift, and how far
/// FarmFlow's list lags.
#[derive(Debug, Clone, Copy)]
pub struct ListingFaults {
    /// CRM customers (first, last name) left out of every list page.
    pub crm_omitted: &'static [(&'static str, &'static str)],
    /// FarmFlow customers (first, last name) left out of every `customers-get`.
    pub ff_omitted: &'static [(&'static str, &'static str)],
    /// CRM customers a list page holds.
    pub page_size: usize,
    /// `(page, shift)`: after that page of each CRM listing the later pages move by `shift`
    /// places (forward skips customers, back lists them twice).
    pub drifts: &'static [(u32, i64)],
    /// `customers-get` shows FarmFlow as it was this many writes ago.
    pub lag: usize,
}

impl ListingFaults {
    /// The same faults with FarmFlow's list up to date.
    pub fn without_lag(self) -> ListingFaults {
        ListingFaults { lag: 0, ..self }
    }

    /// Turns these faults on for the next run, replacing any left from the last (a drift fires
    /// once a listing: arm before every run). Every named person must exist.
    pub fn arm(&self, sb: &Sandbox) {
        sb.kounta().clear_faults();
        sb.farmflow().clear_faults();
        sb.kounta().set_page_size(self.page_size);
        let crm = sb.kounta().customers();
        for (first, last) in self.crm_omitted {
            let c = crm
                .iter()
                .find(|c| c.first_name == *first && c.last_name == *last)
                .unwrap_or_else(|| panic!("no crm {first} {last} to leave out"));
            sb.kounta().omit_from_list([c.id]);
        }
        let ff = sb.farmflow().customers();
        for (first, last) in self.ff_omitted {
            let c = ff
                .iter()
                .find(|c| c.firstname == *first && c.lastname == *last)
                .unwrap_or_else(|| panic!("no farmflow {first} {last} to leave out"));
            sb.farmflow().omit_from_list([c.id]);
        }
        for &(page, shift) in self.drifts {
            sb.kounta().drift_after_page(page, shift);
        }
        sb.farmflow().set_list_lag(self.lag);
    }
}

/// Live records both sides' listings have left out (or, for FarmFlow, shown as they were
/// before a write) since the sandbox started.
pub fn listing_faults_served(sb: &Sandbox) -> u64 {
    sb.kounta().omissions_served() + sb.farmflow().omissions_served()
}

/// How many records a run's log says a listing left out and a read by id found present.
pub fn omissions_confirmed(log: &str) -> u64 {
    log.matches("sync.listing.omission").count() as u64
}

/// Runs after a kill that still read faulty listings, before the faults stop: the first settles
/// the journal, the second plans from what the first left.
pub const FAULTY_RERUNS: usize = 2;

/// Runs `farmsync sync` `runs` times with `faults` armed before each, then turns every listing
/// fault off. Returns the omissions those runs confirmed present.
pub async fn sync_with_listing_faults(
    sb: &Sandbox,
    w: &Workdir,
    env: &[(&str, &str)],
    faults: &ListingFaults,
    runs: usize,
) -> u64 {
    let mut confirmed = 0;
    for _ in 0..runs {
        faults.arm(sb);
        let out = run_farmsync(w, &["sync"], env).await;
        confirmed += omissions_confirmed(&crate::support::text(&out.stderr));
    }
    sb.kounta().clear_faults();
    sb.farmflow().clear_faults();
    confirmed
}

// ---------------------------------------------------------------------------------------------
// Scenario worlds: what the proof campaigns seed, what people change, and what an uncrashed
// run comes to.

/// Someone the scenarios seed or add: a name, an email made of it
/// (`{first}@{last}.example`, in lower case) and a phone (or none).
#[derive(Debug, Clone)]
pub struct Person {
    pub first: String,
    pub last: String,
    pub email: String,
    pub phone: String,
}

impl Person {
    /// `first last`, on `phone` (empty: none).
    pub fn new(first: &str, last: &str, phone: &str) -> Person {
        Person {
            first: first.into(),
            last: last.into(),
            email: format!("{}@{}.example", first.to_lowercase(), last.to_lowercase()),
            phone: phone.into(),
        }
    }

    /// `{first}{i} {last}` for i from 0 to `n - 1`, on `{phone}{i:02}` (no phone when `phone`
    /// is empty), each with its number.
    pub fn numbered(
        first: &str,
        last: &str,
        phone: &str,
        n: i64,
    ) -> impl Iterator<Item = (i64, Person)> {
        let (first, last, phone) = (first.to_owned(), last.to_owned(), phone.to_owned());
        (0..n).map(move |i| {
            let phone = if phone.is_empty() {
                String::new()
            } else {
                format!("{phone}{i:02}")
            };
            (i, Person::new(&format!("{first}{i}"), &last, &phone))
        })
    }

    /// The person as a CRM customer; other fields by struct update.
    pub fn crm(&self) -> KountaRecord {
        KountaRecord {
            first_name: self.first.clone(),
            last_name: self.last.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            ..KountaRecord::default()
        }
    }

    /// The person as FarmFlow knows them when the CRM knows them too, spelt differently: the
    /// email's name in capitals, no phone; other fields by struct update.
    pub fn ff_twin(&self, id: i64) -> FarmflowRecord {
        let (name, domain) = self.email.split_once('@').expect("an email");
        FarmflowRecord {
            email: format!("{}@{domain}", name.to_uppercase()),
            phone: String::new(),
            ..self.ff(id)
        }
    }

    /// The person as FarmFlow customer `id` (0 lets the fake pick); other fields by struct
    /// update.
    pub fn ff(&self, id: i64) -> FarmflowRecord {
        FarmflowRecord {
            id,
            firstname: self.first.clone(),
            lastname: self.last.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            ..FarmflowRecord::default()
        }
    }
}

/// The world a proof campaign starts from: the customers each side holds, in the order they
/// are seeded (which decides the CRM's ids).
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// What both fakes are seeded with.
    pub data: SampleData,
}

impl Scenario {
    /// The sandbox's sample farm.
    pub fn sample_farm() -> Scenario {
        Scenario {
            data: sample_farm(),
        }
    }

    /// Nobody on either side.
    pub fn empty() -> Scenario {
        Scenario::default()
    }

    /// People only the CRM knows (so far).
    pub fn in_crm(mut self, people: impl IntoIterator<Item = KountaRecord>) -> Scenario {
        self.data.kounta.extend(people);
        self
    }

    /// People only FarmFlow knows (so far).
    pub fn in_farmflow(mut self, people: impl IntoIterator<Item = FarmflowRecord>) -> Scenario {
        self.data.farmflow.extend(people);
        self
    }

    /// People on both sides, each side's record as given (spelt alike or not).
    pub fn on_both_sides(
        mut self,
        people: impl IntoIterator<Item = (KountaRecord, FarmflowRecord)>,
    ) -> Scenario {
        for (crm, ff) in people {
            self.data.kounta.push(crm);
            self.data.farmflow.push(ff);
        }
        self
    }

    /// A fresh sandbox seeded with this world.
    pub async fn sandbox(&self) -> Sandbox {
        let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
        sb.seed(&self.data).unwrap();
        sb
    }

    /// A fresh sandbox seeded with this world and a workdir whose config points at it, with
    /// `extra` (sections of the config) added.
    pub async fn start(&self, extra: &str) -> (Sandbox, Workdir) {
        let sb = self.sandbox().await;
        let w = Workdir::new(&sandbox_config(&sb, extra));
        (sb, w)
    }
}

/// Forgets what both fakes have counted and logged so far: a campaign counts the writes of the
/// run under test only.
pub fn reset_stats(sb: &Sandbox) {
    sb.kounta().reset_stats();
    sb.farmflow().reset_stats();
}

/// Runs `farmsync sync` on `w`, which must exit 0.
pub async fn sync_ok(w: &Workdir) {
    let out = run_farmsync(w, &["sync"], &[]).await;
    crate::support::assert_exit_0(&out, "farmsync sync");
}

/// People changing customers on either side by hand, naming them as people do: `"Kim3 Crash"`
/// (first and last name) or `"Kim3"` (a first name no one else has). Each change must take.
pub struct People<'a>(pub &'a Sandbox);

impl People<'_> {
    fn named(name: &str, first: &str, last: &str) -> bool {
        match name.split_once(' ') {
            Some((f, l)) => first == f && last == l,
            None => first == name,
        }
    }

    /// The CRM id of `name`.
    pub fn crm_id(&self, name: &str) -> i64 {
        self.0
            .kounta()
            .customers()
            .into_iter()
            .find(|c| Self::named(name, &c.first_name, &c.last_name))
            .unwrap_or_else(|| panic!("no crm {name}"))
            .id
    }

    /// The FarmFlow id of `name`.
    pub fn ff_id(&self, name: &str) -> i64 {
        self.0
            .farmflow()
            .customers()
            .into_iter()
            .find(|c| Self::named(name, &c.firstname, &c.lastname))
            .unwrap_or_else(|| panic!("no farmflow {name}"))
            .id
    }

    /// Deletes `name` in the CRM's back office.
    pub fn delete_in_crm(&self, name: &str) {
        assert!(self.0.kounta().backoffice_delete(self.crm_id(name)));
    }

    /// Deletes `name` in FarmFlow.
    pub fn delete_in_farmflow(&self, name: &str) {
        self.0.farmflow().delete(self.ff_id(name)).unwrap();
    }

    /// Edits `name` in the CRM.
    pub fn edit_crm(&self, name: &str, edit: impl FnOnce(&mut KountaRecord)) {
        assert!(self.0.kounta().edit(self.crm_id(name), edit));
    }

    /// Edits `name` in FarmFlow.
    pub fn edit_farmflow(&self, name: &str, edit: impl FnOnce(&mut FarmflowRecord)) {
        assert!(self.0.farmflow().edit(self.ff_id(name), edit));
    }

    /// Someone new in the CRM.
    pub fn add_to_crm(&self, person: KountaRecord) {
        self.0.kounta().insert(person);
    }

    /// Someone new in FarmFlow.
    pub fn add_to_farmflow(&self, person: FarmflowRecord) {
        self.0.farmflow().insert(person);
    }
}

/// One write a fake took, in the order of all writes to both: the k-th (from 1), to `side`, the
/// `nth` of that side (from 1), `what` (side and endpoint: `crm Create`) and the request path.
#[derive(Debug, Clone)]
pub struct Write {
    pub k: usize,
    pub side: Side,
    pub nth: u64,
    pub what: String,
    pub path: String,
}

/// The writes both fakes took since `since`, in order.
pub fn writes_in_order(sb: &Sandbox, since: tokio::time::Instant) -> Vec<Write> {
    use farmsync::sandbox::{Access, Endpoint};
    let mut log: Vec<(tokio::time::Instant, Side, String, String)> = Vec::new();
    for r in sb.kounta().request_log() {
        if let Some(e) = r
            .endpoint
            .filter(|e| r.at >= since && e.access() == Access::Write)
        {
            log.push((r.at, Side::Kounta, format!("crm {e:?}"), r.path));
        }
    }
    for r in sb.farmflow().request_log() {
        if let Some(e) = r
            .endpoint
            .filter(|e| r.at >= since && e.access() == Access::Write)
        {
            log.push((r.at, Side::Farmflow, format!("farmflow {e:?}"), r.path));
        }
    }
    log.sort_by_key(|(at, _, _, _)| *at);
    let (mut kounta, mut farmflow) = (0, 0);
    log.into_iter()
        .enumerate()
        .map(|(i, (_, side, what, path))| {
            let counter = match side {
                Side::Kounta => &mut kounta,
                Side::Farmflow => &mut farmflow,
            };
            *counter += 1;
            Write {
                k: i + 1,
                side,
                nth: *counter,
                what,
                path,
            }
        })
        .collect()
}

/// Both sides and the state DB behind `w`, which must hold nobody twice and no broken link.
pub fn sound_world(sb: &Sandbox, w: &Workdir) -> World {
    let world = World::read(sb, &w.state_path()).unwrap();
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
    world
}

/// Runs after a crash before one writes nothing: the first finishes the work, the journal
/// settled; DESIGN.md allows a second to bring both sides into agreement; the third writes
/// nothing.
pub const MAX_RERUNS: usize = 3;

/// The outcome an uncrashed run came to, every crashed one is held to: after the same faulty
/// runs a crashed one gets (`recovery`, if any), `farmsync sync` reruns until one writes
/// nothing (at once, with whole listings), and the world must be sound.
pub async fn expected_outcome(
    sb: &Sandbox,
    w: &Workdir,
    recovery: Option<&ListingFaults>,
) -> World {
    let mut runs = 1;
    if let Some(faults) = recovery {
        sync_with_listing_faults(sb, w, &[], faults, FAULTY_RERUNS).await;
        runs = MAX_RERUNS;
    }
    let (unsettled, _) = converge(sb, w, &[], runs).await;
    assert!(unsettled.is_empty(), "{unsettled:?}");
    sound_world(sb, w)
}

/// Where the killed processes of a crash point log (appended, one after the other).
pub fn killed_log(w: &Workdir) -> std::path::PathBuf {
    w.dir.path().join("killed.log")
}

/// Starts `farmsync <command>` on `w` with `env` added, its log appended to `killed_log` (it is
/// killed: nothing else reads its output).
pub fn spawn_killable(w: &Workdir, command: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    use std::process::Stdio;
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(killed_log(w))
        .expect("killed process's log");
    let mut cmd = crate::support::farmsync();
    cmd.env_remove("FARMSYNC_TEST_FAULT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.arg("--config")
        .arg(w.config_path())
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn farmsync {command}: {e}"))
}

/// What the runs after a kill came to.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Invariant violations; empty when the crash point passed.
    pub violations: Vec<String>,
    /// Runs after the kill, the last of which wrote nothing.
    pub reruns: usize,
    /// Live records the listings left out (or showed stale) while the faults were on.
    pub listing_faults: u64,
    /// Of those, the ones the killed processes and the faulty runs after them read by id and
    /// found present (`sync.listing.omission`).
    pub confirmed_present: u64,
}

/// After the kills of a crash point: `FAULTY_RERUNS` runs with `recovery`'s listing faults (if
/// any), then `farmsync sync` until a run writes nothing, and every invariant checked against
/// `expected`.
pub async fn recover_and_check(
    sb: &Sandbox,
    w: &Workdir,
    env: &[(&str, &str)],
    recovery: Option<&ListingFaults>,
    expected: &World,
) -> Recovery {
    let log = std::fs::read_to_string(killed_log(w)).unwrap_or_default();
    let mut confirmed_present = omissions_confirmed(&log);
    if let Some(faults) = recovery {
        confirmed_present += sync_with_listing_faults(sb, w, env, faults, FAULTY_RERUNS).await;
    }
    let listing_faults = listing_faults_served(sb);
    let (violations, reruns) = converge_and_check(sb, w, env, expected, MAX_RERUNS).await;
    Recovery {
        violations,
        reruns,
        listing_faults,
        confirmed_present,
    }
}

/// The kinds of write (side and endpoint) a two-sided farm's first sync and the sync after
/// people's changes make between them.
pub const EVERY_WRITE_KIND: &[&str] = &[
    "crm Create",
    "crm Update",
    "farmflow Create",
    "farmflow Update",
    "farmflow Delete",
];

/// Fails unless each of `want` is among the crash points' `kinds`.
pub fn assert_kinds(kinds: &BTreeSet<String>, want: &[&str]) {
    for kind in want {
        assert!(
            kinds.contains(*kind),
            "no {kind} among the crash points: {kinds:?}"
        );
    }
}

/// Fails listing every crash point that broke an invariant (`failed`, one line each) of `total`.
pub fn assert_none_failed(total: usize, failed: &[String]) {
    assert!(
        failed.is_empty(),
        "{} of {total} crash points failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// One phase's figures of a faulty-listing campaign, as its report prints them: crash points,
/// listing faults served / omissions confirmed present.
pub fn listing_figures(phase: &str, (points, served, confirmed): (usize, u64, u64)) -> String {
    format!("{phase}: {points} points, {served} / {confirmed}")
}
