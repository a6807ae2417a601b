use serde_json::json;
use tmc_policy_sdk::{Location, Target, TransformRequest, Workload, testing};

use super::*;

fn request(settings: serde_json::Value) -> TransformRequest {
    TransformRequest {
        workload: Workload {
            namespace: "shop".into(),
            name: "web".into(),
            ..Default::default()
        },
        target: Target {
            name: "west".into(),
            location: Location {
                region: "us-west-1".into(),
                zone: "us-west-1a".into(),
            },
            ..Default::default()
        },
        replicas: Some(3),
        settings,
    }
}

#[test]
fn ships_vectors_that_pass_natively() {
    let count = testing::run_transform_vectors::<LabelStamper>(include_str!("../vectors.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count, 3);
}

#[test]
fn defaults_can_be_overridden() {
    let out = testing::transform::<LabelStamper>(&request(json!({
        "labels": {"tmc.kcp.io/region": "fixed"}
    })))
    .expect("works");
    assert_eq!(out.labels.set["tmc.kcp.io/region"], "fixed");
    assert_eq!(out.labels.set["tmc.kcp.io/target"], "west");
}

#[test]
fn rendered_label_values_must_be_valid() {
    let err = testing::transform::<LabelStamper>(&request(json!({
        "labels": {"where": "{region} / {zone}"}
    })))
    .expect_err("refused");
    assert!(err.contains("not a valid label value"), "{err}");
}

#[test]
fn templates_parse_and_render() {
    let vars = Vars {
        target: "t",
        region: "r",
        zone: "z",
        replicas: "2",
        namespace: "ns",
        name: "n",
    };
    let t =
        Template::parse("{target}/{region}/{zone}/{replicas}/{namespace}/{name}!").expect("parses");
    assert_eq!(t.render(&vars), "t/r/z/2/ns/n!");
    assert!(Template::parse("{cluster}").is_err());
    assert!(Template::parse("{target").is_err());
    assert_eq!(
        Template::parse("plain").expect("parses").render(&vars),
        "plain"
    );
}

#[test]
fn settings_validation() {
    let ok = |v| {
        testing::validate_transform_settings::<LabelStamper>(v)
            .expect("answers")
            .valid
    };
    assert!(ok(json!({})));
    assert!(ok(
        json!({"labels": {"environment": "prod"}, "defaults": false})
    ));
    assert!(!ok(
        json!({"labels": {"state.workload.kcp.io/west": "Sync"}})
    ));
    assert!(!ok(json!({"annotations": {"bad key!": "x"}})));
    assert!(!ok(json!({"labels": {"x": "{cluster}"}})));
    assert!(!ok(json!({"label": {}})));
}
