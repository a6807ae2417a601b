//! The placement request of one workload: what its governing placement's
//! policy is asked. One function, shared by the controller, `tmcd policy eval`
//! and `tmcd policy diff`, so the offline commands ask exactly what tmcd asks.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tmc_api::crd::ClusterWorkloadPlacement;
use tmc_policy_sdk::abi::{PlacementRequest, Workload};

use tmc_api::resources::ResourceAmounts;

use super::capacity::replicas_that_fit;
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
/// was built from (grace periods in progress). Each target's `capacity` is
/// how many replicas of `per_replica` it can hold (see [`replicas_that_fit`]).
pub fn build(
    placement: &ClusterWorkloadPlacement,
    workload: Workload,
    per_replica: Option<ResourceAmounts>,
    views: &[TargetView],
    holders: &BTreeMap<String, Option<u32>>,
    now: DateTime<Utc>,
) -> (PlacementRequest, Candidates) {
    let abi = abi_placement(placement);
    let mut cands = candidates(
        views,
        &abi.location_selectors,
        holders,
        grace(placement),
        now,
    );
    for target in &mut cands.targets {
        let available = views
            .iter()
            .find(|v| v.name == target.name)
            .and_then(|v| v.available);
        let current = target.current.as_ref().and_then(|c| c.replicas);
        target.capacity = replicas_that_fit(available, per_replica, current);
    }
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
            available: None,
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
            let (req, cands) = build(
                placement,
                Workload::default(),
                None,
                &views,
                &holders,
                Utc::now(),
            );
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

    #[test]
    fn targets_carry_the_replicas_that_fit_counting_their_own() {
        let placement = ClusterWorkloadPlacement::new("p", ClusterWorkloadPlacementSpec::default());
        let free = |cpu_millis| ResourceAmounts {
            cpu_millis,
            memory_bytes: 1 << 40,
            pods: 100,
        };
        let mut views = [view("east", true), view("south", true), view("west", true)];
        views[0].available = Some(free(4000));
        views[2].available = Some(free(500));
        // west holds 2 replicas of this workload already.
        let holders: BTreeMap<_, _> = [("west".to_string(), Some(2))].into();
        let per = ResourceAmounts {
            cpu_millis: 1000,
            memory_bytes: 0,
            pods: 1,
        };
        let (req, cands) = build(
            &placement,
            Workload::default(),
            Some(per),
            &views,
            &holders,
            Utc::now(),
        );
        let caps: Vec<(&str, Option<u32>)> = req
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.capacity))
            .collect();
        assert_eq!(
            caps,
            [("east", Some(4)), ("south", None), ("west", Some(2))]
        );
        assert_eq!(cands.targets, req.targets);
    }
}
