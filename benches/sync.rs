//! The sync engine's costs against the sandbox, on loopback only and bounded in time.
//!
//! `cargo bench --bench sync` (add `--profile dev` for a debug build). The sandboxes run in a
//! child process and every measured run in a child process of its own (this binary again), so
//! the CPU time and peak memory of each row are that farmsync run's alone. Prints one table:
//!
//! - (a) a no-op reconcile of 10,000 linked customers: writes (must be 0), requests (list calls
//!   plus the verification budget), CPU time (getrusage) and wall time;
//! - (b) an initial sync of 2,000 + 2,000 customers with 1,000 on both sides: requests used ÷
//!   the minimum needed; and the same under a rate limit: wall time ÷ (requests ÷ rate);
//! - (c) the no-op reconcile done naively (every CRM record read every run), for comparison.

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use farmsync::config::Settings;
use farmsync::farmflow::client::FarmflowClient;
use farmsync::http::RateLimiter;
use farmsync::kounta::client::KountaClient;
use farmsync::sandbox::{
    FarmflowRecord, KountaRecord, KountaRecordAddress, SampleData, Sandbox, SandboxOptions,
};
use farmsync::store::{SharedStore, Store};
use farmsync::sync::engine::{
    DEFAULT_MAX_VERIFY_AGE_SECS, Engine, Outcome, RunOptions, farmflow_options, kounta_options,
};

/// Linked customers of the no-op reconcile.
const LINKED: usize = 10_000;
/// Customers on each side of the initial sync, and how many of them are on both.
const INITIAL_EACH: usize = 2_000;
const INITIAL_BOTH: usize = 1_000;
/// The CRM rate the no-op reconcile budgets against (requests a minute).
const NOOP_RATE: u32 = 1_000;
/// The rate limit of the throttled initial sync: this many requests per window, per API (250 a
/// second, below the engine's own pace, so the limiter sets it). The window is long enough
/// that the limiter's safety margin (a quarter second a window) costs little.
const THROTTLE_LIMIT: u32 = 2_500;
const THROTTLE_WINDOW: Duration = Duration::from_secs(10);
/// The sandbox's CRM page size (the real API's).
const PAGE_SIZE: usize = 25;

const ROLE: &str = "FARMSYNC_BENCH_ROLE";

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("sandbox") => serve_sandboxes(),
        Ok("run") => one_run(),
        _ => {
            let mut child = Command::new(std::env::current_exe().expect("own path"))
                .env(ROLE, "sandbox")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("the sandbox process starts");
            let urls = read_urls(&mut child);
            let rows = measure(&urls);
            drop(child.stdin.take());
            let _ = child.wait();
            print_table(&rows);
        }
    }
}

// ----- the sandbox process -------------------------------------------------------------------------

fn address(i: usize) -> KountaRecordAddress {
    KountaRecordAddress {
        address: format!("{i} Orchard Lane"),
        city: "Orange".into(),
        state: "NSW".into(),
        postal_code: "2800".into(),
        country: "AU".into(),
    }
}

fn crm(i: usize, reference_id: String) -> KountaRecord {
    KountaRecord {
        first_name: format!("First{i}"),
        last_name: format!("Last{i}"),
        email: format!("person{i}@example.com"),
        phone: format!("04{i:08}"),
        reference_id,
        primary_address: Some(address(i)),
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

/// `LINKED` people on both sides, the CRM naming each FarmFlow twin in `reference_id`.
fn linked_data() -> SampleData {
    let mut data = SampleData::default();
    for i in 0..LINKED {
        let id = 1_000 + i as i64;
        data.farmflow.push(farm(i, id));
        data.kounta.push(crm(i, format!("farmflow:{id}")));
    }
    data
}

/// `INITIAL_EACH` people on each side, `INITIAL_BOTH` of them the same people, never synced.
fn initial_data() -> SampleData {
    let mut data = SampleData::default();
    let only = INITIAL_EACH - INITIAL_BOTH;
    for i in 0..INITIAL_EACH {
        data.kounta.push(crm(i, String::new()));
    }
    for i in only..only + INITIAL_EACH {
        data.farmflow.push(farm(i, 0));
    }
    data
}

/// Serves the data sets and prints one line per sandbox: `kounta_url farmflow_url`. Stops when
/// the parent closes stdin.
fn serve_sandboxes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut sandboxes = Vec::new();
        for data in [linked_data(), initial_data(), initial_data()] {
            let sb = Sandbox::start(SandboxOptions::default())
                .await
                .expect("sandbox starts");
            sb.kounta().set_page_size(PAGE_SIZE);
            sb.seed(&data).expect("seed data is valid");
            println!("{} {}", sb.kounta_url(), sb.farmflow_url());
            sandboxes.push(sb);
        }
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await;
    });
}

fn read_urls(child: &mut Child) -> Vec<(String, String)> {
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    (0..3)
        .map(|_| {
            let line = lines
                .next()
                .expect("the sandbox process names its URLs")
                .expect("readable");
            let (k, f) = line.split_once(' ').expect("two URLs");
            (k.to_owned(), f.to_owned())
        })
        .collect()
}

// ----- measuring -----------------------------------------------------------------------------------

/// What one run measured, as the `run` child prints it.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    writes: u64,
    requests: u64,
    linked: u64,
    created: u64,
    applied: bool,
    cpu: Duration,
    wall: Duration,
    peak_rss_kib: u64,
}

impl Measured {
    fn to_line(self) -> String {
        format!(
            "{} {} {} {} {} {} {} {}",
            self.writes,
            self.requests,
            self.linked,
            self.created,
            u8::from(self.applied),
            self.cpu.as_micros(),
            self.wall.as_micros(),
            self.peak_rss_kib
        )
    }

    fn parse(line: &str) -> Option<Measured> {
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        let [writes, requests, linked, created, applied, cpu, wall, rss] = v[..] else {
            return None;
        };
        Some(Measured {
            writes,
            requests,
            linked,
            created,
            applied: applied == 1,
            cpu: Duration::from_micros(cpu),
            wall: Duration::from_micros(wall),
            peak_rss_kib: rss,
        })
    }
}

struct Row {
    name: &'static str,
    m: Measured,
    expected: String,
    ratio: Option<(&'static str, f64)>,
}

/// How a `run` child is set up.
struct RunSpec<'a> {
    urls: &'a (String, String),
    state: &'a std::path::Path,
    /// `kounta.requests_per_minute`, which the verification budget is taken from.
    budget_rate: u32,
    /// The clients' limiters: this many requests per window.
    limit: u32,
    window: Duration,
}

const UNLIMITED: (u32, Duration) = (1_000_000, Duration::from_secs(60));

/// Runs one sync in a fresh process (a new `farmsync sync`, as far as memory and CPU go).
fn run_in_child(spec: &RunSpec<'_>) -> Measured {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env(ROLE, "run")
        .env("BENCH_KOUNTA_URL", &spec.urls.0)
        .env("BENCH_FARMFLOW_URL", &spec.urls.1)
        .env("BENCH_STATE", spec.state)
        .env("BENCH_BUDGET_RATE", spec.budget_rate.to_string())
        .env("BENCH_LIMIT", spec.limit.to_string())
        .env("BENCH_WINDOW_MS", spec.window.as_millis().to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("the run process starts");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .and_then(Measured::parse)
        .unwrap_or_else(|| panic!("the run process answered {text:?}"))
}

/// The `run` role: one sync as the parent describes it, measured, printed as one line.
fn one_run() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set"));
    let num = |k: &str| -> u64 { var(k).parse().unwrap_or_else(|_| panic!("{k} is a number")) };
    let urls = (var("BENCH_KOUNTA_URL"), var("BENCH_FARMFLOW_URL"));
    let state = std::path::PathBuf::from(var("BENCH_STATE"));
    let spec = RunSpec {
        urls: &urls,
        state: &state,
        budget_rate: u32::try_from(num("BENCH_BUDGET_RATE")).unwrap_or(u32::MAX),
        limit: u32::try_from(num("BENCH_LIMIT")).unwrap_or(u32::MAX),
        window: Duration::from_millis(num("BENCH_WINDOW_MS")),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let measured = runtime.block_on(async {
        let engine = engine(&spec);
        timed(&engine).await
    });
    println!("{}", measured.to_line());
}

fn settings(urls: &(String, String), state: &std::path::Path, rate: u32) -> Settings {
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
        ("FARMSYNC__FARMFLOW__REQUESTS_PER_MINUTE", rate.to_string()),
    ];
    Settings::builder()
        .env_vars(vars.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .build()
        .expect("bench settings are valid")
}

/// An engine as `Engine::from_settings` builds it, with the spec's limiters.
fn engine(spec: &RunSpec<'_>) -> Engine {
    let settings = settings(spec.urls, spec.state, spec.budget_rate);
    let store = SharedStore::new(Store::open(spec.state).expect("state DB opens"));
    let kounta = KountaClient::new(kounta_options(&settings), Arc::new(store.clone()))
        .expect("crm client")
        .with_rate_limiter(RateLimiter::new(spec.limit, spec.window));
    let farmflow = FarmflowClient::new(farmflow_options(&settings))
        .expect("farmflow client")
        .with_rate_limiter(RateLimiter::new(spec.limit, spec.window));
    Engine {
        kounta,
        farmflow,
        store,
        policy: settings.policy(false),
        kounta_rate: spec.budget_rate,
        max_verify_age_secs: DEFAULT_MAX_VERIFY_AGE_SECS,
        history_keep_days: 90,
        today: None,
    }
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

/// One measured run.
async fn timed(engine: &Engine) -> Measured {
    let (k0, f0) = (engine.kounta.counts(), engine.farmflow.counts());
    let cpu = cpu_time();
    let wall = Instant::now();
    let report = engine.run_once(RunOptions::default()).await;
    let wall = wall.elapsed();
    let cpu = cpu_time() - cpu;
    let (k1, f1) = (engine.kounta.counts(), engine.farmflow.counts());
    assert!(
        !matches!(report.outcome, Outcome::Unavailable(_)),
        "the run could not run: {:?}",
        report.outcome
    );
    Measured {
        writes: (k1.writes - k0.writes) + (f1.writes - f0.writes),
        requests: (k1.total() - k0.total()) + (f1.total() - f0.total()),
        linked: report.summary.linked,
        created: report.summary.created,
        applied: report.outcome == Outcome::Applied,
        cpu,
        wall,
        peak_rss_kib: u64::try_from(rusage().ru_maxrss).unwrap_or(0),
    }
}

fn measure(urls: &[(String, String)]) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    let unlimited = |urls, state| RunSpec {
        urls,
        state,
        budget_rate: UNLIMITED.0,
        limit: UNLIMITED.0,
        window: UNLIMITED.1,
    };

    // (a) Link the 10,000 (a first run: every CRM record is new, so all are read), then a
    // no-op run in a new process.
    let linked_db = dir.path().join("linked.db");
    let setup = run_in_child(&unlimited(&urls[0], &linked_db));
    assert_eq!(setup.linked as usize, LINKED, "setup links everyone");
    assert_eq!((setup.created, setup.writes), (0, 0));
    let pages = LINKED.div_ceil(PAGE_SIZE) as u64;
    // FarmFlow's list, the company lookup and the pages; then the budget: the rate minus the
    // quick cycles' reserve and what the last minute held (the lookup and the pages).
    let list_calls = 1 + 1 + pages;
    let budget = u64::from(NOOP_RATE)
        - u64::from(farmsync::sync::budget::quick_reserve(NOOP_RATE))
        - (list_calls - 1);
    let noop = run_in_child(&RunSpec {
        budget_rate: NOOP_RATE,
        ..unlimited(&urls[0], &linked_db)
    });
    assert!(noop.applied);
    rows.push(Row {
        name: "(a) no-op, 10,000 linked, budgeted",
        m: noop,
        expected: format!("{list_calls} list + {budget} budget"),
        ratio: None,
    });

    // (c) The same no-op, naively: a budget as large as the list, so every record is read.
    let naive = run_in_child(&unlimited(&urls[0], &linked_db));
    assert!(naive.applied);
    rows.push(Row {
        name: "(c) no-op, 10,000 linked, naive",
        m: naive,
        expected: format!("{list_calls} list + {LINKED} reads"),
        ratio: None,
    });

    // (b) The initial sync. The fewest requests it can make: FarmFlow's list and a create for
    // each CRM-only customer; the CRM's company lookup, its pages, a full read of each of its
    // customers (to create or merge them), a create for each FarmFlow-only customer, and a
    // `reference_id` write for each customer matched or created in FarmFlow. A FarmFlow update
    // would add one `customer-get` (an update is made on a fresh read); the matched people agree
    // on every field, so there are none here. No confirming read either: nothing is missing.
    let only = (INITIAL_EACH - INITIAL_BOTH) as u64;
    let minimum = (1 + only)
        + (1 + (INITIAL_EACH.div_ceil(PAGE_SIZE) as u64)
            + INITIAL_EACH as u64
            + only
            + INITIAL_BOTH as u64
            + only);
    let initial = run_in_child(&unlimited(&urls[1], &dir.path().join("initial.db")));
    assert!(initial.applied);
    assert_eq!(initial.linked as usize, INITIAL_BOTH);
    rows.push(Row {
        name: "(b) initial, 2,000 + 2,000",
        m: initial,
        expected: format!("{minimum} minimum"),
        ratio: Some((
            "requests ÷ minimum",
            initial.requests as f64 / minimum as f64,
        )),
    });
    let throttled = run_in_child(&RunSpec {
        urls: &urls[2],
        state: &dir.path().join("throttled.db"),
        budget_rate: UNLIMITED.0,
        limit: THROTTLE_LIMIT,
        window: THROTTLE_WINDOW,
    });
    assert!(throttled.applied);
    let rate = f64::from(THROTTLE_LIMIT) / THROTTLE_WINDOW.as_secs_f64();
    let ideal = throttled.requests as f64 / rate;
    rows.push(Row {
        name: "(b) initial, rate-limited",
        m: throttled,
        expected: format!("{} req/s per API", rate as u64),
        ratio: Some((
            "wall ÷ (requests ÷ rate)",
            throttled.wall.as_secs_f64() / ideal,
        )),
    });
    rows
}

fn print_table(rows: &[Row]) {
    let profile = if cfg!(debug_assertions) {
        "dev (unoptimised, debug assertions on)"
    } else {
        "optimised"
    };
    println!(
        "farmsync sync benchmark — build profile: {profile}; loopback sandbox in its own process; \
         each run in a fresh process"
    );
    println!(
        "{:<36} {:>6} {:>8} {:<26} {:>8} {:>8} {:>9}  ratio",
        "run", "writes", "requests", "expected", "cpu", "wall", "peak RSS"
    );
    for r in rows {
        let ratio = r
            .ratio
            .map(|(what, v)| format!("{what} = {v:.3}"))
            .unwrap_or_default();
        println!(
            "{:<36} {:>6} {:>8} {:<26} {:>7.3}s {:>7.3}s {:>5.1} MiB  {ratio}",
            r.name,
            r.m.writes,
            r.m.requests,
            r.expected,
            r.m.cpu.as_secs_f64(),
            r.m.wall.as_secs_f64(),
            r.m.peak_rss_kib as f64 / 1024.0
        );
    }
}
