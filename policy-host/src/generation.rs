//! Immutable policy sets. A reload builds a new [`Generation`] and swaps it in
//! atomically; evaluations in flight keep the `Arc` of the one they started on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::module::{CompiledPolicy, PolicyKind, Tier};

/// State of one policy name in a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicyStatus {
    /// The file's current content is loaded and serving.
    Active,
    /// The file changed to something broken; the last good version serves.
    UpdateRefused,
    /// The file was deleted; the last good version serves.
    Deleted,
    /// The file is broken and there is no good version to serve.
    Refused,
}

impl PolicyStatus {
    /// Its name in JSON: `active`, `updateRefused`, `deleted` or `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::UpdateRefused => "updateRefused",
            Self::Deleted => "deleted",
            Self::Refused => "refused",
        }
    }
}

impl std::fmt::Display for PolicyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Active => "Active",
            Self::UpdateRefused => "Update refused, still serving last good version",
            Self::Deleted => "Deleted, still serving last good version",
            Self::Refused => "Refused, nothing to serve",
        })
    }
}

/// A loaded module serving a policy name.
#[derive(Clone)]
pub struct ActivePolicy {
    /// SHA-256 of the module bytes (hex).
    pub digest: String,
    pub kind: PolicyKind,
    /// The file it was loaded from; `None` for a module given as bytes
    /// ([`PolicyHost::load_module`](crate::PolicyHost::load_module)).
    pub source: Option<PathBuf>,
    pub loaded_at: SystemTime,
    pub(crate) compiled: Arc<CompiledPolicy>,
}

impl ActivePolicy {
    /// The compiler tier of the code serving it now.
    pub fn tier(&self) -> Tier {
        self.compiled.tier
    }

    /// The names of the module's function exports, sorted.
    pub fn exports(&self) -> Vec<String> {
        self.compiled.function_exports()
    }
}

impl std::fmt::Debug for ActivePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivePolicy")
            .field("digest", &self.digest)
            .field("kind", &self.kind)
            .field("source", &self.source)
            .field("loaded_at", &self.loaded_at)
            .field("tier", &self.compiled.tier)
            .finish()
    }
}

/// One policy name: what serves it (if anything), its status and last error.
#[derive(Debug, Clone)]
pub struct PolicyEntry {
    pub name: String,
    pub status: PolicyStatus,
    /// Why the latest file content was refused, if it was.
    pub last_error: Option<String>,
    /// The version serving evaluations.
    pub active: Option<ActivePolicy>,
}

/// One policy name of a generation as the admin API lists it (a row of
/// `tmcd policy list`), in camelCase JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInfo {
    pub name: String,
    /// SHA-256 of the module serving it, if one does.
    pub digest: Option<String>,
    pub kind: Option<PolicyKind>,
    pub status: PolicyStatus,
    /// `status` in words.
    pub status_text: String,
    /// Why the latest content was refused, if it was.
    pub last_error: Option<String>,
    /// The file of the version serving it (`None` without a version or for a
    /// module given as bytes).
    pub source: Option<PathBuf>,
    /// When the version serving it was loaded, in seconds since the Unix epoch.
    pub loaded_at: Option<u64>,
    /// True when a version answers evaluations (every status but `Refused`).
    pub serving: bool,
}

/// An immutable set of policies.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    /// Increases by one at every swap; 0 is the empty set before any load.
    pub number: u64,
    pub policies: BTreeMap<String, PolicyEntry>,
}

impl Generation {
    /// The entry of `name`, if that name was ever seen.
    pub fn get(&self, name: &str) -> Option<&PolicyEntry> {
        self.policies.get(name)
    }

    /// The version serving `name`, if any.
    pub fn active(&self, name: &str) -> Option<&ActivePolicy> {
        self.policies.get(name).and_then(|e| e.active.as_ref())
    }

    /// One row per policy name, sorted by name.
    pub fn policy_infos(&self) -> Vec<PolicyInfo> {
        self.policies
            .values()
            .map(|e| PolicyInfo {
                name: e.name.clone(),
                digest: e.active.as_ref().map(|a| a.digest.clone()),
                kind: e.active.as_ref().map(|a| a.kind),
                status: e.status,
                status_text: e.status.to_string(),
                last_error: e.last_error.clone(),
                source: e.active.as_ref().and_then(|a| a.source.clone()),
                loaded_at: e.active.as_ref().and_then(|a| {
                    a.loaded_at
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs())
                }),
                serving: e.active.is_some(),
            })
            .collect()
    }

    /// True when both generations serve the same digests with the same statuses.
    pub(crate) fn same_content(&self, other: &Generation) -> bool {
        let key = |g: &Generation| {
            g.policies
                .values()
                .map(|e| {
                    (
                        e.name.clone(),
                        e.status,
                        e.last_error.clone(),
                        e.active
                            .as_ref()
                            .map(|a| (a.digest.clone(), a.source.clone())),
                    )
                })
                .collect::<Vec<_>>()
        };
        key(self) == key(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_named_in_json_as_as_str_says() {
        for status in [
            PolicyStatus::Active,
            PolicyStatus::UpdateRefused,
            PolicyStatus::Deleted,
            PolicyStatus::Refused,
        ] {
            let json = serde_json::to_value(status).expect("serializes");
            assert_eq!(json, status.as_str());
            assert_eq!(
                serde_json::from_value::<PolicyStatus>(json).ok(),
                Some(status)
            );
        }
    }

    #[test]
    fn a_policy_info_reads_back_what_it_writes() {
        let info = PolicyInfo {
            name: "p".into(),
            digest: Some("ab".into()),
            kind: Some(PolicyKind::Both),
            status: PolicyStatus::UpdateRefused,
            status_text: PolicyStatus::UpdateRefused.to_string(),
            last_error: Some("broken".into()),
            source: Some("/etc/tmc/policies/p.wasm".into()),
            loaded_at: Some(7),
            serving: true,
        };
        let json = serde_json::to_value(&info).expect("serializes");
        let keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "digest",
                "kind",
                "lastError",
                "loadedAt",
                "name",
                "serving",
                "source",
                "status",
                "statusText"
            ],
            "the fields of the admin API"
        );
        assert_eq!(serde_json::from_value::<PolicyInfo>(json).ok(), Some(info));
    }
}
