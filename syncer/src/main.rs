//! `tmc-syncer`: the pull-mode agent. Runs beside a physical cluster, reads
//! the placement decisions recorded on the workspace's objects, and applies
//! them to the cluster. Policies never run here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tmc_syncer::process::{self, LogFormat};
use tmc_syncer::{
    NamespaceMapping, ReplicasPolicy, SourceIdentity, SyncedKind, Syncer, SyncerConfig,
};
use tracing::{info, warn};

/// Pull-mode syncer of tmc: copies the workloads placed on one SyncTarget from a
/// kcp workspace (upstream) to a physical cluster (downstream), corrects drift,
/// reports each copy's status back, and heartbeats into the SyncTarget.
///
/// It only deletes a copy on positive evidence (tmcd's deletion annotation, an
/// upstream delete, or a successful lookup that finds the upstream object gone),
/// never because a cluster is unreachable, and it never deletes namespaces.
///
/// Example:
///   tmc-syncer --upstream-kubeconfig ws.kubeconfig --downstream-kubeconfig west.kubeconfig \
///     --sync-target west --resources apps/v1/Deployment,v1/ConfigMap
#[derive(Debug, Parser)]
#[command(name = "tmc-syncer", version, verbatim_doc_comment)]
struct Args {
    /// Kubeconfig of the upstream workspace (its server URL should end in /clusters/<workspace path>).
    #[arg(long, env = "TMC_UPSTREAM_KUBECONFIG", value_name = "PATH")]
    upstream_kubeconfig: PathBuf,
    /// Context to use in the upstream kubeconfig (default: its current context).
    #[arg(long, value_name = "NAME")]
    upstream_context: Option<String>,
    /// Kubeconfig of the physical cluster the copies go to.
    #[arg(long, env = "TMC_DOWNSTREAM_KUBECONFIG", value_name = "PATH")]
    downstream_kubeconfig: PathBuf,
    /// Context to use in the downstream kubeconfig (default: its current context).
    #[arg(long, value_name = "NAME")]
    downstream_context: Option<String>,
    /// Name of the SyncTarget this syncer serves (it must exist in the workspace).
    #[arg(long, env = "TMC_SYNC_TARGET", value_name = "NAME")]
    sync_target: String,
    /// Kinds to sync, comma-separated GROUP/VERSION/Kind (VERSION/Kind for the core group).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "apps/v1/Deployment,v1/Service,v1/ConfigMap,v1/Secret"
    )]
    resources: String,
    /// Privilege-bearing kinds (RBAC, CRDs, admission webhooks, ...) and cluster-scoped kinds to sync all
    /// the same, comma-separated GROUP/VERSION/Kind as in --resources. Without it they are refused:
    /// whoever may write them in the workspace would hold that power on this cluster.
    #[arg(long, value_name = "LIST", default_value = "")]
    allow_privileged: String,
    /// Workspace path written to the copies' source-cluster annotation
    /// (default: taken from the upstream server URL's /clusters/<path>, else `default`).
    #[arg(long, value_name = "PATH")]
    workspace_path: Option<String>,
    /// Value of the copies' synced-from label (default: the value tmcd recorded on the SyncTarget,
    /// annotation workload.kcp.io/synced-from; for a SyncTarget without it, the workspace path made
    /// a valid label value, or `tmc` without a workspace). Must equal the recorded value when set.
    #[arg(long, value_name = "VALUE", value_parser = parse_synced_from)]
    synced_from: Option<String>,
    /// Downstream namespace of each upstream namespace: `same`, or `prefix:<p>` for `<p>-<namespace>`.
    #[arg(long, value_name = "MAPPING", default_value = "same")]
    namespace_mapping: NamespaceMapping,
    /// Which copies' replicas the physical cluster owns (tmc then never applies their
    /// spec.replicas after creating them): `autoscaler` (those a HorizontalPodAutoscaler
    /// targets, and workloads annotated workload.kcp.io/replicas-owner=cluster) or `cluster` (every copy).
    /// Must match tmc.toml's [sync] replicas_owner.
    #[arg(long, value_name = "OWNER", default_value = "autoscaler")]
    replicas_owner: ReplicasPolicy,
    /// Seconds between heartbeats into the SyncTarget status.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    heartbeat_interval: u64,
    /// Seconds between reads of the cluster's free capacity (nodes and pods) into the SyncTarget status.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    capacity_interval: u64,
    /// Seconds between full resyncs of every known object.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    resync_interval: u64,
    /// Objects reconciled concurrently.
    #[arg(long, value_name = "N", default_value_t = 4)]
    workers: usize,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Print the shell completion script for SHELL and exit
    /// (e.g. `tmc-syncer --completions bash > /etc/bash_completion.d/tmc-syncer`).
    #[arg(long, value_name = "SHELL", exclusive = true)]
    completions: Option<clap_complete::Shell>,
    /// Print the man page (roff) and exit (e.g. `tmc-syncer --man > tmc-syncer.1`).
    #[arg(long, exclusive = true)]
    man: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Args::command().get_matches();
    if let Some(shell) = matches.get_one::<clap_complete::Shell>("completions") {
        return Ok(process::print_completions(Args::command(), *shell)?);
    }
    if matches.get_flag("man") {
        return Ok(process::print_man(Args::command())?);
    }
    let args = Args::from_arg_matches(&matches)?;
    process::init_logging(
        args.log_format,
        "info",
        tracing_subscriber::layer::Identity::new(),
    );
    let upstream_config = load_config(
        &args.upstream_kubeconfig,
        args.upstream_context.clone(),
        "upstream",
    )
    .await?;
    let upstream_url = upstream_config.cluster_url.to_string();
    let upstream = client(upstream_config, &args.upstream_kubeconfig, "upstream")?;
    let downstream_config = load_config(
        &args.downstream_kubeconfig,
        args.downstream_context.clone(),
        "downstream",
    )
    .await?;
    let downstream = client(downstream_config, &args.downstream_kubeconfig, "downstream")?;

    let recorded = recorded_synced_from(&upstream, &args.sync_target).await;
    let source = source_identity(
        args.workspace_path.as_deref(),
        args.synced_from.as_deref(),
        recorded.as_deref(),
        &upstream_url,
    )?;
    if args.workspace_path.is_none() && workspace_from_url(&upstream_url).is_none() {
        warn!(url = %upstream_url, "the upstream URL names no /clusters/<workspace>; using workspace path `default` and synced-from `tmc` like tmcd (set --workspace-path)");
    }
    let allowed =
        SyncedKind::parse_list(&args.allow_privileged).context("reading --allow-privileged")?;
    let mut kinds = Vec::new();
    for parsed in SyncedKind::parse_list(&args.resources)? {
        let kind = match parsed.discover(&upstream).await {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                warn!(kind = %parsed, "the upstream does not serve this kind (yet); watching it anyway with the guessed plural {}", parsed.plural);
                parsed
            }
            Err(err) => {
                warn!(kind = %parsed, error = %err, "upstream discovery failed; using the guessed plural {}", parsed.plural);
                parsed
            }
        };
        if let Some(why) = kind.needs_allowance()
            && !allowed
                .iter()
                .any(|a| a.group == kind.group && a.kind == kind.kind)
        {
            anyhow::bail!(
                "--resources lists {kind}, which is not synced by default: {why} (fix: remove it from --resources, or add it to --allow-privileged if every workspace user may do that)"
            );
        }
        kinds.push(kind);
    }

    let mut config = SyncerConfig::new(&args.sync_target, upstream, downstream, source);
    config.kinds = kinds;
    config.namespace_mapping = args.namespace_mapping;
    config.replicas_owner = args.replicas_owner;
    config.heartbeat_interval = Duration::from_secs(args.heartbeat_interval.max(1));
    config.capacity_interval = Duration::from_secs(args.capacity_interval);
    config.resync_interval = Duration::from_secs(args.resync_interval.max(1));
    config.workers = args.workers.max(1);
    info!(?config, "starting pull-mode syncer");
    Syncer::new(config).run(process::shutdown_signal()).await
}

async fn load_config(
    path: &PathBuf,
    context: Option<String>,
    side: &str,
) -> anyhow::Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).with_context(|| {
        format!(
            "reading the {side} kubeconfig {} (pass --{side}-kubeconfig PATH)",
            path.display()
        )
    })?;
    let options = KubeConfigOptions {
        context: context.clone(),
        ..KubeConfigOptions::default()
    };
    kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| {
            format!(
                "loading the {side} kubeconfig {} (context {}); check --{side}-context",
                path.display(),
                context.as_deref().unwrap_or("<current>")
            )
        })
}

fn client(
    config: kube::Config,
    path: &std::path::Path,
    side: &str,
) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(config)
        .with_context(|| format!("building the {side} client from {}", path.display()))
}

/// The source identity: the workspace path from the flag or the upstream
/// URL, and the synced-from value from the flag, else the one tmcd recorded on
/// the SyncTarget (`recorded`), else the legacy default of the workspace path
/// ([`SourceIdentity::resolve`], the rule tmcd follows too). A flag that
/// contradicts the recorded value is refused: the agent would orphan every
/// copy of the target.
fn source_identity(
    workspace_path: Option<&str>,
    synced_from: Option<&str>,
    recorded: Option<&str>,
    upstream_url: &str,
) -> anyhow::Result<SourceIdentity> {
    if let (Some(flag), Some(recorded)) = (synced_from, recorded)
        && flag != recorded
    {
        anyhow::bail!(
            "--synced-from {flag:?} contradicts the value tmcd recorded on the SyncTarget ({}: {recorded:?}); the agent would take none of the target's copies for its own (fix: drop --synced-from, or set the same value as tmc.toml's synced_from)",
            tmc_syncer::identity::SYNCED_FROM_ANNOTATION
        );
    }
    let path = workspace_path
        .map(str::to_string)
        .or_else(|| workspace_from_url(upstream_url));
    Ok(SourceIdentity::resolve(
        path.as_deref(),
        synced_from.or(recorded),
    ))
}

/// The synced-from value tmcd recorded on SyncTarget `target` (`None` when
/// it recorded none: a target registered by an older tmcd or by hand). Waits
/// until the SyncTarget exists, so that the agent never starts with an
/// identity it would change on its next start.
async fn recorded_synced_from(upstream: &kube::Client, target: &str) -> Option<String> {
    let api: kube::Api<tmc_api::crd::SyncTarget> = kube::Api::all(upstream.clone());
    loop {
        match api.get_opt(target).await {
            Ok(Some(st)) => {
                return st
                    .metadata
                    .annotations
                    .and_then(|a| a.get(tmc_syncer::identity::SYNCED_FROM_ANNOTATION).cloned());
            }
            Ok(None) => {
                warn!(sync_target = %target, "SyncTarget does not exist yet (tmcd registers it at start); waiting for it");
            }
            Err(err) => {
                warn!(sync_target = %target, error = %err, "cannot read the SyncTarget; retrying");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// `--synced-from`, checked like tmc.toml's `synced_from`.
fn parse_synced_from(value: &str) -> Result<String, String> {
    tmc_syncer::identity::check_synced_from(value).map(|()| value.to_string())
}

/// The workspace path in a kcp URL such as `https://kcp:6443/clusters/root:org:team`.
fn workspace_from_url(url: &str) -> Option<String> {
    let rest = url.split_once("/clusters/")?.1;
    let path = rest.split(['/', '?']).next()?.trim();
    (!path.is_empty()).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn workspace_path_comes_from_the_kcp_url() {
        assert_eq!(
            workspace_from_url("https://kcp:6443/clusters/root:org:team").as_deref(),
            Some("root:org:team")
        );
        assert_eq!(
            workspace_from_url("https://kcp:6443/clusters/root:a/").as_deref(),
            Some("root:a")
        );
        assert_eq!(workspace_from_url("https://west:6443/"), None);
    }

    #[test]
    fn the_recorded_identity_wins_and_a_contradicting_flag_is_refused() {
        let url = "https://kcp:6443/clusters/root:tmc";
        let legacy = source_identity(None, None, None, url).unwrap();
        assert_eq!(
            (legacy.workspace_path.as_str(), legacy.synced_from.as_str()),
            ("root:tmc", "root-tmc")
        );
        let recorded = source_identity(None, None, Some("root-tmc-0a1b2c3d4e"), url).unwrap();
        assert_eq!(recorded.synced_from, "root-tmc-0a1b2c3d4e");
        let same = source_identity(None, Some("custom"), Some("custom"), url).unwrap();
        assert_eq!(same.synced_from, "custom");
        let err = source_identity(None, Some("custom"), Some("other"), url)
            .unwrap_err()
            .to_string();
        assert!(err.contains("contradicts") && err.contains("fix:"), "{err}");
        assert!(parse_synced_from("root:tmc").is_err());
    }

    #[test]
    fn defaults_parse() {
        let args = Args::try_parse_from([
            "tmc-syncer",
            "--upstream-kubeconfig",
            "u",
            "--downstream-kubeconfig",
            "d",
            "--sync-target",
            "west",
        ])
        .unwrap();
        assert_eq!(
            SyncedKind::parse_list(&args.resources).unwrap(),
            SyncedKind::defaults()
        );
        assert_eq!(args.namespace_mapping, NamespaceMapping::Same);
        let bad = Args::try_parse_from([
            "tmc-syncer",
            "--upstream-kubeconfig",
            "u",
            "--downstream-kubeconfig",
            "d",
            "--sync-target",
            "west",
            "--namespace-mapping",
            "hash",
        ]);
        assert!(bad.is_err());
    }
}
