//! Seed data: the built-in small farm and loading a data set from a JSON file.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::farmflow::{FarmflowRecord, OneTimeOrderRecord, RecurringOrderRecord, RecurringStatus};
use super::kounta::{KountaRecord, KountaRecordAddress};
pub use super::seed::SeedDataError;

/// A data set to load into both fakes.
///
/// # File format
///
/// A seed file is one JSON object; every key is optional and unknown keys are errors (so a typo
/// is reported, not ignored):
///
/// ```json
/// {
///   "kounta": [
///     {"first_name": "Jamie", "last_name": "McDonald", "email": "jamie@example.com",
///      "phone": "02 8765 4321", "mobile": "0412 345 678", "reference_id": "",
///      "tags": ["Newsletter"], "image": null, "accepts_marketing": true,
///      "primary_address": {"address": "44 Mutton Street\nSuite 5", "city": "Beeftown",
///                          "state": "NSW", "postal_code": "2112", "country": "AU"},
///      "shipping_address": null}
///   ],
///   "farmflow": [
///     {"id": 301, "company": "", "firstname": "Jamie", "lastname": "McDonald",
///      "address": "44 Mutton Street", "address2": "Suite 5", "city": "Beeftown",
///      "state": "NSW", "zip": "2112", "phone": "0287654321", "email": "jamie@example.com",
///      "country": "Australia", "notes": ""}
///   ],
///   "recurring_orders": [
///     {"customer_id": 301, "status": "active", "start_date": "2026-01-05", "end_date": ""}
///   ],
///   "one_time_orders": [
///     {"customer_id": 301, "pickup_location_id": 1, "fulfillment": "Delivery",
///      "instructions": "", "fulfill_date": "2030-06-01"}
///   ]
/// }
/// ```
///
/// Customers and orders take the field names of [`KountaRecord`], [`FarmflowRecord`],
/// [`RecurringOrderRecord`] and [`OneTimeOrderRecord`]; any field may be left out (empty).
/// An `id` left out (or `0`) is assigned; explicit ids must be unique. Orders name their
/// customer by FarmFlow id, so a FarmFlow customer that has orders needs an explicit `id`.
/// `status` is `active`, `paused` or `cancelled`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleData {
    /// CRM customers.
    pub kounta: Vec<KountaRecord>,
    /// FarmFlow customers.
    pub farmflow: Vec<FarmflowRecord>,
    /// FarmFlow recurring orders.
    pub recurring_orders: Vec<RecurringOrderRecord>,
    /// FarmFlow one-time orders.
    pub one_time_orders: Vec<OneTimeOrderRecord>,
}

impl SampleData {
    /// Checks that explicit ids are unique and that every order names a FarmFlow customer of
    /// this data set.
    pub fn validate(&self) -> Result<(), SeedDataError> {
        fn unique(what: &str, ids: impl Iterator<Item = i64>) -> Result<(), SeedDataError> {
            let mut seen = BTreeSet::new();
            for id in ids.filter(|id| *id != 0) {
                if id < 0 {
                    return Err(SeedDataError::Invalid(format!(
                        "{what} id {id} is negative"
                    )));
                }
                if !seen.insert(id) {
                    return Err(SeedDataError::Invalid(format!(
                        "{what} id {id} appears twice"
                    )));
                }
            }
            Ok(())
        }
        unique("kounta customer", self.kounta.iter().map(|c| c.id))?;
        unique("farmflow customer", self.farmflow.iter().map(|c| c.id))?;
        unique(
            "farmflow order",
            self.recurring_orders
                .iter()
                .map(|o| o.id)
                .chain(self.one_time_orders.iter().map(|o| o.id)),
        )?;
        let customers: BTreeSet<i64> = self.farmflow.iter().map(|c| c.id).collect();
        let orders = self
            .recurring_orders
            .iter()
            .map(|o| (o.id, o.customer_id))
            .chain(self.one_time_orders.iter().map(|o| (o.id, o.customer_id)));
        for (order, customer) in orders {
            if customer == 0 || !customers.contains(&customer) {
                return Err(SeedDataError::Invalid(format!(
                    "order {order} names farmflow customer {customer}, which is not in the data \
                     (give that customer an explicit id)"
                )));
            }
        }
        Ok(())
    }
}

/// Reads and checks a seed data file (format: see [`SampleData`]).
pub fn load_seed_data(path: &Path) -> Result<SampleData, SeedDataError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedDataError::Read {
        path: path.to_owned(),
        source,
    })?;
    let data: SampleData = serde_json::from_str(&text).map_err(|source| SeedDataError::Parse {
        path: path.to_owned(),
        source,
    })?;
    data.validate()?;
    Ok(data)
}

fn kounta(first: &str, last: &str, email: &str, phone: &str) -> KountaRecord {
    KountaRecord {
        first_name: first.into(),
        last_name: last.into(),
        email: email.into(),
        phone: phone.into(),
        ..KountaRecord::default()
    }
}

fn kounta_address(
    address: &str,
    city: &str,
    state: &str,
    postcode: &str,
    country: &str,
) -> Option<KountaRecordAddress> {
    Some(KountaRecordAddress {
        address: address.into(),
        city: city.into(),
        state: state.into(),
        postal_code: postcode.into(),
        country: country.into(),
    })
}

#[allow(clippy::too_many_arguments)]
fn farmflow(
    id: i64,
    first: &str,
    last: &str,
    email: &str,
    phone: &str,
    address: [&str; 5],
    country: &str,
) -> FarmflowRecord {
    let [line1, line2, city, state, zip] = address;
    FarmflowRecord {
        id,
        firstname: first.into(),
        lastname: last.into(),
        email: email.into(),
        phone: phone.into(),
        address: line1.into(),
        address2: line2.into(),
        city: city.into(),
        state: state.into(),
        zip: zip.into(),
        country: country.into(),
        ..FarmflowRecord::default()
    }
}

/// A small farm: 20 people. Eight are on both sides without `reference_id`s (matching by
/// email, by phone, by name; some spelt differently: `US`/`USA`/`United States`, phone
/// formatting, email case), five only in the CRM, seven only in FarmFlow (one with no contact
/// at all, one in "Tasmania"), with active, paused and cancelled recurring orders and past,
/// upcoming and undated one-time orders.
pub fn sample_farm() -> SampleData {
    let mut jamie = kounta("Jamie", "McDonald", "jamie@example.com", "02 8765 4321");
    jamie.mobile = "0412 345 678".into();
    jamie.tags = vec!["Newsletter".into()];
    jamie.accepts_marketing = true;
    jamie.primary_address =
        kounta_address("44 Mutton Street\nSuite 5", "Beeftown", "NSW", "2112", "AU");

    let mut priya = kounta("Priya", "Natarajan", "priya.n@example.com", "");
    priya.mobile = "+1 503 555 0142".into();
    priya.primary_address = kounta_address("1200 NW Everett St", "Portland", "OR", "97209", "US");

    let mut tom = kounta("Tom", "O'Brien", "Tom.OBrien@Example.com", "03 9555 0101");
    tom.primary_address = kounta_address("7 Laneway Place", "Fitzroy", "VIC", "3065", "AU");

    let mut mei = kounta("Mei", "Chen", "mei.chen@example.com", "0423 111 222");
    mei.primary_address = kounta_address("88 Harbour Road", "Sydney", "NSW", "2000", "AU");

    let mut lucas = kounta("Lucas", "Silva", "lucas@silvafarms.example", "");
    lucas.primary_address = kounta_address("55 Orchard Lane", "Hood River", "OR", "97031", "US");

    let mut aroha = kounta("Aroha", "Ngata", "aroha@example.co.nz", "021 555 0199");
    aroha.primary_address = kounta_address("3 Kowhai Street", "Rotorua", "BOP", "3010", "NZ");

    // Matches only by phone: neither side has an email.
    let sam = kounta("Sam", "Keller", "", "0413 555 201");
    // Matches only by name: the emails differ and FarmFlow has no phone.
    let grace = kounta("Grace", "Liu", "grace@liu.example", "");

    let oliver = kounta(
        "Oliver",
        "Bennett",
        "oliver.bennett@example.com",
        "02 9555 0110",
    );
    let mut fatima = kounta("Fatima", "Haddad", "fatima.h@example.com", "");
    fatima.primary_address = kounta_address("19 Cedar Avenue", "Parramatta", "NSW", "2150", "AU");
    let mut noah = kounta("Noah", "Williams", "", "");
    noah.mobile = "0400 555 303".into();
    let mut chloe = kounta("Chloe", "Martin", "chloe@martin.example", "");
    chloe.tags = vec!["Wholesale".into(), "Chef".into()];
    let ethan = kounta("Ethan", "Brown", "ethan.brown@example.com", "07 3555 0177");

    let farmflow_customers = vec![
        farmflow(
            301,
            "Jamie",
            "McDonald",
            "jamie@example.com",
            "0287654321",
            ["44 Mutton Street", "Suite 5", "Beeftown", "NSW", "2112"],
            "Australia",
        ),
        farmflow(
            302,
            "Priya",
            "Natarajan",
            "priya.n@example.com",
            "",
            ["1200 NW Everett St", "", "Portland", "OR", "97209"],
            "USA",
        ),
        farmflow(
            303,
            "Tom",
            "O'Brien",
            "tom.obrien@example.com",
            "(03) 9555 0101",
            ["7 Laneway Place", "", "Fitzroy", "VIC", "3065"],
            "AU",
        ),
        farmflow(
            304,
            "Mei",
            "Chen",
            "mei.chen@example.com",
            "0423 111 222",
            ["88 Harbour Road", "", "Sydney", "NSW", "2000"],
            "Australia",
        ),
        farmflow(
            305,
            "Lucas",
            "Silva",
            "lucas@silvafarms.example",
            "",
            ["55 Orchard Lane", "", "Hood River", "OR", "97031"],
            "United States",
        ),
        farmflow(
            306,
            "Aroha",
            "Ngata",
            "aroha@example.co.nz",
            "021 555 0199",
            ["3 Kowhai Street", "", "Rotorua", "BOP", "3010"],
            "New Zealand",
        ),
        farmflow(
            307,
            "Sam",
            "Keller",
            "",
            "0413555201",
            ["", "", "", "", ""],
            "",
        ),
        farmflow(
            308,
            "grace",
            "LIU",
            "grace.liu@mail.example",
            "",
            ["", "", "", "", ""],
            "",
        ),
        farmflow(
            309,
            "Ruby",
            "Thompson",
            "ruby@thompson.example",
            "0455 555 909",
            ["12 Wattle Road", "", "Byron Bay", "nsw", "2481"],
            "Australia",
        ),
        farmflow(
            310,
            "Henry",
            "Walker",
            "henry.walker@example.com",
            "",
            ["4 Mill Street", "", "Bendigo", "VIC", "3550"],
            "AU",
        ),
        // No email and no phone: cannot exist in the CRM.
        farmflow(
            311,
            "Isla",
            "Robertson",
            "",
            "",
            ["Farm gate, 200 Ridge Road", "", "Orange", "NSW", "2800"],
            "Australia",
        ),
        // A state where a country should be: maps to no ISO code.
        farmflow(
            312,
            "Jack",
            "Anderson",
            "jack.anderson@example.com",
            "03 6555 0144",
            ["9 Salamanca Place", "", "Hobart", "TAS", "7000"],
            "Tasmania",
        ),
        farmflow(
            313,
            "Zoe",
            "Patel",
            "zoe.patel@example.com",
            "",
            ["31 Bay Street", "", "Brighton", "VIC", "3186"],
            "Australia",
        ),
        farmflow(
            314,
            "Leo",
            "Garcia",
            "leo.garcia@example.com",
            "+1 415 555 0123",
            ["600 Valencia St", "", "San Francisco", "CA", "94110"],
            "US",
        ),
        FarmflowRecord {
            company: "Rossi's Trattoria".into(),
            notes: "Deliver to the kitchen door before 9am.".into(),
            ..farmflow(
                315,
                "Maria",
                "Rossi",
                "orders@rossis.example",
                "02 9555 0315",
                ["120 King Street", "", "Newtown", "NSW", "2042"],
                "Australia",
            )
        },
    ];

    let recurring = |customer_id, status| RecurringOrderRecord {
        id: 0,
        customer_id,
        status,
        start_date: "2026-01-05".into(),
        end_date: String::new(),
    };
    let one_time = |customer_id, date: &str| OneTimeOrderRecord {
        id: 0,
        customer_id,
        pickup_location_id: 1,
        fulfillment: "Delivery".into(),
        instructions: String::new(),
        fulfill_date: date.into(),
    };

    SampleData {
        kounta: vec![
            jamie, priya, tom, mei, lucas, aroha, sam, grace, oliver, fatima, noah, chloe, ethan,
        ],
        farmflow: farmflow_customers,
        recurring_orders: vec![
            recurring(301, RecurringStatus::Active),
            recurring(309, RecurringStatus::Active),
            recurring(315, RecurringStatus::Active),
            recurring(313, RecurringStatus::Paused),
            recurring(314, RecurringStatus::Cancelled),
        ],
        one_time_orders: vec![
            one_time(304, "2030-06-01"),
            one_time(310, "2030-07-15"),
            one_time(314, "2025-03-14"),
            OneTimeOrderRecord {
                fulfillment: "Pick Up".into(),
                ..one_time(312, "")
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_farm_is_consistent_and_round_trips_through_json() {
        let farm = sample_farm();
        farm.validate().expect("sample farm validates");
        let people = farm.kounta.len() + farm.farmflow.len() - 8;
        assert_eq!(people, 20, "eight people are on both sides");
        let text = serde_json::to_string(&farm).expect("serialises");
        let back: SampleData = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, farm);
    }

    #[test]
    fn validation_rejects_orders_of_unknown_customers_and_duplicate_ids() {
        let mut data = sample_farm();
        data.one_time_orders[0].customer_id = 999;
        let err = data.validate().expect_err("unknown customer");
        assert!(err.to_string().contains("999"), "{err}");

        let mut data = sample_farm();
        data.farmflow[1].id = data.farmflow[0].id;
        let err = data.validate().expect_err("duplicate id");
        assert!(err.to_string().contains("appears twice"), "{err}");
    }
}
