//! Native helpers: run a policy outside wasm through the same JSON path as the
//! host (bytes in, envelope bytes out, then the host rules), so policies get
//! ordinary `cargo test` unit tests and benchmarks get a native baseline.

use serde::de::DeserializeOwned;

use crate::abi::{
    PlacementDecision, PlacementRequest, Response, SettingsRequest, SettingsVerdict,
    TransformRequest, TransformResult,
};
use crate::guest::{self, PlacementPolicy, TransformPolicy};
use crate::{rules, vectors};

/// Decodes an output envelope: the `ok` value, or the guest's error message.
pub fn decode_response<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match serde_json::from_slice::<Response<T>>(bytes) {
        Ok(Response::Ok(value)) => Ok(value),
        Ok(Response::Error(message)) => Err(format!("policy error: {message}")),
        Err(e) => Err(format!("malformed output: {e}")),
    }
}

fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// `tmc_place` on raw input bytes, exactly what the wasm export runs.
pub fn place_bytes<P: PlacementPolicy>(input: &[u8]) -> Vec<u8> {
    guest::place_json::<P>(input)
}

/// Serializes `request`, runs `tmc_place`, decodes and checks the decision
/// with the host's rules.
pub fn place<P: PlacementPolicy>(request: &PlacementRequest) -> Result<PlacementDecision, String> {
    let decision: PlacementDecision = decode_response(&place_bytes::<P>(&to_bytes(request)))?;
    rules::check_decision(request, &decision).map_err(|v| format!("rule violation: {v}"))?;
    Ok(decision)
}

/// Serializes `request`, runs `tmc_transform`, decodes and checks the result.
pub fn transform<P: TransformPolicy>(
    request: &TransformRequest,
) -> Result<TransformResult, String> {
    let bytes = guest::transform_json::<P>(&to_bytes(request));
    let result: TransformResult = decode_response(&bytes)?;
    rules::check_transform(&result).map_err(|v| format!("rule violation: {v}"))?;
    Ok(result)
}

/// `tmc_validate_settings` of a placement policy.
pub fn validate_placement_settings<P: PlacementPolicy>(
    settings: serde_json::Value,
) -> Result<SettingsVerdict, String> {
    let input = to_bytes(&SettingsRequest { settings });
    decode_response(&guest::validate_placement_settings_json::<P>(&input))
}

/// `tmc_validate_settings` of a transformation policy.
pub fn validate_transform_settings<P: TransformPolicy>(
    settings: serde_json::Value,
) -> Result<SettingsVerdict, String> {
    let input = to_bytes(&SettingsRequest { settings });
    decode_response(&guest::validate_transform_settings_json::<P>(&input))
}

/// Runs placement vectors (a JSON array) natively; `Err` lists every failure.
pub fn run_placement_vectors<P: PlacementPolicy>(json: &str) -> Result<usize, String> {
    let parsed = vectors::parse(json)?;
    let failures = vectors::run(&parsed, place::<P>, |_| {
        Err("this policy has no tmc_transform".into())
    });
    finish(parsed.len(), failures)
}

/// Runs transformation vectors (a JSON array) natively; `Err` lists every failure.
pub fn run_transform_vectors<P: TransformPolicy>(json: &str) -> Result<usize, String> {
    let parsed = vectors::parse(json)?;
    let failures = vectors::run(
        &parsed,
        |_| Err("this policy has no tmc_place".into()),
        transform::<P>,
    );
    finish(parsed.len(), failures)
}

fn finish(count: usize, failures: Vec<String>) -> Result<usize, String> {
    if count == 0 {
        return Err("no test vectors in the file".into());
    }
    if failures.is_empty() {
        Ok(count)
    } else {
        Err(failures.join("\n"))
    }
}
