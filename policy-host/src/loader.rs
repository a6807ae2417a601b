//! Building new generations: read what changed, compile it (through the
//! cache), validate it, keep the last good version of anything refused or
//! deleted, then publish the result atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Semaphore;

use crate::cache::ModuleCache;
use crate::config::HostConfig;
use crate::error::PolicyError;
use crate::generation::{ActivePolicy, Generation, PolicyEntry, PolicyStatus};
use crate::module::{self, CompiledPolicy, Tier};
use crate::registry::Registry;
use crate::tier::{self, TierUp};
use crate::validate::{LoadBudget, validate};

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

/// What loading a name's new bytes gave.
enum Outcome {
    /// Same digest as the version serving: nothing compiled.
    Unchanged(ActivePolicy),
    Loaded(ActivePolicy),
    Refused(PolicyError),
}

/// Admits modules into new generations of `registry`. Compilation and
/// validation run on blocking threads, each holding one of `permits` (shared
/// with evaluations, so loads and evaluations together stay within the
/// engines' instance pool).
pub(crate) struct Loader {
    config: Arc<HostConfig>,
    cache: Arc<ModuleCache>,
    registry: Arc<Registry>,
    permits: Arc<Semaphore>,
    tier_up: TierUp,
}

impl Loader {
    /// A loader compiling with `cache`; starts the tier-up worker when the
    /// cache has a baseline tier.
    pub fn new(
        config: Arc<HostConfig>,
        cache: ModuleCache,
        registry: Arc<Registry>,
        permits: Arc<Semaphore>,
    ) -> anyhow::Result<Self> {
        let cache = Arc::new(cache);
        let tier_up = TierUp::start(config.clone(), &cache, &registry)?;
        Ok(Self {
            config,
            cache,
            registry,
            permits,
            tier_up,
        })
    }

    /// The compiled-module cache.
    pub fn cache(&self) -> &ModuleCache {
        &self.cache
    }

    /// Waits until every module queued for Cranelift so far is done.
    pub async fn wait_optimized(&self) {
        self.tier_up.wait_idle().await;
    }

    /// Loads every policy file of `dir` into a new generation and publishes
    /// it if anything changed. A name whose file disappeared keeps serving
    /// its last good version.
    pub async fn load_dir(&self, dir: &Path) -> Result<ReloadReport, PolicyError> {
        let change = self.registry.lock().await;
        let files = scan(dir)?;
        let current = change.current();
        let mut next = BTreeMap::new();
        let mut report = ReloadReport::default();

        for (name, path) in &files {
            let bytes = tokio::fs::read(path).await.map_err(|e| PolicyError::Io {
                policy: name.clone(),
                path: path.display().to_string(),
                message: e.to_string(),
            });
            let previous = current.get(name);
            let outcome = self.load(name, Some(path), bytes, previous).await;
            next.insert(name.clone(), entry(name, &outcome, previous));
            match outcome {
                Outcome::Unchanged(_) => report.unchanged.push(name.clone()),
                Outcome::Loaded(_) => report.loaded.push(name.clone()),
                Outcome::Refused(error) => report.refused.push((name.clone(), error.to_string())),
            }
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
        let published = change.publish(next);
        self.forget_unserved(&change.current());
        report.swapped = published.is_some();
        report.generation = published.unwrap_or(current.number);
        if report.swapped {
            tracing::info!(
                generation = report.generation,
                loaded = ?report.loaded,
                refused = report.refused.len(),
                deleted = ?report.deleted,
                "policy generation swapped"
            );
        }
        Ok(report)
    }

    /// Loads `bytes` as policy `name`, exactly as if they were the new
    /// content of `<name>.wasm` in the policy directory (same checks, same
    /// errors), and publishes the generation that results. Other names are
    /// left as they are.
    pub async fn load_module(
        &self,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<ActivePolicy, PolicyError> {
        let change = self.registry.lock().await;
        let current = change.current();
        let previous = current.get(name);
        let outcome = self.load(name, None, Ok(bytes), previous).await;
        let mut next = current.policies.clone();
        next.insert(name.to_string(), entry(name, &outcome, previous));
        if let Some(generation) = change.publish(next) {
            tracing::info!(generation, policy = name, "policy generation swapped");
        }
        self.forget_unserved(&change.current());
        match outcome {
            Outcome::Unchanged(active) | Outcome::Loaded(active) => Ok(active),
            Outcome::Refused(error) => Err(error),
        }
    }

    /// Forgets the compiled code that no policy of `generation` serves, but
    /// for the last few versions retired: every reload brings new versions,
    /// and the cache would otherwise keep each version ever loaded for as
    /// long as tmcd runs.
    fn forget_unserved(&self, generation: &Generation) {
        let serving: std::collections::HashSet<&str> = generation
            .policies
            .values()
            .filter_map(|entry| entry.active.as_ref())
            .map(|active| active.digest.as_str())
            .collect();
        self.cache.keep_serving(|digest| serving.contains(digest));
    }

    /// Loads `bytes` (read from `source`, if from a file) as the new content
    /// of `name`, whose entry was `previous`.
    async fn load(
        &self,
        name: &str,
        source: Option<&Path>,
        bytes: Result<Vec<u8>, PolicyError>,
        previous: Option<&PolicyEntry>,
    ) -> Outcome {
        let last_good = previous.and_then(|e| e.active.as_ref());
        let origin = source.map_or_else(|| "(bytes)".to_string(), |p| p.display().to_string());
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(error) => return refused(name, &origin, error, previous),
        };
        let digest = module::digest(&bytes);
        if let Some(active) = last_good.filter(|a| a.digest == digest) {
            return Outcome::Unchanged(ActivePolicy {
                source: source.map(Path::to_path_buf),
                ..active.clone()
            });
        }
        match self.admit(name, digest, bytes).await {
            Ok(compiled) => {
                tracing::info!(policy = name, file = %origin, digest = %compiled.digest, kind = %compiled.kind, "policy loaded");
                Outcome::Loaded(ActivePolicy {
                    digest: compiled.digest.clone(),
                    kind: compiled.kind,
                    source: source.map(Path::to_path_buf),
                    loaded_at: SystemTime::now(),
                    compiled,
                })
            }
            Err(error) => refused(name, &origin, error, previous),
        }
    }

    /// Compiles (or finds in the cache) and validates one module (its
    /// snapshot, for a module with `_initialize`; both within one load
    /// budget); baseline code is queued for Cranelift.
    async fn admit(
        &self,
        name: &str,
        digest: String,
        bytes: Vec<u8>,
    ) -> Result<Arc<CompiledPolicy>, PolicyError> {
        let internal = |message: String| PolicyError::Internal {
            policy: name.into(),
            message,
        };
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| internal(format!("evaluation semaphore closed: {e}")))?;
        let (config, cache) = (self.config.clone(), self.cache.clone());
        let owned = name.to_string();
        let (compiled, bytes) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let budget = LoadBudget::start(&config);
            let compiled = cache.load(&owned, &digest, &bytes, &budget)?;
            validate(&budget, &owned, &compiled)?;
            Ok::<_, PolicyError>((compiled, bytes))
        })
        .await
        .map_err(|e| internal(format!("load thread failed: {e}")))??;
        if compiled.tier == Tier::Baseline {
            self.tier_up.queue(tier::Job {
                name: name.into(),
                digest: compiled.digest.clone(),
                bytes,
            });
        }
        Ok(compiled)
    }
}

/// Logs a refusal (once per distinct error) and returns it.
fn refused(
    name: &str,
    origin: &str,
    error: PolicyError,
    previous: Option<&PolicyEntry>,
) -> Outcome {
    let message = error.to_string();
    if previous.and_then(|p| p.last_error.as_ref()) != Some(&message) {
        let status = refused_status(previous);
        tracing::error!(policy = name, file = %origin, %status, "policy refused: {message}");
    }
    Outcome::Refused(error)
}

/// The status of a name whose new content was refused.
fn refused_status(previous: Option<&PolicyEntry>) -> PolicyStatus {
    if previous.is_some_and(|p| p.active.is_some()) {
        PolicyStatus::UpdateRefused
    } else {
        PolicyStatus::Refused
    }
}

/// The entry of `name` after `outcome`: refused content keeps `previous`'s
/// last good version serving.
fn entry(name: &str, outcome: &Outcome, previous: Option<&PolicyEntry>) -> PolicyEntry {
    match outcome {
        Outcome::Unchanged(active) | Outcome::Loaded(active) => PolicyEntry {
            name: name.into(),
            status: PolicyStatus::Active,
            last_error: None,
            active: Some(active.clone()),
        },
        Outcome::Refused(error) => PolicyEntry {
            name: name.into(),
            status: refused_status(previous),
            last_error: Some(error.to_string()),
            active: previous.and_then(|e| e.active.clone()),
        },
    }
}
