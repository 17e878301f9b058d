//! Logging: human text on a terminal, one JSON object a line for log collectors, and a last line
//! of defence that masks every configured secret before a byte leaves the process.
//!
//! Depends on no other farmsync module; every module logs through `tracing`, none formats
//! log lines of its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Pretty,
    /// One JSON object a line: `timestamp`, `level`, `message`, `run_id`, the event's fields.
    Json,
}

impl LogFormat {
    /// The format to use: the one asked for, else JSON under systemd (`JOURNAL_STREAM` set), else pretty.
    pub fn resolve(asked: Option<LogFormat>) -> LogFormat {
        asked.unwrap_or_else(|| {
            if std::env::var_os("JOURNAL_STREAM").is_some() {
                LogFormat::Json
            } else {
                LogFormat::Pretty
            }
        })
    }
}

/// The format [`init`] chose, for lines written beside the subscriber ([`hint`]).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Installs the global subscriber writing to stderr. `level` is used unless `RUST_LOG` is set.
pub fn init(format: LogFormat, level: &str, secrets: Vec<String>) {
    // The scheduler crate narrates its own housekeeping at info; keep it to warnings unless
    // the user's filter says otherwise.
    let quiet = |f: EnvFilter| match "tokio_cron_scheduler=warn".parse() {
        Ok(directive) => f.add_directive(directive),
        Err(_) => f,
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            quiet(EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")))
        });
    let _ = FORMAT.set(format);
    let registered = Secrets::global();
    for secret in &secrets {
        registered.add_permanent(secret);
    }
    let writer = RedactingWriter::with_secrets(io::stderr, registered.clone());
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests, `demo` inside one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => registry.with(JsonLayer::new(writer)).try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
                    .with_target(false),
            )
            .try_init(),
    };
}

/// How many secrets learnt while running (rotated OAuth tokens) are masked: the newest ones. An
/// older token was rotated away that many times over, so it no longer opens anything, and a
/// daemon refreshing for a year must not check every log line against thousands of them.
const MAX_LEARNT_SECRETS: usize = 64;

/// The secrets a [`RedactingWriter`] masks: the config's, kept for the whole run, and those
/// learnt while running (OAuth tokens a refresh rotated in), each in every spelling a log line
/// may carry it — as is, JSON-escaped (the JSON format escapes `"`, `\` and control
/// characters), Debug-quoted (a field recorded with `?`), and both.
#[derive(Clone, Default)]
pub struct Secrets(Arc<RwLock<SecretList>>);

#[derive(Default)]
struct SecretList {
    permanent: Vec<String>,
    learnt: std::collections::VecDeque<String>,
    /// Every spelling of every secret, longest first.
    masks: Vec<String>,
}

impl SecretList {
    fn rebuild(&mut self) {
        let mut masks: Vec<String> = Vec::new();
        for secret in self.permanent.iter().chain(self.learnt.iter()) {
            for spelling in spellings(secret) {
                if !masks.contains(&spelling) {
                    masks.push(spelling);
                }
            }
        }
        // Longest first, so a secret containing another is masked whole.
        masks.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.masks = masks;
    }
}

/// The ways `secret` may be written into a log line.
fn spellings(secret: &str) -> Vec<String> {
    let json = |s: &str| {
        let quoted = serde_json::to_string(s).unwrap_or_default();
        quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or_default()
            .to_owned()
    };
    let debug = |s: &str| {
        let quoted = format!("{s:?}");
        quoted[1..quoted.len() - 1].to_owned()
    };
    let mut all = vec![secret.to_owned(), json(secret), debug(secret)];
    all.push(json(&all[2]));
    all.retain(|s| !s.is_empty());
    all.dedup();
    all
}

/// Secrets shorter than this are not masked: masking "a" would garble every line, and such a
/// secret is not one.
const MIN_SECRET_CHARS: usize = 4;

impl Secrets {
    /// The process's secrets, which [`init`] masks on stderr and [`register_secret`] adds to.
    pub fn global() -> &'static Secrets {
        static GLOBAL: OnceLock<Secrets> = OnceLock::new();
        GLOBAL.get_or_init(Secrets::default)
    }

    /// A set holding `secrets` for good.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Secrets {
        let set = Secrets::default();
        for secret in secrets {
            set.add_permanent(&secret);
        }
        set
    }

    /// Masks `secret` for the rest of the process (the config's secrets).
    pub fn add_permanent(&self, secret: &str) {
        if secret.chars().count() < MIN_SECRET_CHARS {
            return;
        }
        let mut list = self.write();
        if !list.permanent.iter().any(|s| s == secret) {
            list.permanent.push(secret.to_owned());
            list.rebuild();
        }
    }

    /// Masks `secret`, learnt while running (a rotated token), among the newest
    /// [`MAX_LEARNT_SECRETS`] learnt.
    pub fn add_learnt(&self, secret: &str) {
        if secret.chars().count() < MIN_SECRET_CHARS {
            return;
        }
        let mut list = self.write();
        if list
            .permanent
            .iter()
            .chain(list.learnt.iter())
            .any(|s| s == secret)
        {
            return;
        }
        list.learnt.push_back(secret.to_owned());
        while list.learnt.len() > MAX_LEARNT_SECRETS {
            list.learnt.pop_front();
        }
        list.rebuild();
    }

    /// Whether `secret` is masked.
    pub fn contains(&self, secret: &str) -> bool {
        let list = self.read();
        list.permanent
            .iter()
            .chain(list.learnt.iter())
            .any(|s| s == secret)
    }

    /// `text` with every spelling of every secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let list = self.read();
        let mut text = text.to_owned();
        for mask in &list.masks {
            if text.contains(mask.as_str()) {
                text = text.replace(mask.as_str(), "[redacted]");
            }
        }
        text
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SecretList> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SecretList> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Masks `secret` in everything logged from now on: an OAuth token rotated in during the run
/// (the HTTP clients register every token they learn).
pub fn register_secret(secret: &str) {
    Secrets::global().add_learnt(secret);
}

/// A [`MakeWriter`] that buffers each log line and masks secrets before writing it.
#[derive(Clone)]
pub struct RedactingWriter<M> {
    inner: M,
    secrets: Secrets,
}

impl<M> RedactingWriter<M> {
    /// Wraps `inner`, masking `secrets` (empty ones and those shorter than 4 characters are not
    /// masked).
    pub fn new(inner: M, secrets: Vec<String>) -> Self {
        Self::with_secrets(inner, Secrets::new(secrets))
    }

    /// Wraps `inner`, masking whatever `secrets` holds when each line is written.
    pub fn with_secrets(inner: M, secrets: Secrets) -> Self {
        RedactingWriter { inner, secrets }
    }
}

impl<'a, M> MakeWriter<'a> for RedactingWriter<M>
where
    M: MakeWriter<'a>,
{
    type Writer = LineBuffer<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        LineBuffer {
            buf: Vec::new(),
            inner: self.inner.make_writer(),
            secrets: self.secrets.clone(),
        }
    }
}

/// Collects one event's output and writes it, masked, when dropped.
pub struct LineBuffer<W: Write> {
    buf: Vec<u8>,
    inner: W,
    secrets: Secrets,
}

impl<W: Write> Write for LineBuffer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for LineBuffer<W> {
    fn drop(&mut self) {
        let text = self.secrets.redact(&String::from_utf8_lossy(&self.buf));
        let _ = self.inner.write_all(text.as_bytes());
        let _ = self.inner.flush();
    }
}

/// Writes a command's last word to stderr — its error, or a hint for the person at the
/// terminal — masked like every log line: `farmsync: <text>` as text, or, with the JSON format,
/// one JSON object like every other stderr line (`message` is `event`, the text is under
/// `field`, plus `extra` fields).
pub fn say(
    format: LogFormat,
    level: tracing::Level,
    event: &str,
    field: &str,
    text: &str,
    extra: &[(&str, Value)],
) {
    let line = match format {
        LogFormat::Pretty => format!("farmsync: {text}\n"),
        LogFormat::Json => {
            let mut object = Map::new();
            object.insert(
                "timestamp".into(),
                Value::String(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
            );
            object.insert("level".into(), Value::String(level.to_string()));
            object.insert("message".into(), Value::String(event.to_owned()));
            object.insert(field.into(), Value::String(text.to_owned()));
            for (key, value) in extra {
                object.insert((*key).to_owned(), value.clone());
            }
            object.insert("target".into(), Value::String("farmsync".into()));
            let mut line = Value::Object(object).to_string();
            line.push('\n');
            line
        }
    };
    let masked = Secrets::global().redact(&line);
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_all(masked.as_bytes());
    let _ = stderr.flush();
}

/// A failed command's error, the last line it writes (`command.failed` with `error` and
/// `exit_code` in JSON).
pub fn command_failed(format: LogFormat, message: &str, exit_code: u8) {
    say(
        format,
        tracing::Level::ERROR,
        "command.failed",
        "error",
        message,
        &[("exit_code", Value::from(exit_code))],
    );
}

/// A hint for the operator beside the command's output, in the format [`init`] chose
/// (`command.hint` with `hint` in JSON).
pub fn hint(text: &str) {
    let format = FORMAT.get().copied().unwrap_or(LogFormat::Pretty);
    say(
        format,
        tracing::Level::WARN,
        "command.hint",
        "hint",
        text,
        &[],
    );
}

/// Span fields recorded for the JSON layer.
struct SpanFields(Map<String, Value>);

/// Writes each event as one JSON object: `timestamp`, `level`, `message`, `target`, then the
/// fields of the enclosing spans (so `run_id` is at the top level inside a run), then the event's.
pub struct JsonLayer<M> {
    make_writer: M,
}

impl<M> JsonLayer<M> {
    /// A layer writing to `make_writer`.
    pub fn new(make_writer: M) -> Self {
        JsonLayer { make_writer }
    }
}

impl<S, M> Layer<S> for JsonLayer<M>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    M: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut visitor = JsonVisitor::default();
        attrs.record(&mut visitor);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(visitor.fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut visitor = JsonVisitor::default();
            values.record(&mut visitor);
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<SpanFields>() {
                fields.0.extend(visitor.fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut object = Map::new();
        object.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        object.insert(
            "level".into(),
            Value::String(event.metadata().level().to_string()),
        );
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    object.extend(fields.0.clone());
                }
            }
        }
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let message = visitor
            .fields
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        object.extend(visitor.fields);
        object.insert("message".into(), message);
        object.insert(
            "target".into(),
            Value::String(event.metadata().target().to_owned()),
        );
        let mut line = Value::Object(object).to_string();
        line.push('\n');
        let mut writer = self.make_writer.make_writer();
        let _ = writer.write_all(line.as_bytes());
    }
}

#[derive(Default)]
struct JsonVisitor {
    fields: Map<String, Value>,
}

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.fields
            .insert(field.name().to_owned(), Value::String(text));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_owned(), value.into());
    }
}

/// A [`MakeWriter`] into shared memory, for tests that read what was logged.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Each line parsed as a JSON object; a line that is not one is an error naming it.
    pub fn json_lines(&self) -> Result<Vec<BTreeMap<String, Value>>, String> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
            .collect()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_subscriber(logs: &CapturedLogs, secrets: Vec<String>) -> impl Subscriber + Send + Sync {
        tracing_subscriber::registry()
            .with(EnvFilter::new("trace"))
            .with(JsonLayer::new(RedactingWriter::new(logs.clone(), secrets)))
    }

    #[test]
    fn json_lines_are_flat_with_run_id_at_top_level() {
        let logs = CapturedLogs::default();
        tracing::subscriber::with_default(json_subscriber(&logs, vec![]), || {
            let span = tracing::info_span!("sync.run", run_id = "r-1");
            let _g = span.enter();
            tracing::info!(created = 3u64, failed = 0u64, "sync.run.finished");
        });
        let lines = logs.json_lines().unwrap();
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["message"], "sync.run.finished");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["run_id"], "r-1");
        assert_eq!(line["created"], 3);
        assert!(line.contains_key("timestamp"));
        assert!(!line.contains_key("fields"));
    }

    #[test]
    fn secrets_are_masked_in_every_format() {
        let logs = CapturedLogs::default();
        tracing::subscriber::with_default(
            json_subscriber(&logs, vec!["s3cr3t-XYZ".into(), "".into()]),
            || tracing::trace!(header = "Bearer s3cr3t-XYZ", "sending"),
        );
        let text = logs.text();
        assert!(!text.contains("s3cr3t-XYZ"), "{text}");
        assert!(text.contains("Bearer [redacted]"), "{text}");

        let pretty = CapturedLogs::default();
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(RedactingWriter::new(
                    pretty.clone(),
                    vec!["s3cr3t-XYZ".into()],
                ))
                .with_ansi(false),
        );
        tracing::subscriber::with_default(sub, || tracing::warn!("key was s3cr3t-XYZ"));
        let text = pretty.text();
        assert!(text.contains("key was [redacted]"), "{text}");
    }

    #[test]
    fn secrets_are_masked_however_a_line_escapes_them() {
        // JSON escapes `"` and `\`, and a field recorded with `?` is Debug-quoted (escaped too):
        // none of those spellings may slip past the mask.
        let secret = r#"pa"ss\w0rd-9"#;
        let logs = CapturedLogs::default();
        tracing::subscriber::with_default(json_subscriber(&logs, vec![secret.into()]), || {
            tracing::info!(header = %format!("Bearer {secret}"), "display");
            tracing::info!(token = ?secret, "debug");
            tracing::info!("in the message: {secret}");
        });
        let text = logs.text();
        for escaped in [r#"pa\"ss"#, r#"pa\\\"ss"#, "ss\\w0rd", "w0rd-9"] {
            assert!(!text.contains(escaped), "{escaped} in {text}");
        }
        assert_eq!(text.matches("[redacted]").count(), 3, "{text}");
        for line in logs.json_lines().unwrap() {
            assert!(line["message"].as_str().is_some(), "{line:?}");
        }

        let pretty = CapturedLogs::default();
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(RedactingWriter::new(pretty.clone(), vec![secret.into()]))
                .with_ansi(false),
        );
        tracing::subscriber::with_default(sub, || tracing::warn!(token = ?secret, "m"));
        let text = pretty.text();
        assert!(!text.contains("w0rd-9"), "{text}");
        assert!(
            text.contains("token=[redacted]") || text.contains("token=\"[redacted]\""),
            "{text}"
        );
    }

    #[test]
    fn a_secret_learnt_while_running_is_masked_from_then_on() {
        let secrets = Secrets::new(vec!["configured-key".into()]);
        let logs = CapturedLogs::default();
        let sub = tracing_subscriber::registry()
            .with(EnvFilter::new("trace"))
            .with(JsonLayer::new(RedactingWriter::with_secrets(
                logs.clone(),
                secrets.clone(),
            )));
        tracing::subscriber::with_default(sub, || {
            secrets.add_learnt("rotated-token-1");
            tracing::info!(token = "rotated-token-1", key = "configured-key", "after");
        });
        let text = logs.text();
        assert!(!text.contains("rotated-token-1"), "{text}");
        assert!(!text.contains("configured-key"), "{text}");
        assert!(secrets.contains("rotated-token-1"));
        // Only the newest learnt secrets are kept; the configured ones stay for good.
        for n in 0..MAX_LEARNT_SECRETS {
            secrets.add_learnt(&format!("later-token-{n}"));
        }
        assert!(!secrets.contains("rotated-token-1"));
        assert!(secrets.contains("configured-key"));
        assert!(secrets.contains(&format!("later-token-{}", MAX_LEARNT_SECRETS - 1)));
    }

    #[test]
    fn longer_secret_is_masked_whole_when_it_contains_a_shorter_one() {
        let logs = CapturedLogs::default();
        tracing::subscriber::with_default(
            json_subscriber(&logs, vec!["abcd".into(), "abcdefgh".into()]),
            || tracing::info!(v = "xabcdefghx", "m"),
        );
        let text = logs.text();
        assert!(text.contains("x[redacted]x"), "{text}");
        assert!(!text.contains("efgh"), "{text}");
    }
}
