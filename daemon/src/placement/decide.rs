//! The decision of one workload, as one pure step: what the object records,
//! its summary, the placement request, the settings check and the policies.
//! The controller, `tmcd policy eval` and `tmcd policy diff` all call
//! [`decide`], so the offline commands answer exactly what tmcd would do.
//! No client, no writes: the callers bring the inputs and act on the result.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::api::DynamicObject;
use tmc_api::crd::ClusterWorkloadPlacement;
use tmc_policy_sdk::abi::PlacementRequest;

use tmc_api::protocol::{self, Recorded};

use super::assignment;
use super::runner::{EvalObserver, Outcome, PolicyFailure, PolicyRunner, evaluate};
use super::selector::{self, WorkloadKey};
use super::settings::SettingsVerdicts;
use super::targets::{Candidates, TargetView};
use super::{capacity, request, workload};

/// What [`decide`] reads: one workload, the placement that governs it and
/// the targets as tmcd sees them at `now`.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The workload's `apiVersion` (`apps/v1`).
    pub api_version: &'a str,
    /// The workload's kind (`Deployment`).
    pub kind: &'a str,
    /// The workload, with the decision it records in its labels and annotations.
    pub object: &'a DynamicObject,
    /// The placement that governs it (see [`governing`]).
    pub placement: &'a ClusterWorkloadPlacement,
    /// Every SyncTarget.
    pub targets: &'a [TargetView],
    pub now: DateTime<Utc>,
}

/// A decision, with what it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What the object records now, per target.
    pub recorded: BTreeMap<String, Recorded>,
    /// Target -> replicas of the targets that run a copy now.
    pub holders: BTreeMap<String, Option<u32>>,
    /// The candidates the request offered (grace periods in progress).
    pub candidates: Candidates,
    /// What the placement policy was asked.
    pub request: PlacementRequest,
    /// What the policies chose.
    pub outcome: Outcome,
}

/// Why no decision was made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecideError {
    /// tmcd never places this object (a system namespace, a generated object).
    #[error("tmcd never places this object ({0})")]
    Excluded(&'static str),
    /// A policy refused the placement's settings, failed, or broke a rule:
    /// the last decision stays.
    #[error(transparent)]
    Policy(#[from] PolicyFailure),
}

/// Decides where `inputs.object` runs. The placement's settings are checked
/// first (answers remembered in `settings`): a policy is never run on
/// settings it refuses, nor when it is not loaded (the controller keeps the
/// last decision, `policy diff` shows FAILS, `policy eval` exits 1); such a
/// failure is observed as a failed evaluation of that policy.
pub async fn decide(
    runner: &dyn PolicyRunner,
    observer: &dyn EvalObserver,
    settings: &SettingsVerdicts,
    inputs: Inputs<'_>,
) -> Result<Decision, DecideError> {
    let obj = inputs.object;
    if let Some(why) = workload::excluded(inputs.kind, obj) {
        return Err(DecideError::Excluded(why));
    }
    let no_labels = BTreeMap::new();
    let recorded = protocol::read(
        obj.metadata.labels.as_ref().unwrap_or(&no_labels),
        obj.metadata.annotations.as_ref().unwrap_or(&no_labels),
    );
    let holders = assignment::holders(&recorded);
    let summary = workload::summary(inputs.api_version, inputs.kind, obj);
    let per_replica = capacity::per_replica(inputs.kind, obj);
    let (request, candidates) = request::build(
        inputs.placement,
        summary,
        per_replica,
        inputs.targets,
        &holders,
        inputs.now,
    );
    let started = Instant::now();
    if let Err(failure) = settings.check(runner, inputs.placement).await {
        // Observed like a failed evaluation: the policy decided nothing here.
        observer.observe(&failure.policy, started.elapsed(), true);
        return Err(failure.into());
    }
    let outcome = evaluate(runner, observer, inputs.placement, &request).await?;
    Ok(Decision {
        recorded,
        holders,
        candidates,
        request,
        outcome,
    })
}

/// The placement that governs `object` (of API `group` and `kind`) among
/// `placements`, given the labels of its namespace (empty when it has none).
pub fn governing<'p>(
    placements: impl IntoIterator<Item = &'p ClusterWorkloadPlacement>,
    group: &str,
    kind: &str,
    object: &DynamicObject,
    namespace_labels: &BTreeMap<String, String>,
) -> Option<&'p ClusterWorkloadPlacement> {
    let no_labels = BTreeMap::new();
    let key = WorkloadKey {
        group,
        kind,
        labels: object.metadata.labels.as_ref().unwrap_or(&no_labels),
        namespace_labels,
    };
    selector::governing(placements, &key)
}

/// Observes nothing: offline evaluations have no metrics.
pub struct NoObserver;

impl EvalObserver for NoObserver {
    fn observe(&self, _: &str, _: Duration, _: bool) {}
}

#[cfg(test)]
mod tests {
    //! The controller, `tmcd policy diff` and `tmcd policy eval` make the
    //! same decision from the same inputs.
    use std::sync::Arc;

    use serde_json::json;
    use tmc_api::crd::{ClusterWorkloadPlacementSpec, PolicyRef};
    use tmc_api::decision::{result_annotation, state_label};
    use tmc_policy_host::PolicyKind;
    use tmc_syncer::SyncedKind;

    use super::*;
    use crate::placement::runner::fake::{FakeRunner, deployment};
    use crate::policy_cli::{EvalError, Module, eval_placement, eval_with};
    use crate::policy_diff::{Change, Snapshot, diff_rows};

    /// `spread` splits the replicas evenly over the candidates (the first
    /// ones get the remainder); `stamp` labels each copy with its target.
    fn runner() -> Arc<FakeRunner> {
        let mut runner = FakeRunner::new();
        runner.with_spread("spread");
        runner.with_target_stamp("stamp");
        Arc::new(runner)
    }

    fn kind() -> SyncedKind {
        SyncedKind::new("apps", "v1", "Deployment", "deployments", true)
    }

    /// `demo/web`, 3 replicas, recorded on east with 3.
    fn web() -> DynamicObject {
        let mut obj = deployment("demo", "web", 3);
        obj.metadata.labels = Some([(state_label("east"), "Sync".to_string())].into());
        obj.metadata.annotations = Some(
            [(
                result_annotation("east"),
                json!({"replicas": 3, "placement": "spread"}).to_string(),
            )]
            .into(),
        );
        obj
    }

    fn view(name: &str, ready: bool) -> TargetView {
        TargetView {
            name: name.into(),
            labels: Default::default(),
            ready,
            not_ready_since: (!ready).then(Utc::now),
            schedulable: true,
            evicting: false,
            available: None,
        }
    }

    fn placement(settings: Option<serde_json::Value>) -> ClusterWorkloadPlacement {
        ClusterWorkloadPlacement::new(
            "spread",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: "spread".into(),
                    settings,
                },
                transformations: vec![PolicyRef {
                    name: "stamp".into(),
                    settings: None,
                }],
                ..Default::default()
            },
        )
    }

    /// Target -> the labels a transformation sets on its copy.
    type Stamps = Vec<(String, BTreeMap<String, String>)>;

    struct Answers {
        controller: Result<Decision, DecideError>,
        diff: crate::policy_diff::DiffRow,
        eval: Result<Vec<(String, Option<u32>)>, EvalError>,
        eval_stamp: Result<Stamps, EvalError>,
    }

    /// What the three callers answer for [`web`] under `placement`.
    async fn answers(placement: ClusterWorkloadPlacement) -> Answers {
        let runner = runner();
        let views = vec![view("east", true), view("north", false), view("west", true)];
        let obj = web();
        let now = Utc::now();
        let kind = kind();
        let inputs = Inputs {
            api_version: &kind.api_version(),
            kind: &kind.kind,
            object: &obj,
            placement: &placement,
            targets: &views,
            now,
        };
        let controller = decide(
            runner.as_ref(),
            &NoObserver,
            &SettingsVerdicts::default(),
            inputs,
        )
        .await;
        let snap = Snapshot {
            targets: views.clone(),
            placements: vec![placement.clone()],
            namespace_labels: BTreeMap::new(),
            workloads: vec![(kind.clone(), obj.clone())],
            grants: None,
            workspaces: crate::workspaces::Workspaces::One,
        };
        let mut rows = diff_rows(runner.as_ref(), &snap, "spread", now).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        let diff = rows.remove(0);
        let settings = placement.spec.policy.settings.clone();
        let module = |name, kind| Module {
            name,
            kind,
            only_target: None,
        };
        let eval = eval_with(
            runner.clone(),
            &module("spread", PolicyKind::Placement),
            &obj,
            &eval_placement("spread", Some(placement.clone()), settings),
            &views,
            now,
        )
        .await
        .map(|(rows, _)| rows.into_iter().map(|r| (r.name, r.replicas)).collect());
        let eval_stamp = eval_with(
            runner.clone(),
            &module("stamp", PolicyKind::Transformation),
            &obj,
            &eval_placement("stamp", Some(placement.clone()), None),
            &views,
            now,
        )
        .await
        .map(|(rows, _)| {
            rows.into_iter()
                .map(|r| (r.name, r.edits.unwrap_or_default().labels.set))
                .collect()
        });
        Answers {
            controller,
            diff,
            eval,
            eval_stamp,
        }
    }

    #[tokio::test]
    async fn controller_diff_and_eval_make_the_same_decision() {
        let got = answers(placement(None)).await;
        let decision = got.controller.expect("the controller decides");
        let on: BTreeMap<String, Option<u32>> = decision
            .outcome
            .chosen
            .iter()
            .map(|(t, r)| (t.clone(), r.replicas))
            .collect();
        assert_eq!(
            on,
            [("east".to_string(), Some(2)), ("west".to_string(), Some(1))].into(),
            "north is not Ready: not a candidate"
        );
        assert_eq!(decision.holders, [("east".to_string(), Some(3))].into());

        assert_eq!(got.diff.candidate.as_ref(), Some(&on));
        assert_eq!(got.diff.now, decision.holders);
        assert_eq!(got.diff.change, Change::Moves);
        assert_eq!(got.diff.reason, decision.outcome.reason);

        let eval: BTreeMap<String, Option<u32>> =
            got.eval.expect("eval decides").into_iter().collect();
        assert_eq!(eval, on);

        let stamped = got.eval_stamp.expect("eval of the transformation");
        let controller_stamps: Stamps = decision
            .outcome
            .chosen
            .iter()
            .map(|(t, r)| (t.clone(), r.labels.set.clone()))
            .collect();
        assert_eq!(stamped, controller_stamps, "the same edits per target");
    }

    /// Records the policies observed failing.
    #[derive(Default)]
    struct Failures(std::sync::Mutex<Vec<String>>);
    impl EvalObserver for Failures {
        fn observe(&self, policy: &str, _: Duration, failed: bool) {
            if failed {
                self.0.lock().expect("failures").push(policy.to_string());
            }
        }
    }

    #[tokio::test]
    async fn a_settings_refusal_counts_as_a_failed_evaluation_and_runs_no_policy() {
        let runner = runner();
        let obj = web();
        let placement = placement(Some(json!({"invalid": true})));
        let failures = Failures::default();
        let inputs = Inputs {
            api_version: "apps/v1",
            kind: "Deployment",
            object: &obj,
            placement: &placement,
            targets: &[view("east", true)],
            now: Utc::now(),
        };
        let got = decide(
            runner.as_ref(),
            &failures,
            &SettingsVerdicts::default(),
            inputs,
        )
        .await;
        assert!(matches!(got, Err(DecideError::Policy(_))), "{got:?}");
        assert_eq!(*failures.0.lock().expect("failures"), ["spread"]);
        assert!(runner.calls.lock().expect("calls").is_empty());
    }

    #[tokio::test]
    async fn refused_settings_fail_in_all_three_before_the_policy_runs() {
        let got = answers(placement(Some(json!({"invalid": true})))).await;
        let Err(DecideError::Policy(failure)) = got.controller else {
            panic!("the controller must not decide: {:?}", got.controller);
        };
        assert_eq!(failure.policy, "spread");
        assert!(failure.message.to_string().contains("invalid"), "{failure}");

        assert_eq!(got.diff.change, Change::Fails);
        assert_eq!(got.diff.candidate, None);
        assert_eq!(got.diff.reason, failure.to_string());
        assert_eq!(
            got.diff.now,
            [("east".to_string(), Some(3))].into(),
            "the recorded decision stays"
        );

        assert!(
            matches!(&got.eval, Err(EvalError::Decide(DecideError::Policy(f))) if f.to_string() == failure.to_string()),
            "{:?}",
            got.eval
        );
    }

    #[tokio::test]
    async fn a_system_namespace_is_never_decided() {
        let runner = runner();
        let mut obj = web();
        obj.metadata.namespace = Some("kube-system".into());
        let placement = placement(None);
        let inputs = Inputs {
            api_version: "apps/v1",
            kind: "Deployment",
            object: &obj,
            placement: &placement,
            targets: &[view("east", true)],
            now: Utc::now(),
        };
        let got = decide(
            runner.as_ref(),
            &NoObserver,
            &SettingsVerdicts::default(),
            inputs,
        )
        .await;
        assert!(matches!(got, Err(DecideError::Excluded(_))), "{got:?}");
        assert!(
            runner.calls.lock().expect("calls").is_empty(),
            "no policy runs"
        );
    }
}
