use super::*;
use k8s_openapi::jiff::Timestamp;

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
}

fn spec(per_stage: u32, paused: bool) -> RolloutSpec {
    RolloutSpec {
        max_targets_per_stage: per_stage,
        stage_timeout_seconds: Some(60),
        paused,
    }
}

fn order() -> Vec<String> {
    ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
}

fn done(_: u32) -> StageReport {
    StageReport::default()
}

fn waiting(_: u32) -> StageReport {
    StageReport {
        behind: vec![],
        pending: vec![(
            "Deployment demo/web".into(),
            "b".into(),
            "its syncer reports 0/2 available".into(),
        )],
        ..Default::default()
    }
}

fn reasons(notes: &[Note]) -> Vec<&str> {
    notes.iter().map(|n| n.reason).collect()
}

#[test]
fn the_first_revision_is_not_staged_and_no_rollout_means_no_status() {
    let (st, notes) = advance(Some(&spec(1, false)), None, "r1", &order(), done, &at(0));
    let st = st.unwrap();
    assert_eq!(st.phase, RolloutPhase::Complete);
    assert!(notes.is_empty());
    assert_eq!(
        advance(None, Some(&st), "r2", &order(), done, &at(0)).0,
        None
    );
}

#[test]
fn a_new_revision_goes_one_stage_at_a_time() {
    let s = spec(1, false);
    let (first, _) = advance(Some(&s), None, "r1", &order(), done, &at(0));
    let (st, notes) = advance(Some(&s), first.as_ref(), "r2", &order(), done, &at(1));
    let st = st.unwrap();
    assert_eq!(reasons(&notes), ["RolloutStarted", "RolloutStageStarted"]);
    assert_eq!((st.stage, st.stages, st.progress.as_str()), (1, 3, "1/3"));
    assert_eq!(st.stage_targets, ["a"]);
    // Stage 1 waits on its workloads: nothing moves.
    let (same, notes) = advance(Some(&s), Some(&st), "r2", &order(), waiting, &at(2));
    let same = same.unwrap();
    assert!(notes.is_empty());
    assert_eq!(same.stage, 1);
    assert!(same.message.contains("0/2 available"), "{}", same.message);
    // Done: stage 2.
    let (st, notes) = advance(Some(&s), Some(&same), "r2", &order(), done, &at(3));
    let st = st.unwrap();
    assert_eq!(
        reasons(&notes),
        ["RolloutStageCompleted", "RolloutStageStarted"]
    );
    assert_eq!(
        (st.stage, st.stage_targets.clone()),
        (2, vec!["b".to_string()])
    );
    assert_eq!(st.updated_targets, ["a"]);
    let (st, _) = advance(Some(&s), Some(&st), "r2", &order(), done, &at(4));
    let (st, notes) = advance(Some(&s), st.as_ref(), "r2", &order(), done, &at(5));
    let st = st.unwrap();
    assert_eq!(
        reasons(&notes),
        ["RolloutStageCompleted", "RolloutCompleted"]
    );
    assert_eq!(st.phase, RolloutPhase::Complete);
}

#[test]
fn a_stage_that_times_out_fails_the_rollout_and_keeps_later_stages() {
    let s = spec(2, false);
    let (first, _) = advance(Some(&s), None, "r1", &order(), done, &at(0));
    let (st, _) = advance(Some(&s), first.as_ref(), "r2", &order(), done, &at(0));
    let st = st.unwrap();
    assert_eq!(st.stage_targets, ["a", "b"]);
    assert_eq!(st.stages, 2);
    let (st, notes) = advance(Some(&s), Some(&st), "r2", &order(), waiting, &at(61));
    let st = st.unwrap();
    assert_eq!(st.phase, RolloutPhase::Failed);
    assert_eq!(reasons(&notes), ["RolloutFailed"]);
    assert!(notes[0].warning);
    assert!(
        st.message.contains("Deployment demo/web on b"),
        "{}",
        st.message
    );
    // Failed stays failed, even once the copies become available.
    let (again, notes) = advance(Some(&s), Some(&st), "r2", &order(), done, &at(100));
    assert_eq!(again.unwrap(), st);
    assert!(notes.is_empty());
    // A new revision starts over.
    let (next, _) = advance(Some(&s), Some(&st), "r3", &order(), done, &at(101));
    let next = next.unwrap();
    assert_eq!((next.phase, next.stage), (RolloutPhase::Progressing, 1));
}

#[test]
fn workloads_not_reconciled_since_start_hold_the_stage() {
    let s = spec(1, false);
    let (first, _) = advance(Some(&s), None, "r1", &order(), done, &at(0));
    let (st, _) = advance(Some(&s), first.as_ref(), "r2", &order(), done, &at(0));
    let missing = |_| StageReport {
        missing: 2,
        ..Default::default()
    };
    let (same, notes) = advance(Some(&s), st.as_ref(), "r2", &order(), missing, &at(1));
    assert!(notes.is_empty());
    assert_eq!(same.unwrap().stage, 1);
}

#[test]
fn paused_starts_no_new_stage_until_resumed() {
    let (first, _) = advance(Some(&spec(1, false)), None, "r1", &order(), done, &at(0));
    let paused = spec(1, true);
    let (st, notes) = advance(Some(&paused), first.as_ref(), "r2", &order(), done, &at(1));
    let st = st.unwrap();
    assert_eq!(reasons(&notes), ["RolloutStarted", "RolloutPaused"]);
    assert_eq!((st.phase, st.stage), (RolloutPhase::Paused, 0));
    let (st, notes) = advance(Some(&paused), Some(&st), "r2", &order(), done, &at(500));
    let st = st.unwrap();
    assert!(notes.is_empty());
    assert_eq!(st.stage, 0);
    let (st, notes) = advance(
        Some(&spec(1, false)),
        Some(&st),
        "r2",
        &order(),
        done,
        &at(501),
    );
    let st = st.unwrap();
    assert_eq!(reasons(&notes), ["RolloutResumed", "RolloutStageStarted"]);
    assert_eq!((st.phase, st.stage), (RolloutPhase::Progressing, 1));
}
