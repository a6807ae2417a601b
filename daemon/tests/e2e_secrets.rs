//! No Secret data leaves the Secret: a Secret's value (as `stringData` in the
//! `kubectl apply` annotation, and base64 in `data`) is synced to a physical
//! cluster, moved to the other one and changed, with tmcd and its syncers
//! logging at `debug` for every crate; then no log line, no Event (workspace
//! and both clusters), no status annotation and no placement status holds the
//! value in any encoding.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Env, NS, apply_placement, until};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tmc_tests::testbed::wait::Poll;

const NAME: &str = "db-creds";
const FIRST: &str = "hunter2-first-Zq8rTx";
const SECOND: &str = "hunter2-second-Kp3vWm";

/// The Secret as `kubectl apply` (client-side) writes it: the whole manifest,
/// `stringData` in clear, in the last-applied-configuration annotation.
fn applied_secret(value: &str) -> Result<Secret> {
    let manifest = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": NAME, "namespace": NS},
        "stringData": {"password": value},
    });
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": NAME, "namespace": NS,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": manifest.to_string(),
            },
        },
        "stringData": {"password": value},
    }))?)
}

async fn apply_secret(kcp: &kube::Client, value: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(kcp.clone(), NS);
    api.patch(
        NAME,
        &PatchParams::apply("kubectl-client-side-apply").force(),
        &Patch::Apply(&applied_secret(value)?),
    )
    .await
    .context("applying the Secret")?;
    Ok(())
}

/// Waits until `cluster` holds the Secret with password `value`.
async fn synced(cluster: &kube::Client, on: &str, value: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(cluster.clone(), NS);
    until(&format!("{NAME} with its value on {on}"), || async {
        let got = api.get_opt(NAME).await?;
        let password = got
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get("password"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        Ok(match password {
            Some(p) if p == value => Poll::Ready(()),
            other => Poll::Pending(format!("password {:?}", other.map(|_| "<other>"))),
        })
    })
    .await
}

/// Every encoding of `value` a leak could take: clear, and base64 as in a Secret's `data`.
fn encodings(value: &str) -> Vec<String> {
    let base64 = |bytes: &[u8]| {
        serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    vec![
        value.to_string(),
        base64(value.as_bytes()),
        base64(format!("\"{value}\"").as_bytes()),
    ]
}

fn leaks(haystack: &str, values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| encodings(v))
        .filter(|needle| haystack.contains(needle.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_never_reach_logs_events_or_status() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    env.install_policy("label-stamper", "label-stamper")?;
    let config = env.dir.path().join("tmc.toml");
    std::fs::write(&config, env.config_syncing(&["secrets"], "")?)?;
    // tmcd as its own process, every crate at debug (kube's requests, the
    // syncers' decisions, the policy host), its output in <bed>/tmcd.log.
    let tmcd = env.bed.spawn(
        "tmcd",
        "/usr/bin/env",
        [
            "RUST_LOG=debug".to_string(),
            env!("CARGO_BIN_EXE_tmcd").to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ],
    )?;
    let kcp = env.kcp().await?;
    let (west, east) = (env.cluster("west").await?, env.cluster("east").await?);
    let placement = |region: &str| {
        json!({
            "policy": {"name": "replica-spread"},
            "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": region}}],
            "transformations": [{"name": "label-stamper", "settings": {"labels": {"team": "demo"}}}],
        })
    };
    // tmcd installs the placement CRD when it starts.
    until("the placement CRD served (tmcd started)", || async {
        Ok(
            match apply_placement(&kcp, "secrets", placement("us-west")).await {
                Ok(()) => Poll::Ready(()),
                Err(err) => Poll::Pending(format!("{err:#}")),
            },
        )
    })
    .await?;
    apply_secret(&kcp, FIRST).await?;
    synced(&west, "west", FIRST).await?;

    // A move (create on east, delete on west) and a change of the value.
    apply_placement(&kcp, "secrets", placement("us-east")).await?;
    synced(&east, "east", FIRST).await?;
    apply_secret(&kcp, SECOND).await?;
    synced(&east, "east", SECOND).await?;
    let west_api: Api<Secret> = Api::namespaced(west.clone(), NS);
    until("the Secret removed from west after the move", || async {
        Ok(match west_api.get_opt(NAME).await? {
            None => Poll::Ready(()),
            Some(_) => Poll::Pending("still on west".into()),
        })
    })
    .await?;
    // A few status rounds after the last change.
    tokio::time::sleep(Duration::from_secs(6)).await;
    drop(tmcd);

    let values = [FIRST, SECOND];
    let log = std::fs::read_to_string(env.bed.dir().join("tmcd.log"))?;
    ensure!(
        log.lines().count() > 200 && log.contains(NAME) && log.contains("DEBUG"),
        "tmcd's debug log is too thin to prove anything ({} lines)",
        log.lines().count()
    );
    let found = leaks(&log, &values);
    ensure!(found.is_empty(), "tmcd's log holds Secret data: {found:?}");

    for (where_, client) in [("the workspace", &kcp), ("west", &west), ("east", &east)] {
        let events: Api<Event> = Api::all(client.clone());
        let text = serde_json::to_string(&events.list(&ListParams::default()).await?)?;
        let found = leaks(&text, &values);
        ensure!(
            found.is_empty(),
            "Events in {where_} hold Secret data: {found:?}"
        );
    }

    // The upstream Secret's annotations (tmcd's and the syncers' status
    // reports) minus the user's own last-applied one, and the placement.
    let upstream: Api<Secret> = Api::namespaced(kcp.clone(), NS);
    let mut secret = upstream.get(NAME).await?;
    let annotations = secret.metadata.annotations.get_or_insert_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    ensure!(
        annotations
            .keys()
            .any(|k| k.starts_with("status.workload.kcp.io/")),
        "no status report on the Secret: {annotations:?}"
    );
    let found = leaks(&serde_json::to_string(annotations)?, &values);
    ensure!(
        found.is_empty(),
        "the Secret's status annotations hold its data: {found:?}"
    );
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(
            "workload.kcp.io",
            "v1alpha1",
            "ClusterWorkloadPlacement",
        ),
        "clusterworkloadplacements",
    );
    let placements: Api<kube::api::DynamicObject> = Api::all_with(kcp.clone(), &resource);
    let got = placements.get("secrets").await?;
    let found = leaks(&serde_json::to_string(&got)?, &values);
    ensure!(
        found.is_empty(),
        "the placement's status holds Secret data: {found:?}"
    );
    Ok(())
}
