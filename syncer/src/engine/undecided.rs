//! A copy whose upstream object records no decision for this target (another
//! writer wiped tmc's keys, or tmcd has not decided yet): it is kept, and
//! reported upstream so that tmcd knows it runs here and records a decision
//! for it: keep it (the state label again) or remove it (a deletion request,
//! after the copies it does choose are in place).

use kube::api::Api;
use kube::core::DynamicObject;
use serde_json::Value;
use tmc_api::decision::{CONTENT_HASH_ANNOTATION, TargetStatus};
use tmc_api::protocol::{is_our_copy, is_terminating};
use tracing::debug;

use super::cache::Side;
use super::{Engine, ObjectKey, Outcome, to_value};
use crate::error::Result;
use tmc_api::protocol::annotation;

impl Engine {
    /// Reports our live copy of `key`, if there is one; deletes nothing.
    pub(super) async fn report_undecided(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        object: &Value,
    ) -> Result<Outcome> {
        let what = self.describe(key);
        let live = match self.cached(Side::Downstream, key) {
            Some(live) => Some(to_value(&live, &what)?),
            None => {
                let ns = self.downstream_namespace(key);
                let down = self.api(&self.downstream, key.kind, ns.as_deref());
                match down.get_opt(&key.name).await {
                    Ok(live) => live.map(|l| to_value(&l, &what)).transpose()?,
                    Err(err) => {
                        return Err(self.downstream_error(format!("get copy of {what}"), err));
                    }
                }
            }
        };
        let Some(live) = live.filter(|live| {
            is_our_copy(live, self.target(), &self.ctx.source.synced_from) && !is_terminating(live)
        }) else {
            return Ok(Outcome::Done);
        };
        debug!(object = %what, "no decision recorded for this target; reporting the copy it keeps");
        let status = TargetStatus {
            applied_hash: annotation(&live, CONTENT_HASH_ANNOTATION)
                .unwrap_or_default()
                .to_string(),
            copy_generation: live.pointer("/metadata/generation").and_then(Value::as_i64),
            status: live.get("status").filter(|s| !s.is_null()).cloned(),
            ..TargetStatus::default()
        };
        self.report(key, up, object, status).await
    }
}

#[cfg(test)]
mod tests {
    //! Wiped keys and a deleted SyncTarget are no evidence: nothing is deleted.

    use http::{Method, StatusCode};
    use serde_json::json;

    use super::super::test_support::{deletes, engine, fake, key, methods, our_copy_route};
    use crate::engine::Outcome;

    /// `web` after `kubectl replace` without tmc's labels, annotations and finalizer.
    fn replaced() -> serde_json::Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
            "name": "web", "namespace": "shop", "resourceVersion": "9", "generation": 1},
            "spec": {"replicas": 2}})
    }

    #[tokio::test(start_paused = true)]
    async fn wiped_keys_keep_the_copy_and_report_it() {
        let (up, up_log) = fake(|method, _| match *method {
            Method::GET | Method::PATCH => Some((StatusCode::OK, replaced())),
            _ => None,
        });
        let (down, down_log) = fake(our_copy_route);
        let outcome = engine(up, down).reconcile(&key()).await.unwrap();
        assert!(
            deletes(&down_log).is_empty(),
            "{:?}",
            down_log.lock().unwrap()
        );
        assert!(
            matches!(outcome, Outcome::Done | Outcome::After(_)),
            "{outcome:?}"
        );
        assert!(
            methods(&up_log).iter().all(|m| m == "GET" || m == "PATCH"),
            "{:?}",
            up_log.lock().unwrap()
        );
    }

    #[tokio::test]
    async fn a_missing_synctarget_detaches_the_syncer() {
        // The object is being deleted upstream, which would remove the copy
        // of an attached syncer; a detached one touches nothing.
        let (up, up_log) = fake(|_, _| {
            let mut object = replaced();
            object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            Some((StatusCode::OK, object))
        });
        let (down, down_log) = fake(our_copy_route);
        let engine = engine(up, down);
        engine.set_target_missing(true);
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        assert!(up_log.lock().unwrap().is_empty());
        assert!(down_log.lock().unwrap().is_empty());
        assert!(engine.set_target_missing(false), "it was missing");
        engine.reconcile(&key()).await.unwrap();
        assert_eq!(
            deletes(&down_log).len(),
            1,
            "attached again, the upstream delete applies"
        );
    }
}
