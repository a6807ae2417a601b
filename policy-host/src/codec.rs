//! A call's JSON both ways (ABI section 2): the request in, the `{"ok": ...}`
//! / `{"error": ...}` envelope out, and the host rules
//! (`tmc_policy_sdk::rules`) on every placement decision and transformation
//! result. Evaluations and load-time test vectors both read answers here, so
//! an answer is checked against the rules exactly once.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tmc_policy_sdk::abi::{PlacementDecision, PlacementRequest, Response, TransformResult};
use tmc_policy_sdk::rules;

use crate::error::PolicyError;
use crate::invoke::Export;

/// The JSON input of a call.
pub(crate) fn encode<T: Serialize>(policy: &str, value: &T) -> Result<Vec<u8>, PolicyError> {
    serde_json::to_vec(value).map_err(|e| PolicyError::Internal {
        policy: policy.into(),
        message: format!("cannot serialize the input: {e}"),
    })
}

/// Decodes an output envelope into the `ok` value.
pub(crate) fn decode<T: DeserializeOwned>(
    policy: &str,
    export: Export,
    bytes: &[u8],
) -> Result<T, PolicyError> {
    match serde_json::from_slice::<Response<T>>(bytes) {
        Ok(Response::Ok(value)) => Ok(value),
        Ok(Response::Error(message)) => Err(PolicyError::Guest {
            policy: policy.into(),
            export: export.name().into(),
            message,
        }),
        Err(e) => Err(PolicyError::MalformedOutput {
            policy: policy.into(),
            export: export.name().into(),
            message: format!(
                "{e} (expected {{\"ok\": ...}} or {{\"error\": \"...\"}}; output starts {:?})",
                String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
            ),
        }),
    }
}

/// The placement decision in `tmc_place`'s output, checked against `req`.
pub(crate) fn decision(
    policy: &str,
    req: &PlacementRequest,
    bytes: &[u8],
) -> Result<PlacementDecision, PolicyError> {
    let decision: PlacementDecision = decode(policy, Export::Place, bytes)?;
    rules::check_decision(req, &decision).map_err(|violation| PolicyError::RuleViolation {
        policy: policy.into(),
        violation,
    })?;
    Ok(decision)
}

/// The edits in `tmc_transform`'s output, checked against the rules.
pub(crate) fn transform_result(policy: &str, bytes: &[u8]) -> Result<TransformResult, PolicyError> {
    let result: TransformResult = decode(policy, Export::Transform, bytes)?;
    rules::check_transform(&result).map_err(|violation| PolicyError::RuleViolation {
        policy: policy.into(),
        violation,
    })?;
    Ok(result)
}
