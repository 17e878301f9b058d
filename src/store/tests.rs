use std::os::unix::fs::PermissionsExt;

use super::*;

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    (dir, store)
}

fn sample_link(ff: i64, k: Option<i64>) -> Link {
    Link {
        reference_id: ReferenceId::for_farmflow(FarmflowId(ff)),
        farmflow_id: FarmflowId(ff),
        kounta_id: k.map(KountaId),
        kounta_snapshot: Some(Customer {
            first_name: "Jamie".into(),
            email: "jamie@example.com".into(),
            ..Customer::default()
        }),
        farmflow_snapshot: None,
        kounta_verified: true,
        state: LinkState::Active,
        last_verified_at: Some(100),
        last_synced_at: None,
        last_error: None,
        consecutive_failures: 0,
        parked: None,
    }
}

#[test]
fn creates_the_db_private_and_in_wal_mode() {
    let (dir, store) = temp_store();
    let mode = std::fs::metadata(dir.path().join("state.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let journal: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(store.schema_version().unwrap(), schema::CURRENT_VERSION);
}

#[test]
fn an_existing_world_readable_db_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Store::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn reopening_an_up_to_date_db_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = Store::open(&path).unwrap();
        store.upsert_link(&sample_link(1, Some(10))).unwrap();
    }
    let schema_before: Vec<String> = {
        let store = Store::open(&path).unwrap();
        let mut stmt = store
            .conn
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let store = Store::open(&path).unwrap();
    let mut stmt = store
        .conn
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .unwrap();
    let schema_after: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(schema_before, schema_after);
    assert_eq!(store.links().unwrap().len(), 1);
    assert_eq!(store.schema_version().unwrap(), schema::CURRENT_VERSION);
}

#[test]
fn a_db_from_a_newer_farmsync_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = Store::open(&path).unwrap();
        store
            .conn
            .pragma_update(None, "user_version", schema::CURRENT_VERSION + 1)
            .unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err:?}");
    assert!(err.to_string().contains("newer"), "{err}");
    let err = Store::open_read_only(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err:?}");
}

#[test]
fn read_only_open_of_a_missing_db_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.db");
    let err = Store::open_read_only(&path).unwrap_err();
    assert!(matches!(err, StoreError::Missing(_)));
    assert!(err.to_string().contains("farmsync has not run yet"));
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn links_round_trip_and_ids_are_unique() {
    let (_dir, store) = temp_store();
    let mut link = sample_link(7, Some(70));
    store.upsert_link(&link).unwrap();
    assert_eq!(store.link(&link.reference_id).unwrap(), Some(link.clone()));

    link.state = LinkState::DeleteBlocked;
    link.last_error = Some("boom".into());
    link.consecutive_failures = 2;
    store.upsert_link(&link).unwrap();
    assert_eq!(store.links().unwrap(), vec![link.clone()]);

    // A second link claiming the same CRM customer is refused by the schema.
    let clash = sample_link(8, Some(70));
    assert!(store.upsert_link(&clash).is_err());
    assert_eq!(
        store.link_counts().unwrap(),
        vec![(LinkState::DeleteBlocked, 1)]
    );
}

#[test]
fn intents_stay_unsettled_until_settled_with_their_link() {
    let (_dir, mut store) = temp_store();
    let intent = NewIntent {
        run_id: "r1".into(),
        side: Side::Farmflow,
        op: "create".into(),
        reference_id: None,
        kounta_id: Some(KountaId(5)),
        farmflow_id: None,
        payload: "{\"firstname\":\"A\"}".into(),
        watermark: Some(41),
        cycle: "sweep".into(),
        changes: vec![FieldChange {
            field: "first_name".into(),
            before: String::new(),
            after: "A".into(),
        }],
    };
    let id = store.begin_intent(&intent).unwrap();
    let pending = store.unsettled_intents().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id);
    assert_eq!(pending[0].intent, intent);

    let link = sample_link(42, Some(5));
    assert!(store.history(&HistoryFilter::default()).unwrap().is_empty());
    store
        .settle_intent(id, "created 42", Some(&link), Written::Applied)
        .unwrap();
    assert!(store.unsettled_intents().unwrap().is_empty());
    assert_eq!(store.link(&link.reference_id).unwrap(), Some(link));
    // The history row is written with the settle, and learns the link from it.
    let history = store.history(&HistoryFilter::default()).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].reference_id.as_deref(), Some("farmflow:42"));
    assert_eq!(history[0].action, "create");
    assert_eq!(history[0].changes, intent.changes);
}

#[test]
fn a_failed_link_write_leaves_the_intent_unsettled() {
    let (_dir, mut store) = temp_store();
    store.upsert_link(&sample_link(1, Some(10))).unwrap();
    let id = store
        .begin_intent(&NewIntent {
            run_id: "r1".into(),
            side: Side::Kounta,
            op: "create".into(),
            reference_id: Some(ReferenceId::for_farmflow(FarmflowId(2))),
            kounta_id: None,
            farmflow_id: Some(FarmflowId(2)),
            payload: "{}".into(),
            watermark: None,
            cycle: "sweep".into(),
            changes: Vec::new(),
        })
        .unwrap();
    // kounta id 10 is taken: the transaction must roll back as a whole.
    assert!(
        store
            .settle_intent(
                id,
                "created",
                Some(&sample_link(2, Some(10))),
                Written::Applied
            )
            .is_err()
    );
    assert_eq!(store.unsettled_intents().unwrap().len(), 1);
}

#[test]
fn runs_record_outcomes_and_the_last_real_run() {
    let (_dir, store) = temp_store();
    store.start_run("a", false).unwrap();
    store
        .finish_run("a", 0, &serde_json::json!({"created": 2}))
        .unwrap();
    store.start_run("b", true).unwrap();
    store.finish_run("b", 1, &serde_json::json!({})).unwrap();
    store.start_run("c", false).unwrap();
    let last = store.last_finished_run().unwrap().unwrap();
    assert_eq!(last.run_id, "a");
    assert_eq!(last.exit_code, Some(0));
    assert_eq!(last.summary.unwrap()["created"], 2);
    let recent = store.recent_runs(10).unwrap();
    assert_eq!(recent.len(), 3);
    assert!(
        recent
            .iter()
            .any(|r| r.run_id == "c" && r.finished_at.is_none())
    );
}

#[test]
fn tokens_are_replaced_not_added() {
    let (_dir, store) = temp_store();
    assert!(store.tokens("kounta").unwrap().is_none());
    let first = StoredTokens {
        access_token: "a1".into(),
        refresh_token: "r1".into(),
        expires_at: Some(10),
    };
    store.save_tokens("kounta", &first).unwrap();
    let second = StoredTokens {
        access_token: "a2".into(),
        refresh_token: "r2".into(),
        expires_at: None,
    };
    store.save_tokens("kounta", &second).unwrap();
    assert_eq!(store.tokens("kounta").unwrap(), Some(second.clone()));
    assert!(!format!("{second:?}").contains("r2"));
}

#[test]
fn hints_coalesce_and_clear_only_what_was_seen() {
    let (_dir, store) = temp_store();
    store.add_hint(KountaId(3), "customers/updated").unwrap();
    store.add_hint(KountaId(3), "customers/updated").unwrap();
    store.add_hint(KountaId(4), "customers/created").unwrap();
    let hints = store.hints().unwrap();
    assert_eq!(hints.len(), 2);
    assert_eq!(
        hints
            .iter()
            .find(|h| h.kounta_id == KountaId(3))
            .unwrap()
            .deliveries,
        2
    );
    // A delivery that arrives after the run read the hints is kept.
    store.add_hint(KountaId(4), "customers/updated").unwrap();
    store.clear_hints(&hints).unwrap();
    let left: Vec<_> = store
        .hints()
        .unwrap()
        .into_iter()
        .map(|h| h.kounta_id)
        .collect();
    assert_eq!(left, vec![KountaId(4)]);
}

#[test]
fn conflicts_and_attention_are_listed() {
    let (_dir, store) = temp_store();
    let r = ReferenceId::for_farmflow(FarmflowId(9));
    store
        .record_conflict("run", &r, "phone", "1", "2", "kounta")
        .unwrap();
    let open = store.open_conflicts().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].field, "phone");
    assert_eq!(open[0].winner, "kounta");

    assert!(
        store
            .note_attention("skipped", "farmflow:9", "no contact")
            .unwrap()
    );
    assert!(
        !store
            .note_attention("skipped", "farmflow:9", "no contact")
            .unwrap()
    );
    store
        .note_attention("skipped", "farmflow:10", "no contact")
        .unwrap();
    store
        .note_attention("country", "farmflow:9", "Tasmania")
        .unwrap();
    store
        .retain_attention("skipped", &["farmflow:10".to_owned()])
        .unwrap();
    let kinds: Vec<_> = store
        .attention()
        .unwrap()
        .into_iter()
        .map(|a| (a.kind, a.subject))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("country".to_owned(), "farmflow:9".to_owned()),
            ("skipped".to_owned(), "farmflow:10".to_owned())
        ]
    );
}

#[test]
fn read_only_store_sees_what_the_writer_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let writer = Store::open(&path).unwrap();
    writer.upsert_link(&sample_link(1, Some(2))).unwrap();
    let reader = Store::open_read_only(&path).unwrap();
    assert_eq!(reader.links().unwrap().len(), 1);
    assert!(reader.upsert_link(&sample_link(3, Some(4))).is_err());
}

// ----- the request ledger -----

mod ledger {
    use crate::http::Api;
    use crate::ratelimit::{GrantLedger, LedgerRequest};

    use super::*;

    fn ask(holder: i64, now_ms: i64) -> LedgerRequest {
        LedgerRequest {
            api: Api::Kounta,
            holder,
            now_ms,
            window_ms: 60_000,
            settle: None,
            lease_until_ms: Some(now_ms + 1_000),
            record: true,
        }
    }

    fn rows(store: &Store) -> Vec<(String, i64, i64, u32)> {
        let mut stmt = store
            .conn
            .prepare("SELECT api, holder, at_ms, n FROM request_grants ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_lease_is_seen_by_other_holders_only_and_settles_to_what_was_used() {
        let (dir, store) = temp_store();
        let ledger = RequestLedger::open(&dir.path().join("state.db")).unwrap();
        let now = 1_800_000_000_000;

        let a = ledger
            .exchange(&ask(1, now), &|others| 8 - others as u32)
            .unwrap();
        assert_eq!(a.others, vec![]);
        let (row, n) = a.lease.unwrap();
        assert_eq!(n, 8);
        // Holder 2 sees holder 1's lease, stamped at its end; holder 1 does not see its own.
        let b = ledger
            .exchange(&ask(2, now + 10), &|others| {
                8u32.saturating_sub(others as u32)
            })
            .unwrap();
        assert_eq!(b.others, vec![(now + 1_000, 8)]);
        assert_eq!(b.lease, None, "no room left");
        let mine = ledger
            .exchange(
                &LedgerRequest {
                    lease_until_ms: None,
                    ..ask(1, now + 20)
                },
                &|_| 0,
            )
            .unwrap();
        assert_eq!(mine.others, vec![]);

        // Holder 1 used three: the rest is free again.
        let settle = LedgerRequest {
            settle: Some((row, 3)),
            lease_until_ms: None,
            ..ask(1, now + 30)
        };
        ledger.exchange(&settle, &|_| 0).unwrap();
        let c = ledger
            .exchange(&ask(2, now + 40), &|others| 8 - others as u32)
            .unwrap();
        assert_eq!(c.others, vec![(now + 1_000, 3)]);
        assert_eq!(c.lease.map(|l| l.1), Some(5));
        assert_eq!(
            rows(&store),
            vec![
                ("kounta".into(), 1, now + 1_000, 3),
                ("kounta".into(), 2, now + 1_040, 5)
            ]
        );
    }

    #[test]
    fn rows_leave_the_window_and_are_pruned_later_and_apis_are_apart() {
        let (dir, store) = temp_store();
        let ledger = RequestLedger::open(&dir.path().join("state.db")).unwrap();
        let t0 = 1_800_000_000_000;
        ledger.exchange(&ask(1, t0), &|_| 4).unwrap();
        ledger
            .exchange(
                &LedgerRequest {
                    api: Api::Farmflow,
                    ..ask(1, t0)
                },
                &|_| 2,
            )
            .unwrap();

        // A window later the row no longer counts, but stays a while.
        let later = ledger.exchange(&ask(2, t0 + 61_001), &|_| 0).unwrap();
        assert_eq!(later.others, vec![]);
        assert_eq!(rows(&store).len(), 2);
        // Long after, the next exchange prunes it; the FarmFlow row is another API's.
        ledger.exchange(&ask(2, t0 + 200_000), &|_| 0).unwrap();
        assert_eq!(rows(&store), vec![("farmflow".into(), 1, t0 + 1_000, 2)]);
    }

    #[test]
    fn an_exchange_that_records_nothing_writes_nothing() {
        let (dir, store) = temp_store();
        let path = dir.path().join("state.db");
        let ledger = RequestLedger::open(&path).unwrap();
        let now = 1_800_000_000_000;
        ledger.exchange(&ask(1, now), &|_| 5).unwrap();
        let before = rows(&store);

        let dry = ledger
            .exchange(
                &LedgerRequest {
                    record: false,
                    settle: Some((1, 0)),
                    ..ask(2, now + 5)
                },
                &|others| 9 - others as u32,
            )
            .unwrap();

        assert_eq!(dry.others, vec![(now + 1_000, 5)]);
        assert_eq!(dry.lease, Some((0, 4)), "granted, not recorded");
        assert_eq!(rows(&store), before);
    }

    #[test]
    fn the_ledger_opens_only_a_migrated_db_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        assert!(matches!(
            RequestLedger::open(&path),
            Err(StoreError::Missing(_))
        ));
        assert!(!path.exists(), "it creates nothing");
        // A DB of schema 1, from before the ledger.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        assert!(matches!(
            RequestLedger::open(&path),
            Err(StoreError::NeedsMigration { found: 1, .. })
        ));
        Store::open(&path).unwrap();
        RequestLedger::open(&path).unwrap();
    }
}

#[test]
fn history_keeps_applied_and_unconfirmed_writes_only_and_is_pruned_by_age() {
    let (_dir, mut store) = temp_store();
    let mut write = |op: &str, written: Written| {
        let id = store
            .begin_intent(&NewIntent {
                run_id: "r1".into(),
                side: Side::Kounta,
                op: op.into(),
                reference_id: Some(ReferenceId::for_farmflow(FarmflowId(7))),
                kounta_id: Some(KountaId(70)),
                farmflow_id: Some(FarmflowId(7)),
                payload: "{}".into(),
                watermark: None,
                cycle: "quick".into(),
                changes: vec![FieldChange {
                    field: "phone".into(),
                    before: "1".into(),
                    after: "2".into(),
                }],
            })
            .unwrap();
        store.settle_intent(id, op, None, written).unwrap();
    };
    write("update", Written::Applied);
    write("tag", Written::No);
    write("unlink", Written::Unconfirmed);
    let rows = store.history(&HistoryFilter::default()).unwrap();
    let kept: Vec<(&str, &str)> = rows
        .iter()
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(kept, vec![("unlink", "unconfirmed"), ("update", "applied")]);
    assert!(
        rows.iter()
            .all(|e| e.cycle == "quick" && e.kounta_id == Some(70))
    );
    let by_crm = store
        .history(&HistoryFilter {
            reference: Some("crm:70".into()),
            limit: Some(1),
            ..HistoryFilter::default()
        })
        .unwrap();
    assert_eq!(by_crm.len(), 1);
    assert_eq!(
        store.prune_history(now() - 60).unwrap(),
        0,
        "young rows stay"
    );
    assert_eq!(store.prune_history(now() + 1).unwrap(), 2);
    assert!(store.history(&HistoryFilter::default()).unwrap().is_empty());
}
