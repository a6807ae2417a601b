//! The data that crosses the host/guest boundary, version 1 of the ABI.
//!
//! Every type here is serialized as JSON with camelCase field names. The exact
//! schema, the exports and the memory protocol are specified in
//! `docs/policy-abi.md`; this module is the reference implementation of that
//! document and the host uses the very same types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The ABI version this crate speaks. A module exports it from `tmc_abi_version`.
pub const ABI_VERSION: u32 = 1;

/// String-to-string map, ordered so that serialized output is deterministic.
pub type StringMap = BTreeMap<String, String>;

/// What a policy sees of a workload: its identity, metadata and desired replicas.
///
/// The full object is deliberately not sent: policies decide on metadata and
/// replica counts, and keeping the payload small keeps an evaluation in the
/// microsecond range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// `apps/v1`, `v1`, ...
    pub api_version: String,
    /// `Deployment`, `Service`, ...
    pub kind: String,
    /// Empty for cluster-scoped objects.
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: StringMap,
    #[serde(default)]
    pub annotations: StringMap,
    /// `spec.replicas` for kinds that have it (Deployments, StatefulSets); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

/// Location of a sync target, taken from its well-known labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

/// A physical cluster the policy may place onto.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The SyncTarget's name; a decision names targets by it.
    pub name: String,
    #[serde(default)]
    pub labels: StringMap,
    #[serde(default)]
    pub location: Location,
    /// The target's syncer heartbeats in time.
    #[serde(default)]
    pub ready: bool,
    /// The target accepts new placements (not cordoned).
    #[serde(default)]
    pub schedulable: bool,
    /// How many replicas the target can still take, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// Replicas of this workload the target holds now; `None` when it holds no copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Assignment>,
}

/// What a target currently holds of the workload under evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

/// A label selector in the Kubernetes shape (`matchLabels` only is enough for most policies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "StringMap::is_empty")]
    pub match_labels: StringMap,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry: `In`, `NotIn`, `Exists`, `DoesNotExist`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The parts of a ClusterWorkloadPlacement a placement policy needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub name: String,
    /// Targets must match one of these selectors (an empty list matches all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub location_selectors: Vec<LabelSelector>,
    /// Preferred locations, most preferred first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub location_preferences: Vec<LabelSelector>,
}

/// Input of `tmc_place`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementRequest {
    pub workload: Workload,
    pub placement: Placement,
    /// The policy's settings from the placement, validated by `tmc_validate_settings`.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Candidate targets, sorted by name.
    pub targets: Vec<Target>,
}

/// One chosen target and its share of replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetDecision {
    pub name: String,
    /// Required when the workload has replicas, forbidden otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

/// Output of `tmc_place`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementDecision {
    /// Chosen targets; empty means "place nowhere" (the workload stays pending).
    pub targets: Vec<TargetDecision>,
    /// Why, for people: shown in events, status and `tmcd policy eval`.
    #[serde(default)]
    pub reason: String,
}

/// Input of `tmc_transform`: one chosen target's copy of the workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformRequest {
    pub workload: Workload,
    pub target: Target,
    /// Replicas the placement gave this target, if the workload has replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub settings: serde_json::Value,
}

/// Edits to one string map: keys to set, then keys to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MapEdits {
    #[serde(default, skip_serializing_if = "StringMap::is_empty")]
    pub set: StringMap,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl MapEdits {
    /// True when applying these edits changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Applies the edits to `map`: sets first, then removals.
    pub fn apply_to(&self, map: &mut StringMap) {
        for (key, value) in &self.set {
            map.insert(key.clone(), value.clone());
        }
        for key in &self.remove {
            map.remove(key);
        }
    }
}

/// Output of `tmc_transform`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformResult {
    #[serde(default, skip_serializing_if = "MapEdits::is_empty")]
    pub labels: MapEdits,
    #[serde(default, skip_serializing_if = "MapEdits::is_empty")]
    pub annotations: MapEdits,
}

/// Input of `tmc_validate_settings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsRequest {
    #[serde(default)]
    pub settings: serde_json::Value,
}

/// Output of `tmc_validate_settings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsVerdict {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Every entry point answers with this envelope: exactly one of `ok` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response<T> {
    Ok(T),
    Error(String),
}

/// A test vector a module ships (export `tmc_test_vectors`): the host runs them
/// before activating the module and refuses it if one fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "entryPoint")]
pub enum TestVector {
    /// `tmc_place` on `input` must answer `expect`.
    Place {
        name: String,
        input: PlacementRequest,
        expect: PlacementDecisionExpectation,
    },
    /// `tmc_transform` on `input` must answer `expect`.
    Transform {
        name: String,
        input: TransformRequest,
        expect: TransformResult,
    },
}

/// What a placement test vector checks: the chosen targets and replicas
/// (the reason is free text and not compared).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementDecisionExpectation {
    pub targets: Vec<TargetDecision>,
}
