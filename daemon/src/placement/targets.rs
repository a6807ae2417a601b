//! SyncTargets as placement sees them: readiness from the heartbeat, and the
//! candidates of one workload (with the eviction grace period).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tmc_api::crd::SyncTarget;
use tmc_api::resources::ResourceAmounts;
use tmc_policy_sdk::StringMap;
use tmc_policy_sdk::abi::{self, Assignment, Location};

/// Label holding a target's region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Label holding a target's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Reason of the Ready condition tmcd sets when the heartbeat is too old.
pub const HEARTBEAT_STALE: &str = "HeartbeatStale";

/// What placement needs of one SyncTarget at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetView {
    pub name: String,
    pub labels: StringMap,
    /// Heartbeat younger than the threshold and no syncer-reported failure.
    pub ready: bool,
    /// Since when the target counts as not Ready (last heartbeat + threshold).
    pub not_ready_since: Option<DateTime<Utc>>,
    /// Not cordoned and not tainted `NoSchedule`.
    pub schedulable: bool,
    /// Tainted `NoExecute`: what it holds moves away.
    pub evicting: bool,
    /// The free resources its syncer last reported (`status.capacity.available`).
    pub available: Option<ResourceAmounts>,
}

impl TargetView {
    /// The view of `target` at `now` judging the heartbeat by its own
    /// timestamp against this host's clock: only for one-shot tools that
    /// have no history (tmcd itself uses [`TargetView::with_age`] with the
    /// age it observed, see [`super::heartbeats`]).
    pub fn of(target: &SyncTarget, now: DateTime<Utc>, threshold: Duration) -> Self {
        Self::with_age(target, remote_age(target, now), now, threshold)
    }

    /// The view of `target` at `now` (this host's wall clock, only to date
    /// `not_ready_since`), given how long ago its heartbeat last changed
    /// (`heartbeat_age`, `None`: unknown) and the `threshold`.
    pub fn with_age(
        target: &SyncTarget,
        heartbeat_age: Option<Duration>,
        now: DateTime<Utc>,
        threshold: Duration,
    ) -> Self {
        let fresh = heartbeat_age.is_some_and(|age| age < threshold);
        let threshold = chrono::Duration::from_std(threshold).unwrap_or(chrono::Duration::MAX);
        // When the heartbeat last changed, on this host's clock.
        let heartbeat: Option<DateTime<Utc>> = heartbeat_age
            .and_then(|age| chrono::Duration::from_std(age).ok())
            .and_then(|age| now.checked_sub_signed(age));
        let failure =
            ready_condition(target).filter(|c| c.status == "False" && c.reason != HEARTBEAT_STALE);
        let ready = fresh && failure.is_none();
        let not_ready_since = match failure {
            _ if ready => None,
            // The syncer, alive (its heartbeat may well be fresh), reports a
            // failure such as an unreachable cluster: not Ready since the
            // condition turned False (the syncer's clock, never after now).
            // Skew only shifts when a workload is evacuated: its copy there
            // is removed only once the cluster is back.
            Some(failed) if fresh => Some(
                DateTime::from_timestamp(failed.last_transition_time.0.as_second(), 0)
                    .unwrap_or(now)
                    .min(now),
            ),
            // No fresh heartbeat: not Ready since it went stale.
            _ => Some(
                heartbeat
                    .and_then(|hb| hb.checked_add_signed(threshold))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC)
                    .min(now),
            ),
        };
        let taints = &target.spec.taints;
        Self {
            name: target.metadata.name.clone().unwrap_or_default(),
            labels: target
                .metadata
                .labels
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            ready,
            not_ready_since,
            schedulable: !target.spec.unschedulable
                && !taints.iter().any(|t| t.effect == "NoSchedule"),
            evicting: taints.iter().any(|t| t.effect == "NoExecute"),
            available: target
                .status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .map(|c| c.available),
        }
    }

    /// The view without the moment-dependent time, to tell whether placement inputs changed.
    pub fn without_time(&self) -> Self {
        Self {
            not_ready_since: None,
            ..self.clone()
        }
    }

    /// The location from the well-known labels.
    pub fn location(&self) -> Location {
        Location {
            region: self.labels.get(REGION_LABEL).cloned().unwrap_or_default(),
            zone: self.labels.get(ZONE_LABEL).cloned().unwrap_or_default(),
        }
    }
}

/// How old the heartbeat of `target` is by its timestamp and this host's
/// clock `now` (negative ages count as zero); `None` without a heartbeat.
pub fn remote_age(target: &SyncTarget, now: DateTime<Utc>) -> Option<Duration> {
    let stamp = target
        .status
        .as_ref()?
        .last_syncer_heartbeat_time
        .as_ref()?;
    let stamp = DateTime::from_timestamp(stamp.0.as_second(), 0)?;
    Some(
        now.signed_duration_since(stamp)
            .to_std()
            .unwrap_or_default(),
    )
}

/// The `Ready` condition of a target, if any.
pub fn ready_condition(
    target: &SyncTarget,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    target
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The candidates of one workload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidates {
    /// ABI targets, sorted by name.
    pub targets: Vec<abi::Target>,
    /// When the earliest grace period of a not-Ready holder ends (re-evaluate then).
    pub grace_ends_in: Option<Duration>,
    /// Not-Ready holders within their grace period: never asked to delete.
    pub in_grace: BTreeSet<String>,
    /// The targets that are no candidates, and why (`tmcd explain` shows it).
    pub dropped: BTreeMap<String, Dropped>,
}

/// Why a target is no candidate for a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// It matches none of the placement's location selectors.
    LocationMismatch,
    /// Tainted `NoExecute`: what it holds moves away.
    Evicting,
    /// Not Ready, and it does not hold the workload.
    NotReady,
    /// Cordoned or tainted `NoSchedule`, and it does not hold the workload.
    Unschedulable,
    /// It holds the workload but has not been Ready for longer than the
    /// placement's eviction grace period.
    GraceOver,
}

impl Dropped {
    /// Its name in JSON: `locationMismatch`, `evicting`, `notReady`,
    /// `unschedulable` or `graceOver`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LocationMismatch => "locationMismatch",
            Self::Evicting => "evicting",
            Self::NotReady => "notReady",
            Self::Unschedulable => "unschedulable",
            Self::GraceOver => "graceOver",
        }
    }

    /// A sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::LocationMismatch => "matches none of the placement's location selectors",
            Self::Evicting => "tainted NoExecute: its workloads move away",
            Self::NotReady => "not Ready (heartbeat stale or a syncer-reported failure)",
            Self::Unschedulable => "cordoned or tainted NoSchedule (only workloads it holds stay)",
            Self::GraceOver => "not Ready for longer than the eviction grace period",
        }
    }
}

/// Filters `views` into the candidates of a workload currently held by
/// `holders` (target name -> replicas): Ready and schedulable targets that
/// match one of `location` (empty: all); a holder stays a candidate while it
/// is cordoned, and while it is not Ready for less than `grace`. The others
/// are listed in [`Candidates::dropped`] with the reason.
pub fn candidates(
    views: &[TargetView],
    location: &[abi::LabelSelector],
    holders: &BTreeMap<String, Option<u32>>,
    grace: Duration,
    now: DateTime<Utc>,
) -> Candidates {
    let grace_c = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let mut out = Candidates::default();
    let mut names = BTreeSet::new();
    let mut sorted: Vec<&TargetView> = views.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for view in sorted {
        if !names.insert(view.name.clone()) {
            continue;
        }
        let mut reject = |why: Dropped| {
            out.dropped.insert(view.name.clone(), why);
        };
        if !location.is_empty() && !location.iter().any(|s| s.matches(&view.labels)) {
            reject(Dropped::LocationMismatch);
            continue;
        }
        let held = holders.get(&view.name);
        if view.evicting {
            reject(Dropped::Evicting);
            continue;
        }
        if held.is_none() && !view.ready {
            reject(Dropped::NotReady);
            continue;
        }
        if held.is_none() && !view.schedulable {
            reject(Dropped::Unschedulable);
            continue;
        }
        if !view.ready {
            let since = view.not_ready_since.unwrap_or(now);
            let ends = since
                .checked_add_signed(grace_c)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            if ends <= now {
                reject(Dropped::GraceOver);
                continue;
            }
            let left = (ends - now).to_std().unwrap_or_default();
            out.grace_ends_in = Some(out.grace_ends_in.map_or(left, |d| d.min(left)));
            out.in_grace.insert(view.name.clone());
        }
        out.targets.push(abi::Target {
            name: view.name.clone(),
            labels: view.labels.clone(),
            location: view.location(),
            ready: view.ready,
            schedulable: view.schedulable,
            capacity: None,
            current: held.map(|replicas| Assignment {
                replicas: *replicas,
            }),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use std::collections::BTreeMap;
    use tmc_api::crd::{SyncTargetSpec, SyncTargetStatus, Taint};

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn target(name: &str, heartbeat_age: Option<i64>) -> SyncTarget {
        let mut t = SyncTarget::new(name, SyncTargetSpec::default());
        t.metadata.labels = Some([(REGION_LABEL.to_string(), format!("r-{name}"))].into());
        t.status = Some(SyncTargetStatus {
            last_syncer_heartbeat_time: heartbeat_age.map(|age| {
                Time(
                    k8s_openapi::jiff::Timestamp::from_second(
                        (now() - chrono::Duration::seconds(age)).timestamp(),
                    )
                    .expect("ts"),
                )
            }),
            ..Default::default()
        });
        t
    }

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn the_view_carries_the_reported_free_resources() {
        let mut t = target("a", Some(5));
        assert_eq!(
            TargetView::of(&t, now(), T).available,
            None,
            "none reported"
        );
        let free = ResourceAmounts {
            cpu_millis: 1500,
            memory_bytes: 1 << 30,
            pods: 9,
        };
        t.status.as_mut().expect("status").capacity = Some(tmc_api::crd::ClusterCapacity {
            available: free,
            ..Default::default()
        });
        assert_eq!(TargetView::of(&t, now(), T).available, Some(free));
    }

    #[test]
    fn readiness_follows_heartbeat_age() {
        assert!(TargetView::of(&target("a", Some(5)), now(), T).ready);
        let stale = TargetView::of(&target("a", Some(40)), now(), T);
        assert!(!stale.ready);
        assert_eq!(
            stale.not_ready_since,
            Some(now() - chrono::Duration::seconds(10))
        );
        assert!(!TargetView::of(&target("a", None), now(), T).ready);
    }

    #[test]
    fn syncer_reported_failure_is_not_ready_but_our_stale_mark_is_overridden_by_a_fresh_heartbeat()
    {
        let mut t = target("a", Some(1));
        let cond = |reason: &str| Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::from_second(0).expect("ts")),
            observed_generation: None,
        };
        t.status.as_mut().expect("status").conditions = vec![cond(HEARTBEAT_STALE)];
        assert!(TargetView::of(&t, now(), T).ready);
        t.status.as_mut().expect("status").conditions = vec![cond("ClusterUnreachable")];
        let unreachable = TargetView::of(&t, now(), T);
        assert!(!unreachable.ready);
        // A live syncer keeps its heartbeat fresh: the grace period runs from
        // when the condition turned False, not from the heartbeat.
        assert_eq!(
            unreachable.not_ready_since,
            DateTime::from_timestamp(0, 0),
            "not Ready since the condition's transition"
        );
    }

    #[test]
    fn cordon_and_taints() {
        let mut t = target("a", Some(1));
        t.spec.unschedulable = true;
        assert!(!TargetView::of(&t, now(), T).schedulable);
        t.spec.unschedulable = false;
        t.spec.taints = vec![Taint {
            key: "k".into(),
            value: String::new(),
            effect: "NoExecute".into(),
        }];
        assert!(TargetView::of(&t, now(), T).evicting);
    }

    #[test]
    fn candidates_filter_readiness_and_keep_holders_in_grace() {
        let views: Vec<TargetView> = [
            target("a", Some(1)),
            target("b", Some(50)),
            target("c", Some(200)),
        ]
        .iter()
        .map(|t| TargetView::of(t, now(), T))
        .collect();
        let grace = Duration::from_secs(60);
        // Nobody holds it: only the Ready one.
        let c = candidates(&views, &[], &BTreeMap::new(), grace, now());
        assert_eq!(
            c.targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(c.grace_ends_in, None);
        // b (not Ready for 20 s) and c (for 170 s) hold it: b stays in grace, c is out.
        let holders: BTreeMap<String, Option<u32>> =
            [("b".to_string(), Some(2)), ("c".to_string(), Some(1))].into();
        let c = candidates(&views, &[], &holders, grace, now());
        assert_eq!(
            c.targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let b = &c.targets[1];
        assert!(!b.ready);
        assert_eq!(b.current, Some(Assignment { replicas: Some(2) }));
        assert_eq!(c.grace_ends_in, Some(Duration::from_secs(40)));
        assert_eq!(c.in_grace, ["b".to_string()].into());
        assert_eq!(
            c.dropped,
            [("c".to_string(), Dropped::GraceOver)].into(),
            "c held it but its grace period is over"
        );
        let c = candidates(&views, &[], &BTreeMap::new(), grace, now());
        assert_eq!(
            c.dropped,
            [
                ("b".to_string(), Dropped::NotReady),
                ("c".to_string(), Dropped::NotReady)
            ]
            .into()
        );
    }

    #[test]
    fn eviction_drops_even_a_holder() {
        let mut t = target("a", Some(1));
        t.spec.taints = vec![Taint {
            key: "k".into(),
            value: String::new(),
            effect: "NoExecute".into(),
        }];
        let views = [TargetView::of(&t, now(), T)];
        let c = candidates(&views, &[], &[("a".to_string(), Some(1))].into(), T, now());
        assert!(c.targets.is_empty());
        assert_eq!(c.dropped, [("a".to_string(), Dropped::Evicting)].into());
    }

    #[test]
    fn candidates_respect_location_selectors_and_cordon() {
        let mut cordoned = target("b", Some(1));
        cordoned.spec.unschedulable = true;
        let views: Vec<TargetView> = [target("a", Some(1)), cordoned]
            .iter()
            .map(|t| TargetView::of(t, now(), T))
            .collect();
        let west = abi::LabelSelector {
            match_labels: [(REGION_LABEL.to_string(), "r-a".to_string())].into(),
            ..Default::default()
        };
        let c = candidates(
            &views,
            std::slice::from_ref(&west),
            &BTreeMap::new(),
            T,
            now(),
        );
        assert_eq!(
            c.targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(c.targets[0].location.region, "r-a");
        assert_eq!(
            c.dropped,
            [("b".to_string(), Dropped::LocationMismatch)].into()
        );
        // Cordoned: no new placement, but a holder stays (unschedulable).
        let c = candidates(&views, &[], &BTreeMap::new(), T, now());
        assert_eq!(c.targets.len(), 1);
        assert_eq!(
            c.dropped,
            [("b".to_string(), Dropped::Unschedulable)].into()
        );
        let c = candidates(&views, &[], &[("b".to_string(), None)].into(), T, now());
        assert_eq!(c.targets.len(), 2);
        assert!(!c.targets[1].schedulable);
    }
}
