//! A cheap snapshot of a syncer's health for the admin endpoint.
//!
//! Errors are tracked per *scope* (one object, one watch, the heartbeat): a
//! scope that works again resolves its error, so [`SyncerHealth::last_error`]
//! is always a current problem; the last resolved one stays visible in
//! [`SyncerHealth::last_resolved_error`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// At most this many current failures are tracked (the oldest is dropped).
const MAX_FAILURES: usize = 10_000;

/// Health of one syncer, as served by the admin endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncerHealth {
    /// The SyncTarget name.
    pub target: String,
    /// The last upstream call or watch succeeded.
    pub upstream_connected: bool,
    /// The last downstream call or watch succeeded.
    pub downstream_connected: bool,
    /// When the last heartbeat was written to the SyncTarget.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Applies that changed a downstream copy since start.
    pub objects_synced: u64,
    /// Copies deleted downstream since start.
    pub objects_deleted: u64,
    /// The newest error that is still current (its object, watch or heartbeat
    /// has not worked since); `None` when nothing is failing.
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_time: Option<DateTime<Utc>>,
    /// How many objects, watches or heartbeats are failing now.
    pub failing: usize,
    /// The last error that was resolved (its scope worked again), for the record.
    pub last_resolved_error: Option<ResolvedError>,
    /// Per kind (`apps/v1/Deployment`): objects assigned upstream, copies
    /// downstream, applies and deletes since start.
    pub kinds: BTreeMap<String, KindCounts>,
    /// Status reports held back now by the syncer's report gate (see [`crate::gate`]).
    pub reports_held: usize,
}

/// An error that no longer happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedError {
    /// The error message.
    pub message: String,
    /// When it (last) happened.
    pub time: DateTime<Utc>,
    /// When the same object, watch or heartbeat worked again.
    pub resolved: DateTime<Utc>,
}

/// Object counts of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindCounts {
    /// Upstream objects labelled for this target.
    pub upstream: usize,
    /// Downstream copies of this syncer.
    pub downstream: usize,
    /// Applies that changed a copy of this kind since start.
    pub synced: u64,
    /// Copies of this kind deleted since start.
    pub deleted: u64,
}

#[derive(Debug, Default)]
struct Inner {
    health: SyncerHealth,
    /// Current failures by scope: message and time.
    failures: BTreeMap<String, (String, DateTime<Utc>)>,
}

impl Inner {
    /// Sets `last_error` to the newest current failure.
    fn refresh(&mut self) {
        let newest = self.failures.values().max_by_key(|(_, time)| *time);
        self.health.last_error = newest.map(|(message, _)| message.clone());
        self.health.last_error_time = newest.map(|(_, time)| *time);
        self.health.failing = self.failures.len();
    }
}

/// Shared, mutable health of a running syncer.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthCell(Arc<Mutex<Inner>>);

impl HealthCell {
    pub(crate) fn new(target: &str) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            health: SyncerHealth {
                target: target.to_string(),
                ..SyncerHealth::default()
            },
            failures: BTreeMap::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn snapshot(&self) -> SyncerHealth {
        self.lock().health.clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut SyncerHealth)) {
        f(&mut self.lock().health);
    }

    /// Counts one changed copy of `kind`.
    pub(crate) fn synced(&self, kind: &str) {
        self.update(|h| {
            h.objects_synced += 1;
            h.kinds.entry(kind.to_string()).or_default().synced += 1;
        });
    }

    /// Counts one deleted copy of `kind`.
    pub(crate) fn deleted(&self, kind: &str) {
        self.update(|h| {
            h.objects_deleted += 1;
            h.kinds.entry(kind.to_string()).or_default().deleted += 1;
        });
    }

    /// Sets the upstream and downstream object counts of `kind` (keeps its apply/delete counters).
    pub(crate) fn set_counts(&self, kind: &str, upstream: usize, downstream: usize) {
        self.update(|h| {
            let counts = h.kinds.entry(kind.to_string()).or_default();
            counts.upstream = upstream;
            counts.downstream = downstream;
        });
    }

    /// Records that `scope` (an object, a watch, the heartbeat) fails with `message`.
    pub(crate) fn error(&self, scope: &str, message: String) {
        self.error_at(scope, message, Utc::now());
    }

    fn error_at(&self, scope: &str, message: String, now: DateTime<Utc>) {
        let mut inner = self.lock();
        inner.failures.insert(scope.to_string(), (message, now));
        if inner.failures.len() > MAX_FAILURES {
            let oldest = inner
                .failures
                .iter()
                .min_by_key(|(_, (_, time))| *time)
                .map(|(scope, _)| scope.clone());
            if let Some(oldest) = oldest {
                inner.failures.remove(&oldest);
            }
        }
        inner.refresh();
    }

    /// Records that `scope` works (again): its error, if any, is resolved.
    pub(crate) fn resolve(&self, scope: &str) {
        self.resolve_at(scope, Utc::now());
    }

    fn resolve_at(&self, scope: &str, now: DateTime<Utc>) {
        let mut inner = self.lock();
        if let Some((message, time)) = inner.failures.remove(scope) {
            inner.health.last_resolved_error = Some(ResolvedError {
                message,
                time,
                resolved: now,
            });
            inner.refresh();
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
    }

    #[test]
    fn an_error_is_cleared_once_its_object_syncs() {
        let cell = HealthCell::new("west");
        cell.error_at("Deployment shop/web", "409 conflict".into(), at(10));
        let h = cell.snapshot();
        assert_eq!(h.last_error.as_deref(), Some("409 conflict"));
        assert_eq!(h.last_error_time, Some(at(10)));
        assert_eq!(h.failing, 1);

        // Another object working does not resolve it.
        cell.resolve_at("Deployment shop/api", at(11));
        assert_eq!(cell.snapshot().last_error.as_deref(), Some("409 conflict"));

        cell.resolve_at("Deployment shop/web", at(12));
        let h = cell.snapshot();
        assert_eq!(h.last_error, None);
        assert_eq!(h.last_error_time, None);
        assert_eq!(h.failing, 0);
        assert_eq!(
            h.last_resolved_error,
            Some(ResolvedError {
                message: "409 conflict".into(),
                time: at(10),
                resolved: at(12)
            })
        );
    }

    #[test]
    fn last_error_is_the_newest_current_failure() {
        let cell = HealthCell::new("west");
        cell.error_at("Deployment shop/a", "a failed".into(), at(1));
        cell.error_at(
            "upstream watch of apps/v1/Deployment",
            "watch failed".into(),
            at(2),
        );
        cell.error_at("Deployment shop/b", "b failed".into(), at(3));
        assert_eq!(cell.snapshot().last_error.as_deref(), Some("b failed"));
        cell.resolve_at("Deployment shop/b", at(4));
        let h = cell.snapshot();
        assert_eq!(h.last_error.as_deref(), Some("watch failed"));
        assert_eq!(h.last_error_time, Some(at(2)));
        assert_eq!(h.failing, 2);
        // The same scope failing again replaces its message.
        cell.error_at("Deployment shop/a", "a failed again".into(), at(5));
        assert_eq!(
            cell.snapshot().last_error.as_deref(),
            Some("a failed again")
        );
        assert_eq!(cell.snapshot().failing, 2);
    }

    #[test]
    fn failures_are_bounded() {
        let cell = HealthCell::new("west");
        for i in 0..=MAX_FAILURES {
            cell.error_at(&format!("o{i}"), format!("e{i}"), at(i as i64));
        }
        let h = cell.snapshot();
        assert_eq!(h.failing, MAX_FAILURES);
        assert_eq!(h.last_error, Some(format!("e{MAX_FAILURES}")));
        // The oldest was dropped: resolving it changes nothing.
        cell.resolve_at("o0", at(0));
        assert_eq!(cell.snapshot().last_resolved_error, None);
    }

    #[test]
    fn kind_counters_survive_count_refreshes() {
        let cell = HealthCell::new("west");
        cell.synced("apps/v1/Deployment");
        cell.synced("apps/v1/Deployment");
        cell.deleted("v1/ConfigMap");
        cell.set_counts("apps/v1/Deployment", 3, 2);
        let h = cell.snapshot();
        assert_eq!(
            h.kinds["apps/v1/Deployment"],
            KindCounts {
                upstream: 3,
                downstream: 2,
                synced: 2,
                deleted: 0
            }
        );
        assert_eq!(h.kinds["v1/ConfigMap"].deleted, 1);
        assert_eq!((h.objects_synced, h.objects_deleted), (2, 1));
    }
}
