//! Alerts on change: healthchecks.io-style pings around every sweep (`[alerts]
//! healthcheck_url`), and one JSON POST each time farmsync's health changes (`[alerts]
//! webhook_url`), never one per run.
//!
//! Owns the `[alerts]` requests (its own small HTTP client: the API clients' rate and retries
//! are not for these) and the health last announced, kept in the state DB. It reads no customer
//! and never calls either API; [`crate::observe`] decides when to ping and what to judge.
//!
//! Both go through one background task, in the order they were asked for, each request bounded
//! by [`TIMEOUT`]: a slow or dead endpoint never holds a run back, and a failure is logged at
//! warn and nothing more. The health last announced is kept in the state DB, so a restart does
//! not announce it again; an announcement that failed is not recorded, so the next judgement
//! tries again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use url::Url;

use crate::config::AlertSettings;
use crate::store::{AnnouncedHealth, SharedStore};

/// The longest any one ping or announcement may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How many pings and announcements may wait; more are dropped (and logged).
const QUEUE: usize = 64;

/// A healthchecks.io-style ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    /// A sweep started: `<url>/start`.
    Start,
    /// It ended with exit code 0: `<url>`.
    Success,
    /// It ended with any other exit code: `<url>/fail`.
    Fail,
}

impl Ping {
    /// The ping's name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Ping::Start => "start",
            Ping::Success => "success",
            Ping::Fail => "fail",
        }
    }

    /// The URL this ping goes to, under `base` (a query string, e.g. healthchecks.io's `rid`,
    /// stays at the end).
    pub fn url(self, base: &str) -> Option<Url> {
        let mut url = Url::parse(base.trim()).ok()?;
        let suffix = match self {
            Ping::Start => Some("start"),
            Ping::Success => None,
            Ping::Fail => Some("fail"),
        };
        {
            let mut path = url.path_segments_mut().ok()?;
            path.pop_if_empty();
            if let Some(suffix) = suffix {
                path.push(suffix);
            }
        }
        Some(url)
    }
}

/// farmsync's health as judged after a sweep (see `status::problems`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// No problems.
    pub healthy: bool,
    /// What is wrong, one sentence each.
    pub problems: Vec<String>,
    /// The run it was judged on.
    pub run_id: String,
}

/// Whether `now` must be announced after `previous`: only a change is. Before the first
/// announcement farmsync counts as healthy, so a first healthy judgement is not news.
pub fn announcement_due(previous: Option<&AnnouncedHealth>, now: &Health) -> bool {
    previous.is_none_or(|p| p.healthy) != now.healthy
}

/// The JSON an announcement posts. `text` makes it readable as it is by chat webhooks
/// (Slack, Mattermost); the rest is for machines.
pub fn payload(health: &Health, state_path: &str, host: &str, at: &str) -> serde_json::Value {
    let text = if health.healthy {
        format!("farmsync on {host} is healthy again ({state_path})")
    } else {
        format!(
            "farmsync on {host} is UNHEALTHY ({state_path}): {}",
            health.problems.join("; ")
        )
    };
    json!({
        "text": text,
        "source": "farmsync",
        "healthy": health.healthy,
        "previous_healthy": !health.healthy,
        "problems": health.problems,
        "run_id": health.run_id,
        "state_path": state_path,
        "host": host,
        "at": at,
    })
}

enum Job {
    Ping(Ping, String),
    Judge(Health),
}

struct Inner {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The pings and announcements of one farmsync process. Cheap to clone.
#[derive(Clone)]
pub struct Alerts(Arc<Inner>);

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Alerts")
    }
}

/// Where announcements go and what they say about this instance.
struct Targets {
    healthcheck: Option<SecretString>,
    webhook: Option<SecretString>,
    store: SharedStore,
    state_path: String,
    host: String,
}

impl Alerts {
    /// Starts the task that sends what `settings` asks for; `None` when both are off. Must be
    /// called within a tokio runtime.
    pub fn spawn(
        settings: &AlertSettings,
        store: SharedStore,
        state_path: String,
    ) -> Option<Alerts> {
        if settings.healthcheck_url.is_none() && settings.webhook_url.is_none() {
            return None;
        }
        let client = match reqwest::Client::builder()
            .user_agent(crate::http::USER_AGENT)
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                warn!(error = %e.without_url(), "alerts.disabled");
                return None;
            }
        };
        let targets = Targets {
            healthcheck: settings.healthcheck_url.clone(),
            webhook: settings.webhook_url.clone(),
            store,
            state_path,
            host: host_name(),
        };
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = tokio::spawn(work(receiver, client, targets));
        Some(Alerts(Arc::new(Inner {
            sender: Mutex::new(Some(sender)),
            task: Mutex::new(Some(task)),
        })))
    }

    fn send(&self, job: Job, what: &'static str) {
        let sender = self.0.sender.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sender) = sender.as_ref() else {
            return;
        };
        if sender.try_send(job).is_err() {
            warn!(what, "alerts.dropped");
        }
    }

    /// Queues a ping (ignored without `healthcheck_url`); `body` is posted with it.
    pub fn ping(&self, ping: Ping, body: String) {
        self.send(Job::Ping(ping, body), ping.as_str());
    }

    /// Queues a judgement of health: announced if it differs from the last one announced
    /// (ignored without `webhook_url`).
    pub fn judge(&self, health: Health) {
        self.send(Job::Judge(health), "health");
    }

    /// Takes no more, and lets what is queued go out for at most `within`; what is left then
    /// is dropped.
    pub async fn close(&self, within: Duration) {
        self.0
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let task = self.0.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task
            && tokio::time::timeout(within, &mut task).await.is_err()
        {
            task.abort();
            warn!(
                within_ms = within.as_millis() as u64,
                "alerts.close.timeout"
            );
        }
    }
}

async fn work(mut jobs: mpsc::Receiver<Job>, client: reqwest::Client, targets: Targets) {
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Ping(ping, body) => {
                if let Some(base) = &targets.healthcheck {
                    send_ping(&client, base, ping, body).await;
                }
            }
            Job::Judge(health) => {
                if let Some(url) = &targets.webhook {
                    announce(&client, url, &targets, health).await;
                }
            }
        }
    }
}

async fn send_ping(client: &reqwest::Client, base: &SecretString, ping: Ping, body: String) {
    let Some(url) = ping.url(base.expose_secret()) else {
        warn!(ping = ping.as_str(), "alerts.healthcheck.bad_url");
        return;
    };
    match post(client, url, Body::Text(body)).await {
        Ok(()) => debug!(ping = ping.as_str(), "alerts.healthcheck.sent"),
        Err(error) => warn!(ping = ping.as_str(), error = %error, "alerts.healthcheck.failed"),
    }
}

async fn announce(client: &reqwest::Client, url: &SecretString, targets: &Targets, health: Health) {
    let previous = match targets.store.call(|s| s.announced_health()).await {
        Ok(previous) => previous,
        Err(e) => {
            warn!(error = %e, "alerts.health.unreadable");
            return;
        }
    };
    if !announcement_due(previous.as_ref(), &health) {
        debug!(healthy = health.healthy, run_id = %health.run_id, "alerts.health.unchanged");
        return;
    }
    let Ok(parsed) = Url::parse(url.expose_secret()) else {
        warn!("alerts.webhook.bad_url");
        return;
    };
    let at = chrono::Utc::now().to_rfc3339();
    let body = payload(&health, &targets.state_path, &targets.host, &at);
    if let Err(error) = post(client, parsed, Body::Json(body)).await {
        // Not recorded: the next judgement announces it again.
        warn!(healthy = health.healthy, error = %error, "alerts.webhook.failed");
        return;
    }
    let (healthy, problems) = (health.healthy, health.problems.clone());
    if let Err(e) = targets
        .store
        .call(move |s| s.set_announced_health(healthy, &problems))
        .await
    {
        warn!(error = %e, "alerts.health.unrecorded");
    }
    info!(
        healthy = health.healthy,
        problems = health.problems.len(),
        run_id = %health.run_id,
        "alerts.health.announced"
    );
}

enum Body {
    Text(String),
    Json(serde_json::Value),
}

/// Posts `body` to `url`; a non-2xx answer is an error. Errors never carry the URL (a secret).
async fn post(client: &reqwest::Client, url: Url, body: Body) -> Result<(), String> {
    let request = client.post(url);
    let request = match body {
        Body::Text(text) => request
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(text),
        Body::Json(value) => request.json(&value),
    };
    let response = request
        .send()
        .await
        .map_err(|e| error_text(e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", status.as_u16()))
    }
}

fn error_text(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = if e.is_timeout() {
        format!("no answer within {} s", TIMEOUT.as_secs())
    } else {
        e.to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// This machine's name, for announcements (several farms may report to one channel).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_hang_under_the_check_url() {
        let at = |p: Ping, base: &str| p.url(base).unwrap().to_string();
        assert_eq!(
            at(Ping::Start, "https://hc-ping.com/abc"),
            "https://hc-ping.com/abc/start"
        );
        assert_eq!(
            at(Ping::Fail, "https://hc-ping.com/abc/"),
            "https://hc-ping.com/abc/fail"
        );
        assert_eq!(
            at(Ping::Success, "https://hc-ping.com/abc/"),
            "https://hc-ping.com/abc"
        );
        assert_eq!(
            at(Ping::Start, "https://hc-ping.com/abc?rid=1"),
            "https://hc-ping.com/abc/start?rid=1"
        );
    }

    fn health(healthy: bool) -> Health {
        Health {
            healthy,
            problems: if healthy {
                Vec::new()
            } else {
                vec!["the last run (r1) exited 4".to_owned()]
            },
            run_id: "r1".into(),
        }
    }

    fn announced(healthy: bool) -> AnnouncedHealth {
        AnnouncedHealth {
            healthy,
            problems: Vec::new(),
            announced_at: 0,
        }
    }

    #[test]
    fn only_a_change_of_health_is_announced() {
        assert!(!announcement_due(None, &health(true)));
        assert!(announcement_due(None, &health(false)));
        assert!(announcement_due(Some(&announced(true)), &health(false)));
        assert!(!announcement_due(Some(&announced(false)), &health(false)));
        assert!(announcement_due(Some(&announced(false)), &health(true)));
        assert!(!announcement_due(Some(&announced(true)), &health(true)));
    }

    #[test]
    fn the_payload_says_what_changed_in_a_sentence_and_in_fields() {
        let p = payload(
            &health(false),
            "/var/lib/farmsync/farmsync.db",
            "farm1",
            "t",
        );
        assert_eq!(p["healthy"], false);
        assert_eq!(p["previous_healthy"], true);
        assert_eq!(p["problems"][0], "the last run (r1) exited 4");
        let text = p["text"].as_str().unwrap();
        assert!(
            text.contains("UNHEALTHY") && text.contains("exited 4"),
            "{text}"
        );
        let p = payload(&health(true), "/x.db", "farm1", "t");
        assert_eq!(p["previous_healthy"], false);
        assert!(p["problems"].as_array().unwrap().is_empty());
    }
}
