//! Building blocks most placement policies share: which targets are eligible
//! and how to split replicas evenly.

use crate::abi::{Placement, PlacementRequest, Target};

impl Target {
    /// Ready and schedulable: the target may receive new placements.
    pub fn is_eligible(&self) -> bool {
        self.ready && self.schedulable
    }
}

impl Placement {
    /// True when `target` matches one of the location selectors (every target
    /// does when there are none).
    pub fn admits(&self, target: &Target) -> bool {
        self.location_selectors.is_empty()
            || self
                .location_selectors
                .iter()
                .any(|s| s.matches(&target.labels))
    }
}

impl PlacementRequest {
    /// Eligible targets the placement admits, in request order (by name).
    pub fn eligible_targets(&self) -> Vec<&Target> {
        self.targets
            .iter()
            .filter(|t| t.is_eligible() && self.placement.admits(t))
            .collect()
    }
}

/// Splits `n` replicas over `k` targets: `n / k` each, the first `n % k` get
/// one more. `k == 0` yields an empty split.
pub fn even_split(n: u32, k: usize) -> Vec<u32> {
    let Ok(k) = u32::try_from(k) else {
        return Vec::new();
    };
    if k == 0 {
        return Vec::new();
    }
    let (base, extra) = (n / k, n % k);
    (0..k).map(|i| base + u32::from(i < extra)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{LabelSelector, StringMap};

    fn target(name: &str, region: &str, ready: bool, schedulable: bool) -> Target {
        let labels: StringMap = [("region".to_string(), region.to_string())].into();
        Target {
            name: name.into(),
            labels,
            ready,
            schedulable,
            ..Default::default()
        }
    }

    #[test]
    fn even_split_gives_extras_to_the_first() {
        assert_eq!(even_split(5, 2), [3, 2]);
        assert_eq!(even_split(1, 3), [1, 0, 0]);
        assert_eq!(even_split(0, 2), [0, 0]);
        assert!(even_split(4, 0).is_empty());
    }

    #[test]
    fn eligible_targets_are_ready_schedulable_and_admitted() {
        let mut req = PlacementRequest {
            targets: vec![
                target("a", "west", true, true),
                target("b", "west", false, true),
                target("c", "west", true, false),
                target("d", "east", true, true),
            ],
            ..Default::default()
        };
        let names = |req: &PlacementRequest| -> Vec<String> {
            req.eligible_targets()
                .iter()
                .map(|t| t.name.clone())
                .collect()
        };
        assert_eq!(names(&req), ["a", "d"]);
        req.placement.location_selectors = vec![LabelSelector {
            match_labels: [("region".to_string(), "east".to_string())].into(),
            ..Default::default()
        }];
        assert_eq!(names(&req), ["d"]);
    }
}
