//! The canonical customer both sides map to, with field mapping and normalisation.

use serde::{Deserialize, Serialize};

/// One customer as farmsync compares it: the fields both systems hold.
///
/// Values keep the spelling of the side they came from; comparisons go through
/// normalisation (trimmed, case-folded email, digits-only phone, alpha-2 country).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Customer {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, or empty.
    pub country: String,
}
