//! `tmcd policy eval|check|list`: run a policy module offline against
//! files, validate one like the hot-reload path does, or show the running
//! daemon's active generation (`diff` is [`crate::policy_diff`]; the
//! subcommands are dispatched by [`crate::policy_command`]).
//!
//! Offline commands load the module into a real [`PolicyHost`]
//! ([`PolicyHost::load_module`]), so compilation, export checks, the ABI
//! version, settings and the module's test vectors are the very checks tmcd
//! applies; decisions are made by the placement controller's own step,
//! [`decide::decide`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kube::api::DynamicObject;
use serde_json::Value;
use tmc_api::crd::{ClusterWorkloadPlacement, ClusterWorkloadPlacementSpec, PolicyRef, SyncTarget};
use tmc_policy_host::{HostConfig, PolicyError, PolicyHost, PolicyInfo, PolicyKind};
use tmc_policy_sdk::abi::{
    PlacementDecision, PlacementRequest, TargetDecision, TransformRequest, TransformResult,
};

use crate::admin::client;
use crate::placement::decide::{self, DecideError, NoObserver};
use crate::placement::runner::PolicyRunner;
use crate::placement::settings::SettingsVerdicts;
use crate::placement::targets::{TargetView, ready_condition};
use crate::placement::workload;
use crate::policy::HostRunner;

/// Inputs of `tmcd policy eval`.
#[derive(Debug, Clone)]
pub struct EvalArgs {
    pub module: PathBuf,
    pub workload: PathBuf,
    pub targets: PathBuf,
    pub placement: Option<PathBuf>,
    /// `--settings` / `--settings-file`, overriding the placement's.
    pub settings: Option<Value>,
    /// Only this target (transformation modules).
    pub target: Option<String>,
    pub all_ready: bool,
}

/// Reads a YAML or JSON file into a JSON value.
pub(crate) fn read_doc(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (fix: check the path)", path.display()))?;
    serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not valid YAML or JSON", path.display()))
}

/// A module loaded into a fresh host (alone, or beside a policy directory).
pub struct Loaded {
    pub host: PolicyHost,
    /// The policy name (file stem, or the name it stands in for).
    pub name: String,
    pub kind: PolicyKind,
    pub digest: String,
    pub size: usize,
    /// The module's function exports, sorted.
    pub exports: Vec<String>,
    /// Modules of the policy directory the host refused: (name, cause).
    pub refused: Vec<(String, String)>,
}

/// Compiles and validates `module` exactly as a hot reload does.
pub async fn load(module: &Path) -> Result<Loaded> {
    load_as(module, None, None).await
}

/// Like [`load`], with the module named `name` instead of its file stem and,
/// given `beside` (a policy directory), loaded together with that
/// directory's other modules: the policy set tmcd would run if `module`
/// replaced `<name>.wasm` there.
pub async fn load_as(module: &Path, name: Option<&str>, beside: Option<&Path>) -> Result<Loaded> {
    let bytes = std::fs::read(module)
        .with_context(|| format!("cannot read module {} (fix: check the path; build the examples with hack/build-policies.sh)", module.display()))?;
    let name = match name {
        Some(name) => Some(name),
        None => module.file_stem().and_then(|s| s.to_str()),
    }
    .filter(|s| !s.is_empty() && !s.starts_with('.'))
    .with_context(|| {
        format!(
            "{}: the module needs a name, from a file name such as my-policy.wasm or given with --as",
            module.display()
        )
    })?
    .to_string();
    if !bytes.starts_with(b"\0asm") {
        bail!(
            "{} is not a WebAssembly module: no \\0asm magic number (fix: build it for wasm32-wasip1)",
            module.display()
        );
    }
    let host = PolicyHost::new(HostConfig::default())?;
    let mut refused = Vec::new();
    if let Some(beside) = beside {
        let report = host.load_dir(beside).await.with_context(|| {
            format!(
                "cannot read policy directory {} (fix: check [policies] directory in tmc.toml)",
                beside.display()
            )
        })?;
        refused = report.refused;
        refused.retain(|(refused_name, _)| *refused_name != name);
    }
    let size = bytes.len();
    let active = host
        .load_module(&name, bytes)
        .await
        .map_err(|cause| anyhow::anyhow!("{} refused: {cause}", module.display()))?;
    Ok(Loaded {
        host,
        name,
        kind: active.kind,
        exports: active.exports(),
        digest: active.digest,
        size,
        refused,
    })
}

/// `tmcd policy check`: what the module is, and that it passed validation.
pub async fn check(loaded: &Loaded, settings: Option<&Value>) -> Result<String> {
    if let Some(settings) = settings {
        loaded
            .host
            .validate_settings(&loaded.name, settings)
            .await
            .with_context(|| {
                format!(
                    "{}: settings {settings} refused (fix the settings or see the policy's README)",
                    loaded.name
                )
            })?;
    }
    let vectors = if loaded.exports.iter().any(|e| e == "tmc_test_vectors") {
        "shipped (tmc_test_vectors), all passed"
    } else {
        "none shipped"
    };
    let mut out = format!(
        "{}: ok\n  kind:     {}\n  abi:      version {}\n  digest:   sha256:{}\n  size:     {} bytes\n  exports:  {}\n  vectors:  {vectors}\n",
        loaded.name,
        loaded.kind,
        tmc_policy_sdk::abi::ABI_VERSION,
        loaded.digest,
        loaded.size,
        loaded.exports.join(", "),
    );
    if let Some(settings) = settings {
        out.push_str(&format!("  settings: {settings} accepted\n"));
    }
    Ok(out)
}

/// The result of `tmcd policy eval`, printed as a table or JSON.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalReport {
    pub policy: String,
    pub kind: PolicyKind,
    pub workload: String,
    /// Placement: the targets chosen, with replicas and edits of transformations.
    pub targets: Vec<TargetRow>,
    pub reason: String,
    pub micros: u128,
}

/// One target of an evaluation.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRow {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Edits of a transformation module.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edits: Option<TransformResult>,
}

/// `tmcd policy eval`.
pub async fn eval(args: &EvalArgs) -> Result<EvalReport> {
    let loaded = load(&args.module).await?;
    eval_loaded(&loaded, args).await
}

async fn eval_loaded(loaded: &Loaded, args: &EvalArgs) -> Result<EvalReport> {
    let obj = read_workload(&args.workload)?;
    let views = read_targets(&args.targets, args.all_ready)?;
    let from_file = args.placement.as_deref().map(read_placement).transpose()?;
    let placement = eval_placement(&loaded.name, from_file, args.settings.clone());
    let module = Module {
        name: &loaded.name,
        kind: loaded.kind,
        only_target: args.target.as_deref(),
    };
    let runner: Arc<dyn PolicyRunner> = Arc::new(HostRunner(loaded.host.clone()));
    let started = Instant::now();
    let (targets, reason) = eval_with(runner, &module, &obj, &placement, &views, Utc::now())
        .await
        .map_err(|err| match err {
            EvalError::Decide(DecideError::Excluded(why)) => anyhow::anyhow!(
                "{}: tmcd never places this object ({why}); pick a workload it places",
                args.workload.display()
            ),
            EvalError::Decide(DecideError::Policy(failure)) => anyhow::anyhow!(
                "{} ({}) failed: {}",
                loaded.name,
                args.module.display(),
                failure.message
            ),
            EvalError::NoTarget => anyhow::anyhow!(
                "no target to transform for in {} (fix: check --target, the location selectors, or pass --all-ready)",
                args.targets.display()
            ),
        })?;
    let micros = started.elapsed().as_micros();
    let summary = workload::summary(&api_version(&obj), &kind(&obj), &obj);
    Ok(EvalReport {
        policy: loaded.name.clone(),
        kind: loaded.kind,
        workload: format!("{} {}/{}", kind(&obj), summary.namespace, summary.name),
        targets,
        reason,
        micros,
    })
}

/// The placement an evaluation runs under: the `--placement` file's (or an
/// empty one selecting every target) with `policy` as its policy, no
/// transformations, and `settings` (when given) as the policy's settings.
pub(crate) fn eval_placement(
    policy: &str,
    from_file: Option<ClusterWorkloadPlacement>,
    settings: Option<Value>,
) -> ClusterWorkloadPlacement {
    let mut placement = from_file.unwrap_or_else(|| {
        ClusterWorkloadPlacement::new(
            "policy-eval",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: policy.to_string(),
                    settings: None,
                },
                ..Default::default()
            },
        )
    });
    placement.spec.policy.name = policy.to_string();
    placement.spec.transformations.clear();
    if settings.is_some() {
        placement.spec.policy.settings = settings;
    }
    placement
}

/// The module `tmcd policy eval` evaluates.
pub(crate) struct Module<'a> {
    pub name: &'a str,
    pub kind: PolicyKind,
    /// Transformations: only the copy of this target.
    pub only_target: Option<&'a str>,
}

/// Why an evaluation made no decision.
#[derive(Debug)]
pub(crate) enum EvalError {
    Decide(DecideError),
    /// A transformation module, and no candidate target to transform for.
    NoTarget,
}

/// Evaluates `module` on `obj` under `placement` (see [`eval_placement`])
/// with [`decide::decide`], the controller's step. A placement module
/// decides as tmcd would. A transformation module runs after a stand-in
/// placement policy that places the whole workload on one candidate target,
/// once per candidate (only `module.only_target`): each row is the copy that
/// target would get.
pub(crate) async fn eval_with(
    runner: Arc<dyn PolicyRunner>,
    module: &Module<'_>,
    obj: &DynamicObject,
    placement: &ClusterWorkloadPlacement,
    views: &[TargetView],
    now: DateTime<Utc>,
) -> Result<(Vec<TargetRow>, String), EvalError> {
    let (api_version, kind) = (api_version(obj), kind(obj));
    let inputs = |placement| decide::Inputs {
        api_version: &api_version,
        kind: &kind,
        object: obj,
        placement,
        targets: views,
        now,
    };
    let settings = SettingsVerdicts::default();
    if module.kind.places() {
        let decision = decide::decide(runner.as_ref(), &NoObserver, &settings, inputs(placement))
            .await
            .map_err(EvalError::Decide)?;
        let rows = decision
            .outcome
            .chosen
            .into_iter()
            .map(|(name, r)| TargetRow {
                name,
                replicas: r.replicas,
                edits: None,
            })
            .collect();
        return Ok((rows, decision.outcome.reason));
    }
    let mut stand_in = placement.clone();
    stand_in.spec.policy = PolicyRef {
        name: ONE_TARGET.into(),
        settings: None,
    };
    stand_in.spec.transformations = vec![PolicyRef {
        name: module.name.to_string(),
        settings: placement.spec.policy.settings.clone(),
    }];
    let mut names: Vec<&str> = views
        .iter()
        .map(|v| v.name.as_str())
        .filter(|name| module.only_target.is_none_or(|only| only == *name))
        .collect();
    names.sort_unstable();
    let mut rows = Vec::new();
    for target in names {
        let one = OneTarget {
            inner: runner.clone(),
            target: target.to_string(),
        };
        let decision = decide::decide(&one, &NoObserver, &settings, inputs(&stand_in))
            .await
            .map_err(EvalError::Decide)?;
        rows.extend(
            decision
                .outcome
                .chosen
                .into_iter()
                .map(|(name, r)| TargetRow {
                    name,
                    replicas: r.replicas,
                    edits: Some(TransformResult {
                        labels: r.labels,
                        annotations: r.annotations,
                    }),
                }),
        );
    }
    if rows.is_empty() {
        return Err(EvalError::NoTarget);
    }
    Ok((rows, "transformation of each target's copy".to_string()))
}

/// The stand-in placement policy of [`OneTarget`].
const ONE_TARGET: &str = "tmcd-policy-eval-one-target";

/// `runner`, plus a placement policy named [`ONE_TARGET`] that places the
/// whole workload on `target` when it is a candidate (and nowhere otherwise)
/// and accepts any settings.
struct OneTarget {
    inner: Arc<dyn PolicyRunner>,
    target: String,
}

impl PolicyRunner for OneTarget {
    fn place<'a>(
        &'a self,
        policy: &'a str,
        req: &'a PlacementRequest,
    ) -> BoxFuture<'a, Result<PlacementDecision, PolicyError>> {
        if policy != ONE_TARGET {
            return self.inner.place(policy, req);
        }
        let targets = req
            .targets
            .iter()
            .filter(|t| t.name == self.target)
            .map(|t| TargetDecision {
                name: t.name.clone(),
                replicas: req.workload.replicas,
            })
            .collect();
        let decision = PlacementDecision {
            targets,
            reason: format!("the whole workload on {}", self.target),
        };
        Box::pin(async move { Ok(decision) })
    }

    fn transform<'a>(
        &'a self,
        policy: &'a str,
        req: &'a TransformRequest,
    ) -> BoxFuture<'a, Result<TransformResult, PolicyError>> {
        self.inner.transform(policy, req)
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.subscribe()
    }

    fn policies(&self) -> Vec<PolicyInfo> {
        self.inner.policies()
    }

    fn validate_settings<'a>(
        &'a self,
        policy: &'a str,
        settings: &'a Value,
    ) -> BoxFuture<'a, Result<(), PolicyError>> {
        if policy == ONE_TARGET {
            return Box::pin(async { Ok(()) });
        }
        self.inner.validate_settings(policy, settings)
    }
}

fn api_version(obj: &DynamicObject) -> String {
    obj.types
        .as_ref()
        .map(|t| t.api_version.clone())
        .unwrap_or_default()
}

fn kind(obj: &DynamicObject) -> String {
    obj.types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default()
}

fn read_workload(path: &Path) -> Result<DynamicObject> {
    let doc = read_doc(path)?;
    let obj: DynamicObject = serde_json::from_value(doc)
        .with_context(|| format!("{} is not a Kubernetes object", path.display()))?;
    if obj
        .types
        .as_ref()
        .is_none_or(|t| t.kind.is_empty() || t.api_version.is_empty())
    {
        bail!(
            "{}: the workload needs apiVersion and kind (fix: e.g. apiVersion: apps/v1, kind: Deployment)",
            path.display()
        );
    }
    if obj.metadata.name.is_none() {
        bail!("{}: the workload needs metadata.name", path.display());
    }
    Ok(obj)
}

/// SyncTargets from a YAML list or a `kind: List`; ready per their `Ready`
/// condition, or all ready with `all_ready`.
fn read_targets(path: &Path, all_ready: bool) -> Result<Vec<TargetView>> {
    let doc = read_doc(path)?;
    let items = match doc {
        Value::Array(items) => items,
        Value::Object(mut map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
            match map.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            }
        }
        _ => bail!(
            "{}: expected a YAML list of SyncTargets or a kind: List (fix: start each target with `- apiVersion: workload.kcp.io/v1alpha1`)",
            path.display()
        ),
    };
    if items.is_empty() {
        bail!("{}: no SyncTargets in it", path.display());
    }
    let mut views = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let target: SyncTarget = serde_json::from_value(item).with_context(|| {
            format!(
                "{}: item {i} is not a SyncTarget (workload.kcp.io/v1alpha1)",
                path.display()
            )
        })?;
        let mut view = TargetView::of(&target, Utc::now(), Duration::MAX);
        view.ready = all_ready || ready_condition(&target).is_some_and(|c| c.status == "True");
        view.not_ready_since = (!view.ready).then(Utc::now);
        views.push(view);
    }
    Ok(views)
}

fn read_placement(path: &Path) -> Result<ClusterWorkloadPlacement> {
    let doc = read_doc(path)?;
    serde_json::from_value(doc).with_context(|| {
        format!(
            "{} is not a ClusterWorkloadPlacement (fix: compare with `tmcd crds`)",
            path.display()
        )
    })
}

/// The human-readable form of an evaluation.
pub fn render_eval(report: &EvalReport) -> String {
    let mut out = format!(
        "policy {} ({}) on {}\n\n",
        report.policy, report.kind, report.workload
    );
    if report.targets.is_empty() {
        out.push_str("(no target chosen: the workload stays pending)\n");
    } else {
        let mut rows = vec![["TARGET", "REPLICAS", "EDITS"].map(String::from).to_vec()];
        rows.extend(report.targets.iter().map(|row| {
            vec![
                row.name.clone(),
                row.replicas.map_or("-".to_string(), |r| r.to_string()),
                row.edits.as_ref().map_or("-".to_string(), render_edits),
            ]
        }));
        out.push_str(&crate::table::render(&rows));
    }
    out.push_str(&format!(
        "\nreason: {}\nevaluated in {} us\n",
        report.reason, report.micros
    ));
    out
}

fn render_edits(edits: &TransformResult) -> String {
    let mut parts = Vec::new();
    for (what, map) in [("label", &edits.labels), ("annotation", &edits.annotations)] {
        for (k, v) in &map.set {
            parts.push(format!("{what} {k}={v}"));
        }
        for k in &map.remove {
            parts.push(format!("{what} -{k}"));
        }
    }
    if parts.is_empty() {
        "(none)".into()
    } else {
        parts.join(", ")
    }
}

/// `tmcd policy list`: the running daemon's active generation.
pub async fn list(admin: &str, json: bool) -> Result<()> {
    let reply = client::request(admin, "GET", "/api/v1/status")
        .await
        .with_context(|| format!("no tmcd answers at {admin} (fix: start tmcd, or pass --admin with its [admin] address)"))?;
    let body: Value = serde_json::from_str(&reply.body).with_context(|| {
        format!(
            "tmcd at {admin} answered {} with a body that is not JSON",
            reply.status
        )
    })?;
    if reply.status >= 400 {
        bail!("tmcd at {admin} answered {}: {}", reply.status, reply.body);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&body["policies"])?);
        return Ok(());
    }
    let policies: Vec<PolicyInfo> = match &body["policies"] {
        Value::Null => Vec::new(),
        listed => serde_json::from_value(listed.clone()).with_context(|| {
            format!("tmcd at {admin} lists policies in a form this tmcd cannot read (fix: run the same tmcd version as the daemon, or use --json)")
        })?,
    };
    print!(
        "{}",
        render_list(body["policyGeneration"].as_u64(), &policies)
    );
    Ok(())
}

/// The policy table of `tmcd policy list`: the active generation's number
/// (if the daemon runs policies) and its policies.
pub fn render_list(generation: Option<u64>, policies: &[PolicyInfo]) -> String {
    let generation = generation.map_or_else(|| "-".to_string(), |g| g.to_string());
    let mut rows = vec![
        ["NAME", "KIND", "DIGEST", "STATUS", "LAST ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    for p in policies {
        rows.push(vec![
            p.name.clone(),
            p.kind.map_or("-", PolicyKind::as_str).to_string(),
            p.digest
                .as_deref()
                .unwrap_or("-")
                .chars()
                .take(12)
                .collect(),
            p.status.as_str().to_string(),
            p.last_error.as_deref().unwrap_or("-").to_string(),
        ]);
    }
    format!(
        "policy generation {generation}\n\n{}",
        crate::table::render(&rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tmc_policy_host::PolicyStatus;

    #[test]
    fn list_shows_each_policy_with_a_digest_prefix_and_its_error() {
        let info = |name: &str, digest: Option<&str>, status: PolicyStatus, error: Option<&str>| {
            PolicyInfo {
                name: name.into(),
                digest: digest.map(Into::into),
                kind: digest.map(|_| PolicyKind::Placement),
                status,
                status_text: status.to_string(),
                last_error: error.map(Into::into),
                source: None,
                loaded_at: None,
                serving: digest.is_some(),
            }
        };
        let policies = [
            info(
                "location-affinity",
                Some("761fef51d895a28acb86"),
                PolicyStatus::Active,
                None,
            ),
            info(
                "broken",
                None,
                PolicyStatus::Refused,
                Some("export \"memory\" is missing"),
            ),
        ];
        let text = render_list(Some(7), &policies);
        assert!(text.starts_with("policy generation 7\n"), "{text}");
        let lines: Vec<&str> = text.lines().skip(3).collect();
        assert!(lines[0].starts_with("location-affinity"), "{text}");
        assert!(lines[0].contains(" placement "), "{text}");
        assert!(
            lines[0].contains("761fef51d895 ") && !lines[0].contains("761fef51d895a"),
            "{text}"
        );
        assert!(
            lines[1].contains("refused") && lines[1].contains("memory"),
            "{text}"
        );
        assert!(
            lines[1].split_whitespace().nth(1) == Some("-"),
            "no kind: {text}"
        );
        assert!(render_list(None, &[]).starts_with("policy generation -\n"));
    }
}
