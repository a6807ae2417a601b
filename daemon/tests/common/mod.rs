//! Shared set-up of the tmcd integration tests: a real test bed (kcp + two
//! clusters), a tmc.toml pointing at it, policies from `target/policies/`.

#![allow(dead_code)]

pub mod protocol_guard;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tmc_daemon::Daemon;
use tmc_daemon::telemetry::logs::SyncerLogs;
use tmc_tests::fixtures;
use tmc_tests::testbed::wait::{self, Poll};
use tmc_tests::testbed::{TestBed, TestBedBuilder};

pub mod monitoring;

/// Generous: real servers on a shared 2-core machine.
pub const TIMEOUT: Duration = Duration::from_secs(180);
pub const POLL: Duration = Duration::from_millis(500);
pub const NS: &str = "demo";

/// tmc.toml for a bed whose control plane is the plain kube-apiserver `hub`, syncing Deployments to
/// `west` with the policies of `policies/`; `rest` (whole sections) is appended.
pub fn hub_and_west_config(bed: &TestBed, rest: &str) -> Result<String> {
    Ok(format!(
        r#"[control_plane]
kubeconfig = "{}"

[[clusters]]
name = "west"
kubeconfig = "{}"

[sync]
resources = ["deployments.apps"]
heartbeat_interval_seconds = 2

[policies]
directory = "policies"

{rest}"#,
        bed.kubeconfig_path("hub")?.display(),
        bed.kubeconfig_path("west")?.display(),
    ))
}

/// The `[sync]`, `[policies]`, `[admin]` and `[leader_election]` sections the tests run tmcd with: fast
/// heartbeats, a free admin port, a short lease; `extra` (whole sections) appended.
fn test_sections(resources: &[&str], extra: &str) -> String {
    format!(
        r#"[sync]
resources = {resources:?}
heartbeat_interval_seconds = 2
heartbeat_threshold_seconds = 8

[policies]
directory = "policies"
timeout_ms = 2000

[admin]
address = "127.0.0.1:0"

[leader_election]
lease_duration_seconds = 6
{extra}"#
    )
}

/// A test bed, a config directory and a policy directory.
pub struct Env {
    pub bed: TestBed,
    pub dir: tempfile::TempDir,
    /// The syncer log buffers fed by this process's tracing subscriber.
    pub logs: SyncerLogs,
}

impl Env {
    /// Starts kcp (workspace `root:tmc`, Deployments installed) and clusters west and east.
    pub async fn start() -> Result<Self> {
        Self::start_with(|bed| bed).await
    }

    /// Like [`start`](Self::start), with the bed's builder adjusted by
    /// `shape` (node sizes, ...).
    pub async fn start_with(shape: impl FnOnce(TestBedBuilder) -> TestBedBuilder) -> Result<Self> {
        let logs = tmc_daemon::logging::init_with_default(
            tmc_syncer::process::LogFormat::Text,
            "info,kube_client=off,kube_runtime=warn",
        );
        let bed = shape(
            TestBed::builder()
                .clusters(["west", "east"])
                .workspace("root:tmc"),
        )
        .start()
        .await?;
        bed.install_kube_crds().await?;
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("policies"))?;
        let env = Self { bed, dir, logs };
        let kcp = env.bed.kcp_client().await?;
        let ns: Api<Namespace> = Api::all(kcp);
        let body: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
        ns.create(&PostParams::default(), &body)
            .await
            .context("creating namespace demo in kcp")?;
        Ok(env)
    }

    /// The policy directory tmcd watches.
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// Installs built policy `built` (from `target/policies/`) as `<name>.wasm`.
    pub fn install_policy(&self, built: &str, name: &str) -> Result<()> {
        fixtures::install_policy(&self.policy_dir(), built, name).map(drop)
    }

    /// tmc.toml for this bed (`extra` is appended).
    pub fn config_text(&self, extra: &str) -> Result<String> {
        self.config_syncing(&["deployments.apps", "configmaps"], extra)
    }

    /// tmc.toml for this bed syncing `resources` (`extra` is appended).
    pub fn config_syncing(&self, resources: &[&str], extra: &str) -> Result<String> {
        fixtures::tmc_toml(&self.bed, "tmc-workloads", &test_sections(resources, extra))
    }

    /// Like [`Self::config_syncing`], with tmcd in export mode over tmc's export `export`.
    pub fn export_config_syncing(
        &self,
        export: &str,
        resources: &[&str],
        extra: &str,
    ) -> Result<String> {
        fixtures::tmc_toml_export(
            &self.bed,
            "tmc-workloads",
            export,
            &test_sections(resources, extra),
        )
    }

    /// Like [`Self::export_config_syncing`], with tmcd reaching kcp and the export's virtual workspace only
    /// through `server` (see [`fixtures::tmc_toml_export_via`]).
    pub fn export_config_via(
        &self,
        export: &str,
        server: &str,
        resources: &[&str],
        extra: &str,
    ) -> Result<String> {
        fixtures::tmc_toml_export_via(
            &self.bed,
            "tmc-workloads",
            export,
            server,
            self.dir.path(),
            &test_sections(resources, extra),
        )
    }

    /// Starts a tmcd in-process with [`config_text`](Self::config_text).
    pub async fn daemon(&self, extra: &str) -> Result<Daemon> {
        let text = self.config_text(extra)?;
        self.daemon_with_text("tmc.toml", &text).await
    }

    /// Starts a tmcd in-process with configuration `text`, written as `file`
    /// in the config directory.
    pub async fn daemon_with_text(&self, file: &str, text: &str) -> Result<Daemon> {
        let path = self.dir.path().join(file);
        std::fs::write(&path, text)?;
        let config = tmc_daemon::config::parse(&path, text, self.dir.path().to_path_buf())?;
        Daemon::start(config, self.logs.clone()).await
    }

    pub async fn kcp(&self) -> Result<kube::Client> {
        self.bed.kcp_client().await
    }

    pub async fn cluster(&self, name: &str) -> Result<kube::Client> {
        self.bed.cluster_client(name).await
    }
}

/// The status of SyncTarget `name`'s Ready condition (`True`, `False`, `Unknown`; `None`: none yet).
pub async fn ready_status(
    targets: &Api<tmc_api::crd::SyncTarget>,
    name: &str,
) -> Result<Option<String>> {
    Ok(targets
        .get(name)
        .await?
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status))
}

/// Applies a placement (server-side apply).
pub async fn apply_placement(client: &kube::Client, name: &str, spec: Value) -> Result<()> {
    fixtures::apply_placement(client, "e2e", name, spec).await
}

/// Creates Deployment `demo/<name>` upstream.
pub async fn create_deployment(client: &kube::Client, name: &str, replicas: i32) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let d = fixtures::deployment(NS, name, replicas, json!({}), json!({}))?;
    api.create(&PostParams::default(), &d)
        .await
        .with_context(|| format!("creating deployment {name}"))?;
    Ok(())
}

/// The copy of `demo/<name>` on a cluster, if any (`Err` when the cluster cannot be read).
pub async fn copy(client: &kube::Client, name: &str) -> Result<Option<Deployment>> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    Ok(api.get_opt(name).await?)
}

/// Replicas of a copy, 0 when there is none.
pub fn replicas(d: &Option<Deployment>) -> i32 {
    d.as_ref()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(0)
}

/// Available replicas of a copy, 0 when there is none.
pub fn available(d: &Option<Deployment>) -> i32 {
    d.as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// A bed with tmcd running `replica-spread` as placement `spread` over
/// west and east, and the clients of all three.
pub struct Spread {
    pub env: Env,
    pub daemon: Daemon,
    pub kcp: kube::Client,
    pub west: kube::Client,
    pub east: kube::Client,
}

impl Spread {
    /// Starts the bed, tmcd and the placement.
    pub async fn start() -> Result<Self> {
        let env = Env::start().await?;
        env.install_policy("replica-spread", "replica-spread")?;
        let daemon = env.daemon("").await?;
        let kcp = env.kcp().await?;
        let west = env.cluster("west").await?;
        let east = env.cluster("east").await?;
        apply_placement(
            &kcp,
            "spread",
            json!({"policy": {"name": "replica-spread"}}),
        )
        .await?;
        Ok(Self {
            env,
            daemon,
            kcp,
            west,
            east,
        })
    }
}

/// Ready replicas of a copy, 0 when there is none.
pub fn ready(d: &Option<Deployment>) -> i32 {
    d.as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// Waits until `demo/<name>` has a copy with replicas on both `west` and
/// `east`, `total` replicas in all; returns the two copies.
pub async fn split_over_both(
    west: &kube::Client,
    east: &kube::Client,
    name: &str,
    total: i32,
) -> Result<(Deployment, Deployment)> {
    until(
        &format!("{name} split over west and east, {total} replicas in all"),
        || async {
            let (w, e) = (copy(west, name).await?, copy(east, name).await?);
            let (rw, re) = (replicas(&w), replicas(&e));
            Ok(match (w, e) {
                (Some(w), Some(e)) if rw > 0 && re > 0 && rw + re == total => Poll::Ready((w, e)),
                _ => Poll::Pending(format!("west {rw} east {re}")),
            })
        },
    )
    .await
}

/// Polls `check` until it is ready.
pub async fn until<T, F, Fut>(what: &str, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Poll<T>>>,
{
    wait::until(what, TIMEOUT, POLL, check).await
}

/// Writes `text` as the policy file `name` directly (for broken-module tests).
pub fn write_policy_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::write(dir.join(format!("{name}.wasm")), bytes)?;
    Ok(())
}
