use serde_json::json;
use tmc_policy_sdk::testing;

use super::*;

fn shares(weights: &[u64], current: &[u32]) -> Vec<Share> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| Share {
            name: format!("t{i:02}"),
            weight: *w,
            current: current.get(i).copied().unwrap_or(0),
        })
        .collect()
}

#[test]
fn ships_vectors_that_pass_natively() {
    let count = testing::run_placement_vectors::<ReplicaSpread>(include_str!("../vectors.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count, 10);
}

#[test]
fn proportional_to_weights() {
    assert_eq!(apportion(10, &shares(&[3, 1, 1], &[])), [6, 2, 2]);
    assert_eq!(apportion(7, &shares(&[1, 1], &[])), [4, 3]);
    assert_eq!(
        apportion(5, &shares(&[0, 0], &[])),
        [3, 2],
        "all zero = equal"
    );
    assert_eq!(apportion(5, &shares(&[0, 1], &[])), [0, 5]);
}

#[test]
fn extra_replicas_stay_where_they_are() {
    // t01 already holds 4: it keeps the extra replica rather than t00.
    assert_eq!(apportion(7, &shares(&[1, 1], &[3, 4])), [3, 4]);
}

#[test]
fn idempotent_when_fed_its_own_result() {
    for n in 0..40u32 {
        for k in 1..7usize {
            let first = apportion(n, &shares(&vec![1; k], &[]));
            let again = apportion(n, &shares(&vec![1; k], &first));
            assert_eq!(first, again, "n={n} k={k}");
        }
    }
}

/// Replicas created on targets that held fewer: what must move.
fn created(before: &[u32], after: &[u32]) -> u32 {
    after
        .iter()
        .enumerate()
        .map(|(i, a)| a.saturating_sub(before.get(i).copied().unwrap_or(0)))
        .sum()
}

#[test]
fn adding_a_target_moves_only_what_it_receives() {
    for n in 0..40u32 {
        for k in 1..7usize {
            let before = apportion(n, &shares(&vec![1; k], &[]));
            let after = apportion(n, &shares(&vec![1; k + 1], &before));
            assert_eq!(after.iter().sum::<u32>(), n);
            // no existing target gains: the only replicas created are the new target's
            assert_eq!(
                created(&before, &after),
                after[k],
                "n={n} k={k} {before:?} -> {after:?}"
            );
            // and the new target gets no more than its fair share
            assert!(after[k] <= n.div_ceil(k as u32 + 1), "n={n} k={k}");
        }
    }
}

#[test]
fn removing_a_target_moves_only_its_replicas() {
    for n in 0..40u32 {
        for k in 2..7usize {
            let before = apportion(n, &shares(&vec![1; k], &[]));
            // drop the first target; the survivors keep their names t01.. by index shift
            let survivors: Vec<Share> = shares(&vec![1; k], &before)[1..].to_vec();
            let after = apportion(n, &survivors);
            let kept = &before[1..];
            assert_eq!(created(kept, &after), before[0], "n={n} k={k}");
            assert!(
                after.iter().zip(kept).all(|(a, b)| a >= b),
                "no survivor loses"
            );
        }
    }
}

#[test]
fn settings_validation() {
    let ok = |v| {
        testing::validate_placement_settings::<ReplicaSpread>(v)
            .expect("answers")
            .valid
    };
    assert!(ok(json!({})));
    assert!(ok(json!({"weights": {"west": 3}})));
    assert!(ok(json!({"by": "capacity"})));
    assert!(!ok(json!({"by": "capacity", "weights": {"west": 3}})));
    assert!(!ok(json!({"by": "luck"})));
    assert!(!ok(json!({"weights": {"west": -1}})));
    assert!(!ok(json!({"weight": {"west": 1}})));
}
