//! The shared wasmtime engines (one per compiler tier), their linkers, and the
//! epoch ticker.

use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Linker, OptLevel, PoolingAllocationConfig,
    Strategy,
};

use crate::config::HostConfig;
use crate::sandbox::StoreState;
use crate::{poll, random};

/// One compiler tier: its engine and linker.
pub(crate) struct TierEngine {
    pub engine: Engine,
    pub linker: Linker<StoreState>,
}

impl TierEngine {
    fn new(config: &HostConfig, strategy: Strategy) -> anyhow::Result<Self> {
        let engine = build_engine(config, strategy)?;
        let linker = build_linker(&engine)?;
        Ok(Self { engine, linker })
    }
}

/// The host's engines: Cranelift always, Winch as the baseline tier with
/// tiered compilation. Their epochs tick until the engines are dropped.
pub(crate) struct Engines {
    pub optimized: TierEngine,
    pub baseline: Option<TierEngine>,
}

impl Engines {
    /// Builds the engines for `config` and starts their epoch ticker.
    pub fn new(config: &HostConfig) -> anyhow::Result<Self> {
        let optimized = TierEngine::new(config, Strategy::Cranelift)?;
        let baseline = if config.tiered {
            // Winch does not support every target; without it the host
            // compiles with Cranelift only.
            TierEngine::new(config, Strategy::Winch)
                .inspect_err(|e| {
                    tracing::warn!("no baseline compiler, tiered compilation off: {e:#}");
                })
                .ok()
        } else {
            None
        };
        let engines = Self {
            optimized,
            baseline,
        };
        spawn_epoch_ticker(&engines.all(), config.epoch_tick)?;
        Ok(engines)
    }

    /// The engines, optimizing tier first.
    pub fn all(&self) -> Vec<&Engine> {
        std::iter::once(&self.optimized.engine)
            .chain(self.baseline.as_ref().map(|t| &t.engine))
            .collect()
    }
}

/// Builds an engine: epoch interruption, fuel, pooling allocator sized for
/// `max_concurrent` evaluations (plus head-room for validations and
/// synchronous callers), compiled with `strategy` (Cranelift or Winch). The
/// two tiers' engines differ in nothing else.
fn build_engine(config: &HostConfig, strategy: Strategy) -> anyhow::Result<Engine> {
    let slots = u32::try_from(config.max_concurrent.saturating_mul(2).saturating_add(8))
        .unwrap_or(u32::MAX);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memory_size(config.memory_cap)
        .table_elements(100_000)
        .max_core_instance_size(4 << 20)
        // Reset the first 2 MiB of a heap with memset instead of madvise +
        // page faults: sized to cover what a typical evaluation touches
        // (docs/benchmarks.md, "No `memory.grow` in a typical evaluation").
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut wasm = Config::new();
    wasm.strategy(strategy)
        .epoch_interruption(true)
        .consume_fuel(config.fuel > 0)
        .cranelift_opt_level(OptLevel::Speed)
        .parallel_compilation(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if std::env::var_os("TMC_POLICY_PERFMAP").is_some() {
        // Profiling aid: /tmp/perf-<pid>.map names the guest functions for `perf report`.
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&wasm).map_err(|e| anyhow::anyhow!("cannot create the wasmtime engine: {e}"))
}

/// The linker: WASI preview 1 and nothing else, with the host's
/// `poll_oneoff` (virtual time, never waits) and `random_get` (a fixed
/// sequence whose position a snapshot resumes) instead of wasmtime-wasi's.
fn build_linker(engine: &Engine) -> anyhow::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, StoreState::wasi)
        .map_err(|e| anyhow::anyhow!("cannot link WASI preview 1: {e}"))?;
    poll::shadow(&mut linker)?;
    random::shadow(&mut linker, |state: &mut StoreState| &mut state.random)?;
    Ok(linker)
}

/// Ticks the engines' epochs every `tick` until they are all dropped.
fn spawn_epoch_ticker(engines: &[&Engine], tick: Duration) -> anyhow::Result<()> {
    let weak: Vec<_> = engines.iter().map(|e| e.weak()).collect();
    std::thread::Builder::new()
        .name("tmc-policy-epoch".into())
        .spawn(move || {
            loop {
                let mut alive = false;
                for engine in weak.iter().filter_map(|w| w.upgrade()) {
                    engine.increment_epoch();
                    alive = true;
                }
                if !alive {
                    return;
                }
                std::thread::sleep(tick);
            }
        })
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker thread: {e}"))
}
