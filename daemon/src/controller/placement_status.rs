//! The status of each ClusterWorkloadPlacement: observed generation,
//! conditions, policy generation, how many workloads and where they went.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tmc_api::crd::{ClusterWorkloadPlacement, ClusterWorkloadPlacementStatus, TargetSummary};

use super::rollout_status;
use crate::placement::events::EventQueue;
use crate::placement::grants::{GrantVerdict, Grants};
use crate::placement::moves::StalledMove;
use crate::placement::rollout;
use crate::placement::selector::placement_key;
use crate::placement::targets::TargetView;
use crate::state::State;
use tmc_api::protocol::{self, Recorded};
use tmc_api::tenancy;

/// What tmcd observed of a placement besides its workloads.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// Its last policy error, if any.
    pub policy_error: Option<&'a str>,
    /// Whether its placement policy is in the active set.
    pub policy_loaded: bool,
    /// The generation of the active policy set.
    pub generation: u64,
    /// The stalled moves (of every placement; its own are named).
    pub stalled: &'a [StalledMove],
    /// In export mode, which targets it selects are granted to its workspace.
    pub grants: Option<&'a GrantVerdict>,
    /// In export mode, its workloads a per-tenant limit holds back (workload -> what).
    pub held_back: Option<&'a BTreeMap<String, String>>,
}

/// The status `placement` should show, given the workloads it placed
/// (`recorded` per workload) and what else tmcd observed of it.
pub fn desired<'r>(
    placement: &ClusterWorkloadPlacement,
    recorded: impl IntoIterator<Item = &'r BTreeMap<String, Recorded>>,
    observed: &Observed<'_>,
    now: Time,
) -> ClusterWorkloadPlacementStatus {
    let Observed {
        policy_error,
        policy_loaded,
        generation,
        stalled,
        grants,
        held_back,
    } = *observed;
    let name = placement.name_any();
    let mut workloads = 0u32;
    let mut per_target: BTreeMap<String, TargetSummary> = BTreeMap::new();
    for rec in recorded {
        let mine: Vec<(&String, &Recorded)> = rec
            .iter()
            .filter(|(_, r)| {
                r.holds() && r.result.as_ref().is_some_and(|res| res.placement == name)
            })
            .collect();
        if mine.is_empty() {
            continue;
        }
        workloads += 1;
        for (target, r) in mine {
            let entry = per_target
                .entry(target.clone())
                .or_insert_with(|| TargetSummary {
                    name: target.clone(),
                    ..Default::default()
                });
            entry.workloads += 1;
            entry.replicas += r.result.as_ref().and_then(|res| res.replicas).unwrap_or(0);
        }
    }
    let previous = placement.status.clone().unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: placement.metadata.generation,
        }
    };
    let policy = &placement.spec.policy.name;
    let valid = match policy_error {
        Some(err) => condition("PolicyValid", false, "PolicyFailed", err.to_string()),
        None if !policy_loaded => condition(
            "PolicyValid",
            false,
            "PolicyNotLoaded",
            format!(
                "policy {policy:?} is not in the active policy set (check the policy directory)"
            ),
        ),
        None => condition(
            "PolicyValid",
            true,
            "PolicyEvaluated",
            format!("policy {policy:?} is loaded and answers"),
        ),
    };
    let ready_ok = valid.status == "True";
    let ready = condition(
        "Ready",
        ready_ok,
        if ready_ok { "Placing" } else { "PolicyInvalid" },
        if ready_ok {
            format!("{workloads} workloads placed")
        } else {
            valid.message.clone()
        },
    );
    let key = placement_key(placement);
    let mine: Vec<String> = stalled
        .iter()
        .filter(|m| m.placement == key)
        .map(StalledMove::describe)
        .collect();
    let progressing = if mine.is_empty() {
        condition(
            "Progressing",
            true,
            "NoMoveStalled",
            "every move completes (old copies go once the new ones are available)".into(),
        )
    } else {
        condition(
            "Progressing",
            false,
            "MoveStalled",
            format!(
                "{} move(s) stalled, old copies kept: {}",
                mine.len(),
                mine.join("; ")
            ),
        )
    };
    let mut conditions = vec![ready, valid, progressing];
    if let Some(verdict) = grants {
        let (ok, reason, message) = verdict.condition();
        conditions.push(condition("TargetsGranted", ok, reason, message));
    }
    if let Some(held) = held_back {
        conditions.push(match held.iter().next() {
            None => condition(
                "LimitReached",
                false,
                "WithinLimits",
                "no workload is held back by a limit of the workspace's SyncTargetGrants".into(),
            ),
            Some((workload, what)) => condition(
                "LimitReached",
                true,
                "LimitReached",
                format!(
                    "{} workload(s) held back by a limit of the workspace's SyncTargetGrants; {workload}: {what}",
                    held.len()
                ),
            ),
        });
    }
    ClusterWorkloadPlacementStatus {
        observed_generation: placement.metadata.generation,
        conditions,
        policy_generation: Some(generation),
        workload_count: workloads,
        targets: per_target.into_values().collect(),
        rollout: None,
    }
}

/// What one workload records per target, and the workspace it is in.
#[derive(Debug, Clone)]
pub struct WorkloadRecord {
    /// Its logical cluster in export mode (see [`tenancy::store_cluster`]).
    pub workspace: Option<String>,
    pub targets: BTreeMap<String, Recorded>,
}

/// What each workload of `workloads` records, per target.
pub fn recorded(workloads: &[Store<DynamicObject>]) -> Vec<WorkloadRecord> {
    workloads
        .iter()
        .flat_map(|s| s.state())
        .map(|o| WorkloadRecord {
            workspace: tenancy::store_cluster(o.metadata.namespace.as_deref()).map(str::to_owned),
            targets: protocol::read(
                &o.metadata.labels.clone().unwrap_or_default(),
                &o.metadata.annotations.clone().unwrap_or_default(),
            ),
        })
        .collect()
}

/// Per target: how many of the workloads (`recorded`) it holds report a
/// sync error (every target that any workload names, failing or not).
pub fn sync_errors<'r>(
    recorded: impl IntoIterator<Item = &'r BTreeMap<String, Recorded>>,
) -> BTreeMap<String, usize> {
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for rec in recorded {
        for (target, r) in rec {
            let failed = r.holds() && r.status.as_ref().is_some_and(|s| s.error.is_some());
            *errors.entry(target.clone()).or_default() += usize::from(failed);
        }
    }
    errors
}

/// Rewrites every placement's status that changed, given what the workloads
/// record (`recorded`, see [`recorded`]), advancing staged rollouts (see
/// [`rollout_status`]) and publishing their Events on `events` once written.
pub async fn refresh(
    state: &State,
    client: &Client,
    placements: &Store<ClusterWorkloadPlacement>,
    recorded: &[WorkloadRecord],
    events: &EventQueue,
) {
    let runner = state.policies.as_ref();
    let generation = runner.generation();
    let policies = runner.policies();
    let all_views: Vec<TargetView> = state
        .targets
        .state()
        .iter()
        .map(|t| state.target_view(t))
        .collect();
    let loaded: Vec<String> = runner
        .policies()
        .into_iter()
        .filter(|p| p.serving)
        .map(|p| p.name)
        .collect();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let stalled = state.moves.stalled();
    let current = placements.state();
    let keys: Vec<String> = current.iter().map(|p| placement_key(p)).collect();
    // Export mode: which targets each workspace may use.
    let grant_state = state.grants.as_ref().map(|g| g.state());
    let grants = grant_state.as_deref().map(Grants::new);
    let views: Vec<TargetView> = match grants {
        Some(_) => state
            .targets
            .state()
            .iter()
            .map(|t| state.target_view(t))
            .collect(),
        None => Vec::new(),
    };
    state.settings.retain(|key| keys.iter().any(|k| k == key));
    for placement in current {
        let name = placement.name_any();
        let key = placement_key(&placement);
        let workspace = tenancy::store_cluster(placement.metadata.namespace.as_deref());
        let failed = state
            .policy_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let error = match failed {
            Some(error) => Some(error),
            None => state
                .settings
                .check(runner, &placement)
                .await
                .err()
                .map(|refused| refused.to_string()),
        };
        // Only the workloads of the placement's own workspace are its.
        let mine = recorded
            .iter()
            .filter(|w| w.workspace.as_deref() == workspace)
            .map(|w| &w.targets);
        let verdict = grants
            .as_ref()
            .zip(workspace)
            .map(|(grants, workspace)| grants.verdict(workspace, &placement, &views));
        let held_back = grants.as_ref().map(|_| {
            state
                .limit_hits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned()
                .unwrap_or_default()
        });
        let observed = Observed {
            policy_error: error.as_deref(),
            policy_loaded: loaded.contains(&placement.spec.policy.name),
            generation,
            stalled: &stalled,
            grants: verdict.as_ref(),
            held_back: held_back.as_ref(),
        };
        let mut want = desired(&placement, mine, &observed, now.clone());
        let mut notes = Vec::new();
        if placement.spec.rollout.is_some() {
            let revision = rollout::revision(&placement, &policies);
            let order = rollout_status::stage_order(
                &placement,
                &all_views,
                want.targets.iter().map(|t| &t.name),
            );
            let previous = placement.status.as_ref().and_then(|s| s.rollout.as_ref());
            (want.rollout, notes) = rollout_status::advance(
                placement.spec.rollout.as_ref(),
                previous,
                &revision,
                &order,
                |stage| {
                    let mut report = state.rollouts.report(&key, &revision, stage);
                    let placed = usize::try_from(want.workload_count).unwrap_or(usize::MAX);
                    report.missing = placed.saturating_sub(report.seen + report.behind.len());
                    report
                },
                &now,
            );
        }
        if placement.status.as_ref() == Some(&want) {
            continue;
        }
        let api: Api<ClusterWorkloadPlacement> = match state
            .workspaces
            .route(client, placement.metadata.namespace.as_deref())
        {
            Ok((client, _)) => Api::all(client),
            Err(err) => {
                tracing::warn!(placement = %key, error = %err, "not writing the placement's status");
                continue;
            }
        };
        let mut patch = json!({ "status": want });
        if want.rollout.is_none() {
            // A merge patch keeps what it does not name: clear an old rollout.
            patch["status"]["rollout"] = serde_json::Value::Null;
        }
        if let Err(err) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(placement = %key, error = %err, "writing placement status failed; retrying later");
            continue;
        }
        for note in notes {
            tracing::info!(placement = %key, reason = note.reason, "{}", note.message);
            let type_ = match note.warning {
                true => EventType::Warning,
                false => EventType::Normal,
            };
            events.publish(
                placement.object_ref(&()),
                type_,
                note.reason,
                "Rollout",
                note.message,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed<'a>(
        policy_error: Option<&'a str>,
        policy_loaded: bool,
        generation: u64,
        stalled: &'a [StalledMove],
        grants: Option<&'a GrantVerdict>,
    ) -> Observed<'a> {
        Observed {
            policy_error,
            policy_loaded,
            generation,
            stalled,
            grants,
            held_back: None,
        }
    }
    use tmc_api::crd::{ClusterWorkloadPlacementSpec, PolicyRef};
    use tmc_api::decision::{result_annotation, state_label};

    fn rec(entries: &[(&str, &str, u32)]) -> BTreeMap<String, Recorded> {
        let labels = entries
            .iter()
            .map(|(t, _, _)| (state_label(t), "Sync".to_string()))
            .collect();
        let annotations = entries
            .iter()
            .map(|(t, p, r)| {
                (
                    result_annotation(t),
                    json!({"replicas": r, "placement": p}).to_string(),
                )
            })
            .collect();
        protocol::read(&labels, &annotations)
    }

    /// Placement `web` with policy `rs`, no status yet.
    fn web_placement() -> ClusterWorkloadPlacement {
        ClusterWorkloadPlacement::new(
            "web",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: "rs".into(),
                    settings: None,
                },
                ..Default::default()
            },
        )
    }

    #[test]
    fn export_mode_says_whether_a_limit_holds_workloads_back() {
        let p = web_placement();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let none: [BTreeMap<String, Recorded>; 0] = [];
        let limit = |held: &BTreeMap<String, String>| {
            let observed = Observed {
                held_back: Some(held),
                ..observed(None, true, 1, &[], None)
            };
            let s = desired(&p, &none, &observed, now.clone());
            let c = s
                .conditions
                .into_iter()
                .find(|c| c.type_ == "LimitReached")
                .expect("condition");
            (c.status, c.reason, c.message)
        };
        let (status, reason, _) = limit(&BTreeMap::new());
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "WithinLimits")
        );
        let held = BTreeMap::from([(
            "Deployment a1|default/web2".to_string(),
            "no new copy on west: 1 of 1 workloads".to_string(),
        )]);
        let (status, reason, message) = limit(&held);
        assert_eq!((status.as_str(), reason.as_str()), ("True", "LimitReached"));
        assert!(
            message.contains("web2") && message.contains("1 of 1"),
            "{message}"
        );
        let single = desired(&p, &none, &observed(None, true, 1, &[], None), now);
        assert!(single.conditions.iter().all(|c| c.type_ != "LimitReached"));
    }

    #[test]
    fn export_mode_adds_whether_the_selected_targets_are_granted() {
        let p = web_placement();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let none: [BTreeMap<String, Recorded>; 0] = [];
        let single = desired(&p, &none, &observed(None, true, 1, &[], None), now.clone());
        assert!(
            single
                .conditions
                .iter()
                .all(|c| c.type_ != "TargetsGranted")
        );
        let refused = GrantVerdict {
            workspace: "a1".into(),
            granted: vec!["west".into()],
            refused: vec!["east".into()],
        };
        let s = desired(
            &p,
            &none,
            &observed(None, true, 1, &[], Some(&refused)),
            now.clone(),
        );
        let granted = s
            .conditions
            .iter()
            .find(|c| c.type_ == "TargetsGranted")
            .expect("condition");
        assert_eq!(
            (granted.status.as_str(), granted.reason.as_str()),
            ("False", "NotGranted")
        );
        assert!(granted.message.contains("east"), "{}", granted.message);
        let all = GrantVerdict {
            refused: vec![],
            ..refused
        };
        let s = desired(&p, &none, &observed(None, true, 1, &[], Some(&all)), now);
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == "TargetsGranted" && c.status == "True")
        );
    }

    #[test]
    fn counts_workloads_and_replicas_per_target() {
        let mut p = ClusterWorkloadPlacement::new(
            "spread",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: "rs".into(),
                    settings: None,
                },
                ..Default::default()
            },
        );
        p.metadata.generation = Some(4);
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(100).expect("ts"));
        let all = vec![
            rec(&[("west", "spread", 2), ("east", "spread", 1)]),
            rec(&[("west", "spread", 1)]),
            rec(&[("west", "other", 5)]),
        ];
        let s = desired(&p, &all, &observed(None, true, 7, &[], None), now.clone());
        assert_eq!(s.workload_count, 2);
        assert_eq!(s.policy_generation, Some(7));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(
            s.targets,
            vec![
                TargetSummary {
                    name: "east".into(),
                    workloads: 1,
                    replicas: 1
                },
                TargetSummary {
                    name: "west".into(),
                    workloads: 2,
                    replicas: 3
                },
            ]
        );
        assert!(s.conditions.iter().all(|c| c.status == "True"));
        let failed = desired(
            &p,
            &all,
            &observed(Some("policy \"rs\" failed: trap"), true, 7, &[], None),
            now.clone(),
        );
        let valid = failed
            .conditions
            .iter()
            .find(|c| c.type_ == "PolicyValid")
            .expect("cond");
        assert_eq!(
            (valid.status.as_str(), valid.message.as_str()),
            ("False", "policy \"rs\" failed: trap")
        );
        let missing = desired(&p, &all, &observed(None, false, 7, &[], None), now.clone());
        let by_type = |s: &ClusterWorkloadPlacementStatus, t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        assert_eq!(
            by_type(&missing, "Ready"),
            Some(("False".into(), "PolicyInvalid".into()))
        );
        let stalled = StalledMove {
            workload: "Deployment demo/web".into(),
            placement: "spread".into(),
            since: "2026-01-01T00:00:00Z".into(),
            waiting_on: vec![],
            keeping: vec!["east".into()],
        };
        let other = StalledMove {
            placement: "other".into(),
            ..stalled.clone()
        };
        let s = desired(
            &p,
            &all,
            &observed(None, true, 7, std::slice::from_ref(&other), None),
            now.clone(),
        );
        assert_eq!(
            by_type(&s, "Progressing"),
            Some(("True".into(), "NoMoveStalled".into()))
        );
        let s = desired(
            &p,
            &all,
            &observed(None, true, 7, &[stalled, other], None),
            now,
        );
        assert_eq!(
            by_type(&s, "Progressing"),
            Some(("False".into(), "MoveStalled".into()))
        );
        let message = &s
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .expect("cond")
            .message;
        assert!(
            message.starts_with("1 move(s) stalled") && message.contains("Deployment demo/web"),
            "{message}"
        );
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let mut p = ClusterWorkloadPlacement::new(
            "spread",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: "rs".into(),
                    settings: None,
                },
                ..Default::default()
            },
        );
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(100).expect("ts"));
        let t2 = Time(k8s_openapi::jiff::Timestamp::from_second(200).expect("ts"));
        let none: [BTreeMap<String, Recorded>; 0] = [];
        p.status = Some(desired(
            &p,
            &none,
            &observed(None, true, 1, &[], None),
            t1.clone(),
        ));
        let again = desired(&p, &none, &observed(None, true, 1, &[], None), t2);
        assert_eq!(p.status.as_ref(), Some(&again), "no change, no write");
        assert_eq!(again.conditions[0].last_transition_time, t1);
    }

    #[test]
    fn sync_errors_count_the_failing_copies_of_each_target() {
        let mut first = rec(&[("west", "spread", 2), ("east", "spread", 1)]);
        if let Some(west) = first.get_mut("west") {
            west.status = Some(tmc_api::decision::TargetStatus {
                error: Some("apply refused".into()),
                ..Default::default()
            });
        }
        let second = rec(&[("west", "spread", 1)]);
        let counts: Vec<(String, usize)> = sync_errors(&[first, second]).into_iter().collect();
        assert_eq!(counts, [("east".to_string(), 0), ("west".to_string(), 1)]);
    }
}
