//! Matching new records before anything is created (DESIGN.md, "Each run", step 2).
//!
//! Rules, in order: the CRM `reference_id` naming a live, unlinked FarmFlow customer; then
//! normalised email; then phone digits; then first + last name (trimmed, case-folded, both
//! non-empty). A rule links only when exactly one still-unlinked record on each side holds the
//! value; otherwise the record goes on to the next rule. A match links; it never creates.
//!
//! A CRM customer whose `reference_id` names a FarmFlow id is never created in FarmFlow: it is
//! linked, or a collision (the FarmFlow customer is linked elsewhere, or named by several CRM
//! customers), or — when the FarmFlow customer no longer exists and no link row says otherwise —
//! a dangling reference that the plan turns into a tombstone.

use std::collections::{BTreeMap, BTreeSet};

use crate::customer::{Customer, Field};
use crate::ids::{FarmflowId, KountaId, ReferenceId};
use crate::sync::action::MatchRule;

/// An unlinked CRM customer.
#[derive(Debug, Clone)]
pub struct CrmCandidate<'a> {
    /// The CRM id.
    pub id: KountaId,
    /// The canonical record; for an unread record, built from the listed fields only.
    pub customer: &'a Customer,
    /// The parsed `reference_id` (`None` when unset or not of the form `farmflow:<id>`).
    pub reference: Option<ReferenceId>,
    /// Whether the record was read in full. Unread records count towards uniqueness but are
    /// never linked: their phone and `reference_id` are unknown.
    pub read: bool,
}

/// An unlinked FarmFlow customer.
#[derive(Debug, Clone)]
pub struct FfCandidate<'a> {
    /// The FarmFlow id.
    pub id: FarmflowId,
    /// The canonical record.
    pub customer: &'a Customer,
}

/// What the world says about FarmFlow ids outside the candidates.
#[derive(Debug, Clone, Default)]
pub struct KnownIds {
    /// FarmFlow ids that have a link row, with that row's CRM id (`None`: a tombstone whose CRM
    /// side was never known).
    pub linked_farmflow: BTreeMap<FarmflowId, Option<KountaId>>,
    /// Every FarmFlow id in the (complete) FarmFlow list.
    pub existing_farmflow: BTreeSet<FarmflowId>,
}

/// Two records to link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MatchedPair {
    /// The CRM customer.
    pub kounta_id: KountaId,
    /// The FarmFlow customer.
    pub farmflow_id: FarmflowId,
    /// The rule that matched.
    pub rule: MatchRule,
}

/// A CRM customer whose `reference_id` cannot be honoured: no link, no create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Collision {
    /// The CRM customer.
    pub kounta_id: KountaId,
    /// The FarmFlow id its `reference_id` names.
    pub farmflow_id: FarmflowId,
    /// The CRM customer the FarmFlow id is linked to; `None` when several CRM customers name it
    /// and none could be told apart.
    pub linked_to: Option<KountaId>,
}

/// A CRM customer whose `reference_id` names a FarmFlow customer that no longer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dangling {
    /// The CRM customer.
    pub kounta_id: KountaId,
    /// The missing FarmFlow id its `reference_id` names.
    pub farmflow_id: FarmflowId,
}

/// The outcome of matching, every list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matching {
    /// Records to link.
    pub pairs: Vec<MatchedPair>,
    /// CRM customers whose `reference_id` cannot be honoured.
    pub collisions: Vec<Collision>,
    /// CRM customers whose `reference_id` names a deleted FarmFlow customer.
    pub dangling: Vec<Dangling>,
    /// FarmFlow candidates whose only possible twin is an unread CRM record: neither linked nor
    /// created this run.
    pub held_farmflow: Vec<FarmflowId>,
    /// CRM candidates not read in full.
    pub unread_kounta: Vec<KountaId>,
}

impl Matching {
    /// Whether a CRM candidate was dealt with (linked, collision, dangling or unread).
    pub fn kounta_settled(&self, id: KountaId) -> bool {
        self.pairs.iter().any(|p| p.kounta_id == id)
            || self.collisions.iter().any(|c| c.kounta_id == id)
            || self.dangling.iter().any(|d| d.kounta_id == id)
            || self.unread_kounta.contains(&id)
    }
}

/// Matches unlinked CRM customers with unlinked FarmFlow customers.
pub fn match_new(crm: &[CrmCandidate<'_>], ff: &[FfCandidate<'_>], known: &KnownIds) -> Matching {
    let mut out = Matching::default();
    let mut crm_left: BTreeMap<KountaId, &CrmCandidate<'_>> = BTreeMap::new();
    for c in crm {
        crm_left.entry(c.id).or_insert(c);
    }
    let mut ff_left: BTreeMap<FarmflowId, &FfCandidate<'_>> = BTreeMap::new();
    for f in ff {
        ff_left.entry(f.id).or_insert(f);
    }
    out.unread_kounta = crm_left
        .values()
        .filter(|c| !c.read)
        .map(|c| c.id)
        .collect();

    // Rule 1: reference_id.
    let mut by_reference: BTreeMap<FarmflowId, Vec<KountaId>> = BTreeMap::new();
    for c in crm_left.values().filter(|c| c.read) {
        if let Some(r) = &c.reference {
            by_reference.entry(r.farmflow_id()).or_default().push(c.id);
        }
    }
    for (farmflow_id, claimants) in &by_reference {
        if let Some(row) = known.linked_farmflow.get(farmflow_id) {
            match (row, claimants.as_slice()) {
                // A tombstone whose CRM side was never known: the one claimant is that side.
                (None, [only]) if !known.existing_farmflow.contains(farmflow_id) => {
                    out.dangling.push(Dangling {
                        kounta_id: *only,
                        farmflow_id: *farmflow_id,
                    });
                }
                _ => out.collisions.extend(claimants.iter().map(|&k| Collision {
                    kounta_id: k,
                    farmflow_id: *farmflow_id,
                    linked_to: *row,
                })),
            }
            claimants.iter().for_each(|k| {
                crm_left.remove(k);
            });
            continue;
        }
        if !known.existing_farmflow.contains(farmflow_id) {
            match claimants.as_slice() {
                [only] => out.dangling.push(Dangling {
                    kounta_id: *only,
                    farmflow_id: *farmflow_id,
                }),
                _ => out.collisions.extend(claimants.iter().map(|&k| Collision {
                    kounta_id: k,
                    farmflow_id: *farmflow_id,
                    linked_to: None,
                })),
            }
            claimants.iter().for_each(|k| {
                crm_left.remove(k);
            });
            continue;
        }
        if let ([only], true) = (claimants.as_slice(), ff_left.contains_key(farmflow_id)) {
            out.pairs.push(MatchedPair {
                kounta_id: *only,
                farmflow_id: *farmflow_id,
                rule: MatchRule::ReferenceId,
            });
            crm_left.remove(only);
            ff_left.remove(farmflow_id);
        }
        // Several claimants: they go on to the next rules; whoever is left over afterwards is a
        // collision, never a create.
    }

    // Rules 2–4.
    let rules: [(MatchRule, KeyFn); 3] = [
        (MatchRule::Email, |c| {
            non_empty(Field::Email.normalise(&c.email)).map(|e| vec![e])
        }),
        (MatchRule::Phone, |c| {
            non_empty(Field::Phone.normalise(&c.phone)).map(|p| vec![p])
        }),
        (MatchRule::Name, |c| c.match_name().map(|(f, l)| vec![f, l])),
    ];
    for (rule, key) in rules {
        let mut crm_by: BTreeMap<Vec<String>, Vec<&CrmCandidate<'_>>> = BTreeMap::new();
        for c in crm_left.values() {
            // An unread record's phone is unknown; it cannot take part in the phone rule.
            if rule == MatchRule::Phone && !c.read {
                continue;
            }
            if let Some(k) = key(c.customer) {
                crm_by.entry(k).or_default().push(c);
            }
        }
        let mut ff_by: BTreeMap<Vec<String>, Vec<FarmflowId>> = BTreeMap::new();
        for f in ff_left.values() {
            if let Some(k) = key(f.customer) {
                ff_by.entry(k).or_default().push(f.id);
            }
        }
        for (value, crm_ids) in crm_by {
            let Some(ff_ids) = ff_by.get(&value) else {
                continue;
            };
            if let ([c], [f]) = (crm_ids.as_slice(), ff_ids.as_slice()) {
                if c.read {
                    out.pairs.push(MatchedPair {
                        kounta_id: c.id,
                        farmflow_id: *f,
                        rule,
                    });
                } else {
                    out.held_farmflow.push(*f);
                }
                crm_left.remove(&c.id);
                ff_left.remove(f);
            }
        }
    }

    // Claimants of a live FarmFlow id that no rule settled.
    for (farmflow_id, claimants) in &by_reference {
        for k in claimants {
            if crm_left.remove(k).is_some() {
                let linked_to = out
                    .pairs
                    .iter()
                    .find(|p| p.farmflow_id == *farmflow_id)
                    .map(|p| p.kounta_id);
                out.collisions.push(Collision {
                    kounta_id: *k,
                    farmflow_id: *farmflow_id,
                    linked_to,
                });
            }
        }
    }

    out.pairs.sort();
    out.collisions.sort();
    out.dangling.sort();
    out.held_farmflow.sort();
    out
}

type KeyFn = fn(&Customer) -> Option<Vec<String>>;

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(first: &str, last: &str, email: &str, phone: &str) -> Customer {
        Customer {
            first_name: first.into(),
            last_name: last.into(),
            email: email.into(),
            phone: phone.into(),
            ..Customer::default()
        }
    }

    fn crm<'a>(id: i64, c: &'a Customer, reference: &str) -> CrmCandidate<'a> {
        CrmCandidate {
            id: KountaId(id),
            customer: c,
            reference: ReferenceId::parse(reference),
            read: true,
        }
    }

    fn ff(id: i64, c: &Customer) -> FfCandidate<'_> {
        FfCandidate {
            id: FarmflowId(id),
            customer: c,
        }
    }

    fn known(existing: &[i64]) -> KnownIds {
        KnownIds {
            linked_farmflow: BTreeMap::new(),
            existing_farmflow: existing.iter().map(|&i| FarmflowId(i)).collect(),
        }
    }

    fn pairs(m: &Matching) -> Vec<(i64, i64, MatchRule)> {
        m.pairs
            .iter()
            .map(|p| (p.kounta_id.0, p.farmflow_id.0, p.rule))
            .collect()
    }

    #[test]
    fn each_rule_links_a_unique_pair() {
        let by_ref_k = person("A", "One", "a1@x.com", "");
        let by_ref_f = person("Zed", "Other", "zz@x.com", "");
        let by_email_k = person("B", "Two", "B2@X.com ", "");
        let by_email_f = person("Bee", "Too", "b2@x.com", "");
        let by_phone_k = person("C", "Three", "c3@x.com", "0412 000 003");
        let by_phone_f = person("Cee", "", "", "(0412) 000-003");
        let by_name_k = person(" Dana ", "FOUR", "d@x.com", "1");
        let by_name_f = person("dana", "four", "", "2");
        let crm_side = [
            crm(1, &by_ref_k, "farmflow:10"),
            crm(2, &by_email_k, ""),
            crm(3, &by_phone_k, "ABC123"),
            crm(4, &by_name_k, ""),
        ];
        let ff_side = [
            ff(10, &by_ref_f),
            ff(20, &by_email_f),
            ff(30, &by_phone_f),
            ff(40, &by_name_f),
        ];
        let m = match_new(&crm_side, &ff_side, &known(&[10, 20, 30, 40]));
        assert_eq!(
            pairs(&m),
            vec![
                (1, 10, MatchRule::ReferenceId),
                (2, 20, MatchRule::Email),
                (3, 30, MatchRule::Phone),
                (4, 40, MatchRule::Name),
            ]
        );
        assert!(m.collisions.is_empty() && m.dangling.is_empty());
    }

    #[test]
    fn ambiguous_email_falls_through_to_phone() {
        let k = person("Sam", "Lee", "shared@x.com", "0400 111 222");
        let f1 = person("Sam", "Lee", "shared@x.com", "0400111222");
        let f2 = person("Sue", "Lee", "shared@x.com", "0400 999 999");
        let m = match_new(
            &[crm(1, &k, "")],
            &[ff(10, &f1), ff(11, &f2)],
            &known(&[10, 11]),
        );
        assert_eq!(pairs(&m), vec![(1, 10, MatchRule::Phone)]);
    }

    #[test]
    fn ambiguous_on_every_rule_links_nothing() {
        let k = person("Sam", "Lee", "shared@x.com", "0400");
        let f1 = person("Sam", "Lee", "shared@x.com", "0400");
        let f2 = person("Sam", "Lee", "shared@x.com", "0400");
        let m = match_new(
            &[crm(1, &k, "")],
            &[ff(10, &f1), ff(11, &f2)],
            &known(&[10, 11]),
        );
        assert!(m.pairs.is_empty());
        assert!(!m.kounta_settled(KountaId(1)));
    }

    #[test]
    fn two_crm_records_with_one_email_do_not_link_by_email() {
        let k1 = person("A", "A", "same@x.com", "1");
        let k2 = person("B", "B", "same@x.com", "2");
        let f = person("C", "C", "same@x.com", "3");
        let m = match_new(
            &[crm(1, &k1, ""), crm(2, &k2, "")],
            &[ff(10, &f)],
            &known(&[10]),
        );
        assert!(m.pairs.is_empty());
    }

    #[test]
    fn name_rule_needs_both_names() {
        let k = person("Ann", "", "", "");
        let f = person("Ann", "", "", "");
        let m = match_new(&[crm(1, &k, "")], &[ff(10, &f)], &known(&[10]));
        assert!(m.pairs.is_empty());
    }

    #[test]
    fn reference_to_a_farmflow_customer_linked_elsewhere_is_a_collision() {
        let k = person("A", "A", "a@x.com", "");
        let f = person("A", "A", "a@x.com", "");
        let mut world = known(&[10, 11]);
        world
            .linked_farmflow
            .insert(FarmflowId(10), Some(KountaId(99)));
        // Even though the email would match farmflow 11, a claim on a linked id is never re-used.
        let m = match_new(&[crm(1, &k, "farmflow:10")], &[ff(11, &f)], &world);
        assert!(m.pairs.is_empty());
        assert_eq!(
            m.collisions,
            vec![Collision {
                kounta_id: KountaId(1),
                farmflow_id: FarmflowId(10),
                linked_to: Some(KountaId(99)),
            }]
        );
        assert!(m.kounta_settled(KountaId(1)));
    }

    #[test]
    fn reference_to_a_missing_farmflow_customer_is_dangling() {
        let k = person("A", "A", "a@x.com", "");
        let f = person("A", "A", "a@x.com", "");
        let m = match_new(&[crm(1, &k, "farmflow:77")], &[ff(10, &f)], &known(&[10]));
        assert_eq!(
            m.dangling,
            vec![Dangling {
                kounta_id: KountaId(1),
                farmflow_id: FarmflowId(77),
            }]
        );
        assert!(
            m.pairs.is_empty(),
            "a dangling record is never matched again"
        );
    }

    #[test]
    fn tombstone_without_crm_side_is_adopted_by_its_one_claimant() {
        let k = person("A", "A", "", "");
        let mut world = known(&[]);
        world.linked_farmflow.insert(FarmflowId(5), None);
        let m = match_new(&[crm(1, &k, "farmflow:5")], &[], &world);
        assert_eq!(m.dangling.len(), 1);
    }

    #[test]
    fn several_claimants_fall_through_and_leftovers_collide() {
        let k1 = person("A", "A", "a@x.com", "");
        let k2 = person("B", "B", "b@x.com", "");
        let f = person("A", "A", "a@x.com", "");
        let m = match_new(
            &[crm(1, &k1, "farmflow:10"), crm(2, &k2, "farmflow:10")],
            &[ff(10, &f)],
            &known(&[10]),
        );
        assert_eq!(pairs(&m), vec![(1, 10, MatchRule::Email)]);
        assert_eq!(
            m.collisions,
            vec![Collision {
                kounta_id: KountaId(2),
                farmflow_id: FarmflowId(10),
                linked_to: Some(KountaId(1)),
            }]
        );
    }

    #[test]
    fn several_claimants_of_a_missing_id_collide() {
        let k1 = person("A", "A", "", "");
        let k2 = person("B", "B", "", "");
        let m = match_new(
            &[crm(1, &k1, "farmflow:10"), crm(2, &k2, "farmflow:10")],
            &[],
            &known(&[]),
        );
        assert!(m.dangling.is_empty());
        assert_eq!(m.collisions.len(), 2);
    }

    #[test]
    fn unread_record_blocks_a_match_and_holds_its_twin() {
        let listed = person("A", "A", "a@x.com", "");
        let f = person("A", "A", "a@x.com", "");
        let mut c = crm(1, &listed, "");
        c.read = false;
        let m = match_new(&[c], &[ff(10, &f)], &known(&[10]));
        assert!(m.pairs.is_empty());
        assert_eq!(m.held_farmflow, vec![FarmflowId(10)]);
        assert_eq!(m.unread_kounta, vec![KountaId(1)]);
    }

    #[test]
    fn unread_record_counts_towards_ambiguity() {
        let read = person("A", "A", "a@x.com", "");
        let unread = person("Z", "Z", "a@x.com", "");
        let f = person("Q", "Q", "a@x.com", "");
        let mut u = crm(2, &unread, "");
        u.read = false;
        let m = match_new(&[crm(1, &read, ""), u], &[ff(10, &f)], &known(&[10]));
        assert!(m.pairs.is_empty());
    }

    #[test]
    fn result_does_not_depend_on_input_order() {
        let people: Vec<Customer> = (0..6)
            .map(|i| person("N", &format!("{}", i % 3), &format!("{}@x", i % 2), ""))
            .collect();
        let crm_side: Vec<_> = (0..3).map(|i| crm(i, &people[i as usize], "")).collect();
        let ff_side: Vec<_> = (3..6).map(|i| ff(i, &people[i as usize])).collect();
        let world = known(&[3, 4, 5]);
        let a = match_new(&crm_side, &ff_side, &world);
        let mut crm_rev = crm_side.clone();
        crm_rev.reverse();
        let mut ff_rev = ff_side.clone();
        ff_rev.reverse();
        assert_eq!(a, match_new(&crm_rev, &ff_rev, &world));
    }
}
