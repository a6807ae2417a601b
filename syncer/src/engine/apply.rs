//! Applying a copy: our finalizer on the upstream object, then a server-side
//! apply of the desired copy, guarded by the cached copy's resourceVersion and
//! read again on a 409.

use std::time::Duration;

use chrono::Utc;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use serde_json::Value;
use tmc_api::decision::{
    FIELD_MANAGER, MANAGED_LABEL, TargetStatus, result_annotation, result_digest,
};
use tmc_api::protocol::{add_finalizer_patch, is_our_copy, is_terminating};
use tracing::{debug, info};

use super::cache::Side;
use super::{Engine, ObjectKey, Outcome, to_value};
use crate::copy::{build_copy_with_owner, is_subset, object_name, target_result};
use crate::error::{Error, Result, is_conflict, is_not_found};
use crate::replicas::{self, Autoscalers, HANDOVER_MANAGER, ReplicasOwner, handover};
use tmc_api::protocol::annotation;

impl Engine {
    /// Applies the desired copy and reports its status upstream. `None` when
    /// `object` came from the cache and proved stale (a 409 on the finalizer).
    pub(super) async fn sync(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        mut object: Value,
        from_cache: bool,
    ) -> Result<Option<Outcome>> {
        let what = self.describe(key);
        self.check_granted(key)?;
        if let Some(patch) = add_finalizer_patch(&object, self.target()) {
            match up
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    let updated = self.as_stored(updated);
                    object = to_value(&updated, &what)?;
                    self.remember(Side::Upstream, key, updated);
                }
                Err(err) if from_cache && (is_conflict(&err) || is_not_found(&err)) => {
                    return Ok(None);
                }
                Err(err) => return Err(Error::upstream(format!("add finalizer to {what}"), err)),
            }
        }
        let applied = match self.check_dependencies(key, &object).await {
            Ok(()) => self.apply_copy(key, &object).await,
            Err(err) => Err(err),
        };
        match applied {
            Ok(status) => self.report(key, up, &object, status).await.map(Some),
            Err(err) => {
                self.report_error(key, up, &object, &err).await;
                Err(err)
            }
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
    /// object that is not ours is never overwritten); when there is none, the
    /// apply may only create ([`CREATE_ONLY`]): an object someone made by hand
    /// between the GET and the apply is read again and reported as not ours,
    /// never taken over.
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
        let mut attempt = 0;
        loop {
            attempt += 1;
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
                    if live.is_none() {
                        // Not where the mapping puts it: perhaps where another one did.
                        self.refuse_stranded(key)?;
                    }
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
            if live.as_ref().is_some_and(is_terminating) {
                // A copy on its way out (a withdrawn removal, or someone
                // deleted it) must not be reported as running: tmcd would
                // count it and remove the other copies. It is created again
                // once it is gone (its watch event re-queues the object).
                return Err(Error::Requeue {
                    what: format!(
                        "copy of {what} is being deleted; creating it again once it is gone"
                    ),
                    after: Duration::from_secs(1),
                });
            }
            let owner = self.replicas_owner(key, object, live.as_ref());
            let desired = build_copy_with_owner(
                object,
                &self.ctx,
                result.as_ref(),
                &owner,
                live.as_ref(),
                Utc::now(),
            )?;
            let unchanged = live.as_ref().is_some_and(|live| {
                annotation(live, tmc_api::decision::CONTENT_HASH_ANNOTATION)
                    == Some(desired.hash.as_str())
                    && is_subset(&desired.object, live)
            });
            let applied = if unchanged {
                live.unwrap_or_default()
            } else {
                let mut body = desired.object.clone();
                // Every apply is guarded: by the version of the copy we read
                // (from the cache, or a GET), or, when there was none, by a
                // version no object has, so that it can only create.
                let guard = match &live {
                    Some(live) => live.pointer("/metadata/resourceVersion").cloned(),
                    None => Some(Value::from(CREATE_ONLY)),
                };
                if let Some(version) = &guard {
                    body["metadata"]["resourceVersion"] = version.clone();
                }
                // A lost race (409) is read again, a few times at most.
                let retry = |err: &kube::Error| attempt < 4 && is_stale_precondition(err);
                if let (ReplicasOwner::Cluster(who), Some(live)) = (&owner, &live)
                    && let Some(mut handover) = handover(live)
                {
                    // Without a second owner the server would drop the
                    // field tmc stops applying: replicas back to the default.
                    if let Some(version) = &guard {
                        handover["metadata"]["resourceVersion"] = version.clone();
                    }
                    let params = PatchParams::apply(HANDOVER_MANAGER);
                    match down
                        .patch(&key.name, &params, &Patch::Apply(&handover))
                        .await
                    {
                        Ok(handed) => {
                            // The apply that follows is guarded by this version.
                            if let Some(version) = handed.metadata.resource_version {
                                body["metadata"]["resourceVersion"] = Value::from(version);
                            }
                            info!(object = %what, target = %self.target(), owner = %who, "replicas handed over to the cluster");
                        }
                        Err(err) if retry(&err) => {
                            debug!(object = %what, error = %err, "copy changed before the handover; reading it");
                            continue;
                        }
                        Err(err) => {
                            return Err(self.downstream_error(
                                format!("hand spec.replicas of {what} over to {who}"),
                                err,
                            ));
                        }
                    }
                }
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let applied = match down.patch(&key.name, &params, &Patch::Apply(&body)).await {
                    Ok(applied) => applied,
                    Err(err) if retry(&err) => {
                        debug!(object = %what, error = %err, "copy changed or created meanwhile; reading it");
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
                result_digest: result_digest(annotation(object, &result_annotation(self.target()))),
                copy_generation: applied
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64),
                replicas_owner: match &owner {
                    ReplicasOwner::Cluster(who) => Some(who.clone()),
                    ReplicasOwner::Tmc => None,
                },
                copy_replicas: match &owner {
                    ReplicasOwner::Cluster(_) => {
                        applied.pointer("/spec/replicas").and_then(Value::as_i64)
                    }
                    ReplicasOwner::Tmc => None,
                },
                status: applied.get("status").filter(|s| !s.is_null()).cloned(),
                error: None,
            });
        }
    }
}

impl Engine {
    /// Who owns the replicas of `key`'s copy `live` (see [`crate::replicas::owner`]).
    fn replicas_owner(
        &self,
        key: &ObjectKey,
        upstream: &Value,
        live: Option<&Value>,
    ) -> ReplicasOwner {
        let caches = self.caches();
        let store = caches.as_ref().and_then(|c| c.autoscalers.as_ref());
        replicas::owner(
            self.replicas_policy,
            &self.kinds[key.kind],
            upstream,
            live,
            &Autoscalers(store),
        )
    }
}

/// The resourceVersion precondition of an apply that may only create: the
/// API server ignores a precondition when it creates the object, and refuses
/// (409) an existing object whose version differs. No object has this one:
/// etcd, behind kube-apiserver and kcp, starts at revision 1 and gives the
/// first write revision 2.
const CREATE_ONLY: &str = "1";

/// True when an apply with a resourceVersion precondition failed because the
/// version is not the live one (a copy that is gone meanwhile is simply
/// created: the server ignores the version on create, as the sync_requests
/// test shows).
fn is_stale_precondition(err: &kube::Error) -> bool {
    is_conflict(err)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Method, StatusCode};
    use serde_json::json;

    use super::super::test_support::{
        cached_engine, copy, deletes, engine, fake, key, methods, namespace_ensured, not_found,
        placed,
    };
    use crate::engine::Outcome;
    use crate::engine::report::FIRST_REPORT_DELAY;
    use crate::error::Error;

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
        // Applied; its first report waits for the copy's first status.
        assert_eq!(
            engine.reconcile(&key()).await.unwrap(),
            Outcome::After(FIRST_REPORT_DELAY)
        );
        // Upstream: nothing read, nothing written yet; downstream: namespace, copy (absent from the cache), apply.
        assert!(methods(&up_log).is_empty(), "{up_log:?}");
        assert_eq!(methods(&down_log), ["GET", "GET", "PATCH"]);
        let health = engine.health.snapshot();
        assert_eq!(health.kinds["apps/v1/Deployment"].synced, 1);
        assert_eq!(health.objects_synced, 1);
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
        namespace_ensured(&engine);
        assert_eq!(
            engine.reconcile(&key()).await.unwrap(),
            Outcome::After(FIRST_REPORT_DELAY)
        );
        assert_eq!(methods(&down_log), ["PATCH", "GET", "PATCH"]);
    }

    #[tokio::test]
    async fn an_object_created_by_hand_after_our_read_is_reported_not_taken_over() {
        static GETS: AtomicUsize = AtomicUsize::new(0);
        let (up, _) = fake(|_, _| Some((StatusCode::OK, placed(json!({})))));
        let (down, down_log) = fake(|method, _| match *method {
            // Absent when first read; someone creates it before our apply.
            Method::GET if GETS.fetch_add(1, Ordering::SeqCst) == 0 => Some(not_found("web")),
            Method::GET => Some((
                StatusCode::OK,
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "web", "namespace": "shop", "uid": "theirs"}}),
            )),
            // The create-only precondition fails on their object.
            Method::PATCH => Some((
                StatusCode::CONFLICT,
                json!({"kind": "Status", "status": "Failure", "reason": "Conflict", "code": 409,
                       "message": "the object has been modified"}),
            )),
            _ => None,
        });
        let object = placed(json!({}));
        let (engine, _w1, _w2) = cached_engine(up, down, Some(&object), None);
        namespace_ensured(&engine);
        let err = engine.reconcile(&key()).await.unwrap_err();
        assert!(matches!(err, Error::NotOwned { .. }), "{err}");
        assert_eq!(methods(&down_log), ["GET", "PATCH", "GET"]);
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
        namespace_ensured(&engine);
        let err = engine.reconcile(&key()).await.unwrap_err();
        assert!(matches!(err, Error::NotOwned { .. }), "{err}");
        assert_eq!(methods(&down_log), ["GET"]);
        // The error is reported upstream.
        assert_eq!(methods(&up_log), ["PATCH"]);
    }
}
