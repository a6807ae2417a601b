//! [`Daemon::start`]: the library entry point of tmcd.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kube::Client;
use tmc_policy_host::{PolicyHost, WatchHandle};
use tmc_syncer::SyncedKind;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::logs::SyncerLogs;
use crate::config::Config;
use crate::leader::Elector;
use crate::placement::runner::PolicyRunner;
use crate::placement::{controller, watch as stores};
use crate::policy::{HostRunner, host_config};
use crate::state::State;
use crate::{admin, crds, kubeconn, syncers, synctargets};

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
    /// Connects, installs the CRDs, registers the clusters, loads the
    /// policies, starts the admin server, and competes for leadership; the
    /// leader runs the placement controllers and the push syncers.
    pub async fn start(config: Config, logs: SyncerLogs) -> Result<Self> {
        let client = kubeconn::control_plane(&config).await?;
        crds::install(&client, CRD_TIMEOUT)
            .await
            .context("installing the tmc CRDs")?;
        synctargets::register(&client, &config.clusters).await?;
        let kinds = resolve_kinds(&client, &config).await?;

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

        let identity = identity();
        let state = Arc::new(State::new(config, identity, logs));
        let runner: Arc<dyn PolicyRunner> = Arc::new(HostRunner(host));
        state.set_policies(runner.clone());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let stores = stores::start(&client, &state, shutdown_rx.clone());
        state.set_stores(stores.targets.clone(), stores.placements.clone());

        let listener = admin::server::bind(state.config.admin.address).await?;
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
        tasks.push(tokio::spawn(stores::watch_readiness(
            state.clone(),
            client.clone(),
            stores.targets.clone(),
            shutdown_rx.clone(),
        )));
        let leading = Leading {
            state: state.clone(),
            client,
            kinds,
            stores: Arc::new(stores),
            runner,
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
            Ok(kind) => kinds.push(kind),
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

/// What the leader runs, and the election around it.
struct Leading {
    state: Arc<State>,
    client: Client,
    kinds: Vec<SyncedKind>,
    stores: Arc<stores::Stores>,
    runner: Arc<dyn PolicyRunner>,
}

impl Leading {
    /// Competes for the lease until `shutdown`; runs the leader's work while holding it.
    async fn compete(self, mut shutdown: watch::Receiver<bool>) {
        let le = &self.state.config.leader_election;
        if !le.enabled {
            self.state.set_leader(true);
            let (tx, rx) = watch::channel(false);
            let work = self.spawn_work(rx);
            let _ = shutdown.wait_for(|s| *s).await;
            let _ = tx.send(true);
            let _ = work.await;
            self.state.set_leader(false);
            return;
        }
        let duration = Duration::from_secs(u64::from(le.lease_duration_seconds.max(3)));
        let elector = Elector::new(
            self.client.clone(),
            &le.lease_namespace,
            le.lease_name.get_ref(),
            &self.state.identity,
            duration,
        );
        let mut work: Option<(watch::Sender<bool>, JoinHandle<()>)> = None;
        let mut last_renewal = Instant::now();
        loop {
            let holds = match elector.try_lead().await {
                Ok(holds) => {
                    if holds {
                        last_renewal = Instant::now();
                    }
                    holds
                }
                Err(err) => {
                    tracing::warn!(error = %err, "lease renewal failed");
                    work.is_some() && last_renewal.elapsed() < duration
                }
            };
            match (&work, holds) {
                (None, true) => {
                    tracing::info!(identity = %self.state.identity, "acquired the lease: leading");
                    self.state.set_leader(true);
                    let (tx, rx) = watch::channel(false);
                    work = Some((tx, self.spawn_work(rx)));
                }
                (Some(_), false) => {
                    tracing::warn!(identity = %self.state.identity, "lost the lease: stopping controllers and syncers");
                    self.state.set_leader(false);
                    if let Some((tx, handle)) = work.take() {
                        let _ = tx.send(true);
                        let _ = handle.await;
                    }
                }
                _ => {}
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(elector.renew_every()) => {}
            }
        }
        if let Some((tx, handle)) = work.take() {
            let _ = tx.send(true);
            let _ = handle.await;
            if let Err(err) = elector.release().await {
                tracing::warn!(error = %err, "releasing the lease failed; another replica takes over when it expires");
            }
        }
        self.state.set_leader(false);
    }

    /// Starts the controllers and the push syncers; they stop when `stop` turns true.
    fn spawn_work(&self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let state = self.state.clone();
        let client = self.client.clone();
        let kinds = self.kinds.clone();
        let stores = self.stores.clone();
        let runner = self.runner.clone();
        tokio::spawn(async move {
            let controllers = controller::run(
                state.clone(),
                client.clone(),
                kinds.clone(),
                &stores,
                runner,
                stop.clone(),
            );
            let push = syncers::run_push(state, client, kinds, stop);
            futures::join!(controllers, push);
        })
    }
}
