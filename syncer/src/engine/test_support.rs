//! Test support: the engine against a fake API server (a tower service
//! answering from a routing function and recording every request), and
//! engines whose watch caches hold given objects.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::core::DynamicObject;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::{Engine, ObjectKey, Stores};
use crate::copy::{CopyContext, build_copy};
use crate::health::HealthCell;
use crate::identity::{NamespaceMapping, SourceIdentity};
use crate::kinds::SyncedKind;

pub(super) type Route = fn(&Method, &str) -> Option<(StatusCode, Value)>;

/// A client whose every request is logged and answered by `route`
/// (`None` makes the request fail like a connection error).
/// A fake upstream that answers every request with the Deployment `web`.
pub(super) fn fake_upstream_ok() -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    fake(|_, _| {
        Some((
            StatusCode::OK,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
        ))
    })
}

pub(super) fn fake(route: Route) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let service = tower::service_fn(move |req: Request<Body>| {
        let line = format!("{} {}", req.method(), req.uri().path());
        seen.lock().unwrap().push(line);
        let answer = route(req.method(), req.uri().path());
        async move {
            match answer {
                Some((code, body)) => Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                None => Err("connection refused".into()),
            }
        }
    });
    (kube::Client::new(service, "default"), log)
}

pub(super) fn not_found(name: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
               "message": format!("deployments.apps \"{name}\" not found"),
               "details": {"name": name, "group": "apps", "kind": "deployments"}}),
    )
}

pub(super) fn unserved() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
               "message": "the server could not find the requested resource", "details": {}}),
    )
}

pub(super) fn copy(name: &str, target: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": name, "namespace": "shop", "uid": "uid-1",
        "labels": {"workload.kcp.io/managed": "true", "workload.kcp.io/synced-from": "root-tmc"},
        "annotations": {"workload.kcp.io/sync-target": target}}})
}

pub(super) fn engine(upstream: kube::Client, downstream: kube::Client) -> Engine {
    let ctx = CopyContext {
        target: "west".into(),
        source: SourceIdentity::new("root:tmc"),
        namespace_mapping: NamespaceMapping::Same,
    };
    let kinds = vec![SyncedKind::parse("apps/v1/Deployment").unwrap()];
    Engine::new(ctx, kinds, upstream, downstream, HealthCell::new("west"))
}

pub(super) fn key() -> ObjectKey {
    ObjectKey {
        kind: 0,
        namespace: Some("shop".into()),
        name: "web".into(),
    }
}

pub(super) fn deletes(log: &Mutex<Vec<String>>) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("DELETE"))
        .cloned()
        .collect()
}

pub(super) fn our_copy_route(method: &Method, _: &str) -> Option<(StatusCode, Value)> {
    match *method {
        Method::GET => Some((StatusCode::OK, copy("web", "west"))),
        Method::DELETE => Some((
            StatusCode::OK,
            json!({"kind": "Status", "status": "Success"}),
        )),
        _ => None,
    }
}

pub(super) fn placed(annotations: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "web", "namespace": "shop", "resourceVersion": "3", "generation": 1,
        "labels": {"state.workload.kcp.io/west": "Sync"},
        "annotations": annotations,
        "finalizers": ["workload.kcp.io/syncer-west"]}, "spec": {"replicas": 1}})
}

pub(super) fn dynamic(value: &Value) -> DynamicObject {
    serde_json::from_value(value.clone()).unwrap()
}

/// An engine whose watch caches hold `upstream` and `downstream` (writers kept for updates).
pub(super) fn cached_engine(
    up: kube::Client,
    down: kube::Client,
    upstream: Option<&Value>,
    downstream: Option<&Value>,
) -> (Engine, Writer<DynamicObject>, Writer<DynamicObject>) {
    let engine = engine(up, down);
    let mut up_writer = Writer::new(engine.resources[0].clone());
    let mut down_writer = Writer::new(engine.resources[0].clone());
    if let Some(o) = upstream {
        up_writer.apply_watcher_event(&Event::Apply(dynamic(o)));
    }
    if let Some(o) = downstream {
        down_writer.apply_watcher_event(&Event::Apply(dynamic(o)));
    }
    engine.set_caches(Some(Arc::new(Stores {
        upstream: vec![up_writer.as_reader()],
        downstream: vec![down_writer.as_reader()],
        autoscalers: None,
    })));
    (engine, up_writer, down_writer)
}

/// Our copy of `upstream` as the downstream server would hold it, with `status`.
pub(super) fn live_copy(engine: &Engine, upstream: &Value, status: Value) -> Value {
    let desired = build_copy(upstream, &engine.ctx, None, None, Utc::now()).unwrap();
    let mut live = desired.object;
    live["metadata"]["uid"] = json!("uid-1");
    live["metadata"]["resourceVersion"] = json!("5");
    live["status"] = status;
    live
}

pub(super) fn methods(log: &Mutex<Vec<String>>) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect()
}

/// Marks the downstream namespace `shop` as ensured: the engine neither reads nor creates it.
pub(super) fn namespace_ensured(engine: &Engine) {
    engine
        .known_namespaces
        .lock()
        .unwrap()
        .insert("shop".into());
}
