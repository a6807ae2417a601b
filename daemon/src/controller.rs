//! Wiring: one kube-runtime Controller per synced kind, re-queued as a whole
//! by placement and target changes and, after a policy swap, for the
//! workloads whose placement uses a changed policy
//! ([`requeue_on_policy_swap`]); plus the placement status refresh
//! ([`refresh_statuses`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store, reflector};
use kube::runtime::watcher;
use tmc_api::crd::ClusterWorkloadPlacement;
use tmc_policy_host::PolicyInfo;
use tmc_syncer::SyncedKind;
use tmc_syncer::drop_managed_fields;
use tokio::task::JoinSet;

use crate::placement::events::{EventQueue, Publisher};
use crate::placement::status_writer::{self, StatusWriter};
use crate::placement::watch::Stores;
use crate::placement::{selector, workload};
use crate::state::State;

pub mod dependencies;
pub mod placement_status;
pub mod reconcile;
pub mod rollout_status;

use reconcile::{KindCtx, error_policy, reconcile};

/// How often placement statuses are refreshed when no decision changes.
const STATUS_EVERY: Duration = Duration::from_secs(3);
/// After a decision is written, how long to wait for more before refreshing.
const STATUS_COALESCE: Duration = Duration::from_millis(300);
/// How often the pending-workloads gauge is recomputed.
const PENDING_EVERY: Duration = Duration::from_secs(1);
/// Reconciles of one kind running at once. A reconcile spends most of its
/// time waiting on the control plane (a merge patch, a status patch), so
/// this is about round trips in flight, not CPU.
const WORKERS: u16 = 16;

/// Runs the controllers of `kinds` until `shutdown` turns true.
pub async fn run(
    state: Arc<State>,
    client: Client,
    kinds: Vec<SyncedKind>,
    stores: &Stores,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let publisher = Publisher::new(
        client.clone(),
        state.workspaces.clone(),
        Reporter {
            controller: "tmcd".into(),
            instance: Some(state.identity.clone()),
        },
    );
    // Deciding on partial knowledge would be wrong: an empty target cache
    // would look like deleted targets, an empty placement cache like
    // unplaced workloads.
    let grants = stores.grants.clone();
    let ready = async move {
        futures::future::try_join3(
            stores.targets.wait_until_ready(),
            stores.placements.wait_until_ready(),
            stores.namespaces.wait_until_ready(),
        )
        .await?;
        match &grants {
            Some(grants) => grants.wait_until_ready().await,
            None => Ok(()),
        }
    };
    let mut stop = shutdown.clone();
    tokio::select! {
        res = ready => if res.is_err() {
            tracing::error!("the SyncTarget, placement, namespace or grant watch stopped before its first list; placement controllers not started");
            return;
        },
        _ = stopped(&mut stop) => return,
    }
    let mut workload_stores = Vec::new();
    let mut requeues = Vec::new();
    // Join sets: dropping this future (the leader's work aborted at its renew
    // deadline) aborts the controllers and every helper, not only this task.
    let mut runs = JoinSet::new();
    // Helpers of the controllers, stopped when they end.
    let mut background = JoinSet::new();
    let (events, event_worker) = EventQueue::new(
        publisher,
        state.decisions.clone(),
        state.metrics.events_pending.clone(),
    );
    background.spawn(event_worker);
    let write_status =
        status_writer::writes_status(&client, state.config.control_plane.write_status).await;
    // Every kind's cache and re-queue channel first: dependencies are
    // decided from the caches of the other kinds (see `dependencies`).
    let prepared: Vec<Prepared> = kinds
        .into_iter()
        .map(|kind| {
            let writer = Writer::new(kind.api_resource());
            let store = writer.as_reader();
            let (requeue, requeued) = mpsc::unbounded();
            Prepared {
                kind,
                writer,
                store,
                requeue,
                requeued,
            }
        })
        .collect();
    let registry = dependencies::registry(prepared.iter().map(|p| (&p.kind, &p.store, &p.requeue)));
    for Prepared {
        kind,
        writer,
        store: reader,
        requeue,
        requeued,
    } in prepared
    {
        let ar = kind.api_resource();
        let api: Api<DynamicObject> = Api::all_with(state.workspaces.watch_client(&client), &ar);
        let workspaces = state.workspaces.clone();
        let mut stop = shutdown.clone();
        // The workloads' cache, without managedFields (nothing here reads them).
        let workloads = reflector(
            writer,
            watcher(api, watcher::Config::default()).modify(move |o| {
                drop_managed_fields(o);
                workspaces.map_for_store(o);
            }),
        )
        .applied_objects();
        let c = Controller::for_stream_with(workloads, reader, ar.clone())
            .with_config(controller::Config::default().concurrency(WORKERS))
            .reconcile_all_on(state.triggers.subscribe())
            .reconcile_on(requeued)
            .graceful_shutdown_on(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        let (statuses, writer) = StatusWriter::new(
            client.clone(),
            state.workspaces.clone(),
            ar.clone(),
            kind.kind.clone(),
            c.store(),
            state.decisions.clone(),
            write_status,
        );
        background.spawn(writer);
        let ctx = Arc::new(KindCtx {
            state: state.clone(),
            client: client.clone(),
            kind: kind.clone(),
            ar: ar.clone(),
            targets: stores.targets.clone(),
            placements: stores.placements.clone(),
            namespaces: stores.namespaces.clone(),
            events: events.clone(),
            statuses,
            failures: Mutex::default(),
            unplaced: Mutex::default(),
            reconciled: Mutex::default(),
            workloads: c.store(),
            ledger: tokio::sync::Mutex::default(),
            dependencies: registry.clone(),
            sync_errors: Mutex::default(),
        });
        workload_stores.push(c.store());
        requeues.push(Requeue {
            ctx: ctx.clone(),
            store: c.store(),
            tx: requeue,
        });
        background.spawn(report_pending(ctx.clone(), c.store()));
        let name = kind.to_string();
        let mut stopping = shutdown.clone();
        runs.spawn(async move {
            tracing::info!(kind = %name, "placement controller started");
            let run = c
                .run(reconcile, error_policy, ctx)
                .for_each(|res| async move {
                    if let Err(err) = res {
                        tracing::debug!(error = %err, "controller event");
                    }
                });
            // kube-runtime's graceful shutdown lets running reconciles finish,
            // but a controller stopped before its workload cache was first
            // listed holds its runner until that cache is ready, which then
            // never happens: after the grace the controller is dropped (what
            // it was writing is a decision tmcd records again on start).
            let grace = async {
                stopped(&mut stopping).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            };
            tokio::select! {
                () = run => {}
                () = grace => tracing::warn!(
                    kind = %name,
                    grace = ?SHUTDOWN_GRACE,
                    "the placement controller did not stop within its grace after shutdown; dropped"
                ),
            }
        });
    }
    background.spawn(requeue_on_policy_swap(
        state.clone(),
        requeues,
        shutdown.clone(),
    ));
    background.spawn(refresh_statuses(
        state,
        client,
        stores.placements.clone(),
        workload_stores,
        events,
        shutdown,
    ));
    while runs.join_next().await.is_some() {}
    background.abort_all();
}

/// After each swap of the policy set, re-queues the workloads whose placement
/// uses a policy that changed, and sets the policy generation gauge.
async fn requeue_on_policy_swap(
    state: Arc<State>,
    requeues: Vec<Requeue>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let runner = state.policies.as_ref();
    let mut generation = runner.subscribe();
    let mut active = runner.policies();
    state.metrics.policy_generation.set(runner.generation());
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            changed = generation.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let number = *generation.borrow_and_update();
        state.metrics.policy_generation.set(number);
        let now_active = runner.policies();
        let changed = changed_policies(&active, &now_active);
        active = now_active;
        let workloads: usize = requeues.iter().map(|r| r.using(&changed)).sum();
        tracing::info!(generation = number, policies = ?changed, workloads, "policy set changed: re-evaluating the workloads whose placement uses these policies");
    }
}

/// Refreshes the placements' statuses and the per-target sync error gauge
/// every few seconds, and soon after decisions are written. A policy swap
/// alone does not: the statuses follow the new decisions.
async fn refresh_statuses(
    state: Arc<State>,
    client: Client,
    placements: Store<ClusterWorkloadPlacement>,
    workloads: Vec<Store<DynamicObject>>,
    events: EventQueue,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = state.decisions_changed.notified() => {
                // Let the decisions of one change (a reload, a burst) land
                // in the caches before summing them up.
                tokio::time::sleep(STATUS_COALESCE).await;
            }
            _ = tokio::time::sleep(STATUS_EVERY) => {}
        }
        let recorded = placement_status::recorded(&workloads);
        for (target, failing) in placement_status::sync_errors(recorded.iter().map(|w| &w.targets))
        {
            state.metrics.set_target_sync_errors(&target, failing);
        }
        placement_status::refresh(&state, &client, &placements, &recorded, &events).await;
    }
}

/// One kind's cache and re-queue channel, made before its controller.
struct Prepared {
    kind: SyncedKind,
    writer: Writer<DynamicObject>,
    store: Store<DynamicObject>,
    requeue: mpsc::UnboundedSender<ObjectRef<DynamicObject>>,
    requeued: mpsc::UnboundedReceiver<ObjectRef<DynamicObject>>,
}

/// Re-queues single workloads of one kind.
struct Requeue {
    ctx: Arc<KindCtx>,
    store: Store<DynamicObject>,
    tx: mpsc::UnboundedSender<ObjectRef<DynamicObject>>,
}

impl Requeue {
    /// Re-queues the workloads whose governing placement runs one of
    /// `policies`; returns how many.
    fn using(&self, policies: &BTreeSet<String>) -> usize {
        if policies.is_empty() {
            return 0;
        }
        let mut queued = 0;
        for obj in self.store.state() {
            let uses = self
                .ctx
                .governing_placement(&obj)
                .is_some_and(|p| selector::uses(&p, |name| policies.contains(name)));
            if uses
                && self
                    .tx
                    .unbounded_send(ObjectRef::from_obj_with(obj.as_ref(), self.ctx.ar.clone()))
                    .is_ok()
            {
                queued += 1;
            }
        }
        queued
    }
}

/// Names of the policies that a swap from `before` to `after` (each policy
/// as [`crate::placement::runner::PolicyRunner::policies`] lists it) added,
/// removed, or changed in digest or in whether a version serves.
pub fn changed_policies(before: &[PolicyInfo], after: &[PolicyInfo]) -> BTreeSet<String> {
    let index = |set: &[PolicyInfo]| -> BTreeMap<String, (Option<String>, bool)> {
        set.iter()
            .map(|p| (p.name.clone(), (p.digest.clone(), p.serving)))
            .collect()
    };
    let (before, after) = (index(before), index(after));
    before
        .keys()
        .chain(after.keys())
        .filter(|name| before.get(*name) != after.get(*name))
        .cloned()
        .collect()
}

/// Keeps the kind's `workloads_pending` and `status_writes_pending` gauges
/// current, and forgets the bookkeeping of deleted objects.
async fn report_pending(ctx: Arc<KindCtx>, store: Store<DynamicObject>) {
    let follows = ctx.dependencies.is_workload_kind(&ctx.kind);
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    loop {
        tokio::time::sleep(PENDING_EVERY).await;
        let current = store.state();
        ctx.forget_deleted(&current);
        if follows {
            // A deleted workload is not reconciled: the dependencies of its
            // namespace are decided again here.
            let now: BTreeMap<String, Option<String>> = current
                .iter()
                .map(|o| (workload::key(o), o.metadata.namespace.clone()))
                .collect();
            for (key, namespace) in seen.iter().filter(|(k, _)| !now.contains_key(*k)) {
                ctx.dependencies
                    .requeue_for_deleted(&ctx.kind, key, namespace.as_deref());
            }
            seen = now;
        }
        let pending = ctx.pending(&current);
        let metrics = &ctx.state.metrics;
        metrics.set_pending(&ctx.kind.kind, pending);
        metrics.set_status_writes_pending(&ctx.kind.kind, ctx.statuses.queued());
    }
}

/// How long a placement controller may take to stop after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tmc_policy_host::{PolicyKind, PolicyStatus};

    /// A policy as the host lists it; only name, digest and serving matter.
    fn info(name: &str, digest: &str, serving: bool, loaded_at: u64) -> PolicyInfo {
        PolicyInfo {
            name: name.into(),
            digest: Some(digest.into()),
            kind: Some(PolicyKind::Placement),
            status: PolicyStatus::Active,
            status_text: PolicyStatus::Active.to_string(),
            last_error: None,
            source: None,
            loaded_at: Some(loaded_at),
            serving,
        }
    }

    #[test]
    fn a_swap_changes_the_policies_whose_digest_or_serving_changed() {
        let before = [
            info("spread", "a", true, 1),
            info("stamp", "s", true, 1),
            info("gone", "g", true, 1),
        ];
        let after = [
            info("spread", "b", true, 1),
            info("stamp", "s", true, 7),
            info("new", "n", true, 1),
        ];
        let changed: Vec<String> = changed_policies(&before, &after).into_iter().collect();
        assert_eq!(changed, ["gone", "new", "spread"]);
        let refused = [info("stamp", "s", false, 1)];
        assert!(changed_policies(&before[1..2], &refused).contains("stamp"));
        assert!(changed_policies(&before, &before).is_empty());
    }
}
