//! What happens around every sync run besides the sync: its metrics are recorded in the state
//! DB and the textfile rewritten, and — around sweeps — healthchecks are pinged and a change
//! of health announced. `farmsync sync` and the daemon's cycles both run through
//! [`RunObserver::observe`]; nothing here can fail or hold up a run (problems are logged at
//! warn), nor change what a run does. The pings and announcements are [`crate::alerts`]'s, the
//! numbers [`crate::metrics`]'s; this module only ties them to each run.
//!
//! Only sweeps ping and judge health: quick cycles run every minute beside them, and would
//! blur a check's durations and make health flap between a failed sweep and a clean quick
//! cycle.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::alerts::{Alerts, Health, Ping};
use crate::config::Settings;
use crate::http::StatusCounts;
use crate::metrics::{self, Snapshot, WebhookCounts};
use crate::store::{RunRecord, SharedStore, StoreError};
use crate::sync::engine::{CycleKind, RunReport};

struct Inner {
    store: SharedStore,
    textfile: Option<PathBuf>,
    webhooks: Arc<WebhookCounts>,
    alerts: Option<Alerts>,
    cron: String,
}

/// Records, reports and announces each run of one farmsync process. Cheap to clone.
#[derive(Clone)]
pub struct RunObserver(Option<Arc<Inner>>);

impl std::fmt::Debug for RunObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunObserver")
    }
}

impl RunObserver {
    /// An observer for runs on `store` as `settings` ask. Must be called within a tokio
    /// runtime (it starts the alerts' task when alerts are configured).
    pub fn new(settings: &Settings, store: SharedStore) -> RunObserver {
        let alerts = Alerts::spawn(
            &settings.alerts,
            store.clone(),
            settings.state.path.display().to_string(),
        );
        RunObserver(Some(Arc::new(Inner {
            store,
            textfile: settings.metrics.textfile.clone(),
            webhooks: Arc::default(),
            alerts,
            cron: settings.schedule.cron.clone(),
        })))
    }

    /// An observer that does nothing (a dry run writes nothing, and pings nobody).
    pub fn disabled() -> RunObserver {
        RunObserver(None)
    }

    /// The webhook delivery counts the metrics show (the daemon's listener adds to them).
    pub fn webhook_counts(&self) -> Arc<WebhookCounts> {
        self.0
            .as_ref()
            .map_or_else(Arc::default, |inner| inner.webhooks.clone())
    }

    /// The metrics as they stand now, in the Prometheus text format.
    pub async fn render(&self) -> Result<String, StoreError> {
        let Some(inner) = &self.0 else {
            return Ok(String::new());
        };
        let webhooks = inner.webhooks.clone();
        let snapshot = inner
            .store
            .call(move |s| Snapshot::read(s, &webhooks))
            .await?;
        Ok(snapshot.encode())
    }

    /// Runs `run` (one engine run of `kind`), then records it: metrics, textfile, and for a
    /// sweep the healthcheck pings and the health judgement.
    pub async fn observe(
        &self,
        kind: CycleKind,
        run: impl Future<Output = RunReport>,
    ) -> RunReport {
        let Some(inner) = &self.0 else {
            return run.await;
        };
        let sweep = kind == CycleKind::Sweep;
        if sweep && let Some(alerts) = &inner.alerts {
            alerts.ping(Ping::Start, String::new());
        }
        let requests = Arc::new(StatusCounts::default());
        let started = Instant::now();
        let report = crate::http::counting_statuses(requests.clone(), run).await;
        if report.dry_run {
            return report;
        }
        let elapsed = started.elapsed();
        self.record(inner, kind, &report, elapsed, requests).await;
        if sweep && let Some(alerts) = &inner.alerts {
            let code = report.outcome.exit_code();
            let ping = if code == 0 { Ping::Success } else { Ping::Fail };
            alerts.ping(ping, ping_body(&report));
            alerts.judge(judge(&report, &inner.cron));
        }
        report
    }

    async fn record(
        &self,
        inner: &Inner,
        kind: CycleKind,
        report: &RunReport,
        elapsed: Duration,
        requests: Arc<StatusCounts>,
    ) {
        let recorded = {
            let report = report.clone();
            inner
                .store
                .call(move |s| metrics::record_run(s, kind, &report, elapsed, &requests))
                .await
        };
        if let Err(e) = recorded {
            warn!(error = %e, "metrics.record.failed");
        }
        if let Some(path) = &inner.textfile {
            let written = match self.render().await {
                Ok(text) => {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || metrics::write_textfile(&path, &text))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
                }
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            if let Err(e) = written {
                warn!(path = %path.display(), error = %e, "metrics.textfile.failed");
            }
        }
        debug!(run_id = %report.run_id, kind = kind.as_str(), "metrics.recorded");
    }

    /// Lets the pings and announcements still queued go out for at most `within`.
    pub async fn close(&self, within: Duration) {
        if let Some(alerts) = self.0.as_ref().and_then(|inner| inner.alerts.as_ref()) {
            alerts.close(within).await;
        }
    }
}

/// What a healthchecks ping carries: the run's one-line outcome and counts, no customer data.
fn ping_body(report: &RunReport) -> String {
    let s = &report.summary;
    format!(
        "farmsync run {}: exit {} ({}); {} created, {} updated, {} deleted, {} linked, {} blocked, {} conflicts, {} failed, {} skipped",
        report.run_id,
        report.outcome.exit_code(),
        metrics::outcome_label(report),
        s.created,
        s.updated,
        s.deleted,
        s.linked,
        s.blocked,
        s.conflicts,
        s.failed,
        s.skipped
    )
}

/// Health as `farmsync status` judges it, on the sweep that just finished.
fn judge(report: &RunReport, cron: &str) -> Health {
    let now = chrono::Local::now();
    let period = crate::schedule::parse(cron)
        .ok()
        .and_then(|c| crate::schedule::period_after(&c, &now));
    let finished = now.timestamp();
    let record = RunRecord {
        run_id: report.run_id.clone(),
        started_at: finished,
        finished_at: Some(finished),
        dry_run: false,
        exit_code: Some(report.outcome.exit_code()),
        summary: None,
    };
    let problems = crate::status::problems(Some(&record), period, finished);
    Health {
        healthy: problems.is_empty(),
        problems,
        run_id: report.run_id.clone(),
    }
}

/// The daemon's metrics endpoint: `GET /metrics` in the Prometheus text format.
pub fn metrics_router(observer: RunObserver) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let observer = observer.clone();
            async move {
                match observer.render().await {
                    Ok(text) => {
                        ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
                    }
                    Err(e) => {
                        warn!(error = %e, "metrics.render.failed");
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("farmsync cannot read its state DB: {e}\n"),
                        )
                            .into_response()
                    }
                }
            }
        }),
    )
}
