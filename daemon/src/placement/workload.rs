//! What placement reads of an upstream workload: which objects are never
//! placed, and the ABI summary a policy sees.

use std::collections::BTreeMap;

use kube::ResourceExt;
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

/// Annotations that hold a copy of the object as it was applied: for a
/// Secret that is its `data`/`stringData` in plain text, for other kinds it
/// may hold credentials too (environment values, ...). Never shown to a policy.
pub const OBJECT_COPY_ANNOTATIONS: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "kapp.k14s.io/original",
];

/// The only annotations a policy sees on a Secret: tmc's own placement hints
/// (any other annotation of a Secret may have been written by a tool that
/// copies its content).
pub const SECRET_ANNOTATION_PREFIX: &str = "tmc.kcp.io/";

/// Keys of tmc's protocol domain (`*workload.kcp.io/*`) are hidden from policies.
fn is_protocol_key(key: &str) -> bool {
    key.contains("workload.kcp.io/")
}

/// The labels a policy sees (docs/policy-abi.md, Workload).
fn public_labels(map: Option<&BTreeMap<String, String>>) -> StringMap {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| !is_protocol_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The annotations a policy sees on an object of `kind` (docs/policy-abi.md,
/// Workload): no protocol keys, no copies of the object, and on a Secret
/// only `tmc.kcp.io/` hints.
fn public_annotations(kind: &str, map: Option<&BTreeMap<String, String>>) -> StringMap {
    let secret = kind == "Secret";
    map.into_iter()
        .flatten()
        .filter(|(k, _)| {
            !is_protocol_key(k)
                && !OBJECT_COPY_ANNOTATIONS.contains(&k.as_str())
                && (!secret || k.starts_with(SECRET_ANNOTATION_PREFIX))
        })
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
        labels: public_labels(obj.metadata.labels.as_ref()),
        annotations: public_annotations(kind, obj.metadata.annotations.as_ref()),
        replicas,
    }
}

/// `namespace/name` of `obj`, as the kind's bookkeeping keys it.
pub fn key(obj: &DynamicObject) -> String {
    format!(
        "{}/{}",
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.name_any()
    )
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

    fn annotated(kind: &str, annotations: &[(&str, &str)]) -> Workload {
        let mut o = obj("demo", "db", json!({"stringData": {"password": "hunter2"}}));
        o.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let api_version = if kind == "Secret" { "v1" } else { "apps/v1" };
        summary(api_version, kind, &o)
    }

    const LAST_APPLIED: &str = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db"},"stringData":{"password":"hunter2"}}"#;

    #[test]
    fn last_applied_configuration_never_reaches_a_policy() {
        for kind in ["Secret", "Deployment", "ConfigMap"] {
            let w = annotated(
                kind,
                &[
                    (
                        "kubectl.kubernetes.io/last-applied-configuration",
                        LAST_APPLIED,
                    ),
                    ("kapp.k14s.io/original", LAST_APPLIED),
                    ("tmc.kcp.io/regions", "us-east"),
                ],
            );
            assert_eq!(
                w.annotations,
                [("tmc.kcp.io/regions".to_string(), "us-east".to_string())].into(),
                "{kind}"
            );
            let request = serde_json::to_string(&w).expect("serializes");
            assert!(!request.contains("hunter2"), "{kind}: {request}");
        }
    }

    #[test]
    fn a_secret_shows_only_tmc_hints_other_kinds_their_annotations() {
        let annotations = [
            ("tmc.kcp.io/regions", "us-east"),
            ("example.com/token-copy", "hunter2"),
            ("state.workload.kcp.io/west", "Sync"),
        ];
        let secret = annotated("Secret", &annotations);
        assert_eq!(
            secret.annotations,
            [("tmc.kcp.io/regions".to_string(), "us-east".to_string())].into()
        );
        let deployment = annotated("Deployment", &annotations);
        assert_eq!(
            deployment.annotations,
            [
                ("example.com/token-copy".to_string(), "hunter2".to_string()),
                ("tmc.kcp.io/regions".to_string(), "us-east".to_string()),
            ]
            .into(),
            "protocol keys hidden, the rest shown"
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
