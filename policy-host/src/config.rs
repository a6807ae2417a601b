//! Limits and knobs of the policy host.

use std::path::PathBuf;
use std::time::Duration;

/// Host configuration; [`HostConfig::default`] gives the documented defaults
/// (ABI section 4).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Wall-clock deadline of one evaluation (instantiation included), and
    /// of `_initialize` when a snapshot is taken at load.
    pub deadline: Duration,
    /// Wall-clock budget of loading one module: every guest call of the
    /// load (`_initialize` for its snapshot, then ABI version, default
    /// settings, each test vector) must end within `deadline` and all of
    /// them together within this.
    pub load_budget: Duration,
    /// Epoch tick period: the deadline's granularity.
    pub epoch_tick: Duration,
    /// Fuel given to one evaluation (or to `_initialize` when a snapshot is
    /// taken); 0 turns fuel metering off (the deadline alone then bounds a
    /// runaway policy).
    pub fuel: u64,
    /// Largest linear memory a policy may grow to, in bytes.
    pub memory_cap: usize,
    /// Largest input the host sends, in bytes.
    pub input_cap: usize,
    /// Largest output the host accepts, in bytes.
    pub output_cap: usize,
    /// Largest captured stdout (and, separately, stderr) per evaluation, in bytes.
    pub stdio_cap: usize,
    /// Evaluations running at once; more callers wait.
    pub max_concurrent: usize,
    /// Quiet time before a reload after a file event of a write that may
    /// still be going on (file created, data written); editors and copy tools
    /// that write a file in several steps get this long to finish.
    pub debounce: Duration,
    /// Quiet time before a reload after an event saying a file's content is
    /// final (renamed into place, closed after writing, deleted): coalesces a
    /// burst of such events (several files deployed at once).
    pub settle: Duration,
    /// Tiered compilation: a module never seen before is compiled with Winch
    /// (the baseline compiler: much faster to compile, slower code; figures
    /// in docs/benchmarks.md, "Hot reload") so its generation becomes active
    /// quickly; Cranelift then recompiles it in the
    /// background and, once the optimized code passed the same validation,
    /// it replaces the baseline code (same digest, same behaviour, same
    /// generation number). `false`: Cranelift only.
    pub tiered: bool,
    /// Directory for compiled modules (`Module::serialize`), keyed by module
    /// digest and engine configuration, and for the pre-initialized
    /// snapshots of modules with `_initialize`, keyed by module digest,
    /// snapshot format and the limits above that `_initialize` runs under;
    /// `None` keeps the cache in memory only.
    pub cache_dir: Option<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            deadline: Duration::from_millis(100),
            load_budget: Duration::from_secs(10),
            epoch_tick: Duration::from_millis(1),
            // Far above what the example policies burn (Rust and Go figures
            // in docs/benchmarks.md) and about a deadline's worth of guest
            // code: a deterministic cut-off that does not depend on how busy
            // the host is.
            fuel: 1_000_000_000,
            memory_cap: 64 << 20,
            input_cap: 4 << 20,
            output_cap: 1 << 20,
            stdio_cap: 64 << 10,
            max_concurrent: 2 * cores,
            debounce: Duration::from_millis(50),
            settle: Duration::from_millis(5),
            tiered: true,
            cache_dir: None,
        }
    }
}

impl HostConfig {
    /// `deadline` expressed in epoch ticks (at least one).
    pub(crate) fn ticks(&self, deadline: Duration) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        u64::try_from(deadline.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX)
            .max(1)
    }
}
