//! The fake FarmFlow against `api/farmflow.md`, with plain `reqwest`.

use farmsync::sandbox::{
    ACTIVE_ORDER_REFUSAL, Envelope, FarmflowDeleteError, FarmflowEndpoint, FarmflowOptions,
    FarmflowRecord, RecurringStatus, SandboxOptions,
};
use serde_json::{Value, json};

use crate::sandbox_support::{Farm, http, start, start_with, status_json};

fn person(first: &str, email: &str) -> FarmflowRecord {
    FarmflowRecord {
        firstname: first.into(),
        lastname: "Grower".into(),
        email: email.into(),
        ..FarmflowRecord::default()
    }
}

#[tokio::test]
async fn the_api_key_is_required_in_the_configured_header() {
    let sb = start().await;
    let farm = Farm::new(&sb);
    let url = format!("{}/customers-get", farm.base);
    let (status, body) = status_json(http().get(&url)).await;
    assert_eq!(status, 401);
    assert_eq!(body["status"], "error");
    assert!(body["message"].is_string());
    let wrong = http().get(&url).header("Authorization", "Bearer nope");
    assert_eq!(status_json(wrong).await.0, 401);
    let no_prefix = http()
        .get(&url)
        .header("Authorization", sb.farmflow().api_key());
    assert_eq!(status_json(no_prefix).await.0, 401);
    assert_eq!(status_json(farm.get("/customers-get")).await.0, 200);

    let custom = start_with(SandboxOptions {
        farmflow: FarmflowOptions {
            api_key: "k-123".into(),
            auth_header: "X-Api-Key".into(),
            auth_prefix: String::new(),
            ..FarmflowOptions::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    let url = format!("{}/customers-get", custom.farmflow_url());
    let ok = http().get(&url).header("X-Api-Key", "k-123");
    assert_eq!(status_json(ok).await.0, 200);
    let in_authorization = http().get(&url).header("Authorization", "Bearer k-123");
    assert_eq!(status_json(in_authorization).await.0, 401);
}

#[tokio::test]
async fn customers_round_trip_with_string_ids_in_the_standard_envelope() {
    let sb = start().await;
    let farm = Farm::new(&sb);
    let (status, body) = status_json(farm.post(
        "/customer-create",
        &json!({"firstname": "Ruby", "lastname": "Thompson", "email": "ruby@example.com",
                "state": "nsw", "country": "Australia", "notes": "gate code 1234"}),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "success");
    let created = &body["data"];
    let id = created["id"].as_str().expect("id as a string").to_owned();
    assert_eq!(created["firstname"], "Ruby");
    assert_eq!(created["state"], "nsw", "no normalising by default");
    assert_eq!(created["company"], "", "empty fields are \"\"");
    let keys: Vec<&str> = created
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "id",
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
    ] {
        assert!(keys.contains(&field), "{field} in {keys:?}");
    }

    let (status, body) = status_json(farm.post("/customer-get", &json!({"id": id}))).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], *created);

    let (status, body) = status_json(farm.get("/customers-get")).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([created]));

    let (status, body) = status_json(farm.post("/customer-delete", &json!({"id": id}))).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!({"id": id}));
    assert!(sb.farmflow().customers().is_empty());
}

#[tokio::test]
async fn firstname_is_required_on_create_and_update() {
    let sb = start().await;
    let id = sb.farmflow().insert(person("Ruby", "ruby@example.com"));
    let farm = Farm::new(&sb);
    let (status, body) =
        status_json(farm.post("/customer-create", &json!({"lastname": "X"}))).await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "error");
    assert!(
        body["message"]
            .as_str()
            .expect("text")
            .contains("firstname")
    );
    let (status, _) = status_json(farm.post(
        "/customer-update",
        &json!({"id": id.to_string(), "email": "new@example.com"}),
    ))
    .await;
    assert_eq!(status, 400);
    assert_eq!(sb.farmflow().customers().len(), 1);
    assert_eq!(
        sb.farmflow().get(id).expect("there").email,
        "ruby@example.com"
    );
}

#[tokio::test]
async fn update_replaces_the_whole_record() {
    let sb = start().await;
    let id = sb.farmflow().insert(FarmflowRecord {
        company: "Thompson Greens".into(),
        phone: "0455 555 909".into(),
        notes: "back door".into(),
        city: "Byron Bay".into(),
        ..person("Ruby", "ruby@example.com")
    });
    let farm = Farm::new(&sb);
    let (status, body) = status_json(farm.post(
        "/customer-update",
        &json!({"id": id.to_string(), "firstname": "Ruby", "email": "ruby@new.example"}),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["email"], "ruby@new.example");
    assert_eq!(
        sb.farmflow().get(id),
        Some(FarmflowRecord {
            id,
            firstname: "Ruby".into(),
            email: "ruby@new.example".into(),
            ..FarmflowRecord::default()
        }),
        "every field not sent is blanked"
    );
}

#[tokio::test]
async fn ids_may_be_sent_as_numbers_and_unknown_ids_are_404() {
    let sb = start().await;
    let id = sb.farmflow().insert(person("Ruby", "ruby@example.com"));
    let farm = Farm::new(&sb);
    let (status, body) = status_json(farm.post("/customer-get", &json!({"id": id}))).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["id"], id.to_string());
    let (status, _) =
        status_json(farm.post("/customer-update", &json!({"id": id, "firstname": "Rubes"}))).await;
    assert_eq!(status, 200);
    assert_eq!(sb.farmflow().get(id).expect("there").firstname, "Rubes");

    for path in ["/customer-get", "/customer-delete"] {
        let (status, body) = status_json(farm.post(path, &json!({"id": "999"}))).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["status"], "error");
    }
    let (status, _) = status_json(farm.post(
        "/customer-update",
        &json!({"id": "999", "firstname": "Ghost"}),
    ))
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        sb.farmflow().customers().len(),
        1,
        "an update creates nothing"
    );
    let (status, _) = status_json(farm.post("/customer-get", &json!({"id": "abc"}))).await;
    assert_eq!(status, 400);
    let (status, _) = status_json(farm.post("/customer-get", &json!({}))).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn delete_is_refused_while_a_recurring_order_is_active_and_cascades_otherwise() {
    let sb = start().await;
    let f = sb.farmflow();
    let id = f.insert(person("Ruby", "ruby@example.com"));
    let other = f.insert(person("Henry", "henry@example.com"));
    let order = f.add_recurring_order(id, RecurringStatus::Active);
    f.add_one_time_order(id, "2030-01-01");
    let kept = f.add_one_time_order(other, "2030-01-01");
    let farm = Farm::new(&sb);

    let (status, body) =
        status_json(farm.post("/customer-delete", &json!({"id": id.to_string()}))).await;
    assert_eq!(status, 409);
    assert_eq!(
        body,
        json!({"status": "error", "message": ACTIVE_ORDER_REFUSAL})
    );
    assert!(f.get(id).is_some());

    assert!(f.set_recurring_status(order, RecurringStatus::Paused));
    let (status, _) =
        status_json(farm.post("/customer-delete", &json!({"id": id.to_string()}))).await;
    assert_eq!(status, 200);
    assert!(f.get(id).is_none());
    assert!(
        f.recurring_orders().is_empty(),
        "their recurring orders went too"
    );
    let left: Vec<i64> = f.one_time_orders().iter().map(|o| o.id).collect();
    assert_eq!(left, vec![kept], "only their one-time orders went");
}

#[tokio::test]
async fn a_person_deleting_in_the_ui_meets_the_same_rule() {
    let sb = start().await;
    let f = sb.farmflow();
    let id = f.insert(person("Ruby", "ruby@example.com"));
    let order = f.add_recurring_order(id, RecurringStatus::Active);
    assert_eq!(
        f.delete(id),
        Err(FarmflowDeleteError::ActiveRecurringOrder(id))
    );
    f.set_recurring_status(order, RecurringStatus::Cancelled);
    assert_eq!(f.delete(id), Ok(()));
    assert_eq!(f.delete(id), Err(FarmflowDeleteError::NotFound(id)));
    assert!(f.recurring_orders().is_empty());
    assert_eq!(f.stats().total, 0, "helpers are not requests");
}

#[tokio::test]
async fn order_lists_use_the_documented_shapes() {
    let sb = start().await;
    let f = sb.farmflow();
    let id = f.insert(person("Ruby", "ruby@example.com"));
    let r = f.add_recurring_order(id, RecurringStatus::Paused);
    let o = f.add_one_time_order(id, "2030-06-01");
    let farm = Farm::new(&sb);

    let (status, body) = status_json(farm.get("/recurring-orders-get")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!([{"id": r.to_string(), "customer-id": id.to_string(), "status": "paused",
                "start-date": "2026-01-05", "end-date": ""}])
    );
    let (status, body) = status_json(farm.get("/one-time-orders-get")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!([{"id": o.to_string(), "customer-id": id.to_string(), "pickup-location-id": "1",
                "fulfillment": "Delivery", "instructions": "", "fulfill-date": "2030-06-01"}])
    );
    let stats = f.stats();
    assert_eq!(stats.count(FarmflowEndpoint::RecurringOrders), 1);
    assert_eq!(stats.count(FarmflowEndpoint::OneTimeOrders), 1);
    assert_eq!(stats.reads, 2);
}

#[tokio::test]
async fn envelope_variants_are_selectable() {
    let sb = start().await;
    let f = sb.farmflow();
    let id = f.insert(person("Ruby", "ruby@example.com"));
    f.add_recurring_order(id, RecurringStatus::Active);
    f.add_one_time_order(id, "");
    let farm = Farm::new(&sb);

    f.set_envelope(Envelope::Bare);
    let (_, list) = status_json(farm.get("/customers-get")).await;
    assert_eq!(list[0]["firstname"], "Ruby");
    let (_, one) = status_json(farm.post("/customer-get", &json!({"id": id.to_string()}))).await;
    assert_eq!(one["id"], id.to_string());

    f.set_envelope(Envelope::ResourceKey);
    let (_, list) = status_json(farm.get("/customers-get")).await;
    assert_eq!(list["customers"][0]["firstname"], "Ruby");
    let (_, one) = status_json(farm.post("/customer-get", &json!({"id": id.to_string()}))).await;
    assert_eq!(one["customer"]["firstname"], "Ruby");
    let (_, orders) = status_json(farm.get("/recurring-orders-get")).await;
    assert_eq!(orders["recurring-orders"][0]["status"], "active");
    let (_, orders) = status_json(farm.get("/one-time-orders-get")).await;
    assert_eq!(orders["one-time-orders"][0]["fulfill-date"], "");

    // Errors keep their shape whatever the envelope.
    let (status, body) = status_json(farm.post("/customer-get", &json!({"id": "999"}))).await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], "error");
}

#[tokio::test]
async fn ids_as_numbers_and_null_for_empty_are_selectable() {
    let sb = start_with(SandboxOptions {
        farmflow: FarmflowOptions {
            ids_as_numbers: true,
            null_for_empty: true,
            ..FarmflowOptions::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    let f = sb.farmflow();
    let id = f.insert(person("Ruby", "ruby@example.com"));
    f.add_recurring_order(id, RecurringStatus::Active);
    let farm = Farm::new(&sb);
    let (_, body) = status_json(farm.get("/customers-get")).await;
    let c = &body["data"][0];
    assert_eq!(c["id"], json!(id));
    assert_eq!(c["company"], Value::Null);
    assert_eq!(c["email"], "ruby@example.com");
    let (_, body) = status_json(farm.get("/recurring-orders-get")).await;
    assert_eq!(body["data"][0]["customer-id"], json!(id));
    assert_eq!(body["data"][0]["end-date"], Value::Null);

    f.set_ids_as_numbers(false);
    f.set_null_for_empty(false);
    let (_, body) = status_json(farm.get("/customers-get")).await;
    assert_eq!(body["data"][0]["id"], json!(id.to_string()));
    assert_eq!(body["data"][0]["company"], "");
}

#[tokio::test]
async fn upper_casing_state_applies_to_api_writes() {
    let sb = start().await;
    let f = sb.farmflow();
    f.set_uppercase_state(true);
    let farm = Farm::new(&sb);
    let (_, body) = status_json(farm.post(
        "/customer-create",
        &json!({"firstname": "Ruby", "state": "nsw"}),
    ))
    .await;
    assert_eq!(
        body["data"]["state"], "NSW",
        "the answer shows the stored value"
    );
    let id: i64 = body["data"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    assert_eq!(f.get(id).expect("stored").state, "NSW");
    let (_, body) = status_json(farm.post(
        "/customer-update",
        &json!({"id": id, "firstname": "Ruby", "state": "vic"}),
    ))
    .await;
    assert_eq!(body["data"]["state"], "VIC");
    let by_hand = f.insert(FarmflowRecord {
        state: "qld".into(),
        ..person("Henry", "")
    });
    assert_eq!(f.get(by_hand).expect("there").state, "qld");
}

#[tokio::test]
async fn bodies_fields_methods_and_paths_are_checked() {
    let sb = start().await;
    let farm = Farm::new(&sb);
    let (status, _) = status_json(
        farm.http
            .post(format!("{}/customer-create", farm.base))
            .header(&farm.header, &farm.value)
            .body("not json"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = status_json(farm.post(
        "/customer-create",
        &json!({"firstname": "Ruby", "phone": true}),
    ))
    .await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().expect("text").contains("phone"));
    let (status, body) = status_json(farm.post(
        "/customer-create",
        &json!({"firstname": "Ruby", "zip": 2481, "email": null}),
    ))
    .await;
    assert_eq!(status, 200, "numbers and nulls are tolerated");
    assert_eq!(body["data"]["zip"], "2481");
    assert_eq!(body["data"]["email"], "");

    let wrong_method = farm.post("/customers-get", &json!({}));
    assert_eq!(status_json(wrong_method).await.0, 405);
    assert_eq!(status_json(farm.get("/customer-get")).await.0, 405);
    assert_eq!(status_json(farm.get("/customers")).await.0, 404);
    let stats = sb.farmflow().stats();
    assert_eq!(stats.unrouted, 3);
    assert_eq!(stats.writes, 3);
}

#[tokio::test]
async fn errors_can_come_with_a_200_and_creates_with_the_id_alone() {
    let sb = start().await;
    let f = sb.farmflow();
    let id = f.insert(person("Ruby", "ruby@example.com"));
    f.add_recurring_order(id, RecurringStatus::Active);
    f.set_errors_as_200(true);
    let farm = Farm::new(&sb);
    let (status, body) =
        status_json(farm.post("/customer-delete", &json!({"id": id.to_string()}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "error", "message": ACTIVE_ORDER_REFUSAL})
    );
    let (status, body) = status_json(farm.post("/customer-get", &json!({"id": "999"}))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("error")));
    assert!(f.get(id).is_some());

    f.set_errors_as_200(false);
    f.set_create_returns_id_only(true);
    let (status, body) =
        status_json(farm.post("/customer-create", &json!({"firstname": "Henry"}))).await;
    assert_eq!(status, 200);
    let new_id = body["data"]["id"].as_str().expect("id").to_owned();
    assert_eq!(body["data"], json!({"id": new_id}));
    assert_eq!(
        f.get(new_id.parse().expect("numeric")).map(|c| c.firstname),
        Some("Henry".into())
    );
}
