//! The decision protocol: how tmcd records on an upstream object where it is
//! placed and what each target's copy looks like, so that the decision
//! survives a restart and a pull-mode syncer can act on it alone.
//!
//! On the upstream (workspace) object, per target `<t>` (the SyncTarget name):
//! - label `state.workload.kcp.io/<t>` = `Sync`: `<t>` must hold a copy;
//! - annotation `result.workload.kcp.io/<t>`: a [`TargetResult`] as JSON
//!   (replicas and the label/annotation edits of the transformation policies);
//! - annotation `deletion.internal.workload.kcp.io/<t>` (RFC 3339 time): tmcd asks
//!   `<t>`'s syncer to remove its copy (the workload was placed elsewhere and the
//!   new targets hold their copies); the syncer then removes the state label,
//!   the result, this annotation and its finalizer;
//! - annotation `status.workload.kcp.io/<t>`: a [`TargetStatus`] as JSON, written
//!   by `<t>`'s syncer (what it applied, and the copy's `.status`);
//! - finalizer `workload.kcp.io/syncer-<t>`: an upstream delete waits until `<t>`'s
//!   copy is gone.
//!
//! On every downstream (physical cluster) copy: the labels
//! [`MANAGED_LABEL`] and [`SYNCED_FROM_LABEL`], the annotations
//! [`SOURCE_CLUSTER_ANNOTATION`], [`SYNC_TARGET_ANNOTATION`],
//! [`SYNC_TIMESTAMP_ANNOTATION`] (changes only when the content does) and
//! [`CONTENT_HASH_ANNOTATION`].
//!
//! [`crate::protocol`] reads these keys and writes the syncer's patches.

use serde::{Deserialize, Serialize};
use tmc_policy_sdk::MapEdits;

/// Prefix of the per-target state label.
pub const STATE_LABEL_PREFIX: &str = "state.workload.kcp.io/";
/// Value of the state label for a target that must hold a copy.
pub const STATE_SYNC: &str = "Sync";
/// Prefix of the per-target result annotation.
pub const RESULT_ANNOTATION_PREFIX: &str = "result.workload.kcp.io/";
/// Prefix of the per-target deletion request annotation.
pub const DELETION_ANNOTATION_PREFIX: &str = "deletion.internal.workload.kcp.io/";
/// Prefix of the per-target status annotation.
pub const STATUS_ANNOTATION_PREFIX: &str = "status.workload.kcp.io/";
/// Prefix of the per-target upstream finalizer.
pub const FINALIZER_PREFIX: &str = "workload.kcp.io/syncer-";

/// Downstream label: the object is managed by tmc (value `true`).
pub const MANAGED_LABEL: &str = "workload.kcp.io/managed";
/// Downstream label: which workspace (sanitized to a label value) the object comes from.
pub const SYNCED_FROM_LABEL: &str = "workload.kcp.io/synced-from";
/// Downstream annotation: the source control plane (workspace path).
pub const SOURCE_CLUSTER_ANNOTATION: &str = "workload.kcp.io/source-cluster";
/// Downstream annotation: the SyncTarget the copy belongs to.
pub const SYNC_TARGET_ANNOTATION: &str = "workload.kcp.io/sync-target";
/// Downstream annotation: when the copy's content last changed (RFC 3339).
pub const SYNC_TIMESTAMP_ANNOTATION: &str = "workload.kcp.io/sync-timestamp";
/// Downstream annotation: digest of the copy's desired content, to detect change.
pub const CONTENT_HASH_ANNOTATION: &str = "workload.kcp.io/content-hash";
/// Downstream annotation: the upstream namespace, for prefixed namespace mapping.
pub const UPSTREAM_NAMESPACE_ANNOTATION: &str = "workload.kcp.io/upstream-namespace";

/// Field manager of every write tmc makes.
pub const FIELD_MANAGER: &str = "tmc";

/// Label key of the state label for `target`.
pub fn state_label(target: &str) -> String {
    format!("{STATE_LABEL_PREFIX}{target}")
}

/// Annotation key of the result for `target`.
pub fn result_annotation(target: &str) -> String {
    format!("{RESULT_ANNOTATION_PREFIX}{target}")
}

/// Annotation key of the deletion request for `target`.
pub fn deletion_annotation(target: &str) -> String {
    format!("{DELETION_ANNOTATION_PREFIX}{target}")
}

/// Annotation key of the status reported by `target`'s syncer.
pub fn status_annotation(target: &str) -> String {
    format!("{STATUS_ANNOTATION_PREFIX}{target}")
}

/// Finalizer that `target`'s syncer removes once its copy is gone.
pub fn finalizer(target: &str) -> String {
    format!("{FINALIZER_PREFIX}{target}")
}

/// Digest of a result annotation's raw text, as the syncer reports it back
/// in [`TargetStatus::result_digest`] (hex of the first 8 bytes of SHA-256;
/// `""` when the object records no result for the target).
pub fn result_digest(raw: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    match raw {
        Some(raw) => hex::encode(&Sha256::digest(raw.as_bytes())[..8]),
        None => String::new(),
    }
}

/// What tmcd decided for one target's copy of a workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetResult {
    /// Replicas for this target (kinds with replicas only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Label edits from the transformation policies, in order.
    #[serde(default, skip_serializing_if = "MapEdits::is_empty")]
    pub labels: MapEdits,
    /// Annotation edits from the transformation policies, in order.
    #[serde(default, skip_serializing_if = "MapEdits::is_empty")]
    pub annotations: MapEdits,
    /// The placement that decided.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub placement: String,
    /// Policy generation the decision was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_generation: Option<u64>,
}

/// What a target's syncer reports back about its copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// Digest of the copy content the syncer last applied successfully.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub applied_hash: String,
    /// The upstream `metadata.generation` that was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// [`result_digest`] of the result annotation the applied copy was built
    /// from: tmcd counts a report only for the decision it currently records
    /// (a new result changes no upstream generation).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub result_digest: String,
    /// The copy's own `metadata.generation` when `status` was read, so that a
    /// `.status` older than the copy's spec (its `observedGeneration` lower)
    /// is not taken as the status of the current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_generation: Option<i64>,
    /// Who owns the copy's replicas when the physical cluster does (e.g.
    /// `HorizontalPodAutoscaler/web`; see `crate::replicas`): tmcd then counts
    /// the copy's own replicas as its desired count, not the decision's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_owner: Option<String>,
    /// The copy's `spec.replicas` as its owner set it (only with `replicas_owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_replicas: Option<i64>,
    /// The copy's `.status` on the physical cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    /// Last apply error, if the copy could not be applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_target() {
        assert_eq!(state_label("west"), "state.workload.kcp.io/west");
        assert_eq!(result_annotation("west"), "result.workload.kcp.io/west");
        assert_eq!(
            deletion_annotation("west"),
            "deletion.internal.workload.kcp.io/west"
        );
        assert_eq!(status_annotation("west"), "status.workload.kcp.io/west");
        assert_eq!(finalizer("west"), "workload.kcp.io/syncer-west");
    }

    #[test]
    fn result_digest_is_the_first_8_bytes_of_sha256() {
        // SHA-256 of `{}` starts 44136fa3 55b3678a.
        assert_eq!(result_digest(Some("{}")), "44136fa355b3678a");
        assert_eq!(result_digest(None), "");
    }

    #[test]
    fn empty_fields_are_left_out_of_the_json() {
        let result = TargetResult {
            replicas: Some(2),
            ..TargetResult::default()
        };
        assert_eq!(serde_json::to_string(&result).unwrap(), r#"{"replicas":2}"#);
        assert_eq!(
            serde_json::to_string(&TargetStatus::default()).unwrap(),
            "{}"
        );
        let status: TargetStatus =
            serde_json::from_str(r#"{"appliedHash":"h","resultDigest":"d","copyGeneration":4}"#)
                .unwrap();
        assert_eq!(
            (status.applied_hash.as_str(), status.result_digest.as_str()),
            ("h", "d")
        );
        assert_eq!(status.copy_generation, Some(4));
    }
}
