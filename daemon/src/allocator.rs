//! tmcd's memory allocator: jemalloc (feature `jemalloc`, on by default), and what it reports.
//!
//! tmcd parses and drops a JSON object for every watch event and write reply, and keeps one cached object per
//! workload in several watch caches. Measured at 100 targets x 3,000 workloads against glibc's allocator
//! (`docs/scaling.md`): 16-22 % less CPU, a resident set 2-7 % lower (up to ~10 % while workloads move), and a
//! count of live bytes, exported as gauges, that tells what tmcd holds from what it has not given back yet.
//! A background thread gives freed pages back to the kernel while tmcd is idle.
//!
//! The binaries of this package (tmcd and the benches that run it) declare the global allocator themselves,
//! as a library must not:
//!
//! ```text
//! #[cfg(feature = "jemalloc")]
//! #[global_allocator]
//! static GLOBAL: tmc_daemon::allocator::Jemalloc = tmc_daemon::allocator::Jemalloc;
//! ```

#[cfg(feature = "jemalloc")]
pub use tikv_jemallocator::Jemalloc;

/// What the allocator holds now, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes in pages the allocator holds resident (live, free but not yet given back, and its metadata).
    pub resident: u64,
}

/// Asks jemalloc to purge freed pages from a background thread, so an idle tmcd gives memory back too.
/// Does nothing when tmcd runs on another allocator. Call once at start.
pub fn start_background_purge() {
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc: no background purge thread; freed memory is given back only on allocation");
    }
}

/// The allocator's figures now, when it is jemalloc and the process uses it as its global allocator.
pub fn stats() -> Option<MemoryStats> {
    #[cfg(feature = "jemalloc")]
    {
        // The figures are cached by jemalloc and refreshed by advancing its epoch.
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        let allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()?;
        let resident = tikv_jemalloc_ctl::stats::resident::read().ok()?;
        // A process on another global allocator still links jemalloc, which then serves no allocation.
        (allocated > 0).then_some(MemoryStats {
            allocated: allocated as u64,
            resident: resident as u64,
        })
    }
    #[cfg(not(feature = "jemalloc"))]
    None
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: Jemalloc = Jemalloc;

    #[test]
    fn the_stats_follow_a_large_allocation() {
        let before = stats().expect("jemalloc is this test binary's allocator");
        // Other test threads allocate and free meanwhile: compare with a margin well below the block.
        let (block_len, margin): (usize, u64) = (64 << 20, 8 << 20);
        let block = vec![7u8; block_len];
        let during = stats().expect("jemalloc stats");
        assert!(
            during.allocated + margin >= before.allocated + block_len as u64,
            "{before:?} -> {during:?}"
        );
        assert!(during.resident >= during.allocated, "{during:?}");
        drop(block);
        let after = stats().expect("jemalloc stats");
        assert!(
            after.allocated + block_len as u64 <= during.allocated + margin,
            "{during:?} -> {after:?}"
        );
    }
}
