//! Benchmark 3: tmcd's resident memory.

use super::*;

/// Benchmark 3 (two readings): tmcd memory now, after a quiet period.
pub async fn memory(env: &env::Env, label: &str) -> Result<(u64, u64)> {
    progress(&format!(
        "memory: settling {:?} ({label})",
        env.knobs.settle
    ));
    tokio::time::sleep(env.knobs.settle).await;
    let (rss, hwm) = env.tmcd.memory_kib()?;
    progress(&format!(
        "memory ({label}): VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    ));
    Ok((rss, hwm))
}
