//! Logging: human text on a terminal, one JSON object a line for log collectors, and a last line
//! of defence that masks every configured secret before a byte leaves the process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

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
    let writer = RedactingWriter::new(io::stderr, secrets);
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

/// A [`MakeWriter`] that buffers each log line and masks secrets before writing it.
#[derive(Clone)]
pub struct RedactingWriter<M> {
    inner: M,
    secrets: Arc<Vec<String>>,
}

impl<M> RedactingWriter<M> {
    /// Wraps `inner`; empty secrets and secrets shorter than 4 characters are not masked
    /// (masking "a" would garble every line, and such a secret is not one).
    pub fn new(inner: M, secrets: Vec<String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        RedactingWriter {
            inner,
            secrets: Arc::new(secrets),
        }
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
    secrets: Arc<Vec<String>>,
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
        let mut text = String::from_utf8_lossy(&self.buf).into_owned();
        for secret in self.secrets.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        let _ = self.inner.write_all(text.as_bytes());
        let _ = self.inner.flush();
    }
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
