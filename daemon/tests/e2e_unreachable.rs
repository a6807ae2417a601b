//! A cluster that stops answering: its SyncTarget turns not Ready, and
//! nothing is deleted anywhere because of it.

mod common;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::json;
use tmc_api::crd::SyncTarget;
use tmc_api::decision::state_label;
use tmc_tests::testbed::wait::Poll;

use common::{
    Env, NS, apply_placement, copy, create_deployment, ready_status, split_over_both, until,
};

/// Waits until SyncTarget `name`'s Ready condition has status `want`.
async fn ready_becomes(targets: &Api<SyncTarget>, name: &str, want: &str) -> Result<()> {
    until(&format!("SyncTarget {name} Ready={want}"), || async {
        Ok(match ready_status(targets, name).await? {
            Some(status) if status == want => Poll::Ready(()),
            other => Poll::Pending(format!("Ready is {other:?}")),
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_cluster_turns_not_ready_and_nothing_is_deleted() -> Result<()> {
    let mut env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    // A pull cluster whose agent never runs: registered, never Ready.
    let daemon = env
        .daemon("\n[[clusters]]\nname = \"north\"\nmode = \"pull\"\nregion = \"us-north\"\n")
        .await?;
    let kcp = env.kcp().await?;
    let west = env.cluster("west").await?;
    apply_placement(
        &kcp,
        "spread",
        json!({"policy": {"name": "replica-spread"}, "evictionGracePeriodSeconds": 3600}),
    )
    .await?;
    create_deployment(&kcp, "web", 2).await?;
    split_over_both(&west, &env.cluster("east").await?, "web", 2).await?;

    let targets: Api<SyncTarget> = Api::all(kcp.clone());
    let north = until("SyncTarget north marked HeartbeatStale", || async {
        let t = targets.get("north").await?;
        let ready = t
            .status
            .clone()
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready");
        Ok(match ready {
            Some(c) if c.status == "False" && c.reason == "HeartbeatStale" => Poll::Ready(t),
            other => Poll::Pending(format!("{other:?}")),
        })
    })
    .await?;
    assert_eq!(north.spec.sync_mode, tmc_api::crd::SyncMode::Pull);
    let d: Deployment = Api::namespaced(kcp.clone(), NS).get("web").await?;
    let labels = d.metadata.labels.unwrap_or_default();
    assert!(
        !labels.contains_key(&state_label("north")),
        "a target that never heartbeated gets nothing"
    );

    env.bed.stop_cluster("east").await?;
    ready_becomes(&targets, "east", "False").await?;
    // Well past the heartbeat threshold: east is still assigned upstream, west untouched.
    let upstream: Api<Deployment> = Api::namespaced(kcp.clone(), NS);
    let d = upstream.get("web").await?;
    let labels = d.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get(&state_label("east")).map(String::as_str),
        Some("Sync"),
        "{labels:?}"
    );
    let annotations = d.metadata.annotations.unwrap_or_default();
    assert!(
        annotations
            .keys()
            .all(|k| !k.starts_with("deletion.internal.workload.kcp.io/")),
        "{annotations:?}"
    );
    assert!(copy(&west, "web").await?.is_some());

    // East comes back: Ready again and still holding its copy.
    env.bed.start_cluster("east").await?;
    ready_becomes(&targets, "east", "True").await?;
    assert!(
        copy(&env.cluster("east").await?, "web").await?.is_some(),
        "east kept its copy"
    );
    daemon.stop().await;
    Ok(())
}
