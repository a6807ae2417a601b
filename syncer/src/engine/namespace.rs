//! Downstream namespaces: the engine creates a missing one (labelled managed)
//! and NEVER deletes a namespace, not even one it created: a namespace may
//! hold objects tmc does not own, and kcp TMC's worst bugs were namespace
//! deletions on lost connections and restarts.

use std::sync::PoisonError;
use std::time::Duration;

use kube::api::{Api, PostParams};
use serde_json::json;
use tmc_api::decision::{
    FIELD_MANAGER, MANAGED_LABEL, SYNC_TARGET_ANNOTATION, SYNCED_FROM_LABEL,
    UPSTREAM_NAMESPACE_ANNOTATION,
};
use tmc_api::tenancy::{DOWNSTREAM_LOCATOR_ANNOTATION, upstream_of};
use tracing::info;

use super::Engine;
use crate::error::{Error, Result, is_already_exists};

impl Engine {
    /// Creates downstream namespace `ns` (labelled managed) when missing.
    pub(super) async fn ensure_namespace(&self, ns: &str, upstream_ns: &str) -> Result<()> {
        if self
            .known_namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(ns)
        {
            return Ok(());
        }
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.downstream.clone());
        let tenancy = self.ctx.namespace_mapping.tenancy(upstream_ns);
        match api.get_opt(ns).await {
            Ok(Some(existing)) if existing.metadata.deletion_timestamp.is_none() => {
                // A tenant's copies go only into a namespace made for that
                // workspace namespace (its locator maps back to its name).
                if tenancy.is_some() {
                    let annotations = existing.metadata.annotations.unwrap_or_default();
                    if upstream_of(ns, &annotations).is_none() {
                        return Err(Error::InvalidObject {
                            object: format!("downstream namespace {ns}"),
                            reason: format!(
                                "exists but was not made by tmc for {upstream_ns} (its {DOWNSTREAM_LOCATOR_ANNOTATION} annotation does not map back to it), so no copy is written into it (fix: rename or remove that namespace)"
                            ),
                        });
                    }
                }
            }
            Ok(Some(_)) => {
                return Err(Error::Requeue {
                    what: format!("downstream namespace {ns} is terminating"),
                    after: Duration::from_secs(2),
                });
            }
            Ok(None) => {
                let mut annotations = json!({SYNC_TARGET_ANNOTATION: self.target()});
                if self.ctx.namespace_mapping.annotates() {
                    annotations[UPSTREAM_NAMESPACE_ANNOTATION] = json!(upstream_ns);
                }
                let mut labels =
                    json!({MANAGED_LABEL: "true", SYNCED_FROM_LABEL: self.ctx.source.synced_from});
                if let Some(tenancy) = &tenancy {
                    for (key, value) in &tenancy.labels {
                        labels[key] = json!(value);
                    }
                    for (key, value) in &tenancy.annotations {
                        annotations[key] = json!(value);
                    }
                }
                let namespace = serde_json::from_value(json!({
                    "metadata": {
                        "name": ns,
                        "labels": labels,
                        "annotations": annotations,
                    }
                }))
                .map_err(|err| Error::InvalidObject {
                    object: format!("namespace {ns}"),
                    reason: err.to_string(),
                })?;
                match api
                    .create(
                        &PostParams {
                            field_manager: Some(FIELD_MANAGER.to_string()),
                            ..PostParams::default()
                        },
                        &namespace,
                    )
                    .await
                {
                    Ok(_) => {
                        info!(namespace = ns, target = %self.target(), "created downstream namespace")
                    }
                    Err(err) if is_already_exists(&err) => {}
                    Err(err) => {
                        return Err(self.downstream_error(format!("create namespace {ns}"), err));
                    }
                }
            }
            Err(err) => return Err(self.downstream_error(format!("get namespace {ns}"), err)),
        }
        self.known_namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ns.to_string());
        Ok(())
    }

    /// Forgets that `ns` exists (an apply into it said 404): the next apply ensures it again.
    pub(super) fn forget_namespace(&self, ns: &str) {
        self.known_namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(ns);
    }
}
