//! The fake FarmFlow: every behaviour of `api/farmflow.md`, over real HTTP, with its response
//! envelope and id encoding selectable among the tolerated variants.

// Handlers bail out early with the `Response` they answer; it is built once per request and
// moved once, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::pipeline::{Access, Endpoint, Flavor, Pipeline, RequestMeta};
use super::pipeline_methods::pipeline_methods;
use super::rate::RateLimit;
use super::seed::SeedDataError;

/// The largest request body the fake reads.
const MAX_BODY: usize = 1 << 20;

/// How many customer writes back a lagging `customers-get` can reach.
pub const LIST_LAG_HISTORY: usize = 64;

/// The refusal text of a delete blocked by an active recurring order.
pub const ACTIVE_ORDER_REFUSAL: &str =
    "Customer has an active recurring order and cannot be deleted";

/// The endpoints of the fake FarmFlow, for counters and faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FarmflowEndpoint {
    /// `GET /customers-get`.
    List,
    /// `POST /customer-get`.
    Get,
    /// `POST /customer-create`.
    Create,
    /// `POST /customer-update`.
    Update,
    /// `POST /customer-delete`.
    Delete,
    /// `GET /recurring-orders-get`.
    RecurringOrders,
    /// `GET /one-time-orders-get`.
    OneTimeOrders,
}

impl Endpoint for FarmflowEndpoint {
    fn access(self) -> Access {
        match self {
            FarmflowEndpoint::Create | FarmflowEndpoint::Update | FarmflowEndpoint::Delete => {
                Access::Write
            }
            FarmflowEndpoint::List
            | FarmflowEndpoint::Get
            | FarmflowEndpoint::RecurringOrders
            | FarmflowEndpoint::OneTimeOrders => Access::Read,
        }
    }
}

/// How successful answers are wrapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Envelope {
    /// `{"status": "success", "data": <payload>}`.
    #[default]
    Standard,
    /// The payload alone.
    Bare,
    /// `{"<resource>": <payload>}` with `customers`, `customer`, `recurring-orders` or
    /// `one-time-orders`.
    ResourceKey,
}

/// Settings of the fake FarmFlow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FarmflowOptions {
    /// The account's API key.
    pub api_key: String,
    /// The header carrying it.
    pub auth_header: String,
    /// What precedes the key in that header.
    pub auth_prefix: String,
    /// Response envelope variant.
    pub envelope: Envelope,
    /// Ids as JSON numbers instead of strings in answers.
    pub ids_as_numbers: bool,
    /// `null` instead of `""` for empty fields in answers.
    pub null_for_empty: bool,
    /// Upper-case `state` on every API write.
    pub uppercase_state: bool,
    /// Answer the API's own errors (`401`, `404`, `409`...) with `200` and the same
    /// `{"status": "error"}` body.
    pub errors_as_200: bool,
    /// Answer a create with `{"id": ...}` alone instead of the whole record.
    pub create_returns_id_only: bool,
    /// A rate limit on every endpoint from the start (none by default; the documented figure
    /// is 120 a minute).
    pub rate_limit: Option<RateLimit>,
}

impl Default for FarmflowOptions {
    fn default() -> Self {
        FarmflowOptions {
            api_key: "sandbox-farmflow-key".into(),
            auth_header: "Authorization".into(),
            auth_prefix: "Bearer ".into(),
            envelope: Envelope::Standard,
            ids_as_numbers: false,
            null_for_empty: false,
            uppercase_state: false,
            errors_as_200: false,
            create_returns_id_only: false,
            rate_limit: None,
        }
    }
}

/// A customer as the fake FarmFlow stores it. Also the seed-data format of a FarmFlow customer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FarmflowRecord {
    /// Assigned by the fake (`0` in seed data means "assign one").
    pub id: i64,
    /// Company.
    pub company: String,
    /// First name (required by the API).
    pub firstname: String,
    /// Last name.
    pub lastname: String,
    /// Street line 1.
    pub address: String,
    /// Street line 2.
    pub address2: String,
    /// City.
    pub city: String,
    /// State.
    pub state: String,
    /// Postal code.
    pub zip: String,
    /// Phone.
    pub phone: String,
    /// Email.
    pub email: String,
    /// Free-text country.
    pub country: String,
    /// Internal notes.
    pub notes: String,
}

/// The status of a recurring order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecurringStatus {
    /// Running: keeps its customer from being deleted.
    #[default]
    Active,
    /// Paused.
    Paused,
    /// Cancelled.
    Cancelled,
}

impl RecurringStatus {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RecurringStatus::Active => "active",
            RecurringStatus::Paused => "paused",
            RecurringStatus::Cancelled => "cancelled",
        }
    }
}

/// A recurring order. Also its seed-data format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecurringOrderRecord {
    /// Assigned by the fake (`0` in seed data means "assign one").
    pub id: i64,
    /// The customer's FarmFlow id.
    pub customer_id: i64,
    /// Active, paused or cancelled.
    pub status: RecurringStatus,
    /// `YYYY-MM-DD` or `""`.
    pub start_date: String,
    /// `YYYY-MM-DD` or `""`.
    pub end_date: String,
}

/// A one-time order. Also its seed-data format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OneTimeOrderRecord {
    /// Assigned by the fake (`0` in seed data means "assign one").
    pub id: i64,
    /// The customer's FarmFlow id.
    pub customer_id: i64,
    /// Pickup location id.
    pub pickup_location_id: i64,
    /// `Delivery` or `Pick Up`.
    pub fulfillment: String,
    /// Free text.
    pub instructions: String,
    /// `YYYY-MM-DD`, or `""`.
    pub fulfill_date: String,
}

/// Why a person's delete in the FarmFlow UI did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FarmflowDeleteError {
    /// No customer has that id.
    #[error("farmflow customer {0} does not exist")]
    NotFound(i64),
    /// FarmFlow refuses to delete a customer with an active recurring order.
    #[error("farmflow customer {0} has an active recurring order and cannot be deleted")]
    ActiveRecurringOrder(i64),
}

/// The faults of `customers-get`.
#[derive(Default)]
struct ListFaults {
    /// Customers no listing shows.
    omitted: BTreeSet<i64>,
    /// The chance that a customer is left out of a listing.
    omit_probability: f64,
    /// How many customer writes every listing lags behind.
    lag: usize,
    /// The chance that a listing lags one write behind.
    lag_probability: f64,
}

struct FarmflowState {
    customers: BTreeMap<i64, FarmflowRecord>,
    /// Each customer's version before each of the latest writes (`None`: it did not exist),
    /// oldest first, at most `LIST_LAG_HISTORY` of them.
    history: VecDeque<(i64, Option<FarmflowRecord>)>,
    list_faults: ListFaults,
    omissions_served: u64,
    next_id: i64,
    recurring: BTreeMap<i64, RecurringOrderRecord>,
    one_time: BTreeMap<i64, OneTimeOrderRecord>,
    next_order_id: i64,
    envelope: Envelope,
    ids_as_numbers: bool,
    null_for_empty: bool,
    uppercase_state: bool,
    errors_as_200: bool,
    create_returns_id_only: bool,
    empty_list_once: bool,
}

struct Inner {
    api_key: String,
    auth_header: String,
    auth_prefix: String,
    base_url: String,
    pipeline: Pipeline<FarmflowEndpoint>,
    state: Mutex<FarmflowState>,
}

/// The fake FarmFlow: a cheap-clone handle over its state, for seeding, inspecting, editing "as
/// a person would" (none of which counts as an API request) and setting faults.
#[derive(Clone)]
pub struct FakeFarmflow {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeFarmflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeFarmflow")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl FakeFarmflow {
    /// A fake serving at `base_url`.
    pub(crate) fn new(options: FarmflowOptions, seed: u64, base_url: String) -> Self {
        let pipeline = Pipeline::new(seed, Flavor::Farmflow);
        if let Some(limit) = options.rate_limit {
            pipeline.set_rate_limit(super::Target::Any, limit);
        }
        FakeFarmflow {
            inner: Arc::new(Inner {
                api_key: options.api_key,
                auth_header: options.auth_header,
                auth_prefix: options.auth_prefix,
                base_url,
                pipeline,
                state: Mutex::new(FarmflowState {
                    customers: BTreeMap::new(),
                    history: VecDeque::new(),
                    list_faults: ListFaults::default(),
                    omissions_served: 0,
                    next_id: 301,
                    recurring: BTreeMap::new(),
                    one_time: BTreeMap::new(),
                    next_order_id: 9001,
                    envelope: options.envelope,
                    ids_as_numbers: options.ids_as_numbers,
                    null_for_empty: options.null_for_empty,
                    uppercase_state: options.uppercase_state,
                    errors_as_200: options.errors_as_200,
                    create_returns_id_only: options.create_returns_id_only,
                    empty_list_once: false,
                }),
            }),
        }
    }

    /// The axum router serving this fake.
    pub(crate) fn router(&self) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }

    fn pipeline(&self) -> &Pipeline<FarmflowEndpoint> {
        &self.inner.pipeline
    }

    fn lock(&self) -> MutexGuard<'_, FarmflowState> {
        // Every mutation completes under the lock before it is released, so a poisoned lock
        // still guards consistent data.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pipeline_methods!(FarmflowEndpoint);

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The API key.
    pub fn api_key(&self) -> &str {
        &self.inner.api_key
    }

    /// The header carrying the key.
    pub fn auth_header(&self) -> &str {
        &self.inner.auth_header
    }

    /// What precedes the key in that header.
    pub fn auth_prefix(&self) -> &str {
        &self.inner.auth_prefix
    }

    /// Adds a customer as a person in the FarmFlow UI would; returns its new id.
    pub fn insert(&self, mut customer: FarmflowRecord) -> i64 {
        let mut s = self.lock();
        customer.id = s.next_id;
        s.next_id += 1;
        s.remember(customer.id);
        s.customers.insert(customer.id, customer);
        s.next_id - 1
    }

    /// Stores seed records, keeping explicit ids.
    pub(crate) fn seed(
        &self,
        customers: &[FarmflowRecord],
        recurring: &[RecurringOrderRecord],
        one_time: &[OneTimeOrderRecord],
    ) -> Result<(), SeedDataError> {
        let mut s = self.lock();
        let taken = |what: &str, id: i64| {
            SeedDataError::Invalid(format!("farmflow {what} id {id} is already taken"))
        };
        for c in customers.iter().filter(|c| c.id != 0) {
            if s.customers.contains_key(&c.id) {
                return Err(taken("customer", c.id));
            }
        }
        for o in recurring.iter().filter(|o| o.id != 0) {
            if s.recurring.contains_key(&o.id) || s.one_time.contains_key(&o.id) {
                return Err(taken("order", o.id));
            }
        }
        for o in one_time.iter().filter(|o| o.id != 0) {
            if s.recurring.contains_key(&o.id) || s.one_time.contains_key(&o.id) {
                return Err(taken("order", o.id));
            }
        }
        for c in customers {
            let mut c = c.clone();
            if c.id == 0 {
                c.id = s.next_id;
            }
            s.next_id = s.next_id.max(c.id.saturating_add(1));
            s.customers.insert(c.id, c);
        }
        for o in recurring {
            let mut o = o.clone();
            if o.id == 0 {
                o.id = s.next_order_id;
            }
            s.next_order_id = s.next_order_id.max(o.id.saturating_add(1));
            s.recurring.insert(o.id, o);
        }
        for o in one_time {
            let mut o = o.clone();
            if o.id == 0 {
                o.id = s.next_order_id;
            }
            s.next_order_id = s.next_order_id.max(o.id.saturating_add(1));
            s.one_time.insert(o.id, o);
        }
        Ok(())
    }

    /// Every customer, by id.
    pub fn customers(&self) -> Vec<FarmflowRecord> {
        self.lock().customers.values().cloned().collect()
    }

    /// One customer.
    pub fn get(&self, id: i64) -> Option<FarmflowRecord> {
        self.lock().customers.get(&id).cloned()
    }

    /// Edits a customer as a person in the FarmFlow UI would (the id cannot change); `false` if
    /// there is no such customer.
    pub fn edit(&self, id: i64, f: impl FnOnce(&mut FarmflowRecord)) -> bool {
        let mut s = self.lock();
        if s.customers.contains_key(&id) {
            s.remember(id);
        }
        match s.customers.get_mut(&id) {
            Some(c) => {
                f(c);
                c.id = id;
                true
            }
            None => false,
        }
    }

    /// Deletes a customer as a person in the FarmFlow UI would: refused while an active
    /// recurring order exists, otherwise their orders go too.
    pub fn delete(&self, id: i64) -> Result<(), FarmflowDeleteError> {
        self.lock().delete(id)
    }

    /// Adds a recurring order (the customer need not exist); returns its id.
    pub fn add_recurring_order(&self, customer_id: i64, status: RecurringStatus) -> i64 {
        let mut s = self.lock();
        let id = s.next_order_id;
        s.next_order_id += 1;
        s.recurring.insert(
            id,
            RecurringOrderRecord {
                id,
                customer_id,
                status,
                start_date: "2026-01-05".into(),
                end_date: String::new(),
            },
        );
        id
    }

    /// Changes a recurring order's status; `false` if there is no such order.
    pub fn set_recurring_status(&self, order_id: i64, status: RecurringStatus) -> bool {
        match self.lock().recurring.get_mut(&order_id) {
            Some(o) => {
                o.status = status;
                true
            }
            None => false,
        }
    }

    /// Adds a one-time delivery order due on `fulfill_date` (`YYYY-MM-DD`, or anything else a
    /// person may type); returns its id.
    pub fn add_one_time_order(&self, customer_id: i64, fulfill_date: &str) -> i64 {
        let mut s = self.lock();
        let id = s.next_order_id;
        s.next_order_id += 1;
        s.one_time.insert(
            id,
            OneTimeOrderRecord {
                id,
                customer_id,
                pickup_location_id: 1,
                fulfillment: "Delivery".into(),
                instructions: String::new(),
                fulfill_date: fulfill_date.to_owned(),
            },
        );
        id
    }

    /// Every recurring order, by id.
    pub fn recurring_orders(&self) -> Vec<RecurringOrderRecord> {
        self.lock().recurring.values().cloned().collect()
    }

    /// Every one-time order, by id.
    pub fn one_time_orders(&self) -> Vec<OneTimeOrderRecord> {
        self.lock().one_time.values().cloned().collect()
    }

    /// Selects the response envelope from now on.
    pub fn set_envelope(&self, envelope: Envelope) {
        self.lock().envelope = envelope;
    }

    /// Answers ids as numbers (or strings) from now on.
    pub fn set_ids_as_numbers(&self, on: bool) {
        self.lock().ids_as_numbers = on;
    }

    /// Answers `null` (or `""`) for empty fields from now on.
    pub fn set_null_for_empty(&self, on: bool) {
        self.lock().null_for_empty = on;
    }

    /// Upper-cases `state` on API writes from now on (or stops).
    pub fn set_uppercase_state(&self, on: bool) {
        self.lock().uppercase_state = on;
    }

    /// Answers the API's own errors with `200` (or their real status) from now on.
    pub fn set_errors_as_200(&self, on: bool) {
        self.lock().errors_as_200 = on;
    }

    /// Answers creates with `{"id": ...}` alone (or the whole record) from now on.
    pub fn set_create_returns_id_only(&self, on: bool) {
        self.lock().create_returns_id_only = on;
    }

    /// Makes the next `customers-get` answer an empty list.
    pub fn empty_list_once(&self) {
        self.lock().empty_list_once = true;
    }

    /// Leaves these customers out of every `customers-get` from now on, as a lagging replica
    /// would; `customer-get` still finds them. Adds to the customers already left out;
    /// `clear_faults` lists them again.
    pub fn omit_from_list(&self, ids: impl IntoIterator<Item = i64>) {
        self.lock().list_faults.omitted.extend(ids);
    }

    /// Leaves each customer out of each `customers-get` with this probability (drawn from the
    /// seeded RNG). `0` stops it.
    pub fn omit_from_list_randomly(&self, probability: f64) {
        self.lock().list_faults.omit_probability = probability;
    }

    /// Makes `customers-get` answer the customers as they were before the latest `writes`
    /// customer writes (creates, updates and deletes, through the API or as a person would; at
    /// most `LIST_LAG_HISTORY` back); `customer-get` stays current. `0` turns it off.
    pub fn set_list_lag(&self, writes: usize) {
        self.lock().list_faults.lag = writes;
    }

    /// Makes each `customers-get`, with this probability (seeded RNG), answer the customers as
    /// they were before the latest customer write. `0` stops it.
    pub fn lag_randomly(&self, probability: f64) {
        self.lock().list_faults.lag_probability = probability;
    }

    /// How many customers `customers-get` has misreported since start: live ones left out, and
    /// ones whose lagged version (or presence) differed from the current one. `clear_faults`
    /// and `reset_stats` do not reset it.
    pub fn omissions_served(&self) -> u64 {
        self.lock().omissions_served
    }

    /// Removes injected faults, a pending empty list and every listing fault (omissions, lag).
    pub fn clear_faults(&self) {
        self.pipeline().clear_faults();
        let mut s = self.lock();
        s.empty_list_once = false;
        s.list_faults = ListFaults::default();
    }

    /// The customers one `customers-get` shows, after its listing faults, as JSON; counts the
    /// customers it misreports.
    fn listed(&self, s: &mut FarmflowState) -> Vec<Value> {
        let faults = &s.list_faults;
        let mut lag = faults.lag;
        if faults.lag_probability > 0.0 && self.pipeline().chance(faults.lag_probability) {
            lag = lag.max(1);
        }
        // The lagged version of every customer written since: the oldest one wins.
        let mut before: BTreeMap<i64, Option<&FarmflowRecord>> = BTreeMap::new();
        for (id, version) in s.history.iter().rev().take(lag) {
            before.insert(*id, version.as_ref());
        }
        let mut shown: BTreeMap<i64, &FarmflowRecord> =
            s.customers.iter().map(|(id, c)| (*id, c)).collect();
        for (id, version) in &before {
            match version {
                Some(c) => shown.insert(*id, c),
                None => shown.remove(id),
            };
        }
        let mut touched: BTreeSet<i64> = before.keys().copied().collect();
        let omit_probability = faults.omit_probability;
        shown.retain(|id, _| {
            let left_out = faults.omitted.contains(id)
                || (omit_probability > 0.0 && self.pipeline().chance(omit_probability));
            if left_out {
                touched.insert(*id);
            }
            !left_out
        });
        let misreported = touched
            .iter()
            .filter(|id| shown.get(id).copied() != s.customers.get(id))
            .count();
        let payload = shown.values().map(|c| s.customer_json(c)).collect();
        s.omissions_served += u64::try_from(misreported).unwrap_or(u64::MAX);
        payload
    }

    /// Removes every fault, rate limit and latency: a healthy service again.
    pub fn heal(&self) {
        self.clear_faults();
        self.clear_rate_limits();
        self.clear_latency();
    }
}

impl FarmflowState {
    /// Keeps customer `id`'s version before a write, for a lagging `customers-get`.
    fn remember(&mut self, id: i64) {
        let version = self.customers.get(&id).cloned();
        self.history.push_back((id, version));
        if self.history.len() > LIST_LAG_HISTORY {
            self.history.pop_front();
        }
    }

    fn delete(&mut self, id: i64) -> Result<(), FarmflowDeleteError> {
        if !self.customers.contains_key(&id) {
            return Err(FarmflowDeleteError::NotFound(id));
        }
        if self
            .recurring
            .values()
            .any(|o| o.customer_id == id && o.status == RecurringStatus::Active)
        {
            return Err(FarmflowDeleteError::ActiveRecurringOrder(id));
        }
        self.remember(id);
        self.customers.remove(&id);
        // Deleting a customer erases their order history too: that is what makes it dangerous.
        self.recurring.retain(|_, o| o.customer_id != id);
        self.one_time.retain(|_, o| o.customer_id != id);
        Ok(())
    }

    fn id_json(&self, id: i64) -> Value {
        if self.ids_as_numbers {
            json!(id)
        } else {
            json!(id.to_string())
        }
    }

    fn text_json(&self, s: &str) -> Value {
        if s.is_empty() && self.null_for_empty {
            Value::Null
        } else {
            json!(s)
        }
    }

    fn customer_json(&self, c: &FarmflowRecord) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id_json(c.id));
        for (k, v) in [
            ("company", &c.company),
            ("firstname", &c.firstname),
            ("lastname", &c.lastname),
            ("address", &c.address),
            ("address2", &c.address2),
            ("city", &c.city),
            ("state", &c.state),
            ("zip", &c.zip),
            ("phone", &c.phone),
            ("email", &c.email),
            ("country", &c.country),
            ("notes", &c.notes),
        ] {
            m.insert(k.into(), self.text_json(v));
        }
        Value::Object(m)
    }

    fn recurring_json(&self, o: &RecurringOrderRecord) -> Value {
        json!({
            "id": self.id_json(o.id),
            "customer-id": self.id_json(o.customer_id),
            "status": o.status.as_str(),
            "start-date": self.text_json(&o.start_date),
            "end-date": self.text_json(&o.end_date),
        })
    }

    fn one_time_json(&self, o: &OneTimeOrderRecord) -> Value {
        json!({
            "id": self.id_json(o.id),
            "customer-id": self.id_json(o.customer_id),
            "pickup-location-id": self.id_json(o.pickup_location_id),
            "fulfillment": self.text_json(&o.fulfillment),
            "instructions": self.text_json(&o.instructions),
            "fulfill-date": self.text_json(&o.fulfill_date),
        })
    }

    fn success(&self, resource: &str, payload: Value) -> Response {
        let body = match self.envelope {
            Envelope::Standard => json!({ "status": "success", "data": payload }),
            Envelope::Bare => payload,
            Envelope::ResourceKey => json!({ resource: payload }),
        };
        (StatusCode::OK, axum::Json(body)).into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// Routing and handlers

enum Route {
    Endpoint(FarmflowEndpoint),
    NotAllowed(&'static str),
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    let (endpoint, allowed) = match path {
        "/customers-get" => (FarmflowEndpoint::List, Method::GET),
        "/customer-get" => (FarmflowEndpoint::Get, Method::POST),
        "/customer-create" => (FarmflowEndpoint::Create, Method::POST),
        "/customer-update" => (FarmflowEndpoint::Update, Method::POST),
        "/customer-delete" => (FarmflowEndpoint::Delete, Method::POST),
        "/recurring-orders-get" => (FarmflowEndpoint::RecurringOrders, Method::GET),
        "/one-time-orders-get" => (FarmflowEndpoint::OneTimeOrders, Method::GET),
        _ => return Route::NotFound,
    };
    if *method == allowed {
        Route::Endpoint(endpoint)
    } else if allowed == Method::GET {
        Route::NotAllowed("GET")
    } else {
        Route::NotAllowed("POST")
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    Flavor::Farmflow.error(status, "", message)
}

/// Reads an id sent as a string (`"321"`) or, tolerated, a number.
fn parse_id(value: Option<&Value>) -> Result<i64, Response> {
    let id = match value {
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    id.ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "id is required and must be an integer",
        )
    })
}

/// Reads every customer field; a field left out is `""` (an update replaces the whole record).
fn parse_fields(obj: &Map<String, Value>) -> Result<FarmflowRecord, Response> {
    let field = |name: &str| -> Result<String, Response> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(_) => Err(error(
                StatusCode::BAD_REQUEST,
                &format!("{name} must be a string"),
            )),
        }
    };
    let record = FarmflowRecord {
        id: 0,
        company: field("company")?,
        firstname: field("firstname")?,
        lastname: field("lastname")?,
        address: field("address")?,
        address2: field("address2")?,
        city: field("city")?,
        state: field("state")?,
        zip: field("zip")?,
        phone: field("phone")?,
        email: field("email")?,
        country: field("country")?,
        notes: field("notes")?,
    };
    if record.firstname.trim().is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "firstname is required"));
    }
    Ok(record)
}

async fn dispatch(State(farmflow): State<FakeFarmflow>, req: Request) -> Response {
    let meta = RequestMeta::of(&req);
    let route = route(req.method(), req.uri().path());
    let endpoint = match route {
        Route::Endpoint(e) => Some(e),
        _ => None,
    };
    let inner = farmflow.inner.clone();
    inner
        .pipeline
        .run(meta, endpoint, move || async move {
            let errors_as_200 = farmflow.lock().errors_as_200;
            let mut response = farmflow.serve(route, req).await;
            if errors_as_200 && response.status().as_u16() >= 400 {
                // Some services say "error" only in the body.
                *response.status_mut() = StatusCode::OK;
            }
            response
        })
        .await
}

impl FakeFarmflow {
    fn authorised(&self, req: &Request) -> bool {
        let expected = format!("{}{}", self.inner.auth_prefix, self.inner.api_key);
        req.headers()
            .get(self.inner.auth_header.as_str())
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected)
    }

    async fn serve(&self, route: Route, req: Request) -> Response {
        let endpoint = match route {
            Route::Endpoint(e) => e,
            Route::NotFound => return error(StatusCode::NOT_FOUND, "no such endpoint"),
            Route::NotAllowed(allow) => {
                let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                return r;
            }
        };
        if !self.authorised(&req) {
            return error(StatusCode::UNAUTHORIZED, "missing or invalid api key");
        }
        let body = if req.method() == Method::POST {
            let bytes = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
                Ok(b) => b,
                Err(_) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large or unreadable",
                    );
                }
            };
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(obj)) => obj,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "request body must be a JSON object",
                    );
                }
            }
        } else {
            Map::new()
        };
        match endpoint {
            FarmflowEndpoint::List => {
                let mut s = self.lock();
                let payload = if std::mem::take(&mut s.empty_list_once) {
                    Vec::new()
                } else {
                    self.listed(&mut s)
                };
                s.success("customers", Value::Array(payload))
            }
            FarmflowEndpoint::RecurringOrders => {
                let s = self.lock();
                let payload = s.recurring.values().map(|o| s.recurring_json(o)).collect();
                s.success("recurring-orders", Value::Array(payload))
            }
            FarmflowEndpoint::OneTimeOrders => {
                let s = self.lock();
                let payload = s.one_time.values().map(|o| s.one_time_json(o)).collect();
                s.success("one-time-orders", Value::Array(payload))
            }
            FarmflowEndpoint::Get => {
                let id = match parse_id(body.get("id")) {
                    Ok(id) => id,
                    Err(r) => return r,
                };
                let s = self.lock();
                match s.customers.get(&id) {
                    Some(c) => s.success("customer", s.customer_json(c)),
                    None => error(StatusCode::NOT_FOUND, &format!("customer {id} not found")),
                }
            }
            FarmflowEndpoint::Create => {
                let mut record = match parse_fields(&body) {
                    Ok(r) => r,
                    Err(r) => return r,
                };
                let response = {
                    let mut s = self.lock();
                    if s.uppercase_state {
                        record.state = record.state.to_uppercase();
                    }
                    record.id = s.next_id;
                    s.next_id += 1;
                    s.remember(record.id);
                    let payload = if s.create_returns_id_only {
                        json!({ "id": s.id_json(record.id) })
                    } else {
                        s.customer_json(&record)
                    };
                    s.customers.insert(record.id, record);
                    s.success("customer", payload)
                };
                self.pipeline().write_applied();
                response
            }
            FarmflowEndpoint::Update => {
                let id = match parse_id(body.get("id")) {
                    Ok(id) => id,
                    Err(r) => return r,
                };
                let mut record = match parse_fields(&body) {
                    Ok(r) => r,
                    Err(r) => return r,
                };
                let response = {
                    let mut s = self.lock();
                    if !s.customers.contains_key(&id) {
                        return error(StatusCode::NOT_FOUND, &format!("customer {id} not found"));
                    }
                    if s.uppercase_state {
                        record.state = record.state.to_uppercase();
                    }
                    record.id = id;
                    s.remember(id);
                    let payload = s.customer_json(&record);
                    s.customers.insert(id, record);
                    s.success("customer", payload)
                };
                self.pipeline().write_applied();
                response
            }
            FarmflowEndpoint::Delete => {
                let id = match parse_id(body.get("id")) {
                    Ok(id) => id,
                    Err(r) => return r,
                };
                let response = {
                    let mut s = self.lock();
                    match s.delete(id) {
                        Ok(()) => s.success("customer", json!({ "id": s.id_json(id) })),
                        Err(FarmflowDeleteError::NotFound(_)) => {
                            return error(
                                StatusCode::NOT_FOUND,
                                &format!("customer {id} not found"),
                            );
                        }
                        Err(FarmflowDeleteError::ActiveRecurringOrder(_)) => {
                            return error(StatusCode::CONFLICT, ACTIVE_ORDER_REFUSAL);
                        }
                    }
                };
                self.pipeline().write_applied();
                response
            }
        }
    }
}
