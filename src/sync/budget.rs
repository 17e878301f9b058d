//! Reading the CRM on a budget (DESIGN.md, "Reading the CRM on a budget").
//!
//! The CRM list shows only id, names and email; a full record costs one request. Each run reads
//! in full what it must (new ids, ids whose listed fields moved, webhook hints, unsettled
//! intents, unverified writes, links past the staleness bound), then the least recently verified
//! links up to the run's verification budget, so every link is verified at least every
//! ⌈links ÷ budget⌉ runs.
//!
//! The staleness bound is a promise about the oldest verification: a link verified longer ago
//! than `max_age_secs` (or never) is read whatever the budget says. Reads past the budget cost
//! time, not rate: the client's limiter still keeps every minute under the configured rate. Set
//! the bound above ⌈links ÷ budget⌉ × the schedule interval, or every run will read more than its
//! budget.

use std::collections::{BTreeMap, BTreeSet};

use crate::customer::Customer;
use crate::farmflow::model::FarmflowCustomer;
use crate::ids::KountaId;
use crate::kounta::model::KountaListItem;
use crate::store::{Link, LinkState};

/// The staleness bound and the clock it is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    /// Now, in Unix seconds.
    pub now: i64,
    /// A link verified longer ago than this (or never) is read regardless of the budget.
    pub max_age_secs: i64,
}

/// The CRM ids to read in full this run, in the order to read them: every required id first
/// (sorted within each reason), then the least recently verified links (never verified first,
/// then oldest `last_verified_at`, then lowest id) up to `budget`.
pub fn select_full_reads(
    list: &[KountaListItem],
    links: &[Link],
    hinted_ids: &[KountaId],
    unsettled_ids: &[KountaId],
    budget: usize,
    max_staleness: Option<Staleness>,
) -> Vec<KountaId> {
    let mut listed: BTreeMap<KountaId, &KountaListItem> = BTreeMap::new();
    for item in list {
        listed.entry(item.id).or_insert(item);
    }
    let mut by_kounta: BTreeMap<KountaId, &Link> = BTreeMap::new();
    for link in links {
        let Some(k) = link.kounta_id else { continue };
        // Prefer a live row when a tombstone shares the CRM id.
        let replace = by_kounta
            .get(&k)
            .is_none_or(|old| old.state == LinkState::Tombstone);
        if replace {
            by_kounta.insert(k, link);
        }
    }

    let mut chosen: Vec<KountaId> = Vec::new();
    let mut seen: BTreeSet<KountaId> = BTreeSet::new();
    let mut take = |ids: &mut dyn Iterator<Item = KountaId>, chosen: &mut Vec<KountaId>| {
        let mut batch: Vec<KountaId> = ids.filter(|id| !seen.contains(id)).collect();
        batch.sort();
        batch.dedup();
        for id in batch {
            seen.insert(id);
            chosen.push(id);
        }
    };

    // New ids: listed, no link row.
    take(
        &mut listed
            .keys()
            .filter(|k| !by_kounta.contains_key(k))
            .copied(),
        &mut chosen,
    );
    // Live links whose listed fields moved away from the snapshot.
    take(
        &mut listed.iter().filter_map(|(k, item)| {
            let link = by_kounta.get(k)?;
            let moved = link.state != LinkState::Tombstone
                && link
                    .kounta_snapshot
                    .as_ref()
                    .is_none_or(|s| !Customer::from_kounta_listed(item).listed_eq(s));
            moved.then_some(*k)
        }),
        &mut chosen,
    );
    take(&mut hinted_ids.iter().copied(), &mut chosen);
    take(&mut unsettled_ids.iter().copied(), &mut chosen);
    let live_listed = || {
        by_kounta
            .iter()
            .filter(|(k, l)| l.state != LinkState::Tombstone && listed.contains_key(k))
    };
    // Writes not read back yet.
    take(
        &mut live_listed()
            .filter(|(_, l)| !l.kounta_verified)
            .map(|(k, _)| *k),
        &mut chosen,
    );
    if let Some(bound) = max_staleness {
        take(
            &mut live_listed()
                .filter(|(_, l)| {
                    l.last_verified_at
                        .is_none_or(|t| bound.now.saturating_sub(t) > bound.max_age_secs)
                })
                .map(|(k, _)| *k),
            &mut chosen,
        );
    }

    // The budget: least recently verified first.
    let mut rest: Vec<(Option<i64>, KountaId)> = live_listed()
        .filter(|(k, _)| !seen.contains(k))
        .map(|(k, l)| (l.last_verified_at, *k))
        .collect();
    // `None` sorts before `Some`: never-verified links come first.
    rest.sort();
    chosen.extend(rest.into_iter().take(budget).map(|(_, k)| k));
    chosen
}

/// The share of the CRM rate a sweep leaves free for quick cycles: a quarter, at least 5 a
/// minute, and always less than the whole rate.
pub fn quick_reserve(rate_per_minute: u32) -> u32 {
    (rate_per_minute / 4)
        .max(5)
        .min(rate_per_minute.saturating_sub(1))
}

/// How many verification reads the run may make: the CRM rate, minus the quick cycles' reserve,
/// minus the CRM requests made in the last 60 s by any farmsync process on this state DB (the
/// limiter's [`crate::ratelimit::RateLimiter::recent_shared`], read from the state DB's request
/// ledger), minus those the run must make anyway; never below 0.
pub fn verification_budget(
    rate_per_minute: u32,
    requests_in_last_60s: u32,
    required_requests: u32,
) -> usize {
    let left = rate_per_minute
        .saturating_sub(quick_reserve(rate_per_minute))
        .saturating_sub(requests_in_last_60s)
        .saturating_sub(required_requests);
    usize::try_from(left).unwrap_or(usize::MAX)
}

/// CRM ids of live links whose FarmFlow record changed since its snapshot: a change to copy into
/// the CRM needs the full CRM record first (see `Plan::needs_kounta_reads`). Passing these with
/// the webhook hints saves the plan a second pass.
pub fn kounta_reads_for_farmflow_changes(
    farmflow: &[FarmflowCustomer],
    links: &[Link],
) -> Vec<KountaId> {
    let by_id: BTreeMap<_, _> = farmflow.iter().map(|f| (f.id, f)).collect();
    let mut ids: Vec<KountaId> = links
        .iter()
        .filter(|l| l.state == LinkState::Active)
        .filter_map(|l| {
            let record = by_id.get(&l.farmflow_id)?;
            let now = Customer::from_farmflow(&record.fields).customer;
            let changed = l
                .farmflow_snapshot
                .as_ref()
                .is_none_or(|s| !now.eq_normalised(s));
            if changed { l.kounta_id } else { None }
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::farmflow::model::FarmflowFields;
    use crate::ids::{FarmflowId, ReferenceId};

    fn item(id: i64, first: &str, email: &str) -> KountaListItem {
        KountaListItem {
            id: KountaId(id),
            first_name: first.into(),
            last_name: "L".into(),
            email: email.into(),
        }
    }

    fn link(k: i64, first: &str, email: &str, verified_at: Option<i64>) -> Link {
        let snapshot = Customer {
            first_name: first.into(),
            last_name: "L".into(),
            email: email.into(),
            ..Customer::default()
        };
        Link {
            reference_id: ReferenceId::for_farmflow(FarmflowId(k + 1000)),
            farmflow_id: FarmflowId(k + 1000),
            kounta_id: Some(KountaId(k)),
            kounta_snapshot: Some(snapshot.clone()),
            farmflow_snapshot: Some(snapshot),
            kounta_verified: true,
            state: LinkState::Active,
            last_verified_at: verified_at,
            last_synced_at: None,
            last_error: None,
            consecutive_failures: 0,
            parked: None,
        }
    }

    fn ids(v: &[i64]) -> Vec<KountaId> {
        v.iter().map(|&i| KountaId(i)).collect()
    }

    #[test]
    fn required_reads_come_first_whatever_the_budget() {
        let list = vec![
            item(1, "A", "a@x"),
            item(2, "B", "b@x"),
            item(3, "C", "changed@x"),
            item(4, "D", "d@x"),
            item(5, "E", "e@x"),
        ];
        let mut unverified = link(4, "D", "d@x", Some(50));
        unverified.kounta_verified = false;
        let links = vec![
            link(2, "B", "B@X ", Some(100)),
            link(3, "C", "c@x", Some(100)),
            unverified,
            link(5, "E", "e@x", Some(100)),
        ];
        let got = select_full_reads(&list, &links, &ids(&[9]), &ids(&[8]), 0, None);
        // 1 new, 3 listed fields moved, 9 hinted, 8 unsettled, 4 unverified; 2 is only a
        // spelling difference; 5 is unchanged and the budget is 0.
        assert_eq!(got, ids(&[1, 3, 9, 8, 4]));
    }

    #[test]
    fn budget_takes_least_recently_verified_first() {
        let list: Vec<_> = (1..=5).map(|i| item(i, "N", "n@x")).collect();
        let links = vec![
            link(1, "N", "n@x", Some(300)),
            link(2, "N", "n@x", None),
            link(3, "N", "n@x", Some(100)),
            link(4, "N", "n@x", Some(200)),
            link(5, "N", "n@x", Some(100)),
        ];
        let got = select_full_reads(&list, &links, &[], &[], 3, None);
        assert_eq!(got, ids(&[2, 3, 5]));
        let all = select_full_reads(&list, &links, &[], &[], 99, None);
        assert_eq!(all, ids(&[2, 3, 5, 4, 1]));
    }

    #[test]
    fn hinted_ids_are_not_read_twice_and_do_not_use_budget() {
        let list: Vec<_> = (1..=3).map(|i| item(i, "N", "n@x")).collect();
        let links: Vec<_> = (1..=3).map(|i| link(i, "N", "n@x", Some(i))).collect();
        let got = select_full_reads(&list, &links, &ids(&[3, 3]), &ids(&[3]), 1, None);
        assert_eq!(got, ids(&[3, 1]));
    }

    #[test]
    fn stale_links_are_read_beyond_the_budget() {
        let list: Vec<_> = (1..=3).map(|i| item(i, "N", "n@x")).collect();
        let links = vec![
            link(1, "N", "n@x", Some(1_000)),
            link(2, "N", "n@x", Some(9_000)),
            link(3, "N", "n@x", Some(500)),
        ];
        let bound = Staleness {
            now: 10_000,
            max_age_secs: 8_600,
        };
        let got = select_full_reads(&list, &links, &[], &[], 0, Some(bound));
        assert_eq!(got, ids(&[1, 3]));
    }

    #[test]
    fn tombstones_and_unlisted_links_are_not_verified() {
        let list = vec![item(1, "N", "n@x")];
        let mut dead = link(1, "N", "n@x", None);
        dead.state = LinkState::Tombstone;
        let gone = link(2, "N", "n@x", None);
        let got = select_full_reads(&list, &[dead, gone], &[], &[], 10, None);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn every_link_is_verified_within_ceil_links_over_budget_runs() {
        let n = 10;
        let budget = 3;
        let list: Vec<_> = (1..=n).map(|i| item(i, "N", "n@x")).collect();
        let mut links: Vec<_> = (1..=n).map(|i| link(i, "N", "n@x", Some(0))).collect();
        let mut verified_in: BTreeMap<KountaId, usize> = BTreeMap::new();
        let runs = (n as usize).div_ceil(budget);
        for run in 1..=runs {
            let got = select_full_reads(&list, &links, &[], &[], budget, None);
            assert!(got.len() <= budget);
            for l in links.iter_mut() {
                if got.contains(&l.kounta_id.unwrap()) {
                    l.last_verified_at = Some(run as i64);
                    verified_in.entry(l.kounta_id.unwrap()).or_insert(run);
                }
            }
        }
        assert_eq!(verified_in.len(), n as usize);
    }

    #[test]
    fn verification_budget_never_goes_below_zero() {
        // 60 a minute: 15 are the quick cycles' reserve.
        assert_eq!(verification_budget(60, 10, 5), 30);
        assert_eq!(verification_budget(60, 50, 20), 0);
        assert_eq!(verification_budget(60, 70, 0), 0);
        assert_eq!(verification_budget(0, 0, 0), 0);
    }

    #[test]
    fn the_quick_reserve_is_a_quarter_at_least_five_never_the_whole_rate() {
        assert_eq!(quick_reserve(60), 15);
        assert_eq!(quick_reserve(180), 45);
        assert_eq!(quick_reserve(12), 5);
        assert_eq!(quick_reserve(5), 4);
        assert_eq!(quick_reserve(1), 0);
        assert_eq!(quick_reserve(0), 0);
    }

    #[test]
    fn farmflow_changes_ask_for_crm_reads() {
        let mut changed = link(1, "N", "n@x", Some(1));
        changed.farmflow_id = FarmflowId(11);
        let mut same = link(2, "N", "n@x", Some(1));
        same.farmflow_id = FarmflowId(12);
        let fields = |email: &str| FarmflowFields {
            firstname: "N".into(),
            lastname: "L".into(),
            email: email.into(),
            ..FarmflowFields::default()
        };
        let farmflow = vec![
            FarmflowCustomer {
                id: FarmflowId(11),
                fields: fields("new@x"),
            },
            FarmflowCustomer {
                id: FarmflowId(12),
                fields: fields("N@X"),
            },
        ];
        assert_eq!(
            kounta_reads_for_farmflow_changes(&farmflow, &[changed, same]),
            ids(&[1])
        );
    }
}
