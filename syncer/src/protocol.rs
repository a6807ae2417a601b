//! Reading the decision protocol on an upstream object and the patches the
//! syncer writes back (see [`crate::decision`] for the keys).

use serde_json::{Value, json};

use crate::copy::{annotation, label};
use crate::decision::{
    MANAGED_LABEL, STATE_SYNC, SYNC_TARGET_ANNOTATION, SYNCED_FROM_LABEL, TargetStatus,
    deletion_annotation, finalizer, result_annotation, state_label, status_annotation,
};

/// What the upstream object asks of this target's syncer.
///
/// A copy is removed only on a positive statement: tmcd's deletion request
/// for this target, or the upstream object's own deletion. The absence of
/// the protocol keys is no such statement: another writer (`kubectl
/// replace`, a plain PUT, `helm --force`) can drop them, and a forgotten
/// (deleted) SyncTarget loses them on purpose; its copies are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// The target must hold a copy.
    Sync,
    /// The copy must go, then the protocol keys: tmcd asked for it (deletion
    /// annotation), or the upstream object is being deleted.
    Remove,
    /// The object records no decision for this target (no `Sync` state label
    /// and no removal): nothing is applied and nothing is deleted; a copy
    /// left downstream stays as it is until tmcd records a decision again.
    Undecided,
}

/// Decides what `object` asks of `target`'s syncer.
pub fn assignment(object: &Value, target: &str) -> Assignment {
    let asked_to_delete = annotation(object, &deletion_annotation(target)).is_some();
    let labelled = label(object, &state_label(target)) == Some(STATE_SYNC);
    if is_terminating(object) || asked_to_delete {
        Assignment::Remove
    } else if labelled {
        Assignment::Sync
    } else {
        Assignment::Undecided
    }
}

/// True when `object` has a deletion timestamp (it is being deleted).
pub fn is_terminating(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// True when `object` carries any of `target`'s protocol keys.
pub fn has_protocol_keys(object: &Value, target: &str) -> bool {
    label(object, &state_label(target)).is_some()
        || annotation(object, &result_annotation(target)).is_some()
        || annotation(object, &deletion_annotation(target)).is_some()
        || annotation(object, &status_annotation(target)).is_some()
        || has_finalizer(object, target)
}

/// Finalizers of `object`.
fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// True when `object` holds `target`'s finalizer.
pub fn has_finalizer(object: &Value, target: &str) -> bool {
    finalizers(object).contains(&finalizer(target))
}

fn resource_version(object: &Value) -> Value {
    object
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Merge patch adding `target`'s finalizer, guarded by the object's
/// resourceVersion (a concurrent change makes it fail with 409, then retry).
/// `None` when the finalizer is already there.
pub fn add_finalizer_patch(object: &Value, target: &str) -> Option<Value> {
    if has_finalizer(object, target) {
        return None;
    }
    let mut list = finalizers(object);
    list.push(finalizer(target));
    Some(json!({"metadata": {"resourceVersion": resource_version(object), "finalizers": list}}))
}

/// Merge patch removing all of `target`'s protocol keys (state label, result,
/// deletion and status annotations, finalizer), guarded by resourceVersion.
pub fn cleanup_patch(object: &Value, target: &str) -> Value {
    let mut patch = json!({"metadata": {
        "resourceVersion": resource_version(object),
        "labels": {state_label(target): null},
        "annotations": {
            result_annotation(target): null,
            deletion_annotation(target): null,
            status_annotation(target): null,
        },
    }});
    if has_finalizer(object, target) {
        let ours = finalizer(target);
        let rest: Vec<String> = finalizers(object)
            .into_iter()
            .filter(|f| *f != ours)
            .collect();
        patch["metadata"]["finalizers"] = json!(rest);
    }
    patch
}

/// The status `target`'s syncer last reported on `object`, if readable.
pub fn reported_status(object: &Value, target: &str) -> Option<TargetStatus> {
    annotation(object, &status_annotation(target)).and_then(|raw| serde_json::from_str(raw).ok())
}

/// Merge patch setting `target`'s status annotation; `None` when `object`
/// already reports exactly `status` (the syncer writes only on change).
pub fn status_patch(object: &Value, target: &str, status: &TargetStatus) -> Option<Value> {
    if reported_status(object, target).as_ref() == Some(status) {
        return None;
    }
    let raw = serde_json::to_string(status).ok()?;
    Some(json!({"metadata": {"annotations": {status_annotation(target): raw}}}))
}

/// True when the downstream `object` is a copy made by this syncer: labelled
/// managed, from our source, for our target.
pub fn is_our_copy(object: &Value, target: &str, synced_from: &str) -> bool {
    label(object, MANAGED_LABEL) == Some("true")
        && label(object, SYNCED_FROM_LABEL) == Some(synced_from)
        && annotation(object, SYNC_TARGET_ANNOTATION) == Some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(labels: Value, annotations: Value, finalizers: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
            "labels": labels, "annotations": annotations, "finalizers": finalizers}})
    }

    #[test]
    fn assignment_follows_the_protocol() {
        let sync = object(
            json!({"state.workload.kcp.io/west": "Sync"}),
            json!({}),
            json!([]),
        );
        assert_eq!(assignment(&sync, "west"), Assignment::Sync);
        assert_eq!(assignment(&sync, "east"), Assignment::Undecided);

        let asked = object(
            json!({"state.workload.kcp.io/west": "Sync"}),
            json!({"deletion.internal.workload.kcp.io/west": "2026-01-01T00:00:00Z"}),
            json!(["workload.kcp.io/syncer-west"]),
        );
        assert_eq!(assignment(&asked, "west"), Assignment::Remove);

        let mut deleting = sync.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(assignment(&deleting, "west"), Assignment::Remove);

        // Keys wiped or half-wiped by another writer are no removal.
        let only_finalizer = object(json!({}), json!({}), json!(["workload.kcp.io/syncer-west"]));
        assert_eq!(assignment(&only_finalizer, "west"), Assignment::Undecided);
        let label_dropped = object(
            json!({}),
            json!({"result.workload.kcp.io/west": "{}", "status.workload.kcp.io/west": "{}"}),
            json!([]),
        );
        assert_eq!(assignment(&label_dropped, "west"), Assignment::Undecided);
        let other_value = object(
            json!({"state.workload.kcp.io/west": "Pending"}),
            json!({}),
            json!([]),
        );
        assert_eq!(assignment(&other_value, "west"), Assignment::Undecided);
    }

    #[test]
    fn finalizer_patch_keeps_other_finalizers_and_guards_the_version() {
        let obj = object(json!({}), json!({}), json!(["other"]));
        let patch = add_finalizer_patch(&obj, "west").unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "7", "finalizers": ["other", "workload.kcp.io/syncer-west"]}})
        );
        let done = object(json!({}), json!({}), json!(["workload.kcp.io/syncer-west"]));
        assert_eq!(add_finalizer_patch(&done, "west"), None);
    }

    #[test]
    fn cleanup_removes_only_our_keys() {
        let obj = object(
            json!({"state.workload.kcp.io/west": "Sync", "state.workload.kcp.io/east": "Sync"}),
            json!({"result.workload.kcp.io/west": "{}", "result.workload.kcp.io/east": "{}"}),
            json!(["workload.kcp.io/syncer-west", "workload.kcp.io/syncer-east"]),
        );
        let patch = cleanup_patch(&obj, "west");
        assert_eq!(
            patch["metadata"]["labels"],
            json!({"state.workload.kcp.io/west": null})
        );
        assert_eq!(
            patch["metadata"]["finalizers"],
            json!(["workload.kcp.io/syncer-east"])
        );
        assert_eq!(
            patch["metadata"]["annotations"]["status.workload.kcp.io/west"],
            Value::Null
        );
        assert!(
            patch["metadata"]["annotations"]
                .get("result.workload.kcp.io/east")
                .is_none()
        );
    }

    #[test]
    fn status_is_written_only_when_it_changes() {
        let status = TargetStatus {
            applied_hash: "abc".into(),
            observed_generation: Some(2),
            status: Some(json!({"readyReplicas": 2})),
            error: None,
            ..TargetStatus::default()
        };
        let obj = object(json!({}), json!({}), json!([]));
        let patch = status_patch(&obj, "west", &status).unwrap();
        let raw = patch["metadata"]["annotations"]["status.workload.kcp.io/west"]
            .as_str()
            .unwrap();
        let mut reported = obj.clone();
        reported["metadata"]["annotations"]["status.workload.kcp.io/west"] = json!(raw);
        assert_eq!(status_patch(&reported, "west", &status), None);
        let changed = TargetStatus {
            observed_generation: Some(3),
            ..status
        };
        assert!(status_patch(&reported, "west", &changed).is_some());
    }

    #[test]
    fn our_copies_need_all_three_marks() {
        let copy = json!({"metadata": {
            "labels": {"workload.kcp.io/managed": "true", "workload.kcp.io/synced-from": "root-a"},
            "annotations": {"workload.kcp.io/sync-target": "west"}}});
        assert!(is_our_copy(&copy, "west", "root-a"));
        assert!(!is_our_copy(&copy, "east", "root-a"));
        assert!(!is_our_copy(&copy, "west", "root-b"));
        assert!(!is_our_copy(
            &json!({"metadata": {"name": "x"}}),
            "west",
            "root-a"
        ));
    }
}
