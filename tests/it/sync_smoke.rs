//! The real `farmsync sync` binary against the sandbox: the sample farm converges.

use farmsync::sandbox::{Sandbox, SandboxOptions, sample_farm};

use crate::support::{Workdir, text};

/// A config pointing farmsync at the running sandbox.
pub fn sandbox_config(sb: &Sandbox, extra: &str) -> String {
    format!(
        "[kounta]\nbase_url = {:?}\nclient_id = {:?}\nclient_secret = {:?}\nrequests_per_minute = 100000\ntimeout_secs = 5\n\
         [farmflow]\nbase_url = {:?}\napi_key = {:?}\nrequests_per_minute = 100000\ntimeout_secs = 5\n{extra}",
        sb.kounta_url(),
        sb.kounta().client_id(),
        sb.kounta().client_secret(),
        sb.farmflow_url(),
        sb.farmflow().api_key(),
    )
}

pub async fn run(w: &Workdir, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let config = w.config_path();
    tokio::task::spawn_blocking(move || {
        crate::support::farmsync()
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .expect("run farmsync")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_farm_converges_and_a_second_run_writes_nothing() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(&sb, ""));

    let first = run(&w, &["sync"]).await;
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}\n{}",
        text(&first.stdout),
        text(&first.stderr)
    );
    let writes_after_first = sb.kounta().stats().writes + sb.farmflow().stats().writes;
    assert!(writes_after_first > 0);

    let second = run(&w, &["sync"]).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let third = run(&w, &["sync"]).await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third.stderr));
    let writes_after_second = sb.kounta().stats().writes + sb.farmflow().stats().writes;
    let fourth = run(&w, &["sync"]).await;
    assert_eq!(fourth.status.code(), Some(0));
    let writes_after_fourth = sb.kounta().stats().writes + sb.farmflow().stats().writes;
    assert_eq!(
        writes_after_second,
        writes_after_fourth,
        "{}",
        text(&fourth.stdout)
    );

    // Every person is on both sides exactly once, except those the CRM cannot hold.
    let crm = sb.kounta().customers();
    let ff = sb.farmflow().customers();
    let refs: Vec<String> = crm.iter().map(|c| c.reference_id.clone()).collect();
    let unlinked: Vec<_> = ff
        .iter()
        .filter(|f| !refs.contains(&format!("farmflow:{}", f.id)))
        .collect();
    assert_eq!(
        crm.len() + unlinked.len(),
        ff.len(),
        "unlinked farmflow: {unlinked:#?}\n{}",
        text(&fourth.stdout)
    );
}
