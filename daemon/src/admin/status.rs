//! The body of `GET /api/v1/status`: what the admin server reports and what
//! `tmcd status` reads, one set of types for both sides.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tmc_api::crd::TargetSummary;
use tmc_policy_host::PolicyInfo;

use crate::placement::moves::StalledMove;

/// One tmcd replica: leadership, policies, targets, placements, stalled moves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StatusReport {
    /// This replica's identity in the lease.
    pub identity: String,
    pub leader: bool,
    pub fence: FenceReport,
    /// The generation of the active policy set.
    pub policy_generation: u64,
    /// The policies of the active set, as the policy host lists them.
    pub policies: Vec<PolicyInfo>,
    /// Every SyncTarget, by name.
    pub targets: Vec<TargetReport>,
    /// Every ClusterWorkloadPlacement, by name.
    pub placements: Vec<PlacementReport>,
    pub stalled_moves: Vec<StalledMove>,
    /// The clusters of `tmc.toml`.
    pub configured_clusters: Vec<ClusterReport>,
}

/// The write fence of the leader's clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FenceReport {
    /// Writes pass (this replica leads).
    pub open: bool,
    pub writes_sent: u64,
    pub writes_refused: u64,
}

/// One SyncTarget as this replica sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TargetReport {
    pub name: String,
    /// Ready by the heartbeat age this replica observed.
    pub ready: bool,
    /// The reason of the SyncTarget's `Ready` condition.
    pub ready_reason: Option<String>,
    /// The heartbeat the syncer wrote (RFC 3339).
    pub last_heartbeat: Option<String>,
    /// Since this replica saw the heartbeat change, by its own clock.
    pub heartbeat_age_seconds: Option<u64>,
    /// `Push` or `Pull`.
    pub mode: String,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub schedulable: bool,
    pub workload_count: Option<u32>,
    /// The health of its push syncer, when one runs in this replica (the
    /// syncer's own JSON form).
    pub syncer: Option<Value>,
}

/// One ClusterWorkloadPlacement and its status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PlacementReport {
    /// Its name; `<logical cluster>|<name>` in export mode, where tenants' placements may share a name.
    pub name: Option<String>,
    /// Its placement policy.
    pub policy: String,
    /// Its transformation policies, in order.
    pub transformations: Vec<String>,
    pub priority: i32,
    pub conditions: Vec<ConditionReport>,
    pub workload_count: u32,
    /// Where its workloads went.
    pub targets: Vec<TargetSummary>,
    /// The policy generation of its last status.
    pub policy_generation: Option<u64>,
}

/// One status condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConditionReport {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// One cluster of `tmc.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterReport {
    pub name: String,
    /// `push` or `pull`.
    pub mode: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::moves::TargetWait;
    use serde_json::json;

    #[test]
    fn the_json_keeps_its_field_names_and_reads_back() {
        let spread = PolicyInfo {
            name: "spread".into(),
            digest: Some("ab12".into()),
            kind: Some(tmc_policy_host::PolicyKind::Placement),
            status: tmc_policy_host::PolicyStatus::Active,
            status_text: "Active".into(),
            last_error: None,
            source: None,
            loaded_at: Some(1),
            serving: true,
        };
        let report = StatusReport {
            identity: "host-1".into(),
            leader: true,
            fence: FenceReport {
                open: true,
                writes_sent: 5,
                writes_refused: 1,
            },
            policy_generation: 3,
            policies: vec![spread.clone()],
            targets: vec![TargetReport {
                name: "west".into(),
                ready: true,
                ready_reason: Some("HeartbeatFresh".into()),
                last_heartbeat: None,
                heartbeat_age_seconds: Some(2),
                mode: "Push".into(),
                region: Some("us-west".into()),
                zone: None,
                schedulable: true,
                workload_count: Some(1),
                syncer: None,
            }],
            placements: vec![PlacementReport {
                name: Some("spread".into()),
                policy: "replica-spread".into(),
                transformations: vec!["label-stamper".into()],
                priority: 0,
                conditions: vec![ConditionReport {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: "Placing".into(),
                    message: "1 workloads placed".into(),
                }],
                workload_count: 1,
                targets: vec![TargetSummary {
                    name: "west".into(),
                    workloads: 1,
                    replicas: 2,
                }],
                policy_generation: Some(3),
            }],
            stalled_moves: vec![StalledMove {
                workload: "Deployment demo/web".into(),
                placement: "spread".into(),
                since: "2026-01-01T00:00:00Z".into(),
                waiting_on: vec![TargetWait {
                    target: "east".into(),
                    reason: "0 of 2 available".into(),
                }],
                keeping: vec!["west".into()],
            }],
            configured_clusters: vec![ClusterReport {
                name: "west".into(),
                mode: "push".into(),
            }],
        };
        let body = serde_json::to_value(&report).expect("serializes");
        assert_eq!(
            body,
            json!({
                "identity": "host-1",
                "leader": true,
                "fence": {"open": true, "writesSent": 5, "writesRefused": 1},
                "policyGeneration": 3,
                "policies": [serde_json::to_value(&spread).expect("serializes")],
                "targets": [{
                    "name": "west", "ready": true, "readyReason": "HeartbeatFresh",
                    "lastHeartbeat": null, "heartbeatAgeSeconds": 2, "mode": "Push",
                    "region": "us-west", "zone": null, "schedulable": true,
                    "workloadCount": 1, "syncer": null,
                }],
                "placements": [{
                    "name": "spread", "policy": "replica-spread",
                    "transformations": ["label-stamper"], "priority": 0,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Placing", "message": "1 workloads placed"}],
                    "workloadCount": 1,
                    "targets": [{"name": "west", "workloads": 1, "replicas": 2}],
                    "policyGeneration": 3,
                }],
                "stalledMoves": [{
                    "workload": "Deployment demo/web", "placement": "spread",
                    "since": "2026-01-01T00:00:00Z",
                    "waitingOn": [{"target": "east", "reason": "0 of 2 available"}],
                    "keeping": ["west"],
                }],
                "configuredClusters": [{"name": "west", "mode": "push"}],
            })
        );
        let back: StatusReport = serde_json::from_value(body).expect("reads back");
        assert_eq!(back, report);
    }
}
