//! [`Daemon::start`]: the library entry point of tmcd.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use kube::Client;
use tmc_policy_host::{PolicyHost, WatchHandle};
use tmc_syncer::SyncedKind;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::fence::Fence;
use crate::leader::Leading;
use crate::placement::heartbeats::Heartbeats;
use crate::placement::triggers::Triggers;
use crate::placement::watch as stores;
use crate::policy::{HostRunner, host_config};
use crate::state::{Parts, State};
use crate::telemetry::logs::SyncerLogs;
use crate::watch_count::OpenWatches;
use crate::workspaces::Workspaces;
use crate::{admin, admission, crds, kubeconn, synctargets};

/// How long to wait for the CRDs to be Established.
const CRD_TIMEOUT: Duration = Duration::from_secs(60);

/// A running tmcd.
pub struct Daemon {
    state: Arc<State>,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _policy_watch: Option<WatchHandle>,
}

impl Daemon {
    /// Connects, installs the CRDs, registers the clusters, installs the
    /// decision-protocol admission policy where served, loads the
    /// policies, starts the admin server, and competes for leadership; the
    /// leader runs the placement controllers and the push syncers.
    pub async fn start(mut config: Config, logs: SyncerLogs) -> Result<Self> {
        let base = kubeconn::control_plane_config(&config).await?;
        let watches = OpenWatches::default();
        let client = kubeconn::client_at(&base, None, None, &watches)?;
        crds::install(&client, CRD_TIMEOUT)
            .await
            .context("installing the tmc CRDs")?;
        let synced_from = crate::source_identity::resolve(&client, &config).await?;
        synctargets::register(&client, &config.clusters, &synced_from).await?;
        config.synced_from = Some(toml::Spanned::new(0..0, synced_from));
        // What the leader writes with: refused by the fence unless leading.
        let fence = Fence::new();
        let workspaces = Workspaces::connect(&config, &client, &fence, &watches).await?;
        let kinds = resolve_kinds(&workspaces.watch_client(&client), &config).await?;
        admission::install(&client, &config, &kinds).await?;

        let host =
            PolicyHost::new(host_config(&config.policies)).context("starting the policy host")?;
        let dir = config.resolve(config.policies.directory.get_ref());
        let report = host
            .load_dir(&dir)
            .await
            .with_context(|| format!("loading policies from {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), report = ?report, "policies loaded");
        let policy_watch = host
            .watch(&dir)
            .with_context(|| format!("watching {} for policy changes", dir.display()))?;

        // Everything the State holds is built first, so no part of tmcd
        // ever sees it half-filled.
        let work_client = kubeconn::client_at(&base, None, Some(&fence), &watches)?;
        let heartbeats = Arc::new(Heartbeats::new(config.sync.heartbeat_threshold()));
        let triggers = Arc::new(Triggers::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let stores = stores::start(
            &client,
            &workspaces,
            &heartbeats,
            &triggers,
            shutdown_rx.clone(),
        );
        let parts = Parts {
            identity: identity(),
            logs,
            fence,
            heartbeats,
            triggers,
            policies: Arc::new(HostRunner(host)),
            targets: stores.targets.clone(),
            placements: stores.placements.clone(),
            grants: stores.grants.clone(),
            audit: AuditLog::open(&config.audit, &config.base_dir)?,
            reader: client.clone(),
            kinds: kinds.clone(),
            workspaces,
            watches,
        };
        let state = Arc::new(State::new(config, parts));

        let listener = admin::server::bind(&state.config).await?;
        let admin_addr = listener.local_addr().context("reading the admin address")?;
        let mut tasks = Vec::new();
        let mut stop = shutdown_rx.clone();
        let admin_state = state.clone();
        tasks.push(tokio::spawn(async move {
            let stop_fut = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(err) = admin::server::serve(admin_state, listener, stop_fut).await {
                tracing::error!(error = %err, "admin server failed");
            }
        }));
        tasks.push(tokio::spawn(synctargets::watch_readiness(
            state.clone(),
            work_client.clone(),
            stores.targets.clone(),
            shutdown_rx.clone(),
        )));
        let leading = Leading {
            state: state.clone(),
            client,
            work_client,
            kinds,
            stores: Arc::new(stores),
        };
        tasks.push(tokio::spawn(leading.compete(shutdown_rx)));
        tracing::info!(admin = %admin_addr, identity = %state.identity, "tmcd started");
        Ok(Self {
            state,
            admin_addr,
            shutdown,
            tasks,
            _policy_watch: Some(policy_watch),
        })
    }

    /// The shared state (leadership, metrics, stores).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Where the admin server listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Stops everything, giving the lease up.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A unique identity: host name, process id and start time.
fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tmcd".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

/// The configured resources (`plural.group`) as kinds the control plane
/// serves; a resource it does not serve is skipped with a warning (install
/// its CRD and restart tmcd to sync it), and none served at all is an error.
pub(crate) async fn resolve_kinds(client: &Client, config: &Config) -> Result<Vec<SyncedKind>> {
    let mut kinds = Vec::new();
    for resource in &config.sync.resources {
        let text = resource.get_ref();
        match resolve_kind(client, text).await {
            Ok(kind) => {
                if let Some(why) = kind.needs_allowance()
                    && !config.allows_privileged(text)
                {
                    anyhow::bail!(
                        "sync.resources lists {text}, which is not synced by default: {why} (fix: remove it, or add it to sync.allow_privileged_resources if every workspace user may do that)"
                    );
                }
                kinds.push(kind)
            }
            Err(err) => {
                tracing::warn!(resource = %text, error = %format!("{err:#}"), "not syncing this resource")
            }
        }
    }
    if kinds.is_empty() {
        anyhow::bail!(
            "the control plane serves none of sync.resources {:?} (fix: install their CRDs in the workspace, e.g. deployments.apps)",
            config
                .sync
                .resources
                .iter()
                .map(|r| r.get_ref())
                .collect::<Vec<_>>()
        );
    }
    Ok(kinds)
}

async fn resolve_kind(client: &Client, text: &str) -> Result<SyncedKind> {
    let (plural, group) = text.split_once('.').unwrap_or((text, ""));
    let api_group = kube::discovery::group(client, group)
        .await
        .with_context(|| format!("the control plane does not serve API group {group:?} (fix: install the CRD of {text} in the workspace)"))?;
    let (ar, caps) = api_group
        .recommended_resources()
        .into_iter()
        .find(|(ar, _)| ar.plural == plural)
        .with_context(|| {
            format!(
                "the control plane does not serve {text} (fix: install its CRD in the workspace)"
            )
        })?;
    let namespaced = caps.scope == kube::discovery::Scope::Namespaced;
    Ok(SyncedKind::new(
        &ar.group,
        &ar.version,
        &ar.kind,
        &ar.plural,
        namespaced,
    ))
}
