//! What syncing costs the servers: the requests the syncer sends to kcp (the
//! system's bottleneck, see docs/benchmarks.md "End to end") and to the
//! physical cluster per synced object, counted by a recording layer in the
//! clients, from the create of N placed Deployments until every copy is rolled
//! out and its final status is reported upstream. Prints the counts; fails if
//! the common path reads objects from kcp instead of the watch caches or
//! writes more than the protocol needs. Needs the test bed binaries
//! (`hack/testbed/build.sh`).

mod common;

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tmc_api::decision::TargetStatus;
use tmc_tests::testbed::KCP;

use common::{Fixture, NS, annotations_of, wait_until};

const N: usize = 10;

/// True when the copy is rolled out and upstream reports exactly its status and content.
fn settled(up: &Deployment, copy: &Deployment) -> Result<(), String> {
    let copy_status = serde_json::to_value(&copy.status).unwrap_or_default();
    let rolled_out = copy_status["observedGeneration"].as_i64() == copy.metadata.generation
        && copy_status["availableReplicas"] == 1
        && copy_status["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "NewReplicaSetAvailable"));
    if !rolled_out {
        return Err(format!("copy not rolled out: {copy_status}"));
    }
    let reported: Option<TargetStatus> = annotations_of(up)
        .get("status.workload.kcp.io/west")
        .and_then(|raw| serde_json::from_str(raw).ok());
    let Some(reported) = reported else {
        return Err("no status reported".into());
    };
    let hash = annotations_of(copy)
        .get("workload.kcp.io/content-hash")
        .cloned();
    if Some(&reported.applied_hash) != hash.as_ref()
        || reported.status.as_ref() != Some(&copy_status)
    {
        return Err(format!(
            "reported {:?} != copy {copy_status}",
            reported.status
        ));
    }
    Ok(())
}

#[tokio::test]
async fn requests_per_synced_object() -> Result<()> {
    let mut fx = Fixture::start().await?;
    let (kcp, kcp_log) = fx.recording_client(KCP).await?;
    let (west, west_log) = fx.recording_client("west").await?;
    // No resync during the count: it would add reconciles unrelated to the objects' changes.
    fx.start_syncer_with(kcp, west, Duration::from_secs(3600));
    fx.wait_ready("True", None).await?;

    let names: Vec<String> = (0..N).map(|i| format!("w{i:02}")).collect();
    for name in &names {
        fx.create_placed(name, 1).await?;
    }
    let (ups, copies) = (fx.upstream_deployments(), fx.west_deployments());
    for name in &names {
        wait_until(
            &format!("{name} rolled out and its status reported"),
            || {
                let (ups, copies) = (ups.clone(), copies.clone());
                async move {
                    let Some(copy) = copies.get_opt(name).await? else {
                        return Ok(Err("no copy yet".into()));
                    };
                    Ok(settled(&ups.get(name).await?, &copy))
                }
            },
        )
        .await?;
    }

    let path = |name: &str| format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}");
    let per_object = |log: &common::RequestLog, method: &str| -> Vec<usize> {
        names.iter().map(|n| log.count(method, &path(n))).collect()
    };
    let (kcp_gets, kcp_patches) = (per_object(&kcp_log, "GET"), per_object(&kcp_log, "PATCH"));
    let (west_gets, west_patches) = (per_object(&west_log, "GET"), per_object(&west_log, "PATCH"));
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    println!(
        "MEASURE requests per synced Deployment (N={N}, replicas 1, from create to final status reported): \
         kcp GET {:.1} {kcp_gets:?}, kcp PATCH {:.1} {kcp_patches:?}; west GET {:.1} {west_gets:?}, west PATCH {:.1} {west_patches:?}",
        mean(&kcp_gets),
        mean(&kcp_patches),
        mean(&west_gets),
        mean(&west_patches),
    );
    for line in kcp_log
        .lines()
        .iter()
        .filter(|l| l.contains("/deployments/w00"))
    {
        println!("  kcp {line}");
    }

    // The watch caches answer the reads of the common path.
    assert_eq!(
        kcp_gets.iter().sum::<usize>(),
        0,
        "upstream objects are read from the watch cache"
    );
    // kcp writes: the finalizer, the "applied" report, and status changes coalesced
    // (the copy's status changes 3-4 times during a rollout).
    for (name, patches) in names.iter().zip(&kcp_patches) {
        assert!(
            (2..=4).contains(patches),
            "{name}: {patches} kcp writes (finalizer, applied, coalesced status)"
        );
    }
    // One apply per object: nothing is applied twice.
    assert_eq!(west_patches, vec![1; N], "one apply per copy");

    // A new decision for a synced object is applied from both watch caches
    // (the apply carries the cached resourceVersion as its precondition).
    let (west_gets, west_patches) = (
        west_log.count("GET", &path("w00")),
        west_log.count("PATCH", &path("w00")),
    );
    fx.upstream_deployments()
        .patch(
            "w00",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"result.workload.kcp.io/west": "{\"replicas\":2}"}}})),
        )
        .await?;
    fx.wait_copy("w00", 2).await?;
    assert_eq!(west_log.count("GET", &path("w00")), west_gets);
    assert_eq!(west_log.count("PATCH", &path("w00")), west_patches + 1);
    assert_eq!(kcp_log.count("GET", &path("w00")), 0);
    // What that precondition relies on: the server refuses an apply with an old resourceVersion.
    let stale = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "w01", "namespace": NS, "resourceVersion": "1"}});
    let answer = fx
        .west_deployments()
        .patch(
            "w01",
            &PatchParams::apply("tmc-test"),
            &Patch::Apply(&stale),
        )
        .await;
    assert!(
        matches!(&answer, Err(kube::Error::Api(s)) if s.code == 409),
        "apply with an old resourceVersion: {answer:?}"
    );
    let gone = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gone", "namespace": NS, "resourceVersion": "1"}});
    let answer =
        kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(fx.west.clone(), NS)
            .patch(
                "gone",
                &PatchParams::apply("tmc-test"),
                &Patch::Apply(&gone),
            )
            .await;
    // A copy deleted while the cache still holds it is created again, as after a GET that found nothing.
    assert!(
        answer.is_ok(),
        "apply with a resourceVersion of an object that does not exist: {answer:?}"
    );

    // Per kind: every object counted up- and downstream, N creates + 1 update applied.
    let health = fx.syncer().health();
    let deployments = health.kinds.get("apps/v1/Deployment").copied();
    assert_eq!(
        deployments.map(|k| (k.upstream, k.downstream, k.synced)),
        Some((N, N, N as u64 + 1)),
        "{health:?}"
    );
    assert_eq!(health.last_error, None, "{health:?}");
    fx.stop_syncer().await?;
    Ok(())
}
