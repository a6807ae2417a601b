//! The per-evaluation store: a deterministic, empty WASI p1 context with
//! captured stdio, and a memory limiter that remembers what it refused.

use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// Frozen wall clock: 2024-01-01T00:00:00Z.
const FROZEN_UNIX_SECS: u64 = 1_704_067_200;

/// Data of one evaluation's `Store`.
///
/// The WASI context (and its stdout/stderr pipes) is built on the guest's
/// first WASI call, not per store: a Rust policy that never prints, reads the
/// clock or asks for random bytes during an evaluation never pays for it.
pub(crate) struct StoreState {
    wasi: Option<WasiP1Ctx>,
    pub limiter: MemoryCap,
    stdio: Option<(MemoryOutputPipe, MemoryOutputPipe)>,
    stdio_cap: usize,
}

impl StoreState {
    /// An empty sandbox: no files, env, args or network; frozen clocks,
    /// deterministic random; stdout/stderr captured up to `stdio_cap` bytes.
    pub fn new(memory_cap: usize, stdio_cap: usize) -> Self {
        Self {
            wasi: None,
            limiter: MemoryCap {
                cap: memory_cap,
                refused: None,
            },
            stdio: None,
            stdio_cap,
        }
    }

    /// The WASI context, built on first use.
    pub fn wasi(&mut self) -> &mut WasiP1Ctx {
        let stdio_cap = self.stdio_cap;
        let stdio = &mut self.stdio;
        self.wasi.get_or_insert_with(|| {
            let stdout = MemoryOutputPipe::new(stdio_cap);
            let stderr = MemoryOutputPipe::new(stdio_cap);
            *stdio = Some((stdout.clone(), stderr.clone()));
            WasiCtxBuilder::new()
                .stdout(stdout)
                .stderr(stderr)
                .wall_clock(FrozenWallClock)
                .monotonic_clock(FrozenMonotonicClock)
                .secure_random(Deterministic::new(SEED.to_vec()))
                .insecure_random(Deterministic::new(SEED.to_vec()))
                .insecure_random_seed(0x746d_635f_7365_6564)
                .build_p1()
        })
    }

    /// What the guest wrote to stdout and stderr (empty when it never did).
    pub fn stdio(&self) -> [(&'static str, Vec<u8>); 2] {
        match &self.stdio {
            Some((out, err)) => [
                ("stdout", out.contents().to_vec()),
                ("stderr", err.contents().to_vec()),
            ],
            None => [("stdout", Vec::new()), ("stderr", Vec::new())],
        }
    }
}

/// 256 fixed pseudo-random bytes (splitmix64 from a constant seed).
static SEED: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut state: u64 = 0x746d_6370_6f6c_6963;
    let mut out = Vec::with_capacity(256);
    while out.len() < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
});

struct FrozenWallClock;

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(FROZEN_UNIX_SECS)
    }
}

struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    /// A fixed non-zero reading: the Go runtime aborts on a monotonic clock of 0.
    fn now(&self) -> u64 {
        1_000_000_000
    }
}

/// Caps linear memory and records the first growth it refused, so a guest
/// that dies after a refused `memory.grow` is reported as a memory-cap breach.
pub(crate) struct MemoryCap {
    cap: usize,
    pub refused: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.refused.get_or_insert(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
