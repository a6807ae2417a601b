//! End to end on real servers: tmcd in export mode (issue 12 step 1, `docs/tenancy.md`). kcp's `root:tmc` is
//! the inventory (SyncTargets west and east, tmc's APIExport `tmc`); tenants `a` and `b` are workspaces
//! `root:teams:a` and `root:teams:b` bound to it. tmcd runs with `[control_plane] export = "tmc"`: it watches
//! every bound workspace through the export's virtual workspace and writes its decisions back into each.
//!
//! - SyncTargetGrants in the inventory (export mode denies by default, issue 12 step 3): a is granted the
//!   targets of region us-west only, b every target.
//! - Each tenant has a ClusterWorkloadPlacement `web-placement` (same name in both): a's chooses west, b's east.
//!   Both create `default/web` (same namespace and name). a's web is decided for west only, b's for east only;
//!   a's placement says `TargetsGranted=True`.
//! - Tenant `c` is bound while tmcd runs and creates `default/web` with no placement of its own: it stays
//!   undecided (a's and b's placements do not govern it). c's placement (west) before any grant names c: the
//!   web stays undecided and the placement says `TargetsGranted=False` naming west. Once c is granted every
//!   target, its web is decided without a tmcd restart, and a's and b's webs keep their own decisions.
//! - The `Placed` Events tmcd publishes in each tenant's workspace (through the export's Events claim) are
//!   printed, not checked.
//! - The watch streams tmcd holds open (`tmcd_watches` in `/metrics`) are as many after c is bound as before.
//!
//! - The push syncers copy each tenant's workloads through the virtual workspace (issue 12 step 2): `default/web`
//!   of a lands on west in a's own downstream namespace (`tmc-<logical cluster>-default-<hash>`, labelled with
//!   the logical cluster), b's on east in b's, c's on west beside a's: three same-named workloads, three
//!   namespaces, nothing in `default` of either cluster. Each tenant's web gets its status (available replicas)
//!   from its own copy only. Deleting a's web removes a's copy and leaves c's (same cluster, same name) and b's.
//!   The copies on every cluster are counted before, during and after.
//! - Tenant c unbinds the export while tmcd runs: kcp deletes c's objects of the export, tmcd's finalizer holds
//!   c's web until its copy on west is removed, then the binding goes; b's copy stays and reports, and west's
//!   syncer is left with no failing object (a workspace that no longer serves the kind is not retried forever).
//! - Per-tenant limits (`SyncTargetGrant.spec.limits`): c's second workload gets no copy on west while c's
//!   grant allows 1 workload per target, then 0 (below the usage: c's running copy is kept), then 3 replicas
//!   per target (2 used, 2 asked); the placement says `LimitReached=True` with the numbers; with 4 replicas
//!   per target it lands, and the condition turns False.
//! - A tenant cannot place by writing a decision itself: a's `default/forged`, created labelled
//!   `state.workload.kcp.io/east: Sync` (east is not granted to a), never gets a copy on east (the push
//!   syncers create copies only for granted workspaces), and tmcd replaces the forged key by its own decision.
//!
//! Three more tests put faults on this bed (tmcd as a process, tenants a on west and b on east, the copies
//! sampled every second; `TenantFaults`, `sample_until`): no copy is lost, re-created or short of replicas at
//! any sample, and every workload ends with exactly one copy in its own tenant's namespace.
//!
//! - kcp frozen 20 s (SIGSTOP), then tmcd killed (SIGKILL) while both tenants create more.
//! - West's kube-apiserver stopped while both tenants create more, past the heartbeat threshold and the
//!   placements' eviction grace: west's SyncTarget is NotReady at every sample while down and Ready after;
//!   a's workloads pinned to west are held (still decided for west, no removal asked); a's `roam`, spread
//!   over both, moves whole to east, west's removal asked only once east runs all its replicas; east's copies
//!   untouched; after the restart west's copies are the same objects.
//! - tmcd cut off kcp by a paused TCP proxy (connections held, no reset) for 20 s while both tenants create
//!   more: tmcd reaches kcp only through the proxy, the export's virtual workspace too
//!   (`[control_plane] virtual_workspace_server`); no new copy appears while paused, and after the resume the
//!   same tmcd process places every new workload.

mod common;

use k8s_openapi::api::core::v1::Namespace;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tmc_api::crd::{ClusterWorkloadPlacement, SyncTarget, SyncTargetGrant};
use tmc_api::decision::{
    MANAGED_LABEL, RESULT_ANNOTATION_PREFIX, STATE_LABEL_PREFIX, STATE_SYNC,
    STATUS_ANNOTATION_PREFIX, deletion_annotation,
};
use tmc_api::tenancy::{DOWNSTREAM_CLUSTER_LABEL, LogicalCluster, downstream_namespace};
use tmc_daemon::admin::client::request;
use tmc_daemon::admin::status::StatusReport;
use tmc_daemon::explain::{ExplainReport, Verdict};
use tmc_daemon::policy_diff::{self, Change, DiffArgs};
use tmc_tests::fixtures;
use tmc_tests::testbed::proxy::TcpProxy;
use tmc_tests::testbed::tenants::EXPORT;
use tmc_tests::testbed::wait::{self, Poll};
use tmc_tests::testbed::{TestBed, progress};

use common::{Env, POLL, TIMEOUT, until};

/// The placement every tenant names the same.
const PLACEMENT: &str = "web-placement";
/// The workload every tenant names the same.
const WEB: &str = "web";
const NAMESPACE: &str = "default";
/// How long the Events about the workloads are waited for (they are only printed).
const EVENTS_WAIT: Duration = Duration::from_secs(15);
/// How long a workload without a placement of its own is watched for a decision that must not come.
const SETTLE: Duration = Duration::from_secs(10);
/// The gauge of the watch streams tmcd holds open, by resource.
const WATCHES: &str = "tmcd_watches";
/// How long the watch count may take to come back to its value before a tenant was bound.
const WATCHES_SETTLE: Duration = Duration::from_secs(30);

/// A location-affinity placement choosing the targets of `region` only.
fn placement_in(region: &str) -> Value {
    json!({
        "policy": {"name": "location-affinity", "settings": {"mode": "required"}},
        "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": region}}],
    })
}

/// The state labels of a workload: target -> value.
fn states(d: &Deployment) -> BTreeMap<String, String> {
    d.labels()
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(STATE_LABEL_PREFIX)
                .map(|t| (t.to_owned(), v.clone()))
        })
        .collect()
}

/// The result annotations of a workload: target -> JSON.
fn results(d: &Deployment) -> BTreeMap<String, String> {
    d.annotations()
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(RESULT_ANNOTATION_PREFIX)
                .map(|t| (t.to_owned(), v.clone()))
        })
        .collect()
}

/// One tenant as the test sees it: its name, workspace path, logical cluster and a client of its workspace.
struct Team {
    name: String,
    workspace: String,
    logical_cluster: String,
    client: kube::Client,
}

impl Team {
    async fn of(bed: &TestBed, name: &str) -> Result<Self> {
        let (kcp, tenants) = (bed.kcp()?, bed.tenants()?);
        let tenant = tenants.tenant(name)?;
        Ok(Self {
            name: name.to_owned(),
            workspace: tenant.workspace.clone(),
            logical_cluster: tenant.logical_cluster.clone(),
            client: tenants.tenant_client(kcp, name).await?,
        })
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// The namespace this tenant's `default` gets on a physical cluster.
    fn downstream(&self) -> Result<String> {
        Ok(downstream_namespace(&LogicalCluster::new(&self.logical_cluster)?, NAMESPACE).name)
    }

    /// Waits until `default/web` reports `replicas` available, with a status annotation from exactly
    /// `targets` (its copies' status comes back to this workspace, and only theirs).
    async fn wait_status(&self, targets: &[&str], replicas: i32) -> Result<()> {
        let expected: BTreeSet<String> = targets.iter().map(|t| (*t).to_owned()).collect();
        let what = format!(
            "{}: {NAMESPACE}/{WEB} to report {replicas} available replicas from exactly {targets:?}",
            self.label()
        );
        until(&what, || async {
            let web = self.web().await?;
            let reported: BTreeSet<String> = web
                .annotations()
                .keys()
                .filter_map(|k| k.strip_prefix(STATUS_ANNOTATION_PREFIX).map(str::to_owned))
                .collect();
            if let Some(stray) = reported.difference(&expected).next() {
                bail!(
                    "{}: {NAMESPACE}/{WEB} carries a status report from {stray}, where it has no copy \
                     (reports from {reported:?})",
                    self.label()
                );
            }
            let available = web
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            Ok(if reported == expected && available == replicas {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "status reports from {reported:?}, {available} available"
                ))
            })
        })
        .await?;
        progress(&format!(
            "{}: {NAMESPACE}/{WEB} reports {replicas} available from {targets:?}",
            self.label()
        ));
        Ok(())
    }

    /// `tenant a (root:teams:a, logical cluster ...)`.
    fn label(&self) -> String {
        format!(
            "tenant {} ({}, logical cluster {})",
            self.name, self.workspace, self.logical_cluster
        )
    }

    /// Applies `web-placement` in this tenant's workspace, retried until the placement API is served there.
    async fn place_in(&self, region: &str) -> Result<()> {
        self.apply_placement(PLACEMENT, placement_in(region)).await
    }

    /// Applies placement `name` with `spec` in this tenant's workspace, retried until the placement API is
    /// served there.
    async fn apply_placement(&self, name: &str, spec: Value) -> Result<()> {
        let what = format!("{}: placement {name} {spec} applied", self.label());
        until(&what, || async {
            Ok(
                match fixtures::apply_placement(&self.client, "e2e", name, spec.clone()).await {
                    Ok(()) => Poll::Ready(()),
                    Err(e) => Poll::Pending(format!("{e:#}")),
                },
            )
        })
        .await?;
        progress(&format!("{}: placement {name} {spec}", self.label()));
        Ok(())
    }

    /// The APIBindings of this tenant's workspace.
    fn bindings(&self) -> Api<DynamicObject> {
        let ar = ApiResource {
            group: "apis.kcp.io".into(),
            version: "v1alpha2".into(),
            api_version: "apis.kcp.io/v1alpha2".into(),
            kind: "APIBinding".into(),
            plural: "apibindings".into(),
        };
        Api::all_with(self.client.clone(), &ar)
    }

    /// Deletes this tenant's APIBinding to tmc's export.
    async fn unbind(&self) -> Result<()> {
        self.bindings()
            .delete(EXPORT, &Default::default())
            .await
            .with_context(|| format!("{}: deleting APIBinding {EXPORT}", self.label()))?;
        progress(&format!("{}: APIBinding {EXPORT} deleted", self.label()));
        Ok(())
    }

    /// Creates `default/web` (2 replicas) in this tenant's workspace.
    async fn create_web(&self) -> Result<()> {
        self.create(WEB).await
    }

    /// Creates `default/<name>` (2 replicas) in this tenant's workspace.
    async fn create(&self, name: &str) -> Result<()> {
        self.create_with(name, 2, json!({})).await
    }

    /// Creates `default/<name>` with `replicas` and `labels` in this tenant's workspace.
    async fn create_with(&self, name: &str, replicas: i32, labels: Value) -> Result<()> {
        let web = fixtures::deployment(NAMESPACE, name, replicas, labels, json!({}))?;
        self.deployments()
            .create(&PostParams::default(), &web)
            .await
            .with_context(|| format!("{}: creating {NAMESPACE}/{name}", self.label()))?;
        progress(&format!("{}: created {NAMESPACE}/{name}", self.label()));
        Ok(())
    }

    /// Fails unless each of `names` is still decided for `target` (its state label `Sync`) with no removal
    /// asked of it there.
    async fn still_placed_on(&self, names: &[String], target: &str) -> Result<()> {
        for name in names {
            let d = self
                .deployments()
                .get(name)
                .await
                .with_context(|| format!("{}: reading {NAMESPACE}/{name}", self.label()))?;
            let state = states(&d).remove(target);
            let removal = d.annotations().get(&deletion_annotation(target)).cloned();
            ensure!(
                state.as_deref() == Some(STATE_SYNC) && removal.is_none(),
                "{}: {NAMESPACE}/{name} is no longer held on {target}: state {state:?}, removal asked {removal:?}",
                self.label()
            );
        }
        Ok(())
    }

    async fn web(&self) -> Result<Deployment> {
        self.deployments()
            .get(WEB)
            .await
            .with_context(|| format!("{}: reading {NAMESPACE}/{WEB}", self.label()))
    }

    /// Fails unless `web`'s state labels are exactly `target=Sync` for each of `targets`.
    fn check_decided(&self, web: &Deployment, targets: &[&str]) -> Result<()> {
        let expected: BTreeMap<String, String> = targets
            .iter()
            .map(|t| ((*t).to_owned(), STATE_SYNC.to_owned()))
            .collect();
        let got = states(web);
        ensure!(
            got == expected,
            "{}: {NAMESPACE}/{WEB} must carry exactly the state labels {expected:?} ({STATE_LABEL_PREFIX}<target>), \
             it carries {got:?} (all labels: {:?})",
            self.label(),
            web.labels()
        );
        Ok(())
    }

    /// Waits until `default/web` is decided for exactly `targets`; fails at once if it carries a state label
    /// for any other target (another tenant's placement governing it). Prints its decision keys. While
    /// waiting, what tmcd's admin API at `admin` says of its targets and placements is the pending reason.
    async fn wait_decided(&self, admin: &str, targets: &[&str]) -> Result<Deployment> {
        let allowed: BTreeSet<&str> = targets.iter().copied().collect();
        let what = format!(
            "{}: {NAMESPACE}/{WEB} decided for exactly {targets:?}",
            self.label()
        );
        let web = until(&what, || async {
            let web = self.web().await?;
            let got = states(&web);
            if let Some(stray) = got.keys().find(|t| !allowed.contains(t.as_str())) {
                bail!(
                    "{}: {NAMESPACE}/{WEB} carries {STATE_LABEL_PREFIX}{stray}, but its own placement \
                     {PLACEMENT} chooses only {targets:?} (state labels {got:?})",
                    self.label()
                );
            }
            Ok(if got.len() == allowed.len() {
                Poll::Ready(web)
            } else {
                Poll::Pending(format!(
                    "state labels {got:?}; tmcd's view: {}",
                    tmcd_view(admin).await
                ))
            })
        })
        .await?;
        self.check_decided(&web, targets)?;
        progress(&format!(
            "{}: {NAMESPACE}/{WEB} decided: state {:?}, result {:?}",
            self.label(),
            states(&web),
            results(&web)
        ));
        Ok(web)
    }

    /// Waits until this tenant's `web-placement` shows `TargetsGranted=<status>` with a message naming
    /// `target`; prints the condition.
    async fn wait_granted(&self, status: &str, target: &str) -> Result<()> {
        self.wait_condition("TargetsGranted", status, target).await
    }

    /// Waits until the placement's condition `type_` has `status` and a message containing `text`.
    async fn wait_condition(&self, type_: &str, status: &str, text: &str) -> Result<()> {
        let placements: Api<ClusterWorkloadPlacement> = Api::all(self.client.clone());
        let what = format!(
            "{}: placement {PLACEMENT} to say {type_}={status} with {text:?}",
            self.label()
        );
        let message = until(&what, || async {
            let placement = placements.get(PLACEMENT).await?;
            let conditions = placement.status.map(|s| s.conditions).unwrap_or_default();
            Ok(match conditions.iter().find(|c| c.type_ == type_) {
                Some(c) if c.status == status && c.message.contains(text) => {
                    Poll::Ready(format!("{} {}: {}", c.status, c.reason, c.message))
                }
                _ => Poll::Pending(format!("conditions {conditions:?}")),
            })
        })
        .await?;
        progress(&format!(
            "{}: placement {PLACEMENT} {type_}={message}",
            self.label()
        ));
        Ok(())
    }

    /// Fails if `default/web` carries any state label during `period`; `why` says why it must not be decided.
    async fn stays_undecided(&self, period: Duration, why: &str) -> Result<()> {
        let end = Instant::now() + period;
        let what = format!(
            "{}: {NAMESPACE}/{WEB} to stay undecided for {period:?}",
            self.label()
        );
        until(&what, || async {
            let web = self.web().await?;
            let got = states(&web);
            if !got.is_empty() {
                bail!(
                    "{}: {NAMESPACE}/{WEB} {why}, yet it was decided: state labels {got:?}, result \
                     annotations {:?}",
                    self.label(),
                    results(&web)
                );
            }
            Ok(if Instant::now() >= end {
                Poll::Ready(())
            } else {
                Poll::Pending("undecided so far".into())
            })
        })
        .await?;
        progress(&format!(
            "{}: {NAMESPACE}/{WEB} undecided for {period:?}: {why}",
            self.label()
        ));
        Ok(())
    }

    /// The notes of the `Placed` Events (events.k8s.io/v1) about `default/web` in this workspace.
    async fn placed_notes(&self) -> Result<Vec<String>> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), NAMESPACE);
        let list = events
            .list(&Default::default())
            .await
            .with_context(|| format!("{}: listing Events", self.label()))?;
        Ok(list
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("Placed")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(WEB)
            })
            .map(|e| e.note.unwrap_or_default())
            .collect())
    }
}

/// Prints the `Placed` Events about `default/web` in each tenant's own workspace (tmcd publishes them in the
/// background), waiting up to [`EVENTS_WAIT`] for one in each; informational, not a check of this test.
async fn note_events(teams: &[&Team]) {
    let seen: std::sync::Mutex<BTreeMap<String, Vec<String>>> = Default::default();
    let waited = wait::until("a Placed Event in each tenant", EVENTS_WAIT, POLL, || {
        let seen = &seen;
        async move {
            let mut now = BTreeMap::new();
            for team in teams {
                now.insert(team.name.clone(), team.placed_notes().await?);
            }
            let all = now.values().all(|n| !n.is_empty());
            let reason = format!("{now:?}");
            *seen.lock().expect("lock") = now;
            Ok(if all {
                Poll::Ready(())
            } else {
                Poll::Pending(reason)
            })
        }
    })
    .await;
    let seen = seen.into_inner().expect("lock");
    for team in teams {
        let notes = seen.get(&team.name).cloned().unwrap_or_default();
        progress(&format!(
            "{} (informational): {} Placed Events about {NAMESPACE}/{WEB} in its workspace {notes:?}",
            team.label(),
            notes.len()
        ));
    }
    if let Err(e) = waited {
        progress(&format!("(informational) {e:#}"));
    }
}

/// Grants the SyncTargets of `region` (every target when `None`) to the workspace of `logical_cluster`
/// (SyncTargetGrant `name` in the inventory workspace, server-side applied), retried until tmcd has installed
/// the grant CRD.
async fn grant(
    inventory: &kube::Client,
    name: &str,
    logical_cluster: &str,
    region: Option<&str>,
) -> Result<()> {
    grant_limited(inventory, name, logical_cluster, region, None).await
}

/// [`grant`] with `spec.limits` (issue 12 step 4).
async fn grant_limited(
    inventory: &kube::Client,
    name: &str,
    logical_cluster: &str,
    region: Option<&str>,
    limits: Option<Value>,
) -> Result<()> {
    let grants: Api<SyncTargetGrant> = Api::all(inventory.clone());
    let mut spec = json!({"workspaces": [logical_cluster]});
    if let Some(region) = region {
        spec["targetSelector"] = json!({"matchLabels": {"topology.kubernetes.io/region": region}});
    }
    if let Some(limits) = &limits {
        spec["limits"] = limits.clone();
    }
    let body = json!({
        "apiVersion": "workload.kcp.io/v1alpha1",
        "kind": "SyncTargetGrant",
        "metadata": {"name": name},
        "spec": spec,
    });
    let mut targets = region.map_or("every target".to_owned(), |r| format!("the targets of {r}"));
    if let Some(limits) = &limits {
        targets.push_str(&format!(" with limits {limits}"));
    }
    let what = format!("SyncTargetGrant {name} ({targets} to {logical_cluster}) applied");
    until(&what, || async {
        Ok(
            match grants
                .patch(
                    name,
                    &PatchParams::apply("e2e").force(),
                    &Patch::Apply(&body),
                )
                .await
            {
                Ok(_) => Poll::Ready(()),
                Err(e) => Poll::Pending(format!("{e}")),
            },
        )
    })
    .await?;
    progress(&format!(
        "SyncTargetGrant {name}: {targets} granted to logical cluster {logical_cluster}"
    ));
    Ok(())
}

/// tmc's Deployment copies on one physical cluster: (namespace, name) -> replicas.
async fn copies_on(cluster: &kube::Client) -> Result<BTreeMap<(String, String), i32>> {
    let all: Api<Deployment> = Api::all(cluster.clone());
    let list = all
        .list(&kube::api::ListParams::default().labels(&format!("{MANAGED_LABEL}=true")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|d| {
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            ((d.namespace().unwrap_or_default(), d.name_any()), replicas)
        })
        .collect())
}

/// Waits until the copies on west and east are exactly `west` and `east` (downstream namespace, name); fails
/// at once on a copy in the workspace's own namespace name (`default`), which would mix the tenants. Prints
/// the counts.
async fn wait_copies(
    env: &Env,
    west: &[(String, &str)],
    east: &[(String, &str)],
    when: &str,
) -> Result<()> {
    let (west_client, east_client) = (env.cluster("west").await?, env.cluster("east").await?);
    let set = |v: &[(String, &str)]| -> BTreeSet<(String, String)> {
        v.iter()
            .map(|(ns, n)| (ns.clone(), (*n).to_owned()))
            .collect()
    };
    let (want_west, want_east) = (set(west), set(east));
    let what = format!("{when}: copies on west {want_west:?} and on east {want_east:?}");
    let (got_west, got_east) = until(&what, || async {
        let got_west = copies_on(&west_client).await?;
        let got_east = copies_on(&east_client).await?;
        for (cluster, got) in [("west", &got_west), ("east", &got_east)] {
            if let Some((ns, name)) = got.keys().find(|(ns, _)| ns == NAMESPACE) {
                bail!(
                    "{cluster} holds a copy {ns}/{name} in the workspaces' own namespace name: tenants' copies \
                     must each go to their own downstream namespace ({got:?})"
                );
            }
        }
        let keys = |m: &BTreeMap<(String, String), i32>| m.keys().cloned().collect::<BTreeSet<_>>();
        Ok(
            if keys(&got_west) == want_west && keys(&got_east) == want_east {
                Poll::Ready((got_west, got_east))
            } else {
                Poll::Pending(format!("west {got_west:?}, east {got_east:?}"))
            },
        )
    })
    .await?;
    progress(&format!(
        "{when}: {} copies on west {got_west:?}, {} on east {got_east:?}",
        got_west.len(),
        got_east.len()
    ));
    Ok(())
}

/// Fails unless `tmcd explain` of `team`'s `default/web` (its workspace named) says it is governed by the
/// team's own `web-placement`, chooses exactly `chosen`, and does not offer `hidden` at all (not granted).
async fn explains(admin: &str, team: &Team, chosen: &[&str], hidden: &[&str]) -> Result<()> {
    let report = explain_report(admin, team, WEB).await?;
    let got: Vec<&str> = report
        .targets
        .iter()
        .filter(|t| t.verdict == Verdict::Chosen)
        .map(|t| t.name.as_str())
        .collect();
    let offered: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
    ensure!(
        report.placement.as_deref() == Some(PLACEMENT)
            && got == chosen
            && !offered.iter().any(|t| hidden.contains(t)),
        "{}: explain must name placement {PLACEMENT}, choose {chosen:?} and not offer {hidden:?}; it said placement \
         {:?}, chose {got:?}, offered {offered:?}",
        team.label(),
        report.placement
    );
    progress(&format!(
        "{}: tmcd explain --workspace {}: placement {PLACEMENT}, chosen {got:?}, offered {offered:?}",
        team.label(),
        team.logical_cluster
    ));
    Ok(())
}

/// What `tmcd explain --workspace <team's logical cluster>` says of `team`'s `default/<name>`.
async fn explain_report(admin: &str, team: &Team, name: &str) -> Result<ExplainReport> {
    let path = format!(
        "/api/v1/explain/deployment/{NAMESPACE}/{name}?workspace={}",
        team.logical_cluster
    );
    let reply = request(admin, "GET", &path).await?;
    serde_json::from_str(&reply.body)
        .with_context(|| format!("explain answered {}: {}", reply.status, reply.body))
}

/// Fails unless `tmcd explain` of `team`'s `default/<name>` drops `target` for a limit, saying `says`.
async fn explains_held_back(
    admin: &str,
    team: &Team,
    name: &str,
    target: &str,
    says: &str,
) -> Result<()> {
    let report = explain_report(admin, team, name).await?;
    let on = report.targets.iter().find(|t| t.name == target);
    ensure!(
        on.is_some_and(|t| t.verdict == Verdict::Dropped
            && t.reason == "limitReached"
            && t.detail.contains(says)),
        "{}: explain of {NAMESPACE}/{name} must drop {target} for a limit ({says:?}); it said {on:?}",
        team.label()
    );
    Ok(())
}

/// Fails unless `tmcd policy diff` of the built `location-affinity` (the policy in use) over the running
/// configuration has exactly one row per `(team, target)`: the team's `default/web`, keyed by its logical
/// cluster, governed by the team's own placement, the candidate choosing `target`, no change.
async fn diff_covers(env: &Env, teams: &[(&Team, &str)]) -> Result<()> {
    let config = tmc_daemon::config::load(&env.dir.path().join("tmc.toml"))?;
    let args = DiffArgs {
        module: fixtures::built_policy("location-affinity")?,
        as_name: None,
    };
    let report = policy_diff::diff(&config, &args).await?;
    let got: BTreeMap<String, (String, Vec<String>, Change)> = report
        .rows
        .iter()
        .map(|row| {
            let chosen = row
                .candidate
                .iter()
                .flat_map(|c| c.keys().cloned())
                .collect();
            (
                row.workload.clone(),
                (row.placement.clone(), chosen, row.change),
            )
        })
        .collect();
    let expected: BTreeMap<String, (String, Vec<String>, Change)> = teams
        .iter()
        .map(|(team, target)| {
            let lc = &team.logical_cluster;
            (
                format!("Deployment {lc}|{NAMESPACE}/{WEB}"),
                (
                    format!("{lc}|{PLACEMENT}"),
                    vec![(*target).to_owned()],
                    Change::None,
                ),
            )
        })
        .collect();
    ensure!(
        got == expected,
        "tmcd policy diff in export mode: expected rows {expected:?}, got {got:?}"
    );
    progress(&format!(
        "tmcd policy diff over every bound workspace: {} rows, {got:?}",
        report.rows.len()
    ));
    Ok(())
}

/// Fails if the syncer of `target` reports a failing object at any time during `period` (polled).
async fn syncer_stays_clean(admin: &str, target: &str, period: Duration) -> Result<()> {
    let deadline = Instant::now() + period;
    let (mut checked, mut without) = (0, 0);
    while Instant::now() < deadline {
        let reply = request(admin, "GET", &format!("/api/v1/syncers/{target}")).await?;
        let body: Value = serde_json::from_str(&reply.body).with_context(|| {
            format!(
                "/api/v1/syncers/{target} answered {}: {}",
                reply.status, reply.body
            )
        })?;
        let health = &body["health"];
        if health.is_null() {
            // No syncer runs while tmcd is not leading (a renewal missed on a loaded machine): nothing to judge.
            without += 1;
        } else {
            ensure!(
                health["failing"] == json!(0),
                "{target}'s syncer reports failing objects: {health}"
            );
            checked += 1;
        }
        tokio::time::sleep(POLL).await;
    }
    ensure!(
        checked > 0,
        "{target}'s syncer never ran in {period:?} ({without} samples without one)"
    );
    progress(&format!(
        "{target}'s syncer: no failing object for {period:?} ({checked} samples, {without} while not leading)"
    ));
    Ok(())
}

/// The second workload of the limits step.
const WEB2: &str = "web2";

/// Per-tenant limits (issue 12 step 4): `team` runs `default/web` (2 replicas) on west and is granted every
/// target by `e2e-c-all`; it creates `default/web2` (2 replicas), which its placement (us-west) would put on
/// west too. With `workloadsPerTarget: 1`, then 0 (below the usage), then `replicasPerTarget: 3`, web2 gets no
/// copy, the placement says `LimitReached=True` with the numbers, and the copies stay exactly `west` and
/// `east` (web's copy is never removed for a limit). With `replicasPerTarget: 4` web2 lands on west and the
/// condition turns False. web2 is deleted afterwards and the grant's limits lifted.
async fn limits_hold_back_new_copies_only(
    env: &Env,
    admin: &str,
    inventory: &kube::Client,
    team: &Team,
    west: &[(String, &str)],
    east: &[(String, &str)],
) -> Result<()> {
    let grant_name = "e2e-c-all";
    let lc = team.logical_cluster.as_str();
    grant_limited(
        inventory,
        grant_name,
        lc,
        None,
        Some(json!({"workloadsPerTarget": 1})),
    )
    .await?;
    team.wait_condition("LimitReached", "False", "no workload")
        .await?;
    team.create(WEB2).await?;
    let held_back = [
        (json!({"workloadsPerTarget": 1}), "1 of 1 workloads"),
        (json!({"workloadsPerTarget": 0}), "1 of 0 workloads"),
        (
            json!({"replicasPerTarget": 3}),
            "2 of 3 replicas per target already on west, 2 more asked",
        ),
    ];
    for (limits, says) in held_back {
        grant_limited(inventory, grant_name, lc, None, Some(limits.clone())).await?;
        team.wait_condition("LimitReached", "True", says).await?;
        let web2 = team.deployments().get(WEB2).await?;
        ensure!(
            states(&web2).is_empty(),
            "{}: {NAMESPACE}/{WEB2} held back by {limits} yet decided: {:?}",
            team.label(),
            states(&web2)
        );
        explains_held_back(admin, team, WEB2, "west", says).await?;
        wait_copies(env, west, east, &format!("limits {limits}")).await?;
    }
    grant_limited(
        inventory,
        grant_name,
        lc,
        None,
        Some(json!({"replicasPerTarget": 4})),
    )
    .await?;
    team.wait_condition("LimitReached", "False", "no workload")
        .await?;
    let with_web2: Vec<(String, &str)> = west
        .iter()
        .cloned()
        .chain([(team.downstream()?, WEB2)])
        .collect();
    wait_copies(
        env,
        &with_web2,
        east,
        "limits {\"replicasPerTarget\": 4}: web2 placed",
    )
    .await?;
    team.deployments()
        .delete(WEB2, &Default::default())
        .await
        .with_context(|| format!("{}: deleting {NAMESPACE}/{WEB2}", team.label()))?;
    grant(inventory, grant_name, lc, None).await?;
    wait_copies(env, west, east, "web2 deleted, limits lifted").await
}

/// The workload a tenant labels with a decision of its own.
const FORGED: &str = "forged";

/// `team` creates `default/forged` already labelled `state.workload.kcp.io/<target>: Sync` for a target not
/// granted to it, bypassing its placement. Either the control plane refuses the create (the decision
/// protocol's admission guard), or it is accepted and no copy of it appears on `target` for [`SETTLE`] (its
/// own placement may place it on a granted target meanwhile), and tmcd drops the forged key. The forged
/// workload is deleted afterwards and the copies are exactly `west` and `east` again.
async fn forged_decision_is_not_synced(
    env: &Env,
    team: &Team,
    target: &str,
    west: &[(String, &str)],
    east: &[(String, &str)],
) -> Result<()> {
    let mut forged = fixtures::deployment(NAMESPACE, FORGED, 1, json!({}), json!({}))?;
    forged.labels_mut().insert(
        format!("{STATE_LABEL_PREFIX}{target}"),
        STATE_SYNC.to_owned(),
    );
    match team
        .deployments()
        .create(&PostParams::default(), &forged)
        .await
    {
        Err(kube::Error::Api(e)) => {
            progress(&format!(
                "{}: {NAMESPACE}/{FORGED} with a decision for {target} refused: {} {}",
                team.label(),
                e.code,
                e.message
            ));
            return Ok(());
        }
        Err(e) => return Err(e).context("creating the forged workload"),
        Ok(_) => progress(&format!(
            "{}: {NAMESPACE}/{FORGED} with a decision for {target} accepted by the control plane",
            team.label()
        )),
    }
    let cluster = env.cluster(target).await?;
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        let copies = copies_on(&cluster).await?;
        if let Some((ns, _)) = copies.keys().find(|(_, name)| name == FORGED) {
            bail!(
                "{}: {NAMESPACE}/{FORGED}, labelled for {target} by the tenant itself (not granted to it), was \
                 copied to {target} as {ns}/{FORGED}",
                team.label()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    // The workspace's placement governs the workload: tmcd replaces the forged decision with its own.
    let key = format!("{STATE_LABEL_PREFIX}{target}");
    let labels = until(
        &format!(
            "{}: tmcd to drop the forged {key} of {NAMESPACE}/{FORGED}",
            team.label()
        ),
        || async {
            let labels = states(&team.deployments().get(FORGED).await?);
            Ok(if labels.contains_key(target) {
                Poll::Pending(format!("state labels {labels:?}"))
            } else {
                Poll::Ready(labels)
            })
        },
    )
    .await?;
    progress(&format!(
        "{}: {NAMESPACE}/{FORGED} not copied to {target} in {SETTLE:?}; tmcd's decision replaced the forged one: {labels:?}",
        team.label()
    ));
    team.deployments()
        .delete(FORGED, &Default::default())
        .await
        .context("deleting the forged workload")?;
    wait_copies(env, west, east, "forged workload deleted").await
}

/// Fails unless downstream namespace `name` on `cluster` names `team`'s logical cluster in its label.
async fn check_namespace_of(cluster: &kube::Client, name: &str, team: &Team) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(cluster.clone());
    let ns = namespaces
        .get(name)
        .await
        .with_context(|| format!("reading downstream namespace {name}"))?;
    let label = ns.labels().get(DOWNSTREAM_CLUSTER_LABEL).cloned();
    ensure!(
        label.as_deref() == Some(team.logical_cluster.as_str()),
        "downstream namespace {name} must carry {DOWNSTREAM_CLUSTER_LABEL}={} ({}), it carries {label:?}",
        team.logical_cluster,
        team.label()
    );
    Ok(())
}

/// tmcd's status (`/api/v1/status`) in brief: leader, targets (ready, reason) and placements (workloads,
/// targets, conditions), for the pending reasons of the waits.
async fn tmcd_view(admin: &str) -> String {
    let report = match request(admin, "GET", "/api/v1/status").await {
        Ok(reply) if reply.status == 200 => serde_json::from_str::<StatusReport>(&reply.body)
            .map_err(|e| format!("unparsable /api/v1/status ({e}): {}", reply.body)),
        Ok(reply) => Err(format!(
            "/api/v1/status answered {}: {}",
            reply.status, reply.body
        )),
        Err(e) => Err(format!("/api/v1/status: {e:#}")),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => return e,
    };
    let targets: Vec<String> = report
        .targets
        .iter()
        .map(|t| {
            format!(
                "{} ready={} ({})",
                t.name,
                t.ready,
                t.ready_reason.as_deref().unwrap_or("-")
            )
        })
        .collect();
    let placements: Vec<String> = report
        .placements
        .iter()
        .map(|p| {
            let conditions: Vec<String> = p
                .conditions
                .iter()
                .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
                .collect();
            format!(
                "{} ({}) workloads={} targets={:?} conditions={conditions:?}",
                p.name.as_deref().unwrap_or("?"),
                p.policy,
                p.workload_count,
                p.targets
            )
        })
        .collect();
    format!(
        "leader={} targets {targets:?} placements {placements:?}",
        report.leader
    )
}

/// Waits until tmcd sees SyncTargets west and east Ready (their push syncers heartbeat them).
async fn targets_ready(admin: &str) -> Result<()> {
    until("tmcd to see SyncTargets west and east Ready", || async {
        let reply = request(admin, "GET", "/api/v1/status").await?;
        ensure!(
            reply.status == 200,
            "/api/v1/status answered {}: {}",
            reply.status,
            reply.body
        );
        let report: StatusReport = serde_json::from_str(&reply.body)
            .with_context(|| format!("parsing /api/v1/status: {}", reply.body))?;
        let ready: BTreeSet<&str> = report
            .targets
            .iter()
            .filter(|t| t.ready)
            .map(|t| t.name.as_str())
            .collect();
        Ok(if ready.contains("west") && ready.contains("east") {
            Poll::Ready(())
        } else {
            Poll::Pending(tmcd_view(admin).await)
        })
    })
    .await?;
    progress("SyncTargets west and east Ready (tmcd's status)");
    Ok(())
}

/// The `tmcd_watches` series of tmcd's `/metrics`: resource -> open watch streams.
async fn watches(admin: &str) -> Result<BTreeMap<String, u64>> {
    let reply = request(admin, "GET", "/metrics").await?;
    ensure!(
        reply.status == 200,
        "GET /metrics answered {}: {}",
        reply.status,
        reply.body
    );
    let mut out = BTreeMap::new();
    for line in reply.body.lines() {
        let Some(rest) = line.strip_prefix(&format!("{WATCHES}{{")) else {
            continue;
        };
        let resource = rest
            .split_once("resource=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(r, _)| r.to_owned())
            .with_context(|| format!("no resource label in the /metrics line {line:?}"))?;
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no value in the /metrics line {line:?}"))?;
        out.insert(resource, value as u64);
    }
    if out.is_empty() {
        let near: Vec<&str> = reply.body.lines().filter(|l| l.contains("watch")).collect();
        bail!(
            "tmcd's /metrics has no {WATCHES}{{resource=...}} series (lines mentioning watch: {near:?})"
        );
    }
    Ok(out)
}

/// The bed of both tests: kcp with the inventory `root:tmc` and tenants a and b bound to its export, clusters
/// west and east, and `location-affinity` in the policy directory.
async fn tenant_bed() -> Result<Env> {
    let logs = tmc_daemon::logging::init_with_default(
        tmc_syncer::process::LogFormat::Text,
        "info,kube_client=off,kube_runtime=warn",
    );
    let bed = TestBed::builder()
        .clusters(["west", "east"])
        .workspace("root:tmc")
        .tenants(["a", "b"])
        .start()
        .await?;
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("policies"))?;
    let env = Env { bed, dir, logs };
    env.install_policy("location-affinity", "location-affinity")?;
    Ok(env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_is_placed_by_its_own_placement_and_a_new_tenant_is_served_live() -> Result<()>
{
    let started = Instant::now();
    let mut env = tenant_bed().await?;
    progress(&format!(
        "bed up: inventory {}, export {EXPORT}, virtual workspace {}",
        env.bed.tenants()?.inventory(),
        env.bed.tenants()?.endpoint()
    ));

    let text = env.export_config_syncing(EXPORT, &["deployments.apps"], "")?;
    let daemon = env.daemon_with_text("tmc.toml", &text).await?;
    let admin = format!("http://{}", daemon.admin_addr());
    progress(&format!("tmcd started in export mode, admin {admin}"));
    targets_ready(&admin).await?;

    // Same placement name, same workload namespace/name in a and b; a's placement chooses west, b's east.
    let a = Team::of(&env.bed, "a").await?;
    let b = Team::of(&env.bed, "b").await?;
    ensure!(
        a.logical_cluster != b.logical_cluster,
        "tenants a and b share logical cluster {}",
        a.logical_cluster
    );
    let inventory = env.bed.kcp_client().await?;
    grant(
        &inventory,
        "e2e-a-west",
        &a.logical_cluster,
        Some("us-west"),
    )
    .await?;
    grant(&inventory, "e2e-b-all", &b.logical_cluster, None).await?;
    a.place_in("us-west").await?;
    b.place_in("us-east").await?;
    let created = Instant::now();
    a.create_web().await?;
    b.create_web().await?;
    a.wait_decided(&admin, &["west"]).await?;
    let a_took = created.elapsed();
    b.wait_decided(&admin, &["east"]).await?;
    progress(&format!(
        "decided {a_took:.1?} (a) and {:.1?} (b) after the two webs were created",
        created.elapsed()
    ));
    a.wait_granted("True", "(1)").await?;

    // The copies: each tenant's web in its own downstream namespace, status back to its own workspace.
    let (ns_a, ns_b) = (a.downstream()?, b.downstream()?);
    ensure!(
        ns_a != ns_b,
        "tenants a and b share downstream namespace {ns_a}"
    );
    wait_copies(
        &env,
        &[(ns_a.clone(), WEB)],
        &[(ns_b.clone(), WEB)],
        "a and b placed",
    )
    .await?;
    check_namespace_of(&env.cluster("west").await?, &ns_a, &a).await?;
    check_namespace_of(&env.cluster("east").await?, &ns_b, &b).await?;
    a.wait_status(&["west"], 2).await?;
    b.wait_status(&["east"], 2).await?;

    // `tmcd explain` names the workspace: a's web by a's placement, on west, east not offered (not granted).
    explains(&admin, &a, &["west"], &["east"]).await?;
    explains(&admin, &b, &["east"], &[]).await?;
    let unnamed = request(
        &admin,
        "GET",
        &format!("/api/v1/explain/deployment/{NAMESPACE}/{WEB}"),
    )
    .await?;
    ensure!(
        unnamed.status == 400 && unnamed.body.contains("--workspace"),
        "explain without a workspace in export mode must answer 400 naming --workspace, answered {}: {}",
        unnamed.status,
        unnamed.body
    );

    // `tmcd policy diff` reads every bound workspace: each tenant's web under its own placement, no change.
    diff_covers(&env, &[(&a, "west"), (&b, "east")]).await?;

    // a, granted us-west only, writes a decision for east itself: never copied there.
    forged_decision_is_not_synced(
        &env,
        &a,
        "east",
        &[(ns_a.clone(), WEB)],
        &[(ns_b.clone(), WEB)],
    )
    .await?;

    let before = watches(&admin).await?;
    let before_total: u64 = before.values().sum();
    progress(&format!(
        "{WATCHES} with tenants a and b: {before:?}, {before_total} in all"
    ));
    ensure!(
        before_total > 0,
        "tmcd holds no watch at all with two tenants bound: {before:?}"
    );

    // Tenant c, bound while tmcd runs, with a web and no placement: a's and b's placements do not govern it.
    let c = env.bed.add_tenant("c").await?;
    progress(&format!(
        "tenant c bound while tmcd runs: {} (logical cluster {})",
        c.workspace, c.logical_cluster
    ));
    let c = Team::of(&env.bed, "c").await?;
    c.create_web().await?;
    c.stays_undecided(
        SETTLE,
        "has no placement in its own workspace (a's and b's must not govern it)",
    )
    .await?;
    // The others keep their own decisions meanwhile.
    a.check_decided(&a.web().await?, &["west"])?;
    b.check_decided(&b.web().await?, &["east"])?;

    // c's own placement (west), but no target granted to c: refused in the placement's status, not placed.
    c.place_in("us-west").await?;
    c.wait_granted("False", "west").await?;
    c.stays_undecided(SETTLE, "is in a workspace granted no target")
        .await?;

    // Granted every target: c's web is decided without a restart, and b's (east only) is untouched.
    let granted = Instant::now();
    grant(&inventory, "e2e-c-all", &c.logical_cluster, None).await?;
    c.wait_decided(&admin, &["west"]).await?;
    progress(&format!(
        "c's web decided {:.1?} after c was granted the targets (it waited {SETTLE:?} undecided without a placement, then {SETTLE:?} without a grant)",
        granted.elapsed()
    ));
    c.wait_granted("True", "(1)").await?;
    a.check_decided(&a.web().await?, &["west"])?;
    b.check_decided(&b.web().await?, &["east"])?;
    // c's web runs on west beside a's: same name, two namespaces.
    let ns_c = c.downstream()?;
    wait_copies(
        &env,
        &[(ns_a.clone(), WEB), (ns_c.clone(), WEB)],
        &[(ns_b.clone(), WEB)],
        "c placed",
    )
    .await?;
    c.wait_status(&["west"], 2).await?;
    note_events(&[&a, &b, &c]).await;
    progress(&format!(
        "after c's placement: {} {NAMESPACE}/{WEB} -> west, {} -> east, {} -> west",
        a.name, b.name, c.name
    ));

    // As many watch streams with c bound (and placed) as before: one per resource, not per workspace.
    // (Polled for a short while, so that a watch being re-established at the instant of one reading is not
    // taken for a new one.)
    let what = format!(
        "{WATCHES} in all to be {before_total} with tenant c bound, as with a and b only ({before:?})"
    );
    let after = wait::until(&what, WATCHES_SETTLE, POLL, || async {
        let now = watches(&admin).await?;
        let total: u64 = now.values().sum();
        Ok(if total == before_total {
            Poll::Ready(now)
        } else {
            Poll::Pending(format!("{now:?}, {total} in all"))
        })
    })
    .await?;
    progress(&format!(
        "{WATCHES} with tenants a, b and c: {after:?}, {} in all (before c: {before_total})",
        after.values().sum::<u64>()
    ));

    // Per-tenant limits on c (its web, 2 replicas, runs on west): new copies held back, running ones kept.
    limits_hold_back_new_copies_only(
        &env,
        &admin,
        &inventory,
        &c,
        &[(ns_a.clone(), WEB), (ns_c.clone(), WEB)],
        &[(ns_b.clone(), WEB)],
    )
    .await?;

    // a's deletion removes a's copy only: c's (same cluster, same name) and b's stay, and run.
    a.deployments()
        .delete(WEB, &Default::default())
        .await
        .with_context(|| format!("{}: deleting {NAMESPACE}/{WEB}", a.label()))?;
    progress(&format!("{}: deleted {NAMESPACE}/{WEB}", a.label()));
    wait_copies(
        &env,
        &[(ns_c.clone(), WEB)],
        &[(ns_b.clone(), WEB)],
        "a's web deleted",
    )
    .await?;
    until(
        &format!(
            "{}: {NAMESPACE}/{WEB} gone (finalizers released)",
            a.label()
        ),
        || async {
            Ok(match a.deployments().get_opt(WEB).await? {
                None => Poll::Ready(()),
                Some(web) => Poll::Pending(format!("finalizers {:?}", web.finalizers())),
            })
        },
    )
    .await?;
    c.wait_status(&["west"], 2).await?;
    b.wait_status(&["east"], 2).await?;

    // c unbinds the export while tmcd runs: kcp deletes c's objects of the export, tmcd's finalizer holds c's
    // web until its copy is removed; b's copy is untouched, and west's syncer is left with nothing failing.
    c.unbind().await?;
    wait_copies(&env, &[], &[(ns_b.clone(), WEB)], "c unbound").await?;
    until(
        &format!("{}: APIBinding {EXPORT} gone", c.label()),
        || async {
            Ok(match c.bindings().get_opt(EXPORT).await? {
                None => Poll::Ready(()),
                Some(b) => Poll::Pending(format!("finalizers {:?}", b.finalizers())),
            })
        },
    )
    .await?;
    syncer_stays_clean(&admin, "west", SETTLE).await?;
    b.wait_status(&["east"], 2).await?;

    daemon.stop().await;
    progress(&format!(
        "checked 3 tenants, 3 workloads {NAMESPACE}/{WEB} (a: west, b: east, c: undecided for {SETTLE:?}, then \
         west beside a's), each copied into its own downstream namespace with its status back home, a's \
         deletion leaving c's and b's copies, c's unbinding removing c's only; {before_total} watch streams before and after binding c; {:.0?} \
         in all",
        started.elapsed()
    ));
    Ok(())
}

/// The physical clusters of the bed.
const CLUSTERS: [&str; 2] = ["west", "east"];

/// A copy: (cluster, downstream namespace, name).
type CopyKey = (String, String, String);

/// Copies (see [`CopyKey`]) -> (uid, available replicas).
type Fleet = BTreeMap<CopyKey, (String, i32)>;

/// Every copy tmc manages on `clusters`; fails when one of them cannot be read.
async fn fleet_on(env: &Env, clusters: &[&str]) -> Result<Fleet> {
    let mut out = Fleet::new();
    for cluster in clusters {
        let all: Api<Deployment> = Api::all(env.cluster(cluster).await?);
        let list = all
            .list(&kube::api::ListParams::default().labels(&format!("{MANAGED_LABEL}=true")))
            .await
            .with_context(|| format!("listing the copies on {cluster}"))?;
        for d in list.items {
            let available = d
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            out.insert(
                (
                    (*cluster).to_owned(),
                    d.namespace().unwrap_or_default(),
                    d.name_any(),
                ),
                (d.uid().unwrap_or_default(), available),
            );
        }
    }
    Ok(out)
}

/// Every copy on west and east.
async fn fleet(env: &Env) -> Result<Fleet> {
    fleet_on(env, &CLUSTERS).await
}

/// The copies of `fleet` on `clusters` only.
fn only_on(fleet: &Fleet, clusters: &[&str]) -> Fleet {
    fleet
        .iter()
        .filter(|((cluster, _, _), _)| clusters.contains(&cluster.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Fails unless every copy of `before` is still there, the same object (uid) with `replicas` available.
fn kept(before: &Fleet, now: &Fleet, replicas: i32, when: &str) -> Result<()> {
    for (key, (uid, _)) in before {
        match now.get(key) {
            None => bail!("{when}: the copy {key:?} was deleted"),
            Some((now_uid, _)) if now_uid != uid => {
                bail!(
                    "{when}: the copy {key:?} was deleted and created again (uid {uid} -> {now_uid})"
                )
            }
            Some((_, available)) if *available < replicas => {
                bail!(
                    "{when}: the copy {key:?} has {available} available replicas, {replicas} before"
                )
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Samples the copies on `clusters` every second until `check` (given each sample) is ready, failing on the
/// first copy of `before` there that is lost, re-created or short of 2 available replicas, on the first error
/// of `check`, or after [`TIMEOUT`]; returns what `check` gave and the number of samples.
async fn sample_until<T>(
    env: &Env,
    before: &Fleet,
    clusters: &[&str],
    when: &str,
    mut check: impl AsyncFnMut(&Fleet) -> Result<Poll<T>>,
) -> Result<(T, usize)> {
    let before = only_on(before, clusters);
    let deadline = Instant::now() + TIMEOUT;
    let mut samples = 0;
    loop {
        let now = fleet_on(env, clusters).await?;
        kept(&before, &now, 2, when)?;
        samples += 1;
        match check(&now).await? {
            Poll::Ready(out) => return Ok((out, samples)),
            Poll::Pending(why) if Instant::now() >= deadline => {
                bail!("{when}: still waiting after {samples} samples ({TIMEOUT:?}): {why}")
            }
            Poll::Pending(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// [`sample_until`] for `period`, `also` given each sample; returns the number of samples.
async fn sample_for(
    env: &Env,
    before: &Fleet,
    clusters: &[&str],
    period: Duration,
    when: &str,
    mut also: impl AsyncFnMut(&Fleet) -> Result<()>,
) -> Result<usize> {
    let end = Instant::now() + period;
    let ((), samples) = sample_until(env, before, clusters, when, async |now| {
        also(now).await?;
        Ok(if Instant::now() >= end {
            Poll::Ready(())
        } else {
            Poll::Pending(String::new())
        })
    })
    .await?;
    Ok(samples)
}

/// Samples every copy every second for `period`, failing on the first one lost, re-created or short of replicas.
async fn keeps_for(env: &Env, before: &Fleet, period: Duration, when: &str) -> Result<usize> {
    sample_for(env, before, &CLUSTERS, period, when, async |_| Ok(())).await
}

/// Fails unless `after` keeps for 5 s with no copy added, and a's and b's statuses show 2 replicas on their
/// own clusters; the samples taken.
async fn settles(env: &Env, a: &Team, b: &Team, after: &Fleet) -> Result<usize> {
    let settled = keeps_for(env, after, Duration::from_secs(5), "settled").await?;
    ensure!(
        fleet(env).await?.len() == after.len(),
        "a copy appeared after every workload was placed once"
    );
    a.wait_status(&["west"], 2).await?;
    b.wait_status(&["east"], 2).await?;
    Ok(settled)
}

/// The copies expected when a's `names` run on west in a's downstream namespace and b's on east in b's.
fn expected(a: &Team, b: &Team, names: &[String]) -> Result<BTreeSet<CopyKey>> {
    let mut want = BTreeSet::new();
    for (cluster, team) in [("west", a), ("east", b)] {
        for name in names {
            want.insert((cluster.to_owned(), team.downstream()?, name.clone()));
        }
    }
    Ok(want)
}

/// Waits until the copies on west and east are exactly `want`, each with 2 replicas available; returns them.
async fn wait_fleet(env: &Env, want: &BTreeSet<CopyKey>) -> Result<Fleet> {
    let what = format!(
        "exactly {} copies, each in its tenant's namespace, 2 replicas available each",
        want.len()
    );
    until(&what, || async {
        let now = fleet(env).await?;
        let keys: BTreeSet<_> = now.keys().cloned().collect();
        let short = now.values().filter(|(_, available)| *available < 2).count();
        Ok(if keys == *want && short == 0 {
            Poll::Ready(now)
        } else {
            Poll::Pending(format!(
                "missing {:?}, unexpected {:?}, {short} short of replicas",
                want.difference(&keys).collect::<Vec<_>>(),
                keys.difference(want).collect::<Vec<_>>()
            ))
        })
    })
    .await
}

/// Waits until west holds exactly a's `names` in a's downstream namespace and east b's in b's, each with 2
/// replicas available, nothing else managed on either; returns the copies.
async fn placed_with_replicas(env: &Env, a: &Team, b: &Team, names: &[String]) -> Result<Fleet> {
    wait_fleet(env, &expected(a, b, names)?).await
}

/// `web`, then `w0`, `w1`, ...: `n` workload names.
fn workload_names(n: usize) -> Vec<String> {
    std::iter::once(WEB.to_owned())
        .chain((0..n - 1).map(|i| format!("w{i}")))
        .collect()
}

/// The bed of the fault tests: tmcd runs as a process (so it can be killed) over tenants a and b, each granted
/// every target; a's `web-placement` chooses west, b's east.
struct TenantFaults {
    env: Env,
    tmcd: tmc_tests::testbed::process::Supervised,
    a: Team,
    b: Team,
    /// A client of the inventory workspace `root:tmc`.
    inventory: kube::Client,
}

impl TenantFaults {
    /// Starts tmcd as a process with the configuration `text` on `env`, grants every target to a and b, and
    /// applies their placements, with `evictionGracePeriodSeconds` = `grace` when given.
    async fn start(env: Env, text: &str, grace: Option<u32>) -> Result<Self> {
        let config = env.dir.path().join("tmc.toml");
        std::fs::write(&config, text)?;
        let tmcd = env.bed.spawn(
            "tmcd",
            env!("CARGO_BIN_EXE_tmcd"),
            ["--config".to_string(), config.display().to_string()],
        )?;
        let (a, b) = (
            Team::of(&env.bed, "a").await?,
            Team::of(&env.bed, "b").await?,
        );
        let inventory = env.bed.kcp_client().await?;
        grant(&inventory, "faults-a", &a.logical_cluster, None).await?;
        grant(&inventory, "faults-b", &b.logical_cluster, None).await?;
        for (team, region) in [(&a, "us-west"), (&b, "us-east")] {
            let mut spec = placement_in(region);
            if let Some(grace) = grace {
                spec["evictionGracePeriodSeconds"] = json!(grace);
            }
            team.apply_placement(PLACEMENT, spec).await?;
        }
        Ok(Self {
            env,
            tmcd,
            a,
            b,
            inventory,
        })
    }

    /// Creates each of `names` (2 replicas) in both tenants.
    async fn create(&self, names: &[String]) -> Result<()> {
        for name in names {
            self.a.create(name).await?;
            self.b.create(name).await?;
        }
        Ok(())
    }

    /// Whether SyncTarget `name` says Ready=True (`None`: no Ready condition yet).
    async fn target_ready(&self, name: &str) -> Result<Option<bool>> {
        let targets: Api<SyncTarget> = Api::all(self.inventory.clone());
        Ok(common::ready_status(&targets, name)
            .await?
            .map(|status| status == "True"))
    }
}

/// "Nothing lost" on the tenant bed (the faults of `e2e_faults.rs`, in export mode): tmcd runs as a process
/// over two tenants, a placing on west and b on east, 5 workloads each with 2 replicas. kcp (the control plane
/// and the export's virtual workspace) is frozen with SIGSTOP for 20 s, then tmcd is killed with SIGKILL while
/// each tenant creates 4 more, and started again. Sampled every second throughout: no copy deleted, none
/// re-created, none short of replicas; afterwards every workload has exactly one copy, in its own tenant's
/// namespace on its tenant's cluster, and the copies from before are the same objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_copies_survive_a_frozen_control_plane_and_a_killed_tmcd() -> Result<()> {
    let started = Instant::now();
    let env = tenant_bed().await?;
    let text = env.export_config_syncing(EXPORT, &["deployments.apps"], "")?;
    let mut bed = TenantFaults::start(env, &text, None).await?;
    let names = workload_names(9);
    bed.create(&names[..5]).await?;
    let (env, a, b) = (&bed.env, &bed.a, &bed.b);
    let before = placed_with_replicas(env, a, b, &names[..5]).await?;
    progress(&format!(
        "{} copies placed, 2 replicas available each",
        before.len()
    ));

    bed.env.bed.kcp_mut()?.pause()?;
    let frozen = keeps_for(&bed.env, &before, Duration::from_secs(20), "kcp frozen").await;
    bed.env.bed.kcp_mut()?.resume()?;
    let frozen = frozen?;
    let thawed = keeps_for(&bed.env, &before, Duration::from_secs(10), "kcp thawed").await?;
    bed.tmcd
        .ensure_running()
        .context("tmcd exited while kcp was frozen")?;
    progress(&format!(
        "kcp frozen 20 s, then running 10 s: {} copies kept, {frozen} + {thawed} samples",
        before.len()
    ));

    bed.tmcd.kill();
    bed.create(&names[5..]).await?;
    let down = keeps_for(&bed.env, &before, Duration::from_secs(5), "tmcd killed").await?;
    bed.tmcd.relaunch()?;
    let (env, a, b) = (&bed.env, &bed.a, &bed.b);
    let after = placed_with_replicas(env, a, b, &names).await?;
    kept(&before, &after, 2, "after tmcd's restart")?;
    let settled = settles(env, a, b, &after).await?;
    progress(&format!(
        "tmcd killed ({down} samples while down) and started again: {} copies, the {} from before the same \
         objects, {settled} samples settled; {:.0?} in all",
        after.len(),
        before.len(),
        started.elapsed()
    ));
    bed.tmcd.stop(Duration::from_secs(10));
    Ok(())
}

/// How long the fault tests' placements keep a workload on a target that is not Ready: short, so that a
/// cluster stopped for the test is down well past it.
const FAULT_GRACE_SECONDS: u32 = 10;
/// a's workload that may move: spread over both targets by its own placement.
const ROAM: &str = "roam";

/// A physical cluster stopped on the tenant bed: tmcd (a process) over tenants a (placing on west) and b (on
/// east), 4 workloads each of 2 replicas, and a's `roam` (4 replicas) spread over west and east by a's
/// placement `roam` (replica-spread), every placement with a 10 s eviction grace. West's kube-apiserver is
/// stopped while both tenants create 2 more workloads, until west's SyncTarget is NotReady, roam has moved
/// whole to east, and west has been NotReady for 20 s; then west starts again.
///
/// Sampled every second: east's copies are never deleted, re-created or short of replicas; while west is
/// down its SyncTarget stays NotReady and a's workloads pinned to west stay decided for it with no removal
/// asked (held, though past their grace); west's removal of roam is asked only once roam's copy on east has
/// its 4 replicas available. Once west is back (Ready again), every copy from before but west's roam is the
/// same object with its replicas; roam's copies together never have fewer than 4 available replicas; at the
/// end every workload has exactly one copy in its own tenant's namespace (roam one on each cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_copies_survive_a_stopped_cluster_and_only_what_may_move_moves() -> Result<()> {
    let started = Instant::now();
    let env = tenant_bed().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    let text = env.export_config_syncing(EXPORT, &["deployments.apps"], "")?;
    let mut bed = TenantFaults::start(env, &text, Some(FAULT_GRACE_SECONDS)).await?;
    bed.a
        .apply_placement(
            ROAM,
            json!({
                "policy": {"name": "replica-spread"},
                "priority": 10,
                "workloadSelector": {"matchLabels": {"roam": "yes"}},
                "evictionGracePeriodSeconds": FAULT_GRACE_SECONDS,
            }),
        )
        .await?;
    let names = workload_names(6);
    let (first, later) = names.split_at(4);
    bed.create(first).await?;
    bed.a.create_with(ROAM, 4, json!({"roam": "yes"})).await?;
    let ns_a = bed.a.downstream()?;
    let roam_on = |cluster: &str| (cluster.to_owned(), ns_a.clone(), ROAM.to_owned());
    let mut want = expected(&bed.a, &bed.b, first)?;
    want.extend([roam_on("west"), roam_on("east")]);
    let before = wait_fleet(&bed.env, &want).await?;
    ensure!(
        bed.target_ready("west").await? == Some(true),
        "west is not Ready before the fault"
    );
    let roam_west_uid = before[&roam_on("west")].0.clone();
    // What must survive west's stop: every copy but west's roam, which may move.
    let mut pinned = before.clone();
    pinned.remove(&roam_on("west"));
    progress(&format!(
        "{} copies placed (roam 2 + 2), west Ready",
        before.len()
    ));

    let stopped = Instant::now();
    bed.env.bed.stop_cluster("west").await?;
    let (env, a) = (&bed.env, &bed.a);
    let ((), stale) = sample_until(env, &pinned, &["east"], "west stopped", async |_| {
        a.still_placed_on(first, "west").await?;
        Ok(match bed.target_ready("west").await? {
            Some(false) => Poll::Ready(()),
            ready => Poll::Pending(format!("west Ready={ready:?}")),
        })
    })
    .await?;
    progress(&format!(
        "west's SyncTarget NotReady {:.0?} after its kube-apiserver was told to stop ({stale} samples)",
        stopped.elapsed()
    ));
    let not_ready = Instant::now();
    bed.create(later).await?;
    // While west is down: it stays NotReady, a's pinned workloads stay held, and roam moves to east (its
    // removal on west asked only once east runs all 4).
    let down = async |now: &Fleet| -> Result<Option<i32>> {
        ensure!(
            bed.target_ready("west").await? == Some(false),
            "west's SyncTarget turned Ready while its kube-apiserver is stopped"
        );
        a.still_placed_on(first, "west").await?;
        let roam = a.deployments().get(ROAM).await?;
        let east = now
            .get(&roam_on("east"))
            .map_or(0, |(_, available)| *available);
        if roam
            .annotations()
            .contains_key(&deletion_annotation("west"))
        {
            ensure!(
                east >= 4,
                "roam's removal from west was asked while its copy on east has {east} of 4 replicas available"
            );
            return Ok(Some(east));
        }
        Ok(None)
    };
    let (moved, evacuating) = sample_until(env, &pinned, &["east"], "west down", async |now| {
        Ok(match down(now).await? {
            Some(east) => Poll::Ready(east),
            None => Poll::Pending("roam not moved to east yet".into()),
        })
    })
    .await?;
    let rest = Duration::from_secs(20).saturating_sub(not_ready.elapsed());
    let held = sample_for(env, &pinned, &["east"], rest, "west down", async |now| {
        down(now).await.map(drop)
    })
    .await?;
    let on_east = fleet_on(env, &["east"]).await?.len();
    progress(&format!(
        "west down {:.0?}: roam moved to east ({moved} available there) after {evacuating} samples, {held} \
         more samples with west NotReady; a's {} pinned workloads held on west; {on_east} copies on east",
        stopped.elapsed(),
        first.len()
    ));

    let restarted = Instant::now();
    bed.env.bed.start_cluster("west").await?;
    let (env, a, b) = (&bed.env, &bed.a, &bed.b);
    let mut roam_west_seen = Vec::new();
    let ((), back) = sample_until(env, &pinned, &CLUSTERS, "west started again", async |now| {
        let roam: i32 = CLUSTERS
            .iter()
            .filter_map(|c| now.get(&roam_on(c)))
            .map(|(_, available)| *available)
            .sum();
        ensure!(
            roam >= 4,
            "roam's copies have {roam} available replicas together, 4 wanted"
        );
        roam_west_seen.push(now.get(&roam_on("west")).map(|(uid, _)| uid.clone()));
        Ok(match bed.target_ready("west").await? {
            Some(true) => Poll::Ready(()),
            ready => Poll::Pending(format!("west Ready={ready:?}")),
        })
    })
    .await?;
    let mut want = expected(a, b, &names)?;
    want.extend([roam_on("west"), roam_on("east")]);
    let after = wait_fleet(env, &want).await?;
    let placed = restarted.elapsed();
    kept(&pinned, &after, 2, "after west came back")?;
    let settled = settles(env, a, b, &after).await?;
    let original = Some(roam_west_uid.clone());
    let first_back = roam_west_seen.first().cloned().flatten();
    let removed_at = roam_west_seen.iter().position(|uid| *uid != original);
    progress(&format!(
        "west back, Ready after {back} samples, every copy there {placed:.0?} after its restart began: {} \
         copies, the {} pinned ones from before the same objects, \
         {settled} samples settled; roam's original copy on west {} at west's first sample back, {}, and \
         {} at the end; {:.0?} in all",
        after.len(),
        pinned.len(),
        if first_back == original {
            "still there"
        } else {
            "gone"
        },
        match removed_at {
            Some(i) => format!("gone from sample {i}"),
            None => "never gone while west turned Ready".to_owned(),
        },
        if after[&roam_on("west")].0 == roam_west_uid {
            "the same object (its removal withdrawn)"
        } else {
            "a new object"
        },
        started.elapsed()
    ));
    bed.tmcd.stop(Duration::from_secs(10));
    Ok(())
}

/// The lines of tmcd's log (`<bed dir>/tmcd.log`) that contain `text`.
fn tmcd_log_lines(env: &Env, text: &str) -> Result<Vec<String>> {
    let path = env.bed.dir().join("tmcd.log");
    let log = std::fs::read_to_string(&path)
        .with_context(|| format!("reading tmcd's log {}", path.display()))?;
    Ok(log
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_owned)
        .collect())
}

/// tmcd cut off kcp without a reset: tmcd (a process) reaches kcp only through a pausable TCP proxy, the
/// export's virtual workspace too (`[control_plane] virtual_workspace_server` set to the proxy, as for a kcp
/// behind a front proxy), over tenants a (west) and b (east) with 5 workloads each. The proxy is paused for
/// 20 s (connections held open, nothing forwarded either way) while each tenant creates 3 more workloads
/// straight to kcp, then resumed.
///
/// Sampled every second: no copy deleted, re-created or short of replicas, and no copy of the new workloads
/// appears while the proxy is paused (tmcd and its syncers see kcp only through it). After the resume, without
/// restarting tmcd, every workload has exactly one copy in its own tenant's namespace, and the copies from
/// before are the same objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_copies_survive_tmcd_cut_off_kcp_by_a_paused_proxy() -> Result<()> {
    let started = Instant::now();
    let env = tenant_bed().await?;
    let base = env.bed.kcp()?.base_url();
    let kcp_addr = base
        .trim_start_matches("https://")
        .parse()
        .with_context(|| format!("kcp's address in {base}"))?;
    let proxy = TcpProxy::start(kcp_addr).await?;
    let text = env.export_config_via(EXPORT, &proxy.url(), &["deployments.apps"], "")?;
    let mut bed = TenantFaults::start(env, &text, None).await?;
    let pid = bed.tmcd.pid();
    let names = workload_names(8);
    let (first, later) = names.split_at(5);
    bed.create(first).await?;
    let (env, a, b) = (&bed.env, &bed.a, &bed.b);
    let before = placed_with_replicas(env, a, b, first).await?;
    let through = tmcd_log_lines(env, "virtual_workspace_server")?;
    ensure!(
        through
            .iter()
            .any(|l| l.contains(&format!("endpoint={}/services/apiexport/", proxy.url()))),
        "tmcd's log does not say it reaches the virtual workspace through the proxy {}: {through:?}",
        proxy.url()
    );
    progress(&format!(
        "{} copies placed through the proxy ({} connections, {} bytes from kcp so far)",
        before.len(),
        proxy.connections(),
        proxy.bytes_down()
    ));

    proxy.pause();
    let paused_at = Instant::now();
    let created = bed.create(later).await;
    // A write the proxy was making when it paused may still have completed: counted from here.
    let up_at_pause = proxy.bytes_up();
    let mut new_keys = expected(a, b, later)?;
    let cut = sample_for(
        env,
        &before,
        &CLUSTERS,
        Duration::from_secs(20).saturating_sub(paused_at.elapsed()),
        "proxy paused",
        async |now| {
            new_keys.retain(|k| !now.contains_key(k));
            ensure!(
                new_keys.len() == 2 * later.len(),
                "a new workload got a copy while tmcd was cut off kcp: tmcd or a syncer bypasses the proxy"
            );
            Ok(())
        },
    )
    .await;
    let up_while_paused = proxy.bytes_up() - up_at_pause;
    proxy.resume();
    created?;
    let cut = cut?;
    ensure!(
        up_while_paused == 0,
        "the paused proxy forwarded {up_while_paused} bytes to kcp"
    );
    progress(&format!(
        "proxy paused {:.0?} while each tenant created {}: {} copies kept, none new, {cut} samples",
        paused_at.elapsed(),
        later.len(),
        before.len()
    ));

    let resumed = Instant::now();
    let after = placed_with_replicas(env, a, b, &names).await?;
    let recovered = resumed.elapsed();
    kept(&before, &after, 2, "after the proxy resumed")?;
    let settled = settles(env, a, b, &after).await?;
    bed.tmcd
        .ensure_running()
        .context("tmcd exited while cut off")?;
    ensure!(bed.tmcd.pid() == pid, "tmcd was restarted");
    let stops = tmcd_log_lines(&bed.env, "stopped leading")?.len();
    progress(&format!(
        "proxy resumed: the {} new workloads placed {recovered:.0?} later by the same tmcd (stopped leading \
         {stops} times), {} copies, the {} from before the same objects, {settled} samples settled; {:.0?} in all",
        2 * later.len(),
        after.len(),
        before.len(),
        started.elapsed()
    ));
    bed.tmcd.stop(Duration::from_secs(10));
    Ok(())
}
