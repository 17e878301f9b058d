//! Rows of the state store, as the rest of farmsync sees them.

use serde::{Deserialize, Serialize};

use crate::customer::Customer;
use crate::ids::{FarmflowId, KountaId, ReferenceId};

/// What a link currently means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Both sides hold the customer and are kept in step.
    Active,
    /// The customer is gone from the CRM but FarmFlow refused or was not allowed to delete it;
    /// retried every run, never recreated in the CRM.
    DeleteBlocked,
    /// The customer was deleted on one side and the deletion was applied (or shown, for the CRM);
    /// kept so that it is never recreated.
    Tombstone,
}

impl LinkState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Active => "active",
            LinkState::DeleteBlocked => "delete_blocked",
            LinkState::Tombstone => "tombstone",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(LinkState::Active),
            "delete_blocked" => Some(LinkState::DeleteBlocked),
            "tombstone" => Some(LinkState::Tombstone),
            _ => None,
        }
    }
}

/// Why a linked customer is left alone (DESIGN.md, "Operator control": scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parked {
    /// `[sync] kounta_tag` is set and the CRM customer no longer carries it: nothing is written
    /// either way and nothing deleted until the tag returns.
    Untagged,
    /// The CRM customer carries `[sync] pause_tag`: left alone both ways until the tag goes.
    Paused,
}

impl Parked {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Parked::Untagged => "untagged",
            Parked::Paused => "paused",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "untagged" => Some(Parked::Untagged),
            "paused" => Some(Parked::Paused),
            _ => None,
        }
    }
}

impl std::fmt::Display for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Parked::Untagged => "the crm customer lacks sync.kounta_tag",
            Parked::Paused => "the crm customer carries sync.pause_tag",
        })
    }
}

/// One field of a write, before and after (canonical spelling), as history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The canonical field name, or `reference_id` / `tags` for the CRM's own fields.
    pub field: String,
    /// The value before the write ("" when there was none).
    pub before: String,
    /// The value after the write ("" for a delete).
    pub after: String,
}

/// One linked customer: both ids and the canonical record as last seen on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// `farmflow:<FarmFlow id>`; the primary key.
    pub reference_id: ReferenceId,
    pub farmflow_id: FarmflowId,
    /// `None` only for a tombstone whose CRM side was never known.
    pub kounta_id: Option<KountaId>,
    /// The canonical record as last read from (or written to and read back from) the CRM.
    pub kounta_snapshot: Option<Customer>,
    /// The canonical record as last read from (or written to and read back from) FarmFlow.
    pub farmflow_snapshot: Option<Customer>,
    /// False after a CRM create or update whose result has not been read back yet.
    pub kounta_verified: bool,
    pub state: LinkState,
    /// Unix seconds of the last full read of the CRM record; orders the verification budget.
    pub last_verified_at: Option<i64>,
    /// Unix seconds of the last successful write or confirmation.
    pub last_synced_at: Option<i64>,
    /// The last write error, if the last write failed.
    pub last_error: Option<String>,
    /// Consecutive failed writes; two or more needs attention.
    pub consecutive_failures: u32,
    /// Set while the customer is out of scope (untagged or paused): nothing is written.
    pub parked: Option<Parked>,
}
