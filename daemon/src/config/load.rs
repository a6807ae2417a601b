//! Reading `tmc.toml` and locating its errors as `FILE:LINE:COLUMN`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::Config;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "{path}: cannot read the configuration file: {source} (fix: pass an existing file with --config)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A syntax, type or semantic error at a place in the file.
    #[error("{path}:{line}:{column}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads, parses and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(path, &text, base_dir)
}

/// Parses and checks `text` (the content of `path`); relative paths resolve against `base_dir`.
pub fn parse(path: &Path, text: &str, base_dir: PathBuf) -> Result<Config, ConfigError> {
    let mut config: Config = toml::from_str(text).map_err(|err| {
        let span = err.span().unwrap_or(0..0);
        at(path, text, span, err.message().trim().to_string())
    })?;
    config.base_dir = base_dir;
    super::validate::check(&config).map_err(|(span, message)| at(path, text, span, message))?;
    Ok(config)
}

/// An error at byte range `span` of `text`.
fn at(path: &Path, text: &str, span: Range<usize>, message: String) -> ConfigError {
    let (line, column) = line_column(text, span.start);
    ConfigError::At {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        match parse(Path::new("tmc.toml"), text, dir.path().to_path_buf()) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn unknown_key_is_located() {
        let e = err("log_format = \"text\"\n\n[admin]\nadress = \"127.0.0.1:1\"\n");
        assert!(e.starts_with("tmc.toml:4:1: "), "{e}");
        assert!(e.contains("adress") && e.contains("address"), "{e}");
    }

    #[test]
    fn bad_value_is_located() {
        let e = err("log_format = \"xml\"\n");
        assert!(e.starts_with("tmc.toml:1:14: "), "{e}");
        assert!(e.contains("text") && e.contains("json"), "{e}");
    }

    #[test]
    fn duplicate_cluster_points_at_second() {
        let e = err(
            "[[clusters]]\nname = \"west\"\nmode = \"pull\"\n\n[[clusters]]\nname = \"west\"\nmode = \"pull\"\n",
        );
        assert!(e.starts_with("tmc.toml:6:8: "), "{e}");
        assert!(e.contains("duplicate cluster name \"west\""), "{e}");
    }

    #[test]
    fn invalid_cluster_name_is_refused() {
        let e = err("[[clusters]]\nname = \"West_1\"\nmode = \"pull\"\n");
        assert!(e.starts_with("tmc.toml:2:8: "), "{e}");
        assert!(e.contains("DNS label"), "{e}");
    }

    #[test]
    fn invalid_export_name_is_located_with_the_fix() {
        let e = err("[control_plane]\nworkspace = \"root:tmc\"\nexport = \"root:tmc:tmc\"\n");
        assert!(e.starts_with("tmc.toml:3:10: "), "{e}");
        assert!(
            e.contains("not an APIExport name") && e.contains("fix:"),
            "{e}"
        );
    }

    #[test]
    fn export_mode_refuses_pull_clusters_and_a_prefix_mapping() {
        let e = err(
            "[control_plane]\nworkspace = \"root:tmc\"\nexport = \"tmc\"\n\n[[clusters]]\nname = \"west\"\nmode = \"pull\"\n",
        );
        assert!(e.starts_with("tmc.toml:6:8: "), "{e}");
        assert!(e.contains("pull mode") && e.contains("fix:"), "{e}");
        let e = err(
            "[control_plane]\nworkspace = \"root:tmc\"\nexport = \"tmc\"\n\n[sync]\nnamespace_mapping = \"prefixed\"\n",
        );
        assert!(e.starts_with("tmc.toml:3:10: "), "{e}");
        assert!(e.contains("namespace_mapping") && e.contains("fix:"), "{e}");
    }

    #[test]
    fn virtual_workspace_server_needs_export_mode_and_a_bare_server() {
        let ok = "[control_plane]\nworkspace = \"root:tmc\"\nexport = \"tmc\"\nvirtual_workspace_server = \"https://front.example.com:6443\"\n";
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        let config = parse(Path::new("tmc.toml"), ok, dir.path().to_path_buf()).expect("valid");
        assert_eq!(
            config
                .control_plane
                .virtual_workspace_server
                .map(|s| s.into_inner()),
            Some("https://front.example.com:6443".to_owned())
        );
        let e = err(
            "[control_plane]\nworkspace = \"root:tmc\"\nvirtual_workspace_server = \"https://front.example.com\"\n",
        );
        assert!(e.starts_with("tmc.toml:3:28: "), "{e}");
        assert!(
            e.contains("control_plane.export") && e.contains("fix:"),
            "{e}"
        );
        for (server, why) in [
            ("front.example.com", "needs a scheme"),
            ("ftp://front.example.com", "needs a scheme"),
            (
                "https://front.example.com/services/apiexport",
                "path or query",
            ),
            ("https://front.example.com?x=1", "path or query"),
            ("https://front example", "is not a URL"),
        ] {
            let e = err(&format!(
                "[control_plane]\nworkspace = \"root:tmc\"\nexport = \"tmc\"\nvirtual_workspace_server = {server:?}\n"
            ));
            assert!(e.starts_with("tmc.toml:4:28: "), "{server}: {e}");
            assert!(e.contains(why) && e.contains("fix:"), "{server}: {e}");
        }
    }

    #[test]
    fn invalid_synced_from_is_located_with_the_fix() {
        let e = err("log_format = \"text\"\nsynced_from = \"root:tmc\"\n");
        assert!(e.starts_with("tmc.toml:2:15: "), "{e}");
        assert!(e.contains("':'") && e.contains("fix:"), "{e}");
        let e = err(&format!("synced_from = \"{}\"\n", "x".repeat(64)));
        assert!(
            e.starts_with("tmc.toml:1:15: ") && e.contains("64 characters"),
            "{e}"
        );
        let e = err("synced_from = \"\"\n");
        assert!(e.contains("not a valid label value"), "{e}");
    }

    #[test]
    fn unknown_replicas_owner_names_the_choices() {
        let e = err("[sync]\nreplicas_owner = \"hpa\"\n");
        assert!(e.starts_with("tmc.toml:2:18: "), "{e}");
        assert!(e.contains("autoscaler") && e.contains("cluster"), "{e}");
    }

    #[test]
    fn missing_kubeconfig_is_refused() {
        let e = err("[[clusters]]\nname = \"west\"\nkubeconfig = \"nope.kubeconfig\"\n");
        assert!(e.starts_with("tmc.toml:3:14: "), "{e}");
        assert!(e.contains("nope.kubeconfig"), "{e}");
    }

    #[test]
    fn push_cluster_needs_kubeconfig() {
        let e = err("[[clusters]]\nname = \"west\"\n");
        assert!(e.starts_with("tmc.toml:2:8: "), "{e}");
        assert!(e.contains("kubeconfig"), "{e}");
    }

    #[test]
    fn unknown_resource_form_is_refused() {
        let e = err("[sync]\nresources = [\"Deployment\"]\n");
        assert!(e.starts_with("tmc.toml:2:14: "), "{e}");
    }

    #[test]
    fn zero_policy_timeout_is_refused() {
        let e = err("[policies]\ntimeout_ms = 0\n");
        assert!(e.starts_with("tmc.toml:2:14: "), "{e}");
        assert!(
            e.contains("policies.timeout_ms = 0") && e.contains("fix: at least 1"),
            "{e}"
        );
    }

    #[test]
    fn zero_load_timeout_is_refused() {
        let e = err("[policies]\nload_timeout_ms = 0\n");
        assert!(e.starts_with("tmc.toml:2:19: "), "{e}");
        assert!(e.contains("fix: at least 1"), "{e}");
    }

    #[test]
    fn zero_policy_memory_is_refused() {
        let e = err("[policies]\nmax_memory_mib = 0\n");
        assert!(e.starts_with("tmc.toml:2:18: "), "{e}");
        assert!(
            e.contains("max_memory_mib = 0") && e.contains("fix: 1 to 4096"),
            "{e}"
        );
    }

    #[test]
    fn policy_memory_past_4_gib_is_refused() {
        let e = err("[policies]\nmax_memory_mib = 4097\n");
        assert!(e.starts_with("tmc.toml:2:18: "), "{e}");
        assert!(e.contains("fix: 1 to 4096"), "{e}");
    }

    #[test]
    fn heartbeat_threshold_below_the_interval_is_refused() {
        let e = err("[sync]\nheartbeat_interval_seconds = 10\nheartbeat_threshold_seconds = 5\n");
        assert!(e.starts_with("tmc.toml:3:31: "), "{e}");
        assert!(
            e.contains("below heartbeat_interval_seconds = 10") && e.contains("fix: at least 10"),
            "{e}"
        );
        // Against the default interval (10 s) too.
        let e = err("[sync]\nheartbeat_threshold_seconds = 9\n");
        assert!(e.starts_with("tmc.toml:2:31: "), "{e}");
    }

    #[test]
    fn zero_heartbeat_interval_is_located() {
        let e = err("[sync]\nheartbeat_interval_seconds = 0\n");
        assert!(e.starts_with("tmc.toml:2:30: "), "{e}");
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn limits_at_their_minimum_are_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        let config = parse(
            Path::new("tmc.toml"),
            "[sync]\nheartbeat_interval_seconds = 5\nheartbeat_threshold_seconds = 5\n\n[policies]\ntimeout_ms = 1\nload_timeout_ms = 1\nmax_memory_mib = 1\nfuel = 0\n",
            dir.path().to_path_buf(),
        )
        .expect("valid");
        assert_eq!(config.sync.heartbeat_threshold().as_secs(), 5);
        assert_eq!(config.policies.fuel, Some(0));
    }

    #[test]
    fn namespaces_are_never_a_synced_kind() {
        let e = err("[sync]\nresources = [\"deployments.apps\", \"namespaces\"]\n");
        assert!(e.starts_with("tmc.toml:2:34: "), "{e}");
        assert!(e.contains("cannot be synced"), "{e}");
    }

    #[test]
    fn privilege_bearing_resources_are_refused_unless_allowed_by_name() {
        let e = err(
            "[sync]\nresources = [\"deployments.apps\", \"rolebindings.rbac.authorization.k8s.io\"]\n",
        );
        assert!(e.starts_with("tmc.toml:2:34: "), "{e}");
        assert!(
            e.contains("could grant permissions on the physical clusters")
                && e.contains("sync.allow_privileged_resources"),
            "{e}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        let config = parse(
            Path::new("tmc.toml"),
            "[sync]\nresources = [\"rolebindings.rbac.authorization.k8s.io\"]\nallow_privileged_resources = [\"rolebindings.rbac.authorization.k8s.io\"]\n",
            dir.path().to_path_buf(),
        )
        .expect("allowed by name");
        assert!(config.allows_privileged("rolebindings.rbac.authorization.k8s.io"));
        // An allowance for a resource that is not synced is a typo, not a no-op.
        let e = err(
            "[sync]\nallow_privileged_resources = [\"clusterroles.rbac.authorization.k8s.io\"]\n",
        );
        assert!(e.starts_with("tmc.toml:2:31: "), "{e}");
        assert!(e.contains("which sync.resources does not list"), "{e}");
    }

    #[test]
    fn renew_deadline_must_be_shorter_than_the_lease() {
        let e =
            err("[leader_election]\nlease_duration_seconds = 10\nrenew_deadline_seconds = 10\n");
        assert!(e.starts_with("tmc.toml:3:26: "), "{e}");
        assert!(
            e.contains("renew_deadline_seconds = 10") && e.contains("fix: e.g. 6"),
            "{e}"
        );
        let e = err("[leader_election]\nrenew_deadline_seconds = 20\n");
        assert!(e.starts_with("tmc.toml:2:26: "), "{e}");
        assert!(e.contains("lease_duration_seconds = 15"), "{e}");
    }

    #[test]
    fn retry_period_must_be_shorter_than_the_renew_deadline() {
        let e = err("[leader_election]\nrenew_deadline_seconds = 4\nretry_period_seconds = 4\n");
        assert!(e.starts_with("tmc.toml:3:24: "), "{e}");
        assert!(e.contains("shorter than the renew deadline (4 s)"), "{e}");
        // The default retry period (1 s) against a 1 s deadline: pointed at the deadline.
        let e = err("[leader_election]\nrenew_deadline_seconds = 1\n");
        assert!(e.starts_with("tmc.toml:2:26: "), "{e}");
        assert!(e.contains("the default retry period (1 s)"), "{e}");
    }

    #[test]
    fn too_short_lease_is_refused() {
        let e = err("[leader_election]\nlease_duration_seconds = 2\n");
        assert!(e.starts_with("tmc.toml:2:26: "), "{e}");
    }

    #[test]
    fn leader_election_timings_default_from_the_lease_duration() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        let config = parse(
            Path::new("tmc.toml"),
            "[leader_election]\nlease_duration_seconds = 15\n",
            dir.path().to_path_buf(),
        )
        .expect("valid");
        let le = &config.leader_election;
        assert_eq!(le.renew_deadline(), std::time::Duration::from_secs(10));
        assert_eq!(le.retry_period(), std::time::Duration::from_secs(2));
    }

    #[test]
    fn defaults_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        let config = parse(
            Path::new("tmc.toml"),
            "[control_plane]\nworkspace = \"root:tmc\"\n",
            dir.path().to_path_buf(),
        )
        .expect("valid");
        assert_eq!(config.source_identity().synced_from, "root-tmc");
        assert_eq!(config.sync.resources.len(), 4);
        assert_eq!(config.sync.heartbeat_threshold().as_secs(), 30);
        assert_eq!(config.sync.status_hold_max().as_secs(), 30);
        assert_eq!(*config.policies.max_memory_mib.get_ref(), 64);
        assert_eq!(*config.policies.timeout_ms.get_ref(), 100);
        assert_eq!(config.policies.fuel, None, "the host's default applies");
        assert!(config.leader_election.enabled);
        assert!(config.control_plane.install_admission_policy);
        assert!(config.admin.address.get_ref().ip().is_loopback());
        assert!(config.admin.token_file.is_none() && !config.admin.metrics_need_token);
    }

    #[test]
    fn admin_off_loopback_needs_a_token_file() {
        let e = err("[admin]\naddress = \"0.0.0.0:9470\"\n");
        assert!(e.starts_with("tmc.toml:2:11: "), "{e}");
        assert!(
            e.contains("not a loopback address") && e.contains("admin.token_file"),
            "{e}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        std::fs::write(dir.path().join("admin.token"), "s3cret\n").expect("write");
        let config = parse(
            Path::new("tmc.toml"),
            "[admin]\naddress = \"0.0.0.0:9470\"\ntoken_file = \"admin.token\"\n",
            dir.path().to_path_buf(),
        )
        .expect("a token makes it valid");
        assert!(!config.admin.address.get_ref().ip().is_loopback());
        let loopback = parse(
            Path::new("tmc.toml"),
            "[admin]\naddress = \"[::1]:9470\"\n",
            dir.path().to_path_buf(),
        );
        assert!(loopback.is_ok(), "{loopback:?}");
    }

    #[test]
    fn admin_files_must_exist_and_tls_needs_both() {
        let e = err("[admin]\ntoken_file = \"nope.token\"\n");
        assert!(
            e.starts_with("tmc.toml:2:14: ") && e.contains("admin.token_file"),
            "{e}"
        );
        let e = err("[admin]\ntls_cert_file = \"a.crt\"\n");
        assert!(
            e.starts_with("tmc.toml:2:17: ") && e.contains("without admin.tls_key_file"),
            "{e}"
        );
        let e = err("[admin]\ntls_key_file = \"a.key\"\n");
        assert!(e.contains("without admin.tls_cert_file"), "{e}");
        let e = err("[admin]\ntls_cert_file = \"a.crt\"\ntls_key_file = \"a.key\"\n");
        assert!(
            e.starts_with("tmc.toml:2:17: ") && e.contains("admin.tls_cert_file"),
            "{e}"
        );
    }

    #[test]
    fn empty_control_plane_username_is_refused() {
        let e = err("[control_plane]\nusername = \" \"\n");
        assert!(
            e.starts_with("tmc.toml:2:12: ") && e.contains("SelfSubjectReview"),
            "{e}"
        );
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tmc.example.toml");
        let text = std::fs::read_to_string(&path).expect("config/tmc.example.toml exists");
        // The example names kubeconfig files of a demo set-up: check against a
        // directory where they exist.
        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["kcp.kubeconfig", "west.kubeconfig", "east.kubeconfig"] {
            std::fs::write(dir.path().join(file), "").expect("write");
        }
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        let config = parse(&path, &text, dir.path().to_path_buf()).expect("example parses");
        assert_eq!(config.clusters.len(), 2);
        assert_eq!(config.clusters[0].name.get_ref(), "west");
    }
}
