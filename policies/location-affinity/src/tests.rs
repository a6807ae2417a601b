use serde_json::json;
use tmc_policy_sdk::testing;
use tmc_policy_sdk::{Location, PlacementRequest, Target, Workload};

use super::*;

fn target(name: &str, region: &str) -> Target {
    Target {
        name: name.into(),
        labels: [(
            "topology.kubernetes.io/region".to_string(),
            region.to_string(),
        )]
        .into(),
        location: Location {
            region: region.into(),
            zone: String::new(),
        },
        ready: true,
        schedulable: true,
        ..Default::default()
    }
}

fn request(replicas: Option<u32>, regions: Option<&str>) -> PlacementRequest {
    let mut workload = Workload {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        replicas,
        ..Default::default()
    };
    if let Some(r) = regions {
        workload
            .annotations
            .insert(REGIONS_ANNOTATION.into(), r.into());
    }
    PlacementRequest {
        workload,
        targets: vec![
            target("east", "us-east-1"),
            target("west", "us-west-1"),
            target("west2", "us-west-1"),
        ],
        ..Default::default()
    }
}

#[test]
fn ships_vectors_that_pass_natively() {
    let count = testing::run_placement_vectors::<LocationAffinity>(include_str!("../vectors.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(count >= 10, "only {count} vectors");
}

#[test]
fn passes_the_shared_vectors_of_the_go_twin() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/location-affinity-vectors.json"
    );
    let json = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("cannot read the shared vectors {path}: {e} (they are written with the Go twin)")
    });
    testing::run_placement_vectors::<LocationAffinity>(&json).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn reason_names_counts_regions_and_mode() {
    let decision = testing::place::<LocationAffinity>(&request(Some(3), Some("us-west-1")))
        .expect("placement works");
    assert_eq!(
        decision.reason,
        "2 of 3 ready targets match region in [us-west-1] (required)"
    );
    assert_eq!(decision.targets.len(), 2);
}

#[test]
fn no_match_says_why() {
    let decision = testing::place::<LocationAffinity>(&request(Some(3), Some("mars-1")))
        .expect("placement works");
    assert!(decision.targets.is_empty());
    assert_eq!(
        decision.reason,
        "0 of 3 ready targets match region in [mars-1] (required); placing nowhere"
    );
}

#[test]
fn regions_annotation_is_trimmed_and_empty_items_dropped() {
    let mut req = request(None, Some(" us-east-1 ,, us-west-1"));
    req.targets.push(target("eu", "eu-central-1"));
    let decision = testing::place::<LocationAffinity>(&req).expect("placement works");
    let names: Vec<_> = decision.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["east", "west", "west2"]);
}

#[test]
fn settings_validation() {
    let ok = |v| {
        testing::validate_placement_settings::<LocationAffinity>(v)
            .expect("answers")
            .valid
    };
    assert!(ok(json!({})));
    assert!(ok(json!(null)));
    assert!(ok(json!({"mode": "preferred", "maxTargets": 2})));
    assert!(!ok(json!({"mode": "sometimes"})));
    assert!(!ok(json!({"maxTargets": 0})));
    assert!(!ok(json!({"maxTargets": -1})));
    assert!(!ok(json!({"modes": "required"})));
}

#[test]
fn bad_settings_in_a_request_are_a_guest_error() {
    let mut req = request(Some(1), None);
    req.settings = json!({"mode": 3});
    let err = testing::place::<LocationAffinity>(&req).expect_err("refused");
    assert!(err.contains("invalid settings"), "{err}");
}
