//! One reconcile of one workload: governing placement, candidates, policies,
//! decision recorded, status brought back.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tmc_api::crd::{ClusterWorkloadPlacement, SyncTarget};
use tmc_api::dependencies::DependencyKind;
use tmc_api::protocol::{self, Recorded};
use tmc_api::tenancy;
use tmc_syncer::SyncedKind;

use super::dependencies::Registry;
use crate::placement::decide::{self, DecideError, Decision};
use crate::placement::events::EventQueue;
use crate::placement::limits::{self, Budget, LimitHit, Limits, Usage};
use crate::placement::moves::{MoveChange, TargetWait};
use crate::placement::rollout::{self, Allowed};
use crate::placement::rollout_track::Seen;
use crate::placement::status_writer::StatusWriter;
use crate::placement::targets::TargetView;
use crate::placement::within_limits::{self, Limited};
use crate::placement::workload::key;
use crate::placement::{assignment, dependencies, gone, grants, plan, selector, status, workload};
use crate::state::State;
use crate::workspaces::RouteError;

/// Re-check interval of a settled workload.
const SETTLED: Duration = Duration::from_secs(300);

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing {object}: {source}")]
    Write {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("finding the workspace of {object}: {source}")]
    Route {
        object: String,
        #[source]
        source: RouteError,
    },
    #[error("encoding the decision of {object}: {source}")]
    Encode {
        object: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Everything the reconciles of one kind share.
pub struct KindCtx {
    pub state: Arc<State>,
    pub client: Client,
    pub kind: SyncedKind,
    pub ar: ApiResource,
    pub targets: Store<SyncTarget>,
    pub placements: Store<ClusterWorkloadPlacement>,
    pub namespaces: Store<Namespace>,
    pub events: EventQueue,
    /// Writes aggregated statuses off the placement workers.
    pub statuses: Arc<StatusWriter>,
    /// Consecutive failures per object, for backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// Objects told once that no placement selects them.
    pub unplaced: Mutex<HashSet<String>>,
    /// The resourceVersion each object had at its last successful reconcile.
    pub reconciled: Mutex<HashMap<String, String>>,
    /// The kind's workloads as cached (the controller's store).
    pub workloads: Store<DynamicObject>,
    /// Per-tenant limits: held from counting to recording a decision (see
    /// [`limits`]).
    pub ledger: tokio::sync::Mutex<limits::Ledger>,
    /// Every kind's cache and queue that dependencies are decided from.
    pub dependencies: Arc<Registry>,
    /// Per object, the sync errors its targets report that an Event told
    /// (target -> error).
    pub sync_errors: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

impl KindCtx {
    /// Objects of `current` (the kind's cache) changed since their last
    /// successful reconcile; forgets objects that are gone.
    pub fn pending(&self, current: &[Arc<DynamicObject>]) -> usize {
        let mut reconciled = self
            .reconciled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pending_in(&mut reconciled, current)
    }
}

impl KindCtx {
    /// The placement that governs `obj`, as the caches see it now.
    pub fn governing_placement(
        &self,
        obj: &DynamicObject,
    ) -> Option<Arc<ClusterWorkloadPlacement>> {
        governing_placement(
            &self.placements,
            &self.namespaces,
            &self.kind.group,
            &self.kind.kind,
            obj,
        )
    }
}

/// The placement among `placements` that governs `obj` (of API `group` and
/// `kind`), given the namespaces as `namespaces` caches them.
pub fn governing_placement(
    placements: &Store<ClusterWorkloadPlacement>,
    namespaces: &Store<Namespace>,
    group: &str,
    kind: &str,
    obj: &DynamicObject,
) -> Option<Arc<ClusterWorkloadPlacement>> {
    let no_labels = BTreeMap::new();
    let stored_in = obj.metadata.namespace.as_deref();
    let namespace = stored_in.and_then(|ns| namespaces.get(&namespace_ref(ns)));
    let namespace_labels = namespace
        .as_ref()
        .and_then(|ns| ns.metadata.labels.as_ref())
        .unwrap_or(&no_labels);
    let workspace = tenancy::store_cluster(stored_in);
    let placements = placements.state();
    // Only the placements of the workload's own workspace govern it.
    let chosen = decide::governing(
        placements
            .iter()
            .map(Arc::as_ref)
            .filter(|p| selector::in_workspace(p, workspace)),
        group,
        kind,
        obj,
        namespace_labels,
    )?;
    placements
        .iter()
        .find(|p| std::ptr::eq(p.as_ref(), chosen))
        .cloned()
}

impl KindCtx {
    /// `views` without the targets not granted to `obj`'s workspace, in
    /// export mode (see [`grants`]); all of them for one workspace. An
    /// object that names no workspace gets none.
    fn granted(&self, obj: &DynamicObject, views: Vec<TargetView>) -> Vec<TargetView> {
        let state = self.state.grants.as_ref().map(Store::state);
        let workspace = tenancy::store_cluster(obj.metadata.namespace.as_deref());
        grants::granted_views(state.as_deref(), workspace, views)
    }

    /// The per-tenant limits of `obj`'s workspace on each of `views` that has
    /// any, in export mode (see [`limits`]); empty when nothing is limited.
    fn limits_of(&self, obj: &DynamicObject, views: &[TargetView]) -> BTreeMap<String, Limits> {
        let grants = self.state.grants.as_ref().map(|store| store.state());
        grants::limits_on(
            grants.as_deref(),
            tenancy::store_cluster(obj.metadata.namespace.as_deref()),
            views,
        )
    }

    /// What the other workloads of `obj`'s workspace use per target,
    /// counted with `ledger` (see [`limits::Ledger::usage`]).
    fn usage(&self, ledger: &limits::Ledger, obj: &DynamicObject) -> BTreeMap<String, Usage> {
        let this = key(obj);
        let workspace = tenancy::store_cluster(obj.metadata.namespace.as_deref());
        let no_labels = BTreeMap::new();
        let workloads = self.workloads.state();
        ledger.usage(
            workloads
                .iter()
                .filter(|o| tenancy::store_cluster(o.metadata.namespace.as_deref()) == workspace)
                .map(|o| (key(o), o))
                .filter(|(k, _)| *k != this)
                .map(|(k, o)| {
                    let recorded = protocol::read(
                        o.metadata.labels.as_ref().unwrap_or(&no_labels),
                        o.metadata.annotations.as_ref().unwrap_or(&no_labels),
                    );
                    (k, limits::recorded_holdings(&recorded))
                }),
        )
    }

    /// Records (or clears) what limits hold back of `obj` under `placement`;
    /// a Warning Event when that changed, and the placement's status is
    /// refreshed.
    fn note_limits(
        &self,
        obj: &DynamicObject,
        placement: &str,
        workload: &str,
        hits: &[(String, LimitHit)],
    ) {
        let message = (!hits.is_empty()).then(|| {
            hits.iter()
                .map(|(target, hit)| hit.describe(target))
                .collect::<Vec<_>>()
                .join("; ")
        });
        let changed = {
            let mut all = self
                .state
                .limit_hits
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let previous = match &message {
                Some(message) => all
                    .entry(placement.to_owned())
                    .or_default()
                    .insert(workload.to_owned(), message.clone()),
                None => all
                    .get_mut(placement)
                    .and_then(|held| held.remove(workload)),
            };
            previous != message
        };
        if !changed {
            return;
        }
        if let Some(message) = message {
            tracing::info!(kind = %self.kind.kind, object = %workload, placement, "limit reached: {message}");
            publish(self, obj, EventType::Warning, "LimitReached", message);
        }
        self.state.decisions_changed.notify_one();
    }
}

/// The store reference of the Namespace object of a workload stored under
/// `namespace`: `<cluster>|` holds the (cluster-scoped) namespaces of a
/// workspace served through tmc's export.
fn namespace_ref(namespace: &str) -> ObjectRef<Namespace> {
    match namespace.split_once(tenancy::STORE_SEPARATOR) {
        Some((cluster, name)) => {
            ObjectRef::new(name).within(&format!("{cluster}{}", tenancy::STORE_SEPARATOR))
        }
        None => ObjectRef::new(namespace),
    }
}

impl KindCtx {
    /// Forgets what the kind remembers of objects no longer in `current` (the
    /// kind's cache): failure counts, "told once" marks and moves, so that
    /// none of them grows with every object ever seen.
    pub fn forget_deleted(&self, current: &[Arc<DynamicObject>]) {
        let keys: HashSet<String> = current.iter().map(|o| key(o)).collect();
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| keys.contains(k));
        self.unplaced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k| keys.contains(k));
        self.sync_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| keys.contains(k));
        let prefix = format!("{} ", self.kind.kind);
        let current_or_other_kind = |workload: &str| {
            workload
                .strip_prefix(&prefix)
                .is_none_or(|object| keys.contains(object))
        };
        self.state.moves.retain(current_or_other_kind);
        self.state.rollouts.retain(current_or_other_kind);
        for held in self
            .state
            .limit_hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values_mut()
        {
            held.retain(|workload, _| current_or_other_kind(workload));
        }
        // Busy: a decision is being counted; the next pass forgets them.
        if let Ok(mut ledger) = self.ledger.try_lock() {
            ledger.retain(|k| keys.contains(k));
        }
    }
}

/// See [`KindCtx::pending`]; `reconciled` maps object keys to resourceVersions.
fn pending_in(reconciled: &mut HashMap<String, String>, current: &[Arc<DynamicObject>]) -> usize {
    let keys: HashSet<String> = current.iter().map(|o| key(o)).collect();
    reconciled.retain(|k, _| keys.contains(k));
    current
        .iter()
        .filter(|o| reconciled.get(&key(o)) != o.metadata.resource_version.as_ref())
        .count()
}

/// The controller's reconcile function.
pub async fn reconcile(
    obj: Arc<DynamicObject>,
    ctx: Arc<KindCtx>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    ctx.state.metrics.reconciles_in_flight.inc();
    let result = reconcile_inner(&obj, &ctx).await;
    tell_sync_errors(&obj, &ctx);
    if ctx.dependencies.is_workload_kind(&ctx.kind) {
        ctx.dependencies.requeue_for(&ctx.kind, &obj);
    }
    ctx.state.metrics.reconciles_in_flight.dec();
    ctx.state
        .metrics
        .reconciled(&ctx.kind.kind, result.is_ok(), started.elapsed());
    if result.is_ok() {
        let object = key(&obj);
        ctx.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&object);
        if let Some(rv) = &obj.metadata.resource_version {
            ctx.reconciled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(object, rv.clone());
        }
    }
    result
}

/// The controller's error policy: exponential backoff per object, 1 s to 5 min.
/// A write that lost a race (409 Conflict) is retried at once, quietly.
pub fn error_policy(obj: Arc<DynamicObject>, err: &ReconcileError, ctx: Arc<KindCtx>) -> Action {
    if let ReconcileError::Write {
        source: kube::Error::Api(status),
        ..
    } = err
        && status.code == 409
    {
        tracing::debug!(kind = %ctx.kind.kind, object = %key(&obj), "write conflict; re-reading");
        return Action::requeue(Duration::from_millis(100));
    }
    let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
    let n = failures.entry(key(&obj)).or_insert(0);
    *n = n.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*n - 1).min(8)).min(SETTLED);
    tracing::warn!(kind = %ctx.kind.kind, object = %key(&obj), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The object's API (namespaced or cluster-scoped), in its workspace.
fn object_api(ctx: &KindCtx, obj: &DynamicObject) -> Result<Api<DynamicObject>, ReconcileError> {
    ctx.state
        .workspaces
        .dynamic_api(&ctx.client, &ctx.ar, obj.metadata.namespace.as_deref())
        .map_err(|source| ReconcileError::Route {
            object: key(obj),
            source,
        })
}

/// Deleted SyncTargets that `obj` still names (see [`gone`]).
async fn gone_targets(
    ctx: &KindCtx,
    recorded: &BTreeMap<String, Recorded>,
    finalizers: &[String],
) -> BTreeSet<String> {
    let unknown = gone::unknown_targets(recorded, finalizers, &ctx.targets);
    if unknown.is_empty() {
        return unknown;
    }
    gone::confirm_gone(&Api::all(ctx.client.clone()), unknown).await
}

/// Writes `the_plan` as one merge patch guarded by the object's resourceVersion.
async fn write_plan(
    ctx: &KindCtx,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    the_plan: &plan::Plan,
    object: &str,
) -> Result<(), ReconcileError> {
    let patch = the_plan.merge_patch(obj.metadata.resource_version.as_deref());
    let _writing = ctx.state.decisions.writing();
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| ReconcileError::Write {
        object: object.to_string(),
        source,
    })?;
    ctx.state.decisions_changed.notify_one();
    if !the_plan.forgotten.is_empty() {
        tracing::info!(object = %object, targets = %the_plan.forgotten.join(", "), "forgot deleted SyncTargets: their labels, annotations and finalizers are removed");
    }
    Ok(())
}

/// Records a decision change in the audit trail, with the policy (name,
/// digest, generation) that made it.
fn audit_change(
    ctx: &KindCtx,
    obj: &DynamicObject,
    placement: &ClusterWorkloadPlacement,
    from: BTreeMap<String, Option<u32>>,
    to: BTreeMap<String, Option<u32>>,
    removing: &[String],
    reason: &str,
) {
    let runner = ctx.state.policies.as_ref();
    let policy = placement.spec.policy.name.clone();
    let policy_digest = runner
        .policies()
        .into_iter()
        .find(|p| p.name == policy)
        .and_then(|p| p.digest);
    ctx.state.audit.record(&crate::audit::AuditRecord {
        time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        decided_by: ctx.state.identity.clone(),
        workload: format!("{} {}", ctx.kind.kind, key(obj)),
        uid: obj.metadata.uid.clone(),
        from,
        to,
        removing: removing.to_vec(),
        placement: placement.name_any(),
        policy,
        policy_digest,
        policy_generation: runner.generation(),
        reason: reason.to_string(),
    });
}

/// Removes what `obj` records for deleted SyncTargets and nothing else: the
/// path of an object being deleted upstream (its copies are removed by the
/// targets' syncers; only a deleted target's finalizer is tmcd's to release)
/// and of an object no placement selects.
async fn forget_gone(obj: &DynamicObject, ctx: &KindCtx) -> Result<Action, ReconcileError> {
    let labels = obj.metadata.labels.clone().unwrap_or_default();
    let annotations = obj.metadata.annotations.clone().unwrap_or_default();
    let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
    let recorded = protocol::read(&labels, &annotations);
    let gone = gone_targets(ctx, &recorded, &finalizers).await;
    if gone.is_empty() {
        return Ok(Action::await_change());
    }
    let object = key(obj);
    let no_grace = BTreeSet::new();
    let targets = plan::TargetSets {
        in_grace: &no_grace,
        gone: &gone,
    };
    let the_plan = plan::plan(
        &recorded,
        &finalizers,
        &BTreeMap::new(),
        targets,
        obj.metadata.generation,
        Utc::now(),
    )
    .map_err(|source| ReconcileError::Encode {
        object: object.clone(),
        source,
    })?;
    if !the_plan.is_empty() {
        write_plan(ctx, &object_api(ctx, obj)?, obj, &the_plan, &object).await?;
    }
    Ok(Action::await_change())
}

/// How soon a dependency is decided again while a workload cache has not listed.
const CACHES_LISTING: Duration = Duration::from_secs(2);

/// The derived decision of a dependency that no placement of its own governs
/// (see [`dependencies`]): `None` when `obj` is no dependency kind, or no
/// workload references it and it records no derived decision (then it is
/// an object no placement selects).
async fn derive(obj: &DynamicObject, ctx: &KindCtx) -> Result<Option<Action>, ReconcileError> {
    let Some(kind) = DependencyKind::of(&ctx.kind.group, &ctx.kind.kind) else {
        return Ok(None);
    };
    let governed = |k: &SyncedKind, o: &DynamicObject| {
        governing_placement(&ctx.placements, &ctx.namespaces, &k.group, &k.kind, o).is_some()
    };
    let Some(users) = ctx.dependencies.users(kind, obj, governed) else {
        tracing::debug!(kind = %ctx.kind.kind, object = %key(obj), "a workload cache has not listed yet: deciding this dependency later");
        return Ok(Some(Action::requeue(CACHES_LISTING)));
    };
    let needs = dependencies::needs(&users);
    let labels = obj.metadata.labels.clone().unwrap_or_default();
    let annotations = obj.metadata.annotations.clone().unwrap_or_default();
    let recorded = protocol::read(&labels, &annotations);
    if !needs.is_used() && !recorded.values().any(dependencies::is_derived) {
        return Ok(None);
    }
    let object = key(obj);
    ctx.unplaced
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&object);
    let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
    let gone = gone_targets(ctx, &recorded, &finalizers).await;
    let the_plan = dependencies::plan(&recorded, &finalizers, &needs, &gone, Utc::now()).map_err(
        |source| ReconcileError::Encode {
            object: object.clone(),
            source,
        },
    )?;
    let changed = !the_plan.labels.is_empty() || !the_plan.deleting.is_empty();
    if !the_plan.is_empty() {
        write_plan(ctx, &object_api(ctx, obj)?, obj, &the_plan, &object).await?;
    }
    if changed {
        let mut note = match needs.targets.is_empty() {
            true => "no placed workload references it any more".to_string(),
            false => format!(
                "placed with the workloads that reference it: {}",
                needs
                    .targets
                    .iter()
                    .map(|(t, users)| format!("{t} ({})", users.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        if !the_plan.deleting.is_empty() {
            note.push_str(&format!(
                "; removing the copy on {}, where no workload references it any more",
                the_plan.deleting.join(", ")
            ));
        }
        tracing::info!(kind = %ctx.kind.kind, object = %object, "{note}");
        publish(ctx, obj, EventType::Normal, "Placed", note);
    }
    ctx.state.metrics.decided(
        &ctx.kind.kind,
        if changed { "changed" } else { "unchanged" },
    );
    Ok(Some(Action::requeue(SETTLED)))
}

async fn reconcile_inner(obj: &DynamicObject, ctx: &KindCtx) -> Result<Action, ReconcileError> {
    let kind = ctx.kind.kind.as_str();
    if obj.metadata.deletion_timestamp.is_some() {
        ctx.state.moves.finish(&workload_name(ctx, &key(obj)));
        return forget_gone(obj, ctx).await;
    }
    // What its workspace serves (the real namespace): what the policies see.
    let served = ctx.state.workspaces.as_served(obj);
    if workload::excluded(kind, &served).is_some() {
        return Ok(Action::await_change());
    }
    let object = key(obj);
    let placement = ctx.governing_placement(obj);
    if placement.is_none()
        && let Some(action) = derive(obj, ctx).await?
    {
        return Ok(action);
    }
    let Some(placement) = placement else {
        ctx.state.rollouts.forget(&workload_name(ctx, &object));
        let first = ctx
            .unplaced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(object.clone());
        if first {
            tracing::info!(kind, object = %object, "no placement selects this workload: nothing placed");
            publish(
                ctx,
                obj,
                EventType::Normal,
                "NoPlacement",
                "no ClusterWorkloadPlacement selects this workload; it is not placed".into(),
            );
        }
        return forget_gone(obj, ctx).await;
    };
    ctx.unplaced
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&object);
    let placement_name = placement.name_any();
    let placement_key = selector::placement_key(&placement);

    let now = Utc::now();
    let views: Vec<TargetView> = ctx
        .targets
        .state()
        .iter()
        .map(|t| ctx.state.target_view(t))
        .collect();
    let views = ctx.granted(obj, views);
    if ctx.state.grants.is_some() && views.is_empty() {
        // Export mode, and the workspace may use no target: its copies are
        // held (as a deleted SyncTarget's are), not removed for lack of a grant.
        publish(
            ctx,
            obj,
            EventType::Warning,
            "NotGranted",
            "no SyncTarget is granted to this workspace (a SyncTargetGrant in the inventory workspace names its logical cluster); nothing is placed and the last decision stays".into(),
        );
        return forget_gone(obj, ctx).await;
    }
    // Per-tenant limits: counted and recorded under one lock, so that two
    // workloads decided at once cannot both take the last place.
    let limited = ctx.limits_of(obj, &views);
    let mut ledger = match limited.is_empty() {
        true => None,
        false => Some(ctx.ledger.lock().await),
    };
    let budget = Budget {
        usage: ledger
            .as_ref()
            .map(|l| ctx.usage(l, obj))
            .unwrap_or_default(),
        limited,
    };
    let api_version = ctx.kind.api_version();
    let inputs = decide::Inputs {
        api_version: &api_version,
        kind,
        object: &served,
        placement: &placement,
        targets: &views,
        now,
    };
    let Limited { decided, held_back } = within_limits::decide_within(
        ctx.state.policies.as_ref(),
        &ctx.state.metrics,
        &ctx.state.settings,
        inputs,
        &budget,
    )
    .await;
    let Decision {
        recorded,
        holders,
        candidates: cands,
        outcome,
        ..
    } = match decided {
        Ok(decision) => {
            ctx.state
                .policy_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&placement_key);
            decision
        }
        Err(DecideError::Excluded(_)) => return Ok(Action::await_change()),
        Err(DecideError::Policy(failure)) => {
            tracing::warn!(kind, object = %object, placement = %placement_name, policy = %failure.policy, error = %failure.message, "policy failed: keeping the last decision");
            ctx.state.metrics.decided(kind, "failed");
            ctx.state
                .policy_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(placement_key.clone(), failure.to_string());
            publish(
                ctx,
                obj,
                EventType::Warning,
                "PolicyFailed",
                format!("{failure}; the last decision stays"),
            );
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
    let gone = gone_targets(ctx, &recorded, &finalizers).await;

    let targets = plan::TargetSets {
        in_grace: &cands.in_grace,
        gone: &gone,
    };
    // A staged rollout: only the targets of its completed and current
    // stages take the new decision; the others keep theirs.
    let staged = staged_rollout(ctx, &placement);
    let rollout::Gated { chosen, deferred } = match &staged {
        Some((_, allowed)) => rollout::gate(&outcome.chosen, &recorded, allowed, &gone),
        None => rollout::Gated {
            chosen: outcome.chosen.clone(),
            deferred: BTreeSet::new(),
        },
    };
    let held_by_rollout: Vec<String> = outcome
        .chosen
        .iter()
        .filter(|(t, r)| chosen.get(*t) != Some(*r))
        .map(|(t, _)| t.clone())
        .chain(
            chosen
                .keys()
                .filter(|t| !outcome.chosen.contains_key(*t))
                .cloned(),
        )
        .collect();
    let the_plan = plan::plan(
        &recorded,
        &finalizers,
        &chosen,
        targets,
        obj.metadata.generation,
        now,
    )
    .map_err(|source| ReconcileError::Encode {
        object: object.clone(),
        source,
    })?;
    let api = object_api(ctx, obj)?;
    let mut changed = false;
    if !the_plan.is_empty() {
        write_plan(ctx, &api, obj, &the_plan, &object).await?;
    }
    if let Some(ledger) = ledger.as_mut() {
        // What it has or is to have: the chosen targets, and the copies kept until a move completes.
        let mut holdings = limits::recorded_holdings(&recorded);
        for (target, result) in &chosen {
            let replicas = result.replicas.unwrap_or(0);
            let entry = holdings.entry(target.clone()).or_default();
            *entry = (*entry).max(replicas);
        }
        ledger.record(&object, holdings);
    }
    drop(ledger);
    if ctx.state.grants.is_some() {
        ctx.note_limits(
            obj,
            &placement_key,
            &workload_name(ctx, &object),
            &held_back,
        );
    }
    if !the_plan.is_empty() {
        let now_on: BTreeMap<String, Option<u32>> = chosen
            .iter()
            .map(|(t, r)| (t.clone(), r.replicas))
            .collect();
        changed = now_on != holders || !the_plan.deleting.is_empty();
        if changed {
            let mut note = format!(
                "placed by {placement_name} on {}",
                assignment::describe(&now_on)
            );
            if !the_plan.waiting.is_empty() {
                note.push_str(&format!(
                    "; keeping the copy on {} until the new targets run it",
                    the_plan.waiting.join(", ")
                ));
            }
            if !the_plan.holding.is_empty() {
                note.push_str(&format!(
                    "; keeping the replicas on {} until the others have theirs available",
                    the_plan.holding.join(", ")
                ));
            }
            if !the_plan.deleting.is_empty() {
                note.push_str(&format!(
                    "; removing the copy on {}",
                    the_plan.deleting.join(", ")
                ));
            }
            if !held_by_rollout.is_empty() {
                note.push_str(&format!(
                    "; keeping the previous decision on {} until their rollout stage",
                    held_by_rollout.join(", ")
                ));
            }
            if !outcome.reason.is_empty() {
                note.push_str(&format!(": {}", outcome.reason));
            }
            tracing::info!(kind, object = %object, "{note}");
            publish(ctx, obj, EventType::Normal, "Placed", note);
            audit_change(
                ctx,
                obj,
                &placement,
                holders,
                now_on,
                &the_plan.deleting,
                &outcome.reason,
            );
        }
    }

    ctx.state
        .metrics
        .decided(kind, if changed { "changed" } else { "unchanged" });

    observe_rollout(
        ctx,
        &workload_name(ctx, &object),
        &placement_key,
        &placement,
        staged.as_ref().map(|(revision, _)| revision.as_str()),
        &outcome.chosen,
        &deferred,
        &recorded,
        obj.metadata.generation,
    );

    if chosen.is_empty() {
        ctx.state.moves.finish(&workload_name(ctx, &object));
    } else {
        track_move(ctx, obj, &object, &placement_key, &recorded, &the_plan);
    }

    if status::aggregate(kind, &recorded)
        .is_some_and(|desired| !status::contains(obj.data.get("status"), &desired))
    {
        ctx.statuses.request(obj);
    }

    let mut next = SETTLED;
    if let Some(left) = cands.grace_ends_in {
        next = next.min(left + Duration::from_secs(1));
    }
    if !the_plan.waiting.is_empty() || !the_plan.holding.is_empty() {
        let workload = workload_name(ctx, &object);
        next = next.min(
            ctx.state
                .moves
                .recheck_in(&workload, Instant::now(), SETTLED),
        );
    }
    Ok(Action::requeue(next))
}

/// The revision of `placement` and where its rollout lets a decision go,
/// when it declares a rollout (see [`rollout`]).
fn staged_rollout(
    ctx: &KindCtx,
    placement: &ClusterWorkloadPlacement,
) -> Option<(String, Allowed)> {
    placement.spec.rollout.as_ref()?;
    let revision = rollout::revision(placement, &ctx.state.policies.policies());
    let allowed = rollout::allowed(placement, &revision);
    Some((revision, allowed))
}

/// Tells the rollout tracker how far `workload` is with the current stage
/// of its placement's rollout (`revision`: the placement's, when it
/// declares one), so that the placement status writer can advance it; a
/// stage target now done wakes the writer.
#[allow(clippy::too_many_arguments)]
fn observe_rollout(
    ctx: &KindCtx,
    workload: &str,
    placement_key: &str,
    placement: &ClusterWorkloadPlacement,
    revision: Option<&str>,
    chosen: &BTreeMap<String, tmc_api::decision::TargetResult>,
    deferred: &BTreeSet<String>,
    recorded: &BTreeMap<String, Recorded>,
    generation: Option<i64>,
) {
    let Some(revision) = revision else {
        ctx.state.rollouts.forget(workload);
        return;
    };
    let status = placement
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .filter(|s| s.revision == revision);
    let seen = Seen {
        placement: placement_key.to_owned(),
        revision: revision.to_owned(),
        stage: status.map_or(0, |s| s.stage),
        pending: status.map_or_else(Vec::new, |s| {
            rollout::stage_pending(chosen, recorded, &s.stage_targets, deferred, generation)
        }),
    };
    if ctx.state.rollouts.observe(workload, seen) {
        ctx.state.decisions_changed.notify_one();
    }
}

/// `Kind namespace/name` of `object` (a [`key`]), as moves are tracked.
fn workload_name(ctx: &KindCtx, object: &str) -> String {
    format!("{} {object}", ctx.kind.kind)
}

/// Records whether the workload is moving (see [`crate::placement::moves`]): an Event when its
/// move stalls (the old copies are kept) and when a stalled move completes.
fn track_move(
    ctx: &KindCtx,
    obj: &DynamicObject,
    object: &str,
    placement: &str,
    recorded: &BTreeMap<String, Recorded>,
    the_plan: &plan::Plan,
) {
    let workload = workload_name(ctx, object);
    // Old copies kept only because their target is in its eviction grace
    // period wait for time, not for new copies: that is no move in progress.
    let moving = !the_plan.holding.is_empty()
        || !the_plan.waiting.is_empty() && !the_plan.unready.is_empty();
    let change = if !moving {
        ctx.state.moves.finish(&workload)
    } else {
        let empty = Recorded::default();
        let waiting_on = the_plan
            .unready
            .iter()
            .map(|target| TargetWait {
                target: target.clone(),
                reason: assignment::pending(
                    recorded.get(target).unwrap_or(&empty),
                    obj.metadata.generation,
                )
                .unwrap_or_else(|| "its new decision is being recorded".into()),
            })
            .collect();
        let keeping = the_plan
            .waiting
            .iter()
            .chain(&the_plan.holding)
            .cloned()
            .collect();
        ctx.state.moves.observe(
            &workload,
            placement,
            waiting_on,
            keeping,
            Instant::now(),
            Utc::now(),
        )
    };
    match change {
        MoveChange::Stalled(stalled) => {
            let note = format!("move stalled: {}", stalled.describe());
            tracing::warn!(kind = %ctx.kind.kind, object = %object, placement, "{note}");
            publish(ctx, obj, EventType::Warning, "MoveStalled", note);
        }
        MoveChange::Resumed => {
            publish(
                ctx,
                obj,
                EventType::Normal,
                "MoveCompleted",
                "the stalled move completed: the new copies are available".into(),
            );
        }
        MoveChange::None => {}
    }
    let stalled = ctx.state.moves.stalled().len();
    ctx.state
        .metrics
        .moves_stalled
        .set(i64::try_from(stalled).unwrap_or(i64::MAX));
}

/// A Warning Event `SyncFailed` for each new error a target of `obj`
/// reports (a dependency that cannot be applied, a copy refused, ...),
/// once per target and error.
fn tell_sync_errors(obj: &DynamicObject, ctx: &KindCtx) {
    let no_labels = BTreeMap::new();
    let errors: BTreeMap<String, String> = protocol::read(
        obj.metadata.labels.as_ref().unwrap_or(&no_labels),
        obj.metadata.annotations.as_ref().unwrap_or(&no_labels),
    )
    .into_iter()
    .filter_map(|(t, r)| Some((t, r.status?.error?)))
    .collect();
    let object = key(obj);
    let new: Vec<(String, String)> = {
        let mut told = ctx
            .sync_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = told.remove(&object).unwrap_or_default();
        let new = errors
            .iter()
            .filter(|(t, e)| before.get(*t) != Some(*e))
            .map(|(t, e)| (t.clone(), e.clone()))
            .collect();
        if !errors.is_empty() {
            told.insert(object, errors);
        }
        new
    };
    for (target, error) in new {
        publish(
            ctx,
            obj,
            EventType::Warning,
            "SyncFailed",
            format!("on {target}: {error}"),
        );
    }
}

/// Queues an Event on the workload (published in the background).
fn publish(ctx: &KindCtx, obj: &DynamicObject, type_: EventType, reason: &str, note: String) {
    ctx.events
        .publish(obj.object_ref(&ctx.ar), type_, reason, "Place", note);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, rv: &str) -> Arc<DynamicObject> {
        let mut o = DynamicObject::new(name, &ApiResource::erase::<Namespace>(&()));
        o.metadata.namespace = Some("demo".into());
        o.metadata.resource_version = Some(rv.into());
        Arc::new(o)
    }

    #[test]
    fn pending_counts_changed_and_new_objects_and_forgets_deleted_ones() {
        let mut reconciled: HashMap<String, String> = [
            ("demo/a".to_string(), "1".to_string()),
            ("demo/b".to_string(), "5".to_string()),
            ("demo/gone".to_string(), "2".to_string()),
        ]
        .into();
        // a unchanged, b changed since, c never reconciled.
        let current = [object("a", "1"), object("b", "6"), object("c", "3")];
        assert_eq!(pending_in(&mut reconciled, &current), 2);
        assert!(!reconciled.contains_key("demo/gone"));
    }
}
