//! Writes the aggregated `.status` of workloads upstream, off the placement
//! workers: decisions go first, status bookkeeping follows. Under a burst of
//! creates every workload is placed before the statuses catch up, instead of
//! placement patches queueing behind status writes at the control plane.
//!
//! Each write also waits while decisions are being written (see
//! [`super::activity`]), for at most a few seconds.
//!
//! Requests are deduplicated per object, and the status is computed from
//! the object as the cache holds it when its turn comes, so a workload whose
//! reports change several times while queued is written once.
//!
//! tmcd writes `.status` only where nothing else does (see [`writes_status`]):
//! on a plain Kubernetes API server the deployment controller owns a
//! Deployment's status, and two writers would overwrite each other forever.
//! The per-target reports and the placement status are written either way.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use crate::workspaces::Workspaces;
use futures::StreamExt;
use futures::channel::mpsc;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::activity::DecisionActivity;
use super::status;

/// Status writes in flight per kind.
const WRITERS: usize = 2;

/// The queue of one kind's status writes.
pub struct StatusWriter {
    queue: mpsc::UnboundedSender<ObjectRef<DynamicObject>>,
    queued: Mutex<HashSet<ObjectRef<DynamicObject>>>,
    ar: ApiResource,
    /// False where another controller owns the workloads' status: requests are ignored.
    enabled: bool,
}

impl StatusWriter {
    /// A writer for the workloads of `kind` (`ar`) held by `store`, writing
    /// only when `enabled` (see [`writes_status`]); the returned future runs
    /// it until the writer is dropped.
    pub fn new(
        client: Client,
        workspaces: Workspaces,
        ar: ApiResource,
        kind: String,
        store: Store<DynamicObject>,
        decisions: Arc<DecisionActivity>,
        enabled: bool,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::unbounded();
        let writer = Arc::new(Self {
            queue: tx,
            queued: Mutex::default(),
            ar: ar.clone(),
            enabled,
        });
        let weak = Arc::downgrade(&writer);
        let run = rx
            .map(move |key: ObjectRef<DynamicObject>| {
                let (client, workspaces, ar, kind, store, decisions, weak) = (
                    client.clone(),
                    workspaces.clone(),
                    ar.clone(),
                    kind.clone(),
                    store.clone(),
                    decisions.clone(),
                    weak.clone(),
                );
                async move {
                    decisions.quiet().await;
                    // Requests made while waiting are served by this write.
                    if let Some(writer) = weak.upgrade() {
                        writer
                            .queued
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&key);
                    }
                    write(&client, &workspaces, &ar, &kind, &store, &key).await
                }
            })
            .buffer_unordered(WRITERS)
            .for_each(|()| async {});
        (writer, run)
    }

    /// How many objects wait for their status write.
    pub fn queued(&self) -> usize {
        self.queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Asks for `obj`'s aggregated status to be written (no-op if queued, or
    /// if this writer does not write statuses).
    pub fn request(&self, obj: &DynamicObject) {
        if !self.enabled {
            return;
        }
        let key = ObjectRef::from_obj_with(obj, self.ar.clone());
        let fresh = self
            .queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        if fresh && self.queue.unbounded_send(key).is_err() {
            tracing::debug!(object = %obj.name_any(), "status writer stopped; status not written");
        }
    }
}

/// API groups that only kcp serves: a control plane that serves one is kcp.
const KCP_GROUPS: [&str; 3] = ["apis.kcp.io", "core.kcp.io", "tenancy.kcp.io"];

/// Whether tmcd writes the workloads' aggregated `.status`: as `configured`
/// (tmc.toml `[control_plane] write_status`), else only when the control
/// plane serves kcp's API groups, whose workspaces run no controller that
/// owns a workload's status. A control plane whose discovery cannot be read
/// gets no status writes (a missing aggregate is safer than a status fight).
pub async fn writes_status(client: &Client, configured: Option<bool>) -> bool {
    if let Some(on) = configured {
        return on;
    }
    for attempt in 1..=5 {
        match client.list_api_groups().await {
            Ok(groups) => {
                let kcp = is_kcp(groups.groups.iter().map(|g| g.name.as_str()));
                if !kcp {
                    tracing::info!(
                        "the control plane is not kcp: tmcd leaves the workloads' .status to their controllers (set [control_plane] write_status to override)"
                    );
                }
                return kcp;
            }
            Err(err) if attempt < 5 => {
                tracing::debug!(error = %err, "reading the control plane's API groups failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot tell whether the control plane is kcp: tmcd writes no aggregated .status (set [control_plane] write_status = true to write it)");
            }
        }
    }
    false
}

/// True when `groups` (served API group names) include one only kcp serves.
fn is_kcp<'a>(mut groups: impl Iterator<Item = &'a str>) -> bool {
    groups.any(|g| KCP_GROUPS.contains(&g))
}

/// Writes the aggregated status of `key`'s current cached object when it
/// differs from the upstream one. Failures are logged: the next change of
/// the object's reports asks again.
async fn write(
    client: &Client,
    workspaces: &Workspaces,
    ar: &ApiResource,
    kind: &str,
    store: &Store<DynamicObject>,
    key: &ObjectRef<DynamicObject>,
) {
    let Some(obj) = store.get(key) else { return };
    let recorded = tmc_api::protocol::read(obj.labels(), obj.annotations());
    let Some(desired) = status::aggregate(kind, &recorded) else {
        return;
    };
    if status::contains(obj.data.get("status"), &desired) {
        return;
    }
    let api = match workspaces.dynamic_api(client, ar, obj.metadata.namespace.as_deref()) {
        Ok(api) => api,
        Err(err) => {
            tracing::warn!(kind, object = %key, error = %err, "not writing the aggregated status");
            return;
        }
    };
    let patch = json!({ "status": desired });
    if let Err(err) = api
        .patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(kind, object = %key, error = %err, "writing the aggregated status failed");
    }
}

#[cfg(test)]
mod tests {
    use super::is_kcp;

    #[test]
    fn only_kcp_api_groups_make_the_control_plane_kcp() {
        assert!(is_kcp(
            ["apps", "apis.kcp.io", "workload.kcp.io"].into_iter()
        ));
        assert!(is_kcp(["tenancy.kcp.io"].into_iter()));
        // tmc's own API group is served on a plain API server too.
        assert!(!is_kcp(
            ["apps", "workload.kcp.io", "coordination.k8s.io"].into_iter()
        ));
        assert!(!is_kcp(std::iter::empty()));
    }
}
