//! A changed namespace mapping, against real servers: the copy written under
//! the old mapping is kept as it is (same object), no second copy appears
//! where the new mapping would put it, a removal request deletes nothing, and
//! the refusal is reported upstream and in the syncer's health; with the old
//! mapping back, the syncer carries on. Needs the test bed binaries
//! (`hack/testbed/build.sh`).

mod common;

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tmc_api::decision::TargetStatus;
use tmc_syncer::NamespaceMapping;

use common::{Fixture, wait_until};

/// West's report for `web`, once `check` accepts it.
async fn report(fx: &Fixture, what: &str, check: fn(&TargetStatus) -> bool) -> Result<()> {
    fx.wait_report("web", what, check).await.map(drop)
}

#[tokio::test]
async fn a_changed_mapping_neither_duplicates_nor_deletes_the_copies() -> Result<()> {
    let mut fx = Fixture::start().await?;
    fx.start_syncer();
    fx.create_placed("web", 2).await?;
    let copy = fx.wait_copy("web", 2).await?;
    fx.stop_syncer().await?;

    // The mapping changes from `same` to `prefix:tmc` while the copy exists.
    let prefixed: NamespaceMapping = "prefix:tmc".parse()?;
    fx.start_syncer_mapped(
        fx.kcp.clone(),
        fx.west.clone(),
        Duration::from_secs(2),
        prefixed,
    );
    report(&fx, "west to report the copy under the old mapping", |s| {
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("another namespace mapping"))
    })
    .await?;
    let health = wait_until("the stranded copy in the syncer's health", || async {
        let health = fx.syncer().health();
        Ok(match &health.last_error {
            Some(e) if e.contains("1 copies were written under another namespace mapping") => {
                Ok(health)
            }
            other => Err(format!("last error {other:?}")),
        })
    })
    .await?;
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("shop/web")),
        "{health:?}"
    );

    // A removal request deletes nothing either.
    fx.upstream_deployments()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "deletion.internal.workload.kcp.io/west": "2026-01-01T00:00:00Z"}}})),
        )
        .await?;
    // Several resyncs (2 s each).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let kept = fx.west_deployments().get("web").await?;
    assert_eq!(
        kept.metadata.uid, copy.metadata.uid,
        "the copy was replaced"
    );
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the copy is being deleted"
    );
    let moved: Api<Deployment> = Api::namespaced(fx.west.clone(), "tmc-shop");
    assert!(
        moved.get_opt("web").await?.is_none(),
        "a second copy appeared under the new mapping"
    );
    let up = fx.upstream_deployments().get("web").await?;
    assert!(
        up.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"workload.kcp.io/syncer-west".to_string()),
        "the upstream object forgot its running copy"
    );

    // The old mapping back: the syncer carries on (here: the removal).
    fx.stop_syncer().await?;
    fx.start_syncer();
    fx.wait_copy_gone("web").await?;
    fx.stop_syncer().await?;
    Ok(())
}
