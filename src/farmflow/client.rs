//! The FarmFlow client: one method per remote call, built to `api/farmflow.md`.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use crate::farmflow::decode::{self, Payload};
use crate::farmflow::model::{FarmflowCustomer, FarmflowFields, OneTimeOrder, RecurringOrder};
use crate::http::{
    Api, ApiError, Call, CheckReport, HttpCore, RateLimiter, Raw, RequestCounts, RetryPolicy,
    check_base_url, endpoint, excerpt_text,
};
use crate::ids::FarmflowId;

/// Everything the FarmFlow client needs, independent of the config file format.
#[derive(Debug, Clone)]
pub struct FarmflowOptions {
    /// E.g. `https://api.gofarmflow.com`.
    pub base_url: Url,
    /// The account's API key.
    pub api_key: SecretString,
    /// The header carrying the key, e.g. `Authorization`.
    pub auth_header: String,
    /// Put before the key in that header, e.g. `Bearer ` (may be empty).
    pub auth_prefix: String,
    /// Never more requests than this in any minute (retries included).
    pub requests_per_minute: u32,
    /// Per-request timeout, answer body included.
    pub timeout: Duration,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// FarmFlow deleted the customer.
    Deleted,
    /// FarmFlow refused because of a recurring order; the reason is FarmFlow's own words.
    Blocked {
        /// FarmFlow's explanation.
        reason: String,
    },
    /// FarmFlow has no such customer (404): already deleted, perhaps by an earlier attempt
    /// whose answer was lost.
    AlreadyGone,
}

/// The FarmFlow client.
pub struct FarmflowClient {
    core: HttpCore,
    base: Url,
    auth_name: HeaderName,
    auth_value: HeaderValue,
    /// The header name as configured (`HeaderName` lower-cases it), for messages.
    auth_label: String,
    auth_prefix: String,
}

impl fmt::Debug for FarmflowClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FarmflowClient")
            .field("base", &self.base.as_str())
            .field("auth_header", &self.auth_label)
            .field("api_key", &"[redacted]")
            .finish()
    }
}

impl FarmflowClient {
    /// A client for `options`.
    pub fn new(options: FarmflowOptions) -> Result<Self, ApiError> {
        check_base_url(Api::Farmflow, &options.base_url)?;
        let core = HttpCore::new(Api::Farmflow, options.timeout, options.requests_per_minute)?;
        core.add_secret(&options.api_key);
        let auth_name =
            HeaderName::from_bytes(options.auth_header.trim().as_bytes()).map_err(|_| {
                ApiError::Config {
                    api: Api::Farmflow,
                    message: format!(
                        "farmflow.auth_header {:?} is not a valid header name",
                        options.auth_header
                    ),
                }
            })?;
        let mut auth_value = HeaderValue::from_str(&format!(
            "{}{}",
            options.auth_prefix,
            options.api_key.expose_secret()
        ))
        .map_err(|_| ApiError::Config {
            api: Api::Farmflow,
            message:
                "farmflow.auth_prefix or farmflow.api_key holds characters a header cannot carry"
                    .to_owned(),
        })?;
        auth_value.set_sensitive(true);
        Ok(FarmflowClient {
            core,
            base: options.base_url,
            auth_name,
            auth_value,
            auth_label: options.auth_header.trim().to_owned(),
            auth_prefix: options.auth_prefix,
        })
    }

    /// Replaces the retry policy (e.g. [`RetryPolicy::none`] for a quick `check`).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.core.set_retry_policy(policy);
        self
    }

    /// Replaces the rate limiter (one sharing the state DB's request ledger, or one with a
    /// shorter window in tests).
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.core.set_limiter(limiter);
        self
    }

    /// From now on, once `cancel` is cancelled, every wait of this client — the rate limiter,
    /// a retry's backoff, a read's answer — ends at once with [`ApiError::Cancelled`]; a write
    /// already sent still finishes. (The engine hands each run's token here.)
    pub fn cancel_waits_on(&self, cancel: tokio_util::sync::CancellationToken) {
        self.core.set_cancel(cancel);
    }

    /// Requests sent so far, by kind.
    pub fn counts(&self) -> RequestCounts {
        self.core.counts()
    }

    /// The rate limiter: [`RateLimiter::recent`] is the FarmFlow requests of the last minute.
    pub fn limiter(&self) -> &RateLimiter {
        self.core.limiter()
    }

    /// Every customer (`GET /customers-get`; FarmFlow does not page).
    pub async fn list(&self) -> Result<Vec<FarmflowCustomer>, ApiError> {
        let raw = self.get_action("customers-get", "customer list").await?;
        self.expect_success(&raw, "customer list")?;
        let decoded = decode::customer_list(&raw.body);
        self.accept(&raw, decoded)
    }

    /// One customer, or `None` when FarmFlow answers 404.
    pub async fn get(&self, id: FarmflowId) -> Result<Option<FarmflowCustomer>, ApiError> {
        let body = decode::customer_body(Some(id), None);
        let raw = self
            .post("customer-get", "customer read", Call::Read, &body)
            .await?;
        if raw.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.expect_success(&raw, format!("customer {id}"))?;
        let customer = self.accept(&raw, decode::customer(&raw.body))?;
        if customer.id != id {
            return Err(ApiError::Decode {
                api: Api::Farmflow,
                reason: format!("asked for customer {id}, got customer {}", customer.id),
                excerpt: self.core.excerpt(&raw.body),
            });
        }
        Ok(Some(customer))
    }

    /// Creates a customer; returns it with its new id (when FarmFlow answers only the id, the
    /// fields are the ones sent).
    ///
    /// Never resent once it may have reached FarmFlow: an answer lost to a timeout, a dropped
    /// connection or a 5xx, or a 2xx that cannot be read, gives [`ApiError::OutcomeUnknown`].
    pub async fn create(&self, fields: &FarmflowFields) -> Result<FarmflowCustomer, ApiError> {
        let body = decode::customer_body(None, Some(fields));
        let raw = self
            .post("customer-create", "customer create", Call::Create, &body)
            .await?;
        if raw.status.is_client_error() {
            return Err(self.status_error(&raw, "customer-create endpoint"));
        }
        let unknown = |cause: String| ApiError::OutcomeUnknown {
            api: Api::Farmflow,
            operation: "customer create".to_owned(),
            cause,
        };
        if !raw.status.is_success() {
            return Err(unknown(format!(
                "unexpected answer {}",
                raw.status.as_u16()
            )));
        }
        match decode::created(&raw.body, fields) {
            Ok(Ok(customer)) => Ok(customer),
            // The body says it failed: nothing was created.
            Ok(Err(message)) => Err(self.refused(&raw, message)),
            Err(err) => Err(unknown(format!(
                "answered {} with a body farmsync cannot read ({}): {:?}",
                raw.status.as_u16(),
                err.reason,
                self.core.excerpt(&raw.body)
            ))),
        }
    }

    /// Replaces a customer's whole record with `customer` (FarmFlow blanks any field left out,
    /// so this takes a whole customer: merge changes onto the latest read first).
    pub async fn update(&self, customer: &FarmflowCustomer) -> Result<FarmflowCustomer, ApiError> {
        let body = decode::customer_body(Some(customer.id), Some(&customer.fields));
        let raw = self
            .post(
                "customer-update",
                "customer update",
                Call::IdempotentWrite,
                &body,
            )
            .await?;
        self.expect_success(&raw, format!("customer {}", customer.id))?;
        match decode::created(&raw.body, &customer.fields) {
            Ok(Ok(updated)) if updated.id == customer.id => Ok(updated),
            Ok(Ok(other)) => Err(ApiError::Decode {
                api: Api::Farmflow,
                reason: format!(
                    "updated customer {}, got customer {}",
                    customer.id, other.id
                ),
                excerpt: self.core.excerpt(&raw.body),
            }),
            Ok(Err(message)) => Err(self.refused(&raw, message)),
            // Applied (2xx); an empty or unreadable echo means FarmFlow holds what was sent.
            Err(_) => {
                tracing::debug!(customer = %customer.id, "farmflow.update.unreadable_answer");
                Ok(customer.clone())
            }
        }
    }

    /// Deletes a customer. A refusal naming a recurring order (a 4xx, or a 2xx whose body says
    /// error) is [`DeleteOutcome::Blocked`], not an error.
    pub async fn delete(&self, id: FarmflowId) -> Result<DeleteOutcome, ApiError> {
        let body = decode::customer_body(Some(id), None);
        let raw = self
            .post(
                "customer-delete",
                "customer delete",
                Call::IdempotentWrite,
                &body,
            )
            .await?;
        let status = raw.status.as_u16();
        if raw.status.is_success() {
            return match decode::payload(&raw.body, decode::CUSTOMER) {
                Ok(Payload::Data(_)) => Ok(DeleteOutcome::Deleted),
                Ok(Payload::Refused(reason)) if names_recurring_order(&reason) => {
                    Ok(DeleteOutcome::Blocked { reason })
                }
                Ok(Payload::Refused(message)) => Err(self.refused(&raw, message)),
                Err(err) => Err(self.core.decode_error(err, &raw.body)),
            };
        }
        match status {
            401 | 403 => Err(self.status_error(&raw, "")),
            404 => Ok(DeleteOutcome::AlreadyGone),
            400..=499 => {
                let reason = self.explanation(&raw);
                if names_recurring_order(&reason) {
                    Ok(DeleteOutcome::Blocked { reason })
                } else {
                    Err(self.status_error(&raw, format!("customer {id}")))
                }
            }
            _ => Err(self.core.unexpected(&raw)),
        }
    }

    /// Every recurring order (`GET /recurring-orders-get`).
    pub async fn recurring_orders(&self) -> Result<Vec<RecurringOrder>, ApiError> {
        let raw = self
            .get_action("recurring-orders-get", "recurring order list")
            .await?;
        self.expect_success(&raw, "recurring-orders-get endpoint")?;
        self.accept(&raw, decode::recurring_orders(&raw.body))
    }

    /// Every one-time order (`GET /one-time-orders-get`).
    pub async fn one_time_orders(&self) -> Result<Vec<OneTimeOrder>, ApiError> {
        let raw = self
            .get_action("one-time-orders-get", "one-time order list")
            .await?;
        self.expect_success(&raw, "one-time-orders-get endpoint")?;
        self.accept(&raw, decode::one_time_orders(&raw.body))
    }

    /// Read-only probe for `farmsync check`: reads the customer list.
    pub async fn check(&self) -> Result<CheckReport, ApiError> {
        let customers = self.list().await?;
        Ok(CheckReport {
            api: Api::Farmflow,
            detail: format!("{} customers", customers.len()),
        })
    }

    async fn get_action(&self, action: &str, operation: &str) -> Result<Raw, ApiError> {
        let url = endpoint(&self.base, &[action]);
        self.core
            .execute(Call::Read, operation, || {
                self.core
                    .http()
                    .get(url.clone())
                    .header(self.auth_name.clone(), self.auth_value.clone())
            })
            .await
    }

    async fn post(
        &self,
        action: &str,
        operation: &str,
        call: Call,
        body: &Value,
    ) -> Result<Raw, ApiError> {
        let url = endpoint(&self.base, &[action]);
        self.core
            .execute(call, operation, || {
                self.core
                    .http()
                    .post(url.clone())
                    .header(self.auth_name.clone(), self.auth_value.clone())
                    .json(body)
            })
            .await
    }

    fn expect_success(&self, raw: &Raw, what: impl Into<String>) -> Result<(), ApiError> {
        if raw.status.is_success() {
            Ok(())
        } else {
            Err(self.status_error(raw, what))
        }
    }

    /// Turns a decoded 2xx into a value, a refusal in the body into an error.
    fn accept<T>(
        &self,
        raw: &Raw,
        decoded: Result<Result<T, String>, crate::http::DecodeError>,
    ) -> Result<T, ApiError> {
        match decoded {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(self.refused(raw, message)),
            Err(err) => Err(self.core.decode_error(err, &raw.body)),
        }
    }

    /// A 2xx whose body says the call failed. One that is about the key is an auth failure,
    /// so `check` can say so even when FarmFlow answers it with 200.
    fn refused(&self, raw: &Raw, message: String) -> ApiError {
        let lower = message.to_ascii_lowercase();
        if [
            "api key",
            "api_key",
            "apikey",
            "unauthorized",
            "unauthorised",
        ]
        .iter()
        .any(|word| lower.contains(word))
        {
            return self.auth_error(raw.status.as_u16(), &self.core.excerpt(message.as_bytes()));
        }
        ApiError::Validation {
            api: Api::Farmflow,
            status: raw.status.as_u16(),
            message: self.core.excerpt(message.as_bytes()),
        }
    }

    fn status_error(&self, raw: &Raw, what: impl Into<String>) -> ApiError {
        let status = raw.status.as_u16();
        let message = self.explanation(raw);
        match status {
            401 | 403 => self.auth_error(status, &message),
            404 => ApiError::NotFound {
                api: Api::Farmflow,
                what: what.into(),
            },
            409 => ApiError::Conflict {
                api: Api::Farmflow,
                message,
            },
            400..=499 => ApiError::Validation {
                api: Api::Farmflow,
                status,
                message,
            },
            _ => self.core.unexpected(raw),
        }
    }

    fn auth_error(&self, status: u16, message: &str) -> ApiError {
        ApiError::Auth {
            api: Api::Farmflow,
            message: format!(
                "FarmFlow refused the API key ({status}) — check farmflow.api_key or auth_header (sent header {}{}): {}",
                self.auth_label,
                if self.auth_prefix.is_empty() {
                    String::new()
                } else {
                    format!(" with prefix {:?}", self.auth_prefix)
                },
                excerpt_text(message)
            ),
        }
    }

    /// FarmFlow's explanation of an error answer, or an excerpt of a body that is not JSON.
    fn explanation(&self, raw: &Raw) -> String {
        let message = serde_json::from_slice::<Value>(&raw.body)
            .ok()
            .and_then(|v| crate::http::lenient::error_message(&v));
        let text = match message {
            Some(message) => self.core.excerpt(message.as_bytes()),
            None => self.core.excerpt(&raw.body),
        };
        if text.is_empty() {
            "no explanation given".to_owned()
        } else {
            text
        }
    }
}

/// Whether a refusal is about a recurring (standing) order.
fn names_recurring_order(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("recurring") || reason.contains("standing order")
}

impl FarmflowClient {
    /// One read exactly as FarmFlow answers it, any status (for `farmsync check --capture`):
    /// `GET {base}/{action}`, or a `POST` of `body` for the single-record reads. Returns the
    /// URL asked for and the answer.
    pub(crate) async fn read_raw(
        &self,
        action: &str,
        body: Option<&Value>,
        operation: &str,
    ) -> Result<(Url, Raw), ApiError> {
        let raw = match body {
            None => self.get_action(action, operation).await?,
            Some(body) => self.post(action, operation, Call::Read, body).await?,
        };
        Ok((endpoint(&self.base, &[action]), raw))
    }
}
