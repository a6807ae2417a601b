//! Prometheus metrics of tmcd.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::placement::runner::EvalObserver;

type Labels = Vec<(String, String)>;

fn latency_histogram() -> Histogram {
    // 50 us .. ~3 s
    Histogram::new(exponential_buckets(0.000_05, 3.0, 11))
}

/// Every metric tmcd exports.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by kind and result (`ok`, `error`).
    pub reconciles: Family<Labels, Counter>,
    /// Reconcile latency by kind.
    pub reconcile_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Policy evaluation latency by policy.
    pub policy_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Failed policy evaluations by policy.
    pub policy_errors: Family<Labels, Counter>,
    /// Workloads whose copy on a target reports an apply error, by target.
    pub target_sync_errors: Family<Labels, Gauge>,
    /// Reconciles running now, all kinds.
    pub reconciles_in_flight: Gauge,
    /// Workloads changed since their last successful reconcile (waiting,
    /// running or backing off after an error), by kind: the placement queue.
    pub workloads_pending: Family<Labels, Gauge>,
    /// Aggregated status writes queued, by kind.
    pub status_writes_pending: Family<Labels, Gauge>,
    /// Status reports a push syncer holds back behind decision writes, by target.
    pub status_reports_held: Family<Labels, Gauge>,
    /// Moves whose new copies have not become available within
    /// `[sync] move_stall_seconds` (the old copies are kept).
    pub moves_stalled: Gauge,
    /// 1 when this replica leads.
    pub leader: Gauge,
    /// Times this replica stopped leading without being asked to (renew
    /// deadline passed, or the Lease named another holder).
    pub leadership_stops: Counter,
    /// Writes the fence refused because this replica did not lead (set before a scrape).
    pub fenced_writes: Gauge<u64, AtomicU64>,
    /// Events queued or being written (best effort, published behind the decisions).
    pub events_pending: Gauge,
    /// Generation of the active policy set.
    pub policy_generation: Gauge<u64, AtomicU64>,
    /// Decisions by kind and outcome: `changed` (a new decision written),
    /// `unchanged`, `failed` (a policy failed; the last decision stays).
    pub decisions: Family<Labels, Counter>,
    /// 1 when the target is Ready (its heartbeat fresh, no syncer-reported
    /// failure), by target; set before a scrape.
    pub target_ready: Family<Labels, Gauge>,
    /// Seconds since this replica saw the target's heartbeat change, by
    /// target (the syncer's lag); set before a scrape.
    pub target_heartbeat_age: Family<Labels, Gauge>,
    /// Objects, watches or heartbeats failing now in the push syncer of a
    /// target; set before a scrape.
    pub syncer_failing: Family<Labels, Gauge>,
    /// Workloads each placement governs (its status); set before a scrape.
    pub placement_workloads: Family<Labels, Gauge>,
    /// 1 when the policy host refused the current file of a policy (its last
    /// good version serves, if any); set before a scrape.
    pub policy_refused: Family<Labels, Gauge>,
    /// Watch requests held open on the control plane, by resource (see
    /// [`crate::watch_count`]); set before a scrape.
    pub watches: Family<Labels, Gauge>,
    /// Bytes in live allocations, by jemalloc's count; set before a scrape (absent on another allocator).
    pub memory_allocated: Gauge<u64, AtomicU64>,
    /// Bytes the allocator holds resident; set before a scrape (absent on another allocator).
    pub memory_resident: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tmcd");
        let reconciles = Family::default();
        registry.register(
            "reconciles",
            "Workload reconciles by kind and result",
            reconciles.clone(),
        );
        let reconcile_seconds =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "reconcile_duration_seconds",
            "Workload reconcile latency",
            reconcile_seconds.clone(),
        );
        let policy_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "policy_evaluation_duration_seconds",
            "Policy evaluation latency by policy",
            policy_seconds.clone(),
        );
        let policy_errors = Family::default();
        registry.register(
            "policy_evaluation_errors",
            "Failed policy evaluations by policy",
            policy_errors.clone(),
        );
        let target_sync_errors = Family::default();
        registry.register(
            "target_sync_errors",
            "Workloads whose copy on the target reports an apply error",
            target_sync_errors.clone(),
        );
        let reconciles_in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now",
            reconciles_in_flight.clone(),
        );
        let workloads_pending = Family::default();
        registry.register(
            "workloads_pending",
            "Workloads changed since their last successful reconcile (the placement queue)",
            workloads_pending.clone(),
        );
        let moves_stalled = Gauge::default();
        registry.register(
            "moves_stalled",
            "Moves waiting longer than move_stall_seconds for their new copies (old copies kept)",
            moves_stalled.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica holds the lease",
            leader.clone(),
        );
        let leadership_stops = Counter::default();
        registry.register(
            "leadership_stops",
            "Times this replica stopped leading because its renew deadline passed or the Lease named another holder",
            leadership_stops.clone(),
        );
        let fenced_writes = Gauge::default();
        registry.register(
            "fenced_writes",
            "Writes refused because this replica did not lead",
            fenced_writes.clone(),
        );
        let events_pending = Gauge::default();
        registry.register(
            "events_pending",
            "Events queued or being written (best effort, published behind the decisions)",
            events_pending.clone(),
        );
        let policy_generation = Gauge::default();
        registry.register(
            "policy_generation",
            "Generation of the active policy set",
            policy_generation.clone(),
        );
        let status_writes_pending = Family::default();
        registry.register(
            "status_writes_pending",
            "Aggregated workload status writes queued",
            status_writes_pending.clone(),
        );
        let status_reports_held = Family::default();
        registry.register(
            "status_reports_held",
            "Status reports a push syncer holds back while decisions are being written",
            status_reports_held.clone(),
        );
        let decisions = Family::default();
        registry.register(
            "decisions",
            "Placement decisions by kind and outcome (changed, unchanged, failed: the last decision stays)",
            decisions.clone(),
        );
        let target_ready = Family::default();
        registry.register(
            "target_ready",
            "1 when the SyncTarget is Ready (fresh heartbeat, no syncer-reported failure)",
            target_ready.clone(),
        );
        let target_heartbeat_age = Family::default();
        registry.register(
            "target_heartbeat_age_seconds",
            "Seconds since this replica saw the SyncTarget's heartbeat change",
            target_heartbeat_age.clone(),
        );
        let syncer_failing = Family::default();
        registry.register(
            "syncer_failing",
            "Objects, watches or heartbeats failing now in the push syncer of the target",
            syncer_failing.clone(),
        );
        let placement_workloads = Family::default();
        registry.register(
            "placement_workloads",
            "Workloads the ClusterWorkloadPlacement governs",
            placement_workloads.clone(),
        );
        let policy_refused = Family::default();
        registry.register(
            "policy_refused",
            "1 when the policy host refused the policy's current file (the last good version serves, if any)",
            policy_refused.clone(),
        );
        let watches = Family::default();
        registry.register(
            "watches",
            "Watch requests held open on the control plane (or kcp's virtual workspace), by resource",
            watches.clone(),
        );
        let memory_allocated = Gauge::default();
        let memory_resident = Gauge::default();
        if crate::allocator::stats().is_some() {
            registry.register(
                "memory_allocated_bytes",
                "Bytes in live allocations (jemalloc's count); far below the process's resident set means memory not yet given back",
                memory_allocated.clone(),
            );
            registry.register(
                "memory_resident_bytes",
                "Bytes in pages the allocator holds resident (jemalloc's count)",
                memory_resident.clone(),
            );
        }
        Self {
            registry,
            watches,
            memory_allocated,
            memory_resident,
            decisions,
            target_ready,
            target_heartbeat_age,
            syncer_failing,
            placement_workloads,
            policy_refused,
            reconciles,
            reconcile_seconds,
            policy_seconds,
            policy_errors,
            target_sync_errors,
            reconciles_in_flight,
            workloads_pending,
            status_writes_pending,
            status_reports_held,
            moves_stalled,
            leader,
            leadership_stops,
            fenced_writes,
            events_pending,
            policy_generation,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Sets how many workloads of `kind` wait for a reconcile.
    pub fn set_pending(&self, kind: &str, pending: usize) {
        self.workloads_pending
            .get_or_create(&vec![("kind".into(), kind.into())])
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Sets how many aggregated status writes of `kind` are queued.
    pub fn set_status_writes_pending(&self, kind: &str, queued: usize) {
        self.status_writes_pending
            .get_or_create(&vec![("kind".into(), kind.into())])
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
    }

    /// Sets how many status reports the push syncer of `target` holds back.
    pub fn set_status_reports_held(&self, target: &str, held: usize) {
        self.status_reports_held
            .get_or_create(&vec![("target".into(), target.into())])
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Sets how many workloads held by `target` report a sync error.
    pub fn set_target_sync_errors(&self, target: &str, failing: usize) {
        self.target_sync_errors
            .get_or_create(&vec![("target".into(), target.into())])
            .set(i64::try_from(failing).unwrap_or(i64::MAX));
    }

    /// Counts one decision of `kind` (see [`Metrics::decisions`]).
    pub fn decided(&self, kind: &str, outcome: &str) {
        self.decisions
            .get_or_create(&vec![
                ("kind".into(), kind.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }

    /// Sets the per-target gauges to `targets` (name, Ready, heartbeat age)
    /// and forgets targets not in it.
    pub fn set_targets<'a>(
        &self,
        targets: impl IntoIterator<Item = (&'a str, bool, Option<Duration>)>,
    ) {
        self.target_ready.clear();
        self.target_heartbeat_age.clear();
        for (name, ready, age) in targets {
            let labels = vec![("target".to_string(), name.to_string())];
            self.target_ready
                .get_or_create(&labels)
                .set(i64::from(ready));
            if let Some(age) = age {
                self.target_heartbeat_age
                    .get_or_create(&labels)
                    .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
            }
        }
    }

    /// Sets how many things fail in each push syncer (target, failing), and
    /// forgets syncers not in it.
    pub fn set_syncers_failing<'a>(&self, syncers: impl IntoIterator<Item = (&'a str, usize)>) {
        self.syncer_failing.clear();
        for (target, failing) in syncers {
            self.syncer_failing
                .get_or_create(&vec![("target".into(), target.into())])
                .set(i64::try_from(failing).unwrap_or(i64::MAX));
        }
    }

    /// Sets the open watches per resource (see [`crate::watch_count::OpenWatches`]).
    pub fn set_watches(&self, open: &std::collections::BTreeMap<String, i64>) {
        for (resource, n) in open {
            self.watches
                .get_or_create(&vec![("resource".into(), resource.clone())])
                .set(*n);
        }
    }

    /// Sets the memory gauges from the allocator's figures now, when it reports any.
    pub fn set_memory(&self) {
        if let Some(stats) = crate::allocator::stats() {
            self.memory_allocated.set(stats.allocated);
            self.memory_resident.set(stats.resident);
        }
    }

    /// Sets the workloads of each placement (name, workloads), and forgets
    /// placements not in it.
    pub fn set_placements<'a>(&self, placements: impl IntoIterator<Item = (&'a str, u32)>) {
        self.placement_workloads.clear();
        for (name, workloads) in placements {
            self.placement_workloads
                .get_or_create(&vec![("placement".into(), name.into())])
                .set(i64::from(workloads));
        }
    }

    /// Sets which policies the host refused (name, refused), and forgets
    /// policies not in it.
    pub fn set_policies_refused<'a>(&self, policies: impl IntoIterator<Item = (&'a str, bool)>) {
        self.policy_refused.clear();
        for (name, refused) in policies {
            self.policy_refused
                .get_or_create(&vec![("policy".into(), name.into())])
                .set(i64::from(refused));
        }
    }

    /// Records one reconcile of `kind`.
    pub fn reconciled(&self, kind: &str, ok: bool, elapsed: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&vec![
                ("kind".into(), kind.into()),
                ("result".into(), result.into()),
            ])
            .inc();
        self.reconcile_seconds
            .get_or_create(&vec![("kind".into(), kind.into())])
            .observe(elapsed.as_secs_f64());
    }
}

impl EvalObserver for Metrics {
    fn observe(&self, policy: &str, elapsed: Duration, failed: bool) {
        let labels = vec![("policy".to_string(), policy.to_string())];
        self.policy_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if failed {
            self.policy_errors.get_or_create(&labels).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::default();
        m.reconciled("Deployment", true, Duration::from_millis(3));
        m.observe("spread", Duration::from_micros(80), true);
        let text = m.render();
        assert!(
            text.contains("tmcd_reconciles_total{kind=\"Deployment\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tmcd_policy_evaluation_errors_total{policy=\"spread\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tmcd_reconcile_duration_seconds_count{kind=\"Deployment\"} 1"),
            "{text}"
        );
    }
}
