//! Who owns a copy's `spec.replicas`: tmc (the replicas of its decision) or
//! the physical cluster (an autoscaler there, or an explicit opt-in).
//!
//! A copy whose replicas the cluster owns is applied without `spec.replicas`,
//! so the syncer never fights an autoscaler. Server-side apply removes a field
//! that its only manager stops applying (a Deployment would fall back to one
//! replica), so before tmc's manager lets go of the field the syncer applies
//! the live value with a second manager, [`HANDOVER_MANAGER`], as the
//! Kubernetes documentation's "Transferring ownership" shows. The copy then
//! carries [`REPLICAS_OWNER_ANNOTATION`], naming the owner; when the owner goes
//! (the autoscaler is deleted) tmc applies its replicas again.

use std::fmt;
use std::str::FromStr;

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::Store;
use serde_json::Value;

use crate::error::Error;
use crate::kinds::SyncedKind;
use tmc_api::protocol::annotation;

/// Annotation naming who owns the replicas. On an upstream workload the value
/// `cluster` is the opt-in: the copies' replicas belong to their clusters
/// (set by tmc only when a copy is created). On a copy tmc writes it once it
/// has handed `spec.replicas` over, with the owner as value
/// (`HorizontalPodAutoscaler/<name>`, `cluster`).
pub const REPLICAS_OWNER_ANNOTATION: &str = "workload.kcp.io/replicas-owner";

/// The opt-in value of [`REPLICAS_OWNER_ANNOTATION`] on an upstream workload.
pub const OWNER_CLUSTER: &str = "cluster";

/// The field manager that holds `spec.replicas` while tmc's manager lets go of it.
pub const HANDOVER_MANAGER: &str = "tmc-replicas-handover";

/// Which copies' replicas the physical cluster owns (config: tmc.toml
/// `[sync] replicas_owner`, `tmc-syncer --replicas-owner`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicasPolicy {
    /// `autoscaler`: the copies a `HorizontalPodAutoscaler` on the cluster
    /// targets, and the workloads that opt in with [`REPLICAS_OWNER_ANNOTATION`].
    #[default]
    Autoscaler,
    /// `cluster`: every copy; tmc sets replicas only when it creates a copy.
    Cluster,
}

impl FromStr for ReplicasPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim() {
            "autoscaler" => Ok(Self::Autoscaler),
            "cluster" => Ok(Self::Cluster),
            other => Err(Error::InvalidReplicasPolicy {
                input: other.to_string(),
            }),
        }
    }
}

impl fmt::Display for ReplicasPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Autoscaler => "autoscaler",
            Self::Cluster => "cluster",
        })
    }
}

/// Who owns the replicas of one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicasOwner {
    /// tmc applies the replicas of its decision.
    Tmc,
    /// The cluster does (the value names who, for the copy's annotation).
    Cluster(String),
}

/// The `autoscaling/v2` HorizontalPodAutoscaler resource.
pub fn autoscaler_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling", "v2", "HorizontalPodAutoscaler"),
        "horizontalpodautoscalers",
    )
}

/// True for the kinds with a `scale` subresource that tmc decides replicas for.
pub fn has_replicas(kind: &SyncedKind) -> bool {
    kind.group == "apps"
        && matches!(
            kind.kind.as_str(),
            "Deployment" | "StatefulSet" | "ReplicaSet"
        )
}

/// The autoscalers known on the cluster: `None` until their watch has listed
/// them (nothing is known then).
pub struct Autoscalers<'a>(pub Option<&'a Store<DynamicObject>>);

impl Autoscalers<'_> {
    /// The name of an autoscaler in `namespace` whose `scaleTargetRef` names
    /// `name` of `kind`; `None` when there is none, `Err(())` when the
    /// autoscalers are not known yet.
    fn targeting(
        &self,
        kind: &SyncedKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, ()> {
        use futures::FutureExt;
        let Some(store) = self.0 else { return Err(()) };
        if store
            .wait_until_ready()
            .now_or_never()
            .is_none_or(|r| r.is_err())
        {
            return Err(());
        }
        let found = store.state().into_iter().find(|hpa| {
            hpa.metadata.namespace.as_deref() == Some(namespace)
                && scale_target(hpa)
                    .is_some_and(|(group, k, n)| group == kind.group && k == kind.kind && n == name)
        });
        Ok(found.and_then(|hpa| hpa.metadata.name.clone()))
    }
}

/// `(group, kind, name)` of an autoscaler's `spec.scaleTargetRef`.
pub fn scale_target(hpa: &DynamicObject) -> Option<(&str, &str, &str)> {
    let target = hpa.data.pointer("/spec/scaleTargetRef")?;
    let api_version = target
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    Some((
        group,
        target.get("kind")?.as_str()?,
        target.get("name")?.as_str()?,
    ))
}

/// Who owns the replicas of the copy `live` (the copy on the cluster, `None`
/// before it exists) of `upstream`, a workload of `kind`.
///
/// tmc always sets the replicas of a copy it creates. After that the cluster
/// owns them when the workload opts in, when `policy` is
/// [`ReplicasPolicy::Cluster`], or when an autoscaler targets the copy. A copy
/// already handed over stays with its owner until the autoscalers are known
/// (after a restart, before their watch has listed), so tmc never takes the
/// replicas back from an autoscaler it cannot see yet.
pub fn owner(
    policy: ReplicasPolicy,
    kind: &SyncedKind,
    upstream: &Value,
    live: Option<&Value>,
    autoscalers: &Autoscalers<'_>,
) -> ReplicasOwner {
    let Some(live) = live else {
        return ReplicasOwner::Tmc;
    };
    if !has_replicas(kind) {
        return ReplicasOwner::Tmc;
    }
    if annotation(upstream, REPLICAS_OWNER_ANNOTATION) == Some(OWNER_CLUSTER)
        || policy == ReplicasPolicy::Cluster
    {
        return ReplicasOwner::Cluster(OWNER_CLUSTER.to_string());
    }
    let namespace = live
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = live
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match autoscalers.targeting(kind, namespace, name) {
        Ok(Some(hpa)) => ReplicasOwner::Cluster(format!("HorizontalPodAutoscaler/{hpa}")),
        Ok(None) => ReplicasOwner::Tmc,
        Err(()) => match annotation(live, REPLICAS_OWNER_ANNOTATION) {
            Some(previous) => ReplicasOwner::Cluster(previous.to_string()),
            None => ReplicasOwner::Tmc,
        },
    }
}

/// The body that hands `spec.replicas` of `live` over to [`HANDOVER_MANAGER`]
/// (applied before tmc's manager stops applying the field), or `None` when
/// there is nothing to hand over: the copy has no replicas, or tmc handed
/// them over already (the copy carries [`REPLICAS_OWNER_ANNOTATION`]).
pub fn handover(live: &Value) -> Option<Value> {
    if annotation(live, REPLICAS_OWNER_ANNOTATION).is_some() {
        return None;
    }
    let replicas = live.pointer("/spec/replicas")?.clone();
    let meta = live.get("metadata")?;
    let mut metadata = serde_json::Map::new();
    for key in ["name", "namespace"] {
        if let Some(value) = meta.get(key) {
            metadata.insert(key.to_string(), value.clone());
        }
    }
    Some(serde_json::json!({
        "apiVersion": live.get("apiVersion")?,
        "kind": live.get("kind")?,
        "metadata": metadata,
        "spec": {"replicas": replicas},
    }))
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;

    fn deployment() -> SyncedKind {
        SyncedKind::parse("apps/v1/Deployment").unwrap()
    }

    fn live(annotations: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
               "spec": {"replicas": 3}})
    }

    fn upstream(annotations: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "annotations": annotations}})
    }

    fn hpa(namespace: &str, api_version: &str, kind: &str, name: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web-hpa", "namespace": namespace},
            "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": name},
                     "minReplicas": 1, "maxReplicas": 10}}))
        .unwrap()
    }

    fn listed(hpas: Vec<DynamicObject>) -> Writer<DynamicObject> {
        let mut writer = Writer::new(autoscaler_resource());
        writer.apply_watcher_event(&Event::Init);
        for hpa in hpas {
            writer.apply_watcher_event(&Event::InitApply(hpa));
        }
        writer.apply_watcher_event(&Event::InitDone);
        writer
    }

    #[test]
    fn an_autoscaler_naming_the_copy_owns_its_replicas() {
        let writer = listed(vec![
            hpa("other", "apps/v1", "Deployment", "web"),
            hpa("shop", "apps/v1", "StatefulSet", "web"),
        ]);
        let store = writer.as_reader();
        let known = Autoscalers(Some(&store));
        let policy = ReplicasPolicy::Autoscaler;
        let up = upstream(json!({}));
        // Another namespace's or another kind's autoscaler is not this copy's.
        assert_eq!(
            owner(policy, &deployment(), &up, Some(&live(json!({}))), &known),
            ReplicasOwner::Tmc
        );
        let writer = listed(vec![hpa("shop", "apps/v1", "Deployment", "web")]);
        let store = writer.as_reader();
        let known = Autoscalers(Some(&store));
        assert_eq!(
            owner(policy, &deployment(), &up, Some(&live(json!({}))), &known),
            ReplicasOwner::Cluster("HorizontalPodAutoscaler/web-hpa".into())
        );
        // A copy tmc has not created yet gets tmc's replicas.
        assert_eq!(
            owner(policy, &deployment(), &up, None, &known),
            ReplicasOwner::Tmc
        );
        // Kinds without a scale subresource are always tmc's.
        let config_map = SyncedKind::parse("v1/ConfigMap").unwrap();
        assert_eq!(
            owner(policy, &config_map, &up, Some(&live(json!({}))), &known),
            ReplicasOwner::Tmc
        );
    }

    #[test]
    fn a_handed_over_copy_stays_with_its_owner_until_the_autoscalers_are_known() {
        let handed = live(json!({REPLICAS_OWNER_ANNOTATION: "HorizontalPodAutoscaler/web-hpa"}));
        let up = upstream(json!({}));
        let policy = ReplicasPolicy::Autoscaler;
        // Not listed yet: kept.
        let unlisted = Writer::<DynamicObject>::new(autoscaler_resource());
        let store = unlisted.as_reader();
        assert_eq!(
            owner(
                policy,
                &deployment(),
                &up,
                Some(&handed),
                &Autoscalers(Some(&store))
            ),
            ReplicasOwner::Cluster("HorizontalPodAutoscaler/web-hpa".into())
        );
        assert_eq!(
            owner(
                policy,
                &deployment(),
                &up,
                Some(&handed),
                &Autoscalers(None)
            ),
            ReplicasOwner::Cluster("HorizontalPodAutoscaler/web-hpa".into())
        );
        // Listed, and the autoscaler is gone: tmc takes the replicas back.
        let writer = listed(vec![]);
        let store = writer.as_reader();
        assert_eq!(
            owner(
                policy,
                &deployment(),
                &up,
                Some(&handed),
                &Autoscalers(Some(&store))
            ),
            ReplicasOwner::Tmc
        );
    }

    #[test]
    fn the_workload_or_the_config_can_leave_replicas_to_the_cluster() {
        let none = Autoscalers(None);
        let opted_in = upstream(json!({REPLICAS_OWNER_ANNOTATION: "cluster"}));
        assert_eq!(
            owner(
                ReplicasPolicy::Autoscaler,
                &deployment(),
                &opted_in,
                Some(&live(json!({}))),
                &none
            ),
            ReplicasOwner::Cluster("cluster".into())
        );
        assert_eq!(
            owner(
                ReplicasPolicy::Cluster,
                &deployment(),
                &upstream(json!({})),
                Some(&live(json!({}))),
                &none
            ),
            ReplicasOwner::Cluster("cluster".into())
        );
        assert_eq!(
            "cluster".parse::<ReplicasPolicy>().unwrap(),
            ReplicasPolicy::Cluster
        );
        assert_eq!(ReplicasPolicy::default().to_string(), "autoscaler");
        let err = "hpa".parse::<ReplicasPolicy>().unwrap_err().to_string();
        assert!(
            err.contains("autoscaler") && err.contains("cluster"),
            "{err}"
        );
    }

    #[test]
    fn the_handover_applies_the_live_replicas_once() {
        assert_eq!(
            handover(&live(json!({}))),
            Some(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": "shop"},
                        "spec": {"replicas": 3}}))
        );
        assert_eq!(
            handover(&live(json!({REPLICAS_OWNER_ANNOTATION: "cluster"}))),
            None
        );
    }
}
