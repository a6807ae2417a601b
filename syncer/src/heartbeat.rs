//! The heartbeat: the syncer reports into its SyncTarget's status that it is
//! alive, whether it reaches its cluster, which resources the cluster serves,
//! how many workloads it holds, and what its cluster can still take.

use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use tmc_api::crd::{ClusterCapacity, SyncedResource};

use crate::error::{Error, Result, is_object_not_found};
use crate::kinds::SyncedKind;

/// Condition type: the syncer heartbeats in time.
pub const HEARTBEAT_HEALTHY: &str = "HeartbeatHealthy";
/// Condition type: the target is usable (syncer alive and cluster reachable).
pub const READY: &str = "Ready";
/// Ready reason when the syncer cannot reach its cluster.
pub const CLUSTER_UNREACHABLE: &str = "ClusterUnreachable";
/// Ready reason when another control plane holds the cluster's claim (see [`crate::claim`]).
pub const SOURCE_IDENTITY_CONFLICT: &str = "SourceIdentityConflict";

/// What one heartbeat found.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// `None` when the downstream cluster could not be reached (with why in `unreachable`).
    pub synced_resources: Option<Vec<SyncedResource>>,
    /// Why the cluster is unreachable.
    pub unreachable: Option<String>,
    /// Why the syncer may not sync into the cluster (its claim is refused).
    pub refused: Option<String>,
    /// Workloads currently placed on the target; `None` until the upstream
    /// watches have listed everything (the last count is kept meanwhile).
    pub workload_count: Option<usize>,
    /// The cluster's capacity when this heartbeat read it (`None`: not read
    /// this time, the last figures stay).
    pub capacity: Option<CapacityReading>,
}

/// One attempt to read the cluster's capacity ([`crate::capacity`]).
#[derive(Debug, Clone, PartialEq)]
pub enum CapacityReading {
    /// The figures were read.
    Read(ClusterCapacity),
    /// They could not be: the last figures stay, with this reason.
    Failed(String),
}

/// Checks which `kinds` the downstream cluster serves. `Err` (with the
/// transport error) when the cluster cannot be reached.
pub async fn discover(
    downstream: &kube::Client,
    kinds: &[SyncedKind],
) -> Result<Vec<SyncedResource>, kube::Error> {
    let mut out = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let state = match kind.discover(downstream).await? {
            Some(_) => "Accepted",
            None => "Incompatible",
        };
        out.push(SyncedResource {
            group: kind.group.clone(),
            resource: kind.plural.clone(),
            version: kind.version.clone(),
            state: state.to_string(),
        });
    }
    Ok(out)
}

/// Sets condition `type_` in `conditions`, keeping its lastTransitionTime when the status did not change.
pub fn set_condition(
    conditions: &mut Vec<Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) {
    let now = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let existing = conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_));
    match existing {
        Some(cond) => {
            if cond.get("status").and_then(Value::as_str) != Some(status) {
                cond["lastTransitionTime"] = json!(now);
            }
            cond["status"] = json!(status);
            cond["reason"] = json!(reason);
            cond["message"] = json!(message);
        }
        None => conditions.push(json!({
            "type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now,
        })),
    }
}

/// The status merge patch for `observation` on top of the SyncTarget's current status.
pub fn status_patch(current: &Value, observation: &Observation, now: DateTime<Utc>) -> Value {
    let mut conditions: Vec<Value> = current
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    set_condition(
        &mut conditions,
        HEARTBEAT_HEALTHY,
        "True",
        "HeartbeatReceived",
        "the syncer reported in",
        now,
    );
    match (&observation.unreachable, &observation.refused) {
        (Some(why), _) => set_condition(
            &mut conditions,
            READY,
            "False",
            CLUSTER_UNREACHABLE,
            why,
            now,
        ),
        (None, Some(why)) => set_condition(
            &mut conditions,
            READY,
            "False",
            SOURCE_IDENTITY_CONFLICT,
            why,
            now,
        ),
        (None, None) => set_condition(
            &mut conditions,
            READY,
            "True",
            "SyncerReady",
            "the syncer reaches the cluster",
            now,
        ),
    }
    let mut status = json!({
        "lastSyncerHeartbeatTime": now.to_rfc3339_opts(SecondsFormat::Secs, true),
        "conditions": conditions,
    });
    if let Some(count) = observation.workload_count {
        status["workloadCount"] = json!(count);
    }
    match &observation.capacity {
        Some(CapacityReading::Read(capacity)) => {
            let mut value = json!(capacity);
            value["observedTime"] = json!(now.to_rfc3339_opts(SecondsFormat::Secs, true));
            // A merge patch: null removes the reason of an earlier failure.
            value["staleReason"] = Value::Null;
            status["capacity"] = value;
        }
        // Keep the old figures; say why they are old.
        Some(CapacityReading::Failed(why)) => status["capacity"] = json!({"staleReason": why}),
        None => {}
    }
    // Unreachable: keep the last known resources as they are.
    if let Some(resources) = &observation.synced_resources {
        status["syncedResources"] = json!(resources);
    }
    json!({
        "metadata": {"resourceVersion": current.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)},
        "status": status,
    })
}

/// Writes one heartbeat for `target` into its SyncTarget through the status
/// subresource; returns when, and the SyncTarget's UID.
pub async fn beat(
    upstream: &kube::Client,
    target: &str,
    observation: &Observation,
) -> Result<(DateTime<Utc>, String)> {
    let ar = ApiResource::erase::<tmc_api::crd::SyncTarget>(&());
    let api: Api<DynamicObject> = Api::all_with(upstream.clone(), &ar);
    let current = match api.get_status(target).await {
        Ok(current) => current,
        Err(err) if is_object_not_found(&err, target) => {
            return Err(Error::TargetMissing {
                target: target.to_string(),
            });
        }
        Err(err) => return Err(Error::upstream(format!("read SyncTarget {target}"), err)),
    };
    let current = serde_json::to_value(&current).map_err(|err| Error::InvalidObject {
        object: format!("SyncTarget {target}"),
        reason: err.to_string(),
    })?;
    let uid = current
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let now = Utc::now();
    let patch = status_patch(&current, observation, now);
    api.patch_status(target, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|err| Error::upstream(format!("write heartbeat to SyncTarget {target}"), err))?;
    Ok((now, uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn reachable_heartbeat_sets_ready_and_resources() {
        let obs = Observation {
            synced_resources: Some(vec![SyncedResource {
                group: "apps".into(),
                resource: "deployments".into(),
                version: "v1".into(),
                state: "Accepted".into(),
            }]),
            unreachable: None,
            refused: None,
            workload_count: Some(3),
            capacity: None,
        };
        let current = json!({"metadata": {"resourceVersion": "5"}, "status": {"conditions": [
            {"type": "Other", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        let patch = status_patch(&current, &obs, at("2026-02-01T00:00:00Z"));
        assert_eq!(patch["metadata"]["resourceVersion"], "5");
        let status = &patch["status"];
        assert_eq!(status["lastSyncerHeartbeatTime"], "2026-02-01T00:00:00Z");
        assert_eq!(status["workloadCount"], 3);
        assert_eq!(status["syncedResources"][0]["state"], "Accepted");
        let types: Vec<&str> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Other", HEARTBEAT_HEALTHY, READY]);
        assert_eq!(status["conditions"][2]["status"], "True");
    }

    #[test]
    fn unreachable_heartbeat_reports_not_ready_and_keeps_resources() {
        let obs = Observation {
            synced_resources: None,
            unreachable: Some("connection refused".into()),
            refused: None,
            workload_count: None,
            capacity: None,
        };
        let patch = status_patch(&json!({}), &obs, at("2026-02-01T00:00:00Z"));
        let ready = &patch["status"]["conditions"][1];
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], CLUSTER_UNREACHABLE);
        assert_eq!(ready["message"], "connection refused");
        assert!(patch["status"].get("syncedResources").is_none());
        assert!(patch["status"].get("workloadCount").is_none());
    }

    #[test]
    fn capacity_is_written_when_read_and_kept_with_a_reason_when_not() {
        let mut obs = Observation {
            synced_resources: None,
            unreachable: None,
            refused: None,
            workload_count: None,
            capacity: None,
        };
        let now = at("2026-02-01T00:00:00Z");
        assert!(
            status_patch(&json!({}), &obs, now)["status"]
                .get("capacity")
                .is_none()
        );

        let mut capacity = ClusterCapacity {
            nodes: 2,
            ..Default::default()
        };
        capacity.available.pods = 7;
        obs.capacity = Some(CapacityReading::Read(capacity));
        let written = &status_patch(&json!({}), &obs, now)["status"]["capacity"];
        assert_eq!(written["available"]["pods"], 7);
        assert_eq!(written["nodes"], 2);
        assert_eq!(written["observedTime"], "2026-02-01T00:00:00Z");
        assert!(written["staleReason"].is_null() && written.get("staleReason").is_some());

        obs.capacity = Some(CapacityReading::Failed("forbidden".into()));
        let written = &status_patch(&json!({}), &obs, now)["status"]["capacity"];
        assert_eq!(
            written,
            &json!({"staleReason": "forbidden"}),
            "only the reason: the figures stay"
        );
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            READY,
            "True",
            "R",
            "",
            at("2026-01-01T00:00:00Z"),
        );
        set_condition(
            &mut conditions,
            READY,
            "True",
            "R",
            "",
            at("2026-01-02T00:00:00Z"),
        );
        assert_eq!(conditions[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        set_condition(
            &mut conditions,
            READY,
            "False",
            CLUSTER_UNREACHABLE,
            "down",
            at("2026-01-03T00:00:00Z"),
        );
        assert_eq!(conditions[0]["lastTransitionTime"], "2026-01-03T00:00:00Z");
        assert_eq!(conditions.len(), 1);
    }
}
