//! The per-evaluation store: a deterministic, empty WASI p1 context with
//! captured stdio and virtual clocks, and a memory limiter that remembers what
//! it refused.

use wasmtime::ResourceLimiter;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{ClosedInputStream, MemoryOutputPipe};
use wasmtime_wasi::{Deterministic, WasiCtxBuilder};

use crate::clock::VirtualClock;
use crate::random::{RandomStream, SEED};

/// Data of one evaluation's `Store`.
///
/// The WASI context (and its stdout/stderr pipes) is built on the guest's
/// first WASI call, not per store: a Rust policy that never prints, reads the
/// clock or asks for random bytes during an evaluation never pays for it.
pub(crate) struct StoreState {
    wasi: Option<WasiP1Ctx>,
    clock: Option<VirtualClock>,
    /// Virtual time slept before this store's first instruction (see [`Resume`]).
    slept_before: u64,
    /// The guest's position in the fixed random sequence (host `random_get`).
    pub random: RandomStream,
    pub limiter: MemoryCap,
    stdio: Option<(MemoryOutputPipe, MemoryOutputPipe)>,
    stdio_cap: usize,
}

impl StoreState {
    /// An empty sandbox: no files, env, args or network; stdin at end of
    /// file; virtual clocks; deterministic random; stdout/stderr captured up
    /// to `stdio_cap` bytes. Clocks and random bytes go on from `resume`
    /// (where a snapshot's `_initialize` left them; the start for others).
    pub fn new(memory_cap: usize, stdio_cap: usize, resume: Resume) -> Self {
        Self {
            wasi: None,
            clock: None,
            slept_before: resume.slept_ns,
            random: RandomStream::at(resume.random_position),
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
        let slept = self.slept_before;
        self.clock.get_or_insert_with(|| VirtualClock::after(slept))
    }

    /// Where the guest's clocks and random bytes stand now: what a snapshot
    /// taken now must resume from.
    pub fn resume(&self) -> Resume {
        Resume {
            slept_ns: self
                .clock
                .as_ref()
                .map_or(self.slept_before, VirtualClock::slept_ns),
            random_position: self.random.position(),
        }
    }

    /// The WASI context, built on first use.
    pub fn wasi(&mut self) -> &mut WasiP1Ctx {
        let stdio_cap = self.stdio_cap;
        let slept = self.slept_before;
        let clock = self.clock.get_or_insert_with(|| VirtualClock::after(slept));
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

/// Where the guest's view of the host stood when `_initialize` returned; a
/// store evaluating a snapshot (see [`crate::snapshot`]) starts there. All zero for a module without
/// `_initialize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Resume {
    /// Virtual nanoseconds slept (both clocks had advanced this far).
    pub slept_ns: u64,
    /// Bytes of the fixed random sequence already read.
    pub random_position: u64,
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
