//! The syncer against real servers: sync, status back, drift, removal on
//! request and on upstream delete. Needs the test bed binaries
//! (`hack/testbed/build.sh`).

mod common;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use tmc_api::crd::{SyncTarget, SyncTargetSpec};

use common::{Fixture, NS, WORKSPACE, annotations_of, labels_of, wait_until, west_keys_of};

#[tokio::test]
async fn syncs_reports_corrects_drift_and_removes_on_evidence() -> Result<()> {
    let mut fx = Fixture::start().await?;
    fx.start_syncer();

    // 1. A Deployment placed on west with a result of 2 replicas appears there, marked.
    fx.create_placed("web", 2).await?;
    let copy = fx.wait_copy("web", 2).await?;
    let labels = labels_of(&copy);
    assert_eq!(
        labels.get("workload.kcp.io/managed").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        labels
            .get("workload.kcp.io/synced-from")
            .map(String::as_str),
        Some("root-tmc")
    );
    assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    assert!(
        !labels.contains_key("state.workload.kcp.io/west"),
        "protocol labels must not be copied: {labels:?}"
    );
    let annotations = annotations_of(&copy);
    assert_eq!(
        annotations
            .get("workload.kcp.io/sync-target")
            .map(String::as_str),
        Some("west")
    );
    assert_eq!(
        annotations
            .get("workload.kcp.io/source-cluster")
            .map(String::as_str),
        Some(WORKSPACE)
    );
    assert!(
        annotations.contains_key("workload.kcp.io/content-hash"),
        "{annotations:?}"
    );
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with("result.workload.kcp.io/")),
        "{annotations:?}"
    );
    let timestamp = annotations
        .get("workload.kcp.io/sync-timestamp")
        .cloned()
        .context("sync-timestamp annotation")?;
    let west_ns = Api::<Namespace>::all(fx.west.clone()).get(NS).await?;
    assert_eq!(
        labels_of(&west_ns)
            .get("workload.kcp.io/managed")
            .map(String::as_str),
        Some("true")
    );

    // The upstream object holds the syncer's finalizer.
    let up = fx.upstream_deployments().get("web").await?;
    assert!(
        up.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"workload.kcp.io/syncer-west".to_string())
    );

    // 2. kwok runs the pods; the status annotation upstream shows readyReplicas 2.
    let status = fx
        .wait_report(
            "web",
            "status.workload.kcp.io/west with readyReplicas 2",
            |s| {
                s.status
                    .as_ref()
                    .and_then(|st| st["readyReplicas"].as_i64())
                    == Some(2)
            },
        )
        .await?;
    assert_eq!(status.error, None);
    assert_eq!(status.observed_generation, up_generation(&fx, "web").await?);
    assert_eq!(
        Some(status.applied_hash.as_str()),
        annotations
            .get("workload.kcp.io/content-hash")
            .map(String::as_str)
    );

    // 3. The heartbeat: Ready, HeartbeatHealthy, resources accepted, one workload.
    let st = fx.wait_ready("True", None).await?;
    assert!(
        st.pointer("/status/lastSyncerHeartbeatTime").is_some(),
        "{st}"
    );
    let resources = st
        .pointer("/status/syncedResources")
        .cloned()
        .unwrap_or_default();
    assert!(
        resources.as_array().is_some_and(|r| r
            .iter()
            .any(|r| r["resource"] == "deployments" && r["state"] == "Accepted")),
        "{resources}"
    );
    let heartbeat_ok = st
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "HeartbeatHealthy" && c["status"] == "True")
        });
    assert!(heartbeat_ok, "{st}");
    wait_until("SyncTarget west workloadCount 1", || async {
        let st = fx.sync_target().await?;
        let count = st.pointer("/status/workloadCount").cloned();
        Ok(if count == Some(json!(1)) {
            Ok(())
        } else {
            Err(format!("workloadCount {count:?}"))
        })
    })
    .await?;

    // 4. Drift: an edit of the copy's replicas is corrected, the content did not change so the timestamp stays.
    fx.west_deployments()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await?;
    let healed = fx.wait_copy("web", 2).await?;
    assert_eq!(
        annotations_of(&healed).get("workload.kcp.io/sync-timestamp"),
        Some(&timestamp)
    );

    // A deleted copy comes back (a new object).
    let old_uid = healed.metadata.uid.clone();
    fx.west_deployments()
        .delete("web", &DeleteParams::default())
        .await?;
    let west = fx.west_deployments();
    wait_until("copy web to be recreated", || {
        let (west, old_uid) = (west.clone(), old_uid.clone());
        async move {
            Ok(match west.get_opt("web").await? {
                Some(d) if d.metadata.uid != old_uid && d.metadata.deletion_timestamp.is_none() => {
                    Ok(())
                }
                Some(_) => Err("still the old copy".into()),
                None => Err("no copy".into()),
            })
        }
    })
    .await?;

    // A downstream object without our labels is never touched.
    let foreign: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "foreign", "namespace": NS}, "data": {"a": "b"}}),
    )?;
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(fx.west.clone(), NS)
        .create(&Default::default(), &foreign)
        .await?;

    // 5. The deletion annotation removes the copy, then every protocol key of west.
    fx.upstream_deployments()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"deletion.internal.workload.kcp.io/west": "2026-01-01T00:00:00Z"}}})),
        )
        .await?;
    fx.wait_copy_gone("web").await?;
    let ups = fx.upstream_deployments();
    wait_until("protocol keys of west to be removed from web", || {
        let ups = ups.clone();
        async move {
            let left = west_keys_of(&ups.get("web").await?);
            Ok(if left.is_empty() {
                Ok(())
            } else {
                Err(format!("left: {left:?}"))
            })
        }
    })
    .await?;
    // The namespace it created stays (tmc never deletes namespaces), and so does the foreign object.
    assert!(
        Api::<Namespace>::all(fx.west.clone())
            .get_opt(NS)
            .await?
            .is_some()
    );
    assert!(
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(fx.west.clone(), NS)
            .get_opt("foreign")
            .await?
            .is_some()
    );

    // 6. An upstream delete waits on the finalizer until the copy is gone. With the
    //    syncer stopped the delete must hang (nothing else removes the finalizer).
    fx.create_placed("api", 1).await?;
    fx.wait_copy("api", 1).await?;
    let ups = fx.upstream_deployments();
    wait_until("finalizer on api", || {
        let ups = ups.clone();
        async move {
            let up = ups.get("api").await?;
            let has = up
                .metadata
                .finalizers
                .unwrap_or_default()
                .contains(&"workload.kcp.io/syncer-west".to_string());
            Ok(if has {
                Ok(())
            } else {
                Err("no finalizer yet".into())
            })
        }
    })
    .await?;
    fx.stop_syncer().await?;
    fx.upstream_deployments()
        .delete("api", &DeleteParams::default())
        .await?;
    let pending = fx
        .upstream_deployments()
        .get("api")
        .await
        .context("upstream api must wait on the finalizer")?;
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(
        fx.west_deployments().get_opt("api").await?.is_some(),
        "the copy stays while the syncer is down"
    );
    fx.start_syncer();
    fx.wait_copy_gone("api").await?;
    let ups = fx.upstream_deployments();
    wait_until("upstream api to be deleted once its copy is gone", || {
        let ups = ups.clone();
        async move {
            Ok(if ups.get_opt("api").await?.is_none() {
                Ok(())
            } else {
                Err("still there".into())
            })
        }
    })
    .await?;

    // 7. Deleting an upstream namespace completes: the finalizers go once the copies are gone
    //    (kcp TMC once blocked namespace deletion forever). The downstream namespace stays.
    let temp: Namespace = serde_json::from_value(json!({"metadata": {"name": "temp"}}))?;
    let kcp_namespaces = Api::<Namespace>::all(fx.kcp.clone());
    kcp_namespaces.create(&Default::default(), &temp).await?;
    let temp_deployments: Api<Deployment> = Api::namespaced(fx.kcp.clone(), "temp");
    let mut tmp = fx
        .upstream_deployments()
        .get("web")
        .await
        .context("web still exists")?;
    tmp.metadata = serde_json::from_value(json!({
        "name": "tmp", "namespace": "temp",
        "labels": {"app": "web", "state.workload.kcp.io/west": "Sync"},
    }))?;
    tmp.status = None;
    temp_deployments.create(&Default::default(), &tmp).await?;
    let west_temp: Api<Deployment> = Api::namespaced(fx.west.clone(), "temp");
    wait_until("copy temp/tmp in west", || {
        let west_temp = west_temp.clone();
        async move {
            Ok(if west_temp.get_opt("tmp").await?.is_some() {
                Ok(())
            } else {
                Err("no copy".into())
            })
        }
    })
    .await?;
    kcp_namespaces
        .delete("temp", &DeleteParams::default())
        .await?;
    wait_until(
        "upstream namespace temp to be deleted and its copy gone",
        || {
            let (kcp_namespaces, west_temp) = (kcp_namespaces.clone(), west_temp.clone());
            async move {
                let ns = kcp_namespaces.get_opt("temp").await?;
                let copy = west_temp.get_opt("tmp").await?;
                Ok(if ns.is_none() && copy.is_none() {
                    Ok(())
                } else {
                    Err(format!(
                        "namespace present: {}, copy present: {}",
                        ns.is_some(),
                        copy.is_some()
                    ))
                })
            }
        },
    )
    .await?;
    assert!(
        Api::<Namespace>::all(fx.west.clone())
            .get_opt("temp")
            .await?
            .is_some()
    );

    // 8. A deleted SyncTarget detaches its syncer: nothing applied (kcp TMC once
    //    brought old pods back to a re-added target); once it exists again, syncing resumes.
    let targets: Api<SyncTarget> = Api::all(fx.kcp.clone());
    targets.delete("west", &DeleteParams::default()).await?;
    wait_until("the syncer to notice the missing SyncTarget", || async {
        let health = fx.syncer().health();
        let noticed = health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("does not exist"));
        Ok(if noticed {
            Ok(())
        } else {
            Err(format!("{health:?}"))
        })
    })
    .await?;
    // Detached: nothing is applied, deleted or reported while it is missing.
    fx.create_placed("ghost", 1).await?;
    let ups = fx.upstream_deployments();
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(
            fx.west_deployments().get_opt("ghost").await?.is_none(),
            "nothing is applied for a missing SyncTarget"
        );
        let up = ups.get("ghost").await?;
        assert!(
            !annotations_of(&up).contains_key("status.workload.kcp.io/west"),
            "a detached syncer reports nothing"
        );
    }
    targets
        .create(
            &Default::default(),
            &SyncTarget::new("west", SyncTargetSpec::default()),
        )
        .await?;
    fx.wait_copy("ghost", 1).await?;
    fx.stop_syncer().await?;
    Ok(())
}

async fn up_generation(fx: &Fixture, name: &str) -> Result<Option<i64>> {
    Ok(fx
        .upstream_deployments()
        .get(name)
        .await?
        .metadata
        .generation)
}
