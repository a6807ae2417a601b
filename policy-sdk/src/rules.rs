//! Host-side checks on a policy's answer (ABI section 3).
//!
//! The host runs these on every decision and transformation; the native test
//! helpers in [`crate::testing`] run the very same functions, so a policy that
//! passes its unit tests cannot be refused by the host for breaking a rule.

use std::collections::BTreeSet;
use std::fmt;

use crate::abi::{MapEdits, PlacementDecision, PlacementRequest, TransformResult};

/// A rule the policy's answer broke, with the offending name or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleViolation {
    /// The decision names a target that is not in the request.
    UnknownTarget(String),
    /// The decision names a target more than once.
    DuplicateTarget(String),
    /// The workload has replicas but a chosen target has none.
    MissingReplicas { target: String },
    /// The workload has no replicas but a chosen target has some.
    UnexpectedReplicas { target: String },
    /// Chosen replicas do not add up to the workload's.
    ReplicaSum { expected: u32, got: u64 },
    /// A label or annotation key is not a valid qualified name.
    InvalidKey {
        map: &'static str,
        key: String,
        why: String,
    },
    /// A label value is not a valid label value.
    InvalidLabelValue {
        key: String,
        value: String,
        why: String,
    },
    /// A key belongs to tmc's own `workload.kcp.io` domain.
    ForbiddenKey { map: &'static str, key: String },
}

impl fmt::Display for RuleViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownTarget(t) => {
                write!(
                    f,
                    "decision names target {t:?} which is not among the request's targets"
                )
            }
            Self::DuplicateTarget(t) => write!(f, "decision names target {t:?} more than once"),
            Self::MissingReplicas { target } => write!(
                f,
                "workload has replicas but target {target:?} has no \"replicas\" in the decision"
            ),
            Self::UnexpectedReplicas { target } => write!(
                f,
                "workload has no replicas but the decision gives target {target:?} replicas"
            ),
            Self::ReplicaSum { expected, got } => write!(
                f,
                "decision replicas add up to {got}, the workload has {expected}"
            ),
            Self::InvalidKey { map, key, why } => write!(f, "{map} key {key:?} is invalid: {why}"),
            Self::InvalidLabelValue { key, value, why } => {
                write!(f, "label {key:?} has invalid value {value:?}: {why}")
            }
            Self::ForbiddenKey { map, key } => write!(
                f,
                "{map} key {key:?} is in tmc's reserved domain workload.kcp.io; policies may not set or remove it"
            ),
        }
    }
}

impl std::error::Error for RuleViolation {}

/// Checks a placement decision against its request.
pub fn check_decision(
    req: &PlacementRequest,
    decision: &PlacementDecision,
) -> Result<(), RuleViolation> {
    let known: BTreeSet<&str> = req.targets.iter().map(|t| t.name.as_str()).collect();
    let mut seen = BTreeSet::new();
    let mut sum: u64 = 0;
    for chosen in &decision.targets {
        if !known.contains(chosen.name.as_str()) {
            return Err(RuleViolation::UnknownTarget(chosen.name.clone()));
        }
        if !seen.insert(chosen.name.as_str()) {
            return Err(RuleViolation::DuplicateTarget(chosen.name.clone()));
        }
        match (req.workload.replicas, chosen.replicas) {
            (Some(_), Some(n)) => sum += u64::from(n),
            (Some(_), None) => {
                return Err(RuleViolation::MissingReplicas {
                    target: chosen.name.clone(),
                });
            }
            (None, Some(_)) => {
                return Err(RuleViolation::UnexpectedReplicas {
                    target: chosen.name.clone(),
                });
            }
            (None, None) => {}
        }
    }
    if let Some(expected) = req.workload.replicas
        && !decision.targets.is_empty()
        && sum != u64::from(expected)
    {
        return Err(RuleViolation::ReplicaSum { expected, got: sum });
    }
    Ok(())
}

/// Checks a transformation result: valid, non-reserved keys and valid label values.
pub fn check_transform(result: &TransformResult) -> Result<(), RuleViolation> {
    check_edits("label", &result.labels)?;
    for (key, value) in &result.labels.set {
        validate_label_value(value).map_err(|why| RuleViolation::InvalidLabelValue {
            key: key.clone(),
            value: value.clone(),
            why,
        })?;
    }
    check_edits("annotation", &result.annotations)
}

fn check_edits(map: &'static str, edits: &MapEdits) -> Result<(), RuleViolation> {
    for key in edits.set.keys().chain(edits.remove.iter()) {
        validate_qualified_name(key).map_err(|why| RuleViolation::InvalidKey {
            map,
            key: key.clone(),
            why,
        })?;
        if is_reserved_key(key) {
            return Err(RuleViolation::ForbiddenKey {
                map,
                key: key.clone(),
            });
        }
    }
    Ok(())
}

/// True for keys in tmc's own domain: prefix `workload.kcp.io` or `*.workload.kcp.io`.
pub fn is_reserved_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, _)) => prefix == "workload.kcp.io" || prefix.ends_with(".workload.kcp.io"),
        None => false,
    }
}

/// Validates a Kubernetes qualified name (`[prefix/]name`), as used for label
/// and annotation keys. Returns why it is invalid.
pub fn validate_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        validate_dns_subdomain(prefix).map_err(|why| format!("prefix {prefix:?}: {why}"))?;
    }
    if name.is_empty() {
        return Err("name part must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "name part is {} characters, at most 63 allowed",
            name.len()
        ));
    }
    validate_name_chars(name)
}

/// Validates a label value: empty, or at most 63 characters of alphanumerics,
/// `-`, `_`, `.`, starting and ending alphanumeric.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err(format!("{} characters, at most 63 allowed", value.len()));
    }
    validate_name_chars(value)
}

fn validate_name_chars(s: &str) -> Result<(), String> {
    let bytes = s.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_alphanumeric();
    if !edge_ok(bytes[0]) || !edge_ok(bytes[bytes.len() - 1]) {
        return Err("must start and end with an alphanumeric character".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "character {c:?} not allowed (alphanumerics, '-', '_', '.')"
        ));
    }
    Ok(())
}

fn validate_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("{} characters, at most 253 allowed", s.len()));
    }
    let bytes = s.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge_ok(bytes[0]) || !edge_ok(bytes[bytes.len() - 1]) {
        return Err("must start and end with a lower-case alphanumeric character".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')))
    {
        return Err(format!(
            "character {c:?} not allowed (lower-case alphanumerics, '-', '.')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{Target, TargetDecision, Workload};

    fn request(replicas: Option<u32>) -> PlacementRequest {
        PlacementRequest {
            workload: Workload {
                replicas,
                ..Default::default()
            },
            targets: ["east", "west"]
                .iter()
                .map(|n| Target {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn decision(targets: &[(&str, Option<u32>)]) -> PlacementDecision {
        PlacementDecision {
            targets: targets
                .iter()
                .map(|(n, r)| TargetDecision {
                    name: n.to_string(),
                    replicas: *r,
                })
                .collect(),
            reason: String::new(),
        }
    }

    #[test]
    fn accepts_valid_decisions() {
        let d = decision(&[("east", Some(1)), ("west", Some(2))]);
        assert_eq!(check_decision(&request(Some(3)), &d), Ok(()));
        let d = decision(&[("west", None)]);
        assert_eq!(check_decision(&request(None), &d), Ok(()));
        assert_eq!(check_decision(&request(Some(3)), &decision(&[])), Ok(()));
    }

    #[test]
    fn refuses_unknown_and_duplicate_targets() {
        let d = decision(&[("north", None)]);
        assert_eq!(
            check_decision(&request(None), &d),
            Err(RuleViolation::UnknownTarget("north".into()))
        );
        let d = decision(&[("west", None), ("west", None)]);
        assert_eq!(
            check_decision(&request(None), &d),
            Err(RuleViolation::DuplicateTarget("west".into()))
        );
    }

    #[test]
    fn refuses_bad_replicas() {
        let d = decision(&[("east", Some(1)), ("west", Some(1))]);
        assert_eq!(
            check_decision(&request(Some(3)), &d),
            Err(RuleViolation::ReplicaSum {
                expected: 3,
                got: 2
            })
        );
        let d = decision(&[("east", None)]);
        assert!(matches!(
            check_decision(&request(Some(3)), &d),
            Err(RuleViolation::MissingReplicas { .. })
        ));
        let d = decision(&[("east", Some(1))]);
        assert!(matches!(
            check_decision(&request(None), &d),
            Err(RuleViolation::UnexpectedReplicas { .. })
        ));
    }

    #[test]
    fn qualified_names() {
        for ok in ["app", "tmc.kcp.io/target", "a-b_c.d", "x/y", "A9"] {
            assert_eq!(validate_qualified_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/x",
            "x/",
            "-a",
            "a-",
            "Tmc.io/x",
            "a b",
            "x/y/z",
            &"a".repeat(64),
        ] {
            assert!(validate_qualified_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_values() {
        assert_eq!(validate_label_value(""), Ok(()));
        assert_eq!(validate_label_value("us-west-1"), Ok(()));
        assert!(validate_label_value("has space").is_err());
        assert!(validate_label_value("-lead").is_err());
        assert!(validate_label_value(&"v".repeat(64)).is_err());
    }

    #[test]
    fn reserved_domain() {
        assert!(is_reserved_key("workload.kcp.io/cluster"));
        assert!(is_reserved_key("state.workload.kcp.io/west"));
        assert!(!is_reserved_key("myworkload.kcp.io/x"));
        assert!(!is_reserved_key("tmc.kcp.io/target"));
        assert!(!is_reserved_key("workload.kcp.io"));
        let mut r = TransformResult::default();
        r.labels
            .set
            .insert("state.workload.kcp.io/west".into(), "Sync".into());
        assert!(matches!(
            check_transform(&r),
            Err(RuleViolation::ForbiddenKey { .. })
        ));
        let mut r = TransformResult::default();
        r.annotations.remove.push("workload.kcp.io/x".into());
        assert!(matches!(
            check_transform(&r),
            Err(RuleViolation::ForbiddenKey { .. })
        ));
        let mut r = TransformResult::default();
        r.labels.set.insert("env".into(), "not valid!".into());
        assert!(matches!(
            check_transform(&r),
            Err(RuleViolation::InvalidLabelValue { .. })
        ));
        let mut r = TransformResult::default();
        r.annotations
            .set
            .insert("note".into(), "free text is fine!".into());
        assert_eq!(check_transform(&r), Ok(()));
    }
}
