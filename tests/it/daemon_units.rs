//! The files in `systemd/` agree with each other and with farmsync: every credential the sample
//! config reads is loaded by both services, the config loads, the stop timeout outlasts the
//! daemon's drain, and two farms' template instances stand side by side, each with its own
//! config, state directory, credentials and user. (`.ci/systemd-check` runs systemd's own
//! checks on every unit.)

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
            exec[0].starts_with("farmsync --config /etc/farmsync/farmsync.toml "),
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

/// Every unit file in `systemd/` with the given suffix, by name.
fn units(suffix: &str) -> Vec<String> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "systemd"].iter().collect();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

#[test]
fn every_service_unit_leaves_a_config_error_or_a_tripped_guard_to_a_person() {
    let services = units(".service");
    assert!(services.len() >= 4, "{services:?}");
    for name in services {
        assert_eq!(
            values(&read(&name), "RestartPreventExitStatus"),
            ["2 3"],
            "{name}: exit 2 (config) and 3 (guard) must not restart"
        );
    }
}

/// The farm template config with `farm` in place of its placeholder.
fn farm_config(farm: &str) -> String {
    read("farm.toml").replace("FARM", farm)
}

/// A unit file as systemd reads it for instance `farm`: `%i` (and `%I`) replaced.
fn instance(template: &str, farm: &str) -> String {
    read(template).replace("%i", farm).replace("%I", farm)
}

#[test]
fn both_template_services_load_every_credential_the_farm_config_reads() {
    let farm = "north";
    let config = farm_config(farm);
    let dir = format!("/run/credentials/farmsync@{farm}.service/");
    let wanted: Vec<String> = config
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once("_file"))
        .filter_map(|(_, rest)| rest.split_once(dir.as_str()))
        .map(|(_, id)| id.trim_end_matches('"').to_owned())
        .collect();
    assert_eq!(wanted, ["kounta_client_secret", "farmflow_api_key"]);
    for template in ["farmsync@.service", "farmsync-sync@.service"] {
        let unit = instance(template, farm);
        let loaded: Vec<(String, String)> = values(&unit, "LoadCredential")
            .iter()
            .map(|v| {
                let (id, path) = v.split_once(':').unwrap();
                (id.to_owned(), path.to_owned())
            })
            .collect();
        for id in &wanted {
            assert!(
                loaded.contains(&(id.clone(), format!("/etc/farmsync/credentials/{farm}/{id}"))),
                "{template} does not load {id} from the farm's credentials: {loaded:?}"
            );
        }
        let exec = values(&unit, "ExecStart");
        assert_eq!(exec.len(), 1);
        assert!(
            exec[0].starts_with(&format!("farmsync --config /etc/farmsync/{farm}.toml ")),
            "{template}: {}",
            exec[0]
        );
        assert_eq!(
            values(&unit, "StateDirectory"),
            [format!("farmsync/{farm}")]
        );
        assert_eq!(
            values(&unit, "User"),
            [format!("farmsync-{farm}")],
            "one dynamic user per farm, shared by its two units"
        );
    }
    let oneshot = instance("farmsync-sync@.service", farm);
    assert_eq!(
        values(&oneshot, "BindReadOnlyPaths"),
        [format!("%d:/run/credentials/farmsync@{farm}.service")],
        "the one-shot unit finds its credentials where the farm's config looks"
    );
    assert!(values(&oneshot, "ExecStart")[0].ends_with(" sync"));
    assert!(values(&instance("farmsync@.service", farm), "ExecStart")[0].ends_with(" run"));
    assert_eq!(
        values(&read("farmsync-sync@.timer"), "Persistent"),
        ["true"]
    );
    // The daemon template is the single-farm daemon, farm by farm: same watchdog and stop.
    let single = read("farmsync.service");
    let template = read("farmsync@.service");
    for key in [
        "Type",
        "WatchdogSec",
        "Restart",
        "TimeoutStopSec",
        "KillMode",
    ] {
        assert_eq!(values(&template, key), values(&single, key), "{key}");
    }
}

/// A throw-away root for `systemd-analyze verify`: the system's own units, the repository's,
/// a stub at `/usr/bin/farmsync` (where a bare `ExecStart=farmsync` is found), and `files`.
fn verify_root(files: &[(String, String)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .expect("no system unit directory: install systemd (apt-get install systemd)");
    std::fs::create_dir_all(root.path().join("usr/lib/systemd")).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(system_units)
        .arg(root.path().join("usr/lib/systemd/system"))
        .status()
        .unwrap();
    assert!(copied.success(), "cannot copy {system_units}");
    let units = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for name in units_all() {
        std::fs::write(units.join(&name), read(&name)).unwrap();
    }
    let bin = root.path().join("usr/bin/farmsync");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (path, text) in files {
        let at = root.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, text).unwrap();
    }
    root
}

fn units_all() -> Vec<String> {
    let mut all = units(".service");
    all.extend(units(".timer"));
    all
}

#[test]
fn two_farms_stand_side_by_side_each_with_its_config_state_and_credentials() {
    let farms = ["north", "south-2"];
    // Each farm's config, as an operator makes it, loads with that farm's credentials in place
    // and keeps its state in the farm's own StateDirectory.
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut state_paths = Vec::new();
    for farm in farms {
        let creds = tmp.path().join(farm);
        std::fs::create_dir_all(&creds).unwrap();
        let config = farm_config(farm);
        for id in ["kounta_client_secret", "farmflow_api_key"] {
            std::fs::write(creds.join(id), format!("{farm}-{id}\n")).unwrap();
        }
        let local = config.replace(
            &format!("/run/credentials/farmsync@{farm}.service/"),
            &format!("{}/", creds.display()),
        );
        let file = tmp.path().join(format!("{farm}.toml"));
        std::fs::write(&file, local).unwrap();
        let settings = Settings::builder().file(&file).build().unwrap();
        settings.require_credentials(Needs::BothApis).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(
            settings.farmflow.api_key.expose_secret(),
            format!("{farm}-farmflow_api_key")
        );
        let state_directory = values(&instance("farmsync@.service", farm), "StateDirectory");
        assert_eq!(
            settings.state.path,
            PathBuf::from(format!("/var/lib/{}/farmsync.db", state_directory[0])),
            "{farm}: the state DB lives in the unit's StateDirectory"
        );
        state_paths.push(settings.state.path.clone());
        files.push((format!("/etc/farmsync/{farm}.toml"), config));
    }
    assert_ne!(state_paths[0], state_paths[1]);

    // systemd accepts both farms' instances of every template together, without a warning.
    let output = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    assert!(
        output.is_ok_and(|o| o.status.success()),
        "systemd-analyze is needed for this test: install systemd (apt-get install systemd), as .ci/systemd-check does"
    );
    let root = verify_root(&files);
    let mut instances = Vec::new();
    for template in units_all().into_iter().filter(|n| n.contains("@.")) {
        for farm in farms {
            instances.push(template.replace("@.", &format!("@{farm}.")));
        }
    }
    assert_eq!(instances.len(), 6, "{instances:?}");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.path().display()))
        .args(&instances)
        .current_dir("/")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
