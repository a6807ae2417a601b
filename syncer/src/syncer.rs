//! [`Syncer`]: one target's watches, work queue, workers, resync and
//! heartbeat, run until a shutdown future resolves.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event, watcher};
use tmc_api::decision::state_label;
use tmc_api::protocol::our_copies_selector;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, warn};

use crate::capacity;
use crate::claim::{Claim, ClaimState};
use crate::copy::CopyContext;
use crate::engine::{
    Engine, ObjectKey, Outcome, STATUS_COALESCE, Stores, downstream_key, upstream_key,
};
use crate::error::Error;
use crate::gate::ReportGate;
use crate::health::{HealthCell, SyncerHealth};
use crate::heartbeat::{self, Observation};
use crate::identity::{NamespaceMapping, SourceIdentity};
use crate::kinds::SyncedKind;
use crate::queue::{Backoff, WorkQueue};
use crate::replicas::{self, ReplicasPolicy};
use crate::workspaces::BoundWorkspaces;

/// Everything a [`Syncer`] for one target needs.
#[derive(Clone)]
pub struct SyncerConfig {
    /// The SyncTarget name `<t>`.
    pub target: String,
    /// Client of the workspace (or any Kubernetes API) holding the workloads and the SyncTarget.
    pub upstream: kube::Client,
    /// Client of the physical cluster.
    pub downstream: kube::Client,
    /// Kinds to sync (see [`SyncedKind::defaults`]).
    pub kinds: Vec<SyncedKind>,
    /// Where the copies come from.
    pub source: SourceIdentity,
    /// Downstream namespace of each upstream namespace.
    pub namespace_mapping: NamespaceMapping,
    /// How often to heartbeat into the SyncTarget (default 10 s).
    pub heartbeat_interval: Duration,
    /// How often the cluster's capacity is read (in a task of its own) and
    /// written with the heartbeat that follows (default 30 s; see [`crate::capacity`]).
    pub capacity_interval: Duration,
    /// How often every known object is reconciled again (default 5 min).
    pub resync_interval: Duration,
    /// Objects reconciled concurrently (default 4).
    pub workers: usize,
    /// Retry delays of failing objects.
    pub backoff: Backoff,
    /// After a status report, how long changes of a copy's `.status` alone
    /// are held back and coalesced into one report (default 2 s). Reports of a
    /// new apply, generation or error are never held back.
    pub status_coalesce: Duration,
    /// Holds reports that can wait while the running process has more urgent
    /// writes for the control plane (tmcd: placement decisions); none by default.
    pub report_gate: Option<Arc<dyn ReportGate>>,
    /// Which copies' replicas the physical cluster owns (default: those a
    /// HorizontalPodAutoscaler targets; see [`crate::replicas`]).
    pub replicas_owner: ReplicasPolicy,
    /// Where the workloads come from when not from `upstream`: every
    /// workspace bound to an APIExport (see [`crate::workspaces`]); needs
    /// [`NamespaceMapping::Workspaces`]. `upstream` still holds the SyncTarget.
    pub workspaces: Option<Arc<dyn BoundWorkspaces>>,
}

impl SyncerConfig {
    /// A config with the default kinds, `Same` namespace mapping and default intervals.
    pub fn new(
        target: &str,
        upstream: kube::Client,
        downstream: kube::Client,
        source: SourceIdentity,
    ) -> Self {
        Self {
            target: target.to_string(),
            upstream,
            downstream,
            kinds: SyncedKind::defaults(),
            source,
            namespace_mapping: NamespaceMapping::Same,
            heartbeat_interval: Duration::from_secs(10),
            capacity_interval: Duration::from_secs(30),
            resync_interval: Duration::from_secs(300),
            workers: 4,
            backoff: Backoff::default(),
            status_coalesce: STATUS_COALESCE,
            report_gate: None,
            replicas_owner: ReplicasPolicy::default(),
            workspaces: None,
        }
    }
}

impl fmt::Debug for SyncerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncerConfig")
            .field("target", &self.target)
            .field(
                "kinds",
                &self
                    .kinds
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .field("source", &self.source)
            .field("namespace_mapping", &self.namespace_mapping)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("capacity_interval", &self.capacity_interval)
            .field("resync_interval", &self.resync_interval)
            .field("workers", &self.workers)
            .field("status_coalesce", &self.status_coalesce)
            .field("report_gate", &self.report_gate.is_some())
            .field("replicas_owner", &self.replicas_owner)
            .field("workspaces", &self.workspaces.is_some())
            .finish_non_exhaustive()
    }
}

/// The syncer of one target (push mode in tmcd, pull mode in `tmc-syncer`).
pub struct Syncer {
    config: SyncerConfig,
    engine: Arc<Engine>,
}

impl Syncer {
    /// A syncer for `config` (nothing runs until [`Syncer::run`]).
    pub fn new(config: SyncerConfig) -> Self {
        let health = HealthCell::new(&config.target);
        let ctx = CopyContext {
            target: config.target.clone(),
            source: config.source.clone(),
            namespace_mapping: config.namespace_mapping.clone(),
        };
        let mut engine = Engine::new(
            ctx,
            config.kinds.clone(),
            config.upstream.clone(),
            config.downstream.clone(),
            health,
        );
        engine.status_coalesce = config.status_coalesce;
        engine.report_gate = config.report_gate.clone();
        engine.replicas_policy = config.replicas_owner;
        engine.workspaces = config.workspaces.clone();
        let engine = Arc::new(engine);
        Self { config, engine }
    }

    /// The target this syncer serves.
    pub fn target(&self) -> &str {
        &self.config.target
    }

    /// A cheap snapshot of the syncer's health; the per-kind object counts
    /// are read from the watch caches now (not from the last heartbeat).
    pub fn health(&self) -> SyncerHealth {
        if let Some(stores) = self.engine.caches() {
            stores.update_counts(&self.engine);
        }
        let mut health = self.engine.health.snapshot();
        health.reports_held = self.engine.reports_held();
        health
    }

    /// Status reports held back now by the report gate (see [`crate::gate`]).
    pub fn reports_held(&self) -> usize {
        self.engine.reports_held()
    }

    /// Runs the syncer until `shutdown` resolves. Errors of single objects are
    /// retried with backoff and reported in [`Syncer::health`]; they never end the run.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let config = &self.config;
        if config.kinds.is_empty() {
            anyhow::bail!(
                "syncer {}: no kinds to sync; configure at least one, e.g. apps/v1/Deployment",
                config.target
            );
        }
        let from_workspaces = config.workspaces.is_some();
        if from_workspaces != (config.namespace_mapping == NamespaceMapping::Workspaces) {
            anyhow::bail!(
                "syncer {}: workloads read from many workspaces need the `workspaces` namespace mapping, and only they do (got mapping `{}`, {} workspaces)",
                config.target,
                config.namespace_mapping,
                if from_workspaces { "with" } else { "without" }
            );
        }
        if from_workspaces {
            for kind in config.kinds.iter().filter(|k| !k.namespaced) {
                warn!(kind = %kind, "cluster-scoped objects of tenant workspaces are not synced: two workspaces' objects of one name would meet on the cluster");
            }
        }
        info!(target_name = %config.target, kinds = ?config.kinds.iter().map(ToString::to_string).collect::<Vec<_>>(),
            source = %config.source.workspace_path, mapping = %config.namespace_mapping, "syncer starting");
        let queue = WorkQueue::new(config.backoff);
        let mut background = JoinSet::new();
        let mut upstream_stores = Vec::new();
        let mut downstream_stores = Vec::new();
        for (index, kind) in config.kinds.iter().enumerate() {
            let ar = kind.api_resource();
            let up_writer = Writer::new(ar.clone());
            upstream_stores.push(up_writer.as_reader());
            background.spawn(
                watch_kind(
                    self.engine.clone(),
                    queue.clone(),
                    index,
                    Side::Upstream,
                    up_writer,
                )
                .in_current_span(),
            );
            let down_writer = Writer::new(ar);
            downstream_stores.push(down_writer.as_reader());
            background.spawn(
                watch_kind(
                    self.engine.clone(),
                    queue.clone(),
                    index,
                    Side::Downstream,
                    down_writer,
                )
                .in_current_span(),
            );
        }
        let autoscalers = (config.replicas_owner == ReplicasPolicy::Autoscaler
            && config.kinds.iter().any(replicas::has_replicas))
        .then(|| {
            let writer = Writer::new(replicas::autoscaler_resource());
            let reader = writer.as_reader();
            background.spawn(
                watch_autoscalers(self.engine.clone(), queue.clone(), writer).in_current_span(),
            );
            reader
        });
        let stores = Arc::new(Stores {
            upstream: upstream_stores,
            downstream: downstream_stores,
            autoscalers,
        });
        self.engine.set_caches(Some(stores.clone()));
        // Nothing is applied or deleted before the first heartbeat holds the
        // cluster's claim (see `crate::claim`); holding it queues every object.
        self.engine.set_claim_refused(true);
        background.spawn(
            resync(
                self.engine.clone(),
                queue.clone(),
                stores.clone(),
                config.resync_interval,
            )
            .in_current_span(),
        );
        background.spawn(
            heartbeats(
                self.engine.clone(),
                queue.clone(),
                stores,
                config.heartbeat_interval,
                config.capacity_interval,
            )
            .in_current_span(),
        );

        let mut workers = JoinSet::new();
        for _ in 0..config.workers.max(1) {
            workers.spawn(work(self.engine.clone(), queue.clone()).in_current_span());
        }
        shutdown.await;
        info!(target_name = %config.target, "syncer stopping");
        queue.shut_down();
        background.abort_all();
        // Let workers finish the object in hand (every step is idempotent, so an abort is safe too).
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            workers.abort_all();
        }
        while background.join_next().await.is_some() {}
        self.engine.set_caches(None);
        Ok(())
    }
}

/// Drops `metadata.managedFields` from a watched object before it is cached:
/// copies never carry them, and they are most of an object's metadata (one
/// entry per writer), held here for every object of two caches.
pub fn drop_managed_fields(object: &mut DynamicObject) {
    object.metadata.managed_fields = None;
}

/// The cluster a watch of a synced kind reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The control plane: the objects that record a decision for this target.
    Upstream,
    /// The target's cluster: this syncer's copies (drift correction).
    Downstream,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Upstream => "upstream",
            Side::Downstream => "downstream",
        }
    }

    fn set_connected(self, health: &mut SyncerHealth, connected: bool) {
        match self {
            Side::Upstream => health.upstream_connected = connected,
            Side::Downstream => health.downstream_connected = connected,
        }
    }
}

/// Watches synced kind `kind` on `side`, caches it in `writer` and queues the
/// upstream key of every object that changes.
async fn watch_kind(
    engine: Arc<Engine>,
    queue: Arc<WorkQueue<ObjectKey>>,
    kind: usize,
    side: Side,
    mut writer: Writer<DynamicObject>,
) {
    let (client, selector) = match side {
        Side::Upstream => (
            engine
                .workspaces
                .as_ref()
                .map_or_else(|| engine.upstream.clone(), |ws| ws.wildcard()),
            state_label(&engine.ctx.target),
        ),
        Side::Downstream => (
            engine.downstream.clone(),
            our_copies_selector(&engine.ctx.source.synced_from),
        ),
    };
    let api: Api<DynamicObject> = Api::all_with(client, &engine.resources[kind]);
    let config = watcher::Config::default().labels(&selector);
    let what = engine.kinds[kind].to_string();
    let scope = format!("{} watch of {what}", side.name());
    // Objects of many workspaces are stored under `<cluster>|<namespace>`.
    let scoped = side == Side::Upstream && engine.workspaces.is_some();
    let mut stream = watcher(api, config)
        .modify(move |object| {
            drop_managed_fields(object);
            if scoped {
                crate::workspaces::map_for_store(object);
            }
        })
        .default_backoff()
        .boxed();
    let mut said = Said::default();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                // `Init` starts every (re)list, also one about to fail again.
                if !matches!(event, Event::Init) {
                    said.clear();
                }
                writer.apply_watcher_event(&event);
                engine.health.update(|h| side.set_connected(h, true));
                engine.health.resolve(&scope);
                if let Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) = &event {
                    let key = match side {
                        Side::Upstream => upstream_key(&engine, kind, o),
                        Side::Downstream => downstream_key(&engine, kind, o),
                    };
                    if let Some(key) = key {
                        queue.add(key);
                    }
                }
            }
            Err(err) => {
                engine.health.update(|h| side.set_connected(h, false));
                engine.health.error(&scope, format!("{scope}: {err}"));
                if said.first_time(&err.to_string()) {
                    warn!(kind = %what, error = %err, "{scope} failed; retrying with backoff (nothing is deleted; the same failure again is logged at debug)");
                } else {
                    debug!(kind = %what, error = %err, "{scope} failed again; retrying with backoff");
                }
            }
        }
    }
}

/// What a retrying watch last warned about: the same failure again (a
/// resource the server does not serve fails every second) is not repeated at
/// warn until the watch has worked in between, or [`SAID_AGAIN_AFTER`] passed.
#[derive(Default)]
struct Said {
    last: Option<(String, std::time::Instant)>,
}

/// How often a failure that goes on is warned about again.
const SAID_AGAIN_AFTER: Duration = Duration::from_secs(300);

impl Said {
    /// Whether `failure` is worth a warning now (and remembers it if so).
    fn first_time(&mut self, failure: &str) -> bool {
        let repeated = self
            .last
            .as_ref()
            .is_some_and(|(last, at)| last == failure && at.elapsed() < SAID_AGAIN_AFTER);
        if !repeated {
            self.last = Some((failure.to_owned(), std::time::Instant::now()));
        }
        !repeated
    }

    /// The watch works again: its next failure is warned about.
    fn clear(&mut self) {
        self.last = None;
    }
}

/// Watches the cluster's HorizontalPodAutoscalers and queues the objects
/// whose copies they target, so that a new autoscaler gets the copy's
/// replicas and a deleted one gives them back to tmc (see [`crate::replicas`]).
async fn watch_autoscalers(
    engine: Arc<Engine>,
    queue: Arc<WorkQueue<ObjectKey>>,
    mut writer: Writer<DynamicObject>,
) {
    let api: Api<DynamicObject> =
        Api::all_with(engine.downstream.clone(), &replicas::autoscaler_resource());
    let scope = "downstream watch of autoscaling/v2/HorizontalPodAutoscaler";
    let mut stream = watcher(api, watcher::Config::default())
        .modify(drop_managed_fields)
        .default_backoff()
        .boxed();
    let mut said = Said::default();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                if !matches!(event, Event::Init) {
                    said.clear();
                }
                writer.apply_watcher_event(&event);
                engine.health.resolve(scope);
                if let Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) = &event {
                    for key in scaled_keys(&engine, o) {
                        queue.add(key);
                    }
                }
            }
            // A cluster that serves no HorizontalPodAutoscalers (an API
            // server without autoscaling/v2) has none: every copy's replicas
            // are tmc's. A restart sees the API once it is served. The code,
            // not only the reason: an unserved path is a plain-text "404 page
            // not found" (kcp's logical clusters), whose reason is not NotFound.
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                if status.is_not_found() || status.code == 404 =>
            {
                writer.apply_watcher_event(&Event::Init);
                writer.apply_watcher_event(&Event::InitDone);
                engine.health.resolve(scope);
                info!(
                    "the cluster serves no autoscaling/v2 HorizontalPodAutoscalers: replicas stay tmc's"
                );
                return;
            }
            Err(err) => {
                engine.health.error(scope, format!("{scope}: {err}"));
                if said.first_time(&err.to_string()) {
                    warn!(error = %err, "autoscaler watch failed; retrying with backoff (copies handed over to an autoscaler stay with it; the same failure again is logged at debug)");
                } else {
                    debug!(error = %err, "autoscaler watch failed again; retrying with backoff");
                }
            }
        }
    }
}

/// The upstream keys of the synced objects whose copy `hpa` targets.
fn scaled_keys(engine: &Engine, hpa: &DynamicObject) -> Vec<ObjectKey> {
    let (Some((group, kind, name)), Some(ns)) =
        (replicas::scale_target(hpa), &hpa.metadata.namespace)
    else {
        return Vec::new();
    };
    let Some(namespace) = engine.ctx.namespace_mapping.upstream(ns, None) else {
        return Vec::new();
    };
    engine
        .kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| replicas::has_replicas(k) && k.group == group && k.kind == kind)
        .map(|(index, _)| ObjectKey {
            kind: index,
            namespace: Some(namespace.clone()),
            name: name.to_string(),
        })
        .collect()
}

/// How often a workload whose dependency is not on the target yet is looked at again.
const DEPENDENCY_RECHECK: Duration = Duration::from_secs(2);

/// Reconciles queued objects until the queue shuts down.
async fn work(engine: Arc<Engine>, queue: Arc<WorkQueue<ObjectKey>>) {
    while let Some(key) = queue.next().await {
        match engine.reconcile(&key).await {
            Ok(Outcome::Done) => {
                queue.forget(&key);
                engine.health.resolve(&engine.describe(&key));
            }
            Ok(Outcome::After(delay)) => {
                queue.forget(&key);
                engine.health.resolve(&engine.describe(&key));
                queue.add_after(key.clone(), delay);
            }
            Err(Error::Requeue { what, after }) => {
                debug!(%what, "requeued");
                queue.add_after(key.clone(), after);
            }
            Err(err @ Error::DependencyMissing { .. }) => {
                // Reported upstream already; no backoff: the dependency may
                // arrive any moment.
                debug!(error = %err, "waiting for a dependency");
                engine.health.error(&engine.describe(&key), err.to_string());
                queue.add_after(key.clone(), DEPENDENCY_RECHECK);
            }
            Err(err) => {
                let delay = queue.retry(key.clone());
                warn!(object = ?key, error = %err, retry_in = ?delay, "reconcile failed");
                engine.health.error(&engine.describe(&key), err.to_string());
            }
        }
        queue.done(&key);
    }
}

/// Queues every known object every `interval` and refreshes the counts.
async fn resync(
    engine: Arc<Engine>,
    queue: Arc<WorkQueue<ObjectKey>>,
    stores: Arc<Stores>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        stores.enqueue_all(&engine, &queue);
        stores.update_counts(&engine);
        engine.prune();
    }
}

/// Health scope of heartbeat errors.
const HEARTBEAT_SCOPE: &str = "heartbeat";
/// Health scope of the cluster's claim (see [`crate::claim`]).
const CLAIM_SCOPE: &str = "claim";

/// How long a claim outlives its last renewal: four heartbeats, at least 10 s.
fn claim_duration(heartbeat: Duration) -> Duration {
    (heartbeat * 4).max(Duration::from_secs(10))
}

/// Renews the cluster's claim as `uid`; a refusal detaches the engine (it
/// applies and deletes nothing). `None` when the claim could not be read or
/// written (the cluster is unreachable): the state stays as it was.
async fn renew_claim(engine: &Engine, claim: &mut Claim, uid: &str) -> Option<ClaimState> {
    match claim.renew(uid).await {
        Ok(ClaimState::Held) => {
            engine.health.resolve(CLAIM_SCOPE);
            Some(ClaimState::Held)
        }
        Ok(refused @ ClaimState::Refused { .. }) => {
            if let ClaimState::Refused { message, .. } = &refused {
                if !engine.set_claim_refused(true) {
                    warn!(target_name = %engine.ctx.target, "{message}");
                }
                engine.health.error(CLAIM_SCOPE, message.clone());
            }
            Some(refused)
        }
        Err(err) => {
            debug!(error = %err, "could not renew the cluster's claim");
            None
        }
    }
}

/// Health scope of copies written under another namespace mapping.
const MAPPING_SCOPE: &str = "namespace mapping";

/// Shows in the syncer's health the copies that another namespace mapping
/// wrote (they are kept as they are; their objects are refused).
fn report_stranded(engine: &Engine, stores: &Stores) {
    let stranded = stores.stranded(engine);
    match stranded.first() {
        None => engine.health.resolve(MAPPING_SCOPE),
        Some(example) => engine.health.error(
            MAPPING_SCOPE,
            format!(
                "{} copies were written under another namespace mapping than `{}` (e.g. {example}); they are kept, never moved or deleted, and their workloads are not synced (fix: set the namespace mapping back, or remove those copies first)",
                stranded.len(),
                engine.ctx.namespace_mapping
            ),
        ),
    }
}

/// Heartbeats every `interval`. When the cluster becomes reachable again,
/// every object is queued at once (instead of waiting out its backoff).
async fn heartbeats(
    engine: Arc<Engine>,
    queue: Arc<WorkQueue<ObjectKey>>,
    stores: Arc<Stores>,
    interval: Duration,
    capacity_interval: Duration,
) {
    let capacity_reader = capacity::Reader::spawn(engine.downstream.clone(), capacity_interval);
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_unreachable = false;
    let mut claim = Claim::new(
        engine.downstream.clone(),
        &engine.ctx.source.synced_from,
        &engine.ctx.target,
        claim_duration(interval),
    );
    let mut refused = None;
    loop {
        ticker.tick().await;
        stores.update_counts(&engine);
        report_stranded(&engine, &stores);
        let discovered = tokio::time::timeout(
            interval.max(Duration::from_secs(5)),
            heartbeat::discover(&engine.downstream, &engine.kinds),
        )
        .await;
        let (synced_resources, unreachable) = match discovered {
            Ok(Ok(resources)) => (Some(resources), None),
            Ok(Err(err)) => (None, Some(format!("cannot reach the cluster: {err}"))),
            Err(_) => (
                None,
                Some("cannot reach the cluster: discovery timed out".to_string()),
            ),
        };
        engine
            .health
            .update(|h| h.downstream_connected = unreachable.is_none());
        if was_unreachable && unreachable.is_none() {
            info!(target_name = %engine.ctx.target, "cluster reachable again; resyncing every object");
            stores.enqueue_all(&engine, &queue);
        }
        was_unreachable = unreachable.is_some();
        let observation = Observation {
            synced_resources,
            unreachable,
            refused: refused.clone(),
            workload_count: stores.workload_count(&engine.ctx.target),
            capacity: capacity_reader.take(),
        };
        match heartbeat::beat(&engine.upstream, &engine.ctx.target, &observation).await {
            Ok((at, uid)) => {
                if engine.set_target_missing(false) {
                    info!(target_name = %engine.ctx.target, "SyncTarget exists again; resyncing every object");
                    stores.enqueue_all(&engine, &queue);
                }
                let renewal = tokio::time::timeout(
                    interval.max(Duration::from_secs(5)),
                    renew_claim(&engine, &mut claim, &uid),
                );
                if let Ok(Some(state)) = renewal.await {
                    refused = match state {
                        ClaimState::Held => None,
                        ClaimState::Refused { message, .. } => Some(message),
                    };
                    if refused.is_none() && engine.set_claim_refused(false) {
                        info!(target_name = %engine.ctx.target, "holding the cluster's claim; syncing every object");
                        stores.enqueue_all(&engine, &queue);
                    }
                }
                engine.health.resolve(HEARTBEAT_SCOPE);
                engine.health.update(|h| {
                    h.last_heartbeat = Some(at);
                    h.upstream_connected = true;
                });
            }
            Err(err) => {
                if err.is_target_missing() && !engine.set_target_missing(true) {
                    warn!(target_name = %engine.ctx.target, "SyncTarget is gone: detached from the cluster, nothing is applied or deleted until it exists again");
                }
                warn!(error = %err, "heartbeat failed");
                engine.health.error(HEARTBEAT_SCOPE, err.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Said;

    #[test]
    fn a_failure_is_warned_once_until_it_changes_or_the_watch_works_again() {
        let mut said = Said::default();
        assert!(said.first_time("404 page not found"));
        assert!(!said.first_time("404 page not found"));
        assert!(said.first_time("connection refused"));
        assert!(!said.first_time("connection refused"));
        said.clear();
        assert!(said.first_time("connection refused"));
    }
}
