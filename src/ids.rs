//! Identifier newtypes, so a CRM id can never be passed where a FarmFlow id is meant, and
//! [`Api`], which names one of the two sides (for requests, errors, counters and the rate).
//!
//! Depends on no other farmsync module, so every module may use it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A customer id in the Kounta-style CRM.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct KountaId(pub i64);

/// A customer id in FarmFlow.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct FarmflowId(pub i64);

/// The link key `farmflow:<FarmFlow id>`, also written into the CRM customer's `reference_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReferenceId(String);

/// Which remote API a request, error or counter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Api {
    /// The Kounta-style CRM.
    Kounta,
    /// FarmFlow.
    Farmflow,
}

impl Api {
    /// The config section holding this API's settings, for messages that say what to check.
    pub fn config_section(self) -> &'static str {
        match self {
            Api::Kounta => "kounta",
            Api::Farmflow => "farmflow",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Api::Kounta => "Kounta",
            Api::Farmflow => "FarmFlow",
        })
    }
}

impl fmt::Display for KountaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for FarmflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ReferenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ReferenceId {
    const PREFIX: &'static str = "farmflow:";

    /// The reference id for a FarmFlow customer.
    pub fn for_farmflow(id: FarmflowId) -> Self {
        ReferenceId(format!("{}{}", Self::PREFIX, id.0))
    }

    /// Parses a CRM `reference_id`; anything not of the form `farmflow:<positive id>` counts as unset.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.trim().strip_prefix(Self::PREFIX)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let id: i64 = digits.parse().ok()?;
        (id > 0).then(|| Self::for_farmflow(FarmflowId(id)))
    }

    /// The FarmFlow id this reference names.
    pub fn farmflow_id(&self) -> FarmflowId {
        // Constructed only by `for_farmflow` or a successful `parse`, so the suffix is a number.
        FarmflowId(self.0[Self::PREFIX.len()..].parse().unwrap_or_default())
    }

    /// The string form, as stored and as written to the CRM.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_farmflow_references() {
        assert_eq!(
            ReferenceId::parse("farmflow:42").map(|r| r.farmflow_id()),
            Some(FarmflowId(42))
        );
        assert_eq!(
            ReferenceId::parse(" farmflow:7 ").unwrap().as_str(),
            "farmflow:7"
        );
        for bad in [
            "",
            "farmflow:",
            "farmflow:-1",
            "farmflow:0",
            "farmflow:1a",
            "ABC123",
            "42",
        ] {
            assert!(
                ReferenceId::parse(bad).is_none(),
                "{bad:?} should count as unset"
            );
        }
    }

    #[test]
    fn round_trips_through_display() {
        let r = ReferenceId::for_farmflow(FarmflowId(321));
        assert_eq!(r.to_string(), "farmflow:321");
        assert_eq!(ReferenceId::parse(&r.to_string()), Some(r));
    }
}
