//! Building the desired downstream copy of an upstream object: strip what the
//! server and the protocol own, apply the target's recorded decision, stamp
//! the system labels/annotations, and hash the content.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tmc_api::decision::{
    CONTENT_HASH_ANNOTATION, MANAGED_LABEL, SOURCE_CLUSTER_ANNOTATION, SYNC_TARGET_ANNOTATION,
    SYNC_TIMESTAMP_ANNOTATION, SYNCED_FROM_LABEL, TargetResult, UPSTREAM_NAMESPACE_ANNOTATION,
    result_annotation,
};
use tmc_api::protocol::{TargetRecord, annotation};
use tmc_api::tenancy::DOWNSTREAM_CLUSTER_LABEL;

use crate::error::{Error, Result};
use crate::identity::{NamespaceMapping, SourceIdentity};
use crate::replicas::{REPLICAS_OWNER_ANNOTATION, ReplicasOwner};

/// Annotations never copied downstream: they describe the upstream object.
const UPSTREAM_ONLY_ANNOTATIONS: &[&str] = &[
    "kcp.io/cluster",
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// What the copies of one syncer have in common.
#[derive(Debug, Clone)]
pub struct CopyContext {
    /// The SyncTarget name.
    pub target: String,
    /// Where the copies come from.
    pub source: SourceIdentity,
    /// Namespace mapping of the copies.
    pub namespace_mapping: NamespaceMapping,
}

/// A desired copy and the digest of its content.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredCopy {
    /// The object to apply (apiVersion, kind, metadata, and the rest of the upstream body).
    pub object: Value,
    /// Digest of the content (everything but the timestamp and hash annotations).
    pub hash: String,
}

/// True for the label/annotation keys of the tmc protocol (`*workload.kcp.io/*`),
/// which are never copied from upstream.
pub fn is_protocol_key(key: &str) -> bool {
    key.split_once('/').is_some_and(|(prefix, _)| {
        prefix == "workload.kcp.io" || prefix.ends_with(".workload.kcp.io")
    })
}

/// The target's [`TargetResult`] as the upstream object records it; an
/// error names the object and the annotation when it does not parse.
pub fn target_result(upstream: &Value, target: &str) -> Result<Option<TargetResult>> {
    let recorded = TargetRecord::from_value(upstream, target).recorded;
    let (Some(raw), None) = (&recorded.result_raw, &recorded.result) else {
        return Ok(recorded.result);
    };
    let err = serde_json::from_str::<TargetResult>(raw)
        .err()
        .map_or_else(|| "unreadable".to_string(), |err| err.to_string());
    Err(Error::InvalidObject {
        object: object_name(upstream),
        reason: format!(
            "annotation {} is not a valid TargetResult JSON ({err}); tmcd rewrites it on the next placement",
            result_annotation(target)
        ),
    })
}

/// `namespace/name` (or `name`) of an object, for messages.
pub fn object_name(object: &Value) -> String {
    let meta = object.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Builds the desired copy of `upstream` for the context's target.
///
/// `previous` is the live copy, if any: its sync timestamp is kept when the
/// content hash is unchanged. `now` stamps the timestamp otherwise.
pub fn build_copy(
    upstream: &Value,
    ctx: &CopyContext,
    result: Option<&TargetResult>,
    previous: Option<&Value>,
    now: DateTime<Utc>,
) -> Result<DesiredCopy> {
    build_copy_with_owner(upstream, ctx, result, &ReplicasOwner::Tmc, previous, now)
}

/// [`build_copy`] for a copy whose replicas `owner` owns: when the cluster
/// does, the copy has no `spec.replicas` (tmc leaves the field to its owner)
/// and carries [`REPLICAS_OWNER_ANNOTATION`] naming the owner.
pub fn build_copy_with_owner(
    upstream: &Value,
    ctx: &CopyContext,
    result: Option<&TargetResult>,
    owner: &ReplicasOwner,
    previous: Option<&Value>,
    now: DateTime<Utc>,
) -> Result<DesiredCopy> {
    let Value::Object(source) = upstream else {
        return Err(Error::InvalidObject {
            object: object_name(upstream),
            reason: "not a JSON object".to_string(),
        });
    };
    let mut copy = Map::new();
    for (key, value) in source {
        match key.as_str() {
            "metadata" | "status" => {}
            _ => {
                copy.insert(key.clone(), value.clone());
            }
        }
    }
    let meta = source.get("metadata").and_then(Value::as_object);
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidObject {
            object: object_name(upstream),
            reason: "metadata.name is missing".to_string(),
        })?;
    let upstream_ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);

    let mut labels = string_map(meta.and_then(|m| m.get("labels")));
    let mut annotations = string_map(meta.and_then(|m| m.get("annotations")));
    labels.retain(|k, _| !is_protocol_key(k));
    annotations
        .retain(|k, _| !is_protocol_key(k) && !UPSTREAM_ONLY_ANNOTATIONS.contains(&k.as_str()));

    if let Some(result) = result {
        result.labels.apply_to(&mut labels);
        result.annotations.apply_to(&mut annotations);
        // Transformation edits cannot forge or drop protocol keys.
        labels.retain(|k, _| !is_protocol_key(k));
        annotations.retain(|k, _| !is_protocol_key(k));
        if let Some(replicas) = result.replicas
            && let Some(Value::Object(spec)) = copy.get_mut("spec")
        {
            spec.insert("replicas".to_string(), Value::from(replicas));
        }
    }
    strip_allocated_fields(&mut copy);
    if let ReplicasOwner::Cluster(who) = owner {
        if let Some(Value::Object(spec)) = copy.get_mut("spec") {
            spec.remove("replicas");
        }
        annotations.insert(REPLICAS_OWNER_ANNOTATION.to_string(), who.clone());
    }

    labels.insert(MANAGED_LABEL.to_string(), "true".to_string());
    labels.insert(
        SYNCED_FROM_LABEL.to_string(),
        ctx.source.synced_from.clone(),
    );
    // A copy of a tenant workspace names that workspace, in labels too
    // (`kubectl get -l tenancy.workload.kcp.io/logical-cluster=<cluster>`).
    let tenancy = upstream_ns.and_then(|ns| ctx.namespace_mapping.tenancy(ns));
    let source = match &tenancy {
        Some(tenancy) => {
            labels.extend(tenancy.labels.clone());
            tenancy.labels[DOWNSTREAM_CLUSTER_LABEL].clone()
        }
        None => ctx.source.workspace_path.clone(),
    };
    annotations.insert(SOURCE_CLUSTER_ANNOTATION.to_string(), source);
    annotations.insert(SYNC_TARGET_ANNOTATION.to_string(), ctx.target.clone());

    let mut metadata = Map::new();
    metadata.insert("name".to_string(), Value::from(name));
    if let Some(ns) = upstream_ns {
        metadata.insert(
            "namespace".to_string(),
            Value::from(ctx.namespace_mapping.downstream(ns)),
        );
        if ctx.namespace_mapping.annotates() {
            annotations.insert(UPSTREAM_NAMESPACE_ANNOTATION.to_string(), ns.to_string());
        }
    }
    metadata.insert("labels".to_string(), to_value_map(labels));
    metadata.insert("annotations".to_string(), to_value_map(annotations));
    copy.insert("metadata".to_string(), Value::Object(metadata));

    let mut object = Value::Object(copy);
    let hash = content_hash(&object);
    let previous_hash = previous.and_then(|p| annotation(p, CONTENT_HASH_ANNOTATION));
    let timestamp = match previous.and_then(|p| annotation(p, SYNC_TIMESTAMP_ANNOTATION)) {
        Some(old) if previous_hash == Some(hash.as_str()) => old.to_string(),
        _ => now.to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    if let Some(Value::Object(annotations)) = object.pointer_mut("/metadata/annotations") {
        annotations.insert(
            SYNC_TIMESTAMP_ANNOTATION.to_string(),
            Value::from(timestamp),
        );
        annotations.insert(
            CONTENT_HASH_ANNOTATION.to_string(),
            Value::from(hash.clone()),
        );
    }
    Ok(DesiredCopy { object, hash })
}

/// Removes fields the upstream API server allocated that are invalid on
/// another cluster (a Service's cluster IPs, unless headless).
fn strip_allocated_fields(copy: &mut Map<String, Value>) {
    let is_service = copy.get("kind").and_then(Value::as_str) == Some("Service")
        && copy.get("apiVersion").and_then(Value::as_str) == Some("v1");
    if !is_service {
        return;
    }
    if let Some(Value::Object(spec)) = copy.get_mut("spec") {
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        if !headless {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
    }
}

fn string_map(value: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn to_value_map<I: IntoIterator<Item = (String, String)>>(map: I) -> Value {
    Value::Object(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
}

/// Hex SHA-256 (first 32 digits) of the canonical JSON of `object` (keys
/// sorted at every level), ignoring the timestamp and hash annotations.
pub fn content_hash(object: &Value) -> String {
    let mut hashed = object.clone();
    if let Some(Value::Object(annotations)) = hashed.pointer_mut("/metadata/annotations") {
        annotations.remove(SYNC_TIMESTAMP_ANNOTATION);
        annotations.remove(CONTENT_HASH_ANNOTATION);
    }
    let mut canonical = String::new();
    write_canonical(&hashed, &mut canonical);
    let mut digest = hex::encode(Sha256::digest(canonical.as_bytes()));
    digest.truncate(32);
    digest
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// True when every field of `desired` has the same value in `live` (objects
/// may hold more fields in `live`, e.g. server defaults; arrays must have the
/// same length and match element-wise). Used to skip a no-op apply.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| is_subset(dv, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tmc_policy_sdk::MapEdits;

    fn ctx(mapping: NamespaceMapping) -> CopyContext {
        CopyContext {
            target: "west".to_string(),
            source: SourceIdentity::new("root:org:team"),
            namespace_mapping: mapping,
        }
    }

    fn upstream() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "uid": "u-1",
                "resourceVersion": "42",
                "generation": 3,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "kubectl"}],
                "ownerReferences": [{"name": "x"}],
                "finalizers": ["workload.kcp.io/syncer-west"],
                "labels": {"app": "web", "state.workload.kcp.io/west": "Sync", "state.workload.kcp.io/east": "Sync"},
                "annotations": {
                    "team": "a",
                    "kcp.io/cluster": "2abc",
                    "result.workload.kcp.io/west": "{\"replicas\":2}",
                    "status.workload.kcp.io/east": "{}",
                    "deletion.internal.workload.kcp.io/east": "2026-01-01T00:00:00Z"
                }
            },
            "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"readyReplicas": 5}
        })
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-02-03T04:05:06Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn copy_drops_server_and_protocol_fields_and_applies_the_result() {
        let up = upstream();
        let result = target_result(&up, "west").unwrap().unwrap();
        let copy = build_copy(
            &up,
            &ctx(NamespaceMapping::Same),
            Some(&result),
            None,
            now(),
        )
        .unwrap();
        let obj = &copy.object;
        assert_eq!(obj["spec"]["replicas"], 2);
        assert!(obj.get("status").is_none());
        let meta = obj["metadata"].as_object().unwrap();
        let mut keys: Vec<&str> = meta.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["annotations", "labels", "name", "namespace"]);
        assert_eq!(obj["metadata"]["namespace"], "shop");
        assert_eq!(
            obj["metadata"]["labels"],
            json!({"app": "web", "workload.kcp.io/managed": "true", "workload.kcp.io/synced-from": "root-org-team"})
        );
        assert_eq!(
            obj["metadata"]["annotations"],
            json!({
                "team": "a",
                "workload.kcp.io/source-cluster": "root:org:team",
                "workload.kcp.io/sync-target": "west",
                "workload.kcp.io/sync-timestamp": "2026-02-03T04:05:06Z",
                "workload.kcp.io/content-hash": copy.hash,
            })
        );
    }

    #[test]
    fn transformation_edits_apply_but_cannot_touch_protocol_keys() {
        let mut result = TargetResult {
            labels: MapEdits::default(),
            ..TargetResult::default()
        };
        result.labels.set.insert("tier".into(), "gold".into());
        result
            .labels
            .set
            .insert("workload.kcp.io/managed".into(), "false".into());
        result.labels.remove.push("app".into());
        result
            .annotations
            .set
            .insert("region".into(), "west".into());
        let copy = build_copy(
            &upstream(),
            &ctx(NamespaceMapping::Same),
            Some(&result),
            None,
            now(),
        )
        .unwrap();
        let labels = &copy.object["metadata"]["labels"];
        assert_eq!(labels["tier"], "gold");
        assert!(labels.get("app").is_none());
        assert_eq!(labels["workload.kcp.io/managed"], "true");
        assert_eq!(copy.object["metadata"]["annotations"]["region"], "west");
        // Without a replicas decision the upstream replicas stand.
        assert_eq!(copy.object["spec"]["replicas"], 5);
    }

    #[test]
    fn hash_is_stable_and_timestamp_kept_while_content_is_unchanged() {
        let c = ctx(NamespaceMapping::Same);
        let first = build_copy(&upstream(), &c, None, None, now()).unwrap();
        let later = now() + chrono::Duration::hours(1);
        // Upstream-only churn (resourceVersion, status, other targets' keys) does not change the hash.
        let mut churned = upstream();
        churned["metadata"]["resourceVersion"] = json!("99");
        churned["status"] = json!({"readyReplicas": 1});
        churned["metadata"]["annotations"]["status.workload.kcp.io/east"] = json!("{\"x\":1}");
        let second = build_copy(&churned, &c, None, Some(&first.object), later).unwrap();
        assert_eq!(second.hash, first.hash);
        assert_eq!(second.object, first.object);
        // A content change gets a new hash and a new timestamp.
        let mut changed = upstream();
        changed["spec"]["replicas"] = json!(7);
        let third = build_copy(&changed, &c, None, Some(&first.object), later).unwrap();
        assert_ne!(third.hash, first.hash);
        assert_eq!(
            annotation(&third.object, SYNC_TIMESTAMP_ANNOTATION),
            Some("2026-02-03T05:05:06Z")
        );
    }

    #[test]
    fn a_copy_whose_replicas_the_cluster_owns_leaves_them_out() {
        let up = upstream();
        let result = target_result(&up, "west").unwrap().unwrap();
        let c = ctx(NamespaceMapping::Same);
        let owner = ReplicasOwner::Cluster("HorizontalPodAutoscaler/web".into());
        let mut opted_in = up.clone();
        opted_in["metadata"]["annotations"][REPLICAS_OWNER_ANNOTATION] = json!("cluster");
        let tmc = build_copy(&opted_in, &c, Some(&result), None, now()).unwrap();
        let left = build_copy_with_owner(&up, &c, Some(&result), &owner, None, now()).unwrap();
        assert!(
            left.object["spec"].get("replicas").is_none(),
            "{}",
            left.object
        );
        assert_eq!(
            left.object["spec"]["selector"],
            tmc.object["spec"]["selector"]
        );
        assert_eq!(
            annotation(&left.object, REPLICAS_OWNER_ANNOTATION),
            Some("HorizontalPodAutoscaler/web")
        );
        assert_ne!(left.hash, tmc.hash, "the handover is a change of content");
        // The upstream opt-in is a protocol key: never copied as such.
        assert_eq!(annotation(&tmc.object, REPLICAS_OWNER_ANNOTATION), None);
        assert_eq!(tmc.object["spec"]["replicas"], 2);
    }

    #[test]
    fn hash_ignores_key_order() {
        let a = json!({"a": 1, "b": {"c": [1, {"d": 2, "e": 3}]}});
        let b = json!({"b": {"c": [1, {"e": 3, "d": 2}]}, "a": 1});
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&json!({"a": 2})));
    }

    #[test]
    fn prefixed_mapping_annotates_the_upstream_namespace() {
        let copy = build_copy(
            &upstream(),
            &ctx("prefix:tmc".parse().unwrap()),
            None,
            None,
            now(),
        )
        .unwrap();
        assert_eq!(copy.object["metadata"]["namespace"], "tmc-shop");
        assert_eq!(
            annotation(&copy.object, UPSTREAM_NAMESPACE_ANNOTATION),
            Some("shop")
        );
    }

    #[test]
    fn services_lose_allocated_cluster_ips_unless_headless() {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "ports": [{"port": 80}]}
        });
        let copy = build_copy(&svc, &ctx(NamespaceMapping::Same), None, None, now()).unwrap();
        assert!(copy.object["spec"].get("clusterIP").is_none());
        assert!(copy.object["spec"].get("clusterIPs").is_none());
        svc["spec"]["clusterIP"] = json!("None");
        let copy = build_copy(&svc, &ctx(NamespaceMapping::Same), None, None, now()).unwrap();
        assert_eq!(copy.object["spec"]["clusterIP"], "None");
    }

    #[test]
    fn protocol_keys_are_recognised() {
        for key in [
            "workload.kcp.io/managed",
            "state.workload.kcp.io/west",
            "deletion.internal.workload.kcp.io/x",
        ] {
            assert!(is_protocol_key(key), "{key}");
        }
        for key in [
            "app",
            "kcp.io/cluster",
            "example.com/workload.kcp.io",
            "notworkload.kcp.io/x",
        ] {
            assert!(!is_protocol_key(key), "{key}");
        }
    }

    #[test]
    fn bad_result_annotation_names_the_key() {
        let mut up = upstream();
        up["metadata"]["annotations"]["result.workload.kcp.io/west"] = json!("{nope");
        let err = target_result(&up, "west").unwrap_err().to_string();
        assert!(
            err.contains("result.workload.kcp.io/west") && err.contains("shop/web"),
            "{err}"
        );
        assert_eq!(target_result(&up, "east").unwrap(), None);
    }

    #[test]
    fn subset_detects_drift_but_tolerates_defaults() {
        let desired =
            json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}}});
        let live = json!({"spec": {"replicas": 2, "strategy": {}, "template": {"spec": {"containers": [{"name": "c", "imagePullPolicy": "Always"}]}}}});
        assert!(is_subset(&desired, &live));
        let drifted =
            json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c"}]}}}});
        assert!(!is_subset(&desired, &drifted));
        let extra_item = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}, {"name": "d"}]}}}});
        assert!(!is_subset(&desired, &extra_item));
    }
}
