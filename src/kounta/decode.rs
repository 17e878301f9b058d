//! Pure decoders of the CRM's answers: bytes in, a wire model or a [`DecodeError`] out.
//!
//! They accept every variant `api/kounta.md` says to tolerate (legacy `lines`/`zone` address,
//! `primary_email_address`, `id_str`, ids as strings, `null`s, missing and unknown fields) and
//! never panic, whatever the bytes.

use serde_json::{Map, Value};

use crate::http::DecodeError;
use crate::http::lenient::{self, Record, kind};
use crate::ids::KountaId;
use crate::kounta::model::{KountaAddress, KountaCustomer, KountaListItem};

/// The explanation in an error body (`{"error","error_description"}`, `{"error_message"}`,
/// `{"message"}`), or `None` for a body that is not JSON (a proxy's HTML page).
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    lenient::error_message(&value)
}

/// Whether an error body says the access token expired or is invalid (a 400 saying so is
/// treated like a 401: refresh and try once more).
pub fn says_token_invalid(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let Some(obj) = value.as_object() else {
        return false;
    };
    let field = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let code = field("error");
    if matches!(code.as_str(), "invalid_token" | "expired_token") {
        return true;
    }
    ["error_description", "error_message", "message", "error"]
        .iter()
        .map(|k| field(k))
        .any(|text| {
            text.contains("token") && (text.contains("expired") || text.contains("invalid"))
        })
}

/// One full customer record.
pub fn customer(body: &[u8]) -> Result<KountaCustomer, DecodeError> {
    let value = parse(body)?;
    let value = unwrap_single(value, &["customer", "data"]);
    customer_value(&value).map_err(|reason| DecodeError::new(reason, body))
}

/// One page of the customer list (abbreviated items). One unreadable item fails the page: a
/// silently dropped item would look like a deleted customer.
pub fn list_page(body: &[u8]) -> Result<Vec<KountaListItem>, DecodeError> {
    let value = parse(body)?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut obj) => match ["customers", "data"].iter().find_map(|k| obj.remove(*k)) {
            Some(Value::Array(items)) => items,
            // A null page is unreadable, not empty: read as the end of the listing, it would
            // make a cut listing look complete.
            _ => return Err(DecodeError::new("expected a list of customers", body)),
        },
        _ => return Err(DecodeError::new("expected a list of customers", body)),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| list_item_value(item).map_err(|e| format!("item {i}: {e}")))
        .collect::<Result<_, _>>()
        .map_err(|reason| DecodeError::new(reason, body))
}

/// The company id in `GET /companies/me`.
pub fn company_id(body: &[u8]) -> Result<i64, DecodeError> {
    let value = parse(body)?;
    let value = unwrap_single(value, &["company", "data"]);
    let obj = value
        .as_object()
        .ok_or_else(|| DecodeError::new("expected a company object", body))?;
    record_id(obj).map_err(|reason| DecodeError::new(format!("company id {reason}"), body))
}

/// The customer id named by a `Location` header (absolute or relative URL, perhaps with a
/// `.json` suffix, query or trailing slash), or `None` when it names none.
pub fn location_id(location: &str) -> Option<KountaId> {
    let path = location.split(['?', '#']).next().unwrap_or_default().trim();
    let segments: Vec<&str> = path.split('/').collect();
    // The id follows the last `customers` segment; without one, it is the last segment.
    let segment = match segments.iter().rposition(|s| *s == "customers") {
        Some(i) => *segments.get(i + 1)?,
        None => *segments.iter().rev().find(|s| !s.is_empty())?,
    };
    let digits = segment.strip_suffix(".json").unwrap_or(segment);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .map(KountaId)
}

/// A customer from an already parsed value.
pub(crate) fn customer_value(value: &Value) -> Result<KountaCustomer, String> {
    let record = Record::new(value, "customer", record_id)?;
    let (obj, id) = (record.obj, record.id);
    let text = |key: &str| record.text(key);
    let tags = tags(obj.get("tags")).map_err(|e| format!("customer {id}: \"tags\" {e}"))?;
    let primary_address = match obj.get("primary_address") {
        None | Some(Value::Null) => None,
        Some(Value::Object(addr)) => {
            Some(address(addr).map_err(|e| format!("customer {id}: primary_address {e}"))?)
        }
        Some(other) => {
            return Err(format!(
                "customer {id}: primary_address is {}, not an object",
                kind(other)
            ));
        }
    };
    Ok(KountaCustomer {
        id: KountaId(id),
        first_name: text("first_name")?,
        last_name: text("last_name")?,
        email: email(&record)?,
        phone: text("phone")?,
        mobile: text("mobile")?,
        reference_id: text("reference_id")?,
        tags,
        primary_address,
    })
}

fn list_item_value(value: &Value) -> Result<KountaListItem, String> {
    let record = Record::new(value, "customer", record_id)?;
    Ok(KountaListItem {
        id: KountaId(record.id),
        first_name: record.text("first_name")?,
        last_name: record.text("last_name")?,
        email: email(&record)?,
    })
}

/// `email`, else the older `primary_email_address`.
fn email(record: &Record) -> Result<String, String> {
    lenient::first_text(record.obj, &["email", "primary_email_address"])
        .map_err(|e| format!("customer {}: {e}", record.id))
}

/// `id`, falling back to `id_str` when `id` is missing, `null` or unreadable.
fn record_id(obj: &Map<String, Value>) -> Result<i64, String> {
    match lenient::id(obj.get("id")) {
        Ok(id) => Ok(id),
        Err(e) => match obj.get("id_str") {
            Some(v) if !v.is_null() => lenient::id(Some(v)),
            _ => Err(e),
        },
    }
}

fn address(obj: &Map<String, Value>) -> Result<KountaAddress, String> {
    let text = |key: &str| lenient::text(obj.get(key)).map_err(|e| format!("{key:?} {e}"));
    let mut street = text("address")?;
    if street.is_empty() {
        // The legacy shape lists street lines instead.
        street = match obj.get("lines") {
            None | Some(Value::Null) => String::new(),
            Some(Value::Array(lines)) => lines
                .iter()
                .map(|l| lenient::text(Some(l)).map_err(|e| format!("\"lines\" item {e}")))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\n"),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("\"lines\" is {}", kind(other))),
        };
    }
    Ok(KountaAddress {
        address: street,
        city: text("city")?,
        state: lenient::first_text(obj, &["state", "zone"])?,
        postal_code: lenient::first_text(obj, &["postal_code", "postcode"])?,
        country: text("country")?,
    })
}

fn tags(value: Option<&Value>) -> Result<Vec<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| lenient::text(Some(v)))
            .collect(),
        // A comma-separated string is how some older integrations spell tags.
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(other) => Err(format!("is {}", kind(other))),
    }
}

/// Unwraps `{"customer": {...}}`-style wrappers some proxies add; a bare record stays as is.
fn unwrap_single(value: Value, keys: &[&str]) -> Value {
    if let Value::Object(obj) = &value
        && !obj.contains_key("id")
        && !obj.contains_key("id_str")
    {
        for key in keys {
            if let Some(inner @ Value::Object(_)) = obj.get(*key) {
                return inner.clone();
            }
        }
    }
    value
}

fn parse(body: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(body).map_err(|e| {
        let reason = if body.iter().all(u8::is_ascii_whitespace) {
            "empty body".to_owned()
        } else {
            format!("not JSON ({e})")
        };
        DecodeError::new(reason, body)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_null_or_empty_page_is_unreadable_not_the_end_of_the_listing() {
        for body in [
            &b""[..],
            b"null",
            br#"{"customers":null}"#,
            br#"{"data":null}"#,
            b"{}",
        ] {
            assert!(
                super::list_page(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(super::list_page(b"[]").unwrap(), vec![]);
    }

    use super::*;
    use crate::http::EXCERPT_CHARS;
    use proptest::prelude::*;

    const DOC_RECORD: &str = r#"{
      "id": 389427, "first_name": "Jamie", "last_name": "McDonald",
      "email": "jamie@example.com", "phone": "02 8765 4321", "mobile": "0412 345 678",
      "reference_id": "", "tags": ["Newsletter"], "image": null, "accepts_marketing": true,
      "primary_address": {"address": "44 Mutton Street\nSuite 5", "city": "Beeftown",
                          "state": "NSW", "postal_code": "2112", "country": "AU"},
      "shipping_address": null,
      "created_at": "2026-11-25T10:00:00+10:00", "updated_at": "2026-11-25T10:00:00+10:00"
    }"#;

    #[test]
    fn decodes_the_documented_record() {
        let c = customer(DOC_RECORD.as_bytes()).unwrap();
        assert_eq!(c.id, KountaId(389427));
        assert_eq!(c.first_name, "Jamie");
        assert_eq!(c.email, "jamie@example.com");
        assert_eq!(c.mobile, "0412 345 678");
        assert_eq!(c.tags, vec!["Newsletter".to_owned()]);
        let a = c.primary_address.unwrap();
        assert_eq!(a.address, "44 Mutton Street\nSuite 5");
        assert_eq!(a.state, "NSW");
        assert_eq!(a.postal_code, "2112");
        assert_eq!(a.country, "AU");
    }

    #[test]
    fn tolerates_legacy_and_sparse_records() {
        let c = customer(
            br#"{"id": "77", "id_str": "77", "first_name": null,
                 "primary_email_address": "a@b.co", "phone": 298765432,
                 "tags": null, "unknown": {"deep": [1, 2]},
                 "primary_address": {"lines": ["1 Farm Rd", "", "Shed 2"], "zone": "TAS",
                                     "city": "Hobart", "postal_code": 7000, "country": "AU"}}"#,
        )
        .unwrap();
        assert_eq!(c.id, KountaId(77));
        assert_eq!(c.first_name, "");
        assert_eq!(c.last_name, "");
        assert_eq!(c.email, "a@b.co");
        assert_eq!(c.phone, "298765432");
        assert!(c.tags.is_empty());
        let a = c.primary_address.unwrap();
        assert_eq!(a.address, "1 Farm Rd\nShed 2");
        assert_eq!(a.state, "TAS");
        assert_eq!(a.postal_code, "7000");
    }

    #[test]
    fn falls_back_to_id_str() {
        let c = customer(br#"{"id": null, "id_str": "12"}"#).unwrap();
        assert_eq!(c.id, KountaId(12));
        assert_eq!(c.primary_address, None);
        let c = customer(br#"{"id_str": "13", "email": "x@y.z"}"#).unwrap();
        assert_eq!(c.id, KountaId(13));
    }

    #[test]
    fn email_beats_primary_email_address_when_both_are_set() {
        let c = customer(br#"{"id": 1, "email": "new@x.co", "primary_email_address": "old@x.co"}"#)
            .unwrap();
        assert_eq!(c.email, "new@x.co");
        let c =
            customer(br#"{"id": 1, "email": "", "primary_email_address": "old@x.co"}"#).unwrap();
        assert_eq!(c.email, "old@x.co");
    }

    #[test]
    fn refuses_what_would_blank_or_misidentify() {
        for body in [
            &br#"{"first_name": "no id"}"#[..],
            br#"{"id": "abc"}"#,
            br#"{"id": 0}"#,
            br#"{"id": 1, "phone": {"home": "1"}}"#,
            br#"{"id": 1, "primary_address": "44 Mutton St"}"#,
            br#"{"id": 1, "tags": {"a": 1}}"#,
            br#"[{"id": 1}]"#,
            b"",
            b"<html>502 Bad Gateway</html>",
            br#"{"id": 1, "first_name": "trunc"#,
        ] {
            let err = customer(body).unwrap_err();
            assert!(err.excerpt.chars().count() <= EXCERPT_CHARS);
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn list_pages() {
        let items = list_page(
            br#"[{"id": 1, "first_name": "A", "last_name": "B", "email": "a@b.c", "image": null},
                 {"id": "2", "first_name": "C", "primary_email_address": "c@d.e"}]"#,
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].id, KountaId(2));
        assert_eq!(items[1].email, "c@d.e");
        assert_eq!(list_page(b"[]").unwrap(), vec![]);
        assert_eq!(list_page(br#"{"customers": []}"#).unwrap(), vec![]);
        let err = list_page(br#"[{"id": 1}, {"first_name": "no id"}]"#).unwrap_err();
        assert!(err.reason.contains("item 1"), "{}", err.reason);
        assert!(list_page(br#"{"id": 1}"#).is_err());
        assert!(list_page(b"[1, 2]").is_err());
    }

    #[test]
    fn company() {
        assert_eq!(
            company_id(br#"{"id": 5678, "name": "Farm"}"#).unwrap(),
            5678
        );
        assert_eq!(company_id(br#"{"id": "5678"}"#).unwrap(), 5678);
        assert_eq!(company_id(br#"{"company": {"id": 9}}"#).unwrap(), 9);
        assert!(company_id(br#"{"name": "Farm"}"#).is_err());
    }

    #[test]
    fn location_ids() {
        let cases = [
            (
                "https://api.kounta.com/v1/companies/5678/customers/389427",
                Some(389427),
            ),
            ("/v1/companies/5678/customers/12.json", Some(12)),
            ("http://h/v1/companies/1/customers/12/", Some(12)),
            ("http://h/v1/companies/1/customers/12?x=1", Some(12)),
            ("http://h/v1/companies/1/customers/", None),
            ("/customers/9", Some(9)),
            ("42", Some(42)),
            ("http://h/v1/companies/1/customers/abc", None),
            ("http://h/v1/companies/1/customers/0", None),
            ("", None),
        ];
        for (location, want) in cases {
            assert_eq!(location_id(location), want.map(KountaId), "{location}");
        }
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(br#"{"error": "invalid_request", "error_description": "bad country"}"#)
                .as_deref(),
            Some("invalid_request: bad country")
        );
        assert_eq!(
            error_message(br#"{"error_message": "x"}"#).as_deref(),
            Some("x")
        );
        assert_eq!(error_message(br#"{"message": "y"}"#).as_deref(), Some("y"));
        assert_eq!(error_message(b"<html>Bad Gateway</html>"), None);
        assert!(says_token_invalid(
            br#"{"error":"invalid_token","error_description":"The access token provided has expired"}"#
        ));
        assert!(says_token_invalid(br#"{"message":"Access token expired"}"#));
        assert!(!says_token_invalid(
            br#"{"error":"invalid_request","error_description":"bad country"}"#
        ));
        assert!(!says_token_invalid(b"expired token"));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        crate::http::testing::json_value(
            "id id_str email primary_email_address tags primary_address lines zone customers",
            "[a-z0-9 @.\\n]{0,12}",
        )
    }

    fn assert_short(result: Result<impl std::fmt::Debug, DecodeError>) {
        if let Err(e) = result {
            assert!(e.excerpt.chars().count() <= EXCERPT_CHARS, "{}", e.excerpt);
            assert!(!e.excerpt.contains('\n'));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            assert_short(customer(&bytes));
            assert_short(list_page(&bytes));
            assert_short(company_id(&bytes));
            let _ = error_message(&bytes);
            let _ = says_token_invalid(&bytes);
            let _ = location_id(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn arbitrary_json_never_panics(value in json_value()) {
            let bytes = serde_json::to_vec(&value).unwrap();
            assert_short(customer(&bytes));
            assert_short(list_page(&bytes));
            assert_short(company_id(&bytes));
            let _ = error_message(&bytes);
        }

        #[test]
        fn a_decoded_customer_always_has_a_positive_id(value in json_value()) {
            let bytes = serde_json::to_vec(&value).unwrap();
            if let Ok(c) = customer(&bytes) {
                prop_assert!(c.id.0 > 0);
            }
            if let Ok(items) = list_page(&bytes) {
                prop_assert!(items.iter().all(|i| i.id.0 > 0));
            }
        }

        #[test]
        fn ids_in_any_spelling_decode(id in 1i64..i64::MAX, as_string in any::<bool>(), via_id_str in any::<bool>()) {
            let id_value = if as_string { Value::from(id.to_string()) } else { Value::from(id) };
            let key = if via_id_str { "id_str" } else { "id" };
            let body = serde_json::to_vec(&serde_json::json!({ key: id_value, "email": "e@x.co" })).unwrap();
            prop_assert_eq!(customer(&body).unwrap().id, KountaId(id));
        }
    }
}
