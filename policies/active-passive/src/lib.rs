//! The `active-passive` placement policy.
//!
//! Every replica goes to the ready targets of the most preferred location
//! that has one: the first entry of `placement.locationPreferences` that
//! matches a ready, schedulable target (also matching `locationSelectors`)
//! is the active location; the later entries are the passive ones, used only
//! when every earlier one has no such target (failover). The exact semantics
//! are in this crate's README.md.

mod settings;

use tmc_policy_sdk::{
    LabelSelector, PlacementDecision, PlacementPolicy, PlacementRequest, Target, TargetDecision,
    even_split,
};

pub use settings::Settings;

/// The policy type exported to wasm.
pub struct ActivePassive;

impl PlacementPolicy for ActivePassive {
    type Settings = Settings;

    fn place(req: &PlacementRequest, _settings: &Settings) -> Result<PlacementDecision, String> {
        Ok(decide(req))
    }
}

tmc_policy_sdk::export_placement_policy!(ActivePassive);
tmc_policy_sdk::export_test_vectors!(include_str!("../vectors.json"));

/// The active group: the candidates of the first preference that has any,
/// with that preference's index; all candidates (index `None`) when the
/// placement states no preference.
fn active_group<'a>(
    preferences: &[LabelSelector],
    candidates: &[&'a Target],
) -> Option<(Option<usize>, Vec<&'a Target>)> {
    if preferences.is_empty() {
        return (!candidates.is_empty()).then(|| (None, candidates.to_vec()));
    }
    preferences.iter().enumerate().find_map(|(i, pref)| {
        let group: Vec<&Target> = candidates
            .iter()
            .copied()
            .filter(|t| pref.matches(&t.labels))
            .collect();
        (!group.is_empty()).then_some((Some(i), group))
    })
}

/// The whole decision, pure and deterministic.
pub fn decide(req: &PlacementRequest) -> PlacementDecision {
    let candidates = req.eligible_targets();
    let prefs = &req.placement.location_preferences;
    let head = format!(
        "{} of {} targets are ready, schedulable and selected",
        candidates.len(),
        req.targets.len()
    );
    let Some((index, mut group)) = active_group(prefs, &candidates) else {
        let why = if candidates.is_empty() {
            "placing nowhere".to_string()
        } else {
            format!(
                "none matches any of the {} location preferences; placing nowhere",
                prefs.len()
            )
        };
        return PlacementDecision {
            targets: Vec::new(),
            reason: format!("{head}; {why}"),
        };
    };
    group.sort_by(|a, b| a.name.cmp(&b.name));
    let which = match index {
        None => "no location preference: all of them are active".to_string(),
        Some(0) => format!("active: preference 1 ({} targets)", group.len()),
        Some(i) => format!(
            "preferences 1..{i} have no ready target, failing over to preference {} ({} targets)",
            i + 1,
            group.len()
        ),
    };
    let shares = req.workload.replicas.map(|n| even_split(n, group.len()));
    let targets = group
        .iter()
        .enumerate()
        .map(|(i, t)| TargetDecision {
            name: t.name.clone(),
            replicas: shares.as_ref().and_then(|s| s.get(i).copied()),
        })
        .collect();
    PlacementDecision {
        targets,
        reason: format!("{head}; {which}"),
    }
}

#[cfg(test)]
mod tests;
