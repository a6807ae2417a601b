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

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use futures::channel::mpsc;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::activity::DecisionActivity;
use super::{assignment, status};

/// Status writes in flight per kind.
const WRITERS: usize = 2;

/// The queue of one kind's status writes.
pub struct StatusWriter {
    queue: mpsc::UnboundedSender<ObjectRef<DynamicObject>>,
    queued: Mutex<HashSet<ObjectRef<DynamicObject>>>,
    ar: ApiResource,
}

impl StatusWriter {
    /// A writer for the workloads of `kind` (`ar`) held by `store`; the
    /// returned future runs it until the writer is dropped.
    pub fn new(
        client: Client,
        ar: ApiResource,
        kind: String,
        store: Store<DynamicObject>,
        decisions: Arc<DecisionActivity>,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::unbounded();
        let writer = Arc::new(Self {
            queue: tx,
            queued: Mutex::default(),
            ar: ar.clone(),
        });
        let weak = Arc::downgrade(&writer);
        let run = rx
            .map(move |key: ObjectRef<DynamicObject>| {
                let (client, ar, kind, store, decisions, weak) = (
                    client.clone(),
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
                    write(&client, &ar, &kind, &store, &key).await
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

    /// Asks for `obj`'s aggregated status to be written (no-op if queued).
    pub fn request(&self, obj: &DynamicObject) {
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

/// Writes the aggregated status of `key`'s current cached object when it
/// differs from the upstream one. Failures are logged: the next change of
/// the object's reports asks again.
async fn write(
    client: &Client,
    ar: &ApiResource,
    kind: &str,
    store: &Store<DynamicObject>,
    key: &ObjectRef<DynamicObject>,
) {
    let Some(obj) = store.get(key) else { return };
    let recorded = assignment::read(obj.labels(), obj.annotations());
    let Some(desired) = status::aggregate(kind, &recorded) else {
        return;
    };
    if status::contains(obj.data.get("status"), &desired) {
        return;
    }
    let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
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
