//! Counting the watch requests tmcd holds open, per resource: a tower layer
//! under its control-plane clients. A watch is open from its request until
//! its response body is dropped, so the count is what the API server (or
//! kcp's virtual workspace) serves tmcd right now, not what tmcd meant to
//! start. In export mode it stays one per resource whatever the number of
//! bound workspaces (the `tmcd_watches` gauge).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

/// Open watch requests per resource; clones share the counts.
#[derive(Clone, Default)]
pub struct OpenWatches {
    counts: Arc<Mutex<BTreeMap<String, i64>>>,
}

impl OpenWatches {
    /// Open watches per resource (`plural` or `plural.group`), including
    /// resources whose watches all closed (0).
    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        self.lock().clone()
    }

    fn add(&self, resource: &str, delta: i64) {
        *self.lock().entry(resource.to_owned()).or_default() += delta;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S> Layer<S> for OpenWatches {
    type Service = CountWatches<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountWatches {
            inner,
            watches: self.clone(),
        }
    }
}

/// The service of [`OpenWatches`].
#[derive(Clone)]
pub struct CountWatches<S> {
    inner: S,
    watches: OpenWatches,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CountWatches<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body,
{
    type Response = Response<Counted<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let open = watched_resource(request.uri()).map(|resource| {
            self.watches.add(&resource, 1);
            Open {
                watches: self.watches.clone(),
                resource,
            }
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            // A failed request drops `open` here: the watch never opened.
            let response = response.await?;
            Ok(response.map(|body| Counted {
                body: Box::pin(body),
                _open: open,
            }))
        })
    }
}

/// One open watch; counted down when dropped.
struct Open {
    watches: OpenWatches,
    resource: String,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.watches.add(&self.resource, -1);
    }
}

/// A response body that holds its watch open until dropped.
pub struct Counted<B> {
    body: Pin<Box<B>>,
    _open: Option<Open>,
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.body.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The resource a request watches (`plural` for the core group,
/// `plural.group` otherwise), if it is a watch: `watch=true` (or `1`) in the
/// query, resource the last path segment after `/api/<version>` or
/// `/apis/<group>/<version>` (and `namespaces/<ns>`), whatever prefix a kcp
/// workspace or virtual workspace puts before them.
pub fn watched_resource(uri: &http::Uri) -> Option<String> {
    let watching = uri
        .query()?
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    if !watching {
        return None;
    }
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.iter().rposition(|s| *s == "api" || *s == "apis") {
        Some(i) if segments[i] == "api" => ("", segments.get(i + 2..)?),
        Some(i) => (*segments.get(i + 1)?, segments.get(i + 3..)?),
        None => return None,
    };
    let resource = match rest {
        [resource] => *resource,
        ["namespaces", _, resource] => *resource,
        _ => return None,
    };
    Some(if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(uri: &str) -> Option<String> {
        watched_resource(&uri.parse().expect("uri"))
    }

    #[test]
    fn watches_are_named_by_resource_and_group_under_any_prefix() {
        assert_eq!(
            of("/apis/apps/v1/deployments?watch=true&resourceVersion=5").as_deref(),
            Some("deployments.apps")
        );
        assert_eq!(
            of("/services/apiexport/abc/tmc/clusters/*/apis/apps/v1/deployments?allowWatchBookmarks=true&watch=true").as_deref(),
            Some("deployments.apps")
        );
        assert_eq!(
            of("/clusters/root:tmc/api/v1/namespaces?watch=1").as_deref(),
            Some("namespaces")
        );
        assert_eq!(
            of("/api/v1/namespaces/demo/configmaps?watch=true").as_deref(),
            Some("configmaps")
        );
        assert_eq!(
            of("/apis/workload.kcp.io/v1alpha1/synctargets?watch=true").as_deref(),
            Some("synctargets.workload.kcp.io")
        );
    }

    #[test]
    fn lists_gets_and_writes_are_no_watches() {
        assert_eq!(of("/apis/apps/v1/deployments"), None);
        assert_eq!(of("/apis/apps/v1/deployments?limit=500"), None);
        assert_eq!(
            of("/apis/apps/v1/namespaces/a/deployments/web?watch=true"),
            None
        );
        assert_eq!(of("/version?watch=true"), None);
    }

    #[tokio::test]
    async fn a_watch_counts_until_its_body_is_dropped() {
        use tower::ServiceExt as _;
        let watches = OpenWatches::default();
        let service = watches.layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(
                http_body_util::Empty::<bytes::Bytes>::new(),
            ))
        }));
        let request = |uri: &str| Request::get(uri).body(()).expect("request");
        let first = service
            .clone()
            .oneshot(request("/apis/apps/v1/deployments?watch=true"))
            .await
            .expect("response");
        let list = service
            .clone()
            .oneshot(request("/apis/apps/v1/deployments"))
            .await
            .expect("response");
        assert_eq!(watches.snapshot().get("deployments.apps"), Some(&1));
        drop(list);
        assert_eq!(watches.snapshot().get("deployments.apps"), Some(&1));
        drop(first);
        assert_eq!(watches.snapshot().get("deployments.apps"), Some(&0));
    }
}
