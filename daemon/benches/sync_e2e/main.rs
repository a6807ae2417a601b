//! End-to-end benchmarks of tmcd on the real test bed (kcp + clusters west
//! and east), each printed as a ratio against a baseline measured in the same
//! run. Nothing here asserts a time: the figures are printed, not tested.
//!
//! 1. latency: one Deployment created in the workspace -> seen by a watch on
//!    west; baseline: the same create straight on west, seen by the same watch.
//! 2. throughput: 1,000 Deployments created at once (bounded concurrency) over
//!    two targets -> all seen downstream; baseline: the same objects applied
//!    straight to the clusters with the same concurrency.
//! 3. memory: VmRSS/VmHWM of the real `tmcd` child with 0 and 1,000 workloads.
//! 4. hot reload: rename a new placement module into the policy directory ->
//!    first downstream change.
//!
//! Run: `cargo build --release -p tmc-daemon --bin tmcd && cargo bench -p tmc-daemon --bench sync_e2e`
//! (or `hack/bench.sh`). Knobs: see [`knobs::Knobs`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tmc_api::crd::SyncTarget;
use tmc_tests::fixtures;
use tmc_tests::testbed::TestBed;
use tmc_tests::testbed::binaries::repo_root;
use tokio::sync::Notify;

mod breakdown;
mod child;
mod env;
mod knobs;
mod latency;
mod memory;
mod objects;
mod reload;
mod stats;
mod throughput;
mod tracker;

/// Prints a timestamped progress line on stderr.
pub fn progress(msg: &str) {
    eprintln!(
        "[bench {}] {msg}",
        chrono::Utc::now().format("%H:%M:%S%.3f")
    );
}

/// One row of the final table.
pub struct Row {
    pub what: String,
    pub tmc: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
}

/// tmcd's admin `/metrics` text.
async fn tmcd_metrics(env: &env::Env) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(addr) = env.admin_addr() else {
        bail!("tmcd admin address not found in its log");
    };
    let fetch = async {
        let mut conn = tokio::net::TcpStream::connect(&addr).await?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: tmcd\r\n\r\n")
            .await?;
        let mut body = String::new();
        conn.read_to_string(&mut body).await?;
        anyhow::Ok(body)
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("GET http://{addr}/metrics timed out"))?
        .with_context(|| format!("GET http://{addr}/metrics failed"))
}

/// Waits until tmcd has no workload waiting for a reconcile, no status write
/// queued and no status report held by a push syncer (the bookkeeping of a
/// burst done); returns how long it took.
pub async fn tmcd_idle(env: &env::Env) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        let body = tmcd_metrics(env).await?;
        let busy: f64 = body
            .lines()
            .filter(|l| {
                l.starts_with("tmcd_workloads_pending")
                    || l.starts_with("tmcd_status_writes_pending")
                    || l.starts_with("tmcd_status_reports_held")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if busy == 0.0 {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > env.knobs.timeout {
            bail!(
                "tmcd still busy after {:?}: {busy} workloads or status writes pending",
                env.knobs.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// tmcd's own counters (reconciles by result, reconcile time, sync errors),
/// read from its admin `/metrics`: how much work a phase cost, for the profile.
pub async fn tmcd_counters(env: &env::Env) -> Vec<String> {
    match tmcd_metrics(env).await {
        Ok(body) => body
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.starts_with("tmcd_reconciles_total")
                        || l.starts_with("tmcd_reconcile_duration_seconds_sum")
                        || l.starts_with("tmcd_reconcile_duration_seconds_count")
                        || l.starts_with("tmcd_policy_evaluation_duration_seconds_sum")
                        || l.starts_with("tmcd_policy_evaluation_duration_seconds_count")
                        || l.starts_with("tmcd_target_sync_errors"))
            })
            .map(str::to_string)
            .collect(),
        Err(err) => vec![format!("({err:#})")],
    }
}

/// Waits until `key` is present on `cluster`; returns when it was first seen.
pub async fn seen_at(env: &env::Env, cluster: &str, key: &str) -> Result<Instant> {
    let key = key.to_string();
    env.tracker(cluster)?
        .until(&format!("{key} to appear"), env.knobs.timeout, |s| {
            s.first.get(&key).copied()
        })
        .await
}

fn print_table(rows: &[Row]) {
    let w = rows
        .iter()
        .map(|r| r.what.len())
        .max()
        .unwrap_or(10)
        .max(10);
    println!();
    println!(
        "{:<w$} | {:>24} | {:>14} | {:>8} | target",
        "benchmark", "tmc", "baseline", "ratio"
    );
    println!("{}", "-".repeat(w + 70));
    for r in rows {
        println!(
            "{:<w$} | {:>24} | {:>14} | {:>8} | {}",
            r.what, r.tmc, r.baseline, r.ratio, r.target
        );
    }
}

async fn run() -> Result<()> {
    let knobs = knobs::Knobs::from_env()?;
    progress(&format!("knobs: {knobs:?}"));
    let env = env::Env::start(knobs).await?;
    let mut rows = Vec::new();
    let result = async {
        let idle = memory::memory(&env, "0 workloads").await?;
        rows.extend(throughput::throughput(&env).await?);
        // Latency and memory are measured at steady state: the burst's
        // statuses written, nothing waiting for a reconcile.
        let drained = tmcd_idle(&env).await?;
        progress(&format!(
            "tmcd idle {} after the burst was on its targets",
            stats::ms(drained)
        ));
        rows.push(Row {
            what: "  then every status written upstream, tmcd idle".into(),
            tmc: format!("+{:.2} s", drained.as_secs_f64()),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
        });
        let loaded = memory::memory(&env, "after the throughput burst").await?;
        let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
        let n = env.knobs.throughput_n + 2;
        rows.push(Row {
            what: format!("tmcd VmRSS, {n} workloads / 0 workloads"),
            tmc: mib(loaded.0),
            baseline: mib(idle.0),
            ratio: stats::ratio(loaded.0 as f64, idle.0 as f64),
            target: "<= 150 MB".into(),
        });
        rows.push(Row {
            what: format!("tmcd VmHWM, {n} workloads / 0 workloads"),
            tmc: mib(loaded.1),
            baseline: mib(idle.1),
            ratio: stats::ratio(loaded.1 as f64, idle.1 as f64),
            target: "-".into(),
        });
        rows.extend(latency::latency(&env).await?);
        // The reloads, too, start from steady state.
        tmcd_idle(&env).await?;
        rows.extend(reload::reload(&env).await?);
        anyhow::Ok(())
    }
    .await;
    if let Err(err) = result {
        eprintln!(
            "tmcd log tail ({}):\n{}\n(test bed: {})",
            env.tmcd.log.display(),
            env.tmcd.tail(40),
            env.bed.dir().display()
        );
        print_table(&rows);
        return Err(err);
    }
    print_table(&rows);
    println!(
        "\n(latency runs after the burst, with {} workloads already placed; tmcd log: {})",
        env.knobs.throughput_n + 2,
        env.tmcd.log.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no argument: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sync_e2e: run with `cargo bench -p tmc-daemon --bench sync_e2e`");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run())
}
