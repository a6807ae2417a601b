//! Reads from the syncer's watch caches, and the memory of our own writes:
//! what a write returned is newer than the cache until its watch event arrives.

use std::sync::{Arc, PoisonError};

use futures::FutureExt;

use kube::core::{DynamicObject, TypeMeta};
use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;

use super::{Engine, ObjectKey, Stores};

/// Which side an object lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Side {
    Upstream,
    Downstream,
}

impl Engine {
    /// Uses the watch caches of a running syncer for reads (`None`: GET everything).
    pub(crate) fn set_caches(&self, caches: Option<Arc<Stores>>) {
        *self.caches.write().unwrap_or_else(PoisonError::into_inner) = caches;
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The watch caches of the running syncer, if it runs.
    pub(crate) fn caches(&self) -> Option<Arc<Stores>> {
        self.caches
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Drops bookkeeping that no longer matters (called on every resync):
    /// expired holds, and remembered writes whose watch event never came
    /// (they only save requests; forgetting one costs at most a redundant write).
    pub(crate) fn prune(&self) {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        // A deleted copy still in the cache after a resync period: its watch
        // event was lost; the cache is re-listed by then.
        self.deleted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let now = Instant::now();
        self.report_hold
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now);
        self.report_gated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, since| {
                self.report_gate
                    .as_ref()
                    .is_some_and(|gate| now.duration_since(*since) < gate.max_hold())
            });
    }

    /// Whether the upstream watch cache has listed and does not hold `key`
    /// (false without caches, or before the first list completes): the
    /// second witness a 404 read through a workspace of the virtual
    /// workspace needs before a copy is deleted for it.
    pub(super) fn upstream_cache_lacks(&self, key: &ObjectKey) -> bool {
        let Some(caches) = self.caches() else {
            return false;
        };
        let store = &caches.upstream[key.kind];
        let listed = store
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|ready| ready.is_ok());
        let mut reference = ObjectRef::new_with(&key.name, self.resources[key.kind].clone());
        if let Some(ns) = key
            .namespace
            .as_deref()
            .filter(|_| self.kinds[key.kind].namespaced)
        {
            reference = reference.within(ns);
        }
        listed && store.get(&reference).is_none()
    }

    /// The freshest object we know of `key` on `side` without a request: the
    /// watch cache's, or what our own last write returned if that is newer.
    /// `None` when the cache does not hold it (it may not exist, or not be
    /// ours, or the cache may lag): the caller then GETs.
    pub(super) fn cached(&self, side: Side, key: &ObjectKey) -> Option<DynamicObject> {
        let caches = self.caches()?;
        let (store, namespace) = match side {
            Side::Upstream => (&caches.upstream[key.kind], key.namespace.clone()),
            Side::Downstream => (&caches.downstream[key.kind], self.downstream_namespace(key)),
        };
        let mut reference = ObjectRef::new_with(&key.name, self.resources[key.kind].clone());
        if let Some(ns) = namespace.filter(|_| self.kinds[key.kind].namespaced) {
            reference = reference.within(&ns);
        }
        let cached = store.get(&reference)?;
        if side == Side::Downstream && self.deleted_copy(key, &cached) {
            return None;
        }
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = (side, key.clone());
        let mut object = match written.get(&slot) {
            Some(ours) if is_newer(ours, &cached) => ours.clone(),
            Some(_) => {
                // The cache has caught up with our write.
                written.remove(&slot);
                (*cached).clone()
            }
            None => (*cached).clone(),
        };
        // Items of a list (the watch's initial state) come without apiVersion and kind.
        if object.types.is_none() {
            let ar = &self.resources[key.kind];
            object.types = Some(TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            });
        }
        Some(object)
    }

    /// Remembers what a write of ours returned (see `written`).
    pub(super) fn remember(&self, side: Side, key: &ObjectKey, object: DynamicObject) {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((side, key.clone()), object);
    }

    /// Records that we deleted the copy of `key` with `uid` (see `deleted`).
    pub(super) fn remember_deleted(&self, key: &ObjectKey, uid: String) {
        self.deleted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), uid);
    }

    /// True when `cached` is a copy of `key` we deleted; forgets the deletion
    /// once the cache holds another object (or none) under that name.
    fn deleted_copy(&self, key: &ObjectKey, cached: &DynamicObject) -> bool {
        let mut deleted = self.deleted.lock().unwrap_or_else(PoisonError::into_inner);
        match deleted.get(key) {
            Some(uid) if cached.metadata.uid.as_ref() == Some(uid) => true,
            Some(_) => {
                deleted.remove(key);
                false
            }
            None => false,
        }
    }

    /// Forgets everything remembered about `key` (it is read fresh or gone).
    pub(super) fn forget(&self, key: &ObjectKey) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        written.remove(&(Side::Upstream, key.clone()));
        written.remove(&(Side::Downstream, key.clone()));
        drop(written);
        self.report_hold
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        self.report_gated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// True when `newer` has a higher resourceVersion than `older`. Versions are
/// opaque to clients in general; the API servers tmc talks to (etcd-backed
/// kube-apiserver, kcp) use integers. Anything else counts as not newer, so
/// the watch cache wins.
fn is_newer(newer: &DynamicObject, older: &DynamicObject) -> bool {
    let version = |o: &DynamicObject| {
        o.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    matches!((version(newer), version(older)), (Some(a), Some(b)) if a > b)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::{Value, json};

    use super::super::test_support::{
        cached_engine, engine, fake, key, live_copy, namespace_ensured, placed,
    };
    use crate::copy::build_copy;
    use crate::engine::Outcome;
    use tmc_api::decision::TargetStatus;

    #[tokio::test]
    async fn a_copy_we_deleted_is_never_read_from_the_cache() {
        let (up, _) = fake(|_, _| None);
        let (down, _) = fake(|_, _| None);
        let live = super::super::test_support::copy("web", "west");
        let (engine, _w1, _w2) = cached_engine(up, down, None, Some(&live));
        let side = super::Side::Downstream;
        assert!(engine.cached(side, &key()).is_some());
        engine.remember_deleted(&key(), "uid-1".into());
        assert!(
            engine.cached(side, &key()).is_none(),
            "the deleted copy would pass for a running one"
        );
    }

    #[tokio::test]
    async fn listed_objects_without_api_version_and_kind_are_not_applied_again() {
        // A watch's initial list gives items without apiVersion and kind.
        let untyped = |mut v: Value| {
            let map = v.as_object_mut().unwrap();
            map.remove("apiVersion");
            map.remove("kind");
            v
        };
        let (up, up_log) = fake(|_, _| None);
        let (down, down_log) = fake(|_, _| None);
        let object = placed(json!({}));
        let probe = engine(up.clone(), down.clone());
        let live = live_copy(&probe, &object, json!({"replicas": 1}));
        let status = TargetStatus {
            applied_hash: build_copy(&object, &probe.ctx, None, None, Utc::now())
                .unwrap()
                .hash,
            observed_generation: Some(1),
            status: Some(json!({"replicas": 1})),
            error: None,
            ..TargetStatus::default()
        };
        let mut object = object;
        object["metadata"]["annotations"]["status.workload.kcp.io/west"] =
            json!(serde_json::to_string(&status).unwrap());
        let (engine, _w1, _w2) =
            cached_engine(up, down, Some(&untyped(object)), Some(&untyped(live)));
        namespace_ensured(&engine);
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        assert!(up_log.lock().unwrap().is_empty(), "{up_log:?}");
        assert!(down_log.lock().unwrap().is_empty(), "{down_log:?}");
    }
}
