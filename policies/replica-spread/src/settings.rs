//! Settings of `replica-spread`.

use std::collections::BTreeMap;

use serde::Deserialize;
use tmc_policy_sdk::Target;

/// What the split is proportional to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum By {
    /// `weights[target]`, default 1.
    #[default]
    Weights,
    /// The target's `capacity` (unknown capacity counts as 0).
    Capacity,
}

impl By {
    /// The settings spelling, used in reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            By::Weights => "weights",
            By::Capacity => "capacity",
        }
    }
}

/// `{"by": "weights"|"capacity", "weights": {"<target>": u32}}`; unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub by: By,
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
}

impl Settings {
    /// Checks combinations and ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.by == By::Capacity && !self.weights.is_empty() {
            return Err(
                "weights apply only with \"by\": \"weights\"; remove them or the \"by\"".into(),
            );
        }
        if let Some((name, w)) = self.weights.iter().find(|(_, w)| **w > 1_000_000) {
            return Err(format!(
                "weight of {name:?} is {w}, at most 1000000 allowed"
            ));
        }
        Ok(())
    }

    /// The weight of one target under these settings.
    pub fn weight_of(&self, target: &Target) -> u64 {
        match self.by {
            By::Weights => u64::from(self.weights.get(&target.name).copied().unwrap_or(1)),
            By::Capacity => u64::from(target.capacity.unwrap_or(0)),
        }
    }
}
