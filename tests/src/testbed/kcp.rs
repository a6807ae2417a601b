//! kcp: one `kcp start` with embedded etcd, a workspace, and the Deployment CRD for it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::binaries::Binaries;
use super::kcp_snapshot;
use super::kubeconfig::{self, Ca, Entry};
use super::ports::free_port;
use super::process::{ProcessSpec, Supervised};
use super::progress;
use super::wait::{self, Poll};

/// The apps/v1 Deployment CRD from kcp's `contrib/crds` (kcp serves no Deployments by itself).
const DEPLOYMENTS_CRD: &str = include_str!("crds/apps_deployments.yaml");

const READY_TIMEOUT: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_millis(250);
const FIELD_MANAGER: &str = "tmc-testbed";
/// Extra `kcp start` flags for a look into one run (see [`extra_args`]).
pub const KCP_ARGS_ENV: &str = "TMC_TESTBED_KCP_ARGS";

/// A running kcp server.
#[derive(Debug)]
pub struct Kcp {
    process: Supervised,
    port: u16,
    kubeconfig: PathBuf,
    workspace: String,
}

impl Kcp {
    /// Starts kcp with its root dir in `bed_dir/kcp` and its log in `bed_dir/kcp.log`, waits until ready,
    /// creates `workspace` (e.g. `root:tmc`, each level in turn) and waits until it is Ready.
    ///
    /// Writes `bed_dir/admin.kubeconfig` with contexts `base` (no workspace), `root`, one per workspace level,
    /// the current one being `workspace`.
    ///
    /// Unless `TMC_TESTBED_KCP_SNAPSHOT=0`, the root dir starts as a copy of a bootstrapped snapshot (see
    /// [`kcp_snapshot`]), primed by the first bed that needs it.
    pub async fn start(bins: &Binaries, bed_dir: &Path, workspace: &str) -> Result<Self> {
        let root_dir = bed_dir.join("kcp");
        if kcp_snapshot::enabled() {
            let snapshot = Self::ensure_snapshot(bins, bed_dir, workspace).await?;
            kcp_snapshot::restore(&snapshot, &root_dir)?;
        }
        let paths = KcpPaths {
            root_dir,
            log: bed_dir.join("kcp.log"),
            kubeconfig: bed_dir.join("admin.kubeconfig"),
        };
        Self::launch(bins, &paths, workspace).await
    }

    /// Like [`Kcp::start`], but the root dir starts as a copy of `snapshot`: the root dir of a stopped kcp that
    /// already holds `workspace` (e.g. one primed with more workspaces below it).
    pub async fn start_from_snapshot(
        bins: &Binaries,
        bed_dir: &Path,
        workspace: &str,
        snapshot: &Path,
    ) -> Result<Self> {
        let root_dir = bed_dir.join("kcp");
        kcp_snapshot::restore(snapshot, &root_dir)?;
        let paths = KcpPaths {
            root_dir,
            log: bed_dir.join("kcp.log"),
            kubeconfig: bed_dir.join("admin.kubeconfig"),
        };
        Self::launch(bins, &paths, workspace).await
    }

    /// Returns the snapshot dir for `workspace`, priming it first if missing.
    async fn ensure_snapshot(bins: &Binaries, bed_dir: &Path, workspace: &str) -> Result<PathBuf> {
        let dir = kcp_snapshot::snapshot_dir(&bins.path("kcp"), workspace)?;
        let _lock = kcp_snapshot::lock(&dir).await?;
        if dir.is_dir() {
            return Ok(dir);
        }
        progress(&format!(
            "priming kcp snapshot {} (once per kcp binary and workspace)",
            dir.display()
        ));
        let scratch = dir.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let paths = KcpPaths {
            root_dir: scratch.clone(),
            log: bed_dir.join("kcp-snapshot.log"),
            kubeconfig: bed_dir.join("kcp-snapshot.kubeconfig"),
        };
        let mut kcp = match Self::launch(bins, &paths, workspace).await {
            Ok(kcp) => kcp,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e.context("priming the kcp snapshot"));
            }
        };
        kcp.process.stop_async(Duration::from_secs(10)).await;
        std::fs::rename(&scratch, &dir).with_context(|| {
            format!(
                "moving kcp snapshot {} to {}",
                scratch.display(),
                dir.display()
            )
        })?;
        progress("kcp snapshot primed");
        Ok(dir)
    }

    /// Runs kcp on `paths.root_dir` (fresh or restored) and waits for it and `workspace`.
    async fn launch(bins: &Binaries, paths: &KcpPaths, workspace: &str) -> Result<Self> {
        let levels = workspace_levels(workspace)?;
        let root_dir = &paths.root_dir;
        std::fs::create_dir_all(root_dir)
            .with_context(|| format!("creating {}", root_dir.display()))?;
        let (port, etcd_client, etcd_peer) = (free_port()?, free_port()?, free_port()?);
        let args: Vec<OsString> = [
            "start".to_owned(),
            format!("--root-directory={}", root_dir.display()),
            "--bind-address=127.0.0.1".to_owned(),
            "--external-hostname=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            format!("--embedded-etcd-client-port={etcd_client}"),
            format!("--embedded-etcd-peer-port={etcd_peer}"),
            "--v=1".to_owned(),
        ]
        .into_iter()
        .chain(extra_args())
        .map(OsString::from)
        .collect();
        let mut process = Supervised::spawn(ProcessSpec {
            name: "kcp".into(),
            program: bins.path("kcp"),
            args,
            cwd: root_dir.clone(),
            log: paths.log.clone(),
        })?;

        // kcp writes its own admin kubeconfig once its certificates and tokens exist.
        let own = root_dir.join("admin.kubeconfig");
        let creds = wait::until("kcp to write admin.kubeconfig", READY_TIMEOUT, POLL, || {
            let alive = process.ensure_running();
            let own = own.clone();
            async move {
                alive?;
                Ok(match read_credentials(&own) {
                    Ok(c) => Poll::Ready(c),
                    Err(e) => Poll::Pending(format!("{e:#}")),
                })
            }
        })
        .await?;

        let kubeconfig = paths.kubeconfig.clone();
        let base = format!("https://127.0.0.1:{port}");
        let mut entries = vec![Entry {
            name: "base".into(),
            server: base.clone(),
            ca: Ca::Data(creds.ca_data.clone()),
            token: creds.token.clone(),
        }];
        entries.extend(levels.iter().map(|path| Entry {
            name: path.clone(),
            server: format!("{base}/clusters/{path}"),
            ca: Ca::Data(creds.ca_data.clone()),
            token: creds.token.clone(),
        }));
        kubeconfig::write(&kubeconfig, &entries, workspace)?;

        let mut kcp = Self {
            process,
            port,
            kubeconfig,
            workspace: workspace.to_owned(),
        };
        let base_client = kcp.client("base").await?;
        let process = &mut kcp.process;
        let ready = wait::until("kcp /readyz", READY_TIMEOUT, POLL, || {
            let alive = process.ensure_running();
            let client = base_client.clone();
            async move {
                alive?;
                Ok(wait::readyz(&client).await)
            }
        })
        .await;
        ready.map_err(|e| kcp.with_log(e))?;
        progress(&format!("kcp ready on {base}"));

        for pair in levels.windows(2) {
            kcp.create_workspace(&pair[0], &pair[1])
                .await
                .map_err(|e| kcp.with_log(e))?;
        }
        progress(&format!("kcp workspace {workspace} Ready"));
        Ok(kcp)
    }

    /// Client for a context of `admin.kubeconfig`: `base`, `root`, or a workspace path.
    pub async fn client(&self, context: &str) -> Result<kube::Client> {
        kubeconfig::client(&self.kubeconfig, Some(context)).await
    }

    /// Client whose base URL is `<kcp>/clusters/<workspace>`.
    pub async fn workspace_client(&self) -> Result<kube::Client> {
        self.client(&self.workspace).await
    }

    /// The workspace path, e.g. `root:tmc`.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// `https://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The kubeconfig written by [`Kcp::start`].
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kcp log file.
    pub fn log(&self) -> &Path {
        &self.process.spec().log
    }

    /// The kcp process.
    pub fn process_mut(&mut self) -> &mut Supervised {
        &mut self.process
    }

    /// Freezes kcp with SIGSTOP: its port still accepts connections, but requests hang until
    /// [`Self::resume`] (or the client's timeout).
    pub fn pause(&mut self) -> Result<()> {
        self.process.pause()?;
        progress("kcp paused");
        Ok(())
    }

    /// Lets a paused kcp run again (SIGCONT).
    pub fn resume(&mut self) -> Result<()> {
        self.process.resume()?;
        progress("kcp resumed");
        Ok(())
    }

    /// `kill -9` of kcp (and its embedded etcd): a crash. Start it again with [`Self::relaunch`].
    pub fn kill(&mut self) {
        self.process.kill();
        progress("kcp killed (SIGKILL)");
    }

    /// Stops kcp cleanly: SIGTERM, SIGKILL after 10 s. Start it again with [`Self::relaunch`].
    pub async fn stop(&mut self) {
        self.process.stop_async(Duration::from_secs(10)).await;
        progress("kcp stopped (SIGTERM)");
    }

    /// Whether kcp is running (paused counts as running).
    pub fn running(&mut self) -> bool {
        self.process.exit_status().is_none()
    }

    /// Starts a stopped or killed kcp again on the same port and root directory (so with its data and the
    /// same admin token) and waits until `/readyz` says ok and the workspace answers. Fails if kcp is still
    /// running.
    pub async fn relaunch(&mut self) -> Result<()> {
        self.process.relaunch()?;
        let base = self.client("base").await?;
        let process = &mut self.process;
        let ready = wait::until("relaunched kcp /readyz", READY_TIMEOUT, POLL, || {
            let alive = process.ensure_running();
            let client = base.clone();
            async move {
                alive?;
                Ok(wait::readyz(&client).await)
            }
        })
        .await;
        ready.map_err(|e| self.with_log(e))?;
        let inner: Api<k8s_openapi::api::core::v1::Namespace> =
            Api::all(self.workspace_client().await?);
        let what = format!("kcp workspace {} to serve requests again", self.workspace);
        wait::until(&what, READY_TIMEOUT, POLL, || {
            let inner = inner.clone();
            async move {
                Ok(match inner.list(&ListParams::default().limit(1)).await {
                    Ok(_) => Poll::Ready(()),
                    Err(e) => Poll::Pending(format!("listing namespaces: {e}")),
                })
            }
        })
        .await
        .map_err(|e| self.with_log(e))?;
        progress(&format!("kcp running again on {}", self.base_url()));
        Ok(())
    }

    /// Installs the apps/v1 Deployment CRD (copied from kcp's `contrib/crds`) into the workspace and waits
    /// until `deployments.apps` is served there. Idempotent (server-side apply).
    pub async fn install_kube_crds(&self) -> Result<()> {
        install_kube_crds(self.workspace_client().await?, &self.workspace).await?;
        progress(&format!(
            "kcp workspace {}: deployments.apps served",
            self.workspace
        ));
        Ok(())
    }

    /// Creates workspace `child` (a full path) in `parent` and waits until it is Ready and serving.
    async fn create_workspace(&self, parent: &str, child: &str) -> Result<()> {
        create_workspace(
            &self.owner_client(parent).await?,
            &self.client(child).await?,
            child,
        )
        .await
    }

    /// A client of workspace `path` (e.g. `root`) as [`OWNER_USER`], for creating workspaces: kcp records the
    /// creating user as a new workspace's owner, and its APIBinding initializer needs one. A workspace created
    /// by [`ADMIN_USER`] (group `system:masters`) gets none and stays `Initializing` ("LogicalCluster ... had
    /// no user recorded" in kcp's log). The token changes with every kcp start: use this client right away.
    pub async fn owner_client(&self, path: &str) -> Result<kube::Client> {
        let own = self.process.spec().cwd.join("admin.kubeconfig");
        let kubeconfig = Kubeconfig::read_from(&own)
            .with_context(|| format!("reading kcp's own kubeconfig {}", own.display()))?;
        let options = KubeConfigOptions {
            context: Some("root".to_owned()),
            ..KubeConfigOptions::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("loading context root of {}", own.display()))?;
        let url = format!("{}/clusters/{path}", self.base_url());
        config.cluster_url = url
            .parse()
            .with_context(|| format!("parsing workspace URL {url}"))?;
        kube::Client::try_from(config).with_context(|| format!("building a client for {url}"))
    }

    fn with_log(&self, e: anyhow::Error) -> anyhow::Error {
        anyhow!(
            "{e:#}\nlast lines of {}:\n{}",
            self.log().display(),
            super::process::tail(self.log(), 30)
        )
    }
}

/// Installs the apps/v1 Deployment CRD into the workspace `client` talks to (`workspace` names it in errors)
/// and waits until `deployments.apps` is served there. Idempotent (server-side apply).
pub async fn install_kube_crds(client: kube::Client, workspace: &str) -> Result<()> {
    let crd: CustomResourceDefinition = serde_yaml::from_str(DEPLOYMENTS_CRD)
        .context("parsing the embedded deployments.apps CRD")?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .with_context(|| format!("applying CRD {name} in kcp workspace {workspace}"))?;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let what = format!("deployments.apps to be served in kcp workspace {workspace}");
    wait::until(&what, READY_TIMEOUT, POLL, || {
        let (crds, deployments, name) = (crds.clone(), deployments.clone(), name.clone());
        async move {
            let crd = crds
                .get(&name)
                .await
                .with_context(|| format!("reading CRD {name}"))?;
            if !crd_established(&crd) {
                return Ok(Poll::Pending(format!("CRD {name} not Established yet")));
            }
            Ok(
                match deployments.list(&ListParams::default().limit(1)).await {
                    Ok(_) => Poll::Ready(()),
                    Err(e) => Poll::Pending(format!("listing deployments: {e}")),
                },
            )
        }
    })
    .await
}

/// Creates workspace `child` (a full path, e.g. `root:fleet:t001`) through `parent` (a client of its parent
/// workspace), waits until it is Ready there and until `child_client` (a client of `child`) is served.
/// An existing workspace of that name is fine.
pub async fn create_workspace(
    parent: &kube::Client,
    child_client: &kube::Client,
    child: &str,
) -> Result<()> {
    let name = child.rsplit(':').next().unwrap_or(child);
    let gvk = GroupVersionKind::gvk("tenancy.kcp.io", "v1alpha1", "Workspace");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "workspaces");
    let workspaces: Api<DynamicObject> = Api::all_with(parent.clone(), &resource);
    let object = DynamicObject::new(name, &resource);
    // A starting kcp may refuse the create for a while (e.g. 403 "workspacetypes
    // root:root not found" until its admission caches fill): retry, bounded.
    let what = format!("kcp to accept workspace {child}");
    wait::until(&what, READY_TIMEOUT, POLL, || {
        let (workspaces, object) = (workspaces.clone(), object.clone());
        async move {
            Ok(
                match workspaces.create(&PostParams::default(), &object).await {
                    Ok(_) => Poll::Ready(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => Poll::Ready(()),
                    Err(e) => Poll::Pending(format!("creating it: {e}")),
                },
            )
        }
    })
    .await?;
    let what = format!("kcp workspace {child} to be Ready");
    wait::until(&what, READY_TIMEOUT, POLL, || {
        let workspaces = workspaces.clone();
        async move {
            let ws = workspaces
                .get(name)
                .await
                .with_context(|| format!("reading workspace {name}"))?;
            let phase = ws
                .data
                .pointer("/status/phase")
                .and_then(|p| p.as_str())
                .unwrap_or("");
            Ok(if phase == "Ready" {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("phase {phase:?}"))
            })
        }
    })
    .await?;
    // Ready in the parent does not yet mean the workspace URL answers: check it does.
    let inner: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(child_client.clone());
    wait::until(
        &format!("kcp workspace {child} to serve requests"),
        READY_TIMEOUT,
        POLL,
        || {
            let inner = inner.clone();
            async move {
                Ok(match inner.list(&ListParams::default().limit(1)).await {
                    Ok(_) => Poll::Ready(()),
                    Err(e) => Poll::Pending(format!("listing namespaces: {e}")),
                })
            }
        },
    )
    .await
}

/// Where one kcp keeps its state, log and our kubeconfig.
#[derive(Debug, Clone)]
struct KcpPaths {
    root_dir: PathBuf,
    log: PathBuf,
    kubeconfig: PathBuf,
}

/// The user of kcp's admin kubeconfig whose token the bed uses: `shard-admin` (group `system:masters`).
/// kcp keeps its token across restarts (it stores the token's hash in `<root dir>/.admin-token-store` and reads
/// the token back from its admin kubeconfig), whereas `kcp-admin`'s token (context `root`) is minted anew on
/// every start, which would lock every client out after [`Kcp::relaunch`].
pub const ADMIN_USER: &str = "shard-admin";

/// The user of kcp's admin kubeconfig (context `root`) that creates workspaces; see [`Kcp::owner_client`].
pub const OWNER_USER: &str = "kcp-admin";

/// Token of [`ADMIN_USER`] and the CA of context `root` in kcp's own admin kubeconfig.
#[derive(Debug, Clone)]
struct Credentials {
    token: String,
    ca_data: String,
}

fn read_credentials(path: &Path) -> Result<Credentials> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let named = |list: &str, name: &str, field: &str| -> Option<serde_yaml::Value> {
        doc.get(list)?
            .as_sequence()?
            .iter()
            .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(name))?
            .get(field)
            .cloned()
    };
    let context = named("contexts", "root", "context")
        .ok_or_else(|| anyhow!("no context 'root' in {}", path.display()))?;
    let field = |key: &str| context.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let cluster = field("cluster")
        .ok_or_else(|| anyhow!("context 'root' in {} lacks a cluster", path.display()))?;
    let user = ADMIN_USER;
    let token = named("users", user, "user")
        .and_then(|u| u.get("token").and_then(|t| t.as_str()).map(str::to_owned))
        .ok_or_else(|| anyhow!("user {user} in {} has no token", path.display()))?;
    let ca_data = named("clusters", &cluster, "cluster")
        .and_then(|c| {
            c.get("certificate-authority-data")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            anyhow!(
                "cluster {cluster} in {} has no certificate-authority-data",
                path.display()
            )
        })?;
    Ok(Credentials { token, ca_data })
}

/// `root:a:b` -> `["root", "root:a", "root:a:b"]`, validating each name.
pub fn workspace_levels(path: &str) -> Result<Vec<String>> {
    let mut parts = path.split(':');
    if parts.next() != Some("root") {
        bail!("workspace path {path:?} must start with 'root' (e.g. root:tmc)");
    }
    let mut levels = vec!["root".to_owned()];
    for part in parts {
        let valid = !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-');
        if !valid {
            bail!(
                "workspace path {path:?}: {part:?} is not a valid workspace name (lowercase letters, digits, '-')"
            );
        }
        let parent = levels.last().cloned().unwrap_or_default();
        levels.push(format!("{parent}:{part}"));
    }
    Ok(levels)
}

fn crd_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Extra `kcp start` flags from `$TMC_TESTBED_KCP_ARGS`, split on white space: for looking into a run (for
/// example `--audit-log-path=... --audit-policy-file=...`), never set by the tests themselves.
fn extra_args() -> Vec<String> {
    std::env::var(KCP_ARGS_ENV)
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_levels_walk_down_from_root() {
        assert_eq!(workspace_levels("root").expect("root"), ["root"]);
        assert_eq!(
            workspace_levels("root:tmc:a").expect("nested"),
            ["root", "root:tmc", "root:tmc:a"]
        );
        assert!(workspace_levels("tmc").is_err());
        assert!(workspace_levels("root::x").is_err());
        assert!(workspace_levels("root:Bad").is_err());
    }

    #[test]
    fn embedded_crd_is_the_apps_v1_deployment() {
        let crd: CustomResourceDefinition = serde_yaml::from_str(DEPLOYMENTS_CRD).expect("parse");
        assert_eq!(crd.metadata.name.as_deref(), Some("deployments.apps"));
        assert_eq!(crd.spec.group, "apps");
        assert!(
            crd.spec
                .versions
                .iter()
                .any(|v| v.name == "v1" && v.served && v.storage)
        );
    }

    #[test]
    fn credentials_come_from_the_root_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.kubeconfig");
        std::fs::write(
            &path,
            "clusters:\n- name: root\n  cluster: {server: 'https://x/clusters/root', certificate-authority-data: Q0E=}\n\
             users:\n- name: kcp-admin\n  user: {token: volatile}\n- name: shard-admin\n  user: {token: t0k}\n\
             contexts:\n- name: root\n  context: {cluster: root, user: kcp-admin}\n",
        )
        .expect("write");
        let creds = read_credentials(&path).expect("creds");
        assert_eq!(
            (creds.token.as_str(), creds.ca_data.as_str()),
            ("t0k", "Q0E=")
        );
        assert!(read_credentials(&dir.path().join("missing")).is_err());
    }
}
