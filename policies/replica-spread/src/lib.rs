//! The `replica-spread` placement policy.
//!
//! Divides a workload's replicas across the ready, schedulable targets that
//! match the placement's location selectors, in proportion to per-target
//! weights (`"by": "weights"`, default 1 each) or to the targets' remaining
//! capacity (`"by": "capacity"`). The split is deterministic and sticky: it
//! is a largest-remainder apportionment in which the extra replicas go first
//! to targets that already hold at least that many, so adding or removing a
//! target moves the fewest replicas (see README.md and the tests).

mod apportion;
mod settings;

use tmc_policy_sdk::{PlacementDecision, PlacementPolicy, PlacementRequest, TargetDecision};

pub use apportion::{Share, apportion};
pub use settings::{By, Settings};

/// The policy type exported to wasm.
pub struct ReplicaSpread;

impl PlacementPolicy for ReplicaSpread {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        settings.validate()
    }

    fn place(req: &PlacementRequest, settings: &Settings) -> Result<PlacementDecision, String> {
        Ok(decide(req, settings))
    }
}

tmc_policy_sdk::export_placement_policy!(ReplicaSpread);
tmc_policy_sdk::export_test_vectors!(include_str!("../vectors.json"));

/// The whole decision, pure and deterministic.
pub fn decide(req: &PlacementRequest, settings: &Settings) -> PlacementDecision {
    let chosen = req.eligible_targets();
    if chosen.is_empty() {
        return PlacementDecision {
            targets: Vec::new(),
            reason: format!(
                "none of {} targets is ready, schedulable and matches the location selectors",
                req.targets.len()
            ),
        };
    }
    let Some(n) = req.workload.replicas else {
        return PlacementDecision {
            targets: chosen
                .iter()
                .map(|t| TargetDecision {
                    name: t.name.clone(),
                    replicas: None,
                })
                .collect(),
            reason: format!(
                "{} has no replicas: copy to all {} matching targets",
                req.workload.kind,
                chosen.len()
            ),
        };
    };
    let shares: Vec<Share> = chosen
        .iter()
        .map(|t| Share {
            name: t.name.clone(),
            weight: settings.weight_of(t),
            current: t.current.as_ref().and_then(|c| c.replicas).unwrap_or(0),
        })
        .collect();
    let counts = apportion(n, &shares);
    let parts: Vec<String> = shares
        .iter()
        .zip(&counts)
        .map(|(s, c)| format!("{}={c}", s.name))
        .collect();
    PlacementDecision {
        targets: shares
            .iter()
            .zip(&counts)
            .map(|(s, c)| TargetDecision {
                name: s.name.clone(),
                replicas: Some(*c),
            })
            .collect(),
        reason: format!(
            "spread {n} replicas over {} targets by {}: {}",
            shares.len(),
            settings.by.as_str(),
            parts.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests;
