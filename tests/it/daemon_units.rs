//! The files in `systemd/` agree with each other and with farmsync: every credential the sample
//! config reads is loaded by both services, the config loads, and the stop timeout outlasts the
//! daemon's drain. (`.ci/systemd-check` runs systemd's own checks on the units.)

use std::path::PathBuf;
use std::time::Duration;

use farmsync::config::{Needs, Settings};
use farmsync::daemon::DaemonOptions;

const CREDENTIALS: &str = "/run/credentials/farmsync.service/";

fn read(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "systemd", name]
        .iter()
        .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Values of `key=` lines of a unit file, in order.
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

/// Credential ids the sample config reads through `*_file` keys (comments skipped).
fn credentials_read(config: &str) -> Vec<String> {
    config
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once("_file"))
        .filter_map(|(_, rest)| rest.split_once(CREDENTIALS))
        .map(|(_, id)| id.trim_end_matches('"').to_owned())
        .collect()
}

fn seconds(value: &str) -> u64 {
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().unwrap();
    match &value[digits.len()..] {
        "" | "s" => n,
        "min" => n * 60,
        other => panic!("unexpected unit {other:?} in {value:?}"),
    }
}

#[test]
fn both_services_load_every_credential_the_sample_config_reads() {
    let config = read("farmsync.toml");
    let wanted = credentials_read(&config);
    assert_eq!(
        wanted,
        [
            "kounta_client_secret",
            "farmflow_api_key",
            "webhook_signature_token",
            "webhook_shared_secret"
        ]
    );
    for name in ["farmsync.service", "farmsync-sync.service"] {
        let unit = read(name);
        let loaded: Vec<String> = values(&unit, "LoadCredential")
            .iter()
            .map(|v| v.split(':').next().unwrap().to_owned())
            .collect();
        for id in &wanted {
            assert!(loaded.contains(id), "{name} does not load {id}");
        }
        let exec = values(&unit, "ExecStart");
        assert_eq!(exec.len(), 1);
        assert!(
            exec[0].starts_with("/usr/local/bin/farmsync --config /etc/farmsync/farmsync.toml "),
            "{name}: {}",
            exec[0]
        );
        assert_eq!(values(&unit, "StateDirectory"), ["farmsync"]);
        assert_eq!(
            values(&unit, "User"),
            ["farmsync"],
            "one dynamic user for both"
        );
    }
    let oneshot = read("farmsync-sync.service");
    assert_eq!(
        values(&oneshot, "BindReadOnlyPaths"),
        ["%d:/run/credentials/farmsync.service"],
        "the one-shot unit finds its credentials where the config looks"
    );
    assert!(values(&oneshot, "ExecStart")[0].ends_with(" sync"));
    assert_eq!(values(&read("farmsync-sync.timer"), "Persistent"), ["true"]);
}

#[test]
fn the_sample_config_loads_with_its_credentials_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = read("farmsync.toml");
    for id in credentials_read(&config) {
        std::fs::write(dir.path().join(&id), format!("secret-{id}\n")).unwrap();
    }
    assert!(config.contains("path = \"/var/lib/farmsync/farmsync.db\""));
    let local = config.replace(CREDENTIALS, &format!("{}/", dir.path().display()));
    let file = dir.path().join("farmsync.toml");
    std::fs::write(&file, local).unwrap();
    let settings = Settings::builder().file(&file).build().unwrap();
    settings.require_credentials(Needs::BothApis).unwrap();
    settings.require_credentials(Needs::Webhooks).unwrap();
    assert!(settings.webhooks.enabled);
    assert_eq!(settings.schedule.cron, "0 */5 * * * *");
    use secrecy::ExposeSecret;
    assert_eq!(
        settings.farmflow.api_key.expose_secret(),
        "secret-farmflow_api_key"
    );
}

#[test]
fn systemd_waits_longer_than_the_daemon_drains_and_watches_it() {
    let unit = read("farmsync.service");
    assert_eq!(values(&unit, "Type"), ["notify"]);
    let stop = Duration::from_secs(seconds(&values(&unit, "TimeoutStopSec")[0]));
    let drain = DaemonOptions::default().drain_timeout;
    assert!(drain < Duration::from_secs(10), "farmsync promises 10 s");
    assert!(stop > Duration::from_secs(10) && stop > drain);
    let watchdog = seconds(&values(&unit, "WatchdogSec")[0]);
    assert!(
        watchdog >= 10,
        "pings at half of it must be cheap: {watchdog}"
    );
    assert_eq!(values(&unit, "Restart"), ["on-failure"]);
}
