//! The CRDs of tmc, generated from the types in `tmc_api::crd`: printed by
//! `tmcd crds`, committed in `config/crds/`, installed by tmcd at start.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt};
use tmc_api::crd::{ClusterWorkloadPlacement, SyncTarget, SyncTargetGrant};
use tmc_api::decision::FIELD_MANAGER;

/// Every CRD of tmc.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        SyncTarget::crd(),
        ClusterWorkloadPlacement::crd(),
        SyncTargetGrant::crd(),
    ]
}

/// `(file name in config/crds/, YAML)` for every CRD.
pub fn files() -> Result<Vec<(String, String)>> {
    all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml =
                serde_yaml::to_string(&crd).with_context(|| format!("serializing CRD {name}"))?;
            Ok((format!("{name}.yaml"), yaml))
        })
        .collect()
}

/// All CRDs as one multi-document YAML stream (`tmcd crds`).
pub fn yaml_stream() -> Result<String> {
    Ok(files()?
        .into_iter()
        .map(|(_, yaml)| format!("---\n{yaml}"))
        .collect::<String>())
}

/// Installs or updates the CRDs (server-side apply) and waits until each is
/// Established and its resource answers a list (kcp serves a new CRD a moment
/// after it reports Established).
pub async fn install(client: &Client, timeout: Duration) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| {
                format!(
                    "applying CRD {name} (fix: install the CRDs as an admin, `kubectl apply -f config/crds/`; the role of config/rbac/control-plane.yaml may update them, not create them)"
                )
            })?;
        tokio::time::timeout(
            timeout,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not Established after {timeout:?}"))?
        .with_context(|| format!("waiting for CRD {name}"))?;
        wait_served(client, &crd, timeout).await?;
    }
    Ok(())
}

/// Polls a list of the CRD's resource until it answers.
async fn wait_served(
    client: &Client,
    crd: &CustomResourceDefinition,
    timeout: Duration,
) -> Result<()> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let version = crd
        .spec
        .versions
        .first()
        .map(|v| v.name.clone())
        .unwrap_or_default();
    let gvk = GroupVersionKind::gvk(&crd.spec.group, &version, &crd.spec.names.kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
    let objects: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let deadline = tokio::time::Instant::now() + timeout;
    while let Err(err) = objects.list(&ListParams::default().limit(1)).await {
        if tokio::time::Instant::now() >= deadline {
            return Err(err).with_context(|| {
                format!("CRD {name} is Established but not served after {timeout:?}")
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_match_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/crds");
        for (file, yaml) in files().expect("generate") {
            let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
            assert!(
                committed == yaml,
                "config/crds/{file} differs from the CRD generated from api/src/crd.rs; regenerate with:\n  \
                 cargo run -p tmc-daemon -- crds --split config/crds"
            );
        }
    }
}
