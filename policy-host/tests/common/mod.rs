//! Helpers shared by the policy host's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tmc_policy_host::{HostConfig, PolicyHost};
use tmc_policy_sdk::{Location, PlacementRequest, Target, Workload};

/// Compiles `tests/fixtures/<name>.wat` to wasm bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Reads a module built by `hack/build-policies.sh`, or fails saying how to build it.
pub fn built_module(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/policies")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nbuild the policies first: hack/build-policies.sh",
            path.display()
        )
    })
}

pub fn host() -> PolicyHost {
    host_with(HostConfig::default())
}

/// A host whose compiled modules persist in `target/policy-test-cache`, so
/// big modules (the Go policy) compile once across tests and runs.
pub fn cached_host() -> PolicyHost {
    host_with(HostConfig {
        cache_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/policy-test-cache")),
        ..HostConfig::default()
    })
}

pub fn host_with(config: HostConfig) -> PolicyHost {
    PolicyHost::new(config).expect("policy host starts")
}

/// Writes `<dir>/<name>.wasm`.
pub fn write_policy(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).expect("write policy file");
    path
}

/// Waits (bounded) until the host reaches a generation above `after`.
pub async fn next_generation(host: &PolicyHost, after: u64) -> u64 {
    let mut rx = host.subscribe();
    let wait = rx.wait_for(|g| *g > after);
    match tokio::time::timeout(Duration::from_secs(10), wait).await {
        Ok(Ok(g)) => *g,
        _ => panic!(
            "no new generation after {after} within 10 s (current {})",
            host.generation().number
        ),
    }
}

pub fn target(name: &str, region: &str) -> Target {
    Target {
        name: name.into(),
        labels: [
            (
                "topology.kubernetes.io/region".to_string(),
                region.to_string(),
            ),
            (
                "topology.kubernetes.io/zone".to_string(),
                format!("{region}a"),
            ),
        ]
        .into(),
        location: Location {
            region: region.into(),
            zone: format!("{region}a"),
        },
        ready: true,
        schedulable: true,
        ..Default::default()
    }
}

/// A Deployment with `replicas` over targets `east` (us-east-1) and `west` (us-west-1).
pub fn request(replicas: Option<u32>) -> PlacementRequest {
    PlacementRequest {
        workload: Workload {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            replicas,
            ..Default::default()
        },
        targets: vec![target("east", "us-east-1"), target("west", "us-west-1")],
        ..Default::default()
    }
}
