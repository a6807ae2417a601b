//! Tiered compilation: a module compiled by Winch (baseline tier) serves at
//! once; [`TierUp`]'s worker thread recompiles it with Cranelift, runs the
//! same validation on the optimized code, and swaps it into the current
//! generation in place of the baseline code (same digest, same behaviour,
//! same generation number, so subscribers are not told: nothing they can
//! observe changed but speed).

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::watch;

use crate::cache::ModuleCache;
use crate::config::HostConfig;
use crate::registry::Registry;
use crate::validate::{LoadBudget, validate};

/// A module to recompile with Cranelift.
pub(crate) struct Job {
    pub name: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

/// The tier-up worker: its queue and how many queued modules are not done.
pub(crate) struct TierUp {
    /// `None` without a baseline tier (nothing to recompile).
    jobs: Option<Sender<Job>>,
    pending: Arc<watch::Sender<usize>>,
}

impl TierUp {
    /// Starts the worker thread when `cache` compiles with a baseline tier.
    /// The worker holds the cache and the registry weakly and ends when this
    /// value is dropped (its queue closes) or the host is gone.
    pub fn start(
        config: Arc<HostConfig>,
        cache: &Arc<ModuleCache>,
        registry: &Arc<Registry>,
    ) -> anyhow::Result<Self> {
        let pending = Arc::new(watch::channel(0).0);
        if !cache.tiered() {
            return Ok(Self {
                jobs: None,
                pending,
            });
        }
        let (jobs, queue) = std::sync::mpsc::channel();
        let worker = Worker {
            config,
            cache: Arc::downgrade(cache),
            registry: Arc::downgrade(registry),
            pending: pending.clone(),
        };
        std::thread::Builder::new()
            .name("tmc-policy-tier-up".into())
            .spawn(move || worker.run(queue))
            .map_err(|e| anyhow::anyhow!("cannot start the tier-up thread: {e}"))?;
        Ok(Self {
            jobs: Some(jobs),
            pending,
        })
    }

    /// Queues a baseline module for recompilation by Cranelift.
    pub fn queue(&self, job: Job) {
        let Some(jobs) = &self.jobs else { return };
        self.pending.send_modify(|n| *n += 1);
        if jobs.send(job).is_err() {
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    /// Waits until every module queued so far was recompiled and swapped in
    /// (or failed to be). Returns at once without a baseline tier.
    pub async fn wait_idle(&self) {
        let mut pending = self.pending.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = pending.wait_for(|n| *n == 0).await;
    }
}

struct Worker {
    config: Arc<HostConfig>,
    cache: Weak<ModuleCache>,
    registry: Weak<Registry>,
    pending: Arc<watch::Sender<usize>>,
}

impl Worker {
    fn run(self, queue: Receiver<Job>) {
        while let Ok(job) = queue.recv() {
            let (Some(cache), Some(registry)) = (self.cache.upgrade(), self.registry.upgrade())
            else {
                return;
            };
            optimize(&self.config, &cache, &registry, &job);
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

fn optimize(config: &HostConfig, cache: &ModuleCache, registry: &Registry, job: &Job) {
    let started = Instant::now();
    let name = job.name.as_str();
    let compiled = match cache.optimize(name, &job.digest, &job.bytes) {
        Ok(Some(compiled)) => compiled,
        Ok(None) => {
            tracing::debug!(policy = name, digest = %job.digest, "no generation serves that module any more; not optimized");
            return;
        }
        Err(e) => {
            tracing::warn!(policy = name, digest = %job.digest, "Cranelift could not recompile a module Winch compiled; the baseline code keeps serving: {e}");
            return;
        }
    };
    if let Err(e) = validate(&LoadBudget::start(config), name, &compiled) {
        tracing::error!(policy = name, digest = %job.digest, "the optimized code fails the validation its baseline code passed; the baseline code keeps serving: {e}");
        return;
    }
    let change = registry.blocking_lock();
    let swapped = change.swap_in_optimized(&compiled);
    if swapped.is_empty() {
        tracing::debug!(policy = name, digest = %job.digest, "optimized code ready; no generation serves that module any more");
        return;
    }
    tracing::info!(
        policies = ?swapped,
        digest = %job.digest,
        generation = change.current().number,
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
    use crate::engine::Engines;
    use crate::error::PolicyError;
    use crate::invoke::{self, Export};
    use crate::module::{self, CompiledPolicy, Tier};

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{name}.wat"));
        wat::parse_file(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
    }

    /// A cache with the engines (and epoch ticker) of `config`.
    fn cache(config: &HostConfig) -> ModuleCache {
        ModuleCache::new(Engines::new(config).expect("engines"), None)
    }

    /// The module compiled by each tier, through one cache.
    fn both_tiers(cache: &ModuleCache, bytes: &[u8]) -> (Arc<CompiledPolicy>, Arc<CompiledPolicy>) {
        let digest = module::digest(bytes);
        let config = HostConfig::default();
        let baseline = cache
            .load("p", &digest, bytes, &LoadBudget::start(&config))
            .expect("Winch compiles it");
        assert_eq!(baseline.tier, Tier::Baseline);
        let optimized = cache
            .optimize("p", &digest, bytes)
            .expect("Cranelift compiles it")
            .expect("still cached");
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
        let config = &HostConfig::default();
        let (baseline, optimized) = both_tiers(&cache(config), &bytes);
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
        // tiers differ by a few percent (figures in docs/benchmarks.md).
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
            validate(&LoadBudget::start(config), "p", compiled).expect("validation passes");
        }
    }

    #[test]
    fn winch_code_keeps_the_deadline_fuel_and_memory_limits() {
        let deadline = |fuel| {
            let config = HostConfig {
                fuel,
                deadline: Duration::from_millis(20),
                ..HostConfig::default()
            };
            let (baseline, _) = both_tiers(&cache(&config), &fixture("infinite-loop"));
            invoke::call(&config, "p", &baseline, Export::Place, b"{}")
                .err()
                .expect("the loop is cut")
        };
        let err = deadline(0);
        assert!(matches!(err, PolicyError::Deadline { .. }), "{err}");
        let config = HostConfig {
            fuel: 1_000_000,
            deadline: Duration::from_secs(30),
            ..HostConfig::default()
        };
        let (baseline, _) = both_tiers(&cache(&config), &fixture("infinite-loop"));
        let err = invoke::call(&config, "p", &baseline, Export::Place, b"{}")
            .err()
            .expect("out of fuel");
        assert!(matches!(err, PolicyError::Fuel { .. }), "{err}");

        let config = HostConfig::default();
        let (baseline, _) = both_tiers(&cache(&config), &fixture("memory-bomb"));
        let err = invoke::call(&config, "p", &baseline, Export::Place, b"{}")
            .err()
            .expect("memory capped");
        assert!(matches!(err, PolicyError::MemoryCap { .. }), "{err}");
    }

    #[test]
    fn without_tiering_cranelift_compiles_on_the_load_path() {
        let cache = cache(&HostConfig {
            tiered: false,
            ..HostConfig::default()
        });
        assert!(!cache.tiered());
        let bytes = fixture("good-v1");
        let compiled = cache
            .load(
                "p",
                &module::digest(&bytes),
                &bytes,
                &LoadBudget::start(&HostConfig::default()),
            )
            .expect("compiles");
        assert_eq!(compiled.tier, Tier::Optimized);
        assert_eq!(cache.optimizations(), 0);
    }
}
