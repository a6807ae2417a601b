use serde_json::json;
use tmc_policy_sdk::testing;
use tmc_policy_sdk::{LabelSelector, Location, PlacementRequest, Target, Workload};

use super::*;

const REGION: &str = "topology.kubernetes.io/region";

fn target(name: &str, region: &str) -> Target {
    Target {
        name: name.into(),
        labels: [(REGION.to_string(), region.to_string())].into(),
        location: Location {
            region: region.into(),
            zone: String::new(),
        },
        ready: true,
        schedulable: true,
        ..Default::default()
    }
}

fn prefer(region: &str) -> LabelSelector {
    LabelSelector {
        match_labels: [(REGION.to_string(), region.to_string())].into(),
        ..Default::default()
    }
}

fn request(replicas: Option<u32>, preferences: &[&str]) -> PlacementRequest {
    let mut req = PlacementRequest {
        workload: Workload {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "demo-app".into(),
            name: "web".into(),
            replicas,
            ..Default::default()
        },
        targets: vec![
            target("kcp-east", "us-east-1"),
            target("kcp-west", "us-west-1"),
        ],
        ..Default::default()
    };
    req.placement.name = "demo".into();
    req.placement.location_preferences = preferences.iter().map(|r| prefer(r)).collect();
    req
}

fn chosen(decision: &PlacementDecision) -> Vec<(String, Option<u32>)> {
    decision
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.replicas))
        .collect()
}

#[test]
fn ships_vectors_that_pass_natively() {
    let count = testing::run_placement_vectors::<ActivePassive>(include_str!("../vectors.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(count >= 10, "only {count} vectors");
}

#[test]
fn vectors_obey_the_host_rules() {
    let vectors = tmc_policy_sdk::vectors::parse(include_str!("../vectors.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    for vector in vectors {
        if let tmc_policy_sdk::TestVector::Place { name, input, .. } = vector {
            let decision = decide(&input);
            tmc_policy_sdk::rules::check_decision(&input, &decision)
                .unwrap_or_else(|e| panic!("vector {name:?}: {e:?}"));
        }
    }
}

#[test]
fn failover_follows_readiness_and_back() {
    let mut req = request(Some(4), &["us-west-1", "us-east-1"]);
    let before = decide(&req);
    assert_eq!(chosen(&before), [("kcp-west".to_string(), Some(4))]);
    assert_eq!(
        before.reason,
        "2 of 2 targets are ready, schedulable and selected; active: preference 1 (1 targets)"
    );

    req.targets[1].ready = false;
    let failed_over = decide(&req);
    assert_eq!(chosen(&failed_over), [("kcp-east".to_string(), Some(4))]);
    assert_eq!(
        failed_over.reason,
        "1 of 2 targets are ready, schedulable and selected; \
         preferences 1..1 have no ready target, failing over to preference 2 (1 targets)"
    );

    req.targets[1].ready = true;
    assert_eq!(chosen(&decide(&req)), chosen(&before));
}

#[test]
fn placing_nowhere_says_why() {
    let decision = decide(&request(Some(4), &["eu-central-1"]));
    assert!(decision.targets.is_empty());
    assert_eq!(
        decision.reason,
        "2 of 2 targets are ready, schedulable and selected; \
         none matches any of the 1 location preferences; placing nowhere"
    );
    let mut req = request(Some(4), &["us-west-1"]);
    for t in &mut req.targets {
        t.schedulable = false;
    }
    assert_eq!(
        decide(&req).reason,
        "0 of 2 targets are ready, schedulable and selected; placing nowhere"
    );
}

#[test]
fn replicas_always_sum_to_the_workload() {
    for n in 0..=9 {
        let mut req = request(Some(n), &["us-west-1"]);
        req.targets.push(target("kcp-west-2", "us-west-1"));
        req.targets.push(target("kcp-west-3", "us-west-1"));
        let decision = decide(&req);
        let sum: u32 = decision.targets.iter().filter_map(|t| t.replicas).sum();
        assert_eq!(sum, n, "{decision:?}");
        assert_eq!(decision.targets.len(), 3);
    }
}

#[test]
fn settings_are_empty_and_unknown_fields_refused() {
    let verdict = |v| testing::validate_placement_settings::<ActivePassive>(v).expect("answers");
    assert!(verdict(json!({})).valid);
    assert!(verdict(json!(null)).valid);
    let refused = verdict(json!({"mode": "preferred"}));
    assert!(!refused.valid);
    assert!(refused.message.contains("mode"), "{}", refused.message);
    assert!(!verdict(json!("active")).valid);
}

#[test]
fn settings_errors_reach_the_caller_of_place() {
    let mut req = request(Some(1), &[]);
    req.settings = json!({"maxTargets": 1});
    let err = testing::place::<ActivePassive>(&req).expect_err("refused");
    assert!(err.contains("invalid settings"), "{err}");
}
