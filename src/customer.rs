//! The canonical customer both sides map to, with field mapping and normalisation.
//!
//! Pure: no I/O, no store, no client. It knows both wire models (to map them) and nothing
//! about links, plans or runs.
//!
//! Reading: [`Customer::from_kounta`] and [`Customer::from_farmflow`] map a wire record to the
//! canonical one, keeping that side's spelling. Comparing: [`Field::normalise`] and
//! [`Customer::field_eq_normalised`]. Writing: [`kounta_update`], [`kounta_create`],
//! [`farmflow_update`] and [`farmflow_create`] build request bodies that touch only what changed,
//! so a side keeps its own spelling of every value whose meaning did not change.

use serde::{Deserialize, Serialize};

use crate::country::CountryCode;
use crate::country::CountryFormat;
use crate::farmflow::model::FarmflowFields;
use crate::ids::ReferenceId;
use crate::kounta::model::{KountaAddress, KountaCustomer, KountaCustomerWrite, KountaListItem};

/// One customer as farmsync compares it: the fields both systems hold.
///
/// Values keep the spelling of the side they came from; comparisons go through
/// normalisation (trimmed, case-folded email, digits-only phone, alpha-2 country).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Customer {
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email address.
    pub email: String,
    /// Phone (the CRM's `phone`, or its `mobile` when `phone` is empty).
    pub phone: String,
    /// First street line.
    pub line1: String,
    /// Second street line (everything after the CRM's first `\n`).
    pub line2: String,
    /// City.
    pub city: String,
    /// State or region.
    pub state: String,
    /// Postal code (FarmFlow's `zip`).
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, or empty.
    pub country: String,
}

/// One of the ten canonical fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// `first_name` / `firstname`.
    FirstName,
    /// `last_name` / `lastname`.
    LastName,
    /// `email`.
    Email,
    /// `phone` (CRM: or `mobile`).
    Phone,
    /// Street line 1.
    Line1,
    /// Street line 2.
    Line2,
    /// `city`.
    City,
    /// `state`.
    State,
    /// `postal_code` / `zip`.
    PostalCode,
    /// ISO alpha-2 country.
    Country,
}

impl Field {
    /// Every canonical field, in a fixed order.
    pub const ALL: [Field; 10] = [
        Field::FirstName,
        Field::LastName,
        Field::Email,
        Field::Phone,
        Field::Line1,
        Field::Line2,
        Field::City,
        Field::State,
        Field::PostalCode,
        Field::Country,
    ];

    /// The fields the CRM list shows without a full read.
    pub const LISTED: [Field; 3] = [Field::FirstName, Field::LastName, Field::Email];

    /// The canonical name, as used in logs and the `conflicts` table.
    pub fn name(self) -> &'static str {
        match self {
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::Email => "email",
            Field::Phone => "phone",
            Field::Line1 => "line1",
            Field::Line2 => "line2",
            Field::City => "city",
            Field::State => "state",
            Field::PostalCode => "postal_code",
            Field::Country => "country",
        }
    }

    /// Parses a canonical name.
    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the field lives in the CRM's `primary_address`, which is replaced as a whole.
    pub fn is_address(self) -> bool {
        matches!(
            self,
            Field::Line1
                | Field::Line2
                | Field::City
                | Field::State
                | Field::PostalCode
                | Field::Country
        )
    }

    /// The value as compared: trimmed; email case-folded; phone digits only; country alpha-2.
    pub fn normalise(self, value: &str) -> String {
        let value = value.trim();
        match self {
            Field::Email => value.to_lowercase(),
            Field::Phone => value.chars().filter(char::is_ascii_digit).collect(),
            Field::Country => match CountryCode::parse(value) {
                Some(code) => code.alpha2().to_owned(),
                None => value.to_uppercase(),
            },
            _ => value.to_owned(),
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A customer's values as compared (see [`Field::normalise`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Normalised([String; 10]);

impl Normalised {
    /// The normalised value of one field.
    pub fn get(&self, field: Field) -> &str {
        &self.0[field as usize]
    }
}

/// A FarmFlow customer mapped to the canonical record, with any country text that named no
/// country (the customer's `country` is then empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromFarmflow {
    /// The canonical record.
    pub customer: Customer,
    /// FarmFlow's country text, trimmed, when it maps to no ISO code ("Tasmania").
    pub unmapped_country: Option<String>,
}

impl Customer {
    /// The value of one field, in this record's own spelling.
    pub fn get(&self, field: Field) -> &str {
        match field {
            Field::FirstName => &self.first_name,
            Field::LastName => &self.last_name,
            Field::Email => &self.email,
            Field::Phone => &self.phone,
            Field::Line1 => &self.line1,
            Field::Line2 => &self.line2,
            Field::City => &self.city,
            Field::State => &self.state,
            Field::PostalCode => &self.postal_code,
            Field::Country => &self.country,
        }
    }

    /// Sets one field.
    pub fn set(&mut self, field: Field, value: impl Into<String>) {
        let slot = match field {
            Field::FirstName => &mut self.first_name,
            Field::LastName => &mut self.last_name,
            Field::Email => &mut self.email,
            Field::Phone => &mut self.phone,
            Field::Line1 => &mut self.line1,
            Field::Line2 => &mut self.line2,
            Field::City => &mut self.city,
            Field::State => &mut self.state,
            Field::PostalCode => &mut self.postal_code,
            Field::Country => &mut self.country,
        };
        *slot = value.into();
    }

    /// The normalised view of every field.
    pub fn normalised(&self) -> Normalised {
        Normalised(Field::ALL.map(|f| f.normalise(self.get(f))))
    }

    /// Whether two records hold the same value in `field`, after normalisation.
    pub fn field_eq_normalised(a: &Customer, b: &Customer, field: Field) -> bool {
        field.normalise(a.get(field)) == field.normalise(b.get(field))
    }

    /// Whether two records are equal in every field, after normalisation.
    pub fn eq_normalised(&self, other: &Customer) -> bool {
        Field::ALL
            .into_iter()
            .all(|f| Customer::field_eq_normalised(self, other, f))
    }

    /// The fields in which two records differ after normalisation, in [`Field::ALL`] order.
    pub fn differing_fields(&self, other: &Customer) -> Vec<Field> {
        Field::ALL
            .into_iter()
            .filter(|f| !Customer::field_eq_normalised(self, other, *f))
            .collect()
    }

    /// Whether the CRM could hold this customer: it needs an email or a phone.
    pub fn has_contact(&self) -> bool {
        !Field::Email.normalise(&self.email).is_empty()
            || !Field::Phone.normalise(&self.phone).is_empty()
    }

    /// The name key used for matching: first and last name, trimmed and case-folded, both
    /// non-empty.
    pub fn match_name(&self) -> Option<(String, String)> {
        let first = self.first_name.trim().to_lowercase();
        let last = self.last_name.trim().to_lowercase();
        (!first.is_empty() && !last.is_empty()).then_some((first, last))
    }

    /// Maps a full CRM record: phone falls back to mobile; the address splits at its first `\n`.
    pub fn from_kounta(k: &KountaCustomer) -> Customer {
        let phone = if k.phone.trim().is_empty() {
            k.mobile.clone()
        } else {
            k.phone.clone()
        };
        let address = k.primary_address.clone().unwrap_or_default();
        let (line1, line2) = split_lines(&address.address);
        Customer {
            first_name: k.first_name.clone(),
            last_name: k.last_name.clone(),
            email: k.email.clone(),
            phone,
            line1,
            line2,
            city: address.city,
            state: address.state,
            postal_code: address.postal_code,
            country: kounta_country(&address.country),
        }
    }

    /// The record as far as a CRM list item shows it: names and email, the rest empty.
    pub fn from_kounta_listed(item: &KountaListItem) -> Customer {
        Customer {
            first_name: item.first_name.clone(),
            last_name: item.last_name.clone(),
            email: item.email.clone(),
            ..Customer::default()
        }
    }

    /// Whether the fields the CRM list shows ([`Field::LISTED`]) are equal, normalised.
    pub fn listed_eq(&self, other: &Customer) -> bool {
        Field::LISTED
            .into_iter()
            .all(|f| Customer::field_eq_normalised(self, other, f))
    }

    /// Maps a FarmFlow record; free-text country becomes alpha-2, or empty and reported.
    pub fn from_farmflow(f: &FarmflowFields) -> FromFarmflow {
        let text = f.country.trim();
        let (country, unmapped_country) = if text.is_empty() {
            (String::new(), None)
        } else {
            match CountryCode::parse(text) {
                Some(code) => (code.alpha2().to_owned(), None),
                None => (String::new(), Some(text.to_owned())),
            }
        };
        let customer = Customer {
            first_name: f.firstname.clone(),
            last_name: f.lastname.clone(),
            email: f.email.clone(),
            phone: f.phone.clone(),
            line1: f.address.clone(),
            line2: f.address2.clone(),
            city: f.city.clone(),
            state: f.state.clone(),
            postal_code: f.zip.clone(),
            country,
        };
        FromFarmflow {
            customer,
            unmapped_country,
        }
    }
}

/// The CRM's country, as alpha-2 when it names one (the API promises alpha-2; be lenient),
/// else the trimmed text as given so a stray value is still seen to change.
fn kounta_country(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    match CountryCode::parse(text) {
        Some(code) => code.alpha2().to_owned(),
        None => text.to_owned(),
    }
}

/// Splits the CRM's street text at the first `\n`.
fn split_lines(address: &str) -> (String, String) {
    match address.split_once('\n') {
        Some((first, rest)) => (first.to_owned(), rest.to_owned()),
        None => (address.to_owned(), String::new()),
    }
}

/// Joins street lines the way the CRM holds them; the inverse of the split in
/// [`Customer::from_kounta`].
fn join_lines(line1: &str, line2: &str) -> String {
    if line2.is_empty() {
        line1.to_owned()
    } else {
        format!("{line1}\n{line2}")
    }
}

/// The CRM's address built from canonical values (country alpha-2; an unknown code is left out
/// because the CRM refuses anything but alpha-2).
fn kounta_address(c: &Customer) -> KountaAddress {
    KountaAddress {
        address: join_lines(c.line1.trim(), c.line2.trim()),
        city: c.city.trim().to_owned(),
        state: c.state.trim().to_owned(),
        postal_code: c.postal_code.trim().to_owned(),
        country: CountryCode::from_alpha2(&c.country)
            .map(|code| code.alpha2().to_owned())
            .unwrap_or_default(),
    }
}

/// The partial CRM update that brings `current` to `target`'s values in `fields`.
///
/// Only fields whose stored text would change are sent. Any address field sends the whole
/// `primary_address`, merged onto the current one, because the CRM replaces it as a whole. The
/// canonical phone goes to the CRM's `phone`; `mobile` is never touched.
pub fn kounta_update(
    current: &KountaCustomer,
    target: &Customer,
    fields: &[Field],
) -> KountaCustomerWrite {
    let mut write = KountaCustomerWrite::default();
    let differs = |now: &str, new: &str| (now != new).then(|| new.to_owned());
    for &field in fields {
        let value = target.get(field).trim();
        match field {
            Field::FirstName => write.first_name = differs(&current.first_name, value),
            Field::LastName => write.last_name = differs(&current.last_name, value),
            Field::Email => write.email = differs(&current.email, value),
            Field::Phone => write.phone = differs(&current.phone, value),
            _ => {}
        }
    }
    if fields.iter().any(|f| f.is_address()) {
        let now = current.primary_address.clone().unwrap_or_default();
        let (line1, line2) = split_lines(&now.address);
        let mut merged = Customer {
            line1,
            line2,
            city: now.city.clone(),
            state: now.state.clone(),
            postal_code: now.postal_code.clone(),
            country: now.country.clone(),
            ..Customer::default()
        };
        for &field in fields.iter().filter(|f| f.is_address()) {
            merged.set(field, target.get(field).trim());
        }
        let mut address = kounta_address(&merged);
        // An unknown code cannot be written; keep what the CRM has rather than blank it.
        if address.country.is_empty() && !merged.country.trim().is_empty() {
            address.country = now.country.clone();
        }
        if address != now {
            write.primary_address = Some(address);
        }
    }
    write
}

/// The body of a CRM create for `customer`, carrying the link's `reference_id`.
pub fn kounta_create(customer: &Customer, reference_id: &ReferenceId) -> KountaCustomerWrite {
    let some = |v: &str| {
        let v = v.trim();
        (!v.is_empty()).then(|| v.to_owned())
    };
    let address = kounta_address(customer);
    KountaCustomerWrite {
        first_name: some(&customer.first_name),
        last_name: some(&customer.last_name),
        email: some(&customer.email),
        phone: some(&customer.phone),
        reference_id: Some(reference_id.as_str().to_owned()),
        tags: None,
        primary_address: (address != KountaAddress::default()).then_some(address),
    }
}

/// The CRM record as it will be after `write` succeeds (fields not sent are left as they are;
/// `primary_address` is replaced whole).
pub fn kounta_after_write(current: &KountaCustomer, write: &KountaCustomerWrite) -> KountaCustomer {
    let mut next = current.clone();
    let set = |slot: &mut String, value: &Option<String>| {
        if let Some(v) = value {
            slot.clone_from(v);
        }
    };
    set(&mut next.first_name, &write.first_name);
    set(&mut next.last_name, &write.last_name);
    set(&mut next.email, &write.email);
    set(&mut next.phone, &write.phone);
    set(&mut next.reference_id, &write.reference_id);
    if let Some(tags) = &write.tags {
        next.tags.clone_from(tags);
    }
    if let Some(address) = &write.primary_address {
        next.primary_address = Some(address.clone());
    }
    next
}

/// Whether a CRM write would send nothing.
pub fn kounta_write_is_empty(write: &KountaCustomerWrite) -> bool {
    *write == KountaCustomerWrite::default()
}

/// Whether a CRM write changes any canonical field (anything but `reference_id` and `tags`),
/// so that what the CRM now holds must be read back to be known.
pub fn kounta_write_touches_fields(write: &KountaCustomerWrite) -> bool {
    write.first_name.is_some()
        || write.last_name.is_some()
        || write.email.is_some()
        || write.phone.is_some()
        || write.primary_address.is_some()
}

/// The record a CRM create makes, as the CRM will hold it.
pub fn kounta_created(write: &KountaCustomerWrite) -> KountaCustomer {
    kounta_after_write(&KountaCustomer::default(), write)
}

/// FarmFlow's whole-record update: the latest read with `fields` set to `target`'s values.
///
/// `company` and `notes` are never touched; `country` is rewritten (in `format`) only when the
/// country is among `fields`.
pub fn farmflow_update(
    current: &FarmflowFields,
    target: &Customer,
    fields: &[Field],
    format: CountryFormat,
) -> FarmflowFields {
    let mut next = current.clone();
    for &field in fields {
        let value = target.get(field).trim().to_owned();
        match field {
            Field::FirstName => next.firstname = value,
            Field::LastName => next.lastname = value,
            Field::Email => next.email = value,
            Field::Phone => next.phone = value,
            Field::Line1 => next.address = value,
            Field::Line2 => next.address2 = value,
            Field::City => next.city = value,
            Field::State => next.state = value,
            Field::PostalCode => next.zip = value,
            Field::Country => next.country = farmflow_country(&value, format),
        }
    }
    next
}

/// The body of a FarmFlow create for `customer` (no company, no notes).
pub fn farmflow_create(customer: &Customer, format: CountryFormat) -> FarmflowFields {
    farmflow_update(&FarmflowFields::default(), customer, &Field::ALL, format)
}

/// An alpha-2 code in FarmFlow's spelling; text that is no code is written as it is.
fn farmflow_country(alpha2: &str, format: CountryFormat) -> String {
    match CountryCode::from_alpha2(alpha2) {
        Some(code) => code.format(format),
        None => alpha2.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{FarmflowId, KountaId};

    fn kounta() -> KountaCustomer {
        KountaCustomer {
            id: KountaId(389427),
            first_name: "Jamie".into(),
            last_name: "McDonald".into(),
            email: "Jamie@Example.com".into(),
            phone: "02 8765 4321".into(),
            mobile: "0412 345 678".into(),
            reference_id: String::new(),
            tags: vec!["Newsletter".into()],
            primary_address: Some(KountaAddress {
                address: "44 Mutton Street\nSuite 5".into(),
                city: "Beeftown".into(),
                state: "NSW".into(),
                postal_code: "2112".into(),
                country: "AU".into(),
            }),
        }
    }

    fn farmflow() -> FarmflowFields {
        FarmflowFields {
            company: "Green Leaf Cafe".into(),
            firstname: "Jamie".into(),
            lastname: "McDonald".into(),
            address: "44 Mutton Street".into(),
            address2: "Suite 5".into(),
            city: "Beeftown".into(),
            state: "NSW".into(),
            zip: "2112".into(),
            phone: "(02) 8765-4321".into(),
            email: "jamie@example.com ".into(),
            country: "Australia".into(),
            notes: "Leave at back door".into(),
        }
    }

    #[test]
    fn maps_a_crm_record() {
        let c = Customer::from_kounta(&kounta());
        assert_eq!(c.phone, "02 8765 4321");
        assert_eq!(c.line1, "44 Mutton Street");
        assert_eq!(c.line2, "Suite 5");
        assert_eq!(c.country, "AU");
        assert_eq!(c.postal_code, "2112");
    }

    #[test]
    fn crm_phone_falls_back_to_mobile() {
        let mut k = kounta();
        k.phone = "  ".into();
        assert_eq!(Customer::from_kounta(&k).phone, "0412 345 678");
    }

    #[test]
    fn crm_address_splits_at_first_newline_only() {
        let mut k = kounta();
        k.primary_address.as_mut().unwrap().address = "Unit 1\nBlock B\nRear".into();
        let c = Customer::from_kounta(&k);
        assert_eq!(
            (c.line1.as_str(), c.line2.as_str()),
            ("Unit 1", "Block B\nRear")
        );
        k.primary_address = None;
        let c = Customer::from_kounta(&k);
        assert_eq!((c.line1.as_str(), c.city.as_str()), ("", ""));
    }

    #[test]
    fn both_sides_of_one_person_compare_equal() {
        let k = Customer::from_kounta(&kounta());
        let f = Customer::from_farmflow(&farmflow());
        assert_eq!(f.unmapped_country, None);
        assert!(
            k.eq_normalised(&f.customer),
            "{:?}",
            k.differing_fields(&f.customer)
        );
        assert_eq!(k.normalised(), f.customer.normalised());
    }

    #[test]
    fn normalisation_table() {
        let table = [
            (Field::Email, " A@B.com ", "a@b.com"),
            (Field::Phone, "+61 (2) 8765-4321", "61287654321"),
            (Field::Phone, "n/a", ""),
            (Field::Country, "usa", "US"),
            (Field::Country, " au ", "AU"),
            (Field::Country, "Tasmania", "TASMANIA"),
            (Field::FirstName, "  Jamie ", "Jamie"),
            (Field::LastName, "McDonald", "McDonald"),
            (Field::City, "\tBeeftown\n", "Beeftown"),
        ];
        for (field, input, want) in table {
            assert_eq!(field.normalise(input), want, "{field} {input:?}");
        }
    }

    #[test]
    fn names_are_case_sensitive_in_comparison_but_not_in_matching() {
        let a = Customer {
            first_name: "jamie".into(),
            last_name: "mcdonald".into(),
            ..Customer::default()
        };
        let b = Customer {
            first_name: " Jamie".into(),
            last_name: "McDonald ".into(),
            ..Customer::default()
        };
        assert!(!Customer::field_eq_normalised(&a, &b, Field::FirstName));
        assert_eq!(a.match_name(), b.match_name());
        assert_eq!(Customer::default().match_name(), None);
    }

    #[test]
    fn farmflow_country_text_maps_or_is_reported() {
        let mut f = farmflow();
        for (text, alpha2) in [
            ("USA", "US"),
            ("United States", "US"),
            ("US", "US"),
            ("", ""),
        ] {
            f.country = text.into();
            let got = Customer::from_farmflow(&f);
            assert_eq!(got.customer.country, alpha2, "{text:?}");
            assert_eq!(got.unmapped_country, None);
        }
        f.country = " Tasmania ".into();
        let got = Customer::from_farmflow(&f);
        assert_eq!(got.customer.country, "");
        assert_eq!(got.unmapped_country.as_deref(), Some("Tasmania"));
    }

    #[test]
    fn has_contact_needs_email_or_phone_digits() {
        let mut c = Customer::default();
        assert!(!c.has_contact());
        c.phone = "--".into();
        assert!(!c.has_contact());
        c.phone = "0412".into();
        assert!(c.has_contact());
        c.phone.clear();
        c.email = "x@y.z".into();
        assert!(c.has_contact());
    }

    #[test]
    fn crm_update_sends_only_changed_fields() {
        let current = kounta();
        let mut target = Customer::from_kounta(&current);
        target.email = "new@example.com".into();
        let write = kounta_update(&current, &target, &[Field::Email]);
        assert_eq!(
            write,
            KountaCustomerWrite {
                email: Some("new@example.com".into()),
                ..KountaCustomerWrite::default()
            }
        );
    }

    #[test]
    fn crm_address_update_sends_the_whole_address_merged() {
        let current = kounta();
        let mut target = Customer::from_kounta(&current);
        target.city = "Porkville".into();
        target.line1 = "should not be sent".into();
        let write = kounta_update(&current, &target, &[Field::City]);
        let address = write.primary_address.expect("address sent");
        assert_eq!(address.address, "44 Mutton Street\nSuite 5");
        assert_eq!(address.city, "Porkville");
        assert_eq!(address.country, "AU");
        assert_eq!(write.first_name, None);
    }

    #[test]
    fn crm_phone_edit_leaves_mobile_alone() {
        let current = kounta();
        let target = Customer {
            phone: "0299 999 999".into(),
            ..Customer::from_kounta(&current)
        };
        let write = kounta_update(&current, &target, &[Field::Phone]);
        assert_eq!(write.phone.as_deref(), Some("0299 999 999"));
        let after = kounta_after_write(&current, &write);
        assert_eq!(after.mobile, "0412 345 678");
        assert_eq!(Customer::from_kounta(&after).phone, "0299 999 999");
    }

    #[test]
    fn crm_write_that_changes_nothing_is_empty() {
        let mut current = kounta();
        current.phone.clear();
        // The canonical phone came from mobile; clearing it writes `phone: ""`, already empty.
        let target = Customer {
            phone: String::new(),
            ..Customer::from_kounta(&current)
        };
        assert!(kounta_write_is_empty(&kounta_update(
            &current,
            &target,
            &[Field::Phone]
        )));
    }

    #[test]
    fn crm_update_on_a_record_without_address() {
        let mut current = kounta();
        current.primary_address = None;
        let target = Customer {
            line1: "1 Farm Rd".into(),
            country: "NZ".into(),
            ..Customer::from_kounta(&current)
        };
        let write = kounta_update(&current, &target, &[Field::Line1, Field::Country]);
        let after = Customer::from_kounta(&kounta_after_write(&current, &write));
        assert_eq!(
            (after.line1.as_str(), after.country.as_str()),
            ("1 Farm Rd", "NZ")
        );
    }

    #[test]
    fn crm_create_carries_reference_and_round_trips() {
        let source = Customer::from_farmflow(&farmflow()).customer;
        let reference = ReferenceId::for_farmflow(FarmflowId(321));
        let write = kounta_create(&source, &reference);
        assert_eq!(write.reference_id.as_deref(), Some("farmflow:321"));
        assert_eq!(write.email.as_deref(), Some("jamie@example.com"));
        assert_eq!(write.tags, None);
        let created = Customer::from_kounta(&kounta_created(&write));
        assert!(
            created.eq_normalised(&source),
            "{:?}",
            created.differing_fields(&source)
        );
    }

    #[test]
    fn crm_create_without_address_sends_none() {
        let c = Customer {
            first_name: "Ann".into(),
            email: "ann@x.com".into(),
            ..Customer::default()
        };
        let write = kounta_create(&c, &ReferenceId::for_farmflow(FarmflowId(1)));
        assert_eq!(write.primary_address, None);
        assert_eq!(write.phone, None);
    }

    #[test]
    fn farmflow_update_keeps_its_own_spelling_and_private_fields() {
        let current = farmflow();
        let mut target = Customer::from_farmflow(&current).customer;
        target.city = "Porkville".into();
        target.country = "AU".into();
        let next = farmflow_update(&current, &target, &[Field::City], CountryFormat::Alpha3);
        assert_eq!(next.city, "Porkville");
        assert_eq!(
            next.country, "Australia",
            "country unchanged, spelling kept"
        );
        assert_eq!(next.phone, "(02) 8765-4321");
        assert_eq!(next.company, "Green Leaf Cafe");
        assert_eq!(next.notes, "Leave at back door");
    }

    #[test]
    fn farmflow_country_is_rewritten_in_the_configured_format() {
        let current = farmflow();
        let target = Customer {
            country: "US".into(),
            ..Customer::from_farmflow(&current).customer
        };
        for (format, want) in [
            (CountryFormat::Alpha2, "US"),
            (CountryFormat::Alpha3, "USA"),
            (CountryFormat::Name, "United States"),
        ] {
            let next = farmflow_update(&current, &target, &[Field::Country], format);
            assert_eq!(next.country, want);
            assert_eq!(Customer::from_farmflow(&next).customer.country, "US");
        }
        let cleared = Customer {
            country: String::new(),
            ..target
        };
        let next = farmflow_update(&current, &cleared, &[Field::Country], CountryFormat::Name);
        assert_eq!(next.country, "");
    }

    #[test]
    fn farmflow_create_round_trips() {
        let source = Customer::from_kounta(&kounta());
        let fields = farmflow_create(&source, CountryFormat::Name);
        assert_eq!(fields.country, "Australia");
        assert_eq!(fields.company, "");
        let back = Customer::from_farmflow(&fields).customer;
        assert!(
            back.eq_normalised(&source),
            "{:?}",
            back.differing_fields(&source)
        );
    }

    #[test]
    fn field_names_round_trip() {
        for f in Field::ALL {
            assert_eq!(Field::parse(f.name()), Some(f));
            assert_eq!(Field::ALL[f as usize], f);
        }
        assert_eq!(Field::parse("mobile"), None);
    }
}
