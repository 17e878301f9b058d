//! Settling what an earlier run left unsettled in the journal, by looking the records up,
//! before anything is retried: a create whose answer was lost must never become two.

use std::collections::HashSet;

use tracing::{info, warn};

use crate::customer::{Customer, Field};
use crate::farmflow::client::FarmflowClient;
use crate::farmflow::model::FarmflowCustomer;
use crate::http::ApiError;
use crate::http::mask_contacts;
use crate::ids::{FarmflowId, KountaId, ReferenceId};
use crate::kounta::model::KountaListItem;
use crate::store::{Intent, Link, LinkState, Side, StoreError, Written, now};
use crate::sync::apply::payload_fields;
use crate::sync::run::Io;

/// Why settling stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The state DB failed.
    #[error("cannot settle the journal: {0}")]
    Store(#[from] StoreError),
    /// The CRM refused the credentials while looking a create up.
    #[error("cannot settle the journal: {0}")]
    Auth(ApiError),
    /// A lookup that must answer before anything is retried could not be made.
    #[error("cannot settle the journal: {0}")]
    Unresolved(ApiError),
}

/// Settles every unsettled intent it can. Returns the CRM ids that should be read in full this
/// run (records a lost write may have touched).
pub async fn settle(
    io: Io<'_>,
    intents: Vec<Intent>,
    farmflow: &[FarmflowCustomer],
    _listing: &[KountaListItem],
) -> Result<Vec<KountaId>, RecoverError> {
    #[cfg(debug_assertions)]
    if test_fault_skips_recovery() {
        warn!(
            unsettled = intents.len(),
            "sync.journal.recovery_skipped_by_test_fault"
        );
        return Ok(Vec::new());
    }
    let mut reread = Vec::new();
    for intent in intents {
        let i = &intent.intent;
        if let Some(k) = i.kounta_id {
            reread.push(k);
        }
        let outcome = match (i.side, i.op.as_str()) {
            (Side::Kounta, "create") => settle_kounta_create(io, &intent, &mut reread).await?,
            (Side::Farmflow, "create") => settle_farmflow_create(io, &intent, farmflow)
                .await?
                .map(|outcome| (outcome, Written::No)),
            // Updates, tags, unlinks and deletes are idempotent: the plan sees where things stand
            // now and does again whatever is still needed. Whether this one landed is not
            // known: history keeps it as unconfirmed.
            _ => Some((
                "superseded: re-planned from current state".to_owned(),
                Written::Unconfirmed,
            )),
        };
        if let Some((outcome, written)) = outcome {
            let id = intent.id;
            io.store
                .call(move |s| s.settle_intent(id, &outcome, None, written))
                .await?;
        }
    }
    Ok(reread)
}

/// Test-only (debug builds): `FARMSYNC_TEST_FAULT=skip-journal-recovery` leaves every
/// unsettled write unsettled and unlooked-up, so the crash campaign can prove it notices a
/// broken journal. Release builds do not contain it.
#[cfg(debug_assertions)]
fn test_fault_skips_recovery() -> bool {
    std::env::var("FARMSYNC_TEST_FAULT").is_ok_and(|v| v == "skip-journal-recovery")
}

/// A CRM create carries its `reference_id`: look it up.
async fn settle_kounta_create(
    io: Io<'_>,
    intent: &Intent,
    reread: &mut Vec<KountaId>,
) -> Result<Option<(String, Written)>, RecoverError> {
    let Some(reference) = intent.intent.reference_id.clone() else {
        return Ok(Some((
            "abandoned: no reference id to look up".to_owned(),
            Written::No,
        )));
    };
    let found = match io.kounta.find_by_reference(reference.as_str()).await {
        Ok(items) => items,
        Err(e) if e.is_auth() => return Err(RecoverError::Auth(e)),
        // farmsync is stopping: the run ends here, the intent stays for the next one.
        Err(e) if e.is_cancelled() => return Err(RecoverError::Unresolved(e)),
        Err(e) => {
            // Cannot tell yet; try again next run. Nothing will create this record meanwhile:
            // the plan only creates into the CRM from a complete listing, which would show it.
            let error = mask_contacts(&e.to_string());
            warn!(reference_id = %reference, error = %error, "sync.journal.unresolved");
            return Ok(None);
        }
    };
    let mut ids: Vec<KountaId> = found.iter().map(|i| i.id).collect();
    ids.sort();
    let Some(&kounta_id) = ids.first() else {
        info!(reference_id = %reference, "sync.journal.absent");
        return Ok(Some((
            "absent: the create did not happen".to_owned(),
            Written::No,
        )));
    };
    if ids.len() > 1 {
        warn!(reference_id = %reference, count = ids.len(), "sync.journal.duplicates");
    }
    reread.extend(ids.iter().copied());
    let existing = io
        .store
        .call({
            let reference = reference.clone();
            move |s| s.link(&reference)
        })
        .await?;
    let row = match existing {
        // A recreation's link still names the deleted CRM customer: move it to the new one,
        // with no CRM snapshot, so the next plan compares both sides afresh and never reads the
        // old customer's absence as a deletion.
        Some(mut link) if link.kounta_id != Some(kounta_id) => {
            link.kounta_id = Some(kounta_id);
            link.kounta_snapshot = None;
            link.kounta_verified = false;
            link.state = LinkState::Active;
            Some(link)
        }
        Some(_) => None,
        // A create's link, as its answer would have stored it, without snapshots (the next plan
        // compares both sides afresh). Left to the plan's matching, a customer a person paused
        // or took the `kounta_tag` off meanwhile would not be linked as created — it would be
        // re-tagged, or, unlinked, created again once a listing left it out.
        None => Some(Link {
            reference_id: reference.clone(),
            farmflow_id: reference.farmflow_id(),
            kounta_id: Some(kounta_id),
            kounta_snapshot: None,
            farmflow_snapshot: None,
            kounta_verified: false,
            state: LinkState::Active,
            last_verified_at: None,
            last_synced_at: Some(now()),
            last_error: None,
            consecutive_failures: 0,
            parked: None,
        }),
    };
    if let Some(link) = row {
        io.store.call(move |s| s.upsert_link(&link)).await?;
    }
    info!(reference_id = %reference, kounta_id = kounta_id.0, "sync.journal.found");
    Ok(Some((format!("found {kounta_id}"), Written::Applied)))
}

/// A FarmFlow create has no external id: find an unlinked FarmFlow customer above the intent's
/// watermark whose normalised email, phone, first and last name equal what was sent.
async fn settle_farmflow_create(
    io: Io<'_>,
    intent: &Intent,
    farmflow: &[FarmflowCustomer],
) -> Result<Option<String>, RecoverError> {
    let i = &intent.intent;
    let (Some(kounta_id), Some(sent)) = (i.kounta_id, payload_fields(&i.payload)) else {
        return Ok(Some("abandoned: unreadable intent".to_owned()));
    };
    let watermark = i.watermark.unwrap_or(i64::MAX);
    let sent = Customer::from_farmflow(&sent).customer;
    let links = io.store.call(|s| s.links()).await?;
    let linked: HashSet<FarmflowId> = links.iter().map(|l| l.farmflow_id).collect();
    let live: HashSet<FarmflowId> = farmflow.iter().map(|c| c.id).collect();
    // The row that holds this CRM customer now: a live link means the create is moot; a link to
    // a FarmFlow customer that is gone means this was a recreation, to be replaced.
    let holder = links
        .iter()
        .find(|l| l.kounta_id == Some(kounta_id) && l.state != LinkState::Tombstone)
        .cloned();
    if let Some(h) = &holder
        && live.contains(&h.farmflow_id)
    {
        return Ok(Some(format!(
            "superseded: crm {kounta_id} is already linked as {}",
            h.reference_id
        )));
    }
    // Unlinked customers above the watermark: where the create would have landed.
    let above = |list: &[FarmflowCustomer]| -> Vec<FarmflowCustomer> {
        let mut found: Vec<FarmflowCustomer> = list
            .iter()
            .filter(|c| c.id.0 > watermark && !linked.contains(&c.id))
            .cloned()
            .collect();
        found.sort_by_key(|c| c.id);
        found
    };
    // What was sent, to the letter (normalised): email, phone, first and last name.
    let exact = |c: &FarmflowCustomer| {
        let now = Customer::from_farmflow(&c.fields).customer;
        [
            Field::Email,
            Field::Phone,
            Field::FirstName,
            Field::LastName,
        ]
        .iter()
        .all(|&f| Customer::field_eq_normalised(&now, &sent, f))
    };
    let mut seen = above(farmflow);
    let mut candidates: Vec<FarmflowCustomer> = seen.iter().filter(|c| exact(c)).cloned().collect();
    if candidates.is_empty() {
        // Absence from one list is a question: a list that lags the create, or leaves it out,
        // would turn a lost answer into a second customer. Ask FarmFlow by id for the customers
        // above the watermark, where a create lands, before concluding.
        let newer = if watermark == i64::MAX {
            Ok(Vec::new())
        } else {
            probe_newer(io.farmflow, watermark).await
        };
        match newer {
            Ok(newer) => {
                for c in above(&newer) {
                    if !seen.iter().any(|s| s.id == c.id) {
                        seen.push(c);
                    }
                }
                candidates = seen.iter().filter(|c| exact(c)).cloned().collect();
            }
            Err(e) if e.is_auth() => return Err(RecoverError::Auth(e)),
            // Unsettled, the create must not be planned again: the run stops here.
            Err(e) => return Err(RecoverError::Unresolved(e)),
        }
    }
    if candidates.is_empty() {
        // A person may have edited the new customer before this lookup (the grower fixed the
        // name): one unlinked customer above the watermark with the same email or phone is
        // the create, not someone else — a second create would be the duplicate.
        let contact = |c: &FarmflowCustomer| {
            let now = Customer::from_farmflow(&c.fields).customer;
            [Field::Email, Field::Phone].iter().any(|&f| {
                !Customer::field_eq_normalised(&Customer::default(), &sent, f)
                    && Customer::field_eq_normalised(&now, &sent, f)
            })
        };
        let same_contact: Vec<FarmflowCustomer> =
            seen.iter().filter(|c| contact(c)).cloned().collect();
        if same_contact.len() == 1 {
            info!(
                kounta_id = kounta_id.0,
                farmflow_id = same_contact[0].id.0,
                "sync.journal.found_edited"
            );
            candidates = same_contact;
        }
    }
    let Some(created) = candidates.first() else {
        info!(kounta_id = kounta_id.0, "sync.journal.absent");
        return Ok(Some("absent: the create did not happen".to_owned()));
    };
    if candidates.len() > 1 {
        warn!(
            kounta_id = kounta_id.0,
            count = candidates.len(),
            "sync.journal.duplicates"
        );
    }
    // Link without snapshots: the next plan compares both sides afresh, reads the CRM record
    // (unverified) and writes the reference_id into it if it is missing.
    let link = Link {
        reference_id: ReferenceId::for_farmflow(created.id),
        farmflow_id: created.id,
        kounta_id: Some(kounta_id),
        kounta_snapshot: None,
        farmflow_snapshot: None,
        kounta_verified: false,
        state: LinkState::Active,
        last_verified_at: None,
        last_synced_at: Some(now()),
        last_error: None,
        consecutive_failures: 0,
        parked: None,
    };
    let outcome = format!("found {}", created.id);
    let id = intent.id;
    match holder {
        None => {
            io.store
                .call(move |s| s.settle_intent(id, &outcome, Some(&link), Written::Applied))
                .await?
        }
        Some(old) => {
            io.store
                .call(move |s| s.settle_intent_replacing(id, &outcome, &old.reference_id, &link))
                .await?
        }
    }
    info!(
        kounta_id = kounta_id.0,
        farmflow_id = created.id.0,
        "sync.journal.found"
    );
    Ok(None)
}

/// How many ids in a row that FarmFlow answers 404 for end a probe for newer customers.
const PROBE_MISSES: u32 = 3;
/// The most ids one probe asks for.
const PROBE_LIMIT: i64 = 200;

/// FarmFlow customers with ids above `above`, asked for one by one (`customer-get`) until
/// [`PROBE_MISSES`] ids in a row are not found. FarmFlow has no lookup but its list, and a list
/// that lags a write (or leaves the newest customers out) would hide a customer just typed in
/// or just created by farmsync; its ids are integers handed out in order, so the newest
/// customers sit just above the newest id the list shows. Costs [`PROBE_MISSES`] requests when
/// the list was whole. Where ids are not handed out in order it finds nothing, at that cost.
pub(super) async fn probe_newer(
    farmflow: &FarmflowClient,
    above: i64,
) -> Result<Vec<FarmflowCustomer>, ApiError> {
    let mut found = Vec::new();
    let mut misses = 0;
    let mut id = above;
    while misses < PROBE_MISSES && id < above.saturating_add(PROBE_LIMIT) {
        id += 1;
        match farmflow.get(FarmflowId(id)).await? {
            Some(c) => {
                misses = 0;
                found.push(c);
            }
            None => misses += 1,
        }
    }
    Ok(found)
}
