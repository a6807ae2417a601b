//! # tmc-policy-sdk
//!
//! Types and helpers for writing tmc placement and transformation policies as
//! WebAssembly modules. The ABI is specified in `docs/policy-abi.md`.
//!
//! A Rust policy implements [`PlacementPolicy`] or [`TransformPolicy`] and
//! exports it with [`export_placement_policy!`] / [`export_transform_policy!`];
//! no `unsafe` is needed in the policy crate. [`testing`] runs the same policy
//! natively through the same JSON bytes, for unit tests and benchmarks.

pub mod abi;
#[cfg(target_arch = "wasm32")]
pub mod bump;
pub mod guest;
mod macros;
pub mod placement;
#[doc(hidden)]
pub mod rt;
pub mod rules;
pub mod selector;
pub mod testing;
pub mod vectors;

pub use abi::*;
pub use guest::{PlacementPolicy, TransformPolicy};
pub use placement::even_split;

/// Guests never free: see [`bump`].
#[cfg(all(target_arch = "wasm32", feature = "bump-alloc"))]
#[global_allocator]
static GLOBAL: bump::BumpAlloc = bump::BumpAlloc::new();
