//! OAuth against the sandbox's CRM: refresh on 401 and on a 400 saying the token expired, at
//! most once per request, rotated refresh tokens stored before use, no lock-out across
//! restarts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farmsync::http::ApiError;
use farmsync::ids::KountaId;
use farmsync::kounta::{
    KountaAuth, KountaClient, KountaOptions, MemoryTokenStore, OAuthTokens, TokenStore,
};
use farmsync::sandbox::{
    KountaEndpoint, KountaOptions as FakeOptions, OauthOptions, SandboxOptions,
};
use secrecy::{ExposeSecret, SecretString};

use crate::client_support::*;

fn oauth_client(options: KountaOptions, store: Arc<dyn TokenStore>) -> KountaClient {
    KountaClient::new(options, store)
        .expect("client builds")
        .with_retry_policy(quick_retries())
}

#[tokio::test]
async fn three_restarts_each_forced_to_refresh_use_the_rotated_token() {
    let sb = sandbox().await;
    sb.kounta().insert(crm_person(1));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    // The configured refresh token is the first one; it stops working after the first refresh.
    let options = kounta_oauth_options(&sb);

    for run in 1..=3 {
        // A fresh client and store handle: nothing survives but the file, as across processes.
        sb.kounta().expire_access_tokens();
        let store = Arc::new(FileTokenStore::new(path.clone()));
        let client = oauth_client(options.clone(), store.clone());

        let listing = client
            .list()
            .await
            .unwrap_or_else(|e| panic!("run {run}: {e}"));

        assert_eq!(listing.items.len(), 1);
        let stored = store.load().unwrap().expect("tokens stored");
        assert_eq!(
            stored.refresh_token.expose_secret(),
            sb.kounta().refresh_token(),
            "run {run}: the rotated refresh token is the stored one"
        );
        assert_eq!(
            stored.access_token.expose_secret(),
            sb.kounta().access_token()
        );
        assert_eq!(
            sb.kounta().stats().count(KountaEndpoint::Token),
            run,
            "one refresh per run: the stored token was tried first"
        );
    }
}

#[tokio::test]
async fn a_usable_stored_access_token_is_used_without_refreshing() {
    let sb = sandbox().await;
    let store = Arc::new(MemoryTokenStore::new());
    store
        .save(&OAuthTokens {
            access_token: SecretString::from(sb.kounta().access_token()),
            refresh_token: SecretString::from(sb.kounta().refresh_token()),
            expires_at: None,
        })
        .unwrap();
    let client = oauth_client(kounta_oauth_options(&sb), store);

    assert!(!client.needs_refresh().await.unwrap());
    client.check().await.unwrap();

    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Token), 0);
}

#[tokio::test]
async fn needs_refresh_says_whether_a_refresh_is_coming() {
    let sb = sandbox().await;
    let store = Arc::new(MemoryTokenStore::new());
    let client = oauth_client(kounta_oauth_options(&sb), store.clone());
    assert!(client.needs_refresh().await.unwrap(), "nothing stored yet");

    client.check().await.unwrap();
    assert!(!client.needs_refresh().await.unwrap());

    store
        .save(&OAuthTokens {
            expires_at: Some(0),
            ..store.load().unwrap().unwrap()
        })
        .unwrap();
    let restarted = oauth_client(kounta_oauth_options(&sb), store);
    assert!(
        restarted.needs_refresh().await.unwrap(),
        "the stored token has expired"
    );
    assert!(
        !kounta(&sb).needs_refresh().await.unwrap(),
        "basic auth never refreshes"
    );
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Token), 1);
}

#[tokio::test]
async fn the_rotated_token_is_stored_before_the_new_access_token_is_used() {
    let sb = sandbox().await;
    let id = sb.kounta().insert(crm_person(1));
    let fake = sb.kounta().clone();
    let gets_at_save = Arc::new(Mutex::new(Vec::new()));
    let seen = gets_at_save.clone();
    let store = Arc::new(ProbeTokenStore::new(false, move |_tokens: &OAuthTokens| {
        seen.lock()
            .unwrap()
            .push(fake.stats().count(KountaEndpoint::Get));
    }));
    let client = oauth_client(
        KountaOptions {
            company_id: Some(sb.kounta().company_id()),
            ..kounta_oauth_options(&sb)
        },
        store.clone(),
    );

    client.get(KountaId(id)).await.unwrap().expect("first read");
    sb.kounta().expire_access_tokens();
    client
        .get(KountaId(id))
        .await
        .unwrap()
        .expect("read after refresh");

    // First save before any read; second after the refused read and before its resend.
    assert_eq!(*gets_at_save.lock().unwrap(), vec![0, 2]);
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Get), 3);
    assert_eq!(
        store.saved.lock().unwrap().last().unwrap(),
        &sb.kounta().refresh_token()
    );
}

#[tokio::test]
async fn a_token_that_cannot_be_stored_is_not_used() {
    let sb = sandbox().await;
    let store = Arc::new(ProbeTokenStore::new(true, |_: &OAuthTokens| {}));
    let client = oauth_client(kounta_oauth_options(&sb), store);

    let err = client.list().await.unwrap_err();

    assert!(matches!(err, ApiError::TokenStore { .. }), "{err:?}");
    assert!(err.to_string().contains("disk full"), "{err}");
    let stats = sb.kounta().stats();
    assert_eq!(stats.count(KountaEndpoint::Token), 1);
    assert_eq!(
        stats.reads, 0,
        "no request went out with the unstored token"
    );
}

#[tokio::test]
async fn a_400_saying_the_token_expired_also_refreshes() {
    let sb = sandbox_with(SandboxOptions {
        kounta: FakeOptions {
            expired_token_status: 400,
            ..FakeOptions::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    sb.kounta().insert(crm_person(1));
    let store = Arc::new(MemoryTokenStore::new());
    let client = oauth_client(kounta_oauth_options(&sb), store);
    client.list().await.unwrap();
    sb.kounta().expire_access_tokens();

    let listing = client.list().await.unwrap();

    assert_eq!(listing.items.len(), 1);
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Token), 2);
}

#[tokio::test]
async fn a_second_refusal_after_refreshing_is_an_auth_error_not_a_loop() {
    let sb = sandbox_with(SandboxOptions {
        kounta: FakeOptions {
            // Every token is born expired.
            oauth: OauthOptions {
                access_token_lifetime: Duration::ZERO,
                ..OauthOptions::default()
            },
            ..FakeOptions::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    let client = oauth_client(
        KountaOptions {
            company_id: Some(sb.kounta().company_id()),
            ..kounta_oauth_options(&sb)
        },
        Arc::new(MemoryTokenStore::new()),
    );

    let err = client.list().await.unwrap_err();

    assert!(err.is_auth(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("freshly refreshed"), "{text}");
    assert!(text.contains("kounta.refresh_token"), "{text}");
    let stats = sb.kounta().stats();
    // The first token (from the store-less start) and one refresh after the refusal.
    assert!(stats.count(KountaEndpoint::Token) <= 2, "{stats:?}");
    assert_eq!(
        stats.count(KountaEndpoint::List),
        2,
        "refreshed once, then gave up"
    );
}

#[tokio::test]
async fn a_refused_refresh_token_says_what_to_do() {
    let sb = sandbox().await;
    let client = oauth_client(
        KountaOptions {
            auth: KountaAuth::OAuth {
                client_id: sb.kounta().client_id().to_owned(),
                client_secret: SecretString::from(sb.kounta().client_secret()),
                refresh_token: SecretString::from("rt-long-revoked"),
            },
            ..kounta_oauth_options(&sb)
        },
        Arc::new(MemoryTokenStore::new()),
    );

    let err = client.check().await.unwrap_err();

    assert!(err.is_auth(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("refresh token"), "{text}");
    assert!(text.contains("kounta.refresh_token"), "{text}");
    assert!(!text.contains("rt-long-revoked"), "{text}");
}

#[tokio::test]
async fn a_stale_stored_token_falls_back_to_a_newly_configured_one() {
    let sb = sandbox().await;
    let store = Arc::new(MemoryTokenStore::new());
    store
        .save(&OAuthTokens {
            access_token: SecretString::from(""),
            refresh_token: SecretString::from("rt-stale"),
            expires_at: None,
        })
        .unwrap();
    // The operator authorised again and put the new refresh token in the config.
    let client = oauth_client(kounta_oauth_options(&sb), store.clone());

    client.check().await.unwrap();

    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Token), 2);
    assert_eq!(
        store.load().unwrap().unwrap().refresh_token.expose_secret(),
        sb.kounta().refresh_token()
    );
}

#[tokio::test]
async fn concurrent_refusals_share_one_refresh() {
    let sb = sandbox().await;
    let ids: Vec<i64> = (0..8).map(|i| sb.kounta().insert(crm_person(i))).collect();
    let client = Arc::new(oauth_client(
        KountaOptions {
            company_id: Some(sb.kounta().company_id()),
            ..kounta_oauth_options(&sb)
        },
        Arc::new(MemoryTokenStore::new()),
    ));
    client.list().await.unwrap();
    sb.kounta().expire_access_tokens();
    let ok = Arc::new(AtomicUsize::new(0));

    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let client = client.clone();
        let ok = ok.clone();
        tasks.spawn(async move {
            if client.get(KountaId(id)).await.unwrap().is_some() {
                ok.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    assert_eq!(ok.load(Ordering::SeqCst), 8);
    // One refresh at start, one after the expiry: a second concurrent refresh would have used
    // the already-rotated token and been refused.
    assert_eq!(sb.kounta().stats().count(KountaEndpoint::Token), 2);
}
