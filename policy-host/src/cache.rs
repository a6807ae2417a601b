//! Compiled-module cache keyed by the SHA-256 of the module bytes: in memory
//! always, and optionally on disk (`Module::serialize`) keyed by digest and
//! engine configuration, so a module seen before is never compiled twice.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Linker, Module};

use crate::error::PolicyError;
use crate::module::{self, CompiledPolicy};
use crate::sandbox::StoreState;

pub(crate) struct ModuleCache {
    engine: Engine,
    linker: Linker<StoreState>,
    disk: Option<PathBuf>,
    engine_key: String,
    /// digest -> compiled module, or the compiler's message for broken bytes.
    modules: Mutex<HashMap<String, Result<Module, String>>>,
    compiles: AtomicU64,
}

impl ModuleCache {
    pub fn new(engine: Engine, linker: Linker<StoreState>, disk: Option<PathBuf>) -> Self {
        let engine_key = engine_key(&engine);
        Self {
            engine,
            linker,
            disk,
            engine_key,
            modules: Mutex::new(HashMap::new()),
            compiles: AtomicU64::new(0),
        }
    }

    /// How many times Cranelift ran (cache misses), for tests and metrics.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// Returns the module for `bytes`, compiling only on a cache miss, then
    /// checks its exports and pre-links it under `name`.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<CompiledPolicy>, PolicyError> {
        let digest = module::digest(bytes);
        let cached = self.lock().get(&digest).cloned();
        let compiled = match cached {
            Some(result) => result,
            None => {
                let result = self.compile_or_read(name, &digest, bytes);
                self.lock().insert(digest.clone(), result.clone());
                result
            }
        };
        let module = compiled.map_err(|message| PolicyError::Compile {
            policy: name.into(),
            message,
        })?;
        module::prepare(name, module, digest, &self.linker)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Result<Module, String>>> {
        // A poisoned map is still a valid map: entries are inserted whole.
        self.modules.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn compile_or_read(&self, name: &str, digest: &str, bytes: &[u8]) -> Result<Module, String> {
        let file = self
            .disk
            .as_ref()
            .map(|dir| dir.join(format!("{digest}-{}.cwasm", self.engine_key)));
        if let Some(file) = &file
            && file.exists()
        {
            // SAFETY: the file was written by `Module::serialize` of an engine
            // with the same wasmtime version and configuration (both are in its
            // name), under a directory the host owns.
            match unsafe { Module::deserialize_file(&self.engine, file) } {
                Ok(module) => return Ok(module),
                Err(e) => tracing::warn!(
                    policy = name,
                    file = %file.display(),
                    "ignoring unreadable compiled-module cache entry: {e}"
                ),
            }
        }
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let module = Module::new(&self.engine, bytes).map_err(|e| format!("{e:#}"))?;
        if let Some(file) = &file {
            write_cache_file(&module, file, name);
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
