//! Answers the sandbox has no knob for, served by a recording stub over real HTTP: next-page
//! links that leave the host or loop, a create with no `Location`, FarmFlow's 2xx bodies that
//! say error, an id-only create answer, and a server echoing a secret.

use std::time::Duration;

use farmsync::farmflow::model::FarmflowFields;
use farmsync::farmflow::{DeleteOutcome, FarmflowClient, FarmflowOptions};
use farmsync::http::ApiError;
use farmsync::ids::{FarmflowId, KountaId};
use farmsync::kounta::model::KountaCustomerWrite;
use farmsync::kounta::{KountaAuth, KountaClient, KountaOptions, ListingCut};

use crate::client_support::*;

fn crm_at(url: &str) -> KountaClient {
    kounta_with(KountaOptions {
        base_url: format!("{url}/v1").parse().unwrap(),
        company_id: Some(7),
        auth: KountaAuth::Basic {
            client_id: "cid".into(),
            client_secret: "csecret-value".into(),
        },
        requests_per_minute: FAST_RATE,
        timeout: Duration::from_secs(5),
    })
}

fn farm_at(url: &str) -> FarmflowClient {
    farmflow_with(FarmflowOptions {
        base_url: url.parse().unwrap(),
        api_key: "ff-key-0123456789".into(),
        auth_header: "Authorization".to_owned(),
        auth_prefix: "Bearer ".to_owned(),
        requests_per_minute: FAST_RATE,
        timeout: Duration::from_secs(5),
    })
}

#[tokio::test]
async fn a_next_page_on_another_host_is_not_followed() {
    let (url, mut seen) = recorder(
        200,
        vec![(
            "x-next-page",
            "http://elsewhere.example/v1/companies/7/customers?page=2".to_owned(),
        )],
        r#"[{"id": 1, "first_name": "A"}]"#,
    )
    .await;

    let listing = crm_at(&url).list().await.unwrap();

    assert!(!listing.complete);
    assert_eq!(listing.items.len(), 1);
    assert!(
        matches!(listing.error, Some(ListingCut::BadNextPage { .. })),
        "{:?}",
        listing.error
    );
    seen.recv().await.unwrap();
    assert!(seen.try_recv().is_err(), "credentials went to another host");
}

#[tokio::test]
async fn a_next_page_that_loops_ends_the_listing_as_incomplete() {
    let (url, mut seen) = recorder(
        200,
        vec![("x-next-page", "/v1/companies/7/customers?page=2".to_owned())],
        r#"[{"id": 1, "first_name": "A"}]"#,
    )
    .await;

    let listing = crm_at(&url).list().await.unwrap();

    assert!(!listing.complete);
    assert_eq!(listing.pages, 2);
    assert_eq!(listing.items.len(), 1, "the repeated item is kept once");
    match listing.error {
        Some(ListingCut::BadNextPage { reason, .. }) => {
            assert!(reason.contains("already read"), "{reason}")
        }
        other => panic!("expected a loop to be caught, got {other:?}"),
    }
    assert_eq!(seen.recv().await.unwrap().path, "/v1/companies/7/customers");
    assert_eq!(
        seen.recv().await.unwrap().path,
        "/v1/companies/7/customers?page=2"
    );
}

#[tokio::test]
async fn a_create_answered_without_location_is_outcome_unknown() {
    let (url, _seen) = recorder(201, vec![], "").await;

    let err = crm_at(&url)
        .create(&KountaCustomerWrite {
            first_name: Some("A".to_owned()),
            email: Some("a@example.com".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap_err();

    assert!(matches!(err, ApiError::OutcomeUnknown { .. }), "{err:?}");
}

#[tokio::test]
async fn an_update_answered_with_an_empty_body_is_fine() {
    let (url, _seen) = recorder(200, vec![], "").await;

    let answer = crm_at(&url)
        .update(
            KountaId(3),
            &KountaCustomerWrite {
                phone: Some("1".to_owned()),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    assert_eq!(answer, None);
}

#[tokio::test]
async fn a_lookup_302_without_an_id_is_a_decode_error() {
    let (url, _seen) = recorder(
        302,
        vec![("location", "/v1/companies/7/customers/".to_owned())],
        "",
    )
    .await;

    let err = crm_at(&url)
        .find_by_email("a@example.com")
        .await
        .unwrap_err();

    assert!(matches!(err, ApiError::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn a_2xx_delete_saying_error_about_a_recurring_order_is_blocked() {
    let (url, _seen) = recorder(
        200,
        vec![],
        r#"{"status":"error","message":"Customer has an active recurring order and cannot be deleted"}"#,
    )
    .await;

    let outcome = farm_at(&url).delete(FarmflowId(5)).await.unwrap();

    assert!(
        matches!(outcome, DeleteOutcome::Blocked { ref reason } if reason.contains("recurring"))
    );
}

#[tokio::test]
async fn a_2xx_saying_success_false_is_a_failure() {
    let (url, _seen) = recorder(
        200,
        vec![],
        r#"{"success": false, "message": "account suspended"}"#,
    )
    .await;
    let client = farm_at(&url);

    let err = client.list().await.unwrap_err();
    match &err {
        ApiError::Validation {
            status: 200,
            message,
            ..
        } => {
            assert!(message.contains("account suspended"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A delete refused for another reason is an error, not Blocked.
    let err = client.delete(FarmflowId(5)).await.unwrap_err();
    assert!(matches!(err, ApiError::Validation { .. }), "{err:?}");
    // A create the body says failed did not happen: an error, not OutcomeUnknown.
    let err = client
        .create(&FarmflowFields {
            firstname: "A".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Validation { .. }), "{err:?}");
}

#[tokio::test]
async fn a_create_answered_with_only_an_id_keeps_the_sent_fields() {
    let (url, mut seen) = recorder(200, vec![], r#"{"status":"success","data":{"id":"77"}}"#).await;
    let fields = FarmflowFields {
        firstname: "Ada".to_owned(),
        email: "ada@example.com".to_owned(),
        country: "USA".to_owned(),
        ..Default::default()
    };

    let created = farm_at(&url).create(&fields).await.unwrap();

    assert_eq!(created.id, FarmflowId(77));
    assert_eq!(created.fields, fields);
    let sent: serde_json::Value = serde_json::from_str(&seen.recv().await.unwrap().body).unwrap();
    assert_eq!(sent["firstname"], "Ada");
    assert_eq!(sent["address2"], "", "every field is sent");
    assert!(sent.get("id").is_none());
}

#[tokio::test]
async fn a_server_echoing_the_key_does_not_get_it_into_an_error() {
    let (url, _seen) = recorder(
        500,
        vec![],
        "upstream rejected header Authorization: Bearer ff-key-0123456789",
    )
    .await;

    let err = farm_at(&url).list().await.unwrap_err();

    let text = err.to_string();
    assert!(
        matches!(err, ApiError::Server { status: 500, .. }),
        "{err:?}"
    );
    assert!(!text.contains("ff-key-0123456789"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
}

#[tokio::test]
async fn debug_output_of_options_and_clients_shows_no_secret() {
    let (url, _seen) = recorder(200, vec![], "[]").await;
    let options = FarmflowOptions {
        base_url: url.parse().unwrap(),
        api_key: "ff-key-0123456789".into(),
        auth_header: "Authorization".to_owned(),
        auth_prefix: "Bearer ".to_owned(),
        requests_per_minute: 1,
        timeout: Duration::from_secs(1),
    };
    let crm = crm_at(&url);

    let shown = format!("{options:?} {:?} {crm:?}", farm_at(&url));

    assert!(!shown.contains("ff-key-0123456789"), "{shown}");
    assert!(!shown.contains("csecret-value"), "{shown}");
}
