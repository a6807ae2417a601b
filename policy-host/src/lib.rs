//! # tmc-policy-host
//!
//! The sandboxed wasmtime host for tmc policies (ABI in `docs/policy-abi.md`):
//! one shared engine per compiler tier with epoch interruption, fuel and a
//! pooling allocator; modules compiled once and cached by SHA-256 (tiered:
//! Winch first so a new module serves quickly, Cranelift in the background);
//! a module with `_initialize` (Go) pre-initialized once at load into a
//! snapshot; a fresh instance per evaluation on a blocking thread; policy sets as
//! immutable generations swapped atomically, with hot reload that keeps the
//! last good version.
//!
//! Each part owns one concern, and depends only on the parts listed before it:
//! `engine` (the wasmtime engines and linkers, with the sandbox's host
//! functions in `sandbox`, `clock`, `poll` and `random`), `module` (export
//! checks, pre-linking), `invoke` (one call in a fresh store), `codec` (JSON
//! both ways and the host rules), `validate` (what a module must pass before
//! it serves, within the load budget), `snapshot` (pre-initializing a module
//! that exports `_initialize`), `cache` (compiled modules and snapshots by
//! digest), `registry` (the current generation and the lock that changes
//! it), `tier` (the Cranelift recompilation worker), `loader` (building and
//! publishing generations), `watch` (hot reload), and [`PolicyHost`], which
//! wires them together and runs evaluations.
//!
//! ```no_run
//! # async fn demo(req: tmc_policy_sdk::PlacementRequest) -> anyhow::Result<()> {
//! use tmc_policy_host::{HostConfig, PolicyHost};
//! let host = PolicyHost::new(HostConfig::default())?;
//! host.load_dir("/etc/tmc/policies").await?;
//! let _watch = host.watch("/etc/tmc/policies")?;
//! let eval = host.place("location-affinity", &req).await?;
//! println!("{:?} because {}", eval.value.targets, eval.value.reason);
//! # Ok(()) }
//! ```

mod cache;
mod clock;
mod codec;
mod config;
mod engine;
mod error;
mod generation;
mod host;
mod invoke;
mod loader;
mod module;
mod poll;
mod random;
mod registry;
mod sandbox;
mod snapshot;
mod tier;
mod validate;
mod watch;

pub use cache::RETIRED_KEPT;
pub use config::HostConfig;
pub use error::PolicyError;
pub use generation::{ActivePolicy, Generation, PolicyEntry, PolicyInfo, PolicyStatus};
pub use host::{Evaluation, PolicyHost};
pub use loader::{ReloadReport, is_policy_file};
pub use module::{PolicyKind, Tier};
pub use watch::WatchHandle;
