//! A measurement, not a check of speed: N Deployments (env `TMC_SCALE_N`,
//! default 100) placed on two clusters; prints how long until every decision
//! is recorded and every copy exists, and the mean reconcile latency.
//! Run: `cargo test -p tmc-daemon --test e2e_scale -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};
use serde_json::json;
use tmc_syncer::decision::state_label;
use tmc_tests::testbed::wait::Poll;

use common::{Env, NS, apply_placement, create_deployment, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run on demand"]
async fn place_many_deployments() -> Result<()> {
    let n: usize = std::env::var("TMC_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    let daemon = env.daemon("").await?;
    let kcp = env.kcp().await?;
    apply_placement(
        &kcp,
        "spread",
        json!({"policy": {"name": "replica-spread"}}),
    )
    .await?;
    let started = Instant::now();
    for i in 0..n {
        create_deployment(&kcp, &format!("app-{i:04}"), 2).await?;
    }
    let created = started.elapsed();
    let upstream: Api<Deployment> = Api::namespaced(kcp.clone(), NS);
    until("every decision recorded", || async {
        let placed = upstream
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|d| {
                let labels = d.metadata.labels.clone().unwrap_or_default();
                labels.contains_key(&state_label("west"))
                    && labels.contains_key(&state_label("east"))
            })
            .count();
        Ok(if placed == n {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{placed}/{n} placed"))
        })
    })
    .await?;
    let decided = started.elapsed();
    for cluster in ["west", "east"] {
        let copies: Api<Deployment> = Api::namespaced(env.cluster(cluster).await?, NS);
        until(&format!("every copy on {cluster}"), || async {
            let count = copies.list(&ListParams::default()).await?.items.len();
            Ok(if count == n {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("{count}/{n} on {cluster}"))
            })
        })
        .await?;
    }
    let synced = started.elapsed();
    let metrics = daemon.state().metrics.render();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains("Deployment"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (sum, count) = (
        value("tmcd_reconcile_duration_seconds_sum"),
        value("tmcd_reconcile_duration_seconds_count"),
    );
    eprintln!(
        "MEASURED {n} deployments: created in {:.1} s; all decisions recorded after {:.1} s; all {} copies on both clusters after {:.1} s; {count} reconciles, mean {:.2} ms",
        created.as_secs_f64(),
        decided.as_secs_f64(),
        2 * n,
        synced.as_secs_f64(),
        if count > 0.0 {
            sum / count * 1000.0
        } else {
            0.0
        }
    );
    daemon.stop().await;
    Ok(())
}
