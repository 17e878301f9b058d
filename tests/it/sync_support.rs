//! The sync tests' harness: both sandbox APIs, a temp state DB and an in-process [`Engine`]
//! built from `Settings::builder().env_vars(...)`, plus the invariant checks of DESIGN.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use farmsync::config::Settings;
use farmsync::farmflow::client::FarmflowClient;
use farmsync::http::RetryPolicy;
use farmsync::kounta::client::KountaClient;
use farmsync::sandbox::{
    FarmflowRecord, KountaRecord, KountaRecordAddress, Sandbox, SandboxOptions,
};
use farmsync::store::{Intent, Link, LinkState, SharedStore, Store};
use farmsync::sync::engine::{
    DEFAULT_MAX_VERIFY_AGE_SECS, Engine, Outcome, RunOptions, RunReport, farmflow_options,
    kounta_options,
};

/// Per-request timeout of the in-process clients: short, so a hung answer costs little.
pub const TIMEOUT: Duration = Duration::from_millis(400);

/// Retries as the real policy makes them, only quicker.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(5),
        cap: Duration::from_millis(40),
        max_retries: 3,
        max_advised_wait: Duration::from_secs(2),
    }
}

/// Both sandbox APIs, a state DB in a temp dir, and an engine pointed at them.
pub struct Harness {
    pub sb: Sandbox,
    /// Holds the state DB; removed with the harness.
    _dir: tempfile::TempDir,
    pub settings: Settings,
    pub engine: Engine,
    extra: Vec<(String, String)>,
}

impl Harness {
    /// A harness with empty sandboxes and default settings.
    pub async fn start() -> Harness {
        Harness::start_with(SandboxOptions::default(), &[]).await
    }

    /// A harness with `extra` settings (`("sync.conflict_winner", "farmflow")`).
    pub async fn with_settings(extra: &[(&str, &str)]) -> Harness {
        Harness::start_with(SandboxOptions::default(), extra).await
    }

    /// A harness over sandboxes started with `options`.
    pub async fn start_with(options: SandboxOptions, extra: &[(&str, &str)]) -> Harness {
        let sb = Sandbox::start(options).await.expect("sandbox starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let settings = settings_for(&sb, &dir.path().join("state.db"), &extra);
        let engine = engine_for(&settings, open_store(&settings.state.path));
        Harness {
            sb,
            _dir: dir,
            settings,
            engine,
            extra,
        }
    }

    /// The state DB's path.
    pub fn state_path(&self) -> PathBuf {
        self.settings.state.path.clone()
    }

    /// One real run.
    pub async fn run(&self) -> RunReport {
        self.engine.run_once(RunOptions::default()).await
    }

    /// One dry run.
    pub async fn dry_run(&self) -> RunReport {
        self.engine
            .run_once(RunOptions {
                dry_run: true,
                ..RunOptions::default()
            })
            .await
    }

    /// One run with `--allow-mass-delete`.
    pub async fn run_allowing_mass_delete(&self) -> RunReport {
        self.engine
            .run_once(RunOptions {
                allow_mass_delete: true,
                ..RunOptions::default()
            })
            .await
    }

    /// One real run that must apply everything (exit 0).
    pub async fn run_ok(&self) -> RunReport {
        let report = self.run().await;
        assert_eq!(
            report.outcome,
            Outcome::Applied,
            "run {} did not apply cleanly: {:#?}",
            report.run_id,
            report.plan.as_ref().map(|p| &p.actions)
        );
        report
    }

    /// Writes both sandboxes received so far (refused and faulted ones included).
    pub fn writes(&self) -> u64 {
        self.sb.kounta().stats().writes + self.sb.farmflow().stats().writes
    }

    /// A run, and the writes both sandboxes received during it.
    pub async fn run_counting_writes(&self) -> (RunReport, u64) {
        let before = self.writes();
        let report = self.run().await;
        (report, self.writes() - before)
    }

    /// Asserts that one more run applies cleanly and writes nothing at all.
    pub async fn assert_quiet(&self) {
        let (report, writes) = self.run_counting_writes().await;
        assert_eq!(
            writes,
            0,
            "a converged run wrote {writes} times: {:#?}",
            report.plan.as_ref().map(|p| &p.actions)
        );
        assert_eq!(report.outcome, Outcome::Applied);
    }

    /// Runs at most twice to settle, then asserts the next run writes nothing (DESIGN.md's
    /// convergence bound when the verification budget covers every link).
    pub async fn converge(&self) {
        for _ in 0..2 {
            self.run().await;
        }
        self.assert_quiet().await;
    }

    /// Every link row.
    pub async fn links(&self) -> Vec<Link> {
        self.engine.store.call(|s| s.links()).await.expect("links")
    }

    /// Journal entries not settled yet.
    pub async fn unsettled(&self) -> Vec<Intent> {
        self.engine
            .store
            .call(|s| s.unsettled_intents())
            .await
            .expect("journal")
    }

    /// Recorded conflicts.
    pub async fn conflicts(&self) -> Vec<farmsync::store::ConflictRecord> {
        self.engine
            .store
            .call(|s| s.open_conflicts())
            .await
            .expect("conflicts")
    }

    /// Loses the state DB (deleted from disk) and starts over with an empty one.
    pub fn lose_state_db(&mut self) {
        let path = self.state_path();
        // A fresh engine first, so the old store's connection is dropped before the files go.
        let placeholder = engine_for(
            &self.settings,
            Store::open_in_memory().expect("memory store"),
        );
        drop(std::mem::replace(&mut self.engine, placeholder));
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
        self.engine = engine_for(&self.settings, open_store(&path));
    }

    /// A new engine on the same state DB (as a new process would be), with other settings.
    pub fn reconfigure(&mut self, extra: &[(&str, &str)]) {
        let mut all = self.extra.clone();
        all.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let settings = settings_for(&self.sb, &self.state_path(), &all);
        let placeholder = engine_for(
            &self.settings,
            Store::open_in_memory().expect("memory store"),
        );
        drop(std::mem::replace(&mut self.engine, placeholder));
        self.engine = engine_for(&settings, open_store(&settings.state.path));
        self.settings = settings;
        self.extra = all;
    }

    /// The CRM customer whose `reference_id` names FarmFlow customer `farmflow_id`.
    pub fn crm_for(&self, farmflow_id: i64) -> Option<KountaRecord> {
        let reference = format!("farmflow:{farmflow_id}");
        self.sb
            .kounta()
            .customers()
            .into_iter()
            .find(|c| c.reference_id == reference)
    }

    /// The FarmFlow customer with this first name.
    pub fn ff_named(&self, first_name: &str) -> Option<FarmflowRecord> {
        self.sb
            .farmflow()
            .customers()
            .into_iter()
            .find(|c| c.firstname == first_name)
    }

    /// The CRM customer with this first name.
    pub fn crm_named(&self, first_name: &str) -> Option<KountaRecord> {
        self.sb
            .kounta()
            .customers()
            .into_iter()
            .find(|c| c.first_name == first_name)
    }
}

/// Settings pointing at the sandbox, with a high rate and `extra` (`section.key`, value).
pub fn settings_for(sb: &Sandbox, state: &std::path::Path, extra: &[(String, String)]) -> Settings {
    let mut vars: Vec<(String, String)> = vec![
        ("FARMSYNC__STATE__PATH".into(), state.display().to_string()),
        ("FARMSYNC__KOUNTA__BASE_URL".into(), sb.kounta_url()),
        (
            "FARMSYNC__KOUNTA__CLIENT_ID".into(),
            sb.kounta().client_id().to_owned(),
        ),
        (
            "FARMSYNC__KOUNTA__CLIENT_SECRET".into(),
            sb.kounta().client_secret().to_owned(),
        ),
        (
            "FARMSYNC__KOUNTA__REQUESTS_PER_MINUTE".into(),
            "100000".into(),
        ),
        ("FARMSYNC__FARMFLOW__BASE_URL".into(), sb.farmflow_url()),
        (
            "FARMSYNC__FARMFLOW__API_KEY".into(),
            sb.farmflow().api_key().to_owned(),
        ),
        (
            "FARMSYNC__FARMFLOW__REQUESTS_PER_MINUTE".into(),
            "100000".into(),
        ),
    ];
    for (key, value) in extra {
        vars.push((farmsync::config::env_var_for(key), value.clone()));
    }
    Settings::builder()
        .env_vars(vars)
        .build()
        .expect("test settings are valid")
}

/// Opens (creating) a state DB.
pub fn open_store(path: &std::path::Path) -> Store {
    Store::open(path).expect("state DB opens")
}

/// An engine as `Engine::from_settings` builds it, with short timeouts and quick retries — and
/// no request ledger: each harness engine is a process started long after the last (tests age
/// the state between runs rather than wait), so the requests of earlier engines do not count.
pub fn engine_for(settings: &Settings, store: Store) -> Engine {
    let store = SharedStore::new(store);
    let mut k = kounta_options(settings);
    k.timeout = TIMEOUT;
    let mut f = farmflow_options(settings);
    f.timeout = TIMEOUT;
    let kounta = KountaClient::new(k, Arc::new(store.clone()))
        .expect("crm client")
        .with_retry_policy(quick_retries());
    let farmflow = FarmflowClient::new(f)
        .expect("farmflow client")
        .with_retry_policy(quick_retries());
    Engine {
        kounta,
        farmflow,
        store,
        policy: settings.policy(false),
        kounta_rate: settings.kounta.requests_per_minute,
        max_verify_age_secs: DEFAULT_MAX_VERIFY_AGE_SECS,
        history_keep_days: 90,
        today: None,
    }
}

// ----- people ----------------------------------------------------------------------------------

/// A CRM customer as staff would type one in.
pub fn crm_person(first: &str, last: &str, email: &str, phone: &str) -> KountaRecord {
    KountaRecord {
        first_name: first.into(),
        last_name: last.into(),
        email: email.into(),
        phone: phone.into(),
        primary_address: Some(KountaRecordAddress {
            address: format!("{} {first} Street", first.len()),
            city: "Beeftown".into(),
            state: "NSW".into(),
            postal_code: "2112".into(),
            country: "AU".into(),
        }),
        ..KountaRecord::default()
    }
}

/// A FarmFlow customer as the grower would type one in.
pub fn ff_person(first: &str, last: &str, email: &str, phone: &str) -> FarmflowRecord {
    FarmflowRecord {
        firstname: first.into(),
        lastname: last.into(),
        email: email.into(),
        phone: phone.into(),
        address: format!("{} {first} Road", first.len()),
        city: "Orange".into(),
        state: "NSW".into(),
        zip: "2800".into(),
        country: "Australia".into(),
        ..FarmflowRecord::default()
    }
}

// ----- invariants --------------------------------------------------------------------------------

fn name_key(first: &str, last: &str) -> (String, String) {
    (first.trim().to_lowercase(), last.trim().to_lowercase())
}

/// No person twice on either side (tests give every person a distinct name), and no two CRM
/// customers naming one FarmFlow customer.
pub fn assert_no_duplicates(sb: &Sandbox) {
    let mut crm: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut refs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in sb.kounta().customers() {
        crm.entry(name_key(&c.first_name, &c.last_name))
            .or_default()
            .push(c.id);
        if !c.reference_id.is_empty() {
            refs.entry(c.reference_id.clone()).or_default().push(c.id);
        }
    }
    for (name, ids) in &crm {
        assert!(
            ids.len() == 1,
            "the CRM holds {name:?} {} times: {ids:?}",
            ids.len()
        );
    }
    for (reference, ids) in &refs {
        assert!(
            ids.len() == 1,
            "{reference} is named by CRM customers {ids:?}"
        );
    }
    let mut ff: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for c in sb.farmflow().customers() {
        ff.entry(name_key(&c.firstname, &c.lastname))
            .or_default()
            .push(c.id);
    }
    for (name, ids) in &ff {
        assert!(
            ids.len() == 1,
            "FarmFlow holds {name:?} {} times: {ids:?}",
            ids.len()
        );
    }
}

/// Every live link points at a record on each side, and the CRM record names the link. A link
/// whose deletion waits for a person (`[sync] deletes = "approve"`) or that is parked (out of
/// scope) may name a record that is gone: it stays as it is until a person decides, or the
/// customer is in scope again.
pub async fn assert_links_hold(h: &Harness) {
    let queued: std::collections::BTreeSet<String> = h
        .engine
        .store
        .call(|s| s.delete_queue())
        .await
        .expect("deletion queue")
        .into_iter()
        .map(|q| q.reference_id)
        .collect();
    let crm: BTreeMap<i64, KountaRecord> =
        h.sb.kounta()
            .customers()
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
    let ff: BTreeMap<i64, FarmflowRecord> =
        h.sb.farmflow()
            .customers()
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
    for link in h.links().await {
        if link.state != LinkState::Active {
            continue;
        }
        let waits = link.parked.is_some() || queued.contains(link.reference_id.as_str());
        assert!(
            waits || ff.contains_key(&link.farmflow_id.0),
            "active link {} points at no FarmFlow customer",
            link.reference_id
        );
        let k = link.kounta_id.expect("an active link has a CRM id");
        let Some(record) = crm.get(&k.0) else {
            assert!(
                waits,
                "active link {} points at no CRM customer",
                link.reference_id
            );
            continue;
        };
        assert_eq!(
            record.reference_id,
            link.reference_id.as_str(),
            "CRM customer {} does not carry its link's reference",
            k.0
        );
    }
}

/// Every journal entry is settled.
pub async fn assert_journal_settled(h: &Harness) {
    let open = h.unsettled().await;
    assert!(open.is_empty(), "unsettled journal entries: {open:#?}");
}

/// Linked people hold the same values on both sides (compared as DESIGN.md normalises them;
/// `state` case-insensitively, since FarmFlow may upper-case it). A CRM customer out of scope
/// (`kounta_tag` missing, or `pause_tag` carried) is left alone, so it may disagree.
pub fn assert_in_agreement(h: &Harness) {
    let ff: BTreeMap<i64, FarmflowRecord> =
        h.sb.farmflow()
            .customers()
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
    for c in h.sb.kounta().customers() {
        if h.engine.policy.parked_by(&c.tags).is_some() {
            continue;
        }
        let Some(id) = c
            .reference_id
            .strip_prefix("farmflow:")
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        let Some(f) = ff.get(&id) else { continue };
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        let a = c.primary_address.clone().unwrap_or_default();
        let (line1, line2) = a.address.split_once('\n').unwrap_or((&a.address, ""));
        let pairs = [
            (
                "first_name",
                c.first_name.trim().to_owned(),
                f.firstname.trim().to_owned(),
            ),
            (
                "last_name",
                c.last_name.trim().to_owned(),
                f.lastname.trim().to_owned(),
            ),
            (
                "email",
                c.email.trim().to_lowercase(),
                f.email.trim().to_lowercase(),
            ),
            ("phone", digits(&c.phone), digits(&f.phone)),
            (
                "line1",
                line1.trim().to_owned(),
                f.address.trim().to_owned(),
            ),
            (
                "line2",
                line2.trim().to_owned(),
                f.address2.trim().to_owned(),
            ),
            ("city", a.city.trim().to_owned(), f.city.trim().to_owned()),
            (
                "state",
                a.state.trim().to_uppercase(),
                f.state.trim().to_uppercase(),
            ),
            (
                "zip",
                a.postal_code.trim().to_owned(),
                f.zip.trim().to_owned(),
            ),
        ];
        for (field, crm_value, ff_value) in pairs {
            assert_eq!(
                crm_value, ff_value,
                "{field} of CRM {} and FarmFlow {id} disagree",
                c.id
            );
        }
    }
}

/// Everything a converged pair of systems must show.
pub async fn assert_settled_state(h: &Harness) {
    assert_no_duplicates(&h.sb);
    assert_links_hold(h).await;
    assert_journal_settled(h).await;
    assert_in_agreement(h);
}

/// `n` people created in FarmFlow and synced to the CRM, settled; their (CRM id, FarmFlow id)
/// in the order they were created (the CRM's listing order too).
pub async fn linked_people(h: &Harness, n: usize) -> Vec<(i64, i64)> {
    let ids: Vec<i64> = (0..n)
        .map(|i| {
            h.sb.farmflow().insert(ff_person(
                &format!("P{i}"),
                "Many",
                &format!("p{i}@example.com"),
                &format!("0412 700 {i:03}"),
            ))
        })
        .collect();
    h.run_ok().await;
    h.converge().await;
    let mut pairs: Vec<(i64, i64)> = ids
        .into_iter()
        .map(|f| (h.crm_for(f).expect("created in the CRM").id, f))
        .collect();
    pairs.sort();
    pairs
}

/// The state of the link of FarmFlow customer `farmflow_id`.
pub async fn link_state(h: &Harness, farmflow_id: i64) -> LinkState {
    h.links()
        .await
        .into_iter()
        .find(|l| l.farmflow_id.0 == farmflow_id)
        .expect("a link row")
        .state
}
