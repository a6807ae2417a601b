//! The running tmcd's answer: the workload read from the control plane, the
//! placements and targets from this replica's caches, the policies it serves.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ListParams};
use tmc_syncer::SyncedKind;

use tmc_api::dependencies::{DependencyKind, has_pod_template};
use tmc_api::tenancy::{LogicalCluster, WorkloadKey};

use super::build::{Subject, explain};
use super::report::ExplainReport;
use crate::placement::dependencies::User;
use crate::placement::grants::{granted_views, limits_on};
use crate::placement::limits::Budget;
use crate::placement::within_limits::budget_from_records;
use crate::placement::{decide, selector};
use crate::state::State;
use crate::workspaces::RouteError;

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
    /// tmcd places the workloads of many workspaces (export mode) and was
    /// not told which one.
    #[error(
        "tmcd places the workloads of every workspace bound to its export (control_plane.export): name the workload's workspace by its logical cluster (fix: --workspace <logical cluster>; `kubectl get workspace <name> -o jsonpath='{{.spec.cluster}}'` in its parent workspace prints it, and `tmcd status` names each placement <logical cluster>|<name>)"
    )]
    WorkspaceNeeded,
    /// A workspace was named, but tmcd serves one workspace, or the name is
    /// no logical cluster.
    #[error("{0}")]
    BadWorkspace(String),
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
/// In export mode `workspace` names the logical cluster of the workspace the
/// workload is in; only that workspace's placements and the targets granted
/// to it are considered, as the controller does.
pub async fn explain_live(
    state: &State,
    workspace: Option<&str>,
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
    let cluster = workspace_of(state, workspace)?;
    let ar = synced.api_resource();
    // The workload and its namespace, read from its own workspace.
    let stored_in = |namespace: &str| {
        WorkloadKey::new(cluster.clone(), Some(namespace), name).store_namespace()
    };
    let read_failed = |what: String| move |source| LookupError::Read { what, source };
    let route_failed = |err: RouteError| LookupError::BadWorkspace(err.to_string());
    let api = state
        .workspaces
        .dynamic_api(
            &state.reader,
            &ar,
            synced
                .namespaced
                .then(|| stored_in(namespace))
                .flatten()
                .as_deref(),
        )
        .map_err(route_failed)?;
    let what = format!("{} {namespace}/{name}", synced.kind);
    let object = api
        .get_opt(name)
        .await
        .map_err(read_failed(what.clone()))?
        .ok_or_else(|| LookupError::NotFound {
            kind: synced.kind.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    let namespace_labels = match object.metadata.namespace.as_deref() {
        Some(ns) => {
            let (client, _) = state
                .workspaces
                .route(&state.reader, stored_in("").as_deref())
                .map_err(route_failed)?;
            Api::<Namespace>::all(client)
                .get_opt(ns)
                .await
                .map_err(read_failed(format!("namespace {ns}")))?
                .and_then(|n| n.metadata.labels)
                .unwrap_or_default()
        }
        None => BTreeMap::new(),
    };
    let workspace = cluster.as_ref().map(LogicalCluster::as_str);
    let placements = state.placements.state();
    // The placement of the workspace that governs an object of its namespace.
    let governing = |kind: &SyncedKind, object: &DynamicObject| {
        decide::governing(
            placements
                .iter()
                .map(AsRef::as_ref)
                .filter(|p| selector::in_workspace(p, workspace)),
            &kind.group,
            &kind.kind,
            object,
            &namespace_labels,
        )
    };
    let placement = governing(synced, &object);
    let grants = state.grants.as_ref().map(|g| g.state());
    let views = state
        .targets
        .state()
        .iter()
        .map(|t| state.target_view(t))
        .collect();
    let targets = granted_views(grants.as_deref(), workspace, views);
    let limited = limits_on(grants.as_deref(), workspace, &targets);
    let budget = if limited.is_empty() {
        Budget::default()
    } else {
        // What the workspace's other workloads of the kind record.
        let (client, _) = state
            .workspaces
            .route(&state.reader, stored_in("").as_deref())
            .map_err(route_failed)?;
        let all = Api::<DynamicObject>::all_with(client, &ar)
            .list(&ListParams::default())
            .await
            .map_err(read_failed(format!(
                "the {} of the workspace",
                synced.plural
            )))?;
        let others = all.items.iter().filter(|o| {
            o.metadata.namespace != object.metadata.namespace
                || o.metadata.name != object.metadata.name
        });
        budget_from_records(limited, others)
    };
    // A dependency no placement selects follows the workloads of its
    // namespace that reference it.
    let mut users = Vec::new();
    let dependency =
        DependencyKind::of(&synced.group, &synced.kind).filter(|_| placement.is_none());
    if let Some(dependency) = dependency {
        for kind in state.kinds.iter().filter(|k| has_pod_template(&k.kind)) {
            let api = state
                .workspaces
                .dynamic_api(
                    &state.reader,
                    &kind.api_resource(),
                    stored_in(namespace).as_deref(),
                )
                .map_err(route_failed)?;
            let listed = api
                .list(&ListParams::default())
                .await
                .map_err(read_failed(format!(
                    "the {} of namespace {namespace}",
                    kind.plural
                )))?;
            users.extend(listed.items.iter().filter_map(|o| {
                User::of(&kind.kind, o, dependency, name, || {
                    governing(kind, o).is_some()
                })
            }));
        }
    }
    let api_version = synced.api_version();
    let subject = Subject {
        api_version: &api_version,
        kind: &synced.kind,
        object: &object,
        placement,
        targets: &targets,
        budget: &budget,
        users: dependency.map(|_| users.as_slice()),
        now: chrono::Utc::now(),
    };
    Ok(explain(state.policies.as_ref(), &state.settings, subject).await)
}

/// The logical cluster `workspace` names: required in export mode, refused
/// for one workspace.
fn workspace_of(
    state: &State,
    workspace: Option<&str>,
) -> Result<Option<LogicalCluster>, LookupError> {
    match (state.workspaces.is_bound(), workspace) {
        (true, None) => Err(LookupError::WorkspaceNeeded),
        (true, Some(name)) => LogicalCluster::new(name)
            .map(Some)
            .map_err(|err| LookupError::BadWorkspace(format!("--workspace {name:?}: {err}"))),
        (false, None) => Ok(None),
        (false, Some(name)) => Err(LookupError::BadWorkspace(format!(
            "--workspace {name:?}: this tmcd serves one workspace (control_plane.workspace), not the workspaces bound to an export (fix: drop --workspace)"
        ))),
    }
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
