//! One reconcile, start to finish: read both sides, settle the journal, read the CRM on a
//! budget, plan, then apply (or, for a dry run, print).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, info, warn};

use crate::config::{KountaAuthMode, Settings};
use crate::farmflow::client::{FarmflowClient, FarmflowOptions};
use crate::farmflow::model::FarmflowCustomer;
use crate::http::{Api, ApiError, mask_contacts};
use crate::ids::FarmflowId;
use crate::ids::KountaId;
use crate::kounta::client::{KountaAuth, KountaClient, KountaListing, KountaOptions};
use crate::kounta::model::KountaCustomer;
use crate::ratelimit::{GrantLedger, RateLimiter};
use crate::store::{RequestLedger, SharedStore, StoreError, now};
use crate::sync::action::Attention;
use crate::sync::budget::{self, Staleness};
use crate::sync::plan::{DirectReads, OrderBook, Plan, PlanInput, plan};
use crate::sync::policy::Policy;
use crate::sync::run::Io;
pub use crate::sync::run::{CycleKind, Outcome, RunOptions, RunReport, Summary};

/// A link not verified for this long is read whatever the budget says (a safety net; the
/// budget normally verifies every link far more often).
pub const DEFAULT_MAX_VERIFY_AGE_SECS: i64 = 7 * 24 * 3600;

/// Everything a run needs: both clients, the store, and the user's policy. One run at a time:
/// each run hands its cancel token to both clients.
pub struct Engine {
    /// The CRM client.
    pub kounta: KountaClient,
    /// The FarmFlow client.
    pub farmflow: FarmflowClient,
    /// The state DB.
    pub store: SharedStore,
    /// The user's choices (`[sync]`).
    pub policy: Policy,
    /// `kounta.requests_per_minute`: the verification budget is what it leaves.
    pub kounta_rate: u32,
    /// A link not verified for this long is read whatever the budget says.
    pub max_verify_age_secs: i64,
    /// `[history] keep_days`: sweeps prune older history rows.
    pub history_keep_days: u32,
    /// The date one-time orders are judged against; `None` is the local date (set it to replay
    /// a day, or to let a test's order come due).
    pub today: Option<chrono::NaiveDate>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("kounta", &self.kounta)
            .field("farmflow", &self.farmflow)
            .field("policy", &self.policy)
            .finish()
    }
}

/// The CRM client options the settings describe.
pub fn kounta_options(settings: &Settings) -> KountaOptions {
    let k = &settings.kounta;
    KountaOptions {
        base_url: k.base_url.clone(),
        company_id: k.company_id,
        auth: match k.auth {
            KountaAuthMode::Basic => KountaAuth::Basic {
                client_id: k.client_id.clone(),
                client_secret: k.client_secret.clone(),
            },
            KountaAuthMode::Oauth => KountaAuth::OAuth {
                client_id: k.client_id.clone(),
                client_secret: k.client_secret.clone(),
                refresh_token: k.refresh_token.clone(),
            },
        },
        requests_per_minute: k.requests_per_minute,
        timeout: k.timeout,
    }
}

/// The window every `requests_per_minute` is measured over: a minute.
///
/// Debug builds (the tests) shorten it with `FARMSYNC_TEST_RATE_WINDOW_MS`, so that limiting
/// meant to span minutes is proven in seconds by the real binary. The config does not offer it,
/// and release builds do not contain it.
pub fn rate_window() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("FARMSYNC_TEST_RATE_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
    {
        return Duration::from_millis(ms);
    }
    Duration::from_secs(60)
}

/// The request ledger of the state DB at `path`, for the limiters of this process to share the
/// rate with every other farmsync on it (DESIGN.md: "no minute ever carries more CRM requests
/// than the configured rate, across processes").
pub fn request_ledger(path: &Path) -> Result<Arc<dyn GrantLedger>, StoreError> {
    Ok(Arc::new(RequestLedger::open(path)?))
}

/// [`request_ledger`] for a process that only reads the state DB (`check`, a dry run): it
/// counts the others' requests and records none of its own.
pub fn request_ledger_read_only(path: &Path) -> Result<Arc<dyn GrantLedger>, StoreError> {
    Ok(Arc::new(RequestLedger::open_read_only(path)?))
}

/// The limiter of `per_minute` requests for `api` (over [`rate_window`]), sharing its grants
/// through `ledger` when there is one.
pub fn rate_limiter(
    api: Api,
    per_minute: u32,
    ledger: Option<&Arc<dyn GrantLedger>>,
) -> RateLimiter {
    let limiter = RateLimiter::new(per_minute, rate_window());
    match ledger {
        Some(ledger) => limiter.with_ledger(ledger.clone(), api),
        None => limiter,
    }
}

/// The FarmFlow client options the settings describe.
pub fn farmflow_options(settings: &Settings) -> FarmflowOptions {
    let f = &settings.farmflow;
    FarmflowOptions {
        base_url: f.base_url.clone(),
        api_key: f.api_key.clone(),
        auth_header: f.auth_header.clone(),
        auth_prefix: f.auth_prefix.clone(),
        requests_per_minute: f.requests_per_minute,
        timeout: f.timeout,
    }
}

impl Engine {
    /// What apply and recover work through: both clients and the store.
    fn io(&self) -> Io<'_> {
        Io {
            kounta: &self.kounta,
            farmflow: &self.farmflow,
            store: &self.store,
        }
    }

    /// Builds both clients from the settings; rotated OAuth tokens go to `store`. When `store`
    /// is on disk, both rate limiters share its request ledger.
    pub fn from_settings(
        settings: &Settings,
        store: SharedStore,
        allow_mass_delete: bool,
    ) -> Result<Engine, ApiError> {
        let tokens = Arc::new(store.clone());
        Self::from_settings_with_tokens(settings, store, tokens, allow_mass_delete)
    }

    /// [`Engine::from_settings`] with rotated OAuth tokens kept in `tokens`: a dry run reads a
    /// read-only `store` (whose ledger it then only reads) and keeps tokens in the state DB
    /// through [`crate::store::DbTokens`].
    pub fn from_settings_with_tokens(
        settings: &Settings,
        store: SharedStore,
        tokens: Arc<dyn crate::kounta::auth::TokenStore>,
        allow_mass_delete: bool,
    ) -> Result<Engine, ApiError> {
        let (path, read_only) = store.blocking(|s| {
            (
                (!s.is_in_memory()).then(|| s.path().to_owned()),
                s.is_read_only(),
            )
        });
        let open_ledger = if read_only {
            request_ledger_read_only
        } else {
            request_ledger
        };
        let ledger = path.and_then(|path| match open_ledger(&path) {
            Ok(ledger) => Some(ledger),
            Err(e) => {
                // The rate still holds within this process.
                warn!(error = %e, "http.ratelimit.unshared");
                None
            }
        });
        let kounta =
            KountaClient::new(kounta_options(settings), tokens)?.with_rate_limiter(rate_limiter(
                Api::Kounta,
                settings.kounta.requests_per_minute,
                ledger.as_ref(),
            ));
        let farmflow =
            FarmflowClient::new(farmflow_options(settings))?.with_rate_limiter(rate_limiter(
                Api::Farmflow,
                settings.farmflow.requests_per_minute,
                ledger.as_ref(),
            ));
        Ok(Engine {
            kounta,
            farmflow,
            store,
            policy: settings.policy(allow_mass_delete),
            kounta_rate: settings.kounta.requests_per_minute,
            max_verify_age_secs: DEFAULT_MAX_VERIFY_AGE_SECS,
            history_keep_days: settings.history.keep_days,
            today: None,
        })
    }

    /// One reconcile. Never panics on remote data; every failure is in the report.
    pub async fn run_once(&self, options: RunOptions) -> RunReport {
        let run_id = new_run_id();
        let span = tracing::info_span!("sync.run", run_id = %run_id);
        // Counted per run: the daemon's sweep and quick cycle share the clients.
        let counts = Arc::new(crate::http::RunCounts::default());
        crate::http::counting_requests(counts.clone(), self.run_inner(run_id, options, counts))
            .instrument(span)
            .await
    }

    async fn run_inner(
        &self,
        run_id: String,
        options: RunOptions,
        counts: Arc<crate::http::RunCounts>,
    ) -> RunReport {
        let started = Instant::now();
        // This run's token ends the clients' waits; a dry run records no requests (it writes
        // nothing to the state DB) but still counts the other processes'.
        let cancel = options.cancel.clone().unwrap_or_default();
        self.kounta.cancel_waits_on(cancel.clone());
        self.farmflow.cancel_waits_on(cancel);
        self.kounta.limiter().set_recording(!options.dry_run);
        self.farmflow.limiter().set_recording(!options.dry_run);
        let mut policy = self.policy.clone();
        policy.allow_mass_delete |= options.allow_mass_delete;
        info!(
            dry_run = options.dry_run,
            kind = options.kind.as_str(),
            "sync.run.started"
        );

        let mut report = RunReport {
            run_id: run_id.clone(),
            dry_run: options.dry_run,
            outcome: Outcome::Applied,
            summary: Summary::default(),
            plan: None,
            listing_cut: None,
            unsettled: 0,
            interrupted: false,
            omissions: 0,
        };
        if !options.dry_run {
            let id = run_id.clone();
            if let Err(e) = self.store.call(move |s| s.start_run(&id, false)).await {
                report.outcome = Outcome::Unavailable(e.to_string());
                return self.finish(report, &counts, started).await;
            }
        }

        match self
            .reconcile(&run_id, &options, &policy, &mut report)
            .await
        {
            Ok(()) => {}
            Err(RunError::Unavailable(message)) if !options.cancelled() => {
                // API errors may quote a record back (an unreadable answer's excerpt).
                let message = mask_contacts(&message);
                warn!(error = %message, "sync.run.unavailable");
                report.outcome = Outcome::Unavailable(message);
            }
            // Stopped: a failure while stopping (a lookup cut short) is the stop's doing.
            // Nothing was inferred from what was read before it.
            Err(_) => {
                if !report.interrupted {
                    info!("sync.run.interrupted");
                }
                report.interrupted = true;
            }
        }
        self.finish(report, &counts, started).await
    }

    async fn reconcile(
        &self,
        run_id: &str,
        options: &RunOptions,
        policy: &Policy,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        let seen_at = now();
        // Asked to stop: what was read is left unused (a cut listing proves nothing).
        let stop = || {
            if options.cancelled() {
                Err(RunError::Interrupted)
            } else {
                Ok(())
            }
        };
        // 1. Read both sides. FarmFlow has no paging: all or nothing.
        let read_farmflow = || async {
            self.farmflow.list().await.map_err(|e| {
                RunError::api(e, |e| {
                    format!("cannot read the FarmFlow customer list: {e}")
                })
            })
        };
        // In the daemon, where quick cycles run beside it, a sweep's listing leaves their
        // reserve of the CRM rate free.
        let reserve = match options.writer {
            Some(_) => budget::quick_reserve(self.kounta_rate),
            None => 0,
        };
        let read_kounta = || async {
            self.kounta.list_leaving(reserve).await.map_err(|e| {
                RunError::api(e, |e| format!("cannot read the CRM customer list: {e}"))
            })
        };
        let quick = options.kind == CycleKind::Quick;
        // A sweep lists the CRM first and reads FarmFlow after it, just before planning; a
        // quick cycle lists nothing of the CRM (its listing is made from the links below).
        let mut listing = if quick {
            KountaListing {
                items: Vec::new(),
                complete: true,
                error: None,
                pages: 0,
            }
        } else {
            read_kounta().await?
        };
        // One writer at a time (DESIGN.md, "Sweeps and quick cycles"): everything from here —
        // FarmFlow's list, the journal, the links, reads by id, the plan and its writes — is
        // done by one cycle at a time, so each plans on the links and FarmFlow records as the
        // last writer left them. Only the sweep's CRM listing runs beside a quick cycle; a
        // listed item that a quick cycle changed meanwhile differs from its new snapshot, so
        // the plan reads that record in full again before acting on it.
        let _writer = match &options.writer {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let mut farmflow: Vec<FarmflowCustomer> = read_farmflow().await?;
        // An empty list may be a glitch (a replica or a proxy answering `[]`). With links the
        // guard holds everything destructive back, but on a first run nothing would stop every
        // customer of the other side being created into it a second time: read an empty list
        // once more before believing it.
        if farmflow.is_empty() {
            info!("sync.listing.empty_reread");
            farmflow = read_farmflow().await?;
        }
        if !quick && listing.complete && listing.items.is_empty() {
            info!("sync.listing.empty_reread");
            listing = read_kounta().await?;
        }
        stop()?;
        if let Some(cut) = &listing.error {
            let cut = mask_contacts(&cut.to_string());
            warn!(error = %cut, pages = listing.pages, "sync.listing.incomplete");
            report.listing_cut = Some(cut);
        }

        // 2. Settle what an earlier run left unsettled, before anything is retried.
        let unsettled = self
            .store
            .call(|s| s.unsettled_intents())
            .await
            .map_err(store_down)?;
        report.unsettled = unsettled.len();
        let mut unsettled_kounta: Vec<KountaId> = unsettled
            .iter()
            .filter_map(|i| i.intent.kounta_id)
            .collect();
        if !options.dry_run && !unsettled.is_empty() {
            let found = super::recover::settle(self.io(), unsettled, &farmflow, &listing.items)
                .await
                .map_err(|e| RunError::Unavailable(e.to_string()))?;
            unsettled_kounta.extend(found);
            stop()?;
        }

        // 3. Read the CRM on a budget (a sweep), or only what changed (a quick cycle).
        let links = self.store.call(|s| s.links()).await.map_err(store_down)?;
        let hints = self.store.call(|s| s.hints()).await.map_err(store_down)?;
        let (resolutions, queue) = self
            .store
            .call(|s| Ok((s.pending_resolutions()?, s.delete_queue()?)))
            .await
            .map_err(store_down)?;
        let mut hinted: Vec<KountaId> = hints.iter().map(|h| h.kounta_id).collect();
        let farmflow_changed = budget::kounta_reads_for_farmflow_changes(&farmflow, &links);
        let reads = if quick {
            // Hinted links, links whose FarmFlow side changed, and records a lost write may
            // have touched. A hint for a customer with no link waits for the next sweep, whose
            // matching sees both sides whole.
            // Also the CRM side of each approved deletion of a CRM-deleted customer: an unread
            // record stands in from its snapshot, so only the read's 404 lets this cycle carry
            // the person's decision out.
            let linked: HashSet<KountaId> = links.iter().filter_map(|l| l.kounta_id).collect();
            let approved = approved_crm_deletions(&queue);
            let mut reads: Vec<KountaId> = hinted
                .iter()
                .chain(&farmflow_changed)
                .chain(&unsettled_kounta)
                .chain(&approved)
                .copied()
                .filter(|k| linked.contains(k))
                .collect();
            reads.sort();
            reads.dedup();
            reads
        } else {
            hinted.extend(farmflow_changed);
            let staleness = Some(Staleness {
                now: seen_at,
                max_age_secs: self.max_verify_age_secs,
            });
            let required = budget::select_full_reads(
                &listing.items,
                &links,
                &hinted,
                &unsettled_kounta,
                0,
                staleness,
            );
            let verification = budget::verification_budget(
                self.kounta_rate,
                // The requests of the last minute by every farmsync process on this state DB.
                self.kounta.limiter().recent_shared().await,
                u32::try_from(required.len()).unwrap_or(u32::MAX),
            );
            budget::select_full_reads(
                &listing.items,
                &links,
                &hinted,
                &unsettled_kounta,
                verification,
                staleness,
            )
        };
        let mut reads_done = FullReads::default();
        self.read_full(&reads, &mut reads_done).await?;
        if quick {
            // The quick cycle's listing: every linked CRM customer as its snapshot shows it,
            // except those a read just found gone. The plan then sees unread links unchanged,
            // and a 404 as a deletion to confirm — never an absence it did not read.
            listing.items = quick_listing(&links, &reads_done.gone);
        }
        let listed_ids: HashSet<KountaId> = listing.items.iter().map(|i| i.id).collect();

        // 4. Plan; read what the plan asks for (orders, more CRM records) and plan again.
        let today = self
            .today
            .unwrap_or_else(|| chrono::Local::now().date_naive());
        let mut orders: Option<OrderBook> = None;
        let mut orders_tried = false;
        let mut direct = DirectReads::default();
        let mut farmflow_attempted: HashSet<FarmflowId> = HashSet::new();
        let decisions = to_decisions(resolutions, &queue);
        let mut current = loop {
            direct.kounta_gone.clone_from(&reads_done.gone);
            let input = PlanInput {
                farmflow: &farmflow,
                kounta_list: &listing.items,
                kounta_list_complete: listing.complete,
                kounta_full: &reads_done.full,
                links: &links,
                orders: orders.as_ref(),
                direct: &direct,
                decisions: &decisions,
                today,
            };
            let planned = plan(&input, policy);
            let mut more = false;
            if planned.needs_orders && !orders_tried {
                orders_tried = true;
                orders = self.read_orders().await;
                stop()?;
                if orders.is_none() {
                    // Unreadable is not "no orders": the deletions waiting on them are blocked
                    // this run, and the run reports a failure, like a record it could not read.
                    direct.orders_unreadable = true;
                    reads_done.failed += 1;
                }
                more = true;
            }
            let wanted: Vec<KountaId> = planned
                .needs_kounta_reads
                .iter()
                .copied()
                .filter(|k| !reads_done.attempted.contains(k))
                .collect();
            if !wanted.is_empty() {
                self.read_full(&wanted, &mut reads_done).await?;
                more = true;
            }
            if planned.needs_farmflow_probe && direct.farmflow_probed.is_none() {
                let known = farmflow
                    .iter()
                    .map(|c| c.id.0)
                    .chain(links.iter().map(|l| l.farmflow_id.0))
                    .chain(direct.farmflow.keys().map(|id| id.0))
                    .max()
                    .unwrap_or(0);
                match super::recover::probe_newer(&self.farmflow, known).await {
                    Ok(found) => {
                        for c in found {
                            info!(side = "farmflow", id = c.id.0, "sync.listing.omission");
                            report.omissions += 1;
                            direct.farmflow.insert(c.id, c);
                        }
                        direct.farmflow_probed = Some(true);
                    }
                    Err(e) => {
                        read_failed(e, None, &mut reads_done)?;
                        // Nothing is created into FarmFlow this run: its twin may be there.
                        direct.farmflow_probed = Some(false);
                    }
                }
                more = true;
            }
            // FarmFlow's list proved it lags or leaves customers out (a read by id found one it
            // did not show): then it may also show a customer deleted since, so each customer
            // about to be created in the CRM from it is read by id first. A consistent list
            // costs nothing here.
            let list_unreliable = !direct.farmflow.is_empty();
            let ghosts = planned.actions.iter().filter_map(|a| match a {
                crate::sync::action::Action::CreateKounta(c) if list_unreliable => {
                    Some(c.farmflow_id)
                }
                _ => None,
            });
            let wanted: Vec<FarmflowId> = planned
                .needs_farmflow_reads
                .iter()
                .copied()
                .chain(ghosts)
                .filter(|f| farmflow_attempted.insert(*f))
                .collect();
            if !wanted.is_empty() {
                let listed: HashSet<FarmflowId> = farmflow.iter().map(|c| c.id).collect();
                report.omissions += self
                    .read_farmflow(&wanted, &listed, &mut direct, &mut reads_done)
                    .await?;
                more = true;
            }
            if !more {
                break planned;
            }
        };

        // Linked CRM customers the complete listing left out but a read by id found.
        if listing.complete {
            let linked: HashSet<KountaId> = links.iter().filter_map(|l| l.kounta_id).collect();
            let mut omitted: Vec<KountaId> = reads_done
                .full
                .keys()
                .filter(|k| linked.contains(k) && !listed_ids.contains(k))
                .copied()
                .collect();
            omitted.sort();
            for k in omitted {
                info!(side = "kounta", id = k.0, "sync.listing.omission");
                report.omissions += 1;
            }
        }

        if quick {
            quick_only(&mut current, &links, &queue, &reads_done);
        }

        if let Some(guard) = &current.guard {
            warn!(
                planned_deletions = guard.planned_deletions,
                live_links = guard.live_links,
                max_delete_fraction = policy.max_delete_fraction,
                reason = ?guard.reason,
                "sync.guard.tripped"
            );
        }

        // 5. Apply (a dry run stops here).
        if !options.dry_run {
            let seen: Vec<FarmflowCustomer> = with_direct_reads(&farmflow, &direct);
            let mut applier =
                super::apply::Applier::new(self.io(), run_id, options.kind.as_str(), &links, &seen);
            applier.apply(&current, options).await;
            // A FarmFlow update found its customer changed since the list was read (the
            // grower typed meanwhile): re-plan those links on the fresh read, once.
            let stale = std::mem::take(&mut applier.stale);
            if !stale.is_empty() && applier.fatal.is_none() && !applier.stopped_early {
                let subjects: HashSet<crate::sync::action::Subject> = stale
                    .iter()
                    .map(|c| {
                        crate::sync::action::Subject::Link(crate::ids::ReferenceId::for_farmflow(
                            c.id,
                        ))
                    })
                    .collect();
                for fresh in stale {
                    direct.farmflow.insert(fresh.id, fresh);
                }
                applier.rebase(&with_direct_reads(&farmflow, &direct));
                // Nothing of a stale link was applied (the fresh read comes before its first
                // action), so its row is as the run read it.
                let input = PlanInput {
                    farmflow: &farmflow,
                    kounta_list: &listing.items,
                    kounta_list_complete: listing.complete,
                    kounta_full: &reads_done.full,
                    links: &links,
                    orders: orders.as_ref(),
                    direct: &direct,
                    decisions: &decisions,
                    today,
                };
                let mut replanned = plan(&input, policy);
                replanned
                    .actions
                    .retain(|a| subjects.contains(&a.subject()));
                info!(links = subjects.len(), "sync.record.replanned");
                applier.apply(&replanned, options).await;
                // Changed yet again: left for the next run, which reads it anew.
                report.summary.skipped += applier.stale.len() as u64;
            }
            if applier.stopped_early {
                info!("sync.run.interrupted");
                report.interrupted = true;
            }
            report.summary = applier.summary;
            if let Some(message) = applier.fatal {
                return Err(RunError::Unavailable(message));
            }
            if !quick {
                // A quick cycle sees part of the world: the list of records needing a person
                // is kept by sweeps, which see all of it.
                self.note_attention(&current.attention).await;
                let before = crate::store::now() - i64::from(self.history_keep_days) * 86_400;
                match self.store.call(move |s| s.prune_history(before)).await {
                    Ok(0) => {}
                    Ok(pruned) => info!(pruned, "sync.history.pruned"),
                    Err(e) => warn!(error = %e, "sync.store.failed"),
                }
            }
            // A hint is spent once its record was read (or found gone), not when the read failed.
            let spent: Vec<_> = hints
                .iter()
                .filter(|h| reads_done.answered.contains(&h.kounta_id))
                .cloned()
                .collect();
            if !spent.is_empty() {
                let _ = self.store.call(move |s| s.clear_hints(&spent)).await;
            }
        } else {
            report.summary = dry_run_summary(&current);
        }
        // Reads that failed leave their records for the next run: reported as failures. The
        // applier's own skips (deletes a direct read did not confirm) add to the plan's.
        report.summary.failed += reads_done.failed;
        report.summary.skipped += current.counts.skipped as u64;
        if current.guard.is_some() {
            report.outcome = Outcome::Guarded;
        } else if report.summary.failed > 0 || !listing.complete {
            report.outcome = Outcome::Partial;
        }
        current.actions.shrink_to_fit();
        report.plan = Some(current);
        Ok(())
    }

    async fn read_full(&self, ids: &[KountaId], reads: &mut FullReads) -> Result<(), RunError> {
        for &id in ids {
            if !reads.attempted.insert(id) {
                continue;
            }
            match self.kounta.get(id).await {
                Ok(Some(record)) => {
                    reads.full.insert(id, record);
                    reads.answered.insert(id);
                }
                // A 404 confirms an absence from the listing; a listed record gone since the
                // listing waits for the next run, which will not list it.
                Ok(None) => {
                    reads.answered.insert(id);
                    reads.gone.insert(id);
                }
                Err(e) => read_failed(e, Some(id.0), reads)?,
            }
        }
        Ok(())
    }

    /// Reads FarmFlow customers by id: one the list left out that reads back is present
    /// (`sync.listing.omission`); a 404 confirms an absence, or shows a listed customer gone
    /// since. Returns how many the list had left out.
    async fn read_farmflow(
        &self,
        ids: &[FarmflowId],
        listed: &HashSet<FarmflowId>,
        direct: &mut DirectReads,
        reads: &mut FullReads,
    ) -> Result<u64, RunError> {
        let mut present = 0;
        for &id in ids {
            match self.farmflow.get(id).await {
                Ok(Some(record)) => {
                    if !listed.contains(&id) {
                        info!(side = "farmflow", id = id.0, "sync.listing.omission");
                        present += 1;
                    }
                    direct.farmflow.insert(id, record);
                }
                Ok(None) => {
                    direct.farmflow_gone.insert(id);
                }
                Err(e) => read_failed(e, Some(id.0), reads)?,
            }
        }
        Ok(present)
    }

    /// Both order lists, or `None` when either could not be read (or farmsync is stopping).
    async fn read_orders(&self) -> Option<OrderBook> {
        let unreadable = |e: ApiError| {
            if !e.is_cancelled() {
                warn!(error = %mask_contacts(&e.to_string()), "sync.orders.unreadable");
            }
        };
        let recurring = match self.farmflow.recurring_orders().await {
            Ok(r) => r,
            Err(e) => {
                unreadable(e);
                return None;
            }
        };
        let one_time = match self.farmflow.one_time_orders().await {
            Ok(o) => o,
            Err(e) => {
                unreadable(e);
                return None;
            }
        };
        Some(OrderBook {
            recurring,
            one_time,
        })
    }

    async fn note_attention(&self, items: &[Attention]) {
        let items: Vec<(String, String, String)> = items
            .iter()
            .map(|a| {
                // FarmFlow's id first: it stays the same when the record gets linked.
                let subject = match (a.farmflow_id, a.kounta_id) {
                    (Some(f), _) => format!("farmflow {f}"),
                    (None, Some(k)) => format!("crm {k}"),
                    (None, None) => "-".to_owned(),
                };
                (attention_kind(a), subject, a.detail.clone())
            })
            .collect();
        let result = self
            .store
            .call(move |s| {
                let mut by_kind: HashMap<String, Vec<String>> = HashMap::new();
                for kind in ATTENTION_KINDS {
                    by_kind.insert((*kind).to_owned(), Vec::new());
                }
                let mut new = Vec::new();
                for (kind, subject, detail) in &items {
                    if s.note_attention(kind, subject, detail)? {
                        new.push((kind.clone(), subject.clone(), detail.clone()));
                    }
                    by_kind
                        .entry(kind.clone())
                        .or_default()
                        .push(subject.clone());
                }
                for (kind, subjects) in by_kind {
                    s.retain_attention(&kind, &subjects)?;
                }
                Ok(new)
            })
            .await;
        match result {
            Ok(new) => {
                // Warn once per record, not every run.
                for (kind, subject, detail) in new {
                    warn!(kind = %kind, subject = %subject, detail = %detail, "sync.record.attention");
                }
            }
            Err(e) => warn!(error = %e, "sync.store.failed"),
        }
    }

    async fn finish(
        &self,
        mut report: RunReport,
        counts: &crate::http::RunCounts,
        started: Instant,
    ) -> RunReport {
        // What is left of the limiters' leases is not counted against other processes.
        self.kounta.limiter().release().await;
        self.farmflow.limiter().release().await;
        report.summary.kounta_requests = counts.get(crate::http::Api::Kounta);
        report.summary.farmflow_requests = counts.get(crate::http::Api::Farmflow);
        let s = report.summary;
        let exit_code = report.outcome.exit_code();
        if !report.dry_run {
            let id = report.run_id.clone();
            let summary = serde_json::to_value(s).unwrap_or_default();
            if let Err(e) = self
                .store
                .call(move |st| st.finish_run(&id, exit_code, &summary))
                .await
            {
                warn!(error = %e, "sync.store.failed");
            }
        }
        info!(
            dry_run = report.dry_run,
            exit_code,
            created = s.created,
            updated = s.updated,
            deleted = s.deleted,
            linked = s.linked,
            blocked = s.blocked,
            conflicts = s.conflicts,
            failed = s.failed,
            skipped = s.skipped,
            queued = s.queued,
            kounta_requests = s.kounta_requests,
            farmflow_requests = s.farmflow_requests,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sync.run.finished"
        );
        report
    }
}

const ATTENTION_KINDS: &[&str] = &[
    "skipped",
    "reference_collision",
    "unmappable_country",
    "tombstone_reappeared",
];

fn attention_kind(a: &Attention) -> String {
    serde_json::to_value(a.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".to_owned())
}

/// A read by id that failed: refused credentials or a shutdown stop the run; anything else
/// leaves what waited on the read for a later run, and the run reports a failure.
fn read_failed(e: ApiError, id: Option<i64>, reads: &mut FullReads) -> Result<(), RunError> {
    if e.is_auth() || e.is_cancelled() {
        return Err(RunError::api(e, |e| e.to_string()));
    }
    let error = mask_contacts(&e.to_string());
    warn!(api = ?e.api(), id, error = %error, "sync.read.failed");
    reads.failed += 1;
    Ok(())
}

/// A quick cycle's stand-in for the CRM listing: each linked CRM customer as its snapshot shows
/// it (so an unread link counts as unchanged), less those a read by id found gone.
fn quick_listing(
    links: &[crate::store::Link],
    gone: &std::collections::BTreeSet<KountaId>,
) -> Vec<crate::kounta::model::KountaListItem> {
    let mut seen = HashSet::new();
    links
        .iter()
        .filter(|l| l.state != crate::store::LinkState::Tombstone)
        .filter_map(|l| {
            let k = l.kounta_id?;
            if gone.contains(&k) || !seen.insert(k) {
                return None;
            }
            let snapshot = l.kounta_snapshot.clone().unwrap_or_default();
            Some(crate::kounta::model::KountaListItem {
                id: k,
                first_name: snapshot.first_name,
                last_name: snapshot.last_name,
                email: snapshot.email,
            })
        })
        .collect()
}

/// The CRM customers whose deletion in the CRM a person approved: FarmFlow's twin is to go.
fn approved_crm_deletions(queue: &[crate::store::QueuedDelete]) -> Vec<KountaId> {
    queue
        .iter()
        .filter(|q| {
            q.action == "delete_farmflow"
                && q.decision == Some(crate::store::DeleteDecision::Approved)
        })
        .filter_map(|q| q.kounta_id.map(KountaId))
        .collect()
}

/// Keeps what a quick cycle may do: the actions of existing links, but no creates (a
/// recreation waits for the sweep, and so does whatever follows it for that link, such as
/// taking a rejected deletion off the queue) and no new links. Nor does a quick cycle take a
/// deletion of a CRM-deleted customer off the queue unless it read that customer by id: its
/// stand-in listing shows every unread linked customer from the snapshot, which says nothing
/// about whether the customer came back.
fn quick_only(
    plan: &mut Plan,
    links: &[crate::store::Link],
    queue: &[crate::store::QueuedDelete],
    reads: &FullReads,
) {
    use crate::sync::action::{Action, Subject};
    let unseen_crm_deletions: HashSet<&str> = queue
        .iter()
        .filter(|q| q.action == "delete_farmflow")
        .filter(|q| {
            q.kounta_id
                .is_none_or(|k| !reads.answered.contains(&KountaId(k)))
        })
        .map(|q| q.reference_id.as_str())
        .collect();
    plan.actions.retain(|a| match a {
        Action::Unqueue { reference_id, .. } => {
            !unseen_crm_deletions.contains(reference_id.as_str())
        }
        _ => true,
    });
    let existing: HashSet<&crate::ids::ReferenceId> =
        links.iter().map(|l| &l.reference_id).collect();
    let creates = |a: &Action| {
        matches!(
            a,
            Action::Link { .. }
                | Action::CreateKounta(_)
                | Action::CreateFarmflow(_)
                | Action::RecreateKounta { .. }
                | Action::RecreateFarmflow { .. }
        )
    };
    let waiting: HashSet<Subject> = plan
        .actions
        .iter()
        .filter(|a| creates(a))
        .map(|a| a.subject())
        .collect();
    plan.actions.retain(|a| {
        let subject = a.subject();
        let ours = matches!(subject, Subject::Link(ref r) if existing.contains(r));
        ours && !waiting.contains(&subject)
    });
    plan.counts = crate::sync::plan::PlanCounts::of(&plan.actions);
}

/// FarmFlow's list with the records read by id this run in place of (or beside) the listed ones.
fn with_direct_reads(list: &[FarmflowCustomer], direct: &DirectReads) -> Vec<FarmflowCustomer> {
    let mut out: Vec<FarmflowCustomer> = list
        .iter()
        .filter(|c| !direct.farmflow.contains_key(&c.id))
        .cloned()
        .collect();
    out.extend(direct.farmflow.values().cloned());
    out
}

/// The decisions people made, as the plan takes them. A row naming a link or field this
/// farmsync cannot read is left out (and stays in the DB for a person to see).
fn to_decisions(
    resolutions: Vec<crate::store::PendingResolution>,
    queue: &[crate::store::QueuedDelete],
) -> crate::sync::plan::Decisions {
    let mut out = crate::sync::plan::Decisions::default();
    for r in resolutions {
        if let (Some(reference), Some(field)) = (
            crate::ids::ReferenceId::parse(&r.reference_id),
            crate::customer::Field::parse(&r.field),
        ) {
            out.resolutions
                .entry(reference)
                .or_default()
                .insert(field, r.value);
        }
    }
    for q in queue {
        if let Some(reference) = crate::ids::ReferenceId::parse(&q.reference_id) {
            out.queued.insert(reference, q.decision);
        }
    }
    out
}

/// What a dry run would do, counted from the plan.
fn dry_run_summary(plan: &Plan) -> Summary {
    let c = plan.counts;
    Summary {
        created: (c.kounta_creates + c.farmflow_creates + c.recreated) as u64,
        updated: (c.kounta_updates + c.farmflow_updates) as u64,
        deleted: (c.farmflow_deletes + c.tagged + c.unlinked) as u64,
        linked: c.linked as u64,
        blocked: c.blocked as u64,
        conflicts: c.conflicts as u64,
        queued: c.queued as u64,
        ..Summary::default()
    }
}

/// The CRM records read in full this run.
#[derive(Default)]
struct FullReads {
    /// The records read.
    full: HashMap<KountaId, KountaCustomer>,
    /// Every id a read was tried for (each is tried once a run).
    attempted: HashSet<KountaId>,
    /// Ids the CRM answered for: a record, or 404.
    answered: HashSet<KountaId>,
    /// Ids the CRM answered 404 for.
    gone: std::collections::BTreeSet<KountaId>,
    /// Reads that failed (and order lists that could not be read).
    failed: u64,
}

/// Why a run could not go on.
#[derive(Debug)]
enum RunError {
    Unavailable(String),
    /// Asked to stop before it wrote anything.
    Interrupted,
}

impl RunError {
    /// An API failure: the run stops as unavailable, or as interrupted when farmsync is stopping.
    fn api(e: ApiError, message: impl FnOnce(&ApiError) -> String) -> RunError {
        if e.is_cancelled() {
            RunError::Interrupted
        } else {
            RunError::Unavailable(message(&e))
        }
    }
}

fn store_down(e: StoreError) -> RunError {
    RunError::Unavailable(e.to_string())
}

/// A run id: time-ordered, and unique (it keys the `runs` table). Sixteen random bits were
/// not enough: runs started in the same second (a daemon woken by webhooks, tests) collided
/// often enough to fail a run on the table's key.
fn new_run_id() -> String {
    format!(
        "{}-{:016x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        rand::random::<u64>()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids_do_not_collide() {
        let ids: std::collections::HashSet<String> =
            (0..5_000).map(|_| super::new_run_id()).collect();
        assert_eq!(ids.len(), 5_000);
    }
}
