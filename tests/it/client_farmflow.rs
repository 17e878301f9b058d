//! The FarmFlow client against the sandbox: each contract point of `api/farmflow.md` and each
//! tolerated variant.

use std::time::Duration;

use farmsync::farmflow::model::{FarmflowCustomer, FarmflowFields};
use farmsync::farmflow::{DeleteOutcome, FarmflowOptions};
use farmsync::http::{ApiError, EXCERPT_CHARS};
use farmsync::ids::FarmflowId;
use farmsync::sandbox::{
    ACTIVE_ORDER_REFUSAL, Envelope, FarmflowEndpoint, FarmflowOptions as FakeOptions,
    FarmflowRecord, Fault, FaultAction, RecurringStatus, SandboxOptions, When,
};

use crate::client_support::*;

fn fields_of(r: &FarmflowRecord) -> FarmflowFields {
    FarmflowFields {
        company: r.company.clone(),
        firstname: r.firstname.clone(),
        lastname: r.lastname.clone(),
        address: r.address.clone(),
        address2: r.address2.clone(),
        city: r.city.clone(),
        state: r.state.clone(),
        zip: r.zip.clone(),
        phone: r.phone.clone(),
        email: r.email.clone(),
        country: r.country.clone(),
        notes: r.notes.clone(),
    }
}

fn as_client_sees(r: &FarmflowRecord) -> FarmflowCustomer {
    FarmflowCustomer {
        id: FarmflowId(r.id),
        fields: fields_of(r),
    }
}

fn new_fields(n: usize) -> FarmflowFields {
    fields_of(&farm_person(n))
}

#[tokio::test]
async fn every_envelope_and_id_encoding_lists_the_same_customers() {
    let sb = sandbox().await;
    for n in 0..4 {
        sb.farmflow().insert(farm_person(n));
    }
    // One with empty fields, to see `""` and `null` read alike.
    sb.farmflow().insert(FarmflowRecord {
        firstname: "Only".to_owned(),
        ..FarmflowRecord::default()
    });
    let expected: Vec<FarmflowCustomer> = sb
        .farmflow()
        .customers()
        .iter()
        .map(as_client_sees)
        .collect();
    let client = farmflow(&sb);

    for envelope in [Envelope::Standard, Envelope::Bare, Envelope::ResourceKey] {
        for ids_as_numbers in [false, true] {
            for null_for_empty in [false, true] {
                sb.farmflow().set_envelope(envelope);
                sb.farmflow().set_ids_as_numbers(ids_as_numbers);
                sb.farmflow().set_null_for_empty(null_for_empty);
                let shape = format!("{envelope:?} numbers={ids_as_numbers} nulls={null_for_empty}");

                assert_eq!(client.list().await.unwrap(), expected, "{shape}");
                let one = &expected[4];
                assert_eq!(
                    client.get(one.id).await.unwrap().as_ref(),
                    Some(one),
                    "{shape}"
                );
            }
        }
    }
}

#[tokio::test]
async fn get_of_a_missing_customer_is_none() {
    let sb = sandbox().await;
    let client = farmflow(&sb);

    assert_eq!(client.get(FarmflowId(4242)).await.unwrap(), None);
}

#[tokio::test]
async fn create_returns_the_customer_with_its_new_id() {
    for envelope in [Envelope::Standard, Envelope::Bare, Envelope::ResourceKey] {
        let sb = sandbox().await;
        sb.farmflow().set_envelope(envelope);
        let client = farmflow(&sb);

        let created = client.create(&new_fields(1)).await.expect("created");

        let stored = sb
            .farmflow()
            .get(created.id.0)
            .expect("stored under the returned id");
        assert_eq!(created, as_client_sees(&stored), "{envelope:?}");
        assert_eq!(created.fields, new_fields(1), "{envelope:?}");
    }
}

#[tokio::test]
async fn update_sends_the_whole_record() {
    let sb = sandbox_with(SandboxOptions {
        farmflow: FakeOptions {
            uppercase_state: true,
            ..FakeOptions::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    let id = sb.farmflow().insert(farm_person(3));
    let client = farmflow(&sb);
    let mut customer = client.get(FarmflowId(id)).await.unwrap().unwrap();
    customer.fields.phone = "0400 111 222".to_owned();
    customer.fields.state = "tas".to_owned();

    let updated = client.update(&customer).await.expect("updated");

    let stored = sb.farmflow().get(id).unwrap();
    assert_eq!(stored.phone, "0400 111 222");
    assert_eq!(
        stored.notes, "keeps the trays",
        "a field not changed is still sent"
    );
    assert_eq!(stored.company, "Greens 3");
    // FarmFlow's answer is what it stored, its own spelling included.
    assert_eq!(updated, as_client_sees(&stored));
    assert_eq!(updated.fields.state, "TAS");
}

#[tokio::test]
async fn update_of_a_missing_customer_is_not_found() {
    let sb = sandbox().await;
    let client = farmflow(&sb);

    let err = client
        .update(&FarmflowCustomer {
            id: FarmflowId(999),
            fields: new_fields(1),
        })
        .await
        .unwrap_err();

    assert!(matches!(err, ApiError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn create_without_a_first_name_is_a_validation_error() {
    let sb = sandbox().await;

    let err = farmflow(&sb)
        .create(&FarmflowFields::default())
        .await
        .unwrap_err();

    match err {
        ApiError::Validation {
            status: 400,
            message,
            ..
        } => assert!(message.contains("firstname"), "{message}"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert!(sb.farmflow().customers().is_empty());
}

#[tokio::test]
async fn delete_is_deleted_blocked_or_already_gone() {
    let sb = sandbox().await;
    let free = sb.farmflow().insert(farm_person(1));
    let held = sb.farmflow().insert(farm_person(2));
    sb.farmflow()
        .add_recurring_order(held, RecurringStatus::Active);
    let client = farmflow(&sb);

    assert_eq!(
        client.delete(FarmflowId(free)).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        client.delete(FarmflowId(held)).await.unwrap(),
        DeleteOutcome::Blocked {
            reason: ACTIVE_ORDER_REFUSAL.to_owned()
        }
    );
    assert_eq!(
        client.delete(FarmflowId(free)).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );

    assert!(sb.farmflow().get(free).is_none());
    assert!(sb.farmflow().get(held).is_some());
    // A refusal is an answer, not a failure to retry.
    assert_eq!(sb.farmflow().stats().count(FarmflowEndpoint::Delete), 3);
}

#[tokio::test]
async fn orders_are_read_with_their_customers() {
    let sb = sandbox().await;
    let a = sb.farmflow().insert(farm_person(1));
    let b = sb.farmflow().insert(farm_person(2));
    sb.farmflow()
        .add_recurring_order(a, RecurringStatus::Active);
    sb.farmflow()
        .add_recurring_order(b, RecurringStatus::Paused);
    sb.farmflow().add_one_time_order(b, "2030-01-02");
    sb.farmflow().add_one_time_order(a, "");
    let client = farmflow(&sb);

    for envelope in [Envelope::Standard, Envelope::Bare, Envelope::ResourceKey] {
        sb.farmflow().set_envelope(envelope);
        sb.farmflow().set_ids_as_numbers(envelope == Envelope::Bare);

        let recurring = client.recurring_orders().await.unwrap();
        let active: Vec<FarmflowId> = recurring
            .iter()
            .filter(|o| o.is_active())
            .map(|o| o.customer_id)
            .collect();
        assert_eq!(recurring.len(), 2, "{envelope:?}");
        assert_eq!(active, vec![FarmflowId(a)], "{envelope:?}");

        let one_time = client.one_time_orders().await.unwrap();
        let mut dates: Vec<(FarmflowId, String)> = one_time
            .iter()
            .map(|o| (o.customer_id, o.fulfill_date.clone()))
            .collect();
        dates.sort();
        assert_eq!(
            dates,
            vec![
                (FarmflowId(a), String::new()),
                (FarmflowId(b), "2030-01-02".to_owned())
            ],
            "{envelope:?}"
        );
    }
}

#[tokio::test]
async fn a_custom_auth_header_and_prefix_are_sent() {
    let sb = sandbox_with(SandboxOptions {
        farmflow: FakeOptions {
            auth_header: "X-Api-Key".to_owned(),
            auth_prefix: String::new(),
            ..FakeOptions::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    sb.farmflow().insert(farm_person(1));

    let report = farmflow(&sb).check().await.unwrap();

    assert_eq!(report.to_string(), "FarmFlow: ok — 1 customers");
}

#[tokio::test]
async fn a_wrong_key_names_farmflow_the_401_and_the_header_but_not_the_key() {
    let sb = sandbox().await;
    let client = farmflow_with(FarmflowOptions {
        api_key: "not-the-key-123".into(),
        ..farmflow_options(&sb)
    });

    let err = client.check().await.unwrap_err();

    assert!(err.is_auth(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("FarmFlow"), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("Authorization"), "{text}");
    assert!(text.contains("farmflow.api_key or auth_header"), "{text}");
    assert!(!text.contains("not-the-key-123"), "{text}");
    assert_eq!(
        sb.farmflow().stats().total,
        1,
        "a refused key is not retried"
    );
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_outcome_unknown_and_exists_once() {
    for action in [
        FaultAction::ApplyThenDrop,
        FaultAction::ApplyThen500,
        FaultAction::TruncatedJson,
    ] {
        let sb = sandbox().await;
        sb.farmflow().insert(farm_person(1));
        sb.farmflow()
            .inject(Fault::new(FarmflowEndpoint::Create, When::Nth(1), action));
        let client = farmflow(&sb);

        let err = client.create(&new_fields(2)).await.unwrap_err();

        assert!(
            matches!(err, ApiError::OutcomeUnknown { .. }),
            "{action:?}: {err:?}"
        );
        assert_eq!(
            sb.farmflow().customers().len(),
            2,
            "{action:?}: exactly one new record"
        );
        assert_eq!(
            sb.farmflow().stats().count(FarmflowEndpoint::Create),
            1,
            "never resent"
        );
    }
}

#[tokio::test]
async fn a_create_dropped_before_it_was_applied_is_still_not_resent() {
    let sb = sandbox().await;
    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Create,
        When::Nth(1),
        FaultAction::Drop,
    ));
    let client = farmflow(&sb);

    let err = client.create(&new_fields(2)).await.unwrap_err();

    // The client cannot tell a drop before applying from one after: it must not guess.
    assert!(matches!(err, ApiError::OutcomeUnknown { .. }), "{err:?}");
    assert!(sb.farmflow().customers().is_empty());
    assert_eq!(sb.farmflow().stats().count(FarmflowEndpoint::Create), 1);
}

#[tokio::test]
async fn html_502_and_truncated_json_on_reads_carry_an_excerpt() {
    let sb = sandbox().await;
    sb.farmflow().insert(farm_person(1));
    let client = farmflow(&sb);

    let html = sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::List,
        When::Every,
        FaultAction::Html502,
    ));
    let err = client.list().await.unwrap_err();
    match &err {
        ApiError::Server {
            status: 502,
            excerpt,
            ..
        } => {
            assert!(
                excerpt.contains("<title>502 Bad Gateway</title>"),
                "{excerpt}"
            );
            assert!(excerpt.chars().count() <= EXCERPT_CHARS);
        }
        other => panic!("expected a 502, got {other:?}"),
    }
    assert_eq!(sb.farmflow().stats().count(FarmflowEndpoint::List), 6);
    sb.farmflow().remove_fault(html);

    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::List,
        When::Nth(1),
        FaultAction::TruncatedJson,
    ));
    let err = client.list().await.unwrap_err();
    match &err {
        ApiError::Decode { excerpt, .. } => {
            assert!(excerpt.starts_with("{\"data\":[{"), "{excerpt}");
            // Contact details are masked: error excerpts reach logs above debug level.
            assert!(
                excerpt.contains("[email]") && !excerpt.contains("grower1"),
                "{excerpt}"
            );
            assert!(excerpt.chars().count() <= EXCERPT_CHARS);
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(
        client.list().await.unwrap().len(),
        1,
        "the next read is fine"
    );
}

#[tokio::test]
async fn idempotent_writes_are_retried_on_5xx_and_lost_answers() {
    let sb = sandbox().await;
    let id = sb.farmflow().insert(farm_person(1));
    let gone = sb.farmflow().insert(farm_person(2));
    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Update,
        When::Nth(1),
        FaultAction::Status(503),
    ));
    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::Delete,
        When::Nth(1),
        FaultAction::ApplyThenDrop,
    ));
    let client = farmflow(&sb);
    let mut customer = client.get(FarmflowId(id)).await.unwrap().unwrap();
    customer.fields.city = "Launceston".to_owned();

    client
        .update(&customer)
        .await
        .expect("updated on the second try");
    // The first delete was applied but its answer lost; the resend finds it gone.
    let outcome = client.delete(FarmflowId(gone)).await.unwrap();

    assert_eq!(sb.farmflow().get(id).unwrap().city, "Launceston");
    assert_eq!(outcome, DeleteOutcome::AlreadyGone);
    assert!(sb.farmflow().get(gone).is_none());
    let stats = sb.farmflow().stats();
    assert_eq!(stats.count(FarmflowEndpoint::Update), 2);
    assert_eq!(stats.count(FarmflowEndpoint::Delete), 2);
    assert_eq!(client.counts().retries, 2);
}

#[tokio::test]
async fn a_hung_read_times_out_and_is_retried() {
    let sb = sandbox().await;
    sb.farmflow().insert(farm_person(1));
    sb.farmflow().inject(Fault::new(
        FarmflowEndpoint::List,
        When::Nth(1),
        FaultAction::Hang,
    ));
    let client = farmflow_with(FarmflowOptions {
        timeout: Duration::from_millis(300),
        ..farmflow_options(&sb)
    });

    assert_eq!(client.list().await.unwrap().len(), 1);
    assert_eq!(sb.farmflow().stats().count(FarmflowEndpoint::List), 2);
}

#[tokio::test]
async fn an_empty_list_once_is_read_as_empty() {
    let sb = sandbox().await;
    sb.farmflow().insert(farm_person(1));
    sb.farmflow().empty_list_once();
    let client = farmflow(&sb);

    assert!(client.list().await.unwrap().is_empty());
    assert_eq!(client.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_create_answered_with_the_id_alone_keeps_the_sent_fields() {
    let sb = sandbox().await;
    sb.farmflow().set_create_returns_id_only(true);
    let client = farmflow(&sb);

    let created = client.create(&new_fields(6)).await.unwrap();

    assert_eq!(created.fields, new_fields(6));
    assert_eq!(
        created,
        as_client_sees(&sb.farmflow().get(created.id.0).unwrap())
    );
}

#[tokio::test]
async fn errors_answered_with_200_are_still_errors() {
    let sb = sandbox().await;
    let held = sb.farmflow().insert(farm_person(1));
    sb.farmflow()
        .add_recurring_order(held, RecurringStatus::Active);
    sb.farmflow().set_errors_as_200(true);
    let client = farmflow(&sb);

    assert_eq!(
        client.delete(FarmflowId(held)).await.unwrap(),
        DeleteOutcome::Blocked {
            reason: ACTIVE_ORDER_REFUSAL.to_owned()
        }
    );
    // Without a 404 there is no proof of absence: an error, never `None`.
    let err = client.get(FarmflowId(4242)).await.unwrap_err();
    match &err {
        ApiError::Validation {
            status: 200,
            message,
            ..
        } => assert!(message.contains("not found"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let err = client.create(&FarmflowFields::default()).await.unwrap_err();
    assert!(matches!(err, ApiError::Validation { .. }), "{err:?}");
    assert_eq!(sb.farmflow().customers().len(), 1);

    let wrong = farmflow_with(FarmflowOptions {
        api_key: "not-the-key-123".into(),
        ..farmflow_options(&sb)
    });
    let err = wrong.check().await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert!(err.to_string().contains("farmflow.api_key"), "{err}");
}
