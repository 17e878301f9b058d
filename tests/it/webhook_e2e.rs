//! Webhooks end to end: `farmsync webhooks register|list|remove` against the sandbox CRM, and
//! a running `farmsync run` turning a signed delivery into a FarmFlow update within 2 s.

use std::time::Duration;

use farmsync::sandbox::{Sandbox, SandboxOptions, sample_farm};
use farmsync::store::Store;
use tokio::time::Instant;

use crate::daemon_support::{Daemon, converge, event, farmsync_in, free_port, linked};
use crate::support::{Workdir, text};
use crate::sync_smoke::sandbox_config;

const SHARED: &str = "the-farmsync-shared-secret";

fn webhook_config(sb: &Sandbox, port: u16, enabled: bool) -> String {
    sandbox_config(
        sb,
        &format!(
            "[schedule]\ncron = \"0 0 0 1 1 *\"\nquick_cron = \"\"\n\
             [webhooks]\nenabled = {enabled}\nlisten = \"127.0.0.1:{port}\"\n\
             signature_token = {:?}\nshared_secret = {SHARED:?}\n",
            sb.kounta().signature_token()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_idempotent_list_marks_ours_and_remove_cleans_up() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let port = free_port();
    let w = Workdir::new(&webhook_config(&sb, port, true));

    let out = farmsync_in(&w, &["webhooks", "register"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = sb.kounta().webhooks();
    assert_eq!(first.len(), 3);
    for (hook, suffix) in first.iter().zip(["created", "updated", "deleted"]) {
        assert_eq!(
            hook.address,
            format!("http://127.0.0.1:{port}/webhooks/kounta/customers/{suffix}")
        );
        assert_eq!(hook.topic.as_str(), format!("customers/{suffix}"));
        assert_eq!(
            hook.headers.get("X-Farmsync-Secret").map(String::as_str),
            Some(SHARED)
        );
    }
    assert!(!text(&out.stdout).contains(SHARED));

    let again = farmsync_in(&w, &["webhooks", "register"]).await;
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(sb.kounta().webhooks(), first, "nothing added or replaced");

    // A stranger's registration is listed but left alone.
    let crm = crate::sandbox_support::Crm::new(&sb);
    let (status, _) = crate::sandbox_support::status_json(crm.post(
        "/webhooks",
        &serde_json::json!({"topic": "customers/updated", "address": "http://elsewhere.example/hook"}),
    ))
    .await;
    assert_eq!(status, 201);

    let list = farmsync_in(&w, &["webhooks", "list"]).await;
    assert_eq!(list.status.code(), Some(0));
    let listed = text(&list.stdout);
    assert_eq!(listed.matches("secret matches").count(), 3, "{listed}");
    assert!(listed.contains("not this farmsync's"), "{listed}");
    assert!(!listed.contains("missing:"), "{listed}");
    assert!(!listed.contains(SHARED));

    // A changed secret: register replaces the three registrations.
    let rotated = Workdir::new(&webhook_config(&sb, port, true).replace(SHARED, "a-new-secret"));
    let out = farmsync_in(&rotated, &["webhooks", "register"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ours: Vec<_> = sb
        .kounta()
        .webhooks()
        .into_iter()
        .filter(|h| h.address.contains("127.0.0.1"))
        .collect();
    assert_eq!(ours.len(), 3);
    assert!(
        ours.iter()
            .all(|h| h.headers["X-Farmsync-Secret"] == "a-new-secret")
    );

    let out = farmsync_in(&w, &["webhooks", "remove"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let left = sb.kounta().webhooks();
    assert_eq!(left.len(), 1, "only the stranger's is left: {left:?}");
    assert_eq!(left[0].address, "http://elsewhere.example/hook");
    let list = farmsync_in(&w, &["webhooks", "list"]).await;
    assert_eq!(text(&list.stdout).matches("missing:").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_webhooks_disabled_exits_2_and_registers_nothing() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let w = Workdir::new(&webhook_config(&sb, free_port(), false));
    let out = farmsync_in(&w, &["webhooks", "register"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("webhooks.enabled is false"),
        "{}",
        text(&out.stderr)
    );
    assert!(sb.kounta().webhooks().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_with_an_unreachable_crm_exit_4() {
    // Nothing listens on a port that was free a moment ago.
    let w = Workdir::new(&format!(
        "[kounta]\nbase_url = \"http://127.0.0.1:{}/v1\"\nclient_id = \"c\"\nclient_secret = \"s\"\ntimeout_secs = 2\n\
         [webhooks]\nenabled = true\nsignature_token = \"t\"\nshared_secret = \"x\"\n",
        free_port()
    ));
    let out = farmsync_in(&w, &["webhooks", "list"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_crm_edit_reaches_farmflow_within_2s_and_a_forged_one_changes_nothing() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let port = free_port();
    let w = Workdir::new(&webhook_config(&sb, port, true));
    converge(&w).await;
    let out = farmsync_in(&w, &["webhooks", "register"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let mut d = Daemon::spawn(&w, &[]);
    d.wait_for(Duration::from_secs(60), |l| event(l) == "sync.run.finished")
        .await;

    // A person edits a linked customer's city in the CRM; the schedule is yearly, so only the
    // webhook can bring it across.
    let (kounta_id, farmflow_id) = linked(&sb)
        .into_iter()
        .find(|(k, _)| sb.kounta().get(*k).unwrap().primary_address.is_some())
        .unwrap();
    let edited_at = Instant::now();
    sb.kounta().edit(kounta_id, |c| {
        c.primary_address.as_mut().unwrap().city = "Webhookville".into();
    });
    loop {
        if sb.farmflow().get(farmflow_id).unwrap().city == "Webhookville" {
            break;
        }
        assert!(
            edited_at.elapsed() < Duration::from_secs(2),
            "not in FarmFlow within 2 s:\n{}",
            d.dump()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.wait_for(Duration::from_secs(10), |l| event(l) == "sync.run.finished")
        .await;
    assert!(d.count("webhook.received") >= 1);
    let store = Store::open_read_only(&w.state_path()).unwrap();
    assert!(
        store
            .hints()
            .unwrap()
            .iter()
            .all(|h| h.kounta_id.0 != kounta_id),
        "the hint was acted on and cleared"
    );

    // A forged delivery: right shared secret, wrong signature.
    let before = sb.farmflow().customers();
    let runs_before = d.count("sync.run.started");
    let forged =
        serde_json::json!({"id": kounta_id, "first_name": "forged-marker-7731"}).to_string();
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/webhooks/kounta/customers/updated"
        ))
        .header("X-Farmsync-Secret", SHARED)
        .header(
            "X-Kounta-Signature",
            farmsync::webhook::sign(forged.as_bytes(), "not-the-token"),
        )
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    let rejected = d
        .wait_for(Duration::from_secs(10), |l| event(l) == "webhook.rejected")
        .await;
    assert_eq!(rejected["reason"], "bad_signature");
    assert!(store.hints().unwrap().is_empty(), "no hint was stored");
    assert_eq!(sb.farmflow().customers(), before);

    d.signal("TERM");
    let (status, _) = d.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    assert_eq!(
        d.count("sync.run.started"),
        runs_before,
        "the forged delivery started no cycle:\n{}",
        d.dump()
    );
    assert!(
        !d.dump().contains("forged-marker-7731"),
        "a refused body is never logged"
    );
}
