//! Two control planes with the same source identity and target name on one
//! cluster: the second is refused with a clear error and touches nothing,
//! until the first stops renewing its claim. Needs the test bed binaries.

mod common;

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tmc_api::decision::deletion_annotation;
use tmc_syncer::claim::{CLAIM_NAMESPACE, Claim, ClaimState, claim_name};
use tmc_syncer::heartbeat::SOURCE_IDENTITY_CONFLICT;

use common::{Fixture, WORKSPACE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_control_plane_with_the_same_identity_is_refused() -> Result<()> {
    let mut fx = Fixture::start().await?;
    fx.start_syncer();
    fx.create_placed("web", 1).await?;
    let copy = fx.wait_copy("web", 1).await?;
    fx.stop_syncer().await?;

    // Another control plane (its SyncTarget has another UID), configured with
    // the same synced-from and target name, claims the cluster.
    let synced_from = tmc_syncer::SourceIdentity::new(WORKSPACE).synced_from;
    let name = claim_name(&synced_from, "west");
    let leases: Api<Lease> = Api::namespaced(fx.west.clone(), CLAIM_NAMESPACE);
    let mut other = Claim::new(
        fx.west.clone(),
        &synced_from,
        "west",
        Duration::from_secs(10),
    );
    // The claim of the stopped syncer is still fresh: the other plane waits too.
    assert!(matches!(
        other.renew("uid-of-another-plane").await?,
        ClaimState::Refused { .. }
    ));
    // Stale after its duration, the other plane takes it over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match other.renew("uid-of-another-plane").await? {
            ClaimState::Held => break,
            ClaimState::Refused { message, .. } => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the other plane never took the stale claim over: {message}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    assert_eq!(
        leases
            .get(&name)
            .await?
            .spec
            .and_then(|s| s.holder_identity),
        Some("uid-of-another-plane".to_string())
    );

    // Our syncer starts while the other plane keeps renewing, and tmcd asks
    // it to remove web's copy: it must not touch the other plane's cluster.
    let renewing = tokio::spawn(async move {
        loop {
            let _ = other.renew("uid-of-another-plane").await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    fx.start_syncer();
    let patch =
        json!({"metadata": {"annotations": {deletion_annotation("west"): "2026-01-01T00:00:00Z"}}});
    fx.upstream_deployments()
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let target = fx
        .wait_ready("False", Some(SOURCE_IDENTITY_CONFLICT))
        .await?;
    let message = target
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("another control plane") && message.contains("synced_from"),
        "the error names the conflict and the fix: {message}"
    );
    assert!(
        fx.syncer()
            .health()
            .last_error
            .is_some_and(|e| e.contains("another control plane")),
        "{:?}",
        fx.syncer().health()
    );
    for _ in 0..6 {
        let live = fx.west_deployments().get_opt("web").await?;
        assert_eq!(
            live.as_ref().and_then(|d| d.uid()),
            copy.uid(),
            "a refused syncer deleted a copy"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(fx.syncer().health().objects_deleted, 0);

    // The other plane stops; once its claim is stale ours takes over and
    // carries out the removal it was asked for.
    renewing.abort();
    fx.wait_copy_gone("web").await?;
    fx.wait_ready("True", None).await?;
    fx.stop_syncer().await?;
    Ok(())
}
