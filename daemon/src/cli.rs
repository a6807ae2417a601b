//! The `tmcd` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tmc_syncer::process::LogFormat;

/// tmcd: transparent multi-cluster for Kubernetes.
///
/// Deploy workloads to ONE kcp workspace; tmcd places them on physical
/// clusters with WebAssembly policies, syncs the copies and brings status back.
#[derive(Debug, Parser)]
#[command(
    name = "tmcd",
    version,
    after_help = "Examples:\n  \
        tmcd --config tmc.toml                   run the daemon (same as `tmcd run`)\n  \
        tmcd check-config --config tmc.toml      check a configuration file and exit\n  \
        tmcd crds > crds.yaml                    print the CRDs (kubectl apply -f crds.yaml)\n  \
        tmcd status                              targets, policies and placements of a running tmcd\n  \
        tmcd explain deployment/demo/web         why a workload runs where it runs\n  \
        tmcd syncer logs --cluster west          recent log lines of west's syncer\n  \
        tmcd syncer resync --cluster west        re-queue every workload placed on west\n  \
        tmcd verify --config tmc.toml            check connectivity to the control plane and each cluster\n  \
        tmcd policy check target/policies/location-affinity.wasm       validate a policy module\n  \
        tmcd policy eval M.wasm --workload web.yaml --targets t.yaml   dry-run a policy on files\n  \
        tmcd policy diff new/spread.wasm --config tmc.toml            what a new policy would move\n  \
        tmcd policy list                         the running tmcd's active policy generation\n\n\
        Admin API: --admin-token-file FILE (default: admin.token_file of --config), --admin-ca-file CA.pem for https.\n\
        Logs: RUST_LOG=tmc_daemon=debug,info tmcd --config tmc.toml --log-format json"
)]
pub struct Cli {
    /// Configuration file (when no subcommand is given: run with it).
    #[arg(
        long,
        short,
        global = true,
        env = "TMC_CONFIG",
        default_value = "tmc.toml"
    )]
    pub config: PathBuf,
    /// Log format, overriding `log_format` of the file.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Bearer token file the commands present to the admin API (default:
    /// admin.token_file of --config).
    #[arg(long, global = true, env = "TMC_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// PEM CA certificates an https:// admin URL is checked against.
    #[arg(long, global = true, env = "TMC_ADMIN_CA_FILE")]
    pub admin_ca_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run,
    /// Print the CRD manifests generated from the API types.
    #[command(
        after_help = "Examples:\n  tmcd crds | kubectl apply -f -\n  tmcd crds --split config/crds   (regenerate the committed copies)"
    )]
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        split: Option<PathBuf>,
    },
    /// Check a configuration file: syntax, values, names and files; exit non-zero with FILE:LINE:COLUMN.
    #[command(after_help = "Example:\n  tmcd check-config --config tmc.toml")]
    CheckConfig,
    /// Show targets, policies and placements of a running tmcd.
    #[command(
        after_help = "Examples:\n  tmcd status\n  tmcd status --admin http://127.0.0.1:9470 --json"
    )]
    Status {
        /// Admin address of the running tmcd (default: admin.address of --config, else 127.0.0.1:9470).
        #[arg(long, default_value = DEFAULT_ADMIN)]
        admin: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Why a workload runs where it runs: placement, policy, candidate targets, decision, copies.
    ///
    /// Asks the running tmcd, which decides the workload again exactly as its
    /// controller does (same placement, policies, targets and settings,
    /// writing nothing) and answers: the ClusterWorkloadPlacement that
    /// governs it; its policy and transformations with their digest and the
    /// policy generation; every SyncTarget kept or dropped and why
    /// (chosen, not chosen by the policy, not Ready, unschedulable, location
    /// mismatch, evicting, grace period over); the decision (targets,
    /// replicas, label and annotation edits) and whether the workload records
    /// it yet; and each target's copy as its syncer reports it
    /// (`status.workload.kcp.io/<target>`).
    #[command(after_help = "Examples:\n  \
        tmcd explain deployment/demo/web\n  \
        tmcd explain deployments.apps/demo/web -o json | jq '.targets[] | {name, verdict, reason}'\n  \
        tmcd explain configmap/demo/settings --admin http://127.0.0.1:9470\n  \
        tmcd explain deployment/default/web --workspace 2mgzysaur6gqd0xz   (export mode)\n\n\
        VERDICT is chosen, candidate (kept, not chosen) or dropped; WHY says why.\n\
        FITS is the capacity the policy was given (replicas of this workload that fit there).\n\
        RECORDED is what the workload records (Sync, removing), COPY what the target's syncer reports.")]
    Explain {
        /// The workload: KIND/NAMESPACE/NAME, the kind as `Deployment`, `deployments` or `deployments.apps`.
        workload: String,
        /// In export mode (control_plane.export), the logical cluster of the workload's workspace, as `tmcd
        /// status` prints it before `|` (`kubectl get workspace NAME -o jsonpath='{.spec.cluster}'` in the
        /// parent workspace).
        #[arg(long, value_name = "LOGICAL_CLUSTER")]
        workspace: Option<String>,
        /// Admin address of the running tmcd (default: admin.address of --config, else 127.0.0.1:9470).
        #[arg(long, default_value = DEFAULT_ADMIN)]
        admin: String,
        /// Output: a table for people, or the admin API's JSON.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Inspect or drive the syncer of one cluster.
    #[command(subcommand)]
    Syncer(SyncerCommand),
    /// Check connectivity to the control plane and each configured cluster.
    #[command(after_help = "Example:\n  tmcd verify --config tmc.toml")]
    Verify,
    /// Evaluate or check a policy module offline, or list the running tmcd's policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print the shell completion script for SHELL.
    #[command(after_help = "Examples:\n  \
        tmcd completions bash > /etc/bash_completion.d/tmcd\n  \
        tmcd completions zsh > \"${fpath[1]}/_tmcd\"")]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    #[command(after_help = "Example:\n  tmcd man > /usr/local/share/man/man1/tmcd.1")]
    Man,
}

/// Output format of a report command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON, as the admin API serves it.
    Json,
}

/// The default of `--admin` when neither the flag nor `--config` gives one.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9470";

impl Cli {
    /// Parses the command line. An `--admin` the user left out comes from
    /// `admin.address` of the `--config` file when that file has one (a
    /// wildcard address is reached on loopback), else [`DEFAULT_ADMIN`].
    pub fn parse_with_config_defaults() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let mut leaf = &matches;
        while let Some((_, sub)) = leaf.subcommand() {
            leaf = sub;
        }
        // `try_get_raw` first: `value_source` panics on an id the subcommand does not define.
        let defaulted = leaf.try_get_raw("admin").is_ok()
            && leaf.value_source("admin") == Some(clap::parser::ValueSource::DefaultValue);
        if defaulted && let Some(url) = admin_url_of(&cli.config) {
            cli.set_admin(url);
        }
        if cli.admin_token_file.is_none() {
            cli.admin_token_file = admin_file_of(&cli.config, "token_file");
        }
        cli
    }

    /// What the commands present to the admin API.
    pub fn admin_credentials(&self) -> crate::admin::client::Credentials {
        crate::admin::client::Credentials {
            token_file: self.admin_token_file.clone(),
            ca_file: self.admin_ca_file.clone(),
        }
    }

    fn set_admin(&mut self, url: String) {
        match &mut self.command {
            Some(Command::Status { admin, .. })
            | Some(Command::Syncer(
                SyncerCommand::Logs { admin, .. } | SyncerCommand::Resync { admin, .. },
            ))
            | Some(Command::Explain { admin, .. })
            | Some(Command::Policy {
                command: PolicyCommand::List { admin, .. },
            }) => *admin = url,
            _ => {}
        }
    }
}

/// `http(s)://<admin.address>` of the config file at `path`, if it exists
/// and names one (`https` when it sets `admin.tls_cert_file`); `0.0.0.0`
/// and `[::]` become loopback.
fn admin_url_of(path: &std::path::Path) -> Option<String> {
    let admin = admin_table(path)?;
    let address: std::net::SocketAddr = admin.get("address")?.as_str()?.parse().ok()?;
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let scheme = if admin.contains_key("tls_cert_file") {
        "https"
    } else {
        "http"
    };
    Some(format!(
        "{scheme}://{}",
        std::net::SocketAddr::new(ip, address.port())
    ))
}

/// The file `[admin].<key>` of the config file at `path`, resolved against
/// the file's directory.
fn admin_file_of(path: &std::path::Path, key: &str) -> Option<PathBuf> {
    let file = PathBuf::from(admin_table(path)?.get(key)?.as_str()?);
    Some(match path.parent() {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file,
    })
}

fn admin_table(path: &std::path::Path) -> Option<toml::Table> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut doc: toml::Table = text.parse().ok()?;
    match doc.remove("admin")? {
        toml::Value::Table(admin) => Some(admin),
        _ => None,
    }
}

/// `tmcd policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Dry-run a module on a workload file and a targets file; print the decision and the reason.
    ///
    /// The workload is a Kubernetes object (YAML or JSON, e.g. a Deployment);
    /// the targets a YAML list (or `kind: List`) of SyncTargets
    /// (workload.kcp.io/v1alpha1), Ready when their `Ready` condition is
    /// "True"; the placement a ClusterWorkloadPlacement whose location
    /// selectors, preferences and policy settings are used. The decision is
    /// made by tmcd's own step: settings checked first, the decision checked
    /// against the rules, and the decision the workload records (its
    /// `state.workload.kcp.io/*` labels) taken into account. A transformation
    /// module runs once per candidate target (or only `--target`), as if the
    /// whole workload were placed there, and prints its edits. Exits 1 with
    /// the policy's error when it fails.
    #[command(after_help = "Examples:\n  \
        tmcd policy eval target/policies/location-affinity.wasm --workload web.yaml --targets targets.yaml\n  \
        tmcd policy eval target/policies/location-affinity.wasm --workload web.yaml --targets targets.yaml \\\n      \
        --placement eu-only.yaml --settings '{\"mode\":\"preferred\"}' --json\n  \
        tmcd policy eval target/policies/label-stamper.wasm --workload web.yaml --targets targets.yaml --target west")]
    Eval {
        /// The policy module (.wasm).
        module: PathBuf,
        /// The workload: a Kubernetes object file (YAML or JSON).
        #[arg(long)]
        workload: PathBuf,
        /// The targets: a YAML list or `kind: List` of SyncTargets.
        #[arg(long)]
        targets: PathBuf,
        /// A ClusterWorkloadPlacement file (selectors, preferences, settings).
        #[arg(long)]
        placement: Option<PathBuf>,
        /// Policy settings as JSON, overriding the placement's.
        #[arg(long, conflicts_with = "settings_file")]
        settings: Option<String>,
        /// Policy settings from a JSON or YAML file.
        #[arg(long)]
        settings_file: Option<PathBuf>,
        /// Transformation modules: only this target.
        #[arg(long)]
        target: Option<String>,
        /// Treat every target as Ready, whatever its conditions say.
        #[arg(long)]
        all_ready: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Compile and validate a module like a hot reload does (exports, ABI version, settings, test vectors).
    #[command(after_help = "Examples:\n  \
        tmcd policy check target/policies/location-affinity.wasm\n  \
        tmcd policy check target/policies/location-affinity.wasm --settings '{\"mode\":\"required\"}'")]
    Check {
        /// The policy module (.wasm).
        module: PathBuf,
        /// Also ask the module whether these settings (JSON) are valid.
        #[arg(long)]
        settings: Option<String>,
    },
    /// Shadow-evaluate a candidate module on the workspace's live workloads; print what would move.
    ///
    /// The candidate stands in for the policy of the same name (its file stem,
    /// or `--as`) beside the other modules of the configured policy directory.
    /// For every workload whose ClusterWorkloadPlacement uses that policy, it
    /// runs the placement exactly as tmcd would and compares the answer with
    /// the decision recorded on the workload: CHANGE is `moves` (other
    /// targets), `replicas`, `edits` (labels or annotations), or `FAILS` (tmcd
    /// would refuse the answer and keep the last decision). Nothing is written
    /// to the workspace or the clusters.
    #[command(after_help = "Examples:
          tmcd policy diff target/policies/active-passive.wasm --as replica-spread --config tmc.toml
          tmcd policy diff new/replica-spread.wasm --all --json
          tmcd policy diff new/replica-spread.wasm --exit-code && cp new/replica-spread.wasm policies/   (deploy only if nothing moves)")]
    Diff {
        /// The candidate module (.wasm).
        module: PathBuf,
        /// The policy it replaces (default: the module's file stem).
        #[arg(long = "as", value_name = "POLICY")]
        as_name: Option<String>,
        /// Also list the workloads whose decision stays the same.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Exit 1 when any decision would change or fail (like `git diff --exit-code`).
        #[arg(long)]
        exit_code: bool,
    },
    /// The running tmcd's active policy generation: name, kind, digest, status, last error.
    #[command(
        after_help = "Examples:\n  tmcd policy list\n  tmcd policy list --admin http://127.0.0.1:9470 --json"
    )]
    List {
        /// Admin address of the running tmcd (default: admin.address of --config, else 127.0.0.1:9470).
        #[arg(long, default_value = DEFAULT_ADMIN)]
        admin: String,
        /// Print the raw JSON of the policies.
        #[arg(long)]
        json: bool,
    },
}

/// `tmcd syncer ...`.
#[derive(Debug, Subcommand)]
pub enum SyncerCommand {
    /// Recent log lines of a cluster's syncer.
    #[command(after_help = "Example:\n  tmcd syncer logs --cluster west")]
    Logs {
        /// The cluster (SyncTarget name).
        #[arg(long)]
        cluster: String,
        /// Admin address of the running tmcd (default: admin.address of --config, else 127.0.0.1:9470).
        #[arg(long, default_value = DEFAULT_ADMIN)]
        admin: String,
    },
    /// Re-queue every workload placed on a cluster.
    #[command(after_help = "Example:\n  tmcd syncer resync --cluster east")]
    Resync {
        /// The cluster (SyncTarget name).
        #[arg(long)]
        cluster: String,
        /// Admin address of the running tmcd (default: admin.address of --config, else 127.0.0.1:9470).
        #[arg(long, default_value = DEFAULT_ADMIN)]
        admin: String,
    },
}
