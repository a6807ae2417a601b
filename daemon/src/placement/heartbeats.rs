//! Heartbeat freshness by tmcd's own clock: a SyncTarget's
//! `lastSyncerHeartbeatTime` is written with the syncer's clock, which may
//! be off by any amount; tmcd never compares it with its own time. It notes
//! *when it saw the value change* (monotonic clock) and counts the age
//! from there.
//!
//! At first sight tmcd cannot know when the value last changed: it trusts
//! it as fresh then (as client-go does for a Lease), unless the target is
//! already marked `HeartbeatStale` by tmcd: then it counts as having changed
//! one threshold before the first sight (stale, and not Ready since that
//! sight, which starts the eviction grace period) until the value changes.
//! A target that never heartbeated is never fresh.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tmc_api::crd::SyncTarget;

use super::targets::{HEARTBEAT_STALE, ready_condition};

/// What tmcd saw of one target's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The heartbeat value as written (compared, never interpreted).
    pub value: Option<String>,
    /// When tmcd saw it change (`None`: no heartbeat).
    pub changed: Option<Instant>,
}

/// `prev` updated with `value` seen at `now`; `stale_marked`: the target
/// carries tmcd's `HeartbeatStale` mark (then a first sighting counts as a
/// change `threshold` before `now`).
pub fn observe(
    prev: Option<&Seen>,
    value: Option<&str>,
    stale_marked: bool,
    threshold: Duration,
    now: Instant,
) -> Seen {
    match prev {
        Some(prev) if prev.value.as_deref() == value => prev.clone(),
        Some(_) => Seen {
            value: value.map(str::to_string),
            changed: value.map(|_| now),
        },
        None => Seen {
            value: value.map(str::to_string),
            changed: value.and_then(|_| {
                if stale_marked {
                    now.checked_sub(threshold)
                } else {
                    Some(now)
                }
            }),
        },
    }
}

/// How long ago, at `now`, the heartbeat of `seen` changed (`None`: unknown).
pub fn age(seen: &Seen, now: Instant) -> Option<Duration> {
    seen.changed.map(|at| now.saturating_duration_since(at))
}

/// The heartbeat ages of every SyncTarget tmcd watches.
pub struct Heartbeats {
    threshold: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

impl Heartbeats {
    /// No target seen yet; `threshold`: the heartbeat age after which a target is not Ready.
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            seen: Mutex::default(),
        }
    }

    /// Notes `target` as seen now (each watch event of a SyncTarget).
    pub fn observe(&self, target: &SyncTarget) {
        self.observe_at(target, Instant::now());
    }

    /// Notes `target` as seen at `now`.
    pub fn observe_at(&self, target: &SyncTarget, now: Instant) {
        let name = target.metadata.name.clone().unwrap_or_default();
        let value = heartbeat_value(target);
        let marked = ready_condition(target).is_some_and(|c| c.reason == HEARTBEAT_STALE);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let next = observe(
            seen.get(&name),
            value.as_deref(),
            marked,
            self.threshold,
            now,
        );
        seen.insert(name, next);
    }

    /// Forgets a deleted target.
    pub fn forget(&self, name: &str) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// How long ago tmcd saw the heartbeat of `name` change (`None`: never
    /// seen, or never heartbeated).
    pub fn age(&self, name: &str) -> Option<Duration> {
        self.age_at(name, Instant::now())
    }

    /// [`Heartbeats::age`] at `now`.
    pub fn age_at(&self, name: &str, now: Instant) -> Option<Duration> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .and_then(|s| age(s, now))
    }
}

/// The heartbeat as written by the syncer, as text (its content is never read as a time).
fn heartbeat_value(target: &SyncTarget) -> Option<String> {
    target
        .status
        .as_ref()?
        .last_syncer_heartbeat_time
        .as_ref()
        .map(|t| t.0.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use tmc_api::crd::{SyncTargetSpec, SyncTargetStatus};

    use crate::placement::targets::TargetView;

    const THRESHOLD: Duration = Duration::from_secs(30);
    const INTERVAL: u64 = 10;

    fn target(heartbeat: Option<i64>, stale_mark: bool) -> SyncTarget {
        let mut t = SyncTarget::new("west", SyncTargetSpec::default());
        t.status = Some(SyncTargetStatus {
            last_syncer_heartbeat_time: heartbeat
                .map(|s| Time(Timestamp::from_second(s).expect("ts"))),
            conditions: stale_mark
                .then(|| Condition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    reason: HEARTBEAT_STALE.into(),
                    message: String::new(),
                    last_transition_time: Time(Timestamp::from_second(0).expect("ts")),
                    observed_generation: None,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        });
        t
    }

    /// tmcd's wall clock now, as the syncer would stamp it with `skew`.
    fn stamp(skew: i64, offset: u64) -> i64 {
        Timestamp::now().as_second() + skew + i64::try_from(offset).expect("small")
    }

    fn ready(heartbeats: &Heartbeats, t: &SyncTarget, now: Instant) -> bool {
        let age = heartbeats.age_at("west", now);
        TargetView::with_age(t, age, chrono::Utc::now(), THRESHOLD).ready
    }

    /// A syncer whose clock is `skew` seconds off heartbeats every 10 s for a
    /// minute, then stops: Ready all along, not Ready once 30 s passed
    /// without a change, whatever the skew.
    fn heartbeating_with_skew(skew: i64) {
        let heartbeats = Heartbeats::new(THRESHOLD);
        let t0 = Instant::now();
        let mut last = target(None, false);
        for beat in 0..=6u64 {
            let now = t0 + Duration::from_secs(beat * INTERVAL);
            last = target(Some(stamp(skew, beat * INTERVAL)), false);
            heartbeats.observe_at(&last, now);
            // Between beats (also seen again by a resync: no change).
            heartbeats.observe_at(&last, now + Duration::from_secs(5));
            assert!(
                ready(&heartbeats, &last, now + Duration::from_secs(9)),
                "skew {skew}: beat {beat}"
            );
        }
        let stopped = t0 + Duration::from_secs(60);
        assert!(
            ready(&heartbeats, &last, stopped + Duration::from_secs(29)),
            "skew {skew}"
        );
        heartbeats.observe_at(&last, stopped + Duration::from_secs(29));
        assert!(
            !ready(&heartbeats, &last, stopped + Duration::from_secs(31)),
            "skew {skew}: stopped heartbeating"
        );
        let view = TargetView::with_age(
            &last,
            heartbeats.age_at("west", stopped + Duration::from_secs(31)),
            chrono::Utc::now(),
            THRESHOLD,
        );
        let since = view.not_ready_since.expect("not ready");
        let late = chrono::Utc::now() - since;
        assert!(
            (0..=2).contains(&late.num_seconds()),
            "skew {skew}: not Ready for about 1 s, by tmcd's clock: {late:?}"
        );
    }

    #[test]
    fn a_syncer_clock_an_hour_behind_is_judged_by_changes() {
        heartbeating_with_skew(-3_600);
    }

    #[test]
    fn a_syncer_clock_an_hour_ahead_is_judged_by_changes() {
        heartbeating_with_skew(3_600);
    }

    #[test]
    fn first_sight_is_trusted_unless_marked_stale_and_no_heartbeat_is_never_fresh() {
        let t0 = Instant::now() + Duration::from_secs(60);
        let secs = Duration::from_secs;
        let fresh = observe(None, Some("a"), false, THRESHOLD, t0);
        assert_eq!(age(&fresh, t0 + secs(3)), Some(secs(3)));
        let marked = observe(None, Some("a"), true, THRESHOLD, t0);
        assert_eq!(age(&marked, t0 + secs(3)), Some(secs(33)));
        let same = observe(Some(&marked), Some("a"), false, THRESHOLD, t0 + secs(4));
        assert_eq!(same, marked, "an unchanged value keeps its time");
        let moved = observe(Some(&marked), Some("b"), true, THRESHOLD, t0 + secs(4));
        assert_eq!(age(&moved, t0 + secs(5)), Some(secs(1)));
        let never = observe(None, None, false, THRESHOLD, t0);
        assert_eq!(age(&never, t0), None);
        let cleared = observe(Some(&fresh), None, false, THRESHOLD, t0 + secs(1));
        assert_eq!(age(&cleared, t0 + secs(1)), None);
    }

    #[test]
    fn a_stale_marked_target_seen_first_stays_stale_until_its_heartbeat_moves() {
        let heartbeats = Heartbeats::new(THRESHOLD);
        let t0 = Instant::now();
        let marked = target(Some(stamp(0, 0)), true);
        heartbeats.observe_at(&marked, t0);
        assert!(!ready(&heartbeats, &marked, t0));
        // Not Ready since this first sight, by tmcd's clock: the grace period starts now.
        let view = TargetView::with_age(
            &marked,
            heartbeats.age_at("west", t0),
            chrono::Utc::now(),
            THRESHOLD,
        );
        let since = chrono::Utc::now() - view.not_ready_since.expect("not ready");
        assert!(since.num_seconds() <= 1, "{since:?}");
        let moved = target(Some(stamp(0, 10)), true);
        heartbeats.observe_at(&moved, t0 + Duration::from_secs(10));
        assert!(ready(&heartbeats, &moved, t0 + Duration::from_secs(11)));
        heartbeats.forget("west");
        assert_eq!(heartbeats.age_at("west", t0), None);
    }
}
