//! tmcd on a plain Kubernetes control plane (no kcp): the deployment
//! controller there owns a Deployment's `.status`, so tmcd must not write
//! its aggregated status over it; it records its decisions and the target's
//! report all the same; a user who is not tmcd cannot forge a decision
//! (the ValidatingAdmissionPolicy tmcd installs). Needs the test bed binaries and the built policies
//! (`hack/build-policies.sh`).

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tmc_api::decision::TargetStatus;
use tmc_daemon::placement::status_writer::writes_status;
use tmc_tests::fixtures;
use tmc_tests::testbed::TestBed;
use tmc_tests::testbed::wait::Poll;

use common::{NS, apply_placement, protocol_guard, until};

#[tokio::test]
async fn on_a_plain_api_server_the_deployment_controller_keeps_the_status() -> Result<()> {
    let _logs = tmc_daemon::logging::init_with_default(
        tmc_syncer::process::LogFormat::Text,
        "info,kube_client=off,kube_runtime=warn",
    );
    // `hub` is the control plane, a plain kube-apiserver with the deployment
    // controller and its node cordoned: its own pods stay Pending, so its
    // controller reports 0 available while the copy on `west` runs all of them.
    let bed = TestBed::builder()
        .clusters(["hub", "west"])
        .without_kcp()
        .start()
        .await?;
    let hub = bed.cluster_client("hub").await?;
    let nodes: Api<Node> = Api::all(hub.clone());
    for node in nodes.list(&ListParams::default()).await? {
        let name = node.metadata.name.context("a node without a name")?;
        nodes
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": true}})),
            )
            .await?;
    }
    let west = bed.cluster_client("west").await?;
    assert!(
        !writes_status(&hub, None).await,
        "a plain API server is not kcp"
    );
    assert!(writes_status(&hub, Some(true)).await, "configured on");

    let dir = tempfile::tempdir()?;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies)?;
    fixtures::install_policy(&policies, "replica-spread", "replica-spread")?;
    let text = common::hub_and_west_config(
        &bed,
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[leader_election]\nlease_duration_seconds = 6\n",
    )?;
    let path = dir.path().join("tmc.toml");
    std::fs::write(&path, &text)?;
    let config = tmc_daemon::config::parse(&path, &text, dir.path().to_path_buf())?;
    let daemon = tmc_daemon::Daemon::start(config, _logs.clone()).await?;

    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(hub.clone())
        .create(&PostParams::default(), &ns)
        .await
        .context("creating namespace demo on hub")?;
    apply_placement(
        &hub,
        "spread",
        json!({"policy": {"name": "replica-spread"}}),
    )
    .await?;
    let upstream: Api<Deployment> = Api::namespaced(hub.clone(), NS);
    upstream
        .create(
            &PostParams::default(),
            &fixtures::deployment(NS, "web", 2, json!({}), json!({}))?,
        )
        .await?;

    // West's copy runs both replicas and its report says so upstream.
    until("west to report 2 available replicas on hub's web", || {
        let upstream = upstream.clone();
        async move {
            let web = upstream.get("web").await?;
            let raw = web
                .metadata
                .annotations
                .unwrap_or_default()
                .get("status.workload.kcp.io/west")
                .cloned();
            let status: Option<TargetStatus> =
                raw.as_deref().map(serde_json::from_str).transpose()?;
            let available = status
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s["availableReplicas"].as_i64());
            Ok(if available == Some(2) {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("report {status:?}"))
            })
        }
    })
    .await?;
    let copy: Api<Deployment> = Api::namespaced(west.clone(), NS);
    let copy = copy.get("web").await?;
    assert_eq!(
        copy.status.and_then(|s| s.available_replicas),
        Some(2),
        "west runs both"
    );

    // For 10 s, hub's status is its deployment controller's (nothing
    // available: it has no node), never tmcd's sum of the copies (2).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut reads = 0;
    while tokio::time::Instant::now() < deadline {
        let web = upstream.get("web").await?;
        let status = web.status.unwrap_or_default();
        assert_eq!(
            status.available_replicas.unwrap_or(0),
            0,
            "tmcd wrote over the deployment controller's status: {status:?}"
        );
        assert_eq!(status.ready_replicas.unwrap_or(0), 0, "{status:?}");
        reads += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reads > 20, "{reads} reads");

    // Only tmcd writes the decision protocol on a plain API server too.
    let user =
        protocol_guard::workspace_user(&hub, &bed.kubeconfig_path("hub")?, None, NS, dir.path())
            .await?;
    protocol_guard::forging_is_refused(&user, NS, "west").await?;
    protocol_guard::removal_is_allowed_and_loses_nothing(&user, &hub, NS, "web", "west", &west)
        .await?;
    daemon.stop().await;
    Ok(())
}
