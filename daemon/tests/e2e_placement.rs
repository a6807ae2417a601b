//! End to end on real servers: a Deployment in the kcp workspace is placed on
//! both clusters, split, its status summed, moved without a gap, and deleted.

mod common;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use tmc_api::decision::{
    MANAGED_LABEL, SOURCE_CLUSTER_ANNOTATION, SYNC_TARGET_ANNOTATION, SYNC_TIMESTAMP_ANNOTATION,
    SYNCED_FROM_LABEL, state_label,
};
use tmc_tests::testbed::wait::Poll;

use tmc_daemon::admin::client::request;

use common::{
    Env, NS, apply_placement, copy, create_deployment, ready, replicas, split_over_both, until,
};

/// The note of the newest `Placed` Event on `demo/<name>` (by its last
/// occurrence), if any.
async fn newest_placed_note(
    events: &Api<k8s_openapi::api::events::v1::Event>,
    name: &str,
) -> Result<Option<String>> {
    let newest = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("Placed")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .max_by_key(|e| {
            e.series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0))
        });
    Ok(newest.and_then(|e| e.note))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_split_status_move_and_delete() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    env.install_policy("label-stamper", "label-stamper")?;
    let daemon = env.daemon("").await?;
    let kcp = env.kcp().await?;
    let west = env.cluster("west").await?;
    let east = env.cluster("east").await?;

    apply_placement(&kcp, "spread", json!({
        "policy": {"name": "replica-spread"},
        "transformations": [{"name": "label-stamper", "settings": {"labels": {"team": "demo"}}}],
    }))
    .await?;
    create_deployment(&kcp, "web", 3).await?;

    // On both clusters, with tmc's labels and annotations on every copy and the
    // label-stamper's label, replicas split 3 = 2 + 1 (in some order).
    let (w, e) = split_over_both(&west, &east, "web", 3).await?;
    for (target, d) in [("west", w), ("east", e)] {
        let labels = d.metadata.labels.clone().unwrap_or_default();
        let annotations = d.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            labels.get(MANAGED_LABEL).map(String::as_str),
            Some("true"),
            "{target}: {labels:?}"
        );
        assert_eq!(
            labels.get(SYNCED_FROM_LABEL).map(String::as_str),
            Some("tmc-workloads")
        );
        assert_eq!(
            labels.get("team").map(String::as_str),
            Some("demo"),
            "transformation applied on {target}"
        );
        assert_eq!(
            annotations
                .get(SOURCE_CLUSTER_ANNOTATION)
                .map(String::as_str),
            Some("root:tmc")
        );
        assert_eq!(
            annotations.get(SYNC_TARGET_ANNOTATION).map(String::as_str),
            Some(target)
        );
        assert!(annotations.contains_key(SYNC_TIMESTAMP_ANNOTATION));
        assert!(
            labels
                .keys()
                .all(|k| !k.starts_with("state.workload.kcp.io/")),
            "protocol keys stay upstream"
        );
    }

    // The decision is explained in an Event on the workload.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(kcp.clone(), NS);
    let note = until("a Placed event on web", || async {
        let list = events.list(&Default::default()).await?;
        Ok(
            match list
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("Placed"))
            {
                Some(e) => Poll::Ready(e.note.unwrap_or_default()),
                None => Poll::Pending("no Placed event yet".into()),
            },
        )
    })
    .await?;
    assert!(note.contains("placed by spread on"), "{note}");

    // The admin API a person (or the helper script) uses.
    let admin = format!("http://{}", daemon.admin_addr());
    let ready_z = request(&admin, "GET", "/readyz").await?;
    assert_eq!(ready_z.status, 200, "{}", ready_z.body);
    let status: serde_json::Value =
        serde_json::from_str(&request(&admin, "GET", "/api/v1/status").await?.body)?;
    assert_eq!(status["leader"], true);
    let names: Vec<&str> = status["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["east", "west"]);
    assert!(
        status["targets"][0]["syncer"].is_object(),
        "push syncer health: {status}"
    );
    assert!(
        status["policies"].as_array().is_some_and(|p| p.len() == 2),
        "{status}"
    );
    let west_logs: serde_json::Value =
        serde_json::from_str(&request(&admin, "GET", "/api/v1/syncers/west").await?.body)?;
    // The syncer's own work (not only its start) reaches the per-cluster buffer.
    assert!(
        west_logs["logs"].as_array().is_some_and(|l| l
            .iter()
            .any(|line| line.to_string().contains("applied copy"))),
        "west's syncer logs lack its 'applied copy' lines: {west_logs}"
    );
    // POST endpoints need a bearer token; this tmcd has none (e2e_admin_auth passes one).
    let resync = request(&admin, "POST", "/api/v1/syncers/west/resync").await?;
    assert_eq!(resync.status, 403, "{}", resync.body);
    assert!(resync.body.contains("admin.token_file"), "{}", resync.body);
    let unknown = request(&admin, "GET", "/api/v1/syncers/mars").await?;
    assert_eq!(unknown.status, 404);
    let report: tmc_daemon::admin::status::StatusReport = serde_json::from_value(status.clone())?;
    let rendered = tmc_daemon::commands::render_status(&report);
    assert!(
        rendered.contains("spread") && rendered.contains("west"),
        "{rendered}"
    );

    // Upstream status is the sum of kwok's ready pods on both clusters, and
    // says Available (what `kubectl wait --for=condition=Available` reads)
    // once both copies are.
    let upstream: Api<Deployment> = Api::namespaced(kcp.clone(), NS);
    until("upstream readyReplicas = 3 and Available", || async {
        let d = upstream.get("web").await?;
        let status = d.status.unwrap_or_default();
        let r = status.ready_replicas.unwrap_or(0);
        let available = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Available")
            .map(|c| (c.status, c.message.unwrap_or_default()));
        Ok(match (r, &available) {
            (3, Some((status, message))) if status == "True" => {
                anyhow::ensure!(
                    message == "available on every target: east, west",
                    "{message}"
                );
                Poll::Ready(())
            }
            _ => Poll::Pending(format!("readyReplicas {r}, Available {available:?}")),
        })
    })
    .await?;

    // Keep it to one region: it moves to east, and at every observation some copy is ready.
    apply_placement(&kcp, "spread", json!({
        "policy": {"name": "replica-spread"},
        "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": "us-east"}}],
        "transformations": [{"name": "label-stamper", "settings": {"labels": {"team": "demo"}}}],
    }))
    .await?;
    until("web only on east with 3 replicas", || async {
        let (w, e) = (copy(&west, "web").await?, copy(&east, "web").await?);
        let ready_total = ready(&w) + ready(&e);
        anyhow::ensure!(
            ready_total >= 1,
            "gap during the move: no ready replica on any cluster (west {w:?}, east {e:?})"
        );
        Ok(if w.is_none() && replicas(&e) == 3 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!(
                "west present {} east replicas {}",
                w.is_some(),
                replicas(&e)
            ))
        })
    })
    .await?;
    // The decision changed, so did the Event: the newest Placed Event names
    // the new target and replicas (not a count of the first decision).
    let note = until("the newest Placed Event names east (3)", || async {
        let note = newest_placed_note(&events, "web").await?;
        Ok(match note {
            Some(note) if note.contains("on east (3)") => Poll::Ready(note),
            other => Poll::Pending(format!("newest Placed note {other:?}")),
        })
    })
    .await?;
    assert!(
        !note.contains("west ("),
        "west holds no replicas now: {note}"
    );
    let placed: Vec<_> = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Placed"))
        .collect();
    assert!(
        placed.len() >= 2,
        "one Event per decision, not one series: {:?}",
        placed.iter().map(|e| &e.note).collect::<Vec<_>>()
    );

    // The syncer removes west's keys upstream right after its copy is gone.
    until("west released upstream", || async {
        let labels = upstream
            .get("web")
            .await?
            .metadata
            .labels
            .unwrap_or_default();
        Ok(if labels.contains_key(&state_label("west")) {
            Poll::Pending(format!("{labels:?}"))
        } else {
            Poll::Ready(())
        })
    })
    .await?;

    // Delete upstream: the copy goes and the upstream object is released by the syncers.
    upstream.delete("web", &DeleteParams::default()).await?;
    until("web gone everywhere", || async {
        let (w, e) = (copy(&west, "web").await?, copy(&east, "web").await?);
        let up = upstream.get_opt("web").await?;
        Ok(if w.is_none() && e.is_none() && up.is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending(format!(
                "west {} east {} upstream {}",
                w.is_some(),
                e.is_some(),
                up.is_some()
            ))
        })
    })
    .await?;

    let metrics = daemon.state().metrics.render();
    assert!(metrics.contains("tmcd_reconciles_total"), "{metrics}");
    // What /metrics serves defines every name the dashboard and alerts use.
    let scraped = request(&admin, "GET", "/metrics").await?;
    assert_eq!(scraped.status, 200);
    // (The error counter has a series from the first failed evaluation on;
    // none failed here.)
    let missing: Vec<String> = common::monitoring::undefined(&scraped.body)
        .into_iter()
        .filter(|m| !m.starts_with("tmcd_policy_evaluation_errors_total "))
        .collect();
    assert!(missing.is_empty(), "not served by /metrics: {missing:?}");
    assert!(
        scraped
            .body
            .contains("tmcd_target_ready{target=\"east\"} 1"),
        "{}",
        scraped.body
    );
    // Figures for the report: mean reconcile and policy evaluation latency.
    for (what, prefix) in [
        ("reconcile (Deployment)", "tmcd_reconcile_duration_seconds_"),
        (
            "policy replica-spread",
            "tmcd_policy_evaluation_duration_seconds_",
        ),
    ] {
        let value = |suffix: &str| -> f64 {
            metrics
                .lines()
                .filter(|l| {
                    l.starts_with(&format!("{prefix}{suffix}"))
                        && (l.contains("Deployment") || l.contains("replica-spread"))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let (sum, count) = (value("sum"), value("count"));
        if count > 0.0 {
            eprintln!(
                "MEASURED {what}: {count} calls, mean {:.3} ms",
                sum / count * 1000.0
            );
        }
    }
    daemon.stop().await;
    Ok(())
}
