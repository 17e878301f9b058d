//! The CRM client against the sandbox: each contract point of `api/kounta.md` and each
//! tolerated variant.

use std::sync::Arc;
use std::time::Duration;

use farmsync::http::{ApiError, EXCERPT_CHARS, TransportKind};
use farmsync::ids::KountaId;
use farmsync::kounta::model::{KountaAddress, KountaCustomerWrite};
use farmsync::kounta::{KountaClient, ListingCut, MemoryTokenStore};
use farmsync::sandbox::{
    ErrorShape, Fault, FaultAction, KountaEndpoint, KountaOptions as FakeOptions, ReadShape,
    SandboxOptions, When,
};

use crate::client_support::*;

fn seed(sb: &farmsync::sandbox::Sandbox, n: usize) -> Vec<i64> {
    (0..n).map(|i| sb.kounta().insert(crm_person(i))).collect()
}

/// A sandbox holding one customer, whose reads by id (`GET …/customers/{id}`) meet `action`
/// `when`.
async fn one_customer_whose_reads_meet(
    when: When,
    action: FaultAction,
) -> (farmsync::sandbox::Sandbox, i64) {
    let sb = sandbox().await;
    let id = sb.kounta().insert(crm_person(1));
    sb.kounta()
        .inject(Fault::new(KountaEndpoint::Get, when, action));
    (sb, id)
}

/// A write of only what `set` sets.
fn write(set: impl FnOnce(&mut KountaCustomerWrite)) -> KountaCustomerWrite {
    let mut write = KountaCustomerWrite::default();
    set(&mut write);
    write
}

/// The CRM's explanation in a `Validation` error with status 400; any other error fails.
fn refused_400(err: &ApiError) -> &str {
    match err {
        ApiError::Validation {
            status: 400,
            message,
            ..
        } => message,
        other => panic!("expected a validation error (400), got {other:?}"),
    }
}

/// The sandbox's plain read shape with one variant switched on by `set`.
fn only(set: impl FnOnce(&mut ReadShape)) -> ReadShape {
    let mut shape = ReadShape::default();
    set(&mut shape);
    shape
}

fn ids(items: &[farmsync::kounta::model::KountaListItem]) -> Vec<i64> {
    items.iter().map(|i| i.id.0).collect()
}

#[tokio::test]
async fn list_follows_every_page_and_says_it_is_complete() {
    let sb = sandbox().await;
    let expected = seed(&sb, 60);
    let client = kounta(&sb);

    let listing = client.list().await.expect("list");

    assert!(listing.complete);
    assert!(listing.error.is_none());
    assert_eq!(listing.pages, 3);
    assert_eq!(ids(&listing.items), expected);
    assert_eq!(listing.items[7].first_name, "First7");
    assert_eq!(listing.items[7].email, "person7@example.com");
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::List), 3);
}

#[tokio::test]
async fn the_company_is_discovered_once_via_companies_me() {
    let sb = sandbox().await;
    seed(&sb, 3);
    let client = kounta(&sb);

    assert_eq!(client.company_id().await.unwrap(), sb.kounta().company_id());
    client.list().await.unwrap();
    client.get(KountaId(1)).await.unwrap();

    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Me), 1);
}

#[tokio::test]
async fn a_configured_company_is_used_without_asking() {
    let sb = sandbox().await;
    seed(&sb, 3);
    let client = kounta_with(farmsync::kounta::KountaOptions {
        company_id: Some(sb.kounta().company_id()),
        ..kounta_options(&sb)
    });

    assert_eq!(client.list().await.unwrap().items.len(), 3);
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Me), 0);
}

#[tokio::test]
async fn a_failing_later_page_gives_an_incomplete_listing_with_what_was_read() {
    let sb = sandbox().await;
    let expected = seed(&sb, 60);
    sb.kounta().fail_list_page(2);
    let client = kounta(&sb);

    let listing = client.list().await.expect("the first page was read");

    assert!(!listing.complete);
    assert_eq!(ids(&listing.items), expected[..25].to_vec());
    match listing.error {
        Some(ListingCut::Failed {
            pages_read: 1,
            error: ApiError::Server { status: 500, .. },
        }) => {}
        other => panic!("expected a 500 on page 2, got {other:?}"),
    }
    // Page 2 was retried five times before giving up.
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::List), 1 + 6);
}

#[tokio::test]
async fn a_failing_first_page_is_an_error_not_an_empty_listing() {
    let sb = sandbox().await;
    seed(&sb, 5);
    sb.kounta().fail_list_page(1);

    let err = kounta(&sb).list().await.unwrap_err();

    assert!(
        matches!(err, ApiError::Server { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn the_page_cap_cuts_a_listing_short_and_says_so() {
    let sb = sandbox().await;
    seed(&sb, 60);
    let client = kounta(&sb).with_page_cap(2);

    let listing = client.list().await.unwrap();

    assert!(!listing.complete);
    assert_eq!(listing.items.len(), 50);
    assert_eq!(listing.error, Some(ListingCut::PageCap { pages: 2 }));
}

#[tokio::test]
async fn an_empty_page_ends_the_listing() {
    let sb = sandbox().await;
    seed(&sb, 30);
    sb.kounta().empty_list_once();
    let client = kounta(&sb);

    let first = client.list().await.unwrap();
    let second = client.list().await.unwrap();

    // The empty answer is taken at its word (the engine's guard handles a list that empties).
    assert!(first.complete);
    assert!(first.items.is_empty());
    assert_eq!(second.items.len(), 30);
}

#[tokio::test]
async fn get_reads_the_full_record_and_a_404_is_none() {
    let sb = sandbox().await;
    let id = sb.kounta().insert(crm_person(4));
    let client = kounta(&sb);

    let c = client.get(KountaId(id)).await.unwrap().expect("found");
    assert_eq!(c.id, KountaId(id));
    assert_eq!(c.first_name, "First4");
    assert_eq!(c.mobile, "0412 000004");
    assert_eq!(c.tags, vec!["Newsletter".to_owned()]);
    let a = c.primary_address.expect("address");
    assert_eq!(a.address, "4 Mutton Street\nSuite 5");
    assert_eq!((a.state.as_str(), a.country.as_str()), ("NSW", "AU"));

    assert_eq!(client.get(KountaId(id + 1000)).await.unwrap(), None);
}

#[tokio::test]
async fn every_tolerated_read_shape_decodes_to_the_same_customer() {
    let sb = sandbox().await;
    let id = sb.kounta().insert(crm_person(9));
    // A sparse one too, so empty fields and tags meet `null`.
    let sparse = sb.kounta().insert(farmsync::sandbox::KountaRecord {
        first_name: "Only".to_owned(),
        email: "only@example.com".to_owned(),
        ..Default::default()
    });
    let client = kounta(&sb);
    let plain = client.get(KountaId(id)).await.unwrap().unwrap();
    let plain_sparse = client.get(KountaId(sparse)).await.unwrap().unwrap();
    let plain_list = client.list().await.unwrap().items;

    let all = ReadShape {
        legacy_address: true,
        primary_email_address: true,
        id_str: true,
        ids_as_strings: true,
        null_for_empty: true,
        extra_fields: true,
    };
    for shape in [
        only(|s| s.legacy_address = true),
        only(|s| s.primary_email_address = true),
        only(|s| s.id_str = true),
        only(|s| s.ids_as_strings = true),
        only(|s| s.null_for_empty = true),
        only(|s| s.extra_fields = true),
        all,
    ] {
        sb.kounta().set_read_shape(shape);
        let got = client.get(KountaId(id)).await.unwrap().unwrap();
        assert_eq!(got, plain, "{shape:?}");
        let got = client.get(KountaId(sparse)).await.unwrap().unwrap();
        assert_eq!(got, plain_sparse, "{shape:?}");
        assert_eq!(client.list().await.unwrap().items, plain_list, "{shape:?}");
    }
}

#[tokio::test]
async fn lookups_read_the_id_from_location_without_following_it() {
    let sb = sandbox().await;
    seed(&sb, 3);
    let id = KountaId(sb.kounta().insert(crm_person(42)));
    let client = kounta(&sb);

    assert_eq!(
        client.find_by_email("PERSON42@example.com").await.unwrap(),
        Some(id)
    );
    assert_eq!(client.find_by_mobile("0412000042").await.unwrap(), Some(id));
    assert_eq!(
        client
            .find_by_name_phone("First42", "Last42", "02 8765 0042")
            .await
            .unwrap(),
        Some(id)
    );
    assert_eq!(
        client.find_by_email("nobody@example.com").await.unwrap(),
        None
    );
    assert_eq!(client.find_by_mobile("0499999999").await.unwrap(), None);
    assert_eq!(
        client
            .find_by_name_phone("First42", "Last42", "1111")
            .await
            .unwrap(),
        None
    );

    let stats = sb.kounta().stats();
    assert_eq!(stats.count(KountaEndpoint::Lookup), 6);
    assert_eq!(
        stats.count(KountaEndpoint::Get),
        0,
        "a redirect was followed"
    );
}

#[tokio::test]
async fn lookup_by_reference_id_returns_every_match() {
    let sb = sandbox().await;
    seed(&sb, 2);
    let a = sb.kounta().insert(farmsync::sandbox::KountaRecord {
        reference_id: "farmflow:301".to_owned(),
        ..crm_person(10)
    });
    let b = sb.kounta().insert(farmsync::sandbox::KountaRecord {
        reference_id: "farmflow:301".to_owned(),
        ..crm_person(11)
    });
    let client = kounta(&sb);

    let found = client.find_by_reference("farmflow:301").await.unwrap();
    assert_eq!(ids(&found), vec![a, b]);
    assert!(
        client
            .find_by_reference("farmflow:999")
            .await
            .unwrap()
            .is_empty()
    );
}

fn new_customer(n: usize) -> KountaCustomerWrite {
    KountaCustomerWrite {
        first_name: Some(format!("New{n}")),
        last_name: Some("Person".to_owned()),
        email: Some(format!("new{n}@example.com")),
        phone: Some("02 9999 0000".to_owned()),
        reference_id: Some(format!("farmflow:{}", 500 + n)),
        tags: None,
        primary_address: Some(KountaAddress {
            address: "1 Farm Road\nShed 2".to_owned(),
            city: "Hobart".to_owned(),
            state: "TAS".to_owned(),
            postal_code: "7000".to_owned(),
            country: "AU".to_owned(),
        }),
    }
}

#[tokio::test]
async fn create_returns_the_id_named_by_location() {
    let sb = sandbox().await;
    let client = kounta(&sb);

    let id = client.create(&new_customer(1)).await.expect("created");

    let stored = sb.kounta().get(id.0).expect("stored under the returned id");
    assert_eq!(stored.first_name, "New1");
    assert_eq!(stored.reference_id, "farmflow:501");
    let address = stored.primary_address.expect("address");
    assert_eq!(address.address, "1 Farm Road\nShed 2");
    assert_eq!(address.country, "AU");
}

#[tokio::test]
async fn update_changes_only_the_fields_sent() {
    let sb = sandbox().await;
    let id = sb.kounta().insert(crm_person(5));
    let client = kounta(&sb);

    let answer = client
        .update(
            KountaId(id),
            &write(|w| w.phone = Some("03 1234 5678".into())),
        )
        .await
        .expect("updated");

    let stored = sb.kounta().get(id).unwrap();
    assert_eq!(stored.phone, "03 1234 5678");
    assert_eq!(stored.mobile, "0412 000005", "mobile was not sent, so kept");
    assert_eq!(stored.email, "person5@example.com");
    assert_eq!(stored.tags, vec!["Newsletter".to_owned()]);
    if let Some(record) = answer {
        assert_eq!(record.phone, "03 1234 5678");
    }

    let err = client
        .update(KountaId(id + 1000), &KountaCustomerWrite::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn validation_and_conflict_are_told_apart() {
    let sb = sandbox().await;
    let client = kounta(&sb);

    let no_contact = write(|w| {
        w.first_name = Some("No".to_owned());
        w.last_name = Some("Contact".to_owned());
    });
    let err = client.create(&no_contact).await.unwrap_err();
    let message = refused_400(&err);
    assert!(message.contains("email, phone or mobile"), "{message}");
    assert!(!err.is_transient());

    sb.kounta().inject(Fault::new(
        KountaEndpoint::Create,
        When::Nth(1),
        FaultAction::Status(409),
    ));
    let err = client.create(&new_customer(2)).await.unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }), "{err:?}");
    assert!(sb.kounta().customers().is_empty());
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_outcome_unknown_and_exists_once() {
    for action in [FaultAction::ApplyThenDrop, FaultAction::ApplyThen500] {
        let sb = sandbox().await;
        seed(&sb, 2);
        sb.kounta()
            .inject(Fault::new(KountaEndpoint::Create, When::Nth(1), action));
        let client = kounta(&sb);

        let err = client.create(&new_customer(7)).await.unwrap_err();

        assert!(
            matches!(err, ApiError::OutcomeUnknown { .. }),
            "{action:?}: {err:?}"
        );
        assert!(!err.is_transient());
        assert_eq!(
            sb.kounta().customers().len(),
            3,
            "{action:?}: exactly one new record"
        );
        assert_eq!(
            sb.kounta().stats().count(KountaEndpoint::Create),
            1,
            "never resent"
        );
        // The engine resolves it by reference_id.
        let found = client.find_by_reference("farmflow:507").await.unwrap();
        assert_eq!(found.len(), 1);
    }
}

#[tokio::test]
async fn a_create_that_times_out_is_outcome_unknown() {
    let sb = sandbox().await;
    sb.kounta().inject(Fault::new(
        KountaEndpoint::Create,
        When::Nth(1),
        FaultAction::ApplyThenHang,
    ));
    let client = kounta_with(farmsync::kounta::KountaOptions {
        timeout: Duration::from_millis(500),
        ..kounta_options(&sb)
    });

    let err = client.create(&new_customer(3)).await.unwrap_err();

    match &err {
        ApiError::OutcomeUnknown { cause, .. } => assert!(cause.contains("timed out"), "{cause}"),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(sb.kounta().customers().len(), 1);
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Create), 1);
}

#[tokio::test]
async fn a_create_refused_with_429_is_resent_and_exists_once() {
    let sb = sandbox().await;
    sb.kounta().inject(Fault::new(
        KountaEndpoint::Create,
        When::Nth(1),
        FaultAction::Status(429),
    ));
    let client = kounta(&sb);

    let id = client
        .create(&new_customer(4))
        .await
        .expect("created on the second try");

    assert_eq!(sb.kounta().customers().len(), 1);
    assert_eq!(sb.kounta().customers()[0].id, id.0);
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Create), 2);
    assert_eq!(client.counts().retries, 1);
}

#[tokio::test]
async fn html_502_on_a_read_is_a_server_error_with_a_short_excerpt() {
    let (sb, id) = one_customer_whose_reads_meet(When::Every, FaultAction::Html502).await;
    let client = kounta(&sb);

    let err = client.get(KountaId(id)).await.unwrap_err();

    match &err {
        ApiError::Server {
            status: 502,
            excerpt,
            ..
        } => {
            assert!(excerpt.contains("502 Bad Gateway"), "{excerpt}");
            assert!(excerpt.chars().count() <= EXCERPT_CHARS);
            assert!(!excerpt.contains('\n'));
        }
        other => panic!("expected a 502, got {other:?}"),
    }
    assert_eq!(
        sb.kounta().stats().count(KountaEndpoint::Get),
        6,
        "five retries"
    );
}

#[tokio::test]
async fn a_transient_502_on_a_read_is_retried_away() {
    let (sb, id) = one_customer_whose_reads_meet(When::Next(2), FaultAction::Html502).await;
    let client = kounta(&sb);

    let c = client.get(KountaId(id)).await.unwrap();

    assert!(c.is_some());
    assert_eq!(client.counts().retries, 2);
    assert_eq!(client.counts().reads, 4, "company lookup + three attempts");
}

#[tokio::test]
async fn truncated_json_is_a_decode_error_with_an_excerpt() {
    let (sb, id) = one_customer_whose_reads_meet(When::Nth(1), FaultAction::TruncatedJson).await;
    let client = kounta(&sb);

    let err = client.get(KountaId(id)).await.unwrap_err();

    match &err {
        ApiError::Decode { excerpt, .. } => {
            assert!(excerpt.starts_with('{'), "{excerpt}");
            // Contact details are masked: error excerpts reach logs above debug level.
            assert!(
                excerpt.contains("[email]") && !excerpt.contains("person1"),
                "{excerpt}"
            );
            assert!(excerpt.chars().count() <= EXCERPT_CHARS);
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hung_read_times_out_and_is_retried() {
    let (sb, id) = one_customer_whose_reads_meet(When::Nth(1), FaultAction::Hang).await;
    let client = kounta_with(farmsync::kounta::KountaOptions {
        timeout: Duration::from_millis(300),
        ..kounta_options(&sb)
    });

    assert!(client.get(KountaId(id)).await.unwrap().is_some());
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Get), 2);
}

#[tokio::test]
async fn wrong_basic_credentials_name_the_header_and_the_keys_to_check() {
    let sb = sandbox().await;
    let client = kounta_with(farmsync::kounta::KountaOptions {
        auth: farmsync::kounta::KountaAuth::Basic {
            client_id: sb.kounta().client_id().to_owned(),
            client_secret: "wrong-secret".into(),
        },
        ..kounta_options(&sb)
    });

    let err = client.check().await.unwrap_err();

    let text = err.to_string();
    assert!(err.is_auth(), "{err:?}");
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("Authorization: Basic"), "{text}");
    assert!(text.contains("kounta.client_secret"), "{text}");
    assert!(!text.contains("wrong-secret"), "{text}");
}

#[tokio::test]
async fn a_company_the_credentials_cannot_reach_is_named() {
    let sb = sandbox().await;
    let client = kounta_with(farmsync::kounta::KountaOptions {
        company_id: Some(999),
        ..kounta_options(&sb)
    });

    let err = client.check().await.unwrap_err();

    let text = err.to_string();
    assert!(text.contains("999"), "{text}");
    assert!(text.contains("kounta.company_id"), "{text}");
}

#[tokio::test]
async fn check_reads_the_company_and_the_first_page() {
    let sb = sandbox().await;
    seed(&sb, 30);

    let report = kounta(&sb).check().await.unwrap();

    let text = report.to_string();
    assert!(text.starts_with("Kounta: ok"), "{text}");
    assert!(
        text.contains(&sb.kounta().company_id().to_string()),
        "{text}"
    );
    assert!(text.contains("25 customers"), "{text}");
    let stats = sb.kounta().stats();
    assert_eq!(stats.writes, 0, "check is read-only");
    assert_eq!(stats.count(KountaEndpoint::List), 1);
}

#[tokio::test]
async fn connection_refused_is_retried_then_named() {
    let port = closed_port().await;
    let client = KountaClient::new(
        farmsync::kounta::KountaOptions {
            base_url: format!("http://127.0.0.1:{port}/v1").parse().unwrap(),
            company_id: Some(1),
            auth: farmsync::kounta::KountaAuth::Basic {
                client_id: "id".into(),
                client_secret: "secret".into(),
            },
            requests_per_minute: FAST_RATE,
            timeout: Duration::from_secs(5),
        },
        Arc::new(MemoryTokenStore::new()),
    )
    .unwrap()
    .with_retry_policy(quick_retries());

    let err = client.create(&new_customer(1)).await.unwrap_err();

    // Never sent, so even a create may be retried; after the retries it is a transport error.
    match &err {
        ApiError::Transport {
            kind: TransportKind::Refused,
            url,
            ..
        } => assert!(url.contains(&port.to_string()), "{url}"),
        other => panic!("expected connection refused, got {other:?}"),
    }
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert_eq!(client.counts().writes, 6);
    assert_eq!(client.counts().retries, 5);
}

#[tokio::test]
async fn tls_to_a_plain_http_server_is_named_as_tls() {
    let sb = sandbox().await;
    let plain = sb.kounta_url().replace("http://", "https://");
    let client = kounta_with(farmsync::kounta::KountaOptions {
        base_url: plain.parse().unwrap(),
        company_id: Some(1),
        ..kounta_options(&sb)
    });

    let err = client.check().await.unwrap_err();

    assert!(
        matches!(
            err,
            ApiError::Transport {
                kind: TransportKind::Tls,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn phone_normalising_writes_are_read_back_as_the_crm_spells_them() {
    let sb = sandbox_with(SandboxOptions {
        kounta: FakeOptions {
            normalise_phones: true,
            ..FakeOptions::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    let client = kounta(&sb);

    let id = client
        .create(&KountaCustomerWrite {
            phone: Some("0287654321".to_owned()),
            ..new_customer(8)
        })
        .await
        .unwrap();

    let c = client.get(id).await.unwrap().unwrap();
    assert_eq!(c.phone, "02 8765 4321");
}

#[tokio::test]
async fn every_error_body_shape_gives_the_crm_s_explanation() {
    let sb = sandbox().await;
    let id = sb.kounta().insert(crm_person(1));
    let client = kounta(&sb);
    let wrong = kounta_with(farmsync::kounta::KountaOptions {
        auth: farmsync::kounta::KountaAuth::Basic {
            client_id: "someone-else".to_owned(),
            client_secret: "nope".into(),
        },
        ..kounta_options(&sb)
    });

    for shape in [
        ErrorShape::Standard,
        ErrorShape::ErrorMessage,
        ErrorShape::Message,
    ] {
        sb.kounta().set_error_shape(shape);

        let country_name = write(|w| {
            w.primary_address = Some(KountaAddress {
                country: "Australia".to_owned(),
                ..KountaAddress::default()
            })
        });
        let err = client
            .update(KountaId(id), &country_name)
            .await
            .unwrap_err();
        let message = refused_400(&err);
        assert!(message.contains("alpha-2"), "{shape:?}: {message}");

        let err = wrong.check().await.unwrap_err();
        assert!(err.is_auth(), "{shape:?}: {err:?}");
        assert!(err.to_string().contains("not valid"), "{shape:?}: {err}");
    }
}

#[tokio::test]
async fn an_update_answered_with_an_empty_body_still_succeeds() {
    let sb = sandbox().await;
    let id = sb.kounta().insert(crm_person(2));
    sb.kounta().set_update_answers_empty(true);
    let client = kounta(&sb);

    let answer = client
        .update(
            KountaId(id),
            &write(|w| w.last_name = Some("Renamed".into())),
        )
        .await
        .unwrap();

    assert_eq!(answer, None);
    assert_eq!(sb.kounta().get(id).unwrap().last_name, "Renamed");
}
