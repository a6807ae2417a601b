//! Tenants: the bed's kcp in the inventory/tenant form of issue 12.
//!
//! The inventory workspace (the bed's workspace, `root:tmc`) holds tmc's [`EXPORT`] APIExport: the
//! APIResourceSchemas of `deployments.apps`, `services` and tmc's `clusterworkloadplacements`, and permission
//! claims ([`CLAIMS`]) on the built-in `configmaps`, `secrets`, `namespaces` and `events` (core and
//! `events.k8s.io`: tmcd publishes Events about a workload in the workload's own workspace). Each tenant `<name>`
//! is workspace `root:teams:<name>` with an APIBinding to that export accepting every claim. One client on the
//! export's virtual workspace (the URL of its APIExportEndpointSlice, with `/clusters/*`) then lists and watches
//! the exported and claimed resources of every bound workspace at once; see `docs/tenancy.md`.
//!
//! kcp v0.28 serves no Services of its own, and a claim on a resource that is not built in must name the
//! identity of the export that provides it ("identityHash is required for API types that are not built-in"),
//! so Services are exported as a schema, as kcp TMC's `kubernetes` export did.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use super::kcp::{self, Kcp};
use super::kubeconfig::{self, Ca, Entry};
use super::progress;
use super::wait::{self, Poll};

/// Name of tmc's APIExport (and of its APIExportEndpointSlice and of every tenant's APIBinding).
pub const EXPORT: &str = "tmc";

/// The workspace under which every tenant workspace is created.
pub const TEAMS_WORKSPACE: &str = "root:teams";

/// Prefix of the APIResourceSchema names (`<prefix>.<plural>.<group>`). Schemas are immutable in kcp: a
/// changed schema needs a new prefix on a kcp that keeps its data.
pub const SCHEMA_PREFIX: &str = "tmc1";

/// The built-in resources the export claims in every bound workspace: `(group, resource)`. Events are claimed in
/// both groups that serve them: a claim covers one group, and tmcd writes `events.k8s.io/v1` Events
/// (`daemon/src/placement/events.rs`), `kubectl describe` and older clients read core `v1` ones.
pub const CLAIMS: &[(&str, &str)] = &[
    ("", "configmaps"),
    ("", "secrets"),
    ("", "namespaces"),
    ("", "events"),
    ("events.k8s.io", "events"),
];

/// The annotation kcp puts on every object it serves, naming the object's logical cluster.
pub const CLUSTER_ANNOTATION: &str = "kcp.io/cluster";

const DEPLOYMENTS_CRD: &str = include_str!("crds/apps_deployments.yaml");
const PLACEMENTS_CRD: &str =
    include_str!("../../../config/crds/clusterworkloadplacements.workload.kcp.io.yaml");

const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);
const FIELD_MANAGER: &str = "tmc-testbed";

/// One tenant: a workspace bound to tmc's export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Tenant name, e.g. `a`.
    pub name: String,
    /// Its workspace path, `root:teams:<name>`.
    pub workspace: String,
    /// Its logical cluster name (what `kcp.io/cluster` says on its objects and what the virtual workspace's
    /// `/clusters/<name>` takes).
    pub logical_cluster: String,
}

/// tmc's export in the inventory workspace and the tenant workspaces bound to it.
#[derive(Debug, Clone)]
pub struct Tenants {
    inventory: String,
    endpoint: String,
    tenants: BTreeMap<String, Tenant>,
}

impl Tenants {
    /// Publishes tmc's export in `kcp`'s workspace (the inventory), then creates and binds a workspace for each
    /// of `names` (see [`bind_tenant`]) and waits until the export's virtual workspace URL is published.
    pub async fn set_up(kcp: &Kcp, names: &[String]) -> Result<Self> {
        validate_names(names)?;
        let inventory = kcp.workspace().to_owned();
        publish_export(kcp).await?;
        let mut tenants = BTreeMap::new();
        for name in names {
            let tenant = bind_tenant(kcp, name).await?;
            tenants.insert(name.clone(), tenant);
        }
        let endpoint = endpoint_url(kcp).await?;
        progress(&format!(
            "kcp export {inventory}:{EXPORT} bound by {:?}, virtual workspace {endpoint}",
            names
        ));
        Ok(Self {
            inventory,
            endpoint,
            tenants,
        })
    }

    /// The inventory workspace holding the export, e.g. `root:tmc`.
    pub fn inventory(&self) -> &str {
        &self.inventory
    }

    /// The URL of the export's virtual workspace (from its APIExportEndpointSlice), without `/clusters/...`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every tenant, by name.
    pub fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.values()
    }

    /// A tenant by name.
    pub fn tenant(&self, name: &str) -> Result<&Tenant> {
        self.tenants.get(name).ok_or_else(|| {
            anyhow!(
                "no tenant named {name:?} in this bed (tenants: {:?})",
                self.tenants.keys().collect::<Vec<_>>()
            )
        })
    }

    /// Records a tenant bound later (see [`bind_tenant`]).
    pub fn insert(&mut self, tenant: Tenant) {
        self.tenants.insert(tenant.name.clone(), tenant);
    }

    /// A client of the export's virtual workspace for `cluster`: `*` for every bound workspace at once (one
    /// wildcard list/watch per resource), or a tenant's logical cluster for reads and writes in it alone.
    pub async fn endpoint_client(&self, kcp: &Kcp, cluster: &str) -> Result<kube::Client> {
        client_at(kcp, &format!("{}/clusters/{cluster}", self.endpoint)).await
    }

    /// A client of the tenant's own workspace (what the tenant's users see).
    pub async fn tenant_client(&self, kcp: &Kcp, name: &str) -> Result<kube::Client> {
        workspace_client(kcp, &self.tenant(name)?.workspace).await
    }

    /// Writes a kubeconfig with a context per tenant workspace (named after its path, e.g. `root:teams:a`)
    /// and a context `tmc-export` on the virtual workspace across every tenant (`/clusters/*`).
    pub fn write_kubeconfig(&self, kcp: &Kcp, path: &Path) -> Result<()> {
        let (base, ca, token) = base_credentials(kcp.kubeconfig_path())?;
        let mut entries: Vec<Entry> = self
            .tenants
            .values()
            .map(|t| Entry {
                name: t.workspace.clone(),
                server: format!("{base}/clusters/{}", t.workspace),
                ca: Ca::Data(ca.clone()),
                token: token.clone(),
            })
            .collect();
        entries.push(Entry {
            name: "tmc-export".into(),
            server: format!("{}/clusters/*", self.endpoint),
            ca: Ca::Data(ca),
            token,
        });
        kubeconfig::write(path, &entries, "tmc-export")
    }
}

/// Creates workspace `root:teams:<name>` (and `root:teams` if missing), binds tmc's export there accepting
/// every claim, and waits until the binding is Bound and Deployments are served in it. The export must be
/// published ([`Tenants::set_up`] does). Works while anything watches the virtual workspace.
pub async fn bind_tenant(kcp: &Kcp, name: &str) -> Result<Tenant> {
    validate_names(&[name.to_owned()])?;
    let workspace = format!("{TEAMS_WORKSPACE}:{name}");
    let teams = workspace_client(kcp, TEAMS_WORKSPACE).await?;
    kcp::create_workspace(&kcp.owner_client("root").await?, &teams, TEAMS_WORKSPACE).await?;
    let client = workspace_client(kcp, &workspace).await?;
    kcp::create_workspace(
        &kcp.owner_client(TEAMS_WORKSPACE).await?,
        &client,
        &workspace,
    )
    .await?;
    let logical_cluster = logical_cluster(&teams, name).await?;

    let bindings: Api<DynamicObject> =
        Api::all_with(client.clone(), &apis_resource("v1alpha2", "APIBinding"));
    let body = binding(kcp.workspace());
    bindings
        .patch(
            EXPORT,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .with_context(|| format!("applying APIBinding {EXPORT} in {workspace}"))?;
    let what = format!("APIBinding {EXPORT} in {workspace} to be Bound");
    wait::until(&what, TIMEOUT, POLL, || {
        let bindings = bindings.clone();
        async move {
            let b = bindings
                .get(EXPORT)
                .await
                .context("reading the APIBinding")?;
            let phase = str_at(&b.data, "/status/phase");
            Ok(if phase == "Bound" {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("phase {phase:?}, {}", ready_message(&b.data)))
            })
        }
    })
    .await?;
    wait_served(&client, &workspace).await?;
    progress(&format!(
        "tenant {name}: workspace {workspace} (logical cluster {logical_cluster}) bound to {EXPORT}"
    ));
    Ok(Tenant {
        name: name.to_owned(),
        workspace,
        logical_cluster,
    })
}

/// Applies the APIResourceSchemas and the APIExport in `kcp`'s workspace (idempotent).
async fn publish_export(kcp: &Kcp) -> Result<()> {
    let client = workspace_client(kcp, kcp.workspace()).await?;
    let ws = kcp.workspace();
    let schemas: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &apis_resource("v1alpha1", "APIResourceSchema"),
    );
    let mut exported = Vec::new();
    for schema in export_schemas()? {
        let name = str_at(&schema, "/metadata/name").to_owned();
        schemas
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&schema),
            )
            .await
            .with_context(|| format!("applying APIResourceSchema {name} in {ws}"))?;
        exported.push(schema);
    }
    let exports: Api<DynamicObject> =
        Api::all_with(client, &apis_resource("v1alpha2", "APIExport"));
    exports
        .patch(
            EXPORT,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&export(&exported)),
        )
        .await
        .with_context(|| format!("applying APIExport {EXPORT} in {ws}"))?;
    Ok(())
}

/// Waits until the APIExportEndpointSlice of the export publishes a URL (kcp does once a workspace binds it).
async fn endpoint_url(kcp: &Kcp) -> Result<String> {
    let client = workspace_client(kcp, kcp.workspace()).await?;
    let slices: Api<DynamicObject> =
        Api::all_with(client, &apis_resource("v1alpha1", "APIExportEndpointSlice"));
    let what = format!(
        "APIExportEndpointSlice {EXPORT} in {} to publish a URL",
        kcp.workspace()
    );
    wait::until(&what, TIMEOUT, POLL, || {
        let slices = slices.clone();
        async move {
            let slice = match slices.get_opt(EXPORT).await {
                Ok(Some(s)) => s,
                Ok(None) => return Ok(Poll::Pending("no slice yet".into())),
                Err(e) => return Ok(Poll::Pending(format!("reading it: {e}"))),
            };
            Ok(match str_at(&slice.data, "/status/endpoints/0/url") {
                "" => Poll::Pending("no endpoints in its status".into()),
                url => Poll::Ready(url.to_owned()),
            })
        }
    })
    .await
}

/// The logical cluster of workspace `name`, read from its Workspace object in the parent (`spec.cluster`).
async fn logical_cluster(parent: &kube::Client, name: &str) -> Result<String> {
    let gvk = GroupVersionKind::gvk("tenancy.kcp.io", "v1alpha1", "Workspace");
    let workspaces: Api<DynamicObject> = Api::all_with(
        parent.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "workspaces"),
    );
    let ws = workspaces
        .get(name)
        .await
        .with_context(|| format!("reading workspace {name} in {TEAMS_WORKSPACE}"))?;
    match str_at(&ws.data, "/spec/cluster") {
        "" => bail!("workspace {name} in {TEAMS_WORKSPACE} has no spec.cluster although Ready"),
        cluster => Ok(cluster.to_owned()),
    }
}

/// Waits until Deployments (one of the export's schemas) can be listed in the tenant workspace.
async fn wait_served(client: &kube::Client, workspace: &str) -> Result<()> {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::all(client.clone());
    let what = format!("deployments.apps to be served in {workspace}");
    wait::until(&what, TIMEOUT, POLL, || {
        let deployments = deployments.clone();
        async move {
            Ok(
                match deployments.list(&ListParams::default().limit(1)).await {
                    Ok(_) => Poll::Ready(()),
                    Err(e) => Poll::Pending(format!("listing deployments: {e}")),
                },
            )
        }
    })
    .await
}

/// A client of kcp at `url` (any path) with the bed's admin credentials (context `base`).
pub async fn client_at(kcp: &Kcp, url: &str) -> Result<kube::Client> {
    let path = kcp.kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let options = KubeConfigOptions {
        context: Some("base".to_owned()),
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("loading context base of {}", path.display()))?;
    config.cluster_url = url
        .parse()
        .with_context(|| format!("parsing the URL {url}"))?;
    kube::Client::try_from(config).with_context(|| format!("building a client for {url}"))
}

/// A client of workspace `path` (e.g. `root:teams:a`) with the bed's admin credentials.
pub async fn workspace_client(kcp: &Kcp, path: &str) -> Result<kube::Client> {
    client_at(kcp, &format!("{}/clusters/{path}", kcp.base_url())).await
}

/// The APIResourceSchemas of the export: Deployments, Services and ClusterWorkloadPlacements.
pub fn export_schemas() -> Result<Vec<Value>> {
    let parse = |text: &str, what: &str| -> Result<CustomResourceDefinition> {
        serde_yaml::from_str(text).with_context(|| format!("parsing the embedded {what} CRD"))
    };
    Ok(vec![
        schema_from_crd(&parse(DEPLOYMENTS_CRD, "deployments.apps")?, SCHEMA_PREFIX)?,
        services_schema(SCHEMA_PREFIX),
        schema_from_crd(
            &parse(PLACEMENTS_CRD, "clusterworkloadplacements")?,
            SCHEMA_PREFIX,
        )?,
    ])
}

/// The APIResourceSchema `<prefix>.<crd name>` with the CRD's group, names, scope and versions, as kcp's
/// `kubectl kcp crd snapshot` makes it: each version's schema is its `openAPIV3Schema`. Names the API server
/// would default on a CRD are filled in (`listKind` = kind + `List`, `singular` = lowercase kind), since kcp
/// requires them on a schema.
pub fn schema_from_crd(crd: &CustomResourceDefinition, prefix: &str) -> Result<Value> {
    let crd_name = crd.metadata.name.as_deref().unwrap_or_default();
    let spec = &crd.spec;
    let mut names = serde_json::to_value(&spec.names)
        .with_context(|| format!("serializing {crd_name} names"))?;
    let kind = spec.names.kind.clone();
    if spec.names.list_kind.is_none() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    if spec.names.singular.is_none() {
        names["singular"] = json!(kind.to_lowercase());
    }
    let versions = spec
        .versions
        .iter()
        .map(|v| {
            let schema = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .ok_or_else(|| {
                    anyhow!(
                        "CRD {crd_name} version {} has no openAPIV3Schema; kcp needs one per version",
                        v.name
                    )
                })?;
            let mut out = json!({
                "name": v.name,
                "served": v.served,
                "storage": v.storage,
                "schema": schema,
            });
            if let Some(d) = v.deprecated {
                out["deprecated"] = json!(d);
            }
            if let Some(w) = &v.deprecation_warning {
                out["deprecationWarning"] = json!(w);
            }
            if let Some(s) = &v.subresources {
                out["subresources"] = serde_json::to_value(s)?;
            }
            if let Some(c) = &v.additional_printer_columns {
                out["additionalPrinterColumns"] = serde_json::to_value(c)?;
            }
            Ok(out)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIResourceSchema",
        "metadata": { "name": format!("{prefix}.{crd_name}") },
        "spec": {
            "group": spec.group,
            "names": names,
            "scope": spec.scope,
            "versions": versions,
        },
    }))
}

/// The core/v1 Service API as an APIResourceSchema `<prefix>.services.core`: the names, a `status`
/// subresource, and `spec`/`status` kept as given (no field validation; the physical cluster validates a copy).
pub fn services_schema(prefix: &str) -> Value {
    let open = json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true });
    json!({
        "apiVersion": "apis.kcp.io/v1alpha1",
        "kind": "APIResourceSchema",
        "metadata": { "name": format!("{prefix}.services.core") },
        "spec": {
            "group": "",
            "names": {
                "kind": "Service", "listKind": "ServiceList", "plural": "services", "singular": "service",
                "shortNames": ["svc"], "categories": ["all"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "type": "object", "properties": { "spec": open, "status": open } },
            }],
        },
    })
}

/// The APIExport [`EXPORT`] (apis.kcp.io/v1alpha2) of `schemas` with the [`CLAIMS`].
pub fn export(schemas: &[Value]) -> Value {
    let resources: Vec<Value> = schemas
        .iter()
        .map(|s| {
            json!({
                "group": s["spec"]["group"],
                "name": s["spec"]["names"]["plural"],
                "schema": s["metadata"]["name"],
                "storage": { "crd": {} },
            })
        })
        .collect();
    let claims: Vec<Value> = CLAIMS
        .iter()
        .map(|(group, resource)| json!({ "group": group, "resource": resource, "verbs": ["*"] }))
        .collect();
    json!({
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIExport",
        "metadata": { "name": EXPORT },
        "spec": { "resources": resources, "permissionClaims": claims },
    })
}

/// The APIBinding [`EXPORT`] (apis.kcp.io/v1alpha2) to the export in workspace `export_path`, accepting every
/// one of [`CLAIMS`] for all objects.
pub fn binding(export_path: &str) -> Value {
    let claims: Vec<Value> = CLAIMS
        .iter()
        .map(|(group, resource)| {
            json!({
                "group": group, "resource": resource, "verbs": ["*"],
                "selector": { "matchAll": true }, "state": "Accepted",
            })
        })
        .collect();
    json!({
        "apiVersion": "apis.kcp.io/v1alpha2",
        "kind": "APIBinding",
        "metadata": { "name": EXPORT },
        "spec": {
            "reference": { "export": { "path": export_path, "name": EXPORT } },
            "permissionClaims": claims,
        },
    })
}

pub(crate) fn validate_names(names: &[String]) -> Result<()> {
    for name in names {
        kcp::workspace_levels(&format!("{TEAMS_WORKSPACE}:{name}"))
            .with_context(|| format!("tenant name {name:?}"))?;
    }
    let mut sorted = names.to_vec();
    sorted.sort();
    if let Some(pair) = sorted.windows(2).find(|p| p[0] == p[1]) {
        bail!("tenant name {:?} is given twice", pair[0]);
    }
    Ok(())
}

/// A kcp `apis.kcp.io` resource at `version` (kcp v0.28 serves APIExport and APIBinding at `v1alpha2`,
/// APIResourceSchema and APIExportEndpointSlice at `v1alpha1`).
fn apis_resource(version: &str, kind: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("apis.kcp.io", version, kind);
    ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The message of the `Ready` condition, for wait errors.
fn ready_message(data: &Value) -> String {
    data.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| format!("Ready: {}", str_at(c, "/message")))
        .unwrap_or_else(|| "no Ready condition yet".into())
}

/// Server base URL (without `/clusters/...`), CA data and token of context `base` of the bed's kcp kubeconfig
/// (written by [`kubeconfig::write`]: context, cluster and user share the name).
fn base_credentials(path: &Path) -> Result<(String, String, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let field = |list: &str, inner: &str, key: &str| -> Result<String> {
        doc.get(list)
            .and_then(|l| l.as_sequence())
            .and_then(|l| {
                l.iter()
                    .find(|e| e.get("name").and_then(|n| n.as_str()) == Some("base"))
            })
            .and_then(|e| e.get(inner)?.get(key)?.as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("context base in {} has no {key}", path.display()))
    };
    Ok((
        field("clusters", "cluster", "server")?,
        field("clusters", "cluster", "certificate-authority-data")?,
        field("users", "user", "token")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployments_crd() -> CustomResourceDefinition {
        serde_yaml::from_str(DEPLOYMENTS_CRD).expect("parse")
    }

    #[test]
    fn deployment_schema_mirrors_the_crd() {
        let crd = deployments_crd();
        let schema = schema_from_crd(&crd, "p1").expect("schema");
        assert_eq!(schema["metadata"]["name"], "p1.deployments.apps");
        assert_eq!(schema["spec"]["group"], "apps");
        assert_eq!(schema["spec"]["scope"], "Namespaced");
        assert_eq!(schema["spec"]["names"]["listKind"], "DeploymentList");
        let v1 = &schema["spec"]["versions"][0];
        assert_eq!(
            (v1["name"].as_str(), v1["storage"].as_bool()),
            (Some("v1"), Some(true))
        );
        // The schema is the openAPIV3Schema itself, not wrapped in it.
        let original = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        assert_eq!(v1["schema"], serde_json::to_value(original).expect("json"));
        assert!(v1["schema"].get("openAPIV3Schema").is_none());
        assert_eq!(
            v1["subresources"]["scale"]["specReplicasPath"],
            ".spec.replicas"
        );
    }

    #[test]
    fn placement_schema_gets_the_names_kcp_requires() {
        let crd: CustomResourceDefinition = serde_yaml::from_str(PLACEMENTS_CRD).expect("parse");
        assert!(
            crd.spec.names.list_kind.is_none(),
            "the generated CRD leaves listKind to the server"
        );
        let schema = schema_from_crd(&crd, SCHEMA_PREFIX).expect("schema");
        assert_eq!(
            schema["metadata"]["name"],
            "tmc1.clusterworkloadplacements.workload.kcp.io"
        );
        assert_eq!(
            schema["spec"]["names"]["listKind"],
            "ClusterWorkloadPlacementList"
        );
        assert_eq!(schema["spec"]["scope"], "Cluster");
    }

    #[test]
    fn a_version_without_schema_is_refused_by_name() {
        let mut crd = deployments_crd();
        crd.spec.versions[0].schema = None;
        let err = schema_from_crd(&crd, "p").expect_err("no schema");
        assert!(format!("{err:#}").contains("deployments.apps version v1 has no openAPIV3Schema"));
    }

    #[test]
    fn export_lists_every_schema_and_claim() {
        let schemas = export_schemas().expect("schemas");
        let export = export(&schemas);
        let resources: Vec<(String, String, String)> = export["spec"]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| {
                (
                    str_at(r, "/group").to_owned(),
                    str_at(r, "/name").to_owned(),
                    str_at(r, "/schema").to_owned(),
                )
            })
            .collect();
        let expected = [
            ("apps", "deployments", "tmc1.deployments.apps"),
            ("", "services", "tmc1.services.core"),
            (
                "workload.kcp.io",
                "clusterworkloadplacements",
                "tmc1.clusterworkloadplacements.workload.kcp.io",
            ),
        ]
        .map(|(g, n, s)| (g.to_owned(), n.to_owned(), s.to_owned()));
        assert_eq!(resources, expected);
        let claimed: Vec<(&str, &str)> = export["spec"]["permissionClaims"]
            .as_array()
            .expect("claims")
            .iter()
            .map(|c| (str_at(c, "/group"), str_at(c, "/resource")))
            .collect();
        assert_eq!(
            claimed,
            [
                ("", "configmaps"),
                ("", "secrets"),
                ("", "namespaces"),
                ("", "events"),
                ("events.k8s.io", "events"),
            ]
        );
    }

    #[test]
    fn binding_accepts_exactly_the_exported_claims() {
        let binding = binding("root:tmc");
        assert_eq!(
            binding["spec"]["reference"]["export"],
            json!({"path": "root:tmc", "name": "tmc"})
        );
        let export = export(&[]);
        let claims = binding["spec"]["permissionClaims"]
            .as_array()
            .expect("claims");
        for (offered, accepted) in export["spec"]["permissionClaims"]
            .as_array()
            .expect("claims")
            .iter()
            .zip(claims)
        {
            for key in ["group", "resource", "verbs"] {
                assert_eq!(offered[key], accepted[key]);
            }
            assert_eq!(accepted["state"], "Accepted");
        }
        assert_eq!(claims.len(), CLAIMS.len());
    }

    #[test]
    fn tenant_names_must_be_workspace_names_once() {
        assert!(validate_names(&["a".into(), "team-b".into()]).is_ok());
        assert!(validate_names(&["A".into()]).is_err());
        assert!(validate_names(&["a".into(), "a".into()]).is_err());
    }
}
