//! Label selectors and the choice of the placement that governs a workload.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use tmc_api::crd::ClusterWorkloadPlacement;
use tmc_policy_sdk::StringMap;
use tmc_policy_sdk::abi;

/// The Kubernetes selector in the ABI's shape (which knows how to match).
pub fn to_abi(selector: &LabelSelector) -> abi::LabelSelector {
    abi::LabelSelector {
        match_labels: selector
            .match_labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        match_expressions: selector
            .match_expressions
            .iter()
            .flatten()
            .map(|req| abi::LabelSelectorRequirement {
                key: req.key.clone(),
                operator: req.operator.clone(),
                values: req.values.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// The placement as its policy sees it: name, location selectors and preferences.
pub fn abi_placement(placement: &ClusterWorkloadPlacement) -> abi::Placement {
    let spec = &placement.spec;
    abi::Placement {
        name: placement.metadata.name.clone().unwrap_or_default(),
        location_selectors: spec.location_selectors.iter().map(to_abi).collect(),
        location_preferences: spec.location_preferences.iter().map(to_abi).collect(),
    }
}

/// The settings handed to the placement's policy (`null` when absent).
pub fn policy_settings(placement: &ClusterWorkloadPlacement) -> serde_json::Value {
    placement
        .spec
        .policy
        .settings
        .clone()
        .unwrap_or(serde_json::Value::Null)
}

/// True when `selector` (absent: everything) selects `labels`.
pub fn selects(selector: Option<&LabelSelector>, labels: &StringMap) -> bool {
    selector.is_none_or(|s| to_abi(s).matches(labels))
}

/// What a placement needs to know of a workload to decide whether it governs it.
#[derive(Debug, Clone)]
pub struct WorkloadKey<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub labels: &'a StringMap,
    /// Labels of the workload's namespace (empty for cluster-scoped objects).
    pub namespace_labels: &'a StringMap,
}

/// The key tmcd's per-placement bookkeeping (policy errors, settings
/// verdicts, moves, gauges) uses: the name, prefixed by the logical cluster in
/// export mode (see [`tmc_api::tenancy::store_key`]).
pub fn placement_key(placement: &ClusterWorkloadPlacement) -> String {
    tmc_api::tenancy::store_key(
        placement.metadata.namespace.as_deref(),
        placement.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// True when `placement` is one of `workspace`'s (its logical cluster in
/// export mode, `None` for one workspace): only a workspace's own placements
/// govern its workloads.
pub fn in_workspace(placement: &ClusterWorkloadPlacement, workspace: Option<&str>) -> bool {
    tmc_api::tenancy::store_cluster(placement.metadata.namespace.as_deref()) == workspace
}

/// True when `placement` selects the workload.
pub fn governs(placement: &ClusterWorkloadPlacement, workload: &WorkloadKey<'_>) -> bool {
    let spec = &placement.spec;
    let kind_ok = spec.resources.is_empty()
        || spec
            .resources
            .iter()
            .any(|k| k.group == workload.group && k.kind == workload.kind);
    kind_ok
        && selects(spec.namespace_selector.as_ref(), workload.namespace_labels)
        && selects(spec.workload_selector.as_ref(), workload.labels)
}

/// True when `placement` runs one of `policies`, as its placement policy or
/// as a transformation.
pub fn uses<'n>(
    placement: &ClusterWorkloadPlacement,
    mut policies: impl FnMut(&str) -> bool + 'n,
) -> bool {
    let spec = &placement.spec;
    std::iter::once(&spec.policy)
        .chain(&spec.transformations)
        .any(|p| policies(&p.name))
}

/// The placement that governs the workload: highest priority, then the
/// smallest name; placements being deleted do not count.
pub fn governing<'p>(
    placements: impl IntoIterator<Item = &'p ClusterWorkloadPlacement>,
    workload: &WorkloadKey<'_>,
) -> Option<&'p ClusterWorkloadPlacement> {
    placements
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && governs(p, workload))
        .min_by(|a, b| {
            b.spec
                .priority
                .cmp(&a.spec.priority)
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use tmc_api::crd::{ClusterWorkloadPlacementSpec, PolicyRef, WorkloadKind};

    fn labels(pairs: &[(&str, &str)]) -> StringMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn placement(
        name: &str,
        priority: i32,
        spec: ClusterWorkloadPlacementSpec,
    ) -> ClusterWorkloadPlacement {
        ClusterWorkloadPlacement::new(
            name,
            ClusterWorkloadPlacementSpec {
                priority,
                policy: PolicyRef {
                    name: "p".into(),
                    settings: None,
                },
                ..spec
            },
        )
    }

    fn sel(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: None,
        })
    }

    #[test]
    fn highest_priority_then_name_wins() {
        let all = vec![
            placement("b", 1, Default::default()),
            placement("a", 1, Default::default()),
            placement("z", 0, Default::default()),
        ];
        let empty = StringMap::new();
        let key = WorkloadKey {
            group: "apps",
            kind: "Deployment",
            labels: &empty,
            namespace_labels: &empty,
        };
        assert_eq!(
            governing(&all, &key).and_then(|p| p.metadata.name.as_deref()),
            Some("a")
        );
    }

    #[test]
    fn selectors_and_kinds_filter() {
        let by_ns = placement(
            "ns",
            5,
            ClusterWorkloadPlacementSpec {
                namespace_selector: sel(&[("team", "a")]),
                ..Default::default()
            },
        );
        let by_label = placement(
            "lbl",
            3,
            ClusterWorkloadPlacementSpec {
                workload_selector: sel(&[("app", "web")]),
                ..Default::default()
            },
        );
        let by_kind = placement(
            "kind",
            9,
            ClusterWorkloadPlacementSpec {
                resources: vec![WorkloadKind {
                    group: "".into(),
                    kind: "Service".into(),
                }],
                ..Default::default()
            },
        );
        let all = vec![by_ns, by_label, by_kind];
        let web = labels(&[("app", "web")]);
        let team_b = labels(&[("team", "b")]);
        let team_a = labels(&[("team", "a")]);
        let key = |l, n| WorkloadKey {
            group: "apps",
            kind: "Deployment",
            labels: l,
            namespace_labels: n,
        };
        assert_eq!(
            governing(&all, &key(&web, &team_b)).and_then(|p| p.metadata.name.as_deref()),
            Some("lbl")
        );
        assert_eq!(
            governing(&all, &key(&web, &team_a)).and_then(|p| p.metadata.name.as_deref()),
            Some("ns")
        );
        let other = labels(&[("app", "db")]);
        assert!(governing(&all, &key(&other, &team_b)).is_none());
        let svc = WorkloadKey {
            group: "",
            kind: "Service",
            labels: &other,
            namespace_labels: &team_b,
        };
        assert_eq!(
            governing(&all, &svc).and_then(|p| p.metadata.name.as_deref()),
            Some("kind")
        );
    }

    #[test]
    fn expressions_are_honoured() {
        let selector = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "region".into(),
                operator: "In".into(),
                values: Some(vec!["us-west".into()]),
            }]),
        };
        assert!(selects(Some(&selector), &labels(&[("region", "us-west")])));
        assert!(!selects(Some(&selector), &labels(&[("region", "us-east")])));
        assert!(selects(None, &labels(&[])));
    }
}
