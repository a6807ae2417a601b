//! Sizes and limits, each overridable by an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

/// The benchmark's knobs.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// `TMC_BENCH_N`: Deployments of the latency benchmark (default 200).
    pub latency_n: usize,
    /// `TMC_BENCH_THROUGHPUT_N`: Deployments of the throughput benchmark (default 1000).
    pub throughput_n: usize,
    /// `TMC_BENCH_CONCURRENCY`: creates in flight in the throughput benchmark (default 16).
    pub concurrency: usize,
    /// `TMC_BENCH_RELOADS`: hot-reload repetitions (default 6).
    pub reloads: usize,
    /// `TMC_BENCH_RELOAD_WORKLOADS`: workloads the reloaded placement governs (default 5).
    pub reload_workloads: usize,
    /// `TMC_BENCH_REPLICAS`: replicas of every Deployment (default 0: no pod churn in kwok).
    pub replicas: i32,
    /// `TMC_BENCH_SETTLE_S`: quiet time before reading memory (default 10).
    pub settle: Duration,
    /// `TMC_BENCH_TIMEOUT_S`: longest wait for any one expectation (default 300).
    pub timeout: Duration,
    /// `TMC_BENCH_TMCD`: the tmcd binary (default `release/tmcd` in `CARGO_TARGET_DIR`,
    /// or in the repository's `target/`).
    pub tmcd: PathBuf,
}

impl Knobs {
    /// Reads the knobs from the environment.
    pub fn from_env() -> Result<Self> {
        let root = tmc_tests::testbed::binaries::repo_root();
        Ok(Self {
            latency_n: num("TMC_BENCH_N", 200)?,
            throughput_n: num("TMC_BENCH_THROUGHPUT_N", 1000)?,
            concurrency: num("TMC_BENCH_CONCURRENCY", 16)?.max(1),
            reloads: num("TMC_BENCH_RELOADS", 6)?,
            reload_workloads: num("TMC_BENCH_RELOAD_WORKLOADS", 5)?.max(1),
            replicas: num("TMC_BENCH_REPLICAS", 0)?,
            settle: Duration::from_secs(num("TMC_BENCH_SETTLE_S", 10)?),
            timeout: Duration::from_secs(num("TMC_BENCH_TIMEOUT_S", 300)?),
            tmcd: std::env::var_os("TMC_BENCH_TMCD")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    std::env::var_os("CARGO_TARGET_DIR")
                        .map_or_else(|| root.join("target"), PathBuf::from)
                        .join("release/tmcd")
                }),
        })
    }
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a valid number (fix: e.g. {name}=100)")),
        Err(_) => Ok(default),
    }
}
