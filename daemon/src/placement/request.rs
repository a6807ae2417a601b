//! The placement request of one workload: what its governing placement's
//! policy is asked. One function, shared by the controller, `tmcd policy eval`
//! and `tmcd policy diff`, so the offline commands ask exactly what tmcd asks.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tmc_api::crd::ClusterWorkloadPlacement;
use tmc_policy_sdk::abi::{PlacementRequest, Workload};

use super::selector::{abi_placement, policy_settings};
use super::targets::{Candidates, TargetView, candidates};

/// Default `evictionGracePeriodSeconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// How long `placement` keeps a workload on a holder that is not Ready.
pub fn grace(placement: &ClusterWorkloadPlacement) -> Duration {
    placement
        .spec
        .eviction_grace_period_seconds
        .map_or(DEFAULT_GRACE, |s| Duration::from_secs(u64::from(s)))
}

/// The request for `workload` under `placement`, over the targets `views`,
/// with `holders` (target -> replicas) holding it now; and the candidates it
/// was built from (grace periods in progress).
pub fn build(
    placement: &ClusterWorkloadPlacement,
    workload: Workload,
    views: &[TargetView],
    holders: &BTreeMap<String, Option<u32>>,
    now: DateTime<Utc>,
) -> (PlacementRequest, Candidates) {
    let abi = abi_placement(placement);
    let cands = candidates(
        views,
        &abi.location_selectors,
        holders,
        grace(placement),
        now,
    );
    let req = PlacementRequest {
        workload,
        placement: abi,
        settings: policy_settings(placement),
        targets: cands.targets.clone(),
    };
    (req, cands)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tmc_api::crd::{ClusterWorkloadPlacementSpec, PolicyRef};

    fn view(name: &str, ready: bool) -> TargetView {
        TargetView {
            name: name.into(),
            labels: Default::default(),
            ready,
            not_ready_since: None,
            schedulable: true,
            evicting: false,
        }
    }

    #[test]
    fn holders_stay_candidates_while_not_ready_within_the_grace_period() {
        let mut placement = ClusterWorkloadPlacement::new(
            "p",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: "spread".into(),
                    settings: Some(serde_json::json!({"k": 1})),
                },
                ..Default::default()
            },
        );
        let views = [view("east", false), view("west", true)];
        let holders: BTreeMap<_, _> = [("east".to_string(), Some(2))].into();
        let run = |placement: &ClusterWorkloadPlacement| {
            let (req, cands) = build(placement, Workload::default(), &views, &holders, Utc::now());
            let names: Vec<String> = req.targets.iter().map(|t| t.name.clone()).collect();
            (names, cands, req.settings)
        };
        let (names, cands, settings) = run(&placement);
        assert_eq!(names, ["east", "west"]);
        assert!(cands.in_grace.contains("east"));
        assert_eq!(settings, serde_json::json!({"k": 1}));

        placement.spec.eviction_grace_period_seconds = Some(0);
        let (names, _, _) = run(&placement);
        assert_eq!(names, ["west"], "no grace: the not-Ready holder is dropped");
    }
}
