//! Pure decoders of FarmFlow's answers: bytes in, a wire model or an error out.
//!
//! FarmFlow documents no response shapes, so every variant in `api/farmflow.md` is accepted:
//! the `{"status":"success","data":..}` envelope, a bare payload, the payload under a key
//! named for the resource, ids as numbers or strings, `""` or `null` for empty, unknown fields.
//! A body saying `"status": "error"` or `"success": false` is a [`Payload::Refused`], whatever
//! the HTTP status. Nothing here panics, whatever the bytes.

use serde_json::{Map, Value};

use crate::farmflow::model::{FarmflowCustomer, FarmflowFields, OneTimeOrder, RecurringOrder};
use crate::http::DecodeError;
use crate::http::lenient::{self, Record, kind};
use crate::ids::FarmflowId;

/// Keys a customer list may sit under.
pub const CUSTOMERS: &[&str] = &["customers"];
/// Keys a single customer may sit under.
pub const CUSTOMER: &[&str] = &["customer"];
/// Keys the recurring order list may sit under.
pub const RECURRING_ORDERS: &[&str] = &["recurring-orders", "recurring_orders", "recurringOrders"];
/// Keys the one-time order list may sit under.
pub const ONE_TIME_ORDERS: &[&str] = &["one-time-orders", "one_time_orders", "oneTimeOrders"];

/// Every customer field name, used to tell a record from an `{"id": ..}` acknowledgement.
const FIELD_KEYS: &[&str] = &[
    "company",
    "firstname",
    "lastname",
    "address",
    "address2",
    "city",
    "state",
    "zip",
    "phone",
    "email",
    "country",
    "notes",
];

/// A body with its envelope removed.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The payload (for an empty body, `null`).
    Data(Value),
    /// The body says the call failed, with FarmFlow's explanation.
    Refused(String),
}

/// Removes whichever envelope the body has; `keys` are the resource keys the payload may sit
/// under. An empty body is `Data(null)`.
pub fn payload(body: &[u8], keys: &[&str]) -> Result<Payload, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Payload::Data(Value::Null));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::new(format!("not JSON ({e})"), body))?;
    let Value::Object(mut obj) = value else {
        return Ok(Payload::Data(value));
    };
    if says_failure(&obj) {
        let message = lenient::error_message(&Value::Object(obj))
            .unwrap_or_else(|| "FarmFlow gave no explanation".to_owned());
        return Ok(Payload::Refused(message));
    }
    let inner = match obj.remove("data") {
        Some(data) => data,
        None => match take_resource(&mut obj, keys) {
            Some(inner) => return Ok(Payload::Data(inner)),
            None => return Ok(Payload::Data(Value::Object(obj))),
        },
    };
    // `{"status":"success","data":{"customers":[...]}}` occurs too.
    match inner {
        Value::Object(mut data) => match take_resource(&mut data, keys) {
            Some(nested) => Ok(Payload::Data(nested)),
            None => Ok(Payload::Data(Value::Object(data))),
        },
        other => Ok(Payload::Data(other)),
    }
}

fn take_resource(obj: &mut Map<String, Value>, keys: &[&str]) -> Option<Value> {
    keys.iter().find_map(|k| obj.remove(*k))
}

/// Whether an object says the call failed. An order's `status` (`active`, `paused`,
/// `cancelled`) is not an envelope flag, so only failure words count.
fn says_failure(obj: &Map<String, Value>) -> bool {
    let status_failed = obj.get("status").and_then(Value::as_str).is_some_and(|s| {
        matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "error" | "fail" | "failed" | "failure"
        )
    });
    let success_false = match obj.get("success") {
        Some(Value::Bool(b)) => !b,
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => matches!(s.trim().to_ascii_lowercase().as_str(), "false" | "0"),
        _ => false,
    };
    status_failed || success_false
}

/// The customer list (`customers-get`), or `Err(message)` when the body says the call failed.
/// One unreadable customer fails the whole list: a silently dropped one would look deleted.
pub fn customer_list(body: &[u8]) -> Result<Result<Vec<FarmflowCustomer>, String>, DecodeError> {
    match payload(body, CUSTOMERS)? {
        Payload::Refused(message) => Ok(Err(message)),
        Payload::Data(value) => {
            let items = list_of(&value, "customers").map_err(|r| DecodeError::new(r, body))?;
            items
                .iter()
                .enumerate()
                .map(|(i, v)| customer_value(v).map_err(|e| format!("customer #{i}: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Ok)
                .map_err(|reason| DecodeError::new(reason, body))
        }
    }
}

/// One customer (`customer-get`, `customer-update`), or `Err(message)` when the body says
/// the call failed.
pub fn customer(body: &[u8]) -> Result<Result<FarmflowCustomer, String>, DecodeError> {
    match payload(body, CUSTOMER)? {
        Payload::Refused(message) => Ok(Err(message)),
        Payload::Data(value) => customer_value(single(&value))
            .map(Ok)
            .map_err(|reason| DecodeError::new(reason, body)),
    }
}

/// The answer to `customer-create`: the created customer, or — when FarmFlow answers only
/// `{"id": ..}` — the `sent` fields with that id.
pub fn created(
    body: &[u8],
    sent: &FarmflowFields,
) -> Result<Result<FarmflowCustomer, String>, DecodeError> {
    match payload(body, CUSTOMER)? {
        Payload::Refused(message) => Ok(Err(message)),
        Payload::Data(value) => {
            let record = single(&value);
            let obj = match record {
                Value::Object(obj) => obj,
                // A bare id (`"321"` or `321`) acknowledges the create too.
                Value::Number(_) | Value::String(_) => {
                    let id = lenient::id(Some(record))
                        .map_err(|e| DecodeError::new(format!("created customer id {e}"), body))?;
                    return Ok(Ok(FarmflowCustomer {
                        id: FarmflowId(id),
                        fields: sent.clone(),
                    }));
                }
                other => {
                    return Err(DecodeError::new(
                        format!("expected the created customer, found {}", kind(other)),
                        body,
                    ));
                }
            };
            if FIELD_KEYS.iter().any(|k| obj.contains_key(*k)) {
                customer_value(record)
                    .map(Ok)
                    .map_err(|reason| DecodeError::new(reason, body))
            } else {
                let id = lenient::id(obj.get("id"))
                    .map_err(|e| DecodeError::new(format!("created customer id {e}"), body))?;
                Ok(Ok(FarmflowCustomer {
                    id: FarmflowId(id),
                    fields: sent.clone(),
                }))
            }
        }
    }
}

/// The recurring orders (`recurring-orders-get`), or `Err(message)` for a refusal.
pub fn recurring_orders(body: &[u8]) -> Result<Result<Vec<RecurringOrder>, String>, DecodeError> {
    orders(body, RECURRING_ORDERS, "recurring orders", |obj| {
        Ok(RecurringOrder {
            id: order_id(obj)?,
            customer_id: order_customer(obj)?,
            status: lenient::first_text(obj, &["status"])?,
            start_date: lenient::first_text(obj, &["start-date", "start_date", "startDate"])?,
            end_date: lenient::first_text(obj, &["end-date", "end_date", "endDate"])?,
        })
    })
}

/// The one-time orders (`one-time-orders-get`), or `Err(message)` for a refusal.
pub fn one_time_orders(body: &[u8]) -> Result<Result<Vec<OneTimeOrder>, String>, DecodeError> {
    orders(body, ONE_TIME_ORDERS, "one-time orders", |obj| {
        Ok(OneTimeOrder {
            id: order_id(obj)?,
            customer_id: order_customer(obj)?,
            fulfillment: lenient::first_text(obj, &["fulfillment"])?,
            fulfill_date: lenient::first_text(
                obj,
                &["fulfill-date", "fulfill_date", "fulfillDate"],
            )?,
        })
    })
}

fn orders<T>(
    body: &[u8],
    keys: &[&str],
    what: &str,
    decode: impl Fn(&Map<String, Value>) -> Result<T, String>,
) -> Result<Result<Vec<T>, String>, DecodeError> {
    match payload(body, keys)? {
        Payload::Refused(message) => Ok(Err(message)),
        Payload::Data(value) => {
            let items = list_of(&value, what).map_err(|r| DecodeError::new(r, body))?;
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(obj) => decode(obj).map_err(|e| format!("{what} #{i}: {e}")),
                    other => Err(format!("{what} #{i} is {}", kind(other))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Ok)
                .map_err(|reason| DecodeError::new(reason, body))
        }
    }
}

/// An order's own id; orders are read only to protect customers, so a missing one is 0.
fn order_id(obj: &Map<String, Value>) -> Result<i64, String> {
    match obj.get("id") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(0),
        some => lenient::id(some).map_err(|e| format!("\"id\" {e}")),
    }
}

/// The customer an order belongs to. Required: an order that names no customer cannot
/// protect anyone, and reading it as nobody's would let a delete through.
fn order_customer(obj: &Map<String, Value>) -> Result<FarmflowId, String> {
    let value = ["customer-id", "customer_id", "customerId"]
        .iter()
        .find_map(|k| obj.get(*k).filter(|v| !v.is_null()));
    lenient::id(value)
        .map(FarmflowId)
        .map_err(|e| format!("\"customer-id\" {e}"))
}

/// A list payload. Only a list is a list: an empty body, `204`, `null` or `{}` is unreadable,
/// never "no records" — an order list read as empty would let a customer with a standing order
/// be deleted, a customer list read as empty would look like everyone deleted.
fn list_of<'a>(value: &'a Value, what: &str) -> Result<&'a [Value], String> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Null => Err(format!(
            "expected a list of {what}, found an empty answer (unreadable, not empty)"
        )),
        other => Err(format!("expected a list of {what}, found {}", kind(other))),
    }
}

/// A single record payload; a one-element list is tolerated.
fn single(value: &Value) -> &Value {
    match value {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    }
}

/// One customer from an already unwrapped value.
pub(crate) fn customer_value(value: &Value) -> Result<FarmflowCustomer, String> {
    let record = Record::new(value, "customer", |obj| lenient::id(obj.get("id")))?;
    let text = |key: &str| record.text(key);
    Ok(FarmflowCustomer {
        id: FarmflowId(record.id),
        fields: FarmflowFields {
            company: text("company")?,
            firstname: text("firstname")?,
            lastname: text("lastname")?,
            address: text("address")?,
            address2: text("address2")?,
            city: text("city")?,
            state: text("state")?,
            zip: text("zip")?,
            phone: text("phone")?,
            email: text("email")?,
            country: text("country")?,
            notes: text("notes")?,
        },
    })
}

/// The body of a call that names a customer: `{"id": "321", ...fields}` — ids go as strings.
pub fn customer_body(id: Option<FarmflowId>, fields: Option<&FarmflowFields>) -> Value {
    let mut body = match fields.map(serde_json::to_value) {
        Some(Ok(Value::Object(obj))) => obj,
        _ => Map::new(),
    };
    if let Some(id) = id {
        body.insert("id".to_owned(), Value::String(id.to_string()));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::EXCERPT_CHARS;
    use proptest::prelude::*;
    use serde_json::json;

    fn record(id: Value) -> Value {
        json!({"id": id, "company": "", "firstname": "Ada", "lastname": "Lovelace",
               "address": "1 Farm Rd", "address2": null, "city": "Hobart", "state": "TAS",
               "zip": 7000, "phone": "0362 000 000", "email": "ada@example.com",
               "country": "Australia", "notes": "", "created": "2026-01-01", "extra": {"x": 1}})
    }

    fn bytes(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn every_list_envelope_decodes_the_same() {
        let list = json!([record(json!("321")), record(json!(322))]);
        let shapes = [
            json!({"status": "success", "data": list}),
            list.clone(),
            json!({"customers": list}),
            json!({"status": "success", "data": {"customers": list}}),
            json!({"success": true, "customers": list}),
        ];
        for shape in shapes {
            let got = customer_list(&bytes(shape.clone())).unwrap().unwrap();
            assert_eq!(got.len(), 2, "{shape}");
            assert_eq!(got[0].id, FarmflowId(321));
            assert_eq!(got[1].id, FarmflowId(322));
            assert_eq!(got[0].fields.zip, "7000");
            assert_eq!(got[0].fields.address2, "");
            assert_eq!(got[0].fields.country, "Australia");
        }
        assert_eq!(
            customer_list(br#"{"status":"success","data":[]}"#)
                .unwrap()
                .unwrap(),
            vec![]
        );
    }

    #[test]
    fn an_empty_or_null_answer_is_unreadable_not_an_empty_list() {
        for body in [
            &b""[..],
            b"  \n",
            b"null",
            br#"{"status":"success","data":null}"#,
            b"{}",
        ] {
            let text = String::from_utf8_lossy(body).into_owned();
            assert!(
                !matches!(customer_list(body), Ok(Ok(_))),
                "customers from {text:?}"
            );
            assert!(
                !matches!(recurring_orders(body), Ok(Ok(_))),
                "recurring orders from {text:?}"
            );
            assert!(
                !matches!(one_time_orders(body), Ok(Ok(_))),
                "one-time orders from {text:?}"
            );
        }
        assert_eq!(recurring_orders(b"[]").unwrap().unwrap(), vec![]);
        assert_eq!(one_time_orders(br#"{"data":[]}"#).unwrap().unwrap(), vec![]);
    }

    #[test]
    fn every_single_envelope_decodes_the_same() {
        for shape in [
            json!({"status": "success", "data": record(json!(7))}),
            record(json!("7")),
            json!({"customer": record(json!(7))}),
            json!({"status": "success", "data": {"customer": record(json!(7))}}),
            json!({"data": [record(json!(7))]}),
        ] {
            let c = customer(&bytes(shape.clone())).unwrap().unwrap();
            assert_eq!(c.id, FarmflowId(7), "{shape}");
            assert_eq!(c.fields.firstname, "Ada");
        }
    }

    #[test]
    fn a_2xx_body_saying_error_is_a_refusal() {
        for body in [
            json!({"status": "error", "message": "Customer not found"}),
            json!({"success": false, "message": "Customer not found"}),
            json!({"success": "false", "error": "Customer not found"}),
            json!({"status": "ERROR", "errors": ["Customer not found"]}),
        ] {
            assert_eq!(
                customer(&bytes(body.clone())).unwrap(),
                Err("Customer not found".to_owned()),
                "{body}"
            );
        }
        assert_eq!(
            customer_list(br#"{"status":"error"}"#).unwrap(),
            Err("FarmFlow gave no explanation".to_owned())
        );
    }

    #[test]
    fn a_create_answered_with_only_an_id_keeps_the_sent_fields() {
        let sent = FarmflowFields {
            firstname: "Grace".into(),
            email: "grace@example.com".into(),
            ..Default::default()
        };
        for body in [
            json!({"status": "success", "data": {"id": "900"}}),
            json!({"id": 900}),
            json!({"status": "success", "data": 900}),
            json!({"status": "success", "data": {"id": "900", "created_at": "now"}}),
        ] {
            let c = created(&bytes(body.clone()), &sent).unwrap().unwrap();
            assert_eq!(c.id, FarmflowId(900), "{body}");
            assert_eq!(c.fields, sent);
        }
        let c = created(
            &bytes(json!({"status":"success","data": record(json!("901"))})),
            &sent,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.id, FarmflowId(901));
        assert_eq!(c.fields.firstname, "Ada");
        assert!(created(br#"{"status":"success","data":{"ok":1}}"#, &sent).is_err());
        assert!(created(b"", &sent).is_err());
    }

    #[test]
    fn orders_decode_in_each_spelling() {
        let body = json!({"status": "success", "data": [
            {"id": 1, "customer-id": "321", "status": "active", "start-date": "2026-01-01", "end-date": ""},
            {"id": "2", "customer_id": 322, "status": "paused", "start_date": null}
        ]});
        let got = recurring_orders(&bytes(body)).unwrap().unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_active());
        assert_eq!(got[0].customer_id, FarmflowId(321));
        assert_eq!(got[1].customer_id, FarmflowId(322));
        assert_eq!(got[1].start_date, "");
        let bare = json!({"recurring-orders": [{"customer-id": 5, "status": "active"}]});
        assert_eq!(recurring_orders(&bytes(bare)).unwrap().unwrap()[0].id, 0);

        let body = json!({"one-time-orders": [
            {"id": 3, "customer-id": 321, "pickup-location-id": 1, "fulfillment": "Pick Up",
             "instructions": null, "fulfill-date": "2026-05-01"}
        ]});
        let got = one_time_orders(&bytes(body)).unwrap().unwrap();
        assert_eq!(got[0].fulfill_date, "2026-05-01");
        assert_eq!(got[0].fulfillment, "Pick Up");

        // An order naming no customer cannot protect anyone: the list is unreadable.
        let err = recurring_orders(br#"[{"id": 1, "status": "active"}]"#).unwrap_err();
        assert!(err.reason.contains("customer-id"), "{}", err.reason);
    }

    #[test]
    fn refuses_what_would_blank_or_misidentify() {
        for body in [
            &br#"[{"firstname": "no id"}]"#[..],
            br#"[{"id": "x"}]"#,
            br#"[{"id": 1, "phone": {"a": 1}}]"#,
            br#"{"status":"success","data":{"id": 1}}"#,
            br#"[1, 2]"#,
            b"<html>502</html>",
            br#"{"status":"success","data":[{"id":1,"firstname":"trunc"#,
        ] {
            let err = customer_list(body).unwrap_err();
            assert!(err.excerpt.chars().count() <= EXCERPT_CHARS);
        }
    }

    #[test]
    fn request_bodies_send_ids_as_strings_and_every_field() {
        let fields = FarmflowFields {
            firstname: "Ada".into(),
            ..Default::default()
        };
        let body = customer_body(Some(FarmflowId(321)), Some(&fields));
        assert_eq!(body["id"], json!("321"));
        assert_eq!(body["firstname"], json!("Ada"));
        assert_eq!(body["address2"], json!(""));
        assert_eq!(body.as_object().unwrap().len(), 13);
        assert_eq!(customer_body(Some(FarmflowId(5)), None), json!({"id": "5"}));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        crate::http::testing::json_value(
            "id status success data message customers customer customer-id recurring-orders firstname",
            "[a-z0-9 @.-]{0,12}",
        )
    }

    fn assert_short<T: std::fmt::Debug>(result: Result<T, DecodeError>) {
        if let Err(e) = result {
            assert!(e.excerpt.chars().count() <= EXCERPT_CHARS, "{}", e.excerpt);
        }
    }

    fn all_decoders(body: &[u8]) {
        let sent = FarmflowFields::default();
        assert_short(payload(body, CUSTOMERS));
        assert_short(customer_list(body));
        assert_short(customer(body));
        assert_short(created(body, &sent));
        assert_short(recurring_orders(body));
        assert_short(one_time_orders(body));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..600)) {
            all_decoders(&body);
        }

        #[test]
        fn arbitrary_json_never_panics(value in json_value()) {
            all_decoders(&bytes(value));
        }

        #[test]
        fn decoded_ids_are_positive(value in json_value()) {
            let body = bytes(value);
            if let Ok(Ok(list)) = customer_list(&body) {
                prop_assert!(list.iter().all(|c| c.id.0 > 0));
            }
            if let Ok(Ok(orders)) = recurring_orders(&body) {
                prop_assert!(orders.iter().all(|o| o.customer_id.0 > 0));
            }
        }

        #[test]
        fn any_customer_round_trips_through_the_wire_body(
            id in 1i64..i64::MAX,
            first in "[^\u{0}]{0,20}",
            email in "[a-z@.]{0,20}",
            enveloped in any::<bool>(),
        ) {
            let fields = FarmflowFields { firstname: first, email, ..Default::default() };
            let record = customer_body(Some(FarmflowId(id)), Some(&fields));
            let body = if enveloped { json!({"status": "success", "data": record}) } else { record };
            let got = customer(&bytes(body)).unwrap().unwrap();
            prop_assert_eq!(got, FarmflowCustomer { id: FarmflowId(id), fields });
        }
    }
}
