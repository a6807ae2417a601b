//! Semantic checks of a parsed configuration; each failure names the byte
//! range of the offending value and how to fix it.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;

use super::{Admin, Config, LeaderElection, Mode, NamespaceMapping, Policies, Sync};

type Failure = (Range<usize>, String);

/// Checks what the types cannot: names, files, references.
pub fn check(config: &Config) -> Result<(), Failure> {
    let mut seen = HashSet::new();
    for cluster in &config.clusters {
        let name = cluster.name.get_ref();
        if !is_dns_label(name) {
            return Err((
                cluster.name.span(),
                format!(
                    "cluster name {name:?} is not a DNS label (fix: use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit)"
                ),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err((
                cluster.name.span(),
                format!(
                    "duplicate cluster name {name:?} (fix: give each [[clusters]] entry its own name)"
                ),
            ));
        }
        match &cluster.kubeconfig {
            Some(file) => {
                let resolved = config.resolve(file.get_ref());
                if !resolved.is_file() {
                    return Err((
                        file.span(),
                        format!(
                            "kubeconfig {} of cluster {name:?} does not exist (fix: point `kubeconfig` at the cluster's kubeconfig file)",
                            resolved.display()
                        ),
                    ));
                }
            }
            None if cluster.mode == Mode::Push => {
                return Err((
                    cluster.name.span(),
                    format!(
                        "push-mode cluster {name:?} has no kubeconfig (fix: add `kubeconfig = \"...\"` or set `mode = \"pull\"`)"
                    ),
                ));
            }
            None => {}
        }
    }
    if let Some(file) = &config.control_plane.kubeconfig {
        let resolved = config.resolve(file.get_ref());
        if !resolved.is_file() {
            return Err((
                file.span(),
                format!(
                    "control plane kubeconfig {} does not exist (fix: point `control_plane.kubeconfig` at the kcp admin kubeconfig)",
                    resolved.display()
                ),
            ));
        }
    }
    if let Some(value) = &config.synced_from
        && let Err(reason) = tmc_syncer::identity::check_synced_from(value.get_ref())
    {
        return Err((value.span(), reason));
    }
    if let Some(ws) = &config.control_plane.workspace {
        let valid = !ws.get_ref().is_empty()
            && ws.get_ref().split(':').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !valid {
            return Err((
                ws.span(),
                format!(
                    "workspace path {:?} is not valid (fix: use a path such as \"root:tmc\")",
                    ws.get_ref()
                ),
            ));
        }
    }
    if let Some(export) = &config.control_plane.export
        && !is_dns_subdomain(export.get_ref())
    {
        return Err((
            export.span(),
            format!(
                "export {:?} is not an APIExport name (fix: the name of tmc's APIExport in the workspace, e.g. \"tmc\")",
                export.get_ref()
            ),
        ));
    }
    if let Some(export) = &config.control_plane.export {
        check_export(config, export)?;
    }
    if let Some(server) = &config.control_plane.virtual_workspace_server {
        if config.control_plane.export.is_none() {
            return Err((
                server.span(),
                "virtual_workspace_server only applies to the export's virtual workspace (fix: set control_plane.export, or remove virtual_workspace_server)".to_string(),
            ));
        }
        check_server(server.get_ref()).map_err(|reason| (server.span(), reason))?;
    }
    for resource in &config.sync.resources {
        let text = resource.get_ref();
        let (plural, group) = text.split_once('.').unwrap_or((text.as_str(), ""));
        let plural_ok = !plural.is_empty()
            && plural
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let group_ok = group
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
        if !plural_ok || !group_ok {
            return Err((
                resource.span(),
                format!(
                    "resource {text:?} is not of the form `plural.group` (fix: e.g. \"deployments.apps\", or \"configmaps\" for the core group)"
                ),
            ));
        }
        if plural == "namespaces" && group.is_empty() {
            return Err((
                resource.span(),
                "\"namespaces\" cannot be synced: syncers create the namespaces their copies need and never delete one (a synced namespace could be removed with everything in it) (fix: remove it from sync.resources)".to_string(),
            ));
        }
        if let Some(what) = tmc_syncer::kinds::privilege(group, plural)
            && !config.allows_privileged(text)
        {
            return Err((
                resource.span(),
                format!(
                    "sync.resources lists {text}: whoever may write {text} in the workspace could {what} (fix: remove it, or add it to sync.allow_privileged_resources if every workspace user may do that)"
                ),
            ));
        }
    }
    for allowed in &config.sync.allow_privileged_resources {
        if !config
            .sync
            .resources
            .iter()
            .any(|r| r.get_ref() == allowed.get_ref())
        {
            return Err((
                allowed.span(),
                format!(
                    "sync.allow_privileged_resources names {:?}, which sync.resources does not list (fix: list it in sync.resources too, or remove it here)",
                    allowed.get_ref()
                ),
            ));
        }
    }
    check_heartbeat(&config.sync)?;
    check_policy_limits(&config.policies)?;
    let prefix = config.sync.namespace_prefix.get_ref();
    if !is_dns_label(prefix) {
        return Err((
            config.sync.namespace_prefix.span(),
            format!(
                "namespace_prefix {prefix:?} must be a DNS label (fix: e.g. \"tmc\"; namespaces become tmc-<namespace>)"
            ),
        ));
    }
    if !is_dns_label(config.leader_election.lease_name.get_ref()) {
        return Err((
            config.leader_election.lease_name.span(),
            "lease_name must be a DNS label (fix: e.g. \"tmcd\")".to_string(),
        ));
    }
    check_leader_election(&config.leader_election)?;
    check_admin(config, &config.admin)?;
    if let Some(name) = &config.control_plane.username
        && name.get_ref().trim().is_empty()
    {
        return Err((
            name.span(),
            "control_plane.username is empty (fix: tmcd's username on the control plane, e.g. \"system:serviceaccount:tmc-system:tmcd\", or remove it to have tmcd ask with a SelfSubjectReview)".to_string(),
        ));
    }
    let dir = config.resolve(config.policies.directory.get_ref());
    if !dir.is_dir() {
        return Err((
            config.policies.directory.span(),
            format!(
                "policy directory {} does not exist (fix: create it or point `policies.directory` at the directory of .wasm modules)",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// The heartbeat interval is at least 1 s and the threshold not below it.
fn check_heartbeat(sync: &Sync) -> Result<(), Failure> {
    let interval = *sync.heartbeat_interval_seconds.get_ref();
    if interval == 0 {
        return Err((
            sync.heartbeat_interval_seconds.span(),
            "sync.heartbeat_interval_seconds must be at least 1 (fix: e.g. 10)".to_string(),
        ));
    }
    if let Some(threshold) = &sync.heartbeat_threshold_seconds
        && *threshold.get_ref() < interval
    {
        return Err((
            threshold.span(),
            format!(
                "sync.heartbeat_threshold_seconds = {} is below heartbeat_interval_seconds = {interval}: every target would turn not Ready between two heartbeats (fix: at least {interval}, e.g. {}, or remove it for the default of 3 heartbeats)",
                threshold.get_ref(),
                interval.saturating_mul(3)
            ),
        ));
    }
    Ok(())
}

/// The admin endpoint: off loopback only with a bearer token; TLS with a
/// certificate and its key; every named file exists.
fn check_admin(config: &Config, admin: &Admin) -> Result<(), Failure> {
    let address = admin.address.get_ref();
    if !address.ip().is_loopback() && admin.token_file.is_none() {
        return Err((
            admin.address.span(),
            format!(
                "admin.address {address} is not a loopback address, and the admin API off loopback needs a bearer token (fix: set admin.token_file to a file holding a random token, e.g. `head -c 32 /dev/urandom | base64 > admin.token && chmod 600 admin.token`, or bind 127.0.0.1)"
            ),
        ));
    }
    match (&admin.tls_cert_file, &admin.tls_key_file) {
        (Some(cert), None) => {
            return Err((
                cert.span(),
                "admin.tls_cert_file is set without admin.tls_key_file (fix: set both, or neither to serve plain HTTP)".to_string(),
            ));
        }
        (None, Some(key)) => {
            return Err((
                key.span(),
                "admin.tls_key_file is set without admin.tls_cert_file (fix: set both, or neither to serve plain HTTP)".to_string(),
            ));
        }
        _ => {}
    }
    for (key, file) in [
        ("admin.token_file", &admin.token_file),
        ("admin.tls_cert_file", &admin.tls_cert_file),
        ("admin.tls_key_file", &admin.tls_key_file),
    ] {
        if let Some(file) = file {
            let resolved = config.resolve(file.get_ref());
            if !resolved.is_file() {
                return Err((
                    file.span(),
                    format!(
                        "{key} {} does not exist (fix: create it, or point {key} at an existing file)",
                        resolved.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Largest `max_memory_mib`: a wasm32 memory cannot grow past 4 GiB.
const MAX_MEMORY_MIB: u32 = 4096;

/// The sandbox limits of `[policies]` are usable (ABI section 4).
fn check_policy_limits(policies: &Policies) -> Result<(), Failure> {
    let memory = &policies.max_memory_mib;
    if !(1..=MAX_MEMORY_MIB).contains(memory.get_ref()) {
        return Err((
            memory.span(),
            format!(
                "policies.max_memory_mib = {} is out of range: a policy needs memory and a wasm32 memory stops at 4 GiB (fix: 1 to {MAX_MEMORY_MIB}, e.g. 64, the default)",
                memory.get_ref()
            ),
        ));
    }
    for (key, value, example) in [
        (
            "timeout_ms",
            &policies.timeout_ms,
            "100, the default; it is the wall-clock deadline of one evaluation",
        ),
        (
            "load_timeout_ms",
            &policies.load_timeout_ms,
            "10000, the default; it bounds validating one module on load",
        ),
    ] {
        if *value.get_ref() == 0 {
            return Err((
                value.span(),
                format!(
                    "policies.{key} = 0 would fail every policy call (fix: at least 1, e.g. {example})"
                ),
            ));
        }
    }
    Ok(())
}

/// The lease timings: a leader must stop writing (renew deadline) before
/// another replica may take the lease over (lease duration), and retry more
/// than once within the deadline.
fn check_leader_election(le: &LeaderElection) -> Result<(), Failure> {
    let duration = *le.lease_duration_seconds.get_ref();
    if duration < 3 {
        return Err((
            le.lease_duration_seconds.span(),
            format!("lease_duration_seconds = {duration} is too short (fix: at least 3, e.g. 15)"),
        ));
    }
    let deadline = le.renew_deadline();
    if let Some(set) = &le.renew_deadline_seconds
        && (deadline.is_zero() || deadline >= le.lease_duration())
    {
        return Err((
            set.span(),
            format!(
                "renew_deadline_seconds = {} must be at least 1 and shorter than lease_duration_seconds = {duration}, or a leader could still be writing when another replica takes the lease over (fix: e.g. {})",
                set.get_ref(),
                (duration * 2 / 3).max(1)
            ),
        ));
    }
    let retry = le.retry_period();
    if retry.is_zero() || retry >= deadline {
        // Point at the retry period when it is set, else at what made the deadline short.
        let (span, what) = match (&le.retry_period_seconds, &le.renew_deadline_seconds) {
            (Some(set), _) => (
                set.span(),
                format!("retry_period_seconds = {}", set.get_ref()),
            ),
            (None, Some(set)) => (
                set.span(),
                format!("the default retry period ({} s)", retry.as_secs()),
            ),
            (None, None) => (
                le.lease_duration_seconds.span(),
                format!("the default retry period ({} s)", retry.as_secs()),
            ),
        };
        return Err((
            span,
            format!(
                "{what} must be at least 1 s and shorter than the renew deadline ({} s), or a leader could not retry a failed renewal before it (fix: set retry_period_seconds = {} and a renew deadline above it)",
                deadline.as_secs(),
                (deadline.as_secs() / 5).max(1)
            ),
        ));
    }
    Ok(())
}

/// RFC 1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A DNS-1123 subdomain: dot-separated DNS labels, at most 253 characters
/// (the names of most Kubernetes objects).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// A server to reach the virtual workspace through: `http(s)://host[:port]`,
/// nothing after it (the published URL's path is kept).
pub fn check_server(server: &str) -> Result<(), String> {
    let fix = "(fix: the scheme, host and port only, e.g. \"https://kcp.example.com:6443\"; the path of the URL kcp publishes is kept)";
    let uri: http::Uri = server
        .parse()
        .map_err(|e| format!("virtual_workspace_server {server:?} is not a URL: {e} {fix}"))?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "virtual_workspace_server {server:?} needs a scheme (https or http) and a host {fix}"
        ));
    }
    if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") || server.ends_with('?') {
        return Err(format!(
            "virtual_workspace_server {server:?} has a path or query {fix}"
        ));
    }
    Ok(())
}

/// Export mode (`control_plane.export`): every workspace namespace gets its
/// own downstream namespace, and only push syncers read through the export's
/// virtual workspace.
fn check_export(config: &Config, export: &Spanned<String>) -> Result<(), Failure> {
    if config.sync.namespace_mapping != NamespaceMapping::Same {
        return Err((
            export.span(),
            "export mode maps each workspace namespace to a downstream namespace of its own (tmc-<logical cluster>-<namespace>-<hash>), so sync.namespace_mapping = \"prefixed\" cannot apply (fix: remove sync.namespace_mapping, or control_plane.export)".to_string(),
        ));
    }
    if let Some(pull) = config.clusters.iter().find(|c| c.mode == Mode::Pull) {
        return Err((
            pull.name.span(),
            format!(
                "cluster {:?} is in pull mode, and pull agents do not read tenant workspaces through the export yet (fix: mode = \"push\" for it, or remove control_plane.export)",
                pull.name.get_ref()
            ),
        ));
    }
    Ok(())
}
