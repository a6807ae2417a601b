//! The fleet: targets that are logical clusters of a second kcp serve what tmcd's syncers need from a
//! physical cluster, each on its own, through the kubeconfig the bed wrote for it.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::discovery;
use serde_json::json;
use tmc_tests::fixtures;
use tmc_tests::testbed::TestBed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_targets_serve_deployments_leases_and_watches_each_on_its_own() -> Result<()> {
    let bed = TestBed::builder().without_kcp().fleet(3).start().await?;
    let fleet = bed.fleet()?;
    assert_eq!(fleet.names(), ["fleet-001", "fleet-002", "fleet-003"]);
    assert_eq!(
        bed.kubeconfig_path("fleet-002")?,
        bed.dir().join("fleet-002.kubeconfig")
    );
    let one = fleet
        .target("fleet-001")
        .context("fleet-001")?
        .client()
        .await?;
    let two = fleet
        .target("fleet-002")
        .context("fleet-002")?
        .client()
        .await?;

    // Discovery: apps/v1 Deployments, as the syncer looks them up.
    let apps = discovery::group(&one, "apps")
        .await
        .context("discovering apps")?;
    ensure!(
        apps.recommended_resources()
            .iter()
            .any(|(r, _)| r.plural == "deployments" && r.version == "v1"),
        "fleet-001 does not serve apps/v1 deployments"
    );

    // The syncer's claim: a Lease in kube-system.
    let leases: Api<Lease> = Api::namespaced(one.clone(), "kube-system");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "claim"}}))?;
    leases
        .create(&PostParams::default(), &lease)
        .await
        .context("creating a Lease in kube-system")?;

    // A watch on fleet-001, opened before the write, sees a server-side applied Deployment in a new
    // namespace; fleet-002 holds nothing of it.
    let deployments: Api<Deployment> = Api::all(one.clone());
    let list = deployments.list(&ListParams::default()).await?;
    let version = list
        .metadata
        .resource_version
        .context("list resourceVersion")?;
    let mut events = deployments
        .watch(
            &WatchParams::default().labels("app=web").timeout(60),
            &version,
        )
        .await?
        .boxed();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(one.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "demo"}}))?,
        )
        .await?;
    let web = fixtures::deployment("demo", "web", 3, json!({}), json!({}))?;
    Api::<Deployment>::namespaced(one.clone(), "demo")
        .patch(
            "web",
            &PatchParams::apply("fleet-test").force(),
            &Patch::Apply(&web),
        )
        .await
        .context("server-side apply of a Deployment")?;
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.try_next().await? {
            if let WatchEvent::Added(d) = event {
                return Ok::<_, anyhow::Error>(d);
            }
        }
        anyhow::bail!("the watch ended without an Added event")
    })
    .await
    .context("no watch event within 30 s")??;
    assert_eq!(seen.metadata.name.as_deref(), Some("web"));
    assert_eq!(seen.spec.and_then(|s| s.replicas), Some(3));
    assert!(
        seen.status.is_none(),
        "no controller runs on a fleet target"
    );

    let elsewhere: Api<Deployment> = Api::all(two.clone());
    assert!(
        elsewhere
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
    );
    let leases_two: Api<Lease> = Api::namespaced(two, "kube-system");
    assert!(leases_two.get_opt("claim").await?.is_none());
    Ok(())
}
