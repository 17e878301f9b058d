//! The CRM client: one method per remote call, built to `api/kounta.md`.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::http::{
    Api, ApiError, Call, CheckReport, DecodeError, HttpCore, Raw, Refusal, Request,
    client_plumbing, excerpt_text,
};
use crate::ids::KountaId;
use crate::kounta::auth::{OAuthTokens, TokenGrant, TokenStore, token_grant};
use crate::kounta::decode;
use crate::kounta::model::{KountaCustomer, KountaCustomerWrite, KountaListItem};

/// The most list pages read in one listing unless [`KountaClient::with_page_cap`] says otherwise
/// (25 customers a page: 250,000 customers).
pub const DEFAULT_PAGE_CAP: u32 = 10_000;

/// An access token this close to expiry (seconds) is refreshed before use.
const EXPIRY_MARGIN_SECS: i64 = 60;

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum KountaAuth {
    /// `Authorization: Basic base64(client_id:client_secret)`.
    Basic {
        /// The app's client id.
        client_id: String,
        /// The app's client secret.
        client_secret: SecretString,
    },
    /// `Authorization: Bearer <access token>`, refreshed with a rotating refresh token.
    OAuth {
        /// The app's client id.
        client_id: String,
        /// The app's client secret.
        client_secret: SecretString,
        /// The first refresh token; a newer one in the [`TokenStore`] beats it.
        refresh_token: SecretString,
    },
}

/// Everything the CRM client needs, independent of the config file format.
#[derive(Debug, Clone)]
pub struct KountaOptions {
    /// E.g. `https://api.kounta.com/v1`.
    pub base_url: Url,
    /// The company; discovered via `/companies/me` when `None`.
    pub company_id: Option<i64>,
    /// Credentials.
    pub auth: KountaAuth,
    /// Never more requests than this in any minute (retries and refreshes included).
    pub requests_per_minute: u32,
    /// Per-request timeout, answer body included.
    pub timeout: Duration,
}

/// The customer list as read: every item seen, and whether the listing is complete.
///
/// An incomplete listing must not be used to infer deletions: its missing pages may hold them.
#[derive(Debug, Clone)]
pub struct KountaListing {
    /// Items of every page read, in order, each id once.
    pub items: Vec<KountaListItem>,
    /// True when the last page said there was no next page (or came back empty).
    pub complete: bool,
    /// Why the listing stopped early, when it did.
    pub error: Option<ListingCut>,
    /// Pages read.
    pub pages: u32,
}

/// Why a listing stopped before its last page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingCut {
    /// A page after the first could not be read.
    #[error("the customer list stopped after {pages_read} pages: {error}")]
    Failed {
        /// Pages read before the failure.
        pages_read: u32,
        /// The failure.
        error: ApiError,
    },
    /// More pages than the cap.
    #[error("the customer list has more than {pages} pages (the page cap); the rest was not read")]
    PageCap {
        /// The cap.
        pages: u32,
    },
    /// `X-Next-Page` could not be followed.
    #[error("the customer list's next page {next:?} was not followed: {reason}")]
    BadNextPage {
        /// The header's value.
        next: String,
        /// Why it was not followed.
        reason: String,
    },
}

impl ListingCut {
    /// The cut as an error, for callers that need the whole list or nothing.
    pub fn into_error(self) -> ApiError {
        match self {
            ListingCut::Failed { error, .. } => error,
            other => ApiError::Decode {
                api: Api::Kounta,
                reason: other.to_string(),
                excerpt: String::new(),
            },
        }
    }
}

enum AuthMode {
    Basic(HeaderValue),
    OAuth(OAuth),
}

struct OAuth {
    client_id: String,
    client_secret: SecretString,
    configured_refresh: SecretString,
    store: Arc<dyn TokenStore>,
    /// The tokens in use; the lock also makes concurrent refreshes wait for one another, since
    /// a second refresh with the already-rotated token would be refused.
    current: tokio::sync::Mutex<Option<OAuthTokens>>,
}

/// The Kounta-style CRM client.
pub struct KountaClient {
    core: HttpCore,
    configured_company: Option<i64>,
    company: tokio::sync::OnceCell<i64>,
    auth: AuthMode,
    page_cap: u32,
    /// False for a command running beside the lock holder: it may use a stored access token
    /// but never rotate the refresh token behind the holder's back.
    refresh_allowed: bool,
}

impl fmt::Debug for KountaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KountaClient")
            .field("base", &self.core.base().as_str())
            .field(
                "company",
                &self.company.get().or(self.configured_company.as_ref()),
            )
            .field(
                "auth",
                &match self.auth {
                    AuthMode::Basic(_) => "basic [redacted]",
                    AuthMode::OAuth(_) => "oauth [redacted]",
                },
            )
            .finish()
    }
}

impl KountaClient {
    /// A client for `options`. Rotated OAuth tokens are kept in `tokens` (ignored with basic auth).
    pub fn new(options: KountaOptions, tokens: Arc<dyn TokenStore>) -> Result<Self, ApiError> {
        let oauth = matches!(options.auth, KountaAuth::OAuth { .. });
        let core = HttpCore::new(
            Api::Kounta,
            options.base_url,
            options.timeout,
            options.requests_per_minute,
            refusal(oauth),
        )?;
        let auth = match options.auth {
            KountaAuth::Basic {
                client_id,
                client_secret,
            } => {
                core.add_secret(&client_secret);
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{client_id}:{}", client_secret.expose_secret()));
                let mut value =
                    HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|_| {
                        ApiError::Config {
                            api: Api::Kounta,
                            message: "kounta.client_id cannot be sent in a header".to_owned(),
                        }
                    })?;
                value.set_sensitive(true);
                AuthMode::Basic(value)
            }
            KountaAuth::OAuth {
                client_id,
                client_secret,
                refresh_token,
            } => {
                core.add_secret(&client_secret);
                core.add_secret(&refresh_token);
                AuthMode::OAuth(OAuth {
                    client_id,
                    client_secret,
                    configured_refresh: refresh_token,
                    store: tokens,
                    current: tokio::sync::Mutex::new(None),
                })
            }
        };
        Ok(KountaClient {
            core,
            configured_company: options.company_id,
            company: tokio::sync::OnceCell::new(),
            auth,
            page_cap: DEFAULT_PAGE_CAP,
            refresh_allowed: true,
        })
    }

    /// Never refreshes the OAuth token: a request that would need a refresh fails with `Auth`.
    /// For commands that run while another farmsync holds the lock.
    pub fn without_refresh(mut self) -> Self {
        self.refresh_allowed = false;
        self
    }

    /// Caps the pages one listing reads; a longer list comes back incomplete.
    pub fn with_page_cap(mut self, pages: u32) -> Self {
        self.page_cap = pages.max(1);
        self
    }

    client_plumbing!("CRM");

    /// Whether the next request would first have to refresh the OAuth token (no usable access
    /// token in memory or in the store). Always `false` with basic auth. Lets a command take the
    /// single-instance lock before a refresh, and skip it when the stored token will do.
    pub async fn needs_refresh(&self) -> Result<bool, ApiError> {
        let AuthMode::OAuth(oauth) = &self.auth else {
            return Ok(false);
        };
        let now = now_epoch();
        let current = oauth.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|t| t.access_usable(now, EXPIRY_MARGIN_SECS))
        {
            return Ok(false);
        }
        drop(current);
        Ok(!load_tokens(&oauth.store)
            .await?
            .is_some_and(|t| t.access_usable(now, EXPIRY_MARGIN_SECS)))
    }

    /// The company id: the configured one, else `GET /companies/me` (asked once, then kept).
    pub async fn company_id(&self) -> Result<i64, ApiError> {
        if let Some(id) = self.configured_company {
            return Ok(id);
        }
        self.company
            .get_or_try_init(|| async {
                let url = self.core.url(&["companies", "me"]);
                let raw = self.send(&Request::read(url, "company lookup")).await?;
                self.core.expect_success(
                    &raw,
                    "company behind these credentials (GET /companies/me) — set kounta.company_id",
                )?;
                decode::company_id(&raw.body).map_err(|e| self.core.decode_error(e, &raw.body))
            })
            .await
            .copied()
    }

    /// Reads the whole customer list (abbreviated items), following `X-Next-Page`.
    ///
    /// `Err` when not even the first page could be read; a failure after that comes back as an
    /// incomplete listing holding the items read so far.
    pub async fn list(&self) -> Result<KountaListing, ApiError> {
        self.list_leaving(0).await
    }

    /// [`KountaClient::list`], each page waiting until `reserve` requests of the rate are
    /// still free after it: a sweep's listing leaves them to quick cycles.
    pub async fn list_leaving(&self, reserve: u32) -> Result<KountaListing, ApiError> {
        let cid = self.company_id().await?;
        self.read_pages(self.customers_url(cid), cid, "customer list", reserve)
            .await
    }

    /// The full record of one customer, or `None` when the CRM answers 404.
    pub async fn get(&self, id: KountaId) -> Result<Option<KountaCustomer>, ApiError> {
        let url = self.company_url(&["customers", &id.to_string()]).await?;
        let raw = self.send(&Request::read(url, "customer read")).await?;
        if !self.core.found(&raw, format!("customer {id}"))? {
            return Ok(None);
        }
        let customer =
            decode::customer(&raw.body).map_err(|e| self.core.decode_error(e, &raw.body))?;
        if customer.id != id {
            let reason = format!("asked for customer {id}, got customer {}", customer.id);
            return Err(self.core.undecodable(reason, &raw.body));
        }
        Ok(Some(customer))
    }

    /// Customers whose `reference_id` is exactly `reference_id` (not unique: 0..n), every page.
    pub async fn find_by_reference(
        &self,
        reference_id: &str,
    ) -> Result<Vec<KountaListItem>, ApiError> {
        let cid = self.company_id().await?;
        let mut url = self.customers_url(cid);
        url.query_pairs_mut()
            .append_pair("reference_id", reference_id);
        let listing = self
            .read_pages(url, cid, "customer lookup by reference_id", 0)
            .await?;
        match listing.error {
            None => Ok(listing.items),
            Some(cut) => Err(cut.into_error()),
        }
    }

    /// The customer with this email, or `None`.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<KountaId>, ApiError> {
        self.find_one(&[("email", email)], "customer lookup by email")
            .await
    }

    /// The customer with this mobile, or `None`.
    pub async fn find_by_mobile(&self, mobile: &str) -> Result<Option<KountaId>, ApiError> {
        self.find_one(&[("mobile", mobile)], "customer lookup by mobile")
            .await
    }

    /// The customer with these names and phone (all three must match), or `None`.
    pub async fn find_by_name_phone(
        &self,
        first_name: &str,
        last_name: &str,
        phone: &str,
    ) -> Result<Option<KountaId>, ApiError> {
        self.find_one(
            &[
                ("first_name", first_name),
                ("last_name", last_name),
                ("phone", phone),
            ],
            "customer lookup by name and phone",
        )
        .await
    }

    /// Creates a customer and returns its id (read from `Location`; the body is empty).
    ///
    /// Never resent once it may have reached the CRM: an answer lost to a timeout, a dropped
    /// connection or a 5xx gives [`ApiError::OutcomeUnknown`].
    pub async fn create(&self, customer: &KountaCustomerWrite) -> Result<KountaId, ApiError> {
        let operation = "customer create";
        let cid = self.company_id().await?;
        let request = Request::new(
            Method::POST,
            self.customers_url(cid),
            Call::Create,
            operation,
        );
        let raw = self.send(&request.json(customer)).await?;
        self.core
            .expect_created(&raw, operation, format!("company {cid}"))?;
        let location = raw.header(LOCATION.as_str()).unwrap_or_default();
        if let Some(id) = decode::location_id(location) {
            return Ok(id);
        }
        // Tolerated: no `Location`, but the record in the body.
        if let Ok(created) = decode::customer(&raw.body) {
            return Ok(created.id);
        }
        let cause = format!(
            "answered {} without naming the new customer (Location {:?})",
            raw.status.as_u16(),
            excerpt_text(location)
        );
        Err(self.core.outcome_unknown(operation, cause))
    }

    /// Updates the fields that are `Some`; the rest stay as they are. Returns the record when
    /// the answer carries one (an empty answer is fine).
    pub async fn update(
        &self,
        id: KountaId,
        changes: &KountaCustomerWrite,
    ) -> Result<Option<KountaCustomer>, ApiError> {
        let url = self.company_url(&["customers", &id.to_string()]).await?;
        let request = Request::new(Method::PUT, url, Call::IdempotentWrite, "customer update");
        let raw = self.send(&request.json(changes)).await?;
        self.core.expect_success(&raw, format!("customer {id}"))?;
        if raw.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match decode::customer(&raw.body) {
            Ok(record) if record.id == id => Ok(Some(record)),
            // The update was applied (2xx); an unreadable echo only costs the caller a re-read.
            _ => {
                tracing::debug!(customer = %id, "kounta.update.unreadable_answer");
                Ok(None)
            }
        }
    }

    /// Read-only probe for `farmsync check`: resolves the company and reads the first list page.
    pub async fn check(&self) -> Result<CheckReport, ApiError> {
        let cid = self.company_id().await?;
        let (page, next) = self
            .read_page(&self.customers_url(cid), cid, "check")
            .await?;
        Ok(CheckReport {
            api: Api::Kounta,
            detail: format!(
                "company {cid}: {} customers on the first page{}",
                page.len(),
                if next.is_some() {
                    ", more pages follow"
                } else {
                    ""
                }
            ),
        })
    }

    fn customers_url(&self, cid: i64) -> Url {
        self.core.url(&["companies", &cid.to_string(), "customers"])
    }

    /// `{base}/companies/{company id}/{segments}`.
    async fn company_url(&self, segments: &[&str]) -> Result<Url, ApiError> {
        let cid = self.company_id().await?.to_string();
        let all: Vec<&str> = ["companies", cid.as_str()]
            .into_iter()
            .chain(segments.iter().copied())
            .collect();
        Ok(self.core.url(&all))
    }

    async fn read_pages(
        &self,
        first: Url,
        cid: i64,
        operation: &str,
        reserve: u32,
    ) -> Result<KountaListing, ApiError> {
        let mut listing = KountaListing {
            items: Vec::new(),
            complete: false,
            error: None,
            pages: 0,
        };
        let mut ids = HashSet::new();
        let mut visited = HashSet::new();
        let mut url = first;
        loop {
            if listing.pages >= self.page_cap {
                listing.error = Some(ListingCut::PageCap {
                    pages: self.page_cap,
                });
                return Ok(listing);
            }
            visited.insert(url.to_string());
            let answer = match self.core.room_leaving(reserve).await {
                Ok(()) => self.read_page(&url, cid, operation).await,
                Err(cancelled) => Err(cancelled),
            };
            let (page, next) = match answer {
                Ok(answer) => answer,
                Err(error) if listing.pages == 0 => return Err(error),
                Err(error) => {
                    listing.error = Some(ListingCut::Failed {
                        pages_read: listing.pages,
                        error,
                    });
                    return Ok(listing);
                }
            };
            listing.pages += 1;
            let empty = page.is_empty();
            // Paging by offset can show an item twice while customers are added; keep one.
            listing
                .items
                .extend(page.into_iter().filter(|item| ids.insert(item.id)));
            let next = match next {
                Some(next) if !empty => next,
                _ => {
                    listing.complete = true;
                    return Ok(listing);
                }
            };
            match self.next_page(&url, &next) {
                Ok(next_url) if !visited.contains(next_url.as_str()) => url = next_url,
                Ok(_) => {
                    listing.error = Some(ListingCut::BadNextPage {
                        next,
                        reason: "it names a page already read".to_owned(),
                    });
                    return Ok(listing);
                }
                Err(reason) => {
                    listing.error = Some(ListingCut::BadNextPage { next, reason });
                    return Ok(listing);
                }
            }
        }
    }

    async fn read_page(
        &self,
        url: &Url,
        cid: i64,
        operation: &str,
    ) -> Result<(Vec<KountaListItem>, Option<String>), ApiError> {
        let raw = self.send(&Request::read(url.clone(), operation)).await?;
        self.core
            .expect_success(&raw, format!("company {cid} — check kounta.company_id"))?;
        let page = if raw.status == StatusCode::NO_CONTENT {
            Vec::new()
        } else {
            decode::list_page(&raw.body).map_err(|e| self.core.decode_error(e, &raw.body))?
        };
        let next = raw
            .header("x-next-page")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Ok((page, next))
    }

    /// The URL of the next page, refused when it leaves the configured host: the request
    /// carries credentials.
    fn next_page(&self, current: &Url, next: &str) -> Result<Url, String> {
        let url = current
            .join(next)
            .map_err(|e| format!("it is not a URL ({e})"))?;
        let base = self.core.base();
        let same_origin = url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default();
        if !same_origin {
            return Err(format!(
                "it leaves {}; credentials are only sent to the configured kounta.base_url",
                base.host_str().unwrap_or_default()
            ));
        }
        Ok(url)
    }

    async fn find_one(
        &self,
        query: &[(&str, &str)],
        operation: &str,
    ) -> Result<Option<KountaId>, ApiError> {
        let cid = self.company_id().await?;
        let mut url = self.customers_url(cid);
        url.query_pairs_mut().extend_pairs(query);
        let raw = self.send(&Request::read(url, operation)).await?;
        if raw.status.is_redirection() {
            let location = raw.header(LOCATION.as_str()).unwrap_or_default();
            return decode::location_id(location)
                .map(Some)
                .ok_or_else(|| ApiError::Decode {
                    api: Api::Kounta,
                    reason: format!("{} names no customer", raw.status.as_u16()),
                    excerpt: format!("Location: {}", excerpt_text(location)),
                });
        }
        if !self.core.found(&raw, format!("company {cid}"))? {
            return Ok(None);
        }
        // Tolerated: a stack that followed the redirect answers the record, or a list.
        if let Ok(record) = decode::customer(&raw.body) {
            return Ok(Some(record.id));
        }
        let items =
            decode::list_page(&raw.body).map_err(|e| self.core.decode_error(e, &raw.body))?;
        match items.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.id)),
            _ => Err(ApiError::Conflict {
                api: Api::Kounta,
                message: format!("{} customers match the {operation}", items.len()),
            }),
        }
    }

    /// Sends with credentials. With OAuth, a 401 (or a 400 saying the token is bad) refreshes
    /// the token and sends once more; a second refusal is an `Auth` error.
    async fn send(&self, request: &Request<'_>) -> Result<Raw, ApiError> {
        let oauth = match &self.auth {
            AuthMode::Basic(value) => {
                return self.core.send(request, Some((&AUTHORIZATION, value))).await;
            }
            AuthMode::OAuth(oauth) => oauth,
        };
        let token = self.access_token(oauth, None).await?;
        let raw = self.send_bearer(request, &token).await?;
        if !token_refused(&raw) {
            return Ok(raw);
        }
        let token = self.access_token(oauth, Some(&token)).await?;
        let raw = self.send_bearer(request, &token).await?;
        if token_refused(&raw) {
            return Err(auth(format!(
                "Kounta refused a freshly refreshed access token ({}, sent Authorization: Bearer): {} — authorise farmsync again and set kounta.refresh_token",
                raw.status.as_u16(),
                self.core.explanation(&raw)
            )));
        }
        Ok(raw)
    }

    async fn send_bearer(
        &self,
        request: &Request<'_>,
        token: &SecretString,
    ) -> Result<Raw, ApiError> {
        let header = bearer(token)?;
        self.core
            .send(request, Some((&AUTHORIZATION, &header)))
            .await
    }

    /// The access token to use: the one in use, else a usable stored one, else a fresh one.
    /// After a refusal of `refused`, only another token will do (one another task or process
    /// already got), and one close to its expiry still counts.
    async fn access_token(
        &self,
        oauth: &OAuth,
        refused: Option<&SecretString>,
    ) -> Result<SecretString, ApiError> {
        let mut current = oauth.current.lock().await;
        let now = now_epoch();
        let margin = if refused.is_some() {
            0
        } else {
            EXPIRY_MARGIN_SECS
        };
        let will_do = |t: &OAuthTokens| {
            t.access_usable(now, margin)
                && refused.is_none_or(|r| t.access_token.expose_secret() != r.expose_secret())
        };
        if let Some(tokens) = current.as_ref()
            && will_do(tokens)
        {
            return Ok(tokens.access_token.clone());
        }
        if let Some(stored) = load_tokens(&oauth.store).await?
            && will_do(&stored)
        {
            self.core.add_secret(&stored.access_token);
            let access = stored.access_token.clone();
            *current = Some(stored);
            return Ok(access);
        }
        self.refresh(oauth, &mut current).await
    }

    /// Refreshes with the newest stored refresh token (else the configured one), stores the
    /// rotated tokens, and only then hands out the new access token.
    ///
    /// When the stored token is refused and the configured one differs, the configured one is
    /// tried too: that is how an operator recovers by pasting a new token into the config.
    async fn refresh(
        &self,
        oauth: &OAuth,
        current: &mut Option<OAuthTokens>,
    ) -> Result<SecretString, ApiError> {
        if !self.refresh_allowed {
            return Err(auth(
                "the Kounta access token needs a refresh, which only the farmsync holding the lock may do; try again once it has refreshed, or stop it",
            ));
        }
        let stored = load_tokens(&oauth.store)
            .await?
            .map(|t| t.refresh_token)
            .filter(|t| !t.expose_secret().is_empty());
        let configured = Some(oauth.configured_refresh.clone())
            .filter(|t| !t.expose_secret().is_empty())
            .filter(|c| {
                stored
                    .as_ref()
                    .is_none_or(|s| s.expose_secret() != c.expose_secret())
            });
        let candidates: Vec<SecretString> = stored.into_iter().chain(configured).collect();
        if candidates.is_empty() {
            return Err(auth("no Kounta refresh token: set kounta.refresh_token"));
        }
        let mut refusal = None;
        for refresh_token in candidates {
            self.core.add_secret(&refresh_token);
            let grant = match self.request_grant(oauth, &refresh_token).await {
                Ok(grant) => grant,
                Err(err @ ApiError::Auth { .. }) => {
                    refusal = Some(err);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let tokens = OAuthTokens {
                access_token: grant.access_token,
                refresh_token: grant.refresh_token.unwrap_or(refresh_token),
                expires_at: grant.expires_in.map(|s| now_epoch().saturating_add(s)),
            };
            self.core.add_secret(&tokens.access_token);
            self.core.add_secret(&tokens.refresh_token);
            // Durable before use: if this fails, the new token is not used.
            save_tokens(&oauth.store, &tokens).await?;
            tracing::info!(api = %Api::Kounta, "kounta.token.refreshed");
            let access = tokens.access_token.clone();
            *current = Some(tokens);
            return Ok(access);
        }
        Err(refusal.unwrap_or_else(|| auth("Kounta refused the refresh token")))
    }

    async fn request_grant(
        &self,
        oauth: &OAuth,
        refresh_token: &SecretString,
    ) -> Result<TokenGrant, ApiError> {
        let url = self.core.url(&["token"]);
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
            ("client_id", oauth.client_id.as_str()),
            ("client_secret", oauth.client_secret.expose_secret()),
        ];
        let request = Request::new(Method::POST, url, Call::Refresh, "token refresh").form(&form);
        let raw = self.core.send(&request, None).await?;
        if raw.status.is_success() {
            return token_grant(&raw.body).map_err(|e| ApiError::Decode {
                api: Api::Kounta,
                reason: e.reason,
                excerpt: e.excerpt,
            });
        }
        if matches!(raw.status.as_u16(), 400 | 401 | 403) {
            return Err(auth(format!(
                "Kounta refused the refresh token ({}: {}) — authorise farmsync again and set kounta.refresh_token (check kounta.client_id and kounta.client_secret too)",
                raw.status.as_u16(),
                self.core.explanation(&raw)
            )));
        }
        Err(self.core.unexpected(&raw))
    }
}

/// How the CRM's refusal of the credentials is worded: it names the `Authorization` scheme
/// sent and the settings to check.
fn refusal(oauth: bool) -> Refusal {
    Box::new(move |status, message| match (status, oauth) {
        (403, _) => format!(
            "Kounta denied access (403, sent Authorization: {}): {message} — check kounta.company_id and the credentials",
            if oauth { "Bearer" } else { "Basic" }
        ),
        (_, false) => format!(
            "Kounta refused the credentials ({status}, sent Authorization: Basic): {message} — check kounta.client_id and kounta.client_secret"
        ),
        (_, true) => format!(
            "Kounta refused the access token ({status}, sent Authorization: Bearer): {message} — authorise farmsync again and set kounta.refresh_token"
        ),
    })
}

/// An `Auth` error of the CRM.
fn auth(message: impl Into<String>) -> ApiError {
    ApiError::Auth {
        api: Api::Kounta,
        message: message.into(),
    }
}

/// Whether an answer says the access token is no good (401, or a 400 saying so).
fn token_refused(raw: &Raw) -> bool {
    raw.status == StatusCode::UNAUTHORIZED
        || (raw.status == StatusCode::BAD_REQUEST && decode::says_token_invalid(&raw.body))
}

fn bearer(token: &SecretString) -> Result<HeaderValue, ApiError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        .map_err(|_| auth("Kounta issued an access token that cannot be sent in a header"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Token store calls are blocking (SQLite): run them off the async workers.
async fn load_tokens(store: &Arc<dyn TokenStore>) -> Result<Option<OAuthTokens>, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.load())
        .await
        .map_err(|e| ApiError::TokenStore {
            message: format!("token load did not finish: {e}"),
        })?
        .map_err(|e| ApiError::TokenStore { message: e.message })
}

async fn save_tokens(store: &Arc<dyn TokenStore>, tokens: &OAuthTokens) -> Result<(), ApiError> {
    let store = store.clone();
    let tokens = tokens.clone();
    tokio::task::spawn_blocking(move || store.save(&tokens))
        .await
        .map_err(|e| ApiError::TokenStore {
            message: format!("token save did not finish: {e}"),
        })?
        .map_err(|e| ApiError::TokenStore { message: e.message })
}

// ---------------------------------------------------------------------------------------------
// Webhook registrations (`farmsync webhooks register|list|remove`)

/// One webhook registration as the CRM lists it.
#[derive(Clone, PartialEq, Eq)]
pub struct KountaWebhook {
    /// The registration's id (for `DELETE …/webhooks/{id}`).
    pub id: i64,
    /// E.g. `customers/updated`.
    pub topic: String,
    /// Where deliveries are posted.
    pub address: String,
    /// The custom headers sent with every delivery, when the CRM shows them.
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

impl fmt::Debug for KountaWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values carry the shared secret.
        let names: Option<Vec<&String>> = self.headers.as_ref().map(|h| h.keys().collect());
        f.debug_struct("KountaWebhook")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("address", &self.address)
            .field("header_names", &names)
            .finish()
    }
}

impl KountaWebhook {
    /// The value of a custom header (case-insensitive name), when the CRM shows headers.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref().and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        })
    }
}

impl KountaClient {
    /// Every webhook registration of the company (`GET /companies/{cid}/webhooks`).
    pub async fn webhooks(&self) -> Result<Vec<KountaWebhook>, ApiError> {
        let cid = self.company_id().await?;
        let raw = self
            .send(&Request::read(self.webhooks_url(cid), "webhook list"))
            .await?;
        self.core.expect_success(&raw, format!("company {cid}"))?;
        if raw.status == StatusCode::NO_CONTENT || raw.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        decode_webhooks(&raw.body).map_err(|e| self.core.decode_error(e, &raw.body))
    }

    /// Registers a webhook for `topic` at `address`, sending `secret_header: secret` with every
    /// delivery (`POST /companies/{cid}/webhooks`). Returns the registration.
    ///
    /// Like a customer create, a registration whose answer was lost is never resent: the
    /// caller lists again to find out (`webhooks register` is idempotent for that reason).
    pub async fn register_webhook(
        &self,
        topic: &str,
        address: &Url,
        secret_header: &str,
        secret: &SecretString,
    ) -> Result<KountaWebhook, ApiError> {
        let operation = "webhook registration";
        self.core.add_secret(secret);
        let cid = self.company_id().await?;
        let body = serde_json::json!({
            "topic": topic,
            "address": address.as_str(),
            "format": "json",
            "headers": { secret_header: secret.expose_secret() },
        });
        let request = Request::new(
            Method::POST,
            self.webhooks_url(cid),
            Call::Create,
            operation,
        );
        let raw = self.send(&request.json(&body)).await?;
        self.core
            .expect_created(&raw, operation, format!("company {cid}"))?;
        if let Ok(mut one) = decode_webhooks(&raw.body)
            && one.len() == 1
        {
            return Ok(one.remove(0));
        }
        // Tolerated: an empty body, the new registration named by `Location`.
        let id = raw
            .header(LOCATION.as_str())
            .and_then(|l| l.trim_end_matches('/').rsplit('/').next())
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|id| *id > 0);
        match id {
            Some(id) => Ok(KountaWebhook {
                id,
                topic: topic.to_owned(),
                address: address.to_string(),
                headers: None,
            }),
            None => Err(self.core.outcome_unknown(
                operation,
                format!(
                    "answered {} without naming the new registration",
                    raw.status.as_u16()
                ),
            )),
        }
    }

    /// Removes a webhook registration (`DELETE …/webhooks/{id}`); `false` when it was not there.
    pub async fn remove_webhook(&self, id: i64) -> Result<bool, ApiError> {
        let url = self.company_url(&["webhooks", &id.to_string()]).await?;
        let operation = "webhook removal";
        let raw = self
            .send(&Request::new(
                Method::DELETE,
                url,
                Call::IdempotentWrite,
                operation,
            ))
            .await?;
        self.core.found(&raw, format!("webhook {id}"))
    }

    fn webhooks_url(&self, cid: i64) -> Url {
        self.core.url(&["companies", &cid.to_string(), "webhooks"])
    }
}

/// Webhook registrations from a list answer (an array, or `{"webhooks": [...]}`) or from a
/// registration answer (one object).
fn decode_webhooks(body: &[u8]) -> Result<Vec<KountaWebhook>, DecodeError> {
    use serde_json::Value;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("not JSON ({e})"), body))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut obj) => match obj.remove("webhooks") {
            Some(Value::Array(items)) => items,
            Some(other) => vec![other],
            None => vec![Value::Object(obj)],
        },
        _ => {
            return Err(DecodeError::new("expected a list of webhooks", body));
        }
    };
    items
        .iter()
        .map(|item| webhook_value(item).map_err(|e| DecodeError::new(e, body)))
        .collect()
}

fn webhook_value(value: &serde_json::Value) -> Result<KountaWebhook, String> {
    use crate::http::lenient;
    let obj = value
        .as_object()
        .ok_or_else(|| "expected a webhook object".to_owned())?;
    let id = lenient::id(obj.get("id"))
        .or_else(|e| match obj.get("id_str") {
            Some(v) if !v.is_null() => lenient::id(Some(v)),
            _ => Err(e),
        })
        .map_err(|e| format!("webhook id {e}"))?;
    let text =
        |key: &str| lenient::text(obj.get(key)).map_err(|e| format!("webhook {id}: {key:?} {e}"));
    let headers = match obj.get("headers") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(h)) => Some(
            h.iter()
                .map(|(k, v)| Ok((k.clone(), lenient::text(Some(v))?)))
                .collect::<Result<_, String>>()
                .map_err(|e| format!("webhook {id}: a header {e}"))?,
        ),
        Some(_) => return Err(format!("webhook {id}: \"headers\" is not an object")),
    };
    Ok(KountaWebhook {
        id,
        topic: text("topic")?,
        address: text("address")?,
        headers,
    })
}

impl KountaClient {
    /// One read exactly as the CRM answers it, any status (for `farmsync check --capture`):
    /// `GET {base}/{segments}?{query}`, with the client's authentication and rate. Returns the
    /// URL asked for and the answer.
    pub(crate) async fn read_raw(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        operation: &str,
    ) -> Result<(Url, Raw), ApiError> {
        let mut url = self.core.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let raw = self.send(&Request::read(url.clone(), operation)).await?;
        Ok((url, raw))
    }
}

#[cfg(test)]
mod webhook_decode_tests {
    use super::*;

    #[test]
    fn lists_decode_in_both_shapes_and_tolerate_string_ids_and_missing_headers() {
        let body = br#"[{"id": 3, "topic": "customers/created", "address": "http://h/x",
                         "format": "json", "headers": {"X-Farmsync-Secret": "s"}},
                        {"id_str": "4", "topic": "customers/updated", "address": "http://h/y"}]"#;
        let hooks = decode_webhooks(body).unwrap();
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].id, 3);
        assert_eq!(hooks[0].header("x-farmsync-secret"), Some("s"));
        assert_eq!(hooks[1].id, 4);
        assert_eq!(hooks[1].headers, None);
        let wrapped =
            br#"{"webhooks": [{"id": "9", "topic": "customers/deleted", "address": "a"}]}"#;
        assert_eq!(decode_webhooks(wrapped).unwrap()[0].id, 9);
        assert!(decode_webhooks(b"[{\"topic\": \"x\"}]").is_err());
        assert!(decode_webhooks(b"<html>").is_err());
    }

    #[test]
    fn debug_never_shows_header_values() {
        let hook = KountaWebhook {
            id: 1,
            topic: "customers/created".into(),
            address: "http://h/x".into(),
            headers: Some([("X-Farmsync-Secret".to_owned(), "hush-hush".to_owned())].into()),
        };
        let shown = format!("{hook:?}");
        assert!(shown.contains("X-Farmsync-Secret"));
        assert!(!shown.contains("hush-hush"));
    }
}
