//! The syncer's watch caches: the reflector stores of every synced kind,
//! upstream and downstream, and the work-queue keys of their objects.

use std::sync::Arc;

use futures::FutureExt;
use kube::core::DynamicObject;
use kube::runtime::reflector::Store;
use tmc_api::decision::UPSTREAM_NAMESPACE_ANNOTATION;
use tmc_api::protocol::{Assignment, TargetRecord, is_our_copy};

use super::{Engine, ObjectKey};
use crate::queue::WorkQueue;
use tmc_api::protocol::annotation;

/// Reflector stores of every kind, upstream and downstream (the watch caches).
pub(crate) struct Stores {
    pub(crate) upstream: Vec<Store<DynamicObject>>,
    pub(crate) downstream: Vec<Store<DynamicObject>>,
    /// The cluster's HorizontalPodAutoscalers, when some synced kind has
    /// replicas and the cluster may own them (see [`crate::replicas`]).
    pub(crate) autoscalers: Option<Store<DynamicObject>>,
}

impl Stores {
    fn our_copies(&self, engine: &Engine, kind: usize) -> Vec<Arc<DynamicObject>> {
        let target = &engine.ctx.target;
        let synced_from = &engine.ctx.source.synced_from;
        self.downstream[kind]
            .state_filter(|o| meta_value(o).is_some_and(|v| is_our_copy(&v, target, synced_from)))
    }

    pub(crate) fn update_counts(&self, engine: &Engine) {
        for (i, kind) in engine.kinds.iter().enumerate() {
            engine.health.set_counts(
                &kind.to_string(),
                self.upstream[i].len(),
                self.our_copies(engine, i).len(),
            );
        }
    }

    /// Our copies (`Kind namespace/name`) written under another namespace
    /// mapping than the current one (see `engine::stranded`).
    pub(crate) fn stranded(&self, engine: &Engine) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, store) in self.downstream.iter().enumerate() {
            for copy in store.state() {
                if engine.stranded(&copy).is_some() {
                    let ns = copy.metadata.namespace.as_deref().unwrap_or_default();
                    let name = copy.metadata.name.as_deref().unwrap_or_default();
                    out.push(format!("{} {ns}/{name}", engine.kinds[kind].kind));
                }
            }
        }
        out
    }

    /// Queues every known upstream object and downstream copy.
    pub(crate) fn enqueue_all(&self, engine: &Engine, queue: &WorkQueue<ObjectKey>) {
        for kind in 0..engine.kinds.len() {
            for object in self.upstream[kind].state() {
                if let Some(key) = upstream_key(engine, kind, &object) {
                    queue.add(key);
                }
            }
            for object in self.our_copies(engine, kind) {
                if let Some(key) = downstream_key(engine, kind, &object) {
                    queue.add(key);
                }
            }
        }
    }

    /// Assigned upstream objects, once every upstream watch has listed.
    pub(crate) fn workload_count(&self, target: &str) -> Option<usize> {
        let listed = self.upstream.iter().all(|s| {
            s.wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok())
        });
        if !listed {
            return None;
        }
        let count = self
            .upstream
            .iter()
            .flat_map(Store::state)
            .filter(|o| {
                TargetRecord::from_meta(&o.metadata, target).assignment() == Assignment::Sync
            })
            .count();
        Some(count)
    }
}

/// Only the metadata of `object` as JSON, enough for the protocol checks
/// (cheaper than serializing the whole object).
fn meta_value(object: &DynamicObject) -> Option<serde_json::Value> {
    Some(serde_json::json!({ "metadata": serde_json::to_value(&object.metadata).ok()? }))
}

/// The key of an upstream object; `None` for an object the namespace mapping
/// cannot sync (see [`crate::NamespaceMapping::maps`]).
pub(crate) fn upstream_key(
    engine: &Engine,
    kind: usize,
    object: &DynamicObject,
) -> Option<ObjectKey> {
    let namespace = object.metadata.namespace.as_deref();
    if !engine.ctx.namespace_mapping.maps(namespace) {
        return None;
    }
    Some(ObjectKey {
        kind,
        namespace: object.metadata.namespace.clone(),
        name: object.metadata.name.clone()?,
    })
}

pub(crate) fn downstream_key(
    engine: &Engine,
    kind: usize,
    object: &DynamicObject,
) -> Option<ObjectKey> {
    let value = meta_value(object)?;
    if !is_our_copy(&value, &engine.ctx.target, &engine.ctx.source.synced_from) {
        return None;
    }
    let namespace = match &object.metadata.namespace {
        Some(ns) => {
            let mapping = &engine.ctx.namespace_mapping;
            let upstream = annotation(&value, UPSTREAM_NAMESPACE_ANNOTATION);
            // A copy written under another mapping is not this object's copy
            // under the current one (see `Stores::stranded`).
            if !mapping.wrote(ns, upstream) {
                return None;
            }
            Some(mapping.upstream(ns, upstream)?)
        }
        None => None,
    };
    Some(ObjectKey {
        kind,
        namespace,
        name: object.metadata.name.clone()?,
    })
}
