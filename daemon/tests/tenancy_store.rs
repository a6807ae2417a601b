//! How tmcd will key its stores across tenant workspaces (issue 12, `docs/tenancy.md`), checked against
//! kube-runtime's real reflector store: its `ObjectRef` hashes only name and namespace, so the same
//! `default/web` of two workspaces collides unless each object is mapped with
//! `tmc_api::tenancy::map_for_store` before the reflector.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tmc_api::tenancy::{CLUSTER_ANNOTATION, LogicalCluster, WorkloadKey, map_for_store};

fn deployments() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "Deployment"),
        "deployments",
    )
}

/// `default/web` of logical cluster `cluster`, as a wildcard watch delivers it.
fn web_of(cluster: &str, replicas: i64) -> DynamicObject {
    let mut object = DynamicObject::new("web", &deployments()).within("default");
    object.metadata.annotations =
        Some([(CLUSTER_ANNOTATION.to_owned(), cluster.to_owned())].into());
    object.data = serde_json::json!({ "spec": { "replicas": replicas } });
    object
}

fn store_of(objects: Vec<DynamicObject>) -> Store<DynamicObject> {
    let mut writer = Writer::new(deployments());
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(object));
    }
    writer.as_reader()
}

fn replicas(object: &DynamicObject) -> Option<i64> {
    object
        .data
        .pointer("/spec/replicas")
        .and_then(|r| r.as_i64())
}

#[test]
fn unmapped_objects_of_two_workspaces_collide_in_a_reflector_store() {
    let store = store_of(vec![web_of("aaaa", 1), web_of("bbbb", 2)]);
    assert_eq!(store.state().len(), 1, "b's default/web replaced a's");
}

#[test]
fn mapped_objects_stay_apart_and_their_keys_map_back() {
    let mut objects = vec![web_of("aaaa", 1), web_of("bbbb", 2)];
    let keys: Vec<WorkloadKey> = objects
        .iter_mut()
        .map(|o| map_for_store(&mut o.metadata).expect("mapped"))
        .collect();
    let store = store_of(objects);
    assert_eq!(store.state().len(), 2);
    for (key, expected) in keys.iter().zip([1, 2]) {
        let reference = ObjectRef::new_with(&key.name, deployments())
            .within(key.store_namespace().as_deref().expect("namespaced"));
        let object = store.get(&reference).expect("in the store");
        assert_eq!(replicas(&object), Some(expected), "{key}");
        let back =
            WorkloadKey::from_store(object.metadata.namespace.as_deref(), "web").expect("key");
        assert_eq!(&back, key);
        assert_eq!(back.namespace.as_deref(), Some("default"));
    }
    assert_eq!(
        keys[0].cluster,
        Some(LogicalCluster::new("aaaa").expect("valid"))
    );
}

#[test]
fn single_workspace_objects_are_stored_as_today() {
    let mut object = DynamicObject::new("web", &deployments()).within("default");
    map_for_store(&mut object.metadata).expect("mapped");
    let store = store_of(vec![object]);
    let reference = ObjectRef::new_with("web", deployments()).within("default");
    assert!(store.get(&reference).is_some());
}
