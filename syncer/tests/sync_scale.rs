//! A measurement, not a pass/fail timing: how fast the syncer brings N placed
//! Deployments to `west` and their ready status back. Prints the figures.
//! Run with `cargo test -p tmc-syncer --test sync_scale -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ListParams;
use tmc_syncer::decision::TargetStatus;

use common::{Fixture, annotations_of, wait_until};

const N: usize = 50;

fn ready_reported(d: &Deployment) -> bool {
    annotations_of(d)
        .get("status.workload.kcp.io/west")
        .and_then(|raw| serde_json::from_str::<TargetStatus>(raw).ok())
        .and_then(|s| s.status)
        .is_some_and(|s| s["readyReplicas"].as_i64() == Some(1))
}

#[tokio::test]
#[ignore = "measurement; run explicitly"]
async fn measure_sync_and_status_latency() -> Result<()> {
    let mut fx = Fixture::start().await?;
    fx.start_syncer();
    let start = Instant::now();
    for i in 0..N {
        fx.create_placed(&format!("w{i:03}"), 1).await?;
    }
    let created = start.elapsed();
    let west = fx.west_deployments();
    wait_until(&format!("{N} copies in west"), || {
        let west = west.clone();
        async move {
            let n = west.list(&ListParams::default()).await?.items.len();
            Ok(if n == N {
                Ok(())
            } else {
                Err(format!("{n} copies"))
            })
        }
    })
    .await?;
    let copied = start.elapsed();
    let ups = fx.upstream_deployments();
    wait_until(&format!("{N} ready statuses upstream"), || {
        let ups = ups.clone();
        async move {
            let items = ups.list(&ListParams::default()).await?.items;
            let ready = items.iter().filter(|d| ready_reported(d)).count();
            Ok(if ready == N {
                Ok(())
            } else {
                Err(format!("{ready} ready"))
            })
        }
    })
    .await?;
    let reported = start.elapsed();
    let health = fx.syncer().health();
    println!(
        "MEASURE sync of {N} Deployments: creates issued in {:.2}s; all copies in west after {:.2}s ({:.1} copies/s); \
         all readyReplicas=1 statuses upstream after {:.2}s; applies {} (one per object expected), deletes {}",
        created.as_secs_f64(),
        copied.as_secs_f64(),
        N as f64 / copied.as_secs_f64(),
        reported.as_secs_f64(),
        health.objects_synced,
        health.objects_deleted,
    );
    assert_eq!(health.objects_deleted, 0);
    fx.stop_syncer().await?;
    Ok(())
}
