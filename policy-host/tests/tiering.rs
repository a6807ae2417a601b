//! Tiered compilation through the public API: a new module serves at once
//! (Winch), the optimized code replaces it without a new generation or a
//! change in behaviour, and broken modules are refused as before.

mod common;

use common::*;
use tmc_policy_host::{HostConfig, PolicyStatus, Tier};

#[tokio::test]
async fn optimized_code_replaces_baseline_code_with_the_same_behaviour() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policy(
        dir.path(),
        "location-affinity",
        &built_module("location-affinity"),
    );
    let host = host();
    let mut generations = host.subscribe();
    let report = host.load_dir(dir.path()).await.expect("load");
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(host.compiled_modules(), 1);
    generations.mark_unchanged();
    let generation = host.generation().number;

    let mut req = request(Some(5));
    req.workload
        .annotations
        .insert("tmc.kcp.io/regions".into(), "us-west-1".into());
    let before = host
        .place("location-affinity", &req)
        .await
        .expect("serves at once");

    host.wait_optimized().await;
    let now = host.generation();
    let active = now.active("location-affinity").expect("active");
    assert_eq!(active.tier(), Tier::Optimized);
    assert_eq!(host.optimized_modules(), 1);
    assert_eq!(
        now.number, generation,
        "a tier swap is not a new generation"
    );
    assert!(
        !generations.has_changed().expect("host alive"),
        "subscribers are not woken by a tier swap"
    );
    let after = host
        .place("location-affinity", &req)
        .await
        .expect("optimized code serves");
    assert_eq!(after.value, before.value);
    assert_eq!(after.digest, before.digest);
    // Fuel is charged per tier: Winch and Cranelift differ by a few percent.
    assert!(after.fuel_used > 0 && before.fuel_used > 0);
    assert_eq!(after.value.targets.len(), 1, "{:?}", after.value);
}

#[tokio::test]
async fn refused_modules_are_not_optimized_and_the_last_good_one_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    write_policy(dir.path(), "p", &fixture("good-v1"));
    host.load_dir(dir.path()).await.expect("load");
    host.wait_optimized().await;
    assert_eq!(host.optimized_modules(), 1);

    for bad in [fixture("wrong-abi"), b"not wasm".to_vec()] {
        write_policy(dir.path(), "p", &bad);
        let report = host.load_dir(dir.path()).await.expect("reload");
        assert_eq!(report.refused.len(), 1, "{report:?}");
        host.wait_optimized().await;
        assert_eq!(
            host.optimized_modules(),
            1,
            "nothing queued for a refused module"
        );
        let generation = host.generation();
        let entry = generation.get("p").expect("entry");
        assert_eq!(entry.status, PolicyStatus::UpdateRefused);
        assert_eq!(
            entry.active.as_ref().map(|a| a.tier()),
            Some(Tier::Optimized)
        );
        let eval = host.place("p", &request(None)).await.expect("v1 serves");
        assert_eq!(eval.value.reason, "v1");
    }
}

#[tokio::test]
async fn a_module_seen_before_comes_back_optimized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host_with(HostConfig::default());
    write_policy(dir.path(), "p", &fixture("good-v1"));
    host.load_dir(dir.path()).await.expect("load v1");
    host.wait_optimized().await;
    write_policy(dir.path(), "p", &fixture("good-v2"));
    host.load_dir(dir.path()).await.expect("load v2");
    write_policy(dir.path(), "p", &fixture("good-v1"));
    host.load_dir(dir.path()).await.expect("back to v1");
    let generation = host.generation();
    let active = generation.active("p").expect("active");
    assert_eq!(
        active.tier(),
        Tier::Optimized,
        "v1's optimized code was cached"
    );
    assert_eq!(host.compiled_modules(), 2);
}

/// Every evaluation gets a fresh instance of the module's pre-initialized
/// snapshot, in a fresh store, with either tier: what one call writes (a
/// mutable global, linear memory) is not seen by the next, and every call
/// starts from the state `_initialize` left (both set to 1).
#[tokio::test]
async fn no_state_leaks_from_one_evaluation_to_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policy(dir.path(), "p", &fixture("stateful-init"));
    let host = host();
    let report = host.load_dir(dir.path()).await.expect("load");
    assert!(report.refused.is_empty(), "{report:?}");
    let req = request(None);
    let reasons = || async {
        let mut reasons = Vec::new();
        for _ in 0..3 {
            let eval = host.place("p", &req).await.expect("answers");
            reasons.push(eval.value.reason);
        }
        let (a, b) = tokio::join!(host.place("p", &req), host.place("p", &req));
        reasons.extend([a, b].map(|eval| eval.expect("answers").value.reason));
        reasons
    };
    assert_eq!(reasons().await, ["g1m1"; 5], "baseline code");
    host.wait_optimized().await;
    let generation = host.generation();
    let active = generation.active("p").expect("active");
    assert_eq!(active.tier(), Tier::Optimized);
    assert!(
        active.exports().iter().any(|e| e == "_initialize"),
        "{:?}",
        active.exports()
    );
    assert_eq!(reasons().await, ["g1m1"; 5], "optimized code");
}
