//! The one reader and writer of the decision protocol (see [`crate::decision`]
//! for the keys): what an upstream object records per target, parsed into
//! [`Recorded`], and the merge patches a target's syncer writes back.
//!
//! tmcd reads every target of an object at once ([`read`]); a syncer reads
//! its own target together with the object-level facts it acts on
//! ([`TargetRecord`]). Both go through the same per-key parsing, so the two
//! sides cannot read one object differently.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::decision::{
    DELETION_ANNOTATION_PREFIX, MANAGED_LABEL, RESULT_ANNOTATION_PREFIX, STATE_LABEL_PREFIX,
    STATE_SYNC, STATUS_ANNOTATION_PREFIX, SYNC_TARGET_ANNOTATION, SYNCED_FROM_LABEL, TargetResult,
    TargetStatus, deletion_annotation, finalizer, result_annotation, state_label,
    status_annotation,
};

/// What an upstream object records about one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// State label value (`Sync`), if present.
    pub state: Option<String>,
    /// The result annotation as written (its [`result_digest`](crate::decision::result_digest)
    /// identifies the decision a syncer reports on).
    pub result_raw: Option<String>,
    /// The result annotation parsed (`None` if absent or not a valid [`TargetResult`]).
    pub result: Option<TargetResult>,
    /// A deletion request is pending.
    pub deleting: bool,
    /// What the target's syncer reports (`None` if absent or unreadable).
    pub status: Option<TargetStatus>,
    /// A status annotation is present (parsed into `status` when it is readable).
    pub status_raw: bool,
}

impl Recorded {
    /// The target holds (or must hold) a copy and is not being asked to remove it.
    pub fn holds(&self) -> bool {
        self.state.as_deref() == Some(STATE_SYNC) && !self.deleting
    }

    /// The target's syncer reports a copy that the object records no
    /// decision for (another writer wiped the state label): the copy runs
    /// there, and only a decision of tmcd may keep or remove it.
    pub fn unrecorded_copy(&self) -> bool {
        self.state.is_none() && !self.deleting && self.status.is_some()
    }

    /// A copy runs (or must run) on the target: [`Self::holds`] or
    /// [`Self::unrecorded_copy`].
    pub fn runs_copy(&self) -> bool {
        self.holds() || self.unrecorded_copy()
    }

    /// True when the object carries any of the target's label or annotations.
    pub fn is_present(&self) -> bool {
        self.state.is_some() || self.result_raw.is_some() || self.deleting || self.status_raw
    }

    fn set_result(&mut self, raw: &str) {
        self.result_raw = Some(raw.to_string());
        self.result = serde_json::from_str(raw).ok();
    }

    fn set_status(&mut self, raw: &str) {
        self.status_raw = true;
        self.status = serde_json::from_str(raw).ok();
    }
}

/// Per target name, everything an object with these labels and annotations
/// records (targets are named by any of their keys; finalizers are not read).
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
            out.entry(t.to_string()).or_default().set_result(value);
        } else if let Some(t) = key.strip_prefix(DELETION_ANNOTATION_PREFIX) {
            out.entry(t.to_string()).or_default().deleting = true;
        } else if let Some(t) = key.strip_prefix(STATUS_ANNOTATION_PREFIX) {
            out.entry(t.to_string()).or_default().set_status(value);
        }
    }
    out
}

/// What the upstream object asks of a target's syncer.
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

/// What one upstream object records for one target, with the object-level
/// facts its syncer acts on (finalizers, deletion, resourceVersion).
///
/// ```
/// use serde_json::json;
/// use tmc_api::protocol::{Assignment, TargetRecord};
///
/// let object = json!({"metadata": {"name": "web", "resourceVersion": "7",
///     "labels": {"state.workload.kcp.io/west": "Sync"}}});
/// let west = TargetRecord::from_value(&object, "west");
/// assert_eq!(west.assignment(), Assignment::Sync);
/// // The syncer's first write: its finalizer, guarded by the resourceVersion.
/// assert_eq!(
///     west.add_finalizer_patch(),
///     Some(json!({"metadata": {"resourceVersion": "7",
///         "finalizers": ["workload.kcp.io/syncer-west"]}}))
/// );
/// assert_eq!(TargetRecord::from_value(&object, "east").assignment(), Assignment::Undecided);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetRecord {
    /// The SyncTarget name.
    pub target: String,
    /// The target's keys (all empty when the object records nothing for it).
    pub recorded: Recorded,
    /// Every finalizer of the object.
    pub finalizers: Vec<String>,
    /// The object has a deletion timestamp.
    pub terminating: bool,
    /// The object's `metadata.resourceVersion`, the precondition of the patches.
    pub resource_version: Option<String>,
}

impl TargetRecord {
    /// Reads `target`'s record from typed object metadata.
    pub fn from_meta(meta: &ObjectMeta, target: &str) -> Self {
        let label = |key: &str| meta.labels.as_ref()?.get(key).map(String::as_str);
        let annotation = |key: &str| meta.annotations.as_ref()?.get(key).map(String::as_str);
        Self {
            target: target.to_string(),
            recorded: read_target(label, annotation, target),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            terminating: meta.deletion_timestamp.is_some(),
            resource_version: meta.resource_version.clone(),
        }
    }

    /// Reads `target`'s record from an object as JSON (its `metadata`; keys
    /// and finalizers that are not strings are ignored).
    pub fn from_value(object: &Value, target: &str) -> Self {
        let finalizers = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            target: target.to_string(),
            recorded: read_target(
                |key| label(object, key),
                |key| annotation(object, key),
                target,
            ),
            finalizers,
            terminating: is_terminating(object),
            resource_version: object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    /// What the object asks of the target's syncer.
    pub fn assignment(&self) -> Assignment {
        if self.terminating || self.recorded.deleting {
            Assignment::Remove
        } else if self.recorded.state.as_deref() == Some(STATE_SYNC) {
            Assignment::Sync
        } else {
            Assignment::Undecided
        }
    }

    /// True when the object holds the target's finalizer.
    pub fn has_finalizer(&self) -> bool {
        let ours = finalizer(&self.target);
        self.finalizers.contains(&ours)
    }

    /// True when the object carries any of the target's protocol keys
    /// (state label, result, deletion or status annotation, finalizer).
    pub fn has_protocol_keys(&self) -> bool {
        self.recorded.is_present() || self.has_finalizer()
    }

    /// Merge patch adding the target's finalizer, guarded by the object's
    /// resourceVersion (a concurrent change makes it fail with 409, then
    /// retry). `None` when the finalizer is already there.
    pub fn add_finalizer_patch(&self) -> Option<Value> {
        if self.has_finalizer() {
            return None;
        }
        let mut list = self.finalizers.clone();
        list.push(finalizer(&self.target));
        Some(json!({"metadata": {"resourceVersion": self.resource_version, "finalizers": list}}))
    }

    /// Merge patch removing all of the target's protocol keys (state label,
    /// result, deletion and status annotations, finalizer), guarded by the
    /// object's resourceVersion.
    pub fn cleanup_patch(&self) -> Value {
        let target = &self.target;
        let mut patch = json!({"metadata": {
            "resourceVersion": self.resource_version,
            "labels": {state_label(target): null},
            "annotations": {
                result_annotation(target): null,
                deletion_annotation(target): null,
                status_annotation(target): null,
            },
        }});
        if self.has_finalizer() {
            let ours = finalizer(target);
            let rest: Vec<&String> = self.finalizers.iter().filter(|f| **f != ours).collect();
            patch["metadata"]["finalizers"] = json!(rest);
        }
        patch
    }

    /// Merge patch setting the target's status annotation; `None` when the
    /// object already reports exactly `status` (a syncer writes only on change).
    pub fn status_patch(&self, status: &TargetStatus) -> Option<Value> {
        if self.recorded.status.as_ref() == Some(status) {
            return None;
        }
        let raw = serde_json::to_string(status).ok()?;
        Some(json!({"metadata": {"annotations": {status_annotation(&self.target): raw}}}))
    }
}

/// The keys of one target, looked up one by one (no scan of every key).
fn read_target<'a>(
    label: impl Fn(&str) -> Option<&'a str>,
    annotation: impl Fn(&str) -> Option<&'a str>,
    target: &str,
) -> Recorded {
    let mut recorded = Recorded {
        state: label(&state_label(target)).map(str::to_string),
        deleting: annotation(&deletion_annotation(target)).is_some(),
        ..Recorded::default()
    };
    if let Some(raw) = annotation(&result_annotation(target)) {
        recorded.set_result(raw);
    }
    if let Some(raw) = annotation(&status_annotation(target)) {
        recorded.set_status(raw);
    }
    recorded
}

/// [`TargetRecord::add_finalizer_patch`] of `object` for `target`.
pub fn add_finalizer_patch(object: &Value, target: &str) -> Option<Value> {
    TargetRecord::from_value(object, target).add_finalizer_patch()
}

/// True when `object` (upstream or downstream) has a deletion timestamp.
pub fn is_terminating(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// True when the downstream `object` is a copy made by `target`'s syncer
/// for the source `synced_from`: labelled managed, from that source, for
/// that target.
pub fn is_our_copy(object: &Value, target: &str, synced_from: &str) -> bool {
    label(object, MANAGED_LABEL) == Some("true")
        && label(object, SYNCED_FROM_LABEL) == Some(synced_from)
        && annotation(object, SYNC_TARGET_ANNOTATION) == Some(target)
}

/// The label selector of the downstream copies made for the source
/// `synced_from` (by any target's syncer: [`is_our_copy`] tells them apart).
pub fn our_copies_selector(synced_from: &str) -> String {
    format!("{MANAGED_LABEL}=true,{SYNCED_FROM_LABEL}={synced_from}")
}

/// The value of label `key` on `object` (a Kubernetes object as JSON).
pub fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/labels")?.get(key)?.as_str()
}

/// The value of annotation `key` on `object` (a Kubernetes object as JSON).
pub fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/annotations")?.get(key)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::result_digest;

    fn object(labels: Value, annotations: Value, finalizers: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
            "labels": labels, "annotations": annotations, "finalizers": finalizers}})
    }

    fn assignment(object: &Value, target: &str) -> Assignment {
        TargetRecord::from_value(object, target).assignment()
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
    fn typed_metadata_and_json_read_the_same_record() {
        let value = object(
            json!({"state.workload.kcp.io/west": "Sync", "app": "web"}),
            json!({
                "result.workload.kcp.io/west": r#"{"replicas":2}"#,
                "status.workload.kcp.io/west": r#"{"appliedHash":"h"}"#,
                "deletion.internal.workload.kcp.io/east": "2026-01-01T00:00:00Z",
            }),
            json!(["other", "workload.kcp.io/syncer-west"]),
        );
        let meta: ObjectMeta = serde_json::from_value(value["metadata"].clone()).unwrap();
        for target in ["west", "east", "north"] {
            let from_value = TargetRecord::from_value(&value, target);
            assert_eq!(TargetRecord::from_meta(&meta, target), from_value);
            // The syncer's one-target read agrees with tmcd's read of every target.
            let all = read(
                meta.labels.as_ref().unwrap(),
                meta.annotations.as_ref().unwrap(),
            );
            assert_eq!(
                all.get(target).cloned().unwrap_or_default(),
                from_value.recorded,
                "{target}"
            );
        }
        let west = TargetRecord::from_value(&value, "west");
        assert_eq!(
            west.recorded.result.as_ref().and_then(|r| r.replicas),
            Some(2)
        );
        assert!(west.has_finalizer() && west.has_protocol_keys());
        assert!(!TargetRecord::from_value(&value, "north").has_protocol_keys());
        assert!(TargetRecord::from_value(&value, "east").has_protocol_keys());
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
        let patch = TargetRecord::from_value(&obj, "west").cleanup_patch();
        assert_eq!(patch["metadata"]["resourceVersion"], json!("7"));
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
        // Without our finalizer the patch leaves the finalizers alone.
        let no_finalizer = object(json!({}), json!({}), json!(["other"]));
        let patch = TargetRecord::from_value(&no_finalizer, "west").cleanup_patch();
        assert!(patch["metadata"].get("finalizers").is_none(), "{patch}");
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
        let patch = TargetRecord::from_value(&obj, "west")
            .status_patch(&status)
            .unwrap();
        let raw = patch["metadata"]["annotations"]["status.workload.kcp.io/west"]
            .as_str()
            .unwrap();
        let mut reported = obj.clone();
        reported["metadata"]["annotations"]["status.workload.kcp.io/west"] = json!(raw);
        let record = TargetRecord::from_value(&reported, "west");
        assert_eq!(record.recorded.status.as_ref(), Some(&status));
        assert_eq!(record.status_patch(&status), None);
        let changed = TargetStatus {
            observed_generation: Some(3),
            ..status
        };
        assert!(record.status_patch(&changed).is_some());
    }

    #[test]
    fn reads_every_target() {
        let labels: BTreeMap<String, String> = [
            (state_label("west"), "Sync".into()),
            (state_label("east"), "Sync".into()),
            ("app".into(), "x".into()),
        ]
        .into();
        let annotations: BTreeMap<String, String> = [
            (result_annotation("west"), r#"{"replicas":2}"#.into()),
            (result_annotation("east"), "not json".into()),
            (deletion_annotation("east"), "2026-01-01T00:00:00Z".into()),
            (
                status_annotation("west"),
                r#"{"appliedHash":"h","observedGeneration":3,"resultDigest":"d"}"#.into(),
            ),
        ]
        .into();
        let rec = read(&labels, &annotations);
        assert_eq!(rec.keys().collect::<Vec<_>>(), ["east", "west"]);
        assert!(rec["west"].holds() && !rec["east"].holds());
        assert!(rec["east"].deleting);
        assert_eq!(rec["east"].result, None, "an unreadable result");
        assert_eq!(rec["east"].result_raw.as_deref(), Some("not json"));
        let status = rec["west"].status.as_ref().unwrap();
        assert_eq!(
            (status.applied_hash.as_str(), status.result_digest.as_str()),
            ("h", "d")
        );
        assert_ne!(result_digest(rec["west"].result_raw.as_deref()), "");
        // A copy reported without a state label (wiped by another writer) still runs there.
        let wiped: BTreeMap<String, String> = [(
            status_annotation("south"),
            r#"{"appliedHash":"h"}"#.to_string(),
        )]
        .into();
        let rec = read(&BTreeMap::new(), &wiped);
        assert!(rec["south"].unrecorded_copy() && rec["south"].runs_copy());
        assert!(!rec["south"].holds());
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
