//! What placement reads of an upstream workload: which objects are never
//! placed, and the ABI summary a policy sees.

use kube::api::DynamicObject;
use tmc_policy_sdk::StringMap;
use tmc_policy_sdk::abi::Workload;

/// Namespaces whose objects are never placed.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Why an object is never placed, or `None` when it may be.
pub fn excluded(kind: &str, obj: &DynamicObject) -> Option<&'static str> {
    let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
    if SYSTEM_NAMESPACES.contains(&ns) {
        return Some("system namespace");
    }
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    if kind == "ConfigMap" && name == "kube-root-ca.crt" {
        return Some("per-cluster root CA bundle");
    }
    if kind == "Secret"
        && obj.data.get("type").and_then(|t| t.as_str())
            == Some("kubernetes.io/service-account-token")
    {
        return Some("service account token");
    }
    None
}

/// Keys of tmc's own domain are hidden from policies.
fn public(map: Option<&std::collections::BTreeMap<String, String>>) -> StringMap {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| !k.contains("workload.kcp.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether objects of `kind` carry `spec.replicas`.
pub fn has_replicas(kind: &str) -> bool {
    matches!(kind, "Deployment" | "StatefulSet" | "ReplicaSet")
}

/// The ABI summary of `obj` (`apiVersion` and `kind` as given).
pub fn summary(api_version: &str, kind: &str, obj: &DynamicObject) -> Workload {
    let replicas = if has_replicas(kind) {
        let spec = obj
            .data
            .get("spec")
            .and_then(|s| s.get("replicas"))
            .and_then(|r| r.as_u64());
        Some(spec.map_or(1, |r| u32::try_from(r).unwrap_or(u32::MAX)))
    } else {
        None
    };
    Workload {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace: obj.metadata.namespace.clone().unwrap_or_default(),
        name: obj.metadata.name.clone().unwrap_or_default(),
        labels: public(obj.metadata.labels.as_ref()),
        annotations: public(obj.metadata.annotations.as_ref()),
        replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ApiResource;
    use serde_json::json;

    fn obj(ns: &str, name: &str, data: serde_json::Value) -> DynamicObject {
        let ar = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "apps",
            "v1",
            "Deployment",
        ));
        let mut o = DynamicObject::new(name, &ar).within(ns).data(data);
        o.metadata.labels = Some(
            [
                ("app".to_string(), "web".to_string()),
                ("state.workload.kcp.io/west".to_string(), "Sync".to_string()),
            ]
            .into(),
        );
        o
    }

    #[test]
    fn summary_reads_replicas_and_hides_protocol_keys() {
        let w = summary(
            "apps/v1",
            "Deployment",
            &obj("demo", "web", json!({"spec": {"replicas": 3}})),
        );
        assert_eq!(w.replicas, Some(3));
        assert_eq!(w.labels, [("app".to_string(), "web".to_string())].into());
        let d = summary(
            "apps/v1",
            "Deployment",
            &obj("demo", "web", json!({"spec": {}})),
        );
        assert_eq!(d.replicas, Some(1), "Deployment default");
        assert_eq!(
            summary("v1", "Service", &obj("demo", "web", json!({}))).replicas,
            None
        );
    }

    #[test]
    fn system_objects_are_excluded() {
        assert!(excluded("ConfigMap", &obj("demo", "kube-root-ca.crt", json!({}))).is_some());
        assert!(excluded("Deployment", &obj("kube-system", "coredns", json!({}))).is_some());
        assert!(
            excluded(
                "Secret",
                &obj(
                    "demo",
                    "t",
                    json!({"type": "kubernetes.io/service-account-token"})
                )
            )
            .is_some()
        );
        assert!(excluded("Deployment", &obj("demo", "web", json!({}))).is_none());
    }
}
