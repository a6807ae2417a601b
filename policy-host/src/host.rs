//! [`PolicyHost`]: the public face of the engine. It wires the parts
//! together (engines and compile cache, [`Loader`], [`Registry`], hot
//! reload) and runs evaluations: on blocking threads behind a semaphore,
//! each in a fresh instance of the module serving the policy in the current
//! [`Generation`].

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use tmc_policy_sdk::abi::{
    PlacementDecision, PlacementRequest, SettingsRequest, SettingsVerdict, TransformRequest,
    TransformResult,
};

use crate::cache::ModuleCache;
use crate::codec;
use crate::config::HostConfig;
use crate::engine::Engines;
use crate::error::PolicyError;
use crate::generation::{ActivePolicy, Generation};
use crate::invoke::{self, Export, RawOutput};
use crate::loader::{Loader, ReloadReport};
use crate::module::CompiledPolicy;
use crate::registry::Registry;
use crate::watch::{self as dir_watch, WatchHandle};

/// A policy's answer and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<T> {
    pub value: T,
    /// Policy name.
    pub policy: String,
    /// SHA-256 of the module that answered.
    pub digest: String,
    /// Generation the module was taken from.
    pub generation: u64,
    /// Wall time of the call, instantiation included.
    pub duration: Duration,
    /// Fuel the call burned (0 when fuel metering is off).
    pub fuel_used: u64,
}

/// The sandboxed policy engine. Cheap to clone (all clones share one engine).
#[derive(Clone)]
pub struct PolicyHost {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<HostConfig>,
    registry: Arc<Registry>,
    /// Evaluations (and module loads) running at once.
    permits: Arc<Semaphore>,
    loader: Loader,
}

impl PolicyHost {
    /// Creates the engines (Cranelift, plus Winch with tiered compilation;
    /// pooling allocator, epoch ticker thread, tier-up thread) with an empty
    /// generation 0.
    pub fn new(config: HostConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.max_concurrent > 0,
            "policy host: max_concurrent must be at least 1"
        );
        let config = Arc::new(config);
        let cache = ModuleCache::new(Engines::new(&config)?, config.cache_dir.clone());
        let registry = Arc::new(Registry::new());
        let permits = Arc::new(Semaphore::new(config.max_concurrent));
        let loader = Loader::new(config.clone(), cache, registry.clone(), permits.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                registry,
                permits,
                loader,
            }),
        })
    }

    /// The configuration the host runs with.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The current policy set.
    pub fn generation(&self) -> Arc<Generation> {
        self.inner.registry.current()
    }

    /// Receives the generation number after every swap.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.registry.subscribe()
    }

    /// How many modules were compiled on the load path so far (cache
    /// misses, one per new digest whichever tier compiled it).
    pub fn compiled_modules(&self) -> u64 {
        self.inner.loader.cache().compiles()
    }

    /// How many compiled modules the host keeps in memory: one per digest a
    /// policy of the current generation serves, and the last few retired.
    pub fn cached_modules(&self) -> usize {
        self.inner.loader.cache().len()
    }

    /// How many baseline (Winch) modules were recompiled by Cranelift.
    pub fn optimized_modules(&self) -> u64 {
        self.inner.loader.cache().optimizations()
    }

    /// Waits until every module queued for Cranelift so far was recompiled
    /// and swapped in (or failed to be; the baseline code then keeps serving).
    /// Returns at once without tiered compilation.
    pub async fn wait_optimized(&self) {
        self.inner.loader.wait_optimized().await;
    }

    /// Loads every `*.wasm` in `dir` into a new generation and swaps it in if
    /// anything changed: what changed is compiled and validated (exports, ABI
    /// version, settings, test vectors); a refused or deleted file keeps its
    /// last good version serving.
    pub async fn load_dir(&self, dir: impl AsRef<Path>) -> Result<ReloadReport, PolicyError> {
        self.inner.loader.load_dir(dir.as_ref()).await
    }

    /// Loads `bytes` as policy `name` exactly as if they were the new content
    /// of `<name>.wasm` in the policy directory: the same checks and limits,
    /// the same errors, the same generation swap. Returns the version now
    /// serving `name`, or why the bytes were refused (the last good version
    /// of `name`, if any, keeps serving then). Its
    /// [`source`](ActivePolicy::source) is `None`; a later
    /// [`load_dir`](Self::load_dir) of a directory without `<name>.wasm`
    /// treats it as deleted.
    pub async fn load_module(
        &self,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<ActivePolicy, PolicyError> {
        self.inner.loader.load_module(name, bytes).await
    }

    /// Watches `dir` and reloads it (see [`load_dir`](Self::load_dir)) after
    /// every burst of changes to `*.wasm` files: `settle` after the burst's
    /// last event when that event says the content is final (a rename into
    /// place, a close after writing, a delete), `debounce` when a write may
    /// still be going on. Call [`load_dir`](Self::load_dir) first for the
    /// initial load. Must be called inside a tokio runtime.
    pub fn watch(&self, dir: impl AsRef<Path>) -> Result<WatchHandle, PolicyError> {
        let dir = dir.as_ref().to_path_buf();
        let config = &self.inner.config;
        let host = Arc::downgrade(&self.inner);
        let reload_dir = dir.clone();
        dir_watch::spawn(&dir, config.settle, config.debounce, move || {
            let (host, dir) = (host.upgrade(), reload_dir.clone());
            async move {
                let Some(inner) = host else {
                    return ControlFlow::Break(());
                };
                if let Err(e) = inner.loader.load_dir(&dir).await {
                    tracing::error!("policy reload failed: {e}");
                }
                ControlFlow::Continue(())
            }
        })
    }

    /// Runs placement policy `policy` on `req`; the decision passed the host rules.
    pub async fn place(
        &self,
        policy: &str,
        req: &PlacementRequest,
    ) -> Result<Evaluation<PlacementDecision>, PolicyError> {
        let (generation, active) = self.lookup(policy, Export::Place)?;
        let input = codec::encode(policy, req)?;
        let raw = self
            .call(policy, active.compiled.clone(), Export::Place, input)
            .await?;
        let decision = codec::decision(policy, req, &raw.bytes)?;
        Ok(evaluation(
            decision,
            policy,
            &active,
            generation.number,
            &raw,
        ))
    }

    /// Same as [`place`](Self::place) on the calling thread, for callers that
    /// are not in an async context (CLI, benchmarks). It bypasses the
    /// concurrency semaphore; the instance pool still bounds concurrency.
    /// Do not call it on an async runtime's worker thread: a policy that calls
    /// WASI (the Go runtime does) would panic there; use `spawn_blocking`.
    pub fn place_blocking(
        &self,
        policy: &str,
        req: &PlacementRequest,
    ) -> Result<Evaluation<PlacementDecision>, PolicyError> {
        let (generation, active) = self.lookup(policy, Export::Place)?;
        let input = codec::encode(policy, req)?;
        let raw = invoke::call(
            &self.inner.config,
            policy,
            &active.compiled,
            Export::Place,
            &input,
        )?;
        let decision = codec::decision(policy, req, &raw.bytes)?;
        Ok(evaluation(
            decision,
            policy,
            &active,
            generation.number,
            &raw,
        ))
    }

    /// Runs transformation policy `policy` on `req`; the edits passed the host rules.
    pub async fn transform(
        &self,
        policy: &str,
        req: &TransformRequest,
    ) -> Result<Evaluation<TransformResult>, PolicyError> {
        let (generation, active) = self.lookup(policy, Export::Transform)?;
        let input = codec::encode(policy, req)?;
        let raw = self
            .call(policy, active.compiled.clone(), Export::Transform, input)
            .await?;
        let result = codec::transform_result(policy, &raw.bytes)?;
        Ok(evaluation(result, policy, &active, generation.number, &raw))
    }

    /// Asks `policy` whether `settings` are valid; `Err(SettingsRejected)`
    /// carries the policy's message when they are not.
    pub async fn validate_settings(
        &self,
        policy: &str,
        settings: &serde_json::Value,
    ) -> Result<(), PolicyError> {
        let (_, active) = self.lookup(policy, Export::ValidateSettings)?;
        let input = codec::encode(
            policy,
            &SettingsRequest {
                settings: settings.clone(),
            },
        )?;
        let raw = self
            .call(
                policy,
                active.compiled.clone(),
                Export::ValidateSettings,
                input,
            )
            .await?;
        let verdict: SettingsVerdict = codec::decode(policy, Export::ValidateSettings, &raw.bytes)?;
        if verdict.valid {
            Ok(())
        } else {
            Err(PolicyError::SettingsRejected {
                policy: policy.into(),
                message: verdict.message,
            })
        }
    }

    /// The current generation and the version serving `policy` in it, which
    /// must export `export`.
    fn lookup(
        &self,
        policy: &str,
        export: Export,
    ) -> Result<(Arc<Generation>, ActivePolicy), PolicyError> {
        let generation = self.generation();
        let active =
            generation
                .active(policy)
                .cloned()
                .ok_or_else(|| PolicyError::UnknownPolicy {
                    policy: policy.into(),
                })?;
        let (ok, wanted) = match export {
            Export::Place => (active.kind.places(), "placement"),
            Export::Transform => (active.kind.transforms(), "transformation"),
            _ => (true, ""),
        };
        if !ok {
            return Err(PolicyError::WrongKind {
                policy: policy.into(),
                wanted,
                export: export.name(),
            });
        }
        Ok((generation, active))
    }

    /// Runs one call on a blocking thread once a permit is free.
    async fn call(
        &self,
        policy: &str,
        compiled: Arc<CompiledPolicy>,
        export: Export,
        input: Vec<u8>,
    ) -> Result<RawOutput, PolicyError> {
        let internal = |message: String| PolicyError::Internal {
            policy: policy.into(),
            message,
        };
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| internal(format!("evaluation semaphore closed: {e}")))?;
        let config = self.inner.config.clone();
        let name = policy.to_string();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            invoke::call(&config, &name, &compiled, export, &input)
        })
        .await
        .map_err(|e| internal(format!("evaluation thread failed: {e}")))?
    }
}

fn evaluation<T>(
    value: T,
    policy: &str,
    active: &ActivePolicy,
    generation: u64,
    raw: &RawOutput,
) -> Evaluation<T> {
    Evaluation {
        value,
        policy: policy.into(),
        digest: active.digest.clone(),
        generation,
        duration: raw.duration,
        fuel_used: raw.fuel_used,
    }
}
