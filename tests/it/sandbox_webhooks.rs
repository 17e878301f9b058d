//! Webhook registration and delivery of the fake CRM, with plain `reqwest` and a small
//! receiver.

use std::time::Duration;

use farmsync::sandbox::{
    DeliveryOutcome, KountaRecord, Sandbox, WebhookAction, WebhookFault, WebhookTopic, When,
    webhook_signature,
};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::sandbox_support::{Crm, Received, receiver, start, status_json};

async fn register(crm: &Crm, topic: &str, address: &str) -> i64 {
    let (status, body) = status_json(crm.post(
        "/webhooks",
        &json!({"topic": topic, "address": address, "format": "json",
                "headers": {"X-Farmsync-Secret": "s3cret"}}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().expect("webhook id")
}

async fn next(rx: &mut UnboundedReceiver<Received>) -> Received {
    rx.recv().await.expect("a delivery")
}

/// A delivery's body as JSON.
fn json_of(delivery: &Received) -> Value {
    serde_json::from_slice(&delivery.body).expect("json body")
}

/// Creates a customer through the API, `name` its first name, `name@example.com` its email.
async fn person(crm: &Crm, name: &str) -> i64 {
    let email = format!("{}@example.com", name.to_lowercase());
    crm.create(&json!({"first_name": name, "email": email}))
        .await
}

/// A sandbox whose CRM delivers `customers/created` to a new receiver, the first delivery
/// meeting `action`.
async fn created_hook_whose_first_delivery_is(
    action: WebhookAction,
) -> (Sandbox, Crm, UnboundedReceiver<Received>) {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let (url, rx) = receiver(false).await;
    register(&crm, "customers/created", &url).await;
    sb.kounta().inject_webhook_fault(WebhookFault {
        when: When::Nth(1),
        action,
    });
    (sb, crm, rx)
}

#[tokio::test]
async fn registration_checks_topic_address_format_and_headers() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let bad = [
        json!({"topic": "orders/created", "address": "http://127.0.0.1:9/x"}),
        json!({"topic": "customers/created", "address": "not a url"}),
        json!({"topic": "customers/created", "address": "ftp://example.com/x"}),
        json!({"topic": "customers/created", "address": "http://127.0.0.1:9/x", "format": "xml"}),
        json!({"topic": "customers/created", "address": "http://127.0.0.1:9/x",
               "headers": {"X-Kounta-Thing": "1"}}),
        json!({"topic": "customers/created", "address": "http://127.0.0.1:9/x",
               "headers": {"Content-Type": "text/plain"}}),
        json!({"topic": "customers/created", "address": "http://127.0.0.1:9/x",
               "headers": {"X-Number": 1}}),
    ];
    for body in bad {
        let (status, answer) = status_json(crm.post("/webhooks", &body)).await;
        assert_eq!(status, 400, "{body}");
        assert!(answer["error_description"].is_string());
    }
    assert!(sb.kounta().webhooks().is_empty());

    let (status, created) = status_json(crm.post(
        "/webhooks",
        &json!({"topic": "customers/updated", "address": "http://127.0.0.1:9/hook",
                "headers": {"Authorization": "Token t", "X-Farmsync-Secret": "s"}}),
    ))
    .await;
    assert_eq!(status, 201);
    assert_eq!(created["topic"], "customers/updated");
    assert_eq!(created["format"], "json");
    let id = created["id"].as_i64().expect("id");

    let (status, list) = status_json(crm.get("/webhooks")).await;
    assert_eq!(status, 200);
    assert_eq!(list, json!([created]));
    let held = sb.kounta().webhooks();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].topic, WebhookTopic::CustomerUpdated);
    assert_eq!(
        held[0].headers.get("X-Farmsync-Secret").map(String::as_str),
        Some("s")
    );

    let delete = |id: i64| {
        crm.req(
            reqwest::Method::DELETE,
            &crm.url(&format!("/webhooks/{id}")),
        )
    };
    assert_eq!(status_json(delete(id)).await.0, 204);
    assert_eq!(status_json(delete(id)).await.0, 404);
    assert_eq!(status_json(crm.get("/webhooks")).await.1, json!([]));
}

#[tokio::test]
async fn api_changes_are_delivered_signed_with_the_registered_headers() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let (url, mut rx) = receiver(false).await;
    register(&crm, "customers/created", &format!("{url}/created")).await;
    register(&crm, "customers/updated", &format!("{url}/updated")).await;

    let id = crm
        .create(&json!({"first_name": "Ada", "email": "ada@example.com",
                        "primary_address": {"city": "Perth", "country": "AU"}}))
        .await;
    let got = next(&mut rx).await;
    assert_eq!(got.path, "/created");
    let signature = got.headers["x-kounta-signature"].to_str().expect("ascii");
    assert_eq!(
        signature,
        webhook_signature(&got.body, sb.kounta().signature_token()),
        "hex HMAC-SHA256 of the raw body"
    );
    assert_eq!(signature.len(), 64);
    assert_eq!(got.headers["x-farmsync-secret"], "s3cret");
    assert_eq!(got.headers["content-type"], "application/json");
    let body = json_of(&got);
    assert_eq!(body["id"], id);
    for field in [
        "first_name",
        "last_name",
        "email",
        "phone",
        "mobile",
        "reference_id",
        "tags",
        "primary_address",
        "created_at",
    ] {
        assert!(body.get(field).is_some(), "complete record: {field}");
    }
    assert_eq!(body["primary_address"]["city"], "Perth");

    let (status, _) =
        status_json(crm.put(&format!("/customers/{id}"), &json!({"last_name": "L"}))).await;
    assert_eq!(status, 200);
    let got = next(&mut rx).await;
    assert_eq!(got.path, "/updated");
    let body = json_of(&got);
    assert_eq!(body["last_name"], "L");

    sb.kounta().wait_for_deliveries(2).await;
    let deliveries = sb.kounta().deliveries();
    assert!(
        deliveries
            .iter()
            .all(|d| d.outcome == DeliveryOutcome::Delivered(200) && d.customer_id == id)
    );
}

#[tokio::test]
async fn back_office_changes_are_delivered_too() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let (url, mut rx) = receiver(false).await;
    for topic in ["created", "updated", "deleted"] {
        register(
            &crm,
            &format!("customers/{topic}"),
            &format!("{url}/{topic}"),
        )
        .await;
    }
    let k = sb.kounta();
    let id = k.insert(KountaRecord {
        first_name: "Bob".into(),
        email: "bob@example.com".into(),
        ..KountaRecord::default()
    });
    assert_eq!(next(&mut rx).await.path, "/created");
    k.edit(id, |c| c.phone = "1".into());
    assert_eq!(next(&mut rx).await.path, "/updated");
    k.backoffice_delete(id);
    let got = next(&mut rx).await;
    assert_eq!(got.path, "/deleted");
    let body = json_of(&got);
    assert_eq!(
        (body["id"].as_i64(), body["phone"].as_str()),
        (Some(id), Some("1"))
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_block_the_api() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    let (url, mut rx) = receiver(true).await;
    register(&crm, "customers/created", &url).await;
    for n in 0..3 {
        let r = crm
            .post(
                "/customers",
                &json!({"first_name": "A", "email": format!("{n}@example.com")}),
            )
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("answered while the receiver hangs");
        assert_eq!(r.status(), 201);
    }
    for _ in 0..3 {
        next(&mut rx).await;
    }
    assert!(sb.kounta().deliveries().is_empty(), "none finished");
    sb.shutdown().await;
}

#[tokio::test]
async fn a_failing_receiver_is_recorded_and_changes_nothing() {
    let sb = start().await;
    let crm = Crm::new(&sb);
    // Nothing listens on port 9 of localhost.
    register(&crm, "customers/created", "http://127.0.0.1:9/hook").await;
    let id = person(&crm, "A").await;
    sb.kounta().wait_for_deliveries(1).await;
    let delivery = &sb.kounta().deliveries()[0];
    assert!(
        matches!(delivery.outcome, DeliveryOutcome::Failed(_)),
        "{delivery:?}"
    );
    assert_eq!(delivery.customer_id, id);
}

#[tokio::test]
async fn deliveries_can_be_duplicated() {
    let (sb, crm, mut rx) = created_hook_whose_first_delivery_is(WebhookAction::Duplicate).await;
    person(&crm, "A").await;
    let first = next(&mut rx).await;
    let second = next(&mut rx).await;
    assert_eq!(first.body, second.body);
    assert_eq!(
        first.headers["x-kounta-signature"],
        second.headers["x-kounta-signature"]
    );
    sb.kounta().wait_for_deliveries(2).await;
    assert_eq!(sb.kounta().deliveries().len(), 2);
}

#[tokio::test]
async fn deliveries_can_be_dropped() {
    let (sb, crm, mut rx) = created_hook_whose_first_delivery_is(WebhookAction::Drop).await;
    let dropped = person(&crm, "A").await;
    sb.kounta().wait_for_deliveries(1).await;
    assert_eq!(
        sb.kounta().deliveries()[0].outcome,
        DeliveryOutcome::Dropped
    );
    assert!(rx.try_recv().is_err(), "a dropped delivery is never sent");

    let kept = person(&crm, "B").await;
    let got = next(&mut rx).await;
    let body = json_of(&got);
    assert_eq!(body["id"], kept);
    assert_ne!(kept, dropped);
}

#[tokio::test]
async fn a_delayed_delivery_arrives_after_a_later_one() {
    let (_sb, crm, mut rx) =
        created_hook_whose_first_delivery_is(WebhookAction::Delay(Duration::from_secs(1))).await;
    let late = person(&crm, "A").await;
    let early = person(&crm, "B").await;
    let mut order = Vec::new();
    for _ in 0..2 {
        let got = next(&mut rx).await;
        let body = json_of(&got);
        order.push(body["id"].as_i64().expect("id"));
    }
    assert_eq!(order, vec![early, late], "out of order");
}
