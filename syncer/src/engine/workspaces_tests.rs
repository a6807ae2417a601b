//! The engine with workloads of many workspaces (export mode): each object is
//! read and written through its own workspace's client only, its copy goes to
//! its workspace namespace's own downstream namespace, and a 404 of one
//! workspace deletes a copy only when the watch across the workspaces agrees.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{Method, StatusCode};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use tmc_api::tenancy::{LogicalCluster, downstream_namespace};

use super::test_support::{deletes, dynamic, engine, fake, not_found, placed, unserved};
use super::{Engine, ObjectKey, Stores};
use crate::error::Error;
use crate::identity::NamespaceMapping;
use crate::workspaces::BoundWorkspaces;

type Log = Arc<Mutex<Vec<String>>>;

/// The clients of a fake virtual workspace: the wildcard one and one per logical cluster, and which
/// logical clusters are granted the target (absent: not known yet).
struct FakeBound {
    wildcard: kube::Client,
    clusters: HashMap<String, kube::Client>,
    granted: HashMap<String, bool>,
}

impl BoundWorkspaces for FakeBound {
    fn wildcard(&self) -> kube::Client {
        self.wildcard.clone()
    }

    fn client_for(&self, cluster: &LogicalCluster) -> Result<kube::Client, String> {
        self.clusters
            .get(cluster.as_str())
            .cloned()
            .ok_or_else(|| format!("no workspace {cluster}"))
    }

    fn granted(&self, cluster: &LogicalCluster, _target: &str) -> Option<bool> {
        self.granted.get(cluster.as_str()).copied()
    }
}

/// `shop/web` of workspace `a1`, as the engine keys it.
fn key_of_a1() -> ObjectKey {
    ObjectKey {
        kind: 0,
        namespace: Some("a1|shop".into()),
        name: "web".into(),
    }
}

fn downstream_of_a1() -> String {
    downstream_namespace(&LogicalCluster::new("a1").unwrap(), "shop").name
}

/// An engine reading workspace `a1` through `a1` and `b2` through `b2`
/// (the wildcard client answers nothing: the engine must not use it to write);
/// a1 is granted the target.
fn bound_engine(a1: kube::Client, b2: kube::Client, down: kube::Client) -> (Engine, Log) {
    granted_engine(a1, b2, down, &[("a1", true)])
}

/// [`bound_engine`] with the grants `granted` (logical cluster, granted).
fn granted_engine(
    a1: kube::Client,
    b2: kube::Client,
    down: kube::Client,
    granted: &[(&str, bool)],
) -> (Engine, Log) {
    let (wildcard, wildcard_log) = fake(|_, _| None);
    let mut engine = engine(a1.clone(), down);
    engine.ctx.namespace_mapping = NamespaceMapping::Workspaces;
    engine.workspaces = Some(Arc::new(FakeBound {
        wildcard,
        clusters: HashMap::from([("a1".to_owned(), a1), ("b2".to_owned(), b2)]),
        granted: granted
            .iter()
            .map(|(cluster, granted)| ((*cluster).to_owned(), *granted))
            .collect(),
    }));
    (engine, wildcard_log)
}

/// `placed(..)` as workspace a1 serves it (its real namespace, the cluster annotation).
fn placed_in_a1() -> Value {
    placed(json!({"kcp.io/cluster": "a1"}))
}

/// Downstream: no namespace and no copy yet; creates and applies succeed.
fn empty_cluster(method: &Method, path: &str) -> Option<(StatusCode, Value)> {
    match *method {
        Method::GET if path.starts_with("/api/v1/namespaces/") => Some(not_found("ns")),
        Method::GET => Some(not_found("web")),
        Method::POST => Some((StatusCode::CREATED, json!({"metadata": {"name": "ns"}}))),
        _ => Some((
            StatusCode::OK,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "x", "resourceVersion": "9"}}),
        )),
    }
}

#[tokio::test]
async fn an_object_is_read_and_written_through_its_own_workspace_and_copied_into_its_own_namespace()
{
    let (a1, a1_log) = fake(|_, _| Some((StatusCode::OK, placed_in_a1())));
    let (b2, b2_log) = fake(|_, _| None);
    let (down, down_log) = fake(empty_cluster);
    let (engine, wildcard_log) = bound_engine(a1, b2, down);
    let _ = engine.reconcile(&key_of_a1()).await;

    let upstream = a1_log.lock().unwrap().clone();
    assert!(
        upstream
            .first()
            .is_some_and(|l| l == "GET /apis/apps/v1/namespaces/shop/deployments/web"),
        "read through a1 with its real namespace: {upstream:?}"
    );
    assert!(b2_log.lock().unwrap().is_empty(), "b2 was used");
    assert!(
        wildcard_log.lock().unwrap().is_empty(),
        "the wildcard client was used"
    );
    let ns = downstream_of_a1();
    let downstream = down_log.lock().unwrap().clone();
    assert!(
        downstream.contains(&"POST /api/v1/namespaces".to_owned()),
        "the downstream namespace is created: {downstream:?}"
    );
    assert!(
        downstream
            .iter()
            .any(|l| l == &format!("PATCH /apis/apps/v1/namespaces/{ns}/deployments/web")),
        "the copy is applied into {ns}: {downstream:?}"
    );
    assert!(
        downstream.iter().all(|l| !l.contains("/namespaces/shop/")),
        "nothing is written to the workspace's own namespace name: {downstream:?}"
    );
}

#[tokio::test]
async fn a_404_of_one_workspace_deletes_nothing_until_the_watch_across_workspaces_agrees() {
    let our_copy = |method: &Method, _: &str| match *method {
        Method::GET => Some((
            StatusCode::OK,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
                "name": "web", "namespace": "x", "uid": "uid-1",
                "labels": {"workload.kcp.io/managed": "true", "workload.kcp.io/synced-from": "root-tmc"},
                "annotations": {"workload.kcp.io/sync-target": "west"}}}),
        )),
        _ => Some((
            StatusCode::OK,
            json!({"kind": "Status", "status": "Success"}),
        )),
    };
    let stores = |engine: &Engine, held: Option<Value>, listed: bool| {
        let mut up = Writer::new(engine.resources[0].clone());
        if listed {
            up.apply_watcher_event(&Event::Init);
            if let Some(o) = &held {
                up.apply_watcher_event(&Event::InitApply(dynamic(o)));
            }
            up.apply_watcher_event(&Event::InitDone);
        }
        let down = Writer::new(engine.resources[0].clone());
        engine.set_caches(Some(Arc::new(Stores {
            upstream: vec![up.as_reader()],
            downstream: vec![down.as_reader()],
            autoscalers: None,
        })));
    };
    // (Held without a Sync record: one with it is applied from the cache, not read.)
    let mut still_held = placed_in_a1();
    still_held["metadata"]["namespace"] = json!("a1|shop");
    still_held["metadata"]["labels"] = json!({});
    // Not listed yet, then listed and still holding the object: kept.
    for (held, listed) in [(None, false), (Some(still_held), true)] {
        let (a1, _) = fake(|_, _| Some(not_found("web")));
        let (b2, _) = fake(|_, _| None);
        let (down, down_log) = fake(our_copy);
        let (engine, _) = bound_engine(a1, b2, down);
        stores(&engine, held, listed);
        let err = engine.reconcile(&key_of_a1()).await.unwrap_err();
        assert!(matches!(err, Error::Requeue { .. }), "{err}");
        assert!(deletes(&down_log).is_empty(), "deleted on one 404 alone");
    }
    // Listed and without it: both witnesses agree, the copy goes.
    let (a1, _) = fake(|_, _| Some(not_found("web")));
    let (b2, _) = fake(|_, _| None);
    let (down, down_log) = fake(our_copy);
    let (engine, _) = bound_engine(a1, b2, down);
    stores(&engine, None, true);
    engine.reconcile(&key_of_a1()).await.unwrap();
    assert_eq!(
        deletes(&down_log),
        [format!(
            "DELETE /apis/apps/v1/namespaces/{}/deployments/web",
            downstream_of_a1()
        )]
    );
}

#[tokio::test]
async fn an_object_naming_no_workspace_is_neither_read_nor_written() {
    let (a1, a1_log) = fake(|_, _| Some((StatusCode::OK, placed_in_a1())));
    let (b2, _) = fake(|_, _| None);
    let (down, down_log) = fake(empty_cluster);
    let (engine, _) = bound_engine(a1, b2, down);
    let unscoped = ObjectKey {
        kind: 0,
        namespace: Some("shop".into()),
        name: "web".into(),
    };
    let err = engine.reconcile(&unscoped).await.unwrap_err();
    assert!(err.to_string().contains("names no workspace"), "{err}");
    assert!(a1_log.lock().unwrap().is_empty());
    assert!(down_log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_decision_for_a_target_not_granted_to_the_workspace_creates_no_copy() {
    // Not granted, then not known yet: refused before anything is written anywhere.
    for granted in [&[("a1", false)][..], &[]] {
        let (a1, a1_log) = fake(|_, _| Some((StatusCode::OK, placed_in_a1())));
        let (b2, _) = fake(|_, _| None);
        let (down, down_log) = fake(empty_cluster);
        let (engine, _) = granted_engine(a1, b2, down, granted);
        let err = engine.reconcile(&key_of_a1()).await.unwrap_err();
        assert!(matches!(err, Error::NotGranted { .. }), "{err}");
        assert!(
            err.to_string().contains("SyncTargetGrant"),
            "the error names the fix: {err}"
        );
        let writes: Vec<String> = a1_log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.starts_with("GET "))
            .cloned()
            .collect();
        assert!(
            writes.is_empty(),
            "written upstream (e.g. our finalizer): {writes:?}"
        );
        assert!(
            down_log.lock().unwrap().is_empty(),
            "the target was touched: {:?}",
            down_log.lock().unwrap()
        );
    }
}

#[tokio::test]
async fn a_copy_that_runs_is_maintained_when_its_workspace_is_no_longer_granted() {
    let (a1, _) = fake(|_, _| Some((StatusCode::OK, placed_in_a1())));
    let (b2, _) = fake(|_, _| None);
    let (down, down_log) = fake(empty_cluster);
    let (engine, _) = granted_engine(a1, b2, down, &[("a1", false)]);
    let ours = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "web", "namespace": downstream_of_a1(), "uid": "uid-1", "resourceVersion": "3",
        "labels": {"workload.kcp.io/managed": "true", "workload.kcp.io/synced-from": "root-tmc"},
        "annotations": {"workload.kcp.io/sync-target": "west"}}});
    let up = Writer::new(engine.resources[0].clone());
    let mut down_store = Writer::new(engine.resources[0].clone());
    down_store.apply_watcher_event(&Event::Apply(dynamic(&ours)));
    engine.set_caches(Some(Arc::new(Stores {
        upstream: vec![up.as_reader()],
        downstream: vec![down_store.as_reader()],
        autoscalers: None,
    })));
    engine.reconcile(&key_of_a1()).await.unwrap();
    assert!(deletes(&down_log).is_empty(), "a running copy was deleted");
    assert!(
        down_log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("PATCH ") && l.ends_with("/deployments/web")),
        "the running copy is kept up to date: {:?}",
        down_log.lock().unwrap()
    );
}

#[tokio::test]
async fn a_workspace_that_stopped_serving_the_kind_ends_the_work_only_when_no_copy_is_left() {
    // Its workspace unbound the export: GETs answer a 404 naming no object, the watch has dropped it.
    let listed_without_it = |engine: &Engine, copy: Option<Value>| {
        let mut up = Writer::new(engine.resources[0].clone());
        up.apply_watcher_event(&Event::Init);
        up.apply_watcher_event(&Event::InitDone);
        let mut down = Writer::new(engine.resources[0].clone());
        if let Some(copy) = &copy {
            down.apply_watcher_event(&Event::Apply(dynamic(copy)));
        }
        engine.set_caches(Some(Arc::new(Stores {
            upstream: vec![up.as_reader()],
            downstream: vec![down.as_reader()],
            autoscalers: None,
        })));
    };
    // No copy on the target: nothing left to do, nothing touched.
    let (a1, _) = fake(|_, _| Some(unserved()));
    let (b2, _) = fake(|_, _| None);
    let (down, down_log) = fake(empty_cluster);
    let (engine, _) = bound_engine(a1, b2, down);
    listed_without_it(&engine, None);
    engine.reconcile(&key_of_a1()).await.unwrap();
    assert!(
        down_log.lock().unwrap().is_empty(),
        "{:?}",
        down_log.lock().unwrap()
    );
    // A copy still runs: kept, and the failure stays visible (retried).
    let (a1, _) = fake(|_, _| Some(unserved()));
    let (b2, _) = fake(|_, _| None);
    let (down, down_log) = fake(empty_cluster);
    let (engine, _) = bound_engine(a1, b2, down);
    let copy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "web", "namespace": downstream_of_a1(), "uid": "uid-1",
        "labels": {"workload.kcp.io/managed": "true", "workload.kcp.io/synced-from": "root-tmc"},
        "annotations": {"workload.kcp.io/sync-target": "west"}}});
    listed_without_it(&engine, Some(copy));
    let err = engine.reconcile(&key_of_a1()).await.unwrap_err();
    assert!(matches!(err, Error::Upstream { .. }), "{err}");
    assert!(
        deletes(&down_log).is_empty(),
        "a copy was deleted on a 404 naming no object"
    );
}
