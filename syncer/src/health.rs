//! A cheap snapshot of a syncer's health for the admin endpoint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;

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
    /// The last error, if any, with when it happened.
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_time: Option<DateTime<Utc>>,
    /// Per kind (`apps/v1/Deployment`): objects assigned upstream and copies downstream.
    pub kinds: BTreeMap<String, KindCounts>,
}

/// Object counts of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KindCounts {
    /// Upstream objects labelled for this target.
    pub upstream: usize,
    /// Downstream copies of this syncer.
    pub downstream: usize,
}

/// Shared, mutable health of a running syncer.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthCell(Arc<Mutex<SyncerHealth>>);

impl HealthCell {
    pub(crate) fn new(target: &str) -> Self {
        Self(Arc::new(Mutex::new(SyncerHealth {
            target: target.to_string(),
            ..SyncerHealth::default()
        })))
    }

    fn lock(&self) -> MutexGuard<'_, SyncerHealth> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn snapshot(&self) -> SyncerHealth {
        self.lock().clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut SyncerHealth)) {
        f(&mut self.lock());
    }

    pub(crate) fn error(&self, message: String) {
        self.update(|h| {
            h.last_error = Some(message);
            h.last_error_time = Some(Utc::now());
        });
    }
}
