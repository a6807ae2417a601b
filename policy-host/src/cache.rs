//! Compiled-module cache keyed by the SHA-256 of the module bytes: in memory
//! always, and optionally on disk (`Module::serialize` of the optimized code)
//! keyed by digest and engine configuration, so a module seen before is never
//! compiled again. A module exporting `_initialize` is served from its
//! pre-initialized snapshot ([`crate::snapshot`]), cached under the same
//! digest in memory and on disk as `<digest>-<snapshot format>-<limits>.wasm`
//! plus that snapshot's optimized code,
//! `<digest>-<snapshot format>-<limits>-<engine>.cwasm`, where `<limits>`
//! hashes the limits `_initialize` ran under ([`snapshot::limits`]): a
//! snapshot is only reused under the limits it was taken with, so a host with
//! other limits (lowered fuel, memory or deadline) runs `_initialize` again
//! under its own.
//!
//! With tiered compilation a digest first gets Winch code (fast to compile);
//! [`ModuleCache::optimize`] later replaces it with Cranelift code.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Linker, Module};

use crate::engine::{Engines, TierEngine};
use crate::error::PolicyError;
use crate::module::{self, CompiledPolicy, Tier};
use crate::sandbox::{Resume, StoreState};
use crate::snapshot::{self, Snapshot};
use crate::validate::LoadBudget;

/// Versions no policy serves any more that stay compiled in memory.
pub const RETIRED_KEPT: usize = 8;

/// What the cache holds for a digest.
#[derive(Clone)]
enum Entry {
    Compiled(Code),
    /// The compiler's message for broken bytes.
    Broken(String),
    /// The instrumented module of a module with `_initialize` whose snapshot
    /// could not be taken (its `_initialize` failed or ran out of time): a
    /// reload of the same bytes runs `_initialize` again without compiling,
    /// as a module served as written is validated again without compiling.
    Instrumented(Tier, Module),
}

/// Compiled code for a digest: of the module as written, or of its
/// pre-initialized snapshot.
#[derive(Clone)]
struct Code {
    tier: Tier,
    module: Module,
    snapshot: Option<SnapshotCode>,
}

impl Code {
    /// Whether this code may serve the module `digest` loaded within
    /// `budget`: always for a module served as written; for a snapshot, only
    /// if it was taken under the same limits.
    fn fits(&self, digest: &str, budget: &LoadBudget<'_>) -> bool {
        self.snapshot.as_ref().is_none_or(|snapshot| {
            snapshot.key == snapshot_key(digest, &snapshot::limits(budget.config()))
        })
    }
}

#[derive(Clone)]
struct SnapshotCode {
    /// The snapshot's cache key ([`snapshot_key`]: digest, format, limits).
    key: String,
    resume: Resume,
    /// The snapshot's wasm while its code is baseline (Cranelift recompiles
    /// it); dropped with the baseline code.
    wasm: Option<Arc<[u8]>>,
}

/// Compiled modules by digest, and the engines that compile them.
pub(crate) struct ModuleCache {
    optimized: TierEngine,
    baseline: Option<TierEngine>,
    disk: Option<PathBuf>,
    engine_key: String,
    modules: Mutex<HashMap<String, Entry>>,
    /// Digests no policy serves, oldest first (see [`Self::keep_serving`]).
    retired: Mutex<VecDeque<String>>,
    compiles: AtomicU64,
    optimizations: AtomicU64,
}

impl ModuleCache {
    /// A cache compiling with `engines`; `disk` is the directory of
    /// serialized optimized code, if any.
    pub fn new(engines: Engines, disk: Option<PathBuf>) -> Self {
        let Engines {
            optimized,
            baseline,
        } = engines;
        let engine_key = engine_key(&optimized.engine);
        Self {
            optimized,
            baseline,
            disk,
            engine_key,
            modules: Mutex::new(HashMap::new()),
            retired: Mutex::new(VecDeque::new()),
            compiles: AtomicU64::new(0),
            optimizations: AtomicU64::new(0),
        }
    }

    /// True when new modules are compiled by the baseline tier first.
    pub fn tiered(&self) -> bool {
        self.baseline.is_some()
    }

    /// How many digests were compiled on the load path (cache misses), for
    /// tests and metrics.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// How many digests the cache holds in memory.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Keeps in memory every digest `serving` accepts and the
    /// [`RETIRED_KEPT`] versions most recently retired (a rollback to one of
    /// them is instant); drops the rest. The disk cache is left alone: it
    /// holds optimized code a restart may still use.
    pub fn keep_serving(&self, serving: impl Fn(&str) -> bool) {
        let mut modules = self.lock();
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.retain(|digest| !serving(digest) && modules.contains_key(digest));
        for digest in modules.keys() {
            if !serving(digest) && !retired.contains(digest) {
                retired.push_back(digest.clone());
            }
        }
        while retired.len() > RETIRED_KEPT {
            if let Some(oldest) = retired.pop_front() {
                modules.remove(&oldest);
            }
        }
    }

    /// How many baseline modules were recompiled by Cranelift.
    pub fn optimizations(&self) -> u64 {
        self.optimizations.load(Ordering::Relaxed)
    }

    /// Returns the module whose SHA-256 is `digest` (the caller hashed
    /// `bytes` already), compiling only on a cache miss, then checks its
    /// exports and pre-links it under `name`. A module exporting
    /// `_initialize` is pre-initialized first (see [`crate::snapshot`]; its
    /// `_initialize` runs within `budget`) and its snapshot compiled instead.
    /// A miss compiles with the baseline tier when there is one (and
    /// Cranelift when Winch refuses the module, e.g. a wasm feature Winch
    /// lacks), else with Cranelift.
    pub fn load(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
        budget: &LoadBudget<'_>,
    ) -> Result<Arc<CompiledPolicy>, PolicyError> {
        let cached = self.lock().get(digest).cloned();
        let built = match cached {
            Some(Entry::Compiled(code)) if code.fits(digest, budget) => Ok(code),
            Some(Entry::Broken(message)) => Err(message),
            Some(Entry::Compiled(_) | Entry::Instrumented(..)) | None => {
                let built = if snapshot::wants(bytes) {
                    self.snapshot_code(name, digest, bytes, budget)?
                } else {
                    self.plain_code(name, digest, bytes)
                };
                let entry = match &built {
                    Ok(code) => Entry::Compiled(code.clone()),
                    Err(message) => Entry::Broken(message.clone()),
                };
                self.lock().insert(digest.to_string(), entry);
                built
            }
        };
        match built {
            Ok(code) => self.prepare(name, code, digest),
            Err(message) => Err(PolicyError::Compile {
                policy: name.into(),
                message,
            }),
        }
    }

    /// Cranelift code for `digest` (of its snapshot, if it has one): from the
    /// cache if it has it, else compiled (and written to the disk cache) and
    /// remembered. `None` when the cache no longer holds `digest` (no
    /// generation serves it any more).
    pub fn optimize(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Option<Arc<CompiledPolicy>>, PolicyError> {
        let Some(Entry::Compiled(code)) = self.lock().get(digest).cloned() else {
            return Ok(None);
        };
        if code.tier == Tier::Optimized {
            return self.prepare(name, code, digest).map(Some);
        }
        self.optimizations.fetch_add(1, Ordering::Relaxed);
        let (key, wasm, snapshot) = match &code.snapshot {
            Some(snapshot) => (
                snapshot.key.clone(),
                snapshot.wasm.clone().unwrap_or_else(|| Arc::from(bytes)),
                Some(SnapshotCode {
                    key: snapshot.key.clone(),
                    resume: snapshot.resume,
                    wasm: None,
                }),
            ),
            None => (digest.to_string(), Arc::from(bytes), None),
        };
        let module =
            self.cranelift(name, Some(&key), &wasm)
                .map_err(|message| PolicyError::Compile {
                    policy: name.into(),
                    message,
                })?;
        let code = Code {
            tier: Tier::Optimized,
            module,
            snapshot,
        };
        self.lock()
            .insert(digest.to_string(), Entry::Compiled(code.clone()));
        self.prepare(name, code, digest).map(Some)
    }

    fn prepare(
        &self,
        name: &str,
        code: Code,
        digest: &str,
    ) -> Result<Arc<CompiledPolicy>, PolicyError> {
        let resume = code.snapshot.map(|s| s.resume);
        module::prepare(
            name,
            code.module,
            digest.to_string(),
            code.tier,
            self.linker(code.tier),
            resume,
        )
    }

    fn linker(&self, tier: Tier) -> &Linker<StoreState> {
        match (tier, &self.baseline) {
            (Tier::Baseline, Some(baseline)) => &baseline.linker,
            _ => &self.optimized.linker,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned map is still a valid map: entries are inserted whole.
        self.modules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The disk file of the optimized code cached under `key`.
    fn code_file(&self, key: &str) -> Option<PathBuf> {
        self.disk
            .as_ref()
            .map(|dir| dir.join(format!("{key}-{}.cwasm", self.engine_key)))
    }

    /// The disk file of the snapshot cached under `key` ([`snapshot_key`]).
    fn snapshot_file(&self, key: &str) -> Option<PathBuf> {
        self.disk
            .as_ref()
            .map(|dir| dir.join(format!("{key}.wasm")))
    }

    /// The code of the module as written: from the disk cache, or compiled;
    /// `Err` is the compiler's message for broken bytes.
    fn plain_code(&self, name: &str, digest: &str, bytes: &[u8]) -> Result<Code, String> {
        if let Some(module) = self.read_code(name, digest) {
            return Ok(Code {
                tier: Tier::Optimized,
                module,
                snapshot: None,
            });
        }
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let (tier, module) = self.compile(name, Some(digest), bytes)?;
        Ok(Code {
            tier,
            module,
            snapshot: None,
        })
    }

    /// The code of the module's snapshot: the snapshot from the disk cache
    /// or taken now (within `budget`), its code from the disk cache or
    /// compiled. A module wasmtime-wizer cannot snapshot gets its plain code.
    /// When `_initialize` fails, the instrumented module's code stays cached
    /// ([`Entry::Instrumented`]) for the next attempt.
    fn snapshot_code(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
        budget: &LoadBudget<'_>,
    ) -> Result<Result<Code, String>, PolicyError> {
        let limits = snapshot::limits(budget.config());
        let key = snapshot_key(digest, &limits);
        let snapshot = match self.read_snapshot(name, digest, &limits, &key) {
            Some(snapshot) => snapshot,
            None => {
                let Some(instrumented) = snapshot::instrument(name, bytes) else {
                    return Ok(self.plain_code(name, digest, bytes));
                };
                // Instrumenting is deterministic: code compiled from an
                // earlier instrumentation of the same bytes fits this one.
                let compiled = match self.lock().get(digest) {
                    Some(Entry::Instrumented(tier, module)) => Ok((*tier, module.clone())),
                    _ => self.compile(name, None, &instrumented.wasm),
                };
                let (tier, module) = compiled.map_err(|message| PolicyError::Compile {
                    policy: name.into(),
                    message,
                })?;
                let taken = module::prepare(
                    name,
                    module.clone(),
                    digest.to_string(),
                    tier,
                    self.linker(tier),
                    None,
                )
                .and_then(|policy| instrumented.take(budget, name, digest, &policy));
                let snapshot = match taken {
                    Ok(snapshot) => snapshot,
                    Err(e) => {
                        self.lock()
                            .insert(digest.to_string(), Entry::Instrumented(tier, module));
                        return Err(e);
                    }
                };
                if let Some(file) = self.snapshot_file(&key) {
                    write_file(&file, &snapshot.bytes, name);
                }
                snapshot
            }
        };
        if let Some(module) = self.read_code(name, &key) {
            return Ok(Ok(Code {
                tier: Tier::Optimized,
                module,
                snapshot: Some(SnapshotCode {
                    key,
                    resume: snapshot.resume,
                    wasm: None,
                }),
            }));
        }
        self.compiles.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .compile(name, Some(&key), &snapshot.bytes)
            .map(|(tier, module)| Code {
                tier,
                module,
                snapshot: Some(SnapshotCode {
                    key: key.clone(),
                    resume: snapshot.resume,
                    wasm: (tier == Tier::Baseline).then(|| Arc::from(snapshot.bytes)),
                }),
            }))
    }

    /// A snapshot of `digest` written by an earlier run under the same
    /// `limits` (cached under `key`), if the disk cache has one of this
    /// host's [`snapshot::FORMAT`].
    fn read_snapshot(&self, name: &str, digest: &str, limits: &str, key: &str) -> Option<Snapshot> {
        let file = self.snapshot_file(key)?;
        let bytes = std::fs::read(&file).ok()?;
        let snapshot = Snapshot::parse(digest, limits, bytes);
        if snapshot.is_none() {
            tracing::warn!(policy = name, file = %file.display(), "ignoring a snapshot cache entry that does not belong to its module");
        }
        snapshot
    }

    /// Optimized code cached on disk under `key`, if any.
    fn read_code(&self, name: &str, key: &str) -> Option<Module> {
        let file = self.code_file(key).filter(|file| file.exists())?;
        // SAFETY: the file was written by `Module::serialize` of an engine
        // with the same wasmtime version and configuration (both are in its
        // name), under a directory the host owns.
        match unsafe { Module::deserialize_file(&self.optimized.engine, &file) } {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::warn!(
                    policy = name,
                    file = %file.display(),
                    "ignoring unreadable compiled-module cache entry: {e}"
                );
                None
            }
        }
    }

    /// Compiles `bytes` with the baseline tier if there is one and it takes
    /// them, else with Cranelift (whose code is written to the disk cache
    /// under `key`, if given).
    fn compile(
        &self,
        name: &str,
        key: Option<&str>,
        bytes: &[u8],
    ) -> Result<(Tier, Module), String> {
        if let Some(baseline) = &self.baseline {
            match Module::new(&baseline.engine, bytes) {
                Ok(module) => return Ok((Tier::Baseline, module)),
                Err(e) => tracing::debug!(
                    policy = name,
                    "Winch cannot compile the module ({e:#}); trying Cranelift"
                ),
            }
        }
        self.cranelift(name, key, bytes)
            .map(|module| (Tier::Optimized, module))
    }

    fn cranelift(&self, name: &str, key: Option<&str>, bytes: &[u8]) -> Result<Module, String> {
        let module = Module::new(&self.optimized.engine, bytes).map_err(|e| format!("{e:#}"))?;
        if let Some(file) = key.and_then(|key| self.code_file(key)) {
            match module.serialize() {
                Ok(code) => write_file(&file, &code, name),
                Err(e) => {
                    tracing::warn!(policy = name, "cannot serialize the compiled module: {e}")
                }
            }
        }
        Ok(module)
    }
}

/// The cache key of the snapshot of the module `digest` taken under `limits`
/// ([`snapshot::limits`]): the original digest, the snapshot format
/// (wasmtime-wizer version included) and a hash of the limits.
fn snapshot_key(digest: &str, limits: &str) -> String {
    let limits = hex::encode(&Sha256::digest(limits.as_bytes())[..8]);
    format!("{digest}-{}-{limits}", snapshot::FORMAT)
}

/// Writes `bytes` to `file` atomically (temp file, rename).
fn write_file(file: &Path, bytes: &[u8], name: &str) {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = result {
        tracing::warn!(policy = name, file = %file.display(), "cannot write the compiled-module cache: {e}");
    }
}

/// A short key for the engine's compatibility (wasmtime version + config).
fn engine_key(engine: &Engine) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostConfig;

    /// The `good-v1` fixture with an `_initialize` running `body`.
    fn with_initialize(body: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good-v1.wat");
        let mut text = std::fs::read_to_string(&path).expect("fixture");
        let end = text.rfind(')').expect("module ends with ')'");
        text.insert_str(end, &format!("  (func (export \"_initialize\") {body})\n"));
        wat::parse_str(&text).expect("valid WAT")
    }

    fn load(
        cache: &ModuleCache,
        config: &HostConfig,
        bytes: &[u8],
    ) -> Result<Arc<CompiledPolicy>, PolicyError> {
        cache.load(
            "p",
            &module::digest(bytes),
            bytes,
            &LoadBudget::start(config),
        )
    }

    /// The instrumented module's code, if the cache keeps it for `bytes`.
    fn instrumented(cache: &ModuleCache, bytes: &[u8]) -> Option<Module> {
        match cache.lock().get(&module::digest(bytes)) {
            Some(Entry::Instrumented(_, module)) => Some(module.clone()),
            _ => None,
        }
    }

    #[test]
    fn a_failed_initialize_runs_again_on_the_next_load_without_compiling() {
        let config = HostConfig::default();
        let cache = ModuleCache::new(Engines::new(&config).expect("engines"), None);
        let bytes = with_initialize("unreachable");
        let first = load(&cache, &config, &bytes).err().expect("refused");
        assert!(first.to_string().contains("_initialize"), "{first}");
        let kept = instrumented(&cache, &bytes).expect("the instrumented code is kept");
        let second = load(&cache, &config, &bytes).err().expect("refused again");
        assert_eq!(first.to_string(), second.to_string());
        let again = instrumented(&cache, &bytes).expect("still kept");
        assert!(Module::same(&kept, &again), "not compiled again");
        assert_eq!(cache.compiles(), 0, "no snapshot was compiled");

        let good = with_initialize("nop");
        let served = load(&cache, &config, &good).expect("snapshot taken");
        assert!(served.snapshot.is_some());
        assert!(
            instrumented(&cache, &good).is_none(),
            "only the snapshot's code stays"
        );
        assert_eq!(cache.compiles(), 1);
    }

    /// An `_initialize` burning about 800,000 units of fuel (100,000 turns of
    /// a loop); the module's other exports burn a few.
    const BURN: &str = "(local $i i32) (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $l (i32.lt_u (local.get $i) (i32.const 100000))))";

    #[test]
    fn a_cached_snapshot_is_not_reused_under_lower_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loose = HostConfig {
            // Cranelift only: its code is what the disk cache holds.
            tiered: false,
            cache_dir: Some(dir.path().to_path_buf()),
            ..HostConfig::default()
        };
        let tight = HostConfig {
            fuel: 100_000,
            ..loose.clone()
        };
        let cache = |config: &HostConfig| {
            ModuleCache::new(
                Engines::new(config).expect("engines"),
                config.cache_dir.clone(),
            )
        };
        let bytes = with_initialize(BURN);
        let first = cache(&loose);
        let served = load(&first, &loose, &bytes).expect("snapshot taken");
        assert!(served.snapshot.is_some());
        let refused = |cache: &ModuleCache| {
            let err = load(cache, &tight, &bytes)
                .err()
                .expect("_initialize runs out of fuel");
            assert!(
                matches!(err, PolicyError::Fuel { .. }) && err.to_string().contains("_initialize"),
                "{err}"
            );
        };
        // Neither the snapshot in memory nor the one on disk (a restart with
        // a lowered `fuel`) stands in for running `_initialize` under them.
        refused(&first);
        refused(&cache(&tight));
        // Under the limits it was taken with, a restart reuses it from disk.
        let again = cache(&loose);
        let served = load(&again, &loose, &bytes).expect("from the disk cache");
        assert!(served.snapshot.is_some());
        assert_eq!(again.compiles(), 0, "snapshot and code read from disk");
    }
}
