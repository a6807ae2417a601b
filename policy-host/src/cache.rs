//! Compiled-module cache keyed by the SHA-256 of the module bytes: in memory
//! always, and optionally on disk (`Module::serialize` of the optimized code)
//! keyed by digest and engine configuration, so a module seen before is never
//! compiled again. A module exporting `_initialize` is served from its
//! pre-initialized snapshot ([`crate::snapshot`]), cached under the same
//! digest in memory and on disk as `<digest>-<snapshot format>.wasm` plus
//! that snapshot's optimized code, `<digest>-<snapshot format>-<engine>.cwasm`.
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
}

/// Compiled code for a digest: of the module as written, or of its
/// pre-initialized snapshot.
#[derive(Clone)]
struct Code {
    tier: Tier,
    module: Module,
    snapshot: Option<SnapshotCode>,
}

#[derive(Clone)]
struct SnapshotCode {
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
        let entry = match cached {
            Some(entry) => entry,
            None => {
                let entry = if snapshot::wants(bytes) {
                    self.snapshot_code(name, digest, bytes, budget)?
                } else {
                    self.plain_code(name, digest, bytes)
                };
                self.lock().insert(digest.to_string(), entry.clone());
                entry
            }
        };
        match entry {
            Entry::Compiled(code) => self.prepare(name, code, digest),
            Entry::Broken(message) => Err(PolicyError::Compile {
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
                snapshot_key(digest),
                snapshot.wasm.clone().unwrap_or_else(|| Arc::from(bytes)),
                Some(SnapshotCode {
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

    /// The disk file of the snapshot of the module `digest`.
    fn snapshot_file(&self, digest: &str) -> Option<PathBuf> {
        self.disk
            .as_ref()
            .map(|dir| dir.join(format!("{}.wasm", snapshot_key(digest))))
    }

    /// The code of the module as written: from the disk cache, or compiled.
    fn plain_code(&self, name: &str, digest: &str, bytes: &[u8]) -> Entry {
        if let Some(module) = self.read_code(name, digest) {
            return Entry::Compiled(Code {
                tier: Tier::Optimized,
                module,
                snapshot: None,
            });
        }
        self.compiles.fetch_add(1, Ordering::Relaxed);
        match self.compile(name, Some(digest), bytes) {
            Ok((tier, module)) => Entry::Compiled(Code {
                tier,
                module,
                snapshot: None,
            }),
            Err(message) => Entry::Broken(message),
        }
    }

    /// The code of the module's snapshot: the snapshot from the disk cache
    /// or taken now (within `budget`), its code from the disk cache or
    /// compiled. A module wasmtime-wizer cannot snapshot gets its plain code.
    fn snapshot_code(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
        budget: &LoadBudget<'_>,
    ) -> Result<Entry, PolicyError> {
        let snapshot = match self.read_snapshot(name, digest) {
            Some(snapshot) => snapshot,
            None => {
                let Some(instrumented) = snapshot::instrument(name, bytes) else {
                    return Ok(self.plain_code(name, digest, bytes));
                };
                let (tier, module) =
                    self.compile(name, None, &instrumented.wasm)
                        .map_err(|message| PolicyError::Compile {
                            policy: name.into(),
                            message,
                        })?;
                let policy = module::prepare(
                    name,
                    module,
                    digest.to_string(),
                    tier,
                    self.linker(tier),
                    None,
                )?;
                let snapshot = instrumented.take(budget, name, digest, &policy)?;
                if let Some(file) = self.snapshot_file(digest) {
                    write_file(&file, &snapshot.bytes, name);
                }
                snapshot
            }
        };
        let key = snapshot_key(digest);
        if let Some(module) = self.read_code(name, &key) {
            return Ok(Entry::Compiled(Code {
                tier: Tier::Optimized,
                module,
                snapshot: Some(SnapshotCode {
                    resume: snapshot.resume,
                    wasm: None,
                }),
            }));
        }
        self.compiles.fetch_add(1, Ordering::Relaxed);
        Ok(match self.compile(name, Some(&key), &snapshot.bytes) {
            Ok((tier, module)) => Entry::Compiled(Code {
                tier,
                module,
                snapshot: Some(SnapshotCode {
                    resume: snapshot.resume,
                    wasm: (tier == Tier::Baseline).then(|| Arc::from(snapshot.bytes)),
                }),
            }),
            Err(message) => Entry::Broken(message),
        })
    }

    /// A snapshot of `digest` written by an earlier run, if the disk cache
    /// has one of this host's [`snapshot::FORMAT`].
    fn read_snapshot(&self, name: &str, digest: &str) -> Option<Snapshot> {
        let file = self.snapshot_file(digest)?;
        let bytes = std::fs::read(&file).ok()?;
        let snapshot = Snapshot::parse(digest, bytes);
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

/// The cache key of the snapshot of the module `digest`: the original digest
/// and the snapshot format (wasmtime-wizer version included).
fn snapshot_key(digest: &str) -> String {
    format!("{digest}-{}", snapshot::FORMAT)
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
