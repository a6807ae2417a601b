//! Replicas a physical cluster owns, against real servers: a copy that a
//! HorizontalPodAutoscaler on its cluster targets is handed over without a
//! dip (server-side apply would drop a field its only manager stops applying),
//! an autoscaler's write through the `scale` subresource is never reverted,
//! and deleting the autoscaler gives the replicas back to tmc. Needs the test
//! bed binaries (`hack/testbed/build.sh`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tmc_api::decision::TargetStatus;
use tokio::time::Instant;

use common::{Fixture, NS, annotations_of, wait_until};

const OWNER: &str = "workload.kcp.io/replicas-owner";

/// The copy's `spec.replicas`, sampled every 100 ms with when it was read.
#[derive(Clone, Default)]
struct Samples(Arc<Mutex<Vec<(Instant, i32)>>>);

impl Samples {
    fn start(api: Api<Deployment>, name: &'static str) -> (Self, tokio::task::JoinHandle<()>) {
        let samples = Self::default();
        let out = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(Some(d)) = api.get_opt(name).await
                    && let Some(replicas) = d.spec.and_then(|s| s.replicas)
                {
                    out.0.lock().unwrap().push((Instant::now(), replicas));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (samples, task)
    }

    /// The values read in `[from, to)`.
    fn between(&self, from: Instant, to: Instant) -> Vec<i32> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, r)| *r)
            .collect()
    }
}

/// West's report for `web`, once `check` accepts it.
async fn report(
    fx: &Fixture,
    what: &str,
    check: fn(&TargetStatus) -> bool,
) -> Result<TargetStatus> {
    fx.wait_report("web", what, check).await
}

/// Managers of `spec.replicas` in the copy's managedFields.
async fn replicas_managers(west: &Api<Deployment>) -> Result<Vec<String>> {
    let copy = west.get("web").await?;
    Ok(copy
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.pointer("/f:spec/f:replicas"))
                .is_some()
        })
        .filter_map(|m| m.manager)
        .collect())
}

#[tokio::test]
async fn an_autoscaler_owns_the_copys_replicas_without_a_dip_and_gives_them_back() -> Result<()> {
    let mut fx = Fixture::start().await?;
    // Resync every 5 s: every object is applied again several times below.
    fx.start_syncer();
    fx.create_placed("web", 3).await?;
    fx.wait_copy("web", 3).await?;
    let west = fx.west_deployments();
    assert_eq!(replicas_managers(&west).await?, ["tmc"]);
    let (samples, sampler) = Samples::start(west.clone(), "web");
    let start = Instant::now();

    // 1. An autoscaler on west names the copy: tmc hands spec.replicas over.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(fx.west.clone(), NS);
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "web-hpa", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 10,
        },
    }))?;
    hpas.create(&PostParams::default(), &hpa).await?;
    wait_until("the copy to be handed over to the autoscaler", || {
        let west = west.clone();
        async move {
            let copy = west.get("web").await?;
            let owner = annotations_of(&copy).get(OWNER).cloned();
            Ok(match owner.as_deref() {
                Some("HorizontalPodAutoscaler/web-hpa") => Ok(()),
                other => Err(format!("owner annotation {other:?}")),
            })
        }
    })
    .await?;
    let managers = replicas_managers(&west).await?;
    assert!(
        !managers.iter().any(|m| m == "tmc")
            && managers.iter().any(|m| m == "tmc-replicas-handover"),
        "tmc's manager must have let go of spec.replicas, the handover manager hold it: {managers:?}"
    );
    fx.wait_copy("web", 3).await?;

    // 2. The autoscaler scales the copy as the HPA controller does: an update
    //    of the scale subresource with its own field manager.
    let mut scale = west.get_scale("web").await?;
    scale.spec.get_or_insert_default().replicas = Some(5);
    scale.metadata.managed_fields = None;
    let params = PostParams {
        field_manager: Some("horizontal-pod-autoscaler".into()),
        ..PostParams::default()
    };
    west.replace_scale("web", &params, &scale)
        .await
        .context("writing the scale subresource")?;
    let scaled = Instant::now();
    let reported = report(&fx, "west to report the autoscaler's 5 replicas", |s| {
        s.copy_replicas == Some(5) && s.replicas_owner.is_some()
    })
    .await?;
    assert_eq!(
        reported.replicas_owner.as_deref(),
        Some("HorizontalPodAutoscaler/web-hpa")
    );

    // 3. A new decision while the autoscaler owns the replicas is applied
    //    (its content), the replicas stay the autoscaler's.
    fx.upstream_deployments()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "result.workload.kcp.io/west": json!({"replicas": 4, "labels": {"set": {"tier": "gold"}}}).to_string()
            }}})),
        )
        .await?;
    wait_until("the new decision on the copy", || {
        let west = west.clone();
        async move {
            let copy = west.get("web").await?;
            Ok(
                match copy.metadata.labels.as_ref().and_then(|l| l.get("tier")) {
                    Some(_) => Ok(()),
                    None => Err("no tier label yet".to_string()),
                },
            )
        }
    })
    .await?;
    // Three resyncs (5 s each) apply every object again.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let held = Instant::now();
    fx.wait_copy("web", 5).await?;

    // 4. The autoscaler is deleted: tmc takes the replicas back (its decision, 4).
    hpas.delete("web-hpa", &DeleteParams::default()).await?;
    let deleted = Instant::now();
    let back = fx.wait_copy("web", 4).await?;
    assert!(
        !annotations_of(&back).contains_key(OWNER),
        "{:?}",
        annotations_of(&back)
    );
    assert_eq!(replicas_managers(&west).await?, ["tmc"]);
    report(&fx, "west to report tmc's replicas again", |s| {
        s.replicas_owner.is_none() && s.copy_replicas.is_none()
    })
    .await?;
    sampler.abort();

    // Sampled continuously: 3 until the autoscaler's write (no fall back to
    // the default of 1 at the handover), then its 5 over every resync and the
    // new decision, until the autoscaler was deleted.
    let before = samples.between(start, scaled);
    assert!(
        !before.is_empty() && before.iter().all(|r| *r == 3),
        "{before:?}"
    );
    let owned = samples.between(scaled + Duration::from_millis(200), deleted);
    assert!(owned.len() > 50, "{} samples", owned.len());
    assert!(owned.iter().all(|r| *r == 5), "{owned:?}");
    assert!(held < deleted);
    let all = samples.between(start, Instant::now());
    assert!(all.iter().all(|r| (3..=5).contains(r)), "{all:?}");
    fx.stop_syncer().await?;
    Ok(())
}
