//! The per-object reconcile of one target: apply the desired copy, report its
//! status upstream, and remove copies only on positive evidence.
//!
//! One job a file: this one holds the [`Engine`] and the per-object dispatch
//! ([`Engine::reconcile`]); `cache` reads the watch caches and remembers our
//! own writes, `apply` applies a copy, `report` writes status reports upstream,
//! `remove` deletes copies, `undecided` reports a copy whose object records
//! no decision for this target, `namespace` ensures downstream namespaces,
//! `dependencies` holds a workload's copy until the objects it references are there.

mod apply;
mod cache;
mod dependencies;
mod namespace;
mod remove;
mod report;
mod stores;
mod stranded;
#[cfg(test)]
mod test_support;
mod undecided;
#[cfg(test)]
mod workspaces_tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cache::Side;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject};
use serde_json::Value;
use tmc_api::protocol::{Assignment, TargetRecord};
use tmc_api::tenancy::WorkloadKey;
use tokio::time::Instant;
use tracing::debug;

use crate::copy::CopyContext;
use crate::error::{Error, Result, is_not_found, is_object_not_found};
use crate::gate::ReportGate;
use crate::health::HealthCell;
use crate::kinds::SyncedKind;
use crate::replicas::ReplicasPolicy;
use crate::workspaces::{self, BoundWorkspaces};
pub(crate) use report::STATUS_COALESCE;
pub(crate) use stores::{Stores, downstream_key, upstream_key};

/// How soon a 404 that the upstream watch cache does not confirm yet is read again.
const ABSENCE_RECHECK: Duration = Duration::from_secs(2);

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
    /// set, nothing is applied or deleted (a deleted target is detached).
    target_missing: AtomicBool,
    /// Set while another control plane holds the cluster's claim (see
    /// [`crate::claim`]): nothing is applied or deleted.
    claim_refused: AtomicBool,
    /// The watch caches of the running syncer (none in unit tests: every read is a GET then).
    caches: RwLock<Option<Arc<Stores>>>,
    /// What our own writes returned: newer than the watch cache until the
    /// write's watch event arrives (then the entry is dropped).
    written: Mutex<HashMap<(Side, ObjectKey), DynamicObject>>,
    /// Copies we deleted (by uid), until the downstream watch cache drops
    /// them: a copy the cache still holds after its deletion is never taken
    /// as running (it would be reported available, and a move would remove
    /// the other copies).
    deleted: Mutex<HashMap<ObjectKey, String>>,
    /// Per object: until when a report of a `.status` change alone is held back.
    report_hold: Mutex<HashMap<ObjectKey, Instant>>,
    /// How long status-only reports are held back after a report.
    pub status_coalesce: Duration,
    /// See [`crate::gate`]; reports it holds, with when they were first held.
    pub report_gate: Option<Arc<dyn ReportGate>>,
    report_gated: Mutex<HashMap<ObjectKey, Instant>>,
    /// Which copies' replicas the cluster owns (see [`crate::replicas`]).
    pub replicas_policy: ReplicasPolicy,
    /// Where the workloads come from when not from `upstream` (see
    /// [`crate::workspaces`]): each object is read and written through the
    /// client of its own workspace.
    pub workspaces: Option<Arc<dyn BoundWorkspaces>>,
}

impl Engine {
    /// An engine for the target of `ctx`, reading with GETs until [`Engine::set_caches`].
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
            claim_refused: AtomicBool::new(false),
            caches: RwLock::new(None),
            written: Mutex::new(HashMap::new()),
            deleted: Mutex::new(HashMap::new()),
            report_hold: Mutex::new(HashMap::new()),
            status_coalesce: STATUS_COALESCE,
            report_gate: None,
            report_gated: Mutex::new(HashMap::new()),
            replicas_policy: ReplicasPolicy::default(),
            workspaces: None,
        }
    }

    fn target(&self) -> &str {
        &self.ctx.target
    }

    /// Records whether the SyncTarget object exists upstream (see
    /// `target_missing`); returns whether it was missing before.
    pub(crate) fn set_target_missing(&self, missing: bool) -> bool {
        self.target_missing.swap(missing, Ordering::Relaxed)
    }

    /// Records whether the cluster's claim is refused (see `claim_refused`);
    /// returns whether it was refused before.
    pub(crate) fn set_claim_refused(&self, refused: bool) -> bool {
        self.claim_refused.swap(refused, Ordering::Relaxed)
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

    /// The API through which the upstream object of `key` is read and
    /// written: the upstream client, or in export mode the client of the
    /// object's own workspace with its real namespace. An object whose key
    /// names no workspace gets none (nothing is read or written for it).
    fn upstream_api(&self, key: &ObjectKey) -> Result<Api<DynamicObject>> {
        let Some(bound) = &self.workspaces else {
            return Ok(self.api(&self.upstream, key.kind, key.namespace.as_deref()));
        };
        let refused = |reason: String| Error::InvalidObject {
            object: self.describe(key),
            reason,
        };
        let scoped = WorkloadKey::from_store(key.namespace.as_deref(), &key.name)
            .map_err(|err| refused(err.to_string()))?;
        let Some(cluster) = &scoped.cluster else {
            return Err(refused(
                "names no workspace (objects of the export's virtual workspace are keyed <logical cluster>|<namespace>)".into(),
            ));
        };
        let client = bound
            .client_for(cluster)
            .map_err(|err| refused(format!("no client for its workspace: {err}")))?;
        Ok(self.api(&client, key.kind, scoped.namespace.as_deref()))
    }

    /// In export mode, refuses a new copy of `key` unless its workspace is
    /// granted this target ([`BoundWorkspaces::granted`]). A copy the
    /// downstream cache holds is ours to keep and maintain: grants gate
    /// creation only, and never remove a copy (tmcd moves workloads off a
    /// target whose grant went away, new copies first).
    fn check_granted(&self, key: &ObjectKey) -> Result<()> {
        let Some(bound) = &self.workspaces else {
            return Ok(());
        };
        let workspace = WorkloadKey::from_store(key.namespace.as_deref(), &key.name)
            .ok()
            .and_then(|scoped| scoped.cluster);
        let why = match workspace.as_ref().map(|c| bound.granted(c, self.target())) {
            Some(Some(true)) => return Ok(()),
            Some(Some(false)) => "no SyncTargetGrant names the workspace and selects the target",
            Some(None) => "the grants are not known yet",
            None => "the object names no workspace",
        };
        if self.cached(Side::Downstream, key).is_some() {
            return Ok(());
        }
        Err(Error::NotGranted {
            object: self.describe(key),
            target: self.target().to_owned(),
            workspace: workspace.map_or_else(|| "(none)".to_owned(), |c| c.to_string()),
            why,
        })
    }

    /// `object` as read from its upstream API, keyed as the stores key it
    /// (see [`crate::workspaces::map_for_store`]).
    fn as_stored(&self, mut object: DynamicObject) -> DynamicObject {
        if self.workspaces.is_some() {
            workspaces::map_for_store(&mut object);
        }
        object
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
    ///
    /// While the SyncTarget is missing upstream (deleted) or another control
    /// plane holds the cluster's claim, the syncer is detached: it neither
    /// applies nor deletes anything (tmcd forgets a deleted target, so its
    /// copies are left running, unmanaged); it resyncs when attached again.
    pub(crate) async fn reconcile(&self, key: &ObjectKey) -> Result<Outcome> {
        let what = self.describe(key);
        if self.target_missing.load(Ordering::Relaxed) || self.claim_refused.load(Ordering::Relaxed)
        {
            debug!(object = %what, target = %self.target(), "detached (SyncTarget missing or claim refused): touching nothing");
            return Ok(Outcome::Done);
        }
        let up = self.upstream_api(key)?;
        if let Some(cached) = self.cached(Side::Upstream, key) {
            let object = to_value(&cached, &what)?;
            if TargetRecord::from_value(&object, self.target()).assignment() == Assignment::Sync {
                match self.sync(key, &up, object, true).await? {
                    Some(outcome) => return Ok(outcome),
                    // The cache was behind the server: read the object fresh.
                    None => debug!(object = %what, "cached object is stale; reading it"),
                }
            }
        }
        self.forget(key);
        let object = match up.get(&key.name).await {
            Ok(obj) => Some(to_value(&self.as_stored(obj), &what)?),
            Err(err) if is_object_not_found(&err, &key.name) => None,
            // The kind is no longer served where the object was (its workspace
            // unbound the export, or its CRD went): a 404 that names no object
            // proves nothing, but with the object gone from the watch and no
            // copy on the target there is nothing left to do or to keep.
            Err(err)
                if is_not_found(&err)
                    && self.upstream_cache_lacks(key)
                    && self.cached(Side::Downstream, key).is_none() =>
            {
                debug!(object = %what, error = %err, "not served upstream any more, gone from the watch and no copy here: nothing to do");
                return Ok(Outcome::Done);
            }
            Err(err) => {
                self.health.update(|h| h.upstream_connected = false);
                return Err(Error::upstream(format!("get {what}"), err));
            }
        };
        self.health.update(|h| h.upstream_connected = true);
        match object {
            Some(object) => match TargetRecord::from_value(&object, self.target()).assignment() {
                Assignment::Sync => self
                    .sync(key, &up, object, false)
                    .await
                    .map(|outcome| outcome.unwrap_or(Outcome::Done)),
                Assignment::Remove => self.remove(key, &up, &object).await,
                Assignment::Undecided => self.report_undecided(key, &up, &object).await,
            },
            // Through a virtual workspace, the 404 of one workspace's client
            // must agree with the wildcard watch (listed, and without the
            // object) before a copy goes: one answer of a proxy is not proof.
            None if self.workspaces.is_some() && !self.upstream_cache_lacks(key) => {
                Err(Error::Requeue {
                    what: format!(
                        "{what}: its workspace answered 404 but the watch across the workspaces still holds it (or has not listed yet); its copy is kept until both agree"
                    ),
                    after: ABSENCE_RECHECK,
                })
            }
            // A successful GET said 404 for this very name: the upstream object is gone.
            None => self
                .delete_copy(key, "upstream object is gone")
                .await
                .map(|_| Outcome::Done),
        }
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
    //! The evidence rules of the dispatch: a copy is deleted only after a
    //! fresh read of the upstream object says so, never on a failed read or
    //! on the cache alone.

    use http::{Method, StatusCode};
    use serde_json::json;

    use super::test_support::{
        cached_engine, copy, deletes, engine, fake, key, methods, not_found, our_copy_route,
        placed, unserved,
    };
    use crate::error::Error;

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
}
