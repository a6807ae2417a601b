//! Polling helpers: wait for a condition with a deadline, and server readiness.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

/// Polls `check` every `every` until it returns `Ok(Some(v))`, an error, or `timeout` passes.
///
/// `Ok(None)` means "not yet"; the last reason given through `pending` is quoted in the timeout error.
pub async fn until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await? {
            Poll::Ready(v) => return Ok(v),
            Poll::Pending(reason) => reason,
        };
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "timed out after {timeout:?} waiting for {what}; last state: {last}"
            ));
        }
        tokio::time::sleep(every).await;
    }
}

/// Result of one check in [`until`].
#[derive(Debug)]
pub enum Poll<T> {
    /// Done, with a value.
    Ready(T),
    /// Not yet, with the reason.
    Pending(String),
}

/// One `/readyz` probe: `Ready(())` when the server answers `ok`.
pub async fn readyz(client: &kube::Client) -> Poll<()> {
    let request = match http::Request::get("/readyz").body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return Poll::Pending(format!("building the /readyz request: {e}")),
    };
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Poll::Ready(()),
        Ok(body) => Poll::Pending(format!("/readyz said: {}", body.trim())),
        Err(e) => Poll::Pending(format!("/readyz: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn until_returns_the_value_once_ready() {
        let mut n = 0;
        let v = until(
            "n to reach 3",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                let n = n;
                async move {
                    Ok(if n >= 3 {
                        Poll::Ready(n)
                    } else {
                        Poll::Pending(format!("n={n}"))
                    })
                }
            },
        )
        .await
        .expect("ready");
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn until_times_out_with_the_last_reason() {
        let err = until::<(), _, _>(
            "never",
            Duration::from_millis(20),
            Duration::from_millis(5),
            || async { Ok(Poll::Pending("still no".into())) },
        )
        .await
        .expect_err("times out");
        let msg = err.to_string();
        assert!(msg.contains("never") && msg.contains("still no"), "{msg}");
    }
}
