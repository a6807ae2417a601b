//! Tenancy: naming and keying for many kcp workspaces served through one tmcd (issue 12, `docs/tenancy.md`).
//!
//! Through an APIExport's virtual workspace, one wildcard watch delivers the objects of every bound workspace;
//! kcp names each object's workspace in the [`CLUSTER_ANNOTATION`]. Two things must then carry that logical
//! cluster along with the namespace and name:
//!
//! - the key tmcd's stores and queues hold ([`WorkloadKey`]): kube-runtime's reflector keys on
//!   `(name, namespace)` only, so tmcd maps each object of a wildcard watch *before* the reflector, putting
//!   its [`WorkloadKey::store_namespace`] (`<cluster>|<namespace>`, kcp's own cache key form) in
//!   `metadata.namespace`, and maps a store key back with [`WorkloadKey::from_store`]. The scoped form is not
//!   a valid namespace, so a write that forgot to map back fails at the API server instead of reaching
//!   another workspace. Objects of a single workspace (no annotation) are not mapped at all;
//! - the namespace a copy gets on a physical cluster ([`downstream_namespace`]): `default` of two tenants must
//!   not meet in one namespace there.
//!
//! ```
//! use tmc_api::tenancy::{LogicalCluster, WorkloadKey, downstream_namespace};
//!
//! let team_a = LogicalCluster::new("2xcj4mhumds6z4ux")?;
//! let key = WorkloadKey::new(Some(team_a.clone()), Some("default"), "web");
//! assert_eq!(key.store_namespace().as_deref(), Some("2xcj4mhumds6z4ux|default"));
//! assert_eq!(WorkloadKey::from_store(key.store_namespace().as_deref(), "web")?, key);
//!
//! let downstream = downstream_namespace(&team_a, "default");
//! assert_eq!(downstream.name, "tmc-2xcj4mhumds6z4ux-default-398d5b3ce607");
//! # Ok::<(), tmc_api::tenancy::TenancyError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

/// The annotation kcp sets on every object it serves: the object's logical cluster.
pub const CLUSTER_ANNOTATION: &str = "kcp.io/cluster";

/// Label on a downstream namespace: the logical cluster of the workspace it serves.
pub const DOWNSTREAM_CLUSTER_LABEL: &str = "tenancy.workload.kcp.io/logical-cluster";
/// Label on a downstream namespace: the workspace namespace it serves.
pub const DOWNSTREAM_NAMESPACE_LABEL: &str = "tenancy.workload.kcp.io/namespace";
/// Annotation on a downstream namespace: `{"logicalCluster": ..., "namespace": ...}`, the authority when a
/// namespace's name is checked before adoption (labels can be edited by anyone who may label namespaces).
pub const DOWNSTREAM_LOCATOR_ANNOTATION: &str = "tenancy.workload.kcp.io/locator";

/// Prefix of every downstream namespace name.
pub const DOWNSTREAM_PREFIX: &str = "tmc-";
/// Separator of [`WorkloadKey::store_namespace`], as in kcp's cache keys (`cluster|namespace/name`).
pub const STORE_SEPARATOR: char = '|';

/// Longest Kubernetes namespace name (a DNS-1123 label).
const MAX_LABEL: usize = 63;
/// Hex digits of the hash in a downstream namespace name (48 bits).
const HASH_HEX: usize = 12;

/// Why a tenancy name or key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenancyError {
    /// Not a logical cluster name.
    InvalidLogicalCluster(String),
    /// A store namespace `<cluster>|<namespace>` whose parts do not parse.
    InvalidStoreNamespace(String),
}

impl fmt::Display for TenancyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidLogicalCluster(name) => write!(
                f,
                "{name:?} is not a kcp logical cluster name: use 1 to 63 lowercase letters and digits, \
                 as in the kcp.io/cluster annotation (e.g. 2xcj4mhumds6z4ux), not a workspace path such as root:teams:a"
            ),
            Self::InvalidStoreNamespace(ns) => write!(
                f,
                "{ns:?} is not a store namespace: expected <logical cluster>|<namespace> \
                 (made by WorkloadKey::store_namespace)"
            ),
        }
    }
}

impl std::error::Error for TenancyError {}

/// A kcp logical cluster name, e.g. `2xcj4mhumds6z4ux` (or `root`): what the [`CLUSTER_ANNOTATION`] says and
/// what `/clusters/<name>` takes. Unlike a workspace path (`root:teams:a`) it never changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogicalCluster(String);

impl LogicalCluster {
    /// Checks `name`: 1 to 63 lowercase ASCII letters and digits (kcp's generated names are base36).
    pub fn new(name: impl Into<String>) -> Result<Self, TenancyError> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= MAX_LABEL
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if valid {
            Ok(Self(name))
        } else {
            Err(TenancyError::InvalidLogicalCluster(name))
        }
    }

    /// The logical cluster an object's annotations name, if any (`None` in single-workspace mode, where kcp
    /// is used as one API and tmcd reads no annotation).
    pub fn of(annotations: &BTreeMap<String, String>) -> Result<Option<Self>, TenancyError> {
        annotations
            .get(CLUSTER_ANNOTATION)
            .map(|name| Self::new(name.as_str()))
            .transpose()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LogicalCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What tmcd's controllers key a workload (or placement) on: its logical cluster when it came through a
/// virtual workspace, its namespace (none for cluster-scoped objects) and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadKey {
    /// The workspace's logical cluster; `None` in single-workspace mode.
    pub cluster: Option<LogicalCluster>,
    /// The namespace in that workspace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The object name.
    pub name: String,
}

impl WorkloadKey {
    /// A key from its parts.
    pub fn new(cluster: Option<LogicalCluster>, namespace: Option<&str>, name: &str) -> Self {
        Self {
            cluster,
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// The key of an object as the API server sent it: its [`CLUSTER_ANNOTATION`] (if any), namespace, name.
    pub fn of(
        annotations: &BTreeMap<String, String>,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Self, TenancyError> {
        Ok(Self::new(LogicalCluster::of(annotations)?, namespace, name))
    }

    /// The namespace under which a reflector stores the object: `<cluster>|<namespace>` (`<cluster>|` for a
    /// cluster-scoped object) when it has a cluster, else its namespace unchanged. With it, the reflector's
    /// `(name, namespace)` key tells two workspaces' `default/web` apart.
    pub fn store_namespace(&self) -> Option<String> {
        match &self.cluster {
            Some(cluster) => Some(format!(
                "{cluster}{STORE_SEPARATOR}{}",
                self.namespace.as_deref().unwrap_or_default()
            )),
            None => self.namespace.clone(),
        }
    }

    /// The key back from a reflector's `(namespace, name)` made with [`Self::store_namespace`].
    pub fn from_store(namespace: Option<&str>, name: &str) -> Result<Self, TenancyError> {
        let Some((cluster, ns)) = namespace.and_then(|ns| ns.split_once(STORE_SEPARATOR)) else {
            return Ok(Self::new(None, namespace, name));
        };
        let cluster = LogicalCluster::new(cluster).map_err(|_| {
            TenancyError::InvalidStoreNamespace(namespace.unwrap_or_default().into())
        })?;
        let ns = (!ns.is_empty()).then_some(ns);
        Ok(Self::new(Some(cluster), ns, name))
    }
}

/// Maps an object of a wildcard watch for a reflector: puts its [`WorkloadKey::store_namespace`] in
/// `metadata.namespace` and returns its key. Objects without the [`CLUSTER_ANNOTATION`] are left as they are.
/// tmcd calls it on each watch event before the reflector (e.g. `watcher(..).map_ok(|e| e.modify(..))`).
pub fn map_for_store(meta: &mut ObjectMeta) -> Result<WorkloadKey, TenancyError> {
    let empty = BTreeMap::new();
    let key = WorkloadKey::of(
        meta.annotations.as_ref().unwrap_or(&empty),
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    )?;
    meta.namespace = key.store_namespace();
    Ok(key)
}

/// The logical cluster of a store namespace made by [`WorkloadKey::store_namespace`] (`<cluster>|...`); `None`
/// for the namespace of an object of a single workspace (never mapped) or of a cluster-scoped one.
///
/// Two stored objects belong to the same workspace exactly when this is equal for both: tmcd lets a placement
/// govern only the workloads of its own workspace this way.
pub fn store_cluster(namespace: Option<&str>) -> Option<&str> {
    namespace
        .and_then(|ns| ns.split_once(STORE_SEPARATOR))
        .map(|(cluster, _)| cluster)
}

/// The key of a stored object as text, unique across workspaces: `<cluster>|<namespace>/<name>` for a mapped
/// object (`<cluster>|<name>` when cluster-scoped), `<namespace>/<name>` or `<name>` otherwise. What tmcd keys
/// its per-object and per-placement bookkeeping on.
pub fn store_key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if ns.ends_with(STORE_SEPARATOR) => format!("{ns}{name}"),
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

impl fmt::Display for WorkloadKey {
    /// `cluster|namespace/name`, `namespace/name` or `name`, as kcp prints its cache keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(cluster) = &self.cluster {
            write!(f, "{cluster}{STORE_SEPARATOR}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        f.write_str(&self.name)
    }
}

/// A namespace on a physical cluster holding the copies of one workspace namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamNamespace {
    /// Its name, see [`downstream_namespace`].
    pub name: String,
    /// [`DOWNSTREAM_CLUSTER_LABEL`] and [`DOWNSTREAM_NAMESPACE_LABEL`].
    pub labels: BTreeMap<String, String>,
    /// [`DOWNSTREAM_LOCATOR_ANNOTATION`].
    pub annotations: BTreeMap<String, String>,
}

/// The downstream namespace of `namespace` in workspace `cluster`:
/// `tmc-<cluster>-<namespace>-<hash>`, where `<hash>` is 12 hex digits of SHA-256 of `<cluster>/<namespace>`
/// and `<cluster>-<namespace>` is cut (at a character that leaves no trailing `-`) so the name fits 63
/// characters. Stable (a pure function of its inputs), a valid DNS-1123 label for any namespace name, readable
/// for the usual short names, and unique: untruncated names differ in their readable part (a logical cluster
/// name has no `-`), truncated ones in their hash.
pub fn downstream_namespace(cluster: &LogicalCluster, namespace: &str) -> DownstreamNamespace {
    let digest = Sha256::digest(format!("{cluster}/{namespace}").as_bytes());
    let hash = &hex::encode(digest)[..HASH_HEX];
    let room = MAX_LABEL - DOWNSTREAM_PREFIX.len() - 1 - HASH_HEX;
    let readable = format!("{cluster}-{namespace}");
    let mut cut: String = readable.chars().take(room).collect();
    while cut.ends_with('-') {
        cut.pop();
    }
    let name = format!("{DOWNSTREAM_PREFIX}{cut}-{hash}");
    let labels = BTreeMap::from([
        (DOWNSTREAM_CLUSTER_LABEL.to_owned(), cluster.to_string()),
        (DOWNSTREAM_NAMESPACE_LABEL.to_owned(), namespace.to_owned()),
    ]);
    let locator = serde_json::json!({ "logicalCluster": cluster.as_str(), "namespace": namespace });
    let annotations = BTreeMap::from([(
        DOWNSTREAM_LOCATOR_ANNOTATION.to_owned(),
        locator.to_string(),
    )]);
    DownstreamNamespace {
        name,
        labels,
        annotations,
    }
}

/// The workspace namespace a downstream namespace serves, read from its [`DOWNSTREAM_LOCATOR_ANNOTATION`];
/// `None` when it is absent, unreadable, or does not map back to `name` (a namespace tmc did not make that
/// way, which tmc must neither adopt nor delete).
pub fn upstream_of(
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> Option<(LogicalCluster, String)> {
    let locator: serde_json::Value =
        serde_json::from_str(annotations.get(DOWNSTREAM_LOCATOR_ANNOTATION)?).ok()?;
    let cluster = LogicalCluster::new(locator.get("logicalCluster")?.as_str()?).ok()?;
    let namespace = locator.get("namespace")?.as_str()?.to_owned();
    (downstream_namespace(&cluster, &namespace).name == name).then_some((cluster, namespace))
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn lc(name: &str) -> LogicalCluster {
        LogicalCluster::new(name).expect("valid logical cluster")
    }

    fn is_dns1123_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn store_cluster_and_key_tell_workspaces_apart() {
        let a = WorkloadKey::new(Some(lc("a1")), Some("default"), "web");
        let b = WorkloadKey::new(Some(lc("b2")), Some("default"), "web");
        let placement = WorkloadKey::new(Some(lc("a1")), None, "web");
        let (na, nb, np) = (
            a.store_namespace(),
            b.store_namespace(),
            placement.store_namespace(),
        );
        assert_eq!(store_cluster(na.as_deref()), Some("a1"));
        assert_eq!(store_cluster(np.as_deref()), Some("a1"));
        assert_eq!(store_cluster(nb.as_deref()), Some("b2"));
        assert_eq!(store_cluster(Some("default")), None);
        assert_eq!(store_cluster(None), None);
        assert_eq!(store_key(na.as_deref(), "web"), "a1|default/web");
        assert_eq!(store_key(nb.as_deref(), "web"), "b2|default/web");
        assert_eq!(store_key(np.as_deref(), "web"), "a1|web");
        assert_eq!(store_key(Some("default"), "web"), "default/web");
        assert_eq!(store_key(None, "web"), "web");
        // The text key is the key's own display form.
        assert_eq!(store_key(na.as_deref(), "web"), a.to_string());
        assert_eq!(store_key(np.as_deref(), "web"), placement.to_string());
    }

    #[test]
    fn logical_cluster_names_are_checked() {
        assert!(LogicalCluster::new("2xcj4mhumds6z4ux").is_ok());
        assert!(LogicalCluster::new("root").is_ok());
        for bad in ["", "root:teams:a", "Ab", "a-b", "a|b", &"x".repeat(64)] {
            let err = LogicalCluster::new(bad).expect_err(bad);
            assert!(
                err.to_string().contains("not a kcp logical cluster name"),
                "{err}"
            );
        }
    }

    #[test]
    fn key_reads_the_cluster_annotation() {
        let annotations =
            BTreeMap::from([(CLUSTER_ANNOTATION.to_owned(), "h3mjsythnuaha6kb".to_owned())]);
        let key = WorkloadKey::of(&annotations, Some("default"), "web").expect("key");
        assert_eq!(key.cluster, Some(lc("h3mjsythnuaha6kb")));
        assert_eq!(key.to_string(), "h3mjsythnuaha6kb|default/web");
        let single = WorkloadKey::of(&BTreeMap::new(), Some("default"), "web").expect("key");
        assert_eq!(single.to_string(), "default/web");
        assert_eq!(single.cluster, None);
        let bad = BTreeMap::from([(CLUSTER_ANNOTATION.to_owned(), "root:teams:a".to_owned())]);
        assert!(WorkloadKey::of(&bad, None, "x").is_err());
    }

    /// The store keying tmcd uses: a reflector keys on (name, namespace) only, so the same `default/web` of
    /// two workspaces collides there unless mapped; mapped, both stay and each maps back to its key.
    #[test]
    fn store_namespace_keeps_two_workspaces_apart_and_maps_back() {
        let a = WorkloadKey::new(Some(lc("aaaa")), Some("default"), "web");
        let b = WorkloadKey::new(Some(lc("bbbb")), Some("default"), "web");
        // What a reflector keys on, without and with the mapping.
        let unmapped: HashSet<(Option<String>, String)> = [&a, &b]
            .iter()
            .map(|k| (k.namespace.clone(), k.name.clone()))
            .collect();
        assert_eq!(unmapped.len(), 1, "unmapped, the two collide");
        let mut store: HashMap<(Option<String>, String), &str> = HashMap::new();
        store.insert((a.store_namespace(), a.name.clone()), "copy of a");
        store.insert((b.store_namespace(), b.name.clone()), "copy of b");
        assert_eq!(store.len(), 2);
        for ((ns, name), value) in &store {
            let key = WorkloadKey::from_store(ns.as_deref(), name).expect("maps back");
            let expected = if key == a { "copy of a" } else { "copy of b" };
            assert!(key == a || key == b);
            assert_eq!(*value, expected);
        }
    }

    #[test]
    fn map_for_store_scopes_annotated_objects_only() {
        let mut tenant = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            annotations: Some(BTreeMap::from([(
                CLUSTER_ANNOTATION.to_owned(),
                "aaaa".to_owned(),
            )])),
            ..ObjectMeta::default()
        };
        let key = map_for_store(&mut tenant).expect("mapped");
        assert_eq!(tenant.namespace.as_deref(), Some("aaaa|default"));
        assert_eq!(
            key,
            WorkloadKey::new(Some(lc("aaaa")), Some("default"), "web")
        );
        let mut single = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        };
        let before = single.clone();
        map_for_store(&mut single).expect("mapped");
        assert_eq!(single, before, "single-workspace objects are untouched");
    }

    #[test]
    fn store_namespace_is_the_identity_in_single_workspace_mode() {
        let key = WorkloadKey::new(None, Some("default"), "web");
        assert_eq!(key.store_namespace().as_deref(), Some("default"));
        assert_eq!(
            WorkloadKey::from_store(Some("default"), "web").expect("key"),
            key
        );
        let cluster_scoped = WorkloadKey::new(None, None, "spread");
        assert_eq!(cluster_scoped.store_namespace(), None);
        assert_eq!(
            WorkloadKey::from_store(None, "spread").expect("key"),
            cluster_scoped
        );
    }

    #[test]
    fn cluster_scoped_keys_round_trip_and_bad_store_namespaces_are_refused() {
        let placement = WorkloadKey::new(Some(lc("aaaa")), None, "spread");
        assert_eq!(placement.store_namespace().as_deref(), Some("aaaa|"));
        assert_eq!(
            WorkloadKey::from_store(Some("aaaa|"), "spread").expect("key"),
            placement
        );
        let err = WorkloadKey::from_store(Some("root:x|default"), "web").expect_err("bad cluster");
        assert_eq!(
            err,
            TenancyError::InvalidStoreNamespace("root:x|default".into())
        );
        // The scoped form is no namespace a server accepts: a write that forgot to map back fails.
        assert!(!is_dns1123_label("aaaa|default"));
    }

    #[test]
    fn downstream_namespace_is_readable_stable_and_labelled() {
        let ns = downstream_namespace(&lc("2xcj4mhumds6z4ux"), "default");
        assert_eq!(ns.name, "tmc-2xcj4mhumds6z4ux-default-398d5b3ce607");
        assert_eq!(ns, downstream_namespace(&lc("2xcj4mhumds6z4ux"), "default"));
        assert_eq!(ns.labels[DOWNSTREAM_CLUSTER_LABEL], "2xcj4mhumds6z4ux");
        assert_eq!(ns.labels[DOWNSTREAM_NAMESPACE_LABEL], "default");
        assert_eq!(
            ns.annotations[DOWNSTREAM_LOCATOR_ANNOTATION],
            r#"{"logicalCluster":"2xcj4mhumds6z4ux","namespace":"default"}"#
        );
        assert_eq!(
            upstream_of(&ns.name, &ns.annotations),
            Some((lc("2xcj4mhumds6z4ux"), "default".to_owned()))
        );
    }

    #[test]
    fn downstream_namespaces_of_two_workspaces_differ() {
        let a = downstream_namespace(&lc("aaaa"), "default");
        let b = downstream_namespace(&lc("bbbb"), "default");
        assert_ne!(a.name, b.name);
        // A namespace that looks like another workspace's readable part still gets its own name.
        let c = downstream_namespace(&lc("aaaa"), "b-c");
        let d = downstream_namespace(&lc("aaaab"), "c");
        assert_ne!(c.name, d.name);
    }

    #[test]
    fn long_names_are_cut_to_a_valid_label_and_stay_unique() {
        let cluster = lc(&"z".repeat(63));
        let long_a = format!("{}-a", "n".repeat(59));
        let long_b = format!("{}-b", "n".repeat(59));
        let (a, b) = (
            downstream_namespace(&cluster, &long_a),
            downstream_namespace(&cluster, &long_b),
        );
        for ns in [&a, &b] {
            assert_eq!(ns.name.len(), 63);
            assert!(is_dns1123_label(&ns.name), "{}", ns.name);
        }
        assert_ne!(a.name, b.name, "same readable part, told apart by the hash");
        // A cut that ends on '-' is trimmed, not left as '--'.
        let dashed = downstream_namespace(&lc(&"q".repeat(45)), "x-y");
        assert!(
            is_dns1123_label(&dashed.name) && !dashed.name.contains("--"),
            "{}",
            dashed.name
        );
        // The upstream namespace and workspace stay readable in full on the labels.
        assert_eq!(a.labels[DOWNSTREAM_NAMESPACE_LABEL], long_a);
    }

    #[test]
    fn every_valid_input_gives_a_valid_unique_label() {
        let clusters = ["root", "a", "2xcj4mhumds6z4ux", &"k".repeat(63)].map(lc);
        let namespaces = [
            "default",
            "a",
            "kube-system",
            "x-",
            &"m".repeat(63),
            "a-b-c-d",
        ];
        let mut names = HashSet::new();
        for cluster in &clusters {
            for ns in namespaces {
                let name = downstream_namespace(cluster, ns).name;
                assert!(is_dns1123_label(&name), "{name}");
                assert!(names.insert(name));
            }
        }
    }

    #[test]
    fn a_namespace_whose_locator_does_not_match_its_name_is_not_ours() {
        let ns = downstream_namespace(&lc("aaaa"), "default");
        assert_eq!(upstream_of("tmc-something-else", &ns.annotations), None);
        assert_eq!(upstream_of(&ns.name, &BTreeMap::new()), None);
        let garbage = BTreeMap::from([(DOWNSTREAM_LOCATOR_ANNOTATION.to_owned(), "{".to_owned())]);
        assert_eq!(upstream_of(&ns.name, &garbage), None);
    }
}
