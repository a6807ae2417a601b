//! Reading the decision protocol (`tmc_syncer::decision`) off an upstream object:
//! which targets hold it, with which result, and what their syncers report.

use std::collections::BTreeMap;

use tmc_syncer::decision::{
    DELETION_ANNOTATION_PREFIX, RESULT_ANNOTATION_PREFIX, STATE_LABEL_PREFIX, STATE_SYNC,
    STATUS_ANNOTATION_PREFIX, TargetResult, TargetStatus,
};

/// What the upstream object records about one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// State label value (`Sync`), if present.
    pub state: Option<String>,
    /// The result annotation, raw and parsed (`None` if it does not parse).
    pub result_raw: Option<String>,
    pub result: Option<TargetResult>,
    /// A deletion request is pending.
    pub deleting: bool,
    /// What the target's syncer reports.
    pub status: Option<TargetStatus>,
    /// A status annotation is present (parsed into `status` when it is readable).
    pub status_raw: bool,
}

impl Recorded {
    /// The target holds (or must hold) a copy and is not being asked to remove it.
    pub fn holds(&self) -> bool {
        self.state.as_deref() == Some(STATE_SYNC) && !self.deleting
    }
}

/// Per target name, everything the object records.
pub fn read(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> BTreeMap<String, Recorded> {
    let mut out: BTreeMap<String, Recorded> = BTreeMap::new();
    for (key, value) in labels {
        if let Some(t) = key.strip_prefix(STATE_LABEL_PREFIX) {
            out.entry(t.to_string()).or_default().state = Some(value.clone());
        }
    }
    for (key, value) in annotations {
        if let Some(t) = key.strip_prefix(RESULT_ANNOTATION_PREFIX) {
            let entry = out.entry(t.to_string()).or_default();
            entry.result_raw = Some(value.clone());
            entry.result = serde_json::from_str(value).ok();
        } else if let Some(t) = key.strip_prefix(DELETION_ANNOTATION_PREFIX) {
            out.entry(t.to_string()).or_default().deleting = true;
        } else if let Some(t) = key.strip_prefix(STATUS_ANNOTATION_PREFIX) {
            let entry = out.entry(t.to_string()).or_default();
            entry.status_raw = true;
            entry.status = serde_json::from_str(value).ok();
        }
    }
    out
}

/// Targets holding the workload now, with their replicas.
pub fn holders(recorded: &BTreeMap<String, Recorded>) -> BTreeMap<String, Option<u32>> {
    recorded
        .iter()
        .filter(|(_, r)| r.holds())
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

/// True when `status` shows the copy is in place for `result` at upstream
/// `generation`: applied without error, generation observed, and for a copy
/// with replicas at least one replica ready (so a move leaves no gap).
pub fn applied(
    status: Option<&TargetStatus>,
    result: &TargetResult,
    generation: Option<i64>,
) -> bool {
    let Some(status) = status else { return false };
    if status.error.is_some()
        || status.applied_hash.is_empty() && status.observed_generation.is_none()
    {
        return false;
    }
    if let (Some(want), Some(got)) = (generation, status.observed_generation)
        && got < want
    {
        return false;
    }
    match result.replicas {
        Some(n) if n > 0 => status
            .status
            .as_ref()
            .and_then(|s| s.get("readyReplicas"))
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|ready| ready >= 1),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tmc_syncer::decision::{
        deletion_annotation, result_annotation, state_label, status_annotation,
    };

    #[test]
    fn reads_the_protocol() {
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
        assert_eq!(holders(&rec), [("west".to_string(), Some(2))].into());
        assert!(rec["east"].deleting);
        assert_eq!(
            rec["west"].status.as_ref().map(|s| s.applied_hash.as_str()),
            Some("h")
        );
    }

    #[test]
    fn applied_needs_generation_no_error_and_a_ready_replica() {
        let result = TargetResult {
            replicas: Some(2),
            ..Default::default()
        };
        let ok = TargetStatus {
            applied_hash: "h".into(),
            observed_generation: Some(3),
            status: Some(json!({"readyReplicas": 1})),
            error: None,
        };
        assert!(applied(Some(&ok), &result, Some(3)));
        assert!(!applied(Some(&ok), &result, Some(4)), "older generation");
        assert!(!applied(None, &result, Some(3)), "nothing reported");
        let failed = TargetStatus {
            error: Some("forbidden".into()),
            ..ok.clone()
        };
        assert!(!applied(Some(&failed), &result, Some(3)));
        let not_ready = TargetStatus {
            status: Some(json!({"readyReplicas": 0})),
            ..ok.clone()
        };
        assert!(!applied(Some(&not_ready), &result, Some(3)));
        let no_replicas = TargetResult::default();
        assert!(applied(
            Some(&TargetStatus { status: None, ..ok }),
            &no_replicas,
            Some(3)
        ));
    }
}
