//! kwok's pod stages on the bed (`tests/src/testbed/kwok_stages.yaml`): pods Ready again after someone else
//! marked them NotReady, Job pods complete, deleted pods go at once.
//!
//! Needs the binaries from `hack/testbed/build.sh`.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use tmc_tests::testbed::TestBed;
use tmc_tests::testbed::wait::{self, Poll};

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

async fn west() -> Result<(TestBed, kube::Client)> {
    let bed = TestBed::builder()
        .clusters(["west"])
        .without_kcp()
        .start()
        .await?;
    let client = bed.cluster_client("west").await?;
    Ok((bed, client))
}

async fn create_web(client: &kube::Client, replicas: i32) -> Result<Api<Deployment>> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let web = tmc_tests::fixtures::deployment(
        "default",
        "web",
        replicas,
        serde_json::json!({}),
        serde_json::json!({}),
    )?;
    deployments
        .create(&PostParams::default(), &web)
        .await
        .context("creating Deployment web")?;
    Ok(deployments)
}

/// A pod whose Ready condition someone else sets False, as the node lifecycle controller does when a node
/// looks down, is made Ready again by kwok (the `pod-ready-again` stage), as a live kubelet would.
#[tokio::test]
async fn pod_marked_not_ready_is_ready_again() -> Result<()> {
    let (_bed, client) = west().await?;
    create_web(&client, 1).await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let ready_pod = || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await?;
            Ok(match list.items.first() {
                Some(p) if pod_ready(p) => Poll::Ready(p.metadata.name.clone().unwrap_or_default()),
                other => Poll::Pending(format!("pod: {:?}", other.map(|p| &p.status))),
            })
        }
    };
    let name = wait::until(
        "the pod of web to be Ready",
        Duration::from_secs(60),
        Duration::from_millis(250),
        ready_pod,
    )
    .await?;

    let not_ready = serde_json::json!({ "status": { "conditions": [{
        "type": "Ready", "status": "False", "reason": "NodeNotReady",
        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
    }] } });
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Strategic(&not_ready),
    )
    .await
    .context("marking the pod NotReady")?;
    let pod = pods.get_status(&name).await?;
    assert!(!pod_ready(&pod), "the patch took: {:?}", pod.status);
    let again = wait::until(
        "the pod to be Ready again",
        Duration::from_secs(60),
        Duration::from_millis(250),
        ready_pod,
    )
    .await?;
    assert_eq!(again, name, "the same pod, not a replacement");
    Ok(())
}

/// A Job's pod succeeds and the Job controller counts it.
#[tokio::test]
async fn job_pods_complete() -> Result<()> {
    let (_bed, client) = west().await?;
    let jobs: Api<Job> = Api::namespaced(client, "default");
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": "once", "namespace": "default" },
        "spec": { "template": { "spec": {
            "restartPolicy": "Never",
            "containers": [{ "name": "run", "image": "registry.invalid/run:1" }],
        } } },
    }))?;
    jobs.create(&PostParams::default(), &job)
        .await
        .context("creating Job once")?;
    wait::until("Job once to succeed", TIMEOUT, POLL, || {
        let jobs = jobs.clone();
        async move {
            let status = jobs.get("once").await?.status.unwrap_or_default();
            Ok(match status.succeeded {
                Some(1) => Poll::Ready(()),
                _ => Poll::Pending(format!("{status:?}")),
            })
        }
    })
    .await
}

/// Scaled down from 3 to 1, the Deployment's surplus pods are gone at once, not after a grace period.
#[tokio::test]
async fn deleted_pods_go_at_once() -> Result<()> {
    let (_bed, client) = west().await?;
    let deployments = create_web(&client, 3).await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let count = |want: usize| {
        let pods = pods.clone();
        move || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default().labels("app=web")).await?;
                let ready = list.items.iter().filter(|p| pod_ready(p)).count();
                Ok(if list.items.len() == want && ready == want {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("{} pods, {ready} Ready", list.items.len()))
                })
            }
        }
    };
    wait::until("3 Ready pods", TIMEOUT, POLL, count(3)).await?;
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": 1 } })),
        )
        .await
        .context("scaling web to 1")?;
    // A real kubelet would take up to the 30 s termination grace period; kwok removes them right away.
    wait::until("1 pod left", Duration::from_secs(20), POLL, count(1)).await
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
