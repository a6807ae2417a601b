//! A same-named object created by hand on the cluster between the syncer's
//! read and its apply, against real servers: the apply may only create (a
//! resourceVersion precondition no object has), so the object is read again,
//! reported upstream as not tmc's, and never taken over, over several
//! resyncs. The race is made certain: the downstream client creates the
//! object with `kubectl` just before it sends the syncer's first apply of the
//! copy. Needs the test bed binaries (`hack/testbed/build.sh`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use kube::config::Kubeconfig;

use common::{Fixture, NS};

/// A client of cluster `west` that, before the first PATCH of Deployment
/// `shop/web`, creates that Deployment by hand.
async fn racing_client(fx: &Fixture) -> Result<kube::Client> {
    let path = fx.bed.kubeconfig_path("west")?;
    let config =
        kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(&path)?, &Default::default())
            .await?;
    let kubectl = fx.bed.bin_dir().join("kubectl");
    let fired = Arc::new(AtomicBool::new(false));
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let copy = format!("/apis/apps/v1/namespaces/{NS}/deployments/web");
        if req.method() == http::Method::PATCH
            && req.uri().path() == copy
            && !fired.swap(true, Ordering::SeqCst)
        {
            let status = std::process::Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&path)
                .args(["create", "deployment", "web", "-n", NS])
                .args(["--image", "registry.invalid/by-hand:1"])
                .status()
                .expect("running kubectl");
            assert!(status.success(), "kubectl create failed");
        }
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

#[tokio::test]
async fn an_object_created_by_hand_after_the_read_is_never_taken_over() -> Result<()> {
    let mut fx = Fixture::start().await?;
    let west = racing_client(&fx).await?;
    fx.start_syncer_with(fx.kcp.clone(), west, Duration::from_secs(3));
    fx.create_placed("web", 2).await?;

    // The conflict is reported on the target's status annotation.
    let reported = fx
        .wait_report("web", "west to report that web is not tmc's", |s| {
            s.error
                .as_deref()
                .is_some_and(|e| e.contains("not managed by tmc"))
        })
        .await?
        .error
        .unwrap_or_default();
    assert!(reported.contains("web"), "{reported}");

    // Their object stays theirs: checked now and after three resyncs (3 s each).
    for pause in [0, 10] {
        tokio::time::sleep(Duration::from_secs(pause)).await;
        let theirs = fx.west_deployments().get("web").await?;
        let labels = theirs.metadata.labels.clone().unwrap_or_default();
        assert!(
            !labels.contains_key("workload.kcp.io/managed"),
            "taken over: {labels:?}"
        );
        let image = theirs
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone());
        assert_eq!(image.as_deref(), Some("registry.invalid/by-hand:1"));
        assert_eq!(theirs.spec.as_ref().and_then(|s| s.replicas), Some(1));
        let managers: Vec<String> = theirs
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert!(
            !managers.iter().any(|m| m.starts_with("tmc")),
            "tmc wrote to it: {managers:?}"
        );
    }
    let health = fx.syncer().health();
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not managed by tmc")),
        "{health:?}"
    );
    fx.stop_syncer().await.context("stopping the syncer")?;
    Ok(())
}
