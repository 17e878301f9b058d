//! `farmsync demo`: a small farm in the sandbox, synced, edited as staff would, synced again.
//!
//! Touches nothing outside an in-process sandbox and a throw-away state DB.

use std::fmt::Write as _;

use crate::config::Settings;
use crate::sandbox::{KountaRecord, Sandbox, SandboxOptions, sample_farm};
use crate::store::{ConflictDecision, DeleteDecision, HistoryFilter, SharedStore, Side, Store};
use crate::sync::engine::{Engine, RunOptions, RunReport};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the sandbox: {0}")]
    Sandbox(String),
    #[error("cannot set up the demo: {0}")]
    Setup(String),
}

/// Runs the whole demo and returns its report.
pub async fn run() -> Result<String, DemoError> {
    let sb = Sandbox::start(SandboxOptions::default())
        .await
        .map_err(|e| DemoError::Sandbox(e.to_string()))?;
    sb.seed(&sample_farm())
        .map_err(|e| DemoError::Sandbox(e.to_string()))?;
    let dir = tempfile::tempdir().map_err(|e| DemoError::Setup(e.to_string()))?;
    let vars = [
        (
            "FARMSYNC__STATE__PATH",
            dir.path().join("demo.db").display().to_string(),
        ),
        ("FARMSYNC__KOUNTA__BASE_URL", sb.kounta_url()),
        (
            "FARMSYNC__KOUNTA__CLIENT_ID",
            sb.kounta().client_id().to_owned(),
        ),
        (
            "FARMSYNC__KOUNTA__CLIENT_SECRET",
            sb.kounta().client_secret().to_owned(),
        ),
        ("FARMSYNC__KOUNTA__REQUESTS_PER_MINUTE", "6000".to_owned()),
        ("FARMSYNC__FARMFLOW__BASE_URL", sb.farmflow_url()),
        (
            "FARMSYNC__FARMFLOW__API_KEY",
            sb.farmflow().api_key().to_owned(),
        ),
        ("FARMSYNC__FARMFLOW__REQUESTS_PER_MINUTE", "6000".to_owned()),
        // This farm wants a person to approve every deletion.
        ("FARMSYNC__SYNC__DELETES", "approve".to_owned()),
    ];
    let settings = Settings::builder()
        .env_vars(vars.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .build()
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let store = Store::open(&settings.state.path).map_err(|e| DemoError::Setup(e.to_string()))?;
    let engine = Engine::from_settings(&settings, SharedStore::new(store), false)
        .map_err(|e| DemoError::Setup(e.to_string()))?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "farmsync demo — a small farm: {} customers in the point of sale, {} in FarmFlow, \
         {} standing orders.\n",
        sb.kounta().customers().len(),
        sb.farmflow().customers().len(),
        sb.farmflow().recurring_orders().len()
    );

    let first = engine.run_once(RunOptions::default()).await;
    describe_run(&mut out, "1. First sync", &first);

    // Staff at work between two syncs.
    let _ = writeln!(out, "\n2. Meanwhile, as staff would:");
    let jamie = crm_by_email(&sb, "jamie@example.com");
    if let Some(j) = &jamie {
        sb.kounta().edit(j.id, |c| c.phone = "02 8765 9999".into());
        let _ = writeln!(
            out,
            "   - the shop changes Jamie McDonald's phone to 02 8765 9999"
        );
    }
    sb.farmflow()
        .edit(304, |c| c.address = "90 Harbour Road".into());
    if let Some(mei) = crm_by_reference(&sb, 304) {
        sb.kounta().edit(mei.id, |c| {
            if let Some(a) = c.primary_address.as_mut() {
                a.address = "12 Quay Street".into();
            }
        });
    }
    let _ = writeln!(
        out,
        "   - the grower moves Mei Chen's delivery address to 90 Harbour Road, while the shop,\n     \
         unaware, types 12 Quay Street for her: a conflict"
    );
    let ava = sb.kounta().insert(KountaRecord {
        first_name: "Ava".into(),
        last_name: "Nguyen".into(),
        email: "ava.nguyen@example.com".into(),
        phone: "0412 555 777".into(),
        ..KountaRecord::default()
    });
    let _ = writeln!(out, "   - the shop adds a new customer, Ava Nguyen");
    let ruby = crm_by_reference(&sb, 309);
    if let Some(r) = &ruby {
        sb.kounta().backoffice_delete(r.id);
        let _ = writeln!(
            out,
            "   - the back office deletes Ruby Thompson, who has an active standing order in FarmFlow"
        );
    }
    let ethan = crm_by_email(&sb, "ethan.brown@example.com");
    if let Some(e) = &ethan {
        sb.kounta().backoffice_delete(e.id);
        let _ = writeln!(
            out,
            "   - the back office deletes Ethan Brown, who has no orders"
        );
    }

    let second = engine.run_once(RunOptions::default()).await;
    let _ = writeln!(out);
    describe_run(
        &mut out,
        "3. Second sync ([sync] deletes = \"approve\")",
        &second,
    );

    let _ = writeln!(out, "\n4. Where things stand:");
    let ff = sb.farmflow().customers();
    if let Some(jamie_ff) = ff.iter().find(|c| c.id == 301) {
        let _ = writeln!(out, "   - Jamie's phone in FarmFlow: {}", jamie_ff.phone);
    }
    let conflicts = engine
        .store
        .call(|s| s.open_conflicts())
        .await
        .unwrap_or_default()
        .into_iter()
        // The ones the staff's edits above made (the first sync's stay open for `conflicts`).
        .filter(|c| c.run_id == second.run_id)
        .collect::<Vec<_>>();
    for c in &conflicts {
        let _ = writeln!(
            out,
            "   - conflict on {} of {}: point of sale {:?}, FarmFlow {:?}; the point of sale's was kept \
             (conflict_winner = \"kounta\")",
            c.field, c.reference_id, c.kounta_value, c.farmflow_value
        );
    }
    let ava_linked = sb
        .kounta()
        .get(ava)
        .map(|c| c.reference_id)
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "   - Ava Nguyen is in FarmFlow too ({})",
        if ava_linked.is_empty() {
            "not yet linked"
        } else {
            &ava_linked
        }
    );
    let ruby_kept = ff.iter().any(|c| c.id == 309);
    let _ = writeln!(
        out,
        "   - Ruby Thompson {} in FarmFlow: her standing order blocks the delete, and the link waits",
        if ruby_kept { "is kept" } else { "is GONE" }
    );
    let queue = engine
        .store
        .call(|s| s.delete_queue())
        .await
        .unwrap_or_default();
    for q in &queue {
        let _ = writeln!(
            out,
            "   - waiting for a person (farmsync deletes): {} — {}",
            q.reference_id, q.detail
        );
    }
    if let Some(plan) = &second.plan {
        for a in &plan.attention {
            let _ = writeln!(out, "   - needs attention: {}", a.detail);
        }
    }

    // A person decides: the grower's address is right, and Ethan may go.
    let _ = writeln!(out, "\n5. A person decides:");
    for c in &conflicts {
        let (reference, field) = (c.reference_id.clone(), c.field.clone());
        let _ = writeln!(
            out,
            "   $ farmsync conflicts resolve {reference} {field} --take farmflow"
        );
        let _ = engine
            .store
            .call(move |s| {
                s.decide_conflict(&reference, &field, ConflictDecision::Take(Side::Farmflow))
            })
            .await;
    }
    for q in &queue {
        let reference = q.reference_id.clone();
        let _ = writeln!(out, "   $ farmsync deletes approve {reference}");
        let _ = engine
            .store
            .call(move |s| s.decide_delete(Some(&reference), DeleteDecision::Approved))
            .await;
    }

    let third = engine.run_once(RunOptions::default()).await;
    let _ = writeln!(out);
    describe_run(&mut out, "6. Third sync", &third);
    if let Some(mei) = crm_by_reference(&sb, 304) {
        let line = mei
            .primary_address
            .as_ref()
            .map(|a| a.address.clone())
            .unwrap_or_default();
        let ff_line = sb
            .farmflow()
            .get(304)
            .map(|c| c.address)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "   - Mei's address: {line} in the point of sale, {ff_line} in FarmFlow"
        );
    }
    if let Some(e) = &ethan {
        let still = sb
            .farmflow()
            .customers()
            .iter()
            .any(|c| c.email.eq_ignore_ascii_case(&e.email));
        let _ = writeln!(
            out,
            "   - Ethan Brown {} FarmFlow",
            if still {
                "is still in"
            } else {
                "was removed from"
            }
        );
    }
    let history = engine
        .store
        .call(|s| {
            s.history(&HistoryFilter {
                reference: Some("farmflow:304".to_owned()),
                ..HistoryFilter::default()
            })
        })
        .await
        .unwrap_or_default();
    let _ = writeln!(out, "   $ farmsync history farmflow:304");
    for h in history.iter().take(4) {
        for c in &h.changes {
            let _ = writeln!(
                out,
                "     {} {:<8} {:<9} {:<6} {:?} → {:?}",
                h.cycle, h.side, h.action, c.field, c.before, c.after
            );
        }
    }

    let fourth = engine.run_once(RunOptions::default()).await;
    let _ = writeln!(out);
    describe_run(&mut out, "7. Fourth sync", &fourth);
    let writes = fourth.plan.as_ref().map_or(0, |p| p.remote_writes());
    let _ = writeln!(
        out,
        "   {}",
        if writes == 0 {
            "both sides agree: nothing to write".to_owned()
        } else {
            format!("{writes} writes still planned")
        }
    );
    sb.shutdown().await;
    Ok(out)
}

fn describe_run(out: &mut String, title: &str, report: &RunReport) {
    let s = &report.summary;
    let _ = writeln!(
        out,
        "{title} (exit {}): {} linked, {} created, {} updated, {} deleted, {} blocked, {} conflicts, {} skipped, {} failed — {} point-of-sale and {} FarmFlow requests",
        report.outcome.exit_code(),
        s.linked,
        s.created,
        s.updated,
        s.deleted,
        s.blocked,
        s.conflicts,
        s.skipped,
        s.failed,
        s.kounta_requests,
        s.farmflow_requests
    );
}

fn crm_by_email(sb: &Sandbox, email: &str) -> Option<KountaRecord> {
    sb.kounta()
        .customers()
        .into_iter()
        .find(|c| c.email.eq_ignore_ascii_case(email))
}

fn crm_by_reference(sb: &Sandbox, farmflow_id: i64) -> Option<KountaRecord> {
    let reference = format!("farmflow:{farmflow_id}");
    sb.kounta()
        .customers()
        .into_iter()
        .find(|c| c.reference_id == reference)
}
