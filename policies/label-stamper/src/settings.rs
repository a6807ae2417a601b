//! Settings of `label-stamper`.

use serde::Deserialize;
use tmc_policy_sdk::{StringMap, rules};

use crate::template::Template;

/// Label stamped with the target's name unless `defaults` is false.
pub const TARGET_LABEL: &str = "tmc.kcp.io/target";
/// Label stamped with the target's region unless `defaults` is false.
pub const REGION_LABEL: &str = "tmc.kcp.io/region";

fn yes() -> bool {
    true
}

/// `{"labels": {key: template}, "annotations": {key: template}, "defaults": bool}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub labels: StringMap,
    #[serde(default)]
    pub annotations: StringMap,
    /// Stamp `tmc.kcp.io/target` and `tmc.kcp.io/region` (default true).
    #[serde(default = "yes")]
    pub defaults: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            labels: StringMap::new(),
            annotations: StringMap::new(),
            defaults: true,
        }
    }
}

impl Settings {
    /// The label templates to render: the defaults (if on), overridden by `labels`.
    pub fn label_templates(&self) -> StringMap {
        let mut all = StringMap::new();
        if self.defaults {
            all.insert(TARGET_LABEL.into(), "{target}".into());
            all.insert(REGION_LABEL.into(), "{region}".into());
        }
        all.extend(self.labels.clone());
        all
    }

    /// Keys must be valid and outside tmc's reserved domain; templates must parse.
    pub fn validate(&self) -> Result<(), String> {
        for (map, templates) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            for (key, template) in templates {
                rules::validate_qualified_name(key)
                    .map_err(|why| format!("{map}: key {key:?} is invalid: {why}"))?;
                if rules::is_reserved_key(key) {
                    return Err(format!(
                        "{map}: key {key:?} is in tmc's reserved domain workload.kcp.io"
                    ));
                }
                Template::parse(template).map_err(|e| format!("{map}: {key:?}: {e}"))?;
            }
        }
        Ok(())
    }
}
