//! The kcp mechanism tmcd's multi-tenant mode stands on (issue 12), on the real bed: tmc's APIExport in
//! `root:tmc`, tenant workspaces `root:teams:a` and `root:teams:b` bound to it, and one client on the export's
//! virtual workspace.
//!
//! - One wildcard LIST and one WATCH request (`<endpoint>/clusters/*`) per resource see the objects of every
//!   bound workspace, told apart by the `kcp.io/cluster` annotation.
//! - A write through `<endpoint>/clusters/<logical cluster>` lands in that workspace only.
//! - A workspace bound while the watch runs shows up in the same watch request (no relist, no new watch).
//!
//! Checked for an exported resource (Deployments, an APIResourceSchema) and a claimed one (ConfigMaps).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tmc_tests::testbed::TestBed;
use tmc_tests::testbed::tenants::CLUSTER_ANNOTATION;
use tmc_tests::testbed::wait::{self, Poll};

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// `(logical cluster, namespace, name)` of an object seen through the virtual workspace.
type Seen = (String, String, String);

fn key_of<K: Resource>(object: &K) -> Seen {
    (
        object
            .annotations()
            .get(CLUSTER_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        object.namespace().unwrap_or_default(),
        object.name_any(),
    )
}

/// One WATCH request, its events recorded as they come; it is never restarted.
struct OneWatch {
    seen: Arc<Mutex<BTreeSet<Seen>>>,
    ended: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OneWatch {
    /// Watches `api` from `resource_version` with a single request.
    async fn start<K>(api: Api<K>, resource_version: &str) -> Result<Self>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let stream = api
            .watch(&WatchParams::default().timeout(290), resource_version)
            .await
            .context("starting the wildcard watch")?;
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let ended = Arc::new(Mutex::new(None));
        let (seen_w, ended_w) = (seen.clone(), ended.clone());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let reason = loop {
                match stream.next().await {
                    Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                        seen_w.lock().expect("lock").insert(key_of(&o));
                    }
                    Some(Ok(WatchEvent::Deleted(_) | WatchEvent::Bookmark(_))) => {}
                    Some(Ok(WatchEvent::Error(e))) => break format!("watch error event: {e:?}"),
                    Some(Err(e)) => break format!("watch stream error: {e}"),
                    None => break "the server ended the watch".to_owned(),
                }
            };
            *ended_w.lock().expect("lock") = Some(reason);
        });
        Ok(Self { seen, ended, task })
    }

    /// Waits until this watch has delivered `(cluster, namespace, name)`; fails if the watch ended first.
    async fn wait_for(&self, cluster: &str, namespace: &str, name: &str) -> Result<()> {
        let key: Seen = (cluster.into(), namespace.into(), name.into());
        let what = format!(
            "the wildcard watch to deliver {namespace}/{name} of logical cluster {cluster}"
        );
        wait::until(&what, TIMEOUT, POLL, || {
            let (seen, ended, key) = (self.seen.clone(), self.ended.clone(), key.clone());
            async move {
                if let Some(reason) = ended.lock().expect("lock").clone() {
                    bail!("the watch ended before: {reason}");
                }
                let seen = seen.lock().expect("lock");
                Ok(if seen.contains(&key) {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("seen so far: {seen:?}"))
                })
            }
        })
        .await
    }
}

impl Drop for OneWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn deployment(name: &str) -> Result<Deployment> {
    tmc_tests::fixtures::deployment(
        "default",
        name,
        1,
        serde_json::json!({}),
        serde_json::json!({}),
    )
}

fn config_map(name: &str, value: &str) -> Result<ConfigMap> {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "namespace": "default" },
        "data": { "value": value },
    }))
    .context("building a ConfigMap")
}

/// The wildcard LIST of `api`: what it sees, and its resourceVersion to watch from.
async fn wildcard_list<K>(api: &Api<K>) -> Result<(BTreeSet<Seen>, String)>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = api
        .list(&ListParams::default())
        .await
        .context("wildcard LIST")?;
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    if rv.is_empty() {
        bail!("the wildcard LIST returned no resourceVersion to watch from");
    }
    Ok((list.items.iter().map(key_of).collect(), rv))
}

#[tokio::test]
async fn one_wildcard_watch_serves_every_bound_workspace() -> Result<()> {
    let mut bed = TestBed::builder().tenants(["a", "b"]).start().await?;
    let kcp = bed.kcp()?;
    let tenants = bed.tenants()?.clone();
    let (a, b) = (tenants.tenant("a")?.clone(), tenants.tenant("b")?.clone());
    assert_ne!(a.logical_cluster, b.logical_cluster);
    let everywhere = tenants.endpoint_client(kcp, "*").await?;
    let client_a = tenants.tenant_client(kcp, "a").await?;
    let client_b = tenants.tenant_client(kcp, "b").await?;

    // Exported: Deployments. The same default/web in both tenants.
    let all_deployments: Api<Deployment> = Api::all(everywhere.clone());
    let (_, rv) = wildcard_list(&all_deployments).await?;
    let deployments = OneWatch::start(all_deployments.clone(), &rv).await?;
    for client in [&client_a, &client_b] {
        Api::<Deployment>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &deployment("web")?)
            .await
            .context("creating default/web in a tenant workspace")?;
    }
    for tenant in [&a, &b] {
        deployments
            .wait_for(&tenant.logical_cluster, "default", "web")
            .await?;
    }
    let (listed, _) = wildcard_list(&all_deployments).await?;
    let expected: BTreeSet<Seen> = [&a, &b]
        .iter()
        .map(|t| (t.logical_cluster.clone(), "default".into(), "web".into()))
        .collect();
    assert_eq!(
        listed, expected,
        "the wildcard LIST shows each tenant's default/web once"
    );
    // A tenant sees its own web only, under its own logical cluster.
    let (own, _) = wildcard_list(&Api::<Deployment>::all(client_a.clone())).await?;
    assert_eq!(
        own,
        BTreeSet::from([(a.logical_cluster.clone(), "default".into(), "web".into())])
    );

    // A write through /clusters/<a> lands in a only.
    let only_a = tenants.endpoint_client(kcp, &a.logical_cluster).await?;
    Api::<Deployment>::namespaced(only_a, "default")
        .create(&PostParams::default(), &deployment("via-endpoint")?)
        .await
        .context("creating default/via-endpoint through the endpoint's /clusters/<a>")?;
    let in_a = Api::<Deployment>::namespaced(client_a.clone(), "default")
        .get_opt("via-endpoint")
        .await?;
    let in_b = Api::<Deployment>::namespaced(client_b.clone(), "default")
        .get_opt("via-endpoint")
        .await?;
    assert!(
        in_a.is_some() && in_b.is_none(),
        "written through /clusters/<a>: in a {}, in b {}",
        in_a.is_some(),
        in_b.is_some()
    );
    deployments
        .wait_for(&a.logical_cluster, "default", "via-endpoint")
        .await?;

    // Claimed: ConfigMaps, the same way.
    let all_config_maps: Api<ConfigMap> = Api::all(everywhere.clone());
    let (_, rv) = wildcard_list(&all_config_maps).await?;
    let config_maps = OneWatch::start(all_config_maps.clone(), &rv).await?;
    for (client, tenant) in [(&client_a, &a), (&client_b, &b)] {
        Api::<ConfigMap>::namespaced(client.clone(), "default")
            .create(
                &PostParams::default(),
                &config_map("settings", &tenant.name)?,
            )
            .await
            .context("creating default/settings in a tenant workspace")?;
        config_maps
            .wait_for(&tenant.logical_cluster, "default", "settings")
            .await?;
    }
    let only_b = tenants.endpoint_client(kcp, &b.logical_cluster).await?;
    let written = Api::<ConfigMap>::namespaced(only_b.clone(), "default")
        .create(&PostParams::default(), &config_map("via-endpoint", "b")?)
        .await
        .context("creating ConfigMap default/via-endpoint through the endpoint's /clusters/<b>")?;
    assert_eq!(
        written.annotations().get(CLUSTER_ANNOTATION),
        Some(&b.logical_cluster)
    );
    let in_a = Api::<ConfigMap>::namespaced(client_a.clone(), "default")
        .get_opt("via-endpoint")
        .await?;
    let in_b = Api::<ConfigMap>::namespaced(client_b.clone(), "default")
        .get_opt("via-endpoint")
        .await?;
    assert!(
        in_a.is_none() && in_b.is_some(),
        "ConfigMap written through /clusters/<b>: in a {}, in b {}",
        in_a.is_some(),
        in_b.is_some()
    );
    let value = Api::<ConfigMap>::namespaced(only_b, "default")
        .get("settings")
        .await?
        .data
        .and_then(|d| d.get("value").cloned());
    assert_eq!(
        value.as_deref(),
        Some("b"),
        "/clusters/<b> reads b's settings, not a's"
    );

    // A third workspace bound while both watches run shows up in the same watch requests.
    let c = bed.add_tenant("c").await?;
    let kcp = bed.kcp()?;
    let client_c = bed.tenants()?.tenant_client(kcp, "c").await?;
    Api::<Deployment>::namespaced(client_c.clone(), "default")
        .create(&PostParams::default(), &deployment("web")?)
        .await
        .context("creating default/web in tenant c")?;
    Api::<ConfigMap>::namespaced(client_c, "default")
        .create(&PostParams::default(), &config_map("settings", "c")?)
        .await
        .context("creating default/settings in tenant c")?;
    deployments
        .wait_for(&c.logical_cluster, "default", "web")
        .await?;
    config_maps
        .wait_for(&c.logical_cluster, "default", "settings")
        .await?;
    Ok(())
}
