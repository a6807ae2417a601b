//! The fault matrix of "Nothing lost", on the real bed: crashes during a
//! burst of creates (kcp `kill -9`, tmcd `kill -9`) and a physical cluster
//! down past a short eviction grace. Each counts the copies on every cluster
//! afterwards: every workload placed exactly once, nothing lost, nothing
//! duplicated, and nothing deleted on a cluster while it was unreachable.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tmc_api::decision::deletion_annotation;
use tmc_tests::fixtures;
use tmc_tests::testbed::wait::Poll;

use common::{
    Env, NS, apply_placement, available, copy, create_deployment, replicas, split_over_both, until,
};

/// How many workloads a burst creates.
const BURST: usize = 200;

/// Names of the burst's workloads.
fn burst_names() -> Vec<String> {
    (0..BURST).map(|i| format!("burst-{i:03}")).collect()
}

/// Creates Deployment `name` (0 replicas: the bed's nodes are not the point),
/// retrying while the control plane is down; an "already exists" answer to a
/// retried create counts as created.
async fn create_until_done(kcp: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(kcp.clone(), NS);
    let body = fixtures::deployment(NS, name, 0, json!({"burst": "yes"}), json!({}))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        match api.create(&PostParams::default(), &body).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(workload = name, error = %e, "create failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating {name}")),
        }
    }
}

/// Copies of the burst on a cluster: name -> uid.
async fn burst_copies(client: &kube::Client) -> Result<BTreeMap<String, String>> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let list = api.list(&ListParams::default().labels("burst=yes")).await?;
    Ok(list
        .items
        .iter()
        .map(|d| (d.name_any(), d.uid().unwrap_or_default()))
        .collect())
}

/// Waits until every burst workload has exactly one copy, on west (the
/// placement allows west only), and checks that the copies then stay the
/// same objects for a while (nothing deleted and re-created, nothing added).
async fn every_burst_workload_placed_once(env: &Env) -> Result<()> {
    let (west, east) = (env.cluster("west").await?, env.cluster("east").await?);
    let names = burst_names();
    let settled = until("every burst workload on exactly one cluster", || async {
        let (w, e) = (burst_copies(&west).await?, burst_copies(&east).await?);
        let missing = names.iter().filter(|n| !w.contains_key(*n)).count();
        let extra = w.len() - (names.len() - missing);
        Ok(if missing == 0 && extra == 0 && e.is_empty() {
            Poll::Ready((w, e))
        } else {
            Poll::Pending(format!(
                "{missing} without a copy on west, {extra} unknown copies there, {} copies on east",
                e.len()
            ))
        })
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = (burst_copies(&west).await?, burst_copies(&east).await?);
    assert_eq!(again, settled, "copies changed after the system converged");
    Ok(())
}

/// The placement for bursts: every workload on west alone. Retried until
/// the placement API is served (a tmcd started as a process installs it).
async fn place_bursts_on_one_target(kcp: &kube::Client) -> Result<()> {
    let spec = json!({
        "policy": {"name": "location-affinity"},
        "workloadSelector": {"matchLabels": {"burst": "yes"}},
        "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": "us-west"}}],
    });
    until("the bursts placement to be applied", || async {
        Ok(match apply_placement(kcp, "bursts", spec.clone()).await {
            Ok(()) => Poll::Ready(()),
            Err(e) => Poll::Pending(format!("{e:#}")),
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcp_killed_during_a_burst_loses_and_duplicates_nothing() -> Result<()> {
    let mut env = Env::start().await?;
    env.install_policy("location-affinity", "location-affinity")?;
    let daemon = env.daemon("").await?;
    let kcp = env.kcp().await?;
    place_bursts_on_one_target(&kcp).await?;
    let names = burst_names();
    for name in &names[..BURST / 2] {
        create_until_done(&kcp, name).await?;
    }
    // kcp crashes mid-burst and comes back with its data.
    env.bed.kcp_mut()?.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.bed.kcp_mut()?.relaunch().await?;
    let kcp = env.kcp().await?;
    for name in &names[BURST / 2..] {
        create_until_done(&kcp, name).await?;
    }
    every_burst_workload_placed_once(&env).await?;
    daemon.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmcd_killed_during_a_burst_loses_and_duplicates_nothing() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("location-affinity", "location-affinity")?;
    let config = env.dir.path().join("tmc.toml");
    std::fs::write(&config, env.config_text("")?)?;
    let mut tmcd = env.bed.spawn(
        "tmcd",
        env!("CARGO_BIN_EXE_tmcd"),
        ["--config".to_string(), config.display().to_string()],
    )?;
    let kcp = env.kcp().await?;
    place_bursts_on_one_target(&kcp).await?;
    let names = burst_names();
    for name in &names[..BURST / 2] {
        create_until_done(&kcp, name).await?;
    }
    // tmcd crashes mid-burst, with decisions and syncs in flight; it is
    // started again while the burst goes on.
    tmcd.kill();
    for name in &names[BURST / 2..BURST * 3 / 4] {
        create_until_done(&kcp, name).await?;
    }
    tmcd.relaunch()?;
    for name in &names[BURST * 3 / 4..] {
        create_until_done(&kcp, name).await?;
    }
    every_burst_workload_placed_once(&env).await?;
    drop(tmcd);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_down_past_its_grace_is_evacuated_and_cleaned_only_once_back() -> Result<()> {
    let mut env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    let daemon = env.daemon("").await?;
    let kcp = env.kcp().await?;
    let west = env.cluster("west").await?;
    let east = env.cluster("east").await?;
    apply_placement(
        &kcp,
        "spread",
        json!({"policy": {"name": "replica-spread"}, "evictionGracePeriodSeconds": 10}),
    )
    .await?;
    create_deployment(&kcp, "web", 4).await?;
    let (_, east_copy) = split_over_both(&west, &east, "web", 4).await?;

    env.bed.stop_cluster("east").await?;
    // Past the grace, the workload is evacuated to west (create first) and
    // east is asked to remove its copy; nobody can remove it while east is down.
    let upstream: Api<Deployment> = Api::namespaced(kcp.clone(), NS);
    until(
        "web evacuated to west, east asked to remove its copy",
        || async {
            let (w, d) = (copy(&west, "web").await?, upstream.get("web").await?);
            let available = available(&w);
            let asked = d.annotations().contains_key(&deletion_annotation("east"));
            Ok(if replicas(&w) == 4 && available == 4 && asked {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "west {} replicas ({available} available), east asked: {asked}",
                    replicas(&w)
                ))
            })
        },
    )
    .await?;

    // Nothing was deleted on east while it was down; once back, its old copy goes.
    let deleted = |daemon: &tmc_daemon::Daemon| {
        daemon
            .state()
            .syncer_health("east")
            .map_or(0, |h| h.objects_deleted)
    };
    assert_eq!(
        deleted(&daemon),
        0,
        "east's syncer deleted while east was down"
    );
    env.bed.start_cluster("east").await?;
    let east = env.cluster("east").await?;
    until("east's old copy removed once east is back", || async {
        Ok(match copy(&east, "web").await? {
            Some(d) if d.uid() == east_copy.uid() => Poll::Pending("still there".into()),
            _ => Poll::Ready(()),
        })
    })
    .await?;
    assert!(deleted(&daemon) >= 1, "east's old copy went by its syncer");
    // East is Ready again: the policy spreads web over both once more.
    split_over_both(&west, &east, "web", 4).await?;
    daemon.stop().await;
    Ok(())
}
