//! What tmcd's integration tests and benchmarks set up the same way on a bed
//! with clusters `west` and `east`: the `tmc.toml` that points at it, and
//! policy modules installed into a policy directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::testbed::TestBed;
use crate::testbed::binaries::repo_root;

/// A `tmc.toml` for `bed`: the workspace `root:tmc` as control plane, `west`
/// (region `us-west`) and `east` (region `us-east`) as push clusters, then
/// `sections` verbatim (`[sync]`, `[policies]`, ... as the caller needs them).
pub fn tmc_toml(bed: &TestBed, synced_from: &str, sections: &str) -> Result<String> {
    tmc_toml_with(bed, synced_from, &bed.kubeconfig_path("kcp")?, "", sections)
}

/// Like [`tmc_toml`], with tmcd in export mode (issue 12, `docs/tenancy.md`): `[control_plane] export =
/// "<export>"`, the APIExport of the workspace `root:tmc` (the inventory, where the SyncTargets stay) whose
/// virtual workspace serves the workloads and placements of every tenant workspace bound to it. For a bed
/// built with [`TestBedBuilder::tenants`](crate::testbed::TestBedBuilder::tenants), `export` is
/// [`tenants::EXPORT`](crate::testbed::tenants::EXPORT).
pub fn tmc_toml_export(
    bed: &TestBed,
    synced_from: &str,
    export: &str,
    sections: &str,
) -> Result<String> {
    tmc_toml_with(
        bed,
        synced_from,
        &bed.kubeconfig_path("kcp")?,
        &format!("export = {export:?}\n"),
        sections,
    )
}

/// Like [`tmc_toml_export`], with tmcd reaching kcp only through `server` (`https://<host:port>`, e.g. a
/// [`TcpProxy`](crate::testbed::proxy::TcpProxy) before kcp): its control-plane kubeconfig is the bed's with
/// kcp's URL replaced by `server`, written into `dir`, and `[control_plane] virtual_workspace_server` is `server`,
/// so the export's virtual workspace (whose URL kcp publishes with its own address) is reached through it too.
pub fn tmc_toml_export_via(
    bed: &TestBed,
    synced_from: &str,
    export: &str,
    server: &str,
    dir: &Path,
    sections: &str,
) -> Result<String> {
    let direct = bed.kubeconfig_path("kcp")?;
    let via = dir.join("kcp-via-server.kubeconfig");
    let text = std::fs::read_to_string(&direct)
        .with_context(|| format!("reading {}", direct.display()))?;
    std::fs::write(&via, text.replace(&bed.kcp()?.base_url(), server))
        .with_context(|| format!("writing {}", via.display()))?;
    tmc_toml_with(
        bed,
        synced_from,
        &via,
        &format!("export = {export:?}\nvirtual_workspace_server = {server:?}\n"),
        sections,
    )
}

/// [`tmc_toml`] with the control plane's kubeconfig `kcp` and `control_plane` (whole `key = value` lines) added to
/// its `[control_plane]` section.
fn tmc_toml_with(
    bed: &TestBed,
    synced_from: &str,
    kcp: &Path,
    control_plane: &str,
    sections: &str,
) -> Result<String> {
    let west = bed.kubeconfig_path("west")?;
    let east = bed.kubeconfig_path("east")?;
    Ok(format!(
        r#"synced_from = "{synced_from}"

[control_plane]
kubeconfig = "{}"
workspace = "root:tmc"
{control_plane}
[[clusters]]
name = "west"
kubeconfig = "{}"
region = "us-west"
zone = "us-west-1a"

[[clusters]]
name = "east"
kubeconfig = "{}"
region = "us-east"
zone = "us-east-1a"

{sections}"#,
        kcp.display(),
        west.display(),
        east.display()
    ))
}

/// The example policy `target/policies/<built>.wasm`, built by `hack/build-policies.sh`.
pub fn built_policy(built: &str) -> Result<PathBuf> {
    let src = repo_root()
        .join("target/policies")
        .join(format!("{built}.wasm"));
    if !src.is_file() {
        bail!(
            "{} is missing (fix: run hack/build-policies.sh)",
            src.display()
        );
    }
    Ok(src)
}

/// Installs the built policy `target/policies/<built>.wasm` as
/// `<policy_dir>/<name>.wasm`: written under a temporary name, then renamed,
/// so a watcher never sees half a file. Returns the instant just before the
/// rename (what a hot-reload measurement starts from).
pub fn install_policy(policy_dir: &Path, built: &str, name: &str) -> Result<Instant> {
    let src = built_policy(built)?;
    let tmp = policy_dir.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
    let at = Instant::now();
    std::fs::rename(&tmp, policy_dir.join(format!("{name}.wasm")))
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(at)
}

/// Creates or updates the ClusterWorkloadPlacement `name` with `spec`
/// (server-side apply as `manager`).
pub async fn apply_placement(
    client: &kube::Client,
    manager: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<()> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let gvk = GroupVersionKind::gvk("workload.kcp.io", "v1alpha1", "ClusterWorkloadPlacement");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "clusterworkloadplacements");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let body = serde_json::json!({
        "apiVersion": "workload.kcp.io/v1alpha1",
        "kind": "ClusterWorkloadPlacement",
        "metadata": {"name": name},
        "spec": spec,
    });
    api.patch(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await
    .with_context(|| format!("applying placement {name}"))?;
    Ok(())
}

/// A Deployment `namespace/name` of `replicas` pods (image never pulled: kwok
/// runs the pods), labelled `app=<name>` plus `labels`, annotated `annotations`.
pub fn deployment(
    namespace: &str,
    name: &str,
    replicas: i32,
    labels: serde_json::Value,
    annotations: serde_json::Value,
) -> Result<k8s_openapi::api::apps::v1::Deployment> {
    let mut all_labels = serde_json::json!({ "app": name });
    if let (Some(all), Some(extra)) = (all_labels.as_object_mut(), labels.as_object()) {
        all.extend(extra.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": all_labels, "annotations": annotations,
        },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] },
            },
        },
    }))
    .with_context(|| format!("building Deployment {namespace}/{name}"))
}
