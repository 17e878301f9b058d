//! `farmsync check --capture DIR`: saves what each read endpoint of both APIs really answers
//! (status, headers, body) into DIR, with people and secrets replaced by placeholders, so a
//! user can check farmsync's assumptions (the API contracts beside DESIGN.md) against a live
//! account and share the files.
//!
//! Sends reads only (each client's `read_raw`, through the same request path, rate and
//! credentials as a sync) and plans nothing; besides the files in DIR it writes only what any
//! command must (a rotated OAuth token, under the lock).
//!
//! What is replaced, everywhere (bodies, headers, the request's query):
//! - secrets: every credential in the config, and any field or header whose name says token,
//!   secret, password, key or authorization → `[secret]`;
//! - emails → `personN@example.invalid`; phones → the same shape with other digits
//!   (`02 8765 4321` → `00 0000 0002`); names (first, last, company and other `name` fields) →
//!   `Name N`; street address lines → `Street N` (line breaks kept); free text (notes,
//!   instructions, comments) → `[free text, N characters]`.
//!
//! The same value always gets the same placeholder, in every file, so what the assumptions are
//! about — the same customer in the list and in its read, an email spelt in two cases, a phone
//! formatted two ways — still shows. Ids, dates, cities, states, postal codes, countries, tags
//! and flags are kept as they are.

use std::collections::BTreeMap;
use std::path::Path;

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::config::{Needs, Settings};
use crate::exit::{CliError, Exit};
use crate::farmflow::client::FarmflowClient;
use crate::http::{Api, ApiError, Raw, RetryPolicy};
use crate::kounta::client::KountaClient;
use crate::sync::engine;

/// One endpoint's answer, before scrubbing.
struct Captured {
    /// The file name, without `.json`.
    name: &'static str,
    api: Api,
    /// The endpoint, as `shared/api` names it.
    endpoint: &'static str,
    method: &'static str,
    url: Option<url::Url>,
    request_body: Option<Value>,
    answer: Result<Raw, ApiError>,
}

/// `farmsync check --capture DIR`. Exit 0 when every endpoint answered (whatever its status),
/// 4 when one could not be reached; the files are written either way.
pub fn run(settings: &Settings, dir: &Path) -> Result<Exit, CliError> {
    settings.require_credentials(Needs::BothApis)?;
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::new(
            Exit::Config,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let rt = crate::commands::runtime()?;
    let (tokens, lock) = crate::commands::oauth_tokens(settings, &rt)?;
    let ledger = crate::commands::command_ledger(settings);
    let kounta = KountaClient::new(engine::kounta_options(settings), tokens)
        .map_err(|e| CliError::new(Exit::Config, e.to_string()))?
        .with_retry_policy(RetryPolicy::none())
        .with_rate_limiter(engine::rate_limiter(
            Api::Kounta,
            settings.kounta.requests_per_minute,
            ledger.as_ref(),
        ));
    let kounta = crate::commands::beside_the_lock_holder(settings, &lock, kounta);
    let farmflow = FarmflowClient::new(engine::farmflow_options(settings))
        .map_err(|e| CliError::new(Exit::Config, e.to_string()))?
        .with_retry_policy(RetryPolicy::none())
        .with_rate_limiter(engine::rate_limiter(
            Api::Farmflow,
            settings.farmflow.requests_per_minute,
            ledger.as_ref(),
        ));

    let captured = rt.block_on(async {
        let mut all = capture_kounta(&kounta).await;
        all.extend(capture_farmflow(&farmflow).await);
        kounta.limiter().release().await;
        farmflow.limiter().release().await;
        all
    });

    let mut scrubber = Scrubber::new(settings);
    let mut files: Vec<(String, Value)> = captured
        .iter()
        .map(|c| (format!("{}.json", c.name), scrubber.file(c)))
        .collect();
    // Names and contacts seen in one file are replaced wherever else they turn up.
    for (_, file) in &mut files {
        scrubber.known_values(file);
    }
    let mut failed = false;
    let mut index = Vec::new();
    for ((name, file), c) in files.iter().zip(&captured) {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(file).unwrap_or_default();
        std::fs::write(&path, text + "\n").map_err(|e| {
            CliError::new(
                Exit::Unavailable,
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
        let outcome = match &c.answer {
            Ok(raw) => raw.status.as_u16().to_string(),
            Err(_) => {
                failed = true;
                "FAILED".to_owned()
            }
        };
        println!("{name}: {} {} → {outcome}", c.method, c.endpoint);
        index.push(json!({"file": name, "endpoint": format!("{} {}", c.method, c.endpoint), "status": file.get("status"), "error": file.get("error")}));
    }
    let summary = json!({
        "farmsync": env!("CARGO_PKG_VERSION"),
        "captured_at": chrono::Utc::now().to_rfc3339(),
        "kounta_base_url": base_url(&settings.kounta.base_url),
        "farmflow_base_url": base_url(&settings.farmflow.base_url),
        "files": index,
        "replaced": scrubber.counts,
        "note": "secrets, emails, phones, names, street address lines and free text are replaced by placeholders; the same value has the same placeholder in every file. Look the files over before sharing them.",
    });
    let path = dir.join("index.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n",
    )
    .map_err(|e| {
        CliError::new(
            Exit::Unavailable,
            format!("cannot write {}: {e}", path.display()),
        )
    })?;
    println!(
        "wrote {} files to {}: emails, phones, names, street addresses, free text and secrets are replaced by placeholders — look them over before you share them",
        files.len() + 1,
        dir.display()
    );
    Ok(if failed { Exit::Unavailable } else { Exit::Ok })
}

/// A base URL without credentials, query or fragment.
fn base_url(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

async fn capture_kounta(client: &KountaClient) -> Vec<Captured> {
    let mut out = Vec::new();
    let get = |name, endpoint, answer: Result<(url::Url, Raw), ApiError>| {
        let (url, answer) = match answer {
            Ok((url, raw)) => (Some(url), Ok(raw)),
            Err(e) => (None, Err(e)),
        };
        Captured {
            name,
            api: Api::Kounta,
            endpoint,
            method: "GET",
            url,
            request_body: None,
            answer,
        }
    };
    out.push(get(
        "kounta-companies-me",
        "/companies/me",
        client
            .read_raw(&["companies", "me"], &[], "company lookup")
            .await,
    ));
    let cid = match client.company_id().await {
        Ok(cid) => cid.to_string(),
        // Without a company nothing else can be read; the first file says why.
        Err(_) => return out,
    };
    let page = client
        .read_raw(&["companies", &cid, "customers"], &[], "customer list")
        .await;
    let first_id = page
        .as_ref()
        .ok()
        .and_then(|(_, raw)| serde_json::from_slice::<Value>(&raw.body).ok())
        .and_then(|v| v.as_array()?.first()?.get("id").map(id_text));
    out.push(get(
        "kounta-customers-page-1",
        "/companies/{cid}/customers",
        page,
    ));
    let Some(id) = first_id else {
        return out;
    };
    let record = client
        .read_raw(&["companies", &cid, "customers", &id], &[], "customer read")
        .await;
    let full: Option<Value> = record
        .as_ref()
        .ok()
        .and_then(|(_, raw)| serde_json::from_slice(&raw.body).ok());
    out.push(get(
        "kounta-customer",
        "/companies/{cid}/customers/{id}",
        record,
    ));
    let field = |key: &str| {
        full.as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let reference = field("reference_id").unwrap_or_else(|| "farmflow:0".to_owned());
    out.push(get(
        "kounta-lookup-by-reference",
        "/companies/{cid}/customers?reference_id=",
        client
            .read_raw(
                &["companies", &cid, "customers"],
                &[("reference_id", &reference)],
                "customer lookup",
            )
            .await,
    ));
    if let Some(email) = field("email") {
        out.push(get(
            "kounta-lookup-by-email",
            "/companies/{cid}/customers?email=",
            client
                .read_raw(
                    &["companies", &cid, "customers"],
                    &[("email", &email)],
                    "customer lookup",
                )
                .await,
        ));
    }
    out.push(get(
        "kounta-webhooks",
        "/companies/{cid}/webhooks",
        client
            .read_raw(&["companies", &cid, "webhooks"], &[], "webhook list")
            .await,
    ));
    out
}

async fn capture_farmflow(client: &FarmflowClient) -> Vec<Captured> {
    let captured =
        |name, endpoint, method, request_body, answer: Result<(url::Url, Raw), ApiError>| {
            let (url, answer) = match answer {
                Ok((url, raw)) => (Some(url), Ok(raw)),
                Err(e) => (None, Err(e)),
            };
            Captured {
                name,
                api: Api::Farmflow,
                endpoint,
                method,
                url,
                request_body,
                answer,
            }
        };
    let mut out = Vec::new();
    let list = client
        .read_raw("customers-get", None, "customer list")
        .await;
    let first_id = list
        .as_ref()
        .ok()
        .and_then(|(_, raw)| serde_json::from_slice::<Value>(&raw.body).ok())
        .and_then(|v| {
            let items = match &v {
                Value::Array(_) => v.clone(),
                Value::Object(o) => o
                    .get("data")
                    .or_else(|| o.get("customers"))
                    .cloned()
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            };
            items.as_array()?.first()?.get("id").map(id_text)
        });
    out.push(captured(
        "farmflow-customers-get",
        "/customers-get",
        "GET",
        None,
        list,
    ));
    if let Some(id) = first_id {
        let body = json!({ "id": id });
        let answer = client
            .read_raw("customer-get", Some(&body), "customer read")
            .await;
        out.push(captured(
            "farmflow-customer-get",
            "/customer-get",
            "POST",
            Some(body),
            answer,
        ));
    }
    for (name, action, endpoint) in [
        (
            "farmflow-recurring-orders-get",
            "recurring-orders-get",
            "/recurring-orders-get",
        ),
        (
            "farmflow-one-time-orders-get",
            "one-time-orders-get",
            "/one-time-orders-get",
        ),
    ] {
        let answer = client.read_raw(action, None, "order list").await;
        out.push(captured(name, endpoint, "GET", None, answer));
    }
    out
}

/// An id as text, whether the API sent a number or a string.
fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What kind of value a field holds, judged by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Secret,
    Email,
    Phone,
    Name,
    Street,
    FreeText,
    Other,
}

fn field_kind(key: &str) -> FieldKind {
    let k: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    let has = |w: &str| k.contains(w);
    if has("secret")
        || has("token")
        || has("password")
        || has("apikey")
        || k == "key"
        || has("authorization")
        || has("signature")
        || has("cookie")
    {
        FieldKind::Secret
    } else if has("email") {
        FieldKind::Email
    } else if has("phone") || has("mobile") || k == "fax" || k == "tel" || k == "cell" {
        FieldKind::Phone
    } else if has("name") || k == "company" {
        FieldKind::Name
    } else if matches!(
        k.as_str(),
        "address" | "address1" | "address2" | "line1" | "line2" | "lines" | "street"
    ) {
        FieldKind::Street
    } else if matches!(
        k.as_str(),
        "notes" | "note" | "instructions" | "comment" | "comments" | "description"
    ) {
        FieldKind::FreeText
    } else {
        FieldKind::Other
    }
}

/// Replaces people and secrets by placeholders, the same value by the same placeholder.
struct Scrubber {
    secrets: Vec<String>,
    emails: BTreeMap<String, String>,
    phones: BTreeMap<String, usize>,
    names: BTreeMap<String, usize>,
    streets: BTreeMap<String, usize>,
    /// Original values seen, longest first at use: replaced wherever else they appear.
    seen: Vec<(String, String)>,
    counts: BTreeMap<&'static str, u64>,
}

impl Scrubber {
    fn new(settings: &Settings) -> Scrubber {
        let mut secrets: Vec<String> = [
            settings.kounta.client_secret.expose_secret(),
            settings.kounta.refresh_token.expose_secret(),
            settings.farmflow.api_key.expose_secret(),
            settings.webhooks.signature_token.expose_secret(),
            settings.webhooks.shared_secret.expose_secret(),
            settings.kounta.client_id.as_str(),
        ]
        .into_iter()
        .map(str::to_owned)
        .filter(|s| s.trim().len() >= 4)
        .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Scrubber {
            secrets,
            emails: BTreeMap::new(),
            phones: BTreeMap::new(),
            names: BTreeMap::new(),
            streets: BTreeMap::new(),
            seen: Vec::new(),
            counts: BTreeMap::new(),
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    /// One endpoint's file: the request, and the answer with every field scrubbed.
    fn file(&mut self, c: &Captured) -> Value {
        let api = match c.api {
            Api::Kounta => "kounta",
            Api::Farmflow => "farmflow",
        };
        let mut request = json!({ "method": c.method });
        if let Some(url) = &c.url {
            request["path"] = Value::String(url.path().to_owned());
            let query: BTreeMap<String, String> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = self.field(&k, &v);
                    (k.into_owned(), v)
                })
                .collect();
            if !query.is_empty() {
                request["query"] = json!(query);
            }
        }
        if let Some(body) = &c.request_body {
            let mut body = body.clone();
            self.walk(&mut body, "");
            request["body"] = body;
        }
        let mut file = json!({
            "api": api,
            "endpoint": format!("{} {}", c.method, c.endpoint),
            "request": request,
        });
        match &c.answer {
            Err(e) => file["error"] = Value::String(self.text(&e.to_string())),
            Ok(raw) => {
                file["status"] = json!(raw.status.as_u16());
                let headers: Vec<Value> = raw
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
                        let value = match field_kind(name.as_str()) {
                            FieldKind::Secret if !text.is_empty() => {
                                self.count("secrets");
                                "[secret]".to_owned()
                            }
                            _ => self.text(&text),
                        };
                        json!([name.as_str(), value])
                    })
                    .collect();
                file["headers"] = Value::Array(headers);
                match serde_json::from_slice::<Value>(&raw.body) {
                    Ok(mut body) => {
                        self.walk(&mut body, "");
                        file["body"] = body;
                    }
                    Err(_) => {
                        let body = String::from_utf8_lossy(&raw.body).into_owned();
                        file["body_text"] = Value::String(self.text(&body));
                    }
                }
            }
        }
        file
    }

    /// Scrubs every string in `value`; `key` is the field holding it.
    fn walk(&mut self, value: &mut Value, key: &str) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.walk(v, k);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, key);
                }
            }
            Value::String(s) => *s = self.field(key, s),
            // Numbers can be phones too (an API that sends them bare).
            Value::Number(n) if field_kind(key) == FieldKind::Phone => {
                *value = Value::String(self.phone(&n.to_string()));
            }
            _ => {}
        }
    }

    /// The scrubbed value of field `key`.
    fn field(&mut self, key: &str, value: &str) -> String {
        if value.trim().is_empty() {
            return value.to_owned();
        }
        let is_url = value.starts_with("http://") || value.starts_with("https://");
        match field_kind(key) {
            FieldKind::Secret => {
                self.count("secrets");
                "[secret]".to_owned()
            }
            FieldKind::Email => self.text(value),
            FieldKind::Phone => self.phone(value),
            FieldKind::Name if !is_url => self.name(value),
            FieldKind::Street if !is_url => value
                .split('\n')
                .map(|line| self.street(line))
                .collect::<Vec<_>>()
                .join("\n"),
            FieldKind::FreeText => {
                self.count("free_text");
                format!("[free text, {} characters]", value.chars().count())
            }
            _ => self.text(value),
        }
    }

    fn email(&mut self, email: &str) -> String {
        let key = email.to_lowercase();
        let n = self.emails.len() + 1;
        let placeholder = self
            .emails
            .entry(key)
            .or_insert_with(|| format!("person{n}@example.invalid"))
            .clone();
        self.count("emails");
        self.seen.push((email.to_owned(), placeholder.clone()));
        placeholder
    }

    fn phone(&mut self, phone: &str) -> String {
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return self.text(phone);
        }
        let next = self.phones.len() + 1;
        let n = *self.phones.entry(digits.clone()).or_insert(next);
        // The same shape, other digits: the number's index, right-aligned, zeros before it.
        let fill = format!("{n:0>width$}", width = digits.len());
        let fill: Vec<char> = fill.chars().rev().take(digits.len()).collect();
        let mut fill = fill.into_iter().rev();
        let placeholder: String = phone
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    fill.next().unwrap_or('0')
                } else {
                    c
                }
            })
            .collect();
        self.count("phones");
        self.seen.push((phone.to_owned(), placeholder.clone()));
        if digits.len() >= 6 {
            self.seen.push((digits, placeholder.clone()));
        }
        placeholder
    }

    fn name(&mut self, name: &str) -> String {
        let key = name.trim().to_lowercase();
        let next = self.names.len() + 1;
        let n = *self.names.entry(key).or_insert(next);
        // Keep the spelling's case, which farmsync's matching folds.
        let placeholder = if name == name.to_lowercase() {
            format!("name {n}")
        } else if name == name.to_uppercase() {
            format!("NAME {n}")
        } else {
            format!("Name {n}")
        };
        self.count("names");
        self.seen
            .push((name.trim().to_owned(), placeholder.clone()));
        placeholder
    }

    fn street(&mut self, line: &str) -> String {
        if line.trim().is_empty() {
            return line.to_owned();
        }
        let next = self.streets.len() + 1;
        let n = *self
            .streets
            .entry(line.trim().to_lowercase())
            .or_insert(next);
        self.count("street_lines");
        let placeholder = format!("Street {n}");
        self.seen
            .push((line.trim().to_owned(), placeholder.clone()));
        placeholder
    }

    /// Free-standing text: secrets and emails anywhere in it are replaced.
    fn text(&mut self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in self.secrets.clone() {
            if text.contains(&secret) {
                self.count("secrets");
                text = text.replace(&secret, "[secret]");
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some((start, end)) = find_email(rest) {
            out.push_str(&rest[..start]);
            let placeholder = self.email(&rest[start..end]);
            out.push_str(&placeholder);
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }

    /// Replaces, in every string of `file`, the names, contacts and street lines seen anywhere
    /// (a name in a tag, a phone in a header), as whole words.
    fn known_values(&mut self, file: &mut Value) {
        let mut seen = self.seen.clone();
        seen.sort_by_key(|(original, _)| std::cmp::Reverse(original.len()));
        seen.dedup();
        replace_known(file, &seen);
    }
}

fn replace_known(value: &mut Value, seen: &[(String, String)]) {
    match value {
        Value::Object(map) => map.values_mut().for_each(|v| replace_known(v, seen)),
        Value::Array(items) => items.iter_mut().for_each(|v| replace_known(v, seen)),
        Value::String(s) => {
            for (original, placeholder) in seen {
                // Short names would match inside other words and ids; placeholders never do.
                if original.chars().count() >= 3 && s != placeholder {
                    *s = replace_words(s, original, placeholder);
                }
            }
        }
        _ => {}
    }
}

/// `text` with every whole-word, case-insensitive occurrence of `word` replaced.
fn replace_words(text: &str, word: &str, with: &str) -> String {
    let lower = text.to_lowercase();
    let needle = word.to_lowercase();
    // Lower-casing may change byte lengths outside ASCII: then leave the text alone.
    if lower.len() != text.len() || needle.is_empty() {
        return text.to_owned();
    }
    let bytes = lower.as_bytes();
    let boundary = |i: usize| i == 0 || i >= bytes.len() || !bytes[i].is_ascii_alphanumeric();
    let mut out = String::new();
    let mut last = 0;
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&needle) {
        let start = from + pos;
        let end = start + needle.len();
        let starts_word = start == 0 || boundary(start - 1);
        if starts_word
            && boundary(end)
            && text.is_char_boundary(start)
            && text.is_char_boundary(end)
        {
            out.push_str(&text[last..start]);
            out.push_str(with);
            last = end;
        }
        from = end.max(start + 1);
        while from < lower.len() && !lower.is_char_boundary(from) {
            from += 1;
        }
        if from >= lower.len() {
            break;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// The byte range of the first email address in `text`.
fn find_email(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-'".contains(&b);
    let domain = |b: u8| b.is_ascii_alphanumeric() || b".-".contains(&b);
    let mut search = 0;
    while let Some(at) = text[search..].find('@').map(|i| search + i) {
        let mut start = at;
        while start > 0 && local(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && domain(bytes[end]) {
            end += 1;
        }
        // Trailing dots belong to the sentence, not the address.
        while end > at + 1 && bytes[end - 1] == b'.' {
            end -= 1;
        }
        if start < at && text[at + 1..end].contains('.') {
            return Some((start, end));
        }
        search = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        let settings = Settings::builder()
            .env_vars([
                (
                    "FARMSYNC__FARMFLOW__API_KEY".to_owned(),
                    "ff-key-123".to_owned(),
                ),
                (
                    "FARMSYNC__KOUNTA__CLIENT_SECRET".to_owned(),
                    "k-secret-9".to_owned(),
                ),
            ])
            .build()
            .unwrap();
        Scrubber::new(&settings)
    }

    #[test]
    fn people_and_secrets_become_stable_placeholders_and_the_rest_stays() {
        let mut s = scrubber();
        let mut v = json!({
            "id": 389427,
            "first_name": "Jamie",
            "lastname": "MCDONALD",
            "email": "Jamie@Example.com",
            "phone": "02 8765 4321",
            "mobile": "+61 412 345 678",
            "primary_address": {"address": "44 Mutton Street\nSuite 5", "city": "Beeftown", "postal_code": "2112", "country": "AU"},
            "notes": "Call Jamie on 0412 345 678",
            "tags": ["Newsletter"],
            "headers": {"X-Farmsync-Secret": "hush"},
            "error_description": "key ff-key-123 refused",
            "updated_at": "2026-11-25T10:00:00+10:00"
        });
        s.walk(&mut v, "");
        let mut again =
            json!({"email": "jamie@example.com", "phone": "0287654321", "firstname": "jamie"});
        s.walk(&mut again, "");
        assert_eq!(v["id"], 389427);
        assert_eq!(v["first_name"], "Name 1");
        assert_eq!(v["lastname"], "NAME 2");
        assert_eq!(v["email"], "person1@example.invalid");
        assert_eq!(again["email"], "person1@example.invalid");
        assert_eq!(v["phone"], "00 0000 0002");
        assert_eq!(again["phone"], "0000000002");
        assert_eq!(again["firstname"], "name 1");
        assert_eq!(v["mobile"], "+00 000 000 001");
        assert_eq!(v["primary_address"]["address"], "Street 1\nStreet 2");
        assert_eq!(v["primary_address"]["city"], "Beeftown");
        assert_eq!(v["primary_address"]["postal_code"], "2112");
        assert_eq!(v["notes"], "[free text, 26 characters]");
        assert_eq!(v["tags"][0], "Newsletter");
        assert_eq!(v["headers"]["X-Farmsync-Secret"], "[secret]");
        assert_eq!(v["error_description"], "key [secret] refused");
        assert_eq!(v["updated_at"], "2026-11-25T10:00:00+10:00");
    }

    #[test]
    fn names_seen_in_fields_are_replaced_elsewhere_as_whole_words_only() {
        let mut s = scrubber();
        let mut v = json!({"first_name": "Chen", "tags": ["Chen VIP", "kitchen"], "message": "write to a.b@c.example."});
        s.walk(&mut v, "");
        s.known_values(&mut v);
        assert_eq!(v["tags"][0], "Name 1 VIP");
        assert_eq!(v["tags"][1], "kitchen");
        assert_eq!(v["message"], "write to person1@example.invalid.");
    }
}
