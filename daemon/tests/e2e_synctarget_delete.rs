//! A deleted SyncTarget is forgotten and its cluster detached: its keys and
//! finalizer leave every upstream object, its workloads are placed on the
//! remaining targets, its copies keep running untouched (nothing is deleted
//! because a registration went away), and an upstream delete never waits on
//! a syncer that will not come.

mod common;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tmc_api::crd::SyncTarget;
use tmc_tests::testbed::wait::Poll;

use common::{NS, Spread, copy, create_deployment, replicas, until};

/// Every key or finalizer of `obj` that names `target`.
fn naming(obj: &Deployment, target: &str) -> Vec<String> {
    let suffix = format!("/{target}");
    let keys = obj
        .labels()
        .keys()
        .chain(obj.annotations().keys())
        .filter(|k| k.contains("workload.kcp.io/") && k.ends_with(&suffix))
        .cloned();
    let finalizers = obj
        .finalizers()
        .iter()
        .filter(|f| **f == format!("workload.kcp.io/syncer-{target}"))
        .cloned();
    keys.chain(finalizers).collect()
}

/// Adds `labels` and the finalizer of a SyncTarget `ghost` that never existed.
/// Retries on a write conflict (tmcd and the syncers write the object too).
async fn add_ghost(upstream: &Api<Deployment>, labels: serde_json::Value) -> Result<()> {
    until("ghost keys added", || async {
        let d = upstream.get("ghosted").await?;
        let mut finalizers = d.finalizers().to_vec();
        finalizers.push("workload.kcp.io/syncer-ghost".into());
        let patch = json!({"metadata": {
            "resourceVersion": d.resource_version(),
            "labels": labels,
            "finalizers": finalizers,
        }});
        match upstream
            .patch("ghosted", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Poll::Ready(())),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Poll::Pending("conflict".into())),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_synctarget_is_forgotten_and_deletes_do_not_hang() -> Result<()> {
    let Spread {
        env,
        daemon,
        kcp,
        west,
        east,
    } = Spread::start().await?;
    let upstream: Api<Deployment> = Api::namespaced(kcp.clone(), NS);

    create_deployment(&kcp, "web", 4).await?;
    until("web split 2 + 2 over west and east", || async {
        let (w, e) = (copy(&west, "web").await?, copy(&east, "web").await?);
        Ok(if replicas(&w) == 2 && replicas(&e) == 2 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("west {} east {}", replicas(&w), replicas(&e)))
        })
    })
    .await?;
    assert!(!naming(&upstream.get("web").await?, "east").is_empty());
    let east_copy = copy(&east, "web").await?.and_then(|d| d.uid());

    // An operator removes east from the virtual cluster.
    let targets: Api<SyncTarget> = Api::all(kcp.clone());
    targets.delete("east", &DeleteParams::default()).await?;
    until(
        "east forgotten upstream, all 4 replicas on west",
        || async {
            let d = upstream.get("web").await?;
            let left = naming(&d, "east");
            let w = copy(&west, "web").await?;
            Ok(if left.is_empty() && replicas(&w) == 4 {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "east keys {left:?}, west replicas {}",
                    replicas(&w)
                ))
            })
        },
    )
    .await?;
    assert!(
        targets.get_opt("east").await?.is_none(),
        "nothing re-created the deleted SyncTarget"
    );
    // East's copy is detached, not deleted: the same object, left as it was.
    for _ in 0..10 {
        let e = copy(&east, "web").await?;
        assert_eq!(
            e.as_ref().and_then(|d| d.uid()),
            east_copy,
            "east's copy must stay"
        );
        assert_eq!(replicas(&e), 2, "east's copy is left as it was");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    // An object naming a target that never existed (e.g. restored from a
    // backup): tmcd forgets it on the live object...
    create_deployment(&kcp, "ghosted", 1).await?;
    until("ghosted on west", || async {
        Ok(match copy(&west, "ghosted").await? {
            Some(_) => Poll::Ready(()),
            None => Poll::Pending("no copy yet".into()),
        })
    })
    .await?;
    add_ghost(&upstream, json!({"state.workload.kcp.io/ghost": "Sync"})).await?;
    until("ghost forgotten on a live object", || async {
        let left = naming(&upstream.get("ghosted").await?, "ghost");
        Ok(if left.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{left:?}"))
        })
    })
    .await?;
    // ...and on an object deleted while tmcd was down.
    daemon.stop().await;
    add_ghost(&upstream, json!({})).await?;
    upstream.delete("ghosted", &DeleteParams::default()).await?;
    upstream.delete("web", &DeleteParams::default()).await?;
    let stuck = upstream.get("ghosted").await?;
    assert!(
        stuck.metadata.deletion_timestamp.is_some() && !naming(&stuck, "ghost").is_empty(),
        "the ghost finalizer holds the delete while tmcd is down"
    );
    let daemon = env.daemon("").await?;
    until(
        "both upstream deletes complete, west's copies gone",
        || async {
            let (g, w) = (
                upstream.get_opt("ghosted").await?,
                upstream.get_opt("web").await?,
            );
            let (cg, cw) = (copy(&west, "ghosted").await?, copy(&west, "web").await?);
            Ok(
                if g.is_none() && w.is_none() && cg.is_none() && cw.is_none() {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!(
                        "upstream ghosted {:?}, web {:?}; west ghosted {}, web {}",
                        g.map(|d| d.finalizers().to_vec()),
                        w.map(|d| d.finalizers().to_vec()),
                        cg.is_some(),
                        cw.is_some()
                    ))
                },
            )
        },
    )
    .await?;
    daemon.stop().await;
    Ok(())
}
