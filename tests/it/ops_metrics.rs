//! Metrics: a running daemon's `/metrics`, scraped over HTTP and read with a strict parser of
//! the Prometheus text format, shows every metric the README documents (and nothing else);
//! the textfile says the same and counts on across one-shot syncs; the example alert rules
//! parse as PromQL and name only documented metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use farmsync::sandbox::{Sandbox, SandboxOptions, sample_farm};

use crate::daemon_support::{Daemon, event, farmsync_in, free_port};
use crate::support::{Workdir, text};
use crate::sync_smoke::sandbox_config;

const MINUTE: Duration = Duration::from_secs(60);
/// Once a year: only the start-up sweep runs during a test.
const YEARLY: &str = "[schedule]\ncron = \"0 0 0 1 1 *\"\nquick_cron = \"\"\n";

/// The metric names the README's "Metrics" table documents.
pub fn documented_metrics() -> BTreeSet<String> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n### Metrics\n")
        .nth(1)
        .expect("the README has a Metrics section");
    let section = section.split("\n### ").next().unwrap();
    let names: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `farmsync_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("farmsync_{name}"))
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    names
}

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One metric family: its type and samples.
#[derive(Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: bool,
    pub samples: Vec<Sample>,
}

/// Parses the Prometheus text format (0.0.4) strictly: every sample follows the `# TYPE` of its
/// family, families are contiguous and declared once, names and labels are well formed,
/// values are numbers, and histograms are cumulative and end with `+Inf` = `_count`.
pub fn parse_exposition(body: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for (i, line) in body.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !valid_name(name) {
                return Err(at("bad name in HELP".into()));
            }
            let f = families.entry(name.to_owned()).or_default();
            if f.help {
                return Err(at("a second HELP".into()));
            }
            f.help = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !valid_name(name) || parts.next().is_some() {
                return Err(at("bad TYPE".into()));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            let f = families.entry(name.to_owned()).or_default();
            if !f.kind.is_empty() || !f.samples.is_empty() {
                return Err(at("TYPE after samples or twice".into()));
            }
            f.kind = kind.to_owned();
            current = Some(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // name{labels} value
        let (name_and_labels, value) =
            line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| at(format!("bad value {v:?}")))?,
        };
        let (name, labels) = match name_and_labels.split_once('{') {
            None => (name_and_labels, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .ok_or_else(|| at("unclosed labels".into()))?;
                (name, parse_labels(inner).map_err(at)?)
            }
        };
        if !valid_name(name) {
            return Err(at("bad sample name".into()));
        }
        let family_name = current
            .clone()
            .ok_or_else(|| at("a sample before any TYPE".into()))?;
        let family = families.get_mut(&family_name).unwrap();
        let belongs = match family.kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{family_name}{s}")),
            _ => name == family_name,
        };
        if !belongs {
            return Err(at(format!("sample outside its family {family_name}")));
        }
        family.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for (name, family) in &families {
        if family.kind.is_empty() || !family.help {
            return Err(format!("{name} lacks TYPE or HELP"));
        }
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(families)
}

fn parse_labels(inner: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        if chars.next() != Some('"') {
            return Err(format!("label {key} is not quoted"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => return Err(format!("label {key} never ends")),
            }
        }
        if labels.insert(key.clone(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(c) => return Err(format!("{c:?} after a label")),
        }
    }
    Ok(labels)
}

fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    // Group by the labels other than `le`.
    let mut series: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
    for s in &family.samples {
        let key = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        series.entry(key).or_default().push(s);
    }
    for (key, samples) in series {
        let buckets: Vec<&&Sample> = samples
            .iter()
            .filter(|s| s.name.ends_with("_bucket"))
            .collect();
        let mut last = (f64::NEG_INFINITY, 0.0);
        for b in &buckets {
            let le = b
                .labels
                .get("le")
                .ok_or(format!("{name} bucket without le"))?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("{name} le {le:?}"))?
            };
            if le <= last.0 || b.value < last.1 {
                return Err(format!("{name} {key:?}: buckets out of order"));
            }
            last = (le, b.value);
        }
        let count = samples
            .iter()
            .find(|s| s.name.ends_with("_count"))
            .ok_or(format!("{name} {key:?}: no _count"))?;
        if last.0 != f64::INFINITY || last.1 != count.value {
            return Err(format!("{name} {key:?}: +Inf bucket is not _count"));
        }
        if !samples.iter().any(|s| s.name.ends_with("_sum")) {
            return Err(format!("{name} {key:?}: no _sum"));
        }
    }
    Ok(())
}

/// The value of the one sample of `families` named `name` with these labels.
pub fn value(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    families
        .values()
        .flat_map(|f| &f.samples)
        .find(|s| s.name == name && s.labels == want)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .value
}

/// Every family documented is exposed, and nothing undocumented is.
fn assert_documented(families: &BTreeMap<String, Family>) {
    let documented = documented_metrics();
    let exposed: BTreeSet<String> = families.keys().cloned().collect();
    assert_eq!(exposed, documented, "exposed vs documented in the README");
}

#[test]
fn the_strict_parser_refuses_what_prometheus_would() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n";
    assert!(parse_exposition(ok).is_ok());
    for bad in [
        "a_total 1\n",
        "# HELP a x\n# TYPE a gauge\nb 1\n",
        "# HELP a x\n# TYPE a gauge\na{k=v} 1\n",
        "# HELP a x\n# TYPE a gauge\na one\n",
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE a gauge\na 1\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_serves_every_documented_metric_and_writes_the_textfile() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let port = free_port();
    let w = Workdir::new("");
    let textfile = w.dir.path().join("farmsync.prom");
    w.set_config(&sandbox_config(
        &sb,
        &format!(
            "{YEARLY}[log]\nlevel = \"info,farmsync::observe=debug\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\ntextfile = {:?}\n",
            textfile.display().to_string()
        ),
    ));

    let mut d = Daemon::spawn(&w, &[]);
    d.wait_for(MINUTE, |l| event(l) == "metrics.listening")
        .await;
    d.wait_for(MINUTE, |l| event(l) == "metrics.recorded").await;

    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    let families = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_documented(&families);

    // The start-up sweep is in it: the sample farm's first sync writes on both sides.
    let runs = |outcome| {
        value(
            &families,
            "farmsync_runs_total",
            &[("kind", "sweep"), ("outcome", outcome)],
        )
    };
    assert_eq!(runs("ok"), 1.0, "{body}");
    assert_eq!(runs("partial"), 0.0);
    let requests = |api| {
        value(
            &families,
            "farmsync_requests_total",
            &[("api", api), ("status", "2xx")],
        )
    };
    assert!(
        requests("kounta") > 0.0 && requests("farmflow") > 0.0,
        "{body}"
    );
    let written = |side, action| {
        value(
            &families,
            "farmsync_records_written_total",
            &[("side", side), ("action", action)],
        )
    };
    assert!(written("kounta", "create") > 0.0, "{body}");
    assert!(written("farmflow", "create") > 0.0, "{body}");
    assert!(value(&families, "farmsync_links", &[("state", "active")]) > 0.0);
    assert!(
        value(
            &families,
            "farmsync_last_success_timestamp_seconds",
            &[("kind", "sweep")]
        ) > 1.7e9
    );
    assert_eq!(
        value(
            &families,
            "farmsync_cycle_duration_seconds_count",
            &[("kind", "sweep")]
        ),
        1.0
    );
    let unknown = reqwest::get(format!("http://127.0.0.1:{port}/other"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // The textfile was written after the same sweep, and says the same.
    let file = std::fs::read_to_string(&textfile).unwrap();
    let from_file = parse_exposition(&file).unwrap_or_else(|e| panic!("{e}\n{file}"));
    assert_documented(&from_file);
    assert_eq!(
        value(
            &from_file,
            "farmsync_runs_total",
            &[("kind", "sweep"), ("outcome", "ok")]
        ),
        1.0
    );

    d.signal("TERM");
    let (status, _) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_syncs_count_on_in_the_textfile_and_a_dry_run_leaves_it_alone() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new("");
    let textfile = w.dir.path().join("farmsync.prom");
    w.set_config(&sandbox_config(
        &sb,
        &format!(
            "[metrics]\ntextfile = {:?}\n",
            textfile.display().to_string()
        ),
    ));
    for _ in 0..2 {
        let out = farmsync_in(&w, &["sync"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let file = std::fs::read_to_string(&textfile).unwrap();
    let families = parse_exposition(&file).unwrap_or_else(|e| panic!("{e}\n{file}"));
    assert_documented(&families);
    let ok_runs = value(
        &families,
        "farmsync_runs_total",
        &[("kind", "sweep"), ("outcome", "ok")],
    );
    assert_eq!(ok_runs, 2.0, "{file}");
    assert_eq!(
        value(
            &families,
            "farmsync_cycle_duration_seconds_count",
            &[("kind", "sweep")]
        ),
        2.0
    );

    let out = farmsync_in(&w, &["sync", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&textfile).unwrap(), file);
}

/// `config/alerts.example.yml`, as Prometheus reads a rule file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

/// The metric names an expression selects.
struct Selected(Vec<String>);

impl promql_parser::util::ExprVisitor for Selected {
    type Error = String;

    fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, String> {
        use promql_parser::parser::Expr;
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let name = selector
            .name
            .clone()
            .ok_or_else(|| format!("a selector without a metric name: {expr}"))?;
        self.0.push(name);
        Ok(true)
    }
}

#[test]
fn the_example_alert_rules_parse_and_name_only_documented_metrics() {
    let text = include_str!("../../config/alerts.example.yml");
    let file: RuleFile = serde_norway::from_str(text).expect("a valid rule file");
    let documented = documented_metrics();
    let mut used = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    for group in &file.groups {
        assert!(!group.name.is_empty());
        for rule in &group.rules {
            assert!(alerts.insert(rule.alert.clone()), "{} twice", rule.alert);
            let expr = promql_parser::parser::parse(&rule.expr)
                .unwrap_or_else(|e| panic!("{}: {e}", rule.alert));
            let mut selected = Selected(Vec::new());
            promql_parser::util::walk_expr(&mut selected, &expr)
                .unwrap_or_else(|e| panic!("{}: {e}", rule.alert));
            assert!(!selected.0.is_empty(), "{} selects nothing", rule.alert);
            for name in selected.0 {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|base| documented.contains(*base))
                    .unwrap_or(&name);
                assert!(
                    documented.contains(family),
                    "{} uses {name}, which the README does not document",
                    rule.alert
                );
                used.insert(family.to_owned());
            }
            if let Some(d) = &rule.for_ {
                promql_parser::util::parse_duration(d)
                    .unwrap_or_else(|e| panic!("{}: for {d}: {e}", rule.alert));
            }
            let labels = rule.labels.clone().unwrap_or_default();
            assert!(labels.contains_key("severity"), "{}", rule.alert);
            let annotations = rule.annotations.clone().unwrap_or_default();
            assert!(annotations.contains_key("summary"), "{}", rule.alert);
        }
    }
    assert!(alerts.len() >= 5, "{alerts:?}");
    // A deliberately wrong name is caught: the check can fail.
    let wrong = promql_parser::parser::parse("farmsync_runs_totl > 0").unwrap();
    let mut selected = Selected(Vec::new());
    promql_parser::util::walk_expr(&mut selected, &wrong).unwrap();
    assert!(!documented.contains(&selected.0[0]));
    assert!(used.contains("farmsync_runs_total"), "{used:?}");
}
