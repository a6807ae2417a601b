//! The syncer against real servers when things go wrong: the physical
//! cluster's API server stops (nothing is deleted, the target reports not
//! ready, everything heals), and the syncer restarts (no duplicate, no delete,
//! no rewrite; only a confirmed orphan goes). Needs the test bed binaries
//! (`hack/testbed/build.sh`).

mod common;

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use common::{Fixture, NS, annotations_of, wait_until};

/// uid and sync-timestamp of every Deployment in west's `shop`.
async fn west_state(fx: &Fixture) -> Result<BTreeMap<String, (String, String)>> {
    let list = fx.west_deployments().list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .map(|d: &Deployment| {
            let ts = annotations_of(d)
                .get("workload.kcp.io/sync-timestamp")
                .cloned()
                .unwrap_or_default();
            (
                d.metadata.name.clone().unwrap_or_default(),
                (d.metadata.uid.clone().unwrap_or_default(), ts),
            )
        })
        .collect())
}

#[tokio::test]
async fn survives_cluster_outage_and_syncer_restart() -> Result<()> {
    let mut fx = Fixture::start().await?;
    fx.start_syncer();
    fx.create_placed("web", 2).await?;
    fx.create_placed("api", 1).await?;
    fx.wait_copy("web", 2).await?;
    fx.wait_copy("api", 1).await?;
    fx.wait_ready("True", None).await?;
    let before = west_state(&fx).await?;
    let ns_uid = Api::<Namespace>::all(fx.west.clone())
        .get(NS)
        .await?
        .metadata
        .uid;

    // 1. west's API server stops: the target reports not ready, the syncer says disconnected.
    fx.bed.stop_cluster("west").await?;
    fx.wait_ready("False", Some("ClusterUnreachable")).await?;
    wait_until("health to show west disconnected", || async {
        let h = fx.syncer().health();
        Ok(if h.downstream_connected {
            Err(format!("{h:?}"))
        } else {
            Ok(())
        })
    })
    .await?;
    // A decision made meanwhile waits for the cluster.
    fx.upstream_deployments()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"result.workload.kcp.io/west": "{\"replicas\":3}"}}})),
        )
        .await?;
    // Upstream is untouched by the outage: labels, finalizers stay.
    let web = fx.upstream_deployments().get("web").await?;
    assert!(
        web.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"workload.kcp.io/syncer-west".to_string())
    );
    assert_eq!(fx.syncer().health().objects_deleted, 0);

    // 2. west comes back: Ready again, the new decision applied, nothing was deleted.
    fx.bed.start_cluster("west").await?;
    fx.wait_ready("True", None).await?;
    fx.wait_copy("web", 3).await?;
    let after = west_state(&fx).await?;
    assert_eq!(after.len(), 2, "{after:?}");
    for (name, (uid, _)) in &before {
        assert_eq!(
            after.get(name).map(|(u, _)| u),
            Some(uid),
            "copy {name} must be the same object"
        );
    }
    let ns_uid_after = Api::<Namespace>::all(fx.west.clone())
        .get(NS)
        .await?
        .metadata
        .uid;
    assert_eq!(ns_uid_after, ns_uid, "the namespace must never be deleted");
    assert_eq!(fx.syncer().health().objects_deleted, 0);

    // 3. Restart: while the syncer is down, an orphan copy appears (ours by its
    //    labels, its upstream object does not exist) next to a foreign object.
    fx.stop_syncer().await?;
    let steady = west_state(&fx).await?;
    let marks = json!({
        "labels": {"workload.kcp.io/managed": "true", "workload.kcp.io/synced-from": "root-tmc"},
        "annotations": {"workload.kcp.io/sync-target": "west"},
    });
    let mut orphan = json!({"metadata": {"name": "orphan", "namespace": NS}, "data": {"k": "v"}});
    orphan["metadata"]["labels"] = marks["labels"].clone();
    orphan["metadata"]["annotations"] = marks["annotations"].clone();
    let configmaps: Api<ConfigMap> = Api::namespaced(fx.west.clone(), NS);
    configmaps
        .create(&PostParams::default(), &serde_json::from_value(orphan)?)
        .await?;
    let foreign = json!({"metadata": {"name": "foreign", "namespace": NS, "labels": {"workload.kcp.io/managed": "true"}}});
    configmaps
        .create(&PostParams::default(), &serde_json::from_value(foreign)?)
        .await?;

    fx.start_syncer();
    wait_until("the orphan copy to be deleted", || {
        let configmaps = configmaps.clone();
        async move {
            Ok(if configmaps.get_opt("orphan").await?.is_none() {
                Ok(())
            } else {
                Err("still there".into())
            })
        }
    })
    .await?;
    // Prove the restarted syncer works through its queue: a new placement arrives.
    fx.create_placed("late", 1).await?;
    fx.wait_copy("late", 1).await?;
    let mut restarted = west_state(&fx).await?;
    restarted.remove("late");
    assert_eq!(
        restarted, steady,
        "a restart must neither recreate nor rewrite copies"
    );
    let health = fx.syncer().health();
    assert_eq!(
        health.objects_deleted, 1,
        "only the orphan is deleted: {health:?}"
    );
    assert_eq!(
        health.objects_synced, 1,
        "only `late` is applied: {health:?}"
    );
    assert!(
        configmaps.get_opt("foreign").await?.is_some(),
        "objects without all our marks are never touched"
    );
    fx.stop_syncer().await?;
    Ok(())
}
