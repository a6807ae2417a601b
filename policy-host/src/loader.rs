//! Building a new generation from a directory: compile what changed, validate
//! it (exports, ABI version, settings, test vectors), keep the last good
//! version of anything refused or deleted, then swap atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tmc_policy_sdk::abi::{
    PlacementRequest, SettingsVerdict, TestVector, TransformRequest, TransformResult,
};
use tmc_policy_sdk::{rules, vectors};

use crate::config::HostConfig;
use crate::error::PolicyError;
use crate::generation::{ActivePolicy, Generation, PolicyEntry, PolicyStatus};
use crate::host::{Inner, PolicyHost, check_place, decode};
use crate::invoke::{self, Export};
use crate::module::{self, CompiledPolicy, Tier};
use crate::tier;

/// What one reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// The generation active after the reload.
    pub generation: u64,
    /// False when nothing changed (no swap happened).
    pub swapped: bool,
    /// Names whose new content was loaded.
    pub loaded: Vec<String>,
    /// Names whose content did not change.
    pub unchanged: Vec<String>,
    /// Names whose new content was refused, with the cause.
    pub refused: Vec<(String, String)>,
    /// Names whose file disappeared (last good version kept).
    pub deleted: Vec<String>,
}

/// True for file names the host loads: `*.wasm`, not hidden (editor temp files).
pub fn is_policy_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && name.ends_with(".wasm") && name.len() > ".wasm".len()
}

fn scan(dir: &Path) -> Result<BTreeMap<String, PathBuf>, PolicyError> {
    let fail = |e: std::io::Error| PolicyError::Directory {
        path: dir.display().to_string(),
        message: format!("cannot list it: {e} (create it or fix the configured policy directory)"),
    };
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        let path = entry.map_err(fail)?.path();
        if is_policy_file(&path)
            && path.is_file()
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            files.insert(stem.to_string(), path);
        }
    }
    Ok(files)
}

impl PolicyHost {
    /// Loads every `*.wasm` in `dir` into a new generation (see the module
    /// docs) and swaps it in if anything changed.
    pub async fn load_dir(&self, dir: impl AsRef<Path>) -> Result<ReloadReport, PolicyError> {
        let dir = dir.as_ref();
        let _guard = self.inner.reload_lock.lock().await;
        let files = scan(dir)?;
        let current = self.generation();
        let mut next = BTreeMap::new();
        let mut report = ReloadReport::default();

        for (name, path) in &files {
            let previous = current.get(name);
            let entry = self.reload_one(name, path, previous, &mut report).await;
            next.insert(name.clone(), entry);
        }
        for (name, entry) in &current.policies {
            if files.contains_key(name) || entry.active.is_none() {
                continue;
            }
            if entry.status != PolicyStatus::Deleted {
                tracing::warn!(policy = %name, "policy file deleted; still serving its last good version");
            }
            report.deleted.push(name.clone());
            next.insert(
                name.clone(),
                PolicyEntry {
                    status: PolicyStatus::Deleted,
                    ..entry.clone()
                },
            );
        }

        let candidate = Generation {
            number: current.number + 1,
            policies: next,
        };
        if candidate.same_content(&current) {
            report.generation = current.number;
            return Ok(report);
        }
        report.generation = candidate.number;
        report.swapped = true;
        self.inner.current.store(Arc::new(candidate));
        self.inner.generation_tx.send_replace(report.generation);
        tracing::info!(
            generation = report.generation,
            loaded = ?report.loaded,
            refused = report.refused.len(),
            deleted = ?report.deleted,
            "policy generation swapped"
        );
        Ok(report)
    }

    async fn reload_one(
        &self,
        name: &str,
        path: &Path,
        previous: Option<&PolicyEntry>,
        report: &mut ReloadReport,
    ) -> PolicyEntry {
        let last_good = previous.and_then(|e| e.active.clone());
        let outcome = match tokio::fs::read(path).await {
            Err(e) => Err(PolicyError::Io {
                policy: name.into(),
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Ok(bytes) => {
                let digest = module::digest(&bytes);
                if let Some(active) = last_good.as_ref().filter(|a| a.digest == digest) {
                    report.unchanged.push(name.into());
                    return PolicyEntry {
                        name: name.into(),
                        status: PolicyStatus::Active,
                        last_error: None,
                        active: Some(ActivePolicy {
                            source: path.to_path_buf(),
                            ..active.clone()
                        }),
                    };
                }
                self.admit(name, digest, bytes).await
            }
        };
        match outcome {
            Ok(compiled) => {
                tracing::info!(policy = name, file = %path.display(), digest = %compiled.digest, kind = %compiled.kind, "policy loaded");
                report.loaded.push(name.into());
                PolicyEntry {
                    name: name.into(),
                    status: PolicyStatus::Active,
                    last_error: None,
                    active: Some(ActivePolicy {
                        digest: compiled.digest.clone(),
                        kind: compiled.kind,
                        source: path.to_path_buf(),
                        loaded_at: SystemTime::now(),
                        compiled,
                    }),
                }
            }
            Err(error) => {
                let message = error.to_string();
                let status = if last_good.is_some() {
                    PolicyStatus::UpdateRefused
                } else {
                    PolicyStatus::Refused
                };
                if previous.and_then(|p| p.last_error.as_ref()) != Some(&message) {
                    tracing::error!(policy = name, file = %path.display(), %status, "policy refused: {message}");
                }
                report.refused.push((name.into(), message.clone()));
                PolicyEntry {
                    name: name.into(),
                    status,
                    last_error: Some(message),
                    active: last_good,
                }
            }
        }
    }

    /// Compiles (or finds in the cache) and validates one module.
    async fn admit(
        &self,
        name: &str,
        digest: String,
        bytes: Vec<u8>,
    ) -> Result<Arc<CompiledPolicy>, PolicyError> {
        let internal = |e: tokio::task::JoinError| PolicyError::Internal {
            policy: name.into(),
            message: format!("load thread failed: {e}"),
        };
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PolicyError::Internal {
                policy: name.into(),
                message: format!("evaluation semaphore closed: {e}"),
            })?;
        let inner = self.inner.clone();
        let owned = name.to_string();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let compiled = inner.cache.load(&owned, &digest, &bytes)?;
            validate(&inner, &owned, &compiled)?;
            if compiled.tier == Tier::Baseline {
                inner.queue_tier_up(tier::Job {
                    name: owned,
                    digest,
                    bytes,
                });
            }
            Ok(compiled)
        })
        .await
        .map_err(internal)?
    }
}

/// ABI version, default settings, then the module's own test vectors; each
/// guest call within the evaluation deadline and all of them within the load
/// budget ([`HostConfig::load_budget`](crate::HostConfig::load_budget)).
pub(crate) fn validate(
    inner: &Inner,
    name: &str,
    compiled: &CompiledPolicy,
) -> Result<(), PolicyError> {
    let config = &inner.config;
    let budget = LoadBudget::start(config);
    let found = budget.run(name, |deadline| {
        invoke::abi_version(config, deadline, name, compiled)
    })?;
    if found != 1 {
        return Err(PolicyError::AbiVersion {
            policy: name.into(),
            found,
        });
    }
    let input = br#"{"settings":{}}"#;
    let raw = budget.run(name, |deadline| {
        invoke::call_within(
            config,
            deadline,
            name,
            compiled,
            Export::ValidateSettings,
            input,
        )
    })?;
    let verdict: SettingsVerdict = decode(name, Export::ValidateSettings, &raw.bytes)?;
    if !verdict.valid {
        tracing::info!(
            policy = name,
            "policy requires settings (rejects {{}}: {}); accepted",
            verdict.message
        );
    }
    if compiled.exports.test_vectors.is_some() {
        run_vectors(inner, &budget, name, compiled)?;
    }
    Ok(())
}

/// The wall-clock budget of one module's validation: each guest call gets
/// the evaluation deadline or what is left of the budget, whichever is less.
struct LoadBudget<'a> {
    config: &'a HostConfig,
    ends: Instant,
}

impl<'a> LoadBudget<'a> {
    fn start(config: &'a HostConfig) -> Self {
        Self {
            config,
            ends: Instant::now() + config.load_budget,
        }
    }

    /// Runs one guest call with its deadline; a call cut short by the
    /// budget (or started after it ran out) is a *load budget* error.
    fn run<T>(
        &self,
        name: &str,
        call: impl FnOnce(Duration) -> Result<T, PolicyError>,
    ) -> Result<T, PolicyError> {
        let left = self.ends.saturating_duration_since(Instant::now());
        let exhausted = || PolicyError::LoadBudget {
            policy: name.into(),
            budget: self.config.load_budget,
        };
        if left.is_zero() {
            return Err(exhausted());
        }
        let deadline = left.min(self.config.deadline);
        match call(deadline) {
            Err(PolicyError::Deadline { .. }) if deadline < self.config.deadline => {
                Err(exhausted())
            }
            other => other,
        }
    }
}

fn run_vectors(
    inner: &Inner,
    budget: &LoadBudget<'_>,
    name: &str,
    compiled: &CompiledPolicy,
) -> Result<(), PolicyError> {
    let config = &inner.config;
    let raw = budget.run(name, |deadline| {
        invoke::call_within(config, deadline, name, compiled, Export::TestVectors, &[])
    })?;
    let list: Vec<TestVector> = decode(name, Export::TestVectors, &raw.bytes)?;
    // A vector whose call ran out of load budget stops the load: the error
    // is kept and returned instead of the vectors' failure list.
    let out_of_budget = std::cell::RefCell::new(None);
    let guarded = |export: Export, input: &[u8]| {
        budget
            .run(name, |deadline| {
                invoke::call_within(config, deadline, name, compiled, export, input)
            })
            .inspect_err(|e| {
                if matches!(e, PolicyError::LoadBudget { .. }) {
                    out_of_budget.borrow_mut().get_or_insert_with(|| e.clone());
                }
            })
    };
    let place = |req: &PlacementRequest| {
        if !compiled.kind.places() {
            return Err("the module has no tmc_place".to_string());
        }
        let input = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        let raw = guarded(Export::Place, &input).map_err(|e| e.to_string())?;
        check_place(name, req, &raw).map_err(|e| e.to_string())
    };
    let transform = |req: &TransformRequest| {
        if !compiled.kind.transforms() {
            return Err("the module has no tmc_transform".to_string());
        }
        let input = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        let raw = guarded(Export::Transform, &input).map_err(|e| e.to_string())?;
        let result: TransformResult =
            decode(name, Export::Transform, &raw.bytes).map_err(|e| e.to_string())?;
        rules::check_transform(&result).map_err(|v| format!("rule violation: {v}"))?;
        Ok(result)
    };
    let failures = vectors::run(&list, place, transform);
    if let Some(e) = out_of_budget.into_inner() {
        return Err(e);
    }
    if failures.is_empty() {
        tracing::debug!(policy = name, vectors = list.len(), "test vectors pass");
        Ok(())
    } else {
        Err(PolicyError::TestVectors {
            policy: name.into(),
            failures: failures.join("\n"),
        })
    }
}
