//! The decision step within a workspace's limits (export mode): [`decide`],
//! and while the decision gives a new copy on a target that would break a
//! limit, the same decision again without that target. The policy's split
//! over the other targets stays its own (nothing is clamped). The controller,
//! `tmcd explain` and `tmcd policy diff` all decide through it, so they agree
//! on what a limit holds back.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use tmc_api::protocol;

use super::decide::{self, DecideError, Decision, Inputs};
use super::limits::{self, Budget, LimitHit, Limits};
use super::runner::{EvalObserver, PolicyRunner};
use super::settings::SettingsVerdicts;

/// A decision made within a budget.
#[derive(Debug)]
pub struct Limited {
    /// The decision made without the held-back targets.
    pub decided: Result<Decision, DecideError>,
    /// The targets held back, in the order they were, with the limit each hit.
    pub held_back: Vec<(String, LimitHit)>,
}

/// Decides as [`decide::decide`] does, holding back each target where a new
/// copy would break a limit of `budget` (see [`limits::first_hit`]). Without
/// a limited target it is exactly one [`decide::decide`].
pub async fn decide_within(
    runner: &dyn PolicyRunner,
    observer: &dyn EvalObserver,
    settings: &SettingsVerdicts,
    inputs: Inputs<'_>,
    budget: &Budget,
) -> Limited {
    if budget.is_unlimited() {
        return Limited {
            decided: decide::decide(runner, observer, settings, inputs).await,
            held_back: Vec::new(),
        };
    }
    let mut targets = inputs.targets.to_vec();
    let mut held_back = Vec::new();
    loop {
        let decided = decide::decide(
            runner,
            observer,
            settings,
            Inputs {
                targets: &targets,
                ..inputs
            },
        )
        .await;
        let hit = decided
            .as_ref()
            .ok()
            .and_then(|decision| limits::first_hit(decision, budget));
        match hit {
            Some((target, hit)) => {
                // Each round removes one target: the loop ends.
                targets.retain(|t| t.name != target);
                held_back.push((target, hit));
            }
            None => return Limited { decided, held_back },
        }
    }
}

/// The budget under `limited` where the other workloads of the kind in the
/// workspace are `others`, each counted by the decision it records (what
/// `tmcd explain` and `tmcd policy diff` read; the controller also counts
/// the decisions it has just written, see [`limits::Ledger`]).
pub fn budget_from_records<'o>(
    limited: BTreeMap<String, Limits>,
    others: impl IntoIterator<Item = &'o DynamicObject>,
) -> Budget {
    if limited.is_empty() {
        return Budget::default();
    }
    let no_labels = BTreeMap::new();
    let usage = limits::usage_of(others.into_iter().map(|o| {
        let recorded = protocol::read(
            o.metadata.labels.as_ref().unwrap_or(&no_labels),
            o.metadata.annotations.as_ref().unwrap_or(&no_labels),
        );
        limits::recorded_holdings(&recorded)
    }));
    Budget { limited, usage }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use tmc_api::crd::{ClusterWorkloadPlacement, ClusterWorkloadPlacementSpec, PolicyRef};
    use tmc_api::decision::{result_annotation, state_label};

    use super::*;
    use crate::placement::decide::NoObserver;
    use crate::placement::limits::Usage;
    use crate::placement::runner::fake::{FakeRunner, deployment};
    use crate::placement::targets::TargetView;

    /// `spread` splits the replicas evenly over every candidate.
    fn spread() -> FakeRunner {
        let mut runner = FakeRunner::new();
        runner.with_spread("spread");
        runner
    }

    fn view(name: &str) -> TargetView {
        TargetView {
            name: name.into(),
            labels: Default::default(),
            ready: true,
            not_ready_since: None,
            schedulable: true,
            evicting: false,
            available: None,
        }
    }

    fn placement() -> ClusterWorkloadPlacement {
        ClusterWorkloadPlacement::new(
            "spread",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: "spread".into(),
                    settings: None,
                },
                ..Default::default()
            },
        )
    }

    /// `demo/<name>` with 3 replicas, recording a copy of `replicas` on each of `on`.
    fn workload(name: &str, on: &[(&str, u32)]) -> DynamicObject {
        let mut obj = deployment("demo", name, 3);
        obj.metadata.labels = Some(
            on.iter()
                .map(|(t, _)| (state_label(t), "Sync".to_string()))
                .collect(),
        );
        obj.metadata.annotations = Some(
            on.iter()
                .map(|(t, n)| {
                    let result = json!({"replicas": n, "placement": "spread"});
                    (result_annotation(t), result.to_string())
                })
                .collect(),
        );
        obj
    }

    /// `north` allows one workload and has one already.
    fn north_full() -> Budget {
        let one = Limits {
            workloads: Some(1),
            replicas: None,
        };
        Budget {
            limited: [("north".to_string(), one)].into(),
            usage: [(
                "north".to_string(),
                Usage {
                    workloads: 1,
                    replicas: 1,
                },
            )]
            .into(),
        }
    }

    async fn decide_on(obj: &DynamicObject, budget: &Budget) -> Limited {
        let views = [view("east"), view("north"), view("west")];
        let placement = placement();
        let inputs = Inputs {
            api_version: "apps/v1",
            kind: "Deployment",
            object: obj,
            placement: &placement,
            targets: &views,
            now: Utc::now(),
        };
        decide_within(
            &spread(),
            &NoObserver,
            &SettingsVerdicts::default(),
            inputs,
            budget,
        )
        .await
    }

    fn chosen(limited: &Limited) -> Vec<(String, Option<u32>)> {
        let decision = limited.decided.as_ref().expect("decided");
        decision
            .outcome
            .chosen
            .iter()
            .map(|(t, r)| (t.clone(), r.replicas))
            .collect()
    }

    #[tokio::test]
    async fn a_new_copy_over_a_limit_is_held_back_and_the_policy_decides_without_it() {
        let limited = decide_on(&workload("web", &[]), &north_full()).await;
        assert_eq!(
            chosen(&limited),
            [("east".into(), Some(2)), ("west".into(), Some(1))],
            "the policy's own split over what is left, nothing clamped"
        );
        let held: Vec<&str> = limited.held_back.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(held, ["north"]);
        assert_eq!(
            limited.held_back[0].1,
            LimitHit::Workloads { limit: 1, used: 1 }
        );
    }

    #[tokio::test]
    async fn a_copy_that_runs_is_never_held_back() {
        let limited = decide_on(&workload("web", &[("north", 1)]), &north_full()).await;
        assert!(limited.held_back.is_empty(), "{:?}", limited.held_back);
        assert_eq!(chosen(&limited).len(), 3);
    }

    #[tokio::test]
    async fn without_a_limited_target_it_is_one_plain_decision() {
        let limited = decide_on(&workload("web", &[]), &Budget::default()).await;
        assert!(limited.held_back.is_empty());
        assert_eq!(chosen(&limited).len(), 3);
    }

    #[tokio::test]
    async fn policy_diff_holds_back_what_the_limits_hold_back() {
        use std::sync::Arc;
        use tmc_api::crd::{GrantLimits, SyncTargetGrant, SyncTargetGrantSpec};
        use tmc_syncer::SyncedKind;

        use crate::policy_diff::{Snapshot, diff_rows};
        use crate::workspaces::Workspaces;

        // Workspace lc1 may have 1 workload per target; its `full` runs on north.
        let in_lc1 = |mut obj: DynamicObject| {
            obj.metadata.namespace = Some("lc1|demo".into());
            obj
        };
        let grant = SyncTargetGrant::new(
            "lc1",
            SyncTargetGrantSpec {
                workspaces: vec!["lc1".into()],
                target_selector: None,
                limits: Some(GrantLimits {
                    workloads_per_target: Some(1),
                    replicas_per_target: None,
                }),
            },
        );
        let mut placement = placement();
        placement.metadata.namespace = Some("lc1|".into());
        let kind = SyncedKind::new("apps", "v1", "Deployment", "deployments", true);
        let snap = Snapshot {
            targets: vec![view("east"), view("north"), view("west")],
            grants: Some(vec![Arc::new(grant)]),
            placements: vec![placement],
            namespace_labels: BTreeMap::new(),
            workloads: vec![
                (kind.clone(), in_lc1(workload("full", &[("north", 1)]))),
                (kind, in_lc1(workload("web", &[]))),
            ],
            workspaces: Workspaces::One,
        };
        let rows = diff_rows(&spread(), &snap, "spread", Utc::now()).await;
        let web = rows
            .iter()
            .find(|r| r.workload.ends_with("/web"))
            .expect("a row for web");
        assert_eq!(
            web.candidate,
            Some([("east".into(), Some(2)), ("west".into(), Some(1))].into()),
            "north is full for lc1: web is decided without it, as the controller decides"
        );
        let full = rows
            .iter()
            .find(|r| r.workload.ends_with("/full"))
            .expect("a row for full");
        assert!(
            full.candidate
                .as_ref()
                .is_some_and(|on| on.contains_key("north")),
            "full's own copy on north is never held back: {full:?}"
        );
    }

    #[test]
    fn a_budget_counts_what_the_other_workloads_record() {
        let one = Limits {
            workloads: Some(3),
            replicas: None,
        };
        let others = [
            workload("a", &[("north", 2), ("east", 1)]),
            workload("b", &[("north", 1)]),
        ];
        let budget = budget_from_records([("north".to_string(), one)].into(), &others);
        assert_eq!(
            budget.usage["north"],
            Usage {
                workloads: 2,
                replicas: 3
            }
        );
        assert_eq!(budget.usage["east"].workloads, 1);
        let unlimited = budget_from_records(BTreeMap::new(), &others);
        assert!(
            unlimited.usage.is_empty(),
            "nothing counted without a limit"
        );
    }
}
