//! The user's choices that steer the sync (`[sync]` and `farmflow.country_format` in the config).

use serde::{Deserialize, Serialize};

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

/// How farmsync writes FarmFlow's free-text `country`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountryFormat {
    /// `US`
    Alpha2,
    /// `USA`
    #[default]
    Alpha3,
    /// `United States`
    Name,
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
        }
    }
}
