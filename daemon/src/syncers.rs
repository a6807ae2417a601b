//! Push mode: a `tmc_syncer::Syncer` per push cluster, run inside tmcd while
//! it leads. Pull clusters run their own agent; nothing runs here for them.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use tmc_api::crd::{SyncTarget, SyncTargetGrant};
use tmc_api::tenancy::LogicalCluster;
use tmc_syncer::{BoundWorkspaces, NamespaceMapping, SyncedKind, Syncer, SyncerConfig};
use tracing::Instrument as _;

use crate::config::{self, Cluster, Mode};
use crate::kubeconn;
use crate::placement::grants::Grants;
use crate::state::State;
use crate::workspaces::Bound;

/// Delay before a failed syncer is started again.
const RESTART: Duration = Duration::from_secs(5);

/// The syncer configuration of one push cluster.
pub fn syncer_config(
    state: &State,
    cluster: &Cluster,
    upstream: Client,
    downstream: Client,
    kinds: &[SyncedKind],
) -> SyncerConfig {
    let cfg = &state.config;
    let mut sc = SyncerConfig::new(
        cluster.name.get_ref(),
        upstream,
        downstream,
        cfg.source_identity(),
    );
    sc.kinds = kinds.to_vec();
    sc.workspaces = state.workspaces.for_syncers().map(|bound| {
        Arc::new(TenantWorkloads {
            bound,
            grants: state.grants.clone(),
            targets: state.targets.clone(),
        }) as Arc<dyn BoundWorkspaces>
    });
    sc.namespace_mapping = match cfg.sync.namespace_mapping {
        _ if sc.workspaces.is_some() => NamespaceMapping::Workspaces,
        config::NamespaceMapping::Same => NamespaceMapping::Same,
        config::NamespaceMapping::Prefixed => {
            NamespaceMapping::Prefixed(cfg.sync.namespace_prefix.get_ref().clone())
        }
    };
    sc.heartbeat_interval = cfg.sync.heartbeat_interval();
    sc.capacity_interval = cfg.sync.capacity_interval();
    sc.replicas_owner = cfg.sync.replicas_owner;
    sc.report_gate = Some(state.decisions.clone());
    sc
}

/// What a push syncer reads tenant workloads through in export mode: tmcd's
/// clients of the export's virtual workspace, and the grants its placements
/// obey, so that a syncer creates copies only where tmcd could have decided
/// them (see [`BoundWorkspaces::granted`]).
struct TenantWorkloads {
    bound: Arc<Bound>,
    /// The inventory's grants (always watched in export mode; without them
    /// nothing is granted).
    grants: Option<Store<SyncTargetGrant>>,
    targets: Store<SyncTarget>,
}

impl BoundWorkspaces for TenantWorkloads {
    fn wildcard(&self) -> Client {
        self.bound.wildcard()
    }

    fn client_for(&self, cluster: &LogicalCluster) -> Result<Client, String> {
        Ok(self.bound.client_for(cluster))
    }

    /// Granted as [`Grants::allows`] says for the SyncTarget's labels; not
    /// known while the SyncTarget is not in the store.
    fn granted(&self, cluster: &LogicalCluster, target: &str) -> Option<bool> {
        let target = self.targets.get(&ObjectRef::new(target))?;
        let grants = self.grants.as_ref().map(Store::state).unwrap_or_default();
        let labels = target.metadata.labels.clone().unwrap_or_default();
        Some(Grants::new(&grants).allows(cluster.as_str(), &labels))
    }
}

/// Runs a syncer for every push cluster until `shutdown` turns true (or the
/// future is dropped, which aborts them); writes to the clusters go through
/// the state's fence, like `upstream`'s should; a syncer
/// that stops with an error (or whose cluster cannot be reached to start
/// with) is started again after a pause.
pub async fn run_push(
    state: Arc<State>,
    upstream: Client,
    kinds: Vec<SyncedKind>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Dropping the set (the leader's work aborted) aborts every syncer.
    let mut tasks = tokio::task::JoinSet::new();
    for cluster in state
        .config
        .clusters
        .iter()
        .filter(|c| c.mode == Mode::Push)
        .cloned()
    {
        let state = state.clone();
        let upstream = upstream.clone();
        let kinds = kinds.clone();
        let mut stop = shutdown.clone();
        let name = cluster.name.get_ref().clone();
        let span = tracing::info_span!("syncer", cluster = %name);
        tasks.spawn(
            async move {
                loop {
                    if *stop.borrow() {
                        return;
                    }
                    match start_one(&state, &cluster, upstream.clone(), &kinds).await {
                        Ok(syncer) => {
                            tracing::info!("push syncer started");
                            let mut until = stop.clone();
                            let result = syncer
                                .run(async move {
                                    let _ = until.wait_for(|s| *s).await;
                                })
                                .await;
                            match result {
                                Ok(()) => tracing::info!("push syncer stopped"),
                                Err(err) => tracing::error!(error = %format!("{err:#}"), "push syncer failed; restarting"),
                            }
                        }
                        Err(err) => tracing::error!(error = %format!("{err:#}"), "cannot start the push syncer; retrying"),
                    }
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(RESTART) => {}
                    }
                }
            }
            .instrument(span),
        );
    }
    while tasks.join_next().await.is_some() {}
    state.clear_syncers();
}

async fn start_one(
    state: &Arc<State>,
    cluster: &Cluster,
    upstream: Client,
    kinds: &[SyncedKind],
) -> anyhow::Result<Arc<Syncer>> {
    let kubeconfig = cluster
        .kubeconfig
        .as_ref()
        .map(|k| state.config.resolve(k.get_ref()));
    let downstream = kubeconn::fenced_client(
        kubeconfig.as_deref(),
        cluster.context.as_deref(),
        None,
        &state.fence,
    )
    .await?;
    let syncer = Arc::new(Syncer::new(syncer_config(
        state, cluster, upstream, downstream, kinds,
    )));
    state.add_syncer(syncer.clone());
    Ok(syncer)
}
