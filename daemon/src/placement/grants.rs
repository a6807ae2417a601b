//! Which SyncTargets a tenant workspace may place on, in export mode: the
//! targets a [`SyncTargetGrant`] naming the workspace's logical cluster
//! selects. A workspace no grant names gets none. Pure functions over the
//! watched grants; tmcd filters each workload's candidate targets with
//! [`Grants::allows`] and reports a placement that selects ungranted targets
//! in its `TargetsGranted` condition ([`Grants::verdict`]).

use std::collections::BTreeMap;

use tmc_api::crd::{ClusterWorkloadPlacement, SyncTargetGrant};

use super::limits::Limits;
use super::selector::{selects, to_abi};
use super::targets::TargetView;

/// The grants of the inventory workspace, as watched.
pub struct Grants<'g> {
    grants: &'g [std::sync::Arc<SyncTargetGrant>],
}

/// What a placement of one workspace selects, split by its grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantVerdict {
    /// The workspace's logical cluster.
    pub workspace: String,
    /// Selected targets granted to it.
    pub granted: Vec<String>,
    /// Selected targets not granted to it: never chosen for its workloads.
    pub refused: Vec<String>,
}

impl<'g> Grants<'g> {
    /// The grants `grants` (a store's state).
    pub fn new(grants: &'g [std::sync::Arc<SyncTargetGrant>]) -> Self {
        Self { grants }
    }

    /// The grants giving `workspace` the target `labels` describe.
    fn granting<'s>(
        &'s self,
        workspace: &'s str,
        labels: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'g SyncTargetGrant> + 's {
        self.grants.iter().map(AsRef::as_ref).filter(move |grant| {
            grant.metadata.deletion_timestamp.is_none()
                && grant.spec.workspaces.iter().any(|w| w == workspace)
                && selects(grant.spec.target_selector.as_ref(), labels)
        })
    }

    /// Whether `workspace` may place on the target `labels` describe.
    pub fn allows(&self, workspace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.granting(workspace, labels).next().is_some()
    }

    /// The limits of `workspace` on the target `labels` describe: the most
    /// permissive of the grants giving it the target (none when none does).
    pub fn limits(&self, workspace: &str, labels: &BTreeMap<String, String>) -> Limits {
        Limits::most_permissive(self.granting(workspace, labels).map(|g| g.spec.limits))
    }

    /// The targets of `views` that `placement`'s location selectors select
    /// (all when it has none), split into those granted to `workspace` and
    /// those refused.
    pub fn verdict(
        &self,
        workspace: &str,
        placement: &ClusterWorkloadPlacement,
        views: &[TargetView],
    ) -> GrantVerdict {
        let location: Vec<_> = placement
            .spec
            .location_selectors
            .iter()
            .map(to_abi)
            .collect();
        let mut verdict = GrantVerdict {
            workspace: workspace.to_owned(),
            granted: Vec::new(),
            refused: Vec::new(),
        };
        let mut names: Vec<&TargetView> = views.iter().collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        names.dedup_by(|a, b| a.name == b.name);
        for view in names {
            if !location.is_empty() && !location.iter().any(|s| s.matches(&view.labels)) {
                continue;
            }
            if self.allows(workspace, &view.labels) {
                verdict.granted.push(view.name.clone());
            } else {
                verdict.refused.push(view.name.clone());
            }
        }
        verdict
    }
}

/// The targets of `views` a workload stored under `workspace` (its logical
/// cluster, see `tmc_api::tenancy::store_cluster`) may be placed on: all of
/// them for one workspace (`grants` is `None`), those granted to its workspace
/// in export mode, none for an object that names no workspace there. The
/// controller, `tmcd explain` and `tmcd policy diff` filter with it.
pub fn granted_views(
    grants: Option<&[std::sync::Arc<SyncTargetGrant>]>,
    workspace: Option<&str>,
    mut views: Vec<TargetView>,
) -> Vec<TargetView> {
    let Some(grants) = grants else {
        return views;
    };
    let Some(workspace) = workspace else {
        return Vec::new();
    };
    let grants = Grants::new(grants);
    views.retain(|v| grants.allows(workspace, &v.labels));
    views
}

/// The limited targets of `views` for the workloads of `workspace` (see
/// [`Grants::limits`]): none for one workspace (`grants` is `None`).
pub fn limits_on(
    grants: Option<&[std::sync::Arc<SyncTargetGrant>]>,
    workspace: Option<&str>,
    views: &[TargetView],
) -> BTreeMap<String, Limits> {
    let (Some(grants), Some(workspace)) = (grants, workspace) else {
        return BTreeMap::new();
    };
    let grants = Grants::new(grants);
    views
        .iter()
        .map(|v| (v.name.clone(), grants.limits(workspace, &v.labels)))
        .filter(|(_, l)| !l.is_unlimited())
        .collect()
}

impl GrantVerdict {
    /// `(ok, reason, message)` of the placement's `TargetsGranted` condition.
    pub fn condition(&self) -> (bool, &'static str, String) {
        if self.refused.is_empty() {
            return (
                true,
                "Granted",
                format!(
                    "every SyncTarget the placement selects is granted to this workspace ({})",
                    self.granted.len()
                ),
            );
        }
        (
            false,
            "NotGranted",
            format!(
                "not granted to this workspace, so never chosen: {} (fix: the operator adds logical cluster {} to a SyncTargetGrant selecting them in the inventory workspace)",
                self.refused.join(", "),
                self.workspace
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use tmc_api::crd::{
        ClusterWorkloadPlacementSpec, PolicyRef, SyncTarget, SyncTargetGrantSpec, SyncTargetSpec,
    };

    use super::*;

    fn grant(name: &str, workspaces: &[&str], region: Option<&str>) -> Arc<SyncTargetGrant> {
        Arc::new(SyncTargetGrant::new(
            name,
            SyncTargetGrantSpec {
                workspaces: workspaces.iter().map(|w| (*w).to_owned()).collect(),
                target_selector: region.map(|r| LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "topology.kubernetes.io/region".to_owned(),
                        r.to_owned(),
                    )])),
                    ..Default::default()
                }),
                limits: None,
            },
        ))
    }

    fn view(name: &str, region: &str) -> TargetView {
        let mut target = SyncTarget::new(name, SyncTargetSpec::default());
        target.metadata.labels = Some(BTreeMap::from([(
            "topology.kubernetes.io/region".to_owned(),
            region.to_owned(),
        )]));
        TargetView::of(
            &target,
            chrono::Utc::now(),
            std::time::Duration::from_secs(30),
        )
    }

    fn placement(region: Option<&str>) -> ClusterWorkloadPlacement {
        ClusterWorkloadPlacement::new(
            "web",
            ClusterWorkloadPlacementSpec {
                location_selectors: region
                    .map(|r| LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            "topology.kubernetes.io/region".to_owned(),
                            r.to_owned(),
                        )])),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                policy: PolicyRef {
                    name: "p".into(),
                    settings: None,
                },
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_workspace_gets_the_targets_its_grants_select_and_no_other() {
        let grants = [
            grant("a-west", &["a1"], Some("west")),
            grant("b-all", &["b2"], None),
        ];
        let grants = Grants::new(&grants);
        let (west, east) = (view("west", "west"), view("east", "east"));
        assert!(grants.allows("a1", &west.labels));
        assert!(!grants.allows("a1", &east.labels));
        assert!(grants.allows("b2", &west.labels) && grants.allows("b2", &east.labels));
        assert!(!grants.allows("c3", &west.labels), "no grant: no target");
        assert!(!Grants::new(&[]).allows("a1", &west.labels));
    }

    #[test]
    fn a_workspace_gets_the_limits_of_the_grants_giving_it_the_target() {
        let limited = |name, region, workloads| {
            let mut g = (*grant(name, &["a1"], region)).clone();
            g.spec.limits = Some(tmc_api::crd::GrantLimits {
                workloads_per_target: Some(workloads),
                replicas_per_target: None,
            });
            Arc::new(g)
        };
        let grants = [
            limited("a-west", Some("west"), 2),
            limited("a-all", None, 1),
        ];
        let grants = Grants::new(&grants);
        let (west, east) = (view("west", "west"), view("east", "east"));
        assert_eq!(
            grants.limits("a1", &west.labels).workloads,
            Some(2),
            "the most permissive"
        );
        assert_eq!(grants.limits("a1", &east.labels).workloads, Some(1));
        assert!(
            grants.limits("b2", &west.labels).is_unlimited(),
            "no grant, no limits"
        );
    }

    #[test]
    fn a_grant_being_deleted_grants_nothing() {
        let mut deleting = (*grant("a-all", &["a1"], None)).clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let grants = [Arc::new(deleting)];
        assert!(!Grants::new(&grants).allows("a1", &view("west", "west").labels));
    }

    #[test]
    fn the_verdict_names_the_selected_targets_that_are_refused() {
        let grants = [grant("a-west", &["a1"], Some("west"))];
        let grants = Grants::new(&grants);
        let views = [view("west", "west"), view("east", "east")];
        let all = grants.verdict("a1", &placement(None), &views);
        assert_eq!(all.granted, ["west"]);
        assert_eq!(all.refused, ["east"]);
        let (ok, reason, message) = all.condition();
        assert!(!ok);
        assert_eq!(reason, "NotGranted");
        assert!(message.contains("east") && message.contains("a1") && message.contains("fix:"));
        let west_only = grants.verdict("a1", &placement(Some("west")), &views);
        assert!(west_only.refused.is_empty());
        assert!(west_only.condition().0);
        let east_only = grants.verdict("a1", &placement(Some("east")), &views);
        assert_eq!((east_only.granted.len(), east_only.refused.len()), (0, 1));
    }
}
