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
        let mut conditions = Vec::new();
        if kind == "Deployment" {
            conditions.extend(held_conditions(recorded));
        }
        conditions.push(synced(recorded));
        out.insert("conditions".to_string(), Value::from(conditions));
        return Some(Value::Object(out));
    }
    match reports.as_slice() {
        [(_, Some(status), _)] => Some((*status).clone()),
        _ => None,
    }
}

/// A Deployment's `Available` and `Progressing` conditions over the targets
/// that hold it, from their copies' own, so that `kubectl wait
/// --for=condition=Available` and `kubectl rollout status` work upstream:
/// `Available` is `True` once every holder's copy is available; `Progressing`
/// is `False` with a holder's reason (`ProgressDeadlineExceeded`) when one
/// has given up, `True` when every holder progresses, else `Unknown`. No
/// timestamps: the aggregate changes only when a holder's verdict does.
fn held_conditions(recorded: &BTreeMap<String, Recorded>) -> [Value; 2] {
    let holders: Vec<(&String, Option<&Value>)> = recorded
        .iter()
        .filter(|(_, r)| r.holds())
        .map(|(t, r)| (t, r.status.as_ref().and_then(|s| s.status.as_ref())))
        .collect();
    let of = |status: Option<&Value>, type_: &str| -> Option<(String, String)> {
        let condition = status?
            .get("conditions")?
            .as_array()?
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?;
        let field = |name: &str| {
            condition
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some((field("status"), field("reason")))
    };
    let condition = |type_: &str, status: &str, reason: &str, message: String| serde_json::json!({"type": type_, "status": status, "reason": reason, "message": message});
    let names = |targets: &[&String]| {
        targets
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };

    let unavailable: Vec<&String> = holders
        .iter()
        .filter(|(_, s)| of(*s, "Available").is_none_or(|(status, _)| status != "True"))
        .map(|(t, _)| *t)
        .collect();
    let available = match unavailable.is_empty() {
        true => condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            format!(
                "available on every target: {}",
                names(&holders.iter().map(|(t, _)| *t).collect::<Vec<_>>())
            ),
        ),
        false => condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            format!("not available yet on {}", names(&unavailable)),
        ),
    };

    let progressing: Vec<(&String, Option<(String, String)>)> = holders
        .iter()
        .map(|(t, s)| (*t, of(*s, "Progressing")))
        .collect();
    let stuck = progressing.iter().find_map(|(t, c)| {
        c.as_ref()
            .filter(|(status, _)| status == "False")
            .map(|(_, reason)| (*t, reason))
    });
    let progressing = match stuck {
        Some((target, reason)) => condition(
            "Progressing",
            "False",
            reason,
            format!("{target}: its copy does not progress ({reason})"),
        ),
        None if progressing.iter().all(|(_, c)| c.is_some()) => {
            let done = progressing.iter().all(|(_, c)| {
                c.as_ref()
                    .is_some_and(|(_, reason)| reason == "NewReplicaSetAvailable")
            });
            match done {
                true => condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    "rolled out on every target".into(),
                ),
                false => condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    "rolling out on the targets".into(),
                ),
            }
        }
        None => condition(
            "Progressing",
            "Unknown",
            "NotReported",
            format!(
                "no progress reported yet by {}",
                names(
                    &progressing
                        .iter()
                        .filter(|(_, c)| c.is_none())
                        .map(|(t, _)| *t)
                        .collect::<Vec<_>>()
                )
            ),
        ),
    };
    [available, progressing]
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
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "not available yet on east, west"},
                    {"type": "Progressing", "status": "Unknown", "reason": "NotReported", "message": "no progress reported yet by east, west"},
                    {"type": "Synced", "status": "True", "reason": "Synced", "message": "every target applied its copy"}]})
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
            status["conditions"][2],
            json!({"type": "Synced", "status": "False", "reason": "SyncFailed",
                "message": "east: waiting for ConfigMap demo/cfg: it does not exist in the workspace"})
        );
        assert_eq!(status["availableReplicas"], json!(0));
    }

    /// A copy's status with its own `Available` and `Progressing` conditions.
    fn copy(available: &str, progressing: (&str, &str)) -> Value {
        json!({"status": {"replicas": 1, "conditions": [
            {"type": "Available", "status": available, "lastUpdateTime": "2026-12-04T10:00:00Z"},
            {"type": "Progressing", "status": progressing.0, "reason": progressing.1},
        ]}})
    }

    #[test]
    fn a_deployment_is_available_once_every_holder_is() {
        let conditions = |reports: &[(&str, Value)], deleting: &[&str]| {
            let status = aggregate("Deployment", &recorded(reports, deleting)).expect("status");
            let conditions = status["conditions"].as_array().expect("conditions").clone();
            conditions
                .into_iter()
                .map(|c| {
                    let field = |f: &str| c[f].as_str().unwrap_or_default().to_string();
                    (
                        field("type"),
                        field("status"),
                        field("reason"),
                        field("message"),
                    )
                })
                .collect::<Vec<_>>()
        };
        let done = ("True", "NewReplicaSetAvailable");
        let all = conditions(
            &[
                ("west", copy("True", done)),
                ("east", copy("True", done)),
                ("old", copy("False", done)),
            ],
            &["old"],
        );
        assert_eq!(all[0].1, "True", "{all:?}");
        assert_eq!(all[0].3, "available on every target: east, west");
        assert_eq!(
            (all[1].1.as_str(), all[1].2.as_str()),
            ("True", "NewReplicaSetAvailable")
        );

        let east_not_yet = conditions(
            &[
                ("west", copy("True", done)),
                ("east", copy("False", ("True", "ReplicaSetUpdated"))),
            ],
            &[],
        );
        assert_eq!(
            (east_not_yet[0].1.as_str(), east_not_yet[0].3.as_str()),
            ("False", "not available yet on east")
        );
        assert_eq!(
            (east_not_yet[1].1.as_str(), east_not_yet[1].2.as_str()),
            ("True", "ReplicaSetUpdated")
        );

        let stuck = conditions(
            &[
                ("west", copy("True", done)),
                ("east", copy("False", ("False", "ProgressDeadlineExceeded"))),
            ],
            &[],
        );
        assert_eq!(
            stuck[1],
            (
                "Progressing".to_string(),
                "False".to_string(),
                "ProgressDeadlineExceeded".to_string(),
                "east: its copy does not progress (ProgressDeadlineExceeded)".to_string()
            )
        );
        // The copies' timestamps are not carried up: the same verdicts, the same status.
        let later = copy("True", done)
            .to_string()
            .replace("10:00:00", "10:05:00");
        let again = conditions(
            &[
                ("west", serde_json::from_str(&later).expect("json")),
                ("east", copy("True", done)),
            ],
            &[],
        );
        assert_eq!(again, all);
        // Other kinds with replicas have no such conditions of their own.
        let rec = recorded(&[("west", copy("True", done))], &[]);
        let status = aggregate("StatefulSet", &rec).expect("status");
        assert_eq!(status["conditions"].as_array().map(Vec::len), Some(1));
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
