//! Smoke tests of the test bed against real servers: kcp workspace, Deployments in kcp, kwok pods in a cluster.
//!
//! They need the binaries from `hack/testbed/build.sh`; without them they fail and name that command.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use tmc_tests::testbed::TestBed;
use tmc_tests::testbed::wait::{self, Poll};

const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

fn deployment(name: &str, replicas: i32) -> Result<Deployment> {
    tmc_tests::fixtures::deployment(
        "default",
        name,
        replicas,
        serde_json::json!({}),
        serde_json::json!({}),
    )
}

/// A CRD in kcp workspace root:tmc, an object of it, read back through the workspace URL.
#[tokio::test]
async fn kcp_workspace_serves_a_new_crd() -> Result<()> {
    let bed = TestBed::builder().workspace("root:tmc").start().await?;
    let client = bed.kcp_client().await?;
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.smoke.tmc.test" },
        "spec": {
            "group": "smoke.tmc.test",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "properties": {
                    "spec": { "type": "object", "properties": { "size": { "type": "integer" } } },
                } } },
            }],
        },
    }))?;
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .context("creating the Widget CRD in root:tmc")?;

    let gvk = GroupVersionKind::gvk("smoke.tmc.test", "v1", "Widget");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, "default", &resource);
    let mut widget = DynamicObject::new("w1", &resource);
    widget.data = serde_json::json!({ "spec": { "size": 7 } });
    // The CRD needs a moment to be served.
    wait::until("Widget w1 to be created", TIMEOUT, POLL, || {
        let (widgets, widget) = (widgets.clone(), widget.clone());
        async move {
            Ok(
                match widgets.create(&PostParams::default(), &widget).await {
                    Ok(_) => Poll::Ready(()),
                    Err(e) => Poll::Pending(e.to_string()),
                },
            )
        }
    })
    .await?;
    let back = widgets.get("w1").await.context("reading Widget w1 back")?;
    assert_eq!(
        back.data.pointer("/spec/size").and_then(|v| v.as_i64()),
        Some(7)
    );

    // The object lives in root:tmc only: the root workspace has no such resource.
    let root = bed.kcp()?.client("root").await?;
    let in_root: Api<DynamicObject> = Api::namespaced_with(root, "default", &resource);
    assert!(
        in_root.get("w1").await.is_err(),
        "Widget must not be visible in root"
    );
    Ok(())
}

/// `install_kube_crds` makes deployments.apps available in the workspace; a Deployment round-trips.
#[tokio::test]
async fn kcp_workspace_serves_deployments_after_install_kube_crds() -> Result<()> {
    let bed = TestBed::builder().workspace("root:tmc").start().await?;
    let deployments: Api<Deployment> = Api::namespaced(bed.kcp_client().await?, "default");
    assert!(
        deployments.list(&ListParams::default()).await.is_err(),
        "kcp must not serve deployments before install_kube_crds"
    );
    bed.install_kube_crds().await?;
    bed.install_kube_crds()
        .await
        .context("install_kube_crds must be idempotent")?;
    deployments
        .create(&PostParams::default(), &deployment("web", 3)?)
        .await
        .context("creating a Deployment in kcp")?;
    let back = deployments.get("web").await?;
    let spec = back
        .spec
        .clone()
        .context("the Deployment read back has no spec")?;
    assert_eq!(spec.replicas, Some(3));
    // The pod template's labels survive (kcp's stock CRD prunes them, which would make
    // every copy on a physical cluster invalid: its selector would match no template).
    let template_labels = spec.template.metadata.and_then(|m| m.labels);
    assert_eq!(
        template_labels
            .and_then(|l| l.get("app").cloned())
            .as_deref(),
        Some("web")
    );
    // Nothing runs it in kcp: no controller sets status.
    assert_eq!(back.status.and_then(|s| s.ready_replicas), None);
    Ok(())
}

/// A 2-replica Deployment in `west` gets two Running kwok pods and reports 2 ready replicas;
/// stopping and restarting west's kube-apiserver keeps the data.
#[tokio::test]
async fn physical_cluster_runs_deployments_on_kwok_nodes() -> Result<()> {
    let mut bed = TestBed::builder()
        .clusters(["west"])
        .without_kcp()
        .start()
        .await?;
    let client = bed.cluster_client("west").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("web", 2)?)
        .await
        .context("creating a Deployment in west")?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    wait::until(
        "2 Running pods and 2 ready replicas in west",
        TIMEOUT,
        POLL,
        || {
            let (deployments, pods) = (deployments.clone(), pods.clone());
            async move {
                let list = pods.list(&ListParams::default().labels("app=web")).await?;
                let phases: BTreeMap<String, String> = list
                    .items
                    .iter()
                    .map(|p| {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let phase = p
                            .status
                            .as_ref()
                            .and_then(|s| s.phase.clone())
                            .unwrap_or_default();
                        (name, phase)
                    })
                    .collect();
                let running = phases.values().filter(|p| *p == "Running").count();
                let ready = deployments
                    .get("web")
                    .await?
                    .status
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                Ok(if running == 2 && ready == 2 {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("pods {phases:?}, ready replicas {ready}"))
                })
            }
        },
    )
    .await?;
    let pod_list = pods.list(&ListParams::default().labels("app=web")).await?;
    assert!(
        pod_list
            .items
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("west-node-0")),
        "pods must be scheduled onto the kwok node"
    );

    bed.stop_cluster("west").await?;
    assert!(
        deployments.get("web").await.is_err(),
        "west must be unreachable while stopped"
    );
    bed.start_cluster("west").await?;
    let back = deployments
        .get("web")
        .await
        .context("reading the Deployment after restart")?;
    assert_eq!(back.spec.and_then(|s| s.replicas), Some(2));
    Ok(())
}
