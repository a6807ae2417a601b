//! The body of `GET /api/v1/explain/{kind}/{namespace}/{name}`: what the
//! admin server answers and what `tmcd explain` reads, one set of types for
//! both sides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tmc_policy_sdk::MapEdits;

/// Why one workload runs where it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExplainReport {
    pub workload: WorkloadRef,
    /// The ClusterWorkloadPlacement that governs it (`None`: no placement
    /// selects it, and it is not placed).
    pub placement: Option<String>,
    /// Its placement policy.
    pub policy: Option<PolicyReport>,
    /// Its transformation policies, in order.
    pub transformations: Vec<PolicyReport>,
    /// The generation of the policy set that decided.
    pub policy_generation: u64,
    /// Why tmcd never places it (a system namespace, a generated object).
    pub excluded: Option<String>,
    /// Why no decision could be made now (the last decision stays).
    pub failure: Option<String>,
    /// The decision tmcd makes now.
    pub decision: Option<DecisionReport>,
    /// Every SyncTarget, and every target the workload records: kept or
    /// dropped and why, what is recorded there, how its copy is.
    pub targets: Vec<TargetExplanation>,
    /// A ConfigMap, Secret, ServiceAccount or PersistentVolumeClaim that no
    /// placement of its own selects: the workloads it follows.
    pub follows: Option<FollowsReport>,
}

/// Where a dependency goes: where the workloads that reference it are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FollowsReport {
    /// Target -> the referencing workloads with a trace there (`Deployment demo/web`).
    pub targets: BTreeMap<String, Vec<String>>,
    /// Referencing workloads a placement selects that record no decision
    /// yet: while there is one, no copy of the dependency is removed.
    pub undecided: Vec<String>,
}

/// The workload asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub generation: Option<i64>,
}

/// A policy as the policy host serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyReport {
    pub name: String,
    /// SHA-256 of the module serving now (`None`: not loaded).
    pub digest: Option<String>,
    /// `active`, `updateRefused`, `deleted`, `refused`, or `None` when the
    /// host has no such policy.
    pub status: Option<String>,
}

/// The decision tmcd makes now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DecisionReport {
    /// The placement policy's explanation.
    pub reason: String,
    /// True when the workload records exactly this decision (targets,
    /// replicas, edits); false while tmcd is writing it or a move is on.
    pub recorded: bool,
}

/// One target and the workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TargetExplanation {
    pub name: String,
    pub verdict: Verdict,
    /// Why, in a word: `chosen`, `notChosen`, `inGrace`, `noDecision`,
    /// `locationMismatch`, `evicting`, `notReady`, `unschedulable`,
    /// `graceOver`, `unknownTarget`.
    pub reason: String,
    /// Why, in a sentence.
    pub detail: String,
    /// Replicas decided now (kinds with replicas, chosen targets).
    pub replicas: Option<u32>,
    /// The `capacity` the policy was given: replicas of this workload that
    /// fit on the target (its own included); `None` when not reported.
    pub capacity: Option<u32>,
    /// Label edits of the transformation policies for its copy.
    pub labels: MapEdits,
    /// Annotation edits of the transformation policies for its copy.
    pub annotations: MapEdits,
    /// What the workload records for this target.
    pub recorded: Option<RecordedReport>,
    /// What its syncer reports of its copy (`status.workload.kcp.io/<target>`).
    pub copy: Option<CopyReport>,
}

/// Whether a target is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// The policy chose it.
    Chosen,
    /// A candidate the policy did not choose (or could not: it failed).
    #[default]
    Candidate,
    /// No candidate: see the reason.
    Dropped,
}

impl Verdict {
    /// Its name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chosen => "chosen",
            Self::Candidate => "candidate",
            Self::Dropped => "dropped",
        }
    }
}

/// What the workload records for one target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecordedReport {
    /// The state label says `Sync`: the target must hold a copy.
    pub sync: bool,
    /// tmcd asked the target's syncer to remove its copy.
    pub deleting: bool,
    pub replicas: Option<u32>,
    /// The placement and policy generation that recorded it.
    pub placement: Option<String>,
    pub policy_generation: Option<u64>,
}

/// A copy as its syncer reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CopyReport {
    /// The copy is in place for the decision recorded now (applied, all
    /// its replicas available): a move may remove other copies.
    pub in_place: bool,
    /// Why it is not in place yet.
    pub waiting: Option<String>,
    /// The syncer's last apply error.
    pub error: Option<String>,
    /// The upstream generation the copy was applied from.
    pub observed_generation: Option<i64>,
    pub replicas: Option<u64>,
    pub ready_replicas: Option<u64>,
    pub available_replicas: Option<u64>,
    /// Who owns the copy's replicas on its cluster (an autoscaler).
    pub replicas_owner: Option<String>,
}
