//! No leaks: a config file's syntax error never quotes a secret's line, and the log redactor
//! masks the OAuth tokens a refresh rotates in during the run.

use std::sync::Arc;

use farmsync::config::Settings;
use farmsync::kounta::{KountaClient, MemoryTokenStore};
use farmsync::telemetry::{CapturedLogs, JsonLayer, RedactingWriter, Secrets};
use tracing_subscriber::layer::SubscriberExt;

use crate::client_support::{kounta_oauth_options, quick_retries, sandbox};
use crate::support::{Workdir, text};

const SECRET: &str = "s3cr3t-Kx9q-Zw7p";

/// Config files whose syntax error is on the line of a secret, and the key that line sets.
fn broken_configs() -> Vec<(String, usize, Option<&'static str>)> {
    vec![
        // An unterminated string.
        (
            format!("[kounta]\nclient_id = \"a\"\n[farmflow]\napi_key = \"{SECRET}\n"),
            4,
            Some("farmflow.api_key"),
        ),
        // A value without quotes.
        (
            format!("[farmflow]\napi_key = {SECRET}\n"),
            2,
            Some("farmflow.api_key"),
        ),
        // Text after the closing quote.
        (
            format!("[kounta]\nclient_secret = \"{SECRET}\" {SECRET}\n"),
            2,
            Some("kounta.client_secret"),
        ),
        // An invalid escape inside the secret.
        (
            format!("[webhooks]\nshared_secret = \"{SECRET}\\q{SECRET}\"\n"),
            2,
            Some("webhooks.shared_secret"),
        ),
        // A multi-line string never closed: the error is at the end of the file.
        (
            format!("[kounta]\nrefresh_token = \"\"\"{SECRET}\n{SECRET}\n"),
            4,
            None,
        ),
        // A line that is all secret (a paste gone wrong): no key is named from it.
        (format!("[farmflow]\n{SECRET}\n"), 2, None),
    ]
}

/// Whether `said` shows any part of the secret longer than a few characters.
fn shows_secret(said: &str) -> bool {
    SECRET
        .as_bytes()
        .windows(5)
        .any(|w| said.contains(std::str::from_utf8(w).unwrap()))
}

#[test]
fn a_syntax_error_on_a_secrets_line_names_file_line_column_and_key_never_the_text() {
    let dir = tempfile::tempdir().unwrap();
    for (n, (config, line, key)) in broken_configs().into_iter().enumerate() {
        let file = dir.path().join(format!("broken-{n}.toml"));
        std::fs::write(&file, &config).unwrap();
        let said = Settings::builder()
            .file(&file)
            .build()
            .unwrap_err()
            .to_string();
        assert!(!shows_secret(&said), "{config:?} → {said}");
        assert!(said.contains(&file.display().to_string()), "{said}");
        assert!(
            said.contains(&format!("line {line}, column ")),
            "{config:?} → {said}"
        );
        match key {
            Some(key) => assert!(said.contains(&format!("(key {key})")), "{said}"),
            None => assert!(!said.contains("(key "), "{said}"),
        }
    }
}

#[test]
fn a_command_meeting_the_syntax_error_prints_no_secret_in_either_log_format() {
    let (config, _, _) = broken_configs().remove(0);
    let w = Workdir::new(&config);
    for args in [
        vec!["check"],
        vec!["--log-format", "json", "sync"],
        vec!["status"],
    ] {
        let out = w.run(&args);
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(!shows_secret(&said), "{args:?}: {said}");
        assert!(said.contains("farmflow.api_key"), "{args:?}: {said}");
    }
}

#[tokio::test]
async fn tokens_rotated_during_the_run_are_masked_in_the_logs() {
    let sb = sandbox().await;
    sb.kounta().expire_access_tokens();
    let first_refresh = sb.kounta().refresh_token();
    let client = KountaClient::new(kounta_oauth_options(&sb), Arc::new(MemoryTokenStore::new()))
        .unwrap()
        .with_retry_policy(quick_retries());
    client.list().await.unwrap();
    let (access, refresh) = (sb.kounta().access_token(), sb.kounta().refresh_token());
    assert_ne!(refresh, first_refresh, "the refresh rotated the token");

    // The process's log writer (what `farmsync` installs on stderr) masks them from now on.
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::registry().with(JsonLayer::new(
        RedactingWriter::with_secrets(logs.clone(), Secrets::global().clone()),
    ));
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(header = %format!("Bearer {access}"), "sent");
        tracing::warn!(token = ?refresh, "stored");
    });
    let said = logs.text();
    assert!(!said.contains(&access), "{said}");
    assert!(!said.contains(&refresh), "{said}");
    assert_eq!(said.matches("[redacted]").count(), 2, "{said}");
}
