//! What the workload reconciles saw of each placement's rollout stage, for
//! the placement status writer that advances it. In memory only: every
//! workload is reconciled when a tmcd starts leading, which rebuilds it.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// One workload's last look at its placement's rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The placement's key (see [`super::selector::placement_key`]).
    pub placement: String,
    pub revision: String,
    /// The stage number its reconcile saw in the placement's status.
    pub stage: u32,
    /// Targets of that stage not yet done, with why.
    pub pending: Vec<(String, String)>,
}

/// How far the workloads of one placement are with one stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageReport {
    /// Workloads last reconciled under another revision or stage.
    pub behind: Vec<String>,
    /// Workloads whose stage targets are not done: `(workload, target, why)`.
    pub pending: Vec<(String, String, String)>,
    /// Workloads of the placement reconciled under the stage.
    pub seen: usize,
    /// Workloads the placement holds copies of that no reconcile has told
    /// about yet (after a restart or a change of leader), as the caller
    /// counts them.
    pub missing: usize,
}

impl StageReport {
    /// Every workload reconciled under the stage, all of its targets done.
    pub fn done(&self) -> bool {
        self.behind.is_empty() && self.pending.is_empty() && self.missing == 0
    }
}

/// Per workload (`Kind namespace/name`), what it last saw.
#[derive(Default)]
pub struct RolloutTracker {
    seen: Mutex<BTreeMap<String, Seen>>,
}

impl RolloutTracker {
    /// Records what `workload`'s reconcile saw; true when that changed.
    pub fn observe(&self, workload: &str, seen: Seen) -> bool {
        self.lock().insert(workload.to_owned(), seen.clone()) != Some(seen)
    }

    /// Forgets `workload` (no staged placement governs it any more).
    pub fn forget(&self, workload: &str) {
        self.lock().remove(workload);
    }

    /// Keeps only the workloads `keep` says yes to.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|w, _| keep(w));
    }

    /// How far the workloads of `placement` are with `stage` of `revision`.
    pub fn report(&self, placement: &str, revision: &str, stage: u32) -> StageReport {
        let mut out = StageReport::default();
        for (workload, seen) in self.lock().iter().filter(|(_, s)| s.placement == placement) {
            if seen.revision != revision || seen.stage != stage {
                out.behind.push(workload.clone());
                continue;
            }
            out.seen += 1;
            for (target, why) in &seen.pending {
                out.pending
                    .push((workload.clone(), target.clone(), why.clone()));
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(placement: &str, stage: u32, pending: &[&str]) -> Seen {
        Seen {
            placement: placement.into(),
            revision: "r".into(),
            stage,
            pending: pending
                .iter()
                .map(|t| (t.to_string(), "not available".to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_stage_is_done_when_every_workload_saw_it_and_waits_on_nothing() {
        let t = RolloutTracker::default();
        t.observe("Deployment demo/a", seen("p", 1, &[]));
        t.observe("Deployment demo/b", seen("p", 0, &[]));
        t.observe("Deployment demo/c", seen("other", 7, &["x"]));
        let report = t.report("p", "r", 1);
        assert_eq!(report.behind, ["Deployment demo/b"]);
        assert!(!report.done());
        t.observe("Deployment demo/b", seen("p", 1, &["east"]));
        let report = t.report("p", "r", 1);
        assert!(report.behind.is_empty());
        assert_eq!(report.pending.len(), 1);
        t.observe("Deployment demo/b", seen("p", 1, &[]));
        assert!(t.report("p", "r", 1).done());
        assert!(!t.report("p", "other-revision", 1).done());
        t.forget("Deployment demo/a");
        t.retain(|w| w != "Deployment demo/b");
        assert!(t.report("p", "other-revision", 1).done(), "nothing left");
    }
}
