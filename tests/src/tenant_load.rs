//! Load on a bed in tenant form ([`crate::testbed::tenants`]), for tmcd's tenancy benchmark
//! (`daemon/benches/tenants_scale.rs`, issue 12): many tenant workspaces bound at a bounded concurrency, a
//! SyncTargetGrant per tenant, and tmc's copies counted on a physical cluster.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::json;

use crate::testbed::kcp::Kcp;
use crate::testbed::tenants::{self, Tenant};
use crate::testbed::wait::{self, Poll};

/// The label tmc's copies carry on a physical cluster (`tmc_api::decision::MANAGED_LABEL`).
pub const MANAGED_LABEL: &str = "workload.kcp.io/managed";

/// Binds a workspace `root:teams:<name>` to tmc's export for each of `names`, `concurrency` at a time (see
/// [`tenants::bind_tenant`]; the export must be published, as a bed built with tenants has it). Returns the
/// tenants in the order of `names` and how long binding them all took.
pub async fn bind_tenants(
    kcp: &Kcp,
    names: &[String],
    concurrency: usize,
) -> Result<(Vec<Tenant>, Duration)> {
    let started = Instant::now();
    let mut bound: Vec<(usize, Tenant)> = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| async move {
            let tenant = tenants::bind_tenant(kcp, name)
                .await
                .with_context(|| format!("binding tenant {name}"))?;
            Ok::<_, anyhow::Error>((i, tenant))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    bound.sort_by_key(|(i, _)| *i);
    Ok((
        bound.into_iter().map(|(_, t)| t).collect(),
        started.elapsed(),
    ))
}

/// Grants every SyncTarget to the workspace of `logical_cluster`: SyncTargetGrant `name` in the inventory
/// workspace (`inventory` is a client of it), server-side applied, retried until tmcd has installed the grant
/// CRD (it does at start in export mode) or `timeout` passes.
pub async fn grant_all_targets(
    inventory: &kube::Client,
    name: &str,
    logical_cluster: &str,
    timeout: Duration,
) -> Result<()> {
    let gvk = GroupVersionKind::gvk("workload.kcp.io", "v1alpha1", "SyncTargetGrant");
    let grants: Api<DynamicObject> = Api::all_with(
        inventory.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "synctargetgrants"),
    );
    let body = json!({
        "apiVersion": "workload.kcp.io/v1alpha1",
        "kind": "SyncTargetGrant",
        "metadata": {"name": name},
        "spec": {"workspaces": [logical_cluster]},
    });
    let what = format!("SyncTargetGrant {name} (every target to {logical_cluster}) applied");
    wait::until(&what, timeout, Duration::from_millis(500), || {
        let (grants, body) = (grants.clone(), &body);
        async move {
            Ok(
                match grants
                    .patch(
                        name,
                        &PatchParams::apply("tenant-load").force(),
                        &Patch::Apply(body),
                    )
                    .await
                {
                    Ok(_) => Poll::Ready(()),
                    Err(e) => Poll::Pending(format!("{e}")),
                },
            )
        }
    })
    .await
}

/// tmc's copies (Deployments labelled [`MANAGED_LABEL`]) on a cluster, in `namespace` or in every namespace.
pub async fn managed_copies(client: &kube::Client, namespace: Option<&str>) -> Result<usize> {
    let api: Api<Deployment> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api
        .list(&ListParams::default().labels(&format!("{MANAGED_LABEL}=true")))
        .await
        .context("listing tmc's copies")?;
    Ok(list.items.len())
}

/// Deletes every Deployment in `namespace` through `client`, `concurrency` at a time (one DELETE each: a
/// DELETE of the whole collection of a thousand objects that carry finalizers outlasts the client's timeout on
/// kcp). Returns how many were deleted.
pub async fn delete_deployments(
    client: &kube::Client,
    namespace: &str,
    concurrency: usize,
) -> Result<usize> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let names: Vec<String> = api
        .list_metadata(&ListParams::default())
        .await
        .with_context(|| format!("listing Deployments in {namespace}"))?
        .items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    let n = names.len();
    futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                match api.delete(&name, &Default::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => {
                        Err(e).with_context(|| format!("deleting Deployment {namespace}/{name}"))
                    }
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(n)
}
