//! A physical cluster: etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok fake nodes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};

use super::binaries::Binaries;
use super::kubeconfig::{self, Ca, Entry};
use super::pki::Pki;
use super::ports::free_port;
use super::process::{ProcessSpec, Supervised};
use super::progress;
use super::wait::{self, Poll};

/// Annotation kwok selects the nodes it manages by.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

const READY_TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(250);

/// One running physical cluster.
#[derive(Debug)]
pub struct PhysicalCluster {
    name: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    apiserver_port: u16,
    apiserver_spec: ProcessSpec,
    etcd: Supervised,
    apiserver: Option<Supervised>,
    /// kube-controller-manager, kube-scheduler, kwok.
    controllers: Vec<Supervised>,
}

/// Shape of a cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Cluster name, also the kubeconfig context name.
    pub name: String,
    /// Number of kwok nodes.
    pub nodes: usize,
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
        let apiserver_spec = spec(
            bins,
            &dir,
            name,
            "kube-apiserver",
            apiserver_args(&dir, pki, etcd_port, apiserver_port),
        );
        let apiserver = Supervised::spawn(apiserver_spec.clone())?;
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
            apiserver_spec,
            etcd,
            apiserver: Some(apiserver),
            controllers: Vec::new(),
        };
        cluster.wait_apiserver_ready().await?;
        progress(&format!(
            "{name}: kube-apiserver ready on 127.0.0.1:{apiserver_port}"
        ));

        let kc = cluster.kubeconfig.clone();
        let (kcm_port, sched_port) = (free_port()?, free_port()?);
        let kcm = controller_manager_args(&kc, pki, name, kcm_port);
        let sched = scheduler_args(&kc, sched_port);
        let kwok = kwok_args(&kc);
        for (component, args) in [
            ("kube-controller-manager", kcm),
            ("kube-scheduler", sched),
            ("kwok", kwok),
        ] {
            let s = spec(bins, &cluster.dir, name, component, args);
            cluster.controllers.push(Supervised::spawn(s)?);
        }
        cluster.create_nodes(options.nodes).await?;
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

    /// Whether kube-apiserver is currently running (not stopped with [`Self::stop_apiserver`]).
    pub fn apiserver_running(&self) -> bool {
        self.apiserver.is_some()
    }

    /// Stops kube-apiserver only (etcd and controllers keep running): the cluster becomes unreachable.
    pub async fn stop_apiserver(&mut self) {
        if let Some(mut apiserver) = self.apiserver.take() {
            apiserver.stop_async(Duration::from_secs(5)).await;
            progress(&format!("{}: kube-apiserver stopped", self.name));
        }
    }

    /// Restarts kube-apiserver on the same port and data, and waits until it is ready.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver.is_none() {
            self.apiserver = Some(Supervised::spawn(self.apiserver_spec.clone())?);
        }
        self.wait_apiserver_ready().await?;
        progress(&format!("{}: kube-apiserver ready again", self.name));
        Ok(())
    }

    /// Every running process, controllers first.
    pub fn processes_mut(&mut self) -> Vec<&mut Supervised> {
        let mut all: Vec<&mut Supervised> = self.controllers.iter_mut().collect();
        all.extend(self.apiserver.as_mut());
        all.push(&mut self.etcd);
        all
    }

    /// Log files of every component ever started.
    pub fn logs(&self) -> Vec<PathBuf> {
        let mut logs = vec![
            self.etcd.spec().log.clone(),
            self.apiserver_spec.log.clone(),
        ];
        logs.extend(self.controllers.iter().map(|p| p.spec().log.clone()));
        logs
    }

    async fn wait_apiserver_ready(&mut self) -> Result<()> {
        let client = self.client().await?;
        let what = format!("{} kube-apiserver /readyz", self.name);
        wait::until(&what, READY_TIMEOUT, POLL, || {
            let alive = self
                .etcd
                .ensure_running()
                .and_then(|()| match self.apiserver.as_mut() {
                    Some(a) => a.ensure_running(),
                    None => bail!("{} kube-apiserver is stopped", self.name),
                });
            let client = client.clone();
            async move {
                alive?;
                Ok(wait::readyz(&client).await)
            }
        })
        .await
    }

    async fn create_nodes(&self, count: usize) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client().await?);
        for i in 0..count {
            let node = fake_node(&format!("{}-node-{i}", self.name), &self.name)?;
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
        let controllers = &mut self.controllers;
        wait::until(&what, READY_TIMEOUT, POLL, || {
            let alive: Result<()> = controllers
                .iter_mut()
                .try_for_each(Supervised::ensure_running);
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

/// kwok runs without its kubelet-like server (no `--server-address`): the test bed uses neither its
/// metrics nor its logs/exec endpoints, and kwok v0.7.0 builds that server's CEL environment while
/// its stage controllers build theirs, writing one unguarded global map (easycel v0.6.0
/// `typeTraitMap`) from two goroutines; that crashed kwok at start-up with "concurrent map writes".
fn kwok_args(kubeconfig: &Path) -> Vec<OsString> {
    os(vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--manage-all-nodes=false".into(),
        format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
        "--cidr=10.0.0.1/16".into(),
    ])
}

/// A Node object kwok will manage, with room for plenty of pods.
fn fake_node(name: &str, cluster: &str) -> Result<Node> {
    let capacity = serde_json::json!({ "cpu": "32", "memory": "256Gi", "pods": "110" });
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
        let node = fake_node("west-node-0", "west").expect("node");
        let annotations = node.metadata.annotations.expect("annotations");
        assert_eq!(
            annotations.get(KWOK_NODE_ANNOTATION).map(String::as_str),
            Some("fake")
        );
        let allocatable = node
            .status
            .and_then(|s| s.allocatable)
            .expect("allocatable");
        assert_eq!(allocatable.get("pods").map(|q| q.0.as_str()), Some("110"));
        assert!(!node_ready(&fake_node("x", "west").expect("node")));
    }

    #[test]
    fn scheduler_gets_its_own_port() {
        let args = scheduler_args(Path::new("/k"), 4243);
        assert!(args.iter().any(|a| a == "--secure-port=4243"));
    }

    #[test]
    fn kwok_runs_without_its_racy_server() {
        let args = kwok_args(Path::new("/k"));
        assert!(
            !args
                .iter()
                .any(|a| a.to_string_lossy().starts_with("--server-address"))
        );
    }
}
