//! Removing a copy: delete it (by uid, only if it is ours), wait until it is
//! gone, then clean our protocol keys and finalizer off the upstream object.

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::core::DynamicObject;
use serde_json::Value;
use tmc_api::protocol::{TargetRecord, is_our_copy, is_terminating};
use tracing::{debug, info};

use super::{Engine, ObjectKey, Outcome, to_value};
use crate::error::{Error, Result, is_not_found, is_object_not_found};

/// How long to wait before checking again that a deleted copy is gone.
const DELETE_POLL: Duration = Duration::from_secs(1);

impl Engine {
    /// Deletes the copy, waits until it is gone, then removes our protocol keys upstream.
    pub(super) async fn remove(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        object: &Value,
    ) -> Result<Outcome> {
        let what = self.describe(key);
        // Its copy under another namespace mapping would be left running
        // while the object forgot it.
        self.refuse_stranded(key)?;
        self.refuse_in_use(key, object).await?;
        if self.delete_copy(key, "removal requested upstream").await? {
            return Ok(Outcome::After(DELETE_POLL));
        }
        let record = TargetRecord::from_value(object, self.target());
        if !record.has_protocol_keys() {
            return Ok(Outcome::Done);
        }
        let patch = record.cleanup_patch();
        match up
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                info!(object = %what, target = %self.target(), "copy removed; protocol keys and finalizer cleaned up");
                Ok(Outcome::Done)
            }
            Err(err) if is_object_not_found(&err, &key.name) => Ok(Outcome::Done),
            Err(err) => Err(Error::upstream(
                format!("clean up protocol keys of {what}"),
                err,
            )),
        }
    }

    /// Deletes our copy of `key` if it exists. Returns `true` while a copy
    /// still exists (deleted now or terminating), `false` once it is gone.
    /// Objects without our labels are never touched.
    pub(super) async fn delete_copy(&self, key: &ObjectKey, why: &str) -> Result<bool> {
        let what = self.describe(key);
        let ns = self.downstream_namespace(key);
        let down = self.api(&self.downstream, key.kind, ns.as_deref());
        let live = match down.get_opt(&key.name).await {
            Ok(Some(live)) => to_value(&live, &what)?,
            Ok(None) => return Ok(false),
            Err(err) => return Err(self.downstream_error(format!("get copy of {what}"), err)),
        };
        self.health.update(|h| h.downstream_connected = true);
        if !is_our_copy(&live, self.target(), &self.ctx.source.synced_from) {
            debug!(object = %what, "downstream object is not our copy; leaving it alone");
            return Ok(false);
        }
        if is_terminating(&live) {
            return Ok(true);
        }
        let uid = live
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match down.delete(&key.name, &params).await {
            Ok(_) => {
                if let Some(uid) = uid {
                    self.remember_deleted(key, uid);
                }
                info!(object = %what, target = %self.target(), reason = why, "deleted copy");
                self.health.deleted(&self.kinds[key.kind].to_string());
                Ok(true)
            }
            Err(err) if is_not_found(&err) => Ok(false),
            Err(err) => Err(self.downstream_error(format!("delete copy of {what}"), err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use serde_json::json;

    use super::super::test_support::{copy, deletes, engine, fake, key, not_found, our_copy_route};
    use crate::engine::Outcome;

    #[tokio::test]
    async fn confirmed_absence_deletes_our_copy_by_uid() {
        let (up, _) = fake(|_, _| Some(not_found("web")));
        let (down, down_log) = fake(our_copy_route);
        let outcome = engine(up, down).reconcile(&key()).await.unwrap();
        assert_eq!(outcome, Outcome::Done);
        assert_eq!(
            deletes(&down_log),
            ["DELETE /apis/apps/v1/namespaces/shop/deployments/web"]
        );
    }

    #[tokio::test]
    async fn confirmed_absence_leaves_foreign_objects_alone() {
        let (up, _) = fake(|_, _| Some(not_found("web")));
        let (down, down_log) = fake(|method, _| match *method {
            // Same name, but the copy of another sync target.
            Method::GET => Some((StatusCode::OK, copy("web", "east"))),
            _ => Some((StatusCode::OK, json!({}))),
        });
        engine(up, down).reconcile(&key()).await.unwrap();
        assert!(deletes(&down_log).is_empty());
    }
}
