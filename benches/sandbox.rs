//! Sandbox start-up time and throughput, on loopback only and bounded in time.
//!
//! `cargo bench --bench sandbox` (add `--profile dev` for a debug build). Prints the start-up
//! time of both fakes and the requests per second they serve with no latency knob set.

use std::time::{Duration, Instant};

use farmsync::sandbox::{FarmflowRecord, KountaRecord, Sandbox, SandboxOptions};

/// How long the throughput run lasts.
const RUN_FOR: Duration = Duration::from_secs(3);
/// Concurrent client tasks.
const WORKERS: usize = 16;
/// Start-ups measured.
const STARTS: usize = 20;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let mut starts = Vec::with_capacity(STARTS);
    for _ in 0..STARTS {
        let t = Instant::now();
        let sb = Sandbox::start(SandboxOptions::default())
            .await
            .expect("sandbox starts");
        starts.push(t.elapsed());
        sb.shutdown().await;
    }
    starts.sort();
    println!(
        "start-up of both fakes: median {:?}, max {:?} ({STARTS} runs)",
        starts[STARTS / 2],
        starts[STARTS - 1]
    );

    let sb = Sandbox::start(SandboxOptions::default())
        .await
        .expect("sandbox starts");
    let kounta_id = sb.kounta().insert(KountaRecord {
        first_name: "Bench".into(),
        email: "bench@example.com".into(),
        ..KountaRecord::default()
    });
    let farmflow_id = sb.farmflow().insert(FarmflowRecord {
        firstname: "Bench".into(),
        ..FarmflowRecord::default()
    });
    let http = reqwest::Client::new();
    let kounta_get = format!(
        "{}/companies/{}/customers/{kounta_id}",
        sb.kounta_url(),
        sb.kounta().company_id()
    );
    let farmflow_get = format!("{}/customer-get", sb.farmflow_url());
    let (user, pass) = (
        sb.kounta().client_id().to_owned(),
        sb.kounta().client_secret().to_owned(),
    );
    let farmflow_auth = format!("{}{}", sb.farmflow().auth_prefix(), sb.farmflow().api_key());
    let farmflow_header = sb.farmflow().auth_header().to_owned();

    let deadline = Instant::now() + RUN_FOR;
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let http = http.clone();
        let (kounta_get, farmflow_get) = (kounta_get.clone(), farmflow_get.clone());
        let (user, pass) = (user.clone(), pass.clone());
        let (header, auth) = (farmflow_header.clone(), farmflow_auth.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut turn = worker;
            while Instant::now() < deadline {
                let request = if turn % 2 == 0 {
                    http.get(&kounta_get)
                        .basic_auth(&user, Some(&pass))
                        .header("Accept", "application/json")
                } else {
                    http.post(&farmflow_get)
                        .header(&header, &auth)
                        .json(&serde_json::json!({"id": farmflow_id.to_string()}))
                };
                turn += 1;
                let served = match request.send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if served {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for w in workers {
        let (o, f) = w.await.expect("worker ran");
        ok += o;
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "throughput: {:.0} requests/s ({ok} answered 200, {failed} failed, {WORKERS} clients, {secs:.1} s, both fakes)",
        ok as f64 / secs
    );
    let stats = (sb.kounta().stats().total, sb.farmflow().stats().total);
    println!("served: kounta {} requests, farmflow {}", stats.0, stats.1);
    sb.shutdown().await;
}
