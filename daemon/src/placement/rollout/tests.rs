use super::*;
use crate::placement::plan::{self, TargetSets};
use chrono::DateTime;
use tmc_api::crd::{ClusterWorkloadPlacementSpec, PolicyRef, RolloutSpec, RolloutStatus};
use tmc_api::decision::STATE_SYNC;

fn result(replicas: u32, stamp: &str) -> TargetResult {
    TargetResult {
        replicas: Some(replicas),
        placement: "p".into(),
        labels: tmc_policy_sdk::abi::MapEdits {
            set: [("stamp".to_string(), stamp.to_string())]
                .into_iter()
                .collect(),
            remove: Vec::new(),
        },
        ..Default::default()
    }
}

fn holding(result: &TargetResult) -> Recorded {
    let raw = serde_json::to_string(result).unwrap();
    Recorded {
        state: Some(STATE_SYNC.into()),
        result_raw: Some(raw),
        result: Some(result.clone()),
        ..Default::default()
    }
}

fn only(targets: &[&str]) -> Allowed {
    Allowed::Only(targets.iter().map(|t| t.to_string()).collect())
}

fn map<V: Clone>(entries: &[(&str, V)]) -> BTreeMap<String, V> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The decision [`gate`] lets through.
fn gated_map(
    chosen: &BTreeMap<String, TargetResult>,
    recorded: &BTreeMap<String, Recorded>,
    allowed: &Allowed,
    gone: &BTreeSet<String>,
) -> BTreeMap<String, TargetResult> {
    gate(chosen, recorded, allowed, gone).chosen
}

#[test]
fn a_stage_that_shrinks_waits_for_the_growth_of_later_stages() {
    let recorded = map(&[
        ("a", holding(&result(3, "x"))),
        ("b", holding(&result(3, "x"))),
    ]);
    let chosen = map(&[
        ("a", result(2, "x")),
        ("b", result(2, "x")),
        ("c", result(2, "x")),
    ]);
    let none = BTreeSet::new();
    let g = gate(&chosen, &recorded, &only(&["a"]), &none);
    assert_eq!(g.chosen["a"], result(3, "x"), "no dip to 5 of 6");
    assert_eq!(g.deferred, ["a".to_string()].into());
    let g = gate(&chosen, &recorded, &only(&["a", "b"]), &none);
    assert_eq!(g.deferred.len(), 2, "{g:?}");
    let g = gate(&chosen, &recorded, &only(&["a", "b", "c"]), &none);
    assert!(g.deferred.is_empty());
    assert_eq!(g.chosen, chosen);
    // A move (a -> c): a keeps its copy until c's stage.
    let recorded = map(&[("a", holding(&result(3, "x")))]);
    let chosen = map(&[("c", result(3, "x"))]);
    let g = gate(&chosen, &recorded, &only(&["a"]), &none);
    assert_eq!(g.chosen, recorded_results(&["a"], 3));
    // A deferred stage target is done once its old copy runs available.
    let pending = stage_pending(&chosen, &recorded, &["a".to_string()], &g.deferred, None);
    assert_eq!(
        pending.len(),
        1,
        "its syncer has reported nothing: {pending:?}"
    );
}

fn recorded_results(targets: &[&str], replicas: u32) -> BTreeMap<String, TargetResult> {
    targets
        .iter()
        .map(|t| (t.to_string(), result(replicas, "x")))
        .collect()
}

#[test]
fn only_allowed_targets_take_the_new_decision() {
    let recorded = map(&[
        ("a", holding(&result(1, "old"))),
        ("b", holding(&result(1, "old"))),
        ("c", holding(&result(1, "old"))),
    ]);
    let chosen = map(&[
        ("a", result(1, "new")),
        ("b", result(1, "new")),
        ("c", result(1, "new")),
    ]);
    let gated = gated_map(&chosen, &recorded, &only(&["b"]), &BTreeSet::new());
    assert_eq!(gated["a"], result(1, "old"));
    assert_eq!(gated["b"], result(1, "new"));
    assert_eq!(gated["c"], result(1, "old"));
    assert_eq!(
        gated_map(&chosen, &recorded, &Allowed::All, &BTreeSet::new()),
        chosen
    );
    // Nothing allowed yet: everything stays as recorded.
    let none = gated_map(&chosen, &recorded, &only(&[]), &BTreeSet::new());
    assert!(none.values().all(|r| *r == result(1, "old")));
}

#[test]
fn held_copies_stay_and_new_targets_wait_for_their_stage() {
    // a: dropped by the new decision; c: new.
    let recorded = map(&[
        ("a", holding(&result(2, "x"))),
        ("b", holding(&result(2, "x"))),
    ]);
    let chosen = map(&[("b", result(2, "x")), ("c", result(2, "x"))]);
    let gated = gated_map(&chosen, &recorded, &only(&["b"]), &BTreeSet::new());
    assert_eq!(gated.keys().collect::<Vec<_>>(), ["a", "b"]);
    // a's stage: dropping it before c has its copy would dip to 2 of 4, so
    // it is deferred; with c's stage, it goes (once c runs, by the plan).
    let gated = gate(&chosen, &recorded, &only(&["a", "b"]), &BTreeSet::new());
    assert_eq!(gated.chosen.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(gated.deferred, ["a".to_string()].into());
    let gated = gated_map(
        &chosen,
        &recorded,
        &only(&["a", "b", "c"]),
        &BTreeSet::new(),
    );
    assert_eq!(gated.keys().collect::<Vec<_>>(), ["b", "c"]);
    // A deleted target follows the new decision (it is forgotten).
    let gone: BTreeSet<String> = ["a".to_string()].into();
    let gated = gated_map(&chosen, &recorded, &only(&[]), &gone);
    assert_eq!(gated.keys().collect::<Vec<_>>(), ["b"]);
}

#[test]
fn a_workload_without_a_previous_decision_takes_the_new_one_whole() {
    let chosen = map(&[("a", result(1, "new")), ("b", result(1, "new"))]);
    let gated = gated_map(&chosen, &BTreeMap::new(), &only(&[]), &BTreeSet::new());
    assert_eq!(gated, chosen);
}

#[test]
fn the_gate_never_removes_a_copy_the_ungated_plan_keeps() {
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let names = ["a", "b", "c"];
    // Every combination of: each target holding or not, chosen or not, allowed or not.
    for mask in 0u32..(1 << 9) {
        let bit = |i: usize| mask & (1 << i) != 0;
        let mut recorded = BTreeMap::new();
        let mut chosen = BTreeMap::new();
        let mut allowed = BTreeSet::new();
        for (i, t) in names.iter().enumerate() {
            if bit(i) {
                recorded.insert(t.to_string(), holding(&result(1, "old")));
            }
            if bit(3 + i) {
                chosen.insert(t.to_string(), result(2, "new"));
            }
            if bit(6 + i) {
                allowed.insert(t.to_string());
            }
        }
        let empty = BTreeSet::new();
        let sets = TargetSets {
            in_grace: &empty,
            gone: &empty,
        };
        let gated = gated_map(&chosen, &recorded, &Allowed::Only(allowed), &empty);
        let ungated = plan::plan(&recorded, &[], &chosen, sets, None, now).unwrap();
        let staged = plan::plan(&recorded, &[], &gated, sets, None, now).unwrap();
        for t in &staged.deleting {
            assert!(
                ungated.deleting.contains(t) || !chosen.contains_key(t),
                "mask {mask:b}: the gate removes {t}"
            );
        }
        for t in gated.keys() {
            assert!(
                chosen.contains_key(t) || recorded.get(t).is_some_and(Recorded::holds),
                "mask {mask:b}: the gate adds {t}, which neither decision has"
            );
        }
    }
}

#[test]
fn a_stage_target_is_done_once_its_new_copy_is_available_or_removed() {
    let new = result(1, "new");
    let chosen = map(&[("a", new.clone())]);
    let stage = vec!["a".to_string(), "b".to_string()];
    // a records the old result; b holds a copy the new decision drops.
    let recorded = map(&[
        ("a", holding(&result(1, "old"))),
        ("b", holding(&result(1, "old"))),
    ]);
    let pending = stage_pending(&chosen, &recorded, &stage, &BTreeSet::new(), Some(1));
    assert_eq!(pending.len(), 2, "{pending:?}");
    // a records the new result, its syncer has not reported it yet; b is asked to remove its copy.
    let mut b = holding(&result(1, "old"));
    b.deleting = true;
    let recorded = map(&[("a", holding(&new)), ("b", b)]);
    let pending = stage_pending(&chosen, &recorded, &stage, &BTreeSet::new(), Some(1));
    assert_eq!(
        pending.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
}

fn placement(stamp: &str, rollout: Option<RolloutStatus>) -> ClusterWorkloadPlacement {
    let mut p = ClusterWorkloadPlacement::new(
        "p",
        ClusterWorkloadPlacementSpec {
            policy: PolicyRef {
                name: "spread".into(),
                settings: Some(serde_json::json!({ "stamp": stamp })),
            },
            rollout: Some(RolloutSpec {
                max_targets_per_stage: 1,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    p.status = rollout.map(|r| tmc_api::crd::ClusterWorkloadPlacementStatus {
        rollout: Some(r),
        ..Default::default()
    });
    p
}

fn info(digest: &str) -> PolicyInfo {
    PolicyInfo {
        name: "spread".into(),
        digest: Some(digest.into()),
        kind: None,
        status: tmc_policy_host::PolicyStatus::Active,
        status_text: String::new(),
        last_error: None,
        source: None,
        loaded_at: None,
        serving: true,
    }
}

#[test]
fn the_revision_follows_the_spec_and_the_modules_but_not_the_rollout() {
    let a = placement("1", None);
    let r = revision(&a, &[info("d1")]);
    assert_eq!(r, revision(&a, &[info("d1")]), "stable");
    assert_ne!(r, revision(&placement("2", None), &[info("d1")]));
    assert_ne!(
        r,
        revision(&a, &[info("d2")]),
        "a hot reload is a new revision"
    );
    let mut paused = a.clone();
    paused.spec.rollout.as_mut().unwrap().paused = true;
    assert_eq!(r, revision(&paused, &[info("d1")]));
}

#[test]
fn allowed_targets_come_from_the_persisted_rollout_of_this_revision() {
    assert_eq!(allowed(&placement("1", None), "r"), Allowed::All);
    let status = RolloutStatus {
        revision: "r".into(),
        stage: 2,
        stage_targets: vec!["b".into()],
        updated_targets: vec!["a".into()],
        ..Default::default()
    };
    let p = placement("1", Some(status.clone()));
    assert_eq!(allowed(&p, "r"), only(&["a", "b"]));
    assert_eq!(allowed(&p, "other"), only(&[]), "not started yet");
    let done = placement(
        "1",
        Some(RolloutStatus {
            phase: RolloutPhase::Complete,
            ..status
        }),
    );
    assert_eq!(allowed(&done, "r"), Allowed::All);
}
