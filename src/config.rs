//! Settings: built-in defaults, then one `--config` file, then `FARMSYNC__SECTION__KEY`
//! environment variables; strictly validated, with every error naming the key and its source.
//!
//! Owns the config's shape, defaults and validation. Reads files and the environment and
//! nothing else: no network, no state DB. Other modules take what they need from
//! [`Settings`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::customer::Field;
use crate::policy::{
    ConflictWinner, CountryFormat, DeleteMode, Direction, FarmflowDelete, FieldDirections,
    KountaOnFarmflowDelete, Policy,
};

/// The built-in defaults, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "FARMSYNC__";

/// Keys that hold secrets: each may instead be given as `<key>_file = "/path"`.
const SECRET_KEYS: &[&str] = &[
    "kounta.client_secret",
    "kounta.refresh_token",
    "farmflow.api_key",
    "webhooks.signature_token",
    "webhooks.shared_secret",
    // A ping URL or an incoming-webhook URL is a credential: whoever has it can post.
    "alerts.healthcheck_url",
    "alerts.webhook_url",
];

/// Keys that are valid but have no default value.
const OPTIONAL_KEYS: &[&str] = &["kounta.company_id"];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The compiled-in defaults.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in defaults"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// A configuration problem, naming the key and where its value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or parsed as TOML.
    #[error("cannot read config file {path}: {message}")]
    File { path: PathBuf, message: String },
    /// A key that farmsync does not know.
    #[error("unknown config key {key} in {origin}")]
    UnknownKey { key: String, origin: Origin },
    /// A key whose value is wrong.
    #[error("invalid value for {key} in {origin}: {message}")]
    Invalid {
        key: String,
        origin: Origin,
        message: String,
    },
    /// A credential the chosen mode needs is empty.
    #[error(
        "{key} is empty, but {needed_for} needs it; set it in the config file, as {key}_file, or as {env}"
    )]
    MissingCredential {
        key: String,
        needed_for: String,
        env: String,
    },
}

/// The state store's settings.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// The SQLite file; created 0600.
    pub path: PathBuf,
}

/// The daemon's schedule.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// Seconds-first cron expression, as tokio-cron-scheduler reads it: the daemon's sweeps.
    pub cron: String,
    /// The daemon's quick cycles (`None` when `quick_cron = ""` turns them off).
    pub quick_cron: Option<String>,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A tracing filter directive (`info`, `farmsync=debug`, ...).
    pub level: String,
}

/// How farmsync authenticates to the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KountaAuthMode {
    /// `client_id:client_secret` as HTTP basic auth (own company only).
    Basic,
    /// OAuth bearer tokens, refreshed with a rotating refresh token.
    Oauth,
}

/// The CRM's settings.
#[derive(Clone)]
pub struct KountaSettings {
    pub base_url: Url,
    /// Discovered through `/companies/me` when not set.
    pub company_id: Option<i64>,
    pub auth: KountaAuthMode,
    pub client_id: String,
    pub client_secret: SecretString,
    /// OAuth only: the first refresh token; rotated ones live in the state DB.
    pub refresh_token: SecretString,
    pub requests_per_minute: u32,
    pub timeout: Duration,
}

/// FarmFlow's settings.
#[derive(Clone)]
pub struct FarmflowSettings {
    pub base_url: Url,
    pub api_key: SecretString,
    pub auth_header: String,
    pub auth_prefix: String,
    pub requests_per_minute: u32,
    pub timeout: Duration,
    pub country_format: CountryFormat,
}

/// The sync's policy settings.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub conflict_winner: ConflictWinner,
    pub max_delete_fraction: f64,
    pub farmflow_delete: FarmflowDelete,
    pub kounta_on_farmflow_delete: KountaOnFarmflowDelete,
    pub deleted_tag: String,
    /// Apply confirmed deletions, or queue them for a person.
    pub deletes: DeleteMode,
    /// When not empty, only CRM customers carrying this tag sync.
    pub kounta_tag: String,
    /// A CRM customer carrying this tag is left alone both ways (empty: off).
    pub pause_tag: String,
    /// False: FarmFlow customers are never created in the CRM.
    pub create_in_kounta: bool,
    /// False: CRM customers are never created in FarmFlow.
    pub create_in_farmflow: bool,
}

/// `[history]`.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// History rows older than this many days are pruned after each run.
    pub keep_days: u32,
}

/// The webhook listener's settings.
#[derive(Clone)]
pub struct WebhookSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The URL Kounta can reach; `http://<listen>` when not set.
    pub public_url: Url,
    pub signature_token: SecretString,
    pub shared_secret: SecretString,
}

/// Prometheus metrics: served by `farmsync run`, written to a file by `sync` and `run`.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Where `farmsync run` serves `/metrics` (`None` when `listen = ""`).
    pub listen: Option<SocketAddr>,
    /// The file rewritten (atomically) after every run, for node_exporter's textfile
    /// collector (`None` when `textfile = ""`).
    pub textfile: Option<PathBuf>,
}

/// Where farmsync announces how it is doing.
#[derive(Clone, Default)]
pub struct AlertSettings {
    /// Pinged healthchecks.io-style around every sweep (`<url>/start`, `<url>`, `<url>/fail`).
    pub healthcheck_url: Option<SecretString>,
    /// Receives one JSON POST per change of health.
    pub webhook_url: Option<SecretString>,
}

/// Every setting, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    pub state: StateSettings,
    pub schedule: ScheduleSettings,
    pub log: LogSettings,
    pub kounta: KountaSettings,
    pub farmflow: FarmflowSettings,
    pub sync: SyncSettings,
    /// `[fields]`: which way each canonical field may be copied.
    pub fields: FieldDirections,
    pub history: HistorySettings,
    pub webhooks: WebhookSettings,
    pub metrics: MetricsSettings,
    pub alerts: AlertSettings,
    /// Where each key's value came from, for error messages.
    origins: BTreeMap<String, Origin>,
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for KountaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KountaSettings")
            .field("base_url", &self.base_url.as_str())
            .field("company_id", &self.company_id)
            .field("auth", &self.auth)
            .field("client_id", &self.client_id)
            .field("client_secret", &REDACTED)
            .field("refresh_token", &REDACTED)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl fmt::Debug for FarmflowSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FarmflowSettings")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &REDACTED)
            .field("auth_header", &self.auth_header)
            .field("auth_prefix", &self.auth_prefix)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("timeout", &self.timeout)
            .field("country_format", &self.country_format)
            .finish()
    }
}

impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("public_url", &self.public_url.as_str())
            .field("signature_token", &REDACTED)
            .field("shared_secret", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for AlertSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |url: &Option<SecretString>| url.as_ref().map(|_| REDACTED);
        f.debug_struct("AlertSettings")
            .field("healthcheck_url", &shown(&self.healthcheck_url))
            .field("webhook_url", &shown(&self.webhook_url))
            .finish()
    }
}

/// Which credentials a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Both APIs (`sync`, `run`, `check`).
    BothApis,
    /// The CRM and the webhook secrets (`webhooks register|list|remove`).
    Webhooks,
}

impl Settings {
    /// A builder that reads only what it is given: tests use it without touching the process environment.
    pub fn builder() -> SettingsBuilder {
        SettingsBuilder::default()
    }

    /// Loads the defaults, then `file` if given, then the process's `FARMSYNC__…` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut vars = Vec::new();
        for (key, value) in std::env::vars_os() {
            let name = key.to_string_lossy().into_owned();
            if !name.to_uppercase().starts_with(ENV_PREFIX) {
                continue;
            }
            // A setting that is not valid UTF-8 cannot be what the user meant: refuse it rather
            // than drop it or read it as empty.
            let (Some(_), Some(value)) = (key.to_str(), value.to_str()) else {
                return Err(ConfigError::Invalid {
                    key: name.clone(),
                    origin: Origin::Env(name),
                    message: "not valid UTF-8".to_owned(),
                });
            };
            vars.push((name, value.to_owned()));
        }
        let mut builder = Settings::builder().env_vars(vars);
        if let Some(file) = file {
            builder = builder.file(file);
        }
        builder.build()
    }

    /// Where a key's value came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Fails with exit-2 material when a credential the command needs is empty.
    pub fn require_credentials(&self, needs: Needs) -> Result<(), ConfigError> {
        let mut required: Vec<(&str, &SecretString, &str)> = Vec::new();
        let client_id = SecretString::from(self.kounta.client_id.clone());
        let auth_name = match self.kounta.auth {
            KountaAuthMode::Basic => "kounta.auth = \"basic\"",
            KountaAuthMode::Oauth => "kounta.auth = \"oauth\"",
        };
        required.push(("kounta.client_id", &client_id, auth_name));
        required.push((
            "kounta.client_secret",
            &self.kounta.client_secret,
            auth_name,
        ));
        if self.kounta.auth == KountaAuthMode::Oauth {
            required.push((
                "kounta.refresh_token",
                &self.kounta.refresh_token,
                auth_name,
            ));
        }
        match needs {
            Needs::BothApis => {
                required.push((
                    "farmflow.api_key",
                    &self.farmflow.api_key,
                    "FarmFlow access",
                ));
                if self.webhooks.enabled {
                    required.push((
                        "webhooks.signature_token",
                        &self.webhooks.signature_token,
                        "webhooks.enabled = true",
                    ));
                    required.push((
                        "webhooks.shared_secret",
                        &self.webhooks.shared_secret,
                        "webhooks.enabled = true",
                    ));
                }
            }
            Needs::Webhooks => {
                required.push((
                    "webhooks.shared_secret",
                    &self.webhooks.shared_secret,
                    "webhook registration",
                ));
            }
        }
        for (key, value, needed_for) in required {
            if value.expose_secret().trim().is_empty() {
                return Err(ConfigError::MissingCredential {
                    key: key.to_owned(),
                    needed_for: needed_for.to_owned(),
                    env: env_var_for(key),
                });
            }
        }
        Ok(())
    }

    /// The sync policy these settings describe (`allow_mass_delete` comes from the command line).
    pub fn policy(&self, allow_mass_delete: bool) -> Policy {
        Policy {
            conflict_winner: self.sync.conflict_winner,
            farmflow_delete: self.sync.farmflow_delete,
            kounta_on_farmflow_delete: self.sync.kounta_on_farmflow_delete,
            deleted_tag: self.sync.deleted_tag.clone(),
            max_delete_fraction: self.sync.max_delete_fraction,
            deletes: self.sync.deletes,
            kounta_tag: self.sync.kounta_tag.clone(),
            pause_tag: self.sync.pause_tag.clone(),
            create_in_kounta: self.sync.create_in_kounta,
            create_in_farmflow: self.sync.create_in_farmflow,
            fields: self.fields,
            allow_mass_delete,
            country_format: self.farmflow.country_format,
        }
    }

    /// The lock file that keeps two writers off one state DB.
    pub fn lock_path(&self) -> PathBuf {
        let mut name = self.state.path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }
}

/// The environment variable that sets `section.key`.
pub fn env_var_for(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
}

/// Builds [`Settings`] from explicit layers.
#[derive(Debug, Default)]
pub struct SettingsBuilder {
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
}

/// One layer's values, flattened to `section.key`, with secrets from `_file` keys resolved.
type Layer = BTreeMap<String, (toml::Value, Origin)>;

impl SettingsBuilder {
    /// Layers a TOML file over the defaults.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Layers environment variables (only `FARMSYNC__…` ones are read) over the file.
    pub fn env_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(
            vars.into_iter()
                .filter(|(k, _)| k.to_uppercase().starts_with(ENV_PREFIX)),
        );
        self
    }

    /// Reads, layers and validates.
    pub fn build(self) -> Result<Settings, ConfigError> {
        let defaults: toml::Table =
            toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError::File {
                path: PathBuf::from("config/default.toml (built in)"),
                message: e.to_string(),
            })?;
        let known = known_keys(&defaults);

        let mut layers: Vec<Layer> = vec![flatten(&defaults, &Origin::Default, &known)?];
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: syntax_error(&text, &e, &known),
            })?;
            layers.push(flatten(&table, &Origin::File(path.clone()), &known)?);
        }
        layers.push(env_layer(&self.env, &known)?);

        // Later layers win, key by key (a secret and its `_file` form count as one key); the
        // config crate does the typed deserialisation.
        let mut merged: Layer = BTreeMap::new();
        for layer in layers {
            for (key, value) in layer {
                let twin = match key.strip_suffix("_file") {
                    Some(secret) if SECRET_KEYS.contains(&secret) => secret.to_owned(),
                    _ => format!("{key}_file"),
                };
                merged.remove(&twin);
                merged.insert(key, value);
            }
        }
        // Only the winning `_file` keys are read: an unreadable file that a later layer
        // overrides is no error.
        let merged = resolve_secret_files(merged)?;
        let mut builder = config::Config::builder();
        for (key, (value, _)) in &merged {
            builder = builder
                .set_override(key.as_str(), to_config_value(value))
                .map_err(|e| invalid(key, &merged, e.to_string()))?;
        }
        let raw: RawSettings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| from_config_error(e, &merged))?;
        let origins = merged
            .into_iter()
            .map(|(k, (_, origin))| (k, origin))
            .collect();
        raw.validate(origins)
    }
}

/// A TOML syntax error, told without quoting the file: the parser's own message prints the
/// offending line, which may hold a secret. Says the line, the column, the key when the line
/// sets one farmsync knows, and what was wrong.
fn syntax_error(text: &str, error: &toml::de::Error, known: &[String]) -> String {
    // The parser's description of the problem ("invalid basic string", "expected `=`") is one
    // line of its own words; only its rendering adds the file's text.
    let what = error.message().lines().next().unwrap_or_default().trim();
    let Some(span) = error.span() else {
        return format!("TOML syntax error: {what}");
    };
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    let key = key_at(text, line_start, known)
        .map(|k| format!(" (key {k})"))
        .unwrap_or_default();
    format!("TOML syntax error at line {line}, column {column}{key}: {what}")
}

/// The known key the line starting at `line_start` sets, going by the last table header above
/// it. Only a key in `known` is named: whatever else the line holds may be a secret's text.
fn key_at(text: &str, line_start: usize, known: &[String]) -> Option<String> {
    let line = text[line_start..].lines().next().unwrap_or_default();
    let (name, _) = line.split_once('=')?;
    let name = name.trim().trim_matches(|c| c == '"' || c == '\'');
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))?
        .trim_matches(|c| c == '[' || c == ']')
        .trim();
    let key = format!("{section}.{name}");
    known.contains(&key).then_some(key)
}

/// Every key the defaults define, plus the optional ones and the `_file` forms of secrets.
fn known_keys(defaults: &toml::Table) -> Vec<String> {
    let mut keys = Vec::new();
    for (section, value) in defaults {
        if let Some(table) = value.as_table() {
            keys.extend(table.keys().map(|k| format!("{section}.{k}")));
        }
    }
    keys.extend(OPTIONAL_KEYS.iter().map(|k| (*k).to_owned()));
    keys.extend(SECRET_KEYS.iter().map(|k| format!("{k}_file")));
    keys
}

/// Flattens a TOML document to `section.key`, rejecting unknown keys and resolving `_file` secrets.
fn flatten(table: &toml::Table, origin: &Origin, known: &[String]) -> Result<Layer, ConfigError> {
    let mut layer = Layer::new();
    for (section, value) in table {
        let Some(inner) = value.as_table() else {
            return Err(ConfigError::UnknownKey {
                key: section.clone(),
                origin: origin.clone(),
            });
        };
        for (key, value) in inner {
            let full = format!("{section}.{key}");
            if !known.contains(&full) {
                return Err(ConfigError::UnknownKey {
                    key: full,
                    origin: origin.clone(),
                });
            }
            layer.insert(full, (value.clone(), origin.clone()));
        }
    }
    reject_key_and_file(layer)
}

/// Reads the `FARMSYNC__SECTION__KEY` variables into a layer.
fn env_layer(vars: &[(String, String)], known: &[String]) -> Result<Layer, ConfigError> {
    let mut layer = Layer::new();
    for (var, value) in vars {
        let origin = Origin::Env(var.clone());
        let rest = &var[ENV_PREFIX.len()..];
        let key = rest.to_lowercase().replacen("__", ".", 1);
        if !known.contains(&key) {
            return Err(ConfigError::UnknownKey {
                key: var.clone(),
                origin,
            });
        }
        layer.insert(key, (toml::Value::String(value.clone()), origin));
    }
    reject_key_and_file(layer)
}

/// Giving a secret and its `_file` form in one layer is ambiguous: an error.
fn reject_key_and_file(layer: Layer) -> Result<Layer, ConfigError> {
    for secret in SECRET_KEYS {
        let file_key = format!("{secret}_file");
        if let (Some(_), Some((_, origin))) = (layer.get(*secret), layer.get(&file_key)) {
            return Err(ConfigError::Invalid {
                key: file_key.clone(),
                origin: origin.clone(),
                message: format!("give either {secret} or {secret}_file, not both"),
            });
        }
    }
    Ok(layer)
}

/// Replaces `<secret>_file` keys by the file's content under `<secret>`.
fn resolve_secret_files(mut layer: Layer) -> Result<Layer, ConfigError> {
    for secret in SECRET_KEYS {
        let file_key = format!("{secret}_file");
        let Some((value, origin)) = layer.remove(&file_key) else {
            continue;
        };
        let Some(path) = value.as_str() else {
            return Err(ConfigError::Invalid {
                key: file_key,
                origin,
                message: "expected a file path (a string)".to_owned(),
            });
        };
        let content = read_secret_file(path).map_err(|message| ConfigError::Invalid {
            key: file_key.clone(),
            origin: origin.clone(),
            message,
        })?;
        let content = content.strip_suffix('\n').unwrap_or(&content);
        let content = content.strip_suffix('\r').unwrap_or(content);
        layer.insert(
            (*secret).to_owned(),
            (toml::Value::String(content.to_owned()), origin),
        );
    }
    Ok(layer)
}

/// The largest secret file read: a key or token is at most a few KiB, so a bigger file (or a
/// device that never ends, like `/dev/zero`) is a mistake and must not be read into memory.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Reads a secret file, refusing one over [`MAX_SECRET_FILE_BYTES`].
fn read_secret_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "{path} is larger than {} KiB; a secret file holds only the secret",
            MAX_SECRET_FILE_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("cannot read {path}: it is not UTF-8 text"))
}

fn to_config_value(value: &toml::Value) -> config::Value {
    use config::ValueKind;
    let kind = match value {
        toml::Value::String(s) => ValueKind::String(s.clone()),
        toml::Value::Integer(i) => ValueKind::I64(*i),
        toml::Value::Float(f) => ValueKind::Float(*f),
        toml::Value::Boolean(b) => ValueKind::Boolean(*b),
        toml::Value::Datetime(d) => ValueKind::String(d.to_string()),
        toml::Value::Array(items) => ValueKind::Array(items.iter().map(to_config_value).collect()),
        toml::Value::Table(t) => ValueKind::Table(
            t.iter()
                .map(|(k, v)| (k.clone(), to_config_value(v)))
                .collect(),
        ),
    };
    config::Value::new(None, kind)
}

fn invalid(key: &str, merged: &Layer, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        origin: merged
            .get(key)
            .map(|(_, o)| o.clone())
            .unwrap_or(Origin::Default),
        message,
    }
}

fn from_config_error(error: config::ConfigError, merged: &Layer) -> ConfigError {
    match error {
        config::ConfigError::Type {
            unexpected,
            expected,
            key: Some(key),
            ..
        } => invalid(
            &key,
            merged,
            format!("expected {expected}, found {unexpected}"),
        ),
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => invalid(&key, merged, error.to_string()),
        other => {
            // serde's messages name the field; find which key it was.
            let text = other.to_string();
            let key = merged
                .keys()
                .find(|k| text.contains(&format!("`{}`", k.rsplit('.').next().unwrap_or(k))))
                .cloned()
                .unwrap_or_else(|| "config".to_owned());
            invalid(&key, merged, text)
        }
    }
}

#[derive(Deserialize)]
struct RawSettings {
    state: RawState,
    schedule: RawSchedule,
    log: RawLog,
    kounta: RawKounta,
    farmflow: RawFarmflow,
    sync: RawSync,
    fields: RawFields,
    history: RawHistory,
    webhooks: RawWebhooks,
    metrics: RawMetrics,
    alerts: RawAlerts,
}

#[derive(Deserialize)]
struct RawState {
    path: String,
}

#[derive(Deserialize)]
struct RawSchedule {
    cron: String,
    quick_cron: String,
}

#[derive(Deserialize)]
struct RawLog {
    level: String,
}

#[derive(Deserialize)]
struct RawKounta {
    base_url: String,
    company_id: Option<i64>,
    auth: KountaAuthMode,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    requests_per_minute: i64,
    timeout_secs: i64,
}

#[derive(Deserialize)]
struct RawFarmflow {
    base_url: String,
    api_key: String,
    auth_header: String,
    auth_prefix: String,
    requests_per_minute: i64,
    timeout_secs: i64,
    country_format: CountryFormat,
}

#[derive(Deserialize)]
struct RawSync {
    conflict_winner: ConflictWinner,
    max_delete_fraction: f64,
    farmflow_delete: FarmflowDelete,
    kounta_on_farmflow_delete: KountaOnFarmflowDelete,
    deleted_tag: String,
    deletes: DeleteMode,
    kounta_tag: String,
    pause_tag: String,
    create_in_kounta: bool,
    create_in_farmflow: bool,
}

#[derive(Deserialize)]
struct RawFields {
    first_name: Direction,
    last_name: Direction,
    email: Direction,
    phone: Direction,
    line1: Direction,
    line2: Direction,
    city: Direction,
    state: Direction,
    postal_code: Direction,
    country: Direction,
}

#[derive(Deserialize)]
struct RawHistory {
    keep_days: i64,
}

#[derive(Deserialize)]
struct RawWebhooks {
    enabled: bool,
    listen: String,
    public_url: String,
    signature_token: String,
    shared_secret: String,
}

#[derive(Deserialize)]
struct RawMetrics {
    listen: String,
    textfile: String,
}

#[derive(Deserialize)]
struct RawAlerts {
    healthcheck_url: String,
    webhook_url: String,
}

impl RawSettings {
    fn validate(self, origins: BTreeMap<String, Origin>) -> Result<Settings, ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            origin: origins.get(key).cloned().unwrap_or(Origin::Default),
            message,
        };

        if self.state.path.trim().is_empty() {
            return Err(bad("state.path", "must not be empty".into()));
        }
        crate::schedule::parse(&self.schedule.cron).map_err(|m| bad("schedule.cron", m))?;
        let quick_cron = self.schedule.quick_cron.trim().to_owned();
        if !quick_cron.is_empty() {
            crate::schedule::parse(&quick_cron).map_err(|m| bad("schedule.quick_cron", m))?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| bad("log.level", format!("not a log level or filter: {e}")))?;

        let kounta_url =
            parse_http_url(&self.kounta.base_url).map_err(|m| bad("kounta.base_url", m))?;
        let farmflow_url =
            parse_http_url(&self.farmflow.base_url).map_err(|m| bad("farmflow.base_url", m))?;
        if let Some(id) = self.kounta.company_id
            && id <= 0
        {
            return Err(bad(
                "kounta.company_id",
                "must be a positive integer".into(),
            ));
        }
        let rate = |key: &str, v: i64| -> Result<u32, ConfigError> {
            u32::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad(key, format!("must be a positive integer, got {v}")))
        };
        let timeout = |key: &str, v: i64| -> Result<Duration, ConfigError> {
            if (1..=3600).contains(&v) {
                Ok(Duration::from_secs(v as u64))
            } else {
                Err(bad(
                    key,
                    format!("must be between 1 and 3600 seconds, got {v}"),
                ))
            }
        };
        let kounta_rate = rate(
            "kounta.requests_per_minute",
            self.kounta.requests_per_minute,
        )?;
        let farmflow_rate = rate(
            "farmflow.requests_per_minute",
            self.farmflow.requests_per_minute,
        )?;
        let kounta_timeout = timeout("kounta.timeout_secs", self.kounta.timeout_secs)?;
        let farmflow_timeout = timeout("farmflow.timeout_secs", self.farmflow.timeout_secs)?;

        let header = self.farmflow.auth_header.trim();
        if header.is_empty() || reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err()
        {
            return Err(bad(
                "farmflow.auth_header",
                format!("{header:?} is not a valid HTTP header name"),
            ));
        }

        let fraction = self.sync.max_delete_fraction;
        if !(0.0..=1.0).contains(&fraction) {
            return Err(bad(
                "sync.max_delete_fraction",
                format!("must be between 0.0 and 1.0, got {fraction}"),
            ));
        }
        if self.sync.deleted_tag.trim().is_empty() {
            return Err(bad("sync.deleted_tag", "must not be empty".into()));
        }
        let kounta_tag = self.sync.kounta_tag.trim().to_owned();
        let pause_tag = self.sync.pause_tag.trim().to_owned();
        if !kounta_tag.is_empty() && kounta_tag.eq_ignore_ascii_case(&pause_tag) {
            return Err(bad(
                "sync.pause_tag",
                format!("must differ from sync.kounta_tag (both are {kounta_tag:?})"),
            ));
        }
        if !kounta_tag.is_empty() && kounta_tag.eq_ignore_ascii_case(self.sync.deleted_tag.trim()) {
            return Err(bad(
                "sync.kounta_tag",
                format!("must differ from sync.deleted_tag (both are {kounta_tag:?})"),
            ));
        }
        let keep_days = u32::try_from(self.history.keep_days)
            .ok()
            .filter(|d| *d > 0)
            .ok_or_else(|| {
                bad(
                    "history.keep_days",
                    format!(
                        "must be a positive number of days, got {}",
                        self.history.keep_days
                    ),
                )
            })?;
        let mut fields = FieldDirections::default();
        for (field, direction) in [
            (Field::FirstName, self.fields.first_name),
            (Field::LastName, self.fields.last_name),
            (Field::Email, self.fields.email),
            (Field::Phone, self.fields.phone),
            (Field::Line1, self.fields.line1),
            (Field::Line2, self.fields.line2),
            (Field::City, self.fields.city),
            (Field::State, self.fields.state),
            (Field::PostalCode, self.fields.postal_code),
            (Field::Country, self.fields.country),
        ] {
            fields.set(field, direction);
        }

        let listen: SocketAddr = self.webhooks.listen.parse().map_err(|_| {
            bad(
                "webhooks.listen",
                format!(
                    "{:?} is not an address and port like 127.0.0.1:8787",
                    self.webhooks.listen
                ),
            )
        })?;
        let public_url = if self.webhooks.public_url.trim().is_empty() {
            Url::parse(&format!("http://{listen}"))
                .map_err(|e| bad("webhooks.listen", e.to_string()))?
        } else {
            parse_http_url(&self.webhooks.public_url).map_err(|m| bad("webhooks.public_url", m))?
        };

        let metrics_listen = match self.metrics.listen.trim() {
            "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                bad(
                    "metrics.listen",
                    format!("{text:?} is not an address and port like 127.0.0.1:9187"),
                )
            })?),
        };
        if let Some(addr) = metrics_listen
            && self.webhooks.enabled
            && addr == listen
            && addr.port() != 0
        {
            return Err(bad(
                "metrics.listen",
                format!("{addr} is webhooks.listen too; give metrics a port of its own"),
            ));
        }
        let textfile = match self.metrics.textfile.trim() {
            "" => None,
            text if !text.ends_with(".prom") => {
                return Err(bad(
                    "metrics.textfile",
                    format!(
                        "{text:?} does not end in .prom, and node_exporter's textfile collector reads only *.prom files"
                    ),
                ));
            }
            text => Some(PathBuf::from(text)),
        };
        let alert_url = |key: &str, text: &str| -> Result<Option<SecretString>, ConfigError> {
            if text.trim().is_empty() {
                return Ok(None);
            }
            // The message must not quote the URL: it is a secret.
            let url = Url::parse(text.trim()).map_err(|e| bad(key, format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(bad(key, "not an http:// or https:// URL".to_owned()));
            }
            Ok(Some(SecretString::from(text.trim().to_owned())))
        };
        let alerts = AlertSettings {
            healthcheck_url: alert_url("alerts.healthcheck_url", &self.alerts.healthcheck_url)?,
            webhook_url: alert_url("alerts.webhook_url", &self.alerts.webhook_url)?,
        };

        Ok(Settings {
            state: StateSettings {
                path: PathBuf::from(self.state.path),
            },
            schedule: ScheduleSettings {
                cron: self.schedule.cron,
                quick_cron: (!quick_cron.is_empty()).then_some(quick_cron),
            },
            log: LogSettings {
                level: self.log.level,
            },
            kounta: KountaSettings {
                base_url: kounta_url,
                company_id: self.kounta.company_id,
                auth: self.kounta.auth,
                client_id: self.kounta.client_id,
                client_secret: self.kounta.client_secret.into(),
                refresh_token: self.kounta.refresh_token.into(),
                requests_per_minute: kounta_rate,
                timeout: kounta_timeout,
            },
            farmflow: FarmflowSettings {
                base_url: farmflow_url,
                api_key: self.farmflow.api_key.into(),
                auth_header: header.to_owned(),
                auth_prefix: self.farmflow.auth_prefix,
                requests_per_minute: farmflow_rate,
                timeout: farmflow_timeout,
                country_format: self.farmflow.country_format,
            },
            sync: SyncSettings {
                conflict_winner: self.sync.conflict_winner,
                max_delete_fraction: fraction,
                farmflow_delete: self.sync.farmflow_delete,
                kounta_on_farmflow_delete: self.sync.kounta_on_farmflow_delete,
                deleted_tag: self.sync.deleted_tag,
                deletes: self.sync.deletes,
                kounta_tag,
                pause_tag,
                create_in_kounta: self.sync.create_in_kounta,
                create_in_farmflow: self.sync.create_in_farmflow,
            },
            fields,
            history: HistorySettings { keep_days },
            webhooks: WebhookSettings {
                enabled: self.webhooks.enabled,
                listen,
                public_url,
                signature_token: self.webhooks.signature_token.into(),
                shared_secret: self.webhooks.shared_secret.into(),
            },
            metrics: MetricsSettings {
                listen: metrics_listen,
                textfile,
            },
            alerts,
            origins,
        })
    }
}

/// Parses an `http` or `https` URL.
fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(format!("{text:?} is not an http:// or https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        path
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_load_and_match_the_design() {
        let s = Settings::builder().build().unwrap();
        assert_eq!(s.state.path, PathBuf::from("farmsync.db"));
        assert_eq!(s.schedule.cron, "0 */5 * * * *");
        assert_eq!(s.kounta.base_url.as_str(), "https://api.kounta.com/v1");
        assert_eq!(s.kounta.auth, KountaAuthMode::Basic);
        assert_eq!(s.kounta.requests_per_minute, 60);
        assert_eq!(s.farmflow.requests_per_minute, 120);
        assert_eq!(s.farmflow.auth_header, "Authorization");
        assert_eq!(s.farmflow.auth_prefix, "Bearer ");
        assert_eq!(s.farmflow.country_format, CountryFormat::Alpha3);
        assert_eq!(s.sync.farmflow_delete, FarmflowDelete::ProtectOrders);
        assert_eq!(
            s.sync.kounta_on_farmflow_delete,
            KountaOnFarmflowDelete::Tag
        );
        assert_eq!(s.webhooks.public_url.as_str(), "http://127.0.0.1:8787/");
        assert_eq!(s.origin("kounta.base_url"), Origin::Default);
    }

    #[test]
    fn file_then_env_layer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(
            &dir,
            "f.toml",
            "[kounta]\nrequests_per_minute = 180\nauth = \"oauth\"\n[farmflow]\napi_key = \"from-file\"\n",
        );
        let s = Settings::builder()
            .file(&file)
            .env_vars(env(&[
                ("FARMSYNC__FARMFLOW__API_KEY", "from-env"),
                ("UNRELATED", "x"),
            ]))
            .build()
            .unwrap();
        assert_eq!(s.kounta.requests_per_minute, 180);
        assert_eq!(s.kounta.auth, KountaAuthMode::Oauth);
        assert_eq!(s.farmflow.api_key.expose_secret(), "from-env");
        assert_eq!(s.origin("kounta.requests_per_minute"), Origin::File(file));
        assert_eq!(
            s.origin("farmflow.api_key"),
            Origin::Env("FARMSYNC__FARMFLOW__API_KEY".into())
        );
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(&dir, "bad.toml", "[kounta]\nbse_url = \"x\"\n");
        let err = Settings::builder().file(&file).build().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("kounta.bse_url"), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
    }

    #[test]
    fn unknown_section_and_unknown_env_var_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(&dir, "bad.toml", "[kountaa]\nbase_url = \"x\"\n");
        let text = Settings::builder()
            .file(&file)
            .build()
            .unwrap_err()
            .to_string();
        assert!(text.contains("kountaa.base_url"), "{text}");

        let text = Settings::builder()
            .env_vars(env(&[("FARMSYNC__FARMFLOW__APIKEY", "x")]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(text.contains("FARMSYNC__FARMFLOW__APIKEY"), "{text}");
    }

    #[test]
    fn wrong_types_and_ranges_name_the_key_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "[kounta]\nrequests_per_minute = \"lots\"\n",
                "kounta.requests_per_minute",
            ),
            (
                "[kounta]\nrequests_per_minute = 0\n",
                "kounta.requests_per_minute",
            ),
            ("[farmflow]\ntimeout_secs = -1\n", "farmflow.timeout_secs"),
            ("[kounta]\nbase_url = \"not a url\"\n", "kounta.base_url"),
            ("[kounta]\nbase_url = \"ftp://x\"\n", "kounta.base_url"),
            (
                "[schedule]\ncron = \"every five minutes\"\n",
                "schedule.cron",
            ),
            ("[schedule]\ncron = \"*/5 * * * *\"\n", "schedule.cron"),
            (
                "[sync]\nmax_delete_fraction = 1.5\n",
                "sync.max_delete_fraction",
            ),
            (
                "[sync]\nfarmflow_delete = \"sometimes\"\n",
                "sync.farmflow_delete",
            ),
            ("[kounta]\nauth = \"token\"\n", "kounta.auth"),
            ("[webhooks]\nlisten = \"localhost\"\n", "webhooks.listen"),
            (
                "[farmflow]\nauth_header = \"Bad Header\"\n",
                "farmflow.auth_header",
            ),
            ("[log]\nlevel = \"lots=of=noise\"\n", "log.level"),
            ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen"),
            (
                "[metrics]\ntextfile = \"/tmp/farmsync.txt\"\n",
                "metrics.textfile",
            ),
            ("[metrics]\nlistne = \"\"\n", "metrics.listne"),
            (
                "[alerts]\nhealthcheck_url = \"hc-ping.com/abc\"\n",
                "alerts.healthcheck_url",
            ),
            (
                "[alerts]\nwebhook_url = \"ftp://x/y\"\n",
                "alerts.webhook_url",
            ),
            (
                "[webhooks]\nenabled = true\nlisten = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"127.0.0.1:9000\"\n",
                "metrics.listen",
            ),
        ];
        for (text, key) in cases {
            let file = write_file(&dir, "c.toml", text);
            let err = Settings::builder()
                .file(&file)
                .build()
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text:?} → {err}");
            assert!(err.contains("c.toml"), "{text:?} → {err}");
        }
    }

    #[test]
    fn env_values_are_typed_and_errors_name_the_variable() {
        let s = Settings::builder()
            .env_vars(env(&[("FARMSYNC__KOUNTA__REQUESTS_PER_MINUTE", "100000")]))
            .build()
            .unwrap();
        assert_eq!(s.kounta.requests_per_minute, 100_000);
        let err = Settings::builder()
            .env_vars(env(&[("FARMSYNC__KOUNTA__TIMEOUT_SECS", "soon")]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("kounta.timeout_secs"), "{err}");
        assert!(err.contains("FARMSYNC__KOUNTA__TIMEOUT_SECS"), "{err}");
    }

    #[test]
    fn secrets_from_files_trim_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write_file(&dir, "key", "abc123\n");
        let file = write_file(
            &dir,
            "f.toml",
            &format!(
                "[farmflow]\napi_key_file = {:?}\n",
                secret.display().to_string()
            ),
        );
        let s = Settings::builder().file(&file).build().unwrap();
        assert_eq!(s.farmflow.api_key.expose_secret(), "abc123");

        let s = Settings::builder()
            .env_vars(env(&[(
                "FARMSYNC__KOUNTA__CLIENT_SECRET_FILE",
                secret.to_str().unwrap(),
            )]))
            .build()
            .unwrap();
        assert_eq!(s.kounta.client_secret.expose_secret(), "abc123");
    }

    #[test]
    fn key_and_key_file_in_one_layer_is_an_error_but_later_layers_win() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write_file(&dir, "key", "from-file\n");
        let both = write_file(
            &dir,
            "both.toml",
            &format!(
                "[farmflow]\napi_key = \"x\"\napi_key_file = {:?}\n",
                secret.display().to_string()
            ),
        );
        let err = Settings::builder()
            .file(&both)
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("farmflow.api_key_file"), "{err}");

        let plain = write_file(&dir, "plain.toml", "[farmflow]\napi_key = \"in-file\"\n");
        let s = Settings::builder()
            .file(&plain)
            .env_vars(env(&[(
                "FARMSYNC__FARMFLOW__API_KEY_FILE",
                secret.to_str().unwrap(),
            )]))
            .build()
            .unwrap();
        assert_eq!(s.farmflow.api_key.expose_secret(), "from-file");
    }

    #[test]
    fn an_unreadable_secret_file_overridden_by_a_later_layer_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(
            &dir,
            "f.toml",
            "[farmflow]\napi_key_file = \"/nonexistent/credential\"\n",
        );
        let s = Settings::builder()
            .file(&file)
            .env_vars(env(&[("FARMSYNC__FARMFLOW__API_KEY", "from-env")]))
            .build()
            .unwrap();
        assert_eq!(s.farmflow.api_key.expose_secret(), "from-env");
        // Without the override, the file is read and its absence named.
        let err = Settings::builder()
            .file(&file)
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/credential"), "{err}");
    }

    #[test]
    fn missing_secret_file_names_the_key() {
        let err = Settings::builder()
            .env_vars(env(&[(
                "FARMSYNC__FARMFLOW__API_KEY_FILE",
                "/nonexistent/key",
            )]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("farmflow.api_key_file"), "{err}");
        assert!(err.contains("/nonexistent/key"), "{err}");
    }

    #[test]
    fn credentials_required_per_auth_mode() {
        let s = Settings::builder().build().unwrap();
        let err = s
            .require_credentials(Needs::BothApis)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kounta.client_id"), "{err}");

        let ok = Settings::builder()
            .env_vars(env(&[
                ("FARMSYNC__KOUNTA__CLIENT_ID", "id"),
                ("FARMSYNC__KOUNTA__CLIENT_SECRET", "secret"),
                ("FARMSYNC__FARMFLOW__API_KEY", "key"),
            ]))
            .build()
            .unwrap();
        ok.require_credentials(Needs::BothApis).unwrap();

        let oauth = Settings::builder()
            .env_vars(env(&[
                ("FARMSYNC__KOUNTA__AUTH", "oauth"),
                ("FARMSYNC__KOUNTA__CLIENT_ID", "id"),
                ("FARMSYNC__KOUNTA__CLIENT_SECRET", "secret"),
                ("FARMSYNC__FARMFLOW__API_KEY", "key"),
            ]))
            .build()
            .unwrap();
        let err = oauth
            .require_credentials(Needs::BothApis)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kounta.refresh_token"), "{err}");
        assert!(err.contains("FARMSYNC__KOUNTA__REFRESH_TOKEN"), "{err}");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = Settings::builder()
            .env_vars(env(&[
                ("FARMSYNC__KOUNTA__CLIENT_SECRET", "s3cr3t-A"),
                ("FARMSYNC__KOUNTA__REFRESH_TOKEN", "s3cr3t-B"),
                ("FARMSYNC__FARMFLOW__API_KEY", "s3cr3t-C"),
                ("FARMSYNC__WEBHOOKS__SIGNATURE_TOKEN", "s3cr3t-D"),
                ("FARMSYNC__WEBHOOKS__SHARED_SECRET", "s3cr3t-E"),
                (
                    "FARMSYNC__ALERTS__HEALTHCHECK_URL",
                    "https://hc.example/s3cr3t-F",
                ),
                (
                    "FARMSYNC__ALERTS__WEBHOOK_URL",
                    "https://hooks.example/s3cr3t-G",
                ),
            ]))
            .build()
            .unwrap();
        let text = format!("{s:?} {s:#?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("[redacted]"));
    }

    #[test]
    fn metrics_and_alerts_are_off_by_default_and_read_when_set() {
        let s = Settings::builder().build().unwrap();
        assert!(s.metrics.listen.is_none() && s.metrics.textfile.is_none());
        assert!(s.alerts.healthcheck_url.is_none() && s.alerts.webhook_url.is_none());

        let dir = tempfile::tempdir().unwrap();
        let url = write_file(&dir, "hook", "https://hooks.example/T0/B0/xyz\n");
        let file = write_file(
            &dir,
            "f.toml",
            &format!(
                "[metrics]\nlisten = \"127.0.0.1:9187\"\ntextfile = \"/var/lib/node_exporter/farmsync.prom\"\n\
                 [alerts]\nhealthcheck_url = \"https://hc-ping.example/abc\"\nwebhook_url_file = {:?}\n",
                url.display().to_string()
            ),
        );
        let s = Settings::builder().file(&file).build().unwrap();
        assert_eq!(s.metrics.listen, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(
            s.metrics.textfile,
            Some(PathBuf::from("/var/lib/node_exporter/farmsync.prom"))
        );
        let exposed = |u: &Option<SecretString>| u.as_ref().unwrap().expose_secret().to_owned();
        assert_eq!(
            exposed(&s.alerts.healthcheck_url),
            "https://hc-ping.example/abc"
        );
        assert_eq!(
            exposed(&s.alerts.webhook_url),
            "https://hooks.example/T0/B0/xyz"
        );
    }

    #[test]
    fn a_bad_alert_url_is_named_without_being_quoted() {
        let err = Settings::builder()
            .env_vars(env(&[("FARMSYNC__ALERTS__WEBHOOK_URL", "hooks s3cr3t")]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("alerts.webhook_url"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn example_config_is_valid_and_documents_every_key() {
        let example = include_str!("../config/example.toml");
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(&dir, "example.toml", example);
        Settings::builder().file(&file).build().unwrap();
        let defaults: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
        for key in known_keys(&defaults) {
            let name = key.rsplit('.').next().unwrap();
            assert!(
                example.contains(name),
                "config/example.toml does not mention {key}"
            );
        }
    }
}
