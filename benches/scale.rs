//! farmsync at scale: 10,000 linked customers, the CRM at its documented 60 requests a minute.
//!
//! `cargo bench --bench scale` (add `--profile dev` for a debug build). Loopback only; every
//! wait is bounded. The default run takes about 20 minutes; these variables shorten it:
//!
//! - `BENCH_SCALE_CUSTOMERS` (10000): linked customers of the daemons of parts 1 and 2 (and the
//!   larger size of part 4); over 1,125 (45 pages, the listing's first burst), or part 1 (a)
//!   has no listing to time edits against;
//! - `BENCH_SCALE_EDITS` (50): CRM edits timed during the start-up sweep, and again between
//!   sweeps;
//! - `BENCH_SCALE_FF_EDITS` (12): the fewest FarmFlow edits timed (more are, while part 1 runs);
//! - `BENCH_SCALE_QUIET_CUSTOMERS` (1000) and `BENCH_SCALE_QUIET_MINUTES` (10; `0` skips part 3);
//! - `BENCH_SCALE_LOG` (unset): a file for the daemons' JSON logs.
//!
//! A smoke run: `BENCH_SCALE_CUSTOMERS=3000 BENCH_SCALE_EDITS=10 BENCH_SCALE_FF_EDITS=3
//! BENCH_SCALE_QUIET_CUSTOMERS=200 BENCH_SCALE_QUIET_MINUTES=1` (about 5 minutes).
//!
//! What it measures, printed as one table. Every daemon runs in this process against a sandbox
//! of its own, limited to the documented rates (the CRM 60 a minute, FarmFlow 120), with
//! `kounta.requests_per_minute = 60`; parts 1–3 run side by side.
//!
//! 1. CRM edit → FarmFlow through a webhook (the sandbox delivers a signed `customers/updated`
//!    to the daemon's listener), `cron` yearly and `quick_cron` every minute: (a) while the
//!    start-up sweep lists the CRM, (b) after it.
//! 2. FarmFlow edit → CRM, at random moments, in a second daemon on the default schedule that
//!    gets no other edits (a webhook cycle would carry a FarmFlow edit sooner than `quick_cron`).
//! 3. The CRM requests of a quiet daemon on the default schedule (a smaller farm), counted at
//!    its sandbox over whole `cron` periods from a fire time and extrapolated to an hour; and
//!    part 2's daemon's, from its second minute on.
//! 4. A quick cycle's and a sweep's requests and CPU at two farm sizes (engine level, each run
//!    in a fresh process, no rate limit, the verification budget taken from 60 a minute).
//!
//! Each daemon's state DB is built first by one sync at unlimited rate, as a farm in service
//! would have it. Exits 1 when a target is missed: a webhook edit's p95 over 2 s, a FarmFlow
//! edit's p95 over 65 s, or more than 60 CRM requests in any minute at a sandbox.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Timelike as _;
use farmsync::config::Settings;
use farmsync::daemon::{DaemonError, DaemonOptions, DaemonStop, run_daemon};
use farmsync::farmflow::client::FarmflowClient;
use farmsync::http::RateLimiter;
use farmsync::ids::KountaId;
use farmsync::kounta::MemoryTokenStore;
use farmsync::kounta::client::KountaClient;
use farmsync::sandbox::{
    FarmflowRecord, KountaEndpoint, KountaRecord, KountaRecordAddress, RateLimit, SampleData,
    Sandbox, SandboxOptions, Target, max_in_window,
};
use farmsync::store::{SharedStore, Store};
use farmsync::sync::engine::{
    CycleKind, DEFAULT_MAX_VERIFY_AGE_SECS, Engine, RunOptions, farmflow_options, kounta_options,
};
use farmsync::webhook::{SECRET_HEADER, Topic, address};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The CRM rate farmsync is configured with, and the sandbox enforces (requests a minute).
const CRM_RATE: u32 = 60;
/// FarmFlow's documented rate.
const FARMFLOW_RATE: u32 = 120;
/// The sandbox's CRM page size (the real API's).
const PAGE_SIZE: usize = 25;
/// The promise for a webhook edit (DESIGN.md: "within about two seconds of its delivery").
const WEBHOOK_P95: Duration = Duration::from_secs(2);
/// The promise for a FarmFlow edit: one `quick_cron` period, and a little for the cycle.
const FARMFLOW_P95: Duration = Duration::from_secs(65);
/// Give up on one CRM edit after this (counted as this long, and reported).
const WEBHOOK_PATIENCE: Duration = Duration::from_secs(60);
/// Give up on one FarmFlow edit after this.
const FARMFLOW_PATIENCE: Duration = Duration::from_secs(180);
/// CRM edits are at least this far apart: at most 13 in a limiter window (60.5 s), one CRM
/// read each, inside the quick cycles' reserve of 15 a minute (past it, a quick cycle waits for
/// a slot of the window to come free — just after a sweep's first burst of pages, for up to a
/// minute). FarmFlow edits go to another farm, so they take nothing from this reserve.
const MIN_SPACING: Duration = Duration::from_secs(5);
/// Edits during the sweep are spread over this share of its expected length, so all of them
/// land while it lists.
const DURING_SHARE: f64 = 0.8;
/// A schedule that never fires during the bench: the start-up sweep is the only sweep.
const YEARLY: &str = "0 0 0 1 1 *";
/// The default `[schedule] cron` period, in minutes (`0 */5 * * * *`).
const CRON_MINUTES: u32 = 5;
/// Unlimited, for building state DBs and for the engine-level runs.
const UNLIMITED: u32 = 1_000_000;

const ROLE: &str = "FARMSYNC_BENCH_ROLE";

fn main() {
    if std::env::var(ROLE).as_deref() == Ok("run") {
        one_run();
        return;
    }
    let knobs = Knobs::from_env();
    if let Some(path) = &knobs.log {
        init_log(path);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = std::time::Instant::now();
    let figures = runtime.block_on(measure(&knobs));
    let missed = print_table(&knobs, &figures, started.elapsed());
    if !missed.is_empty() {
        eprintln!("targets missed: {}", missed.join("; "));
        std::process::exit(1);
    }
}

/// The bench's settings, from the environment.
#[derive(Debug, Clone)]
struct Knobs {
    customers: usize,
    edits: usize,
    ff_edits: usize,
    quiet_customers: usize,
    quiet_minutes: u32,
    log: Option<PathBuf>,
}

impl Knobs {
    fn from_env() -> Knobs {
        fn num(key: &str, default: usize) -> usize {
            match std::env::var(key) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{key} must be a number, not {v:?}")),
                Err(_) => default,
            }
        }
        Knobs {
            customers: num("BENCH_SCALE_CUSTOMERS", 10_000).max(10),
            edits: num("BENCH_SCALE_EDITS", 50).max(1),
            ff_edits: num("BENCH_SCALE_FF_EDITS", 12).max(1),
            quiet_customers: num("BENCH_SCALE_QUIET_CUSTOMERS", 1_000).max(10),
            quiet_minutes: u32::try_from(num("BENCH_SCALE_QUIET_MINUTES", 10)).unwrap_or(10),
            log: std::env::var_os("BENCH_SCALE_LOG").map(PathBuf::from),
        }
    }

    /// The farm sizes of the cycle costs: a tenth (at most 1,000) and the full size.
    fn cost_sizes(&self) -> Vec<usize> {
        let small = (self.customers / 10).clamp(10, 1_000);
        if small == self.customers {
            vec![small]
        } else {
            vec![small, self.customers]
        }
    }
}

/// The daemons' logs, one JSON object a line, to `path`.
fn init_log(path: &Path) {
    let file = std::fs::File::create(path).expect("the log file can be created");
    let filter = tracing_subscriber::EnvFilter::new("farmsync=info,tokio_cron_scheduler=warn");
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .init();
}

// ----- data ----------------------------------------------------------------------------------------

fn crm(i: usize, reference_id: String) -> KountaRecord {
    KountaRecord {
        first_name: format!("First{i}"),
        last_name: format!("Last{i}"),
        email: format!("person{i}@example.com"),
        phone: format!("04{i:08}"),
        reference_id,
        primary_address: Some(KountaRecordAddress {
            address: format!("{i} Orchard Lane"),
            city: "Orange".into(),
            state: "NSW".into(),
            postal_code: "2800".into(),
            country: "AU".into(),
        }),
        ..KountaRecord::default()
    }
}

fn farm(i: usize, id: i64) -> FarmflowRecord {
    FarmflowRecord {
        id,
        firstname: format!("First{i}"),
        lastname: format!("Last{i}"),
        email: format!("person{i}@example.com"),
        phone: format!("04{i:08}"),
        address: format!("{i} Orchard Lane"),
        city: "Orange".into(),
        state: "NSW".into(),
        zip: "2800".into(),
        country: "AU".into(),
        ..FarmflowRecord::default()
    }
}

/// `n` people on both sides, the CRM naming each FarmFlow twin in `reference_id` (as
/// `benches/sync.rs` seeds them).
fn linked_data(n: usize) -> SampleData {
    let mut data = SampleData::default();
    for i in 0..n {
        let id = 1_000 + i as i64;
        data.farmflow.push(farm(i, id));
        data.kounta.push(crm(i, format!("farmflow:{id}")));
    }
    data
}

/// A sandbox serving `n` linked people, unlimited for now, with the real page size.
async fn seeded_sandbox(n: usize) -> Sandbox {
    let sb = Sandbox::start(SandboxOptions::default())
        .await
        .expect("sandbox starts");
    sb.kounta().set_page_size(PAGE_SIZE);
    sb.seed(&linked_data(n)).expect("seed data is valid");
    sb
}

/// Every linked pair as (CRM id, FarmFlow id), in CRM id order.
fn linked_pairs(sb: &Sandbox) -> Vec<(i64, i64)> {
    let mut pairs: Vec<(i64, i64)> = sb
        .kounta()
        .customers()
        .iter()
        .filter_map(|c| {
            let f = c.reference_id.strip_prefix("farmflow:")?.parse().ok()?;
            Some((c.id, f))
        })
        .collect();
    pairs.sort_unstable();
    pairs
}

fn pages(n: usize) -> u64 {
    n.div_ceil(PAGE_SIZE) as u64
}

fn crm_city(sb: &Sandbox, k: i64) -> Option<String> {
    sb.kounta()
        .get(k)
        .and_then(|c| c.primary_address.map(|a| a.city))
}

fn set_crm_city(sb: &Sandbox, k: i64, city: &str) {
    let edited = sb.kounta().edit(k, |c| {
        if let Some(a) = c.primary_address.as_mut() {
            a.city = city.to_owned();
        }
    });
    assert!(edited, "CRM customer {k} exists");
}

fn set_farmflow_city(sb: &Sandbox, f: i64, city: &str) {
    let edited = sb.farmflow().edit(f, |c| c.city = city.to_owned());
    assert!(edited, "FarmFlow customer {f} exists");
}

/// Polls (every `step`) until `done` holds or `patience` runs out; the time it took, or `None`.
async fn until(
    patience: Duration,
    step: Duration,
    mut done: impl FnMut() -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if done() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= patience {
            return None;
        }
        tokio::time::sleep(step).await;
    }
}

// ----- engines --------------------------------------------------------------------------------------

/// Settings for an engine (not a daemon) against these URLs: `rate` is
/// `kounta.requests_per_minute`, the figure the verification budget is taken from.
fn engine_settings(urls: &(String, String), state: &Path, rate: u32) -> Settings {
    let sandbox = SandboxOptions::default();
    let vars = [
        ("FARMSYNC__STATE__PATH", state.display().to_string()),
        ("FARMSYNC__KOUNTA__BASE_URL", urls.0.clone()),
        ("FARMSYNC__KOUNTA__CLIENT_ID", sandbox.kounta.client_id),
        (
            "FARMSYNC__KOUNTA__CLIENT_SECRET",
            sandbox.kounta.client_secret,
        ),
        ("FARMSYNC__KOUNTA__REQUESTS_PER_MINUTE", rate.to_string()),
        ("FARMSYNC__FARMFLOW__BASE_URL", urls.1.clone()),
        ("FARMSYNC__FARMFLOW__API_KEY", sandbox.farmflow.api_key),
        (
            "FARMSYNC__FARMFLOW__REQUESTS_PER_MINUTE",
            UNLIMITED.to_string(),
        ),
    ];
    Settings::builder()
        .env_vars(vars.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .build()
        .expect("bench settings are valid")
}

/// An engine as `Engine::from_settings` builds it, budgeting against `budget_rate` a minute,
/// with limiters that never wait.
fn unthrottled_engine(settings: &Settings, budget_rate: u32) -> Engine {
    let store = SharedStore::new(Store::open(&settings.state.path).expect("state DB opens"));
    let unlimited = || RateLimiter::new(UNLIMITED, Duration::from_secs(60));
    let kounta = KountaClient::new(kounta_options(settings), Arc::new(store.clone()))
        .expect("crm client")
        .with_rate_limiter(unlimited());
    let farmflow = FarmflowClient::new(farmflow_options(settings))
        .expect("farmflow client")
        .with_rate_limiter(unlimited());
    Engine {
        kounta,
        farmflow,
        store,
        policy: settings.policy(false),
        kounta_rate: budget_rate,
        max_verify_age_secs: DEFAULT_MAX_VERIFY_AGE_SECS,
        history_keep_days: 90,
        today: None,
    }
}

/// One sync at unlimited rate (every CRM record read): the state DB a farm in service has.
async fn build_state(settings: &Settings, n: usize) {
    let engine = unthrottled_engine(settings, UNLIMITED);
    let report = engine.run_once(RunOptions::default()).await;
    assert_eq!(
        report.outcome,
        farmsync::sync::engine::Outcome::Applied,
        "the state DB is built"
    );
    assert_eq!(report.summary.linked as usize, n, "everyone is linked");
    assert_eq!(report.summary.created + report.summary.updated, 0);
}

// ----- 4. cycle costs, each run in a process of its own --------------------------------------------

/// What one engine-level run cost, as the `run` child prints it.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    kounta: u64,
    farmflow: u64,
    writes: u64,
    linked: u64,
    exit_code: i32,
    cpu: Duration,
    wall: Duration,
    peak_rss_kib: u64,
}

impl Cost {
    fn to_line(self) -> String {
        format!(
            "{} {} {} {} {} {} {} {}",
            self.kounta,
            self.farmflow,
            self.writes,
            self.linked,
            self.exit_code,
            self.cpu.as_micros(),
            self.wall.as_micros(),
            self.peak_rss_kib
        )
    }

    fn parse(line: &str) -> Option<Cost> {
        let v: Vec<i64> = line
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        let [kounta, farmflow, writes, linked, exit_code, cpu, wall, rss] = v[..] else {
            return None;
        };
        let u = |x: i64| u64::try_from(x).unwrap_or(0);
        Some(Cost {
            kounta: u(kounta),
            farmflow: u(farmflow),
            writes: u(writes),
            linked: u(linked),
            exit_code: i32::try_from(exit_code).unwrap_or(-1),
            cpu: Duration::from_micros(u(cpu)),
            wall: Duration::from_micros(u(wall)),
            peak_rss_kib: u(rss),
        })
    }
}

/// A measured engine run: at which size, which kind, with what pending.
struct CostRow {
    customers: usize,
    kind: &'static str,
    pending: &'static str,
    cost: Cost,
}

/// What the `run` child does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunKind {
    /// Build the state DB: a sweep at unlimited rate and budget.
    Build,
    Quick,
    Sweep,
}

impl RunKind {
    fn as_str(self) -> &'static str {
        match self {
            RunKind::Build => "build",
            RunKind::Quick => "quick",
            RunKind::Sweep => "sweep",
        }
    }
}

/// Runs one cycle in a fresh process; `hint` is a CRM id stored as a webhook delivery first.
async fn run_in_child(
    urls: &(String, String),
    state: &Path,
    kind: RunKind,
    hint: Option<i64>,
) -> Cost {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command
        .env(ROLE, "run")
        .env("BENCH_KOUNTA_URL", &urls.0)
        .env("BENCH_FARMFLOW_URL", &urls.1)
        .env("BENCH_STATE", state)
        .env("BENCH_KIND", kind.as_str())
        .env(
            "BENCH_HINT",
            hint.map(|h| h.to_string()).unwrap_or_default(),
        )
        .stderr(Stdio::inherit());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the child's waiter")
        .expect("the run process starts");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .and_then(Cost::parse)
        .unwrap_or_else(|| panic!("the run process answered {text:?}"))
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage only writes the struct it is given, which is plain data.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    let usage = rusage();
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The `run` role: one cycle as the parent describes it, measured, printed as one line.
fn one_run() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set"));
    let urls = (var("BENCH_KOUNTA_URL"), var("BENCH_FARMFLOW_URL"));
    let state = PathBuf::from(var("BENCH_STATE"));
    let kind = match var("BENCH_KIND").as_str() {
        "build" => RunKind::Build,
        "quick" => RunKind::Quick,
        "sweep" => RunKind::Sweep,
        other => panic!("unknown BENCH_KIND {other:?}"),
    };
    let hint: Option<i64> = var("BENCH_HINT").parse().ok();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cost = runtime.block_on(async {
        // The budget a daemon at 60 a minute has; the build reads every record.
        let budget_rate = if kind == RunKind::Build {
            UNLIMITED
        } else {
            CRM_RATE
        };
        let settings = engine_settings(&urls, &state, budget_rate);
        let engine = unthrottled_engine(&settings, budget_rate);
        // A daemon has looked its company up long before; so does this run, unmeasured.
        engine.kounta.company_id().await.expect("company lookup");
        if let Some(k) = hint {
            engine
                .store
                .call(move |s| s.add_hint(KountaId(k), "customers/updated"))
                .await
                .expect("hint stored");
        }
        let (k0, f0) = (engine.kounta.counts(), engine.farmflow.counts());
        let cpu = cpu_time();
        let wall = std::time::Instant::now();
        let report = engine
            .run_once(RunOptions {
                kind: if kind == RunKind::Quick {
                    CycleKind::Quick
                } else {
                    CycleKind::Sweep
                },
                ..RunOptions::default()
            })
            .await;
        let wall = wall.elapsed();
        let cpu = cpu_time() - cpu;
        let (k1, f1) = (engine.kounta.counts(), engine.farmflow.counts());
        Cost {
            kounta: k1.total() - k0.total(),
            farmflow: f1.total() - f0.total(),
            writes: (k1.writes - k0.writes) + (f1.writes - f0.writes),
            linked: report.summary.linked,
            exit_code: report.outcome.exit_code(),
            cpu,
            wall,
            peak_rss_kib: u64::try_from(rusage().ru_maxrss).unwrap_or(0),
        }
    });
    println!("{}", cost.to_line());
}

/// Part 4: at each size, a quiet quick cycle, a quick cycle with one CRM edit (hinted, as a
/// webhook leaves it), one with one FarmFlow edit, and a sweep with one hinted CRM edit.
async fn cycle_costs(knobs: &Knobs) -> Vec<CostRow> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    for n in knobs.cost_sizes() {
        let sb = seeded_sandbox(n).await;
        let urls = (sb.kounta_url(), sb.farmflow_url());
        let state = dir.path().join(format!("costs-{n}.db"));
        let built = run_in_child(&urls, &state, RunKind::Build, None).await;
        assert_eq!((built.linked as usize, built.writes), (n, 0), "{built:?}");
        let pairs = linked_pairs(&sb);
        let pick = |share: usize| pairs[pairs.len() * share / 4];
        let mut row = |kind: &'static str, pending: &'static str, cost: Cost| {
            assert_eq!(cost.exit_code, 0, "{kind} ({pending}) at {n}: {cost:?}");
            rows.push(CostRow {
                customers: n,
                kind,
                pending,
                cost,
            });
        };

        let cost = run_in_child(&urls, &state, RunKind::Quick, None).await;
        assert_eq!(cost.writes, 0);
        row("quick", "nothing", cost);

        let (k, f) = pick(1);
        set_crm_city(&sb, k, "Edited in the CRM");
        let cost = run_in_child(&urls, &state, RunKind::Quick, Some(k)).await;
        assert_eq!(
            sb.farmflow().get(f).expect("twin").city,
            "Edited in the CRM"
        );
        row("quick", "1 CRM edit (webhook)", cost);

        let (k, f) = pick(2);
        set_farmflow_city(&sb, f, "Edited in FarmFlow");
        let cost = run_in_child(&urls, &state, RunKind::Quick, None).await;
        assert_eq!(crm_city(&sb, k).as_deref(), Some("Edited in FarmFlow"));
        row("quick", "1 FarmFlow edit", cost);

        let (k, f) = pick(3);
        set_crm_city(&sb, k, "Edited before a sweep");
        let cost = run_in_child(&urls, &state, RunKind::Sweep, Some(k)).await;
        assert_eq!(
            sb.farmflow().get(f).expect("twin").city,
            "Edited before a sweep"
        );
        row("sweep", "1 CRM edit (webhook)", cost);
        sb.shutdown().await;
    }
    rows
}

// ----- daemons ---------------------------------------------------------------------------------------

/// A farm in service: a sandbox limited to the documented rates, a built state DB, and a daemon
/// running on it in this process.
struct Farm {
    sb: Sandbox,
    _dir: tempfile::TempDir,
    state: PathBuf,
    customers: usize,
    pairs: Vec<(i64, i64)>,
    /// Runs in the state DB before the daemon started (the build).
    earlier_runs: HashSet<String>,
    /// When the daemon was started.
    started: Instant,
    stop: CancellationToken,
    daemon: JoinHandle<Result<DaemonStop, DaemonError>>,
}

/// The daemon's config: `cron` as given (`None`: the default), `quick_cron` the default, and
/// webhooks on `port` when given.
fn daemon_config(sb: &Sandbox, state: &Path, cron: Option<&str>, port: Option<u16>) -> String {
    let schedule = cron
        .map(|c| format!("[schedule]\ncron = {c:?}\n"))
        .unwrap_or_default();
    let webhooks = port
        .map(|p| {
            format!(
                "[webhooks]\nenabled = true\nlisten = \"127.0.0.1:{p}\"\nsignature_token = {:?}\nshared_secret = \"bench-shared-secret\"\n",
                sb.kounta().signature_token()
            )
        })
        .unwrap_or_default();
    format!(
        "[state]\npath = {state:?}\n{schedule}\
         [kounta]\nbase_url = {:?}\nclient_id = {:?}\nclient_secret = {:?}\nrequests_per_minute = {CRM_RATE}\n\
         [farmflow]\nbase_url = {:?}\napi_key = {:?}\nrequests_per_minute = {FARMFLOW_RATE}\n{webhooks}",
        sb.kounta_url(),
        sb.kounta().client_id(),
        sb.kounta().client_secret(),
        sb.farmflow_url(),
        sb.farmflow().api_key(),
        state = state.display().to_string(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Farm {
    /// Seeds `n` linked people, builds the state DB at unlimited rate, registers the webhooks
    /// (when `webhooks`), limits both fakes to their documented rates and starts the daemon.
    async fn start(n: usize, cron: Option<&str>, webhooks: bool) -> Farm {
        let sb = seeded_sandbox(n).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state.db");
        let file = dir.path().join("farmsync.toml");
        let port = webhooks.then(free_port);
        std::fs::write(&file, daemon_config(&sb, &state, cron, port)).expect("config written");
        let settings = Settings::builder().file(&file).build().expect("config");

        build_state(&settings, n).await;
        if webhooks {
            let crm =
                KountaClient::new(kounta_options(&settings), Arc::new(MemoryTokenStore::new()))
                    .expect("client");
            for topic in Topic::ALL {
                crm.register_webhook(
                    topic.kounta_name(),
                    &address(&settings.webhooks.public_url, topic),
                    SECRET_HEADER,
                    &settings.webhooks.shared_secret,
                )
                .await
                .expect("registered");
            }
        }
        sb.kounta()
            .set_rate_limit(Target::Any, RateLimit::per_minute(CRM_RATE));
        sb.farmflow()
            .set_rate_limit(Target::Any, RateLimit::per_minute(FARMFLOW_RATE));
        sb.kounta().reset_stats();
        sb.farmflow().reset_stats();
        let earlier_runs = Store::open_read_only(&state)
            .and_then(|s| s.recent_runs(100))
            .expect("runs readable")
            .into_iter()
            .map(|r| r.run_id)
            .collect();

        let stop = CancellationToken::new();
        let started = Instant::now();
        let daemon = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let options = DaemonOptions {
                    watchdog: None,
                    ..DaemonOptions::default()
                };
                run_daemon(&settings, options, stop.cancelled_owned()).await
            })
        };
        let pairs = linked_pairs(&sb);
        Farm {
            sb,
            _dir: dir,
            state,
            customers: n,
            pairs,
            earlier_runs,
            started,
            stop,
            daemon,
        }
    }

    /// The daemon's runs so far, oldest first.
    fn runs(&self) -> Vec<farmsync::store::RunRecord> {
        let mut runs: Vec<_> = Store::open_read_only(&self.state)
            .and_then(|s| s.recent_runs(10_000))
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !self.earlier_runs.contains(&r.run_id))
            .collect();
        runs.reverse();
        runs
    }

    /// The start-up sweep: the daemon's first run (the worker starts it before taking any
    /// trigger). A run's recorded request counts cannot tell sweeps from quick cycles: both
    /// count on the one client they share, so each includes the other's while they overlap.
    fn startup_sweep(&self) -> Option<farmsync::store::RunRecord> {
        self.runs().into_iter().next()
    }

    fn startup_sweep_done(&self) -> bool {
        self.startup_sweep()
            .is_some_and(|r| r.finished_at.is_some())
    }

    /// CRM listings started in `[from, to)`: requests for the first page (the later pages
    /// carry `page=`).
    fn listings_started(&self, from: Instant, to: Instant) -> usize {
        self.sb
            .kounta()
            .request_log()
            .iter()
            .filter(|r| r.at >= from && r.at < to)
            .filter(|r| r.endpoint == Some(KountaEndpoint::List) && !r.path.contains("page="))
            .count()
    }

    fn list_pages_served(&self) -> u64 {
        self.sb.kounta().stats().count(KountaEndpoint::List)
    }

    /// Stops the daemon (the sandbox's request logs stay readable): how long it took, and
    /// whether the cycles in progress stopped within the drain timeout.
    async fn stop(&mut self) -> StopFacts {
        let asked = Instant::now();
        self.stop.cancel();
        let stopped = (&mut self.daemon)
            .await
            .expect("daemon task")
            .expect("daemon ran");
        StopFacts {
            took: asked.elapsed(),
            drained: stopped.drained,
            sweep_running: !self.runs().iter().all(|r| r.finished_at.is_some()),
        }
    }

    /// The most CRM and FarmFlow requests any 60 s held at the sandbox, and the 429s answered.
    fn rate_check(&self) -> RateCheck {
        let minute = Duration::from_secs(60);
        RateCheck {
            crm_max: max_in_window(&self.sb.kounta().request_log(), minute),
            crm_429: self.sb.kounta().stats().rate_limited,
            farmflow_max: max_in_window(&self.sb.farmflow().request_log(), minute),
            farmflow_429: self.sb.farmflow().stats().rate_limited,
        }
    }
}

/// How a daemon stopped.
#[derive(Debug, Clone, Copy)]
struct StopFacts {
    took: Duration,
    drained: bool,
    /// A run was still unfinished in the state DB after the stop.
    sweep_running: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct RateCheck {
    crm_max: usize,
    crm_429: u64,
    farmflow_max: usize,
    farmflow_429: u64,
}

/// Where the start-up sweep was when an edit was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Listing the CRM.
    Listing,
    /// Past its listing: holding the writer lock, planning and applying.
    Writing,
    /// Finished.
    After,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Since the daemon started.
    at: Duration,
    phase: Phase,
    latency: Duration,
    timed_out: bool,
}

/// The start-up sweep, as the daemon recorded it and the sandbox saw it.
#[derive(Debug, Clone, Copy, Default)]
struct SweepFacts {
    /// From the daemon's start to the last list page served.
    listing: Duration,
    /// From the last list page to the sweep's end being seen (the writer phase, ± 0.1 s).
    writing: Duration,
    /// List requests served (pages, and any page asked again).
    pages: u64,
    exit_code: i32,
}

/// Parts 1 and 2 and 3's results.
struct DaemonFigures {
    customers: usize,
    during: Vec<Sample>,
    between: Vec<Sample>,
    farmflow: Vec<Sample>,
    sweep: SweepFacts,
    main_rates: RateCheck,
    main_stopped: StopFacts,
    busy: Busy,
    quiet: Option<Quiet>,
}

/// Part 3.
struct Quiet {
    customers: usize,
    minutes: u32,
    crm_requests: usize,
    sweeps: usize,
    quick_cycles: usize,
    rates: RateCheck,
    stopped: StopFacts,
}

/// One CRM edit: made in the sandbox (which delivers `customers/updated` to the daemon's
/// listener, signed), timed until FarmFlow shows it.
async fn crm_edit(farm: &Farm, pair: (i64, i64), city: &str, phase: Phase) -> Sample {
    let (k, f) = pair;
    let at = farm.started.elapsed();
    set_crm_city(&farm.sb, k, city);
    let took = until(WEBHOOK_PATIENCE, Duration::from_millis(5), || {
        farm.sb.farmflow().get(f).is_some_and(|r| r.city == city)
    })
    .await;
    Sample {
        at,
        phase,
        latency: took.unwrap_or(WEBHOOK_PATIENCE),
        timed_out: took.is_none(),
    }
}

/// Part 1: CRM edits during the start-up sweep's listing, then between sweeps.
async fn webhook_edits(
    farm: &Farm,
    pool: &[(i64, i64)],
    edits: usize,
) -> (Vec<Sample>, Vec<Sample>, SweepFacts) {
    let pages = pages(farm.customers);
    // The listing leaves a quarter of the rate free: 45 pages at once (the window is empty),
    // then 45 a (slightly long) minute.
    let per_window = u64::from(CRM_RATE - CRM_RATE / 4);
    let expected =
        Duration::from_secs_f64(pages.saturating_sub(per_window) as f64 / per_window as f64 * 60.5);
    let spacing = (expected.mul_f64(DURING_SHARE) / edits as u32).max(MIN_SPACING);
    let mut pool = pool.iter().copied().cycle();

    // (a) Once the listing is under way, spread the edits over it.
    until(Duration::from_secs(60), Duration::from_millis(50), || {
        farm.list_pages_served() >= 2
    })
    .await
    .expect("the start-up sweep lists the CRM");
    let mut during = Vec::with_capacity(edits);
    let first = Instant::now();
    for i in 0..edits {
        tokio::time::sleep_until(first + spacing * i as u32).await;
        let phase = if farm.list_pages_served() < pages {
            Phase::Listing
        } else if !farm.startup_sweep_done() {
            Phase::Writing
        } else {
            break;
        };
        let pair = pool.next().expect("a pair");
        during.push(crm_edit(farm, pair, &format!("During {i}"), phase).await);
    }

    // The sweep's end: its last page, then its run finished.
    let patience = expected * 2 + Duration::from_secs(120);
    until(patience, Duration::from_millis(100), || {
        farm.list_pages_served() >= pages
    })
    .await
    .expect("the start-up sweep lists every page");
    let last_page_at = farm
        .sb
        .kounta()
        .request_log()
        .iter()
        .filter(|r| r.endpoint == Some(KountaEndpoint::List))
        .map(|r| r.at)
        .max()
        .expect("pages were served");
    // Seen finishing by polling when it had not yet; else from its recorded end (1 s steps).
    let watched = !farm.startup_sweep_done();
    until(patience, Duration::from_millis(100), || {
        farm.startup_sweep_done()
    })
    .await
    .expect("the start-up sweep finishes");
    let sweep = farm.startup_sweep().expect("the start-up sweep");
    let writing = if watched {
        last_page_at.elapsed()
    } else {
        let last_page_unix_ms =
            chrono::Utc::now().timestamp_millis() - last_page_at.elapsed().as_millis() as i64;
        let finished_ms = sweep.finished_at.unwrap_or_default() * 1_000 + 999;
        Duration::from_millis(u64::try_from(finished_ms - last_page_unix_ms).unwrap_or(0))
    };
    let facts = SweepFacts {
        listing: last_page_at.saturating_duration_since(farm.started),
        writing,
        pages: farm.list_pages_served(),
        exit_code: sweep.exit_code.unwrap_or(-1),
    };

    // (b) Between sweeps (the next is a year away).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut between = Vec::with_capacity(edits);
    let first = Instant::now();
    for i in 0..edits {
        tokio::time::sleep_until(first + MIN_SPACING * i as u32).await;
        let pair = pool.next().expect("a pair");
        between.push(crm_edit(farm, pair, &format!("Between {i}"), Phase::After).await);
    }
    (during, between, facts)
}

/// Part 2: FarmFlow edits, each timed until the CRM shows it; at least `wanted`, and on until
/// `part1_done`. Each is made 5–65 s after the last one showed in the CRM, which is just after
/// a `quick_cron` tick, so it falls anywhere in the period with equal chance and waits 0–60 s
/// for the next tick. Only `quick_cron` carries them: the farm gets no other edits, whose
/// webhook cycles would pick them up sooner.
async fn farmflow_edits(
    farm: &Farm,
    pool: &[(i64, i64)],
    wanted: usize,
    part1_done: &AtomicBool,
) -> Vec<Sample> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut pool = pool.iter().copied().cycle();
    let mut samples = Vec::new();
    // Bounded: at most `wanted` edits' worth of time after part 1 ends.
    let mut overtime: Option<Instant> = None;
    loop {
        let done = part1_done.load(Ordering::Relaxed);
        if done && samples.len() >= wanted {
            break;
        }
        if done {
            let since = *overtime.get_or_insert_with(Instant::now);
            if since.elapsed() > (FARMFLOW_PATIENCE + Duration::from_secs(45)) * wanted as u32 {
                break;
            }
        }
        let pause = Duration::from_secs_f64(rng.random_range(5.0..65.0));
        // Wake early when part 1 ends and enough were timed.
        let deadline = Instant::now() + pause;
        while Instant::now() < deadline {
            if part1_done.load(Ordering::Relaxed) && samples.len() >= wanted {
                return samples;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (k, f) = pool.next().expect("a pair");
        let city = format!("Farm {}", samples.len());
        let at = farm.started.elapsed();
        set_farmflow_city(&farm.sb, f, &city);
        let took = until(FARMFLOW_PATIENCE, Duration::from_millis(20), || {
            crm_city(&farm.sb, k).as_deref() == Some(city.as_str())
        })
        .await;
        samples.push(Sample {
            at,
            phase: Phase::After,
            latency: took.unwrap_or(FARMFLOW_PATIENCE),
            timed_out: took.is_none(),
        });
    }
    samples
}

/// The time until the next fire of `0 */5 * * * *` in local time.
fn until_next_cron_fire() -> Duration {
    let now = chrono::Local::now();
    let into = u64::from(now.minute() % CRON_MINUTES) * 60 + u64::from(now.second());
    let into = Duration::from_secs(into)
        + Duration::from_nanos(u64::from(now.nanosecond() % 1_000_000_000));
    Duration::from_secs(u64::from(CRON_MINUTES) * 60) - into
}

/// Part 3: a quiet daemon on the default schedule; CRM requests at its sandbox over whole
/// `cron` periods, from just before a fire time.
async fn quiet_daemon(mut farm: Farm, minutes: u32) -> Quiet {
    // Past the start-up sweep, then from just before the next fire time.
    let pages = pages(farm.customers);
    until(
        Duration::from_secs(pages * 2 + 300),
        Duration::from_millis(500),
        || farm.startup_sweep_done(),
    )
    .await
    .expect("the quiet daemon's start-up sweep finishes");
    let lead = Duration::from_secs(1);
    let wait = until_next_cron_fire();
    let wait = if wait > lead + Duration::from_secs(5) {
        wait
    } else {
        wait + Duration::from_secs(u64::from(CRON_MINUTES) * 60)
    };
    let from = Instant::now() + wait - lead;
    let from_unix = chrono::Utc::now().timestamp() + (wait - lead).as_secs() as i64;
    let to = from + Duration::from_secs(u64::from(minutes) * 60);
    tokio::time::sleep_until(to).await;
    let crm_requests = farm
        .sb
        .kounta()
        .request_log()
        .iter()
        .filter(|r| r.at >= from && r.at < to)
        .count();
    let runs = farm
        .runs()
        .into_iter()
        .filter(|r| r.started_at >= from_unix && r.started_at < from_unix + i64::from(minutes) * 60)
        .count();
    let sweeps = farm.listings_started(from, to);
    let stopped = farm.stop().await;
    Quiet {
        customers: farm.customers,
        minutes,
        crm_requests,
        sweeps,
        quick_cycles: runs.saturating_sub(sweeps),
        rates: farm.rate_check(),
        stopped,
    }
}

/// Part 2's farm: what its CRM saw from the end of the daemon's first minute (its first burst
/// of list pages) to the end of the edits.
struct Busy {
    customers: usize,
    minutes: f64,
    list: usize,
    reads: usize,
    updates: usize,
    other: usize,
    edits: usize,
    rates: RateCheck,
    stopped: StopFacts,
}

impl Busy {
    fn total(&self) -> usize {
        self.list + self.reads + self.updates + self.other
    }
}

async fn busy_figures(mut farm: Farm, edits: usize) -> Busy {
    let from = farm.started + Duration::from_secs(61);
    let to = Instant::now();
    let log = farm.sb.kounta().request_log();
    let window: Vec<_> = log.iter().filter(|r| r.at >= from && r.at < to).collect();
    let count = |e: KountaEndpoint| window.iter().filter(|r| r.endpoint == Some(e)).count();
    let (list, reads, updates) = (
        count(KountaEndpoint::List),
        count(KountaEndpoint::Get),
        count(KountaEndpoint::Update),
    );
    let stopped = farm.stop().await;
    Busy {
        customers: farm.customers,
        minutes: to.saturating_duration_since(from).as_secs_f64() / 60.0,
        list,
        reads,
        updates,
        other: window.len() - list - reads - updates,
        edits,
        rates: farm.rate_check(),
        stopped,
    }
}

/// Parts 1–3, side by side: the farm taking CRM edits, the farm taking FarmFlow edits (each
/// daemon's `quick_cron` cycle would otherwise carry the other kind's edits, and webhook cycles
/// the FarmFlow edits), and the quiet farm.
async fn daemons(knobs: &Knobs) -> DaemonFigures {
    // Part 1's daemon last, so no other farm's state DB is being built while it runs.
    let quiet = if knobs.quiet_minutes > 0 {
        Some(Farm::start(knobs.quiet_customers, None, false).await)
    } else {
        None
    };
    let busy = Farm::start(knobs.customers, None, true).await;
    let mut main = Farm::start(knobs.customers, Some(YEARLY), true).await;
    let mut crm_pool = main.pairs.clone();
    crm_pool.shuffle(&mut StdRng::seed_from_u64(42));
    let mut farmflow_pool = busy.pairs.clone();
    farmflow_pool.shuffle(&mut StdRng::seed_from_u64(43));
    let part1_done = AtomicBool::new(false);

    let part1 = async {
        let out = webhook_edits(&main, &crm_pool, knobs.edits).await;
        part1_done.store(true, Ordering::Relaxed);
        out
    };
    let part2 = async {
        let samples = farmflow_edits(&busy, &farmflow_pool, knobs.ff_edits, &part1_done).await;
        let figures = busy_figures(busy, samples.len()).await;
        (samples, figures)
    };
    let part3 = async {
        match quiet {
            Some(farm) => Some(quiet_daemon(farm, knobs.quiet_minutes).await),
            None => None,
        }
    };
    let ((during, between, sweep), (farmflow, busy), quiet) = tokio::join!(part1, part2, part3);
    let main_stopped = main.stop().await;
    DaemonFigures {
        customers: knobs.customers,
        during,
        between,
        farmflow,
        sweep,
        main_rates: main.rate_check(),
        main_stopped,
        busy,
        quiet,
    }
}

struct Figures {
    costs: Vec<CostRow>,
    daemons: DaemonFigures,
}

async fn measure(knobs: &Knobs) -> Figures {
    let costs = cycle_costs(knobs).await;
    let daemons = daemons(knobs).await;
    Figures { costs, daemons }
}

// ----- the table ---------------------------------------------------------------------------------------

/// p50, p95 and max (nearest rank).
fn percentiles(samples: &[Sample]) -> Option<(Duration, Duration, Duration)> {
    let mut l: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    if l.is_empty() {
        return None;
    }
    l.sort();
    let pick = |q: f64| l[((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1];
    Some((pick(0.50), pick(0.95), l[l.len() - 1]))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The table being written, and the targets it found missed.
#[derive(Default)]
struct Table {
    lines: Vec<String>,
    missed: Vec<String>,
}

impl Table {
    fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }

    fn latency(&mut self, name: &str, samples: &[Sample], limit: Duration, what: &str) {
        let timeouts = samples.iter().filter(|s| s.timed_out).count();
        let Some((p50, p95, max)) = percentiles(samples) else {
            self.missed.push(format!("{what}: no samples"));
            self.line(format!("{name:<60} {:>4}  no samples", 0));
            return;
        };
        let ok = p95 <= limit && timeouts == 0;
        if !ok {
            self.missed
                .push(format!("{what}: p95 {} (limit {})", secs(p95), secs(limit)));
        }
        let gave_up = if timeouts > 0 {
            format!(" ({timeouts} gave up)")
        } else {
            String::new()
        };
        self.line(format!(
            "{name:<60} {:>4} {:>8} {:>8} {:>8}  p95 ≤ {}: {}{gave_up}",
            samples.len(),
            secs(p50),
            secs(p95),
            secs(max),
            secs(limit),
            if ok { "ok" } else { "MISSED" },
        ));
    }

    fn slowest(&mut self, name: &str, samples: &[Sample]) {
        let mut slow: Vec<&Sample> = samples.iter().collect();
        slow.sort_by_key(|s| std::cmp::Reverse(s.latency));
        let slow: Vec<String> = slow
            .iter()
            .take(3)
            .map(|s| format!("{} at +{:.0} s", secs(s.latency), s.at.as_secs_f64()))
            .collect();
        self.line(format!("     slowest ({name}): {}", slow.join(", ")));
    }

    fn rates(&mut self, name: &str, r: &RateCheck) {
        let ok = r.crm_max <= CRM_RATE as usize && r.crm_429 == 0;
        if !ok {
            self.missed.push(format!(
                "{name}: {} CRM requests in one minute, {} answered 429",
                r.crm_max, r.crm_429
            ));
        }
        self.line(format!(
            "     {name}: most CRM requests in any 60 s {} (≤ {CRM_RATE}: {}), 429s {}; \
             FarmFlow {} (≤ {FARMFLOW_RATE}), 429s {}",
            r.crm_max,
            if ok { "ok" } else { "MISSED" },
            r.crm_429,
            r.farmflow_max,
            r.farmflow_429
        ));
    }
}

/// Prints the table; returns the targets missed.
fn print_table(knobs: &Knobs, f: &Figures, wall: Duration) -> Vec<String> {
    let d = &f.daemons;
    let mut t = Table::default();
    let profile = if cfg!(debug_assertions) {
        "dev (unoptimised)"
    } else {
        "optimised"
    };
    t.line(format!(
        "farmsync at scale — build: {profile}; loopback sandbox; the CRM limited to {CRM_RATE}/min \
         at the sandbox and in farmsync, FarmFlow to {FARMFLOW_RATE}/min; {PAGE_SIZE} a page"
    ));
    t.line("");
    t.line(format!(
        "{:<60} {:>4} {:>8} {:>8} {:>8}  target",
        format!("1–2. daemons, {} linked each", thousands(d.customers)),
        "n",
        "p50",
        "p95",
        "max"
    ));
    let listing = d
        .during
        .iter()
        .filter(|s| s.phase == Phase::Listing)
        .count();
    t.latency(
        &format!("(1a) CRM edit → FarmFlow, in start-up sweep ({listing} listing)"),
        &d.during,
        WEBHOOK_P95,
        "CRM edit during a sweep",
    );
    t.latency(
        "(1b) CRM edit → FarmFlow, between sweeps",
        &d.between,
        WEBHOOK_P95,
        "CRM edit between sweeps",
    );
    t.latency(
        "(2) FarmFlow edit → CRM, default schedule",
        &d.farmflow,
        FARMFLOW_P95,
        "FarmFlow edit",
    );
    t.slowest("1a", &d.during);
    t.slowest("1b", &d.between);
    t.slowest("2", &d.farmflow);
    t.line(format!(
        "     start-up sweep: listing {:.0} s ({} list requests), then plan+apply {:.1} s; exit {}",
        d.sweep.listing.as_secs_f64(),
        d.sweep.pages,
        d.sweep.writing.as_secs_f64(),
        d.sweep.exit_code
    ));
    t.rates("sandbox of 1", &d.main_rates);
    t.rates("sandbox of 2", &d.busy.rates);

    t.line("");
    let rate_per_hour = f64::from(CRM_RATE * 60);
    let share = |per_hour: f64| {
        format!(
            "{per_hour:.0}/h = {:.1} % of {}/h",
            per_hour / rate_per_hour * 100.0,
            thousands(CRM_RATE as usize * 60)
        )
    };
    match &d.quiet {
        Some(q) => {
            let per_hour = q.crm_requests as f64 * 60.0 / f64::from(q.minutes);
            t.line(format!(
                "3. quiet daemon, {} linked, cron every {CRON_MINUTES} min, quick_cron every minute: \
                 {} CRM requests in {} min from a fire time ({} sweeps, {} quick cycles)",
                thousands(q.customers),
                q.crm_requests,
                q.minutes,
                q.sweeps,
                q.quick_cycles,
            ));
            t.line(format!(
                "   extrapolated ×{:.0}: {}",
                60.0 / f64::from(q.minutes),
                share(per_hour)
            ));
            t.rates("sandbox, part 3", &q.rates);
        }
        None => t.line("3. quiet daemon: skipped (BENCH_SCALE_QUIET_MINUTES=0)"),
    }
    // Part 2's farm, on the same default schedule, is not quiet, but its edits' share is known.
    let b = &d.busy;
    let per_hour = |n: usize| n as f64 * 60.0 / b.minutes.max(1e-9);
    t.line(format!(
        "   part 2's daemon, {} linked, same schedule, {} FarmFlow edits (≈ 3 CRM requests each): {} CRM requests in {:.1} min \
         from its second minute ({} list pages, {} reads, {} updates, {} other) → {}; less the edits' ≈ {}",
        thousands(b.customers),
        b.edits,
        b.total(),
        b.minutes,
        b.list,
        b.reads,
        b.updates,
        b.other,
        share(per_hour(b.total())),
        share(per_hour(b.total().saturating_sub(3 * b.edits))),
    ));

    let mut stops = vec![("1", d.main_stopped), ("2", d.busy.stopped)];
    if let Some(q) = &d.quiet {
        stops.push(("3", q.stopped));
    }
    let stops: Vec<String> = stops
        .iter()
        .map(|(name, s)| {
            format!(
                "{name}: {} in {:.1} s{}",
                if s.drained { "drained" } else { "NOT drained" },
                s.took.as_secs_f64(),
                if s.sweep_running {
                    ", a run left unfinished"
                } else {
                    ""
                }
            )
        })
        .collect();
    t.line(format!("   daemons' stop: {}", stops.join("; ")));

    t.line("");
    t.line(format!(
        "{:<46} {:>7} {:>7} {:>6} {:>9} {:>9} {:>9}",
        "4. one cycle (engine, own process, no limiter)",
        "CRM req",
        "FF req",
        "writes",
        "cpu",
        "wall",
        "peak RSS"
    ));
    for r in &f.costs {
        t.line(format!(
            "{:<46} {:>7} {:>7} {:>6} {:>7.3} s {:>7.3} s {:>5.1} MiB",
            format!(
                "{:>6} linked, {} — {}",
                thousands(r.customers),
                r.kind,
                r.pending
            ),
            r.cost.kounta,
            r.cost.farmflow,
            r.cost.writes,
            r.cost.cpu.as_secs_f64(),
            r.cost.wall.as_secs_f64(),
            r.cost.peak_rss_kib as f64 / 1024.0
        ));
    }
    t.line(format!(
        "   (verification budget from {CRM_RATE}/min; the company lookup is made before each measured run)"
    ));
    t.line("");
    t.line(format!(
        "BENCH_SCALE_CUSTOMERS={} BENCH_SCALE_EDITS={} BENCH_SCALE_FF_EDITS={} \
         BENCH_SCALE_QUIET_CUSTOMERS={} BENCH_SCALE_QUIET_MINUTES={}; wall time {:.1} min",
        knobs.customers,
        knobs.edits,
        knobs.ff_edits,
        knobs.quiet_customers,
        knobs.quiet_minutes,
        wall.as_secs_f64() / 60.0
    ));
    println!("{}", t.lines.join("\n"));
    let _ = std::io::stdout().flush();
    t.missed
}
