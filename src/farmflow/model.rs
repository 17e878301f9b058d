//! Wire models of FarmFlow's customer and order API (see `api/farmflow.md`).
//!
//! Decoding is tolerant: ids as numbers or strings, `""` or `null` for empty, unknown fields ignored.

use serde::{Deserialize, Serialize};

use crate::ids::FarmflowId;

/// Every writable field of a FarmFlow customer. FarmFlow's update replaces the whole record, so
/// an update always sends all of these, merged onto the latest read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmflowFields {
    pub company: String,
    pub firstname: String,
    pub lastname: String,
    pub address: String,
    pub address2: String,
    pub city: String,
    pub state: String,
    pub zip: String,
    pub phone: String,
    pub email: String,
    /// Free text: `USA`, `United States`, `US`, `Australia` all occur.
    pub country: String,
    /// Internal notes; never changed by a sync.
    pub notes: String,
}

/// A FarmFlow customer as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmflowCustomer {
    pub id: FarmflowId,
    pub fields: FarmflowFields,
}

/// A recurring (standing) order, read only to respect FarmFlow's delete restrictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurringOrder {
    pub id: i64,
    pub customer_id: FarmflowId,
    /// `active`, `paused` or `cancelled`.
    pub status: String,
    pub start_date: String,
    pub end_date: String,
}

impl RecurringOrder {
    /// Whether this order keeps its customer from being deleted.
    pub fn is_active(&self) -> bool {
        self.status.trim().eq_ignore_ascii_case("active")
    }
}

/// A one-time order, read only to respect `farmflow_delete = "protect-orders"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeOrder {
    pub id: i64,
    pub customer_id: FarmflowId,
    pub fulfillment: String,
    /// `YYYY-MM-DD`; empty or unparsable counts as upcoming.
    pub fulfill_date: String,
}
