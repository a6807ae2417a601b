//! Two tmcd replicas: one leads; when it stops the other takes over, and a
//! restart in the middle of syncing neither duplicates nor loses anything.

mod common;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};
use serde_json::json;
use tmc_api::decision::finalizer;
use tmc_tests::testbed::wait::Poll;

use common::{Env, NS, apply_placement, copy, create_deployment, replicas, split_over_both, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_takeover_and_restart_mid_sync() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    let kcp = env.kcp().await?;
    let west = env.cluster("west").await?;
    let east = env.cluster("east").await?;
    let a = env.daemon("").await?;
    let b = env.daemon("").await?;
    apply_placement(
        &kcp,
        "spread",
        json!({"policy": {"name": "replica-spread"}}),
    )
    .await?;
    let (first, second) = until("exactly one leader", || async {
        let leaders = [a.state().is_leader(), b.state().is_leader()];
        Ok(match leaders {
            [true, false] => Poll::Ready((true, false)),
            [false, true] => Poll::Ready((false, true)),
            other => Poll::Pending(format!("leaders {other:?}")),
        })
    })
    .await?;
    let (leader, standby) = if first { (a, b) } else { (b, a) };
    assert!(second != first);

    // Several workloads; stop the leader while they are being synced.
    for i in 0..4 {
        create_deployment(&kcp, &format!("app-{i}"), 2).await?;
    }
    leader.stop().await;
    until("the standby takes over", || async {
        Ok(if standby.state().is_leader() {
            Poll::Ready(())
        } else {
            Poll::Pending("standby".into())
        })
    })
    .await?;
    let upstream: Api<Deployment> = Api::namespaced(kcp.clone(), NS);
    until(
        "every app on both clusters with 2 replicas in all",
        || async {
            for i in 0..4 {
                let name = format!("app-{i}");
                let (w, e) = (copy(&west, &name).await?, copy(&east, &name).await?);
                if w.is_none() || e.is_none() || replicas(&w) + replicas(&e) != 2 {
                    return Ok(Poll::Pending(format!(
                        "{name}: west {} east {}",
                        replicas(&w),
                        replicas(&e)
                    )));
                }
            }
            Ok(Poll::Ready(()))
        },
    )
    .await?;
    // Nothing duplicated: one copy per cluster per app, one finalizer per target.
    for client in [&west, &east] {
        let copies: Api<Deployment> = Api::namespaced(client.clone(), NS);
        let names: Vec<String> = copies
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }
    for i in 0..4 {
        let d = upstream.get(&format!("app-{i}")).await?;
        let finalizers = d.metadata.finalizers.unwrap_or_default();
        let mut sorted = finalizers.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![finalizer("east"), finalizer("west")],
            "app-{i}: {finalizers:?}"
        );
    }
    // A plain restart: the decisions survive (read back from the objects) and new work is placed.
    let results = |d: &Deployment| -> Vec<(String, String)> {
        d.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.starts_with("result.workload.kcp.io/"))
            .collect()
    };
    let before = results(&upstream.get("app-0").await?);
    standby.stop().await;
    let restarted = env.daemon("").await?;
    create_deployment(&kcp, "app-4", 2).await?;
    split_over_both(&west, &east, "app-4", 2).await?;
    assert!(restarted.state().is_leader());
    assert_eq!(
        results(&upstream.get("app-0").await?),
        before,
        "decisions unchanged by the restart"
    );
    restarted.stop().await;
    Ok(())
}
