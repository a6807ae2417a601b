//! `tmcd policy diff`: shadow evaluation of a candidate module. It runs the
//! candidate, in place of the policy of the same name and beside the other
//! modules of the policy directory, over the workspace's live workloads, and
//! compares each answer with the decision recorded on the workload. Nothing
//! is written: the diff shows what a hot reload of the candidate would move.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use tmc_api::crd::{ClusterWorkloadPlacement, SyncTarget, SyncTargetGrant};
use tmc_api::decision::TargetResult;
use tmc_api::tenancy;
use tmc_syncer::SyncedKind;

use crate::config::Config;
use tmc_api::protocol::{self, Recorded};

use crate::fence::Fence;
use crate::placement::assignment::{self, describe};
use crate::placement::decide::{self, DecideError, NoObserver};
use crate::placement::grants::{granted_views, limits_on};
use crate::placement::runner::PolicyRunner;
use crate::placement::selector;
use crate::placement::settings::SettingsVerdicts;
use crate::placement::targets::TargetView;
use crate::placement::within_limits::{self, budget_from_records};
use crate::policy::HostRunner;
use crate::policy_cli::{Loaded, load_as};
use crate::watch_count::OpenWatches;
use crate::workspaces::Workspaces;
use crate::{daemon, kubeconn, table};

/// Inputs of `tmcd policy diff`.
#[derive(Debug, Clone)]
pub struct DiffArgs {
    /// The candidate module.
    pub module: PathBuf,
    /// The policy it stands in for (default: the module's file stem).
    pub as_name: Option<String>,
}

/// How a workload's decision would change under the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// Same targets, replicas and edits.
    None,
    /// The set of targets changes.
    Moves,
    /// Same targets, other replica counts.
    Replicas,
    /// Same targets and replicas, other label or annotation edits.
    Edits,
    /// The candidate fails on this workload: tmcd would keep its last decision.
    Fails,
}

impl Change {
    fn label(self) -> &'static str {
        match self {
            Change::None => "none",
            Change::Moves => "moves",
            Change::Replicas => "replicas",
            Change::Edits => "edits",
            Change::Fails => "FAILS",
        }
    }
}

/// One workload governed by a placement that uses the candidate's policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffRow {
    /// `Kind namespace/name`.
    pub workload: String,
    pub placement: String,
    /// Target -> replicas, as recorded on the workload now.
    pub now: BTreeMap<String, Option<u32>>,
    /// Target -> replicas the candidate chooses (`None` when it fails).
    pub candidate: Option<BTreeMap<String, Option<u32>>>,
    pub change: Change,
    /// The placement policy's explanation, or the failure.
    pub reason: String,
}

/// The result of `tmcd policy diff`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    /// The policy the candidate stands in for.
    pub policy: String,
    pub module: String,
    pub digest: String,
    /// Every workload whose placement uses the policy, in workload order.
    pub rows: Vec<DiffRow>,
    /// Modules of the policy directory the host refused: (name, cause).
    pub refused: Vec<(String, String)>,
}

impl DiffReport {
    /// Rows whose decision would change or fail.
    pub fn changes(&self) -> impl Iterator<Item = &DiffRow> {
        self.rows.iter().filter(|r| r.change != Change::None)
    }
}

/// Compares what the workload records (`recorded`) with what the candidate
/// chose (`chosen`): targets first, then replicas, then edits.
pub fn compare(
    recorded: &BTreeMap<String, Recorded>,
    chosen: &BTreeMap<String, TargetResult>,
) -> Change {
    let held: BTreeMap<&String, Option<&TargetResult>> = recorded
        .iter()
        .filter(|(_, r)| r.holds())
        .map(|(t, r)| (t, r.result.as_ref()))
        .collect();
    if !held.keys().copied().eq(chosen.keys()) {
        return Change::Moves;
    }
    let pairs = || chosen.values().zip(held.values());
    if pairs().any(|(new, old)| old.and_then(|o| o.replicas) != new.replicas) {
        return Change::Replicas;
    }
    let same_edits = |new: &TargetResult, old: Option<&TargetResult>| {
        let (labels, annotations) = old.map_or((Default::default(), Default::default()), |o| {
            (o.labels.clone(), o.annotations.clone())
        });
        new.labels == labels && new.annotations == annotations
    };
    if pairs().any(|(new, old)| !same_edits(new, *old)) {
        return Change::Edits;
    }
    Change::None
}

/// How long `tmcd policy diff` waits for the export's virtual workspace URL.
const ENDPOINT_WAIT: Duration = Duration::from_secs(30);

/// Runs the diff against the workspace of `config`, or in export mode
/// against every workspace bound to the export (read through its virtual
/// workspace, writing nothing: the clients' fence is never opened).
pub async fn diff(config: &Config, args: &DiffArgs) -> Result<DiffReport> {
    let client = kubeconn::control_plane(config).await?;
    // A fence that stays closed: nothing this command builds can write.
    let (fence, watches) = (Fence::new(), OpenWatches::default());
    let connect = Workspaces::connect(config, &client, &fence, &watches);
    let workspaces = tokio::time::timeout(ENDPOINT_WAIT, connect)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the export's virtual workspace URL was not published within {ENDPOINT_WAIT:?} (no workspace binds the export yet?); nothing to diff"
            )
        })??;
    let dir = config.resolve(config.policies.directory.get_ref());
    let loaded = load_as(&args.module, args.as_name.as_deref(), Some(&dir)).await?;
    diff_loaded(config, &client, &workspaces, &loaded, args).await
}

/// What the workspace holds that placement reads, keyed as tmcd's stores key
/// it (`<logical cluster>|<namespace>` in export mode).
pub(crate) struct Snapshot {
    pub targets: Vec<TargetView>,
    /// The inventory's grants in export mode; `None` for one workspace.
    pub grants: Option<Vec<Arc<SyncTargetGrant>>>,
    pub placements: Vec<ClusterWorkloadPlacement>,
    /// Labels of each namespace, by its store namespace (the key of the
    /// workloads in it).
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    pub workloads: Vec<(SyncedKind, DynamicObject)>,
    pub workspaces: Workspaces,
}

/// Lists `api` and maps each item for the stores.
async fn list_mapped<K>(api: Api<K>, workspaces: &Workspaces, what: &str) -> Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {what}"))?
        .items;
    for item in &mut items {
        workspaces.map_for_store(item);
    }
    Ok(items)
}

async fn snapshot(config: &Config, client: &Client, workspaces: Workspaces) -> Result<Snapshot> {
    let lp = ListParams::default();
    let now = Utc::now();
    let threshold = config.sync.heartbeat_threshold();
    let targets = Api::<SyncTarget>::all(client.clone())
        .list(&lp)
        .await
        .context("listing SyncTargets (fix: run tmcd once, or `tmcd crds | kubectl apply -f -`)")?
        .items
        .iter()
        .map(|t| TargetView::of(t, now, threshold))
        .collect();
    let grants = match workspaces.is_bound() {
        true => Some(
            Api::<SyncTargetGrant>::all(client.clone())
                .list(&lp)
                .await
                .context("listing SyncTargetGrants (fix: `tmcd crds | kubectl apply -f -` in the inventory workspace)")?
                .items
                .into_iter()
                .map(Arc::new)
                .collect(),
        ),
        false => None,
    };
    let reader = workspaces.watch_client(client);
    let placements = list_mapped(
        Api::<ClusterWorkloadPlacement>::all(reader.clone()),
        &workspaces,
        "ClusterWorkloadPlacements",
    )
    .await?;
    let namespace_labels = list_mapped(
        Api::<Namespace>::all(reader.clone()),
        &workspaces,
        "namespaces",
    )
    .await?
    .into_iter()
    .map(|ns| {
        let key = tenancy::store_key(ns.metadata.namespace.as_deref(), &ns.name_any());
        (key, ns.metadata.labels.unwrap_or_default())
    })
    .collect();
    let mut workloads = Vec::new();
    for kind in daemon::resolve_kinds(&reader, config).await? {
        let api = Api::<DynamicObject>::all_with(reader.clone(), &kind.api_resource());
        let items = list_mapped(api, &workspaces, &kind.plural).await?;
        workloads.extend(items.into_iter().map(|o| (kind.clone(), o)));
    }
    Ok(Snapshot {
        targets,
        grants,
        placements,
        namespace_labels,
        workloads,
        workspaces,
    })
}

async fn diff_loaded(
    config: &Config,
    client: &Client,
    workspaces: &Workspaces,
    loaded: &Loaded,
    args: &DiffArgs,
) -> Result<DiffReport> {
    let snap = snapshot(config, client, workspaces.clone()).await?;
    let runner = HostRunner(loaded.host.clone());
    let rows = diff_rows(&runner, &snap, &loaded.name, Utc::now()).await;
    Ok(DiffReport {
        policy: loaded.name.clone(),
        module: args.module.display().to_string(),
        digest: loaded.digest.clone(),
        rows,
        refused: loaded.refused.clone(),
    })
}

/// One row per live workload of `snap` whose governing placement uses
/// `policy`: the decision [`within_limits::decide_within`] makes with
/// `runner` (within the workspace's limits, counted by what the other
/// workloads record), compared with the decision the workload records.
pub(crate) async fn diff_rows(
    runner: &dyn PolicyRunner,
    snap: &Snapshot,
    policy: &str,
    now: DateTime<Utc>,
) -> Vec<DiffRow> {
    let no_labels = BTreeMap::new();
    let settings = SettingsVerdicts::default();
    let mut rows = Vec::new();
    for (kind, obj) in &snap.workloads {
        if obj.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let stored_in = obj.metadata.namespace.as_deref();
        let namespace_labels = snap
            .namespace_labels
            .get(stored_in.unwrap_or_default())
            .unwrap_or(&no_labels);
        // As the controller decides: only the placements of the workload's own
        // workspace govern it, only the targets granted to it are candidates.
        let workspace = tenancy::store_cluster(stored_in);
        let Some(placement) = decide::governing(
            snap.placements
                .iter()
                .filter(|p| selector::in_workspace(p, workspace)),
            &kind.group,
            &kind.kind,
            obj,
            namespace_labels,
        ) else {
            continue;
        };
        if !selector::uses(placement, |name| name == policy) {
            continue;
        }
        if snap.grants.is_some() && workspace.is_none() {
            // Export mode, an object naming no workspace: tmcd never places it.
            continue;
        }
        let targets = granted_views(snap.grants.as_deref(), workspace, snap.targets.clone());
        // The workspace's other workloads of the kind, by what they record.
        let budget = budget_from_records(
            limits_on(snap.grants.as_deref(), workspace, &targets),
            snap.workloads
                .iter()
                .filter(|(k, o)| {
                    k == kind
                        && tenancy::store_cluster(o.metadata.namespace.as_deref()) == workspace
                        && !std::ptr::eq(o, obj)
                })
                .map(|(_, o)| o),
        );
        let served = snap.workspaces.as_served(obj);
        let api_version = kind.api_version();
        let inputs = decide::Inputs {
            api_version: &api_version,
            kind: &kind.kind,
            object: &served,
            placement,
            targets: &targets,
            now,
        };
        let (now_on, candidate, change, reason) =
            match within_limits::decide_within(runner, &NoObserver, &settings, inputs, &budget)
                .await
                .decided
            {
                Ok(decision) => {
                    let change = compare(&decision.recorded, &decision.outcome.chosen);
                    let on = decision
                        .outcome
                        .chosen
                        .iter()
                        .map(|(t, r)| (t.clone(), r.replicas))
                        .collect();
                    (decision.holders, Some(on), change, decision.outcome.reason)
                }
                Err(DecideError::Excluded(_)) => continue,
                Err(DecideError::Policy(failure)) => {
                    let no_annotations = BTreeMap::new();
                    let recorded = protocol::read(
                        obj.metadata.labels.as_ref().unwrap_or(&no_labels),
                        obj.metadata.annotations.as_ref().unwrap_or(&no_annotations),
                    );
                    let holders = assignment::holders(&recorded);
                    (holders, None, Change::Fails, failure.to_string())
                }
            };
        rows.push(DiffRow {
            workload: format!(
                "{} {}",
                kind.kind,
                tenancy::store_key(stored_in, &obj.name_any())
            ),
            placement: selector::placement_key(placement),
            now: now_on,
            candidate,
            change,
            reason,
        });
    }
    rows
}

/// The report as a table: changed rows (every row with `all`), then a summary.
pub fn render_diff(report: &DiffReport, all: bool) -> String {
    let mut out = String::new();
    for (name, cause) in &report.refused {
        out.push_str(&format!(
            "warning: {name}.wasm of the policy directory is refused here ({cause}); workloads that need it show FAILS\n"
        ));
    }
    let shown: Vec<&DiffRow> = report
        .rows
        .iter()
        .filter(|r| all || r.change != Change::None)
        .collect();
    if !shown.is_empty() {
        let header = [
            "WORKLOAD",
            "PLACEMENT",
            "CHANGE",
            "NOW",
            "WITH CANDIDATE",
            "REASON",
        ];
        let mut cells = vec![header.map(String::from).to_vec()];
        cells.extend(shown.iter().map(|row| {
            vec![
                row.workload.clone(),
                row.placement.clone(),
                row.change.label().to_string(),
                describe(&row.now),
                row.candidate.as_ref().map_or("-".to_string(), describe),
                row.reason.clone(),
            ]
        }));
        out.push_str(&table::render(&cells));
    }
    let changed = report.changes().count();
    let failed = report
        .rows
        .iter()
        .filter(|r| r.change == Change::Fails)
        .count();
    out.push_str(&format!(
        "\n{changed} of {} workload(s) placed with policy {:?} would change ({failed} would fail and keep their decision); candidate {} (sha256 {}); nothing was written\n",
        report.rows.len(),
        report.policy,
        report.module,
        report.digest.chars().take(12).collect::<String>(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tmc_api::decision::STATE_SYNC;

    fn result(replicas: Option<u32>) -> TargetResult {
        TargetResult {
            replicas,
            ..Default::default()
        }
    }

    fn recorded(on: &[(&str, u32)]) -> BTreeMap<String, Recorded> {
        on.iter()
            .map(|(t, n)| {
                let r = Recorded {
                    state: Some(STATE_SYNC.into()),
                    result: Some(result(Some(*n))),
                    ..Default::default()
                };
                (t.to_string(), r)
            })
            .collect()
    }

    fn chosen(on: &[(&str, u32)]) -> BTreeMap<String, TargetResult> {
        on.iter()
            .map(|(t, n)| (t.to_string(), result(Some(*n))))
            .collect()
    }

    #[test]
    fn targets_then_replicas_then_edits_decide_the_change() {
        let now = recorded(&[("east", 2), ("west", 2)]);
        assert_eq!(
            compare(&now, &chosen(&[("east", 2), ("west", 2)])),
            Change::None
        );
        assert_eq!(compare(&now, &chosen(&[("west", 4)])), Change::Moves);
        assert_eq!(
            compare(&now, &chosen(&[("east", 1), ("west", 3)])),
            Change::Replicas
        );
        let mut edited = chosen(&[("east", 2), ("west", 2)]);
        if let Some(west) = edited.get_mut("west") {
            west.labels.set.insert("region".into(), "us-west".into());
        }
        assert_eq!(compare(&now, &edited), Change::Edits);
        assert_eq!(
            compare(&BTreeMap::new(), &chosen(&[("west", 1)])),
            Change::Moves,
            "a workload placed nowhere yet"
        );
    }

    #[test]
    fn a_target_asked_to_delete_its_copy_does_not_count_as_holding_it() {
        let mut now = recorded(&[("east", 2), ("west", 2)]);
        if let Some(east) = now.get_mut("east") {
            east.deleting = true;
        }
        assert_eq!(compare(&now, &chosen(&[("west", 2)])), Change::None);
    }

    #[test]
    fn the_table_shows_changes_and_failures_and_a_summary() {
        let row = |workload: &str, change, candidate| DiffRow {
            workload: workload.into(),
            placement: "choose".into(),
            now: [("east".to_string(), Some(2)), ("west".to_string(), Some(2))].into(),
            candidate,
            change,
            reason: "why".into(),
        };
        let report = DiffReport {
            policy: "chooser".into(),
            module: "active-passive.wasm".into(),
            digest: "0123456789abcdef".into(),
            rows: vec![
                row(
                    "Deployment demo/api",
                    Change::Moves,
                    Some([("west".to_string(), Some(4))].into()),
                ),
                row("Deployment demo/same", Change::None, None),
                row("Deployment demo/bad", Change::Fails, None),
            ],
            refused: vec![],
        };
        let text = render_diff(&report, false);
        assert!(text.contains("Deployment demo/api"), "{text}");
        assert!(text.contains("east (2), west (2)"), "{text}");
        assert!(text.contains("west (4)"), "{text}");
        assert!(text.contains("FAILS"), "{text}");
        assert!(
            !text.contains("demo/same"),
            "unchanged rows only with --all"
        );
        assert!(
            text.contains(
                "2 of 3 workload(s) placed with policy \"chooser\" would change (1 would fail"
            ),
            "{text}"
        );
        assert!(render_diff(&report, true).contains("demo/same"));
    }
}
