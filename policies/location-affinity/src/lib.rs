//! The `location-affinity` placement policy.
//!
//! Chooses the ready and schedulable targets that match the placement's
//! location selectors and the workload's `tmc.kcp.io/regions` annotation,
//! orders them by location preference, and splits replicas evenly. The exact
//! semantics are in this crate's README.md; the Go twin
//! (`policies/location-affinity-go`) implements the same text and both pass
//! `policies/testdata/location-affinity-vectors.json`.

mod settings;

use tmc_policy_sdk::{
    LabelSelector, PlacementDecision, PlacementPolicy, PlacementRequest, Target, TargetDecision,
    even_split,
};

pub use settings::{Mode, Settings};

/// Workload annotation restricting placement to a comma-separated list of regions.
pub const REGIONS_ANNOTATION: &str = "tmc.kcp.io/regions";

/// The policy type exported to wasm.
pub struct LocationAffinity;

impl PlacementPolicy for LocationAffinity {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        settings.validate()
    }

    fn place(req: &PlacementRequest, settings: &Settings) -> Result<PlacementDecision, String> {
        Ok(decide(req, settings))
    }
}

tmc_policy_sdk::export_placement_policy!(LocationAffinity);
tmc_policy_sdk::export_test_vectors!(include_str!("../vectors.json"));

/// Parses the regions annotation: comma-separated, trimmed, empty items dropped.
/// `None` when the annotation is absent or lists no region.
fn requested_regions(req: &PlacementRequest) -> Option<Vec<String>> {
    let raw = req.workload.annotations.get(REGIONS_ANNOTATION)?;
    let regions: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    (!regions.is_empty()).then_some(regions)
}

fn rank(preferences: &[LabelSelector], target: &Target) -> usize {
    preferences
        .iter()
        .position(|p| p.matches(&target.labels))
        .unwrap_or(preferences.len())
}

fn describe_criteria(req: &PlacementRequest, regions: &Option<Vec<String>>) -> String {
    let mut parts = Vec::new();
    if !req.placement.location_selectors.is_empty() {
        parts.push("locationSelectors".to_string());
    }
    if let Some(regions) = regions {
        parts.push(format!("region in [{}]", regions.join(", ")));
    }
    if parts.is_empty() {
        "no constraint".to_string()
    } else {
        parts.join(" and ")
    }
}

/// The whole decision, pure and deterministic.
pub fn decide(req: &PlacementRequest, settings: &Settings) -> PlacementDecision {
    let regions = requested_regions(req);
    let candidates: Vec<&Target> = req.targets.iter().filter(|t| t.is_eligible()).collect();
    let matching: Vec<&Target> = candidates
        .iter()
        .copied()
        .filter(|t| req.placement.admits(t))
        .filter(|t| {
            regions
                .as_ref()
                .is_none_or(|r| r.contains(&t.location.region))
        })
        .collect();
    let criteria = describe_criteria(req, &regions);
    let mut reason = format!(
        "{} of {} ready targets match {criteria} ({})",
        matching.len(),
        candidates.len(),
        settings.mode.as_str()
    );
    let mut chosen = match settings.mode {
        Mode::Required => matching,
        Mode::Preferred if matching.is_empty() && !candidates.is_empty() => {
            reason.push_str(&format!(
                "; none match, falling back to all {}",
                candidates.len()
            ));
            candidates
        }
        Mode::Preferred => matching,
    };
    if chosen.is_empty() {
        reason.push_str("; placing nowhere");
        return PlacementDecision {
            targets: Vec::new(),
            reason,
        };
    }
    let prefs = &req.placement.location_preferences;
    chosen.sort_by(|a, b| (rank(prefs, a), &a.name).cmp(&(rank(prefs, b), &b.name)));
    if let Some(max) = settings.max_targets {
        let max = max as usize;
        if chosen.len() > max {
            reason.push_str(&format!("; keeping the first {max} by preference"));
            chosen.truncate(max);
        }
    }
    let shares = req.workload.replicas.map(|n| even_split(n, chosen.len()));
    let targets = chosen
        .iter()
        .enumerate()
        .map(|(i, t)| TargetDecision {
            name: t.name.clone(),
            replicas: shares.as_ref().map(|s| s[i]),
        })
        .collect();
    PlacementDecision { targets, reason }
}

#[cfg(test)]
mod tests;
