//! Virtual time of one evaluation: both clocks start at fixed readings and
//! advance only when the guest sleeps (`poll_oneoff`), by exactly the time it
//! asked for, without waiting. Same input, same readings: still deterministic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Wall clock at the start of every evaluation: 2024-01-01T00:00:00Z.
pub(crate) const WALL_START_NS: u64 = 1_704_067_200 * 1_000_000_000;

/// Monotonic clock at the start of every evaluation: a fixed non-zero reading
/// (the Go runtime aborts on a monotonic clock of 0).
pub(crate) const MONOTONIC_START_NS: u64 = 1_000_000_000;

/// Nanoseconds the guest slept so far, shared by the store's WASI clocks and
/// the host's `poll_oneoff`.
#[derive(Debug, Clone, Default)]
pub(crate) struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    /// A clock that has already advanced by `slept_ns` (where a snapshot's
    /// `_initialize` left it).
    pub fn after(slept_ns: u64) -> Self {
        Self(Arc::new(AtomicU64::new(slept_ns)))
    }

    /// Monotonic reading now, in nanoseconds.
    pub fn monotonic_ns(&self) -> u64 {
        MONOTONIC_START_NS.saturating_add(self.slept_ns())
    }

    /// Wall-clock reading now, in nanoseconds since the Unix epoch.
    pub fn wall_ns(&self) -> u64 {
        WALL_START_NS.saturating_add(self.slept_ns())
    }

    /// Total virtual time slept.
    pub fn slept_ns(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves both clocks forward by `ns` (saturating).
    pub fn advance(&self, ns: u64) {
        let slept = self.slept_ns().saturating_add(ns);
        self.0.store(slept, Ordering::Relaxed);
    }

    /// The WASI wall clock reading this virtual time.
    pub fn wall(&self) -> impl HostWallClock + use<> {
        WallClock(self.clone())
    }

    /// The WASI monotonic clock reading this virtual time.
    pub fn monotonic(&self) -> impl HostMonotonicClock + use<> {
        MonotonicClock(self.clone())
    }
}

struct WallClock(VirtualClock);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.wall_ns())
    }
}

struct MonotonicClock(VirtualClock);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.monotonic_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_start_fixed_and_move_only_by_what_was_slept() {
        let clock = VirtualClock::default();
        let (wall, mono) = (clock.wall(), clock.monotonic());
        assert_eq!(wall.now(), Duration::from_secs(1_704_067_200));
        assert_eq!(mono.now(), MONOTONIC_START_NS);
        clock.advance(10_000_000_000);
        assert_eq!(wall.now(), Duration::from_secs(1_704_067_210));
        assert_eq!(mono.now(), MONOTONIC_START_NS + 10_000_000_000);
        clock.advance(u64::MAX);
        assert_eq!(mono.now(), u64::MAX, "saturates instead of wrapping");
    }
}
