//! Holding status reports back while the process that runs the syncer has
//! more urgent writes for the same control plane. In tmcd the push syncers
//! wait while placement decisions are being written: under a burst of new
//! workloads every decision reaches the workspace before the status
//! bookkeeping, instead of queueing behind it at a CPU-bound kcp.

use std::time::Duration;

/// Asked before a report that can wait: the first report of a new copy, or a
/// change of the copy's `.status` alone. Reports of a new apply, generation
/// or error are never held.
pub trait ReportGate: Send + Sync {
    /// True while such reports should wait.
    fn hold(&self) -> bool;
    /// The longest one report waits, so that statuses never starve under a
    /// steady stream of urgent writes (zero: reports never wait).
    fn max_hold(&self) -> Duration;
}

/// How often a held report looks at the gate again: long enough that
/// thousands of held reports cost their syncer little while they wait.
pub const GATE_RECHECK: Duration = Duration::from_secs(1);
