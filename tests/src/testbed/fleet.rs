//! A fleet: many targets on one machine, each a real Kubernetes API endpoint with its own watches.
//!
//! One kube-apiserver per target does not fit on a small machine at 100 targets, so a fleet is a second kcp
//! (beside the control plane's) whose logical clusters stand in for physical clusters: target `fleet-007` is
//! workspace `root:fleet:fleet-007`, reached at `<fleet kcp>/clusters/root:fleet:fleet-007` with a kubeconfig
//! of its own (`<bed dir>/fleet-007.kubeconfig`). Each workspace gets what tmcd's syncers need from a cluster:
//! discovery, namespaces, `apps/v1` Deployments (the Kubernetes CRD, installed per workspace, as for the
//! control plane), server-side apply, label-selected watches, and Leases in `kube-system` (the syncer's claim).
//!
//! Nothing runs the workloads: no kubelets, no kwok, no Deployment controller. A copy has its replicas in
//! `spec` and no `status` (see `docs/testbed.md`, "Fleet").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

use super::binaries::Binaries;
use super::kcp::{self, Kcp};
use super::kcp_snapshot;
use super::kubeconfig::{self, Ca, Entry};
use super::progress;

/// The fleet kcp's workspace under which every target is a child workspace.
pub const FLEET_WORKSPACE: &str = "root:fleet";

/// Namespace every Kubernetes cluster has and a kcp workspace lacks: the syncer's claim Lease lives there.
const KUBE_SYSTEM: &str = "kube-system";

/// How many targets are set up at once (each is a few sequential writes and waits against the fleet kcp).
pub const DEFAULT_CONCURRENCY: usize = 8;

/// `n` target names `fleet-001`, `fleet-002`, ... (zero-padded to at least three digits, so that they sort in
/// index order).
pub fn target_names(n: usize) -> Vec<String> {
    let width = n.to_string().len().max(3);
    (1..=n).map(|i| format!("fleet-{i:0width$}")).collect()
}

/// One target of the fleet: a logical cluster of the fleet kcp.
#[derive(Debug, Clone)]
pub struct FleetTarget {
    /// Target name (also the SyncTarget name tmcd gives it in [`Fleet::clusters_toml`]).
    pub name: String,
    /// Its workspace path, `root:fleet:<name>`.
    pub workspace: String,
    /// Its kubeconfig: one context `<name>`, server `<fleet kcp>/clusters/<workspace>`.
    pub kubeconfig: PathBuf,
}

impl FleetTarget {
    /// An admin client of this target.
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig::client(&self.kubeconfig, None).await
    }
}

/// Where a target is, for tmcd's `[[clusters]]` entry: the SyncTarget's location labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `topology.kubernetes.io/region`.
    pub region: String,
    /// `topology.kubernetes.io/zone`.
    pub zone: String,
}

/// A running fleet: its kcp and its targets.
#[derive(Debug)]
pub struct Fleet {
    kcp: Kcp,
    /// By name; names sort in index order (see [`target_names`]).
    targets: BTreeMap<String, FleetTarget>,
}

impl Fleet {
    /// Starts the fleet kcp with its files in `<bed_dir>/fleet/` (`kcp/`, `kcp.log`, `admin.kubeconfig`),
    /// then sets up every target in `names`, `concurrency` at a time: its workspace, the Deployment CRD, the
    /// `kube-system` namespace, and `<bed_dir>/<name>.kubeconfig`. Prints progress every 10 targets.
    ///
    /// Unless `TMC_TESTBED_KCP_SNAPSHOT=0`, kcp starts from a snapshot that already holds every target
    /// (primed by the first fleet of these names, see [`kcp_snapshot`]), and the set-up only checks them.
    pub async fn start(
        bins: &Binaries,
        bed_dir: &Path,
        names: &[String],
        concurrency: usize,
    ) -> Result<Self> {
        if names.is_empty() {
            bail!("a fleet needs at least one target");
        }
        let dir = bed_dir.join("fleet");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let kcp = if kcp_snapshot::enabled() {
            let snapshot = ensure_snapshot(bins, &dir, names, concurrency).await?;
            Kcp::start_from_snapshot(bins, &dir, FLEET_WORKSPACE, &snapshot).await
        } else {
            Kcp::start(bins, &dir, FLEET_WORKSPACE).await
        }
        .context("starting the fleet kcp")?;
        let targets = set_up_all(&kcp, bed_dir, names, concurrency).await?;
        Ok(Self {
            kcp,
            targets: targets.into_iter().map(|t| (t.name.clone(), t)).collect(),
        })
    }

    /// The fleet's kcp (for faults and measurements: [`Kcp::pause`], [`Kcp::process_mut`], ...).
    pub fn kcp(&self) -> &Kcp {
        &self.kcp
    }

    /// The fleet's kcp, mutable.
    pub fn kcp_mut(&mut self) -> &mut Kcp {
        &mut self.kcp
    }

    /// Every target, in name (= index) order.
    pub fn targets(&self) -> impl Iterator<Item = &FleetTarget> {
        self.targets.values()
    }

    /// Target names, in order.
    pub fn names(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }

    /// A target by name.
    pub fn target(&self, name: &str) -> Option<&FleetTarget> {
        self.targets.get(name)
    }

    /// `[[clusters]]` entries of a `tmc.toml` with every target in push mode, located by `locate(index, name)`
    /// (index from 0 in name order).
    pub fn clusters_toml(&self, locate: impl Fn(usize, &str) -> Location) -> String {
        clusters_toml(self.targets.values(), locate)
    }
}

/// Sets up every target of `names` in `kcp` (see [`Fleet::start`]), writing their kubeconfigs into
/// `kubeconfig_dir`.
async fn set_up_all(
    kcp: &Kcp,
    kubeconfig_dir: &Path,
    names: &[String],
    concurrency: usize,
) -> Result<Vec<FleetTarget>> {
    let started = Instant::now();
    let (base, ca, token) = workspace_credentials(kcp.kubeconfig_path(), FLEET_WORKSPACE)?;
    let parent = kcp.owner_client(FLEET_WORKSPACE).await?;
    let total = names.len();
    let done = AtomicUsize::new(0);
    futures::stream::iter(names.iter().map(|name| {
        let target = FleetTarget {
            name: name.clone(),
            workspace: format!("{FLEET_WORKSPACE}:{name}"),
            kubeconfig: kubeconfig_dir.join(format!("{name}.kubeconfig")),
        };
        let (parent, base, ca, token, done) = (&parent, &base, &ca, &token, &done);
        async move {
            kubeconfig::write(
                &target.kubeconfig,
                &[Entry {
                    name: target.name.clone(),
                    server: format!("{base}/clusters/{}", target.workspace),
                    ca: Ca::Data(ca.clone()),
                    token: token.clone(),
                }],
                &target.name,
            )?;
            set_up(parent, &target)
                .await
                .with_context(|| format!("setting up fleet target {}", target.name))?;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 10 == 0 || n == total {
                progress(&format!(
                    "fleet: {n}/{total} targets ready ({:.1} s)",
                    started.elapsed().as_secs_f64()
                ));
            }
            Ok::<_, anyhow::Error>(target)
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await
    .map_err(|e| {
        anyhow!(
            "{e:#}\nlast lines of {}:\n{}",
            kcp.log().display(),
            super::process::tail(kcp.log(), 30)
        )
    })
}

/// Returns the snapshot of a fleet kcp holding the targets `names`, priming it first if missing (under a file
/// lock, so concurrent beds wait instead of priming twice). Priming runs in `<fleet_dir>/snapshot-priming/`.
async fn ensure_snapshot(
    bins: &Binaries,
    fleet_dir: &Path,
    names: &[String],
    concurrency: usize,
) -> Result<PathBuf> {
    let mut h = DefaultHasher::new();
    names.hash(&mut h);
    let key = format!(
        "{FLEET_WORKSPACE}-{}-{:08x}",
        names.len(),
        h.finish() as u32
    );
    let dir = kcp_snapshot::snapshot_dir(&bins.path("kcp"), &key)?;
    let _lock = kcp_snapshot::lock(&dir).await?;
    if dir.is_dir() {
        return Ok(dir);
    }
    progress(&format!(
        "priming fleet snapshot {} ({} targets, once per kcp binary and target list)",
        dir.display(),
        names.len()
    ));
    let scratch = fleet_dir.join("snapshot-priming");
    // kcp's own snapshot, primed first on a fresh machine, logs into this directory.
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut kcp = Kcp::start(bins, &scratch, FLEET_WORKSPACE).await?;
    set_up_all(&kcp, &scratch, names, concurrency)
        .await
        .context("priming the fleet snapshot")?;
    kcp.stop().await;
    let staged = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::rename(scratch.join("kcp"), &staged)
        .and_then(|()| std::fs::rename(&staged, &dir))
        .with_context(|| format!("moving the fleet snapshot to {}", dir.display()))?;
    for name in names {
        // Their server URL names the priming kcp's port, which is gone.
        let _ = std::fs::remove_file(scratch.join(format!("{name}.kubeconfig")));
    }
    progress("fleet snapshot primed");
    Ok(dir)
}

/// Creates the target's workspace, installs the Deployment CRD in it and makes sure `kube-system` exists.
async fn set_up(parent: &kube::Client, target: &FleetTarget) -> Result<()> {
    let client = target.client().await?;
    kcp::create_workspace(parent, &client, &target.workspace).await?;
    kcp::install_kube_crds(client.clone(), &target.workspace).await?;
    let namespaces: Api<Namespace> = Api::all(client);
    let body: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": KUBE_SYSTEM}}))
            .context("building namespace kube-system")?;
    match namespaces.create(&PostParams::default(), &body).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e)
            .with_context(|| format!("creating namespace {KUBE_SYSTEM} in {}", target.workspace)),
    }
}

/// Server base URL (without the `/clusters/...` path), CA data and token of context `context` in `path`, a
/// kubeconfig whose context, cluster and user share a name (as [`kubeconfig::write`] writes them).
fn workspace_credentials(path: &Path, context: &str) -> Result<(String, String, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let named = |list: &str, field: &str| -> Option<serde_yaml::Value> {
        doc.get(list)?
            .as_sequence()?
            .iter()
            .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(context))?
            .get(field)
            .cloned()
    };
    let text_of = |v: Option<serde_yaml::Value>, key: &str| {
        v.as_ref()
            .and_then(|v| v.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("context {context:?} in {} has no {key}", path.display()))
    };
    let server = text_of(named("clusters", "cluster"), "server")?;
    let ca = text_of(named("clusters", "cluster"), "certificate-authority-data")?;
    let token = text_of(named("users", "user"), "token")?;
    let base = server
        .split_once("/clusters/")
        .map_or(server.as_str(), |(base, _)| base)
        .to_owned();
    Ok((base, ca, token))
}

/// `[[clusters]]` entries for `targets` (see [`Fleet::clusters_toml`]).
pub fn clusters_toml<'a>(
    targets: impl IntoIterator<Item = &'a FleetTarget>,
    locate: impl Fn(usize, &str) -> Location,
) -> String {
    let mut out = String::new();
    for (i, t) in targets.into_iter().enumerate() {
        let Location { region, zone } = locate(i, &t.name);
        let _ = write!(
            out,
            "[[clusters]]\nname = \"{}\"\nkubeconfig = \"{}\"\nregion = \"{region}\"\nzone = \"{zone}\"\nmode = \"push\"\n\n",
            t.name,
            t.kubeconfig.display()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_are_padded_and_sort_in_index_order() {
        assert_eq!(target_names(3), ["fleet-001", "fleet-002", "fleet-003"]);
        let names = target_names(1000);
        assert_eq!(names[0], "fleet-0001");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
    }

    #[test]
    fn credentials_are_read_from_the_workspace_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.kubeconfig");
        kubeconfig::write(
            &path,
            &[Entry {
                name: FLEET_WORKSPACE.into(),
                server: "https://127.0.0.1:9/clusters/root:fleet".into(),
                ca: Ca::Data("Q0E=".into()),
                token: "t0k".into(),
            }],
            FLEET_WORKSPACE,
        )
        .expect("write");
        let (base, ca, token) = workspace_credentials(&path, FLEET_WORKSPACE).expect("credentials");
        assert_eq!(
            (base.as_str(), ca.as_str(), token.as_str()),
            ("https://127.0.0.1:9", "Q0E=", "t0k")
        );
        assert!(workspace_credentials(&path, "root").is_err());
    }

    #[test]
    fn clusters_toml_lists_push_clusters_with_their_location() {
        let targets: Vec<FleetTarget> = target_names(2)
            .into_iter()
            .map(|name| FleetTarget {
                workspace: format!("{FLEET_WORKSPACE}:{name}"),
                kubeconfig: PathBuf::from(format!("/bed/{name}.kubeconfig")),
                name,
            })
            .collect();
        let text = clusters_toml(&targets, |i, name| Location {
            region: format!("r{i}"),
            zone: format!("{name}-a"),
        });
        assert_eq!(
            text,
            "[[clusters]]\nname = \"fleet-001\"\nkubeconfig = \"/bed/fleet-001.kubeconfig\"\n\
             region = \"r0\"\nzone = \"fleet-001-a\"\nmode = \"push\"\n\n\
             [[clusters]]\nname = \"fleet-002\"\nkubeconfig = \"/bed/fleet-002.kubeconfig\"\n\
             region = \"r1\"\nzone = \"fleet-002-a\"\nmode = \"push\"\n\n"
        );
    }
}
