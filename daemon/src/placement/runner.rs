//! Running the placement policy and the transformation policies of one
//! workload, behind a small trait so the pipeline is testable without wasm.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tmc_api::crd::ClusterWorkloadPlacement;
use tmc_api::decision::TargetResult;
use tmc_policy_host::{PolicyError, PolicyInfo};
use tmc_policy_sdk::abi::{PlacementDecision, PlacementRequest, TransformRequest, TransformResult};

/// What evaluates policies: the wasm host in tmcd, a fake in tests.
///
/// Answers passed the host rules (`tmc_policy_sdk::rules`): the runner checks
/// them, so the pipeline does not check them again.
pub trait PolicyRunner: Send + Sync + 'static {
    /// Runs placement policy `policy` on `req`; the decision passed the rules.
    fn place<'a>(
        &'a self,
        policy: &'a str,
        req: &'a PlacementRequest,
    ) -> BoxFuture<'a, Result<PlacementDecision, PolicyError>>;
    /// Runs transformation policy `policy` on `req`; the edits passed the rules.
    fn transform<'a>(
        &'a self,
        policy: &'a str,
        req: &'a TransformRequest,
    ) -> BoxFuture<'a, Result<TransformResult, PolicyError>>;
    /// The generation of the active policy set.
    fn generation(&self) -> u64;
    /// Changes of the generation (a hot reload swapped the policy set).
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The policies of the active set, sorted by name (the status API lists them).
    fn policies(&self) -> Vec<PolicyInfo>;
    /// Asks `policy` whether `settings` are valid;
    /// [`PolicyError::SettingsRejected`] carries its message when they are not.
    fn validate_settings<'a>(
        &'a self,
        policy: &'a str,
        settings: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), PolicyError>>;
}

/// Checks the settings of `placement`'s policy and of each transformation;
/// the first refusal names the policy.
pub async fn check_settings(
    runner: &dyn PolicyRunner,
    placement: &ClusterWorkloadPlacement,
) -> Result<(), PolicyFailure> {
    let spec = &placement.spec;
    for policy in std::iter::once(&spec.policy).chain(spec.transformations.iter()) {
        let settings = policy.settings.clone().unwrap_or(serde_json::Value::Null);
        runner
            .validate_settings(&policy.name, &settings)
            .await
            .map_err(|message| PolicyFailure {
                policy: policy.name.clone(),
                message,
            })?;
    }
    Ok(())
}

/// Why a workload could not be (re)placed; the previous decision stays.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy {policy:?} failed: {message}")]
pub struct PolicyFailure {
    /// The policy that failed.
    pub policy: String,
    /// What went wrong (its text is part of this failure's).
    pub message: PolicyError,
}

/// The outcome of the policies for one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Target -> the result to record.
    pub chosen: BTreeMap<String, TargetResult>,
    /// The placement policy's explanation.
    pub reason: String,
    /// Policy generation used.
    pub generation: u64,
}

/// Observes the time and result of each evaluation (metrics).
pub trait EvalObserver: Send + Sync {
    /// One evaluation of `policy` took `elapsed`, and failed when `failed`.
    fn observe(&self, policy: &str, elapsed: Duration, failed: bool);
}

/// Runs `placement`'s policy on `req`, checks the decision against the
/// request, then runs the transformations, in order, for every chosen target.
pub async fn evaluate(
    runner: &dyn PolicyRunner,
    observer: &dyn EvalObserver,
    placement: &ClusterWorkloadPlacement,
    req: &PlacementRequest,
) -> Result<Outcome, PolicyFailure> {
    let generation = runner.generation();
    let policy = &placement.spec.policy.name;
    let started = Instant::now();
    let decided = runner.place(policy, req).await;
    observer.observe(policy, started.elapsed(), decided.is_err());
    let decision = decided.map_err(|message| PolicyFailure {
        policy: policy.clone(),
        message,
    })?;
    let placement_name = placement.metadata.name.clone().unwrap_or_default();
    let mut chosen = BTreeMap::new();
    for choice in &decision.targets {
        let Some(target) = req.targets.iter().find(|t| t.name == choice.name) else {
            continue; // the runner's rules refused unknown targets already
        };
        let mut result = TargetResult {
            replicas: choice.replicas,
            placement: placement_name.clone(),
            policy_generation: Some(generation),
            ..Default::default()
        };
        for transformation in &placement.spec.transformations {
            let treq = TransformRequest {
                workload: req.workload.clone(),
                target: target.clone(),
                replicas: choice.replicas,
                settings: transformation
                    .settings
                    .clone()
                    .unwrap_or(serde_json::Value::Null),
            };
            let started = Instant::now();
            let edited = runner.transform(&transformation.name, &treq).await;
            observer.observe(&transformation.name, started.elapsed(), edited.is_err());
            let edits = edited.map_err(|message| PolicyFailure {
                policy: transformation.name.clone(),
                message,
            })?;
            merge_edits(&mut result.labels, edits.labels);
            merge_edits(&mut result.annotations, edits.annotations);
        }
        chosen.insert(choice.name.clone(), result);
    }
    Ok(Outcome {
        chosen,
        reason: decision.reason,
        generation,
    })
}

/// Folds `later` into `acc` so that applying `acc` equals applying both in order.
fn merge_edits(acc: &mut tmc_policy_sdk::MapEdits, later: tmc_policy_sdk::MapEdits) {
    for key in &later.remove {
        acc.set.remove(key);
        if !acc.remove.contains(key) {
            acc.remove.push(key.clone());
        }
    }
    for (key, value) in later.set {
        acc.remove.retain(|k| k != &key);
        acc.set.insert(key, value);
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A policy runner of plain Rust closures. It does not check the host
    //! rules: a closure's answer is passed on as it is.
    use super::*;
    use std::sync::Mutex;
    use tmc_policy_sdk::abi::TargetDecision;

    type PlaceFn =
        Box<dyn Fn(&PlacementRequest) -> Result<PlacementDecision, PolicyError> + Send + Sync>;
    type TransformFn =
        Box<dyn Fn(&TransformRequest) -> Result<TransformResult, PolicyError> + Send + Sync>;

    /// Policies by name.
    pub struct FakeRunner {
        pub place: BTreeMap<String, PlaceFn>,
        pub transform: BTreeMap<String, TransformFn>,
        pub generation: tokio::sync::watch::Sender<u64>,
        pub calls: Mutex<Vec<String>>,
    }

    impl FakeRunner {
        pub fn new() -> Self {
            Self {
                place: BTreeMap::new(),
                transform: BTreeMap::new(),
                generation: tokio::sync::watch::channel(1).0,
                calls: Mutex::new(vec![]),
            }
        }
    }

    /// Deployment `namespace/name` with `replicas`, as a workload cache holds it (no metadata
    /// beyond its name, namespace and generation 1).
    pub fn deployment(namespace: &str, name: &str, replicas: i32) -> kube::api::DynamicObject {
        use kube::api::{ApiResource, DynamicObject, TypeMeta};
        let gvk = kube::core::GroupVersionKind::gvk("apps", "v1", "Deployment");
        let mut obj = DynamicObject::new(name, &ApiResource::from_gvk(&gvk)).within(namespace);
        obj.types = Some(TypeMeta {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
        });
        obj.metadata.generation = Some(1);
        obj.data = serde_json::json!({"spec": {"replicas": replicas}});
        obj
    }

    impl FakeRunner {
        /// Adds placement policy `name`, which splits the replicas evenly
        /// over every candidate, the first ones getting the remainder.
        pub fn with_spread(&mut self, name: &str) {
            self.place.insert(
                name.into(),
                Box::new(|req| {
                    let n = u32::try_from(req.targets.len()).expect("few targets");
                    let total = req.workload.replicas.unwrap_or(0);
                    let targets = req
                        .targets
                        .iter()
                        .zip(0..)
                        .map(|(t, i)| TargetDecision {
                            name: t.name.clone(),
                            replicas: Some(total / n + u32::from(i < total % n)),
                        })
                        .collect();
                    Ok(PlacementDecision {
                        targets,
                        reason: format!("spread over {n}"),
                    })
                }),
            );
        }

        /// Adds transformation `name`, which labels each copy
        /// `example.com/target: <target name>`.
        pub fn with_target_stamp(&mut self, name: &str) {
            self.transform.insert(
                name.into(),
                Box::new(|req| {
                    let mut edits = TransformResult::default();
                    edits
                        .labels
                        .set
                        .insert("example.com/target".into(), req.target.name.clone());
                    Ok(edits)
                }),
            );
        }
    }

    fn unknown(policy: &str) -> PolicyError {
        PolicyError::UnknownPolicy {
            policy: policy.into(),
        }
    }

    impl PolicyRunner for FakeRunner {
        fn place<'a>(
            &'a self,
            policy: &'a str,
            req: &'a PlacementRequest,
        ) -> BoxFuture<'a, Result<PlacementDecision, PolicyError>> {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(policy.to_string());
            }
            let out = match self.place.get(policy) {
                Some(f) => f(req),
                None => Err(unknown(policy)),
            };
            Box::pin(async move { out })
        }
        fn transform<'a>(
            &'a self,
            policy: &'a str,
            req: &'a TransformRequest,
        ) -> BoxFuture<'a, Result<TransformResult, PolicyError>> {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(policy.to_string());
            }
            let out = match self.transform.get(policy) {
                Some(f) => f(req),
                None => Err(unknown(policy)),
            };
            Box::pin(async move { out })
        }
        fn generation(&self) -> u64 {
            *self.generation.borrow()
        }
        fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
            self.generation.subscribe()
        }
        fn validate_settings<'a>(
            &'a self,
            policy: &'a str,
            settings: &'a serde_json::Value,
        ) -> BoxFuture<'a, Result<(), PolicyError>> {
            let out = if !self.place.contains_key(policy) && !self.transform.contains_key(policy) {
                Err(unknown(policy))
            } else if settings.get("invalid").is_some() {
                Err(PolicyError::SettingsRejected {
                    policy: policy.into(),
                    message: "settings: unknown field `invalid`".into(),
                })
            } else {
                Ok(())
            };
            Box::pin(async move { out })
        }
        fn policies(&self) -> Vec<PolicyInfo> {
            self.place
                .keys()
                .map(|name| PolicyInfo {
                    name: name.clone(),
                    digest: None,
                    kind: Some(tmc_policy_host::PolicyKind::Placement),
                    status: tmc_policy_host::PolicyStatus::Active,
                    status_text: tmc_policy_host::PolicyStatus::Active.to_string(),
                    last_error: None,
                    source: None,
                    loaded_at: None,
                    serving: true,
                })
                .collect()
        }
    }

    /// Observes nothing.
    pub struct NoObserver;
    impl EvalObserver for NoObserver {
        fn observe(&self, _: &str, _: Duration, _: bool) {}
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeRunner, NoObserver};
    use super::*;
    use crate::policy::HostRunner;
    use tmc_api::crd::{ClusterWorkloadPlacementSpec, PolicyRef};
    use tmc_policy_sdk::abi::{Target, TargetDecision, Workload};

    fn placement(transformations: &[&str]) -> ClusterWorkloadPlacement {
        ClusterWorkloadPlacement::new(
            "spread",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: "split".into(),
                    settings: None,
                },
                transformations: transformations
                    .iter()
                    .map(|t| PolicyRef {
                        name: t.to_string(),
                        settings: None,
                    })
                    .collect(),
                ..Default::default()
            },
        )
    }

    fn request() -> PlacementRequest {
        PlacementRequest {
            workload: Workload {
                kind: "Deployment".into(),
                name: "web".into(),
                replicas: Some(3),
                ..Default::default()
            },
            targets: ["east", "west"]
                .iter()
                .map(|n| Target {
                    name: n.to_string(),
                    ready: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn split_runner() -> FakeRunner {
        let mut runner = FakeRunner::new();
        runner.place.insert(
            "split".into(),
            Box::new(|_| {
                Ok(PlacementDecision {
                    targets: vec![
                        TargetDecision {
                            name: "east".into(),
                            replicas: Some(1),
                        },
                        TargetDecision {
                            name: "west".into(),
                            replicas: Some(2),
                        },
                    ],
                    reason: "spread".into(),
                })
            }),
        );
        runner.transform.insert(
            "stamp".into(),
            Box::new(|req| {
                let mut r = TransformResult::default();
                r.labels
                    .set
                    .insert("cluster".into(), req.target.name.clone());
                r.labels.remove.push("debug".into());
                Ok(r)
            }),
        );
        runner.transform.insert(
            "unstamp".into(),
            Box::new(|_| {
                let mut r = TransformResult::default();
                r.labels.remove.push("cluster".into());
                r.annotations.set.insert("note".into(), "x".into());
                Ok(r)
            }),
        );
        runner
    }

    #[tokio::test]
    async fn places_and_transforms_each_target_in_order() {
        let runner = split_runner();
        let out = evaluate(&runner, &NoObserver, &placement(&["stamp"]), &request())
            .await
            .expect("ok");
        assert_eq!(out.reason, "spread");
        assert_eq!(out.chosen["west"].replicas, Some(2));
        assert_eq!(
            out.chosen["west"]
                .labels
                .set
                .get("cluster")
                .map(String::as_str),
            Some("west")
        );
        assert_eq!(out.chosen["east"].placement, "spread");
        let out = evaluate(
            &runner,
            &NoObserver,
            &placement(&["stamp", "unstamp"]),
            &request(),
        )
        .await
        .expect("ok");
        let west = &out.chosen["west"];
        assert!(west.labels.set.is_empty(), "later removal wins: {west:?}");
        assert!(west.labels.remove.contains(&"cluster".to_string()));
        assert_eq!(
            west.annotations.set.get("note").map(String::as_str),
            Some("x")
        );
    }

    #[tokio::test]
    async fn failures_name_the_policy() {
        let runner = split_runner();
        let mut bad = placement(&["missing"]);
        let err = evaluate(&runner, &NoObserver, &bad, &request())
            .await
            .expect_err("transform fails");
        assert_eq!(err.policy, "missing");
        bad.spec.policy.name = "gone".into();
        let err = evaluate(&runner, &NoObserver, &bad, &request())
            .await
            .expect_err("place fails");
        assert_eq!(err.policy, "gone");
        assert!(
            matches!(&err.message, PolicyError::UnknownPolicy { policy } if policy == "gone"),
            "{err:?}"
        );
        assert!(err.to_string().contains("not loaded"), "{err}");
    }

    #[tokio::test]
    async fn settings_are_checked_for_every_policy_of_the_placement() {
        let runner = split_runner();
        assert!(
            check_settings(&runner, &placement(&["stamp"]))
                .await
                .is_ok()
        );
        let mut bad = placement(&["stamp"]);
        bad.spec.transformations[0].settings = Some(serde_json::json!({"invalid": 1}));
        let err = check_settings(&runner, &bad).await.expect_err("refused");
        assert_eq!(err.policy, "stamp");
        assert!(
            matches!(&err.message, PolicyError::SettingsRejected { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "policy \"stamp\" failed: policy \"stamp\" rejects its settings: settings: unknown field `invalid`"
        );
    }

    /// A module placing every workload onto `target` and, as a
    /// transformation, setting tmc's own decision label (a reserved key).
    fn rule_breaker(target: &str) -> Vec<u8> {
        let place =
            format!(r#"{{"ok":{{"targets":[{{"name":"{target}","replicas":3}}],"reason":"r"}}}}"#);
        let transform = r#"{"ok":{"labels":{"set":{"state.workload.kcp.io/east":"Sync"}}}}"#;
        let settings = r#"{"ok":{"valid":true}}"#;
        let at = |offset: u64, text: &str| (offset << 32) | text.len() as u64;
        let quote = |text: &str| text.replace('"', "\\\"");
        let wat = format!(
            r#"(module
              (memory (export "memory") 2)
              (func (export "tmc_abi_version") (result i32) i32.const 1)
              (func (export "tmc_alloc") (param i32) (result i32) i32.const 65536)
              (data (i32.const 0) "{}")
              (func (export "tmc_validate_settings") (param i32 i32) (result i64) i64.const {})
              (data (i32.const 1024) "{}")
              (func (export "tmc_place") (param i32 i32) (result i64) i64.const {})
              (data (i32.const 2048) "{}")
              (func (export "tmc_transform") (param i32 i32) (result i64) i64.const {}))"#,
            quote(settings),
            at(0, settings),
            quote(&place),
            at(1024, &place),
            quote(transform),
            at(2048, transform),
        );
        wat::parse_str(&wat).expect("valid WAT")
    }

    /// The host checks every answer against the rules once, before the
    /// pipeline sees it: a decision or edits that break them fail the
    /// workload's evaluation, naming the policy.
    #[tokio::test(flavor = "multi_thread")]
    async fn answers_that_break_the_host_rules_are_refused() {
        let host = tmc_policy_host::PolicyHost::new(Default::default()).expect("host");
        for (name, target) in [("split", "east"), ("to-mars", "mars")] {
            host.load_module(name, rule_breaker(target))
                .await
                .expect("loads");
        }
        let runner = HostRunner(host);
        let fine = evaluate(&runner, &NoObserver, &placement(&[]), &request())
            .await
            .expect("a decision within the rules");
        assert_eq!(fine.chosen.keys().collect::<Vec<_>>(), ["east"]);

        let mut unknown_target = placement(&[]);
        unknown_target.spec.policy.name = "to-mars".into();
        let err = evaluate(&runner, &NoObserver, &unknown_target, &request())
            .await
            .expect_err("a target that is not in the request");
        assert_eq!(err.policy, "to-mars");
        assert!(
            matches!(err.message, PolicyError::RuleViolation { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("mars"), "{err}");

        let err = evaluate(&runner, &NoObserver, &placement(&["split"]), &request())
            .await
            .expect_err("edits of a reserved key");
        assert_eq!(err.policy, "split");
        assert!(
            matches!(err.message, PolicyError::RuleViolation { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("state.workload.kcp.io/east"),
            "{err}"
        );
    }
}
