//! What the parts of a running tmcd share: metrics, logs, leadership, the
//! watched stores, the policy runner and the push syncers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kube::runtime::reflector::Store;
use tmc_api::crd::{ClusterWorkloadPlacement, SyncTarget, SyncTargetGrant};
use tmc_syncer::{SyncedKind, Syncer, SyncerHealth};

use crate::audit::AuditLog;
use crate::config::Config;
use crate::fence::Fence;
use crate::placement::activity::DecisionActivity;
use crate::placement::heartbeats::Heartbeats;
use crate::placement::moves::MoveTracker;
use crate::placement::rollout_track::RolloutTracker;
use crate::placement::runner::PolicyRunner;
use crate::placement::settings::SettingsVerdicts;
use crate::placement::targets::TargetView;
use crate::placement::triggers::Triggers;
use crate::telemetry::logs::SyncerLogs;
use crate::telemetry::metrics::Metrics;
use crate::watch_count::OpenWatches;
use crate::workspaces::Workspaces;

/// Shared state of one tmcd.
pub struct State {
    pub config: Config,
    /// This replica's identity in the lease.
    pub identity: String,
    pub metrics: Metrics,
    pub logs: SyncerLogs,
    leader: AtomicBool,
    /// When tmcd saw each SyncTarget's heartbeat change (its own clock).
    pub heartbeats: Arc<Heartbeats>,
    /// Refuses the writes of the leader's clients unless this replica leads.
    pub fence: Fence,
    /// Re-queue all workloads (placement, target or policy changes, resync requests).
    pub triggers: Arc<Triggers>,
    /// The policy runner; hot reloads swap the policy set inside it.
    pub policies: Arc<dyn PolicyRunner>,
    /// The watched SyncTargets (they fill as the watch runs).
    pub targets: Store<SyncTarget>,
    /// The watched ClusterWorkloadPlacements (they fill as the watch runs).
    pub placements: Store<ClusterWorkloadPlacement>,
    /// The watched SyncTargetGrants, in export mode (see [`crate::placement::grants`]).
    pub grants: Option<Store<SyncTargetGrant>>,
    syncers: Mutex<BTreeMap<String, Arc<Syncer>>>,
    /// Whether the policies accept each placement's settings.
    pub settings: SettingsVerdicts,
    /// Last policy error per placement (cleared by a success).
    pub policy_errors: Mutex<BTreeMap<String, String>>,
    /// Per placement, the workloads a per-tenant limit holds back from a
    /// target (workload -> what and the fix), in export mode.
    pub limit_hits: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// A decision was written: placement statuses are refreshed soon.
    pub decisions_changed: tokio::sync::Notify,
    /// Decision writes in progress: status writes wait behind them.
    pub decisions: Arc<DecisionActivity>,
    /// Moves in progress, and the stalled ones.
    pub moves: MoveTracker,
    /// What the workload reconciles saw of their placements' rollout stages.
    pub rollouts: RolloutTracker,
    /// Where decision changes are recorded.
    pub audit: AuditLog,
    /// The control plane, for reads that are no part of the leader's work
    /// (`tmcd explain` reads the workload it is asked about).
    pub reader: kube::Client,
    /// The workload kinds this tmcd syncs.
    pub kinds: Vec<SyncedKind>,
    /// Where the workloads and placements are: one workspace, or every
    /// workspace bound to tmc's export.
    pub workspaces: Workspaces,
    /// The watch requests the control-plane clients hold open.
    pub watches: OpenWatches,
}

/// What a [`State`] is made of besides its configuration: built before it,
/// because the watches feed the heartbeats and triggers, and the leader's
/// client writes through the fence.
pub struct Parts {
    /// This replica's identity in the lease.
    pub identity: String,
    pub logs: SyncerLogs,
    pub fence: Fence,
    pub heartbeats: Arc<Heartbeats>,
    pub triggers: Arc<Triggers>,
    pub policies: Arc<dyn PolicyRunner>,
    pub targets: Store<SyncTarget>,
    pub placements: Store<ClusterWorkloadPlacement>,
    /// The watched SyncTargetGrants, in export mode.
    pub grants: Option<Store<SyncTargetGrant>>,
    /// Where decision changes are recorded.
    pub audit: AuditLog,
    /// The control plane, for reads (not fenced).
    pub reader: kube::Client,
    /// The workload kinds this tmcd syncs.
    pub kinds: Vec<SyncedKind>,
    /// Where the workloads and placements are.
    pub workspaces: Workspaces,
    /// Counts the watches of the clients built with it.
    pub watches: OpenWatches,
}

impl State {
    /// The state of a tmcd running `config`, not leading.
    pub fn new(config: Config, parts: Parts) -> Self {
        let decisions = Arc::new(DecisionActivity::new(config.sync.status_hold_max()));
        let moves = MoveTracker::new(config.sync.move_stall());
        Self {
            config,
            identity: parts.identity,
            metrics: Metrics::default(),
            logs: parts.logs,
            leader: AtomicBool::new(false),
            fence: parts.fence,
            heartbeats: parts.heartbeats,
            triggers: parts.triggers,
            policies: parts.policies,
            targets: parts.targets,
            placements: parts.placements,
            grants: parts.grants,
            audit: parts.audit,
            reader: parts.reader,
            kinds: parts.kinds,
            workspaces: parts.workspaces,
            watches: parts.watches,
            settings: SettingsVerdicts::default(),
            syncers: Mutex::new(BTreeMap::new()),
            policy_errors: Mutex::new(BTreeMap::new()),
            limit_hits: Mutex::new(BTreeMap::new()),
            decisions_changed: tokio::sync::Notify::new(),
            decisions,
            moves,
            rollouts: RolloutTracker::default(),
        }
    }

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Records leadership.
    pub fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Ordering::SeqCst);
        self.metrics.leader.set(i64::from(leading));
    }

    /// Registers a running push syncer.
    pub fn add_syncer(&self, syncer: Arc<Syncer>) {
        self.syncers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(syncer.target().to_string(), syncer);
    }

    /// Forgets all push syncers (leadership lost).
    pub fn clear_syncers(&self) {
        self.syncers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Refreshes the gauges read at a scrape: the push syncers', the open watches and the allocator's.
    pub fn refresh_scrape_gauges(&self) {
        self.metrics.fenced_writes.set(self.fence.writes_refused());
        self.metrics.set_watches(&self.watches.snapshot());
        self.metrics.set_memory();
        let syncers = self.syncers.lock().unwrap_or_else(PoisonError::into_inner);
        for (target, syncer) in syncers.iter() {
            self.metrics
                .set_status_reports_held(target, syncer.reports_held());
        }
    }

    /// The view of `target` now, its heartbeat judged by when this tmcd saw it change.
    pub fn target_view(&self, target: &SyncTarget) -> TargetView {
        let name = target.metadata.name.as_deref().unwrap_or_default();
        TargetView::with_age(
            target,
            self.heartbeats.age(name),
            chrono::Utc::now(),
            self.config.sync.heartbeat_threshold(),
        )
    }

    /// Health of the push syncer of `target`, if one runs here.
    pub fn syncer_health(&self, target: &str) -> Option<SyncerHealth> {
        self.syncers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(target)
            .map(|s| s.health())
    }
}
