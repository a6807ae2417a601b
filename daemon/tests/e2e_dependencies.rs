//! Dependencies follow their workload, on real servers: the ConfigMap,
//! Secret and ServiceAccount a Deployment references go where the Deployment goes, although
//! no placement selects them; the Deployment's copy is applied on a target
//! only once they are there (a missing Secret shows in its status and an
//! Event, and holds its copy back); a move carries them and removes them
//! from the old target only after the Deployment's copy is gone there; a
//! ConfigMap two Deployments share stays on a target while one of them
//! runs there; an object of the same name that tmc did not create on a
//! cluster counts as there and is never touched.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Env, NS, apply_placement, until};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tmc_api::decision::{MANAGED_LABEL, deletion_annotation};
use tmc_daemon::admin::client::request;
use tmc_daemon::explain::ExplainReport;
use tmc_tests::testbed::wait::Poll;

/// A finalizer the test puts on a copy to hold it while it is deleted.
const HOLD: &str = "e2e.tmc.test/hold";

/// A Deployment `name` (label `app: name`) whose pod template references
/// ConfigMap `web-config` (a volume) and `secrets` (`env.valueFrom`), the
/// hand-made pull Secret `pull` (`imagePullSecrets`) and, when given, the
/// ServiceAccount it runs as.
fn deployment(name: &str, secrets: &[&str], account: Option<&str>) -> Result<Deployment> {
    let env: Vec<Value> = secrets
        .iter()
        .map(|s| {
            json!({"name": s.to_uppercase().replace('-', "_"),
            "valueFrom": {"secretKeyRef": {"name": s, "key": "password"}}})
        })
        .collect();
    let mut pod_spec = json!({
        "imagePullSecrets": [{"name": "pull"}],
        "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
        "containers": [{"name": "app", "image": "app:1", "env": env,
            "volumeMounts": [{"name": "config", "mountPath": "/config"}]}],
    });
    if let Some(account) = account {
        pod_spec["serviceAccountName"] = json!(account);
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": pod_spec,
            },
        },
    }))?)
}

/// The placement of Deployments labelled `app: <app>`, on the region `region`.
fn placement(app: &str, region: &str) -> Value {
    json!({
        "resources": [{"group": "apps", "kind": "Deployment"}],
        "workloadSelector": {"matchLabels": {"app": app}},
        "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": region}}],
        "policy": {"name": "replica-spread"},
    })
}

/// What a cluster holds of the objects under test: (kind name, managed by tmc).
async fn holdings(cluster: &kube::Client) -> Result<BTreeSet<(String, bool)>> {
    let mut out = BTreeSet::new();
    let managed = |labels: Option<&std::collections::BTreeMap<String, String>>| {
        labels
            .and_then(|l| l.get(MANAGED_LABEL))
            .map(String::as_str)
            == Some("true")
    };
    for name in ["web", "api"] {
        let api: Api<Deployment> = Api::namespaced(cluster.clone(), NS);
        if let Some(d) = api.get_opt(name).await? {
            out.insert((
                format!("Deployment {name}"),
                managed(d.metadata.labels.as_ref()),
            ));
        }
    }
    let api: Api<ConfigMap> = Api::namespaced(cluster.clone(), NS);
    if let Some(c) = api.get_opt("web-config").await? {
        out.insert((
            "ConfigMap web-config".into(),
            managed(c.metadata.labels.as_ref()),
        ));
    }
    let api: Api<ServiceAccount> = Api::namespaced(cluster.clone(), NS);
    if let Some(a) = api.get_opt("web-runner").await? {
        out.insert((
            "ServiceAccount web-runner".into(),
            managed(a.metadata.labels.as_ref()),
        ));
    }
    for name in ["web-secret", "pull"] {
        let api: Api<Secret> = Api::namespaced(cluster.clone(), NS);
        if let Some(s) = api.get_opt(name).await? {
            out.insert((
                format!("Secret {name}"),
                managed(s.metadata.labels.as_ref()),
            ));
        }
    }
    Ok(out)
}

fn has(held: &BTreeSet<(String, bool)>, what: &str) -> bool {
    held.iter().any(|(name, _)| name == what)
}

/// A Deployment copy on a cluster without one of its dependencies.
fn broken(held: &BTreeSet<(String, bool)>) -> Option<String> {
    let deps = |deployment: &str| -> &[&str] {
        match deployment {
            "Deployment web" => &[
                "ConfigMap web-config",
                "Secret web-secret",
                "Secret pull",
                "ServiceAccount web-runner",
            ],
            _ => &["ConfigMap web-config", "Secret pull"],
        }
    };
    held.iter()
        .filter(|(name, _)| name.starts_with("Deployment "))
        .find_map(|(name, _)| {
            deps(name)
                .iter()
                .find(|d| !has(held, d))
                .map(|d| format!("{name} without {d}"))
        })
}

/// Creates the hand-made pull Secret `pull` on a cluster (tmc did not create it).
async fn hand_made_pull_secret(cluster: &kube::Client) -> Result<String> {
    let api: Api<Secret> = Api::namespaced(cluster.clone(), NS);
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.clone());
    let body = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    let _ = ns.create(&PostParams::default(), &body).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pull", "namespace": NS},
        "stringData": {".dockerconfigjson": "{}"},
        "type": "kubernetes.io/dockerconfigjson",
    }))?;
    let made = api.create(&PostParams::default(), &secret).await?;
    made.metadata
        .resource_version
        .context("the hand-made Secret has no resourceVersion")
}

/// The `Synced` condition of the upstream Deployment `name`, as (status, message).
async fn synced_condition(kcp: &kube::Client, name: &str) -> Result<Option<(String, String)>> {
    let api: Api<Deployment> = Api::namespaced(kcp.clone(), NS);
    let d = api.get(name).await?;
    Ok(d.status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Synced")
        .map(|c| (c.status, c.message.unwrap_or_default())))
}

/// What the sampling of a move saw.
#[derive(Default)]
struct Samples {
    /// Deployment copies seen without one of their dependencies.
    violations: Vec<String>,
    /// How many samples were taken.
    count: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_follow_their_workload() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    let text = env.config_syncing(
        &[
            "deployments.apps",
            "configmaps",
            "secrets",
            "serviceaccounts",
        ],
        "",
    )?;
    let daemon = env.daemon_with_text("tmc.toml", &text).await?;
    let kcp = env.kcp().await?;
    let (west, east) = (env.cluster("west").await?, env.cluster("east").await?);
    let pull_west = hand_made_pull_secret(&west).await?;
    let pull_east = hand_made_pull_secret(&east).await?;

    apply_placement(&kcp, "web", placement("web", "us-west")).await?;
    apply_placement(&kcp, "api", placement("api", "us-west")).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(kcp.clone(), NS);
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "web-config", "namespace": NS}, "data": {"greeting": "hello"}}))?;
    config_maps.create(&PostParams::default(), &config).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(kcp.clone(), NS);
    let account: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "web-runner", "namespace": NS}}))?;
    accounts.create(&PostParams::default(), &account).await?;
    let deployments: Api<Deployment> = Api::namespaced(kcp.clone(), NS);
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", &["web-secret"], Some("web-runner"))?,
        )
        .await?;
    deployments
        .create(&PostParams::default(), &deployment("api", &[], None)?)
        .await?;

    // 1. web-secret does not exist upstream: web's status and an Event say
    // so, naming the Secret and the target, and web is not applied on west;
    // api (which does not need it) runs there with the shared ConfigMap.
    let message = until("web not synced on west for lack of web-secret", || async {
        Ok(match synced_condition(&kcp, "web").await? {
            Some((status, message)) if status == "False" => Poll::Ready(message),
            other => Poll::Pending(format!("condition {other:?}")),
        })
    })
    .await?;
    for needle in [
        "west",
        "Secret demo/web-secret",
        "does not exist in the workspace",
    ] {
        ensure!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    let events: Api<Event> = Api::namespaced(kcp.clone(), NS);
    until("a SyncFailed Event on web naming web-secret", || async {
        let found = events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .any(|e| {
                e.reason.as_deref() == Some("SyncFailed")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("Secret demo/web-secret"))
            });
        Ok(if found {
            Poll::Ready(())
        } else {
            Poll::Pending("no Event yet".into())
        })
    })
    .await?;
    until("api and web-config on west", || async {
        let held = holdings(&west).await?;
        Ok(
            match has(&held, "Deployment api") && has(&held, "ConfigMap web-config") {
                true => Poll::Ready(()),
                false => Poll::Pending(format!("{held:?}")),
            },
        )
    })
    .await?;
    let held = holdings(&west).await?;
    ensure!(
        !has(&held, "Deployment web"),
        "web applied without its Secret: {held:?}"
    );
    ensure!(
        held.contains(&("ConfigMap web-config".into(), true)),
        "{held:?}"
    );
    ensure!(
        holdings(&east)
            .await?
            .iter()
            .all(|(n, _)| n == "Secret pull"),
        "nothing on east"
    );

    // 2. The Secret is created: web lands on west with both dependencies and
    // its status says it is synced.
    let secrets: Api<Secret> = Api::namespaced(kcp.clone(), NS);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "web-secret", "namespace": NS}, "stringData": {"password": "s3cret"}}))?;
    secrets.create(&PostParams::default(), &secret).await?;
    until("web on west with its ConfigMap and Secret", || async {
        let held = holdings(&west).await?;
        Ok(match has(&held, "Deployment web") {
            true => Poll::Ready(()),
            false => Poll::Pending(format!("{held:?}")),
        })
    })
    .await?;
    let held = holdings(&west).await?;
    for dependency in ["Secret web-secret", "ServiceAccount web-runner"] {
        ensure!(
            held.contains(&(dependency.into(), true)),
            "{dependency} not on west as tmc's copy: {held:?}"
        );
    }
    ensure!(broken(&held).is_none(), "{held:?}");
    until("web synced", || async {
        Ok(match synced_condition(&kcp, "web").await? {
            Some((status, _)) if status == "True" => Poll::Ready(()),
            other => Poll::Pending(format!("condition {other:?}")),
        })
    })
    .await?;
    // `tmcd explain` says why the shared ConfigMap is on west: both users run there.
    let admin = format!("http://{}", daemon.admin_addr());
    let reply = request(&admin, "GET", "/api/v1/explain/configmap/demo/web-config").await?;
    let report: ExplainReport = serde_json::from_str(&reply.body)
        .with_context(|| format!("explain answered {}: {}", reply.status, reply.body))?;
    let follows = report
        .follows
        .with_context(|| format!("explain does not say web-config follows: {}", reply.body))?;
    ensure!(
        follows.targets
            == [(
                "west".to_string(),
                vec![
                    "Deployment demo/api".to_string(),
                    "Deployment demo/web".to_string()
                ]
            )]
            .into(),
        "web-config follows {:?}",
        follows.targets
    );

    // 3. web moves to east: its dependencies go with it and are there
    // before it; web-secret leaves west only after web's copy there is
    // gone (a foreign finalizer holds that copy a while), web-config stays
    // on west for api; each cluster is sampled all along, and no Deployment
    // copy ever runs without its dependencies.
    // A finalizer of someone else's holds web's copy on west while it is
    // deleted: as long as it is there, web-secret must stay on west.
    let west_deployments: Api<Deployment> = Api::namespaced(west.clone(), NS);
    let hold = |finalizers: Value| json!({"metadata": {"finalizers": finalizers}});
    west_deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&hold(json!([HOLD]))),
        )
        .await?;
    apply_placement(&kcp, "web", placement("web", "us-east")).await?;
    until("web on east and its copy on west terminating", || async {
        let terminating = west_deployments
            .get_opt("web")
            .await?
            .is_some_and(|d| d.metadata.deletion_timestamp.is_some());
        let e = holdings(&east).await?;
        Ok(
            match terminating && broken(&e).is_none() && has(&e, "Deployment web") {
                true => Poll::Ready(()),
                false => Poll::Pending(format!("west copy terminating: {terminating}; east {e:?}")),
            },
        )
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let w = holdings(&west).await?;
    for dependency in ["Secret web-secret", "ServiceAccount web-runner"] {
        ensure!(
            w.contains(&(dependency.into(), true)),
            "{dependency} left west while web's copy is still there: {w:?}"
        );
    }
    let upstream_secret = secrets.get("web-secret").await?;
    let asked = upstream_secret
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key(&deletion_annotation("west"));
    ensure!(
        !asked,
        "web-secret's removal from west asked while web's copy is there"
    );
    west_deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&hold(json!([]))),
        )
        .await?;
    let samples: Arc<Mutex<Samples>> = Arc::default();
    until(
        "web, web-config, web-secret and web-runner on east, web, web-secret and web-runner gone from west",
        || {
            let (west, east, samples) = (west.clone(), east.clone(), samples.clone());
            async move {
                let (w, e) = (holdings(&west).await?, holdings(&east).await?);
                let mut samples = samples.lock().expect("samples");
                for (cluster, held) in [("west", &w), ("east", &e)] {
                    if let Some(what) = broken(held) {
                        samples.violations.push(format!("{cluster}: {what}"));
                    }
                }
                samples.count += 1;
                let done = has(&e, "Deployment web")
                    && has(&e, "ConfigMap web-config")
                    && has(&e, "Secret web-secret")
                    && has(&e, "ServiceAccount web-runner")
                    && !has(&w, "Deployment web")
                    && !has(&w, "Secret web-secret")
                    && !has(&w, "ServiceAccount web-runner");
                Ok(if done {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("west {w:?} east {e:?}"))
                })
            }
        },
    )
    .await?;
    {
        let samples = samples.lock().expect("samples");
        ensure!(
            samples.violations.is_empty(),
            "copies without their dependencies: {:?}",
            samples.violations
        );
        ensure!(samples.count > 1, "the move was sampled once only");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let w = holdings(&west).await?;
    ensure!(
        w.contains(&("ConfigMap web-config".into(), true)) && has(&w, "Deployment api"),
        "the shared ConfigMap must stay on west while api runs there: {w:?}"
    );

    // 4. api is deleted: its last user gone from west, the ConfigMap goes;
    // east keeps it for web.
    deployments.delete("api", &DeleteParams::default()).await?;
    until("web-config removed from west", || async {
        let w = holdings(&west).await?;
        Ok(
            match has(&w, "ConfigMap web-config") || has(&w, "Deployment api") {
                false => Poll::Ready(()),
                true => Poll::Pending(format!("{w:?}")),
            },
        )
    })
    .await?;
    let e = holdings(&east).await?;
    ensure!(broken(&e).is_none() && has(&e, "Deployment web"), "{e:?}");

    // The hand-made pull Secrets were never touched.
    for (cluster, client, version) in [("west", &west, &pull_west), ("east", &east, &pull_east)] {
        let api: Api<Secret> = Api::namespaced(client.clone(), NS);
        let pull = api.get("pull").await?;
        ensure!(
            pull.metadata.resource_version.as_ref() == Some(version),
            "tmc changed the hand-made Secret on {cluster}"
        );
    }
    Ok(())
}
