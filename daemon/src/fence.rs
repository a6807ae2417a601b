//! The write fence: a tower layer under the leader's kube clients that
//! refuses every write (POST, PUT, PATCH, DELETE) once the fence is closed,
//! so no task of a former leader, however it was spawned, sends a write
//! after its renew deadline. Reads pass: a standby keeps its caches.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::{Method, Request};
use tower::{BoxError, Layer, Service};

/// Shared open/closed switch and counters; clones share them.
#[derive(Clone, Default)]
pub struct Fence {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    open: AtomicBool,
    sent: AtomicU64,
    refused: AtomicU64,
    last_sent: Mutex<Option<SystemTime>>,
    closed_at: Mutex<Option<SystemTime>>,
}

/// A write refused because this replica does not lead (any more).
#[derive(Debug, thiserror::Error)]
#[error(
    "{method} {path} refused: this tmcd replica is not the leader (fenced after its renew deadline or on losing the lease)"
)]
pub struct Fenced {
    method: Method,
    path: String,
}

impl Fence {
    /// A closed fence: no write passes until [`Fence::open`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets writes through (leadership acquired).
    pub fn open(&self) {
        self.inner.open.store(true, Ordering::SeqCst);
    }

    /// Refuses every write from now on (leadership lost or deadline passed);
    /// records when.
    pub fn close(&self) {
        // Under the lock `admit` holds: no write is stamped after `closed_at`.
        let _writes = lock(&self.inner.last_sent);
        if self.inner.open.swap(false, Ordering::SeqCst) {
            *lock(&self.inner.closed_at) = Some(SystemTime::now());
        }
    }

    /// Whether writes pass.
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Writes let through so far.
    pub fn writes_sent(&self) -> u64 {
        self.inner.sent.load(Ordering::SeqCst)
    }

    /// Writes refused so far.
    pub fn writes_refused(&self) -> u64 {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// When the last write was let through (wall clock of this host).
    pub fn last_write_sent(&self) -> Option<SystemTime> {
        *lock(&self.inner.last_sent)
    }

    /// When the fence last closed (wall clock of this host).
    pub fn closed_at(&self) -> Option<SystemTime> {
        *lock(&self.inner.closed_at)
    }

    /// Whether `req` may be sent now; counts it either way.
    fn admit(&self, method: &Method) -> bool {
        if !is_write(method) {
            return true;
        }
        // Check and count under the same lock as `last_sent`, so a write
        // counted as sent is never stamped after the fence closed.
        let mut last = lock(&self.inner.last_sent);
        if !self.is_open() {
            self.inner.refused.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        self.inner.sent.fetch_add(1, Ordering::SeqCst);
        *last = Some(SystemTime::now());
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `method` changes state on the server.
pub fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl<S> Layer<S> for Fence {
    type Service = FencedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FencedService {
            inner,
            fence: self.clone(),
        }
    }
}

/// The service under a [`Fence`].
#[derive(Clone)]
pub struct FencedService<S> {
    inner: S,
    fence: Fence,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for FencedService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !self.fence.admit(req.method()) {
            let refused = Fenced {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
            };
            return Box::pin(async move { Err(Box::new(refused) as BoxError) });
        }
        let call = self.inner.call(req);
        Box::pin(async move { call.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    fn echo() -> impl Service<
        Request<()>,
        Response = &'static str,
        Error = BoxError,
        Future = std::future::Ready<Result<&'static str, BoxError>>,
    > + Clone {
        tower::service_fn(|_req: Request<()>| std::future::ready(Ok::<_, BoxError>("sent")))
    }

    fn request(method: Method) -> Request<()> {
        Request::builder()
            .method(method)
            .uri("/apis/apps/v1/deployments")
            .body(())
            .expect("request")
    }

    #[tokio::test]
    async fn a_closed_fence_refuses_writes_and_lets_reads_pass() {
        let fence = Fence::new();
        let svc = fence.layer(echo());
        let err = svc
            .clone()
            .oneshot(request(Method::PATCH))
            .await
            .expect_err("closed");
        assert!(
            err.to_string()
                .contains("PATCH /apis/apps/v1/deployments refused")
        );
        assert_eq!(
            svc.clone()
                .oneshot(request(Method::GET))
                .await
                .expect("read"),
            "sent"
        );
        assert_eq!((fence.writes_sent(), fence.writes_refused()), (0, 1));

        fence.open();
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            svc.clone().oneshot(request(method)).await.expect("open");
        }
        assert_eq!(fence.writes_sent(), 3);
        let last = fence.last_write_sent().expect("stamped");

        fence.close();
        let closed = fence.closed_at().expect("closed");
        assert!(last <= closed);
        assert!(svc.clone().oneshot(request(Method::PUT)).await.is_err());
        assert_eq!((fence.writes_sent(), fence.writes_refused()), (3, 2));
        assert_eq!(fence.last_write_sent(), Some(last));
    }

    #[test]
    fn only_safe_methods_are_reads() {
        assert!(!is_write(&Method::GET));
        assert!(!is_write(&Method::HEAD));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_write(&m));
        }
    }
}
