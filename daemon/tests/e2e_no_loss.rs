//! Nothing placed is lost (issue "Nothing lost", on the real bed):
//! - another writer wiping tmc's metadata (`kubectl replace`) deletes no
//!   copy and restarts no pod; tmcd records its decision again;
//! - replica shifts and moves never let the available replicas, summed over
//!   both clusters and sampled continuously, drop below the desired count;
//! - a move whose new copies cannot become available keeps the old ones and
//!   says so (placement condition, Event, metric, `tmcd status`), then
//!   completes once they can.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tmc_api::crd::ClusterWorkloadPlacement;
use tmc_api::decision::state_label;
use tmc_tests::testbed::wait::Poll;

use common::{
    Env, NS, Spread, apply_placement, available, copy, create_deployment, replicas, until,
};

/// UIDs of the pods of `app` on a cluster.
async fn pod_uids(client: &kube::Client, app: &str) -> Result<BTreeSet<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(list.items.iter().filter_map(|p| p.uid()).collect())
}

/// Waits until `name` runs `west` + `east` replicas, all available.
async fn runs(
    west: &kube::Client,
    east: &kube::Client,
    name: &str,
    want: (i32, i32),
) -> Result<(Option<Deployment>, Option<Deployment>)> {
    until(
        &format!(
            "{name} on west {} and east {}, all available",
            want.0, want.1
        ),
        || async {
            let (w, e) = (copy(west, name).await?, copy(east, name).await?);
            let got = (replicas(&w), replicas(&e));
            let avail = (available(&w), available(&e));
            Ok(if got == want && avail == want {
                Poll::Ready((w, e))
            } else {
                Poll::Pending(format!("replicas {got:?}, available {avail:?}"))
            })
        },
    )
    .await
}

/// Samples the available replicas of `name` summed over both clusters until
/// `stop`; returns the smallest sum seen and how many samples were taken.
fn sample_availability(
    west: kube::Client,
    east: kube::Client,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<(i32, usize)>> {
    tokio::spawn(async move {
        let (mut lowest, mut samples) = (i32::MAX, 0usize);
        while !stop.load(Ordering::SeqCst) {
            let (w, e) = (copy(&west, name).await?, copy(&east, name).await?);
            lowest = lowest.min(available(&w) + available(&e));
            samples += 1;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        Ok((lowest, samples))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_without_tmc_metadata_deletes_nothing_and_restarts_nothing() -> Result<()> {
    let Spread {
        env: _env,
        daemon,
        kcp,
        west,
        east,
    } = Spread::start().await?;
    create_deployment(&kcp, "web", 4).await?;
    let (w, e) = runs(&west, &east, "web", (2, 2)).await?;
    let copies = (w.and_then(|d| d.uid()), e.and_then(|d| d.uid()));
    let pods = (pod_uids(&west, "web").await?, pod_uids(&east, "web").await?);
    assert_eq!((pods.0.len(), pods.1.len()), (2, 2), "{pods:?}");

    // `kubectl replace` of the object as read, without tmc's labels,
    // annotations and finalizers.
    let upstream: Api<Deployment> = Api::namespaced(kcp.clone(), NS);
    until("web replaced without tmc's metadata", || async {
        let mut bare = upstream.get("web").await?;
        bare.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        bare.metadata.annotations = None;
        bare.metadata.finalizers = None;
        bare.metadata.managed_fields = None;
        bare.status = None;
        // tmcd and the syncers write the object too: a conflict is retried, as a person would.
        Ok(
            match upstream.replace("web", &PostParams::default(), &bare).await {
                Ok(_) => Poll::Ready(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Poll::Pending("conflict".into()),
                Err(e) => return Err(e).context("replacing web without tmc's metadata"),
            },
        )
    })
    .await?;

    // tmcd records its decision again; meanwhile and after, the copies and
    // their pods stay the same objects.
    until("tmcd records web's decision again", || async {
        let d = upstream.get("web").await?;
        let labels = d.labels();
        let recorded = labels.contains_key(&state_label("west"))
            && labels.contains_key(&state_label("east"))
            && d.finalizers().len() == 2;
        Ok(if recorded {
            Poll::Ready(())
        } else {
            Poll::Pending(format!(
                "labels {labels:?}, finalizers {:?}",
                d.finalizers()
            ))
        })
    })
    .await?;
    for _ in 0..20 {
        let (w, e) = (copy(&west, "web").await?, copy(&east, "web").await?);
        assert_eq!(
            (w.and_then(|d| d.uid()), e.and_then(|d| d.uid())),
            copies,
            "a copy was deleted or re-created"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    runs(&west, &east, "web", (2, 2)).await?;
    assert_eq!(
        (pod_uids(&west, "web").await?, pod_uids(&east, "web").await?),
        pods,
        "no pod may restart"
    );
    daemon.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifts_and_moves_never_drop_available_replicas() -> Result<()> {
    let Spread {
        env: _env,
        daemon,
        kcp,
        west,
        east,
    } = Spread::start().await?;
    create_deployment(&kcp, "web", 4).await?;
    runs(&west, &east, "web", (2, 2)).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_availability(west.clone(), east.clone(), "web", stop.clone());
    // A replica shift between kept targets: {2, 2} -> {1, 3}.
    apply_placement(
        &kcp,
        "spread",
        json!({"policy": {"name": "replica-spread", "settings": {"weights": {"west": 1, "east": 3}}}}),
    )
    .await?;
    runs(&west, &east, "web", (1, 3)).await?;
    // A move: {1, 3} -> {0, 4}.
    apply_placement(
        &kcp,
        "spread",
        json!({
            "policy": {"name": "replica-spread"},
            "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": "us-east"}}],
        }),
    )
    .await?;
    runs(&west, &east, "web", (0, 4)).await?;
    stop.store(true, Ordering::SeqCst);
    let (lowest, samples) = sampler.await??;
    assert!(samples > 20, "only {samples} samples");
    assert!(
        lowest >= 4,
        "available replicas fell to {lowest} of 4 during the shift and the move ({samples} samples)"
    );
    daemon.stop().await;
    Ok(())
}

/// Marks every node of a cluster (un)schedulable.
async fn cordon(client: &kube::Client, unschedulable: bool) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for node in nodes.list(&ListParams::default()).await? {
        nodes
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": unschedulable}})),
            )
            .await?;
    }
    Ok(())
}

/// The `Progressing` condition of placement `name`: (status, reason, message).
async fn progressing(kcp: &kube::Client, name: &str) -> Result<Option<(String, String, String)>> {
    let placements: Api<ClusterWorkloadPlacement> = Api::all(kcp.clone());
    let placement = placements.get(name).await?;
    Ok(placement.status.and_then(|s| {
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "Progressing")
            .map(|c| (c.status, c.reason, c.message))
    }))
}

/// The note of the newest Event with `reason` on `demo/<name>`, if any.
async fn event_note(kcp: &kube::Client, name: &str, reason: &str) -> Result<Option<String>> {
    let events: Api<Event> = Api::namespaced(kcp.clone(), NS);
    let mut matching: Vec<Event> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect();
    matching.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(matching.pop().map(|e| e.note.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_cannot_finish_keeps_the_old_copy_and_says_so() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    let text = env
        .config_text("")?
        .replace("[sync]\n", "[sync]\nmove_stall_seconds = 5\n");
    let daemon = env.daemon_with_text("tmc.toml", &text).await?;
    let kcp = env.kcp().await?;
    let west = env.cluster("west").await?;
    let east = env.cluster("east").await?;
    let in_region = |region: &str| {
        json!({
            "policy": {"name": "replica-spread"},
            "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": region}}],
        })
    };
    apply_placement(&kcp, "spread", in_region("us-west")).await?;
    create_deployment(&kcp, "web", 2).await?;
    runs(&west, &east, "web", (2, 0)).await?;

    // East can run no new pod: the move to it cannot finish.
    cordon(&east, true).await?;
    apply_placement(&kcp, "spread", in_region("us-east")).await?;
    let (status, reason, message) = until("the placement to report the stalled move", || async {
        Ok(match progressing(&kcp, "spread").await? {
            Some(c) if c.0 == "False" => Poll::Ready(c),
            other => Poll::Pending(format!("{other:?}")),
        })
    })
    .await?;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "MoveStalled"));
    assert!(
        message.contains("Deployment demo/web")
            && message.contains("east (0 of 2 replicas available)"),
        "{message}"
    );
    let note = until("a MoveStalled Event on web", || async {
        Ok(match event_note(&kcp, "web", "MoveStalled").await? {
            Some(note) => Poll::Ready(note),
            None => Poll::Pending("none yet".into()),
        })
    })
    .await?;
    assert!(
        note.contains("east") && note.contains("copies on west are kept"),
        "{note}"
    );
    let metrics = daemon.state().metrics.render();
    assert!(metrics.contains("tmcd_moves_stalled 1"), "{metrics}");
    let status = tmc_daemon::admin::server::status_report(daemon.state());
    let table = tmc_daemon::commands::render_status(&status);
    assert!(
        table.contains("STALLED MOVES") && table.contains("Deployment demo/web"),
        "{table}"
    );
    // Meanwhile west keeps its copy, fully available.
    for _ in 0..10 {
        let w = copy(&west, "web").await?;
        assert_eq!(
            (replicas(&w), available(&w)),
            (2, 2),
            "west's copy must stay"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Room on east: the move completes, and says so.
    cordon(&east, false).await?;
    runs(&west, &east, "web", (0, 2)).await?;
    until("the placement to report no stalled move", || async {
        Ok(match progressing(&kcp, "spread").await? {
            Some(c) if c.0 == "True" => Poll::Ready(()),
            other => Poll::Pending(format!("{other:?}")),
        })
    })
    .await?;
    until("a MoveCompleted Event on web", || async {
        Ok(match event_note(&kcp, "web", "MoveCompleted").await? {
            Some(_) => Poll::Ready(()),
            None => Poll::Pending("none yet".into()),
        })
    })
    .await?;
    assert!(daemon.state().moves.stalled().is_empty());
    daemon.stop().await;
    Ok(())
}
