//! A physical cluster: etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok fake nodes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};

use super::binaries::Binaries;
use super::kubeconfig::{self, Ca, Entry};
use super::kwok;
use super::pki::Pki;
use super::ports::free_port;
use super::process::{ProcessSpec, Supervised};
use super::progress;
use super::wait::{self, Poll};

/// Annotation kwok selects the nodes it manages by.
pub use super::kwok::NODE_ANNOTATION as KWOK_NODE_ANNOTATION;

const READY_TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(250);

/// One running physical cluster.
#[derive(Debug)]
pub struct PhysicalCluster {
    name: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    apiserver_port: u16,
    etcd: Supervised,
    apiserver: Supervised,
    controller_manager: Option<Supervised>,
    scheduler: Option<Supervised>,
    kwok: Option<Supervised>,
}

/// A process of a physical cluster, for the fault API ([`PhysicalCluster::pause`] and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// The cluster's etcd.
    Etcd,
    /// kube-apiserver.
    KubeApiserver,
    /// kube-controller-manager.
    KubeControllerManager,
    /// kube-scheduler.
    KubeScheduler,
    /// kwok, standing in for every node's kubelet.
    Kwok,
}

impl Component {
    /// Every component, in start order.
    pub const ALL: [Component; 5] = [
        Component::Etcd,
        Component::KubeApiserver,
        Component::KubeControllerManager,
        Component::KubeScheduler,
        Component::Kwok,
    ];

    /// The binary name, also the log file name `<cluster>/<name>.log`.
    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::Kwok => "kwok",
        }
    }
}

/// Allocatable (and capacity) of one kwok node. The scheduler places pods against it; kwok enforces nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeShape {
    /// CPU quantity, e.g. `"256"` or `"500m"`.
    pub cpu: String,
    /// Memory quantity, e.g. `"1Ti"`.
    pub memory: String,
    /// Pods the node holds (a kubelet's `maxPods`; a real kubelet defaults to 110).
    pub pods: u32,
}

impl Default for NodeShape {
    /// 256 cpu, 1Ti memory, 2,500 pods: one node holds 1,000 Deployments x 2 replicas with room to spare.
    fn default() -> Self {
        Self {
            cpu: "256".into(),
            memory: "1Ti".into(),
            pods: 2500,
        }
    }
}

impl NodeShape {
    /// A node holding at most `pods` pods, with the default cpu and memory.
    pub fn pods(pods: u32) -> Self {
        Self {
            pods,
            ..Self::default()
        }
    }
}

/// Shape of a cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Cluster name, also the kubeconfig context name.
    pub name: String,
    /// Number of kwok nodes, named `<cluster>-node-<i>`.
    pub nodes: usize,
    /// Allocatable of each node.
    pub node_shape: NodeShape,
}

impl ClusterOptions {
    /// `nodes` nodes of the default [`NodeShape`].
    pub fn new(name: impl Into<String>, nodes: usize) -> Self {
        Self {
            name: name.into(),
            nodes,
            node_shape: NodeShape::default(),
        }
    }

    /// Pods the whole cluster can hold.
    pub fn pod_capacity(&self) -> u64 {
        self.nodes as u64 * u64::from(self.node_shape.pods)
    }
}

impl PhysicalCluster {
    /// Starts the cluster under `bed_dir/<name>/`, its kubeconfig at `bed_dir/<name>.kubeconfig`, and waits
    /// until the API server is ready and every kwok node reports Ready.
    pub async fn start(
        bins: &Binaries,
        pki: &Pki,
        bed_dir: &Path,
        options: &ClusterOptions,
    ) -> Result<Self> {
        let dir = bed_dir.join(&options.name);
        // On failure the processes started so far are stopped by Drop; keep their last words in the error.
        Self::start_in(bins, pki, bed_dir, options)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}\n{}", super::process::tails_of_dir(&dir, 20)))
    }

    async fn start_in(
        bins: &Binaries,
        pki: &Pki,
        bed_dir: &Path,
        options: &ClusterOptions,
    ) -> Result<Self> {
        let name = options.name.as_str();
        let dir = bed_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (etcd_port, peer_port, apiserver_port) = (free_port()?, free_port()?, free_port()?);

        let etcd = Supervised::spawn(spec(
            bins,
            &dir,
            name,
            "etcd",
            etcd_args(&dir, name, etcd_port, peer_port),
        ))?;
        let apiserver = Supervised::spawn(spec(
            bins,
            &dir,
            name,
            "kube-apiserver",
            apiserver_args(&dir, pki, etcd_port, apiserver_port),
        ))?;
        let kubeconfig = bed_dir.join(format!("{name}.kubeconfig"));
        kubeconfig::write(
            &kubeconfig,
            &[Entry {
                name: name.to_owned(),
                server: format!("https://127.0.0.1:{apiserver_port}"),
                ca: Ca::File(pki.ca_cert.clone()),
                token: pki.admin_token.clone(),
            }],
            name,
        )?;
        let mut cluster = Self {
            name: name.to_owned(),
            dir,
            kubeconfig,
            apiserver_port,
            etcd,
            apiserver,
            controller_manager: None,
            scheduler: None,
            kwok: None,
        };
        cluster.wait_apiserver_ready().await?;
        progress(&format!(
            "{name}: kube-apiserver ready on 127.0.0.1:{apiserver_port}"
        ));

        let kc = cluster.kubeconfig.clone();
        let (kcm_port, sched_port) = (free_port()?, free_port()?);
        let cdir = cluster.dir.clone();
        let started = |component: Component, args| {
            Supervised::spawn(spec(bins, &cdir, name, component.name(), args))
        };
        let kcm = controller_manager_args(&kc, pki, name, kcm_port);
        cluster.controller_manager = Some(started(Component::KubeControllerManager, kcm)?);
        let sched = scheduler_args(&kc, sched_port);
        cluster.scheduler = Some(started(Component::KubeScheduler, sched)?);
        let stages = kwok::write_stages(&cdir)?;
        cluster.kwok = Some(started(Component::Kwok, kwok::args(&kc, &stages))?);
        cluster
            .create_nodes(options.nodes, &options.node_shape)
            .await?;
        cluster.wait_nodes_ready(options.nodes).await?;
        progress(&format!("{name}: {} kwok node(s) Ready", options.nodes));
        Ok(cluster)
    }

    /// Cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kubeconfig with one context named after the cluster.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// API server URL.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// Directory with the cluster's data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Admin client.
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig::client(&self.kubeconfig, None).await
    }

    /// Whether kube-apiserver is currently running (not stopped or killed).
    pub fn apiserver_running(&mut self) -> bool {
        self.apiserver.exit_status().is_none()
    }

    /// Stops kube-apiserver only (SIGTERM; etcd and controllers keep running): the cluster becomes
    /// unreachable. Same as [`Self::stop`] of [`Component::KubeApiserver`].
    pub async fn stop_apiserver(&mut self) {
        // The apiserver always exists once started, so this cannot fail.
        let _ = self.stop(Component::KubeApiserver).await;
    }

    /// Starts kube-apiserver again if it is not running (same port and data) and waits until it is ready.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver_running() {
            self.wait_apiserver_ready().await
        } else {
            self.relaunch(Component::KubeApiserver).await
        }
    }

    /// The process of `component`.
    pub fn process_mut(&mut self, component: Component) -> Result<&mut Supervised> {
        let slot = match component {
            Component::Etcd => Some(&mut self.etcd),
            Component::KubeApiserver => Some(&mut self.apiserver),
            Component::KubeControllerManager => self.controller_manager.as_mut(),
            Component::KubeScheduler => self.scheduler.as_mut(),
            Component::Kwok => self.kwok.as_mut(),
        };
        slot.ok_or_else(|| anyhow!("{}: {} was never started", self.name, component.name()))
    }

    /// Process id of `component` (its process group id too).
    pub fn pid(&mut self, component: Component) -> Result<u32> {
        Ok(self.process_mut(component)?.pid())
    }

    /// Freezes `component` with SIGSTOP: its port still accepts connections, but nothing answers until
    /// [`Self::resume`]; requests to a paused kube-apiserver hang until the client times out.
    pub fn pause(&mut self, component: Component) -> Result<()> {
        self.process_mut(component)?.pause()?;
        progress(&format!("{}: {} paused", self.name, component.name()));
        Ok(())
    }

    /// Lets a paused `component` run again (SIGCONT).
    pub fn resume(&mut self, component: Component) -> Result<()> {
        self.process_mut(component)?.resume()?;
        progress(&format!("{}: {} resumed", self.name, component.name()));
        Ok(())
    }

    /// `kill -9` of `component`: a crash. Start it again with [`Self::relaunch`].
    pub fn kill(&mut self, component: Component) -> Result<()> {
        self.process_mut(component)?.kill();
        progress(&format!(
            "{}: {} killed (SIGKILL)",
            self.name,
            component.name()
        ));
        Ok(())
    }

    /// Stops `component` cleanly: SIGTERM, SIGKILL after 5 s. Start it again with [`Self::relaunch`].
    pub async fn stop(&mut self, component: Component) -> Result<()> {
        self.process_mut(component)?
            .stop_async(Duration::from_secs(5))
            .await;
        progress(&format!(
            "{}: {} stopped (SIGTERM)",
            self.name,
            component.name()
        ));
        Ok(())
    }

    /// Starts a stopped or killed `component` again with the same arguments: same ports, same data (etcd's
    /// data dir survives a kill). Waits until kube-apiserver answers `/readyz` when the component is etcd or
    /// kube-apiserver (and kube-apiserver runs). Fails if the component is still running.
    pub async fn relaunch(&mut self, component: Component) -> Result<()> {
        self.process_mut(component)?.relaunch()?;
        let needs_apiserver = matches!(component, Component::Etcd | Component::KubeApiserver);
        if needs_apiserver && self.apiserver_running() {
            self.wait_apiserver_ready().await?;
        }
        progress(&format!(
            "{}: {} running again",
            self.name,
            component.name()
        ));
        Ok(())
    }

    /// Every started process, controllers first.
    pub fn processes_mut(&mut self) -> Vec<&mut Supervised> {
        let mut all: Vec<&mut Supervised> = [
            self.kwok.as_mut(),
            self.scheduler.as_mut(),
            self.controller_manager.as_mut(),
        ]
        .into_iter()
        .flatten()
        .collect();
        all.push(&mut self.apiserver);
        all.push(&mut self.etcd);
        all
    }

    /// Log files of every component started.
    pub fn logs(&self) -> Vec<PathBuf> {
        [
            Some(&self.etcd),
            Some(&self.apiserver),
            self.controller_manager.as_ref(),
            self.scheduler.as_ref(),
            self.kwok.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| p.spec().log.clone())
        .collect()
    }

    async fn wait_apiserver_ready(&mut self) -> Result<()> {
        let client = self.client().await?;
        let what = format!("{} kube-apiserver /readyz", self.name);
        let (etcd, apiserver) = (&mut self.etcd, &mut self.apiserver);
        wait::until(&what, READY_TIMEOUT, POLL, || {
            let alive = etcd
                .ensure_running()
                .and_then(|()| apiserver.ensure_running());
            let client = client.clone();
            async move {
                alive?;
                Ok(wait::readyz(&client).await)
            }
        })
        .await
    }

    async fn create_nodes(&self, count: usize, shape: &NodeShape) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client().await?);
        for i in 0..count {
            let node = fake_node(&format!("{}-node-{i}", self.name), &self.name, shape)?;
            nodes
                .create(&PostParams::default(), &node)
                .await
                .with_context(|| format!("creating kwok node {i} in cluster {}", self.name))?;
        }
        Ok(())
    }

    async fn wait_nodes_ready(&mut self, count: usize) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client().await?);
        let what = format!("{count} kwok node(s) of {} to be Ready", self.name);
        let mut controllers = self.processes_mut();
        wait::until(&what, READY_TIMEOUT, POLL, || {
            let alive: Result<()> = controllers.iter_mut().try_for_each(|p| p.ensure_running());
            let nodes = nodes.clone();
            async move {
                alive?;
                let list = nodes
                    .list(&ListParams::default())
                    .await
                    .context("listing nodes")?;
                let ready = list.items.iter().filter(|n| node_ready(n)).count();
                Ok(if ready >= count {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("{ready}/{count} Ready"))
                })
            }
        })
        .await
    }
}

fn spec(
    bins: &Binaries,
    dir: &Path,
    cluster: &str,
    component: &str,
    args: Vec<OsString>,
) -> ProcessSpec {
    ProcessSpec {
        name: format!("{cluster}/{component}"),
        program: bins.path(component),
        args,
        cwd: dir.to_path_buf(),
        log: dir.join(format!("{component}.log")),
    }
}

fn os(args: Vec<String>) -> Vec<OsString> {
    args.into_iter().map(OsString::from).collect()
}

fn etcd_args(dir: &Path, name: &str, client: u16, peer: u16) -> Vec<OsString> {
    os(vec![
        format!("--name={name}"),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster={name}=http://127.0.0.1:{peer}"),
        // A throwaway test store: durability is not worth the fsync latency.
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ])
}

fn apiserver_args(dir: &Path, pki: &Pki, etcd: u16, port: u16) -> Vec<OsString> {
    let p = |path: &Path| path.display().to_string();
    os(vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        format!("--tls-cert-file={}", p(&pki.server_cert)),
        format!("--tls-private-key-file={}", p(&pki.server_key)),
        format!("--client-ca-file={}", p(&pki.ca_cert)),
        format!("--token-auth-file={}", p(&pki.token_file)),
        "--authorization-mode=RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p(&pki.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        // The loopback advertise address is not a valid endpoint of the kubernetes Service.
        "--endpoint-reconciler-type=none".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ])
}

/// How long a node's Lease may go unrenewed before the node lifecycle controller marks the node NotReady
/// (kube-controller-manager's default is 50 s). The bed shares a small machine with builds and other beds;
/// under a load of 20+ on 2 cores, kwok's 10 s renewals or the controller's view of them lagged past 50 s
/// and healthy nodes went `Unknown`. Two minutes keeps a starved bed Ready and still ends a real outage.
pub const NODE_MONITOR_GRACE_PERIOD: Duration = Duration::from_secs(120);

fn controller_manager_args(
    kubeconfig: &Path,
    pki: &Pki,
    cluster: &str,
    port: u16,
) -> Vec<OsString> {
    let kc = kubeconfig.display();
    os(vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--leader-elect=false".into(),
        "--use-service-account-credentials=false".into(),
        format!(
            "--service-account-private-key-file={}",
            pki.sa_key.display()
        ),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        format!("--cluster-name={cluster}"),
        format!(
            "--node-monitor-grace-period={}s",
            NODE_MONITOR_GRACE_PERIOD.as_secs()
        ),
        "--profiling=false".into(),
        "--v=1".into(),
    ])
}

fn scheduler_args(kubeconfig: &Path, port: u16) -> Vec<OsString> {
    let kc = kubeconfig.display();
    os(vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ])
}

/// A Node object kwok will manage, sized by `shape`.
fn fake_node(name: &str, cluster: &str, shape: &NodeShape) -> Result<Node> {
    let capacity = serde_json::json!({
        "cpu": shape.cpu, "memory": shape.memory, "pods": shape.pods.to_string(),
    });
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": { KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0" },
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
                "tmc.test/cluster": cluster,
            },
        },
        "status": { "capacity": capacity, "allocatable": capacity },
    }))
    .with_context(|| format!("building fake node {name}"))
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_node_is_managed_by_kwok_and_has_capacity() {
        let node = fake_node("west-node-0", "west", &NodeShape::default()).expect("node");
        let annotations = node.metadata.annotations.expect("annotations");
        assert_eq!(
            annotations.get(KWOK_NODE_ANNOTATION).map(String::as_str),
            Some("fake")
        );
        let allocatable = node
            .status
            .and_then(|s| s.allocatable)
            .expect("allocatable");
        assert_eq!(allocatable.get("pods").map(|q| q.0.as_str()), Some("2500"));
        let small = NodeShape {
            cpu: "2".into(),
            memory: "4Gi".into(),
            pods: 3,
        };
        let node = fake_node("x", "west", &small).expect("node");
        assert!(!node_ready(&node));
        let status = node.status.expect("status");
        for fields in [status.capacity, status.allocatable] {
            let fields = fields.expect("capacity and allocatable");
            let get = |k: &str| fields.get(k).map(|q| q.0.clone());
            assert_eq!(get("cpu").as_deref(), Some("2"));
            assert_eq!(get("memory").as_deref(), Some("4Gi"));
            assert_eq!(get("pods").as_deref(), Some("3"));
        }
    }

    #[test]
    fn default_shape_holds_a_thousand_two_replica_deployments() {
        assert!(ClusterOptions::new("west", 1).pod_capacity() >= 2_000);
        assert_eq!(
            ClusterOptions {
                node_shape: NodeShape::pods(3),
                ..ClusterOptions::new("w", 2)
            }
            .pod_capacity(),
            6
        );
    }

    #[test]
    fn scheduler_gets_its_own_port() {
        let args = scheduler_args(Path::new("/k"), 4243);
        assert!(args.iter().any(|a| a == "--secure-port=4243"));
    }
}
