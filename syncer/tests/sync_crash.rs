//! A syncer that crashes between deleting a copy and cleaning its keys upstream. Removing a copy
//! is two writes to two servers: the delete on the physical cluster, then the patch that drops the
//! target's keys and finalizer from the upstream object. Here kcp refuses that patch (409), the
//! syncer is aborted like `kill -9` while the copy is gone and the keys are still there, and a new
//! syncer must finish the job: keys and finalizer cleaned, the removed copy never re-created, and
//! every other copy left exactly as it was. Both ways a removal starts are covered: tmcd's deletion
//! request and the upstream object's own deletion.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::mpsc;

use common::{Fixture, wait_until, west_keys_of};

/// Long enough for the syncer to have retried the refused cleanup several times.
const REFUSED_FOR: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_syncer_killed_between_deleting_a_copy_and_cleaning_its_keys_finishes_the_job()
-> Result<()> {
    let mut fx = Fixture::start().await?;
    let refusing = Arc::new(AtomicBool::new(false));
    let moved_client = fx
        .client_refusing_writes_to("moved", refusing.clone())
        .await?;
    fx.start_syncer_with(moved_client, fx.west.clone(), Duration::from_secs(5));
    for name in ["keep", "moved"] {
        fx.create_placed(name, 2).await?;
        fx.wait_copy(name, 2).await?;
    }
    let keep_uid = fx.west_deployments().get("keep").await?.uid();

    // Every copy created on west from here on: the removed one must never come back.
    let (created_tx, mut created) = mpsc::unbounded_channel();
    let watch = tokio::spawn({
        let api = fx.west_deployments();
        async move {
            let mut seen: BTreeSet<String> = BTreeSet::new();
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let (Ok(Event::Apply(d)) | Ok(Event::InitApply(d))) = event else {
                    continue;
                };
                if let Some(uid) = d.metadata.uid.clone()
                    && seen.insert(uid.clone())
                {
                    let _ = created_tx.send((d.name_any(), uid));
                }
            }
        }
    });

    // 1. tmcd asks west to remove `moved`; kcp refuses the syncer's cleanup patch.
    refusing.store(true, Ordering::SeqCst);
    fx.upstream_deployments()
        .patch(
            "moved",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "deletion.internal.workload.kcp.io/west": "2026-01-01T00:00:00Z"}}})),
        )
        .await?;
    fx.wait_copy_gone("moved").await?;
    tokio::time::sleep(REFUSED_FOR).await;
    let stuck = west_keys_of(&fx.upstream_deployments().get("moved").await?);
    ensure!(
        stuck.contains(&"workload.kcp.io/syncer-west".to_string()),
        "the cleanup was meant to be refused, yet west's keys are gone: {stuck:?}"
    );

    // 2. Crash in that state; a new syncer with a healthy client finishes the removal.
    fx.crash_syncer().await;
    assert_west_holds(&fx, &["keep"]).await?;
    fx.start_syncer_with(fx.kcp.clone(), fx.west.clone(), Duration::from_secs(5));
    wait_keys_gone(&fx, "moved").await?;

    // 3. The same crash when the removal comes from the upstream object's deletion: the
    //    finalizer holds it until a new syncer has made sure the copy is gone.
    fx.crash_syncer().await;
    let doomed_client = fx
        .client_refusing_writes_to("doomed", refusing.clone())
        .await?;
    refusing.store(false, Ordering::SeqCst);
    fx.start_syncer_with(doomed_client, fx.west.clone(), Duration::from_secs(5));
    fx.create_placed("doomed", 1).await?;
    fx.wait_copy("doomed", 1).await?;
    refusing.store(true, Ordering::SeqCst);
    fx.upstream_deployments()
        .delete("doomed", &DeleteParams::default())
        .await?;
    fx.wait_copy_gone("doomed").await?;
    tokio::time::sleep(REFUSED_FOR).await;
    let held = fx
        .upstream_deployments()
        .get_opt("doomed")
        .await?
        .context("the refused finalizer removal should hold the upstream object")?;
    ensure!(held.metadata.deletion_timestamp.is_some());
    fx.crash_syncer().await;
    assert_west_holds(&fx, &["keep"]).await?;
    fx.start_syncer_with(fx.kcp.clone(), fx.west.clone(), Duration::from_secs(5));
    let ups = fx.upstream_deployments();
    wait_until("upstream doomed to be deleted", || {
        let ups = ups.clone();
        async move {
            Ok(match ups.get_opt("doomed").await? {
                None => Ok(()),
                Some(d) => Err(format!("still there, finalizers {:?}", d.finalizers())),
            })
        }
    })
    .await?;

    // After all of it: `keep` is the same copy with its replicas, and no removed copy came back.
    assert_west_holds(&fx, &["keep"]).await?;
    let keep = fx.west_deployments().get("keep").await?;
    ensure!(keep.uid() == keep_uid, "keep was re-created");
    ensure!(keep.spec.and_then(|s| s.replicas) == Some(2));
    // Let the last syncer's resync pass once more before reading what west created.
    tokio::time::sleep(Duration::from_secs(6)).await;
    watch.abort();
    let mut names = Vec::new();
    while let Ok((name, _uid)) = created.try_recv() {
        names.push(name);
    }
    names.sort();
    ensure!(
        names == ["doomed", "keep", "moved"],
        "west saw these copies created (each may appear once): {names:?}"
    );
    fx.stop_syncer().await?;
    Ok(())
}

/// West holds exactly the Deployments `names` (none being deleted).
async fn assert_west_holds(fx: &Fixture, names: &[&str]) -> Result<()> {
    let list = fx.west_deployments().list(&Default::default()).await?;
    let mut held: Vec<String> = list
        .items
        .iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
        .collect();
    held.sort();
    ensure!(held == names, "west holds {held:?}, expected {names:?}");
    Ok(())
}

/// Waits until upstream `name` has no key of west left.
async fn wait_keys_gone(fx: &Fixture, name: &str) -> Result<()> {
    let ups = fx.upstream_deployments();
    wait_until(&format!("west's keys to be cleaned from {name}"), || {
        let ups = ups.clone();
        async move {
            let left = west_keys_of(&ups.get(name).await?);
            Ok(if left.is_empty() {
                Ok(())
            } else {
                Err(format!("left: {left:?}"))
            })
        }
    })
    .await
    .map(|_: ()| ())
}
