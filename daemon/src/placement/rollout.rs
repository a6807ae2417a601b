//! Staged rollouts (`spec.rollout` of a placement): the pure pieces the
//! workload reconcile runs. A placement's *revision* digests what decides
//! (its spec without `rollout`, and the digests of the policy modules it
//! runs); a new revision reaches its targets in stages, which the leader's
//! placement status writer advances (`crate::controller::rollout_status`)
//! and persists in `status.rollout`.
//!
//! The [`gate`] sits between the decision and [`super::plan::plan`]: the
//! targets a rollout lets change take the new decision, the others keep
//! exactly what they record, so every removal rule of the plan
//! (create-before-delete, positive proof, grace) still applies, and the gate
//! never removes a copy the ungated decision would keep.

use std::collections::{BTreeMap, BTreeSet};

use tmc_api::crd::{ClusterWorkloadPlacement, RolloutPhase};
use tmc_api::decision::{TargetResult, result_digest};
use tmc_api::protocol::Recorded;
use tmc_policy_host::PolicyInfo;

use super::assignment;
use super::plan::same_decision;

/// The revision of `placement` given the active policies (`policies`, as
/// the runner lists them): a digest of its spec without `rollout` and of the
/// digest of each module it names (placement policy, transformations).
pub fn revision(placement: &ClusterWorkloadPlacement, policies: &[PolicyInfo]) -> String {
    let mut spec = placement.spec.clone();
    spec.rollout = None;
    let modules: Vec<(&str, Option<&str>)> = std::iter::once(&spec.policy)
        .chain(&spec.transformations)
        .map(|p| {
            let digest = policies
                .iter()
                .find(|i| i.name == p.name)
                .and_then(|i| i.digest.as_deref());
            (p.name.as_str(), digest)
        })
        .collect();
    let text = serde_json::to_string(&(&spec, modules)).unwrap_or_default();
    result_digest(Some(&text))
}

/// Which targets may take a new decision now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Every target (no rollout, or its revision is rolled out).
    All,
    /// Only these (the updated targets and the current stage's); the others
    /// keep what they record.
    Only(BTreeSet<String>),
}

/// Where `placement`'s rollout lets a decision of `revision` go, from its
/// persisted `status.rollout`: everywhere without `spec.rollout`, without a
/// rollout status (a new placement: its first revision is not staged) or
/// once the revision is complete; only the updated and current-stage targets
/// while it progresses, is paused or failed; nowhere while the status
/// still describes another revision (the leader is about to start the
/// rollout of this one).
pub fn allowed(placement: &ClusterWorkloadPlacement, revision: &str) -> Allowed {
    if placement.spec.rollout.is_none() {
        return Allowed::All;
    }
    let Some(status) = placement.status.as_ref().and_then(|s| s.rollout.as_ref()) else {
        return Allowed::All;
    };
    if status.revision != revision {
        return Allowed::Only(BTreeSet::new());
    }
    if status.phase == RolloutPhase::Complete {
        return Allowed::All;
    }
    Allowed::Only(
        status
            .updated_targets
            .iter()
            .chain(&status.stage_targets)
            .cloned()
            .collect(),
    )
}

/// The decision to plan: `chosen` (the new decision) where `allowed`, what
/// each other target records elsewhere. A target that holds a copy with a
/// recorded result keeps that result (replicas, edits); one that holds
/// none stays out; a copy with no readable result (undecided) follows the
/// new decision, as without a rollout. Deleted targets (`gone`) follow the
/// new decision, which never chooses them, so they are forgotten as
/// without a rollout.
///
/// A workload with no previous decision (no target holds a copy) takes the
/// new decision whole: there is nothing to protect. Only targets in the
/// result or that the ungated decision drops can be removed by the plan, so
/// the gate never causes a removal the ungated path would not make.
///
/// An allowed target that the new decision shrinks (or drops) while the
/// targets gaining replicas wait for a later stage would lower the total
/// below the desired count: such a target keeps its recorded result
/// (*deferred*, in name order, until the total reaches the new decision's),
/// and shrinks once enough of the others have theirs.
pub fn gate(
    chosen: &BTreeMap<String, TargetResult>,
    recorded: &BTreeMap<String, Recorded>,
    allowed: &Allowed,
    gone: &BTreeSet<String>,
) -> Gated {
    let whole = || Gated {
        chosen: chosen.clone(),
        deferred: BTreeSet::new(),
    };
    let Allowed::Only(allowed) = allowed else {
        return whole();
    };
    if !recorded.values().any(Recorded::holds) {
        return whole();
    }
    let names: BTreeSet<&String> = chosen.keys().chain(recorded.keys()).collect();
    let mut out = BTreeMap::new();
    for target in names {
        let new = chosen.get(target);
        if allowed.contains(target) || gone.contains(target) {
            if let Some(result) = new {
                out.insert(target.clone(), result.clone());
            }
            continue;
        }
        let Some(rec) = recorded.get(target) else {
            continue;
        };
        match (&rec.result, rec.holds()) {
            (Some(old), true) => {
                out.insert(target.clone(), old.clone());
            }
            _ if rec.runs_copy() => {
                if let Some(result) = new {
                    out.insert(target.clone(), result.clone());
                }
            }
            _ => {}
        }
    }
    let deferred = defer_shrinks(chosen, recorded, allowed, gone, &mut out);
    Gated {
        chosen: out,
        deferred,
    }
}

/// The decision [`gate`] lets through, and the allowed targets it keeps on
/// their recorded result so the total does not dip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gated {
    pub chosen: BTreeMap<String, TargetResult>,
    pub deferred: BTreeSet<String>,
}

/// Replicas of a decision, summed.
fn total<'r>(results: impl IntoIterator<Item = &'r TargetResult>) -> u32 {
    results
        .into_iter()
        .map(|r| r.replicas.unwrap_or(0))
        .fold(0u32, u32::saturating_add)
}

/// See [`gate`]: puts back the recorded result of allowed targets that
/// shrink while `out` holds fewer replicas than `chosen` asks; returns them.
fn defer_shrinks(
    chosen: &BTreeMap<String, TargetResult>,
    recorded: &BTreeMap<String, Recorded>,
    allowed: &BTreeSet<String>,
    gone: &BTreeSet<String>,
    out: &mut BTreeMap<String, TargetResult>,
) -> BTreeSet<String> {
    let want = total(chosen.values());
    let mut have = total(out.values());
    let mut deferred = BTreeSet::new();
    for target in allowed {
        if have >= want {
            break;
        }
        let Some(rec) = recorded.get(target).filter(|r| r.holds()) else {
            continue;
        };
        let Some(old) = rec.result.as_ref() else {
            continue;
        };
        let now = out.get(target).map_or(0, |r| r.replicas.unwrap_or(0));
        let before = old.replicas.unwrap_or(0);
        if before <= now || gone.contains(target) {
            continue;
        }
        out.insert(target.clone(), old.clone());
        have = have.saturating_add(before - now);
        deferred.insert(target.clone());
    }
    deferred
}

/// Of `stage` (targets), those not yet done with the new decision `chosen`,
/// given what the workload `recorded` (at upstream `generation`), each with
/// why: a chosen target must record the new result and report its copy
/// applied and available ([`assignment::pending`]); a dropped one must no
/// longer run a copy (its removal asked); a `deferred` one (see [`gate`])
/// must run its recorded copy available.
pub fn stage_pending(
    chosen: &BTreeMap<String, TargetResult>,
    recorded: &BTreeMap<String, Recorded>,
    stage: &[String],
    deferred: &BTreeSet<String>,
    generation: Option<i64>,
) -> Vec<(String, String)> {
    let empty = Recorded::default();
    let mut out = Vec::new();
    for target in stage {
        let rec = recorded.get(target).unwrap_or(&empty);
        if deferred.contains(target) {
            if let Some(why) = assignment::pending(rec, generation) {
                out.push((target.clone(), why));
            }
            continue;
        }
        let why = match chosen.get(target) {
            Some(result) => {
                if !rec.holds()
                    || !rec
                        .result
                        .as_ref()
                        .is_some_and(|r| same_decision(r, result))
                {
                    Some("its new decision is not recorded yet".to_string())
                } else {
                    assignment::pending(rec, generation)
                }
            }
            None if rec.runs_copy() => Some("its copy is not removed yet".to_string()),
            None => None,
        };
        if let Some(why) = why {
            out.push((target.clone(), why));
        }
    }
    out
}

#[cfg(test)]
mod tests;
