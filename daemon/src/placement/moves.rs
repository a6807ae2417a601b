//! Moves in progress and the ones that stall.
//!
//! A workload moves when its old copies wait for new ones (create-before-
//! delete) or a kept target's replicas wait to go down (scale up before
//! scale down). Keeping the old copies is right while the new ones are not
//! available; doing so silently is not: a move that has waited longer than
//! `[sync] move_stall_seconds` is *stalled*, and the placement's status, an
//! Event on the workload, the `tmcd_moves_stalled` gauge and `tmcd status`
//! name it with the targets it waits on and why.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// A target a move waits on, and why its copy is not in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetWait {
    pub target: String,
    pub reason: String,
}

/// One move, as reported once it stalls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StalledMove {
    /// `Kind namespace/name` of the workload.
    pub workload: String,
    /// The placement that decided it.
    pub placement: String,
    /// When the move began (RFC 3339).
    pub since: String,
    /// The chosen targets whose copies are not in place yet.
    pub waiting_on: Vec<TargetWait>,
    /// The targets that keep their copy (or their replicas) meanwhile.
    pub keeping: Vec<String>,
}

impl StalledMove {
    /// One line for Events and conditions.
    pub fn describe(&self) -> String {
        let waits: Vec<String> = self
            .waiting_on
            .iter()
            .map(|w| format!("{} ({})", w.target, w.reason))
            .collect();
        format!(
            "{} waits since {} on {}; meanwhile the copies on {} are kept",
            self.workload,
            self.since,
            if waits.is_empty() {
                "its new copies".to_string()
            } else {
                waits.join(", ")
            },
            self.keeping.join(", ")
        )
    }
}

/// The soonest a moving workload is re-checked ([`MoveTracker::recheck_in`]).
pub const RECHECK_MIN: Duration = Duration::from_secs(10);

struct Tracked {
    started: Instant,
    move_: StalledMove,
    stalled: bool,
}

/// The moves of one tmcd, keyed by workload.
pub struct MoveTracker {
    threshold: Duration,
    moves: Mutex<BTreeMap<String, Tracked>>,
}

/// What [`MoveTracker::observe`] and [`MoveTracker::finish`] saw change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveChange {
    /// Nothing to tell.
    None,
    /// The move has just stalled.
    Stalled(StalledMove),
    /// A stalled move completed.
    Resumed,
}

impl MoveTracker {
    /// A tracker that calls a move stalled after `threshold`.
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            moves: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records that `workload` is moving: placed by `placement`, waiting on
    /// `waiting_on` while `keeping` keep their copies.
    pub fn observe(
        &self,
        workload: &str,
        placement: &str,
        waiting_on: Vec<TargetWait>,
        keeping: Vec<String>,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> MoveChange {
        let mut moves = self.moves.lock().unwrap_or_else(PoisonError::into_inner);
        let tracked = moves
            .entry(workload.to_string())
            .or_insert_with(|| Tracked {
                started: now,
                move_: StalledMove {
                    workload: workload.to_string(),
                    placement: placement.to_string(),
                    since: wall.to_rfc3339_opts(SecondsFormat::Secs, true),
                    waiting_on: Vec::new(),
                    keeping: Vec::new(),
                },
                stalled: false,
            });
        tracked.move_.placement = placement.to_string();
        tracked.move_.waiting_on = waiting_on;
        tracked.move_.keeping = keeping;
        if !tracked.stalled && now.duration_since(tracked.started) >= self.threshold {
            tracked.stalled = true;
            return MoveChange::Stalled(tracked.move_.clone());
        }
        MoveChange::None
    }

    /// How soon the moving `workload` is looked at again: after as long as it
    /// has waited so far, within [`RECHECK_MIN`] and `max`, and not after
    /// the moment it would stall (so that the stall is told on time).
    ///
    /// New copies becoming available reach tmcd as watch events (the
    /// syncers' status reports); this re-check is the fallback. Backing it
    /// off keeps thousands of long waits (targets that never report
    /// availability) from filling the placement queue: kube-runtime's queue
    /// serves what is due last-in first-out, so under a load it cannot keep
    /// up with, work that waits longest (a placement edit's re-decisions) is
    /// served last. Seen at 10,000 workloads on 100 targets: 7,065
    /// re-decisions not made after 25 minutes while 3,000 waiting moves were
    /// re-checked every 10 s.
    pub fn recheck_in(&self, workload: &str, now: Instant, max: Duration) -> Duration {
        let moves = self.moves.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tracked) = moves.get(workload) else {
            return RECHECK_MIN;
        };
        let waited = now.duration_since(tracked.started);
        let next = waited.clamp(RECHECK_MIN, max.max(RECHECK_MIN));
        match self.threshold.checked_sub(waited) {
            Some(left) if !tracked.stalled && !left.is_zero() => next.min(left),
            _ => next,
        }
    }

    /// Records that `workload` is not moving (any more).
    pub fn finish(&self, workload: &str) -> MoveChange {
        let removed = self
            .moves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(workload);
        match removed {
            Some(tracked) if tracked.stalled => MoveChange::Resumed,
            _ => MoveChange::None,
        }
    }

    /// Forgets workloads that no longer exist.
    pub fn retain(&self, mut exists: impl FnMut(&str) -> bool) {
        self.moves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|workload, _| exists(workload));
    }

    /// The stalled moves, by workload.
    pub fn stalled(&self) -> Vec<StalledMove> {
        self.moves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|t| t.stalled)
            .map(|t| t.move_.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(target: &str) -> Vec<TargetWait> {
        vec![TargetWait {
            target: target.into(),
            reason: "1 of 2 replicas available".into(),
        }]
    }

    #[test]
    fn a_move_stalls_once_after_the_threshold_and_resumes_when_done() {
        let tracker = MoveTracker::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let wall = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let keep = vec!["east".to_string()];
        let w = "Deployment demo/web";
        assert_eq!(
            tracker.observe(w, "p", wait("west"), keep.clone(), t0, wall),
            MoveChange::None
        );
        assert_eq!(
            tracker.observe(
                w,
                "p",
                wait("west"),
                keep.clone(),
                t0 + Duration::from_secs(59),
                wall
            ),
            MoveChange::None
        );
        assert!(tracker.stalled().is_empty());
        let MoveChange::Stalled(stalled) = tracker.observe(
            w,
            "p",
            wait("west"),
            keep.clone(),
            t0 + Duration::from_secs(60),
            wall,
        ) else {
            panic!("the move must stall at the threshold");
        };
        assert_eq!(
            stalled.describe(),
            "Deployment demo/web waits since 2027-01-15T08:00:00Z on west (1 of 2 replicas available); meanwhile the copies on east are kept"
        );
        assert_eq!(
            tracker.observe(
                w,
                "p",
                wait("west"),
                keep,
                t0 + Duration::from_secs(90),
                wall
            ),
            MoveChange::None,
            "told once"
        );
        assert_eq!(tracker.stalled(), vec![stalled]);
        assert_eq!(tracker.finish(w), MoveChange::Resumed);
        assert!(tracker.stalled().is_empty());
        assert_eq!(tracker.finish(w), MoveChange::None);
    }

    #[test]
    fn a_waiting_move_is_rechecked_less_often_the_longer_it_waits() {
        let tracker = MoveTracker::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let wall = DateTime::from_timestamp(0, 0).expect("time");
        let max = Duration::from_secs(300);
        let w = "Deployment demo/web";
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(tracker.recheck_in(w, t0, max), RECHECK_MIN, "not tracked");
        tracker.observe(w, "p", wait("west"), vec![], t0, wall);
        assert_eq!(tracker.recheck_in(w, at(0), max), RECHECK_MIN);
        assert_eq!(tracker.recheck_in(w, at(25), max), Duration::from_secs(25));
        assert_eq!(
            tracker.recheck_in(w, at(200), max),
            Duration::from_secs(200)
        );
        assert_eq!(
            tracker.recheck_in(w, at(400), max),
            Duration::from_secs(200),
            "not after the moment it stalls (600 s)"
        );
        tracker.observe(w, "p", wait("west"), vec![], at(600), wall);
        assert_eq!(
            tracker.recheck_in(w, at(900), max),
            max,
            "stalled: at most max"
        );
    }

    #[test]
    fn forgets_deleted_workloads() {
        let tracker = MoveTracker::new(Duration::ZERO);
        let wall = DateTime::from_timestamp(0, 0).expect("time");
        tracker.observe("a", "p", vec![], vec![], Instant::now(), wall);
        tracker.observe("b", "p", vec![], vec![], Instant::now(), wall);
        tracker.retain(|w| w == "b");
        assert_eq!(tracker.stalled().len(), 1);
    }
}
