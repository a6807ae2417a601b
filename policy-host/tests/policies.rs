//! The example policies through the real host. They are built by
//! `hack/build-policies.sh` into `target/policies/`; the tests fail with that
//! command if a module is missing.

mod common;

use std::path::Path;

use common::*;
use serde_json::json;
use tmc_policy_host::{HostConfig, PolicyError, PolicyKind, PolicyStatus, Tier};
use tmc_policy_sdk::{TestVector, TransformRequest, Workload, vectors};

const RUST_POLICIES: [&str; 3] = ["location-affinity", "replica-spread", "label-stamper"];

#[tokio::test]
async fn example_policies_load_and_pass_their_own_vectors() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in RUST_POLICIES {
        write_policy(dir.path(), name, &built_module(name));
    }
    let host = cached_host();
    let report = host.load_dir(dir.path()).await.expect("load");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(report.loaded.len(), 3);
    let generation = host.generation();
    assert_eq!(generation.number, 1);
    for name in RUST_POLICIES {
        let entry = generation.get(name).expect("listed");
        assert_eq!(entry.status, PolicyStatus::Active);
    }
    let kinds: Vec<_> = generation
        .policy_infos()
        .into_iter()
        .map(|s| (s.name, s.kind))
        .collect();
    assert!(kinds.contains(&("label-stamper".into(), Some(PolicyKind::Transformation))));
    assert!(kinds.contains(&("replica-spread".into(), Some(PolicyKind::Placement))));
}

#[tokio::test]
async fn a_module_given_as_bytes_serves_beside_the_directory_and_lists_its_exports() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policy(dir.path(), "label-stamper", &built_module("label-stamper"));
    write_policy(dir.path(), "broken", b"\0asm\x01\0\0\0");
    let host = cached_host();
    host.load_dir(dir.path()).await.expect("load");
    let before = host.generation().number;

    let bytes = built_module("location-affinity");
    let active = host
        .load_module("location-affinity", bytes.clone())
        .await
        .expect("loads");
    assert_eq!(active.kind, PolicyKind::Placement);
    assert_eq!(active.source, None);
    let exports = active.exports();
    for export in [
        "tmc_abi_version",
        "tmc_alloc",
        "tmc_place",
        "tmc_test_vectors",
    ] {
        assert!(exports.iter().any(|e| e == export), "{export}: {exports:?}");
    }
    assert!(
        !exports.iter().any(|e| e == "memory"),
        "functions only: {exports:?}"
    );
    assert!(exports.is_sorted(), "{exports:?}");
    let generation = host.generation();
    assert_eq!(generation.number, before + 1);
    assert!(
        generation.active("label-stamper").is_some(),
        "the directory's modules stay"
    );

    let infos = generation.policy_infos();
    let info = |name: &str| {
        infos
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} listed: {infos:?}"))
    };
    let loaded = info("location-affinity");
    assert!(loaded.serving && loaded.source.is_none(), "{loaded:?}");
    assert_eq!(loaded.digest.as_deref(), Some(active.digest.as_str()));
    let broken = info("broken");
    assert!(!broken.serving && broken.digest.is_none(), "{broken:?}");
    assert!(info("label-stamper").source.is_some());

    let compiled = host.compiled_modules();
    let again = host
        .load_module("location-affinity", bytes)
        .await
        .expect("same bytes");
    assert_eq!(again.digest, active.digest);
    assert_eq!(
        host.compiled_modules(),
        compiled,
        "same digest: nothing compiled"
    );
    assert_eq!(host.generation().number, before + 1, "nothing changed");
}

#[tokio::test]
async fn rust_and_go_location_affinity_agree_on_every_shared_vector() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policy(dir.path(), "rust", &built_module("location-affinity"));
    write_policy(dir.path(), "go", &built_module("location-affinity-go"));
    let host = cached_host();
    let report = host.load_dir(dir.path()).await.expect("load");
    assert!(report.refused.is_empty(), "{:?}", report.refused);

    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/testdata/location-affinity-vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let list = vectors::parse(&text).expect("vectors parse");
    assert!(!list.is_empty());
    let mut checked = 0;
    for vector in &list {
        let TestVector::Place {
            name,
            input,
            expect,
        } = vector
        else {
            continue;
        };
        for policy in ["rust", "go"] {
            let eval = host
                .place(policy, input)
                .await
                .unwrap_or_else(|e| panic!("vector {name:?}: {e}"));
            vectors::check_place(expect, &eval.value)
                .unwrap_or_else(|e| panic!("{policy} module, vector {name:?}: {e}"));
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * list.len());
}

/// The Go twin is served from its pre-initialized snapshot, which is cached
/// on disk with its optimized code: a second host (a restart) neither runs
/// `_initialize` nor compiles, and answers the same under the same identity
/// (the SHA-256 of the file as written).
#[tokio::test]
async fn a_snapshot_is_cached_on_disk_and_serves_a_second_host_without_compiling() {
    use sha2::Digest as _;
    let cache = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = built_module("location-affinity-go");
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    write_policy(dir.path(), "go", &bytes);
    let config = HostConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        // The cache is tested here, not time: the Go twin's vectors can take
        // over the default 100 ms on a loaded 2-core machine.
        deadline: std::time::Duration::from_secs(10),
        ..HostConfig::default()
    };
    let first = host_with(config.clone());
    let report = first.load_dir(dir.path()).await.expect("load");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(first.compiled_modules(), 1);
    first.wait_optimized().await;
    let exports = first.generation().active("go").expect("active").exports();
    assert!(exports.iter().any(|e| e == "_initialize"), "{exports:?}");

    let mut files: Vec<String> = std::fs::read_dir(cache.path())
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "the snapshot and its code: {files:?}");
    for (file, ext) in files.iter().zip([".cwasm", ".wasm"]) {
        assert!(
            file.starts_with(&format!("{digest}-snap")) && file.ends_with(ext),
            "{files:?}"
        );
    }

    let second = host_with(config);
    let report = second.load_dir(dir.path()).await.expect("load from cache");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(second.compiled_modules(), 0);
    let generation = second.generation();
    let active = generation.active("go").expect("active");
    assert_eq!(active.tier(), Tier::Optimized);
    assert_eq!(active.digest, digest);
    let a = first.place("go", &request(Some(3))).await.expect("first");
    let b = second.place("go", &request(Some(3))).await.expect("second");
    assert_eq!(
        (&a.value.targets, &a.value.reason),
        (&b.value.targets, &b.value.reason)
    );
    assert_eq!(b.digest, digest);
    assert_eq!(
        a.fuel_used, b.fuel_used,
        "the same code from the same state"
    );
}

#[tokio::test]
async fn settings_are_validated_by_the_module() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policy(
        dir.path(),
        "location-affinity",
        &built_module("location-affinity"),
    );
    let host = cached_host();
    host.load_dir(dir.path()).await.expect("load");
    host.validate_settings("location-affinity", &json!({"mode": "preferred"}))
        .await
        .expect("valid");
    let err = host
        .validate_settings("location-affinity", &json!({"mode": "sometimes"}))
        .await
        .expect_err("invalid");
    assert!(
        matches!(&err, PolicyError::SettingsRejected { message, .. } if message.contains("sometimes")),
        "{err}"
    );
}

#[tokio::test]
async fn label_stamper_stamps_through_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policy(dir.path(), "label-stamper", &built_module("label-stamper"));
    let host = cached_host();
    host.load_dir(dir.path()).await.expect("load");
    let req = TransformRequest {
        workload: Workload::default(),
        target: target("west", "us-west-1"),
        replicas: Some(2),
        settings: json!({"labels": {"environment": "prod"}}),
    };
    let eval = host.transform("label-stamper", &req).await.expect("stamps");
    let labels = &eval.value.labels.set;
    assert_eq!(labels["tmc.kcp.io/target"], "west");
    assert_eq!(labels["tmc.kcp.io/region"], "us-west-1");
    assert_eq!(labels["environment"], "prod");
    assert!(eval.fuel_used > 0);
}

#[tokio::test]
async fn evaluation_names_policy_digest_and_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = built_module("replica-spread");
    write_policy(dir.path(), "replica-spread", &bytes);
    let host = cached_host();
    host.load_dir(dir.path()).await.expect("load");
    let eval = host
        .place("replica-spread", &request(Some(5)))
        .await
        .expect("places");
    assert_eq!(eval.policy, "replica-spread");
    assert_eq!(eval.generation, 1);
    assert_eq!(eval.digest.len(), 64);
    let total: u32 = eval.value.targets.iter().filter_map(|t| t.replicas).sum();
    assert_eq!(total, 5);
    let blocking = host
        .place_blocking("replica-spread", &request(Some(5)))
        .expect("places on the calling thread");
    assert_eq!(blocking.value, eval.value);
}
