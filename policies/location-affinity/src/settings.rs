//! Settings of `location-affinity`.

use serde::Deserialize;

/// What to do when no candidate matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Place only on matching targets; none match -> place nowhere.
    #[default]
    Required,
    /// Prefer matching targets; none match -> all candidates.
    Preferred,
}

impl Mode {
    /// The settings spelling, used in reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Required => "required",
            Mode::Preferred => "preferred",
        }
    }
}

/// `{"mode": "required"|"preferred", "maxTargets": u32}`; unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub mode: Mode,
    /// Keep at most this many targets (the most preferred); at least 1.
    #[serde(default)]
    pub max_targets: Option<u32>,
}

impl Settings {
    /// Checks values beyond their JSON shape.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_targets == Some(0) {
            return Err("maxTargets must be at least 1 (omit it for no limit)".into());
        }
        Ok(())
    }
}
