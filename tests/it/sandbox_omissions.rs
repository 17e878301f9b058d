//! Live records left out of listings — omissions, page drift, deletes mid-listing, list lag —
//! and empty answers, with plain `reqwest`.

use std::collections::BTreeSet;

use farmsync::sandbox::{
    FarmflowEndpoint, FarmflowRecord, Fault, FaultAction, KountaEndpoint, KountaRecord,
    LIST_LAG_HISTORY, RecurringStatus, Sandbox, SandboxOptions, When,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::sandbox_support::{Crm, Farm, start, start_with, status_json};

fn kounta_person(n: usize) -> KountaRecord {
    KountaRecord {
        first_name: format!("P{n}"),
        email: format!("p{n}@example.com"),
        ..KountaRecord::default()
    }
}

fn farm_person(n: usize) -> FarmflowRecord {
    FarmflowRecord {
        firstname: format!("F{n}"),
        email: format!("f{n}@example.com"),
        ..FarmflowRecord::default()
    }
}

/// A sandbox seeded with `seed` holding `n` CRM customers; their ids in list order.
async fn crm_with(n: usize, seed: u64) -> (Sandbox, Vec<i64>) {
    let sb = start_with(SandboxOptions {
        seed,
        ..SandboxOptions::default()
    })
    .await;
    let ids = (0..n)
        .map(|i| sb.kounta().insert(kounta_person(i)))
        .collect();
    (sb, ids)
}

/// Every page of one listing, following `X-Next-Page` until it is absent or a page is empty,
/// as the contract says a client stops.
async fn walk_pages(crm: &Crm) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut url = Some(crm.url("/customers"));
    while let Some(u) = url.take() {
        let r = crm.req(Method::GET, &u).send().await.expect("sent");
        assert_eq!(r.status(), 200, "list page {u}");
        url = r
            .headers()
            .get("x-next-page")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let items: Vec<Value> = r.json().await.expect("json");
        let page: Vec<i64> = items
            .iter()
            .map(|item| item["id"].as_i64().expect("numeric id"))
            .collect();
        if page.is_empty() {
            break;
        }
        pages.push(page);
    }
    pages
}

/// The ids one listing shows, in the order shown.
async fn walk(crm: &Crm) -> Vec<i64> {
    walk_pages(crm).await.concat()
}

fn without(all: &[i64], gone: &[i64]) -> Vec<i64> {
    all.iter()
        .copied()
        .filter(|id| !gone.contains(id))
        .collect()
}

#[tokio::test]
async fn omitted_crm_customers_are_missing_from_every_page_but_answer_by_id() {
    let (sb, ids) = crm_with(60, 0).await;
    let k = sb.kounta();
    let gone = [ids[3], ids[30], ids[59]];
    k.edit(ids[30], |c| c.reference_id = "farmflow:42".into());
    k.omit_from_list(gone);
    let crm = Crm::new(&sb);

    let pages = walk_pages(&crm).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        vec![25, 25, 7],
        "pages computed as if they were absent"
    );
    assert_eq!(pages.concat(), without(&ids, &gone));
    assert_eq!(
        k.omissions_served(),
        3,
        "each omitted customer counted once a walk"
    );

    for id in gone {
        let (status, body) = status_json(crm.get(&format!("/customers/{id}"))).await;
        assert_eq!((status, body["id"].as_i64()), (200, Some(id)));
    }
    let (status, found) = status_json(crm.get("/customers?reference_id=farmflow:42")).await;
    assert_eq!((status, found[0]["id"].as_i64()), (200, Some(ids[30])));
    let (status, updated) = status_json(crm.put(
        &format!("/customers/{}", ids[3]),
        &json!({"last_name": "Still"}),
    ))
    .await;
    assert_eq!(
        (status, updated["last_name"].as_str()),
        (200, Some("Still"))
    );

    k.clear_faults();
    assert_eq!(walk(&crm).await, ids, "clear_faults lists them again");
    assert_eq!(k.omissions_served(), 3, "the counter is not reset");
}

/// The ids each of three walks shows, with every customer randomly omitted at `p`.
async fn random_omission_walks(seed: u64, p: f64) -> (Vec<Vec<i64>>, Vec<i64>, u64) {
    let (sb, ids) = crm_with(60, seed).await;
    sb.kounta().omit_from_list_randomly(p);
    let crm = Crm::new(&sb);
    let mut walks = Vec::new();
    for _ in 0..3 {
        walks.push(walk(&crm).await);
    }
    (walks, ids, sb.kounta().omissions_served())
}

#[tokio::test]
async fn random_crm_omissions_are_reproducible_for_a_seed_and_counted() {
    let (walks, ids, served) = random_omission_walks(7, 0.2).await;
    let (again, _, served_again) = random_omission_walks(7, 0.2).await;
    assert_eq!(walks, again, "one seed, one sequence of omissions");
    assert_eq!(served, served_again);

    let mut missing = 0;
    for w in &walks {
        let shown: BTreeSet<i64> = w.iter().copied().collect();
        assert_eq!(shown.len(), w.len(), "nobody is listed twice");
        assert!(shown.iter().all(|id| ids.contains(id)));
        missing += ids.len() - shown.len();
    }
    assert!(missing > 0, "at 20% some of 180 listings are omitted");
    assert!(missing < 90, "and most are not: {missing}");
    assert_eq!(served, missing as u64);
    assert_ne!(walks[0], walks[1], "each page served draws afresh");
}

#[tokio::test]
async fn a_randomly_omitted_page_keeps_its_place_in_the_listing() {
    let (sb, ids) = crm_with(30, 1).await;
    sb.kounta().omit_from_list_randomly(1.0);
    let crm = Crm::new(&sb);
    let r = crm.get("/customers").send().await.expect("sent");
    assert!(
        r.headers().get("x-next-page").is_some(),
        "a second page exists"
    );
    assert_eq!(
        r.json::<Vec<Value>>().await.expect("json"),
        Vec::<Value>::new()
    );
    assert_eq!(sb.kounta().omissions_served(), 25);

    sb.kounta().omit_from_list_randomly(0.0);
    let (_, second) = status_json(crm.get("/customers?page=2")).await;
    let second: Vec<i64> = second
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|i| i["id"].as_i64())
        .collect();
    assert_eq!(second, ids[25..], "page 2 is where it was");
}

#[tokio::test]
async fn a_forward_drift_skips_exactly_shift_customers_once() {
    let (sb, ids) = crm_with(60, 0).await;
    let k = sb.kounta();
    k.drift_after_page(1, 3);
    let crm = Crm::new(&sb);

    let pages = walk_pages(&crm).await;
    assert_eq!(pages[0], ids[..25]);
    assert_eq!(pages[1], ids[28..53], "page 2 starts three places late");
    assert_eq!(pages.concat(), without(&ids, &ids[25..28]));
    assert_eq!(k.omissions_served(), 3);
    for id in &ids[25..28] {
        let (status, _) = status_json(crm.get(&format!("/customers/{id}"))).await;
        assert_eq!(status, 200, "skipped, not deleted");
    }

    assert_eq!(walk(&crm).await, ids, "one shot: the next listing is whole");
    assert_eq!(k.omissions_served(), 3);
}

#[tokio::test]
async fn a_backward_drift_lists_exactly_shift_customers_twice() {
    let (sb, ids) = crm_with(60, 0).await;
    let k = sb.kounta();
    k.drift_after_page(2, -2);
    let crm = Crm::new(&sb);

    let pages = walk_pages(&crm).await;
    assert_eq!(pages[1], ids[25..50]);
    assert_eq!(pages[2], ids[48..], "page 3 starts two places early");
    let shown = pages.concat();
    assert_eq!(shown.len(), 62);
    let distinct: BTreeSet<i64> = shown.iter().copied().collect();
    assert_eq!(distinct, ids.iter().copied().collect(), "nobody is missing");
    assert_eq!(k.omissions_served(), 0, "repeats are not omissions");
    assert_eq!(walk(&crm).await, ids);
}

/// One walk over 60 customers in pages of 5 with random drift; the ids shown and the count.
async fn drifting_walk(seed: u64) -> (Vec<i64>, Vec<i64>, u64) {
    let (sb, ids) = crm_with(60, seed).await;
    sb.kounta().set_page_size(5);
    sb.kounta().drift_randomly(0.4);
    let shown = walk(&Crm::new(&sb)).await;
    (shown, ids, sb.kounta().omissions_served())
}

#[tokio::test]
async fn random_drift_is_reproducible_for_a_seed_and_counts_what_it_skips() {
    let (shown, ids, served) = drifting_walk(1).await;
    assert_eq!(drifting_walk(1).await, (shown.clone(), ids.clone(), served));
    let distinct: BTreeSet<i64> = shown.iter().copied().collect();
    assert!(
        distinct.len() < ids.len(),
        "seed 1 drifts forward at least once"
    );
    assert!(
        shown.len() > distinct.len(),
        "seed 1 drifts back at least once"
    );

    for seed in 0..8 {
        let (shown, ids, served) = drifting_walk(seed).await;
        let distinct: BTreeSet<i64> = shown.iter().copied().collect();
        let skipped = ids.iter().filter(|id| !distinct.contains(id)).count();
        assert_eq!(
            served, skipped as u64,
            "seed {seed}: the counter counts the skipped"
        );
        assert!(
            shown.windows(2).all(|w| w[0] <= w[1]),
            "seed {seed}: a drift moves pages, it does not reorder them"
        );
    }
}

#[tokio::test]
async fn a_delete_after_a_page_shifts_exactly_one_customer_onto_a_page_already_read() {
    let (sb, ids) = crm_with(60, 0).await;
    let k = sb.kounta();
    k.delete_after_page(1, ids[3]);
    let crm = Crm::new(&sb);

    let pages = walk_pages(&crm).await;
    assert!(pages[0].contains(&ids[3]), "listed before it was deleted");
    assert_eq!(pages[1], ids[26..51], "ids[25] moved back onto page 1");
    assert_eq!(pages.concat(), without(&ids, &[ids[25]]));
    assert_eq!(k.omissions_served(), 1);
    let (status, _) = status_json(crm.get(&format!("/customers/{}", ids[25]))).await;
    assert_eq!(status, 200, "the customer the listing missed exists");
    let (status, _) = status_json(crm.get(&format!("/customers/{}", ids[3]))).await;
    assert_eq!(status, 404, "the deleted one is gone");
    assert!(k.get(ids[3]).is_none());

    assert_eq!(walk(&crm).await, without(&ids, &[ids[3]]), "one shot");

    // Deleting a customer not yet listed hides nobody else.
    k.delete_after_page(1, ids[40]);
    assert_eq!(walk(&crm).await, without(&ids, &[ids[3], ids[40]]));
    assert_eq!(k.omissions_served(), 1);
}

#[tokio::test]
async fn clear_faults_and_heal_end_every_crm_listing_fault() {
    let (sb, ids) = crm_with(60, 0).await;
    let k = sb.kounta();
    let crm = Crm::new(&sb);
    k.omit_from_list([ids[0]]);
    k.omit_from_list_randomly(0.5);
    k.drift_after_page(1, 5);
    k.drift_randomly(1.0);
    k.delete_after_page(1, ids[1]);
    k.clear_faults();
    assert_eq!(walk(&crm).await, ids);

    k.omit_from_list([ids[0]]);
    k.drift_after_page(1, 5);
    k.heal();
    assert_eq!(walk(&crm).await, ids);
    assert_eq!(k.omissions_served(), 0);
    assert_eq!(k.customers().len(), 60, "the pending delete was dropped");
}

/// The customers `customers-get` answers.
async fn farm_list(farm: &Farm) -> Vec<Value> {
    let (status, body) = status_json(farm.get("/customers-get")).await;
    assert_eq!(status, 200);
    body["data"].as_array().expect("a list").clone()
}

fn farm_ids(list: &[Value]) -> Vec<i64> {
    list.iter()
        .map(|c| {
            c["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("string id")
        })
        .collect()
}

fn email_of(list: &[Value], id: i64) -> Option<String> {
    list.iter()
        .find(|c| c["id"] == json!(id.to_string()))
        .and_then(|c| c["email"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn omitted_farmflow_customers_are_missing_from_the_list_but_customer_get_finds_them() {
    let sb = start().await;
    let f = sb.farmflow();
    let ids: Vec<i64> = (0..5).map(|i| f.insert(farm_person(i))).collect();
    f.omit_from_list([ids[1], ids[3]]);
    let farm = Farm::new(&sb);

    assert_eq!(
        farm_ids(&farm_list(&farm).await),
        without(&ids, &[ids[1], ids[3]])
    );
    assert_eq!(f.omissions_served(), 2);
    for id in [ids[1], ids[3]] {
        let (status, body) =
            status_json(farm.post("/customer-get", &json!({"id": id.to_string()}))).await;
        assert_eq!(
            (status, body["data"]["id"].clone()),
            (200, json!(id.to_string()))
        );
    }
    assert_eq!(farm_ids(&farm_list(&farm).await).len(), 3, "every time");
    assert_eq!(f.omissions_served(), 4);

    f.clear_faults();
    assert_eq!(farm_ids(&farm_list(&farm).await), ids);
    assert_eq!(f.omissions_served(), 4, "the counter is not reset");
}

/// Five listings of 40 FarmFlow customers with random omission at `p`.
async fn random_farm_lists(seed: u64, p: f64) -> (Vec<Vec<i64>>, u64) {
    let sb = start_with(SandboxOptions {
        seed,
        ..SandboxOptions::default()
    })
    .await;
    for i in 0..40 {
        sb.farmflow().insert(farm_person(i));
    }
    sb.farmflow().omit_from_list_randomly(p);
    let farm = Farm::new(&sb);
    let mut lists = Vec::new();
    for _ in 0..5 {
        lists.push(farm_ids(&farm_list(&farm).await));
    }
    (lists, sb.farmflow().omissions_served())
}

#[tokio::test]
async fn random_farmflow_omissions_are_reproducible_for_a_seed_and_counted() {
    let (lists, served) = random_farm_lists(11, 0.25).await;
    assert_eq!(random_farm_lists(11, 0.25).await, (lists.clone(), served));
    let missing: usize = lists.iter().map(|l| 40 - l.len()).sum();
    assert!(missing > 0 && missing < 100, "{missing} of 200 left out");
    assert_eq!(served, missing as u64);
    assert_ne!(lists[0], lists[1], "each listing draws afresh");
}

#[tokio::test]
async fn a_lagged_farmflow_list_shows_the_old_version_then_catches_up() {
    let sb = start().await;
    let f = sb.farmflow();
    let ids: Vec<i64> = (0..3).map(|i| f.insert(farm_person(i))).collect();
    let farm = Farm::new(&sb);
    f.set_list_lag(2);

    let mut changed = farm_person(0);
    changed.email = "new@example.com".into();
    let mut body = serde_json::to_value(&changed).expect("json");
    body["id"] = json!(ids[0].to_string());
    assert_eq!(
        status_json(farm.post("/customer-update", &body)).await.0,
        200
    );
    let (status, created) =
        status_json(farm.post("/customer-create", &json!({"firstname": "New"}))).await;
    assert_eq!(status, 200);
    let new_id: i64 = created["data"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("new id");

    let list = farm_list(&farm).await;
    assert_eq!(farm_ids(&list), ids, "the create is not listed yet");
    assert_eq!(
        email_of(&list, ids[0]).as_deref(),
        Some("f0@example.com"),
        "old version"
    );
    assert_eq!(f.omissions_served(), 2, "one stale version, one absence");
    let (_, current) =
        status_json(farm.post("/customer-get", &json!({"id": ids[0].to_string()}))).await;
    assert_eq!(
        current["data"]["email"], "new@example.com",
        "customer-get is current"
    );

    // Two writes back is now before the create and the delete, after the update.
    let (status, _) =
        status_json(farm.post("/customer-delete", &json!({"id": ids[2].to_string()}))).await;
    assert_eq!(status, 200);
    let list = farm_list(&farm).await;
    assert_eq!(
        farm_ids(&list),
        ids,
        "the deleted one is still listed, the new one not"
    );
    assert_eq!(email_of(&list, ids[0]).as_deref(), Some("new@example.com"));
    assert_eq!(f.omissions_served(), 4);

    f.set_list_lag(0);
    let list = farm_list(&farm).await;
    assert_eq!(farm_ids(&list), vec![ids[0], ids[1], new_id]);
    assert_eq!(email_of(&list, ids[0]).as_deref(), Some("new@example.com"));
    assert_eq!(f.omissions_served(), 4, "a current list misreports nothing");
}

#[tokio::test]
async fn list_lag_reaches_back_a_bounded_number_of_writes() {
    let sb = start().await;
    let f = sb.farmflow();
    let id = f.insert(farm_person(0));
    let farm = Farm::new(&sb);
    let writes = LIST_LAG_HISTORY + 6;
    for n in 1..=writes {
        let body =
            json!({"id": id.to_string(), "firstname": "F0", "email": format!("v{n}@example.com")});
        assert_eq!(
            status_json(farm.post("/customer-update", &body)).await.0,
            200
        );
    }
    f.set_list_lag(writes + 100);
    let list = farm_list(&farm).await;
    let oldest = format!("v{}@example.com", writes - LIST_LAG_HISTORY);
    assert_eq!(
        email_of(&list, id),
        Some(oldest),
        "as far back as the history goes"
    );
    f.set_list_lag(1);
    let list = farm_list(&farm).await;
    let previous = format!("v{}@example.com", writes - 1);
    assert_eq!(email_of(&list, id), Some(previous));
    f.heal();
    let list = farm_list(&farm).await;
    assert_eq!(email_of(&list, id), Some(format!("v{writes}@example.com")));
}

/// Twenty rounds of "update, then list" with random lag; whether each list lagged.
async fn randomly_lagged_rounds(seed: u64) -> (Vec<bool>, u64) {
    let sb = start_with(SandboxOptions {
        seed,
        ..SandboxOptions::default()
    })
    .await;
    let id = sb.farmflow().insert(farm_person(0));
    sb.farmflow().lag_randomly(0.5);
    let farm = Farm::new(&sb);
    let mut lagged = Vec::new();
    for n in 0..20 {
        let email = format!("v{n}@example.com");
        let body = json!({"id": id.to_string(), "firstname": "F0", "email": email});
        assert_eq!(
            status_json(farm.post("/customer-update", &body)).await.0,
            200
        );
        let shown = email_of(&farm_list(&farm).await, id);
        lagged.push(shown.as_deref() != Some(email.as_str()));
    }
    (lagged, sb.farmflow().omissions_served())
}

#[tokio::test]
async fn random_lag_is_reproducible_for_a_seed_and_counted() {
    let (lagged, served) = randomly_lagged_rounds(3).await;
    assert_eq!(randomly_lagged_rounds(3).await, (lagged.clone(), served));
    let times = lagged.iter().filter(|l| **l).count();
    assert!(times > 0 && times < 20, "lagged {times} of 20 times");
    assert_eq!(served, times as u64);
}

#[tokio::test]
async fn empty_200_and_204_answers_have_no_body_and_apply_nothing() {
    let sb = start().await;
    let f = sb.farmflow();
    let id = f.insert(farm_person(0));
    f.add_recurring_order(id, RecurringStatus::Active);
    f.add_one_time_order(id, "2026-12-01");
    f.inject(Fault::new(
        FarmflowEndpoint::RecurringOrders,
        When::Nth(1),
        FaultAction::Empty(200),
    ));
    f.inject(Fault::new(
        FarmflowEndpoint::OneTimeOrders,
        When::Nth(1),
        FaultAction::Empty(204),
    ));
    let farm = Farm::new(&sb);
    for (path, status) in [
        ("/recurring-orders-get", 200),
        ("/one-time-orders-get", 204),
    ] {
        let r = farm.get(path).send().await.expect("sent");
        assert_eq!(r.status(), status);
        assert!(r.headers().get("content-type").is_none(), "{path}: no JSON");
        assert!(
            r.bytes().await.expect("body").is_empty(),
            "{path}: empty body"
        );
        let (status, body) = status_json(farm.get(path)).await;
        assert_eq!(status, 200, "{path}: served again");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    }

    f.inject(Fault::new(
        FarmflowEndpoint::Create,
        When::Nth(1),
        FaultAction::Empty(200),
    ));
    let r = farm.post("/customer-create", &json!({"firstname": "Nope"}));
    let r = r.send().await.expect("sent");
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.expect("body").is_empty());
    assert_eq!(f.customers().len(), 1, "nothing was applied");

    sb.kounta().insert(kounta_person(0));
    sb.kounta().inject(Fault::new(
        KountaEndpoint::List,
        When::Nth(1),
        FaultAction::Empty(200),
    ));
    let crm = Crm::new(&sb);
    let r = crm.get("/customers").send().await.expect("sent");
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.expect("body").is_empty());
    assert_eq!(walk(&crm).await.len(), 1);
}
