//! The commands that talk to the APIs: `sync`, `check`, `run`, `webhooks`. Each shares the
//! APIs' rates with every other farmsync on the state DB through its request ledger.
//!
//! Owns putting a command together — settings to clients, the engine, the lock, the request
//! ledger — and its report. The rules of the sync stay in [`crate::sync`], the cycle loop in
//! [`crate::daemon`]; this module holds no SQL and no request of its own.

use std::sync::Arc;

use crate::config::{KountaAuthMode, Needs, Settings};
use crate::exit::{CliError, Exit};
use crate::farmflow::client::FarmflowClient;
use crate::http::{Api, ApiError, RetryPolicy};
use crate::kounta::auth::{MemoryTokenStore, TokenStore};
use crate::kounta::client::KountaClient;
use crate::lock::InstanceLock;
use crate::ratelimit::GrantLedger;
use crate::store::{SharedStore, Store};
use crate::sync::engine::{self, Engine, Outcome, RunOptions, RunReport};
use crate::telemetry::LogFormat;

/// A tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Exit::Unavailable, format!("cannot start the runtime: {e}")))
}

/// Takes the single-instance lock, or exits 4 naming the holder.
pub fn take_lock(settings: &Settings) -> Result<InstanceLock, CliError> {
    InstanceLock::acquire(&settings.state.path)
        .map_err(|e| CliError::new(Exit::Unavailable, e.to_string()))
}

/// Opens the state DB for writing; a DB from a newer farmsync is a config problem (exit 2).
pub fn open_store(settings: &Settings) -> Result<Store, CliError> {
    Store::open(&settings.state.path).map_err(|e| match e {
        crate::store::StoreError::TooNew { .. } => CliError::new(Exit::Config, e.to_string()),
        other => CliError::new(Exit::Unavailable, other.to_string()),
    })
}

/// Opens the state DB read-only, for a command that only reads it (`status`, `check`,
/// `sync --dry-run`, listings): it is never created nor migrated. No DB yet exits 1 ("farmsync
/// has not run yet"); a DB older or newer than this farmsync exits 2, saying what to do (an
/// older one: run `farmsync sync` or restart the service, which upgrade it); any other failure
/// to read it exits 4.
pub fn open_store_read_only(settings: &Settings) -> Result<Store, CliError> {
    use crate::store::StoreError;
    Store::open_read_only(&settings.state.path).map_err(|e| match e {
        StoreError::Missing(_) => CliError::new(Exit::Failed, e.to_string()),
        StoreError::TooNew { .. } | StoreError::NeedsMigration { .. } => {
            CliError::new(Exit::Config, e.to_string())
        }
        other => CliError::new(Exit::Unavailable, other.to_string()),
    })
}

/// [`open_store_read_only`] for a command that works without a state DB (`check`, a dry run):
/// `None` when there is none yet.
pub fn open_store_read_only_if_present(settings: &Settings) -> Result<Option<Store>, CliError> {
    if !settings.state.path.exists() {
        return Ok(None);
    }
    open_store_read_only(settings).map(Some)
}

/// `farmsync sync`.
pub fn sync(
    settings: &Settings,
    dry_run: bool,
    allow_mass_delete: bool,
    format: LogFormat,
) -> Result<Exit, CliError> {
    settings.require_credentials(Needs::BothApis)?;
    let _lock = take_lock(settings)?;
    let engine = if dry_run {
        // A dry run only reads the state DB: opened read-only, never created nor migrated
        // (with none yet, it plans against an empty store). Its limiters count the other
        // processes' requests and record none. The one write is a refresh token Kounta rotated
        // during the run, kept in the state DB (created for it if need be), or farmsync would
        // be locked out.
        let store = match open_store_read_only_if_present(settings)? {
            Some(store) => store,
            None => Store::open_in_memory()
                .map_err(|e| CliError::new(Exit::Unavailable, e.to_string()))?,
        };
        let tokens = Arc::new(crate::store::DbTokens::new(&settings.state.path));
        Engine::from_settings_with_tokens(
            settings,
            SharedStore::new(store),
            tokens,
            allow_mass_delete,
        )
    } else {
        Engine::from_settings(
            settings,
            SharedStore::new(open_store(settings)?),
            allow_mass_delete,
        )
    }
    .map_err(|e| CliError::new(Exit::Config, e.to_string()))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let options = RunOptions {
        dry_run,
        allow_mass_delete,
        // SIGTERM or SIGINT (a stopped timer unit, Ctrl-C) ends every wait at once; the write
        // in flight finishes and is settled, and the rest waits for the next run.
        cancel: Some(stop.clone()),
        kind: crate::sync::engine::CycleKind::Sweep,
        writer: None,
    };
    let show_progress =
        format == LogFormat::Pretty && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let rt = runtime()?;
    let signals = rt.block_on(async { StopSignals::install() })?;
    // Metrics, healthcheck pings and health announcements (`[metrics]`, `[alerts]`); a dry
    // run has none.
    let observer = match dry_run {
        true => crate::observe::RunObserver::disabled(),
        false => {
            let _runtime = rt.enter();
            crate::observe::RunObserver::new(settings, engine.store.clone())
        }
    };
    let report = rt.block_on(async {
        tokio::spawn(signals.watch(stop));
        if !show_progress {
            return observer
                .observe(engine::CycleKind::Sweep, engine.run_once(options))
                .await;
        }
        let run = observer.observe(engine::CycleKind::Sweep, engine.run_once(options));
        tokio::pin!(run);
        let started = std::time::Instant::now();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                report = &mut run => {
                    eprint!("\r\x1b[2K");
                    break report;
                }
                _ = tick.tick() => {
                    // Long runs (a first sync of thousands, a tight rate limit) show they move.
                    eprint!(
                        "\r\x1b[2Ksyncing… {} s, {} CRM and {} FarmFlow requests so far",
                        started.elapsed().as_secs(),
                        engine.kounta.counts().total(),
                        engine.farmflow.counts().total()
                    );
                }
            }
        }
    });
    // The last ping and announcement go out before farmsync exits (each is bounded).
    rt.block_on(observer.close(crate::alerts::TIMEOUT * 2 + std::time::Duration::from_secs(1)));
    if dry_run {
        print_plan(&report, format);
    } else {
        print_summary(&report);
    }
    match &report.outcome {
        Outcome::Unavailable(message) => Err(CliError::new(Exit::Unavailable, message.clone())),
        Outcome::Guarded => {
            crate::telemetry::hint(
                "the safety guard stopped every delete, tag, unlink and recreation; check why \
                 so many records are missing, then rerun with --allow-mass-delete if the \
                 deletions are real",
            );
            Ok(Exit::Guard)
        }
        Outcome::Partial => Ok(Exit::Failed),
        Outcome::Applied => Ok(Exit::Ok),
    }
}

fn print_summary(report: &RunReport) {
    let s = &report.summary;
    println!(
        "sync {}: {} created, {} updated, {} deleted, {} linked, {} blocked, {} conflicts, {} failed, {} skipped ({} CRM and {} FarmFlow requests)",
        report.run_id,
        s.created,
        s.updated,
        s.deleted,
        s.linked,
        s.blocked,
        s.conflicts,
        s.failed,
        s.skipped,
        s.kounta_requests,
        s.farmflow_requests
    );
    if let Some(cut) = &report.listing_cut {
        println!(
            "the CRM listing is incomplete ({cut}): no deletions were inferred and nothing was created in the CRM"
        );
    }
}

fn print_plan(report: &RunReport, format: LogFormat) {
    let Some(plan) = &report.plan else {
        return;
    };
    if format == LogFormat::Json {
        let value = serde_json::json!({
            "run_id": report.run_id,
            "dry_run": true,
            "exit_code": report.outcome.exit_code(),
            "unsettled_intents": report.unsettled,
            "plan": plan,
        });
        println!("{value}");
        return;
    }
    println!("dry run {} — nothing was written", report.run_id);
    if report.unsettled > 0 {
        println!(
            "{} unsettled writes from an earlier run would be looked up first",
            report.unsettled
        );
    }
    if let Some(guard) = &plan.guard {
        println!(
            "SAFETY GUARD: {} planned deletions of {} links ({:?}); a real run would stop every destructive action and exit 3",
            guard.planned_deletions, guard.live_links, guard.reason
        );
    }
    let rows: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| !matches!(a, crate::sync::action::Action::Refresh { .. }))
        .collect();
    if rows.is_empty() {
        println!("nothing to do: both sides agree");
    } else {
        println!("{:<18} {:<22} what", "action", "subject");
        for a in rows {
            println!(
                "{:<18} {:<22} {}",
                a.kind(),
                a.subject().to_string(),
                a.describe()
            );
            // Values are shown to the operator here; the logs never carry contacts at info.
            for c in a.changes() {
                println!(
                    "{:<41}   {:<13} {} → {}",
                    "",
                    c.field,
                    shown(&c.before),
                    shown(&c.after)
                );
            }
            if let crate::sync::action::Action::Conflict(c) = a {
                println!(
                    "{:<41}   crm {}  |  farmflow {}",
                    "",
                    shown(&c.kounta_value),
                    shown(&c.farmflow_value)
                );
            }
        }
    }
    for a in &plan.attention {
        println!("needs attention: {}", a.detail);
    }
    let c = plan.counts;
    println!(
        "would create {}, update {}, delete {}, tag {}, unlink {}, link {}, block {}, queue {} for approval; {} conflicts, {} skipped",
        c.kounta_creates + c.farmflow_creates + c.recreated,
        c.kounta_updates + c.farmflow_updates,
        c.farmflow_deletes,
        c.tagged,
        c.unlinked,
        c.linked,
        c.blocked,
        c.queued,
        c.conflicts,
        c.skipped
    );
}

/// A value as the terminal shows it: quoted, `(empty)` for none.
fn shown(value: &str) -> String {
    if value.is_empty() {
        "(empty)".to_owned()
    } else {
        format!("{value:?}")
    }
}

/// `farmsync check`: reads the state DB (if any) read-only and never migrates it — an older
/// one exits 2, saying how to upgrade it.
pub fn check(settings: &Settings) -> Result<Exit, CliError> {
    settings.require_credentials(Needs::BothApis)?;
    let state = open_store_read_only_if_present(settings)?;
    println!("config: ok");
    let rt = runtime()?;
    // With OAuth a check may have to refresh, which rotates the refresh token: it then needs
    // the lock; while a daemon holds it, the stored access token is tried first.
    let (tokens, lock) = oauth_tokens_read_only(settings, &rt)?;
    // Beside a daemon or a sync, the check's requests wait for the rate's room and are
    // recorded in the request ledger, so the others count them too: the rate holds across
    // processes. That row is all a check ever writes; the state DB is at the current schema
    // (it was opened read-only above), so nothing is migrated.
    let ledger = state.and_then(|_| command_ledger(settings));
    let kounta = KountaClient::new(engine::kounta_options(settings), tokens).map(|c| {
        let c = c
            .with_retry_policy(RetryPolicy::none())
            .with_rate_limiter(engine::rate_limiter(
                Api::Kounta,
                settings.kounta.requests_per_minute,
                ledger.as_ref(),
            ));
        beside_the_lock_holder(settings, &lock, c)
    });
    let farmflow = FarmflowClient::new(engine::farmflow_options(settings)).map(|c| {
        c.with_retry_policy(RetryPolicy::none())
            .with_rate_limiter(engine::rate_limiter(
                Api::Farmflow,
                settings.farmflow.requests_per_minute,
                ledger.as_ref(),
            ))
    });
    // A failure the config causes (a key that cannot be sent as a header) is exit 2, whatever
    // the other API said; an API unreachable or refusing the credentials is exit 4.
    let mut failed: Option<Exit> = None;
    let mut report = |label: &str, result: Result<String, ApiError>| match result {
        Ok(detail) => println!("{label}: ok — {detail}"),
        Err(e) => {
            let config = matches!(e, ApiError::Config { .. });
            failed = Some(if config || failed == Some(Exit::Config) {
                Exit::Config
            } else {
                Exit::Unavailable
            });
            println!("{label}: FAILED — {e}");
        }
    };
    let k = rt.block_on(async {
        match &kounta {
            Ok(client) => {
                note_a_full_window("kounta", client.limiter()).await;
                let checked = client.check().await.map(|r| r.detail);
                client.limiter().release().await;
                checked
            }
            Err(e) => Err(e.clone()),
        }
    });
    report("kounta", k);
    let f = rt.block_on(async {
        match &farmflow {
            Ok(client) => {
                note_a_full_window("farmflow", client.limiter()).await;
                let checked = client.check().await.map(|r| r.detail);
                client.limiter().release().await;
                checked
            }
            Err(e) => Err(e.clone()),
        }
    });
    report("farmflow", f);
    Ok(failed.unwrap_or(Exit::Ok))
}

/// The state DB's request ledger, for a command that may run beside a daemon or right after a
/// sync (`check`, `webhooks`): `None` when there is no state DB yet. Creates nothing — run by
/// another user, it would leave a state DB the daemon cannot open.
pub(crate) fn command_ledger(settings: &Settings) -> Option<Arc<dyn GrantLedger>> {
    let path = &settings.state.path;
    if !path.exists() {
        return None;
    }
    match engine::request_ledger(path) {
        Ok(ledger) => Some(ledger),
        Err(e) => {
            // The rate still holds within this command.
            tracing::warn!(error = %e, "http.ratelimit.unshared");
            None
        }
    }
}

/// Says so when the other farmsync processes used the whole window: the command waits for a
/// free request rather than doubling the rate.
async fn note_a_full_window(label: &str, limiter: &crate::ratelimit::RateLimiter) {
    if limiter.is_shared() && limiter.recent_shared().await >= limiter.limit() {
        println!(
            "{label}: waiting for a free request — farmsync on this state DB used the last minute's {}",
            limiter.limit()
        );
    }
}

/// `farmsync demo`.
pub fn demo(format: LogFormat) -> Result<Exit, CliError> {
    crate::telemetry::init(format, "error", Vec::new());
    let report = runtime()?
        .block_on(crate::demo::run())
        .map_err(|e| CliError::new(Exit::Unavailable, e.to_string()))?;
    print!("{report}");
    Ok(Exit::Ok)
}

/// `farmsync sandbox`: serves the two fakes, printing their URLs and credentials and a complete
/// config for them (or writing it to `write_config`), until Ctrl-C.
pub fn sandbox(
    kounta_port: u16,
    farmflow_port: u16,
    seed_data: Option<&std::path::Path>,
    write_config: Option<&std::path::Path>,
    format: LogFormat,
) -> Result<Exit, CliError> {
    crate::telemetry::init(format, "info", Vec::new());
    let data = match seed_data {
        Some(path) => crate::sandbox::load_seed_data(path)
            .map_err(|e| CliError::new(Exit::Config, e.to_string()))?,
        None => crate::sandbox::sample_farm(),
    };
    if let Some(path) = write_config {
        crate::ops::may_write_sandbox_config(path)?;
    }
    // The sandbox's state DB lives as long as the sandbox: a new one starts with new ids.
    let state = tempfile::Builder::new()
        .prefix("farmsync-sandbox-")
        .tempdir()
        .map_err(|e| {
            CliError::new(
                Exit::Unavailable,
                format!("cannot make a state directory: {e}"),
            )
        })?;
    let state_path = state.path().join("farmsync.db");
    let options = crate::sandbox::SandboxOptions {
        kounta_port,
        farmflow_port,
        ..crate::sandbox::SandboxOptions::default()
    };
    let announce = |sandbox: &crate::sandbox::Sandbox| {
        println!("{}", sandbox.banner());
        let config = sandbox.config_toml(&state_path);
        match write_config {
            Some(path) => {
                crate::ops::write_sandbox_config(path, &config)?;
                println!(
                    "config written to {0}: try farmsync --config {0} check",
                    path.display()
                );
            }
            None => print!("{config}"),
        }
        use std::io::Write;
        std::io::stdout().flush()
    };
    let rt = runtime()?;
    // Ctrl-C or SIGTERM: either way the state directory goes with the sandbox. Caught from
    // before the sandbox announces itself, so a stop right after is as clean.
    let signals = rt.block_on(async { StopSignals::install() })?;
    rt.block_on(crate::sandbox::serve_with(
        options,
        data,
        announce,
        async move {
            let mut signals = signals;
            signals.next().await;
        },
    ))
    .map_err(|e| CliError::new(Exit::Unavailable, format!("cannot serve the sandbox: {e}")))?;
    drop(state);
    Ok(Exit::Ok)
}

/// `farmsync run`: the daemon, until SIGTERM or SIGINT (a second one exits at once).
pub fn run(settings: &Settings) -> Result<Exit, CliError> {
    settings.require_credentials(Needs::BothApis)?;
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        // Handlers are installed before anything starts, so an early SIGTERM is a clean stop,
        // not the default instant death.
        let signals = StopSignals::install()?;
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(signals.watch(stop.clone()));
        crate::daemon::run_daemon(
            settings,
            crate::daemon::DaemonOptions::default(),
            stop.cancelled_owned(),
        )
        .await
        .map_err(|e| CliError::new(e.exit(), e.to_string()))
    });
    // A request abandoned at the drain deadline may still hold a blocking thread: do not wait
    // for it (its journal entry is looked up at the next start).
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(outcome?.exit())
}

/// SIGTERM and SIGINT, caught.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let failed = |e: std::io::Error| {
            CliError::new(Exit::Unavailable, format!("cannot catch signals: {e}"))
        };
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).map_err(failed)?,
            int: signal(SignalKind::interrupt()).map_err(failed)?,
        })
    }

    async fn next(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.term.recv() => ("SIGTERM", 143),
            _ = self.int.recv() => ("SIGINT", 130),
        }
    }

    /// The first signal asks for a clean stop; the second exits at once.
    async fn watch(mut self, stop: tokio_util::sync::CancellationToken) {
        let (first, _) = self.next().await;
        tracing::info!(signal = first, "daemon.signal");
        stop.cancel();
        let (second, code) = self.next().await;
        tracing::warn!(signal = second, "daemon.signal.forced");
        std::process::exit(code);
    }
}

/// What `farmsync webhooks` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum WebhooksAction {
    /// Register the three topics at `<public_url>/webhooks/kounta/customers/<topic>`; running it
    /// again changes nothing.
    Register,
    /// List the CRM's webhook registrations, marking farmsync's own.
    List,
    /// Remove farmsync's registrations (those at this config's addresses).
    Remove,
}

/// `farmsync webhooks register|list|remove`.
pub fn webhooks(settings: &Settings, action: WebhooksAction) -> Result<Exit, CliError> {
    if action == WebhooksAction::Register && !settings.webhooks.enabled {
        return Err(CliError::new(
            Exit::Config,
            "webhooks.enabled is false, so nothing would receive the deliveries: set [webhooks] enabled = true (and restart farmsync run) before registering",
        ));
    }
    settings.require_credentials(Needs::Webhooks)?;
    let rt = runtime()?;
    let (tokens, lock) = oauth_tokens(settings, &rt)?;
    let client = KountaClient::new(engine::kounta_options(settings), tokens)
        .map_err(|e| CliError::new(Exit::Config, e.to_string()))?
        .with_rate_limiter(engine::rate_limiter(
            Api::Kounta,
            settings.kounta.requests_per_minute,
            command_ledger(settings).as_ref(),
        ));
    let client = beside_the_lock_holder(settings, &lock, client);
    rt.block_on(async {
        let done = match action {
            WebhooksAction::Register => webhooks_register(settings, &client).await,
            WebhooksAction::List => webhooks_list(settings, &client).await,
            WebhooksAction::Remove => webhooks_remove(settings, &client).await,
        };
        client.limiter().release().await;
        done
    })
}

/// A client for a command that did not get the lock (OAuth only): it never refreshes.
pub(crate) fn beside_the_lock_holder(
    settings: &Settings,
    lock: &Option<InstanceLock>,
    client: KountaClient,
) -> KountaClient {
    if settings.kounta.auth == KountaAuthMode::Oauth && lock.is_none() {
        client.without_refresh()
    } else {
        client
    }
}

/// The token store for a command other than `sync`/`run` (`check`, `webhooks`). With OAuth a
/// refresh rotates the refresh token, so it needs the lock; while a daemon holds it, the stored
/// access token is used if it is still good, else the command exits 4.
pub(crate) fn oauth_tokens(
    settings: &Settings,
    rt: &tokio::runtime::Runtime,
) -> Result<(Arc<dyn TokenStore>, Option<InstanceLock>), CliError> {
    if settings.kounta.auth == KountaAuthMode::Basic {
        return Ok((Arc::new(MemoryTokenStore::new()), None));
    }
    match take_lock(settings) {
        Ok(lock) => Ok((
            Arc::new(SharedStore::new(open_store(settings)?)),
            Some(lock),
        )),
        Err(held) => {
            let store: Arc<dyn TokenStore> = Arc::new(SharedStore::new(open_store(settings)?));
            without_a_refresh(settings, rt, &store, &held)?;
            Ok((store, None))
        }
    }
}

/// With the lock held elsewhere, the stored access token serves only while it needs no refresh
/// (a refresh rotates the refresh token, which only the lock holder may do): else exit 4.
fn without_a_refresh(
    settings: &Settings,
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn TokenStore>,
    held: &CliError,
) -> Result<(), CliError> {
    let probe = KountaClient::new(engine::kounta_options(settings), store.clone())
        .map_err(|e| CliError::new(Exit::Config, e.to_string()))?;
    let needs = rt
        .block_on(probe.needs_refresh())
        .map_err(|e| CliError::new(Exit::Unavailable, e.to_string()))?;
    if needs {
        return Err(CliError::new(
            Exit::Unavailable,
            format!(
                "{}; the Kounta token needs a refresh, which only the lock holder may do — try again while the daemon is running a sync, or stop it",
                held.message
            ),
        ));
    }
    Ok(())
}

/// [`oauth_tokens`] for `check`, which only reads the state DB: tokens are read read-only, and
/// a rotated one (a refresh with the lock held) is kept through [`crate::store::DbTokens`],
/// which never migrates the DB.
fn oauth_tokens_read_only(
    settings: &Settings,
    rt: &tokio::runtime::Runtime,
) -> Result<(Arc<dyn TokenStore>, Option<InstanceLock>), CliError> {
    if settings.kounta.auth == KountaAuthMode::Basic {
        return Ok((Arc::new(MemoryTokenStore::new()), None));
    }
    let store: Arc<dyn TokenStore> = Arc::new(crate::store::DbTokens::new(&settings.state.path));
    match take_lock(settings) {
        Ok(lock) => Ok((store, Some(lock))),
        Err(held) => {
            without_a_refresh(settings, rt, &store, &held)?;
            Ok((store, None))
        }
    }
}

fn webhook_error(e: ApiError) -> CliError {
    match e {
        ApiError::Validation { .. } => CliError::new(
            Exit::Config,
            format!("{e} — check webhooks.public_url (Kounta must be able to reach it)"),
        ),
        ApiError::OutcomeUnknown { .. } => CliError::new(
            Exit::Unavailable,
            format!("{e}; run `farmsync webhooks register` again: it only adds what is missing"),
        ),
        other => CliError::new(Exit::Unavailable, other.to_string()),
    }
}

async fn webhooks_register(settings: &Settings, client: &KountaClient) -> Result<Exit, CliError> {
    use crate::webhook::{SECRET_HEADER, address, plan_registration};
    use secrecy::ExposeSecret;
    let public_url = &settings.webhooks.public_url;
    if public_url.host().is_some_and(|h| {
        matches!(h, url::Host::Ipv4(ip) if ip.is_loopback() || ip.is_unspecified())
            || matches!(h, url::Host::Ipv6(ip) if ip.is_loopback() || ip.is_unspecified())
            || matches!(h, url::Host::Domain("localhost"))
    }) {
        crate::telemetry::hint(&format!(
            "note: webhooks.public_url is {public_url}, which a hosted CRM cannot reach; set it to the address Kounta should post to"
        ));
    }
    let secret = &settings.webhooks.shared_secret;
    let existing = client.webhooks().await.map_err(webhook_error)?;
    let plan = plan_registration(&existing, public_url, secret.expose_secret());
    for (topic, id) in &plan.present {
        println!("{topic}: already registered (webhook {id})");
    }
    for (topic, id) in &plan.unverified {
        println!(
            "{topic}: registered (webhook {id}); the CRM does not show its headers, so the shared secret cannot be checked — if you changed webhooks.shared_secret, run `farmsync webhooks remove` then `register`"
        );
    }
    for topic in &plan.create {
        let at = address(public_url, *topic);
        let created = client
            .register_webhook(topic.kounta_name(), &at, SECRET_HEADER, secret)
            .await
            .map_err(webhook_error)?;
        println!("{topic}: registered at {at} (webhook {})", created.id);
    }
    for (topic, id) in &plan.remove {
        if client.remove_webhook(*id).await.map_err(webhook_error)? {
            println!("{topic}: removed the outdated registration {id}");
        }
    }
    Ok(Exit::Ok)
}

async fn webhooks_list(settings: &Settings, client: &KountaClient) -> Result<Exit, CliError> {
    use crate::webhook::{SECRET_HEADER, Topic, address, same_address};
    use secrecy::ExposeSecret;
    let public_url = &settings.webhooks.public_url;
    let existing = client.webhooks().await.map_err(webhook_error)?;
    if existing.is_empty() {
        println!("no webhooks are registered");
    }
    for w in &existing {
        let ours = Topic::from_kounta_name(&w.topic)
            .is_some_and(|t| same_address(&w.address, &address(public_url, t)));
        // Never print the secret itself.
        let note = match (ours, w.headers.is_some(), w.header(SECRET_HEADER)) {
            (false, _, _) => "not this farmsync's",
            (true, false, _) => "farmsync's (the CRM does not show the secret)",
            (true, true, Some(s)) if s == settings.webhooks.shared_secret.expose_secret() => {
                "farmsync's, secret matches"
            }
            (true, true, _) => {
                "farmsync's, but the secret differs: deliveries will be refused — run `farmsync webhooks register`"
            }
        };
        println!("{:<8} {:<20} {}  [{note}]", w.id, w.topic, w.address);
    }
    for topic in Topic::ALL {
        let at = address(public_url, topic);
        if !existing
            .iter()
            .any(|w| w.topic == topic.kounta_name() && same_address(&w.address, &at))
        {
            println!("missing: {topic} at {at}");
        }
    }
    Ok(Exit::Ok)
}

async fn webhooks_remove(settings: &Settings, client: &KountaClient) -> Result<Exit, CliError> {
    use crate::webhook::{Topic, address, same_address};
    let public_url = &settings.webhooks.public_url;
    let existing = client.webhooks().await.map_err(webhook_error)?;
    let ours: Vec<_> = existing
        .iter()
        .filter(|w| {
            Topic::ALL
                .iter()
                .any(|t| same_address(&w.address, &address(public_url, *t)))
        })
        .collect();
    if ours.is_empty() {
        println!("no farmsync webhooks are registered at {public_url}");
    }
    for w in ours {
        if client.remove_webhook(w.id).await.map_err(webhook_error)? {
            println!("{}: removed webhook {} ({})", w.topic, w.id, w.address);
        }
    }
    Ok(Exit::Ok)
}
