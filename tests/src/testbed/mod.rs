//! The test bed: one kcp (the virtual cluster) and N physical clusters, all real servers on loopback ports.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use tmc_tests::testbed::TestBed;
//! let bed = TestBed::builder().clusters(["west", "east"]).workspace("root:tmc").start().await?;
//! let kcp = bed.kcp_client().await?; // base URL <kcp>/clusters/root:tmc
//! let west = bed.cluster_client("west").await?;
//! # Ok(()) }
//! ```
//!
//! Everything lives in one directory (a temp dir unless [`TestBedBuilder::dir`] is given): `admin.kubeconfig`
//! and `kcp.log` for kcp, `<cluster>.kubeconfig` and `<cluster>/<component>.log` per cluster. Dropping the bed
//! stops every process; if the thread is panicking it first prints the tail of every log and keeps the dir.
//!
//! Sizes: [`TestBedBuilder::nodes_per_cluster`], [`TestBedBuilder::node_shape`], [`TestBedBuilder::cluster_nodes`].
//! Faults: [`PhysicalCluster::pause`] / `resume` / `kill` / `stop` / `relaunch` per [`Component`] (via
//! [`TestBed::cluster_mut`]), the same on [`Kcp`] (via [`TestBed::kcp_mut`]), and on any process a test starts
//! with [`TestBed::spawn`] ([`Supervised`]). See `docs/testbed.md`, "Faults".

pub mod binaries;
pub mod cluster;
pub mod fleet;
pub mod kcp;
pub mod kcp_snapshot;
pub mod kubeconfig;
pub mod kwok;
pub mod pki;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod tenants;
pub mod wait;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

pub use binaries::Binaries;
pub use cluster::{ClusterOptions, Component, NodeShape, PhysicalCluster};
pub use fleet::{Fleet, FleetTarget};
pub use kcp::Kcp;
pub use process::{ProcessSpec, Supervised};
pub use tenants::{Tenant, Tenants};

/// Name reserved for kcp in [`TestBed::kubeconfig_path`].
pub const KCP: &str = "kcp";

/// Environment variable: when set to `1`, the bed directory is kept after drop.
pub const KEEP_ENV: &str = "TMC_TESTBED_KEEP";

/// Prints a timestamped progress line on stderr.
pub fn progress(msg: &str) {
    eprintln!(
        "[testbed {}] {msg}",
        chrono::Utc::now().format("%H:%M:%S%.3f")
    );
}

/// Configures and starts a [`TestBed`].
#[derive(Debug, Clone)]
pub struct TestBedBuilder {
    clusters: Vec<String>,
    workspace: Option<String>,
    dir: Option<PathBuf>,
    nodes: usize,
    node_shape: NodeShape,
    /// Per-cluster overrides of `nodes` and `node_shape`.
    sized: BTreeMap<String, (usize, NodeShape)>,
    bin_dir: Option<PathBuf>,
    /// Targets of a [`Fleet`] (logical clusters of a second kcp), none by default.
    fleet: Vec<String>,
    /// Tenant workspaces bound to tmc's export ([`Tenants`]), none by default.
    tenants: Vec<String>,
}

impl Default for TestBedBuilder {
    fn default() -> Self {
        Self {
            clusters: Vec::new(),
            workspace: Some("root:tmc".into()),
            dir: None,
            nodes: 1,
            node_shape: NodeShape::default(),
            sized: BTreeMap::new(),
            bin_dir: None,
            fleet: Vec::new(),
            tenants: Vec::new(),
        }
    }
}

impl TestBedBuilder {
    /// Physical clusters to start (names are also kubeconfig context names).
    pub fn clusters<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.clusters = names.into_iter().map(Into::into).collect();
        self
    }

    /// The kcp workspace to create (default `root:tmc`).
    pub fn workspace(mut self, path: impl Into<String>) -> Self {
        self.workspace = Some(path.into());
        self
    }

    /// Start no kcp at all (physical clusters only).
    pub fn without_kcp(mut self) -> Self {
        self.workspace = None;
        self
    }

    /// kwok nodes per cluster (default 1) for clusters without [`Self::cluster_nodes`].
    pub fn nodes_per_cluster(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Allocatable of each kwok node (default [`NodeShape::default`]: 256 cpu, 1Ti memory, 2,500 pods) for
    /// clusters without [`Self::cluster_nodes`].
    pub fn node_shape(mut self, shape: NodeShape) -> Self {
        self.node_shape = shape;
        self
    }

    /// Gives cluster `name` (one of [`Self::clusters`]) `nodes` nodes of `shape`, e.g. a small cluster that
    /// fills up on purpose: `.cluster_nodes("east", 1, NodeShape::pods(4))`.
    pub fn cluster_nodes(
        mut self,
        name: impl Into<String>,
        nodes: usize,
        shape: NodeShape,
    ) -> Self {
        self.sized.insert(name.into(), (nodes, shape));
        self
    }

    /// The options each cluster is started with.
    pub fn cluster_options(&self) -> Vec<ClusterOptions> {
        self.clusters
            .iter()
            .map(|name| {
                let (nodes, node_shape) = self
                    .sized
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| (self.nodes, self.node_shape.clone()));
                ClusterOptions {
                    name: name.clone(),
                    nodes,
                    node_shape,
                }
            })
            .collect()
    }

    /// Also start a [`Fleet`] of `n` targets `fleet-001`, `fleet-002`, ...: logical clusters of a second kcp,
    /// each a Kubernetes API endpoint serving Deployments (no kubelets; see [`fleet`]).
    pub fn fleet(mut self, n: usize) -> Self {
        self.fleet = fleet::target_names(n);
        self
    }

    /// Also publish tmc's APIExport in the workspace (the inventory) and bind it from a tenant workspace
    /// `root:teams:<name>` per name; see [`tenants`] and [`TestBed::tenants`].
    pub fn tenants<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tenants = names.into_iter().map(Into::into).collect();
        self
    }

    /// Use this directory (created, must be empty or absent) instead of a temp dir; it is kept after drop.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Use binaries from this directory instead of `$TMC_TESTBED_BIN` / `hack/testbed/build.sh --print-bin-dir`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Starts kcp and every cluster in parallel and waits until all are ready.
    pub async fn start(self) -> Result<TestBed> {
        let started = Instant::now();
        self.validate()?;
        let bins = match &self.bin_dir {
            Some(d) => Binaries::at(d),
            None => Binaries::locate()?,
        };
        let mut needed = vec![
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ];
        if self.clusters.is_empty() {
            needed.clear();
        }
        if self.workspace.is_some() || !self.fleet.is_empty() {
            needed.push("kcp");
        }
        bins.require(&needed)?;
        let dir = BedDir::new(self.dir.as_deref())?;
        progress(&format!(
            "starting bed in {}: kcp {:?}, clusters {:?}, fleet of {} targets",
            dir.path().display(),
            self.workspace,
            self.clusters,
            self.fleet.len()
        ));
        let pki = pki::Pki::generate(&dir.path().join("pki"))?;

        let kcp_fut = async {
            match &self.workspace {
                Some(ws) => Kcp::start(&bins, dir.path(), ws).await.map(Some),
                None => Ok(None),
            }
        };
        let kcp_fut = async {
            let kcp = kcp_fut.await?;
            let tenants = match &kcp {
                Some(started) if !self.tenants.is_empty() => {
                    match Tenants::set_up(started, &self.tenants).await {
                        Ok(t) => Some(t),
                        // Keep kcp so that Drop stops it.
                        Err(e) => {
                            return Ok((kcp, Err(e.context("binding the tenant workspaces"))));
                        }
                    }
                }
                _ => None,
            };
            Ok::<_, anyhow::Error>((kcp, Ok(tenants)))
        };
        let clusters_fut =
            futures::future::join_all(self.cluster_options().into_iter().map(|options| {
                let (bins, pki, dir) = (&bins, &pki, dir.path());
                async move { PhysicalCluster::start(bins, pki, dir, &options).await }
            }));
        let fleet_fut = async {
            if self.fleet.is_empty() {
                return Ok(None);
            }
            Fleet::start(&bins, dir.path(), &self.fleet, fleet::DEFAULT_CONCURRENCY)
                .await
                .map(Some)
        };
        let (kcp, clusters, fleet) = tokio::join!(kcp_fut, clusters_fut, fleet_fut);

        // Keep whatever started so Drop stops it, then report the first failure.
        let mut bed = TestBed {
            dir,
            bins,
            kcp: None,
            tenants: None,
            fleet: None,
            clusters: BTreeMap::new(),
            started,
        };
        let mut errors = Vec::new();
        match kcp {
            Ok((k, tenants)) => {
                bed.kcp = k;
                match tenants {
                    Ok(t) => bed.tenants = t,
                    Err(e) => errors.push(e),
                }
            }
            Err(e) => errors.push(e.context("starting kcp")),
        }
        match fleet {
            Ok(f) => bed.fleet = f,
            Err(e) => errors.push(e.context("starting the fleet")),
        }
        for (name, result) in self.clusters.iter().zip(clusters) {
            match result {
                Ok(c) => {
                    bed.clusters.insert(name.clone(), c);
                }
                Err(e) => errors.push(e.context(format!("starting cluster {name}"))),
            }
        }
        if let Some(first) = errors.into_iter().next() {
            bed.dir.keep = true;
            bed.print_log_tails();
            return Err(first.context(format!(
                "test bed failed; logs kept in {}",
                bed.dir.path().display()
            )));
        }
        progress(&format!(
            "bed ready in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(bed)
    }

    fn validate(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for name in &self.clusters {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid || name == KCP || name == "admin" || name == "pki" {
                bail!(
                    "cluster name {name:?} is invalid: use lowercase letters, digits and '-', not kcp/admin/pki"
                );
            }
            if !seen.insert(name) {
                bail!("cluster name {name:?} is given twice");
            }
        }
        for name in self.sized.keys() {
            if !self.clusters.contains(name) {
                bail!(
                    "cluster_nodes names {name:?}, which is not among the clusters {:?}",
                    self.clusters
                );
            }
        }
        for options in self.cluster_options() {
            if options.nodes == 0 || options.node_shape.pods == 0 {
                bail!(
                    "cluster {:?} needs at least one node holding at least one pod",
                    options.name
                );
            }
        }
        if let Some(ws) = &self.workspace {
            kcp::workspace_levels(ws)?;
        }
        if let Some(name) = self.clusters.iter().find(|c| self.fleet.contains(c)) {
            bail!("cluster name {name:?} is also a fleet target's name; rename the cluster");
        }
        if !self.tenants.is_empty() {
            if self.workspace.is_none() {
                bail!("tenants need kcp: drop without_kcp() or the tenants");
            }
            tenants::validate_names(&self.tenants)?;
        }
        if self.workspace.is_none() && self.clusters.is_empty() && self.fleet.is_empty() {
            bail!("nothing to start: give clusters, a fleet or a kcp workspace");
        }
        Ok(())
    }
}

/// The bed directory: a temp dir (removed on drop unless kept) or a given dir.
#[derive(Debug)]
struct BedDir {
    temp: Option<tempfile::TempDir>,
    path: PathBuf,
    keep: bool,
}

impl BedDir {
    fn new(dir: Option<&Path>) -> Result<Self> {
        let keep_env = std::env::var(KEEP_ENV).is_ok_and(|v| v == "1");
        match dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("creating bed dir {}", d.display()))?;
                let empty = std::fs::read_dir(d)
                    .with_context(|| format!("reading bed dir {}", d.display()))?
                    .next()
                    .is_none();
                if !empty {
                    bail!(
                        "bed dir {} is not empty; remove it or pick another --dir",
                        d.display()
                    );
                }
                let path = d
                    .canonicalize()
                    .with_context(|| format!("resolving {}", d.display()))?;
                Ok(Self {
                    temp: None,
                    path,
                    keep: true,
                })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("tmc-testbed-")
                    .tempdir()
                    .context("creating a temp dir for the bed")?;
                let path = temp.path().to_path_buf();
                Ok(Self {
                    temp: Some(temp),
                    path,
                    keep: keep_env,
                })
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BedDir {
    fn drop(&mut self) {
        if self.keep
            && let Some(temp) = self.temp.take()
        {
            let _ = temp.keep();
        }
    }
}

/// A running test bed. Dropping it stops every process it started.
#[derive(Debug)]
pub struct TestBed {
    // Field order matters: processes are stopped in Drop before the dir goes away.
    kcp: Option<Kcp>,
    tenants: Option<Tenants>,
    fleet: Option<Fleet>,
    clusters: BTreeMap<String, PhysicalCluster>,
    bins: Binaries,
    dir: BedDir,
    started: Instant,
}

impl TestBed {
    /// A builder with the default workspace `root:tmc` and no clusters.
    pub fn builder() -> TestBedBuilder {
        TestBedBuilder::default()
    }

    /// The bed directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory the binaries come from.
    pub fn bin_dir(&self) -> &Path {
        self.bins.dir()
    }

    /// Keep the bed directory after drop (a temp dir is otherwise removed).
    pub fn keep_dir(&mut self) {
        self.dir.keep = true;
    }

    /// The kcp server, if started.
    pub fn kcp(&self) -> Result<&Kcp> {
        self.kcp
            .as_ref()
            .ok_or_else(|| anyhow!("this bed runs no kcp (built with without_kcp())"))
    }

    /// The kcp server, for faults: [`Kcp::pause`], [`Kcp::kill`], [`Kcp::relaunch`], ...
    pub fn kcp_mut(&mut self) -> Result<&mut Kcp> {
        self.kcp
            .as_mut()
            .ok_or_else(|| anyhow!("this bed runs no kcp (built with without_kcp())"))
    }

    /// Client for the kcp workspace: base URL `<kcp>/clusters/<workspace>`.
    pub async fn kcp_client(&self) -> Result<kube::Client> {
        self.kcp()?.workspace_client().await
    }

    /// Installs `deployments.apps` (apps/v1) into the kcp workspace; see [`Kcp::install_kube_crds`].
    pub async fn install_kube_crds(&self) -> Result<()> {
        self.kcp()?.install_kube_crds().await
    }

    /// tmc's export and the tenant workspaces bound to it, if any ([`TestBedBuilder::tenants`]).
    pub fn tenants(&self) -> Result<&Tenants> {
        self.tenants
            .as_ref()
            .ok_or_else(|| anyhow!("this bed has no tenants (use TestBedBuilder::tenants([...]))"))
    }

    /// Binds one more tenant workspace `root:teams:<name>` to tmc's export now (e.g. while something watches
    /// the virtual workspace) and records it in [`Self::tenants`].
    pub async fn add_tenant(&mut self, name: &str) -> Result<Tenant> {
        let tenant = tenants::bind_tenant(self.kcp()?, name).await?;
        let tenants = self.tenants.as_mut().ok_or_else(|| {
            anyhow!("this bed has no tenants (use TestBedBuilder::tenants([...]))")
        })?;
        tenants.insert(tenant.clone());
        Ok(tenant)
    }

    /// The fleet, if started ([`TestBedBuilder::fleet`]).
    pub fn fleet(&self) -> Result<&Fleet> {
        self.fleet
            .as_ref()
            .ok_or_else(|| anyhow!("this bed runs no fleet (use TestBedBuilder::fleet(n))"))
    }

    /// The fleet, for faults on its kcp ([`Fleet::kcp_mut`]).
    pub fn fleet_mut(&mut self) -> Result<&mut Fleet> {
        self.fleet
            .as_mut()
            .ok_or_else(|| anyhow!("this bed runs no fleet (use TestBedBuilder::fleet(n))"))
    }

    /// Names of the physical clusters.
    pub fn cluster_names(&self) -> Vec<String> {
        self.clusters.keys().cloned().collect()
    }

    /// A physical cluster by name.
    pub fn cluster(&self, name: &str) -> Result<&PhysicalCluster> {
        self.clusters.get(name).ok_or_else(|| self.unknown(name))
    }

    /// A physical cluster by name, for faults: [`PhysicalCluster::pause`], [`PhysicalCluster::kill`],
    /// [`PhysicalCluster::relaunch`], ...
    pub fn cluster_mut(&mut self, name: &str) -> Result<&mut PhysicalCluster> {
        let err = self.unknown(name);
        self.clusters.get_mut(name).ok_or(err)
    }

    /// Starts a process of the test's own (e.g. `tmcd`, `tmc-syncer`) the way the bed starts its servers: own
    /// process group, killed with the test process, output appended to `<bed dir>/<name>.log`, working
    /// directory the bed dir. The caller owns it: [`Supervised::kill`] is `kill -9`,
    /// [`Supervised::pause`] / [`Supervised::resume`] freeze and thaw it, [`Supervised::relaunch`] starts it
    /// again, and dropping it stops it (SIGTERM, SIGKILL after 3 s).
    pub fn spawn<I, A>(
        &self,
        name: &str,
        program: impl Into<PathBuf>,
        args: I,
    ) -> Result<Supervised>
    where
        I: IntoIterator<Item = A>,
        A: Into<std::ffi::OsString>,
    {
        Supervised::spawn(ProcessSpec {
            name: name.to_owned(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            cwd: self.dir().to_path_buf(),
            log: self.dir().join(format!("{name}.log")),
        })
    }

    /// Admin client of a physical cluster.
    pub async fn cluster_client(&self, name: &str) -> Result<kube::Client> {
        self.cluster(name)?.client().await
    }

    /// Kubeconfig of a physical cluster or fleet target, or of kcp for [`KCP`] (`"kcp"`).
    pub fn kubeconfig_path(&self, name: &str) -> Result<PathBuf> {
        if name == KCP {
            return Ok(self.kcp()?.kubeconfig_path().to_path_buf());
        }
        if let Some(target) = self.fleet.as_ref().and_then(|f| f.target(name)) {
            return Ok(target.kubeconfig.clone());
        }
        Ok(self.cluster(name)?.kubeconfig_path().to_path_buf())
    }

    /// Stops the cluster's kube-apiserver only (SIGTERM; etcd and the rest keep running): it looks unreachable.
    pub async fn stop_cluster(&mut self, name: &str) -> Result<()> {
        self.cluster_mut(name)?.stop_apiserver().await;
        Ok(())
    }

    /// Restarts the cluster's kube-apiserver on the same port and data and waits until it is ready.
    pub async fn start_cluster(&mut self, name: &str) -> Result<()> {
        self.cluster_mut(name)?.start_apiserver().await
    }

    /// Every log file of the bed.
    pub fn logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = self.kcp.iter().map(|k| k.log().to_path_buf()).collect();
        logs.extend(self.fleet.iter().map(|f| f.kcp().log().to_path_buf()));
        logs.extend(self.clusters.values().flat_map(PhysicalCluster::logs));
        logs
    }

    /// Process ids of every running server (for measuring, e.g. RSS).
    pub fn pids(&mut self) -> Vec<(String, u32)> {
        let mut pids = Vec::new();
        if let Some(kcp) = self.kcp.as_mut() {
            pids.push(("kcp".to_owned(), kcp.process_mut().pid()));
        }
        if let Some(fleet) = self.fleet.as_mut() {
            pids.push(("fleet-kcp".to_owned(), fleet.kcp_mut().process_mut().pid()));
        }
        for c in self.clusters.values_mut() {
            for p in c.processes_mut() {
                pids.push((p.spec().name.clone(), p.pid()));
            }
        }
        pids
    }

    /// How long ago [`TestBedBuilder::start`] began.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops every process now (also done by Drop).
    pub fn shutdown(&mut self) {
        let mut procs: Vec<&mut process::Supervised> = Vec::new();
        for c in self.clusters.values_mut() {
            procs.extend(c.processes_mut());
        }
        if let Some(kcp) = self.kcp.as_mut() {
            procs.push(kcp.process_mut());
        }
        if let Some(fleet) = self.fleet.as_mut() {
            procs.push(fleet.kcp_mut().process_mut());
        }
        process::stop_all(&mut procs, Duration::from_secs(3));
    }

    /// Prints the last 40 lines of every log and where the bed dir is.
    pub fn print_log_tails(&self) {
        for log in self.logs() {
            eprintln!(
                "----- last lines of {} -----\n{}",
                log.display(),
                process::tail(&log, 40)
            );
        }
        eprintln!("----- test bed dir: {} -----", self.dir.path().display());
    }

    fn unknown(&self, name: &str) -> anyhow::Error {
        anyhow!(
            "no cluster named {name:?} in this bed (clusters: {:?})",
            self.cluster_names()
        )
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.keep = true;
            self.print_log_tails();
        }
        self.shutdown();
    }
}
