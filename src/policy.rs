//! The user's choices that steer the sync (`[sync]` and `farmflow.country_format` in the config).
//!
//! Types only, read by [`crate::config`] and obeyed by [`crate::sync`] (which re-exports this
//! module as `sync::policy`): no rule of the sync lives here, and nothing here does I/O.

use serde::{Deserialize, Serialize};

pub use crate::country::CountryFormat;
use crate::customer::Field;

/// Who wins when both sides changed the same field to different values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictWinner {
    #[default]
    Kounta,
    Farmflow,
}

/// Whether farmsync may delete FarmFlow customers that were deleted in the CRM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FarmflowDelete {
    /// Never delete in FarmFlow.
    Never,
    /// Delete unless the customer has an active recurring order or a one-time order due today or later.
    #[default]
    ProtectOrders,
    /// Delete unless FarmFlow refuses (an active recurring order).
    Allow,
}

/// How a FarmFlow deletion is shown in the CRM (which has no delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KountaOnFarmflowDelete {
    /// Add `deleted_tag` to the CRM customer.
    #[default]
    Tag,
    /// Clear the CRM customer's `reference_id`.
    Unlink,
    /// Leave the CRM customer as it is.
    Ignore,
}

/// Whether a confirmed deletion is applied at once or waits for a person (`[sync] deletes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Apply confirmed deletions (under the other rules).
    #[default]
    Auto,
    /// Queue every confirmed FarmFlow delete and CRM tag/unlink for `farmsync deletes approve`.
    Approve,
}

/// Which way one canonical field may be copied (`[fields]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Both ways (the default).
    #[default]
    Both,
    /// Only from the CRM to FarmFlow.
    ToFarmflow,
    /// Only from FarmFlow to the CRM.
    ToKounta,
    /// Never copied; each side keeps its own.
    None,
}

impl Direction {
    /// Whether a value may be copied into FarmFlow.
    pub fn into_farmflow(self) -> bool {
        matches!(self, Direction::Both | Direction::ToFarmflow)
    }

    /// Whether a value may be copied into the CRM.
    pub fn into_kounta(self) -> bool {
        matches!(self, Direction::Both | Direction::ToKounta)
    }

    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::ToFarmflow => "to-farmflow",
            Direction::ToKounta => "to-kounta",
            Direction::None => "none",
        }
    }
}

/// The direction of every canonical field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FieldDirections([Direction; 10]);

impl FieldDirections {
    /// The direction of one field.
    pub fn get(&self, field: Field) -> Direction {
        self.0[field as usize]
    }

    /// Sets the direction of one field.
    pub fn set(&mut self, field: Field, direction: Direction) {
        self.0[field as usize] = direction;
    }

    /// Whether every field syncs both ways.
    pub fn all_both(&self) -> bool {
        self.0.iter().all(|d| *d == Direction::Both)
    }
}

/// Everything `sync::plan` needs to know of the user's choices.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub conflict_winner: ConflictWinner,
    pub farmflow_delete: FarmflowDelete,
    pub kounta_on_farmflow_delete: KountaOnFarmflowDelete,
    pub deleted_tag: String,
    /// More planned deletions than this share of non-tombstone links trips the guard.
    pub max_delete_fraction: f64,
    /// `--allow-mass-delete`: the guard never trips.
    pub allow_mass_delete: bool,
    pub country_format: CountryFormat,
    /// `[sync] deletes`: apply confirmed deletions, or queue them for a person.
    pub deletes: DeleteMode,
    /// `[sync] kounta_tag`: when not empty, a CRM customer syncs only while it carries this tag.
    pub kounta_tag: String,
    /// `[sync] pause_tag`: a CRM customer carrying it is left alone both ways (empty: off).
    pub pause_tag: String,
    /// `[sync] create_in_kounta`: false = FarmFlow customers are linked and updated, never
    /// created in the CRM.
    pub create_in_kounta: bool,
    /// `[sync] create_in_farmflow`: false = CRM customers are linked and updated, never
    /// created in FarmFlow.
    pub create_in_farmflow: bool,
    /// `[fields]`: which way each canonical field may be copied.
    pub fields: FieldDirections,
}

impl Policy {
    /// Why a CRM customer with these tags is out of scope, if it is: the pause tag first.
    pub fn parked_by(&self, tags: &[String]) -> Option<crate::store::Parked> {
        let has = |tag: &str| {
            let tag = tag.trim();
            !tag.is_empty() && tags.iter().any(|t| t.trim().eq_ignore_ascii_case(tag))
        };
        if has(&self.pause_tag) {
            Some(crate::store::Parked::Paused)
        } else if !self.kounta_tag.trim().is_empty() && !has(&self.kounta_tag) {
            Some(crate::store::Parked::Untagged)
        } else {
            None
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            conflict_winner: ConflictWinner::default(),
            farmflow_delete: FarmflowDelete::default(),
            kounta_on_farmflow_delete: KountaOnFarmflowDelete::default(),
            deleted_tag: "farmflow-deleted".to_owned(),
            max_delete_fraction: 0.5,
            allow_mass_delete: false,
            country_format: CountryFormat::default(),
            deletes: DeleteMode::default(),
            kounta_tag: String::new(),
            pause_tag: "farmsync-pause".to_owned(),
            create_in_kounta: true,
            create_in_farmflow: true,
            fields: FieldDirections::default(),
        }
    }
}
