//! Tiered compilation: a module compiled by Winch (baseline tier) serves at
//! once; this worker thread recompiles it with Cranelift, runs the same
//! validation on the optimized code, and swaps it into the current generation
//! in place of the baseline code (same digest, same behaviour, same
//! generation number, so subscribers are not told: nothing they can observe
//! changed but speed).

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::host::Inner;
use crate::loader;
use crate::module::Tier;

/// A module to recompile with Cranelift.
pub(crate) struct Job {
    pub name: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

/// The queue of the tier-up worker.
pub(crate) fn channel() -> (Sender<Job>, Receiver<Job>) {
    std::sync::mpsc::channel()
}

/// Starts the worker; it ends when the host is dropped (the queue closes).
pub(crate) fn spawn_worker(inner: Weak<Inner>, jobs: Receiver<Job>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("tmc-policy-tier-up".into())
        .spawn(move || {
            while let Ok(job) = jobs.recv() {
                let Some(inner) = inner.upgrade() else { return };
                optimize(&inner, &job);
                inner.tier_pending.send_modify(|n| *n = n.saturating_sub(1));
            }
        })
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("cannot start the tier-up thread: {e}"))
}

fn optimize(inner: &Arc<Inner>, job: &Job) {
    let started = Instant::now();
    let name = job.name.as_str();
    let compiled = match inner.cache.optimize(name, &job.digest, &job.bytes) {
        Ok(compiled) => compiled,
        Err(e) => {
            tracing::warn!(policy = name, digest = %job.digest, "Cranelift could not recompile a module Winch compiled; the baseline code keeps serving: {e}");
            return;
        }
    };
    if let Err(e) = loader::validate(inner, name, &compiled) {
        tracing::error!(policy = name, digest = %job.digest, "the optimized code fails the validation its baseline code passed; the baseline code keeps serving: {e}");
        return;
    }
    let _guard = inner.reload_lock.blocking_lock();
    let current = inner.current.load_full();
    let mut next = (*current).clone();
    let mut swapped = Vec::new();
    for entry in next.policies.values_mut() {
        if let Some(active) = entry.active.as_mut()
            && active.digest == job.digest
            && active.compiled.tier == Tier::Baseline
        {
            active.compiled = compiled.clone();
            swapped.push(entry.name.clone());
        }
    }
    if swapped.is_empty() {
        tracing::debug!(policy = name, digest = %job.digest, "optimized code ready; no generation serves that module any more");
        return;
    }
    inner.current.store(Arc::new(next));
    tracing::info!(
        policies = ?swapped,
        digest = %job.digest,
        generation = current.number,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "optimized (Cranelift) code swapped in"
    );
}

#[cfg(test)]
mod tests {
    //! Both tiers on the same bytes, called directly (no race with the
    //! worker): same output, same limits. Fuel is deterministic per tier, but
    //! Winch and Cranelift do not charge exactly the same units.

    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::HostConfig;
    use crate::error::PolicyError;
    use crate::host::PolicyHost;
    use crate::invoke::{self, Export};
    use crate::module;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{name}.wat"));
        wat::parse_file(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
    }

    /// The module compiled by each tier, through the host's own cache.
    fn both_tiers(
        host: &PolicyHost,
        bytes: &[u8],
    ) -> (
        Arc<crate::module::CompiledPolicy>,
        Arc<crate::module::CompiledPolicy>,
    ) {
        let digest = module::digest(bytes);
        let cache = &host.inner.cache;
        let baseline = cache.load("p", &digest, bytes).expect("Winch compiles it");
        assert_eq!(baseline.tier, Tier::Baseline);
        let optimized = cache
            .optimize("p", &digest, bytes)
            .expect("Cranelift compiles it");
        assert_eq!(optimized.tier, Tier::Optimized);
        assert_eq!(cache.compiles(), 1);
        assert_eq!(cache.optimizations(), 1);
        (baseline, optimized)
    }

    fn request_bytes() -> Vec<u8> {
        let targets: Vec<_> = (0..6)
            .map(|i| {
                serde_json::json!({
                    "name": format!("c{i}"),
                    "labels": {"topology.kubernetes.io/region": if i % 2 == 0 { "us-west-1" } else { "us-east-1" }},
                    "location": {"region": if i % 2 == 0 { "us-west-1" } else { "us-east-1" }},
                    "ready": i != 3,
                    "schedulable": true
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "workload": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w",
                         "annotations": {"tmc.kcp.io/regions": "us-west-1"}, "replicas": 7},
            "placement": {"name": "p"},
            "settings": {"mode": "preferred", "maxTargets": 2},
            "targets": targets
        }))
        .expect("serializes")
    }

    #[test]
    fn winch_and_cranelift_code_answer_the_same() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/policies/location-affinity.wasm");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; build the policies first: hack/build-policies.sh",
                path.display()
            )
        });
        let host = PolicyHost::new(HostConfig::default()).expect("host");
        let (baseline, optimized) = both_tiers(&host, &bytes);
        let config = host.config();
        let input = request_bytes();
        let a = invoke::call(config, "p", &baseline, Export::Place, &input).expect("Winch code");
        let b = invoke::call(config, "p", &optimized, Export::Place, &input).expect("Cranelift");
        assert_eq!(
            String::from_utf8_lossy(&a.bytes),
            String::from_utf8_lossy(&b.bytes)
        );
        assert!(
            String::from_utf8_lossy(&a.bytes).contains("\"c0\""),
            "{}",
            String::from_utf8_lossy(&a.bytes)
        );
        // Fuel: each tier charges the same units on every call, but the two
        // tiers differ by a few percent (measured 91,850 vs 96,825 units).
        let again = invoke::call(config, "p", &baseline, Export::Place, &input).expect("again");
        assert_eq!(a.fuel_used, again.fuel_used);
        let (low, high) = (a.fuel_used.min(b.fuel_used), a.fuel_used.max(b.fuel_used));
        assert!(
            low > 0 && high <= low + low / 10,
            "{} vs {}",
            a.fuel_used,
            b.fuel_used
        );
        for compiled in [&baseline, &optimized] {
            loader::validate(&host.inner, "p", compiled).expect("validation passes");
        }
    }

    #[test]
    fn winch_code_keeps_the_deadline_fuel_and_memory_limits() {
        let deadline = |fuel| {
            let host = PolicyHost::new(HostConfig {
                fuel,
                deadline: Duration::from_millis(20),
                ..HostConfig::default()
            })
            .expect("host");
            let (baseline, _) = both_tiers(&host, &fixture("infinite-loop"));
            invoke::call(host.config(), "p", &baseline, Export::Place, b"{}")
                .err()
                .expect("the loop is cut")
        };
        let err = deadline(0);
        assert!(matches!(err, PolicyError::Deadline { .. }), "{err}");
        let host = PolicyHost::new(HostConfig {
            fuel: 1_000_000,
            deadline: Duration::from_secs(30),
            ..HostConfig::default()
        })
        .expect("host");
        let (baseline, _) = both_tiers(&host, &fixture("infinite-loop"));
        let err = invoke::call(host.config(), "p", &baseline, Export::Place, b"{}")
            .err()
            .expect("out of fuel");
        assert!(matches!(err, PolicyError::Fuel { .. }), "{err}");

        let host = PolicyHost::new(HostConfig::default()).expect("host");
        let (baseline, _) = both_tiers(&host, &fixture("memory-bomb"));
        let err = invoke::call(host.config(), "p", &baseline, Export::Place, b"{}")
            .err()
            .expect("memory capped");
        assert!(matches!(err, PolicyError::MemoryCap { .. }), "{err}");
    }

    #[test]
    fn without_tiering_cranelift_compiles_on_the_load_path() {
        let host = PolicyHost::new(HostConfig {
            tiered: false,
            ..HostConfig::default()
        })
        .expect("host");
        let bytes = fixture("good-v1");
        let compiled = host
            .inner
            .cache
            .load("p", &module::digest(&bytes), &bytes)
            .expect("compiles");
        assert_eq!(compiled.tier, Tier::Optimized);
        assert_eq!(host.inner.cache.optimizations(), 0);
    }
}
