//! tmcd as the child of a bench binary, shared by `fleet_scale` and `tenants_scale`: the bench binary re-run as
//! `<bench> tmcd --config <file>` runs the daemon of this very build in a process of its own (its RSS and CPU
//! are its own); the bench reads its admin `/metrics`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tmc_tests::figures::samples;

/// The bench binary runs tmcd, so it uses tmcd's allocator.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tmc_daemon::allocator::Jemalloc = tmc_daemon::allocator::Jemalloc;

/// The first argument that makes a bench binary run tmcd instead of the bench.
pub const ARG: &str = "tmcd";

/// Runs tmcd itself: `<bench> tmcd --config <file>` (`args` without the program name).
pub fn run(bench: &str, args: &[String]) -> Result<()> {
    let [_, flag, config] = args else {
        bail!("usage: {bench} {ARG} --config <file>");
    };
    if flag != "--config" {
        bail!("usage: {bench} {ARG} --config <file>, got {flag:?}");
    }
    tokio::runtime::Runtime::new()?.block_on(tmc_daemon::commands::run(
        Path::new(config),
        Some(tmc_syncer::process::LogFormat::Text),
    ))
}

/// tmcd's admin `/metrics` (`admin`: `host:port`).
pub async fn metrics(admin: &str) -> Result<String> {
    let url = format!("http://{admin}");
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        tmc_daemon::admin::client::request(&url, "GET", "/metrics"),
    )
    .await
    .with_context(|| format!("GET {url}/metrics timed out"))??;
    if reply.status != 200 {
        bail!("GET {url}/metrics answered {}", reply.status);
    }
    Ok(reply.body)
}

/// (reconciles so far, workloads, status writes and Events still queued or held) of tmcd.
pub async fn progress(admin: &str) -> Result<(f64, f64)> {
    let text = metrics(admin).await?;
    let done = samples(&text, "tmcd_reconciles_total")
        .map(|(_, v)| v)
        .sum();
    let busy = [
        "tmcd_workloads_pending",
        "tmcd_status_writes_pending",
        "tmcd_status_reports_held",
        "tmcd_events_pending",
    ]
    .iter()
    .flat_map(|m| samples(&text, m))
    .map(|(_, v)| v)
    .sum();
    Ok((done, busy))
}

/// Waits until tmcd has made at least `reconciles` reconciles and has nothing queued (checked every 250 ms,
/// `alive` first: an error there ends the wait); returns how long it took.
pub async fn settled(
    admin: &str,
    reconciles: f64,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        alive()?;
        let state = progress(admin).await;
        if let Ok((done, busy)) = state
            && done >= reconciles
            && busy == 0.0
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!(
                "tmcd not settled after {timeout:?} (reconciles, queued: {state:?}; want {reconciles} reconciles)"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
