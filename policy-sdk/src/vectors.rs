//! Test vectors: parsing and the comparison rules of ABI section 2
//! (`TestVector`), shared by the host and the native test helpers.

use std::collections::BTreeSet;

use crate::abi::{
    MapEdits, PlacementDecision, PlacementDecisionExpectation, PlacementRequest, TestVector,
    TransformRequest, TransformResult,
};

/// Parses a JSON array of test vectors.
pub fn parse(json: &str) -> Result<Vec<TestVector>, String> {
    serde_json::from_str(json).map_err(|e| format!("cannot parse test vectors: {e}"))
}

/// Compares a decision with a placement expectation: same targets with the
/// same replicas, in any order; the reason is not compared.
pub fn check_place(
    expect: &PlacementDecisionExpectation,
    got: &PlacementDecision,
) -> Result<(), String> {
    let mut want = expect.targets.clone();
    let mut have = got.targets.clone();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    have.sort_by(|a, b| a.name.cmp(&b.name));
    if want == have {
        Ok(())
    } else {
        Err(format!(
            "expected targets {}, got {} (reason: {:?})",
            describe(&want),
            describe(&have),
            got.reason
        ))
    }
}

fn describe(targets: &[crate::abi::TargetDecision]) -> String {
    let parts: Vec<String> = targets
        .iter()
        .map(|t| match t.replicas {
            Some(r) => format!("{}={r}", t.name),
            None => t.name.clone(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Compares a transformation result with its expectation (`remove` as sets).
pub fn check_transform(expect: &TransformResult, got: &TransformResult) -> Result<(), String> {
    if same_edits(&expect.labels, &got.labels) && same_edits(&expect.annotations, &got.annotations)
    {
        Ok(())
    } else {
        Err(format!(
            "expected {}, got {}",
            serde_json::to_string(expect).unwrap_or_default(),
            serde_json::to_string(got).unwrap_or_default()
        ))
    }
}

fn same_edits(a: &MapEdits, b: &MapEdits) -> bool {
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    a.set == b.set && set(&a.remove) == set(&b.remove)
}

/// Runs every vector through the given entry points and returns one line per
/// failing vector (empty when all pass).
pub fn run(
    vectors: &[TestVector],
    mut place: impl FnMut(&PlacementRequest) -> Result<PlacementDecision, String>,
    mut transform: impl FnMut(&TransformRequest) -> Result<TransformResult, String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for vector in vectors {
        let (name, outcome) = match vector {
            TestVector::Place {
                name,
                input,
                expect,
            } => (name, place(input).and_then(|got| check_place(expect, &got))),
            TestVector::Transform {
                name,
                input,
                expect,
            } => (
                name,
                transform(input).and_then(|got| check_transform(expect, &got)),
            ),
        };
        if let Err(e) = outcome {
            failures.push(format!("vector {name:?}: {e}"));
        }
    }
    failures
}
