//! Errors of the syncer and helpers to classify Kubernetes API errors.

use std::time::Duration;

/// Everything that can go wrong while syncing one target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the upstream (workspace) API failed.
    #[error("upstream {action}: {source}")]
    Upstream {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// A call to the downstream (physical cluster) API failed.
    #[error("downstream {action}: {source}")]
    Downstream {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// A resource string such as `apps/v1/Deployment` could not be parsed.
    #[error(
        "invalid resource {input:?}: {reason} (expected GROUP/VERSION/Kind, or VERSION/Kind for the core group, e.g. apps/v1/Deployment or v1/ConfigMap)"
    )]
    InvalidKind { input: String, reason: String },
    /// A namespace mapping string could not be parsed.
    #[error(
        "invalid namespace mapping {input:?}: expected `same` or `prefix:<prefix>` (e.g. prefix:tmc)"
    )]
    InvalidNamespaceMapping { input: String },
    /// A replicas owner that is neither `autoscaler` nor `cluster`.
    #[error(
        "invalid replicas owner {input:?}: expected `autoscaler` (the cluster owns the replicas of copies a HorizontalPodAutoscaler targets) or `cluster` (of every copy)"
    )]
    InvalidReplicasPolicy { input: String },
    /// The upstream object or the protocol keys on it are malformed.
    #[error("object {object}: {reason}")]
    InvalidObject { object: String, reason: String },
    /// A downstream object with the copy's name exists but tmc does not manage it.
    #[error(
        "downstream {object} exists and is not managed by tmc (no {label}=true label, or another sync target/workspace); rename or remove it, tmc never touches objects it does not own"
    )]
    NotOwned { object: String, label: &'static str },
    /// A copy of the object runs in a namespace another namespace mapping chose.
    #[error(
        "a copy of {object} runs in namespace {namespace}, written under another namespace mapping; this syncer maps namespaces as `{mapping}` and never moves, duplicates or deletes copies across namespaces (fix: set the namespace mapping back to the one that wrote it, or remove that copy, e.g. move the workload off this target first, before changing the mapping)"
    )]
    StrandedCopy {
        object: String,
        namespace: String,
        mapping: String,
    },
    /// A workspace asks for a copy on a target it is not granted (export mode).
    #[error(
        "{object} carries a decision for target {target}, which is not granted to its workspace {workspace} ({why}); no copy is created there (fix: grant the target to the workspace with a SyncTargetGrant in the inventory, and let a placement decide: a decision written by hand is not one)"
    )]
    NotGranted {
        object: String,
        target: String,
        workspace: String,
        why: &'static str,
    },
    /// The SyncTarget object does not exist upstream.
    #[error(
        "SyncTarget {target} does not exist in the workspace; create it (kind SyncTarget, group workload.kcp.io) to let its syncer apply workloads"
    )]
    TargetMissing { target: String },
    /// A workload's copy waits for an object its pod template references
    /// (see `tmc_api::dependencies`) to be on the target; looked at again
    /// every few seconds.
    #[error("{object} is not applied on {target} yet: it references {dependency}, which {why}")]
    DependencyMissing {
        object: String,
        target: String,
        dependency: String,
        why: String,
    },
    /// Work is not finished yet (e.g. a delete is in progress); try again later.
    #[error("{what}: retry in {after:?}")]
    Requeue { what: String, after: Duration },
}

/// Result type of the syncer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an upstream API error with what was being done.
    pub fn upstream(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Upstream {
            action: action.into(),
            source,
        }
    }

    /// Wraps a downstream API error with what was being done.
    pub fn downstream(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Downstream {
            action: action.into(),
            source,
        }
    }

    /// True when the SyncTarget itself was not found upstream (heartbeat read).
    pub fn is_target_missing(&self) -> bool {
        matches!(self, Self::TargetMissing { .. })
    }

    /// True when the downstream cluster could not be reached (no API answer at all).
    pub fn is_downstream_unreachable(&self) -> bool {
        matches!(self, Self::Downstream { source, .. } if !matches!(source, kube::Error::Api(_)))
    }
}

/// True when `err` is an API answer "object `name` not found" (a 404 that names
/// the object), as opposed to an unserved resource or a transport failure.
pub fn is_object_not_found(err: &kube::Error, name: &str) -> bool {
    match err {
        kube::Error::Api(status) if status.code == 404 || status.reason == "NotFound" => status
            .details
            .as_ref()
            .is_some_and(|details| details.name == name),
        _ => false,
    }
}

/// True when `err` is any API 404 answer.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.is_not_found())
}

/// True when `err` is an API 409 conflict answer.
pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.is_conflict())
}

/// True when `err` is an API 409 "already exists" answer.
pub fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.is_already_exists())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use kube::core::response::StatusDetails;

    fn not_found(details_name: Option<&str>) -> kube::Error {
        let mut status = Status::failure("not found", "NotFound").with_code(404);
        if let Some(name) = details_name {
            let details: StatusDetails =
                serde_json::from_value(serde_json::json!({ "name": name })).unwrap();
            status = status.with_details(details);
        }
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn object_not_found_needs_the_object_name() {
        assert!(is_object_not_found(&not_found(Some("web")), "web"));
        assert!(!is_object_not_found(&not_found(Some("other")), "web"));
        // An unserved resource answers 404 without details: not evidence of absence.
        assert!(!is_object_not_found(&not_found(None), "web"));
        assert!(is_not_found(&not_found(None)));
    }

    #[test]
    fn conflict_is_classified() {
        let err = kube::Error::Api(
            Status::failure("conflict", "Conflict")
                .with_code(409)
                .boxed(),
        );
        assert!(is_conflict(&err));
        assert!(!is_not_found(&err));
    }
}
