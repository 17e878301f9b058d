//! The fake CRM against `api/kounta.md`, with plain `reqwest`.

use std::collections::BTreeSet;

use farmsync::sandbox::{ErrorShape, KountaEndpoint, KountaRecord, KountaRecordAddress, ReadShape};
use reqwest::Method;
use serde_json::{Value, json};

use crate::sandbox_support::{Crm, id_from_location, start, status_json};

fn person(first: &str, email: &str) -> KountaRecord {
    KountaRecord {
        first_name: first.into(),
        last_name: "Tester".into(),
        email: email.into(),
        ..KountaRecord::default()
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

#[tokio::test]
async fn companies_me_names_the_company() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let url = format!("{}/companies/me", crm.base);
    let (status, body) = status_json(crm.req(Method::GET, &url)).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"id": 5678, "name": "Sandbox Farm Shop"}));
}

#[tokio::test]
async fn basic_auth_must_name_the_client() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let url = crm.url("/customers");

    let wrong = crm
        .http
        .get(&url)
        .basic_auth(&crm.user, Some("not-the-secret"))
        .header("Accept", "application/json");
    let (status, body) = status_json(wrong).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"].is_string());

    let missing = crm.http.get(&url).header("Accept", "application/json");
    assert_eq!(status_json(missing).await.0, 401);

    assert_eq!(status_json(crm.get("/customers")).await.0, 200);
}

#[tokio::test]
async fn json_must_be_accepted_by_header_or_suffix() {
    let sb = start().await;
    let id = sb.kounta().insert(person("Ada", "ada@example.com"));
    let crm = Crm::new(&sb);
    let plain = crm.url(&format!("/customers/{id}"));

    let any = crm
        .http
        .get(&plain)
        .basic_auth(&crm.user, Some(&crm.pass))
        .header("Accept", "*/*");
    let (status, body) = status_json(any).await;
    assert_eq!(status, 406);
    assert_eq!(body["error"], "not_acceptable");

    let suffixed = crm
        .http
        .get(format!("{plain}.json"))
        .basic_auth(&crm.user, Some(&crm.pass))
        .header("Accept", "*/*");
    let (status, body) = status_json(suffixed).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id);

    let list = crm
        .http
        .get(crm.url("/customers.json"))
        .basic_auth(&crm.user, Some(&crm.pass));
    let (status, body) = status_json(list).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn writes_need_a_json_content_type() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let r = crm
        .req(Method::POST, &crm.url("/customers"))
        .header("Content-Type", "text/plain")
        .body(r#"{"first_name":"Ada","email":"ada@example.com"}"#);
    let (status, body) = status_json(r).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    assert!(sb.kounta().customers().is_empty());

    let with_charset = crm
        .req(Method::POST, &crm.url("/customers"))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(r#"{"first_name":"Ada","email":"ada@example.com"}"#);
    assert_eq!(status_json(with_charset).await.0, 201);
}

#[tokio::test]
async fn the_list_pages_abbreviated_items_25_at_a_time_with_full_next_page_urls() {
    let sb = start().await;
    for i in 0..60 {
        sb.kounta()
            .insert(person(&format!("P{i}"), &format!("p{i}@example.com")));
    }
    let crm = Crm::new(&sb);
    let mut url = Some(crm.url("/customers"));
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    while let Some(u) = url.take() {
        let r = crm.req(Method::GET, &u).send().await.expect("sent");
        assert_eq!(r.status(), 200);
        url = r
            .headers()
            .get("x-next-page")
            .map(|v| v.to_str().expect("ascii").to_owned());
        if let Some(next) = &url {
            assert!(
                next.starts_with(&format!("{}/companies/5678/customers", crm.base)),
                "next page is a full URL: {next}"
            );
        }
        let items: Vec<Value> = r.json().await.expect("json");
        sizes.push(items.len());
        for item in &items {
            let want: BTreeSet<String> = ["id", "first_name", "last_name", "email", "image"]
                .map(String::from)
                .into();
            assert_eq!(keys(item), want);
            ids.push(item["id"].as_i64().expect("numeric id"));
        }
    }
    assert_eq!(sizes, vec![25, 25, 10]);
    let all: Vec<i64> = sb.kounta().customers().iter().map(|c| c.id).collect();
    assert_eq!(ids, all, "every customer once, in id order");
}

#[tokio::test]
async fn a_full_last_page_carries_no_next_page_and_the_page_size_is_a_knob() {
    let sb = start().await;
    for i in 0..10 {
        sb.kounta()
            .insert(person(&format!("P{i}"), &format!("p{i}@example.com")));
    }
    sb.kounta().set_page_size(5);
    let crm = Crm::new(&sb);
    let first = crm.get("/customers").send().await.expect("sent");
    let next = first.headers().get("x-next-page").expect("a second page");
    let next = next.to_str().expect("ascii").to_owned();
    assert_eq!(first.json::<Vec<Value>>().await.expect("json").len(), 5);
    let second = crm.req(Method::GET, &next).send().await.expect("sent");
    assert!(second.headers().get("x-next-page").is_none());
    assert_eq!(second.json::<Vec<Value>>().await.expect("json").len(), 5);

    let (status, body) = status_json(crm.get("/customers?page=9")).await;
    assert_eq!((status, body), (200, json!([])));
    assert_eq!(status_json(crm.get("/customers?page=0")).await.0, 400);
}

#[tokio::test]
async fn a_record_shows_every_field_with_created_and_updated_at_now() {
    let sb = start().await;
    let id = sb.kounta().insert(KountaRecord {
        first_name: "Jamie".into(),
        last_name: "McDonald".into(),
        email: "jamie@example.com".into(),
        phone: "02 8765 4321".into(),
        mobile: "0412 345 678".into(),
        tags: vec!["Newsletter".into()],
        accepts_marketing: true,
        primary_address: Some(KountaRecordAddress {
            address: "44 Mutton Street\nSuite 5".into(),
            city: "Beeftown".into(),
            state: "NSW".into(),
            postal_code: "2112".into(),
            country: "AU".into(),
        }),
        ..KountaRecord::default()
    });
    let crm = Crm::new(&sb);
    let (status, body) = status_json(crm.get(&format!("/customers/{id}"))).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id);
    assert_eq!(body["first_name"], "Jamie");
    assert_eq!(body["mobile"], "0412 345 678");
    assert_eq!(body["reference_id"], "");
    assert_eq!(body["tags"], json!(["Newsletter"]));
    assert_eq!(body["image"], Value::Null);
    assert_eq!(body["accepts_marketing"], true);
    assert_eq!(body["shipping_address"], Value::Null);
    assert_eq!(
        body["primary_address"],
        json!({"address": "44 Mutton Street\nSuite 5", "city": "Beeftown", "state": "NSW",
               "postal_code": "2112", "country": "AU"})
    );
    let now = chrono::Utc::now();
    for field in ["created_at", "updated_at"] {
        let stamp = body[field].as_str().expect("a timestamp");
        let at = chrono::DateTime::parse_from_rfc3339(stamp).expect("rfc3339");
        let drift = (now - at.with_timezone(&chrono::Utc)).num_seconds().abs();
        assert!(drift < 60, "{field} is now, got {stamp}");
    }

    let (status, body) = status_json(crm.get("/customers/1")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn reference_id_lookups_answer_an_array() {
    let sb = start().await;
    let k = sb.kounta();
    let a = k.insert(KountaRecord {
        reference_id: "farmflow:301".into(),
        ..person("A", "a@example.com")
    });
    let b = k.insert(KountaRecord {
        reference_id: "farmflow:301".into(),
        ..person("B", "b@example.com")
    });
    k.insert(person("C", "c@example.com"));
    let crm = Crm::new(&sb);

    let (status, body) = status_json(crm.get("/customers?reference_id=farmflow:301")).await;
    assert_eq!(status, 200);
    let ids: Vec<i64> = body
        .as_array()
        .expect("array")
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, vec![a, b]);
    assert_eq!(keys(&body[0]).len(), 5, "abbreviated items");

    let (status, body) = status_json(crm.get("/customers?reference_id=farmflow:999")).await;
    assert_eq!((status, body), (200, json!([])));
}

#[tokio::test]
async fn email_mobile_and_name_phone_lookups_redirect_or_404() {
    let sb = start().await;
    let id = sb.kounta().insert(KountaRecord {
        first_name: "Jamie".into(),
        last_name: "McDonald".into(),
        email: "Jamie@Example.com".into(),
        phone: "02 8765 4321".into(),
        mobile: "0412 345 678".into(),
        ..KountaRecord::default()
    });
    let crm = Crm::new(&sb);
    let expected = format!("{}/companies/5678/customers/{id}", crm.base);

    for query in [
        "email=jamie%40example.com",
        "mobile=0412345678",
        "first_name=jamie&last_name=mcdonald&phone=0287654321",
    ] {
        let r = crm
            .get(&format!("/customers?{query}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 302, "{query}");
        assert_eq!(
            r.headers().get("location").and_then(|v| v.to_str().ok()),
            Some(expected.as_str()),
            "{query}"
        );
        assert_eq!(id_from_location(&r), id);
    }

    for query in [
        "email=nobody%40example.com",
        "mobile=0400000000",
        "first_name=Jamie&last_name=McDonald&phone=0400000000",
    ] {
        let (status, body) = status_json(crm.get(&format!("/customers?{query}"))).await;
        assert_eq!(status, 404, "{query}");
        assert_eq!(body["error"], "not_found");
    }

    let (status, _) = status_json(crm.get("/customers?first_name=Jamie&last_name=McDonald")).await;
    assert_eq!(status, 400, "all three of first_name, last_name and phone");
    let stats = sb.kounta().stats();
    assert_eq!(stats.count(KountaEndpoint::Lookup), 7);
    assert_eq!(stats.count(KountaEndpoint::List), 0);
}

#[tokio::test]
async fn create_answers_201_with_location_and_an_empty_body() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let r = crm
        .post(
            "/customers",
            &json!({
                "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
                "reference_id": "farmflow:301", "tags": ["Chef"], "accepts_marketing": true,
                "primary_address": {"address": "1 Main St\nUnit 2", "city": "Perth",
                                    "state": "WA", "postal_code": "6000", "country": "AU"},
                "unknown_field": "ignored"
            }),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let id = id_from_location(&r);
    assert_eq!(
        location,
        format!("{}/companies/5678/customers/{id}", crm.base)
    );
    assert!(r.bytes().await.expect("body").is_empty(), "empty body");

    let stored = sb.kounta().get(id).expect("stored");
    assert_eq!(stored.first_name, "Ada");
    assert_eq!(stored.reference_id, "farmflow:301");
    assert_eq!(stored.tags, vec!["Chef".to_owned()]);
    assert!(stored.accepts_marketing);
    let address = stored.primary_address.expect("address");
    assert_eq!(address.address, "1 Main St\nUnit 2");
    assert_eq!(address.country, "AU");
}

#[tokio::test]
async fn create_validates_name_contact_country_and_unique_mobile() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    crm.create(&json!({"first_name": "Ada", "mobile": "0412 345 678"}))
        .await;

    let cases = [
        (
            json!({"last_name": "X", "email": "x@example.com"}),
            400,
            "first_name",
        ),
        (
            json!({"first_name": "  ", "email": "x@example.com"}),
            400,
            "first_name",
        ),
        (json!({"first_name": "X", "last_name": "Y"}), 400, "email"),
        (
            json!({"first_name": "X", "phone": "1", "primary_address": {"country": "USA"}}),
            400,
            "alpha-2",
        ),
        (
            json!({"first_name": "X", "phone": "1", "shipping_address": {"country": "Australia"}}),
            400,
            "alpha-2",
        ),
        (
            json!({"first_name": "X", "mobile": "0412345678"}),
            409,
            "mobile",
        ),
        (
            json!({"first_name": 7, "email": "x@example.com"}),
            400,
            "string",
        ),
    ];
    for (body, want, mentions) in cases {
        let (status, answer) = status_json(crm.post("/customers", &body)).await;
        assert_eq!(status, want, "{body}");
        let description = answer["error_description"].as_str().expect("description");
        assert!(description.contains(mentions), "{body}: {description}");
        assert!(answer["error"].is_string());
    }
    let (status, _) = status_json(
        crm.req(Method::POST, &crm.url("/customers"))
            .header("Content-Type", "application/json")
            .body("[1, 2]"),
    )
    .await;
    assert_eq!(status, 400, "a body that is not an object");
    assert_eq!(
        sb.kounta().customers().len(),
        1,
        "nothing refused was stored"
    );

    let ok = crm
        .create(&json!({"first_name": "X", "phone": "1", "primary_address": {"country": "US"}}))
        .await;
    assert!(sb.kounta().get(ok).is_some());
}

#[tokio::test]
async fn update_changes_only_updatable_fields_and_replaces_the_address_whole() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let id = crm
        .create(&json!({
            "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
            "mobile": "0412 000 111", "tags": ["A"],
            "primary_address": {"address": "1 Main St", "city": "Perth", "state": "WA",
                                "postal_code": "6000", "country": "AU"}
        }))
        .await;
    let other = crm
        .create(&json!({"first_name": "Bob", "mobile": "0499 999 999"}))
        .await;

    let (status, body) = status_json(crm.put(
        &format!("/customers/{id}"),
        &json!({"phone": "08 9555 0000", "id": 1, "created_at": "2000-01-01",
                "primary_address": {"city": "Fremantle"}}),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id, "the answer is the record");
    assert_eq!(body["phone"], "08 9555 0000");
    let stored = sb.kounta().get(id).expect("still there");
    assert_eq!(stored.first_name, "Ada", "fields not sent stay");
    assert_eq!(stored.email, "ada@example.com");
    assert_eq!(stored.tags, vec!["A".to_owned()]);
    assert_eq!(
        stored.primary_address,
        Some(KountaRecordAddress {
            city: "Fremantle".into(),
            ..KountaRecordAddress::default()
        }),
        "the address is replaced as a whole"
    );

    let (status, _) = status_json(crm.put(
        &format!("/customers/{id}"),
        &json!({"primary_address": {"country": "AUS"}}),
    ))
    .await;
    assert_eq!(status, 400);
    let (status, _) = status_json(crm.put(
        &format!("/customers/{id}"),
        &json!({"mobile": "0499999999"}),
    ))
    .await;
    assert_eq!(status, 409, "mobile of customer {other}");
    let (status, _) =
        status_json(crm.put(&format!("/customers/{id}"), &json!({"first_name": ""}))).await;
    assert_eq!(status, 400);
    assert_eq!(
        sb.kounta().get(id),
        Some(stored),
        "refused updates change nothing"
    );

    let (status, _) = status_json(crm.put("/customers/42", &json!({"phone": "1"}))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn delete_is_refused_and_only_the_back_office_deletes() {
    let sb = start().await;
    let id = sb.kounta().insert(person("Ada", "ada@example.com"));
    let crm = Crm::new(&sb);
    let (status, body) =
        status_json(crm.req(Method::DELETE, &crm.url(&format!("/customers/{id}")))).await;
    assert_eq!(status, 405);
    assert_eq!(body["error"], "method_not_allowed");
    assert!(sb.kounta().get(id).is_some());
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Delete), 1);

    assert!(sb.kounta().backoffice_delete(id));
    assert!(!sb.kounta().backoffice_delete(id));
    assert_eq!(
        status_json(crm.get(&format!("/customers/{id}"))).await.0,
        404
    );
    assert_eq!(status_json(crm.get("/customers")).await.1, json!([]));
}

#[tokio::test]
async fn another_company_is_forbidden_and_unknown_paths_are_404() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let url = format!("{}/companies/9999/customers", crm.base);
    let (status, body) = status_json(crm.req(Method::GET, &url)).await;
    assert_eq!(status, 403);
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .contains("9999")
    );
    let url = format!("{}/companies/5678/orders", crm.base);
    assert_eq!(status_json(crm.req(Method::GET, &url)).await.0, 404);
    let url = crm.url("/customers/1");
    assert_eq!(status_json(crm.req(Method::PATCH, &url)).await.0, 405);
    assert_eq!(sb.kounta().stats().unrouted, 2);
}

async fn refresh(crm: &Crm, refresh_token: &str) -> (u16, Value) {
    let url = format!("{}/token", crm.base);
    status_json(crm.http.post(url).form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", crm.user.as_str()),
        ("client_secret", crm.pass.as_str()),
    ]))
    .await
}

#[tokio::test]
async fn an_oauth_refresh_rotates_the_refresh_token() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let first = sb.kounta().refresh_token();
    assert_eq!(first, "sandbox-refresh-token");

    let (status, body) = refresh(&crm, &first).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let access = body["access_token"].as_str().expect("access").to_owned();
    let second = body["refresh_token"].as_str().expect("refresh").to_owned();
    assert_ne!(second, first);
    assert_eq!(sb.kounta().refresh_token(), second);
    assert_eq!(sb.kounta().access_token(), access);

    let me = format!("{}/companies/me", crm.base);
    let bearer = crm
        .http
        .get(&me)
        .bearer_auth(&access)
        .header("Accept", "application/json");
    assert_eq!(status_json(bearer).await.0, 200);

    let (status, body) = refresh(&crm, &first).await;
    assert_eq!(status, 400, "the old refresh token stopped working");
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(refresh(&crm, &second).await.0, 200);
    assert_eq!(sb.kounta().stats().auth, 3);
}

#[tokio::test]
async fn the_token_endpoint_checks_form_client_and_grant() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let url = format!("{}/token", crm.base);
    let token = sb.kounta().refresh_token();
    let bad_client = crm.http.post(&url).form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", token.as_str()),
        ("client_id", "someone"),
        ("client_secret", "else"),
    ]);
    let (status, body) = status_json(bad_client).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let bad_grant = crm.http.post(&url).form(&[
        ("grant_type", "password"),
        ("client_id", crm.user.as_str()),
        ("client_secret", crm.pass.as_str()),
    ]);
    let (status, body) = status_json(bad_grant).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    let as_json = crm
        .http
        .post(&url)
        .json(&json!({"grant_type": "refresh_token"}));
    assert_eq!(status_json(as_json).await.0, 400);
    assert_eq!(sb.kounta().refresh_token(), token, "nothing rotated");
}

#[tokio::test]
async fn an_expired_or_unknown_token_answers_invalid_token() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let me = format!("{}/companies/me", crm.base);
    let token = sb.kounta().access_token();
    let call = |t: &str| {
        crm.http
            .get(&me)
            .bearer_auth(t)
            .header("Accept", "application/json")
    };
    assert_eq!(status_json(call(&token)).await.0, 200);

    sb.kounta().expire_access_tokens();
    let expected = json!({"error": "invalid_token",
                          "error_description": "The access token provided has expired"});
    assert_eq!(status_json(call(&token)).await, (401, expected.clone()));
    assert_eq!(status_json(call("made-up")).await, (401, expected.clone()));

    sb.kounta().set_expired_token_status(400);
    assert_eq!(status_json(call(&token)).await, (400, expected));

    let fresh = sb.kounta().issue_access_token();
    assert_eq!(status_json(call(&fresh)).await.0, 200);
}

#[tokio::test]
async fn the_legacy_read_shape_is_selectable() {
    let sb = start().await;
    let id = sb.kounta().insert(KountaRecord {
        primary_address: Some(KountaRecordAddress {
            address: "44 Mutton Street\nSuite 5".into(),
            state: "NSW".into(),
            country: "AU".into(),
            ..KountaRecordAddress::default()
        }),
        ..person("Jamie", "jamie@example.com")
    });
    sb.kounta().set_read_shape(ReadShape {
        legacy_address: true,
        primary_email_address: true,
        id_str: true,
        ..ReadShape::default()
    });
    let crm = Crm::new(&sb);
    let (_, body) = status_json(crm.get(&format!("/customers/{id}"))).await;
    assert_eq!(body["primary_email_address"], "jamie@example.com");
    assert!(body.get("email").is_none());
    assert_eq!(body["id_str"], id.to_string());
    let address = &body["primary_address"];
    assert_eq!(address["lines"], json!(["44 Mutton Street", "Suite 5"]));
    assert_eq!(address["zone"], "NSW");
    assert!(address.get("address").is_none() && address.get("state").is_none());

    let (_, list) = status_json(crm.get("/customers")).await;
    assert_eq!(list[0]["primary_email_address"], "jamie@example.com");
    assert_eq!(list[0]["id_str"], id.to_string());
}

#[tokio::test]
async fn phone_normalising_reformats_api_writes_only() {
    let sb = start().await;
    sb.kounta().set_normalise_phones(true);
    let crm = Crm::new(&sb);
    let id = crm
        .create(&json!({"first_name": "Ada", "phone": "(02) 87654321", "mobile": "0412345678"}))
        .await;
    let stored = sb.kounta().get(id).expect("stored");
    assert_eq!(stored.phone, "02 8765 4321");
    assert_eq!(stored.mobile, "0412 345 678");

    let (_, body) =
        status_json(crm.put(&format!("/customers/{id}"), &json!({"phone": "0398765432"}))).await;
    assert_eq!(body["phone"], "03 9876 5432");

    let by_hand = sb.kounta().insert(KountaRecord {
        phone: "0298765432".into(),
        ..person("Bob", "bob@example.com")
    });
    assert_eq!(sb.kounta().get(by_hand).expect("there").phone, "0298765432");
}

#[tokio::test]
async fn helpers_are_not_requests_and_edits_keep_the_id() {
    let sb = start().await;
    let k = sb.kounta();
    let id = k.insert(person("Ada", "ada@example.com"));
    assert!(k.edit(id, |c| {
        c.email = "ada@new.example".into();
        c.id = 1;
    }));
    assert!(!k.edit(id + 100, |c| c.email.clear()));
    assert_eq!(k.get(id).map(|c| c.email), Some("ada@new.example".into()));
    assert_eq!(k.customers().len(), 1);
    let stats = k.stats();
    assert_eq!(stats.total, 0);
    assert!(k.request_log().is_empty());
}

#[tokio::test]
async fn ids_as_strings_nulls_and_unknown_fields_are_selectable() {
    let sb = start().await;
    let id = sb.kounta().insert(KountaRecord {
        primary_address: Some(KountaRecordAddress {
            city: "Perth".into(),
            ..KountaRecordAddress::default()
        }),
        ..person("Ada", "ada@example.com")
    });
    sb.kounta().set_read_shape(ReadShape {
        ids_as_strings: true,
        null_for_empty: true,
        extra_fields: true,
        ..ReadShape::default()
    });
    let crm = Crm::new(&sb);
    let (_, body) = status_json(crm.get(&format!("/customers/{id}"))).await;
    assert_eq!(body["id"], json!(id.to_string()));
    assert_eq!(body["phone"], Value::Null);
    assert_eq!(body["reference_id"], Value::Null);
    assert_eq!(body["tags"], Value::Null);
    assert_eq!(body["primary_address"]["country"], Value::Null);
    assert_eq!(body["primary_address"]["city"], "Perth");
    assert_eq!(body["first_name"], "Ada");
    assert!(body.get("customer_code").is_some(), "an unknown field");

    let (_, list) = status_json(crm.get("/customers")).await;
    assert_eq!(list[0]["id"], json!(id.to_string()));
    assert_eq!(list[0]["image"], Value::Null);
    assert!(list[0].get("customer_code").is_some());
}

#[tokio::test]
async fn error_bodies_can_take_the_tolerated_shapes() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    sb.kounta().set_error_shape(ErrorShape::ErrorMessage);
    let (status, body) = status_json(crm.get("/customers/1")).await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"error_message": "customer 1 not found"}));

    sb.kounta().set_error_shape(ErrorShape::Message);
    let (status, body) = status_json(crm.post("/customers", &json!({"email": "a@b"}))).await;
    assert_eq!(status, 400);
    assert_eq!(body, json!({"message": "first_name is required"}));

    sb.kounta().set_error_shape(ErrorShape::Standard);
    let (_, body) = status_json(crm.get("/customers/1")).await;
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn an_update_can_answer_an_empty_body() {
    let sb = start().await;
    let id = sb.kounta().insert(person("Ada", "ada@example.com"));
    sb.kounta().set_update_answers_empty(true);
    let crm = Crm::new(&sb);
    let r = crm
        .put(
            &format!("/customers/{id}"),
            &json!({"last_name": "Lovelace"}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.expect("body").is_empty());
    assert_eq!(sb.kounta().get(id).expect("there").last_name, "Lovelace");
}
