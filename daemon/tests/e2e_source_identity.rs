//! The source identity of a new install, on the real bed: without
//! `synced_from` in tmc.toml, tmcd gives its copies a value unique to its
//! control plane (not the workspace path another kcp would share), records
//! it on its SyncTargets, and keeps it across a restart (a changed identity
//! would orphan every copy). Needs the test bed binaries and the built
//! policies (`hack/build-policies.sh`).

mod common;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;
use tmc_api::crd::SyncTarget;

use common::{Env, apply_placement, create_deployment, split_over_both};

const SYNCED_FROM: &str = "workload.kcp.io/synced-from";

fn synced_from(d: &Deployment) -> Option<String> {
    d.labels().get(SYNCED_FROM).cloned()
}

#[tokio::test]
async fn a_new_install_gets_a_unique_identity_that_survives_restarts() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    let text = env.config_text("")?;
    let without = text.replace("synced_from = \"tmc-workloads\"\n", "");
    assert_ne!(text, without, "the fixture sets synced_from");
    let daemon = env.daemon_with_text("tmc.toml", &without).await?;
    let kcp = env.kcp().await?;
    let (west, east) = (env.cluster("west").await?, env.cluster("east").await?);
    apply_placement(
        &kcp,
        "spread",
        json!({"policy": {"name": "replica-spread"}}),
    )
    .await?;
    create_deployment(&kcp, "web", 2).await?;
    let (w, e) = split_over_both(&west, &east, "web", 2).await?;
    let value = synced_from(&w).context("west's copy has no synced-from label")?;
    assert!(
        value.starts_with("root-tmc-") && value.len() > "root-tmc-".len(),
        "not unique to this control plane: {value}"
    );
    assert_eq!(synced_from(&e).as_deref(), Some(value.as_str()));
    let targets: Api<SyncTarget> = Api::all(kcp.clone());
    for name in ["west", "east"] {
        let st = targets.get(name).await?;
        assert_eq!(
            st.annotations().get(SYNCED_FROM).map(String::as_str),
            Some(value.as_str()),
            "SyncTarget {name}"
        );
    }

    // Restarted: the same identity, the same copies, new workloads alike.
    daemon.stop().await;
    let daemon = env.daemon_with_text("tmc.toml", &without).await?;
    create_deployment(&kcp, "api", 2).await?;
    let (w2, _) = split_over_both(&west, &east, "api", 2).await?;
    assert_eq!(synced_from(&w2).as_deref(), Some(value.as_str()));
    let (w_after, _) = split_over_both(&west, &east, "web", 2).await?;
    assert_eq!(
        w_after.metadata.uid, w.metadata.uid,
        "web's copy was replaced"
    );
    daemon.stop().await;
    Ok(())
}
