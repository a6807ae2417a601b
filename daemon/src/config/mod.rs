//! `tmc.toml`: what tmcd connects to, what it syncs and how it runs.
//!
//! [`load`] reads and checks a file; every error names `FILE:LINE:COLUMN`
//! and how to fix it (see [`ConfigError`]).

mod load;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use tmc_syncer::process::LogFormat;
use toml::Spanned;

pub use load::{ConfigError, load, parse};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the workloads are deployed (the kcp workspace or a plain API server).
    #[serde(default)]
    pub control_plane: ControlPlane,
    /// Physical clusters, each registered as a SyncTarget of the same name.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// What is synced and how.
    #[serde(default)]
    pub sync: Sync,
    /// The policy directory and the sandbox limits.
    #[serde(default)]
    pub policies: Policies,
    /// Value of the `workload.kcp.io/synced-from` label: a label value unique
    /// to this control plane. Absent: the value recorded on the SyncTargets,
    /// or for a new install a unique one (see [`crate::source_identity`]).
    #[serde(default)]
    pub synced_from: Option<Spanned<String>>,
    /// The admin server: health, readiness, metrics and the JSON API.
    #[serde(default)]
    pub admin: Admin,
    /// `text` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Only the replica holding the lease runs controllers and syncers.
    #[serde(default)]
    pub leader_election: LeaderElection,
    /// The audit trail of decision changes.
    #[serde(default)]
    pub audit: Audit,
    /// Directory of the file, to resolve relative paths (not a key of the file).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Connection to the control plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    /// Kubeconfig file (absent: `$KUBECONFIG`, `~/.kube/config` or in-cluster).
    pub kubeconfig: Option<Spanned<PathBuf>>,
    /// Context of the kubeconfig (absent: its current context).
    pub context: Option<String>,
    /// kcp workspace path such as `root:tmc` (absent: use the server URL as is).
    pub workspace: Option<Spanned<String>>,
    /// Name of tmc's APIExport in that workspace (the inventory): tmcd then
    /// places the workloads of every workspace bound to it, read through the
    /// export's virtual workspace (issue 12, `docs/tenancy.md`). Absent: the
    /// workloads of `workspace` itself.
    pub export: Option<Spanned<String>>,
    /// The server (`https://host:port`) tmcd reaches the export's virtual
    /// workspace through, in place of the scheme, host and port of the URL
    /// kcp publishes in the APIExportEndpointSlice (its path is kept): for a
    /// kcp that publishes an address tmcd cannot reach, such as a shard's
    /// own name behind a front proxy. Needs `export`. Absent: the published
    /// URL as is.
    pub virtual_workspace_server: Option<Spanned<String>>,
    /// Whether tmcd writes the aggregated `.status` of the workloads (absent:
    /// only when the control plane is kcp, whose workspaces run no workload
    /// controllers; on a plain Kubernetes API server the deployment
    /// controller owns a Deployment's `.status`).
    pub write_status: Option<bool>,
    /// The username tmcd authenticates as, the only one the decision-protocol
    /// admission policy lets add or change decisions (absent: asked of the
    /// control plane with a SelfSubjectReview).
    pub username: Option<Spanned<String>>,
    /// Whether tmcd installs that ValidatingAdmissionPolicy at start where the
    /// control plane serves it (see [`crate::admission`]).
    #[serde(default = "default_true")]
    pub install_admission_policy: bool,
}

impl Default for ControlPlane {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            workspace: None,
            export: None,
            virtual_workspace_server: None,
            write_status: None,
            username: None,
            install_admission_policy: true,
        }
    }
}

/// One physical cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// SyncTarget name: a DNS label.
    pub name: Spanned<String>,
    /// Kubeconfig file of the cluster (push mode).
    pub kubeconfig: Option<Spanned<PathBuf>>,
    /// Context of the kubeconfig.
    pub context: Option<String>,
    /// `topology.kubernetes.io/region` of the SyncTarget.
    pub region: Option<String>,
    /// `topology.kubernetes.io/zone` of the SyncTarget.
    pub zone: Option<String>,
    /// Further labels of the SyncTarget, for location selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `push` (tmcd runs the syncer) or `pull` (an agent beside the cluster does).
    #[serde(default)]
    pub mode: Mode,
}

/// Where a cluster's syncer runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// In tmcd.
    #[default]
    Push,
    /// In a `tmc-syncer` agent.
    Pull,
}

/// What is synced and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    /// Resources as `plural.group` (`deployments.apps`) or `plural` for the core group.
    #[serde(default = "default_resources")]
    pub resources: Vec<Spanned<String>>,
    /// Privilege-bearing (RBAC, CRDs, admission webhooks, ...) and cluster-scoped resources of
    /// `resources` that may be synced all the same; without an entry here tmcd refuses them.
    #[serde(default)]
    pub allow_privileged_resources: Vec<Spanned<String>>,
    /// `same` (downstream namespace = upstream namespace) or `prefixed`.
    #[serde(default)]
    pub namespace_mapping: NamespaceMapping,
    /// Downstream namespaces are `<prefix>-<namespace>` when `namespace_mapping = "prefixed"`.
    #[serde(default = "default_namespace_prefix")]
    pub namespace_prefix: Spanned<String>,
    /// How often syncers heartbeat their SyncTarget.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_seconds: Spanned<u32>,
    /// A target whose heartbeat is older than this is not Ready (default: 3
    /// heartbeats); at least `heartbeat_interval_seconds`.
    pub heartbeat_threshold_seconds: Option<Spanned<u32>>,
    /// How often syncers read their cluster's free capacity (nodes and pods)
    /// into their SyncTarget, on the next heartbeat.
    #[serde(default = "default_capacity_interval")]
    pub capacity_interval_seconds: u32,
    /// While placement decisions are being written, status reports, aggregated
    /// statuses and Events wait, each at most this long (0: they never wait).
    #[serde(default = "default_status_hold_max")]
    pub status_hold_max_seconds: u32,
    /// A move whose new copies are not all available after this long is
    /// reported as stalled (its old copies are kept all the same).
    #[serde(default = "default_move_stall")]
    pub move_stall_seconds: u32,
    /// Which copies' replicas the physical clusters own (tmc applies their
    /// `spec.replicas` only when it creates them): `autoscaler` (default: the
    /// copies a HorizontalPodAutoscaler targets) or `cluster` (every copy).
    #[serde(default)]
    pub replicas_owner: tmc_syncer::ReplicasPolicy,
}

impl Default for Sync {
    fn default() -> Self {
        Self {
            resources: default_resources(),
            allow_privileged_resources: Vec::new(),
            namespace_mapping: NamespaceMapping::default(),
            namespace_prefix: default_namespace_prefix(),
            heartbeat_interval_seconds: default_heartbeat_interval(),
            heartbeat_threshold_seconds: None,
            capacity_interval_seconds: default_capacity_interval(),
            status_hold_max_seconds: default_status_hold_max(),
            move_stall_seconds: default_move_stall(),
            replicas_owner: tmc_syncer::ReplicasPolicy::default(),
        }
    }
}

impl Sync {
    /// How often syncers heartbeat their SyncTarget.
    pub fn heartbeat_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(*self.heartbeat_interval_seconds.get_ref()))
    }

    /// How often syncers read their cluster's capacity.
    pub fn capacity_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.capacity_interval_seconds))
    }

    /// The heartbeat age after which a target is not Ready.
    pub fn heartbeat_threshold(&self) -> std::time::Duration {
        let secs = self
            .heartbeat_threshold_seconds
            .as_ref()
            .map(|s| *s.get_ref())
            .unwrap_or(self.heartbeat_interval_seconds.get_ref().saturating_mul(3));
        std::time::Duration::from_secs(u64::from(secs))
    }

    /// The longest a status report, status write or Event waits behind decisions.
    pub fn status_hold_max(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.status_hold_max_seconds))
    }

    /// How long a move waits before it is reported as stalled.
    pub fn move_stall(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.move_stall_seconds))
    }
}

/// How upstream namespaces map to downstream namespaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMapping {
    /// The same name.
    #[default]
    Same,
    /// `<namespace_prefix>-<upstream name>`.
    Prefixed,
}

/// Policy modules and their sandbox (limits: `docs/policy-abi.md` section 4;
/// defaults are the policy host's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Directory of `.wasm` modules (file stem = policy name), hot reloaded.
    #[serde(default = "default_policy_dir")]
    pub directory: Spanned<PathBuf>,
    /// Linear memory limit of one evaluation, in MiB (1 to 4096).
    #[serde(default = "default_memory_mib")]
    pub max_memory_mib: Spanned<u32>,
    /// Wall-clock limit of one evaluation, in milliseconds (at least 1).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: Spanned<u64>,
    /// Wall-clock limit of validating one module on load, in milliseconds
    /// (at least 1).
    #[serde(default = "default_load_timeout_ms")]
    pub load_timeout_ms: Spanned<u64>,
    /// Fuel (instruction budget) of one evaluation; absent: the host's
    /// default; 0: no fuel metering (the deadline still applies).
    pub fuel: Option<u64>,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            directory: default_policy_dir(),
            max_memory_mib: default_memory_mib(),
            timeout_ms: default_timeout_ms(),
            load_timeout_ms: default_load_timeout_ms(),
            fuel: None,
        }
    }
}

/// The audit trail: one JSON line per decision change (see [`crate::audit`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// `off` (default), `stdout`, or `file`.
    #[serde(default)]
    pub sink: AuditSink,
    /// The file of `sink = "file"` (relative to tmc.toml's directory).
    #[serde(default = "default_audit_path")]
    pub path: PathBuf,
    /// Rotated past this size (MiB).
    #[serde(default = "default_audit_size")]
    pub max_size_mib: u32,
    /// Rotated files kept (`<path>.1` is the newest).
    #[serde(default = "default_audit_files")]
    pub max_files: u32,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            sink: AuditSink::default(),
            path: default_audit_path(),
            max_size_mib: default_audit_size(),
            max_files: default_audit_files(),
        }
    }
}

/// Where audit records go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    /// Not recorded.
    #[default]
    Off,
    /// Lines on stdout (tmcd's logs are on stderr).
    Stdout,
    /// Lines appended to `path`.
    File,
}

fn default_audit_path() -> PathBuf {
    PathBuf::from("tmcd-audit.jsonl")
}
fn default_audit_size() -> u32 {
    100
}
fn default_audit_files() -> u32 {
    3
}

/// The admin server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Listen address of `/healthz`, `/readyz`, `/metrics` and `/api/v1`; an
    /// address other than loopback needs `token_file`.
    #[serde(default = "default_admin_address")]
    pub address: Spanned<SocketAddr>,
    /// File holding the bearer token that `/api/v1` (and, with
    /// `metrics_need_token`, `/metrics`) requires; POST endpoints are refused
    /// without it.
    pub token_file: Option<Spanned<PathBuf>>,
    /// Whether `/metrics` needs the token too (default: no, so a scraper
    /// without credentials works; the metrics hold no Secret data).
    #[serde(default)]
    pub metrics_need_token: bool,
    /// PEM certificate chain: serve HTTPS (with `tls_key_file`).
    pub tls_cert_file: Option<Spanned<PathBuf>>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<Spanned<PathBuf>>,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
            token_file: None,
            metrics_need_token: false,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// Leader election through a `coordination.k8s.io/v1` Lease in the workspace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElection {
    /// Off: this replica always leads (run only one).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Name of the Lease.
    #[serde(default = "default_lease_name")]
    pub lease_name: Spanned<String>,
    /// Namespace of the Lease.
    #[serde(default = "default_lease_namespace")]
    pub lease_namespace: String,
    /// How long a lease is valid without renewal, counted by each replica
    /// from when it last saw the Lease change (its own monotonic clock).
    #[serde(default = "default_lease_duration")]
    pub lease_duration_seconds: Spanned<u32>,
    /// A leader that has not renewed within this long stops all its writes
    /// and competes again (default: two thirds of the lease duration); must
    /// be shorter than the lease duration.
    #[serde(default)]
    pub renew_deadline_seconds: Option<Spanned<u32>>,
    /// Pause between attempts to acquire or renew (default: a fifth of the
    /// renew deadline, at least 1 s); must be shorter than the renew deadline.
    #[serde(default)]
    pub retry_period_seconds: Option<Spanned<u32>>,
}

impl Default for LeaderElection {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_name: default_lease_name(),
            lease_namespace: default_lease_namespace(),
            lease_duration_seconds: default_lease_duration(),
            renew_deadline_seconds: None,
            retry_period_seconds: None,
        }
    }
}

impl LeaderElection {
    /// How long a lease is valid without renewal.
    pub fn lease_duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(*self.lease_duration_seconds.get_ref()))
    }

    /// How long a leader goes on writing without a successful renewal.
    pub fn renew_deadline(&self) -> std::time::Duration {
        match &self.renew_deadline_seconds {
            Some(s) => std::time::Duration::from_secs(u64::from(*s.get_ref())),
            None => self.lease_duration() * 2 / 3,
        }
    }

    /// The pause between attempts to acquire or renew.
    pub fn retry_period(&self) -> std::time::Duration {
        match &self.retry_period_seconds {
            Some(s) => std::time::Duration::from_secs(u64::from(*s.get_ref())),
            None => (self.renew_deadline() / 5).max(std::time::Duration::from_secs(1)),
        }
    }
}

impl Config {
    /// `path` resolved against the directory of the configuration file.
    pub fn resolve(&self, path: &std::path::Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// Whether `sync.allow_privileged_resources` names `resource` (`plural.group`).
    pub fn allows_privileged(&self, resource: &str) -> bool {
        self.sync
            .allow_privileged_resources
            .iter()
            .any(|r| r.get_ref() == resource)
    }

    /// The source identity of the copies: the workspace path and the
    /// `workload.kcp.io/synced-from` value. tmcd resolves an absent
    /// `synced_from` at start and sets it here (see
    /// [`crate::source_identity::resolve`]); before that, this is the legacy
    /// default ([`tmc_syncer::SourceIdentity::resolve`], the pull agent's rule too).
    pub fn source_identity(&self) -> tmc_syncer::SourceIdentity {
        tmc_syncer::SourceIdentity::resolve(
            self.control_plane
                .workspace
                .as_ref()
                .map(|ws| ws.get_ref().as_str()),
            self.synced_from.as_ref().map(|s| s.get_ref().as_str()),
        )
    }
}

fn default_resources() -> Vec<Spanned<String>> {
    ["deployments.apps", "services", "configmaps", "secrets"]
        .iter()
        .map(|r| Spanned::new(0..0, (*r).to_string()))
        .collect()
}
fn default_namespace_prefix() -> Spanned<String> {
    Spanned::new(0..0, "tmc".to_string())
}
fn default_heartbeat_interval() -> Spanned<u32> {
    Spanned::new(0..0, 10)
}
fn default_capacity_interval() -> u32 {
    30
}
fn default_status_hold_max() -> u32 {
    30
}
fn default_move_stall() -> u32 {
    120
}
fn default_policy_dir() -> Spanned<PathBuf> {
    Spanned::new(0..0, PathBuf::from("policies"))
}
fn default_memory_mib() -> Spanned<u32> {
    let mib = tmc_policy_host::HostConfig::default().memory_cap >> 20;
    Spanned::new(0..0, u32::try_from(mib).unwrap_or(u32::MAX))
}
fn default_timeout_ms() -> Spanned<u64> {
    Spanned::new(
        0..0,
        millis(tmc_policy_host::HostConfig::default().deadline),
    )
}
fn default_load_timeout_ms() -> Spanned<u64> {
    Spanned::new(
        0..0,
        millis(tmc_policy_host::HostConfig::default().load_budget),
    )
}
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
fn default_admin_address() -> Spanned<SocketAddr> {
    Spanned::new(0..0, SocketAddr::from(([127, 0, 0, 1], 9470)))
}
fn default_true() -> bool {
    true
}
fn default_lease_name() -> Spanned<String> {
    Spanned::new(0..0, "tmcd".to_string())
}
fn default_lease_namespace() -> String {
    "default".to_string()
}
fn default_lease_duration() -> Spanned<u32> {
    Spanned::new(0..0, 15)
}
