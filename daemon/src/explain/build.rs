//! An [`ExplainReport`] from the one decision step and the protocol reader.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use kube::api::DynamicObject;
use serde_json::Value;
use tmc_api::crd::ClusterWorkloadPlacement;
use tmc_api::decision::{STATE_SYNC, TargetResult};
use tmc_policy_host::PolicyInfo;

use super::report::{
    CopyReport, DecisionReport, ExplainReport, FollowsReport, PolicyReport, RecordedReport,
    TargetExplanation, Verdict, WorkloadRef,
};
use tmc_api::protocol::{self, Recorded};

use crate::placement::decide::{self, DecideError, NoObserver};
use crate::placement::dependencies::{self, Needs, User};
use crate::placement::limits::{Budget, LimitHit};
use crate::placement::request;
use crate::placement::runner::PolicyRunner;
use crate::placement::settings::SettingsVerdicts;
use crate::placement::targets::{Candidates, TargetView};
use crate::placement::within_limits::{self, Limited};
use crate::placement::workload;
use crate::placement::{assignment, capacity};

/// What [`explain`] reads: as [`decide::Inputs`], but the placement may be
/// missing (no placement selects the workload).
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The workload's `apiVersion` (`apps/v1`).
    pub api_version: &'a str,
    /// The workload's kind (`Deployment`).
    pub kind: &'a str,
    /// The workload, with what it records in its labels and annotations.
    pub object: &'a DynamicObject,
    /// The placement that governs it, if any (see [`decide::governing`]).
    pub placement: Option<&'a ClusterWorkloadPlacement>,
    /// Every SyncTarget.
    pub targets: &'a [TargetView],
    /// The workspace's limits and what its other workloads use (export mode;
    /// unlimited for one workspace).
    pub budget: &'a Budget,
    /// For a dependency kind that no placement selects: the workloads of
    /// its namespace that reference it (`None`: not a dependency kind).
    pub users: Option<&'a [User]>,
    pub now: DateTime<Utc>,
}

/// Explains `subject`: the decision [`within_limits::decide_within`] makes now with
/// `runner` (observed by no metric; `settings` are the verdicts the
/// controller remembers), every target kept or dropped with the reason, and
/// what the workload records and its syncers report per target.
pub async fn explain(
    runner: &dyn PolicyRunner,
    settings: &SettingsVerdicts,
    subject: Subject<'_>,
) -> ExplainReport {
    let obj = subject.object;
    let no_labels = BTreeMap::new();
    let recorded = protocol::read(
        obj.metadata.labels.as_ref().unwrap_or(&no_labels),
        obj.metadata.annotations.as_ref().unwrap_or(&no_labels),
    );
    let policies = runner.policies();
    let mut report = ExplainReport {
        workload: WorkloadRef {
            api_version: subject.api_version.to_string(),
            kind: subject.kind.to_string(),
            namespace: obj.metadata.namespace.clone(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            generation: obj.metadata.generation,
        },
        policy_generation: runner.generation(),
        ..ExplainReport::default()
    };
    let Some(placement) = subject.placement else {
        report.excluded = workload::excluded(subject.kind, obj).map(str::to_string);
        if let Some(users) = subject.users {
            let needs = dependencies::needs(users);
            if needs.is_used() || recorded.values().any(dependencies::is_derived) {
                report.targets = rows(subject, &recorded, None, &BTreeMap::new(), |name, known| {
                    follow_verdict(name, known, &needs)
                });
                report.follows = Some(FollowsReport {
                    targets: needs.targets,
                    undecided: needs.undecided,
                });
                return report;
            }
        }
        report.targets = explain_targets(subject, &recorded, None, &BTreeMap::new(), false, &[]);
        return report;
    };
    report.placement = placement.metadata.name.clone();
    report.policy = Some(policy_report(&policies, &placement.spec.policy.name));
    report.transformations = placement
        .spec
        .transformations
        .iter()
        .map(|t| policy_report(&policies, &t.name))
        .collect();
    let inputs = decide::Inputs {
        api_version: subject.api_version,
        kind: subject.kind,
        object: obj,
        placement,
        targets: subject.targets,
        now: subject.now,
    };
    let Limited { decided, held_back } =
        within_limits::decide_within(runner, &NoObserver, settings, inputs, subject.budget).await;
    match decided {
        Ok(decision) => {
            let chosen = &decision.outcome.chosen;
            report.policy_generation = decision.outcome.generation;
            report.decision = Some(DecisionReport {
                reason: decision.outcome.reason.clone(),
                recorded: records(&decision.recorded, chosen),
            });
            report.targets = explain_targets(
                subject,
                &decision.recorded,
                Some(&decision.candidates),
                chosen,
                false,
                &held_back,
            );
        }
        Err(DecideError::Excluded(why)) => {
            report.excluded = Some(why.to_string());
            report.targets = explain_targets(
                subject,
                &recorded,
                None,
                &BTreeMap::new(),
                false,
                &held_back,
            );
        }
        Err(DecideError::Policy(failure)) => {
            report.failure = Some(format!("{failure}; the last decision stays"));
            // The candidates the failed request offered (the same step
            // `decide` ran before the policy).
            let summary = workload::summary(subject.api_version, subject.kind, obj);
            let holders = assignment::holders(&recorded);
            let per_replica = capacity::per_replica(subject.kind, obj);
            let (_, candidates) = request::build(
                placement,
                summary,
                per_replica,
                subject.targets,
                &holders,
                subject.now,
            );
            report.targets = explain_targets(
                subject,
                &recorded,
                Some(&candidates),
                &BTreeMap::new(),
                true,
                &held_back,
            );
        }
    }
    report
}

/// The policy `name` as the host serves it.
fn policy_report(policies: &[PolicyInfo], name: &str) -> PolicyReport {
    let info = policies.iter().find(|p| p.name == name);
    PolicyReport {
        name: name.to_string(),
        digest: info.and_then(|p| p.digest.clone()),
        status: info.map(|p| p.status.as_str().to_string()),
    }
}

/// True when `recorded` holds exactly `chosen`: the same targets, replicas
/// and edits.
fn records(recorded: &BTreeMap<String, Recorded>, chosen: &BTreeMap<String, TargetResult>) -> bool {
    let essence = |r: &TargetResult| (r.replicas, r.labels.clone(), r.annotations.clone());
    let held: BTreeMap<&String, Option<_>> = recorded
        .iter()
        .filter(|(_, r)| r.holds())
        .map(|(t, r)| (t, r.result.as_ref().map(essence)))
        .collect();
    let now: BTreeMap<&String, Option<_>> =
        chosen.iter().map(|(t, r)| (t, Some(essence(r)))).collect();
    held == now
}

/// One explanation per SyncTarget and per target `recorded` names, by name.
/// `candidates`: what the decision step offered the policy (`None`: it did
/// not run); `failed`: the policy ran and failed.
fn explain_targets(
    subject: Subject<'_>,
    recorded: &BTreeMap<String, Recorded>,
    candidates: Option<&Candidates>,
    chosen: &BTreeMap<String, TargetResult>,
    failed: bool,
    held_back: &[(String, LimitHit)],
) -> Vec<TargetExplanation> {
    rows(subject, recorded, candidates, chosen, |name, known| {
        judge(name, known, candidates, chosen, failed, held_back)
    })
}

/// One explanation per SyncTarget and per target `recorded` names, by
/// name, each judged by `verdict` (given the name and whether such a
/// SyncTarget exists).
fn rows(
    subject: Subject<'_>,
    recorded: &BTreeMap<String, Recorded>,
    candidates: Option<&Candidates>,
    chosen: &BTreeMap<String, TargetResult>,
    verdict: impl Fn(&str, bool) -> (Verdict, &'static str, String),
) -> Vec<TargetExplanation> {
    let names: BTreeSet<&String> = subject
        .targets
        .iter()
        .map(|t| &t.name)
        .chain(recorded.keys())
        .collect();
    let generation = subject.object.metadata.generation;
    names
        .into_iter()
        .map(|name| {
            let known = subject.targets.iter().any(|t| &t.name == name);
            let (verdict, reason, detail) = verdict(name, known);
            let decided = chosen.get(name);
            let rec = recorded.get(name);
            TargetExplanation {
                name: name.clone(),
                verdict,
                reason: reason.to_string(),
                detail,
                replicas: decided.and_then(|r| r.replicas),
                capacity: candidates
                    .and_then(|c| c.targets.iter().find(|t| &t.name == name))
                    .and_then(|t| t.capacity),
                labels: decided.map(|r| r.labels.clone()).unwrap_or_default(),
                annotations: decided.map(|r| r.annotations.clone()).unwrap_or_default(),
                recorded: rec.filter(|r| r.is_present()).map(recorded_report),
                copy: rec.and_then(|r| copy_report(r, generation)),
            }
        })
        .collect()
}

/// Whether target `name` is kept and why.
/// Whether a dependency that follows its workloads goes to target `name`.
fn follow_verdict(name: &str, known: bool, needs: &Needs) -> (Verdict, &'static str, String) {
    match needs.targets.get(name) {
        Some(users) => (
            Verdict::Chosen,
            "usedHere",
            format!("referenced by {} placed here", users.join(", ")),
        ),
        None if !known => (
            Verdict::Dropped,
            "unknownTarget",
            "no SyncTarget of this name (deleted: tmcd forgets it once the API answers 404)".into(),
        ),
        None if !needs.undecided.is_empty() => (
            Verdict::Dropped,
            "notUsedHere",
            "no workload that references it is placed here; a copy here stays until the undecided ones are placed".into(),
        ),
        None => (
            Verdict::Dropped,
            "notUsedHere",
            "no workload that references it is placed here".into(),
        ),
    }
}

fn judge(
    name: &str,
    known: bool,
    candidates: Option<&Candidates>,
    chosen: &BTreeMap<String, TargetResult>,
    failed: bool,
    held_back: &[(String, LimitHit)],
) -> (Verdict, &'static str, String) {
    if !known {
        return (
            Verdict::Dropped,
            "unknownTarget",
            "no SyncTarget of this name (deleted: tmcd forgets it once the API answers 404)".into(),
        );
    }
    if let Some((_, hit)) = held_back.iter().find(|(target, _)| target == name) {
        return (Verdict::Dropped, "limitReached", hit.describe(name));
    }
    let Some(candidates) = candidates else {
        return (
            Verdict::Dropped,
            "noDecision",
            "no decision is made for this workload".into(),
        );
    };
    if let Some(why) = candidates.dropped.get(name) {
        return (Verdict::Dropped, why.as_str(), why.describe().into());
    }
    if let Some(result) = chosen.get(name) {
        let replicas = result
            .replicas
            .map(|n| format!(" with {n} replicas"))
            .unwrap_or_default();
        let grace = if candidates.in_grace.contains(name) {
            " (not Ready, kept within the eviction grace period)"
        } else {
            ""
        };
        return (
            Verdict::Chosen,
            "chosen",
            format!("chosen by the policy{replicas}{grace}"),
        );
    }
    if candidates.in_grace.contains(name) {
        return (
            Verdict::Candidate,
            "inGrace",
            "not Ready, still a candidate within the eviction grace period".into(),
        );
    }
    if failed {
        return (
            Verdict::Candidate,
            "noDecision",
            "a candidate; the policy failed, so nothing was chosen".into(),
        );
    }
    (
        Verdict::Candidate,
        "notChosen",
        "a candidate the policy did not choose".into(),
    )
}

fn recorded_report(rec: &Recorded) -> RecordedReport {
    RecordedReport {
        sync: rec.state.as_deref() == Some(STATE_SYNC),
        deleting: rec.deleting,
        replicas: rec.result.as_ref().and_then(|r| r.replicas),
        placement: rec
            .result
            .as_ref()
            .map(|r| r.placement.clone())
            .filter(|p| !p.is_empty()),
        policy_generation: rec.result.as_ref().and_then(|r| r.policy_generation),
    }
}

/// The copy as `rec`'s status report tells it (`None`: no report).
fn copy_report(rec: &Recorded, generation: Option<i64>) -> Option<CopyReport> {
    if !rec.status_raw {
        return None;
    }
    let Some(status) = rec.status.as_ref() else {
        return Some(CopyReport {
            waiting: Some("its status report is unreadable".into()),
            ..CopyReport::default()
        });
    };
    let waiting = assignment::pending(rec, generation);
    let field = |key: &str| {
        status
            .status
            .as_ref()
            .and_then(|s| s.get(key))
            .and_then(Value::as_u64)
    };
    Some(CopyReport {
        in_place: waiting.is_none(),
        waiting,
        error: status.error.clone(),
        observed_generation: status.observed_generation,
        replicas: field("replicas"),
        ready_replicas: field("readyReplicas"),
        available_replicas: field("availableReplicas"),
        replicas_owner: status.replicas_owner.clone(),
    })
}

#[cfg(test)]
mod tests {
    //! The reasons of each verdict, with a fake policy that chooses the
    //! first candidate only.
    use std::sync::Arc;

    use serde_json::json;
    use tmc_api::crd::{ClusterWorkloadPlacementSpec, PolicyRef};
    use tmc_api::decision::{
        TargetStatus, deletion_annotation, result_annotation, result_digest, state_label,
        status_annotation,
    };
    use tmc_policy_sdk::abi::{PlacementDecision, TargetDecision};

    use super::*;
    use crate::explain::render::render;
    use crate::placement::limits::{Limits, Usage};
    use crate::placement::runner::fake::{FakeRunner, deployment};
    use crate::placement::targets::REGION_LABEL;
    use tmc_api::dependencies::DependencyKind;

    /// `first` puts every replica on the first candidate; `stamp` labels
    /// each copy with its target.
    fn runner() -> Arc<FakeRunner> {
        let mut runner = FakeRunner::new();
        runner.place.insert(
            "first".into(),
            Box::new(|req| {
                Ok(PlacementDecision {
                    targets: req
                        .targets
                        .iter()
                        .take(1)
                        .map(|t| TargetDecision {
                            name: t.name.clone(),
                            replicas: req.workload.replicas,
                        })
                        .collect(),
                    reason: "the first candidate".into(),
                })
            }),
        );
        runner.with_target_stamp("stamp");
        Arc::new(runner)
    }

    /// `demo/web`, 3 replicas, recorded on `west` (3, being removed) whose
    /// syncer reports 3 of 3 available.
    fn web() -> DynamicObject {
        let mut obj = deployment("demo", "web", 3);
        let result = json!({"replicas": 3, "placement": "p", "policyGeneration": 1}).to_string();
        let status = TargetStatus {
            observed_generation: Some(1),
            result_digest: result_digest(Some(&result)),
            status: Some(json!({"replicas": 3, "availableReplicas": 3, "readyReplicas": 3})),
            ..TargetStatus::default()
        };
        obj.metadata.labels = Some([(state_label("west"), "Sync".to_string())].into());
        obj.metadata.annotations = Some(
            [
                (result_annotation("west"), result),
                (
                    status_annotation("west"),
                    serde_json::to_string(&status).expect("json"),
                ),
                (deletion_annotation("west"), "2026-01-01T00:00:00Z".into()),
            ]
            .into(),
        );
        obj
    }

    fn view(name: &str, region: &str, ready: bool, schedulable: bool) -> TargetView {
        TargetView {
            name: name.into(),
            labels: [(REGION_LABEL.to_string(), region.to_string())].into(),
            ready,
            not_ready_since: (!ready).then(Utc::now),
            schedulable,
            evicting: false,
            available: None,
        }
    }

    fn placement(policy: &str) -> ClusterWorkloadPlacement {
        let mut p = ClusterWorkloadPlacement::new(
            "p",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: policy.into(),
                    settings: None,
                },
                transformations: vec![PolicyRef {
                    name: "stamp".into(),
                    settings: None,
                }],
                location_selectors: vec![
                    serde_json::from_value(json!({"matchLabels": {REGION_LABEL: "us"}}))
                        .expect("selector"),
                ],
                ..Default::default()
            },
        );
        p.metadata.name = Some("p".into());
        p
    }

    async fn run(placement: Option<&ClusterWorkloadPlacement>) -> ExplainReport {
        run_within(placement, &Budget::default()).await
    }

    async fn run_within(
        placement: Option<&ClusterWorkloadPlacement>,
        budget: &Budget,
    ) -> ExplainReport {
        let obj = web();
        let targets = [
            view("a-east", "us", true, true),
            view("b-north", "us", false, true),
            view("c-south", "us", true, false),
            view("d-spare", "us", true, true),
            view("west", "eu", true, true),
        ];
        let subject = Subject {
            api_version: "apps/v1",
            kind: "Deployment",
            object: &obj,
            placement,
            targets: &targets,
            budget,
            users: None,
            now: Utc::now(),
        };
        explain(runner().as_ref(), &SettingsVerdicts::default(), subject).await
    }

    fn why(report: &ExplainReport) -> Vec<(&str, Verdict, &str)> {
        report
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.verdict, t.reason.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn each_target_says_why_it_is_kept_or_dropped() {
        let p = placement("first");
        let report = run(Some(&p)).await;
        assert_eq!(
            why(&report),
            [
                ("a-east", Verdict::Chosen, "chosen"),
                ("b-north", Verdict::Dropped, "notReady"),
                ("c-south", Verdict::Dropped, "unschedulable"),
                ("d-spare", Verdict::Candidate, "notChosen"),
                ("west", Verdict::Dropped, "locationMismatch"),
            ]
        );
        assert_eq!(report.placement.as_deref(), Some("p"));
        assert_eq!(
            report.policy.as_ref().map(|p| p.name.as_str()),
            Some("first")
        );
        assert_eq!(report.transformations.len(), 1);
        assert_eq!(report.policy_generation, 1);
        let decision = report.decision.as_ref().expect("decided");
        assert_eq!(decision.reason, "the first candidate");
        assert!(!decision.recorded, "the workload records west, not a-east");
        let east = &report.targets[0];
        assert_eq!(east.replicas, Some(3));
        assert_eq!(
            east.labels
                .set
                .get("example.com/target")
                .map(String::as_str),
            Some("a-east"),
            "the transformation's edits are part of the decision"
        );
        assert_eq!(east.recorded, None);
        assert_eq!(east.copy, None);
    }

    #[tokio::test]
    async fn a_target_held_back_by_a_limit_is_dropped_with_the_limit_and_the_fix() {
        let p = placement("first");
        let full = Limits {
            workloads: Some(2),
            replicas: None,
        };
        let budget = Budget {
            limited: [("a-east".to_string(), full)].into(),
            usage: [(
                "a-east".to_string(),
                Usage {
                    workloads: 2,
                    replicas: 4,
                },
            )]
            .into(),
        };
        let report = run_within(Some(&p), &budget).await;
        let got = why(&report);
        assert_eq!(got[0], ("a-east", Verdict::Dropped, "limitReached"));
        assert_eq!(
            got[3],
            ("d-spare", Verdict::Chosen, "chosen"),
            "decided again without a-east"
        );
        let detail = &report.targets[0].detail;
        assert!(
            detail.contains("2 of 2 workloads") && detail.contains("spec.limits"),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn a_recorded_target_shows_its_record_and_its_copy() {
        let p = placement("first");
        let report = run(Some(&p)).await;
        let west = report
            .targets
            .iter()
            .find(|t| t.name == "west")
            .expect("west");
        let recorded = west.recorded.as_ref().expect("recorded");
        assert!(recorded.sync && recorded.deleting);
        assert_eq!(recorded.replicas, Some(3));
        assert_eq!(recorded.placement.as_deref(), Some("p"));
        assert_eq!(recorded.policy_generation, Some(1));
        let copy = west.copy.as_ref().expect("reported");
        assert!(copy.in_place, "{copy:?}");
        assert_eq!((copy.available_replicas, copy.replicas), (Some(3), Some(3)));
    }

    #[tokio::test]
    async fn a_failing_policy_keeps_the_candidates_and_says_so() {
        let p = placement("missing");
        let report = run(Some(&p)).await;
        let failure = report.failure.as_deref().expect("failed");
        assert!(
            failure.contains("missing") && failure.contains("last decision stays"),
            "{failure}"
        );
        assert_eq!(report.decision, None);
        assert_eq!(
            report.policy.as_ref().and_then(|p| p.status.clone()),
            None,
            "the host has no such policy"
        );
        let reasons: Vec<&str> = report.targets.iter().map(|t| t.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "noDecision",
                "notReady",
                "unschedulable",
                "noDecision",
                "locationMismatch"
            ]
        );
    }

    #[tokio::test]
    async fn no_placement_no_decision() {
        let report = run(None).await;
        assert_eq!(report.placement, None);
        assert_eq!(report.decision, None);
        assert!(report.targets.iter().all(|t| t.reason == "noDecision"));
        assert!(
            report.targets.iter().any(|t| t.recorded.is_some()),
            "west still records it"
        );
    }

    #[test]
    fn a_deleted_target_that_is_still_recorded_is_named() {
        let (verdict, reason, _) = judge("gone", false, None, &BTreeMap::new(), false, &[]);
        assert_eq!((verdict, reason), (Verdict::Dropped, "unknownTarget"));
    }

    #[test]
    fn the_report_keeps_its_json_field_names() {
        let report = ExplainReport {
            targets: vec![TargetExplanation {
                name: "east".into(),
                verdict: Verdict::Chosen,
                reason: "chosen".into(),
                replicas: Some(2),
                ..TargetExplanation::default()
            }],
            policy_generation: 4,
            ..ExplainReport::default()
        };
        let body = serde_json::to_value(&report).expect("json");
        assert_eq!(body["policyGeneration"], 4);
        assert_eq!(body["targets"][0]["verdict"], "chosen");
        assert_eq!(body["targets"][0]["replicas"], 2);
        let back: ExplainReport = serde_json::from_value(body).expect("reads back");
        assert_eq!(back, report);
    }

    #[tokio::test]
    async fn a_dependency_without_a_placement_follows_its_users() {
        let config: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web-config", "namespace": "demo"}
        }))
        .expect("object");
        // web (referencing it) is placed on west; api is selected but undecided.
        let mut web = web();
        let pod_spec = json!({"containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "web-config"}}]}]});
        web.data["spec"]["template"]["spec"] = pod_spec.clone();
        let mut api = deployment("demo", "api", 1);
        api.data["spec"]["template"]["spec"] = pod_spec;
        let users: Vec<User> = [&web, &api]
            .into_iter()
            .filter_map(|w| {
                User::of(
                    "Deployment",
                    w,
                    DependencyKind::ConfigMap,
                    "web-config",
                    || true,
                )
            })
            .collect();
        assert_eq!(users.len(), 2);
        let targets = [
            view("west", "eu", true, true),
            view("a-east", "us", true, true),
        ];
        let subject = Subject {
            api_version: "v1",
            kind: "ConfigMap",
            object: &config,
            placement: None,
            targets: &targets,
            budget: &Budget::default(),
            users: Some(&users),
            now: Utc::now(),
        };
        let report = explain(runner().as_ref(), &SettingsVerdicts::default(), subject).await;
        let follows = report.follows.as_ref().expect("it follows its users");
        assert_eq!(
            follows.targets,
            [("west".to_string(), vec!["Deployment demo/web".to_string()])].into()
        );
        assert_eq!(follows.undecided, ["Deployment demo/api"]);
        assert_eq!(
            why(&report),
            [
                ("a-east", Verdict::Dropped, "notUsedHere"),
                ("west", Verdict::Chosen, "usedHere"),
            ]
        );
        let text = render(&report);
        assert!(
            text.contains("follows:     west (Deployment demo/web)"),
            "{text}"
        );
        assert!(text.contains("undecided:   Deployment demo/api"), "{text}");
        assert!(!text.contains("it is not placed"), "{text}");

        // Referenced by nobody, and recording no derived decision: as any
        // object no placement selects.
        let subject = Subject {
            users: Some(&[]),
            ..subject
        };
        let report = explain(runner().as_ref(), &SettingsVerdicts::default(), subject).await;
        assert!(report.follows.is_none());
    }
}
