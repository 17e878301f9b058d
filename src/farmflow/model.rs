//! Wire models of FarmFlow's customer and order API (see `api/farmflow.md`).
//!
//! Decoding is tolerant: ids as numbers or strings, `""` or `null` for empty, unknown fields ignored.

use serde::{Deserialize, Serialize};

use crate::ids::FarmflowId;

/// Every writable field of a FarmFlow customer. FarmFlow's update replaces the whole record, so
/// an update always sends all of these, merged onto the latest read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmflowFields {
    /// Company name (FarmFlow only).
    pub company: String,
    /// First name (required by FarmFlow).
    pub firstname: String,
    /// Last name.
    pub lastname: String,
    /// Street line 1.
    pub address: String,
    /// Street line 2.
    pub address2: String,
    /// City.
    pub city: String,
    /// State.
    pub state: String,
    /// Postal code.
    pub zip: String,
    /// Phone.
    pub phone: String,
    /// Email (not unique).
    pub email: String,
    /// Free text: `USA`, `United States`, `US`, `Australia` all occur.
    pub country: String,
    /// Internal notes; never changed by a sync.
    pub notes: String,
}

/// A FarmFlow customer as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmflowCustomer {
    /// FarmFlow's id.
    pub id: FarmflowId,
    /// Every writable field.
    pub fields: FarmflowFields,
}

/// A recurring (standing) order, read only to respect FarmFlow's delete restrictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurringOrder {
    /// The order's id (0 when FarmFlow gave none).
    pub id: i64,
    /// The customer it belongs to.
    pub customer_id: FarmflowId,
    /// `active`, `paused` or `cancelled`.
    pub status: String,
    /// `YYYY-MM-DD`, or empty.
    pub start_date: String,
    /// `YYYY-MM-DD`, or empty.
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
    /// The order's id (0 when FarmFlow gave none).
    pub id: i64,
    /// The customer it belongs to.
    pub customer_id: FarmflowId,
    /// `Delivery` or `Pick Up`.
    pub fulfillment: String,
    /// `YYYY-MM-DD`; empty or unparsable counts as upcoming.
    pub fulfill_date: String,
}
