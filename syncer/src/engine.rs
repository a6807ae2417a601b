//! The per-object reconcile of one target: apply the desired copy, report its
//! status upstream, and remove copies only on positive evidence.
//!
//! Namespaces: the engine creates a missing downstream namespace (labelled
//! managed) and NEVER deletes a namespace, not even one it created: a
//! namespace may hold objects tmc does not own, and kcp TMC's worst bugs were
//! namespace deletions on lost connections and restarts.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::Utc;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{ApiResource, DynamicObject, TypeMeta};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::copy::{CopyContext, annotation, build_copy, is_subset, object_name, target_result};
use crate::decision::{
    FIELD_MANAGER, MANAGED_LABEL, SYNC_TARGET_ANNOTATION, SYNCED_FROM_LABEL, TargetStatus,
    UPSTREAM_NAMESPACE_ANNOTATION,
};
use crate::error::{
    Error, Result, is_already_exists, is_conflict, is_not_found, is_object_not_found,
};
use crate::health::HealthCell;
use crate::kinds::SyncedKind;
use crate::protocol::{
    Assignment, add_finalizer_patch, assignment, cleanup_patch, has_protocol_keys, is_our_copy,
    reported_status, status_patch,
};
use crate::syncer::Stores;

/// How long to wait before checking again that a deleted copy is gone.
const DELETE_POLL: Duration = Duration::from_secs(1);

/// Default of [`Engine::status_coalesce`]: after a status report, changes of
/// the copy's `.status` alone wait this long, so that a rollout's several
/// status updates make one or two kcp writes instead of one each.
pub(crate) const STATUS_COALESCE: Duration = Duration::from_secs(2);

/// Which side an object lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Upstream,
    Downstream,
}

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
    /// The watch caches of the running syncer (none in unit tests: every read is a GET then).
    caches: RwLock<Option<Arc<Stores>>>,
    /// What our own writes returned: newer than the watch cache until the
    /// write's watch event arrives (then the entry is dropped).
    written: Mutex<HashMap<(Side, ObjectKey), DynamicObject>>,
    /// Per object: until when a report of a `.status` change alone is held back.
    report_hold: Mutex<HashMap<ObjectKey, Instant>>,
    /// How long status-only reports are held back after a report.
    pub status_coalesce: Duration,
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
            caches: RwLock::new(None),
            written: Mutex::new(HashMap::new()),
            report_hold: Mutex::new(HashMap::new()),
            status_coalesce: STATUS_COALESCE,
        }
    }

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
        let now = Instant::now();
        self.report_hold
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now);
    }

    /// The freshest object we know of `key` on `side` without a request: the
    /// watch cache's, or what our own last write returned if that is newer.
    /// `None` when the cache does not hold it (it may not exist, or not be
    /// ours, or the cache may lag): the caller then GETs.
    fn cached(&self, side: Side, key: &ObjectKey) -> Option<DynamicObject> {
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
    fn remember(&self, side: Side, key: &ObjectKey, object: DynamicObject) {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((side, key.clone()), object);
    }

    /// Forgets everything remembered about `key` (it is read fresh or gone).
    fn forget(&self, key: &ObjectKey) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        written.remove(&(Side::Upstream, key.clone()));
        written.remove(&(Side::Downstream, key.clone()));
        drop(written);
        self.report_hold
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
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

    /// `Kind namespace/name` of `key`, for messages (and the health's error scopes).
    pub(crate) fn describe(&self, key: &ObjectKey) -> String {
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
    ///
    /// Fast path: when the upstream watch cache holds the object and it asks
    /// for a copy, the copy is applied from the cached object (a newer version
    /// arrives as another watch event and is applied in turn). Everything
    /// else, in particular every path that may delete a copy, reads the
    /// object fresh first: a copy is deleted only on positive evidence.
    pub(crate) async fn reconcile(&self, key: &ObjectKey) -> Result<Outcome> {
        let what = self.describe(key);
        let up = self.api(&self.upstream, key.kind, key.namespace.as_deref());
        if let Some(cached) = self.cached(Side::Upstream, key) {
            let object = to_value(&cached, &what)?;
            if assignment(&object, self.target()) == Assignment::Sync {
                match self.sync(key, &up, object, true).await? {
                    Some(outcome) => return Ok(outcome),
                    // The cache was behind the server: read the object fresh.
                    None => debug!(object = %what, "cached object is stale; reading it"),
                }
            }
        }
        self.forget(key);
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
                Assignment::Sync => self
                    .sync(key, &up, object, false)
                    .await
                    .map(|outcome| outcome.unwrap_or(Outcome::Done)),
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

    /// Applies the desired copy and reports its status upstream. `None` when
    /// `object` came from the cache and proved stale (a 409 on the finalizer).
    async fn sync(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        mut object: Value,
        from_cache: bool,
    ) -> Result<Option<Outcome>> {
        let what = self.describe(key);
        if self.target_missing.load(Ordering::Relaxed) {
            let err = Error::TargetMissing {
                target: self.target().to_string(),
            };
            self.report_error(key, up, &object, &err).await;
            return Err(Error::Requeue {
                what: format!("not applying {what}: {err}"),
                after: Duration::from_secs(5),
            });
        }
        if let Some(patch) = add_finalizer_patch(&object, self.target()) {
            match up
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    object = to_value(&updated, &what)?;
                    self.remember(Side::Upstream, key, updated);
                }
                Err(err) if from_cache && (is_conflict(&err) || is_not_found(&err)) => {
                    return Ok(None);
                }
                Err(err) => return Err(Error::upstream(format!("add finalizer to {what}"), err)),
            }
        }
        match self.apply_copy(key, &object).await {
            Ok(status) => self.report(key, up, &object, status).await.map(Some),
            Err(err) => {
                self.report_error(key, up, &object, &err).await;
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
    ///
    /// The live copy comes from the downstream watch cache when it holds our
    /// copy; the apply then carries the cached resourceVersion as a
    /// precondition, so a cache that lags (the copy changed or was replaced by
    /// an object that is not ours) makes it fail with 409, and the copy is read
    /// fresh and applied again. Without a cached copy it is read with a GET (an
    /// object that is not ours is never overwritten).
    async fn apply_copy(&self, key: &ObjectKey, object: &Value) -> Result<TargetStatus> {
        let what = self.describe(key);
        let result = target_result(object, self.target())?;
        let ns = self.downstream_namespace(key);
        if let (Some(ns), Some(upstream_ns)) = (&ns, &key.namespace) {
            self.ensure_namespace(ns, upstream_ns).await?;
        }
        let down = self.api(&self.downstream, key.kind, ns.as_deref());
        let mut cached = self
            .cached(Side::Downstream, key)
            .map(|live| to_value(&live, &what))
            .transpose()?
            .filter(|live| is_our_copy(live, self.target(), &self.ctx.source.synced_from));
        loop {
            let from_cache = cached.is_some();
            let live = match cached.take() {
                Some(live) => Some(live),
                None => {
                    let live = match down.get_opt(&key.name).await {
                        Ok(live) => live.map(|l| to_value(&l, &what)).transpose()?,
                        Err(err) => {
                            return Err(self.downstream_error(format!("get copy of {what}"), err));
                        }
                    };
                    self.health.update(|h| h.downstream_connected = true);
                    live
                }
            };
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
                let mut body = desired.object.clone();
                if from_cache
                    && let Some(version) = live
                        .as_ref()
                        .and_then(|l| l.pointer("/metadata/resourceVersion"))
                {
                    body["metadata"]["resourceVersion"] = version.clone();
                }
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let applied = match down.patch(&key.name, &params, &Patch::Apply(&body)).await {
                    Ok(applied) => applied,
                    Err(err) if from_cache && is_stale_precondition(&err) => {
                        debug!(object = %what, error = %err, "cached copy is stale; reading it");
                        continue;
                    }
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
                self.health.synced(&self.kinds[key.kind].to_string());
                let value = to_value(&applied, &what)?;
                self.remember(Side::Downstream, key, applied);
                value
            };
            return Ok(TargetStatus {
                applied_hash: desired.hash,
                observed_generation: object
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64),
                status: applied.get("status").filter(|s| !s.is_null()).cloned(),
                error: None,
            });
        }
    }

    /// Writes the status annotation upstream when it changed. A change of the
    /// copy's `.status` alone is held back for `status_coalesce` after the
    /// previous report (the object is looked at again then); a new apply,
    /// generation or error is reported at once (tmcd's create-before-delete
    /// movement waits for the "applied" report).
    async fn report(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        object: &Value,
        status: TargetStatus,
    ) -> Result<Outcome> {
        let Some(patch) = status_patch(object, self.target(), &status) else {
            return Ok(Outcome::Done);
        };
        let status_only = reported_status(object, self.target()).is_some_and(|previous| {
            previous.applied_hash == status.applied_hash
                && previous.observed_generation == status.observed_generation
                && previous.error == status.error
        });
        let now = Instant::now();
        {
            let holds = self
                .report_hold
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if status_only
                && let Some(until) = holds.get(key)
                && *until > now
            {
                return Ok(Outcome::After(*until - now));
            }
        }
        match up
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                self.remember(Side::Upstream, key, updated);
                self.report_hold
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key.clone(), now + self.status_coalesce);
                Ok(Outcome::Done)
            }
            // Deleted meanwhile: nothing to report on.
            Err(err) if is_object_not_found(&err, &key.name) => Ok(Outcome::Done),
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
                self.health.deleted(&self.kinds[key.kind].to_string());
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

/// True when an apply with a resourceVersion precondition failed because the
/// version is not the live one (a copy that is gone meanwhile is simply
/// created: the server ignores the version on create, as the sync_requests
/// test shows).
fn is_stale_precondition(err: &kube::Error) -> bool {
    is_conflict(err)
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

    // The fast path: the engine reading the syncer's watch caches.

    use std::sync::atomic::AtomicUsize;

    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn placed(annotations: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
            "name": "web", "namespace": "shop", "resourceVersion": "3", "generation": 1,
            "labels": {"state.workload.kcp.io/west": "Sync"},
            "annotations": annotations,
            "finalizers": ["workload.kcp.io/syncer-west"]}, "spec": {"replicas": 1}})
    }

    fn dynamic(value: &Value) -> DynamicObject {
        serde_json::from_value(value.clone()).unwrap()
    }

    /// An engine whose watch caches hold `upstream` and `downstream` (writers kept for updates).
    fn cached_engine(
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
        })));
        (engine, up_writer, down_writer)
    }

    /// Our copy of `upstream` as the downstream server would hold it, with `status`.
    fn live_copy(engine: &Engine, upstream: &Value, status: Value) -> Value {
        let desired = build_copy(upstream, &engine.ctx, None, None, Utc::now()).unwrap();
        let mut live = desired.object;
        live["metadata"]["uid"] = json!("uid-1");
        live["metadata"]["resourceVersion"] = json!("5");
        live["status"] = status;
        live
    }

    fn methods(log: &Mutex<Vec<String>>) -> Vec<String> {
        log.lock()
            .unwrap()
            .iter()
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_cached_placed_object_is_applied_without_reading_upstream() {
        let (up, up_log) = fake(|method, _| match *method {
            Method::PATCH => Some((StatusCode::OK, placed(json!({})))),
            _ => Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"kind": "Status", "code": 500, "message": "must not be read"}),
            )),
        });
        let (down, down_log) = fake(|method, path| match (method.clone(), path) {
            (Method::GET, "/api/v1/namespaces/shop") => Some((
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
            )),
            (Method::GET, _) => Some(not_found("web")),
            (Method::PATCH, _) => Some((StatusCode::OK, copy("web", "west"))),
            _ => None,
        });
        let object = placed(json!({}));
        let (engine, _w1, _w2) = cached_engine(up, down, Some(&object), None);
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        // Upstream: only the "applied" report; downstream: namespace, copy (absent from the cache), apply.
        assert_eq!(methods(&up_log), ["PATCH"]);
        assert_eq!(methods(&down_log), ["GET", "GET", "PATCH"]);
        let health = engine.health.snapshot();
        assert_eq!(health.kinds["apps/v1/Deployment"].synced, 1);
        assert_eq!(health.objects_synced, 1);
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
        };
        let mut object = object;
        object["metadata"]["annotations"]["status.workload.kcp.io/west"] =
            json!(serde_json::to_string(&status).unwrap());
        let (engine, _w1, _w2) =
            cached_engine(up, down, Some(&untyped(object)), Some(&untyped(live)));
        engine
            .known_namespaces
            .lock()
            .unwrap()
            .insert("shop".into());
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        assert!(up_log.lock().unwrap().is_empty(), "{up_log:?}");
        assert!(down_log.lock().unwrap().is_empty(), "{down_log:?}");
    }

    #[tokio::test]
    async fn a_cached_removal_is_confirmed_by_a_fresh_read() {
        // The cache still shows a deletion request that tmcd has withdrawn since.
        let (up, up_log) = fake(|method, _| match *method {
            Method::GET => Some((StatusCode::OK, placed(json!({})))),
            _ => Some((StatusCode::OK, placed(json!({})))),
        });
        let (down, down_log) = fake(our_copy_route);
        let stale =
            placed(json!({"deletion.internal.workload.kcp.io/west": "2026-01-01T00:00:00Z"}));
        let (engine, _w1, _w2) = cached_engine(up, down, Some(&stale), None);
        let _ = engine.reconcile(&key()).await;
        assert_eq!(methods(&up_log).first().map(String::as_str), Some("GET"));
        assert!(
            deletes(&down_log).is_empty(),
            "{:?}",
            down_log.lock().unwrap()
        );
    }

    #[tokio::test]
    async fn a_copy_missing_from_the_upstream_cache_is_deleted_only_after_a_404() {
        let (up, _) = fake(|_, _| None);
        let (down, down_log) = fake(our_copy_route);
        let (engine, _w1, _w2) = cached_engine(up, down, None, Some(&copy("web", "west")));
        assert!(engine.reconcile(&key()).await.is_err());
        assert!(deletes(&down_log).is_empty());

        let (up, _) = fake(|_, _| Some(not_found("web")));
        let (down, down_log) = fake(our_copy_route);
        let (engine, _w1, _w2) = cached_engine(up, down, None, Some(&copy("web", "west")));
        engine.reconcile(&key()).await.unwrap();
        assert_eq!(deletes(&down_log).len(), 1);
    }

    #[tokio::test]
    async fn a_stale_cached_copy_is_read_again_before_applying() {
        static PATCHES: AtomicUsize = AtomicUsize::new(0);
        let (up, _) = fake(|_, _| Some((StatusCode::OK, placed(json!({})))));
        let (down, down_log) = fake(|method, _| match *method {
            // The precondition of the cached version fails once.
            Method::PATCH if PATCHES.fetch_add(1, Ordering::SeqCst) == 0 => Some((
                StatusCode::CONFLICT,
                json!({"kind": "Status", "status": "Failure", "reason": "Conflict", "code": 409,
                       "message": "the object has been modified"}),
            )),
            Method::PATCH => Some((StatusCode::OK, copy("web", "west"))),
            Method::GET => Some((StatusCode::OK, copy("web", "west"))),
            _ => None,
        });
        let object = placed(json!({}));
        // The cached copy is ours but has other content: an apply is due.
        let (engine, _w1, _w2) = cached_engine(up, down, Some(&object), Some(&copy("web", "west")));
        engine
            .known_namespaces
            .lock()
            .unwrap()
            .insert("shop".into());
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        assert_eq!(methods(&down_log), ["PATCH", "GET", "PATCH"]);
    }

    #[tokio::test]
    async fn a_foreign_object_missing_from_the_cache_is_never_overwritten() {
        let (up, up_log) = fake(|_, _| Some((StatusCode::OK, placed(json!({})))));
        let (down, down_log) = fake(|method, _| match *method {
            // Same name downstream, without our marks (not in the filtered watch cache).
            Method::GET => Some((
                StatusCode::OK,
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "web", "namespace": "shop", "uid": "u"}}),
            )),
            _ => Some((StatusCode::OK, json!({}))),
        });
        let object = placed(json!({}));
        let (engine, _w1, _w2) = cached_engine(up, down, Some(&object), None);
        engine
            .known_namespaces
            .lock()
            .unwrap()
            .insert("shop".into());
        let err = engine.reconcile(&key()).await.unwrap_err();
        assert!(matches!(err, Error::NotOwned { .. }), "{err}");
        assert_eq!(methods(&down_log), ["GET"]);
        // The error is reported upstream.
        assert_eq!(methods(&up_log), ["PATCH"]);
    }

    #[tokio::test(start_paused = true)]
    async fn status_only_changes_are_coalesced_but_applies_are_reported_at_once() {
        let (up, up_log) = fake(|_, _| {
            Some((
                StatusCode::OK,
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
            ))
        });
        let (down, down_log) = fake(|_, _| None);
        let engine = engine(up.clone(), down.clone());
        let bare = placed(json!({}));
        let hash = build_copy(&bare, &engine.ctx, None, None, Utc::now())
            .unwrap()
            .hash;
        let reported = |status: Value| {
            let s = TargetStatus {
                applied_hash: hash.clone(),
                observed_generation: Some(1),
                status: Some(status),
                error: None,
            };
            placed(json!({"status.workload.kcp.io/west": serde_json::to_string(&s).unwrap()}))
        };
        let object = reported(json!({"replicas": 1}));
        let copy_v1 = live_copy(&engine, &bare, json!({"replicas": 1, "readyReplicas": 1}));
        let (engine, mut up_cache, mut down_cache) =
            cached_engine(up, down, Some(&object), Some(&copy_v1));
        engine
            .known_namespaces
            .lock()
            .unwrap()
            .insert("shop".into());
        // No report in the last window: written at once.
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        assert_eq!(methods(&up_log), ["PATCH"]);
        // The watch delivers our report; then the copy's status changes again: held back.
        up_cache.apply_watcher_event(&Event::Apply(dynamic(&reported(
            json!({"replicas": 1, "readyReplicas": 1}),
        ))));
        let mut copy_v2 = copy_v1.clone();
        copy_v2["status"]["availableReplicas"] = json!(1);
        down_cache.apply_watcher_event(&Event::Apply(dynamic(&copy_v2)));
        let outcome = engine.reconcile(&key()).await.unwrap();
        assert!(
            matches!(outcome, Outcome::After(d) if d > Duration::ZERO && d <= STATUS_COALESCE),
            "{outcome:?}"
        );
        assert_eq!(methods(&up_log), ["PATCH"], "held back");
        // Once the window is over, the latest status is written.
        tokio::time::advance(STATUS_COALESCE).await;
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        assert_eq!(methods(&up_log), ["PATCH", "PATCH"]);
        // A new decision (other content) inside the next window is applied and reported at once.
        assert!(down_log.lock().unwrap().is_empty(), "nothing applied yet");
        let mut changed =
            reported(json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}));
        changed["metadata"]["resourceVersion"] = json!("9");
        changed["metadata"]["annotations"]["result.workload.kcp.io/west"] =
            json!("{\"replicas\":2}");
        up_cache.apply_watcher_event(&Event::Apply(dynamic(&changed)));
        // The downstream fake refuses connections: the error is reported at once, too.
        assert!(engine.reconcile(&key()).await.is_err());
        assert_eq!(methods(&up_log), ["PATCH", "PATCH", "PATCH"]);
    }
}
