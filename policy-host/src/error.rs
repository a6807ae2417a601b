//! Errors of the policy host; every variant names the policy (or directory).

use std::time::Duration;

use tmc_policy_sdk::rules::RuleViolation;

/// What went wrong loading or evaluating a policy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {policy:?} is not loaded (check the policy directory and `tmcd policy list`)")]
    UnknownPolicy { policy: String },
    #[error("policy {policy:?} is not a {wanted} policy (it does not export {export})")]
    WrongKind {
        policy: String,
        wanted: &'static str,
        export: &'static str,
    },
    #[error("policy {policy:?}: cannot read {path}: {message}")]
    Io {
        policy: String,
        path: String,
        message: String,
    },
    #[error("policy directory {path}: {message}")]
    Directory { path: String, message: String },
    #[error("policy {policy:?}: not a valid wasm module: {message}")]
    Compile { policy: String, message: String },
    #[error("policy {policy:?}: export {export:?} {problem} (see docs/policy-abi.md section 1.1)")]
    MissingExport {
        policy: String,
        export: String,
        problem: String,
    },
    #[error(
        "policy {policy:?}: import {module}::{name} is not allowed (only wasi_snapshot_preview1)"
    )]
    ImportNotAllowed {
        policy: String,
        module: String,
        name: String,
    },
    #[error("policy {policy:?}: tmc_abi_version() returned {found}, this host speaks version 1")]
    AbiVersion { policy: String, found: i32 },
    #[error("policy {policy:?}: cannot instantiate: {message}")]
    Instantiate { policy: String, message: String },
    #[error("policy {policy:?} trapped in {export}: {message}")]
    Trap {
        policy: String,
        export: String,
        message: String,
    },
    #[error("policy {policy:?} exceeded its deadline of {deadline:?} in {export}")]
    Deadline {
        policy: String,
        export: String,
        deadline: Duration,
    },
    #[error(
        "policy {policy:?}: loading took longer than its budget of {budget:?} (instantiation, _initialize, settings and test vectors; fix: fewer or faster test vectors, or raise policies.load_timeout_ms)"
    )]
    LoadBudget { policy: String, budget: Duration },
    #[error("policy {policy:?} ran out of fuel ({fuel} units) in {export}")]
    Fuel {
        policy: String,
        export: String,
        fuel: u64,
    },
    #[error(
        "policy {policy:?} tried to grow its memory to {desired} bytes in {export}, the cap is {cap}"
    )]
    MemoryCap {
        policy: String,
        export: String,
        desired: usize,
        cap: usize,
    },
    #[error("policy {policy:?} wrote more than {cap} bytes to stdout/stderr in {export}")]
    StdioCap {
        policy: String,
        export: String,
        cap: usize,
    },
    #[error("policy {policy:?}: input of {len} bytes exceeds the cap of {cap}")]
    InputTooLarge {
        policy: String,
        len: usize,
        cap: usize,
    },
    #[error("policy {policy:?}: output of {len} bytes from {export} exceeds the cap of {cap}")]
    OutputTooLarge {
        policy: String,
        export: String,
        len: usize,
        cap: usize,
    },
    #[error("policy {policy:?}: malformed output from {export}: {message}")]
    MalformedOutput {
        policy: String,
        export: String,
        message: String,
    },
    #[error("policy {policy:?} answered an error from {export}: {message}")]
    Guest {
        policy: String,
        export: String,
        message: String,
    },
    #[error("policy {policy:?} broke a host rule: {violation}")]
    RuleViolation {
        policy: String,
        violation: RuleViolation,
    },
    #[error("policy {policy:?} rejects its settings: {message}")]
    SettingsRejected { policy: String, message: String },
    #[error("policy {policy:?} failed its own test vectors:\n{failures}")]
    TestVectors { policy: String, failures: String },
    #[error("policy {policy:?}: host failure: {message}")]
    Internal { policy: String, message: String },
}

impl PolicyError {
    /// The policy (or directory) the error is about.
    pub fn policy(&self) -> &str {
        match self {
            Self::Directory { path, .. } => path,
            Self::UnknownPolicy { policy }
            | Self::WrongKind { policy, .. }
            | Self::Io { policy, .. }
            | Self::Compile { policy, .. }
            | Self::MissingExport { policy, .. }
            | Self::ImportNotAllowed { policy, .. }
            | Self::AbiVersion { policy, .. }
            | Self::Instantiate { policy, .. }
            | Self::Trap { policy, .. }
            | Self::Deadline { policy, .. }
            | Self::LoadBudget { policy, .. }
            | Self::Fuel { policy, .. }
            | Self::MemoryCap { policy, .. }
            | Self::StdioCap { policy, .. }
            | Self::InputTooLarge { policy, .. }
            | Self::OutputTooLarge { policy, .. }
            | Self::MalformedOutput { policy, .. }
            | Self::Guest { policy, .. }
            | Self::RuleViolation { policy, .. }
            | Self::SettingsRejected { policy, .. }
            | Self::TestVectors { policy, .. }
            | Self::Internal { policy, .. } => policy,
        }
    }
}
