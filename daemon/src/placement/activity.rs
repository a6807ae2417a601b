//! Whether placement decisions are being written: the writes that can wait
//! (the push syncers' status reports, the aggregated statuses) wait behind
//! them, so that under a burst of new workloads the control plane serves the
//! decisions, which put workloads on clusters, before the bookkeeping.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tmc_syncer::ReportGate;
use tmc_syncer::gate::GATE_RECHECK;

/// After the last decision write, how long the writes that can wait still
/// wait: the gap between two decisions of one burst is shorter than this.
const QUIET: Duration = Duration::from_millis(250);

/// Decision writes in flight and the end of the last one.
#[derive(Debug, Default)]
pub struct DecisionActivity {
    in_flight: AtomicUsize,
    last_done: Mutex<Option<Instant>>,
    /// The longest one waiting write waits (`[sync] status_hold_max_seconds`).
    max_hold: Duration,
}

impl DecisionActivity {
    /// Activity whose waiting writes wait at most `max_hold` each (zero: never).
    pub fn new(max_hold: Duration) -> Self {
        Self {
            max_hold,
            ..Self::default()
        }
    }

    /// Marks a decision write as in flight until the guard drops.
    pub fn writing(&self) -> DecisionWrite<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        DecisionWrite(self)
    }

    /// True while a decision is being written or one ended less than
    /// [`QUIET`] ago.
    pub fn busy(&self) -> bool {
        self.busy_at(Instant::now())
    }

    fn busy_at(&self, now: Instant) -> bool {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let last = *self
            .last_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.is_some_and(|at| now.saturating_duration_since(at) < QUIET)
    }

    /// Waits until no decision is being written, at most `max_hold`.
    pub async fn quiet(&self) {
        let started = Instant::now();
        while started.elapsed() < self.max_hold && self.busy() {
            tokio::time::sleep(GATE_RECHECK).await;
        }
    }
}

impl ReportGate for DecisionActivity {
    fn hold(&self) -> bool {
        self.busy()
    }
    fn max_hold(&self) -> Duration {
        self.max_hold
    }
}

/// A decision write in flight (see [`DecisionActivity::writing`]).
pub struct DecisionWrite<'a>(&'a DecisionActivity);

impl Drop for DecisionWrite<'_> {
    fn drop(&mut self) {
        *self
            .0
            .last_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_while_writing_and_for_a_moment_after() {
        let activity = DecisionActivity::new(Duration::from_secs(30));
        assert!(!activity.busy(), "idle at first");
        let write = activity.writing();
        assert!(activity.busy());
        drop(write);
        assert!(activity.busy(), "just ended");
        assert!(!activity.busy_at(Instant::now() + QUIET), "quiet again");
    }

    #[tokio::test]
    async fn a_zero_bound_never_waits() {
        let activity = DecisionActivity::new(Duration::ZERO);
        let _write = activity.writing();
        assert_eq!(activity.max_hold(), Duration::ZERO);
        tokio::time::timeout(Duration::from_millis(100), activity.quiet())
            .await
            .expect("quiet() returns at once");
    }
}
