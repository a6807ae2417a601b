//! SyncTargets: registering the configured clusters, re-queueing the
//! workloads when a target's readiness flips with time, and marking targets
//! whose heartbeat is too old as not Ready.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tmc_api::crd::SyncTarget;
use tmc_syncer::identity::SYNCED_FROM_ANNOTATION;

use crate::config::{Cluster, Mode};
use crate::placement::heartbeats::Heartbeats;
use crate::placement::targets::{HEARTBEAT_STALE, REGION_LABEL, ZONE_LABEL, ready_condition};
use crate::state::State;

/// Field manager of the registration (distinct from the syncers' status writes).
pub const REGISTRAR: &str = "tmcd-registrar";

/// The server-side apply body registering `cluster`: its labels, sync mode
/// and the synced-from value its syncer uses (a cordon set by an operator is
/// left alone).
pub fn registration(cluster: &Cluster, synced_from: &str) -> Value {
    let mut labels = serde_json::Map::new();
    for (k, v) in &cluster.labels {
        labels.insert(k.clone(), json!(v));
    }
    if let Some(region) = &cluster.region {
        labels.insert(REGION_LABEL.into(), json!(region));
    }
    if let Some(zone) = &cluster.zone {
        labels.insert(ZONE_LABEL.into(), json!(zone));
    }
    json!({
        "apiVersion": "workload.kcp.io/v1alpha1",
        "kind": "SyncTarget",
        "metadata": {
            "name": cluster.name.get_ref(),
            "labels": labels,
            "annotations": {SYNCED_FROM_ANNOTATION: synced_from},
        },
        "spec": {"syncMode": if cluster.mode == Mode::Push { "Push" } else { "Pull" }},
    })
}

/// Creates or updates the SyncTarget of every configured cluster, recording
/// `synced_from` on each; others are left alone.
pub async fn register(client: &Client, clusters: &[Cluster], synced_from: &str) -> Result<()> {
    let api: Api<SyncTarget> = Api::all(client.clone());
    let params = PatchParams::apply(REGISTRAR).force();
    for cluster in clusters {
        let name = cluster.name.get_ref();
        api.patch(
            name,
            &params,
            &Patch::Apply(registration(cluster, synced_from)),
        )
        .await
        .with_context(|| format!("registering SyncTarget {name}"))?;
        tracing::info!(target_cluster = %name, "SyncTarget registered");
    }
    Ok(())
}

/// The status patch marking `target` not Ready because tmcd has not seen its
/// heartbeat change for `threshold` (`age`: since when it saw it change,
/// `None`: no heartbeat); `None` when it is fresh or already marked. `now`
/// only stamps the condition.
pub fn stale_patch(
    target: &SyncTarget,
    age: Option<Duration>,
    threshold: Duration,
    now: DateTime<Utc>,
) -> Option<Value> {
    let status = target.status.clone().unwrap_or_default();
    if age.is_some_and(|age| age < threshold) {
        return None;
    }
    if ready_condition(target).is_some_and(|c| c.status == "False") {
        return None; // already not Ready (stale, or the syncer said why)
    }
    let message = match age {
        Some(age) => format!(
            "heartbeat unchanged for {}s as seen by tmcd, threshold {}s",
            age.as_secs(),
            threshold.as_secs()
        ),
        None => "no heartbeat received yet".to_string(),
    };
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut conditions: Vec<Value> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != "Ready" && c.type_ != "HeartbeatHealthy")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    for type_ in ["Ready", "HeartbeatHealthy"] {
        conditions.push(json!({
            "type": type_, "status": "False", "reason": HEARTBEAT_STALE, "message": message, "lastTransitionTime": stamp,
        }));
    }
    Some(json!({
        "metadata": {"resourceVersion": target.resource_version()},
        "status": {"conditions": conditions},
    }))
}

/// Marks every stale target not Ready (status subresource), judging by when
/// tmcd saw each heartbeat change (`heartbeats`).
pub async fn mark_stale(
    client: &Client,
    targets: &[std::sync::Arc<SyncTarget>],
    heartbeats: &Heartbeats,
    threshold: Duration,
) {
    let api: Api<SyncTarget> = Api::all(client.clone());
    let now = Utc::now();
    for target in targets {
        let name = target.name_any();
        let Some(patch) = stale_patch(target, heartbeats.age(&name), threshold, now) else {
            continue;
        };
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::warn!(target_cluster = %name, "SyncTarget not Ready: heartbeat stale")
            }
            Err(err) => {
                tracing::debug!(target_cluster = %name, error = %err, "marking SyncTarget stale failed; retrying later")
            }
        }
    }
}

/// Re-queues every workload when the readiness of a target flips with time
/// (heartbeats age without any event), and marks stale targets when leading
/// (`client` is the leader's fenced client).
pub async fn watch_readiness(
    state: Arc<State>,
    client: Client,
    targets: Store<SyncTarget>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let every = state
        .config
        .sync
        .heartbeat_interval()
        .max(Duration::from_secs(1));
    let threshold = state.config.sync.heartbeat_threshold();
    let mut last: BTreeMap<String, bool> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let all = targets.state();
        let ready: BTreeMap<String, bool> = all
            .iter()
            .map(|t| (t.name_any(), state.target_view(t).ready))
            .collect();
        if ready != last {
            last = ready;
            state.triggers.fire();
        }
        if state.is_leader() {
            mark_stale(&client, &all, &state.heartbeats, threshold).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use tmc_api::crd::{SyncTargetSpec, SyncTargetStatus};

    fn target(age: Option<i64>, ready: Option<(&str, &str)>) -> SyncTarget {
        let now = 1_800_000_000;
        let mut t = SyncTarget::new("west", SyncTargetSpec::default());
        t.metadata.resource_version = Some("7".into());
        t.status = Some(SyncTargetStatus {
            last_syncer_heartbeat_time: age
                .map(|a| Time(Timestamp::from_second(now - a).expect("ts"))),
            conditions: ready
                .map(|(status, reason)| Condition {
                    type_: "Ready".into(),
                    status: status.into(),
                    reason: reason.into(),
                    message: String::new(),
                    last_transition_time: Time(Timestamp::from_second(0).expect("ts")),
                    observed_generation: None,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        });
        t
    }

    #[test]
    fn only_stale_ready_targets_are_marked() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("now");
        let t = Duration::from_secs(30);
        let secs = |s| Some(Duration::from_secs(s));
        // The heartbeat timestamps are an hour off tmcd's clock: only the
        // observed age counts.
        assert!(
            stale_patch(
                &target(Some(3_600), Some(("True", "SyncerReady"))),
                secs(5),
                t,
                now
            )
            .is_none()
        );
        let patch = stale_patch(
            &target(Some(-3_600), Some(("True", "SyncerReady"))),
            secs(45),
            t,
            now,
        )
        .expect("stale");
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        let ready = patch["status"]["conditions"]
            .as_array()
            .expect("list")
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned();
        let ready = ready.expect("ready condition");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], HEARTBEAT_STALE);
        assert!(
            ready["message"]
                .as_str()
                .expect("msg")
                .contains("unchanged for 45s")
        );
        assert!(
            stale_patch(
                &target(Some(45), Some(("False", HEARTBEAT_STALE))),
                secs(45),
                t,
                now
            )
            .is_none(),
            "marked once"
        );
        assert!(
            stale_patch(&target(None, None), None, t, now).is_some(),
            "never heartbeated"
        );
    }

    #[test]
    fn registration_carries_location_and_mode_but_not_the_cordon() {
        let text = "[[clusters]]\nname = \"west\"\nmode = \"pull\"\nregion = \"us-west\"\nzone = \"a\"\n[clusters.labels]\ntier = \"gold\"\n";
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        let config = crate::config::parse(
            std::path::Path::new("t.toml"),
            text,
            dir.path().to_path_buf(),
        )
        .expect("cfg");
        let body = registration(&config.clusters[0], "root-tmc-0a1b2c3d4e");
        assert_eq!(body["metadata"]["labels"][REGION_LABEL], "us-west");
        assert_eq!(
            body["metadata"]["annotations"][SYNCED_FROM_ANNOTATION],
            "root-tmc-0a1b2c3d4e"
        );
        assert_eq!(body["metadata"]["labels"]["tier"], "gold");
        assert_eq!(body["spec"], json!({"syncMode": "Pull"}));
    }
}
