//! One call into a policy: fresh store, limits, instantiate, copy the input
//! in, call, copy the output out, classify failures, forward stdio to logs.

use std::time::{Duration, Instant};

use wasmtime::{Extern, Instance, Memory, ModuleExport, Store, Trap, TypedFunc};

use crate::config::HostConfig;
use crate::error::PolicyError;
use crate::module::CompiledPolicy;
use crate::sandbox::StoreState;

/// An ABI entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Export {
    Initialize,
    ValidateSettings,
    Place,
    Transform,
    TestVectors,
    AbiVersion,
}

impl Export {
    pub fn name(self) -> &'static str {
        match self {
            Self::Initialize => "_initialize",
            Self::ValidateSettings => "tmc_validate_settings",
            Self::Place => "tmc_place",
            Self::Transform => "tmc_transform",
            Self::TestVectors => "tmc_test_vectors",
            Self::AbiVersion => "tmc_abi_version",
        }
    }
}

/// Raw output of one call plus what it cost.
pub(crate) struct RawOutput {
    pub bytes: Vec<u8>,
    pub duration: Duration,
    pub fuel_used: u64,
}

/// Runs `export` of `policy` on `input` (ignored for `TestVectors`) in a
/// fresh instance, within the evaluation deadline.
pub(crate) fn call(
    config: &HostConfig,
    name: &str,
    policy: &CompiledPolicy,
    export: Export,
    input: &[u8],
) -> Result<RawOutput, PolicyError> {
    call_within(config, config.deadline, name, policy, export, input)
}

/// [`call`] with an explicit wall-clock `deadline` (instantiation and
/// `_initialize` included), for load steps that share a load budget.
pub(crate) fn call_within(
    config: &HostConfig,
    deadline: Duration,
    name: &str,
    policy: &CompiledPolicy,
    export: Export,
    input: &[u8],
) -> Result<RawOutput, PolicyError> {
    if input.len() > config.input_cap {
        return Err(PolicyError::InputTooLarge {
            policy: name.into(),
            len: input.len(),
            cap: config.input_cap,
        });
    }
    let output_cap = config.output_cap;
    in_sandbox(config, deadline, name, policy, export, |store, instance| {
        run(store, instance, name, policy, export, input, output_cap)
    })
}

/// Instantiates `policy` and returns `tmc_abi_version()`, within `deadline`.
pub(crate) fn abi_version(
    config: &HostConfig,
    deadline: Duration,
    name: &str,
    policy: &CompiledPolicy,
) -> Result<i32, PolicyError> {
    let out = in_sandbox(
        config,
        deadline,
        name,
        policy,
        Export::AbiVersion,
        |store, instance| {
            let version = typed::<(), i32>(store, instance, &policy.exports.abi_version)?
                .call(&mut *store, ())?;
            Ok(version.to_le_bytes().to_vec())
        },
    )?;
    let bytes: [u8; 4] = out.bytes.try_into().unwrap_or([0; 4]);
    Ok(i32::from_le_bytes(bytes))
}

/// Instantiates `policy` in a fresh store with the evaluation limits, runs
/// its `_initialize`, then `capture`s the initialized instance, all within
/// `deadline`; for taking a snapshot (see [`crate::snapshot`]).
pub(crate) fn initialized(
    config: &HostConfig,
    deadline: Duration,
    name: &str,
    policy: &CompiledPolicy,
    capture: impl FnOnce(&mut Store<StoreState>, &Instance) -> wasmtime::Result<Vec<u8>>,
) -> Result<Vec<u8>, PolicyError> {
    let out = in_sandbox(
        config,
        deadline,
        name,
        policy,
        Export::Initialize,
        |store, instance| Ok(capture(store, instance)?),
    )?;
    Ok(out.bytes)
}

/// A fresh store with the limits, a fresh instance (`_initialize` called),
/// then `body`; failures are classified and guest stdio is logged.
///
/// Every store gets its epoch deadline (and its fuel, unless metering is
/// off) here, before instantiation: no guest code (start function,
/// `_initialize`, exports) runs without a deadline. No host function linked into the store waits (see
/// [`crate::poll`]), so the epoch deadline bounds the whole call.
fn in_sandbox(
    config: &HostConfig,
    deadline: Duration,
    name: &str,
    policy: &CompiledPolicy,
    export: Export,
    body: impl FnOnce(&mut Store<StoreState>, &Instance) -> Result<Vec<u8>, Failure>,
) -> Result<RawOutput, PolicyError> {
    let started = Instant::now();
    // The engine of the module's tier.
    let engine = policy.pre.module().engine();
    let resume = policy.snapshot.unwrap_or_default();
    let mut store = Store::new(
        engine,
        StoreState::new(config.memory_cap, config.stdio_cap, resume),
    );
    store.limiter(|s| &mut s.limiter);
    let internal = |e: wasmtime::Error| PolicyError::Internal {
        policy: name.into(),
        message: e.to_string(),
    };
    if config.fuel > 0 {
        store.set_fuel(config.fuel).map_err(internal)?;
    }
    store.set_epoch_deadline(config.ticks(deadline));
    store.epoch_deadline_trap();

    let result =
        instantiate(&mut store, name, policy).and_then(|instance| body(&mut store, &instance));
    let fuel_used = match store.get_fuel() {
        Ok(left) => config.fuel.saturating_sub(left),
        Err(_) => 0,
    };
    forward_stdio(name, store.data());
    let bytes = result
        .map_err(|failure| classify(failure, name, export, config, deadline, store.data()))?;
    Ok(RawOutput {
        bytes,
        duration: started.elapsed(),
        fuel_used,
    })
}

fn instantiate(
    store: &mut Store<StoreState>,
    name: &str,
    policy: &CompiledPolicy,
) -> Result<Instance, Failure> {
    let instance = policy.pre.instantiate(&mut *store).map_err(|e| {
        if store.data().limiter.refused.is_some() {
            Failure::Wasm(e)
        } else {
            Failure::Host(PolicyError::Instantiate {
                policy: name.into(),
                message: format!("{e:#}"),
            })
        }
    })?;
    if let Some(initialize) = &policy.exports.initialize {
        typed::<(), ()>(store, &instance, initialize)?.call(&mut *store, ())?;
    }
    Ok(instance)
}

/// The typed function behind an export resolved when the module was prepared
/// (no lookup by name per call).
fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    store: &mut Store<StoreState>,
    instance: &Instance,
    export: &ModuleExport,
) -> Result<TypedFunc<P, R>, Failure> {
    let func = instance
        .get_module_export(&mut *store, export)
        .and_then(Extern::into_func)
        .ok_or_else(|| wasmtime::Error::msg("a checked export is missing from its instance"))?;
    Ok(func.typed::<P, R>(&*store)?)
}

/// Why a call did not produce output: a wasmtime error, or a host-detected problem.
enum Failure {
    Wasm(wasmtime::Error),
    Host(PolicyError),
}

impl From<wasmtime::Error> for Failure {
    fn from(e: wasmtime::Error) -> Self {
        Self::Wasm(e)
    }
}

fn run(
    store: &mut Store<StoreState>,
    instance: &Instance,
    name: &str,
    policy: &CompiledPolicy,
    export: Export,
    input: &[u8],
    output_cap: usize,
) -> Result<Vec<u8>, Failure> {
    let exports = &policy.exports;
    let missing = || {
        Failure::Host(PolicyError::MissingExport {
            policy: name.into(),
            export: export.name().into(),
            problem: "is missing".into(),
        })
    };
    let memory = instance
        .get_module_export(&mut *store, &exports.memory)
        .and_then(Extern::into_memory)
        .ok_or_else(|| {
            Failure::Host(PolicyError::MissingExport {
                policy: name.into(),
                export: "memory".into(),
                problem: "is missing".into(),
            })
        })?;
    let packed = if export == Export::TestVectors {
        let index = exports.test_vectors.as_ref().ok_or_else(missing)?;
        typed::<(), i64>(store, instance, index)?.call(&mut *store, ())?
    } else {
        let index = match export {
            Export::ValidateSettings => Some(&exports.validate_settings),
            Export::Place => exports.place.as_ref(),
            Export::Transform => exports.transform.as_ref(),
            Export::Initialize | Export::TestVectors | Export::AbiVersion => None,
        }
        .ok_or_else(missing)?;
        let len = i32::try_from(input.len()).map_err(|_| {
            Failure::Host(PolicyError::InputTooLarge {
                policy: name.into(),
                len: input.len(),
                cap: i32::MAX as usize,
            })
        })?;
        let ptr = typed::<i32, i32>(store, instance, &exports.alloc)?.call(&mut *store, len)?;
        write_input(store, memory, name, ptr, input)?;
        typed::<(i32, i32), i64>(store, instance, index)?.call(&mut *store, (ptr, len))?
    };
    read_output(store, memory, name, export, packed, output_cap)
}

fn write_input(
    store: &mut Store<StoreState>,
    memory: Memory,
    name: &str,
    ptr: i32,
    input: &[u8],
) -> Result<(), Failure> {
    let bad = |why: String| {
        Failure::Host(PolicyError::MalformedOutput {
            policy: name.into(),
            export: "tmc_alloc".into(),
            message: why,
        })
    };
    if ptr == 0 {
        return Err(bad(
            "returned 0: the guest could not allocate the input".into()
        ));
    }
    memory
        .write(&mut *store, ptr as u32 as usize, input)
        .map_err(|_| {
            bad(format!(
                "returned address {} which cannot hold {} input bytes",
                ptr as u32,
                input.len()
            ))
        })
}

fn read_output(
    store: &mut Store<StoreState>,
    memory: Memory,
    name: &str,
    export: Export,
    packed: i64,
    output_cap: usize,
) -> Result<Vec<u8>, Failure> {
    let packed = packed as u64;
    let (ptr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    if len > output_cap {
        return Err(Failure::Host(PolicyError::OutputTooLarge {
            policy: name.into(),
            export: export.name().into(),
            len,
            cap: output_cap,
        }));
    }
    let data = memory.data(&*store);
    ptr.checked_add(len)
        .and_then(|end| data.get(ptr..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            Failure::Host(PolicyError::MalformedOutput {
                policy: name.into(),
                export: export.name().into(),
                message: format!(
                    "output location {ptr}+{len} lies outside the guest memory ({} bytes)",
                    data.len()
                ),
            })
        })
}

fn classify(
    failure: Failure,
    name: &str,
    export: Export,
    config: &HostConfig,
    deadline: Duration,
    state: &StoreState,
) -> PolicyError {
    let err = match failure {
        Failure::Host(e) => return e,
        Failure::Wasm(e) => e,
    };
    let policy = name.to_string();
    let export_name = export.name().to_string();
    if let Some(desired) = state.limiter.refused {
        return PolicyError::MemoryCap {
            policy,
            export: export_name,
            desired,
            cap: config.memory_cap,
        };
    }
    if state
        .stdio()
        .iter()
        .any(|(_, bytes)| bytes.len() >= config.stdio_cap)
    {
        return PolicyError::StdioCap {
            policy,
            export: export_name,
            cap: config.stdio_cap,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PolicyError::Deadline {
            policy,
            export: export_name,
            deadline,
        },
        Some(Trap::OutOfFuel) => PolicyError::Fuel {
            policy,
            export: export_name,
            fuel: config.fuel,
        },
        Some(trap) => PolicyError::Trap {
            policy,
            export: export_name,
            message: trap.to_string(),
        },
        None => match err.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => PolicyError::Trap {
                policy,
                export: export_name,
                message: format!("the guest called proc_exit({})", exit.0),
            },
            None => PolicyError::Trap {
                policy,
                export: export_name,
                message: format!("{err:#}"),
            },
        },
    }
}

/// Logs captured guest output at debug level (a policy's prints are its
/// author's debugging aid, not tmcd's operational log), one line per
/// `tracing` event, under the policy's name.
fn forward_stdio(name: &str, state: &StoreState) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for (stream, bytes) in state.stdio() {
        if bytes.is_empty() {
            continue;
        }
        for line in String::from_utf8_lossy(&bytes).lines() {
            tracing::debug!(policy = name, stream, "{line}");
        }
    }
}
