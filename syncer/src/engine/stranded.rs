//! Copies written under another namespace mapping (`namespace_mapping`
//! changed while they existed): the current mapping would put them in
//! another namespace. They are never moved, applied over, duplicated or
//! deleted: the object they belong to is refused, with an error naming the
//! copy and the fix, until the mapping is set back or the copy is removed.

use kube::core::DynamicObject;
use serde_json::Value;

use super::{Engine, ObjectKey};
use crate::error::{Error, Result};
use tmc_api::decision::UPSTREAM_NAMESPACE_ANNOTATION;
use tmc_api::protocol::annotation;
use tmc_api::protocol::is_our_copy;

impl Engine {
    /// Refuses `key` while the downstream cache holds a copy of it written
    /// under another namespace mapping (see [`Engine::stranded_copy`]).
    pub(super) fn refuse_stranded(&self, key: &ObjectKey) -> Result<()> {
        match self.stranded_copy(key) {
            Some(namespace) => Err(Error::StrandedCopy {
                object: self.describe(key),
                namespace,
                mapping: self.ctx.namespace_mapping.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The namespace of a copy of `key` that another namespace mapping wrote,
    /// if the downstream cache holds one (none without caches).
    fn stranded_copy(&self, key: &ObjectKey) -> Option<String> {
        let upstream_ns = key.namespace.as_deref()?;
        if !self.kinds[key.kind].namespaced {
            return None;
        }
        let caches = self.caches()?;
        caches.downstream[key.kind]
            .state()
            .iter()
            .filter(|copy| copy.metadata.name.as_deref() == Some(key.name.as_str()))
            .find_map(|copy| {
                let (namespace, upstream) = self.stranded(copy)?;
                (upstream == upstream_ns).then_some(namespace)
            })
    }

    /// `(namespace, upstream namespace)` of `copy` when it is ours and was
    /// written under another namespace mapping than the current one.
    pub(crate) fn stranded(&self, copy: &DynamicObject) -> Option<(String, String)> {
        let namespace = copy.metadata.namespace.clone()?;
        let meta: Value = serde_json::json!({
            "metadata": serde_json::to_value(&copy.metadata).ok()?
        });
        if !is_our_copy(&meta, &self.ctx.target, &self.ctx.source.synced_from) {
            return None;
        }
        let upstream = annotation(&meta, UPSTREAM_NAMESPACE_ANNOTATION);
        if self.ctx.namespace_mapping.wrote(&namespace, upstream) {
            return None;
        }
        let upstream = upstream.unwrap_or(&namespace).to_string();
        Some((namespace, upstream))
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use serde_json::json;

    use super::super::test_support::{
        cached_engine, copy, deletes, fake, key, methods, namespace_ensured, placed,
    };
    use crate::error::Error;

    /// Our copy of shop/web written under `prefix:tmc` (the engine maps `same`).
    fn prefixed_copy() -> serde_json::Value {
        let mut live = copy("web", "west");
        live["metadata"]["namespace"] = json!("tmc-shop");
        live["metadata"]["annotations"]["workload.kcp.io/upstream-namespace"] = json!("shop");
        live
    }

    #[tokio::test]
    async fn a_copy_under_another_mapping_is_neither_duplicated_nor_deleted() {
        let (up, up_log) = fake(|_, _| Some((StatusCode::OK, placed(json!({})))));
        let (down, down_log) = fake(|_, _| Some(super::super::test_support::not_found("web")));
        let object = placed(json!({}));
        let (engine, _w1, _w2) = cached_engine(up, down, Some(&object), Some(&prefixed_copy()));
        namespace_ensured(&engine);
        let err = engine.reconcile(&key()).await.unwrap_err();
        assert!(matches!(err, Error::StrandedCopy { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("tmc-shop") && message.contains("same") && message.contains("fix:"),
            "{message}"
        );
        // Looked for the copy where the current mapping puts it; created nothing there.
        assert_eq!(methods(&down_log), ["GET"]);
        // The refusal is reported upstream.
        assert_eq!(methods(&up_log), ["PATCH"]);

        // A removal request deletes nothing either.
        let (up, _) = fake(|_, _| {
            Some((
                StatusCode::OK,
                placed(json!({"deletion.internal.workload.kcp.io/west": "2026-01-01T00:00:00Z"})),
            ))
        });
        let (down, down_log) = fake(|_, _| None);
        let (engine, _w1, _w2) = cached_engine(up, down, None, Some(&prefixed_copy()));
        let err = engine.reconcile(&key()).await.unwrap_err();
        assert!(matches!(err, Error::StrandedCopy { .. }), "{err}");
        assert!(deletes(&down_log).is_empty());
        assert!(down_log.lock().unwrap().is_empty(), "{down_log:?}");
    }
}
