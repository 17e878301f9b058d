//! The FarmFlow client: one method per remote call, built to `api/farmflow.md`.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use crate::farmflow::decode::{self, Payload};
use crate::farmflow::model::{FarmflowCustomer, FarmflowFields, OneTimeOrder, RecurringOrder};
use crate::http::{
    Api, ApiError, Call, CheckReport, DecodeError, HttpCore, Raw, Refusal, Request,
    client_plumbing, excerpt_text,
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

/// The FarmFlow client. Its `Debug` shows no secret: the key's header value is marked
/// sensitive.
#[derive(Debug)]
pub struct FarmflowClient {
    core: HttpCore,
    auth_name: HeaderName,
    auth_value: HeaderValue,
}

impl FarmflowClient {
    /// A client for `options`.
    pub fn new(options: FarmflowOptions) -> Result<Self, ApiError> {
        let core = HttpCore::new(
            Api::Farmflow,
            options.base_url,
            options.timeout,
            options.requests_per_minute,
            refusal(options.auth_header.trim(), &options.auth_prefix),
        )?;
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
            auth_name,
            auth_value,
        })
    }

    client_plumbing!("FarmFlow");

    /// Every customer (`GET /customers-get`; FarmFlow does not page).
    pub async fn list(&self) -> Result<Vec<FarmflowCustomer>, ApiError> {
        let operation = "customer list";
        self.read_all("customers-get", operation, operation, decode::customer_list)
            .await
    }

    /// One customer, or `None` when FarmFlow answers 404.
    pub async fn get(&self, id: FarmflowId) -> Result<Option<FarmflowCustomer>, ApiError> {
        let body = decode::customer_body(Some(id), None);
        let raw = self
            .post("customer-get", "customer read", Call::Read, &body)
            .await?;
        if !self.core.found(&raw, format!("customer {id}"))? {
            return Ok(None);
        }
        let customer = self.accept(&raw, decode::customer(&raw.body))?;
        if customer.id != id {
            let reason = format!("asked for customer {id}, got customer {}", customer.id);
            return Err(self.core.undecodable(reason, &raw.body));
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
        let operation = "customer create";
        let raw = self
            .post("customer-create", operation, Call::Create, &body)
            .await?;
        self.core
            .expect_created(&raw, operation, "customer-create endpoint")?;
        match decode::created(&raw.body, fields) {
            Ok(Ok(customer)) => Ok(customer),
            // The body says it failed: nothing was created.
            Ok(Err(message)) => Err(self.refused(&raw, message)),
            Err(err) => Err(self.core.outcome_unknown(
                operation,
                format!(
                    "answered {} with a body farmsync cannot read ({}): {:?}",
                    raw.status.as_u16(),
                    err.reason,
                    self.core.excerpt(&raw.body)
                ),
            )),
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
        self.core
            .expect_success(&raw, format!("customer {}", customer.id))?;
        match decode::created(&raw.body, &customer.fields) {
            Ok(Ok(updated)) if updated.id == customer.id => Ok(updated),
            Ok(Ok(other)) => Err(self.core.undecodable(
                format!(
                    "updated customer {}, got customer {}",
                    customer.id, other.id
                ),
                &raw.body,
            )),
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
            401 | 403 => Err(self.core.status_error(&raw, "")),
            404 => Ok(DeleteOutcome::AlreadyGone),
            400..=499 => {
                let reason = self.core.explanation(&raw);
                if names_recurring_order(&reason) {
                    Ok(DeleteOutcome::Blocked { reason })
                } else {
                    Err(self.core.status_error(&raw, format!("customer {id}")))
                }
            }
            _ => Err(self.core.unexpected(&raw)),
        }
    }

    /// Every recurring order (`GET /recurring-orders-get`).
    pub async fn recurring_orders(&self) -> Result<Vec<RecurringOrder>, ApiError> {
        let action = "recurring-orders-get";
        let what = "recurring-orders-get endpoint";
        self.read_all(
            action,
            "recurring order list",
            what,
            decode::recurring_orders,
        )
        .await
    }

    /// Every one-time order (`GET /one-time-orders-get`).
    pub async fn one_time_orders(&self) -> Result<Vec<OneTimeOrder>, ApiError> {
        let action = "one-time-orders-get";
        let what = "one-time-orders-get endpoint";
        self.read_all(action, "one-time order list", what, decode::one_time_orders)
            .await
    }

    /// Read-only probe for `farmsync check`: reads the customer list.
    pub async fn check(&self) -> Result<CheckReport, ApiError> {
        let customers = self.list().await?;
        Ok(CheckReport {
            api: Api::Farmflow,
            detail: format!("{} customers", customers.len()),
        })
    }

    /// A whole list (`GET /{action}`), decoded by `decode`; `what` names it for a 404.
    async fn read_all<T>(
        &self,
        action: &str,
        operation: &str,
        what: &str,
        decode: impl Fn(&[u8]) -> Result<Result<T, String>, DecodeError>,
    ) -> Result<T, ApiError> {
        let raw = self.get_action(action, operation).await?;
        self.core.expect_success(&raw, what)?;
        self.accept(&raw, decode(&raw.body))
    }

    async fn get_action(&self, action: &str, operation: &str) -> Result<Raw, ApiError> {
        let request = Request::read(self.core.url(&[action]), operation);
        self.send(&request).await
    }

    async fn post(
        &self,
        action: &str,
        operation: &str,
        call: Call,
        body: &Value,
    ) -> Result<Raw, ApiError> {
        let url = self.core.url(&[action]);
        let request = Request::new(Method::POST, url, call, operation).json(body);
        self.send(&request).await
    }

    /// Sends with the API key.
    async fn send(&self, request: &Request<'_>) -> Result<Raw, ApiError> {
        let auth = (&self.auth_name, &self.auth_value);
        self.core.send(request, Some(auth)).await
    }

    /// Turns a decoded 2xx into a value, a refusal in the body into an error.
    fn accept<T>(
        &self,
        raw: &Raw,
        decoded: Result<Result<T, String>, DecodeError>,
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
            let message = self.core.excerpt(message.as_bytes());
            return self.core.credentials_refused(raw.status.as_u16(), &message);
        }
        ApiError::Validation {
            api: Api::Farmflow,
            status: raw.status.as_u16(),
            message: self.core.excerpt(message.as_bytes()),
        }
    }
}

/// How FarmFlow's refusal of the key is worded: it names the header sent and its prefix.
fn refusal(auth_label: &str, auth_prefix: &str) -> Refusal {
    let sent = if auth_prefix.is_empty() {
        auth_label.to_owned()
    } else {
        format!("{auth_label} with prefix {auth_prefix:?}")
    };
    Box::new(move |status, message| {
        format!(
            "FarmFlow refused the API key ({status}) — check farmflow.api_key or auth_header (sent header {sent}): {}",
            excerpt_text(message)
        )
    })
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
        Ok((self.core.url(&[action]), raw))
    }
}
