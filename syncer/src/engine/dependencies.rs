//! A workload's copy is applied only once the objects its pod template
//! references (`tmc_api::dependencies`) are on the target: a pod must not
//! start without its ConfigMap, Secret, ServiceAccount or claim. Only
//! required references of kinds this syncer syncs are waited for (an
//! optional one does not stop a pod; a kind that is not synced cannot be
//! ordered here). An object of the same name that tmc did not create serves
//! the pod as well: it counts, and is never touched.

use std::time::Duration;

use kube::api::ListParams;
use serde_json::Value;
use tmc_api::dependencies::{self, DependencyKind, Reference};
use tmc_api::protocol::{Assignment, TargetRecord, is_our_copy, our_copies_selector};

use super::cache::Side;
use super::{Engine, ObjectKey, to_value};
use crate::error::{Error, Result, is_object_not_found};

/// How soon a dependency kept for a copy that still uses it is checked again.
const IN_USE_RECHECK: Duration = Duration::from_secs(5);

impl Engine {
    /// `Ok` when every required dependency of `object` (the upstream object
    /// of `key`) is on the target, else [`Error::DependencyMissing`] naming
    /// the first one that is not and why.
    pub(super) async fn check_dependencies(&self, key: &ObjectKey, object: &Value) -> Result<()> {
        let kind = &self.kinds[key.kind].kind;
        if !dependencies::has_pod_template(kind) {
            return Ok(());
        }
        for reference in dependencies::references(kind, object) {
            if reference.optional {
                continue;
            }
            let Some(dep) = self.dependency_key(key, &reference) else {
                continue;
            };
            if self.on_target(&dep).await? {
                continue;
            }
            return Err(Error::DependencyMissing {
                object: self.describe(key),
                target: self.target().to_string(),
                dependency: self.describe(&dep),
                why: self.why_missing(&dep).await,
            });
        }
        Ok(())
    }

    /// Before a derived copy of a dependency goes (tmcd found no workload
    /// that needs it on this target), the last proof on the target itself:
    /// [`Error::Requeue`] while a copy of ours of some workload in its
    /// namespace, listed from the cluster just now, still references it (a
    /// workload placed here since, which tmcd's caches had not shown yet,
    /// or an old copy not updated yet). The removal of an upstream object
    /// that is being deleted, or of a copy a placement of its own decided,
    /// is not held.
    pub(super) async fn refuse_in_use(&self, key: &ObjectKey, object: &Value) -> Result<()> {
        let kind = &self.kinds[key.kind];
        let Some(dependency) = DependencyKind::of(&kind.group, &kind.kind) else {
            return Ok(());
        };
        let record = TargetRecord::from_value(object, self.target());
        if record.terminating || !dependencies::is_derived(record.recorded.result.as_ref()) {
            return Ok(());
        }
        let ns = self.downstream_namespace(key);
        for (index, user_kind) in self.kinds.iter().enumerate() {
            if !dependencies::has_pod_template(&user_kind.kind) {
                continue;
            }
            let api = self.api(&self.downstream, index, ns.as_deref());
            let ours = our_copies_selector(&self.ctx.source.synced_from);
            let copies = api
                .list(&ListParams::default().labels(&ours))
                .await
                .map_err(|err| {
                    self.downstream_error(
                        format!(
                            "list {} to check that no copy uses {}",
                            user_kind.plural,
                            self.describe(key)
                        ),
                        err,
                    )
                })?;
            for copy in copies.items {
                let copy = to_value(&copy, &self.describe(key))?;
                let synced_from = &self.ctx.source.synced_from;
                if !is_our_copy(&copy, self.target(), synced_from) {
                    continue;
                }
                let uses = dependencies::references(&user_kind.kind, &copy)
                    .iter()
                    .any(|r| r.kind == dependency && r.name == key.name);
                if uses {
                    let user = copy
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    return Err(Error::Requeue {
                        what: format!(
                            "{} stays on {}: the copy of {} {user} there still references it",
                            self.describe(key),
                            self.target(),
                            user_kind.kind
                        ),
                        after: IN_USE_RECHECK,
                    });
                }
            }
        }
        Ok(())
    }

    /// The key of `reference` (in the namespace of `key`), when its kind is synced here.
    fn dependency_key(&self, key: &ObjectKey, reference: &Reference) -> Option<ObjectKey> {
        let kind = self
            .kinds
            .iter()
            .position(|k| DependencyKind::of(&k.group, &k.kind) == Some(reference.kind))?;
        Some(ObjectKey {
            kind,
            namespace: key.namespace.clone(),
            name: reference.name.clone(),
        })
    }

    /// Whether the object of `dep` exists on the target and is not being
    /// deleted: our copy as the downstream cache holds it, or else whatever
    /// a GET finds under its name.
    async fn on_target(&self, dep: &ObjectKey) -> Result<bool> {
        if let Some(copy) = self.cached(Side::Downstream, dep) {
            return Ok(copy.metadata.deletion_timestamp.is_none());
        }
        let ns = self.downstream_namespace(dep);
        let down = self.api(&self.downstream, dep.kind, ns.as_deref());
        match down.get_opt(&dep.name).await {
            Ok(found) => Ok(found.is_some_and(|o| o.metadata.deletion_timestamp.is_none())),
            Err(err) => Err(self.downstream_error(format!("get {}", self.describe(dep)), err)),
        }
    }

    /// Why the dependency `dep` is not on the target, from its upstream object.
    async fn why_missing(&self, dep: &ObjectKey) -> String {
        let object = match self.cached(Side::Upstream, dep) {
            Some(cached) => to_value(&cached, &self.describe(dep)).ok(),
            None => None,
        };
        let object = match object {
            Some(object) => object,
            None => {
                let read = match self.upstream_api(dep) {
                    Ok(api) => api.get(&dep.name).await.map_err(Some),
                    Err(err) => {
                        return format!("cannot be read in the workspace: {err}");
                    }
                };
                match read {
                    Ok(found) => match to_value(&self.as_stored(found), &self.describe(dep)) {
                        Ok(value) => value,
                        Err(err) => return err.to_string(),
                    },
                    Err(Some(err)) if is_object_not_found(&err, &dep.name) => {
                        return "does not exist in the workspace".into();
                    }
                    Err(err) => {
                        return format!(
                            "cannot be read in the workspace: {}",
                            err.map(|e| e.to_string()).unwrap_or_default()
                        );
                    }
                }
            }
        };
        let record = TargetRecord::from_value(&object, self.target());
        match record.assignment() {
            Assignment::Sync => match record.recorded.status.and_then(|s| s.error) {
                Some(error) => format!("cannot be applied there: {error}"),
                None => "is being applied there".into(),
            },
            Assignment::Remove => "is being removed there".into(),
            Assignment::Undecided => "is not placed there (tmcd has not decided it yet, or a placement of its own governs it and does not choose this target)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use serde_json::{Value, json};

    use super::super::test_support::{fake, key, namespace_ensured, not_found};
    use super::*;
    use crate::copy::CopyContext;
    use crate::health::HealthCell;
    use crate::identity::{NamespaceMapping, SourceIdentity};
    use crate::kinds::SyncedKind;

    /// `shop/web` placed on west, its pod template mounting ConfigMap `cfg`
    /// and (optionally) Secret `maybe`.
    fn web() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
            "name": "web", "namespace": "shop", "resourceVersion": "3", "generation": 1,
            "labels": {"state.workload.kcp.io/west": "Sync"},
            "finalizers": ["workload.kcp.io/syncer-west"]},
            "spec": {"replicas": 1, "template": {"spec": {
                "volumes": [{"name": "c", "configMap": {"name": "cfg"}},
                            {"name": "s", "secret": {"secretName": "maybe", "optional": true}}],
                "containers": [{"name": "app", "image": "app:1"}]}}}})
    }

    fn engine(up: kube::Client, down: kube::Client) -> Engine {
        let ctx = CopyContext {
            target: "west".into(),
            source: SourceIdentity::new("root:tmc"),
            namespace_mapping: NamespaceMapping::Same,
        };
        let kinds = ["apps/v1/Deployment", "v1/ConfigMap", "v1/Secret"]
            .iter()
            .map(|k| SyncedKind::parse(k).unwrap())
            .collect();
        let engine = Engine::new(ctx, kinds, up, down, HealthCell::new("west"));
        namespace_ensured(&engine);
        engine
    }

    /// Upstream: web, and no ConfigMap `cfg`.
    fn upstream(method: &Method, path: &str) -> Option<(StatusCode, Value)> {
        if path.ends_with("/configmaps/cfg") {
            return Some(not_found("cfg"));
        }
        match *method {
            Method::GET | Method::PATCH => Some((StatusCode::OK, web())),
            _ => None,
        }
    }

    /// Downstream without `cfg` (and without a copy of web).
    fn down_without(method: &Method, path: &str) -> Option<(StatusCode, Value)> {
        match *method {
            Method::GET if path.ends_with("/configmaps/cfg") => Some(not_found("cfg")),
            Method::GET => Some(not_found("web")),
            _ => Some((StatusCode::OK, json!({}))),
        }
    }

    /// Downstream with a `cfg` that someone made by hand (not tmc's).
    fn down_with_hand_made(method: &Method, path: &str) -> Option<(StatusCode, Value)> {
        match *method {
            Method::GET if path.ends_with("/configmaps/cfg") => Some((
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "cfg", "namespace": "shop"}}),
            )),
            Method::GET => Some(not_found("web")),
            _ => Some((StatusCode::OK, web())),
        }
    }

    fn writes_to(log: &std::sync::Mutex<Vec<String>>, resource: &str) -> usize {
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| !l.starts_with("GET") && l.contains(resource))
            .count()
    }

    #[tokio::test]
    async fn a_copy_waits_for_a_missing_dependency_and_says_why() {
        let (up, up_log) = fake(upstream);
        let (down, down_log) = fake(down_without);
        let err = engine(up, down).reconcile(&key()).await.unwrap_err();
        let Error::DependencyMissing {
            dependency,
            why,
            target,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(
            (dependency.as_str(), target.as_str()),
            ("ConfigMap shop/cfg", "west")
        );
        assert_eq!(why, "does not exist in the workspace");
        assert_eq!(
            writes_to(&down_log, "deployments"),
            0,
            "{:?}",
            down_log.lock().unwrap()
        );
        assert!(
            !down_log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("secrets")),
            "an optional reference is not waited for"
        );
        // The error is reported on the workload.
        assert_eq!(writes_to(&up_log, "deployments/web"), 1);
    }

    #[tokio::test]
    async fn an_object_tmc_did_not_create_counts_and_is_not_touched() {
        let (up, _) = fake(upstream);
        let (down, down_log) = fake(down_with_hand_made);
        let _ = engine(up, down).reconcile(&key()).await;
        assert_eq!(
            writes_to(&down_log, "deployments/web"),
            1,
            "the copy is applied: {:?}",
            down_log.lock().unwrap()
        );
        assert_eq!(writes_to(&down_log, "configmaps"), 0);
    }

    /// ConfigMap `shop/cfg` upstream: a derived copy on west whose removal
    /// tmcd asked for; `terminating`: the object itself is being deleted.
    fn cfg_to_remove(terminating: bool) -> Value {
        let result = serde_json::to_string(&tmc_api::decision::TargetResult {
            placement: dependencies::DERIVED.into(),
            ..Default::default()
        })
        .unwrap();
        let mut cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "cfg", "namespace": "shop", "resourceVersion": "4",
            "labels": {"state.workload.kcp.io/west": "Sync"},
            "annotations": {
                tmc_api::decision::result_annotation("west"): result,
                tmc_api::decision::deletion_annotation("west"): "2026-12-04T10:00:00Z",
            },
            "finalizers": ["workload.kcp.io/syncer-west"]}});
        if terminating {
            cfg["metadata"]["deletionTimestamp"] = json!("2026-12-04T10:00:00Z");
        }
        cfg
    }

    fn up_cfg(method: &Method, _: &str) -> Option<(StatusCode, Value)> {
        match *method {
            Method::GET | Method::PATCH => Some((StatusCode::OK, cfg_to_remove(false))),
            _ => None,
        }
    }

    fn up_cfg_terminating(method: &Method, _: &str) -> Option<(StatusCode, Value)> {
        match *method {
            Method::GET | Method::PATCH => Some((StatusCode::OK, cfg_to_remove(true))),
            _ => None,
        }
    }

    /// Our copy of `cfg` on west, and the Deployments `copies` lists.
    fn down_with(method: &Method, path: &str, copies: Vec<Value>) -> Option<(StatusCode, Value)> {
        match *method {
            Method::GET if path.ends_with("/deployments") => Some((
                StatusCode::OK,
                json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": copies}),
            )),
            Method::GET if path.ends_with("/configmaps/cfg") => {
                let mut ours = super::super::test_support::copy("cfg", "west");
                ours["apiVersion"] = json!("v1");
                ours["kind"] = json!("ConfigMap");
                Some((StatusCode::OK, ours))
            }
            Method::DELETE => Some((
                StatusCode::OK,
                json!({"kind": "Status", "status": "Success"}),
            )),
            _ => None,
        }
    }

    /// Our copy of web on west, its pod template mounting `cfg`.
    fn web_copy_using_cfg() -> Value {
        let mut copy = super::super::test_support::copy("web", "west");
        copy["spec"] = web()["spec"].clone();
        copy
    }

    fn down_in_use(method: &Method, path: &str) -> Option<(StatusCode, Value)> {
        down_with(method, path, vec![web_copy_using_cfg()])
    }

    fn down_unused(method: &Method, path: &str) -> Option<(StatusCode, Value)> {
        // web's copy there no longer mounts cfg; a Deployment that is not ours does.
        let mut hand_made = web_copy_using_cfg();
        hand_made["metadata"]["labels"] = json!({});
        down_with(
            method,
            path,
            vec![super::super::test_support::copy("web", "west"), hand_made],
        )
    }

    fn cfg_key() -> ObjectKey {
        ObjectKey {
            kind: 1,
            namespace: Some("shop".into()),
            name: "cfg".into(),
        }
    }

    #[tokio::test]
    async fn a_derived_copy_stays_while_a_copy_here_still_references_it() {
        let (up, _) = fake(up_cfg);
        let (down, down_log) = fake(down_in_use);
        let err = engine(up, down).reconcile(&cfg_key()).await.unwrap_err();
        let Error::Requeue { what, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            what,
            "ConfigMap shop/cfg stays on west: the copy of Deployment web there still references it"
        );
        assert!(super::super::test_support::deletes(&down_log).is_empty());
    }

    #[tokio::test]
    async fn a_derived_copy_no_copy_of_ours_references_goes() {
        let (up, _) = fake(up_cfg);
        let (down, down_log) = fake(down_unused);
        let _ = engine(up, down).reconcile(&cfg_key()).await.unwrap();
        assert_eq!(
            super::super::test_support::deletes(&down_log),
            ["DELETE /api/v1/namespaces/shop/configmaps/cfg"]
        );
    }

    #[tokio::test]
    async fn a_dependency_deleted_upstream_is_removed_whoever_uses_it() {
        let (up, _) = fake(up_cfg_terminating);
        let (down, down_log) = fake(down_in_use);
        let _ = engine(up, down).reconcile(&cfg_key()).await.unwrap();
        assert_eq!(
            super::super::test_support::deletes(&down_log),
            ["DELETE /api/v1/namespaces/shop/configmaps/cfg"]
        );
        assert!(
            !down_log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.ends_with("/deployments")),
            "no list: the user deleted it"
        );
    }
}
