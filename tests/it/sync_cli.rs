//! `farmsync sync` as a process against the sandbox: DESIGN.md's exit codes (0, 1, 3, 4), a dry
//! run that leaves the state DB as it was, and JSON logs free of contact details.

use farmsync::sandbox::{
    Fault, FaultAction, KountaEndpoint, Sandbox, SandboxOptions, When, sample_farm,
};

use crate::support::{Workdir, text};
use crate::sync_smoke::sandbox_config;

async fn sync(w: &Workdir, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let config = w.config_path();
    tokio::task::spawn_blocking(move || {
        crate::support::farmsync()
            .arg("--config")
            .arg(config)
            .arg("--log-format")
            .arg("json")
            .arg("sync")
            .args(args)
            .output()
            .expect("run farmsync")
    })
    .await
    .expect("farmsync ran")
}

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

fn show(out: &std::process::Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    )
}

async fn synced_sample_farm() -> (Sandbox, Workdir) {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, ""));
    let first = sync(&w, &[]).await;
    assert_eq!(code(&first), Some(0), "{}", show(&first));
    (sb, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_exits_3_and_a_dry_run_says_so_first() {
    let (sb, w) = synced_sample_farm().await;
    let ff_before = sb.farmflow().customers();
    let db_before = std::fs::read(w.state_path()).unwrap();
    let writes_before = sb.kounta().stats().writes + sb.farmflow().stats().writes;

    // The CRM account answers no customers at all (wiped, or the wrong company).
    for c in sb.kounta().customers() {
        sb.kounta().backoffice_delete(c.id);
    }
    let dry = sync(&w, &["--dry-run"]).await;
    assert_eq!(code(&dry), Some(3), "{}", show(&dry));
    let plan: serde_json::Value = serde_json::from_slice(&dry.stdout).expect("the plan as JSON");
    assert_eq!(plan["exit_code"], 3);
    assert_eq!(plan["plan"]["guard"]["reason"], "empty_kounta_list");
    assert_eq!(
        std::fs::read(w.state_path()).unwrap(),
        db_before,
        "a dry run leaves the state DB as it was"
    );

    let real = sync(&w, &[]).await;
    assert_eq!(code(&real), Some(3), "{}", show(&real));
    assert!(text(&real.stderr).contains("sync.guard.tripped"));
    assert_eq!(sb.farmflow().customers(), ff_before, "nothing deleted");
    assert_eq!(
        sb.kounta().stats().writes + sb.farmflow().stats().writes,
        writes_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_on_a_new_install_creates_no_state_db() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, ""));

    let dry = sync(&w, &["--dry-run"]).await;

    assert_eq!(code(&dry), Some(0), "{}", show(&dry));
    assert!(
        text(&dry.stdout).contains("create_kounta"),
        "{}",
        show(&dry)
    );
    assert!(!w.state_path().exists());
    assert_eq!(sb.kounta().stats().writes + sb.farmflow().stats().writes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_exit_4_and_write_nothing() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, "").replace(sb.farmflow().api_key(), "wrong-key"));

    let out = sync(&w, &[]).await;

    assert_eq!(code(&out), Some(4), "{}", show(&out));
    assert_eq!(sb.kounta().stats().writes + sb.farmflow().stats().writes, 0);
    assert!(
        !text(&out.stderr).contains("wrong-key"),
        "the key is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_create_exits_1_and_the_rest_is_applied() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, ""));
    sb.kounta().inject(Fault::new(
        KountaEndpoint::Create,
        When::Nth(1),
        FaultAction::Status(409),
    ));

    let out = sync(&w, &[]).await;

    assert_eq!(code(&out), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("sync.record.failed"));
    assert!(
        sb.kounta().stats().count(KountaEndpoint::Create) > 1,
        "the others went on"
    );
    let next = sync(&w, &[]).await;
    assert_eq!(code(&next), Some(0), "{}", show(&next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_run_and_no_contact_details() {
    let (sb, w) = synced_sample_farm().await;
    let jamie = sb
        .kounta()
        .customers()
        .into_iter()
        .find(|c| c.email == "jamie@example.com")
        .unwrap();
    sb.kounta()
        .edit(jamie.id, |c| c.phone = "02 8765 9999".into());

    let out = sync(&w, &[]).await;

    assert_eq!(code(&out), Some(0), "{}", show(&out));
    let stderr = text(&out.stderr);
    let finished: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "sync.run.finished")
        .unwrap_or_else(|| panic!("no sync.run.finished in\n{stderr}"));
    assert_eq!(finished["updated"], 1);
    assert!(finished["run_id"].is_string());
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    for c in sb.kounta().customers() {
        for value in [c.email.clone(), c.phone.clone(), digits(&c.phone)] {
            if value.len() >= 6 {
                assert!(!stderr.contains(&value), "{value} logged:\n{stderr}");
            }
        }
    }
}
