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
use tokio::time::Instant;

use crate::admin::logs::SyncerLogs;
use crate::config::Config;
use crate::leader::{
    Attempt, Elector, StopReason, Term, Timing, Transition, attempt_deadline, transition,
};
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
    pub async fn start(mut config: Config, logs: SyncerLogs) -> Result<Self> {
        let client = kubeconn::control_plane(&config).await?;
        crds::install(&client, CRD_TIMEOUT)
            .await
            .context("installing the tmc CRDs")?;
        let synced_from = crate::source_identity::resolve(&client, &config).await?;
        synctargets::register(&client, &config.clusters, &synced_from).await?;
        config.synced_from = Some(toml::Spanned::new(0..0, synced_from));
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
        // What the leader writes with: refused by the fence unless leading.
        let work_client = kubeconn::fenced_control_plane(&state.config, &state.fence).await?;
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
    /// Reads and the Lease: never fenced.
    client: Client,
    /// The leader's writes: through the state's fence.
    work_client: Client,
    kinds: Vec<SyncedKind>,
    stores: Arc<stores::Stores>,
    runner: Arc<dyn PolicyRunner>,
}

/// The leader's running work.
struct Work {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Leading {
    /// Competes for the lease until `shutdown`; runs the leader's work while
    /// holding it, and stops it at once when the renew deadline passes.
    async fn compete(self, mut shutdown: watch::Receiver<bool>) {
        let le = &self.state.config.leader_election;
        if !le.enabled {
            self.start_leading();
            let work = self.spawn_work();
            let _ = shutdown.wait_for(|s| *s).await;
            self.stop_gracefully(work).await;
            return;
        }
        let timing = Timing {
            lease_duration: le.lease_duration(),
            renew_deadline: le.renew_deadline(),
            retry_period: le.retry_period(),
        };
        let mut elector = Elector::new(
            self.client.clone(),
            &le.lease_namespace,
            le.lease_name.get_ref(),
            &self.state.identity,
            timing,
        );
        let mut work: Option<Work> = None;
        let mut term: Option<Term> = None;
        loop {
            let now = Instant::now();
            let attempt = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                res = elector.try_lead(attempt_deadline(term, now, &timing)) => match res {
                    Ok(attempt) => attempt,
                    Err(err) => {
                        tracing::warn!(error = %err, leading = term.is_some(), "lease attempt failed");
                        Attempt::Failed
                    }
                },
            };
            let (next, new_term) = transition(term, &attempt, Instant::now(), &timing);
            term = new_term;
            match next {
                Transition::Start => {
                    tracing::info!(identity = %self.state.identity, "acquired the lease: leading");
                    self.start_leading();
                    work = Some(self.spawn_work());
                }
                Transition::Stop(reason) => {
                    self.fence(work.take(), reason, timing.abort_wait()).await;
                }
                Transition::Keep | Transition::Wait => {}
            }
            // Next attempt after the retry period; a leader wakes at its
            // renew deadline whatever happens.
            let mut wake = Instant::now() + timing.retry_period;
            if let Some(term) = term {
                wake = wake.min(term.deadline(&timing));
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if let Some(t) = term
                && Instant::now() >= t.deadline(&timing)
            {
                term = None;
                self.fence(work.take(), StopReason::DeadlinePassed, timing.abort_wait())
                    .await;
            }
        }
        if let Some(work) = work.take() {
            self.stop_gracefully(work).await;
            let released = tokio::time::timeout(timing.renew_deadline, elector.release()).await;
            match released {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "releasing the lease failed; another replica takes over when it expires")
                }
                Err(_) => tracing::warn!(
                    "releasing the lease timed out; another replica takes over when it expires"
                ),
            }
        }
        self.state.set_leader(false);
    }

    /// Opens the fence and records leadership.
    fn start_leading(&self) {
        self.state.fence.open();
        self.state.set_leader(true);
    }

    /// Stops every write at once: closes the fence (refusing any write still
    /// attempted), then aborts the work and waits at most `wait` for it.
    async fn fence(&self, work: Option<Work>, reason: StopReason, wait: Duration) {
        self.state.fence.close();
        self.state.set_leader(false);
        self.state.metrics.leadership_stops.inc();
        tracing::warn!(identity = %self.state.identity, %reason, "stopped leading: writes fenced, controllers and syncers aborted; competing again as a standby");
        let Some(work) = work else { return };
        let _ = work.stop.send(true);
        work.handle.abort();
        if tokio::time::timeout(wait, work.handle).await.is_err() {
            tracing::warn!(wait = ?wait, "the aborted work did not end in time (its writes stay fenced)");
        }
        self.state.clear_syncers();
    }

    /// Shutdown: lets the work finish gracefully, then closes the fence.
    async fn stop_gracefully(&self, work: Work) {
        let _ = work.stop.send(true);
        let _ = work.handle.await;
        self.state.fence.close();
        self.state.set_leader(false);
    }

    /// Starts the controllers and the push syncers; they stop when the
    /// work's `stop` turns true, or at once when its task is aborted.
    fn spawn_work(&self) -> Work {
        let (stop_tx, stop) = watch::channel(false);
        let state = self.state.clone();
        let client = self.work_client.clone();
        let kinds = self.kinds.clone();
        let stores = self.stores.clone();
        let runner = self.runner.clone();
        let handle = tokio::spawn(async move {
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
        });
        Work {
            stop: stop_tx,
            handle,
        }
    }
}
