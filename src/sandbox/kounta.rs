//! The fake Kounta-style CRM: every behaviour of `api/kounta.md`, over real HTTP.
//!
//! Its types are its own (not farmsync's wire models), so a misreading of the contract shared
//! by the client and the fake cannot hide.

// Handlers bail out early with the `Response` they answer; it is built once per request and
// moved once, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::pipeline::{Access, Endpoint, FaultId, Flavor, Pipeline, RequestMeta, When};
use super::pipeline_methods::pipeline_methods;
use super::rate::RateLimit;
use super::seed::SeedDataError;

/// The largest request body the fake reads.
const MAX_BODY: usize = 1 << 20;

/// The endpoints of the fake CRM, for counters and faults. Webhook registration and removal
/// count as writes (`Target::AnyWrite`), `/token` as neither a read nor a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KountaEndpoint {
    /// `GET /companies/me`.
    Me,
    /// `GET /companies/{cid}/customers` without lookup parameters (one page).
    List,
    /// `GET /companies/{cid}/customers?reference_id=|email=|mobile=|first_name&last_name&phone`.
    Lookup,
    /// `GET /companies/{cid}/customers/{id}`.
    Get,
    /// `POST /companies/{cid}/customers`.
    Create,
    /// `PUT /companies/{cid}/customers/{id}`.
    Update,
    /// `DELETE /companies/{cid}/customers/{id}` (always refused with `405`).
    Delete,
    /// `POST /token` (the OAuth refresh).
    Token,
    /// `GET /companies/{cid}/webhooks`.
    WebhookList,
    /// `POST /companies/{cid}/webhooks`.
    WebhookCreate,
    /// `DELETE /companies/{cid}/webhooks/{id}`.
    WebhookDelete,
}

impl Endpoint for KountaEndpoint {
    fn access(self) -> Access {
        match self {
            KountaEndpoint::Me
            | KountaEndpoint::List
            | KountaEndpoint::Lookup
            | KountaEndpoint::Get
            | KountaEndpoint::WebhookList => Access::Read,
            KountaEndpoint::Create
            | KountaEndpoint::Update
            | KountaEndpoint::Delete
            | KountaEndpoint::WebhookCreate
            | KountaEndpoint::WebhookDelete => Access::Write,
            KountaEndpoint::Token => Access::Auth,
        }
    }
}

/// OAuth settings of the fake CRM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OauthOptions {
    /// The refresh token valid at start (rotated by every refresh).
    pub refresh_token: String,
    /// How long an access token stays valid.
    pub access_token_lifetime: Duration,
}

impl Default for OauthOptions {
    fn default() -> Self {
        OauthOptions {
            refresh_token: "sandbox-refresh-token".into(),
            access_token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Which tolerated variants the fake CRM uses when it shows a customer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadShape {
    /// Addresses as `{"lines": [...], "zone": ...}` instead of `{"address": "...", "state": ...}`.
    pub legacy_address: bool,
    /// `primary_email_address` instead of `email` (full records, list items and webhooks).
    pub primary_email_address: bool,
    /// An `id_str` string beside every `id`.
    pub id_str: bool,
    /// Ids as JSON strings (`"389427"`) instead of numbers.
    pub ids_as_strings: bool,
    /// `null` instead of `""` or `[]` for empty fields.
    pub null_for_empty: bool,
    /// Fields the contract does not name, which a client must ignore.
    pub extra_fields: bool,
}

/// How the fake CRM words its error bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error": "<code>", "error_description": "<text>"}`.
    #[default]
    Standard,
    /// `{"error_message": "<text>"}`.
    ErrorMessage,
    /// `{"message": "<text>"}`.
    Message,
}

/// Settings of the fake CRM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KountaOptions {
    /// The company's id (`/companies/me` answers it; paths must name it).
    pub company_id: i64,
    /// The company's name.
    pub company_name: String,
    /// Basic-auth user and OAuth client id.
    pub client_id: String,
    /// Basic-auth password and OAuth client secret.
    pub client_secret: String,
    /// OAuth tokens.
    pub oauth: OauthOptions,
    /// The key of `X-Kounta-Signature` on webhook deliveries.
    pub webhook_signature_token: String,
    /// Abbreviated items per list page.
    pub page_size: usize,
    /// Status answered to an expired or unknown access token: `401`, or `400` as some
    /// deployments do.
    pub expired_token_status: u16,
    /// Reformat `phone` and `mobile` on every API write.
    pub normalise_phones: bool,
    /// Tolerated read variants to use.
    pub read_shape: ReadShape,
    /// How the API's own error bodies are worded (injected faults and `429`s keep the standard
    /// shape).
    pub error_shape: ErrorShape,
    /// Answer a successful `PUT` with an empty body instead of the record.
    pub update_answers_empty: bool,
    /// A rate limit on every endpoint from the start (none by default; the documented figure is
    /// 60 a minute with basic auth).
    pub rate_limit: Option<RateLimit>,
}

impl Default for KountaOptions {
    fn default() -> Self {
        KountaOptions {
            company_id: 5678,
            company_name: "Sandbox Farm Shop".into(),
            client_id: "sandbox-client".into(),
            client_secret: "sandbox-secret".into(),
            oauth: OauthOptions::default(),
            webhook_signature_token: "sandbox-signature-token".into(),
            page_size: 25,
            expired_token_status: 401,
            normalise_phones: false,
            read_shape: ReadShape::default(),
            error_shape: ErrorShape::Standard,
            update_answers_empty: false,
            rate_limit: None,
        }
    }
}

/// An address as the fake CRM stores it (street lines joined by `\n`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KountaRecordAddress {
    /// Every street line, joined by `\n`.
    pub address: String,
    /// City.
    pub city: String,
    /// State.
    pub state: String,
    /// Postal code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
}

/// A customer as the fake CRM stores it. Also the seed-data format of a CRM customer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KountaRecord {
    /// Assigned by the fake (`0` in seed data means "assign one").
    pub id: i64,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email.
    pub email: String,
    /// Phone.
    pub phone: String,
    /// Mobile (unique within the company for API writes).
    pub mobile: String,
    /// App-private reference, `""` when unset.
    pub reference_id: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Image URL.
    pub image: Option<String>,
    /// Marketing consent.
    pub accepts_marketing: bool,
    /// Primary address.
    pub primary_address: Option<KountaRecordAddress>,
    /// Shipping address.
    pub shipping_address: Option<KountaRecordAddress>,
}

/// A webhook topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WebhookTopic {
    /// `customers/created`.
    CustomerCreated,
    /// `customers/updated`.
    CustomerUpdated,
    /// `customers/deleted`.
    CustomerDeleted,
}

impl WebhookTopic {
    /// The topic as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookTopic::CustomerCreated => "customers/created",
            WebhookTopic::CustomerUpdated => "customers/updated",
            WebhookTopic::CustomerDeleted => "customers/deleted",
        }
    }

    /// The topic named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [
            WebhookTopic::CustomerCreated,
            WebhookTopic::CustomerUpdated,
            WebhookTopic::CustomerDeleted,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// A webhook registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// Assigned by the fake.
    pub id: i64,
    /// The topic delivered.
    pub topic: WebhookTopic,
    /// Where deliveries are posted.
    pub address: String,
    /// Always `json`.
    pub format: String,
    /// Custom headers sent with every delivery.
    pub headers: BTreeMap<String, String>,
}

/// What a webhook fault does to a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookAction {
    /// Deliver twice.
    Duplicate,
    /// Deliver after this delay (later deliveries may overtake it).
    Delay(Duration),
    /// Never deliver.
    Drop,
}

/// A fault on webhook deliveries; `when` counts deliveries (one per event and registration).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WebhookFault {
    /// Which deliveries it fires on.
    pub when: When,
    /// What it does to them.
    pub action: WebhookAction,
}

/// How one delivery attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered this status.
    Delivered(u16),
    /// The request failed (connection refused, timeout...).
    Failed(String),
    /// A fault dropped it: it was never sent.
    Dropped,
}

/// One webhook delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The registration it was for.
    pub webhook_id: i64,
    /// The event's topic.
    pub topic: WebhookTopic,
    /// Where it was posted.
    pub address: String,
    /// The customer the event is about.
    pub customer_id: i64,
    /// The exact body (signed).
    pub body: Bytes,
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// When it ended.
    pub at: Instant,
}

struct ArmedWebhookFault {
    id: FaultId,
    fault: WebhookFault,
    seen: u64,
}

/// The faults of the positional listing (`GET .../customers` without lookup parameters).
#[derive(Default)]
struct ListFaults {
    /// Customers no listing shows.
    omitted: BTreeSet<i64>,
    /// The chance that a customer on a page served is left out of it.
    omit_probability: f64,
    /// The chance, before each page after the first, that the rest of the listing shifts.
    drift_probability: f64,
    /// One-shot shifts: after this page is next served, move the later pages by this much.
    drifts: Vec<(u32, i64)>,
    /// One-shot back-office deletes: right after this page is next served, delete this customer.
    deletes: Vec<(u32, i64)>,
    /// How far the pages of the listing under way are moved; page 1 starts a new listing at 0.
    shift: i64,
}

impl ListFaults {
    /// Moves the rest of the listing by `delta` at the boundary before page `next` (1-based),
    /// over `len` visible customers; returns how many customers that skips (none when it moves
    /// back: those are listed twice).
    fn shift_before(&mut self, next: u32, delta: i64, size: usize, len: usize) -> u64 {
        let boundary = position(next, size).saturating_add(self.shift);
        self.shift = self.shift.saturating_add(delta);
        if delta <= 0 {
            return 0;
        }
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let from = boundary.clamp(0, len);
        let to = boundary.saturating_add(delta).clamp(0, len);
        u64::try_from(to - from).unwrap_or(0)
    }

    /// Fires the one-shot faults armed for page `page`, now that it is served over `visible`:
    /// moves the later pages by the drifts and returns how many customers that skips (a
    /// delete of a customer already listed skips the first one not yet listed) and which
    /// customers to delete.
    fn fire_after(&mut self, page: u32, size: usize, visible: &[&KountaRecord]) -> (u64, Vec<i64>) {
        let next = page.saturating_add(1);
        let mut shifts = Vec::new();
        let mut deletes = Vec::new();
        self.drifts.retain(|&(p, shift)| {
            let fires = p == page;
            if fires {
                shifts.push(shift);
            }
            !fires
        });
        self.deletes.retain(|&(p, id)| {
            let fires = p == page;
            if fires {
                deletes.push(id);
            }
            !fires
        });
        let mut skipped = 0;
        for shift in shifts {
            skipped += self.shift_before(next, shift, size, visible.len());
        }
        let mut len = i64::try_from(visible.len()).unwrap_or(i64::MAX);
        for id in &deletes {
            let Some(at) = visible.iter().position(|c| c.id == *id) else {
                continue;
            };
            let at = i64::try_from(at).unwrap_or(i64::MAX);
            let boundary = position(next, size).saturating_add(self.shift);
            if at < boundary && boundary < len {
                skipped += 1;
            }
            len -= 1;
        }
        (skipped, deletes)
    }
}

/// Where page `page` (1-based) of `size` items starts when nothing moved.
fn position(page: u32, size: usize) -> i64 {
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    (i64::from(page) - 1).saturating_mul(size)
}

struct KountaState {
    customers: BTreeMap<i64, KountaRecord>,
    next_id: i64,
    refresh_token: String,
    access_tokens: HashMap<String, Instant>,
    latest_access: String,
    token_lifetime: Duration,
    expired_token_status: u16,
    page_size: usize,
    normalise_phones: bool,
    read_shape: ReadShape,
    error_shape: ErrorShape,
    update_answers_empty: bool,
    failing_pages: BTreeSet<u32>,
    empty_list_once: bool,
    list_faults: ListFaults,
    omissions_served: u64,
    webhooks: BTreeMap<i64, Webhook>,
    next_webhook_id: i64,
    webhook_faults: Vec<ArmedWebhookFault>,
    next_webhook_fault: u64,
    deliveries: Vec<Delivery>,
}

struct Inner {
    company_id: i64,
    company_name: String,
    client_id: String,
    client_secret: String,
    signature_token: String,
    base_url: String,
    pipeline: Pipeline<KountaEndpoint>,
    state: Mutex<KountaState>,
    runtime: Handle,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    delivered: watch::Sender<u64>,
    http: OnceLock<reqwest::Client>,
}

/// The fake CRM: a cheap-clone handle over its state, for seeding, inspecting, editing "as a
/// person would" (none of which counts as an API request) and setting faults.
#[derive(Clone)]
pub struct FakeKounta {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeKounta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKounta")
            .field("base_url", &self.inner.base_url)
            .field("company_id", &self.inner.company_id)
            .finish_non_exhaustive()
    }
}

/// When a token issued now for `lifetime` expires (a lifetime past the clock's range means
/// "not in this test's lifetime").
fn expiry_after(lifetime: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(lifetime)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

fn random_token(rng: &mut impl Rng, prefix: &str) -> String {
    format!("{prefix}{:032x}", rng.random::<u128>())
}

impl FakeKounta {
    /// A fake serving under `base_url` (which includes `/v1`).
    pub(crate) fn new(
        options: KountaOptions,
        seed: u64,
        base_url: String,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let pipeline = Pipeline::new(seed, Flavor::Kounta);
        if let Some(limit) = options.rate_limit {
            pipeline.set_rate_limit(super::Target::Any, limit);
        }
        let access = pipeline.with_rng(|rng| random_token(rng, "at-"));
        let mut access_tokens = HashMap::new();
        access_tokens.insert(
            access.clone(),
            expiry_after(options.oauth.access_token_lifetime),
        );
        let state = KountaState {
            customers: BTreeMap::new(),
            next_id: 389_400,
            refresh_token: options.oauth.refresh_token.clone(),
            access_tokens,
            latest_access: access,
            token_lifetime: options.oauth.access_token_lifetime,
            expired_token_status: options.expired_token_status,
            page_size: options.page_size.max(1),
            normalise_phones: options.normalise_phones,
            read_shape: options.read_shape,
            error_shape: options.error_shape,
            update_answers_empty: options.update_answers_empty,
            failing_pages: BTreeSet::new(),
            empty_list_once: false,
            list_faults: ListFaults::default(),
            omissions_served: 0,
            webhooks: BTreeMap::new(),
            next_webhook_id: 1,
            webhook_faults: Vec::new(),
            next_webhook_fault: 1,
            deliveries: Vec::new(),
        };
        FakeKounta {
            inner: Arc::new(Inner {
                company_id: options.company_id,
                company_name: options.company_name,
                client_id: options.client_id,
                client_secret: options.client_secret,
                signature_token: options.webhook_signature_token,
                base_url,
                pipeline,
                state: Mutex::new(state),
                runtime: Handle::current(),
                tracker,
                shutdown,
                delivered: watch::Sender::new(0),
                http: OnceLock::new(),
            }),
        }
    }

    /// The axum router serving this fake.
    pub(crate) fn router(&self) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }

    fn pipeline(&self) -> &Pipeline<KountaEndpoint> {
        &self.inner.pipeline
    }

    fn lock(&self) -> MutexGuard<'_, KountaState> {
        // Every mutation completes under the lock before it is released, so a poisoned lock
        // still guards consistent data.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pipeline_methods!(KountaEndpoint);

    /// The base URL, including `/v1`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The company id.
    pub fn company_id(&self) -> i64 {
        self.inner.company_id
    }

    /// The basic-auth user / OAuth client id.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The basic-auth password / OAuth client secret.
    pub fn client_secret(&self) -> &str {
        &self.inner.client_secret
    }

    /// The webhook signature token.
    pub fn signature_token(&self) -> &str {
        &self.inner.signature_token
    }

    /// Adds a customer as a person in the back office would (no validation, no normalising)
    /// and announces it to `customers/created` webhooks; returns its new id.
    pub fn insert(&self, mut customer: KountaRecord) -> i64 {
        let id = {
            let mut s = self.lock();
            let id = s.next_id;
            s.next_id += 1;
            customer.id = id;
            s.customers.insert(id, customer.clone());
            id
        };
        self.emit(WebhookTopic::CustomerCreated, &customer);
        id
    }

    /// Stores seed records, keeping explicit ids; no webhooks.
    pub(crate) fn seed(&self, records: &[KountaRecord]) -> Result<(), SeedDataError> {
        let mut s = self.lock();
        for r in records.iter().filter(|r| r.id != 0) {
            if s.customers.contains_key(&r.id) {
                return Err(SeedDataError::Invalid(format!(
                    "kounta customer id {} is already taken",
                    r.id
                )));
            }
        }
        for r in records {
            let mut r = r.clone();
            if r.id == 0 {
                r.id = s.next_id;
            }
            s.next_id = s.next_id.max(r.id.saturating_add(1));
            s.customers.insert(r.id, r);
        }
        Ok(())
    }

    /// Every customer, by id.
    pub fn customers(&self) -> Vec<KountaRecord> {
        self.lock().customers.values().cloned().collect()
    }

    /// One customer.
    pub fn get(&self, id: i64) -> Option<KountaRecord> {
        self.lock().customers.get(&id).cloned()
    }

    /// Edits a customer as a person in the back office would (the id cannot change) and
    /// announces it to `customers/updated` webhooks; `false` if there is no such customer.
    pub fn edit(&self, id: i64, f: impl FnOnce(&mut KountaRecord)) -> bool {
        let edited = {
            let mut s = self.lock();
            let Some(c) = s.customers.get_mut(&id) else {
                return false;
            };
            f(c);
            c.id = id;
            c.clone()
        };
        self.emit(WebhookTopic::CustomerUpdated, &edited);
        true
    }

    /// Deletes a customer in the back office (the API cannot) and announces it to
    /// `customers/deleted` webhooks; `false` if there is no such customer.
    pub fn backoffice_delete(&self, id: i64) -> bool {
        let removed = self.lock().customers.remove(&id);
        match removed {
            Some(c) => {
                self.emit(WebhookTopic::CustomerDeleted, &c);
                true
            }
            None => false,
        }
    }

    /// The refresh token valid now (every refresh replaces it).
    pub fn refresh_token(&self) -> String {
        self.lock().refresh_token.clone()
    }

    /// The access token issued last (by start-up, a refresh or `issue_access_token`).
    pub fn access_token(&self) -> String {
        self.lock().latest_access.clone()
    }

    /// Issues a fresh access token, valid for the configured lifetime.
    pub fn issue_access_token(&self) -> String {
        let token = self.pipeline().with_rng(|rng| random_token(rng, "at-"));
        let mut s = self.lock();
        let expires = expiry_after(s.token_lifetime);
        s.access_tokens.insert(token.clone(), expires);
        s.latest_access = token.clone();
        token
    }

    /// Makes every access token issued so far expired.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for expiry in self.lock().access_tokens.values_mut() {
            *expiry = now;
        }
    }

    /// Answers expired or unknown access tokens with this status (`401`, or `400`).
    pub fn set_expired_token_status(&self, status: u16) {
        self.lock().expired_token_status = status;
    }

    /// Sets the number of abbreviated items per list page.
    pub fn set_page_size(&self, page_size: usize) {
        self.lock().page_size = page_size.max(1);
    }

    /// Reformats `phone` and `mobile` on every API write from now on (or stops).
    pub fn set_normalise_phones(&self, on: bool) {
        self.lock().normalise_phones = on;
    }

    /// Shows customers in these tolerated variants from now on.
    pub fn set_read_shape(&self, shape: ReadShape) {
        self.lock().read_shape = shape;
    }

    /// Words the API's own error bodies this way from now on.
    pub fn set_error_shape(&self, shape: ErrorShape) {
        self.lock().error_shape = shape;
    }

    /// Answers a successful `PUT` with an empty body (or with the record) from now on.
    pub fn set_update_answers_empty(&self, on: bool) {
        self.lock().update_answers_empty = on;
    }

    /// Makes list page `page` (1-based) answer `500` every time until `clear_faults`.
    pub fn fail_list_page(&self, page: u32) {
        self.lock().failing_pages.insert(page);
    }

    /// Makes the next list request answer an empty page with no next page.
    pub fn empty_list_once(&self) {
        self.lock().empty_list_once = true;
    }

    /// Leaves these customers out of every list page from now on, as a lagging replica would:
    /// pages are computed as if they were absent. Reads by id, lookups and updates still see
    /// them. Adds to the customers already left out; `clear_faults` lists them again.
    pub fn omit_from_list(&self, ids: impl IntoIterator<Item = i64>) {
        self.lock().list_faults.omitted.extend(ids);
    }

    /// Leaves each customer on each list page served out of it with this probability (drawn
    /// from the seeded RNG; the page keeps its place, it just holds fewer items). `0` stops it.
    pub fn omit_from_list_randomly(&self, probability: f64) {
        self.lock().list_faults.omit_probability = probability;
    }

    /// After page `page` (1-based) is next served, moves the start of the later pages of that
    /// listing by `shift` positions, once: positive skips `shift` customers (as if customers
    /// before the cursor had been deleted), negative lists customers twice. No data changes;
    /// the next request for page 1 starts a listing without the shift.
    pub fn drift_after_page(&self, page: u32, shift: i64) {
        self.lock().list_faults.drifts.push((page, shift));
    }

    /// Before each page after the first, with this probability (seeded RNG) the rest of the
    /// listing shifts by one position, forward or back with equal chance. `0` stops it.
    pub fn drift_randomly(&self, probability: f64) {
        self.lock().list_faults.drift_probability = probability;
    }

    /// Right after page `page` (1-based) is next served, deletes customer `id` in the back
    /// office, once (see `backoffice_delete`): the later customers shift back a place, so the
    /// first one not yet listed falls onto a page already read.
    pub fn delete_after_page(&self, page: u32, id: i64) {
        self.lock().list_faults.deletes.push((page, id));
    }

    /// How many live customers list pages have left out since start: omitted ones, ones a
    /// drift skipped and ones a `delete_after_page` shifted onto a page already read.
    /// `clear_faults` and `reset_stats` do not reset it.
    pub fn omissions_served(&self) -> u64 {
        self.lock().omissions_served
    }

    /// Removes injected faults, failing list pages, a pending empty list and every listing
    /// fault (omissions, drifts, pending deletes).
    pub fn clear_faults(&self) {
        self.pipeline().clear_faults();
        let mut s = self.lock();
        s.failing_pages.clear();
        s.empty_list_once = false;
        s.list_faults = ListFaults::default();
    }

    /// Every registered webhook, by id.
    pub fn webhooks(&self) -> Vec<Webhook> {
        self.lock().webhooks.values().cloned().collect()
    }

    /// Injects a fault on webhook deliveries.
    pub fn inject_webhook_fault(&self, fault: WebhookFault) -> FaultId {
        let mut s = self.lock();
        let id = FaultId(s.next_webhook_fault);
        s.next_webhook_fault += 1;
        s.webhook_faults
            .push(ArmedWebhookFault { id, fault, seen: 0 });
        id
    }

    /// Removes one webhook fault; `false` if it was not there.
    pub fn remove_webhook_fault(&self, id: FaultId) -> bool {
        let mut s = self.lock();
        let before = s.webhook_faults.len();
        s.webhook_faults.retain(|f| f.id != id);
        s.webhook_faults.len() != before
    }

    /// Removes every webhook fault.
    pub fn clear_webhook_faults(&self) {
        self.lock().webhook_faults.clear();
    }

    /// Removes every fault, rate limit, latency and webhook fault: a healthy service again.
    pub fn heal(&self) {
        self.clear_faults();
        self.clear_rate_limits();
        self.clear_latency();
        self.clear_webhook_faults();
    }

    /// Every finished delivery attempt (including dropped ones), in order of finishing.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    /// Waits until at least `n` delivery attempts have finished (dropped ones count).
    pub async fn wait_for_deliveries(&self, n: u64) {
        let mut finished = self.inner.delivered.subscribe();
        // The sender lives as long as this handle, so the wait cannot end early.
        let _ = finished.wait_for(|k| *k >= n).await;
    }

    fn location(&self, id: i64) -> String {
        format!(
            "{}/companies/{}/customers/{id}",
            self.inner.base_url, self.inner.company_id
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Showing customers

fn now_stamp() -> String {
    // Kounta is Australian: its timestamps carry +10:00.
    let now = chrono::Utc::now();
    match chrono::FixedOffset::east_opt(10 * 3600) {
        Some(tz) => now
            .with_timezone(&tz)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        None => now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

fn address_json(address: &Option<KountaRecordAddress>, shape: ReadShape) -> Value {
    let Some(a) = address else {
        return Value::Null;
    };
    if shape.legacy_address {
        let lines: Vec<&str> = if a.address.is_empty() {
            Vec::new()
        } else {
            a.address.split('\n').collect()
        };
        json!({
            "lines": lines,
            "city": a.city,
            "zone": a.state,
            "postal_code": a.postal_code,
            "country": a.country,
        })
    } else {
        json!({
            "address": a.address,
            "city": a.city,
            "state": a.state,
            "postal_code": a.postal_code,
            "country": a.country,
        })
    }
}

fn email_key(shape: ReadShape) -> &'static str {
    if shape.primary_email_address {
        "primary_email_address"
    } else {
        "email"
    }
}

/// The full record, as `GET .../customers/{id}` and webhook deliveries show it.
fn record_json(c: &KountaRecord, shape: ReadShape) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(c.id));
    if shape.id_str {
        m.insert("id_str".into(), json!(c.id.to_string()));
    }
    m.insert("first_name".into(), json!(c.first_name));
    m.insert("last_name".into(), json!(c.last_name));
    m.insert(email_key(shape).into(), json!(c.email));
    m.insert("phone".into(), json!(c.phone));
    m.insert("mobile".into(), json!(c.mobile));
    m.insert("reference_id".into(), json!(c.reference_id));
    m.insert("tags".into(), json!(c.tags));
    m.insert("image".into(), json!(c.image));
    m.insert("accepts_marketing".into(), json!(c.accepts_marketing));
    m.insert(
        "primary_address".into(),
        address_json(&c.primary_address, shape),
    );
    m.insert(
        "shipping_address".into(),
        address_json(&c.shipping_address, shape),
    );
    let now = now_stamp();
    m.insert("created_at".into(), json!(now));
    m.insert("updated_at".into(), json!(now));
    if shape.extra_fields {
        m.insert("customer_code".into(), json!(format!("C-{}", c.id)));
        m.insert("loyalty".into(), json!({"points": 0, "tier": null}));
        m.insert("notes".into(), Value::Null);
    }
    reshape(Value::Object(m), shape)
}

/// Applies the id and empty-field variants of `shape` to a finished record or item.
fn reshape(mut value: Value, shape: ReadShape) -> Value {
    fn nullify(v: &mut Value) {
        match v {
            Value::String(s) if s.is_empty() => *v = Value::Null,
            Value::Array(a) if a.is_empty() => *v = Value::Null,
            Value::Object(m) => m.values_mut().for_each(nullify),
            _ => {}
        }
    }
    if shape.null_for_empty {
        nullify(&mut value);
    }
    if shape.ids_as_strings
        && let Some(id) = value.get("id").and_then(Value::as_i64)
    {
        value["id"] = json!(id.to_string());
    }
    value
}

/// The abbreviated item of lists and `?reference_id=` lookups.
fn item_json(c: &KountaRecord, shape: ReadShape) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(c.id));
    if shape.id_str {
        m.insert("id_str".into(), json!(c.id.to_string()));
    }
    m.insert("first_name".into(), json!(c.first_name));
    m.insert("last_name".into(), json!(c.last_name));
    m.insert(email_key(shape).into(), json!(c.email));
    m.insert("image".into(), json!(c.image));
    if shape.extra_fields {
        m.insert("customer_code".into(), json!(format!("C-{}", c.id)));
    }
    reshape(Value::Object(m), shape)
}

fn webhook_json(w: &Webhook) -> Value {
    json!({
        "id": w.id,
        "topic": w.topic.as_str(),
        "address": w.address,
        "format": w.format,
        "headers": w.headers,
    })
}

// ---------------------------------------------------------------------------------------------
// Normalising and validating writes

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Kounta's phone formatting: a leading `+` is kept and everything but digits dropped; then 10
/// digits starting `04` read `0412 345 678`, other 10 digits starting `0` read `02 8765 4321`,
/// 8 digits read `8765 4321`, and anything else is grouped in threes from the left. Applying it
/// twice changes nothing.
pub fn format_phone(raw: &str) -> String {
    let trimmed = raw.trim();
    let d = digits(trimmed);
    if d.is_empty() {
        return trimmed.to_owned();
    }
    let plus = if trimmed.starts_with('+') { "+" } else { "" };
    let groups: Vec<&str> = if plus.is_empty() && d.len() == 10 && d.starts_with("04") {
        vec![&d[..4], &d[4..7], &d[7..]]
    } else if plus.is_empty() && d.len() == 10 && d.starts_with('0') {
        vec![&d[..2], &d[2..6], &d[6..]]
    } else if plus.is_empty() && d.len() == 8 {
        vec![&d[..4], &d[4..]]
    } else {
        d.as_bytes()
            .chunks(3)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect()
    };
    format!("{plus}{}", groups.join(" "))
}

fn valid_country(code: &str) -> bool {
    code.is_empty()
        || (code.len() == 2
            && code.chars().all(|c| c.is_ascii_alphabetic())
            && celes::Country::from_alpha2(code).is_ok())
}

/// The fields a create or update may carry; `None` means "not sent".
#[derive(Default)]
struct Patch {
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    mobile: Option<String>,
    reference_id: Option<String>,
    tags: Option<Vec<String>>,
    image: Option<Option<String>>,
    accepts_marketing: Option<bool>,
    primary_address: Option<Option<KountaRecordAddress>>,
    shipping_address: Option<Option<KountaRecordAddress>>,
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(String::new())),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

fn address_field(
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Option<Option<KountaRecordAddress>>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Object(a)) => {
            let part = |name: &str| -> Result<String, String> {
                string_field(a, name)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| format!("{key}.{e}"))
            };
            Ok(Some(Some(KountaRecordAddress {
                address: part("address")?,
                city: part("city")?,
                state: part("state")?,
                postal_code: part("postal_code")?,
                country: part("country")?,
            })))
        }
        Some(_) => Err(format!("{key} must be an object")),
    }
}

fn parse_patch(obj: &Map<String, Value>) -> Result<Patch, String> {
    let tags = match obj.get("tags") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("tags must be an array of strings")?,
        ),
        Some(_) => return Err("tags must be an array of strings".into()),
    };
    let image = match obj.get("image") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => return Err("image must be a string or null".into()),
    };
    let accepts_marketing = match obj.get("accepts_marketing") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err("accepts_marketing must be true or false".into()),
    };
    Ok(Patch {
        first_name: string_field(obj, "first_name")?,
        last_name: string_field(obj, "last_name")?,
        email: string_field(obj, "email")?,
        phone: string_field(obj, "phone")?,
        mobile: string_field(obj, "mobile")?,
        reference_id: string_field(obj, "reference_id")?,
        tags,
        image,
        accepts_marketing,
        primary_address: address_field(obj, "primary_address")?,
        shipping_address: address_field(obj, "shipping_address")?,
    })
}

impl Patch {
    fn apply(self, c: &mut KountaRecord) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v; } )* };
        }
        set!(
            first_name,
            last_name,
            email,
            phone,
            mobile,
            reference_id,
            tags,
            image,
            accepts_marketing,
            primary_address,
            shipping_address
        );
    }
}

/// Why a write was refused.
enum Refusal {
    Invalid(String),
    DuplicateMobile(String),
}

fn validate(c: &KountaRecord, others: &BTreeMap<i64, KountaRecord>) -> Result<(), Refusal> {
    if c.first_name.trim().is_empty() {
        return Err(Refusal::Invalid("first_name is required".into()));
    }
    if [&c.email, &c.phone, &c.mobile]
        .iter()
        .all(|v| v.trim().is_empty())
    {
        return Err(Refusal::Invalid(
            "one of email, phone or mobile is required".into(),
        ));
    }
    for (name, address) in [
        ("primary_address", &c.primary_address),
        ("shipping_address", &c.shipping_address),
    ] {
        if let Some(a) = address
            && !valid_country(&a.country)
        {
            return Err(Refusal::Invalid(format!(
                "{name}.country must be an ISO 3166-1 alpha-2 code, got {:?}",
                a.country
            )));
        }
    }
    let mobile = digits(&c.mobile);
    if !mobile.is_empty()
        && others
            .values()
            .any(|o| o.id != c.id && digits(&o.mobile) == mobile)
    {
        return Err(Refusal::DuplicateMobile(format!(
            "mobile {} is already used by another customer",
            c.mobile
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Routing

/// A `.json` suffix was stripped from the path: it stands in for `Accept: application/json`.
#[derive(Clone, Copy, Debug)]
struct JsonSuffix;

/// Strips Kounta's optional `.json` suffix before routing.
pub(crate) fn strip_json_suffix(req: &mut Request<hyper::body::Incoming>) {
    let path = req.uri().path();
    let Some(stripped) = path.strip_suffix(".json") else {
        return;
    };
    let rebuilt = match req.uri().query() {
        Some(q) => format!("{stripped}?{q}"),
        None => stripped.to_owned(),
    };
    if let Ok(uri) = rebuilt.parse::<Uri>() {
        *req.uri_mut() = uri;
        req.extensions_mut().insert(JsonSuffix);
    }
}

enum Route {
    Token,
    Me,
    List { cid: String },
    Lookup { cid: String },
    Create { cid: String },
    Get { cid: String, id: String },
    Update { cid: String, id: String },
    Delete { cid: String },
    WebhookList { cid: String },
    WebhookCreate { cid: String },
    WebhookDelete { cid: String, id: String },
    NotAllowed(&'static str),
    NotFound,
}

const LOOKUP_KEYS: [&str; 6] = [
    "reference_id",
    "email",
    "mobile",
    "first_name",
    "last_name",
    "phone",
];

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

impl Route {
    fn parse(method: &Method, uri: &Uri) -> Route {
        let Some(rest) = uri.path().strip_prefix("/v1/") else {
            return Route::NotFound;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let m = method;
        match segments.as_slice() {
            ["token"] => match *m {
                Method::POST => Route::Token,
                _ => Route::NotAllowed("POST"),
            },
            ["companies", "me"] => match *m {
                Method::GET => Route::Me,
                _ => Route::NotAllowed("GET"),
            },
            ["companies", cid, "customers"] => {
                let cid = (*cid).to_owned();
                match *m {
                    Method::GET => {
                        let lookup = query_pairs(uri)
                            .iter()
                            .any(|(k, _)| LOOKUP_KEYS.contains(&k.as_str()));
                        if lookup {
                            Route::Lookup { cid }
                        } else {
                            Route::List { cid }
                        }
                    }
                    Method::POST => Route::Create { cid },
                    _ => Route::NotAllowed("GET, POST"),
                }
            }
            ["companies", cid, "customers", id] => {
                let (cid, id) = ((*cid).to_owned(), (*id).to_owned());
                match *m {
                    Method::GET => Route::Get { cid, id },
                    Method::PUT => Route::Update { cid, id },
                    Method::DELETE => Route::Delete { cid },
                    _ => Route::NotAllowed("GET, PUT"),
                }
            }
            ["companies", cid, "webhooks"] => {
                let cid = (*cid).to_owned();
                match *m {
                    Method::GET => Route::WebhookList { cid },
                    Method::POST => Route::WebhookCreate { cid },
                    _ => Route::NotAllowed("GET, POST"),
                }
            }
            ["companies", cid, "webhooks", id] => match *m {
                Method::DELETE => Route::WebhookDelete {
                    cid: (*cid).to_owned(),
                    id: (*id).to_owned(),
                },
                _ => Route::NotAllowed("DELETE"),
            },
            _ => Route::NotFound,
        }
    }

    fn endpoint(&self) -> Option<KountaEndpoint> {
        Some(match self {
            Route::Token => KountaEndpoint::Token,
            Route::Me => KountaEndpoint::Me,
            Route::List { .. } => KountaEndpoint::List,
            Route::Lookup { .. } => KountaEndpoint::Lookup,
            Route::Create { .. } => KountaEndpoint::Create,
            Route::Get { .. } => KountaEndpoint::Get,
            Route::Update { .. } => KountaEndpoint::Update,
            Route::Delete { .. } => KountaEndpoint::Delete,
            Route::WebhookList { .. } => KountaEndpoint::WebhookList,
            Route::WebhookCreate { .. } => KountaEndpoint::WebhookCreate,
            Route::WebhookDelete { .. } => KountaEndpoint::WebhookDelete,
            Route::NotAllowed(_) | Route::NotFound => return None,
        })
    }

    fn cid(&self) -> Option<&str> {
        match self {
            Route::List { cid }
            | Route::Lookup { cid }
            | Route::Create { cid }
            | Route::Get { cid, .. }
            | Route::Update { cid, .. }
            | Route::Delete { cid }
            | Route::WebhookList { cid }
            | Route::WebhookCreate { cid }
            | Route::WebhookDelete { cid, .. } => Some(cid),
            Route::Token | Route::Me | Route::NotAllowed(_) | Route::NotFound => None,
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    Flavor::Kounta.error(status, code, message)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn media_type_is(headers: &HeaderMap, expected: &str) -> bool {
    header_str(headers, header::CONTENT_TYPE).is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(expected))
    })
}

fn accepts_json(req: &Request) -> bool {
    req.extensions().get::<JsonSuffix>().is_some()
        || req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("application/json"))
}

async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large or could not be read",
        )
    })
}

async fn read_object(body: Body) -> Result<Map<String, Value>, Response> {
    let bytes = read_body(body).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(obj)) => Ok(obj),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request body must be a JSON object",
        )),
    }
}

async fn dispatch(State(kounta): State<FakeKounta>, req: Request) -> Response {
    let meta = RequestMeta::of(&req);
    let route = Route::parse(req.method(), req.uri());
    let endpoint = route.endpoint();
    let inner = kounta.inner.clone();
    inner
        .pipeline
        .run(meta, endpoint, move || async move {
            let shape = kounta.lock().error_shape;
            let response = kounta.serve(route, req).await;
            reword(response, shape).await
        })
        .await
}

/// Rewrites the API's own error body into one of the tolerated shapes.
async fn reword(response: Response, shape: ErrorShape) -> Response {
    if shape == ErrorShape::Standard || response.status().as_u16() < 400 {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let text = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error_description"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let reworded = match shape {
        ErrorShape::ErrorMessage => json!({ "error_message": text }),
        ErrorShape::Message | ErrorShape::Standard => json!({ "message": text }),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(reworded.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Handlers

impl FakeKounta {
    async fn serve(&self, route: Route, req: Request) -> Response {
        match route {
            Route::NotFound => {
                return error(StatusCode::NOT_FOUND, "not_found", "no such resource");
            }
            Route::NotAllowed(allow) => {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this method is not allowed here",
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                return r;
            }
            Route::Token => return self.token(req).await,
            _ => {}
        }
        if let Err(refused) = self.authenticate(req.headers()) {
            return refused;
        }
        if !accepts_json(&req) {
            return error(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                "send Accept: application/json or use a .json suffix",
            );
        }
        if matches!(*req.method(), Method::POST | Method::PUT)
            && !media_type_is(req.headers(), "application/json")
        {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Content-Type must be application/json",
            );
        }
        if let Some(cid) = route.cid()
            && cid.parse::<i64>().ok() != Some(self.inner.company_id)
        {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("these credentials have no access to company {cid}"),
            );
        }
        let json_suffix = req.extensions().get::<JsonSuffix>().is_some();
        let uri = req.uri().clone();
        let body = req.into_body();
        match route {
            Route::Me => json_response(
                StatusCode::OK,
                &json!({ "id": self.inner.company_id, "name": self.inner.company_name }),
            ),
            Route::List { .. } => self.list(&uri, json_suffix),
            Route::Lookup { .. } => self.lookup(&uri),
            Route::Get { id, .. } => self.show(&id),
            Route::Create { .. } => match read_object(body).await {
                Ok(obj) => self.create(&obj),
                Err(r) => r,
            },
            Route::Update { id, .. } => match read_object(body).await {
                Ok(obj) => self.update(&id, &obj),
                Err(r) => r,
            },
            Route::Delete { .. } => {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "customers cannot be deleted through the API; delete them in the back office",
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, PUT"));
                r
            }
            Route::WebhookList { .. } => {
                let list: Vec<Value> = self.webhooks().iter().map(webhook_json).collect();
                json_response(StatusCode::OK, &Value::Array(list))
            }
            Route::WebhookCreate { .. } => match read_object(body).await {
                Ok(obj) => self.register_webhook(&obj),
                Err(r) => r,
            },
            Route::WebhookDelete { id, .. } => {
                let removed = id
                    .parse::<i64>()
                    .ok()
                    .and_then(|id| self.lock().webhooks.remove(&id));
                match removed {
                    Some(_) => StatusCode::NO_CONTENT.into_response(),
                    None => error(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        &format!("webhook {id} not found"),
                    ),
                }
            }
            Route::Token | Route::NotAllowed(_) | Route::NotFound => {
                error(StatusCode::NOT_FOUND, "not_found", "no such resource")
            }
        }
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(value) = header_str(headers, header::AUTHORIZATION) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "authentication is required: send basic or bearer credentials",
            ));
        };
        let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let expected = format!("{}:{}", self.inner.client_id, self.inner.client_secret);
            return match decoded {
                Some(d) if d == expected => Ok(()),
                _ => Err(error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "the client credentials are not valid",
                )),
            };
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let s = self.lock();
            let valid = s
                .access_tokens
                .get(credentials.trim())
                .is_some_and(|expiry| Instant::now() < *expiry);
            if valid {
                return Ok(());
            }
            let status =
                StatusCode::from_u16(s.expired_token_status).unwrap_or(StatusCode::UNAUTHORIZED);
            return Err(error(
                status,
                "invalid_token",
                "The access token provided has expired",
            ));
        }
        Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "unsupported authorization scheme",
        ))
    }

    async fn token(&self, req: Request) -> Response {
        if !media_type_is(req.headers(), "application/x-www-form-urlencoded") {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the token request must be form-encoded",
            );
        }
        let bytes = match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&bytes).into_owned().collect();
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if field("grant_type") != "refresh_token" {
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be refresh_token",
            );
        }
        if field("client_id") != self.inner.client_id
            || field("client_secret") != self.inner.client_secret
        {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "the client credentials are not valid",
            );
        }
        let (refresh, access) = self
            .pipeline()
            .with_rng(|rng| (random_token(rng, "rt-"), random_token(rng, "at-")));
        let lifetime = {
            let mut s = self.lock();
            if field("refresh_token").is_empty() || field("refresh_token") != s.refresh_token {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "The refresh token provided is invalid",
                );
            }
            // Rotation: the old refresh token stops working at once.
            s.refresh_token = refresh.clone();
            let expires = expiry_after(s.token_lifetime);
            s.access_tokens.insert(access.clone(), expires);
            s.latest_access = access.clone();
            s.token_lifetime
        };
        json_response(
            StatusCode::OK,
            &json!({
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": lifetime.as_secs(),
                "token_type": "Bearer",
            }),
        )
    }

    fn list(&self, uri: &Uri, json_suffix: bool) -> Response {
        let query = query_pairs(uri);
        let page = match query.iter().find(|(k, _)| k == "page") {
            None => 1,
            Some((_, v)) => match v.parse::<u32>() {
                Ok(p) if p >= 1 => p,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "page must be a positive integer",
                    );
                }
            },
        };
        let mut s = self.lock();
        if s.failing_pages.contains(&page) {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the list could not be read",
            );
        }
        if std::mem::take(&mut s.empty_list_once) {
            return json_response(StatusCode::OK, &json!([]));
        }
        let size = s.page_size;
        let mut omitted = 0u64;
        let (items, more, deletes) = {
            let KountaState {
                customers,
                list_faults: faults,
                read_shape,
                ..
            } = &mut *s;
            let shape = *read_shape;
            // The customers a listing can show, in the order it shows them.
            let visible: Vec<&KountaRecord> = customers
                .values()
                .filter(|c| !faults.omitted.contains(&c.id))
                .collect();
            if page == 1 {
                faults.shift = 0;
            }
            if page > 1 && faults.drift_probability > 0.0 {
                let p = faults.drift_probability;
                if self.pipeline().chance(p) {
                    let delta = if self.pipeline().chance(0.5) { 1 } else { -1 };
                    omitted += faults.shift_before(page, delta, size, visible.len());
                }
            }
            let start =
                usize::try_from(position(page, size).saturating_add(faults.shift)).unwrap_or(0);
            let end = start.saturating_add(size).min(visible.len());
            let on_page = visible.get(start..end).unwrap_or(&[]);
            let more = visible.len() > start.saturating_add(size);
            if let Some(last) = on_page.last() {
                // An omitted customer counts on the page whose span of ids holds it, so a
                // full walk counts each one once.
                let after = start
                    .checked_sub(1)
                    .and_then(|i| visible.get(i))
                    .map_or(i64::MIN, |c| c.id);
                let up_to = if more { last.id } else { i64::MAX };
                let spanned = faults
                    .omitted
                    .range(after.saturating_add(1)..=up_to)
                    .filter(|id| customers.contains_key(id))
                    .count();
                omitted += u64::try_from(spanned).unwrap_or(u64::MAX);
            }
            let mut items = Vec::with_capacity(on_page.len());
            for c in on_page {
                let p = faults.omit_probability;
                if p > 0.0 && self.pipeline().chance(p) {
                    omitted += 1;
                    continue;
                }
                items.push(item_json(c, shape));
            }

            let (skipped, deletes) = faults.fire_after(page, size, &visible);
            omitted += skipped;
            (items, more, deletes)
        };
        s.omissions_served += omitted;
        drop(s);
        for id in deletes {
            self.backoffice_delete(id);
        }
        let mut response = json_response(StatusCode::OK, &Value::Array(items));
        if more {
            let next = format!(
                "{}/companies/{}/customers{}?page={}",
                self.inner.base_url,
                self.inner.company_id,
                if json_suffix { ".json" } else { "" },
                page + 1
            );
            if let Ok(v) = HeaderValue::from_str(&next) {
                response.headers_mut().insert("x-next-page", v);
            }
        }
        response
    }

    fn lookup(&self, uri: &Uri) -> Response {
        let query: HashMap<String, String> = query_pairs(uri).into_iter().collect();
        let s = self.lock();
        if let Some(reference) = query.get("reference_id") {
            let items: Vec<Value> = s
                .customers
                .values()
                .filter(|c| &c.reference_id == reference)
                .map(|c| item_json(c, s.read_shape))
                .collect();
            return json_response(StatusCode::OK, &Value::Array(items));
        }
        let found = if let Some(email) = query.get("email") {
            let email = email.trim().to_lowercase();
            s.customers
                .values()
                .find(|c| !email.is_empty() && c.email.trim().to_lowercase() == email)
        } else if let Some(mobile) = query.get("mobile") {
            let mobile = digits(mobile);
            s.customers
                .values()
                .find(|c| !mobile.is_empty() && digits(&c.mobile) == mobile)
        } else {
            let (Some(first), Some(last), Some(phone)) = (
                query.get("first_name"),
                query.get("last_name"),
                query.get("phone"),
            ) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "first_name, last_name and phone must be given together",
                );
            };
            let fold = |s: &str| s.trim().to_lowercase();
            let phone = digits(phone);
            s.customers.values().find(|c| {
                fold(&c.first_name) == fold(first)
                    && fold(&c.last_name) == fold(last)
                    && !phone.is_empty()
                    && digits(&c.phone) == phone
            })
        };
        match found.map(|c| c.id) {
            Some(id) => {
                drop(s);
                let mut r = StatusCode::FOUND.into_response();
                if let Ok(v) = HeaderValue::from_str(&self.location(id)) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no customer matches the lookup",
            ),
        }
    }

    fn show(&self, id: &str) -> Response {
        let s = self.lock();
        match id.parse::<i64>().ok().and_then(|id| s.customers.get(&id)) {
            Some(c) => json_response(StatusCode::OK, &record_json(c, s.read_shape)),
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("customer {id} not found"),
            ),
        }
    }

    fn refusal(refusal: Refusal) -> Response {
        match refusal {
            Refusal::Invalid(m) => error(StatusCode::BAD_REQUEST, "validation_failed", &m),
            Refusal::DuplicateMobile(m) => error(StatusCode::CONFLICT, "duplicate_mobile", &m),
        }
    }

    fn create(&self, obj: &Map<String, Value>) -> Response {
        let patch = match parse_patch(obj) {
            Ok(p) => p,
            Err(m) => return error(StatusCode::BAD_REQUEST, "validation_failed", &m),
        };
        let mut record = KountaRecord::default();
        patch.apply(&mut record);
        let created = {
            let mut s = self.lock();
            if let Err(r) = validate(&record, &s.customers) {
                return Self::refusal(r);
            }
            if s.normalise_phones {
                record.phone = format_phone(&record.phone);
                record.mobile = format_phone(&record.mobile);
            }
            record.id = s.next_id;
            s.next_id += 1;
            s.customers.insert(record.id, record.clone());
            record
        };
        self.pipeline().write_applied();
        self.emit(WebhookTopic::CustomerCreated, &created);
        let mut r = StatusCode::CREATED.into_response();
        if let Ok(v) = HeaderValue::from_str(&self.location(created.id)) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }

    fn update(&self, id: &str, obj: &Map<String, Value>) -> Response {
        let not_found = || {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("customer {id} not found"),
            )
        };
        let Ok(id) = id.parse::<i64>() else {
            return not_found();
        };
        let patch = match parse_patch(obj) {
            Ok(p) => p,
            Err(m) => return error(StatusCode::BAD_REQUEST, "validation_failed", &m),
        };
        let (updated, shape) = {
            let mut s = self.lock();
            let Some(current) = s.customers.get(&id) else {
                return not_found();
            };
            let mut record = current.clone();
            patch.apply(&mut record);
            if let Err(r) = validate(&record, &s.customers) {
                return Self::refusal(r);
            }
            if s.normalise_phones {
                record.phone = format_phone(&record.phone);
                record.mobile = format_phone(&record.mobile);
            }
            s.customers.insert(id, record.clone());
            (record, (!s.update_answers_empty).then_some(s.read_shape))
        };
        self.pipeline().write_applied();
        self.emit(WebhookTopic::CustomerUpdated, &updated);
        match shape {
            Some(shape) => json_response(StatusCode::OK, &record_json(&updated, shape)),
            None => StatusCode::OK.into_response(),
        }
    }

    fn register_webhook(&self, obj: &Map<String, Value>) -> Response {
        let invalid = |m: &str| error(StatusCode::BAD_REQUEST, "validation_failed", m);
        let Some(topic) = obj
            .get("topic")
            .and_then(Value::as_str)
            .and_then(WebhookTopic::parse)
        else {
            return invalid(
                "topic must be customers/created, customers/updated or customers/deleted",
            );
        };
        let address = obj.get("address").and_then(Value::as_str).unwrap_or("");
        let address_ok = url::Url::parse(address)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !address_ok {
            return invalid("address must be an http or https URL");
        }
        let format = match obj.get("format") {
            None | Some(Value::Null) => "json",
            Some(Value::String(f)) if f == "json" => "json",
            Some(_) => return invalid("format must be json"),
        };
        let mut headers = BTreeMap::new();
        match obj.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(h)) => {
                for (name, value) in h {
                    let lower = name.to_ascii_lowercase();
                    let allowed = lower == "authorization"
                        || (lower.starts_with("x-") && !lower.starts_with("x-kounta"));
                    let Some(value) = value.as_str() else {
                        return invalid("header values must be strings");
                    };
                    if !allowed
                        || HeaderName::from_bytes(name.as_bytes()).is_err()
                        || HeaderValue::from_str(value).is_err()
                    {
                        return invalid(&format!(
                            "header {name:?} is not allowed: use Authorization or X-* (not X-Kounta*)"
                        ));
                    }
                    headers.insert(name.clone(), value.to_owned());
                }
            }
            Some(_) => return invalid("headers must be an object"),
        }
        let webhook = {
            let mut s = self.lock();
            let id = s.next_webhook_id;
            s.next_webhook_id += 1;
            let w = Webhook {
                id,
                topic,
                address: address.to_owned(),
                format: format.to_owned(),
                headers,
            };
            s.webhooks.insert(id, w.clone());
            w
        };
        let mut r = json_response(StatusCode::CREATED, &webhook_json(&webhook));
        let location = format!(
            "{}/companies/{}/webhooks/{}",
            self.inner.base_url, self.inner.company_id, webhook.id
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook delivery

/// `hex(HMAC-SHA256(body, token))`, the value of `X-Kounta-Signature`.
pub fn webhook_signature(body: &[u8], token: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; this arm is unreachable in practice.
        Err(_) => String::new(),
    }
}

impl FakeKounta {
    /// Schedules deliveries of one event to every matching registration. Delivery runs on its
    /// own tasks: it never blocks or fails the change that caused it.
    fn emit(&self, topic: WebhookTopic, customer: &KountaRecord) {
        let mut planned = Vec::new();
        let body = {
            let mut s = self.lock();
            let targets: Vec<Webhook> = s
                .webhooks
                .values()
                .filter(|w| w.topic == topic)
                .cloned()
                .collect();
            if targets.is_empty() {
                return;
            }
            let body = Bytes::from(record_json(customer, s.read_shape).to_string());
            for webhook in targets {
                let mut action = None;
                for armed in s.webhook_faults.iter_mut() {
                    armed.seen += 1;
                    let fires = match armed.fault.when {
                        When::Nth(n) => armed.seen == n,
                        When::Next(n) => armed.seen <= n,
                        When::Every => true,
                        When::Probability(p) => self.pipeline().chance(p),
                    };
                    if fires && action.is_none() {
                        action = Some(armed.fault.action);
                    }
                }
                planned.push((webhook, action));
            }
            body
        };
        let customer_id = customer.id;
        for (webhook, action) in planned {
            let this = self.clone();
            let body = body.clone();
            let task = async move {
                this.deliver(webhook, topic, customer_id, body, action)
                    .await
            };
            self.inner.tracker.spawn_on(task, &self.inner.runtime);
        }
    }

    async fn deliver(
        &self,
        webhook: Webhook,
        topic: WebhookTopic,
        customer_id: i64,
        body: Bytes,
        action: Option<WebhookAction>,
    ) {
        let shutdown = self.inner.shutdown.clone();
        let times = match action {
            Some(WebhookAction::Drop) => {
                self.settle(
                    &webhook,
                    topic,
                    customer_id,
                    &body,
                    DeliveryOutcome::Dropped,
                );
                return;
            }
            Some(WebhookAction::Delay(delay)) => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
                1
            }
            Some(WebhookAction::Duplicate) => 2,
            None => 1,
        };
        for _ in 0..times {
            let outcome = tokio::select! {
                outcome = self.post(&webhook, &body) => outcome,
                _ = shutdown.cancelled() => return,
            };
            self.settle(&webhook, topic, customer_id, &body, outcome);
        }
    }

    async fn post(&self, webhook: &Webhook, body: &Bytes) -> DeliveryOutcome {
        let client = self.inner.http.get_or_init(|| {
            // No timeout: a receiver that never answers holds only its own task, which shutdown
            // ends; a timer here would also fire early in tests running on paused time.
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default()
        });
        let mut request = client
            .post(&webhook.address)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                "X-Kounta-Signature",
                webhook_signature(body, &self.inner.signature_token),
            )
            .body(body.clone());
        for (name, value) in &webhook.headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => DeliveryOutcome::Delivered(response.status().as_u16()),
            Err(e) => DeliveryOutcome::Failed(e.to_string()),
        }
    }

    fn settle(
        &self,
        webhook: &Webhook,
        topic: WebhookTopic,
        customer_id: i64,
        body: &Bytes,
        outcome: DeliveryOutcome,
    ) {
        self.lock().deliveries.push(Delivery {
            webhook_id: webhook.id,
            topic,
            address: webhook.address.clone(),
            customer_id,
            body: body.clone(),
            outcome,
            at: Instant::now(),
        });
        self.inner.delivered.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_formatting_groups_digits_and_is_idempotent() {
        let cases = [
            ("0412345678", "0412 345 678"),
            ("(02) 8765-4321", "02 8765 4321"),
            ("87654321", "8765 4321"),
            ("+61 412 345 678", "+614 123 456 78"),
            ("555 1234 567", "555 123 456 7"),
            ("  ", ""),
            ("ext", "ext"),
        ];
        for (raw, want) in cases {
            let once = format_phone(raw);
            assert_eq!(once, want, "formatting {raw:?}");
            assert_eq!(format_phone(&once), once, "formatting {raw:?} twice");
        }
    }

    #[test]
    fn country_codes_must_be_real_alpha2() {
        assert!(valid_country("AU"));
        assert!(valid_country("us"));
        assert!(valid_country(""));
        assert!(!valid_country("USA"));
        assert!(!valid_country("XX"));
        assert!(!valid_country("U1"));
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            webhook_signature(b"what do ya want for nothing?", "Jefe"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
