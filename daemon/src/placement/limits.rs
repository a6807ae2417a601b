//! Per-tenant limits, in export mode: how many workloads of one kind, and how
//! many replicas of them, a workspace may have on each target (its
//! SyncTargetGrants' `spec.limits`). A limit only withholds a target from a
//! workload that has no copy there yet; a copy that runs is never removed or
//! shrunk because of one, so a limit lowered below the usage stops growth and
//! nothing else. Pure logic: the controller counts and decides under one lock
//! per kind, through a [`Ledger`] of the decisions it just made (the watch
//! cache lags its own writes, and two workloads decided at once must not both
//! take the last place).

use std::collections::{BTreeMap, HashMap};

use tmc_api::crd::GrantLimits;
use tmc_api::protocol::Recorded;

use super::decide::Decision;

/// The limits of one workspace on one target; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub workloads: Option<u32>,
    pub replicas: Option<u32>,
}

/// What a workspace's workloads of one kind use on one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub workloads: u32,
    pub replicas: u64,
}

/// A limit a new copy would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// The workspace has `used` workloads on the target already, `limit` allowed.
    Workloads { limit: u32, used: u32 },
    /// The workspace's workloads have `used` replicas on the target, the new copy asks `wanted`, `limit` allowed.
    Replicas { limit: u32, used: u64, wanted: u32 },
}

impl Limits {
    /// The limits of several grants giving a workspace the same target: the
    /// most permissive (a grant without a limit lifts it).
    pub fn most_permissive(grants: impl IntoIterator<Item = Option<GrantLimits>>) -> Self {
        let mut out: Option<Self> = None;
        for limits in grants {
            let limits = limits.unwrap_or_default();
            let this = Self {
                workloads: limits.workloads_per_target,
                replicas: limits.replicas_per_target,
            };
            out = Some(match out {
                None => this,
                Some(so_far) => Self {
                    workloads: so_far.workloads.zip(this.workloads).map(|(a, b)| a.max(b)),
                    replicas: so_far.replicas.zip(this.replicas).map(|(a, b)| a.max(b)),
                },
            });
        }
        out.unwrap_or_default()
    }

    /// True when nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.workloads.is_none() && self.replicas.is_none()
    }

    /// The limit a new copy of `wanted` replicas breaks, where the other
    /// workloads use `used`.
    pub fn hit(&self, used: Usage, wanted: u32) -> Option<LimitHit> {
        if let Some(limit) = self.workloads
            && used.workloads >= limit
        {
            return Some(LimitHit::Workloads {
                limit,
                used: used.workloads,
            });
        }
        if let Some(limit) = self.replicas
            && used.replicas + u64::from(wanted) > u64::from(limit)
        {
            return Some(LimitHit::Replicas {
                limit,
                used: used.replicas,
                wanted,
            });
        }
        None
    }
}

impl LimitHit {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Workloads { .. } => "WorkloadsPerTarget",
            Self::Replicas { .. } => "ReplicasPerTarget",
        }
    }

    /// What was held back on `target`, and the fix.
    pub fn describe(&self, target: &str) -> String {
        let what = match *self {
            Self::Workloads { limit, used } => {
                format!("{used} of {limit} workloads of this kind per target already on {target}")
            }
            Self::Replicas {
                limit,
                used,
                wanted,
            } => format!(
                "{used} of {limit} replicas per target already on {target}, {wanted} more asked"
            ),
        };
        format!(
            "no new copy on {target}: {what} (fix: raise spec.limits in the workspace's SyncTargetGrant, or remove workloads from {target}; running copies are never removed for a limit)"
        )
    }
}

/// The first target `decision` gives its workload a new copy on (one it
/// holds no copy on yet) that breaks a limit of `budget`.
pub fn first_hit(decision: &Decision, budget: &Budget) -> Option<(String, LimitHit)> {
    let Budget { limited, usage } = budget;
    let held = recorded_holdings(&decision.recorded);
    decision
        .outcome
        .chosen
        .iter()
        .filter(|(target, _)| !held.contains_key(*target))
        .find_map(|(target, result)| {
            let used = usage.get(target).copied().unwrap_or_default();
            limited
                .get(target)?
                .hit(used, result.replicas.unwrap_or(0))
                .map(|hit| (target.clone(), hit))
        })
}

/// Target -> replicas of the copies a workload has or is to have.
pub type Holdings = BTreeMap<String, u32>;

/// A workspace's limits on the targets it may use, and what its other
/// workloads of the kind use there: what [`first_hit`] judges a decision by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budget {
    /// The limited targets (a target without a limit is absent).
    pub limited: BTreeMap<String, Limits>,
    /// What the other workloads use per target.
    pub usage: BTreeMap<String, Usage>,
}

impl Budget {
    /// True when no target is limited: nothing to judge.
    pub fn is_unlimited(&self) -> bool {
        self.limited.is_empty()
    }
}

/// What workloads holding `holdings` use per target.
pub fn usage_of(holdings: impl IntoIterator<Item = Holdings>) -> BTreeMap<String, Usage> {
    let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
    for holdings in holdings {
        for (target, replicas) in holdings {
            let used = usage.entry(target).or_default();
            used.workloads += 1;
            used.replicas += u64::from(replicas);
        }
    }
    usage
}

/// The holdings a workload records: the targets where it holds or runs a copy.
pub fn recorded_holdings(recorded: &BTreeMap<String, Recorded>) -> Holdings {
    recorded
        .iter()
        .filter(|(_, r)| r.holds() || r.runs_copy())
        .map(|(t, r)| {
            let replicas = r.result.as_ref().and_then(|res| res.replicas).unwrap_or(0);
            (t.clone(), replicas)
        })
        .collect()
}

/// The holdings this tmcd decided last, per workload key, newer than what
/// the watch cache shows until the decision's watch event arrives.
#[derive(Debug, Default)]
pub struct Ledger {
    decided: HashMap<String, Holdings>,
}

impl Ledger {
    /// What `others` (workload key, holdings it records) use per target,
    /// each counted with what this tmcd decided for it last, if anything.
    pub fn usage(
        &self,
        others: impl IntoIterator<Item = (String, Holdings)>,
    ) -> BTreeMap<String, Usage> {
        usage_of(
            others
                .into_iter()
                .map(|(key, recorded)| self.decided.get(&key).cloned().unwrap_or(recorded)),
        )
    }

    /// Records what was just decided for `key`.
    pub fn record(&mut self, key: &str, holdings: Holdings) {
        self.decided.insert(key.to_owned(), holdings);
    }

    /// Forgets the workloads `keep` says are gone.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.decided.retain(|key, _| keep(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(workloads: Option<u32>, replicas: Option<u32>) -> Option<GrantLimits> {
        Some(GrantLimits {
            workloads_per_target: workloads,
            replicas_per_target: replicas,
        })
    }

    #[test]
    fn the_most_permissive_grant_counts_and_a_grant_without_a_limit_lifts_it() {
        let both = Limits::most_permissive([limits(Some(1), Some(4)), limits(Some(3), Some(2))]);
        assert_eq!(
            both,
            Limits {
                workloads: Some(3),
                replicas: Some(4)
            }
        );
        let lifted = Limits::most_permissive([limits(Some(1), Some(4)), None]);
        assert!(lifted.is_unlimited(), "{lifted:?}");
        let one_field = Limits::most_permissive([limits(Some(1), None), limits(Some(2), Some(9))]);
        assert_eq!(
            one_field,
            Limits {
                workloads: Some(2),
                replicas: None
            }
        );
        assert!(Limits::most_permissive([]).is_unlimited());
    }

    #[test]
    fn a_new_copy_is_held_back_at_the_limit_and_not_before() {
        let l = Limits {
            workloads: Some(2),
            replicas: Some(5),
        };
        let used = |workloads, replicas| Usage {
            workloads,
            replicas,
        };
        assert_eq!(
            l.hit(used(1, 2), 3),
            None,
            "exactly at the replica limit is allowed"
        );
        assert_eq!(
            l.hit(used(2, 0), 1),
            Some(LimitHit::Workloads { limit: 2, used: 2 })
        );
        assert_eq!(
            l.hit(used(1, 3), 3),
            Some(LimitHit::Replicas {
                limit: 5,
                used: 3,
                wanted: 3
            })
        );
        // A limit lowered below the usage holds back every new copy (and removes nothing: see the ledger).
        let lowered = Limits {
            workloads: Some(1),
            replicas: None,
        };
        assert!(lowered.hit(used(3, 0), 0).is_some());
        let message = LimitHit::Workloads { limit: 1, used: 3 }.describe("west");
        assert!(
            message.contains("3 of 1") && message.contains("spec.limits"),
            "{message}"
        );
    }

    #[test]
    fn usage_counts_the_latest_decision_of_each_other_workload() {
        let mut ledger = Ledger::default();
        let recorded = |pairs: &[(&str, u32)]| -> Holdings {
            pairs.iter().map(|(t, r)| ((*t).to_owned(), *r)).collect()
        };
        // b was just decided onto west; the cache still shows it nowhere.
        ledger.record("ns/b", recorded(&[("west", 2)]));
        let usage = ledger.usage([
            ("ns/a".to_owned(), recorded(&[("west", 1), ("east", 1)])),
            ("ns/b".to_owned(), recorded(&[])),
        ]);
        assert_eq!(
            usage["west"],
            Usage {
                workloads: 2,
                replicas: 3
            }
        );
        assert_eq!(
            usage["east"],
            Usage {
                workloads: 1,
                replicas: 1
            }
        );
        ledger.retain(|key| key != "ns/b");
        let usage = ledger.usage([("ns/b".to_owned(), recorded(&[]))]);
        assert!(usage.is_empty(), "{usage:?}");
    }
}
