//! The objects a workload's pod template references in its own namespace:
//! ConfigMaps, Secrets, a ServiceAccount and PersistentVolumeClaims. tmcd
//! places them where the workloads that reference them run, and a syncer
//! applies a workload's copy only once they are there; both read the
//! references with [`references`], so the two sides cannot disagree.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::decision::TargetResult;

/// The `placement` of a derived result, the decision of a dependency that
/// follows the workloads referencing it: no placement is named so (a name
/// cannot hold parentheses), so no placement counts a dependency as its own.
pub const DERIVED: &str = "(dependency)";

/// True when `result` is a derived decision (not one of an own placement).
pub fn is_derived(result: Option<&TargetResult>) -> bool {
    result.is_some_and(|r| r.placement == DERIVED)
}

/// A kind of object a pod template can reference (all in the core group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DependencyKind {
    /// `v1/ConfigMap`: volumes, projected sources, `envFrom`, `env.valueFrom`.
    ConfigMap,
    /// `v1/Secret`: volumes, projected sources, `envFrom`, `env.valueFrom`,
    /// `imagePullSecrets`.
    Secret,
    /// `v1/ServiceAccount`: `serviceAccountName` (other than `default`,
    /// which every namespace has).
    ServiceAccount,
    /// `v1/PersistentVolumeClaim`: `persistentVolumeClaim` volumes.
    PersistentVolumeClaim,
}

impl DependencyKind {
    /// Every dependency kind.
    pub const ALL: [Self; 4] = [
        Self::ConfigMap,
        Self::Secret,
        Self::ServiceAccount,
        Self::PersistentVolumeClaim,
    ];

    /// The Kubernetes kind (`ConfigMap`).
    pub fn kind(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
            Self::ServiceAccount => "ServiceAccount",
            Self::PersistentVolumeClaim => "PersistentVolumeClaim",
        }
    }

    /// The dependency kind of API `group` and `kind`, if it is one.
    pub fn of(group: &str, kind: &str) -> Option<Self> {
        if !group.is_empty() {
            return None;
        }
        Self::ALL.into_iter().find(|k| k.kind() == kind)
    }
}

impl fmt::Display for DependencyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// One object a pod template references, in the workload's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    /// What kind of object.
    pub kind: DependencyKind,
    /// Its name.
    pub name: String,
    /// Every reference to it is marked `optional: true`: the pod starts
    /// without it, so a syncer does not wait for it.
    pub optional: bool,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// The pod spec of a workload of `kind`: `spec` of a Pod,
/// `spec.jobTemplate.spec.template.spec` of a CronJob, and
/// `spec.template.spec` of any other kind that has one (Deployment,
/// StatefulSet, DaemonSet, ReplicaSet, Job, ...). `None` for kinds without
/// a pod template (ConfigMap, Service, ...).
pub fn pod_spec<'a>(kind: &str, object: &'a Value) -> Option<&'a Value> {
    let spec = match kind {
        "Pod" => object.pointer("/spec"),
        "CronJob" => object.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => object.pointer("/spec/template/spec"),
    }?;
    spec.get("containers").is_some().then_some(spec)
}

/// True when workloads of `kind` have a pod template (see [`pod_spec`]).
pub fn has_pod_template(kind: &str) -> bool {
    matches!(
        kind,
        "Pod"
            | "CronJob"
            | "Deployment"
            | "StatefulSet"
            | "DaemonSet"
            | "ReplicaSet"
            | "Job"
            | "ReplicationController"
    )
}

/// What the pod template of `object` (of `kind`) references, sorted and
/// each object once (optional only when every reference to it is). Names
/// that are missing or empty are skipped; the `default` ServiceAccount is
/// not a dependency (every namespace has its own).
pub fn references(kind: &str, object: &Value) -> Vec<Reference> {
    let Some(spec) = pod_spec(kind, object) else {
        return Vec::new();
    };
    let mut found = Found::default();
    for volume in items(spec, "volumes") {
        found.add_at(DependencyKind::ConfigMap, volume, "/configMap/name");
        found.add_at(DependencyKind::Secret, volume, "/secret/secretName");
        found.add_at(
            DependencyKind::PersistentVolumeClaim,
            volume,
            "/persistentVolumeClaim/claimName",
        );
        if let Some(sources) = volume.pointer("/projected/sources") {
            for source in sources.as_array().into_iter().flatten() {
                found.add_at(DependencyKind::ConfigMap, source, "/configMap/name");
                found.add_at(DependencyKind::Secret, source, "/secret/name");
            }
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for container in items(spec, list) {
            for from in items(container, "envFrom") {
                found.add_at(DependencyKind::ConfigMap, from, "/configMapRef/name");
                found.add_at(DependencyKind::Secret, from, "/secretRef/name");
            }
            for env in items(container, "env") {
                found.add_at(
                    DependencyKind::ConfigMap,
                    env,
                    "/valueFrom/configMapKeyRef/name",
                );
                found.add_at(DependencyKind::Secret, env, "/valueFrom/secretKeyRef/name");
            }
        }
    }
    for secret in items(spec, "imagePullSecrets") {
        found.add(DependencyKind::Secret, secret.get("name"), false);
    }
    let account = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"));
    if account.and_then(Value::as_str) != Some("default") {
        found.add(DependencyKind::ServiceAccount, account, false);
    }
    found
        .0
        .into_iter()
        .map(|((kind, name), optional)| Reference {
            kind,
            name,
            optional,
        })
        .collect()
}

/// The items of the array `field` of `value` (none when absent).
fn items<'a>(value: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// (kind, name) -> optional, merged so that one required reference wins.
#[derive(Default)]
struct Found(BTreeMap<(DependencyKind, String), bool>);

impl Found {
    /// The reference whose name is at `pointer` in `value`; its `optional`
    /// flag is the sibling of the name (`configMap.optional`, ...).
    fn add_at(&mut self, kind: DependencyKind, value: &Value, pointer: &str) {
        let Some(name) = value.pointer(pointer) else {
            return;
        };
        let parent = pointer.rsplit_once('/').map_or("", |(p, _)| p);
        let optional = value
            .pointer(&format!("{parent}/optional"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        self.add(kind, Some(name), optional);
    }

    fn add(&mut self, kind: DependencyKind, name: Option<&Value>, optional: bool) {
        let Some(name) = name.and_then(Value::as_str).filter(|n| !n.is_empty()) else {
            return;
        };
        let entry = self.0.entry((kind, name.to_string())).or_insert(optional);
        *entry = *entry && optional;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use DependencyKind::{ConfigMap, PersistentVolumeClaim, Secret, ServiceAccount};

    fn r(kind: DependencyKind, name: &str, optional: bool) -> Reference {
        Reference {
            kind,
            name: name.into(),
            optional,
        }
    }

    /// A pod spec with every reference form.
    fn every_form() -> Value {
        json!({
            "serviceAccountName": "runner",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "configMap": {"name": "cm-volume"}},
                {"name": "b", "secret": {"secretName": "secret-volume", "optional": true}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "d", "projected": {"sources": [
                    {"configMap": {"name": "cm-projected"}},
                    {"secret": {"name": "secret-projected", "optional": true}},
                    {"serviceAccountToken": {"path": "token"}},
                ]}},
                {"name": "e", "emptyDir": {}},
            ],
            "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "cm-init"}}]}],
            "containers": [{
                "name": "app",
                "envFrom": [
                    {"configMapRef": {"name": "cm-envfrom", "optional": true}},
                    {"secretRef": {"name": "secret-envfrom"}},
                ],
                "env": [
                    {"name": "A", "value": "plain"},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm-key", "key": "k"}}},
                    {"name": "C", "valueFrom": {"secretKeyRef": {"name": "secret-key", "key": "k"}}},
                    {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
            }],
            "ephemeralContainers": [{"name": "debug", "env": [
                {"name": "E", "valueFrom": {"secretKeyRef": {"name": "secret-debug", "key": "k", "optional": true}}},
            ]}],
        })
    }

    fn every_reference() -> Vec<Reference> {
        vec![
            r(ConfigMap, "cm-envfrom", true),
            r(ConfigMap, "cm-init", false),
            r(ConfigMap, "cm-key", false),
            r(ConfigMap, "cm-projected", false),
            r(ConfigMap, "cm-volume", false),
            r(Secret, "pull", false),
            r(Secret, "secret-debug", true),
            r(Secret, "secret-envfrom", false),
            r(Secret, "secret-key", false),
            r(Secret, "secret-projected", true),
            r(Secret, "secret-volume", true),
            r(ServiceAccount, "runner", false),
            r(PersistentVolumeClaim, "data", false),
        ]
    }

    #[test]
    fn every_reference_form_of_a_deployment() {
        let deployment = json!({"spec": {"template": {"spec": every_form()}}});
        assert_eq!(references("Deployment", &deployment), every_reference());
    }

    #[test]
    fn pods_cronjobs_and_other_templates_are_read_where_their_spec_is() {
        let pod = json!({"spec": every_form()});
        assert_eq!(references("Pod", &pod), every_reference());
        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": every_form()}}}}});
        assert_eq!(references("CronJob", &cron), every_reference());
        for kind in ["StatefulSet", "DaemonSet", "Job", "ReplicaSet"] {
            let obj = json!({"spec": {"template": {"spec": every_form()}}});
            assert_eq!(references(kind, &obj), every_reference(), "{kind}");
            assert!(has_pod_template(kind));
        }
        // A CronJob is not read as a Deployment, nor the other way round.
        assert!(references("Deployment", &cron).is_empty());
        assert!(
            references(
                "Pod",
                &json!({"spec": {"template": {"spec": every_form()}}})
            )
            .is_empty()
        );
    }

    #[test]
    fn kinds_without_a_pod_template_reference_nothing() {
        let config_map = json!({"data": {"containers": "x"}});
        assert!(references("ConfigMap", &config_map).is_empty());
        let service = json!({"spec": {"selector": {"app": "web"}}});
        assert!(references("Service", &service).is_empty());
        assert!(!has_pod_template("Service"));
    }

    #[test]
    fn one_required_reference_makes_the_dependency_required() {
        let deployment = json!({"spec": {"template": {"spec": {
            "volumes": [{"name": "a", "configMap": {"name": "shared", "optional": true}}],
            "containers": [{"name": "app", "envFrom": [{"configMapRef": {"name": "shared"}}]}],
        }}}});
        assert_eq!(
            references("Deployment", &deployment),
            [r(ConfigMap, "shared", false)]
        );
    }

    #[test]
    fn the_default_service_account_and_empty_names_are_no_dependencies() {
        for account in [json!("default"), json!(""), Value::Null] {
            let deployment = json!({"spec": {"template": {"spec": {
                "serviceAccountName": account,
                "volumes": [{"name": "a", "configMap": {"name": ""}}, {"name": "b", "secret": {}}],
                "containers": [{"name": "app"}],
            }}}});
            assert!(
                references("Deployment", &deployment).is_empty(),
                "{deployment}"
            );
        }
        // The deprecated field still names an account.
        let deprecated = json!({"spec": {"template": {"spec": {
            "serviceAccount": "old", "containers": [{"name": "app"}]}}}});
        assert_eq!(
            references("Deployment", &deprecated),
            [r(ServiceAccount, "old", false)]
        );
    }

    #[test]
    fn dependency_kinds_are_core_kinds_only() {
        assert_eq!(DependencyKind::of("", "Secret"), Some(Secret));
        assert_eq!(DependencyKind::of("", "Deployment"), None);
        assert_eq!(DependencyKind::of("example.com", "Secret"), None);
    }
}
