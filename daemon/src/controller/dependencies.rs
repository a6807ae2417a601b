//! The placement controllers' view across kinds that dependencies need
//! (see [`crate::placement::dependencies`]): the caches of the kinds with a
//! pod template, to find who references a ConfigMap, Secret, ServiceAccount
//! or PersistentVolumeClaim, and the queues of the dependency kinds, to
//! decide a dependency again when a workload that references it (or did)
//! changes or goes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use futures::channel::mpsc::UnboundedSender;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use tmc_api::dependencies::{self, DependencyKind};
use tmc_api::protocol;
use tmc_syncer::SyncedKind;

use crate::placement::dependencies::{User, is_derived};
use crate::placement::workload;

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

/// A dependency by kind and name, in the namespace of whoever names it.
type Named = (DependencyKind, String);

/// The caches and queues of every synced kind that takes part.
#[derive(Default)]
pub struct Registry {
    /// Kinds with a pod template (`tmc_api::dependencies::has_pod_template`).
    pub workloads: Vec<WorkloadKind>,
    /// Dependency kinds that are synced.
    pub dependencies: Vec<DependencyQueue>,
    /// What each workload (`kind`, `namespace/name`) referenced when it was
    /// last reconciled in this process: a reference it drops, or that goes
    /// with it, names the one dependency to decide again.
    last_references: Mutex<HashMap<(String, String), HashSet<Named>>>,
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
        let mut out = Vec::new();
        for w in &self.workloads {
            out.extend(
                w.store
                    .state()
                    .into_iter()
                    .filter(|o| o.metadata.namespace.as_deref() == namespace)
                    .filter_map(|user| {
                        User::of(&w.kind.kind, &user, kind, name, || governed(&w.kind, &user))
                    }),
            );
        }
        Some(out)
    }

    /// Queues a new decision of the dependencies `obj` (of `kind`)
    /// references, and of those it referenced when last seen here and no
    /// longer does. A workload not seen before in this process may have
    /// dropped a reference before it started: then every dependency of its
    /// namespace that records a derived decision is decided again, once.
    pub fn requeue_for(&self, kind: &SyncedKind, obj: &DynamicObject) {
        let namespace = obj.metadata.namespace.as_deref();
        let now: HashSet<Named> = references(kind, obj)
            .into_iter()
            .map(|r| (r.kind, r.name))
            .collect();
        let before = self
            .last_references
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(workload_key(kind, obj), now.clone());
        self.requeue_named(namespace, now.iter());
        match before {
            Some(before) => self.requeue_named(namespace, before.difference(&now)),
            None => self.requeue_derived(&[namespace.map(str::to_string)].into()),
        }
    }

    /// Queues a new decision of what the deleted workload `key`
    /// (`namespace/name`, of `kind`, in `namespace`) referenced; when this
    /// process never saw it, of every dependency of its namespace that
    /// records a derived decision.
    pub fn requeue_for_deleted(&self, kind: &SyncedKind, key: &str, namespace: Option<&str>) {
        let before = self
            .last_references
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(kind_name(kind), key.to_string()));
        match before {
            Some(before) => self.requeue_named(namespace, before.iter()),
            None => self.requeue_derived(&[namespace.map(str::to_string)].into()),
        }
    }

    /// Queues a new decision of the named dependencies of `namespace`.
    fn requeue_named<'a>(&self, namespace: Option<&str>, named: impl Iterator<Item = &'a Named>) {
        for (kind, name) in named {
            for dep in self.dependencies.iter().filter(|d| d.kind == *kind) {
                let mut reference = ObjectRef::new_with(name, dep.ar.clone());
                if let Some(ns) = namespace {
                    reference = reference.within(ns);
                }
                let _ = dep.tx.unbounded_send(reference);
            }
        }
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

/// What `obj` (of `kind`) references (see `tmc_api::dependencies`). The
/// references are all under `spec`, which `data` holds as it came: nothing
/// is serialized again.
fn references(kind: &SyncedKind, obj: &DynamicObject) -> Vec<dependencies::Reference> {
    if !dependencies::has_pod_template(&kind.kind) {
        return Vec::new();
    }
    dependencies::references(&kind.kind, &obj.data)
}

/// The key [`Registry::requeue_for`] remembers a workload's references by.
fn workload_key(kind: &SyncedKind, obj: &DynamicObject) -> (String, String) {
    (kind_name(kind), workload::key(obj))
}

/// `group/kind`, which tells synced kinds apart.
fn kind_name(kind: &SyncedKind) -> String {
    format!("{}/{}", kind.group, kind.kind)
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc::{UnboundedReceiver, unbounded};
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;
    use serde_json::json;
    use tmc_api::decision::{STATE_SYNC, result_annotation, state_label};

    use crate::placement::dependencies::derived_result;

    /// A registry over Deployments and ConfigMaps, the ConfigMap cache
    /// holding `config_maps`, and the ConfigMap queue's receiving end.
    fn registry_with(
        config_maps: Vec<DynamicObject>,
    ) -> (Registry, UnboundedReceiver<ObjectRef<DynamicObject>>) {
        let deployments = SyncedKind::parse("apps/v1/Deployment").unwrap();
        let config_map = SyncedKind::parse("v1/ConfigMap").unwrap();
        let mut maps = Writer::new(config_map.api_resource());
        for cm in config_maps {
            maps.apply_watcher_event(&Event::Apply(cm));
        }
        let (tx, rx) = unbounded();
        let registry = Registry {
            workloads: vec![WorkloadKind {
                kind: deployments.clone(),
                store: Writer::new(deployments.api_resource()).as_reader(),
            }],
            dependencies: vec![DependencyQueue {
                kind: DependencyKind::ConfigMap,
                store: maps.as_reader(),
                ar: config_map.api_resource(),
                tx,
            }],
            ..Registry::default()
        };
        (registry, rx)
    }

    /// Deployment `ns/web` whose containers take their environment from `config_maps`.
    fn deployment(config_maps: &[&str]) -> DynamicObject {
        let env_from: Vec<_> = config_maps
            .iter()
            .map(|name| json!({"configMapRef": {"name": name}}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "envFrom": env_from}]}}}
        }))
        .unwrap()
    }

    /// ConfigMap `ns/<name>`, recording a derived decision for west when `derived`.
    fn config_map(name: &str, derived: bool) -> DynamicObject {
        let mut obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ns"}
        }))
        .unwrap();
        if derived {
            obj.metadata.labels = Some([(state_label("west"), STATE_SYNC.to_string())].into());
            obj.metadata.annotations = Some(
                [(
                    result_annotation("west"),
                    serde_json::to_string(&derived_result()).unwrap(),
                )]
                .into(),
            );
        }
        obj
    }

    /// The names queued so far, sorted.
    fn queued(rx: &mut UnboundedReceiver<ObjectRef<DynamicObject>>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(r) = rx.try_recv() {
            assert_eq!(r.namespace.as_deref(), Some("ns"));
            out.push(r.name);
        }
        out.sort();
        out
    }

    #[test]
    fn a_workload_requeues_what_it_references_and_what_it_dropped_not_its_whole_namespace() {
        let maps = ["a", "b", "other"].map(|n| config_map(n, true)).to_vec();
        let (registry, mut rx) = registry_with(maps);
        let kind = &registry.workloads[0].kind.clone();

        // First seen in this process: what it may have dropped before is
        // unknown, so every derived dependency of the namespace is decided again.
        registry.requeue_for(kind, &deployment(&["a", "b"]));
        assert_eq!(queued(&mut rx), ["a", "a", "b", "b", "other"]);

        // Seen since: only its references, and the one it dropped.
        registry.requeue_for(kind, &deployment(&["a", "b"]));
        assert_eq!(queued(&mut rx), ["a", "b"]);
        registry.requeue_for(kind, &deployment(&["a"]));
        assert_eq!(queued(&mut rx), ["a", "b"]);
        registry.requeue_for(kind, &deployment(&["a"]));
        assert_eq!(queued(&mut rx), ["a"]);

        // Deleted: what it referenced last; once forgotten, the namespace again.
        registry.requeue_for_deleted(kind, "ns/web", Some("ns"));
        assert_eq!(queued(&mut rx), ["a"]);
        registry.requeue_for_deleted(kind, "ns/web", Some("ns"));
        assert_eq!(queued(&mut rx), ["a", "b", "other"]);
    }

    #[test]
    fn users_are_found_from_the_cached_spec_without_a_round_trip() {
        let deployments = SyncedKind::parse("apps/v1/Deployment").unwrap();
        let mut writer = Writer::new(deployments.api_resource());
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(deployment(&["a"])));
        writer.apply_watcher_event(&Event::InitDone);
        let (mut registry, _rx) = registry_with(Vec::new());
        registry.workloads[0].store = writer.as_reader();

        let users = registry
            .users(
                DependencyKind::ConfigMap,
                &config_map("a", false),
                |_, _| true,
            )
            .expect("the workload cache has listed");
        assert_eq!(
            users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["Deployment ns/web"]
        );
        let users = registry
            .users(
                DependencyKind::ConfigMap,
                &config_map("b", false),
                |_, _| true,
            )
            .expect("the workload cache has listed");
        assert!(users.is_empty());
    }
}
