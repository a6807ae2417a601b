//! The per-object reconcile of one target: apply the desired copy, report its
//! status upstream, and remove copies only on positive evidence.
//!
//! Namespaces: the engine creates a missing downstream namespace (labelled
//! managed) and NEVER deletes a namespace, not even one it created: a
//! namespace may hold objects tmc does not own, and kcp TMC's worst bugs were
//! namespace deletions on lost connections and restarts.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{ApiResource, DynamicObject};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::copy::{CopyContext, annotation, build_copy, is_subset, object_name, target_result};
use crate::decision::{
    FIELD_MANAGER, MANAGED_LABEL, SYNC_TARGET_ANNOTATION, SYNCED_FROM_LABEL, TargetStatus,
    UPSTREAM_NAMESPACE_ANNOTATION,
};
use crate::error::{Error, Result, is_already_exists, is_not_found, is_object_not_found};
use crate::health::HealthCell;
use crate::kinds::SyncedKind;
use crate::protocol::{
    Assignment, add_finalizer_patch, assignment, cleanup_patch, has_protocol_keys, is_our_copy,
    reported_status, status_patch,
};

/// How long to wait before checking again that a deleted copy is gone.
const DELETE_POLL: Duration = Duration::from_secs(1);

/// Identifies an upstream object: kind index, upstream namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ObjectKey {
    pub kind: usize,
    pub namespace: Option<String>,
    pub name: String,
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing more to do until the next event.
    Done,
    /// Look again after this delay (e.g. a delete in progress).
    After(Duration),
}

/// The reconcile logic shared by the workers of one syncer.
pub(crate) struct Engine {
    pub ctx: CopyContext,
    pub kinds: Vec<SyncedKind>,
    pub resources: Vec<ApiResource>,
    pub upstream: kube::Client,
    pub downstream: kube::Client,
    pub health: HealthCell,
    known_namespaces: Mutex<HashSet<String>>,
    /// Set by the heartbeat when a GET of the SyncTarget answered 404: while
    /// set, nothing is applied (a deleted target must not get workloads back).
    target_missing: AtomicBool,
}

impl Engine {
    pub(crate) fn new(
        ctx: CopyContext,
        kinds: Vec<SyncedKind>,
        upstream: kube::Client,
        downstream: kube::Client,
        health: HealthCell,
    ) -> Self {
        let resources = kinds.iter().map(SyncedKind::api_resource).collect();
        Self {
            ctx,
            kinds,
            resources,
            upstream,
            downstream,
            health,
            known_namespaces: Mutex::new(HashSet::new()),
            target_missing: AtomicBool::new(false),
        }
    }

    fn target(&self) -> &str {
        &self.ctx.target
    }

    /// Records whether the SyncTarget object exists upstream (see `target_missing`).
    pub(crate) fn set_target_missing(&self, missing: bool) {
        self.target_missing.store(missing, Ordering::Relaxed);
    }

    fn api(
        &self,
        client: &kube::Client,
        kind: usize,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        let ar = &self.resources[kind];
        match namespace {
            Some(ns) if self.kinds[kind].namespaced => Api::namespaced_with(client.clone(), ns, ar),
            _ => Api::all_with(client.clone(), ar),
        }
    }

    fn describe(&self, key: &ObjectKey) -> String {
        let kind = &self.kinds[key.kind].kind;
        match &key.namespace {
            Some(ns) => format!("{kind} {ns}/{}", key.name),
            None => format!("{kind} {}", key.name),
        }
    }

    fn downstream_namespace(&self, key: &ObjectKey) -> Option<String> {
        key.namespace
            .as_deref()
            .filter(|_| self.kinds[key.kind].namespaced)
            .map(|ns| self.ctx.namespace_mapping.downstream(ns))
    }

    /// Reconciles one upstream object and its copy.
    pub(crate) async fn reconcile(&self, key: &ObjectKey) -> Result<Outcome> {
        let what = self.describe(key);
        let up = self.api(&self.upstream, key.kind, key.namespace.as_deref());
        let object = match up.get(&key.name).await {
            Ok(obj) => Some(to_value(&obj, &what)?),
            Err(err) if is_object_not_found(&err, &key.name) => None,
            Err(err) => {
                self.health.update(|h| h.upstream_connected = false);
                return Err(Error::upstream(format!("get {what}"), err));
            }
        };
        self.health.update(|h| h.upstream_connected = true);
        match object {
            Some(object) => match assignment(&object, self.target()) {
                Assignment::Sync => self.sync(key, &up, &object).await,
                Assignment::Remove => self.remove(key, &up, &object).await,
                Assignment::NotPlaced => self
                    .delete_copy(key, "not placed on this target")
                    .await
                    .map(|_| Outcome::Done),
            },
            // A successful GET said 404 for this very name: the upstream object is gone.
            None => self
                .delete_copy(key, "upstream object is gone")
                .await
                .map(|_| Outcome::Done),
        }
    }

    /// Applies the desired copy and reports its status upstream.
    async fn sync(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        object: &Value,
    ) -> Result<Outcome> {
        let what = self.describe(key);
        if self.target_missing.load(Ordering::Relaxed) {
            let err = Error::TargetMissing {
                target: self.target().to_string(),
            };
            self.report_error(key, up, object, &err).await;
            return Err(Error::Requeue {
                what: format!("not applying {what}: {err}"),
                after: Duration::from_secs(5),
            });
        }
        if let Some(patch) = add_finalizer_patch(object, self.target()) {
            up.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|err| Error::upstream(format!("add finalizer to {what}"), err))?;
        }
        match self.apply_copy(key, object).await {
            Ok(status) => {
                self.report(key, up, object, status).await?;
                Ok(Outcome::Done)
            }
            Err(err) => {
                self.report_error(key, up, object, &err).await;
                Err(err)
            }
        }
    }

    /// Reports `err` upstream, keeping what was last applied.
    async fn report_error(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        object: &Value,
        err: &Error,
    ) {
        let mut status = reported_status(object, self.target()).unwrap_or_default();
        status.error = Some(err.to_string());
        if let Err(report_err) = self.report(key, up, object, status).await {
            warn!(object = %self.describe(key), error = %report_err, "could not report the sync error upstream");
        }
    }

    /// Ensures the namespace, then server-side applies the copy unless the
    /// live copy already matches. Returns the status to report.
    async fn apply_copy(&self, key: &ObjectKey, object: &Value) -> Result<TargetStatus> {
        let what = self.describe(key);
        let result = target_result(object, self.target())?;
        let ns = self.downstream_namespace(key);
        if let (Some(ns), Some(upstream_ns)) = (&ns, &key.namespace) {
            self.ensure_namespace(ns, upstream_ns).await?;
        }
        let down = self.api(&self.downstream, key.kind, ns.as_deref());
        let live = match down.get_opt(&key.name).await {
            Ok(live) => live.map(|l| to_value(&l, &what)).transpose()?,
            Err(err) => return Err(self.downstream_error(format!("get copy of {what}"), err)),
        };
        self.health.update(|h| h.downstream_connected = true);
        if let Some(live) = &live
            && !is_our_copy(live, self.target(), &self.ctx.source.synced_from)
        {
            return Err(Error::NotOwned {
                object: format!("{what} (downstream {})", object_name(live)),
                label: MANAGED_LABEL,
            });
        }
        let desired = build_copy(
            object,
            &self.ctx,
            result.as_ref(),
            live.as_ref(),
            Utc::now(),
        )?;
        let unchanged = live.as_ref().is_some_and(|live| {
            annotation(live, crate::decision::CONTENT_HASH_ANNOTATION)
                == Some(desired.hash.as_str())
                && is_subset(&desired.object, live)
        });
        let applied = if unchanged {
            live.unwrap_or_default()
        } else {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let applied = match down
                .patch(&key.name, &params, &Patch::Apply(&desired.object))
                .await
            {
                Ok(applied) => applied,
                Err(err) => {
                    if let Some(ns) = &ns
                        && is_not_found(&err)
                    {
                        self.forget_namespace(ns);
                    }
                    return Err(self.downstream_error(format!("apply copy of {what}"), err));
                }
            };
            info!(object = %what, target = %self.target(), hash = %desired.hash, "applied copy");
            self.health.update(|h| h.objects_synced += 1);
            to_value(&applied, &what)?
        };
        Ok(TargetStatus {
            applied_hash: desired.hash,
            observed_generation: object
                .pointer("/metadata/generation")
                .and_then(Value::as_i64),
            status: applied.get("status").filter(|s| !s.is_null()).cloned(),
            error: None,
        })
    }

    /// Writes the status annotation upstream when it changed.
    async fn report(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        object: &Value,
        status: TargetStatus,
    ) -> Result<()> {
        let Some(patch) = status_patch(object, self.target(), &status) else {
            return Ok(());
        };
        match up
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Deleted meanwhile: nothing to report on.
            Err(err) if is_object_not_found(&err, &key.name) => Ok(()),
            Err(err) => Err(Error::upstream(
                format!("report status of {}", self.describe(key)),
                err,
            )),
        }
    }

    /// Deletes the copy, waits until it is gone, then removes our protocol keys upstream.
    async fn remove(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        object: &Value,
    ) -> Result<Outcome> {
        let what = self.describe(key);
        if self.delete_copy(key, "removal requested upstream").await? {
            return Ok(Outcome::After(DELETE_POLL));
        }
        if !has_protocol_keys(object, self.target()) {
            return Ok(Outcome::Done);
        }
        let patch = cleanup_patch(object, self.target());
        match up
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                info!(object = %what, target = %self.target(), "copy removed; protocol keys and finalizer cleaned up");
                Ok(Outcome::Done)
            }
            Err(err) if is_object_not_found(&err, &key.name) => Ok(Outcome::Done),
            Err(err) => Err(Error::upstream(
                format!("clean up protocol keys of {what}"),
                err,
            )),
        }
    }

    /// Deletes our copy of `key` if it exists. Returns `true` while a copy
    /// still exists (deleted now or terminating), `false` once it is gone.
    /// Objects without our labels are never touched.
    async fn delete_copy(&self, key: &ObjectKey, why: &str) -> Result<bool> {
        let what = self.describe(key);
        let ns = self.downstream_namespace(key);
        let down = self.api(&self.downstream, key.kind, ns.as_deref());
        let live = match down.get_opt(&key.name).await {
            Ok(Some(live)) => to_value(&live, &what)?,
            Ok(None) => return Ok(false),
            Err(err) => return Err(self.downstream_error(format!("get copy of {what}"), err)),
        };
        self.health.update(|h| h.downstream_connected = true);
        if !is_our_copy(&live, self.target(), &self.ctx.source.synced_from) {
            debug!(object = %what, "downstream object is not our copy; leaving it alone");
            return Ok(false);
        }
        if live
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            return Ok(true);
        }
        let uid = live
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match down.delete(&key.name, &params).await {
            Ok(_) => {
                info!(object = %what, target = %self.target(), reason = why, "deleted copy");
                self.health.update(|h| h.objects_deleted += 1);
                Ok(true)
            }
            Err(err) if is_not_found(&err) => Ok(false),
            Err(err) => Err(self.downstream_error(format!("delete copy of {what}"), err)),
        }
    }

    /// Creates downstream namespace `ns` (labelled managed) when missing.
    async fn ensure_namespace(&self, ns: &str, upstream_ns: &str) -> Result<()> {
        if self
            .known_namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(ns)
        {
            return Ok(());
        }
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.downstream.clone());
        match api.get_opt(ns).await {
            Ok(Some(existing)) if existing.metadata.deletion_timestamp.is_none() => {}
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
                let namespace = serde_json::from_value(json!({
                    "metadata": {
                        "name": ns,
                        "labels": {MANAGED_LABEL: "true", SYNCED_FROM_LABEL: self.ctx.source.synced_from},
                        "annotations": annotations,
                    }
                }))
                .map_err(|err| Error::InvalidObject { object: format!("namespace {ns}"), reason: err.to_string() })?;
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

    fn forget_namespace(&self, ns: &str) {
        self.known_namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(ns);
    }

    fn downstream_error(&self, action: String, err: kube::Error) -> Error {
        let err = Error::downstream(action, err);
        if err.is_downstream_unreachable() {
            self.health.update(|h| h.downstream_connected = false);
        }
        err
    }
}

fn to_value(object: &DynamicObject, what: &str) -> Result<Value> {
    serde_json::to_value(object).map_err(|err| Error::InvalidObject {
        object: what.to_string(),
        reason: format!("cannot be serialized: {err}"),
    })
}

#[cfg(test)]
mod tests {
    //! The engine against a fake API server (a tower service answering from a
    //! routing function and recording every request): the deletion rules.

    use std::sync::{Arc, Mutex};

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;
    use crate::identity::{NamespaceMapping, SourceIdentity};

    type Route = fn(&Method, &str) -> Option<(StatusCode, Value)>;

    /// A client whose every request is logged and answered by `route`
    /// (`None` makes the request fail like a connection error).
    fn fake(route: Route) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
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

    fn not_found(name: &str) -> (StatusCode, Value) {
        (
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                   "message": format!("deployments.apps \"{name}\" not found"),
                   "details": {"name": name, "group": "apps", "kind": "deployments"}}),
        )
    }

    fn unserved() -> (StatusCode, Value) {
        (
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                   "message": "the server could not find the requested resource", "details": {}}),
        )
    }

    fn copy(name: &str, target: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
            "name": name, "namespace": "shop", "uid": "uid-1",
            "labels": {"workload.kcp.io/managed": "true", "workload.kcp.io/synced-from": "root-tmc"},
            "annotations": {"workload.kcp.io/sync-target": target}}})
    }

    fn engine(upstream: kube::Client, downstream: kube::Client) -> Engine {
        let ctx = CopyContext {
            target: "west".into(),
            source: SourceIdentity::new("root:tmc"),
            namespace_mapping: NamespaceMapping::Same,
        };
        let kinds = vec![SyncedKind::parse("apps/v1/Deployment").unwrap()];
        Engine::new(ctx, kinds, upstream, downstream, HealthCell::new("west"))
    }

    fn key() -> ObjectKey {
        ObjectKey {
            kind: 0,
            namespace: Some("shop".into()),
            name: "web".into(),
        }
    }

    fn deletes(log: &Mutex<Vec<String>>) -> Vec<String> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("DELETE"))
            .cloned()
            .collect()
    }

    fn our_copy_route(method: &Method, _: &str) -> Option<(StatusCode, Value)> {
        match *method {
            Method::GET => Some((StatusCode::OK, copy("web", "west"))),
            Method::DELETE => Some((
                StatusCode::OK,
                json!({"kind": "Status", "status": "Success"}),
            )),
            _ => None,
        }
    }

    #[tokio::test]
    async fn unreachable_upstream_deletes_nothing() {
        let (up, _) = fake(|_, _| None);
        let (down, down_log) = fake(our_copy_route);
        let err = engine(up, down).reconcile(&key()).await.unwrap_err();
        assert!(matches!(err, Error::Upstream { .. }), "{err}");
        assert!(
            down_log.lock().unwrap().is_empty(),
            "downstream must not even be read"
        );
    }

    #[tokio::test]
    async fn upstream_server_error_deletes_nothing() {
        let (up, _) = fake(|_, _| {
            Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"kind": "Status", "code": 500, "message": "etcd down"}),
            ))
        });
        let (down, down_log) = fake(our_copy_route);
        assert!(engine(up, down).reconcile(&key()).await.is_err());
        assert!(deletes(&down_log).is_empty());
    }

    #[tokio::test]
    async fn unserved_resource_is_not_evidence_of_absence() {
        let (up, _) = fake(|_, _| Some(unserved()));
        let (down, down_log) = fake(our_copy_route);
        assert!(engine(up, down).reconcile(&key()).await.is_err());
        assert!(deletes(&down_log).is_empty());
    }

    #[tokio::test]
    async fn confirmed_absence_deletes_our_copy_by_uid() {
        let (up, _) = fake(|_, _| Some(not_found("web")));
        let (down, down_log) = fake(our_copy_route);
        let outcome = engine(up, down).reconcile(&key()).await.unwrap();
        assert_eq!(outcome, Outcome::Done);
        assert_eq!(
            deletes(&down_log),
            ["DELETE /apis/apps/v1/namespaces/shop/deployments/web"]
        );
    }

    #[tokio::test]
    async fn confirmed_absence_leaves_foreign_objects_alone() {
        let (up, _) = fake(|_, _| Some(not_found("web")));
        let (down, down_log) = fake(|method, _| match *method {
            // Same name, but the copy of another sync target.
            Method::GET => Some((StatusCode::OK, copy("web", "east"))),
            _ => Some((StatusCode::OK, json!({}))),
        });
        engine(up, down).reconcile(&key()).await.unwrap();
        assert!(deletes(&down_log).is_empty());
    }

    #[tokio::test]
    async fn unreachable_downstream_reports_the_error_and_deletes_nothing() {
        let (up, up_log) = fake(|method, _| match *method {
            Method::GET => Some((
                StatusCode::OK,
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
                    "name": "web", "namespace": "shop", "resourceVersion": "3",
                    "labels": {"state.workload.kcp.io/west": "Sync"},
                    "finalizers": ["workload.kcp.io/syncer-west"]}, "spec": {}}),
            )),
            _ => Some((
                StatusCode::OK,
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
            )),
        });
        let (down, down_log) = fake(|_, _| None);
        let engine = engine(up, down);
        let err = engine.reconcile(&key()).await.unwrap_err();
        assert!(err.is_downstream_unreachable(), "{err}");
        assert!(deletes(&down_log).is_empty());
        // The error is reported upstream in the status annotation (a PATCH), nothing else is written.
        let writes: Vec<String> = up_log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.starts_with("GET"))
            .cloned()
            .collect();
        assert_eq!(
            writes,
            ["PATCH /apis/apps/v1/namespaces/shop/deployments/web"]
        );
        assert!(!engine.health.snapshot().downstream_connected);
    }
}
