//! The commands that talk to the APIs: `sync` and `check`.

use std::sync::Arc;

use crate::cli::{CliError, Exit};
use crate::config::{KountaAuthMode, Needs, Settings};
use crate::farmflow::client::FarmflowClient;
use crate::http::{ApiError, RetryPolicy};
use crate::kounta::auth::{MemoryTokenStore, TokenStore};
use crate::kounta::client::KountaClient;
use crate::lock::InstanceLock;
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

/// `farmsync sync`.
pub fn sync(
    settings: &Settings,
    dry_run: bool,
    allow_mass_delete: bool,
    format: LogFormat,
) -> Result<Exit, CliError> {
    settings.require_credentials(Needs::BothApis)?;
    let _lock = take_lock(settings)?;
    // A dry run writes nothing to the state DB, so it does not create one — unless OAuth may
    // rotate the refresh token, which must be stored or farmsync is locked out.
    let store = if dry_run
        && !settings.state.path.exists()
        && settings.kounta.auth == KountaAuthMode::Basic
    {
        Store::open_in_memory().map_err(|e| CliError::new(Exit::Unavailable, e.to_string()))?
    } else {
        open_store(settings)?
    };
    let store = SharedStore::new(store);
    let engine = Engine::from_settings(settings, store, allow_mass_delete)
        .map_err(|e| CliError::new(Exit::Config, e.to_string()))?;
    let report = runtime()?.block_on(engine.run_once(RunOptions {
        dry_run,
        allow_mass_delete,
        cancel: None,
    }));
    if dry_run {
        print_plan(&report, format);
    } else {
        print_summary(&report);
    }
    match &report.outcome {
        Outcome::Unavailable(message) => Err(CliError::new(Exit::Unavailable, message.clone())),
        Outcome::Guarded => {
            eprintln!(
                "farmsync: the safety guard stopped every delete, tag, unlink and recreation; \
                 check why so many records are missing, then rerun with --allow-mass-delete if \
                 the deletions are real"
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
        }
    }
    for a in &plan.attention {
        println!("needs attention: {}", a.detail);
    }
    let c = plan.counts;
    println!(
        "would create {}, update {}, delete {}, tag {}, unlink {}, link {}, block {}; {} conflicts, {} skipped",
        c.kounta_creates + c.farmflow_creates + c.recreated,
        c.kounta_updates + c.farmflow_updates,
        c.farmflow_deletes,
        c.tagged,
        c.unlinked,
        c.linked,
        c.blocked,
        c.conflicts,
        c.skipped
    );
}

/// `farmsync check`.
pub fn check(settings: &Settings) -> Result<Exit, CliError> {
    settings.require_credentials(Needs::BothApis)?;
    println!("config: ok");
    // With OAuth a check may have to refresh, which rotates the refresh token: it must hold
    // the lock and store the new token like any writer.
    let (tokens, _lock): (Arc<dyn TokenStore>, Option<InstanceLock>) = match settings.kounta.auth {
        KountaAuthMode::Basic => (Arc::new(MemoryTokenStore::new()), None),
        KountaAuthMode::Oauth => {
            let lock = take_lock(settings)?;
            (
                Arc::new(SharedStore::new(open_store(settings)?)),
                Some(lock),
            )
        }
    };
    let kounta = KountaClient::new(engine::kounta_options(settings), tokens)
        .map(|c| c.with_retry_policy(RetryPolicy::none()));
    let farmflow = FarmflowClient::new(engine::farmflow_options(settings))
        .map(|c| c.with_retry_policy(RetryPolicy::none()));
    let rt = runtime()?;
    let mut failed = false;
    let mut report = |label: &str, result: Result<String, ApiError>| match result {
        Ok(detail) => println!("{label}: ok — {detail}"),
        Err(e) => {
            failed = true;
            println!("{label}: FAILED — {e}");
        }
    };
    let k = rt.block_on(async {
        match &kounta {
            Ok(client) => client.check().await.map(|r| r.detail),
            Err(e) => Err(e.clone()),
        }
    });
    report("kounta", k);
    let f = rt.block_on(async {
        match &farmflow {
            Ok(client) => client.check().await.map(|r| r.detail),
            Err(e) => Err(e.clone()),
        }
    });
    report("farmflow", f);
    Ok(if failed { Exit::Unavailable } else { Exit::Ok })
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

/// `farmsync sandbox`.
pub fn sandbox(
    kounta_port: u16,
    farmflow_port: u16,
    seed_data: Option<&std::path::Path>,
    format: LogFormat,
) -> Result<Exit, CliError> {
    crate::telemetry::init(format, "info", Vec::new());
    let data = match seed_data {
        Some(path) => crate::sandbox::load_seed_data(path)
            .map_err(|e| CliError::new(Exit::Config, e.to_string()))?,
        None => crate::sandbox::sample_farm(),
    };
    let options = crate::sandbox::SandboxOptions {
        kounta_port,
        farmflow_port,
        ..crate::sandbox::SandboxOptions::default()
    };
    runtime()?
        .block_on(crate::sandbox::serve(options, data, async {
            let _ = tokio::signal::ctrl_c().await;
        }))
        .map_err(|e| CliError::new(Exit::Unavailable, format!("cannot serve the sandbox: {e}")))?;
    Ok(Exit::Ok)
}
