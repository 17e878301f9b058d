//! Security checks: no secret in any output, even at `RUST_LOG=trace`; the state DB (and its
//! WAL and shared-memory files) private to the user, whatever the umask; TLS verification that
//! no config typo can switch off, and an untrusted certificate refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use farmsync::sandbox::{
    FarmflowOptions, Fault, FaultAction, KountaOptions, OauthOptions, Sandbox, SandboxOptions,
    Target, When, sample_farm,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::proof_support::{run_farmsync, sandbox_config};
use crate::support::{Workdir, text};

const CRM_SECRET: &str = "crm-secret-Q7ZK2W9X";
const REFRESH: &str = "refresh-token-V3MT8R1P";
const FF_KEY: &str = "farmflow-key-H6NB4D0S";
const SIGNING: &str = "signing-token-J2LC5F7Y";
const SHARED: &str = "shared-secret-U9EA3G6K";

/// A sandbox whose credentials are distinctive strings that grep cannot miss.
async fn sandbox_with_distinctive_secrets() -> Sandbox {
    let sb = Sandbox::start(SandboxOptions {
        kounta: KountaOptions {
            client_secret: CRM_SECRET.into(),
            oauth: OauthOptions {
                refresh_token: REFRESH.into(),
                ..OauthOptions::default()
            },
            webhook_signature_token: SIGNING.into(),
            ..KountaOptions::default()
        },
        farmflow: FarmflowOptions {
            api_key: FF_KEY.into(),
            ..FarmflowOptions::default()
        },
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    sb.seed(&sample_farm()).unwrap();
    sb
}

/// Every secret value a run could leak: the configured ones, the basic-auth header built from
/// them, and the tokens the CRM issued (rotated refresh tokens, access tokens).
fn secrets_of(sb: &Sandbox) -> Vec<String> {
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{CRM_SECRET}", sb.kounta().client_id()));
    vec![
        CRM_SECRET.into(),
        REFRESH.into(),
        FF_KEY.into(),
        SIGNING.into(),
        SHARED.into(),
        basic,
        sb.kounta().refresh_token(),
        sb.kounta().access_token(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_output_even_at_trace_level() {
    let sb = sandbox_with_distinctive_secrets().await;
    let webhooks =
        format!("[webhooks]\nsignature_token = {SIGNING:?}\nshared_secret = {SHARED:?}\n");
    let basic = Workdir::new(&sandbox_config(&sb, &webhooks));
    let oauth = Workdir::new(&sandbox_config(&sb, &webhooks).replacen(
        "client_secret =",
        &format!("auth = \"oauth\"\nrefresh_token = {REFRESH:?}\nclient_secret ="),
        1,
    ));

    let mut outputs = Vec::new();
    for w in [&basic, &oauth] {
        for args in [
            &["sync"][..],
            &["sync"],
            &["--log-format", "json", "sync"],
            &["sync", "--dry-run"],
            &["check"],
            &["--log-format", "json", "check"],
            &["status", "--json"],
        ] {
            let out = run_farmsync(w, args, &[("RUST_LOG", "trace")]).await;
            outputs.push((args.join(" "), text(&out.stdout), text(&out.stderr)));
        }
    }
    // A refused key must not be echoed either.
    let wrong = Workdir::new(&sandbox_config(&sb, "").replace(FF_KEY, "wrong-key-T4PX8M2Q"));
    let out = run_farmsync(&wrong, &["check"], &[("RUST_LOG", "trace")]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
    outputs.push((
        "check (wrong key)".into(),
        text(&out.stdout),
        text(&out.stderr),
    ));

    let mut secrets = secrets_of(&sb);
    secrets.push("wrong-key-T4PX8M2Q".into());
    let mut lines = 0;
    for (args, stdout, stderr) in &outputs {
        lines += stdout.lines().count() + stderr.lines().count();
        for secret in &secrets {
            assert!(
                !stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()),
                "`farmsync {args}` printed a secret ({}…):\n{stdout}\n{stderr}",
                &secret[..6]
            );
        }
    }
    // The check can fail: trace output was really produced, and the credentials were really
    // used (the CRM rotated the refresh token, so OAuth ran).
    assert!(
        outputs
            .iter()
            .any(|(_, _, e)| e.contains("TRACE") || e.contains("\"level\":\"TRACE\"")),
        "no trace output was produced"
    );
    assert_ne!(
        sb.kounta().refresh_token(),
        REFRESH,
        "oauth never refreshed"
    );
    println!(
        "no secret in the output of {} runs ({lines} lines at trace level, {} secrets looked for)",
        outputs.len(),
        secrets.len()
    );
}

/// The mode bits of a file, if it exists.
fn mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_db_and_its_wal_are_private_even_under_a_permissive_umask() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, ""));
    // Hold the run after its first write, so the WAL and shared-memory files exist.
    sb.kounta().inject(Fault::new(
        Target::AnyWrite,
        When::Nth(1),
        FaultAction::ApplyThenHang,
    ));
    let binary = env!("CARGO_BIN_EXE_farmsync");
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "umask 000 && exec {binary:?} --config {:?} sync",
            w.config_path().display().to_string()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FARMSYNC") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.spawn().unwrap();
    tokio::time::timeout(Duration::from_secs(30), sb.kounta().wait_for_writes(1))
        .await
        .expect("the first write never arrived");
    let db = w.state_path();
    let side = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    let (wal, shm) = (side("-wal"), side("-shm"));
    let modes = [(&db, mode(&db)), (&wal, mode(&wal)), (&shm, mode(&shm))];
    child.kill().await.unwrap();
    for (path, m) in modes {
        assert_eq!(m, Some(0o600), "{} (under umask 000)", path.display());
    }

    // And after a clean run, with the usual umask.
    sb.kounta().clear_faults();
    let out = run_farmsync(&w, &["sync"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for path in [&db, &wal, &shm] {
        if let Some(m) = mode(path) {
            assert_eq!(m, 0o600, "{}", path.display());
        }
    }
}

#[test]
fn a_config_typo_cannot_switch_tls_verification_off() {
    // (section, line, the key the error must name)
    for (section, line, named) in [
        (
            "kounta",
            "danger_accept_invalid_certs = true",
            "kounta.danger_accept_invalid_certs",
        ),
        (
            "farmflow",
            "accept_invalid_certs = true",
            "farmflow.accept_invalid_certs",
        ),
        ("farmflow", "verify_tls = false", "farmflow.verify_tls"),
        ("tls", "verify = false", "tls.verify"),
        ("", "insecure = true", "insecure"),
    ] {
        let mut kounta = "[kounta]\nclient_id = \"a\"\nclient_secret = \"b\"\n".to_owned();
        let mut farmflow = "[farmflow]\napi_key = \"c\"\n".to_owned();
        let mut other = String::new();
        match section {
            "kounta" => kounta.push_str(&format!("{line}\n")),
            "farmflow" => farmflow.push_str(&format!("{line}\n")),
            "" => {}
            s => other = format!("[{s}]\n{line}\n"),
        }
        // A bare key belongs before the first table header.
        let config = if section.is_empty() {
            format!("{line}\n{kounta}{farmflow}")
        } else {
            format!("{kounta}{farmflow}{other}")
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("farmsync.toml");
        std::fs::write(&file, config).unwrap();
        for command in ["check", "sync"] {
            let out = crate::support::farmsync()
                .arg("--config")
                .arg(&file)
                .arg(command)
                .output()
                .unwrap();
            let said = text(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} with {line:?}: {said}"
            );
            assert!(
                said.contains(named) && said.contains("unknown"),
                "{command} with {line:?}: {said}"
            );
        }
    }
    let w = Workdir::new(
        "[kounta]\nclient_id = \"a\"\nclient_secret = \"b\"\n[farmflow]\napi_key = \"c\"\n",
    );
    let out = crate::support::farmsync()
        .env("FARMSYNC__KOUNTA__DANGER_ACCEPT_INVALID_CERTS", "true")
        .arg("--config")
        .arg(w.config_path())
        .arg("check")
        .output()
        .unwrap();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("FARMSYNC__KOUNTA__DANGER_ACCEPT_INVALID_CERTS"),
        "{said}"
    );
}

/// A TLS server on 127.0.0.1 presenting a certificate for `localhost` issued by an authority
/// no one trusts (`tests/fixtures`). Counts the handshakes that completed.
async fn untrusted_tls_server() -> (u16, Arc<std::sync::atomic::AtomicU64>) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let certs = CertificateDer::pem_file_iter(fixtures.join("untrusted-localhost.cert.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixtures.join("untrusted-localhost.key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                // A client that accepted the certificate would get an answer it could read.
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]")
                        .await;
                }
            });
        }
    });
    (port, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_api_with_an_untrusted_certificate_is_refused() {
    let (port, served) = untrusted_tls_server().await;
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let config = sandbox_config(&sb, "").replace(
        &format!("base_url = {:?}", sb.kounta_url()),
        &format!("base_url = \"https://localhost:{port}/v1\"\ncompany_id = 5678"),
    );
    let w = Workdir::new(&config);
    for args in [&["check"][..], &["sync"]] {
        // Nothing may point the trust store at the test's certificate.
        let mut cmd = crate::support::farmsync();
        cmd.env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .arg("--config")
            .arg(w.config_path())
            .args(args);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(4), "{args:?}: {said}");
        assert!(
            said.to_lowercase().contains("certificate"),
            "{args:?}: {said}"
        );
        println!(
            "{args:?} against an untrusted certificate: {}",
            said.lines().last().unwrap_or("")
        );
    }
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a handshake with the untrusted certificate completed"
    );

    // The control: trusting that very certificate (as an operator could, on purpose, through
    // the system trust store) lets the handshake complete, so the refusal above was about trust.
    let cert = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/untrusted-ca.cert.pem");
    let out = run_farmsync(&w, &["check"], &[("SSL_CERT_FILE", cert.to_str().unwrap())]).await;
    assert!(
        served.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the control handshake failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
