//! Compiled-module cache keyed by the SHA-256 of the module bytes: in memory
//! always, and optionally on disk (`Module::serialize` of the optimized code)
//! keyed by digest and engine configuration, so a module seen before is never
//! compiled again.
//!
//! With tiered compilation a digest first gets Winch code (fast to compile);
//! [`ModuleCache::optimize`] later replaces it with Cranelift code.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::engine::{Engines, TierEngine};
use crate::error::PolicyError;
use crate::module::{self, CompiledPolicy, Tier};

/// Versions no policy serves any more that stay compiled in memory.
pub const RETIRED_KEPT: usize = 8;

/// What the cache holds for a digest.
#[derive(Clone)]
enum Entry {
    Compiled(Tier, Module),
    /// The compiler's message for broken bytes.
    Broken(String),
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
    /// exports and pre-links it under `name`. A miss compiles with the
    /// baseline tier when there is one (and Cranelift when Winch refuses the
    /// module, e.g. a wasm feature Winch lacks), else with Cranelift.
    pub fn load(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Arc<CompiledPolicy>, PolicyError> {
        let cached = self.lock().get(digest).cloned();
        let entry = match cached {
            Some(entry) => entry,
            None => {
                let entry = self.compile_or_read(name, digest, bytes);
                self.lock().insert(digest.to_string(), entry.clone());
                entry
            }
        };
        match entry {
            Entry::Compiled(tier, module) => self.prepare(name, module, digest, tier),
            Entry::Broken(message) => Err(PolicyError::Compile {
                policy: name.into(),
                message,
            }),
        }
    }

    /// Cranelift code for `digest`: from the cache if it has it, else compiled
    /// (and written to the disk cache) and remembered.
    pub fn optimize(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Arc<CompiledPolicy>, PolicyError> {
        if let Some(Entry::Compiled(Tier::Optimized, module)) = self.lock().get(digest).cloned() {
            return self.prepare(name, module, digest, Tier::Optimized);
        }
        self.optimizations.fetch_add(1, Ordering::Relaxed);
        let module =
            self.cranelift(name, digest, bytes)
                .map_err(|message| PolicyError::Compile {
                    policy: name.into(),
                    message,
                })?;
        self.lock().insert(
            digest.to_string(),
            Entry::Compiled(Tier::Optimized, module.clone()),
        );
        self.prepare(name, module, digest, Tier::Optimized)
    }

    fn prepare(
        &self,
        name: &str,
        module: Module,
        digest: &str,
        tier: Tier,
    ) -> Result<Arc<CompiledPolicy>, PolicyError> {
        let linker = match (tier, &self.baseline) {
            (Tier::Baseline, Some(baseline)) => &baseline.linker,
            _ => &self.optimized.linker,
        };
        module::prepare(name, module, digest.to_string(), tier, linker)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned map is still a valid map: entries are inserted whole.
        self.modules.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn disk_file(&self, digest: &str) -> Option<PathBuf> {
        self.disk
            .as_ref()
            .map(|dir| dir.join(format!("{digest}-{}.cwasm", self.engine_key)))
    }

    fn compile_or_read(&self, name: &str, digest: &str, bytes: &[u8]) -> Entry {
        if let Some(file) = self.disk_file(digest)
            && file.exists()
        {
            // SAFETY: the file was written by `Module::serialize` of an engine
            // with the same wasmtime version and configuration (both are in its
            // name), under a directory the host owns.
            match unsafe { Module::deserialize_file(&self.optimized.engine, &file) } {
                Ok(module) => return Entry::Compiled(Tier::Optimized, module),
                Err(e) => tracing::warn!(
                    policy = name,
                    file = %file.display(),
                    "ignoring unreadable compiled-module cache entry: {e}"
                ),
            }
        }
        self.compiles.fetch_add(1, Ordering::Relaxed);
        if let Some(baseline) = &self.baseline {
            match Module::new(&baseline.engine, bytes) {
                Ok(module) => return Entry::Compiled(Tier::Baseline, module),
                Err(e) => tracing::debug!(
                    policy = name,
                    "Winch cannot compile the module ({e:#}); trying Cranelift"
                ),
            }
        }
        match self.cranelift(name, digest, bytes) {
            Ok(module) => Entry::Compiled(Tier::Optimized, module),
            Err(message) => Entry::Broken(message),
        }
    }

    fn cranelift(&self, name: &str, digest: &str, bytes: &[u8]) -> Result<Module, String> {
        let module = Module::new(&self.optimized.engine, bytes).map_err(|e| format!("{e:#}"))?;
        if let Some(file) = self.disk_file(digest) {
            write_cache_file(&module, &file, name);
        }
        Ok(module)
    }
}

fn write_cache_file(module: &Module, file: &Path, name: &str) {
    let result = module
        .serialize()
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            let tmp = file.with_extension("cwasm.tmp");
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, file).map_err(|e| e.to_string())
        });
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
