//! Bringing status back: the upstream `.status` from the per-target reports.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use tmc_api::protocol::Recorded;

/// Deployment status fields summed over targets.
const SUMMED: [&str; 4] = [
    "replicas",
    "readyReplicas",
    "availableReplicas",
    "updatedReplicas",
];

/// The upstream `.status` the object should show, from the targets that hold
/// it; `None` when no target reported yet (leave the status alone).
///
/// Kinds with replicas (Deployments) sum the replica counts, report the
/// lowest observed generation among the holders and a condition `Synced`
/// ([`synced`]); any other kind shows the status of its single holder.
pub fn aggregate(kind: &str, recorded: &BTreeMap<String, Recorded>) -> Option<Value> {
    let reports: Vec<(&String, Option<&Value>, Option<i64>)> = recorded
        .iter()
        .filter(|(_, r)| r.holds())
        .filter_map(|(t, r)| {
            r.status
                .as_ref()
                .map(|s| (t, s.status.as_ref(), s.observed_generation))
        })
        .collect();
    if reports.is_empty() {
        return None;
    }
    if kind == "Deployment" || kind == "StatefulSet" || kind == "ReplicaSet" {
        let mut out = Map::new();
        for field in SUMMED {
            let sum: u64 = reports
                .iter()
                .filter_map(|(_, s, _)| s.and_then(|s| s.get(field)).and_then(Value::as_u64))
                .sum();
            out.insert(field.to_string(), Value::from(sum));
        }
        if let Some(generation) = reports
            .iter()
            .map(|(_, _, g)| *g)
            .collect::<Option<Vec<i64>>>()
            .and_then(|g| g.into_iter().min())
        {
            out.insert("observedGeneration".to_string(), Value::from(generation));
        }
        out.insert(
            "conditions".to_string(),
            Value::from(vec![synced(recorded)]),
        );
        return Some(Value::Object(out));
    }
    match reports.as_slice() {
        [(_, Some(status), _)] => Some((*status).clone()),
        _ => None,
    }
}

/// The condition `Synced` of a workload: `False` with reason `SyncFailed`
/// while a target that holds it reports an error (each `target: error` in
/// the message, e.g. a dependency its syncer cannot apply there), else
/// `True`.
pub fn synced(recorded: &BTreeMap<String, Recorded>) -> Value {
    let errors: Vec<String> = recorded
        .iter()
        .filter(|(_, r)| r.holds())
        .filter_map(|(t, r)| Some(format!("{t}: {}", r.status.as_ref()?.error.as_ref()?)))
        .collect();
    match errors.is_empty() {
        true => serde_json::json!({"type": "Synced", "status": "True", "reason": "Synced",
            "message": "every target applied its copy"}),
        false => serde_json::json!({"type": "Synced", "status": "False", "reason": "SyncFailed",
            "message": errors.join("; ")}),
    }
}

/// True when `current` already shows everything in `desired`.
pub fn contains(current: Option<&Value>, desired: &Value) -> bool {
    match (current, desired) {
        (Some(Value::Object(cur)), Value::Object(want)) => want.iter().all(|(k, v)| {
            contains(cur.get(k), v) || (v == &Value::from(0u64) && cur.get(k).is_none())
        }),
        (Some(cur), want) => cur == want,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tmc_api::decision::{deletion_annotation, state_label, status_annotation};
    use tmc_api::protocol::read;

    fn recorded(reports: &[(&str, Value)], deleting: &[&str]) -> BTreeMap<String, Recorded> {
        let labels: BTreeMap<String, String> = reports
            .iter()
            .map(|(t, _)| (state_label(t), "Sync".to_string()))
            .collect();
        let mut annotations: BTreeMap<String, String> = reports
            .iter()
            .map(|(t, v)| (status_annotation(t), v.to_string()))
            .collect();
        for t in deleting {
            annotations.insert(deletion_annotation(t), "2026-01-01T00:00:00Z".into());
        }
        read(&labels, &annotations)
    }

    #[test]
    fn deployments_sum_over_holders() {
        let rec = recorded(
            &[
                (
                    "west",
                    json!({"observedGeneration": 2, "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2, "updatedReplicas": 2}}),
                ),
                (
                    "east",
                    json!({"observedGeneration": 3, "status": {"replicas": 1, "readyReplicas": 0}}),
                ),
                (
                    "old",
                    json!({"observedGeneration": 3, "status": {"replicas": 5, "readyReplicas": 5}}),
                ),
            ],
            &["old"],
        );
        let status = aggregate("Deployment", &rec).expect("status");
        assert_eq!(
            status,
            json!({"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "updatedReplicas": 2, "observedGeneration": 2,
                "conditions": [{"type": "Synced", "status": "True", "reason": "Synced", "message": "every target applied its copy"}]})
        );
    }

    #[test]
    fn a_target_reporting_an_error_makes_the_workload_not_synced() {
        let rec = recorded(
            &[
                ("west", json!({"status": {"replicas": 1}})),
                (
                    "east",
                    json!({"error": "waiting for ConfigMap demo/cfg: it does not exist in the workspace"}),
                ),
                (
                    "old",
                    json!({"error": "a removed target's error does not count"}),
                ),
            ],
            &["old"],
        );
        let status = aggregate("Deployment", &rec).expect("status");
        assert_eq!(
            status["conditions"],
            json!([{"type": "Synced", "status": "False", "reason": "SyncFailed",
                "message": "east: waiting for ConfigMap demo/cfg: it does not exist in the workspace"}])
        );
        assert_eq!(status["availableReplicas"], json!(0));
    }

    #[test]
    fn other_kinds_take_the_single_holder() {
        let lb = json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}});
        let rec = recorded(
            &[("west", json!({"observedGeneration": 1, "status": lb}))],
            &[],
        );
        assert_eq!(aggregate("Service", &rec), Some(lb.clone()));
        let two = recorded(
            &[
                ("west", json!({"status": lb})),
                ("east", json!({"status": lb})),
            ],
            &[],
        );
        assert_eq!(aggregate("Service", &two), None);
        assert_eq!(aggregate("Service", &BTreeMap::new()), None);
    }

    #[test]
    fn contains_compares_only_desired_fields() {
        let cur = json!({"replicas": 3, "readyReplicas": 3, "conditions": []});
        assert!(contains(
            Some(&cur),
            &json!({"replicas": 3, "readyReplicas": 3})
        ));
        assert!(!contains(
            Some(&cur),
            &json!({"replicas": 3, "readyReplicas": 2})
        ));
        assert!(
            contains(Some(&json!({})), &json!({"readyReplicas": 0})),
            "absent zero equals zero"
        );
        assert!(!contains(None, &json!({"replicas": 1})));
    }
}
