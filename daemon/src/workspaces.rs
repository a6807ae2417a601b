//! Where the placement controllers read and write workloads and placements:
//! the control plane's own workspace, or, with `[control_plane] export`,
//! every workspace bound to tmc's APIExport, through the export's virtual
//! workspace (issue 12, `docs/tenancy.md`).
//!
//! In export mode one wildcard client on `<endpoint>/clusters/*` feeds every
//! watch, whatever the number of bound workspaces; each object is mapped for
//! the stores ([`tmc_api::tenancy::map_for_store`]: its namespace becomes
//! `<logical cluster>|<namespace>`), so two workspaces' `default/web` are two
//! objects, and every write is routed back ([`Workspaces::route`]) to
//! `<endpoint>/clusters/<logical cluster>` with the real namespace. A write
//! whose object names no workspace fails instead of reaching another one.
//! SyncTargets, the Lease and the CRDs stay in the inventory workspace, the
//! one `control_plane.workspace` names.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, Resource};
use tmc_api::tenancy::{self, LogicalCluster, TenancyError, WorkloadKey};

use crate::config::Config;
use crate::fence::Fence;
use crate::kubeconn;
use crate::watch_count::OpenWatches;

/// How often tmcd says it still waits for the export's virtual workspace URL.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(15);
/// How often the APIExportEndpointSlice is read while its URL is not published.
const WAIT_POLL: Duration = Duration::from_secs(1);

/// The workspaces the placement controllers serve; clones share the clients.
#[derive(Clone)]
pub enum Workspaces {
    /// The control plane's own workspace: objects are stored and written as served.
    One,
    /// Every workspace bound to tmc's APIExport.
    Bound(Arc<Bound>),
}

/// The export's virtual workspace and the clients on it.
pub struct Bound {
    export: String,
    wildcard: Client,
    /// The fenced client of the endpoint itself, whose connections every
    /// logical cluster's client shares ([`kubeconn::in_cluster`]).
    writer: Client,
    /// One client per logical cluster written to, built on first use.
    clusters: Mutex<HashMap<LogicalCluster, Client>>,
}

/// Why a write could not be routed to a workspace.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Key(#[from] TenancyError),
    #[error(
        "{0:?} names no workspace: objects read through tmc's export carry the kcp.io/cluster annotation, this one did not"
    )]
    Unscoped(String),
}

impl Workspaces {
    /// The workspaces `config` asks for: with `control_plane.export`, waits
    /// until the export's APIExportEndpointSlice in the inventory workspace
    /// (read with `inventory`) publishes its URL, which kcp does once a
    /// workspace binds the export. The writes of the clients it builds go
    /// through `fence`.
    pub async fn connect(
        config: &Config,
        inventory: &Client,
        fence: &Fence,
        watches: &OpenWatches,
    ) -> Result<Self> {
        let Some(export) = &config.control_plane.export else {
            return Ok(Self::One);
        };
        let export = export.get_ref().clone();
        let published = endpoint_url(inventory, &export).await?;
        let endpoint = match &config.control_plane.virtual_workspace_server {
            Some(server) => {
                let endpoint = through(&published, server.get_ref())?;
                tracing::info!(export = %export, %published, %endpoint, "reaching the export's virtual workspace through control_plane.virtual_workspace_server");
                endpoint
            }
            None => published,
        };
        let base = kubeconn::control_plane_config(config).await?;
        let url = format!("{endpoint}/clusters/*");
        let wildcard = kubeconn::client_at(&base, Some(&url), None, watches)
            .context("connecting to the export's virtual workspace")?;
        let writer = kubeconn::client_at(&base, Some(&endpoint), Some(fence), watches)
            .context("connecting to the export's virtual workspace")?;
        tracing::info!(export = %export, endpoint = %endpoint, "placing the workloads of every workspace bound to the export, one wildcard watch per resource");
        Ok(Self::Bound(Arc::new(Bound {
            export,
            wildcard,
            writer,
            clusters: Mutex::new(HashMap::new()),
        })))
    }

    /// Whether objects come from many workspaces (export mode).
    pub fn is_bound(&self) -> bool {
        matches!(self, Self::Bound(_))
    }

    /// The client the workload, placement and namespace watches use:
    /// `inventory` for one workspace, the wildcard client in export mode.
    pub fn watch_client(&self, inventory: &Client) -> Client {
        match self {
            Self::One => inventory.clone(),
            Self::Bound(bound) => bound.wildcard.clone(),
        }
    }

    /// Maps an object of a watch for the stores (see the module docs); a
    /// no-op for one workspace. An object whose `kcp.io/cluster` cannot be
    /// read stays unmapped, so no write can be routed for it.
    pub fn map_for_store<K: Resource>(&self, object: &mut K) {
        if let Self::Bound(bound) = self
            && let Err(err) = tenancy::map_for_store(object.meta_mut())
        {
            tracing::warn!(export = %bound.export, object = ?object.meta().name, error = %err, "an object of the export's virtual workspace names no valid logical cluster; not placed");
        }
    }

    /// `object` as its workspace serves it: with its real namespace in
    /// export mode (what policies see and system-namespace checks read);
    /// itself for one workspace.
    pub fn as_served<'a, K: Resource + Clone>(&self, object: &'a K) -> Cow<'a, K> {
        let Self::Bound(_) = self else {
            return Cow::Borrowed(object);
        };
        let namespace = object.meta().namespace.as_deref();
        match WorkloadKey::from_store(namespace, "") {
            Ok(key) if key.cluster.is_some() => {
                let mut served = object.clone();
                served.meta_mut().namespace = key.namespace;
                Cow::Owned(served)
            }
            _ => Cow::Borrowed(object),
        }
    }

    /// The client and real namespace to write an object stored under
    /// `namespace` with: `work` (the leader's fenced client) and the same
    /// namespace for one workspace; in export mode the fenced client of the
    /// object's logical cluster and its namespace there.
    pub fn route(
        &self,
        work: &Client,
        namespace: Option<&str>,
    ) -> Result<(Client, Option<String>), RouteError> {
        let Self::Bound(bound) = self else {
            return Ok((work.clone(), namespace.map(str::to_owned)));
        };
        let key = WorkloadKey::from_store(namespace, "")?;
        let cluster = key
            .cluster
            .ok_or_else(|| RouteError::Unscoped(namespace.unwrap_or_default().to_owned()))?;
        Ok((bound.client_for(&cluster), key.namespace))
    }

    /// The API of `ar` for an object stored under `namespace` (see [`Self::route`]).
    pub fn dynamic_api(
        &self,
        work: &Client,
        ar: &ApiResource,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, RouteError> {
        let (client, namespace) = self.route(work, namespace)?;
        Ok(match namespace {
            Some(ns) => Api::namespaced_with(client, &ns, ar),
            None => Api::all_with(client, ar),
        })
    }
}

impl Workspaces {
    /// tmcd's clients of the export's virtual workspace, which push syncers
    /// read the workloads through (see `crate::syncers`); `None` for one
    /// workspace (they use the control plane's client).
    pub fn for_syncers(&self) -> Option<Arc<Bound>> {
        match self {
            Self::One => None,
            Self::Bound(bound) => Some(bound.clone()),
        }
    }
}

impl Bound {
    /// The client whose lists and watches span every bound workspace
    /// (`<endpoint>/clusters/*`), for reads only.
    pub fn wildcard(&self) -> Client {
        self.wildcard.clone()
    }

    /// The fenced client of `cluster` (`<endpoint>/clusters/<cluster>`), on
    /// the connections every workspace's client shares.
    pub fn client_for(&self, cluster: &LogicalCluster) -> Client {
        self.clusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(cluster.clone())
            .or_insert_with(|| kubeconn::in_cluster(&self.writer, cluster.as_str()))
            .clone()
    }
}

/// The URL of `export`'s virtual workspace, read from its
/// APIExportEndpointSlice; waits (saying so every [`WAIT_LOG_EVERY`]) while
/// the slice is missing or publishes no URL yet.
async fn endpoint_url(inventory: &Client, export: &str) -> Result<String> {
    let gvk = GroupVersionKind::gvk("apis.kcp.io", "v1alpha1", "APIExportEndpointSlice");
    let ar = ApiResource::from_gvk(&gvk);
    let slices: Api<DynamicObject> = Api::all_with(inventory.clone(), &ar);
    let started = Instant::now();
    let mut said = started;
    loop {
        let why = match slices.get_opt(export).await {
            Ok(Some(slice)) => match slice_urls(&slice).as_slice() {
                [] => "its status.endpoints is empty: kcp publishes the URL once a workspace binds the export (fix: bind it, e.g. `kubectl kcp bind apiexport <inventory>:<export>` in a tenant workspace)".to_string(),
                [first, rest @ ..] => {
                    if !rest.is_empty() {
                        tracing::warn!(export, endpoints = rest.len() + 1, "the export has several endpoints (a sharded kcp); only the first is served");
                    }
                    return Ok(first.trim_end_matches('/').to_owned());
                }
            },
            Ok(None) => format!("no APIExportEndpointSlice {export:?} in the workspace (fix: create tmc's APIExport {export:?} there; kcp then creates its endpoint slice)"),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                "the control plane serves no APIExportEndpointSlices (fix: control_plane.export needs kcp; remove it for a plain Kubernetes API server)".to_string()
            }
            Err(err) => format!("reading the APIExportEndpointSlice failed: {err}"),
        };
        if said.elapsed() >= WAIT_LOG_EVERY || said == started {
            tracing::warn!(export, waited = ?started.elapsed(), reason = %why, "waiting for the export's virtual workspace URL");
            said = Instant::now();
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// `published` (a virtual workspace URL kcp published) with its scheme, host
/// and port replaced by those of `server` (`control_plane.virtual_workspace_server`),
/// its path kept.
fn through(published: &str, server: &str) -> Result<String> {
    let uri: http::Uri = published.parse().with_context(|| {
        format!("the export's virtual workspace URL {published:?} is not a URL")
    })?;
    let path = uri.path_and_query().map_or("", |pq| pq.as_str());
    Ok(format!(
        "{}{}",
        server.trim_end_matches('/'),
        path.trim_end_matches('/')
    ))
}

/// The `status.endpoints[].url` of an APIExportEndpointSlice.
fn slice_urls(slice: &DynamicObject) -> Vec<String> {
    slice.data["status"]["endpoints"]
        .as_array()
        .map(|endpoints| {
            endpoints
                .iter()
                .filter_map(|e| e["url"].as_str())
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(status: serde_json::Value) -> DynamicObject {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apis.kcp.io",
            "v1alpha1",
            "APIExportEndpointSlice",
        ));
        let mut slice = DynamicObject::new("tmc", &ar);
        slice.data = json!({ "status": status });
        slice
    }

    #[test]
    fn the_slice_urls_are_read_in_order_and_empty_ones_skipped() {
        assert!(slice_urls(&slice(json!({}))).is_empty());
        assert!(slice_urls(&slice(json!({"endpoints": []}))).is_empty());
        let urls = slice_urls(&slice(json!({"endpoints": [
            {"url": ""},
            {"url": "https://kcp:6443/services/apiexport/abc/tmc"},
            {"url": "https://shard2/services/apiexport/abc/tmc"},
        ]})));
        assert_eq!(
            urls,
            [
                "https://kcp:6443/services/apiexport/abc/tmc",
                "https://shard2/services/apiexport/abc/tmc"
            ]
        );
    }

    #[test]
    fn the_published_url_is_reached_through_the_configured_server_with_its_path_kept() {
        let published = "https://shard-1.kcp.internal:6443/services/apiexport/abc/tmc";
        for server in ["https://front.example.com", "https://front.example.com/"] {
            assert_eq!(
                through(published, server).expect("rebased"),
                "https://front.example.com/services/apiexport/abc/tmc"
            );
        }
        assert_eq!(
            through(published, "http://127.0.0.1:40123").expect("rebased"),
            "http://127.0.0.1:40123/services/apiexport/abc/tmc"
        );
        assert!(through("not a url", "https://front.example.com").is_err());
    }

    #[tokio::test]
    async fn one_workspace_routes_writes_as_stored() {
        let client = fake_client();
        let (_, ns) = Workspaces::One
            .route(&client, Some("default"))
            .expect("routed");
        assert_eq!(ns.as_deref(), Some("default"));
        let mut object = web_of_a1();
        Workspaces::One.map_for_store(&mut object);
        assert_eq!(object.metadata.namespace.as_deref(), Some("default"));
    }

    #[tokio::test]
    async fn export_mode_routes_each_object_to_its_workspace_and_refuses_unscoped_ones() {
        let bound = Workspaces::Bound(Arc::new(Bound {
            export: "tmc".into(),
            wildcard: fake_client(),
            writer: fake_client(),
            clusters: Mutex::new(HashMap::new()),
        }));
        let mut object = web_of_a1();
        bound.map_for_store(&mut object);
        assert_eq!(object.metadata.namespace.as_deref(), Some("a1|default"));
        assert_eq!(
            bound.as_served(&object).metadata.namespace.as_deref(),
            Some("default")
        );
        let work = fake_client();
        let (_, ns) = bound
            .route(&work, object.metadata.namespace.as_deref())
            .expect("routed");
        assert_eq!(ns.as_deref(), Some("default"));
        let (_, ns) = bound.route(&work, Some("a1|")).expect("cluster-scoped");
        assert_eq!(ns, None);
        let Workspaces::Bound(inner) = &bound else {
            unreachable!()
        };
        assert_eq!(inner.clusters.lock().expect("lock").len(), 1);
        for unscoped in [Some("default"), None] {
            let Err(err) = bound.route(&work, unscoped) else {
                panic!("{unscoped:?} was routed");
            };
            assert!(err.to_string().contains("names no workspace"), "{err}");
        }
    }

    /// `default/web` as the wildcard watch serves it from logical cluster `a1`.
    fn web_of_a1() -> DynamicObject {
        let mut object = DynamicObject::new(
            "web",
            &ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        )
        .within("default");
        object
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(tenancy::CLUSTER_ANNOTATION.into(), "a1".into());
        object
    }

    /// A client that is never called.
    fn fake_client() -> Client {
        let service = tower::service_fn(|_: http::Request<kube::client::Body>| async {
            Err::<http::Response<kube::client::Body>, tower::BoxError>("no server".into())
        });
        Client::new(service, "default")
    }
}
