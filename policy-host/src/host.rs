//! [`PolicyHost`]: the public face of the engine. Evaluations run on blocking
//! threads behind a semaphore, each in a fresh instance of the module serving
//! the policy in the current [`Generation`].

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};
use wasmtime::Strategy;

use tmc_policy_sdk::abi::{
    PlacementDecision, PlacementRequest, Response, SettingsRequest, SettingsVerdict,
    TransformRequest, TransformResult,
};
use tmc_policy_sdk::rules;

use crate::cache::{ModuleCache, TierEngine};
use crate::config::HostConfig;
use crate::engine;
use crate::error::PolicyError;
use crate::generation::{ActivePolicy, Generation};
use crate::invoke::{self, Export, RawOutput};
use crate::module::CompiledPolicy;
use crate::tier;

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
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: HostConfig,
    pub cache: ModuleCache,
    pub current: ArcSwap<Generation>,
    pub generation_tx: watch::Sender<u64>,
    pub permits: Arc<Semaphore>,
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Queue of the tier-up worker (`None` without tiered compilation).
    pub tier_jobs: Option<std::sync::mpsc::Sender<tier::Job>>,
    /// Modules queued for Cranelift and not yet done.
    pub tier_pending: watch::Sender<usize>,
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
        let tier_engine = |strategy| -> anyhow::Result<TierEngine> {
            let engine = engine::build_engine(&config, strategy)?;
            let linker = engine::build_linker(&engine)?;
            Ok(TierEngine { engine, linker })
        };
        let optimized = tier_engine(Strategy::Cranelift)?;
        let baseline = if config.tiered {
            // Winch does not support every target; without it the host
            // compiles with Cranelift only.
            tier_engine(Strategy::Winch)
                .inspect_err(|e| {
                    tracing::warn!("no baseline compiler, tiered compilation off: {e:#}");
                })
                .ok()
        } else {
            None
        };
        let tiered = baseline.is_some();
        let cache = ModuleCache::new(optimized, baseline, config.cache_dir.clone());
        engine::spawn_epoch_ticker(&cache.engines(), config.epoch_tick)?;
        let (generation_tx, _) = watch::channel(0);
        let (tier_pending, _) = watch::channel(0);
        let (tier_jobs, tier_queue) = if tiered {
            let (tx, rx) = tier::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            cache,
            current: ArcSwap::from_pointee(Generation::default()),
            generation_tx,
            reload_lock: tokio::sync::Mutex::new(()),
            tier_jobs,
            tier_pending,
        });
        if let Some(queue) = tier_queue {
            tier::spawn_worker(Arc::downgrade(&inner), queue)?;
        }
        Ok(Self { inner })
    }

    /// The configuration the host runs with.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// The current policy set.
    pub fn generation(&self) -> Arc<Generation> {
        self.inner.current.load_full()
    }

    /// Receives the generation number after every swap.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation_tx.subscribe()
    }

    /// How many modules were compiled on the load path so far (cache
    /// misses, one per new digest whichever tier compiled it).
    pub fn compiled_modules(&self) -> u64 {
        self.inner.cache.compiles()
    }

    /// How many baseline (Winch) modules were recompiled by Cranelift.
    pub fn optimized_modules(&self) -> u64 {
        self.inner.cache.optimizations()
    }

    /// Waits until every module queued for Cranelift so far was recompiled
    /// and swapped in (or failed to be; the baseline code then keeps serving).
    /// Returns at once without tiered compilation.
    pub async fn wait_optimized(&self) {
        let mut pending = self.inner.tier_pending.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// Runs placement policy `policy` on `req`; the decision passed the host rules.
    pub async fn place(
        &self,
        policy: &str,
        req: &PlacementRequest,
    ) -> Result<Evaluation<PlacementDecision>, PolicyError> {
        let (generation, active) = self.lookup(policy, Export::Place)?;
        let input = encode(policy, req)?;
        let raw = self
            .call(policy, active.compiled.clone(), Export::Place, input)
            .await?;
        let decision = check_place(policy, req, &raw)?;
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
        let input = encode(policy, req)?;
        let inner = &self.inner;
        let raw = invoke::call(
            &inner.config,
            policy,
            &active.compiled,
            Export::Place,
            &input,
        )?;
        let decision = check_place(policy, req, &raw)?;
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
        let input = encode(policy, req)?;
        let raw = self
            .call(policy, active.compiled.clone(), Export::Transform, input)
            .await?;
        let result: TransformResult = decode(policy, Export::Transform, &raw.bytes)?;
        rules::check_transform(&result).map_err(|violation| PolicyError::RuleViolation {
            policy: policy.into(),
            violation,
        })?;
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
        let input = encode(
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
        let verdict: SettingsVerdict = decode(policy, Export::ValidateSettings, &raw.bytes)?;
        if verdict.valid {
            Ok(())
        } else {
            Err(PolicyError::SettingsRejected {
                policy: policy.into(),
                message: verdict.message,
            })
        }
    }

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
    pub(crate) async fn call(
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
        let inner = self.inner.clone();
        let name = policy.to_string();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            invoke::call(&inner.config, &name, &compiled, export, &input)
        })
        .await
        .map_err(|e| internal(format!("evaluation thread failed: {e}")))?
    }
}

impl Inner {
    /// Queues a baseline module for recompilation by Cranelift.
    pub(crate) fn queue_tier_up(&self, job: tier::Job) {
        let Some(jobs) = &self.tier_jobs else { return };
        self.tier_pending.send_modify(|n| *n += 1);
        if jobs.send(job).is_err() {
            self.tier_pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

fn encode<T: serde::Serialize>(policy: &str, value: &T) -> Result<Vec<u8>, PolicyError> {
    serde_json::to_vec(value).map_err(|e| PolicyError::Internal {
        policy: policy.into(),
        message: format!("cannot serialize the input: {e}"),
    })
}

/// Decodes an output envelope into the `ok` value.
pub(crate) fn decode<T: DeserializeOwned>(
    policy: &str,
    export: Export,
    bytes: &[u8],
) -> Result<T, PolicyError> {
    match serde_json::from_slice::<Response<T>>(bytes) {
        Ok(Response::Ok(value)) => Ok(value),
        Ok(Response::Error(message)) => Err(PolicyError::Guest {
            policy: policy.into(),
            export: export.name().into(),
            message,
        }),
        Err(e) => Err(PolicyError::MalformedOutput {
            policy: policy.into(),
            export: export.name().into(),
            message: format!(
                "{e} (expected {{\"ok\": ...}} or {{\"error\": \"...\"}}; output starts {:?})",
                String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
            ),
        }),
    }
}

pub(crate) fn check_place(
    policy: &str,
    req: &PlacementRequest,
    raw: &RawOutput,
) -> Result<PlacementDecision, PolicyError> {
    let decision: PlacementDecision = decode(policy, Export::Place, &raw.bytes)?;
    rules::check_decision(req, &decision).map_err(|violation| PolicyError::RuleViolation {
        policy: policy.into(),
        violation,
    })?;
    Ok(decision)
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
