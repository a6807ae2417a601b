//! The placement controllers' view across kinds that dependencies need
//! (see [`crate::placement::dependencies`]): the caches of the kinds with a
//! pod template, to find who references a ConfigMap, Secret, ServiceAccount
//! or PersistentVolumeClaim, and the queues of the dependency kinds, to
//! decide a dependency again when a workload that references it (or did)
//! changes or goes.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use futures::FutureExt;
use futures::channel::mpsc::UnboundedSender;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use tmc_api::dependencies::{self, DependencyKind};
use tmc_api::protocol;
use tmc_syncer::SyncedKind;

use crate::placement::dependencies::{User, is_derived};

/// One synced kind whose objects reference dependencies.
pub struct WorkloadKind {
    /// The kind.
    pub kind: SyncedKind,
    /// Its controller's cache.
    pub store: Store<DynamicObject>,
}

/// One synced dependency kind.
pub struct DependencyQueue {
    /// Which dependency kind.
    pub kind: DependencyKind,
    /// Its controller's cache.
    pub store: Store<DynamicObject>,
    /// Its API resource (the queue's object references carry it).
    pub ar: ApiResource,
    /// Its controller's re-queue channel.
    pub tx: UnboundedSender<ObjectRef<DynamicObject>>,
}

/// The caches and queues of every synced kind that takes part.
#[derive(Default)]
pub struct Registry {
    /// Kinds with a pod template (`tmc_api::dependencies::has_pod_template`).
    pub workloads: Vec<WorkloadKind>,
    /// Dependency kinds that are synced.
    pub dependencies: Vec<DependencyQueue>,
}

impl Registry {
    /// True when `kind` is a synced kind with a pod template.
    pub fn is_workload_kind(&self, kind: &SyncedKind) -> bool {
        self.workloads.iter().any(|w| w.kind == *kind)
    }

    /// The workloads in `obj`'s namespace that reference it (a dependency of
    /// `kind`), each with whether `governed` says a placement selects it;
    /// `None` while some workload cache has not listed yet (partial
    /// knowledge must never remove a copy).
    pub fn users(
        &self,
        kind: DependencyKind,
        obj: &DynamicObject,
        governed: impl Fn(&SyncedKind, &DynamicObject) -> bool,
    ) -> Option<Vec<User>> {
        let listed = self.workloads.iter().all(|w| {
            w.store
                .wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok())
        });
        if !listed {
            return None;
        }
        let namespace = obj.metadata.namespace.as_deref();
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        let no_labels = Default::default();
        let mut out = Vec::new();
        for w in &self.workloads {
            for user in w
                .store
                .state()
                .into_iter()
                .filter(|o| o.metadata.namespace.as_deref() == namespace)
            {
                let references = references(&w.kind, &user);
                if !references.iter().any(|r| r.kind == kind && r.name == name) {
                    continue;
                }
                out.push(User {
                    name: format!(
                        "{} {}/{}",
                        w.kind.kind,
                        namespace.unwrap_or_default(),
                        user.metadata.name.as_deref().unwrap_or_default()
                    ),
                    recorded: protocol::read(
                        user.metadata.labels.as_ref().unwrap_or(&no_labels),
                        user.metadata.annotations.as_ref().unwrap_or(&no_labels),
                    ),
                    finalizers: user.metadata.finalizers.clone().unwrap_or_default(),
                    governed: governed(&w.kind, &user),
                });
            }
        }
        Some(out)
    }

    /// Queues a new decision of the dependencies `obj` (of `kind`)
    /// references, and of every dependency of its namespace that records
    /// a derived decision (a reference it dropped).
    pub fn requeue_for(&self, kind: &SyncedKind, obj: &DynamicObject) {
        let namespace = obj.metadata.namespace.as_deref();
        let wanted: HashSet<(DependencyKind, String)> = references(kind, obj)
            .into_iter()
            .map(|r| (r.kind, r.name))
            .collect();
        for dep in &self.dependencies {
            for name in &wanted {
                if name.0 == dep.kind {
                    let mut reference = ObjectRef::new_with(&name.1, dep.ar.clone());
                    if let Some(ns) = namespace {
                        reference = reference.within(ns);
                    }
                    let _ = dep.tx.unbounded_send(reference);
                }
            }
        }
        self.requeue_derived(&[namespace.map(str::to_string)].into());
    }

    /// Queues a new decision of every dependency in `namespaces` that
    /// records a derived decision.
    pub fn requeue_derived(&self, namespaces: &BTreeSet<Option<String>>) {
        if namespaces.is_empty() {
            return;
        }
        let no_labels = Default::default();
        for dep in &self.dependencies {
            for obj in dep
                .store
                .state()
                .into_iter()
                .filter(|o| namespaces.contains(&o.metadata.namespace))
            {
                let recorded = protocol::read(
                    obj.metadata.labels.as_ref().unwrap_or(&no_labels),
                    obj.metadata.annotations.as_ref().unwrap_or(&no_labels),
                );
                if recorded.values().any(is_derived) {
                    let _ = dep
                        .tx
                        .unbounded_send(ObjectRef::from_obj_with(obj.as_ref(), dep.ar.clone()));
                }
            }
        }
    }
}

/// What `obj` (of `kind`) references (see `tmc_api::dependencies`).
fn references(kind: &SyncedKind, obj: &DynamicObject) -> Vec<dependencies::Reference> {
    if !dependencies::has_pod_template(&kind.kind) {
        return Vec::new();
    }
    match serde_json::to_value(obj) {
        Ok(value) => dependencies::references(&kind.kind, &value),
        Err(_) => Vec::new(),
    }
}

/// The registry of `kinds`, each with its controller's cache and re-queue
/// channel.
pub fn registry<'a>(
    kinds: impl IntoIterator<
        Item = (
            &'a SyncedKind,
            &'a Store<DynamicObject>,
            &'a UnboundedSender<ObjectRef<DynamicObject>>,
        ),
    >,
) -> Arc<Registry> {
    let mut out = Registry::default();
    for (kind, store, tx) in kinds {
        if dependencies::has_pod_template(&kind.kind) {
            out.workloads.push(WorkloadKind {
                kind: kind.clone(),
                store: store.clone(),
            });
        }
        if let Some(dep) = DependencyKind::of(&kind.group, &kind.kind) {
            out.dependencies.push(DependencyQueue {
                kind: dep,
                store: store.clone(),
                ar: kind.api_resource(),
                tx: tx.clone(),
            });
        }
    }
    Arc::new(out)
}
