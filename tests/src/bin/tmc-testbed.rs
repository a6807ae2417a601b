//! `tmc-testbed up`: runs the test bed (kcp + physical clusters) until SIGINT/SIGTERM, for demos and manual use.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kube::config::Kubeconfig;
use tmc_tests::testbed::fleet::Location;
use tmc_tests::testbed::{NodeShape, TestBed, progress};

#[derive(Parser, Debug)]
#[command(
    name = "tmc-testbed",
    about = "Run a test bed of real API servers: kcp + physical clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the bed and run until SIGINT/SIGTERM.
    Up {
        /// Directory for kubeconfigs, logs and data (created; must be empty or absent).
        #[arg(long)]
        dir: PathBuf,
        /// Physical clusters (kube-apiserver, etcd, controllers, kwok), comma separated. Default `west,east`,
        /// or none with `--fleet`.
        #[arg(long, value_delimiter = ',')]
        clusters: Option<Vec<String>>,
        /// Also run a fleet of N targets `fleet-001`, ...: logical clusters of a second kcp, each a Kubernetes
        /// API endpoint serving Deployments, no kubelets (docs/testbed.md, "Fleet").
        #[arg(long, default_value_t = 0)]
        fleet: usize,
        /// Regions of the fleet targets in DIR/fleet-clusters.toml: target i (from 0) is in `r<i mod K>`.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        fleet_regions: u32,
        /// kcp workspace to create; the current context of DIR/admin.kubeconfig points at it.
        #[arg(long, default_value = "root:tmc")]
        workspace: String,
        /// Prefix of the physical clusters' context names in the merged DIR/kubeconfig.
        #[arg(long, default_value = "kind-")]
        context_prefix: String,
        /// kwok nodes per cluster.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// Pods each kwok node holds (its allocatable `pods`).
        #[arg(long, default_value_t = NodeShape::default().pods)]
        pods_per_node: u32,
        /// Also install the apps/v1 Deployment CRD into the workspace.
        #[arg(long)]
        install_kube_crds: bool,
        /// Tenant workspaces `root:teams:<name>`, comma separated, each bound to tmc's APIExport in the
        /// workspace (docs/tenancy.md); their contexts and the export's `tmc-export` are in DIR/tenants.kubeconfig.
        #[arg(long, value_delimiter = ',')]
        tenants: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Up {
            dir,
            clusters,
            fleet,
            fleet_regions,
            workspace,
            context_prefix,
            nodes,
            pods_per_node,
            install_kube_crds,
            tenants,
        } => {
            let clusters = clusters.unwrap_or_else(|| {
                if fleet > 0 {
                    Vec::new()
                } else {
                    vec!["west".into(), "east".into()]
                }
            });
            let bed = TestBed::builder()
                .clusters(clusters)
                .fleet(fleet)
                .workspace(workspace)
                .nodes_per_cluster(nodes)
                .node_shape(NodeShape::pods(pods_per_node))
                .tenants(tenants)
                .dir(&dir)
                .start()
                .await?;
            if install_kube_crds {
                bed.install_kube_crds().await?;
            }
            let merged = bed.dir().join("kubeconfig");
            write_merged(&bed, &merged, &context_prefix, None)?;
            // admin.kubeconfig gets the cluster contexts too, its current context staying the workspace.
            let admin = bed.kcp()?.kubeconfig_path().to_path_buf();
            let kcp_only = Kubeconfig::read_from(&admin)
                .with_context(|| format!("reading {}", admin.display()))?;
            write_merged(&bed, &admin, &context_prefix, Some(kcp_only))?;
            let contexts: Vec<String> = bed
                .cluster_names()
                .iter()
                .map(|c| format!("{context_prefix}{c}"))
                .collect();
            let fleet_line = match bed.fleet() {
                Ok(f) => {
                    let path = bed.dir().join("fleet-clusters.toml");
                    let regions = fleet_regions as usize;
                    let toml = f.clusters_toml(|i, name| Location {
                        region: format!("r{}", i % regions),
                        zone: format!("{name}-a"),
                    });
                    std::fs::write(&path, toml)
                        .with_context(|| format!("writing {}", path.display()))?;
                    format!(
                        " fleet={} fleet-kcp={} fleet-clusters={}",
                        f.names().len(),
                        f.kcp().base_url(),
                        path.display()
                    )
                }
                Err(_) => String::new(),
            };
            let tenants_line = match bed.tenants() {
                Ok(t) => {
                    let path = bed.dir().join("tenants.kubeconfig");
                    t.write_kubeconfig(bed.kcp()?, &path)?;
                    let names: Vec<&str> = t.tenants().map(|t| t.name.as_str()).collect();
                    format!(
                        " tenants={} export-endpoint={} tenants-kubeconfig={}",
                        names.join(","),
                        t.endpoint(),
                        path.display()
                    )
                }
                Err(_) => String::new(),
            };
            println!(
                "READY kcp={} admin-kubeconfig={} kubeconfig={} contexts={}{fleet_line}{tenants_line} dir={}",
                bed.kcp()?.base_url(),
                bed.kcp()?.kubeconfig_path().display(),
                merged.display(),
                contexts.join(","),
                bed.dir().display()
            );
            wait_for_signal().await?;
            progress("signal received, stopping the bed");
            drop(bed);
            Ok(())
        }
    }
}

/// Writes the physical clusters' kubeconfigs into one file with `<prefix><cluster>` contexts, added to `base`
/// (whose current context is kept) or to an empty kubeconfig whose current context is the first cluster.
fn write_merged(bed: &TestBed, path: &Path, prefix: &str, base: Option<Kubeconfig>) -> Result<()> {
    let keep_current = base.is_some();
    let mut merged = base.unwrap_or_default();
    let fleet = bed.fleet().map(|f| f.names()).unwrap_or_default();
    for name in bed.cluster_names().into_iter().chain(fleet) {
        let source = bed.kubeconfig_path(&name)?;
        let mut kc = Kubeconfig::read_from(&source)
            .with_context(|| format!("reading {}", source.display()))?;
        let renamed = format!("{prefix}{name}");
        if merged.contexts.iter().any(|c| c.name == renamed) {
            bail!(
                "context {renamed} already exists in {}; pick another --context-prefix",
                path.display()
            );
        }
        for c in &mut kc.clusters {
            c.name = renamed.clone();
        }
        for u in &mut kc.auth_infos {
            u.name = renamed.clone();
        }
        for ctx in &mut kc.contexts {
            ctx.name = renamed.clone();
            if let Some(c) = ctx.context.as_mut() {
                c.cluster = renamed.clone();
                c.user = Some(renamed.clone());
            }
        }
        merged.clusters.extend(kc.clusters);
        merged.auth_infos.extend(kc.auth_infos);
        merged.contexts.extend(kc.contexts);
    }
    if !keep_current {
        merged.current_context = bed.cluster_names().first().map(|n| format!("{prefix}{n}"));
    }
    merged.api_version = Some("v1".into());
    merged.kind = Some("Config".into());
    let text = serde_yaml::to_string(&merged).context("serializing the merged kubeconfig")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}
