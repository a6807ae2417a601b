//! Where copies come from ([`SourceIdentity`]) and which downstream namespace
//! an upstream namespace maps to ([`NamespaceMapping`]).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use tmc_api::tenancy::{DownstreamNamespace, STORE_SEPARATOR, WorkloadKey, downstream_namespace};

use crate::error::Error;

/// The upstream control plane a syncer copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIdentity {
    /// Workspace path (e.g. `root:org:team`), written to the source-cluster annotation.
    pub workspace_path: String,
    /// The same as a label value (see [`SourceIdentity::new`]), written to the synced-from label.
    pub synced_from: String,
}

/// Annotation on a SyncTarget: the synced-from value its syncer must use,
/// recorded by tmcd when it registers the target, so that a pull agent and
/// tmcd agree and the value survives restarts.
pub const SYNCED_FROM_ANNOTATION: &str = "workload.kcp.io/synced-from";

/// Workspace path of a control plane without a workspace (a plain API server).
pub const PLAIN_WORKSPACE_PATH: &str = "default";
/// Synced-from value of a control plane without a workspace, before tmcd
/// records a unique one.
pub const PLAIN_SYNCED_FROM: &str = "tmc";

impl SourceIdentity {
    /// Identity of `workspace_path`, with `synced_from` derived from it as a
    /// valid label value.
    pub fn new(workspace_path: &str) -> Self {
        Self {
            workspace_path: workspace_path.to_string(),
            synced_from: label_value(workspace_path),
        }
    }

    /// The identity tmcd and `tmc-syncer` use: the workspace path
    /// ([`PLAIN_WORKSPACE_PATH`] without one) and `synced_from` as given, else
    /// the legacy default derived from the path ([`PLAIN_SYNCED_FROM`] without
    /// one). tmcd records a unique value on the SyncTargets of a new install
    /// ([`unique_synced_from`]); this default serves installs that predate it.
    pub fn resolve(workspace_path: Option<&str>, synced_from: Option<&str>) -> Self {
        let mut identity = match workspace_path {
            Some(path) => Self::new(path),
            None => Self {
                workspace_path: PLAIN_WORKSPACE_PATH.to_string(),
                synced_from: PLAIN_SYNCED_FROM.to_string(),
            },
        };
        if let Some(value) = synced_from {
            identity.synced_from = value.to_string();
        }
        identity
    }
}

/// A synced-from value unique to one control plane: the legacy default of
/// `workspace_path` followed by a digest of `control_plane_uid` (the UID of
/// an object that lives as long as the install, such as tmc's SyncTarget
/// CRD), so two kcp instances with the same workspace path differ.
pub fn unique_synced_from(workspace_path: Option<&str>, control_plane_uid: &str) -> String {
    let base = SourceIdentity::resolve(workspace_path, None).synced_from;
    let digest = short_digest(control_plane_uid);
    let keep = base.get(..63 - digest.len() - 1).unwrap_or(&base);
    let keep = keep.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if keep.is_empty() {
        digest
    } else {
        format!("{keep}-{digest}")
    }
}

/// Checks that `value` can be the `workload.kcp.io/synced-from` label value:
/// 1-63 characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
/// The error says what is wrong and how to fix it.
pub fn check_synced_from(value: &str) -> Result<(), String> {
    let fix = "fix: use 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, e.g. \"prod-eu\"";
    if value.is_empty() || value.len() > 63 {
        return Err(format!(
            "synced_from {value:?} is not a valid label value: {} characters ({fix})",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "synced_from {value:?} is not a valid label value: {bad:?} is not allowed ({fix})"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(value.chars().next()) || !alnum(value.chars().last()) {
        return Err(format!(
            "synced_from {value:?} is not a valid label value: it must start and end with a letter or digit ({fix})"
        ));
    }
    Ok(())
}

/// `input` as a Kubernetes label value: characters outside `[A-Za-z0-9._-]`
/// become `-`, it starts and ends alphanumeric, and when over 63 characters it
/// is cut and suffixed with a digest so distinct inputs stay distinct.
pub fn label_value(input: &str) -> String {
    let cleaned: String = input
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.len() <= 63 && !trimmed.is_empty() {
        return trimmed.to_string();
    }
    let digest = short_digest(input);
    let keep = trimmed.get(..63 - digest.len() - 1).unwrap_or(trimmed);
    let keep = keep.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if keep.is_empty() {
        digest
    } else {
        format!("{keep}-{digest}")
    }
}

/// First 10 hex digits of the SHA-256 of `input`.
fn short_digest(input: &str) -> String {
    let mut digest = hex::encode(Sha256::digest(input.as_bytes()));
    digest.truncate(10);
    digest
}

/// How upstream namespaces map to downstream namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NamespaceMapping {
    /// The downstream namespace has the upstream name.
    #[default]
    Same,
    /// The downstream namespace is `<prefix>-<upstream namespace>` (cut with a
    /// digest when longer than 63 characters); copies and namespaces carry
    /// the upstream-namespace annotation.
    Prefixed(String),
    /// Workloads of many kcp workspaces, read through an APIExport's virtual
    /// workspace (tmcd's export mode, `docs/tenancy.md`): an upstream
    /// namespace is a store namespace `<logical cluster>|<namespace>`
    /// ([`WorkloadKey::store_namespace`]) and maps to the workspace
    /// namespace's own downstream namespace
    /// ([`tmc_api::tenancy::downstream_namespace`]), so `default/web` of two
    /// workspaces never meet on a cluster. Copies and namespaces carry the
    /// upstream-namespace annotation (the store namespace).
    Workspaces,
}

impl NamespaceMapping {
    /// Downstream namespace for `upstream`. Under [`Self::Workspaces`], an
    /// `upstream` that is not a store namespace naming a logical cluster and
    /// a namespace maps to itself followed by [`STORE_SEPARATOR`]: never a
    /// valid namespace name, so nothing can be written or deleted there (the
    /// syncer never keys such an object in the first place).
    pub fn downstream(&self, upstream: &str) -> String {
        match self {
            Self::Same => upstream.to_string(),
            Self::Workspaces => match self.tenancy(upstream) {
                Some(namespace) => namespace.name,
                None => format!("{upstream}{STORE_SEPARATOR}"),
            },
            Self::Prefixed(prefix) => {
                let full = format!("{prefix}-{upstream}");
                if full.len() <= 63 {
                    return full;
                }
                let digest = short_digest(&full);
                let keep = full.get(..63 - digest.len() - 1).unwrap_or(&full);
                format!("{}-{digest}", keep.trim_end_matches('-'))
            }
        }
    }

    /// Upstream namespace of a downstream copy in namespace `downstream`,
    /// preferring the copy's upstream-namespace annotation when present.
    pub fn upstream(&self, downstream: &str, annotation: Option<&str>) -> Option<String> {
        if let Some(ns) = annotation.filter(|ns| !ns.is_empty()) {
            return Some(ns.to_string());
        }
        match self {
            Self::Same => Some(downstream.to_string()),
            Self::Prefixed(prefix) => downstream
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .filter(|rest| !rest.is_empty())
                .map(str::to_string),
            // Only the annotation says which workspace a namespace serves.
            Self::Workspaces => None,
        }
    }

    /// Whether copies carry the upstream-namespace annotation.
    pub fn annotates(&self) -> bool {
        matches!(self, Self::Prefixed(_) | Self::Workspaces)
    }

    /// Under [`Self::Workspaces`], the downstream namespace of the store
    /// namespace `upstream` with the labels and locator annotation it
    /// carries; `None` under the other mappings, or when `upstream` names no
    /// logical cluster and namespace.
    pub fn tenancy(&self, upstream: &str) -> Option<DownstreamNamespace> {
        if !matches!(self, Self::Workspaces) {
            return None;
        }
        match WorkloadKey::from_store(Some(upstream), "") {
            Ok(WorkloadKey {
                cluster: Some(cluster),
                namespace: Some(namespace),
                ..
            }) => Some(downstream_namespace(&cluster, &namespace)),
            _ => None,
        }
    }

    /// Whether an upstream object in `namespace` (as the syncer's stores hold
    /// it) can be synced under this mapping: under [`Self::Workspaces`] only a
    /// store namespace naming a logical cluster and a namespace can (a
    /// cluster-scoped object of a workspace would meet the same-named one of
    /// another workspace on the cluster); under the others, any.
    pub fn maps(&self, namespace: Option<&str>) -> bool {
        match self {
            Self::Workspaces => namespace.is_some_and(|ns| self.tenancy(ns).is_some()),
            _ => true,
        }
    }

    /// Whether a copy in namespace `downstream` with upstream-namespace
    /// annotation `annotation` was written under this mapping: `same` writes
    /// no annotation, a prefix writes one and puts the copy in the namespace
    /// it maps the annotated one to. A copy written under another mapping is
    /// never mapped back to an upstream object (that could name the wrong
    /// object, and delete a live copy on its 404).
    pub fn wrote(&self, downstream: &str, annotation: Option<&str>) -> bool {
        match (self, annotation) {
            (Self::Same, None) => true,
            (Self::Prefixed(_), Some(upstream)) => self.downstream(upstream) == downstream,
            (Self::Workspaces, Some(upstream)) => self
                .tenancy(upstream)
                .is_some_and(|ns| ns.name == downstream),
            _ => false,
        }
    }
}

impl FromStr for NamespaceMapping {
    type Err = Error;

    /// Parses `same` or `prefix:<prefix>`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidNamespaceMapping {
            input: s.to_string(),
        };
        match s.trim() {
            "" | "same" => Ok(Self::Same),
            other => {
                let prefix = other.strip_prefix("prefix:").ok_or_else(invalid)?;
                let valid = !prefix.is_empty()
                    && prefix.len() <= 40
                    && prefix
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && prefix.starts_with(|c: char| c.is_ascii_lowercase())
                    && !prefix.ends_with('-');
                if valid {
                    Ok(Self::Prefixed(prefix.to_string()))
                } else {
                    Err(invalid())
                }
            }
        }
    }
}

impl fmt::Display for NamespaceMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Same => f.write_str("same"),
            Self::Prefixed(prefix) => write!(f, "prefix:{prefix}"),
            Self::Workspaces => f.write_str("workspaces"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths_become_label_values() {
        assert_eq!(label_value("root:org:team"), "root-org-team");
        assert_eq!(label_value("root"), "root");
        let long = format!("root:{}", "x".repeat(80));
        let value = label_value(&long);
        assert!(value.len() <= 63, "{value}");
        assert_ne!(value, label_value(&format!("root:{}", "x".repeat(81))));
        assert_eq!(SourceIdentity::new("root:a").synced_from, "root-a");
    }

    #[test]
    fn the_fallback_is_one_rule_for_tmcd_and_the_agent() {
        let ws = SourceIdentity::resolve(Some("root:tmc"), None);
        assert_eq!(
            (ws.workspace_path.as_str(), ws.synced_from.as_str()),
            ("root:tmc", "root-tmc")
        );
        let plain = SourceIdentity::resolve(None, None);
        assert_eq!(
            (plain.workspace_path.as_str(), plain.synced_from.as_str()),
            ("default", "tmc")
        );
        let given = SourceIdentity::resolve(Some("root:a"), Some("custom"));
        assert_eq!(
            (given.workspace_path.as_str(), given.synced_from.as_str()),
            ("root:a", "custom")
        );
    }

    #[test]
    fn unique_values_differ_per_control_plane_and_stay_label_values() {
        let a = unique_synced_from(Some("root:tmc"), "uid-a");
        let b = unique_synced_from(Some("root:tmc"), "uid-b");
        assert_ne!(a, b);
        assert!(a.starts_with("root-tmc-"), "{a}");
        assert_eq!(a, unique_synced_from(Some("root:tmc"), "uid-a"), "stable");
        let long = unique_synced_from(Some(&format!("root:{}", "x".repeat(80))), "uid");
        for value in [&a, &b, &long, &unique_synced_from(None, "uid")] {
            assert!(check_synced_from(value).is_ok(), "{value}");
        }
    }

    #[test]
    fn synced_from_values_are_checked() {
        for good in ["tmc", "root-tmc", "prod.eu_1", "A"] {
            assert!(check_synced_from(good).is_ok(), "{good}");
        }
        for bad in ["", "root:tmc", "-x", "x-", "a b", &"x".repeat(64)] {
            let err = check_synced_from(bad).unwrap_err();
            assert!(err.contains("fix:"), "{err}");
        }
        assert!(check_synced_from("root:tmc").unwrap_err().contains("':'"));
    }

    #[test]
    fn same_mapping_is_identity_both_ways() {
        let m = NamespaceMapping::Same;
        assert_eq!(m.downstream("shop"), "shop");
        assert_eq!(m.upstream("shop", None).as_deref(), Some("shop"));
        assert!(!m.annotates());
    }

    #[test]
    fn prefixed_mapping_round_trips() {
        let m: NamespaceMapping = "prefix:tmc".parse().unwrap();
        assert_eq!(m.downstream("shop"), "tmc-shop");
        assert_eq!(m.upstream("tmc-shop", None).as_deref(), Some("shop"));
        assert_eq!(m.upstream("other", None), None);
        assert_eq!(
            m.upstream("anything", Some("shop")).as_deref(),
            Some("shop")
        );
        let long = m.downstream(&"n".repeat(62));
        assert!(long.len() <= 63 && long.starts_with("tmc-"), "{long}");
        assert_eq!(m.to_string(), "prefix:tmc");
    }

    #[test]
    fn a_copy_written_under_another_mapping_is_recognised() {
        let same = NamespaceMapping::Same;
        let prefixed: NamespaceMapping = "prefix:tmc".parse().unwrap();
        let other: NamespaceMapping = "prefix:x".parse().unwrap();
        assert!(same.wrote("shop", None));
        assert!(prefixed.wrote("tmc-shop", Some("shop")));
        // same -> prefix: an unannotated copy, even in a namespace that looks prefixed.
        assert!(!prefixed.wrote("tmc-shop", None));
        assert_eq!(prefixed.upstream("tmc-shop", None).as_deref(), Some("shop"));
        // prefix -> same, and prefix -> another prefix.
        assert!(!same.wrote("tmc-shop", Some("shop")));
        assert!(!other.wrote("tmc-shop", Some("shop")));
    }

    #[test]
    fn workspaces_mapping_gives_each_workspace_namespace_its_own() {
        let m = NamespaceMapping::Workspaces;
        let a = m.downstream("a1|default");
        let b = m.downstream("b2|default");
        assert!(a.starts_with("tmc-a1-default-"), "{a}");
        assert_ne!(a, b);
        assert!(m.annotates());
        assert!(m.wrote(&a, Some("a1|default")));
        assert!(!m.wrote(&a, Some("b2|default")));
        assert!(!m.wrote(&a, None));
        assert_eq!(
            m.upstream(&a, Some("a1|default")).as_deref(),
            Some("a1|default")
        );
        // Without the annotation a downstream namespace names no workspace.
        assert_eq!(m.upstream(&a, None), None);
        let ns = m.tenancy("a1|default").expect("a store namespace");
        assert_eq!(ns.name, a);
        assert_eq!(ns.labels["tenancy.workload.kcp.io/namespace"], "default");
        // Unmapped or cluster-scoped objects are never synced, and their
        // namespace maps to no valid name.
        for unmapped in ["default", "a1|", "Bad|default"] {
            assert!(!m.maps(Some(unmapped)), "{unmapped}");
            assert!(m.downstream(unmapped).contains('|'), "{unmapped}");
        }
        assert!(!m.maps(None));
        assert!(m.maps(Some("a1|default")));
        assert!(NamespaceMapping::Same.maps(None));
        // A copy of the workspaces mapping is stranded under the others and back.
        assert!(!NamespaceMapping::Same.wrote(&a, Some("a1|default")));
        assert_eq!(m.to_string(), "workspaces");
    }

    #[test]
    fn mapping_strings_are_validated() {
        assert_eq!(
            "same".parse::<NamespaceMapping>().unwrap(),
            NamespaceMapping::Same
        );
        for bad in ["prefix:", "prefix:Bad", "hash", "prefix:-x"] {
            let err = bad.parse::<NamespaceMapping>().unwrap_err().to_string();
            assert!(err.contains("prefix:<prefix>"), "{err}");
        }
    }
}
