//! The current [`Generation`] and the one lock that changes it.
//!
//! Readers take the current generation without locking (`ArcSwap`). Every
//! change goes through [`Registry::lock`]: a reload publishes a new
//! generation (numbered one above the current one, subscribers told; nothing
//! when its content is the current one's), the
//! tier-up worker swaps optimized code into the current one (same number,
//! subscribers not told: only speed changed). Holding the lock for the
//! whole read-modify-write keeps the two from overwriting each other.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{Mutex, MutexGuard, watch};

use crate::generation::{Generation, PolicyEntry};
use crate::module::{CompiledPolicy, Tier};

/// The current policy set, readable at any time, changed under a lock.
pub(crate) struct Registry {
    current: ArcSwap<Generation>,
    numbers: watch::Sender<u64>,
    changing: Mutex<()>,
}

impl Registry {
    /// The empty generation 0.
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(Generation::default()),
            numbers: watch::channel(0).0,
            changing: Mutex::new(()),
        }
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Receives the generation number after every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.numbers.subscribe()
    }

    /// Waits for the right to change the generation.
    pub async fn lock(&self) -> Change<'_> {
        Change {
            registry: self,
            _held: self.changing.lock().await,
        }
    }

    /// [`lock`](Self::lock) from a thread outside the async runtime.
    pub fn blocking_lock(&self) -> Change<'_> {
        Change {
            registry: self,
            _held: self.changing.blocking_lock(),
        }
    }
}

/// The right to change the generation, held until dropped.
pub(crate) struct Change<'a> {
    registry: &'a Registry,
    _held: MutexGuard<'a, ()>,
}

impl Change<'_> {
    /// The current generation (no one else can change it meanwhile).
    pub fn current(&self) -> Arc<Generation> {
        self.registry.current()
    }

    /// Makes `policies` the next generation (numbered one above the current
    /// one) and tells subscribers its number, unless the current generation
    /// serves the same already. Returns the new number if it published.
    pub fn publish(&self, policies: BTreeMap<String, PolicyEntry>) -> Option<u64> {
        let current = self.current();
        let next = Generation {
            number: current.number + 1,
            policies,
        };
        if next.same_content(&current) {
            return None;
        }
        let number = next.number;
        self.registry.current.store(Arc::new(next));
        self.registry.numbers.send_replace(number);
        Some(number)
    }

    /// Serves every policy whose active module has `compiled`'s digest and
    /// runs baseline code with `compiled` instead, in the current generation
    /// (same number, subscribers not told). Returns the names swapped.
    pub fn swap_in_optimized(&self, compiled: &Arc<CompiledPolicy>) -> Vec<String> {
        let current = self.current();
        let mut next = (*current).clone();
        let mut swapped = Vec::new();
        for entry in next.policies.values_mut() {
            if let Some(active) = entry.active.as_mut()
                && active.digest == compiled.digest
                && active.compiled.tier == Tier::Baseline
            {
                active.compiled = compiled.clone();
                swapped.push(entry.name.clone());
            }
        }
        if !swapped.is_empty() {
            self.registry.current.store(Arc::new(next));
        }
        swapped
    }
}
