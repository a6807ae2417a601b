//! tmcd's judgement of the decisions an upstream object records (read by
//! `tmc_api::protocol`): which targets run it, and whether a target's copy is
//! in place for the decision recorded now.

use std::collections::BTreeMap;

use tmc_api::decision::result_digest;
use tmc_api::protocol::Recorded;

/// Targets running the workload now (see [`Recorded::runs_copy`]), with
/// their recorded replicas.
pub fn holders(recorded: &BTreeMap<String, Recorded>) -> BTreeMap<String, Option<u32>> {
    recorded
        .iter()
        .filter(|(_, r)| r.runs_copy())
        .map(|(t, r)| (t.clone(), r.result.as_ref().and_then(|res| res.replicas)))
        .collect()
}

/// Target -> replicas as text: `east (1), west (2)`, or `nowhere`.
pub fn describe(on: &BTreeMap<String, Option<u32>>) -> String {
    if on.is_empty() {
        return "nowhere".into();
    }
    on.iter()
        .map(|(t, r)| match r {
            Some(n) => format!("{t} ({n})"),
            None => t.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when the target's syncer reports its copy in place for the decision
/// the object records now (see [`pending`]). Only then may other copies of a
/// moving workload go (create-before-delete with no dip in available
/// replicas).
pub fn applied(rec: &Recorded, generation: Option<i64>) -> bool {
    pending(rec, generation).is_none()
}

/// Why the target's copy is not yet in place for the decision the object
/// records now, or `None` when it is: the syncer's report must be for this
/// very result (its [`result_digest`]) at upstream `generation` or later,
/// without error, and a copy with replicas must have all of them available
/// at the copy's current spec. Where the cluster owns the copy's replicas
/// (an autoscaler; the report names the owner), the count its owner set is
/// the one that must be available, and at least one: a move never waits on
/// replicas the autoscaler removed, nor counts a copy scaled to zero.
pub fn pending(rec: &Recorded, generation: Option<i64>) -> Option<String> {
    let Some(result) = rec.result.as_ref() else {
        return Some("no decision recorded".into());
    };
    let Some(status) = rec.status.as_ref() else {
        return Some("its syncer has reported nothing yet".into());
    };
    if let Some(error) = &status.error {
        return Some(format!("its syncer reports an error: {error}"));
    }
    if status.result_digest != result_digest(rec.result_raw.as_deref()) {
        return Some("its syncer has not applied the current decision yet".into());
    }
    if let (Some(want), Some(got)) = (generation, status.observed_generation)
        && got < want
    {
        return Some(format!(
            "its syncer applied generation {got}, not yet {want}"
        ));
    }
    let want = match (&status.replicas_owner, result.replicas) {
        // The cluster owns the copy's replicas (an autoscaler): its own count
        // is the desired one, at least one while the decision asks for any.
        (Some(_), Some(decided)) if decided > 0 => {
            let own = status
                .copy_replicas
                .and_then(|r| u64::try_from(r).ok())
                .unwrap_or(u64::from(decided));
            own.max(1)
        }
        (_, Some(decided)) => u64::from(decided),
        (_, None) => 0,
    };
    if want == 0 {
        return None;
    }
    let have = status
        .status
        .as_ref()
        .map_or(0, |copy| available(copy, status.copy_generation));
    (have < want).then(|| match &status.replicas_owner {
        Some(owner) => format!("{have} of {want} replicas available (replicas set by {owner})"),
        None => format!("{have} of {want} replicas available"),
    })
}

/// Replicas available according to a copy's `.status`, counted only when
/// the status is of the copy's current spec (`observedGeneration` at least
/// `copy_generation`): `availableReplicas`, or `readyReplicas` for kinds
/// without it.
fn available(status: &serde_json::Value, copy_generation: Option<i64>) -> u64 {
    let observed = status
        .get("observedGeneration")
        .and_then(serde_json::Value::as_i64);
    if let (Some(want), Some(got)) = (copy_generation, observed)
        && got < want
    {
        return 0;
    }
    status
        .get("availableReplicas")
        .or_else(|| status.get("readyReplicas"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tmc_api::decision::{
        TargetStatus, deletion_annotation, result_annotation, state_label, status_annotation,
    };

    use tmc_api::protocol::read;

    #[test]
    fn holders_are_the_targets_running_a_copy() {
        let labels: BTreeMap<String, String> = [
            (state_label("west"), "Sync".into()),
            (state_label("east"), "Sync".into()),
            ("app".into(), "x".into()),
        ]
        .into();
        let annotations: BTreeMap<String, String> = [
            (result_annotation("west"), r#"{"replicas":2}"#.into()),
            (result_annotation("east"), r#"{"replicas":1}"#.into()),
            (deletion_annotation("east"), "2026-01-01T00:00:00Z".into()),
            (
                status_annotation("west"),
                r#"{"appliedHash":"h","observedGeneration":3}"#.into(),
            ),
        ]
        .into();
        let rec = read(&labels, &annotations);
        // east is asked to remove its copy: no longer a holder.
        assert_eq!(holders(&rec), [("west".to_string(), Some(2))].into());
        // A copy reported without a state label (wiped by another writer) still runs there.
        let wiped: BTreeMap<String, String> = [(
            status_annotation("south"),
            r#"{"appliedHash":"h"}"#.to_string(),
        )]
        .into();
        let rec = read(&BTreeMap::new(), &wiped);
        assert!(rec["south"].unrecorded_copy());
        assert_eq!(holders(&rec), [("south".to_string(), None)].into());
    }

    #[test]
    fn applied_needs_this_result_generation_no_error_and_all_replicas_available() {
        let raw = r#"{"replicas":2}"#;
        let ok = TargetStatus {
            applied_hash: "h".into(),
            observed_generation: Some(3),
            result_digest: result_digest(Some(raw)),
            copy_generation: Some(5),
            status: Some(
                json!({"observedGeneration": 5, "availableReplicas": 2, "readyReplicas": 2}),
            ),
            error: None,
            ..TargetStatus::default()
        };
        let rec = |status: Option<TargetStatus>, raw: &str| Recorded {
            state: Some("Sync".into()),
            result_raw: Some(raw.into()),
            result: serde_json::from_str(raw).ok(),
            status,
            status_raw: true,
            ..Default::default()
        };
        assert!(applied(&rec(Some(ok.clone()), raw), Some(3)));
        assert!(
            !applied(&rec(Some(ok.clone()), raw), Some(4)),
            "older generation"
        );
        assert!(!applied(&rec(None, raw), Some(3)), "nothing reported");
        assert!(
            !applied(&rec(Some(ok.clone()), r#"{"replicas":4}"#), Some(3)),
            "a report for the previous result"
        );
        let failed = TargetStatus {
            error: Some("forbidden".into()),
            ..ok.clone()
        };
        assert!(!applied(&rec(Some(failed), raw), Some(3)));
        let one_available = TargetStatus {
            status: Some(
                json!({"observedGeneration": 5, "availableReplicas": 1, "readyReplicas": 2}),
            ),
            ..ok.clone()
        };
        assert!(
            !applied(&rec(Some(one_available), raw), Some(3)),
            "1 of 2 available"
        );
        let stale_status = TargetStatus {
            status: Some(json!({"observedGeneration": 4, "availableReplicas": 2})),
            ..ok.clone()
        };
        assert!(
            !applied(&rec(Some(stale_status), raw), Some(3)),
            "status of the copy's previous spec"
        );
        let ready_only = TargetStatus {
            status: Some(json!({"readyReplicas": 2})),
            copy_generation: None,
            ..ok.clone()
        };
        assert!(
            applied(&rec(Some(ready_only), raw), Some(3)),
            "kinds without availableReplicas"
        );
        let no_replicas = "{}";
        // Replicas an autoscaler owns: the copy's own count is what must be available.
        let scaled_down = TargetStatus {
            replicas_owner: Some("HorizontalPodAutoscaler/web".into()),
            copy_replicas: Some(1),
            status: Some(
                json!({"observedGeneration": 5, "availableReplicas": 1, "readyReplicas": 1}),
            ),
            ..ok.clone()
        };
        assert!(
            applied(&rec(Some(scaled_down.clone()), raw), Some(3)),
            "1 of the autoscaler's 1 available"
        );
        let scaled_up = TargetStatus {
            copy_replicas: Some(5),
            status: Some(
                json!({"observedGeneration": 5, "availableReplicas": 4, "readyReplicas": 4}),
            ),
            ..scaled_down.clone()
        };
        assert_eq!(
            pending(&rec(Some(scaled_up), raw), Some(3)).as_deref(),
            Some("4 of 5 replicas available (replicas set by HorizontalPodAutoscaler/web)")
        );
        let scaled_to_zero = TargetStatus {
            copy_replicas: Some(0),
            status: Some(json!({"observedGeneration": 5})),
            ..scaled_down
        };
        assert!(
            !applied(&rec(Some(scaled_to_zero), raw), Some(3)),
            "a copy scaled to zero never stands in for a running one"
        );
        let config_map = TargetStatus {
            status: None,
            result_digest: result_digest(Some(no_replicas)),
            ..ok
        };
        assert!(applied(&rec(Some(config_map), no_replicas), Some(3)));
    }
}
