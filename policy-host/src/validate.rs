//! Validating a compiled module before it may serve (ABI section 3): its ABI
//! version, its answer to default settings, then its own test vectors; each
//! guest call within the evaluation deadline and all of them (with the
//! snapshot's `_initialize`, see [`crate::snapshot`]) within the load budget
//! ([`HostConfig::load_budget`]). Baseline and optimized code of a module
//! pass the same validation.

use std::cell::Cell;
use std::time::{Duration, Instant};

use tmc_policy_sdk::abi::{PlacementRequest, SettingsVerdict, TestVector, TransformRequest};
use tmc_policy_sdk::vectors;

use crate::codec;
use crate::config::HostConfig;
use crate::error::PolicyError;
use crate::invoke::{self, Export};
use crate::module::CompiledPolicy;

/// Validates `compiled`, loaded as policy `name`, within what is left of
/// `budget`.
pub(crate) fn validate(
    budget: &LoadBudget<'_>,
    name: &str,
    compiled: &CompiledPolicy,
) -> Result<(), PolicyError> {
    let config = budget.config;
    let found = budget.run(name, |deadline| {
        invoke::abi_version(config, deadline, name, compiled)
    })?;
    if found != 1 {
        return Err(PolicyError::AbiVersion {
            policy: name.into(),
            found,
        });
    }
    let input = br#"{"settings":{}}"#;
    let raw = budget.run(name, |deadline| {
        invoke::call_within(
            config,
            deadline,
            name,
            compiled,
            Export::ValidateSettings,
            input,
        )
    })?;
    let verdict: SettingsVerdict = codec::decode(name, Export::ValidateSettings, &raw.bytes)?;
    if !verdict.valid {
        tracing::info!(
            policy = name,
            "policy requires settings (rejects {{}}: {}); accepted",
            verdict.message
        );
    }
    if compiled.exports.test_vectors.is_some() {
        run_vectors(config, budget, name, compiled)?;
    }
    Ok(())
}

/// The wall-clock budget of loading one module: its guest calls (the
/// snapshot's `_initialize`, if taken, and the validation calls) together;
/// the host's own work between them (compiling the snapshot) does not count.
/// Each call gets the evaluation deadline or what is left of the budget,
/// whichever is less.
pub(crate) struct LoadBudget<'a> {
    config: &'a HostConfig,
    spent: Cell<Duration>,
}

impl<'a> LoadBudget<'a> {
    /// A budget of [`HostConfig::load_budget`], none of it spent.
    pub fn start(config: &'a HostConfig) -> Self {
        Self {
            config,
            spent: Cell::new(Duration::ZERO),
        }
    }

    /// The limits of the load's guest calls.
    pub fn config(&self) -> &'a HostConfig {
        self.config
    }

    /// Runs one guest call with its deadline; a call cut short by the
    /// budget (or started after it ran out) is a *load budget* error.
    pub fn run<T>(
        &self,
        name: &str,
        call: impl FnOnce(Duration) -> Result<T, PolicyError>,
    ) -> Result<T, PolicyError> {
        let left = self.config.load_budget.saturating_sub(self.spent.get());
        let exhausted = || PolicyError::LoadBudget {
            policy: name.into(),
            budget: self.config.load_budget,
        };
        if left.is_zero() {
            return Err(exhausted());
        }
        let deadline = left.min(self.config.deadline);
        let started = Instant::now();
        let result = call(deadline);
        self.spent.set(self.spent.get() + started.elapsed());
        match result {
            Err(PolicyError::Deadline { .. }) if deadline < self.config.deadline => {
                Err(exhausted())
            }
            other => other,
        }
    }
}

/// Runs the module's `tmc_test_vectors`; their answers are checked against
/// the host rules like any evaluation's.
fn run_vectors(
    config: &HostConfig,
    budget: &LoadBudget<'_>,
    name: &str,
    compiled: &CompiledPolicy,
) -> Result<(), PolicyError> {
    let raw = budget.run(name, |deadline| {
        invoke::call_within(config, deadline, name, compiled, Export::TestVectors, &[])
    })?;
    let list: Vec<TestVector> = codec::decode(name, Export::TestVectors, &raw.bytes)?;
    // A vector whose call ran out of load budget stops the load: the error
    // is kept and returned instead of the vectors' failure list.
    let out_of_budget = std::cell::RefCell::new(None);
    let guarded = |export: Export, input: &[u8]| {
        budget
            .run(name, |deadline| {
                invoke::call_within(config, deadline, name, compiled, export, input)
            })
            .inspect_err(|e| {
                if matches!(e, PolicyError::LoadBudget { .. }) {
                    out_of_budget.borrow_mut().get_or_insert_with(|| e.clone());
                }
            })
    };
    let place = |req: &PlacementRequest| {
        if !compiled.kind.places() {
            return Err("the module has no tmc_place".to_string());
        }
        let input = codec::encode(name, req).map_err(|e| e.to_string())?;
        let raw = guarded(Export::Place, &input).map_err(|e| e.to_string())?;
        codec::decision(name, req, &raw.bytes).map_err(|e| e.to_string())
    };
    let transform = |req: &TransformRequest| {
        if !compiled.kind.transforms() {
            return Err("the module has no tmc_transform".to_string());
        }
        let input = codec::encode(name, req).map_err(|e| e.to_string())?;
        let raw = guarded(Export::Transform, &input).map_err(|e| e.to_string())?;
        codec::transform_result(name, &raw.bytes).map_err(|e| e.to_string())
    };
    let failures = vectors::run(&list, place, transform);
    if let Some(e) = out_of_budget.into_inner() {
        return Err(e);
    }
    if failures.is_empty() {
        tracing::debug!(policy = name, vectors = list.len(), "test vectors pass");
        Ok(())
    } else {
        Err(PolicyError::TestVectors {
            policy: name.into(),
            failures: failures.join("\n"),
        })
    }
}
