//! The per-evaluation store: a deterministic, empty WASI p1 context with
//! captured stdio and virtual clocks, and a memory limiter that remembers what
//! it refused.

use wasmtime::ResourceLimiter;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{ClosedInputStream, MemoryOutputPipe};
use wasmtime_wasi::{Deterministic, WasiCtxBuilder};

use crate::clock::VirtualClock;

/// Data of one evaluation's `Store`.
///
/// The WASI context (and its stdout/stderr pipes) is built on the guest's
/// first WASI call, not per store: a Rust policy that never prints, reads the
/// clock or asks for random bytes during an evaluation never pays for it.
pub(crate) struct StoreState {
    wasi: Option<WasiP1Ctx>,
    clock: Option<VirtualClock>,
    pub limiter: MemoryCap,
    stdio: Option<(MemoryOutputPipe, MemoryOutputPipe)>,
    stdio_cap: usize,
}

impl StoreState {
    /// An empty sandbox: no files, env, args or network; stdin at end of
    /// file; virtual clocks; deterministic random; stdout/stderr captured up
    /// to `stdio_cap` bytes.
    pub fn new(memory_cap: usize, stdio_cap: usize) -> Self {
        Self {
            wasi: None,
            clock: None,
            limiter: MemoryCap {
                cap: memory_cap,
                refused: None,
            },
            stdio: None,
            stdio_cap,
        }
    }

    /// The store's virtual time (see [`crate::clock`]), created on first use.
    pub fn clock(&mut self) -> &VirtualClock {
        self.clock.get_or_insert_with(VirtualClock::default)
    }

    /// The WASI context, built on first use.
    pub fn wasi(&mut self) -> &mut WasiP1Ctx {
        let stdio_cap = self.stdio_cap;
        let clock = self.clock.get_or_insert_with(VirtualClock::default);
        let stdio = &mut self.stdio;
        self.wasi.get_or_insert_with(|| {
            let stdout = MemoryOutputPipe::new(stdio_cap);
            let stderr = MemoryOutputPipe::new(stdio_cap);
            *stdio = Some((stdout.clone(), stderr.clone()));
            WasiCtxBuilder::new()
                .stdin(ClosedInputStream)
                .stdout(stdout)
                .stderr(stderr)
                .wall_clock(clock.wall())
                .monotonic_clock(clock.monotonic())
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
