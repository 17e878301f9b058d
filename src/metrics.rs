//! Prometheus metrics in the text format (0.0.4): served by `farmsync run` at
//! `[metrics] listen`, and written by `sync` and `run` to `[metrics] textfile` for
//! node_exporter's textfile collector.
//!
//! Owns the metric names, what they add up and their encoding. It reads the store and a run's
//! report; it never calls an API and changes no sync state. [`crate::observe`] calls it after
//! each run.
//!
//! What a run adds up — runs by outcome, accepted writes, requests by status class, the cycle
//! duration histogram — is kept in the state DB (`metric_values`), not in the process: a
//! one-shot `sync` under a timer counts on from where the last one stopped, and a daemon's
//! restart does not reset the counters. Link, conflict and queue gauges are read from the
//! state DB when the metrics are encoded. Webhook deliveries are counted by the daemon that
//! received them, from its start.
//!
//! Every series a family can have is written from the start (at 0), so rules never see a
//! series appear out of nothing. The names are documented in the README ("Metrics").

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::http::{Api, StatusClass, StatusCounts};
use crate::store::{
    LinkState, MetricLabels, MetricOp, MetricUpdate, MetricValue, Store, StoreError,
};
use crate::sync::engine::{CycleKind, Outcome, RunReport};

/// The `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the cycle duration histogram's buckets, in seconds: quick cycles take
/// about a second, a sweep of 10,000 customers at 60 CRM requests a minute about ten minutes.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// `farmsync_runs_total{kind,outcome}`.
pub const RUNS: &str = "farmsync_runs_total";
/// `farmsync_last_run_timestamp_seconds{kind}`.
pub const LAST_RUN: &str = "farmsync_last_run_timestamp_seconds";
/// `farmsync_last_success_timestamp_seconds{kind}`.
pub const LAST_SUCCESS: &str = "farmsync_last_success_timestamp_seconds";
/// `farmsync_records_written_total{side,action}`.
pub const RECORDS_WRITTEN: &str = "farmsync_records_written_total";
/// `farmsync_requests_total{api,status}`.
pub const REQUESTS: &str = "farmsync_requests_total";
/// `farmsync_links{state}`.
pub const LINKS: &str = "farmsync_links";
/// `farmsync_conflicts_open`.
pub const CONFLICTS_OPEN: &str = "farmsync_conflicts_open";
/// `farmsync_deletes_queued`.
pub const DELETES_QUEUED: &str = "farmsync_deletes_queued";
/// `farmsync_webhook_deliveries_total{result}`.
pub const WEBHOOK_DELIVERIES: &str = "farmsync_webhook_deliveries_total";
/// `farmsync_cycle_duration_seconds{kind}` (a histogram).
pub const CYCLE_DURATION: &str = "farmsync_cycle_duration_seconds";

/// The run outcomes, as label values.
pub const OUTCOMES: [&str; 5] = ["ok", "partial", "guarded", "unavailable", "interrupted"];
/// The cycle kinds, as label values.
pub const KINDS: [CycleKind; 2] = [CycleKind::Sweep, CycleKind::Quick];
/// The writes each side can take, as (side, action) label values.
pub const WRITES: [(&str, &str); 7] = [
    ("farmflow", "create"),
    ("farmflow", "update"),
    ("farmflow", "delete"),
    ("kounta", "create"),
    ("kounta", "update"),
    ("kounta", "tag"),
    ("kounta", "unlink"),
];
/// How a webhook delivery can end: `accepted`, or why it was refused (the `reason` of
/// `webhook.rejected`).
pub const WEBHOOK_RESULTS: [&str; 10] = [
    "accepted",
    "bad_shared_secret",
    "bad_signature",
    "too_large",
    "slow_body",
    "unreadable_body",
    "malformed_json",
    "no_customer_id",
    "store_failed",
    "unknown_topic",
];

/// A family's exposed name, help text, type and label names.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The name as exposed (a counter's with `_total`).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub labels: &'static [&'static str],
}

/// Every family farmsync exposes, in the order it writes them.
pub const FAMILIES: [Family; 10] = [
    Family {
        name: RUNS,
        help: "Sync runs finished, by kind (sweep, quick) and outcome (ok, partial, guarded, unavailable, interrupted).",
        kind: MetricType::Counter,
        labels: &["kind", "outcome"],
    },
    Family {
        name: LAST_RUN,
        help: "When the last run of this kind finished (Unix seconds; 0 = never).",
        kind: MetricType::Gauge,
        labels: &["kind"],
    },
    Family {
        name: LAST_SUCCESS,
        help: "When the last run of this kind that ended ok finished (Unix seconds; 0 = never).",
        kind: MetricType::Gauge,
        labels: &["kind"],
    },
    Family {
        name: RECORDS_WRITTEN,
        help: "Customer writes the API accepted, by side (kounta, farmflow) and action (create, update, delete, tag, unlink).",
        kind: MetricType::Counter,
        labels: &["side", "action"],
    },
    Family {
        name: REQUESTS,
        help: "Requests sent by sync runs, retries included, by API and how they ended (2xx, 3xx, 4xx, 5xx, error).",
        kind: MetricType::Counter,
        labels: &["api", "status"],
    },
    Family {
        name: LINKS,
        help: "Linked customers, by state (active, delete_blocked, tombstone).",
        kind: MetricType::Gauge,
        labels: &["state"],
    },
    Family {
        name: CONFLICTS_OPEN,
        help: "Conflicts nobody has settled yet.",
        kind: MetricType::Gauge,
        labels: &[],
    },
    Family {
        name: DELETES_QUEUED,
        help: "Deletions waiting for a person's approval.",
        kind: MetricType::Gauge,
        labels: &[],
    },
    Family {
        name: WEBHOOK_DELIVERIES,
        help: "Webhook deliveries received by this daemon since it started, by result (accepted, or the reason it was refused).",
        kind: MetricType::Counter,
        labels: &["result"],
    },
    Family {
        name: CYCLE_DURATION,
        help: "How long sync runs took, by kind, in seconds.",
        kind: MetricType::Histogram,
        labels: &["kind"],
    },
];

fn api_label(api: Api) -> &'static str {
    match api {
        Api::Kounta => "kounta",
        Api::Farmflow => "farmflow",
    }
}

fn labels(pairs: &[(&str, &str)]) -> MetricLabels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A run's outcome as the `outcome` label says it.
pub fn outcome_label(report: &RunReport) -> &'static str {
    match &report.outcome {
        Outcome::Applied if report.interrupted => "interrupted",
        Outcome::Applied => "ok",
        Outcome::Partial => "partial",
        Outcome::Guarded => "guarded",
        Outcome::Unavailable(_) => "unavailable",
    }
}

/// What one finished run adds to the stored metrics: `writes` are its accepted writes by
/// (side, op) (see `Store::accepted_writes`), `requests` how its attempts ended, `now` the Unix
/// time it finished.
pub fn run_updates(
    kind: CycleKind,
    report: &RunReport,
    elapsed: Duration,
    requests: &StatusCounts,
    writes: &[(String, String, u64)],
    now: f64,
) -> Vec<MetricUpdate> {
    let k = kind.as_str();
    let outcome = outcome_label(report);
    let add = |name: &str, labels: MetricLabels, value: f64| MetricUpdate {
        name: name.to_owned(),
        labels,
        op: MetricOp::Add,
        value,
    };
    let mut updates = vec![
        add(RUNS, labels(&[("kind", k), ("outcome", outcome)]), 1.0),
        MetricUpdate {
            name: LAST_RUN.to_owned(),
            labels: labels(&[("kind", k)]),
            op: MetricOp::Set,
            value: now,
        },
    ];
    if outcome == "ok" {
        updates.push(MetricUpdate {
            name: LAST_SUCCESS.to_owned(),
            labels: labels(&[("kind", k)]),
            op: MetricOp::Set,
            value: now,
        });
    }
    for (side, action, n) in writes {
        if *n > 0 {
            updates.push(add(
                RECORDS_WRITTEN,
                labels(&[("side", side), ("action", action)]),
                *n as f64,
            ));
        }
    }
    for api in [Api::Kounta, Api::Farmflow] {
        for class in StatusClass::ALL {
            let n = requests.get(api, class);
            if n > 0 {
                updates.push(add(
                    REQUESTS,
                    labels(&[("api", api_label(api)), ("status", class.as_str())]),
                    n as f64,
                ));
            }
        }
    }
    // The histogram is stored as per-bucket counts (not cumulative), its sum and its count.
    let seconds = elapsed.as_secs_f64();
    let le = DURATION_BUCKETS
        .iter()
        .find(|bound| seconds <= **bound)
        .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
    updates.push(add(
        &format!("{CYCLE_DURATION}_bucket"),
        labels(&[("kind", k), ("le", &le)]),
        1.0,
    ));
    updates.push(add(
        &format!("{CYCLE_DURATION}_sum"),
        labels(&[("kind", k)]),
        seconds,
    ));
    updates.push(add(
        &format!("{CYCLE_DURATION}_count"),
        labels(&[("kind", k)]),
        1.0,
    ));
    updates
}

/// Records one finished run in the store: its outcome, accepted writes, requests and duration.
/// Dry runs are not recorded (they write nothing to the state DB).
pub fn record_run(
    store: &mut Store,
    kind: CycleKind,
    report: &RunReport,
    elapsed: Duration,
    requests: &StatusCounts,
) -> Result<(), StoreError> {
    if report.dry_run {
        return Ok(());
    }
    let writes = store.accepted_writes(&report.run_id)?;
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    store.update_metrics(&run_updates(kind, report, elapsed, requests, &writes, now))
}

/// Webhook deliveries by result, counted by the daemon that received them.
#[derive(Debug, Default)]
pub struct WebhookCounts(Mutex<BTreeMap<&'static str, u64>>);

impl WebhookCounts {
    /// Counts one delivery that ended in `result` (see [`WEBHOOK_RESULTS`]).
    pub fn count(&self, result: &'static str) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(result).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Everything the metrics show at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    stored: Vec<MetricValue>,
    links: Vec<(LinkState, i64)>,
    open_conflicts: u64,
    queued_deletes: u64,
    webhooks: BTreeMap<&'static str, u64>,
}

impl Snapshot {
    /// Reads what the store holds now, with the daemon's webhook counts.
    pub fn read(store: &Store, webhooks: &WebhookCounts) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            stored: store.metric_values()?,
            links: store.link_counts()?,
            open_conflicts: store.open_conflicts()?.len() as u64,
            queued_deletes: store.queued_deletes()?,
            webhooks: webhooks.snapshot(),
        })
    }

    /// The Prometheus text format of this snapshot.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector(self.clone())));
        let mut text = String::new();
        // Writing to a String cannot fail; the collector never fails on its own.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }

    fn stored(&self, name: &str, labels: &MetricLabels) -> f64 {
        self.stored
            .iter()
            .find(|v| v.name == name && &v.labels == labels)
            .map_or(0.0, |v| v.value)
    }

    /// Every series of `family`, with its value, in a stable order.
    fn series(&self, family: &Family) -> Vec<(MetricLabels, f64)> {
        let kinds = KINDS.map(CycleKind::as_str);
        let mut out = Vec::new();
        let mut from_store = |pairs: &[(&str, &str)]| {
            let l = labels(pairs);
            let v = self.stored(family.name, &l);
            out.push((l, v));
        };
        match family.name {
            RUNS => {
                for kind in kinds {
                    for outcome in OUTCOMES {
                        from_store(&[("kind", kind), ("outcome", outcome)]);
                    }
                }
            }
            LAST_RUN | LAST_SUCCESS => {
                for kind in kinds {
                    from_store(&[("kind", kind)]);
                }
            }
            RECORDS_WRITTEN => {
                for (side, action) in WRITES {
                    from_store(&[("side", side), ("action", action)]);
                }
            }
            REQUESTS => {
                for api in [Api::Kounta, Api::Farmflow] {
                    for class in StatusClass::ALL {
                        from_store(&[("api", api_label(api)), ("status", class.as_str())]);
                    }
                }
            }
            LINKS => {
                for state in [
                    LinkState::Active,
                    LinkState::DeleteBlocked,
                    LinkState::Tombstone,
                ] {
                    let n = self
                        .links
                        .iter()
                        .find(|(s, _)| *s == state)
                        .map_or(0, |(_, n)| *n);
                    out.push((labels(&[("state", state.as_str())]), n as f64));
                }
            }
            CONFLICTS_OPEN => out.push((MetricLabels::new(), self.open_conflicts as f64)),
            DELETES_QUEUED => out.push((MetricLabels::new(), self.queued_deletes as f64)),
            WEBHOOK_DELIVERIES => {
                for result in WEBHOOK_RESULTS {
                    let n = self.webhooks.get(result).copied().unwrap_or(0);
                    out.push((labels(&[("result", result)]), n as f64));
                }
                // A result this list does not know yet is still shown.
                for (result, n) in &self.webhooks {
                    if !WEBHOOK_RESULTS.contains(result) {
                        out.push((labels(&[("result", result)]), *n as f64));
                    }
                }
            }
            _ => {}
        }
        out
    }

    fn histogram(&self, kind: &str) -> StoredHistogram {
        let of_kind = labels(&[("kind", kind)]);
        let bucket = |le: &str| {
            self.stored(
                &format!("{CYCLE_DURATION}_bucket"),
                &labels(&[("kind", kind), ("le", le)]),
            ) as u64
        };
        let mut buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .map(|b| (*b, bucket(&b.to_string())))
            .collect();
        buckets.push((f64::INFINITY, bucket("+Inf")));
        StoredHistogram {
            sum: self.stored(&format!("{CYCLE_DURATION}_sum"), &of_kind),
            count: self.stored(&format!("{CYCLE_DURATION}_count"), &of_kind) as u64,
            buckets,
        }
    }
}

/// A histogram read back from the store: per-bucket counts, sum and count.
#[derive(Debug)]
struct StoredHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for StoredHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &FAMILIES {
            // The encoder adds `_total` to a counter's name itself.
            let base = family.name.strip_suffix("_total").unwrap_or(family.name);
            let mut metric = encoder.encode_descriptor(base, family.help, None, family.kind)?;
            if family.kind == MetricType::Histogram {
                for kind in KINDS.map(CycleKind::as_str) {
                    let l = [("kind", kind)];
                    self.0.histogram(kind).encode(metric.encode_family(&l)?)?;
                }
                continue;
            }
            let encode = |value: f64, target: MetricEncoder| match family.kind {
                MetricType::Counter => ConstCounter::new(value as u64).encode(target),
                _ => ConstGauge::new(value).encode(target),
            };
            let series = self.0.series(family);
            if family.labels.is_empty() {
                // One series, without labels.
                let value = series.first().map_or(0.0, |(_, v)| *v);
                encode(value, metric)?;
                continue;
            }
            for (labels, value) in series {
                let pairs: Vec<(String, String)> = labels.into_iter().collect();
                encode(value, metric.encode_family(&pairs)?)?;
            }
        }
        Ok(())
    }
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, made readable
/// by node_exporter (0644), flushed, then renamed over `path`. A reader sees the old file or
/// the new one, never half of one.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".farmsync-metrics-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    file.write_all(text.as_bytes())?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: Outcome, interrupted: bool) -> RunReport {
        RunReport {
            run_id: "r1".into(),
            dry_run: false,
            outcome,
            summary: Default::default(),
            plan: None,
            listing_cut: None,
            unsettled: 0,
            interrupted,
            omissions: 0,
        }
    }

    #[test]
    fn outcomes_are_named_for_their_exit_codes() {
        assert_eq!(outcome_label(&report(Outcome::Applied, false)), "ok");
        assert_eq!(
            outcome_label(&report(Outcome::Applied, true)),
            "interrupted"
        );
        assert_eq!(outcome_label(&report(Outcome::Partial, false)), "partial");
        assert_eq!(outcome_label(&report(Outcome::Guarded, false)), "guarded");
        assert_eq!(
            outcome_label(&report(Outcome::Unavailable("x".into()), false)),
            "unavailable"
        );
    }

    #[test]
    fn every_webhook_rejection_has_a_result_label() {
        use crate::webhook::Rejection;
        let rejections = [
            Rejection::Secret,
            Rejection::Signature,
            Rejection::TooLarge,
            Rejection::SlowBody(Duration::from_secs(1)),
            Rejection::Read(String::new()),
            Rejection::Malformed(String::new()),
            Rejection::NoCustomer(String::new()),
            Rejection::Store(String::new()),
        ];
        for r in rejections {
            assert!(WEBHOOK_RESULTS.contains(&r.reason()), "{}", r.reason());
        }
    }

    #[test]
    fn runs_add_up_in_the_store_and_encode_as_prometheus_text() {
        let mut store = Store::open_in_memory().unwrap();
        let requests = StatusCounts::default();
        record_run(
            &mut store,
            CycleKind::Sweep,
            &report(Outcome::Applied, false),
            Duration::from_millis(700),
            &requests,
        )
        .unwrap();
        record_run(
            &mut store,
            CycleKind::Sweep,
            &report(Outcome::Partial, false),
            Duration::from_secs(4000),
            &requests,
        )
        .unwrap();
        let webhooks = WebhookCounts::default();
        webhooks.count("accepted");
        let text = Snapshot::read(&store, &webhooks).unwrap().encode();
        for line in [
            "# TYPE farmsync_runs_total counter",
            "farmsync_runs_total{kind=\"sweep\",outcome=\"ok\"} 1",
            "farmsync_runs_total{kind=\"sweep\",outcome=\"partial\"} 1",
            "farmsync_runs_total{kind=\"quick\",outcome=\"ok\"} 0",
            "farmsync_last_success_timestamp_seconds{kind=\"quick\"} 0.0",
            "# TYPE farmsync_cycle_duration_seconds histogram",
            "farmsync_cycle_duration_seconds_bucket{kind=\"sweep\",le=\"0.5\"} 0",
            "farmsync_cycle_duration_seconds_bucket{kind=\"sweep\",le=\"1\"} 1",
            "farmsync_cycle_duration_seconds_bucket{kind=\"sweep\",le=\"1800\"} 1",
            "farmsync_cycle_duration_seconds_bucket{kind=\"sweep\",le=\"+Inf\"} 2",
            "farmsync_cycle_duration_seconds_count{kind=\"sweep\"} 2",
            "farmsync_cycle_duration_seconds_sum{kind=\"sweep\"} 4000.7",
            "farmsync_links{state=\"active\"} 0.0",
            "farmsync_conflicts_open 0.0",
            "farmsync_deletes_queued 0.0",
            "farmsync_webhook_deliveries_total{result=\"accepted\"} 1",
            "farmsync_webhook_deliveries_total{result=\"bad_signature\"} 0",
            "farmsync_requests_total{api=\"farmflow\",status=\"error\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        let last_success = text
            .lines()
            .find(|l| l.starts_with("farmsync_last_success_timestamp_seconds{kind=\"sweep\"}"))
            .unwrap();
        let value: f64 = last_success.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 1.7e9, "{last_success}");
    }

    #[test]
    fn the_textfile_is_replaced_whole_and_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("farmsync.prom");
        write_textfile(&path, "a 1\n").unwrap();
        write_textfile(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }
}
