//! The resource kinds a syncer syncs, parsed from strings such as
//! `apps/v1/Deployment` and checked against a cluster's discovery.

use std::fmt;
use std::str::FromStr;

use kube::core::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One kind the syncer watches upstream and copies downstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyncedKind {
    /// API group, empty for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Plural resource name, e.g. `deployments`.
    pub plural: String,
    /// Whether objects of the kind live in namespaces.
    pub namespaced: bool,
}

/// The kinds synced when none are configured.
pub const DEFAULT_KINDS: &[&str] = &[
    "apps/v1/Deployment",
    "v1/Service",
    "v1/ConfigMap",
    "v1/Secret",
];

/// Kinds we know to be cluster-scoped (anything else parsed from a string is
/// assumed namespaced until discovery says otherwise).
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "PersistentVolume"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("storage.k8s.io", "StorageClass"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("scheduling.k8s.io", "PriorityClass"),
];

/// Kinds that carry privilege on a physical cluster, as `(group, plural, what a workspace user could
/// do with it)`. Syncing one hands that power over every physical cluster to whoever may write the kind
/// in the workspace, so tmc refuses them unless the configuration allows each one by name.
const PRIVILEGED: &[(&str, &str, &str)] = &[
    (
        "rbac.authorization.k8s.io",
        "clusterroles",
        "grant permissions on the physical clusters",
    ),
    (
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "grant permissions on the physical clusters",
    ),
    (
        "rbac.authorization.k8s.io",
        "roles",
        "grant permissions on the physical clusters",
    ),
    (
        "rbac.authorization.k8s.io",
        "rolebindings",
        "grant permissions on the physical clusters",
    ),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "change the APIs every user of the physical clusters sees",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        "intercept or refuse every write to the physical clusters",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "intercept and rewrite every write to the physical clusters",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        "refuse every write to the physical clusters",
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        "refuse every write to the physical clusters",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicies",
        "rewrite every write to the physical clusters",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicybindings",
        "rewrite every write to the physical clusters",
    ),
    (
        "apiregistration.k8s.io",
        "apiservices",
        "route the physical clusters' API requests to a server of their choice",
    ),
    (
        "certificates.k8s.io",
        "certificatesigningrequests",
        "obtain certificates the physical clusters trust",
    ),
    (
        "",
        "persistentvolumes",
        "mount any host path of the physical clusters' nodes",
    ),
    (
        "",
        "nodes",
        "register or change the physical clusters' nodes",
    ),
];

/// What a workspace user could do on every physical cluster if `group`/`plural` were synced, for a
/// privilege-bearing kind; `None` for an ordinary one.
pub fn privilege(group: &str, plural: &str) -> Option<&'static str> {
    PRIVILEGED
        .iter()
        .find(|(g, p, _)| *g == group && *p == plural)
        .map(|(_, _, what)| *what)
}

impl SyncedKind {
    /// `plural.group` (`deployments.apps`, or `configmaps` for the core group): how tmc.toml's
    /// `sync.resources` names the kind.
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Why this kind must not be synced unless the configuration allows it by name: it carries privilege
    /// on the physical clusters ([`privilege`]), or it is cluster-scoped (a cluster-scoped copy is shared
    /// by every tenant of the physical cluster). `None` for an ordinary namespaced kind.
    pub fn needs_allowance(&self) -> Option<String> {
        if let Some(what) = privilege(&self.group, &self.plural) {
            Some(format!(
                "whoever may write {} in the workspace could {what}",
                self.resource_name()
            ))
        } else if !self.namespaced {
            Some(format!(
                "{} is cluster-scoped: a copy is shared by every tenant of the physical cluster",
                self.resource_name()
            ))
        } else {
            None
        }
    }

    /// A kind with everything given.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            namespaced,
        }
    }

    /// Parses `GROUP/VERSION/Kind` (`v1/Kind` or `/v1/Kind` for the core group).
    /// The plural is guessed from the kind and the scope from a short list of
    /// well-known cluster-scoped kinds; [`SyncedKind::discover`] gets both right
    /// for any kind, including custom resources.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidKind {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = input.trim().split('/').collect();
        let (group, version, kind) = match parts.as_slice() {
            [version, kind] => ("", *version, *kind),
            [group, version, kind] => (*group, *version, *kind),
            _ => return Err(invalid("expected two or three parts separated by '/'")),
        };
        if version.is_empty() || kind.is_empty() {
            return Err(invalid("version and kind must not be empty"));
        }
        if !kind.starts_with(|c: char| c.is_ascii_uppercase()) {
            return Err(invalid(
                "the kind is written in PascalCase, e.g. Deployment",
            ));
        }
        let namespaced = !CLUSTER_SCOPED
            .iter()
            .any(|(g, k)| *g == group && *k == kind);
        Ok(Self::new(
            group,
            version,
            kind,
            &guess_plural(kind),
            namespaced,
        ))
    }

    /// Parses a comma-separated list of kinds (see [`SyncedKind::parse`]).
    pub fn parse_list(input: &str) -> Result<Vec<Self>> {
        input
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Self::parse)
            .collect()
    }

    /// The default kinds: deployments, services, configmaps and secrets.
    pub fn defaults() -> Vec<Self> {
        DEFAULT_KINDS
            .iter()
            .filter_map(|s| Self::parse(s).ok())
            .collect()
    }

    /// `apiVersion` of the kind (`v1` or `group/version`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The dynamic API resource for kube clients.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&self.group, &self.version, &self.kind),
            &self.plural,
        )
    }

    /// Looks the kind up in `client`'s discovery and returns it with the
    /// served plural and scope. `Ok(None)` when the cluster does not serve it.
    pub async fn discover(&self, client: &kube::Client) -> Result<Option<Self>, kube::Error> {
        let list = if self.group.is_empty() {
            client.list_core_api_resources(&self.version).await
        } else {
            client.list_api_group_resources(&self.api_version()).await
        };
        let list = match list {
            Ok(list) => list,
            // The group/version itself is not served.
            Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(None),
            Err(err) => return Err(err),
        };
        Ok(list
            .resources
            .iter()
            .find(|r| r.kind == self.kind && !r.name.contains('/'))
            .map(|r| {
                Self::new(
                    &self.group,
                    &self.version,
                    &self.kind,
                    &r.name,
                    r.namespaced,
                )
            }))
    }

    /// Parses `input` and completes it from `client`'s discovery; fails with a
    /// message naming the kind when the cluster does not serve it.
    pub async fn resolve(input: &str, client: &kube::Client) -> anyhow::Result<Self> {
        let parsed = Self::parse(input)?;
        match parsed.discover(client).await {
            Ok(Some(kind)) => Ok(kind),
            Ok(None) => anyhow::bail!(
                "resource {input:?} is not served by the API server (check the group, version and kind, or install its CRD / APIBinding)"
            ),
            Err(err) => {
                Err(anyhow::anyhow!(err).context(format!("discovering resource {input:?}")))
            }
        }
    }
}

impl FromStr for SyncedKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for SyncedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.kind)
    }
}

/// English plural of a kind, lowercased, the way Kubernetes names resources.
fn guess_plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with("endpoints") {
        lower
    } else if lower.ends_with('s')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
        || lower.ends_with('x')
    {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        if stem.ends_with(['a', 'e', 'i', 'o', 'u']) {
            format!("{lower}s")
        } else {
            format!("{stem}ies")
        }
    } else {
        format!("{lower}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_group_and_core_kinds() {
        let deploy = SyncedKind::parse("apps/v1/Deployment").unwrap();
        assert_eq!(
            deploy,
            SyncedKind::new("apps", "v1", "Deployment", "deployments", true)
        );
        assert_eq!(deploy.api_version(), "apps/v1");
        let cm = SyncedKind::parse("v1/ConfigMap").unwrap();
        assert_eq!(
            cm,
            SyncedKind::new("", "v1", "ConfigMap", "configmaps", true)
        );
        assert_eq!(SyncedKind::parse("/v1/ConfigMap").unwrap(), cm);
        assert_eq!(cm.api_version(), "v1");
        assert_eq!(cm.to_string(), "v1/ConfigMap");
        assert!(!SyncedKind::parse("v1/Namespace").unwrap().namespaced);
    }

    #[test]
    fn privilege_bearing_and_cluster_scoped_kinds_need_an_allowance() {
        let plain = SyncedKind::new("apps", "v1", "Deployment", "deployments", true);
        assert_eq!(plain.needs_allowance(), None);
        assert_eq!(plain.resource_name(), "deployments.apps");
        let binding = SyncedKind::new(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        );
        let why = binding
            .needs_allowance()
            .expect("a RoleBinding grants permissions");
        assert!(
            why.contains("rolebindings.rbac.authorization.k8s.io")
                && why.contains("grant permissions"),
            "{why}"
        );
        let crd = SyncedKind::parse("apiextensions.k8s.io/v1/CustomResourceDefinition").unwrap();
        assert!(crd.needs_allowance().unwrap().contains("change the APIs"));
        // Any cluster-scoped kind, also one the list does not know (a custom resource).
        let custom = SyncedKind::new("example.com", "v1", "Gadget", "gadgets", false);
        let why = custom.needs_allowance().unwrap();
        assert!(
            why.contains("gadgets.example.com is cluster-scoped"),
            "{why}"
        );
        assert_eq!(
            SyncedKind::new("", "v1", "Secret", "secrets", true).resource_name(),
            "secrets"
        );
    }

    #[test]
    fn rejects_malformed_kinds_with_a_hint() {
        for bad in [
            "Deployment",
            "apps/v1/deployment",
            "a/b/c/D",
            "apps//Deployment",
        ] {
            let err = SyncedKind::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains(bad) && err.contains("apps/v1/Deployment"),
                "{err}"
            );
        }
    }

    #[test]
    fn plurals_follow_kubernetes_names() {
        for (kind, plural) in [
            ("Deployment", "deployments"),
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("Gateway", "gateways"),
            ("Endpoints", "endpoints"),
            ("Secret", "secrets"),
        ] {
            assert_eq!(guess_plural(kind), plural);
        }
    }

    #[test]
    fn default_kinds_and_lists() {
        let kinds = SyncedKind::defaults();
        let names: Vec<String> = kinds.iter().map(|k| k.plural.clone()).collect();
        assert_eq!(names, ["deployments", "services", "configmaps", "secrets"]);
        let list = SyncedKind::parse_list("apps/v1/Deployment, v1/Secret,").unwrap();
        assert_eq!(list.len(), 2);
        assert!(SyncedKind::parse_list("apps/v1/Deployment,nope").is_err());
    }

    #[test]
    fn api_resource_matches_the_kind() {
        let ar = SyncedKind::parse("apps/v1/Deployment")
            .unwrap()
            .api_resource();
        assert_eq!(ar.api_version, "apps/v1");
        assert_eq!(ar.plural, "deployments");
        assert_eq!(ar.kind, "Deployment");
    }
}
