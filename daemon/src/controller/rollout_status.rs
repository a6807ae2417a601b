//! Advancing a placement's staged rollout (`status.rollout`), as the
//! leader's placement status writer does on each refresh: start the rollout
//! of a new revision, complete a stage once every workload of the placement
//! has its stage targets done (see [`crate::placement::rollout_track`]),
//! start the next, time a stage out, honour `paused`. Pure: the caller
//! writes the status and publishes the [`Note`]s as Events once written.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tmc_api::crd::{
    ClusterWorkloadPlacement, DEFAULT_STAGE_TIMEOUT_SECONDS, RolloutPhase, RolloutSpec,
    RolloutStatus,
};

use crate::placement::rollout_track::StageReport;
use crate::placement::selector;
use crate::placement::targets::TargetView;

/// An Event to publish on the placement: whether it is a warning, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, message: String) -> Self {
        Self {
            warning: false,
            reason,
            message,
        }
    }
}

/// The targets a rollout of `placement` goes through, in stage order: the
/// SyncTargets its location selectors match (every one without selectors)
/// and those holding its copies (`holding`), sorted by name.
pub fn stage_order<'t>(
    placement: &ClusterWorkloadPlacement,
    views: &[TargetView],
    holding: impl IntoIterator<Item = &'t String>,
) -> Vec<String> {
    let selectors = &placement.spec.location_selectors;
    let mut out: BTreeSet<String> = views
        .iter()
        .filter(|v| {
            selectors.is_empty()
                || selectors
                    .iter()
                    .any(|s| selector::selects(Some(s), &v.labels))
        })
        .map(|v| v.name.clone())
        .collect();
    out.extend(holding.into_iter().cloned());
    out.into_iter().collect()
}

/// The rollout status after this refresh, and what to tell: `spec` is the
/// placement's `spec.rollout`, `previous` its `status.rollout`, `revision`
/// its current revision, `order` the targets in stage order, `report` how
/// far its workloads are with a stage, `now` the time (`now_seconds` the
/// same, in seconds since the epoch).
pub fn advance(
    spec: Option<&RolloutSpec>,
    previous: Option<&RolloutStatus>,
    revision: &str,
    order: &[String],
    report: impl Fn(u32) -> StageReport,
    now: &Time,
) -> (Option<RolloutStatus>, Vec<Note>) {
    let mut notes = Vec::new();
    let Some(spec) = spec else {
        return (None, notes);
    };
    let per_stage = spec.max_targets_per_stage.max(1) as usize;
    let Some(previous) = previous else {
        // A new placement (or one that just got `rollout`): its first
        // revision is not staged.
        return (Some(complete(revision)), notes);
    };
    let mut st = previous.clone();
    if st.revision != revision {
        let stages = order.len().div_ceil(per_stage);
        st = RolloutStatus {
            revision: revision.to_owned(),
            phase: RolloutPhase::Progressing,
            stages: u32::try_from(stages).unwrap_or(u32::MAX),
            stage_start_time: Some(now.clone()),
            ..Default::default()
        };
        notes.push(Note::normal(
            "RolloutStarted",
            format!(
                "rolling out revision {revision} in {stages} stage(s) of at most {per_stage} target(s)"
            ),
        ));
    }
    if matches!(st.phase, RolloutPhase::Complete | RolloutPhase::Failed) {
        return (Some(st), notes);
    }
    if spec.paused && st.phase != RolloutPhase::Paused {
        st.phase = RolloutPhase::Paused;
        notes.push(Note::normal(
            "RolloutPaused",
            format!(
                "rollout paused at stage {}/{}: no new stage starts",
                st.stage, st.stages
            ),
        ));
    } else if !spec.paused && st.phase == RolloutPhase::Paused {
        st.phase = RolloutPhase::Progressing;
        notes.push(Note::normal(
            "RolloutResumed",
            format!("rollout resumed at stage {}/{}", st.stage, st.stages),
        ));
    }
    let stage_report = match st.stage {
        0 => StageReport::default(),
        stage => report(stage),
    };
    if !stage_report.done() {
        let waiting = describe(&stage_report);
        let timeout = i64::from(
            spec.stage_timeout_seconds
                .unwrap_or(DEFAULT_STAGE_TIMEOUT_SECONDS),
        );
        let started = st.stage_start_time.as_ref().map_or(now.0, |t| t.0);
        if now.0.as_second() - started.as_second() > timeout {
            st.phase = RolloutPhase::Failed;
            st.message = format!(
                "stage {}/{} ({}) not available within {timeout}s: {waiting}; the targets of later stages keep the previous decision",
                st.stage,
                st.stages,
                st.stage_targets.join(", ")
            );
            notes.push(Note {
                warning: true,
                reason: "RolloutFailed",
                message: st.message.clone(),
            });
        } else {
            st.message = format!("stage {}/{} waits: {waiting}", st.stage, st.stages);
        }
        return (Some(st), notes);
    }
    if st.stage > 0 && !st.stage_targets.is_empty() {
        if spec.paused {
            st.message = format!(
                "paused: stage {}/{} is done, the next starts on resume",
                st.stage, st.stages
            );
            return (Some(st), notes);
        }
        notes.push(Note::normal(
            "RolloutStageCompleted",
            format!(
                "stage {}/{} completed: {} run(s) the new revision",
                st.stage,
                st.stages,
                st.stage_targets.join(", ")
            ),
        ));
        let done = std::mem::take(&mut st.stage_targets);
        st.updated_targets.extend(done);
    } else if spec.paused {
        st.message = "paused before its first stage".into();
        return (Some(st), notes);
    }
    let updated: BTreeSet<&String> = st.updated_targets.iter().collect();
    let remaining: Vec<String> = order
        .iter()
        .filter(|t| !updated.contains(t))
        .cloned()
        .collect();
    if remaining.is_empty() {
        notes.push(Note::normal(
            "RolloutCompleted",
            format!("revision {revision} runs on every target"),
        ));
        let mut done = complete(revision);
        done.stages = st.stages;
        done.stage = st.stage;
        return (Some(done), notes);
    }
    st.stage += 1;
    st.stages = st
        .stages
        .max(st.stage - 1 + u32::try_from(remaining.len().div_ceil(per_stage)).unwrap_or(0));
    st.stage_targets = remaining.into_iter().take(per_stage).collect();
    st.stage_start_time = Some(now.clone());
    st.progress = format!("{}/{}", st.stage, st.stages);
    st.message = format!(
        "stage {}/{}: {} take(s) the new revision",
        st.stage,
        st.stages,
        st.stage_targets.join(", ")
    );
    notes.push(Note::normal(
        "RolloutStageStarted",
        format!(
            "stage {}/{} started: {}",
            st.stage,
            st.stages,
            st.stage_targets.join(", ")
        ),
    ));
    (Some(st), notes)
}

/// A rollout with nothing left to do.
fn complete(revision: &str) -> RolloutStatus {
    RolloutStatus {
        revision: revision.to_owned(),
        phase: RolloutPhase::Complete,
        ..Default::default()
    }
}

/// What a stage waits on, briefly (the first few workloads).
fn describe(report: &StageReport) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = report
        .pending
        .iter()
        .take(SHOWN)
        .map(|(workload, target, why)| format!("{workload} on {target}: {why}"))
        .collect();
    if report.pending.len() > SHOWN {
        parts.push(format!("{} more", report.pending.len() - SHOWN));
    }
    if report.missing > 0 {
        parts.push(format!(
            "{} workload(s) not reconciled since tmcd started leading",
            report.missing
        ));
    }
    if !report.behind.is_empty() {
        parts.push(format!(
            "{} workload(s) not yet reconciled under this stage",
            report.behind.len()
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests;
