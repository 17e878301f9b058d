//! Wire models of the Kounta-style CRM's customer API (see `api/kounta.md`).
//!
//! Decoding is tolerant: missing fields and `null`s become empty values, unknown fields are
//! ignored, ids may come as numbers, strings or `id_str`.

use serde::{Deserialize, Serialize};

use crate::ids::KountaId;

/// A customer's primary address, as farmsync sees it (street lines joined by `\n`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KountaAddress {
    /// Every street line, joined by `\n`.
    pub address: String,
    /// City or suburb.
    pub city: String,
    /// State or region.
    pub state: String,
    /// Postal code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// A full CRM customer record (`GET /companies/{cid}/customers/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KountaCustomer {
    /// The CRM's id.
    pub id: KountaId,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email (read from `primary_email_address` when `email` is absent).
    pub email: String,
    /// Phone.
    pub phone: String,
    /// Mobile (unique within the company; never written by a sync).
    pub mobile: String,
    /// `""` when unset.
    pub reference_id: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The primary address, if any.
    pub primary_address: Option<KountaAddress>,
}

/// An abbreviated item of the CRM customer list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KountaListItem {
    /// The CRM's id.
    pub id: KountaId,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email.
    pub email: String,
}

/// The body of a CRM create or partial update: only the fields that are `Some` are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KountaCustomerWrite {
    /// New first name, if it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// New last name, if it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// New email, if it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// New phone, if it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// New reference id, if it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    /// New tags (the whole list), if they change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Replaced as a whole object: always send every address field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_address: Option<KountaAddress>,
}
