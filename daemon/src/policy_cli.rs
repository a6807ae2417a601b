//! `tmcd policy eval|check|list|diff`: run a policy module offline against
//! files, validate one like the hot-reload path does, or show the running
//! daemon's active generation; `diff` is dispatched to [`crate::policy_diff`].
//!
//! Offline commands load the module into a real [`PolicyHost`]
//! ([`PolicyHost::load_module`]), so compilation, export checks, the ABI
//! version, settings and the module's test vectors are the very checks tmcd
//! applies; requests are built with the placement controller's own
//! functions.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::Utc;
use kube::api::DynamicObject;
use serde_json::Value;
use tmc_api::crd::{ClusterWorkloadPlacement, ClusterWorkloadPlacementSpec, PolicyRef, SyncTarget};
use tmc_policy_host::{HostConfig, PolicyHost, PolicyInfo, PolicyKind};
use tmc_policy_sdk::abi::{TransformRequest, TransformResult};

use crate::admin::client;
use crate::cli::PolicyCommand;
use crate::placement::request;
use crate::placement::runner::{self, EvalObserver};
use crate::placement::targets::{TargetView, ready_condition};
use crate::placement::workload;
use crate::policy::HostRunner;
use crate::policy_diff;

/// Runs one `tmcd policy` subcommand.
pub async fn run(cmd: PolicyCommand, config: &Path) -> Result<()> {
    match cmd {
        PolicyCommand::Eval {
            module,
            workload,
            targets,
            placement,
            settings,
            settings_file,
            target,
            all_ready,
            json,
        } => {
            let settings = read_settings(settings.as_deref(), settings_file.as_deref())?;
            let args = EvalArgs {
                module,
                workload,
                targets,
                placement,
                settings,
                target,
                all_ready,
            };
            let report = eval(&args).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render_eval(&report));
            }
            Ok(())
        }
        PolicyCommand::Check { module, settings } => {
            let settings = read_settings(settings.as_deref(), None)?;
            let loaded = load(&module).await?;
            print!("{}", check(&loaded, settings.as_ref()).await?);
            Ok(())
        }
        PolicyCommand::Diff {
            module,
            as_name,
            all,
            json,
            exit_code,
        } => {
            let config = crate::config::load(config)?;
            let report =
                policy_diff::diff(&config, &policy_diff::DiffArgs { module, as_name }).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", policy_diff::render_diff(&report, all));
            }
            if exit_code && report.changes().next().is_some() {
                bail!("decisions would change (--exit-code)");
            }
            Ok(())
        }
        PolicyCommand::List { admin, json } => list(&admin, json).await,
    }
}

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

/// `--settings JSON` or `--settings-file F` (JSON or YAML).
fn read_settings(inline: Option<&str>, file: Option<&Path>) -> Result<Option<Value>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("give --settings or --settings-file, not both"),
        (Some(text), None) => serde_json::from_str(text).map(Some).with_context(|| {
            format!("--settings {text:?} is not JSON (fix: e.g. --settings '{{\"mode\":\"preferred\"}}')")
        }),
        (None, Some(path)) => read_doc(path).map(Some),
        (None, None) => Ok(None),
    }
}

/// Reads a YAML or JSON file into a JSON value.
fn read_doc(path: &Path) -> Result<Value> {
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
async fn check(loaded: &Loaded, settings: Option<&Value>) -> Result<String> {
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

/// Observes nothing: offline evaluations have no metrics.
pub(crate) struct NoObserver;
impl EvalObserver for NoObserver {
    fn observe(&self, _: &str, _: Duration, _: bool) {}
}

/// `tmcd policy eval`.
pub async fn eval(args: &EvalArgs) -> Result<EvalReport> {
    let loaded = load(&args.module).await?;
    eval_loaded(&loaded, args).await
}

async fn eval_loaded(loaded: &Loaded, args: &EvalArgs) -> Result<EvalReport> {
    let obj = read_workload(&args.workload)?;
    let views = read_targets(&args.targets, args.all_ready)?;
    let mut placement = match &args.placement {
        Some(path) => read_placement(path)?,
        None => ClusterWorkloadPlacement::new(
            "policy-eval",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: loaded.name.clone(),
                    settings: None,
                },
                ..Default::default()
            },
        ),
    };
    placement.spec.policy.name = loaded.name.clone();
    placement.spec.transformations.clear();
    if args.settings.is_some() {
        placement.spec.policy.settings = args.settings.clone();
    }
    let api_version = obj
        .types
        .as_ref()
        .map(|t| t.api_version.clone())
        .unwrap_or_default();
    let kind = obj
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    if let Some(why) = workload::excluded(&kind, &obj) {
        bail!(
            "{}: tmcd never places this object ({why}); pick a workload it places",
            args.workload.display()
        );
    }
    // A workload that no target holds yet.
    let (req, _) = request::build(
        &placement,
        workload::summary(&api_version, &kind, &obj),
        &views,
        &Default::default(),
        Utc::now(),
    );
    let settings = placement
        .spec
        .policy
        .settings
        .clone()
        .unwrap_or(Value::Null);
    let policy_failed =
        |e: String| anyhow::anyhow!("{} ({}) failed: {e}", loaded.name, args.module.display());
    let hostrunner = HostRunner(loaded.host.clone());
    let started = Instant::now();
    let (targets, reason) = if loaded.kind.places() {
        runner::check_settings(&hostrunner, &placement)
            .await
            .map_err(|f| policy_failed(f.message.to_string()))?;
        let outcome = runner::evaluate(&hostrunner, &NoObserver, &placement, &req)
            .await
            .map_err(|f| policy_failed(f.message.to_string()))?;
        let rows = outcome
            .chosen
            .into_iter()
            .map(|(name, r)| TargetRow {
                name,
                replicas: r.replicas,
                edits: None,
            })
            .collect();
        (rows, outcome.reason)
    } else {
        loaded
            .host
            .validate_settings(&loaded.name, &settings)
            .await
            .map_err(|e| policy_failed(e.to_string()))?;
        let chosen: Vec<_> = req
            .targets
            .iter()
            .filter(|t| args.target.as_deref().is_none_or(|n| n == t.name))
            .collect();
        if chosen.is_empty() {
            bail!(
                "no target to transform for in {} (fix: check --target, the location selectors, or pass --all-ready)",
                args.targets.display()
            );
        }
        let mut rows = Vec::new();
        for target in chosen {
            let treq = TransformRequest {
                workload: req.workload.clone(),
                target: target.clone(),
                replicas: req.workload.replicas,
                settings: settings.clone(),
            };
            let edits = loaded
                .host
                .transform(&loaded.name, &treq)
                .await
                .map_err(|e| policy_failed(e.to_string()))?;
            rows.push(TargetRow {
                name: target.name.clone(),
                replicas: req.workload.replicas,
                edits: Some(edits.value),
            });
        }
        (rows, "transformation of each target's copy".to_string())
    };
    Ok(EvalReport {
        policy: loaded.name.clone(),
        kind: loaded.kind,
        workload: format!("{kind} {}/{}", req.workload.namespace, req.workload.name),
        targets,
        reason,
        micros: started.elapsed().as_micros(),
    })
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
        out.push_str(&format!("{:<20} {:<9} {}\n", "TARGET", "REPLICAS", "EDITS"));
    }
    for row in &report.targets {
        let replicas = row.replicas.map_or("-".to_string(), |r| r.to_string());
        let edits = row.edits.as_ref().map_or("-".to_string(), render_edits);
        out.push_str(&format!("{:<20} {:<9} {edits}\n", row.name, replicas));
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
async fn list(admin: &str, json: bool) -> Result<()> {
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
    let mut out = format!("policy generation {generation}\n\n");
    out.push_str(&format!(
        "{:<24} {:<24} {:<14} {:<14} {}\n",
        "NAME", "KIND", "DIGEST", "STATUS", "LAST ERROR"
    ));
    for p in policies {
        let digest: String = p
            .digest
            .as_deref()
            .unwrap_or("-")
            .chars()
            .take(12)
            .collect();
        out.push_str(&format!(
            "{:<24} {:<24} {:<14} {:<14} {}\n",
            p.name,
            p.kind.map_or("-", PolicyKind::as_str),
            digest,
            p.status.as_str(),
            p.last_error.as_deref().unwrap_or("-")
        ));
    }
    out
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
