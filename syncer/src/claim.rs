//! The claim a syncer holds on its cluster, so that two control planes never
//! manage the same copies.
//!
//! Copies are recognised as ours by the synced-from label and the target
//! name. Two control planes configured with the same source identity and
//! target name would each take the other's copies for their own, and remove
//! the ones their own workspace does not place. So each syncer holds a
//! `coordination.k8s.io/v1` Lease on its cluster, `kube-system/tmc-<synced
//! from>-<target>` (cut to a valid name), whose holder is the UID of its
//! SyncTarget: unique per control plane, shared by the replicas of one tmcd.
//! A syncer that finds the claim held by another holder is refused: it
//! applies and deletes nothing and says why, until that claim has not been
//! renewed for the claim's duration (judged by when this process saw it
//! change, never by comparing clocks), when it takes over.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::identity::label_value;

/// Namespace of the claims (present in every Kubernetes cluster).
pub const CLAIM_NAMESPACE: &str = "kube-system";

/// The outcome of one [`Claim::renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimState {
    /// This syncer holds the claim: it may sync.
    Held,
    /// Another control plane holds it: this syncer must touch nothing.
    Refused {
        /// The other holder (a SyncTarget UID in another control plane).
        holder: String,
        /// A message naming the conflict and the fix.
        message: String,
    },
}

/// One syncer's claim on its cluster.
pub struct Claim {
    api: Api<Lease>,
    name: String,
    synced_from: String,
    target: String,
    duration: Duration,
    /// Holders this process has held the claim as (a SyncTarget deleted and
    /// created again gets a new UID; its own old claim is no conflict).
    ours: HashSet<String>,
    /// The foreign record last seen, and when this process saw it change.
    observed: Option<(String, Instant)>,
}

/// The Lease name of the claim of `synced_from` on `target`.
pub fn claim_name(synced_from: &str, target: &str) -> String {
    label_value(&format!("tmc-{synced_from}-{target}"))
        .to_ascii_lowercase()
        .replace(['_', '.'], "-")
}

impl Claim {
    /// The claim of `synced_from` on `target`, in the cluster of `downstream`;
    /// a holder that stops renewing loses it after `duration`.
    pub fn new(
        downstream: kube::Client,
        synced_from: &str,
        target: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(downstream, CLAIM_NAMESPACE),
            name: claim_name(synced_from, target),
            synced_from: synced_from.to_string(),
            target: target.to_string(),
            duration,
            ours: HashSet::new(),
            observed: None,
        }
    }

    /// Takes or renews the claim as `holder` (the SyncTarget's UID).
    pub async fn renew(&mut self, holder: &str) -> Result<ClaimState> {
        let what = || format!("claim {CLAIM_NAMESPACE}/{}", self.name);
        let lease = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|err| Error::downstream(format!("read {}", what()), err))?;
        let Some(mut lease) = lease else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(holder)),
            };
            self.api
                .create(&PostParams::default(), &lease)
                .await
                .map_err(|err| Error::downstream(format!("create {}", what()), err))?;
            self.ours.insert(holder.to_string());
            return Ok(ClaimState::Held);
        };
        let current = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        let mine = current.is_empty() || current == holder || self.ours.contains(&current);
        if !mine {
            let record = format!(
                "{current}@{}",
                lease
                    .metadata
                    .resource_version
                    .as_deref()
                    .unwrap_or_default()
            );
            let now = Instant::now();
            let since = match &self.observed {
                Some((seen, at)) if *seen == record => *at,
                _ => {
                    self.observed = Some((record, now));
                    now
                }
            };
            if now.duration_since(since) < self.duration {
                return Ok(ClaimState::Refused {
                    message: format!(
                        "another control plane (SyncTarget uid {current}) syncs into this cluster as \
                         synced-from {:?}, target {:?}: both would take each other's copies for their own; \
                         this syncer applies and deletes nothing until that claim ({CLAIM_NAMESPACE}/{}) \
                         is not renewed for {}s (fix: give each control plane its own `synced_from` in \
                         tmc.toml, or `--synced-from` for tmc-syncer)",
                        self.synced_from,
                        self.target,
                        self.name,
                        self.duration.as_secs()
                    ),
                    holder: current,
                });
            }
            tracing::warn!(claim = %self.name, previous = %current, "the claim was not renewed for {}s: taking it over", self.duration.as_secs());
        }
        lease.spec = Some(self.spec(holder));
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|err| Error::downstream(format!("renew {}", what()), err))?;
        self.ours.insert(holder.to_string());
        self.observed = None;
        Ok(ClaimState::Held)
    }

    fn spec(&self, holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_are_valid_object_names() {
        assert_eq!(claim_name("root-tmc", "west"), "tmc-root-tmc-west");
        let long = claim_name(&"a".repeat(80), "kcp-east");
        assert!(long.len() <= 63 && long.starts_with("tmc-a"), "{long}");
        assert_eq!(claim_name("Tmc.Workloads", "x"), "tmc-tmc-workloads-x");
    }
}
