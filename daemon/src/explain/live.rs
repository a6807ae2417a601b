//! The running tmcd's answer: the workload read from the control plane, the
//! placements and targets from this replica's caches, the policies it serves.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject};
use tmc_syncer::SyncedKind;

use super::build::{Subject, explain};
use super::report::ExplainReport;
use crate::placement::decide;
use crate::state::State;

/// Why a workload cannot be explained.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The kind is not one this tmcd syncs.
    #[error("tmcd does not sync {kind:?} (fix: one of {known}, or add it to sync.resources)")]
    UnknownKind { kind: String, known: String },
    /// No such object in the workspace.
    #[error("{kind} {namespace}/{name} does not exist in the workspace")]
    NotFound {
        kind: String,
        namespace: String,
        name: String,
    },
    /// tmcd places the workloads of many workspaces (export mode), which
    /// explain cannot name yet.
    #[error(
        "tmcd places the workloads of every workspace bound to its export (control_plane.export); explain cannot name a workspace yet (see the workload's Events and the placement's status in its workspace)"
    )]
    ManyWorkspaces,
    /// The control plane could not be read.
    #[error("reading {what} from the control plane: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// Explains the workload `kind` (its kind, plural or either with the group:
/// `Deployment`, `deployments`, `deployments.apps`; any case) `namespace`/`name`
/// (namespace `-` for a cluster-scoped kind) as this tmcd would decide it now.
pub async fn explain_live(
    state: &State,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<ExplainReport, LookupError> {
    let synced = find_kind(&state.kinds, kind).ok_or_else(|| LookupError::UnknownKind {
        kind: kind.to_string(),
        known: state
            .kinds
            .iter()
            .map(|k| k.kind.to_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    if state.workspaces.is_bound() {
        return Err(LookupError::ManyWorkspaces);
    }
    let ar = synced.api_resource();
    let api: Api<DynamicObject> = if synced.namespaced {
        Api::namespaced_with(state.reader.clone(), namespace, &ar)
    } else {
        Api::all_with(state.reader.clone(), &ar)
    };
    let what = format!("{} {namespace}/{name}", synced.kind);
    let object = api
        .get_opt(name)
        .await
        .map_err(|source| LookupError::Read {
            what: what.clone(),
            source,
        })?
        .ok_or_else(|| LookupError::NotFound {
            kind: synced.kind.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    let namespace_labels = match object.metadata.namespace.as_deref() {
        Some(ns) => Api::<Namespace>::all(state.reader.clone())
            .get_opt(ns)
            .await
            .map_err(|source| LookupError::Read {
                what: format!("namespace {ns}"),
                source,
            })?
            .and_then(|n| n.metadata.labels)
            .unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let placements = state.placements.state();
    let placement = decide::governing(
        placements.iter().map(AsRef::as_ref),
        &synced.group,
        &synced.kind,
        &object,
        &namespace_labels,
    );
    let targets: Vec<_> = state
        .targets
        .state()
        .iter()
        .map(|t| state.target_view(t))
        .collect();
    let api_version = synced.api_version();
    let subject = Subject {
        api_version: &api_version,
        kind: &synced.kind,
        object: &object,
        placement,
        targets: &targets,
        now: chrono::Utc::now(),
    };
    Ok(explain(state.policies.as_ref(), &state.settings, subject).await)
}

/// The synced kind `text` names (see [`explain_live`]).
fn find_kind<'k>(kinds: &'k [SyncedKind], text: &str) -> Option<&'k SyncedKind> {
    let text = text.to_lowercase();
    kinds.iter().find(|k| {
        let kind = k.kind.to_lowercase();
        let with_group = |name: &str| {
            if k.group.is_empty() {
                name.to_string()
            } else {
                format!("{name}.{}", k.group)
            }
        };
        [
            kind.clone(),
            k.plural.clone(),
            with_group(&kind),
            with_group(&k.plural),
        ]
        .contains(&text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_kind_plural_and_group_in_any_case() {
        let kinds = [
            SyncedKind::new("apps", "v1", "Deployment", "deployments", true),
            SyncedKind::new("", "v1", "ConfigMap", "configmaps", true),
        ];
        for text in [
            "Deployment",
            "deployment",
            "deployments",
            "deployments.apps",
            "Deployment.apps",
        ] {
            assert_eq!(
                find_kind(&kinds, text).map(|k| k.kind.as_str()),
                Some("Deployment"),
                "{text}"
            );
        }
        assert_eq!(
            find_kind(&kinds, "configmap").map(|k| k.kind.as_str()),
            Some("ConfigMap")
        );
        assert!(find_kind(&kinds, "deploy").is_none());
        assert!(find_kind(&kinds, "statefulsets").is_none());
    }
}
