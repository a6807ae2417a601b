//! Node sizes per cluster: a cluster made small on purpose fills up, the other keeps the default size.
//!
//! Needs the binaries from `hack/testbed/build.sh`.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use tmc_tests::testbed::wait::{self, Poll};
use tmc_tests::testbed::{NodeShape, TestBed};

/// `east` gets 2 nodes of 2 pods each: a 6-replica Deployment gets 4 Running pods and 2 Pending ones that
/// the scheduler reports as not fitting; `west` keeps one default node holding all 6.
#[tokio::test]
async fn a_small_cluster_fills_up_and_the_default_one_does_not() -> Result<()> {
    let bed = TestBed::builder()
        .clusters(["west", "east"])
        .without_kcp()
        .cluster_nodes("east", 2, NodeShape::pods(2))
        .start()
        .await?;
    for (cluster, nodes, pods) in [("west", 1, NodeShape::default().pods), ("east", 2, 2)] {
        let list = Api::<Node>::all(bed.cluster_client(cluster).await?)
            .list(&ListParams::default())
            .await?;
        assert_eq!(list.items.len(), nodes, "{cluster} nodes");
        for node in list.items {
            let allocatable = node.status.and_then(|s| s.allocatable).unwrap_or_default();
            assert_eq!(
                allocatable.get("pods").map(|q| q.0.clone()),
                Some(pods.to_string()),
                "{cluster} allocatable pods"
            );
        }
    }

    for (cluster, running_wanted, pending_wanted) in [("west", 6, 0), ("east", 4, 2)] {
        let client = bed.cluster_client(cluster).await?;
        let web = tmc_tests::fixtures::deployment(
            "default",
            "web",
            6,
            serde_json::json!({}),
            serde_json::json!({}),
        )?;
        Api::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &web)
            .await
            .with_context(|| format!("creating Deployment web in {cluster}"))?;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let what = format!(
            "{running_wanted} Running and {pending_wanted} unschedulable pods in {cluster}"
        );
        wait::until(
            &what,
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let pods = pods.clone();
                async move {
                    let list = pods.list(&ListParams::default().labels("app=web")).await?;
                    let phase = |p: &Pod| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.phase.clone())
                            .unwrap_or_default()
                    };
                    let unschedulable = |p: &Pod| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| {
                                    c.type_ == "PodScheduled"
                                        && c.status == "False"
                                        && c.reason.as_deref() == Some("Unschedulable")
                                })
                            })
                    };
                    let running = list.items.iter().filter(|p| phase(p) == "Running").count();
                    let pending = list
                        .items
                        .iter()
                        .filter(|p| phase(p) == "Pending" && unschedulable(p))
                        .count();
                    Ok(if running == running_wanted && pending == pending_wanted {
                        Poll::Ready(())
                    } else {
                        Poll::Pending(format!(
                            "{running} Running, {pending} unschedulable of {}",
                            list.items.len()
                        ))
                    })
                }
            },
        )
        .await?;
    }
    // Still full a moment later: nothing squeezes in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let east: Api<Pod> = Api::namespaced(bed.cluster_client("east").await?, "default");
    let list = east.list(&ListParams::default().labels("app=web")).await?;
    let bound = list
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count();
    assert_eq!(bound, 4, "east holds 2 nodes x 2 pods");
    Ok(())
}
