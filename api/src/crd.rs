//! The workspace APIs of tmc: `SyncTarget` and `ClusterWorkloadPlacement`
//! (group `workload.kcp.io`, version `v1alpha1`, both cluster-scoped).
//!
//! The CRD manifests in `config/crds/` are generated from these types
//! (`tmcd crds`), so the types are the single source of truth.

// `#[kube(printcolumn(...))]` repeats `type_`/`priority` per column by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::resources::ResourceAmounts;

/// API group of the tmc workspace APIs.
pub const GROUP: &str = "workload.kcp.io";
/// API version of the tmc workspace APIs.
pub const VERSION: &str = "v1alpha1";

/// A physical cluster that workloads can be placed on.
///
/// Its location is given by the labels `topology.kubernetes.io/region` and
/// `topology.kubernetes.io/zone`; any other label can be used by placements'
/// location selectors.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "workload.kcp.io",
    version = "v1alpha1",
    kind = "SyncTarget",
    plural = "synctargets",
    shortname = "st",
    category = "tmc",
    status = "SyncTargetStatus",
    doc = "A physical cluster registered with tmc; its syncer heartbeats into the status.",
    printcolumn(
        name = "Region",
        type_ = "string",
        json_path = ".metadata.labels.topology\\.kubernetes\\.io/region"
    ),
    printcolumn(
        name = "Zone",
        type_ = "string",
        json_path = ".metadata.labels.topology\\.kubernetes\\.io/zone",
        priority = "1"
    ),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.syncMode"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Workloads",
        type_ = "integer",
        json_path = ".status.workloadCount"
    ),
    printcolumn(
        name = "Unschedulable",
        type_ = "boolean",
        json_path = ".spec.unschedulable",
        priority = "1"
    ),
    printcolumn(
        name = "Heartbeat",
        type_ = "date",
        json_path = ".status.lastSyncerHeartbeatTime",
        priority = "1"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(
        name = "CPU-Free-Millis",
        type_ = "integer",
        json_path = ".status.capacity.available.cpuMillis",
        priority = "1"
    ),
    printcolumn(
        name = "Memory-Free-Bytes",
        type_ = "integer",
        json_path = ".status.capacity.available.memoryBytes",
        priority = "1"
    ),
    printcolumn(
        name = "Pods-Free",
        type_ = "integer",
        json_path = ".status.capacity.available.pods",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SyncTargetSpec {
    /// Cordon: when true the target receives no new placements; what it holds stays.
    #[serde(default)]
    pub unschedulable: bool,
    /// How the target's syncer runs: inside tmcd (`Push`) or beside the cluster (`Pull`).
    #[serde(default)]
    pub sync_mode: SyncMode,
    /// Taints keep workloads off the target unless their placement tolerates them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

/// Where a target's syncer runs.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum SyncMode {
    /// tmcd applies to the cluster itself.
    #[default]
    Push,
    /// A `tmc-syncer` agent beside the cluster reads the decisions and applies them.
    Pull,
}

/// A taint on a sync target (same meaning as a Node taint).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// `NoSchedule` (no new placements) or `NoExecute` (placements move away).
    pub effect: String,
}

/// Observed state of a sync target, written by its syncer and by tmcd.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncTargetStatus {
    /// `Ready` (the syncer heartbeats in time and reaches its cluster) and `HeartbeatHealthy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the syncer last reported in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_syncer_heartbeat_time: Option<Time>,
    /// The resources the syncer syncs and whether the cluster serves them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synced_resources: Vec<SyncedResource>,
    /// How many workloads are placed on the target.
    #[serde(default)]
    pub workload_count: u32,
    /// What the cluster can still take, refreshed by the syncer; absent until first read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<ClusterCapacity>,
}

/// A cluster's resources, summed over its Ready, schedulable nodes.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCapacity {
    /// The nodes' allocatable resources.
    #[serde(default)]
    pub allocatable: ResourceAmounts,
    /// The requests of the non-terminal pods bound to those nodes.
    #[serde(default)]
    pub requested: ResourceAmounts,
    /// `allocatable - requested` (never below zero): what placement reads.
    #[serde(default)]
    pub available: ResourceAmounts,
    /// How many nodes were counted.
    #[serde(default)]
    pub nodes: u32,
    /// When the figures were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_time: Option<Time>,
    /// Why the figures are old: the last attempt to read them failed (absent when fresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_reason: Option<String>,
}

/// One resource kind a syncer syncs.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncedResource {
    pub group: String,
    pub resource: String,
    pub version: String,
    /// `Accepted` when the physical cluster serves the resource, `Incompatible` otherwise.
    pub state: String,
}

/// Which tenant workspaces may place workloads on which SyncTargets, when tmcd
/// serves every workspace bound to tmc's export (`[control_plane] export`,
/// `docs/tenancy.md`). Kept in the inventory workspace beside the
/// SyncTargets. In export mode a workspace no grant names gets no target; in
/// single-workspace mode grants are not read.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "workload.kcp.io",
    version = "v1alpha1",
    kind = "SyncTargetGrant",
    plural = "synctargetgrants",
    shortname = "stg",
    category = "tmc",
    doc = "Grants tenant workspaces (by logical cluster) the SyncTargets its selector matches.",
    printcolumn(name = "Workspaces", type_ = "string", json_path = ".spec.workspaces"),
    printcolumn(
        name = "Targets",
        type_ = "string",
        json_path = ".spec.targetSelector.matchLabels",
        priority = "1"
    ),
    printcolumn(
        name = "Workloads/Target",
        type_ = "integer",
        json_path = ".spec.limits.workloadsPerTarget"
    ),
    printcolumn(
        name = "Replicas/Target",
        type_ = "integer",
        json_path = ".spec.limits.replicasPerTarget"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SyncTargetGrantSpec {
    /// The logical clusters of the granted workspaces, as their objects' `kcp.io/cluster` annotation names
    /// them (`kubectl get workspace <name> -o jsonpath='{.spec.cluster}'`), not workspace paths.
    pub workspaces: Vec<String>,
    /// The granted SyncTargets, by their labels (absent: every SyncTarget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_selector: Option<LabelSelector>,
    /// How much each granted workspace may place on each granted target (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<GrantLimits>,
}

/// Per-workspace, per-target limits of a [`SyncTargetGrant`]. A limit only holds back new copies: a copy
/// that already runs is never removed or shrunk because of one (a limit lowered below the usage stops growth).
/// Where several grants give a workspace a target, the most permissive one counts.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantLimits {
    /// Workloads of one kind (e.g. Deployments) the workspace may have on each target (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads_per_target: Option<u32>,
    /// Replicas the workspace's workloads of one kind may have on each target, summed (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_per_target: Option<u32>,
}

/// Which workloads go where: selects workloads, selects target locations, and
/// names the placement policy and transformation policies to run.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "workload.kcp.io",
    version = "v1alpha1",
    kind = "ClusterWorkloadPlacement",
    plural = "clusterworkloadplacements",
    shortname = "cwp",
    category = "tmc",
    status = "ClusterWorkloadPlacementStatus",
    doc = "Places the workloads it selects onto sync targets with a WebAssembly placement policy.",
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.policy.name"),
    printcolumn(
        name = "Transformations",
        type_ = "string",
        json_path = ".spec.transformations[*].name",
        priority = "1"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Workloads",
        type_ = "integer",
        json_path = ".status.workloadCount"
    ),
    printcolumn(
        name = "Targets",
        type_ = "string",
        json_path = ".status.targetsSummary"
    ),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        json_path = ".status.rollout.phase"
    ),
    printcolumn(
        name = "Stage",
        type_ = "string",
        json_path = ".status.rollout.progress"
    ),
    printcolumn(
        name = "Policy-Generation",
        type_ = "integer",
        json_path = ".status.policyGeneration",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterWorkloadPlacementSpec {
    /// Namespaces whose workloads this placement governs (absent: all namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Workloads (by their labels) this placement governs (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    /// Kinds this placement governs, e.g. `{group: apps, kind: Deployment}` (empty: every synced kind).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<WorkloadKind>,
    /// Targets must match one of these selectors (empty: every target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub location_selectors: Vec<LabelSelector>,
    /// Preferred target locations, most preferred first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub location_preferences: Vec<LabelSelector>,
    /// The placement policy module to run and its settings.
    pub policy: PolicyRef,
    /// Transformation policy modules, applied in order to each target's copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transformations: Vec<PolicyRef>,
    /// How long a target may be not Ready before its workloads are placed elsewhere (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_grace_period_seconds: Option<u32>,
    /// When several placements select a workload, the highest priority wins (then the name).
    #[serde(default)]
    pub priority: i32,
    /// Staged rollout of a change of this placement or of its policies (absent: every target
    /// takes a change at once). See `docs/operations.md`, "Staged rollouts".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

/// How a change of a placement (its spec, or a hot reload of a policy module it runs) reaches its
/// targets: in stages of at most `maxTargetsPerStage` targets, each waiting until the new copies
/// are available before the next starts. The first decision of a new placement is not staged.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// At most this many targets change at once (at least 1).
    #[schemars(range(min = 1))]
    pub max_targets_per_stage: u32,
    /// How long a stage may wait for its new copies to be available before the rollout stops as
    /// `Failed`, the targets of later stages keeping the previous decision (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub stage_timeout_seconds: Option<u32>,
    /// While true, no new stage starts (the current one still completes); set false to resume.
    #[serde(default)]
    pub paused: bool,
}

/// The default of [`RolloutSpec::stage_timeout_seconds`].
pub const DEFAULT_STAGE_TIMEOUT_SECONDS: u32 = 600;

/// Where a rollout is.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutPhase {
    /// A stage is running (its targets take the new decision).
    #[default]
    Progressing,
    /// `spec.rollout.paused`: no new stage starts.
    Paused,
    /// A stage timed out: the rollout stopped, the targets of later stages keep the previous decision.
    Failed,
    /// Every target took the current revision.
    Complete,
}

impl std::fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Progressing => "Progressing",
            Self::Paused => "Paused",
            Self::Failed => "Failed",
            Self::Complete => "Complete",
        })
    }
}

/// The rollout of a placement's current revision, written by the leading tmcd (a restarted or new
/// leader resumes from it). Every field is always serialized (empty lists, `null` times), so that
/// the status writer's merge patch clears what a previous stage set.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The revision rolled out: a digest of the spec (without `rollout`) and of the policy modules it runs.
    pub revision: String,
    pub phase: RolloutPhase,
    /// The current stage, from 1 (0: none started yet).
    #[serde(default)]
    pub stage: u32,
    /// How many stages the rollout has.
    #[serde(default)]
    pub stages: u32,
    /// `stage/stages`, for `kubectl get` (empty once complete).
    #[serde(default)]
    pub progress: String,
    /// The targets of the current stage.
    #[serde(default)]
    pub stage_targets: Vec<String>,
    /// The targets of the completed stages (they run the new revision).
    #[serde(default)]
    pub updated_targets: Vec<String>,
    /// When the current stage started.
    #[serde(default)]
    pub stage_start_time: Option<Time>,
    /// What the rollout waits on, or why it failed.
    #[serde(default)]
    pub message: String,
}

/// A kind of workload: API group (empty for the core group) and kind.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadKind {
    #[serde(default)]
    pub group: String,
    pub kind: String,
}

/// A policy module by name (the file stem in the policy directory) and its settings.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    pub name: String,
    /// Free-form settings handed to the module, validated by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub settings: Option<serde_json::Value>,
}

/// Observed state of a placement, written by tmcd.
//
// Serialized with one derived field, `targetsSummary` (see
// `TargetSummary::summary`), so the `Targets` printer column shows every
// target without tmcd setting anything: it is computed from `targets`
// whenever the status is serialized, and ignored when read.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", into = "StatusWithSummary")]
#[schemars(transform = with_targets_summary)]
pub struct ClusterWorkloadPlacementStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (policy loaded and settings valid) and `PolicyValid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the policy set the last decisions were made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_generation: Option<u64>,
    /// How many workloads this placement governs.
    #[serde(default)]
    pub workload_count: u32,
    /// Where its workloads went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetSummary>,
    /// The staged rollout of its current revision (only with `spec.rollout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// The serialized form of [`ClusterWorkloadPlacementStatus`]: its fields plus
/// `targetsSummary` (the CRD schema is the status's, see `with_targets_summary`).
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct StatusWithSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_generation: Option<u64>,
    workload_count: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    targets: Vec<TargetSummary>,
    /// Empty (and then omitted) when nothing is placed.
    #[serde(skip_serializing_if = "String::is_empty")]
    targets_summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<RolloutStatus>,
}

impl From<ClusterWorkloadPlacementStatus> for StatusWithSummary {
    fn from(status: ClusterWorkloadPlacementStatus) -> Self {
        Self {
            targets_summary: TargetSummary::summary(&status.targets),
            observed_generation: status.observed_generation,
            conditions: status.conditions,
            policy_generation: status.policy_generation,
            workload_count: status.workload_count,
            targets: status.targets,
            rollout: status.rollout,
        }
    }
}

/// Adds `targetsSummary` to the status schema (a structural schema would prune it otherwise).
fn with_targets_summary(schema: &mut schemars::Schema) {
    if let Some(properties) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        properties.insert(
            "targetsSummary".to_string(),
            serde_json::json!({
                "description": "Workloads per target in one line, `west=2,east=1` (derived from `targets`, for `kubectl get`).",
                "type": "string",
            }),
        );
    }
}

/// How much of a placement's workloads one target holds.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSummary {
    pub name: String,
    pub workloads: u32,
    #[serde(default)]
    pub replicas: u32,
}

impl TargetSummary {
    /// `name=workloads` of every target, comma-separated, in the given order
    /// (e.g. `west=2,east=1`): the `Targets` column of `kubectl get cwp`.
    pub fn summary(targets: &[TargetSummary]) -> String {
        targets
            .iter()
            .map(|t| format!("{}={}", t.name, t.workloads))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::json;

    use super::*;

    fn target(name: &str, workloads: u32) -> TargetSummary {
        TargetSummary {
            name: name.into(),
            workloads,
            replicas: 2 * workloads,
        }
    }

    #[test]
    fn placement_status_carries_a_summary_of_every_target() {
        let status = ClusterWorkloadPlacementStatus {
            workload_count: 3,
            targets: vec![target("east", 1), target("west", 2)],
            ..Default::default()
        };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(value["targetsSummary"], json!("east=1,west=2"));
        // Read back, the summary is ignored (it is derived) and the status is unchanged.
        let back: ClusterWorkloadPlacementStatus = serde_json::from_value(value).unwrap();
        assert_eq!(back, status);
        // Nothing placed: no summary.
        let empty = serde_json::to_value(ClusterWorkloadPlacementStatus::default()).unwrap();
        assert_eq!(empty, json!({"workloadCount": 0}));
    }

    #[test]
    fn a_rollout_status_names_every_field_so_a_merge_patch_clears_old_stages() {
        let value = serde_json::to_value(RolloutStatus::default()).unwrap();
        assert_eq!(value["updatedTargets"], json!([]));
        assert_eq!(value["stageTargets"], json!([]));
        assert_eq!(value["stageStartTime"], json!(null));
        assert_eq!(value["message"], json!(""));
    }

    #[test]
    fn targets_column_shows_the_summary_and_the_schema_keeps_it() {
        let crd = serde_json::to_value(ClusterWorkloadPlacement::crd()).unwrap();
        let version = &crd["spec"]["versions"][0];
        let columns = version["additionalPrinterColumns"].as_array().unwrap();
        let targets = columns.iter().find(|c| c["name"] == "Targets").unwrap();
        assert_eq!(targets["jsonPath"], ".status.targetsSummary");
        assert_eq!(targets.get("priority"), None, "shown without -o wide");
        let summary = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["targetsSummary"];
        assert_eq!(summary["type"], "string", "{summary}");
    }
}
