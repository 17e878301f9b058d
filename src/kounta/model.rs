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
    pub city: String,
    pub state: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// A full CRM customer record (`GET /companies/{cid}/customers/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KountaCustomer {
    pub id: KountaId,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: String,
    pub mobile: String,
    /// `""` when unset.
    pub reference_id: String,
    pub tags: Vec<String>,
    pub primary_address: Option<KountaAddress>,
}

/// An abbreviated item of the CRM customer list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KountaListItem {
    pub id: KountaId,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

/// The body of a CRM create or partial update: only the fields that are `Some` are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KountaCustomerWrite {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Replaced as a whole object: always send every address field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_address: Option<KountaAddress>,
}
