//! Hot reload in a running tmcd: replacing the placement policy's file changes
//! where workloads run; a failing policy keeps the last decision and says why.

mod common;

use anyhow::Result;
use kube::api::Api;
use serde_json::json;
use tmc_syncer::api::ClusterWorkloadPlacement;
use tmc_tests::testbed::wait::Poll;

use common::{Env, apply_placement, copy, create_deployment, replicas, split_over_both, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_policy_file_moves_workloads_and_failures_keep_them() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "chooser")?;
    let daemon = env.daemon("").await?;
    let kcp = env.kcp().await?;
    let west = env.cluster("west").await?;
    let east = env.cluster("east").await?;
    let spec = |policy: &str| {
        json!({
            "policy": {"name": policy},
            "locationPreferences": [{"matchLabels": {"topology.kubernetes.io/region": "us-west"}}],
        })
    };
    apply_placement(&kcp, "choose", spec("chooser")).await?;
    create_deployment(&kcp, "api", 4).await?;
    split_over_both(&west, &east, "api", 4).await?;
    let generation = daemon
        .state()
        .policies()
        .map(|p| p.generation())
        .unwrap_or(0);

    // Same name, new module: active-passive keeps everything in the preferred region.
    env.install_policy("active-passive", "chooser")?;
    until("api only on west after the reload", || async {
        let (w, e) = (copy(&west, "api").await?, copy(&east, "api").await?);
        Ok(if replicas(&w) == 4 && e.is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending(format!(
                "west {} east present {}",
                replicas(&w),
                e.is_some()
            ))
        })
    })
    .await?;
    let after = daemon
        .state()
        .policies()
        .map(|p| p.generation())
        .unwrap_or(0);
    assert!(
        after > generation,
        "policy generation advanced: {generation} -> {after}"
    );
    let placements: Api<ClusterWorkloadPlacement> = Api::all(kcp.clone());
    until("the placement's status shows the new split", || async {
        let status = placements.get("choose").await?.status.unwrap_or_default();
        let split: Vec<(String, u32)> = status
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.replicas))
            .collect();
        Ok(
            if split == [("west".to_string(), 4)] && status.policy_generation >= Some(after) {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "{split:?} at policy generation {:?}",
                    status.policy_generation
                ))
            },
        )
    })
    .await?;

    // A placement naming a policy that is not loaded: nothing moves, the placement says why.
    apply_placement(&kcp, "choose", spec("missing")).await?;
    let message = until("PolicyValid False on the placement", || async {
        let p = placements.get("choose").await?;
        let cond = p
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "PolicyValid");
        Ok(match cond {
            Some(c) if c.status == "False" => Poll::Ready(c.message),
            other => Poll::Pending(format!("{other:?}")),
        })
    })
    .await?;
    assert!(
        message.contains("missing"),
        "the condition names the policy: {message}"
    );
    let w = copy(&west, "api").await?;
    assert_eq!(replicas(&w), 4, "the last decision stays in force");
    let errors = daemon.state().metrics.render();
    assert!(
        errors.contains("tmcd_policy_evaluation_errors_total{policy=\"missing\"}"),
        "{errors}"
    );
    daemon.stop().await;
    Ok(())
}
