//! The commands people use to see and decide (DESIGN.md, "Operator control"): `history`,
//! `conflicts` and `deletes`.
//!
//! Owns these commands' arguments, their queries' shape and what the terminal shows. It calls
//! neither API and plans nothing: a decision is a row in the store for the sync to act on.
//!
//! Listing reads the state DB read-only and without the single-instance lock, like `status`,
//! so it works beside a running daemon. Deciding (`conflicts resolve`, `deletes approve` and
//! `reject`) writes one row in one short SQLite transaction — the DB's own write lock, not the
//! single-instance lock — so a person can decide while the daemon runs; the next cycle carries
//! the decision out, journalled and recorded in history like any write.

use std::io::Write;

use chrono::{DateTime, Local, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::customer::Field;
use crate::exit::{CliError, Exit};
use crate::store::{
    ConflictDecision, DeleteDecision, FieldChange, HistoryEntry, HistoryFilter, Side, Store,
    StoreError,
};

/// Whose value a person keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TakeSide {
    /// The CRM's value, as recorded with the conflict.
    Kounta,
    /// FarmFlow's value, as recorded with the conflict.
    Farmflow,
}

/// What `farmsync conflicts` does besides listing.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ConflictsAction {
    /// Settle the open conflict on FIELD of REF: the chosen value is written to whichever side
    /// lacks it at the next cycle (journalled and kept in history like any write).
    Resolve {
        /// The link, `farmflow:<id>` as `farmsync conflicts` shows it.
        #[arg(value_name = "REF")]
        reference: String,
        /// The field: first_name, last_name, email, phone, line1, line2, city, state,
        /// postal_code or country.
        field: String,
        /// Keep this side's value.
        #[arg(
            long,
            value_enum,
            conflicts_with = "dismiss",
            required_unless_present = "dismiss"
        )]
        take: Option<TakeSide>,
        /// Close the conflict as things stand; nothing is written.
        #[arg(long)]
        dismiss: bool,
    },
}

/// What `farmsync deletes` does besides listing.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum DeletesAction {
    /// Approve one waiting deletion (or all): it is applied at the next cycle.
    Approve {
        /// The link, `farmflow:<id>` as `farmsync deletes` shows it.
        #[arg(value_name = "REF", required_unless_present = "all")]
        reference: Option<String>,
        /// Every deletion waiting now.
        #[arg(long, conflicts_with = "reference")]
        all: bool,
    },
    /// Reject one: the deleted side's customer is recreated from the other side.
    Reject {
        /// The link, `farmflow:<id>` as `farmsync deletes` shows it.
        #[arg(value_name = "REF")]
        reference: String,
    },
}

/// `farmsync history`.
pub fn history(
    settings: &Settings,
    reference: Option<&str>,
    since: Option<&str>,
    limit: Option<usize>,
    json: bool,
) -> Result<Exit, CliError> {
    let since = since
        .map(|text| parse_since(text, Local::now()))
        .transpose()
        .map_err(|m| CliError::new(Exit::Config, m))?;
    let reference = reference.map(normalise_reference).transpose()?;
    let Some(store) = open_for_reading(settings)? else {
        return print_rows(
            json,
            &[] as &[HistoryView],
            "no history yet: farmsync has not run",
        );
    };
    let rows = store
        .history(&HistoryFilter {
            reference,
            since,
            limit,
        })
        .map_err(read_error)?;
    let views: Vec<HistoryView> = rows.into_iter().map(HistoryView::from).collect();
    if json {
        return print_rows(true, &views, "");
    }
    if views.is_empty() {
        println!(
            "no writes recorded{}",
            if since.is_some() { " since then" } else { "" }
        );
        return Ok(Exit::Ok);
    }
    let mut text = String::new();
    for v in &views {
        text.push_str(&format!(
            "{}  {:<5}  {:<8} {:<9} {}{}{}\n",
            v.at,
            v.cycle,
            v.side,
            v.action,
            v.reference_id.as_deref().unwrap_or("-"),
            v.kounta_id
                .map(|k| format!(" (crm {k})"))
                .unwrap_or_default(),
            if v.outcome == "applied" {
                String::new()
            } else {
                format!(
                    "  [{}: its answer was lost; it may not have happened]",
                    v.outcome
                )
            }
        ));
        for c in &v.changes {
            text.push_str(&format!(
                "    {:<13} {} → {}\n",
                c.field,
                shown(&c.before),
                shown(&c.after)
            ));
        }
    }
    page(&text);
    Ok(Exit::Ok)
}

/// `farmsync conflicts`.
pub fn conflicts(
    settings: &Settings,
    action: Option<&ConflictsAction>,
    json: bool,
) -> Result<Exit, CliError> {
    match action {
        None => {
            let Some(store) = open_for_reading(settings)? else {
                return print_rows(json, &[] as &[ConflictView], "no open conflicts");
            };
            let rows: Vec<ConflictView> = store
                .open_conflicts()
                .map_err(read_error)?
                .into_iter()
                .map(|c| ConflictView {
                    id: c.id,
                    reference_id: c.reference_id,
                    field: c.field,
                    kounta_value: c.kounta_value,
                    farmflow_value: c.farmflow_value,
                    kept: c.winner,
                    at: rfc3339(c.created_at),
                    run_id: c.run_id,
                })
                .collect();
            if json || rows.is_empty() {
                return print_rows(json, &rows, "no open conflicts");
            }
            println!("{} open conflicts (newest first):", rows.len());
            for c in &rows {
                println!(
                    "{}  {:<12} crm {}  |  farmflow {}  — {} kept ({})",
                    c.reference_id,
                    c.field,
                    shown(&c.kounta_value),
                    shown(&c.farmflow_value),
                    side_name(&c.kept),
                    c.at
                );
            }
            println!(
                "settle one: farmsync conflicts resolve REF FIELD --take kounta|farmflow (or --dismiss)"
            );
            Ok(Exit::Ok)
        }
        Some(ConflictsAction::Resolve {
            reference,
            field,
            take,
            dismiss,
        }) => {
            let reference = link_reference(reference)?;
            let Some(parsed) = Field::parse(field.trim()) else {
                return Err(CliError::new(
                    Exit::Config,
                    format!(
                        "unknown field {field:?}; one of {}",
                        Field::ALL.map(|f| f.name()).join(", ")
                    ),
                ));
            };
            let decision = match (take, dismiss) {
                (Some(TakeSide::Kounta), false) => ConflictDecision::Take(Side::Kounta),
                (Some(TakeSide::Farmflow), false) => ConflictDecision::Take(Side::Farmflow),
                (None, true) => ConflictDecision::Dismiss,
                _ => {
                    return Err(CliError::new(
                        Exit::Config,
                        "give exactly one of --take kounta|farmflow and --dismiss",
                    ));
                }
            };
            let store = open_for_writing(settings)?;
            let settled = store
                .decide_conflict(&reference, parsed.name(), decision)
                .map_err(write_error)?;
            if settled == 0 {
                return Err(CliError::new(
                    Exit::Config,
                    format!(
                        "no open conflict on {} of {reference}; `farmsync conflicts` lists them",
                        parsed.name()
                    ),
                ));
            }
            match decision {
                ConflictDecision::Take(side) => println!(
                    "{} of {reference}: the {} value will be written wherever it is missing at the next cycle",
                    parsed.name(),
                    side_name(side_str(side))
                ),
                ConflictDecision::Dismiss => {
                    println!(
                        "{} of {reference}: dismissed; nothing is written",
                        parsed.name()
                    )
                }
            }
            Ok(Exit::Ok)
        }
    }
}

/// `farmsync deletes`.
pub fn deletes(
    settings: &Settings,
    action: Option<&DeletesAction>,
    json: bool,
) -> Result<Exit, CliError> {
    let (reference, decision) = match action {
        None => {
            let Some(store) = open_for_reading(settings)? else {
                return print_rows(json, &[] as &[DeleteView], "no deletions waiting");
            };
            let rows: Vec<DeleteView> = store
                .delete_queue()
                .map_err(read_error)?
                .into_iter()
                .map(|q| DeleteView {
                    reference_id: q.reference_id,
                    action: q.action,
                    kounta_id: q.kounta_id,
                    farmflow_id: q.farmflow_id,
                    detail: q.detail,
                    queued_at: rfc3339(q.queued_at),
                    last_seen: rfc3339(q.last_seen),
                    decision: q.decision,
                })
                .collect();
            if json || rows.is_empty() {
                return print_rows(json, &rows, "no deletions waiting");
            }
            println!("{} deletions waiting (oldest first):", rows.len());
            for d in &rows {
                println!(
                    "{}  {:<16} {}{}  (queued {})",
                    d.reference_id,
                    d.action,
                    d.detail,
                    match d.decision {
                        Some(DeleteDecision::Approved) => " — approved, applied at the next cycle",
                        Some(DeleteDecision::Rejected) =>
                            " — rejected, recreated at the next cycle",
                        None => "",
                    },
                    d.queued_at
                );
            }
            println!("decide: farmsync deletes approve REF|--all, or farmsync deletes reject REF");
            return Ok(Exit::Ok);
        }
        Some(DeletesAction::Approve { reference, all }) => match (reference, all) {
            (Some(r), false) => (Some(link_reference(r)?), DeleteDecision::Approved),
            (None, true) => (None, DeleteDecision::Approved),
            _ => {
                return Err(CliError::new(
                    Exit::Config,
                    "give a reference (farmflow:<id>) or --all, not both",
                ));
            }
        },
        Some(DeletesAction::Reject { reference }) => {
            (Some(link_reference(reference)?), DeleteDecision::Rejected)
        }
    };
    let store = open_for_writing(settings)?;
    let reached = store
        .decide_delete(reference.as_deref(), decision)
        .map_err(write_error)?;
    match (&reference, reached) {
        (Some(r), 0) => Err(CliError::new(
            Exit::Config,
            format!("no deletion of {r} is waiting; `farmsync deletes` lists them"),
        )),
        (Some(r), _) => {
            println!(
                "{r}: {} at the next cycle",
                match decision {
                    DeleteDecision::Approved => "approved; the deletion is applied",
                    DeleteDecision::Rejected => "rejected; the deleted side is recreated",
                }
            );
            Ok(Exit::Ok)
        }
        (None, n) => {
            println!("{n} waiting deletions approved; they are applied at the next cycle");
            Ok(Exit::Ok)
        }
    }
}

/// One history row as `history --json` prints it (documented in the README).
#[derive(Debug, Serialize)]
struct HistoryView {
    id: i64,
    /// RFC 3339, local time.
    at: String,
    run_id: String,
    cycle: String,
    side: String,
    action: String,
    reference_id: Option<String>,
    kounta_id: Option<i64>,
    farmflow_id: Option<i64>,
    outcome: String,
    changes: Vec<FieldChange>,
}

impl From<HistoryEntry> for HistoryView {
    fn from(e: HistoryEntry) -> Self {
        HistoryView {
            id: e.id,
            at: rfc3339(e.at),
            run_id: e.run_id,
            cycle: e.cycle,
            side: e.side,
            action: e.action,
            reference_id: e.reference_id,
            kounta_id: e.kounta_id,
            farmflow_id: e.farmflow_id,
            outcome: e.outcome,
            changes: e.changes,
        }
    }
}

/// One open conflict as `conflicts --json` prints it.
#[derive(Debug, Serialize)]
struct ConflictView {
    id: i64,
    reference_id: String,
    field: String,
    kounta_value: String,
    farmflow_value: String,
    /// Whose value `conflict_winner` kept when the conflict was seen (`kounta`/`farmflow`).
    kept: String,
    at: String,
    run_id: String,
}

/// One waiting deletion as `deletes --json` prints it.
#[derive(Debug, Serialize)]
struct DeleteView {
    reference_id: String,
    action: String,
    kounta_id: Option<i64>,
    farmflow_id: i64,
    detail: String,
    queued_at: String,
    last_seen: String,
    decision: Option<DeleteDecision>,
}

/// Opens the state DB read-only; `None` when farmsync has not run yet.
fn open_for_reading(settings: &Settings) -> Result<Option<Store>, CliError> {
    match Store::open_read_only(&settings.state.path) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Missing(_)) => Ok(None),
        Err(e) => Err(read_error(e)),
    }
}

/// Opens the state DB to record a decision (creating nothing: a decision needs a run first).
fn open_for_writing(settings: &Settings) -> Result<Store, CliError> {
    if !settings.state.path.exists() {
        return Err(CliError::new(
            Exit::Config,
            format!(
                "farmsync has not run yet (no state at {}); there is nothing to decide",
                settings.state.path.display()
            ),
        ));
    }
    crate::commands::open_store(settings)
}

fn read_error(e: StoreError) -> CliError {
    match e {
        StoreError::TooNew { .. } | StoreError::NeedsMigration { .. } => {
            CliError::new(Exit::Config, e.to_string())
        }
        other => CliError::new(Exit::Unavailable, other.to_string()),
    }
}

fn write_error(e: StoreError) -> CliError {
    CliError::new(Exit::Unavailable, e.to_string())
}

/// A customer named on the command line: `farmflow:<id>` (the link), or a bare FarmFlow id;
/// `crm:<id>` for history.
fn normalise_reference(text: &str) -> Result<String, CliError> {
    let t = text.trim();
    if let Some(k) = t.strip_prefix("crm:")
        && k.parse::<i64>().is_ok_and(|k| k > 0)
    {
        return Ok(t.to_owned());
    }
    if let Some(r) = crate::ids::ReferenceId::parse(t) {
        return Ok(r.as_str().to_owned());
    }
    if let Ok(id) = t.parse::<i64>()
        && id > 0
    {
        return Ok(format!("farmflow:{id}"));
    }
    Err(CliError::new(
        Exit::Config,
        format!(
            "{text:?} names no customer; give farmflow:<id> (as `farmsync status` shows) or crm:<id>"
        ),
    ))
}

/// A link named on the command line (`farmflow:<id>` or a bare FarmFlow id).
fn link_reference(text: &str) -> Result<String, CliError> {
    let r = normalise_reference(text)?;
    if r.starts_with("crm:") {
        return Err(CliError::new(
            Exit::Config,
            format!(
                "{text:?}: name the link as farmflow:<id>, as `farmsync conflicts` and `farmsync deletes` show it"
            ),
        ));
    }
    Ok(r)
}

/// `--since`: RFC 3339, a local date (`2026-12-01`) or date and time (`2026-12-01 14:30`), or
/// a span back from now (`90m`, `12h`, `7d`, `2w`).
fn parse_since(text: &str, now: DateTime<Local>) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.timestamp());
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(t, format)
            && let Some(at) = Local.from_local_datetime(&naive).earliest()
        {
            return Ok(at.timestamp());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d")
        && let Some(at) = date
            .and_hms_opt(0, 0, 0)
            .and_then(|d| Local.from_local_datetime(&d).earliest())
    {
        return Ok(at.timestamp());
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let secs = match unit.trim() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if secs > 0 => Ok(now.timestamp() - n.saturating_mul(secs)),
        _ => Err(format!(
            "--since {text:?} is not a time: give RFC 3339, a date (2026-12-01), a date and time \
             (\"2026-12-01 14:30\"), or a span back from now (90m, 12h, 7d, 2w)"
        )),
    }
}

fn print_rows<T: Serialize>(json: bool, rows: &[T], empty: &str) -> Result<Exit, CliError> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".to_owned())
        );
    } else {
        println!("{empty}");
    }
    Ok(Exit::Ok)
}

/// A value as the terminal shows it: quoted, `(empty)` for none.
fn shown(value: &str) -> String {
    if value.is_empty() {
        "(empty)".to_owned()
    } else {
        format!("{value:?}")
    }
}

fn side_str(side: Side) -> &'static str {
    match side {
        Side::Kounta => "kounta",
        Side::Farmflow => "farmflow",
    }
}

fn side_name(side: &str) -> &'static str {
    match side {
        "kounta" => "crm",
        _ => "farmflow",
    }
}

fn rfc3339(unix: i64) -> String {
    Utc.timestamp_opt(unix, 0)
        .single()
        .map(|t| t.with_timezone(&Local).to_rfc3339())
        .unwrap_or_else(|| unix.to_string())
}

/// Shows long text through a pager when stdout is a terminal (`$PAGER`, else `less -FRX`, which
/// exits at once when the text fits), else prints it.
fn page(text: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        let pager = std::env::var("PAGER").unwrap_or_else(|_| "less -FRX".to_owned());
        let mut parts = pager.split_whitespace();
        if let Some(program) = parts.next()
            && let Ok(mut child) = std::process::Command::new(program)
                .args(parts)
                .stdin(std::process::Stdio::piped())
                .spawn()
        {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(text.as_bytes());
            }
            let _ = child.wait();
            return;
        }
    }
    print!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_times_and_spans() {
        let now = Local.with_ymd_and_hms(2026, 12, 5, 12, 0, 0).unwrap();
        assert_eq!(parse_since("2h", now).unwrap(), now.timestamp() - 7_200);
        assert_eq!(
            parse_since("7d", now).unwrap(),
            now.timestamp() - 7 * 86_400
        );
        assert_eq!(
            parse_since("2026-12-05", now).unwrap(),
            Local
                .with_ymd_and_hms(2026, 12, 5, 0, 0, 0)
                .unwrap()
                .timestamp()
        );
        assert_eq!(
            parse_since("2026-12-05T10:00:00+00:00", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0)
                .unwrap()
                .timestamp()
        );
        for bad in ["yesterday", "5 parsecs", "", "h"] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn references_are_named_the_way_status_shows_them() {
        assert_eq!(normalise_reference("farmflow:301").unwrap(), "farmflow:301");
        assert_eq!(normalise_reference(" 301 ").unwrap(), "farmflow:301");
        assert_eq!(normalise_reference("crm:42").unwrap(), "crm:42");
        for bad in ["bob", "farmflow:", "crm:x", "-3"] {
            let e = normalise_reference(bad).unwrap_err();
            assert_eq!(e.exit, Exit::Config);
            assert!(e.message.contains(bad), "{}", e.message);
        }
    }
}
