//! End to end on real servers: staged rollouts (`spec.rollout`). Three
//! clusters (east, north, west: the stage order), `replica-spread` puts one
//! replica of `demo/web` on each, `label-stamper` stamps `rev`.
//!
//! 1. An edit of the stamp rolls out one target per stage: sampled every
//!    100 ms, the targets carrying the new stamp are always a prefix of the
//!    stage order, each intermediate state is seen, the status shows the
//!    stages (`kubectl get` columns Rollout and Stage) and Events mark them.
//! 2. An edit that gives east (stage 1) more replicas than its kwok node
//!    takes (one pod) and stamps a new value: the stage times out, the
//!    rollout stops as Failed naming east and the workload, and north and
//!    west keep their copies unchanged (same uid, replicas, stamp, all
//!    available) before, during and after.
//! 3. A fix applied with `paused: true` starts no stage (nothing changes
//!    anywhere) until `paused: false`, then rolls out to completion.
//! 4. A hot reload of the transformation module (other bytes) starts a
//!    rollout of its own.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use serde_json::{Value, json};
use tmc_api::crd::{ClusterWorkloadPlacement, RolloutPhase, RolloutStatus};
use tmc_tests::testbed::NodeShape;
use tmc_tests::testbed::wait::Poll;

use common::{
    Env, apply_placement, available, copy, create_deployment, ready_status, replicas, until,
};

const ORDER: [&str; 3] = ["east", "north", "west"];
const PLACEMENT: &str = "staged";

/// One replica per target (every weight named: a server-side apply of `{}`
/// would not replace the keys an earlier apply set).
fn even() -> Value {
    json!({"east": 1, "north": 1, "west": 1})
}

fn spec(stamp: &str, weights: Value, timeout: u32) -> Value {
    paused_spec(stamp, weights, timeout, false)
}

fn paused_spec(stamp: &str, weights: Value, timeout: u32, paused: bool) -> Value {
    json!({
        "policy": {"name": "replica-spread", "settings": {"weights": weights}},
        "transformations": [{"name": "label-stamper", "settings": {"labels": {"rev": stamp}}}],
        "rollout": {"maxTargetsPerStage": 1, "stageTimeoutSeconds": timeout, "paused": paused},
    })
}

/// The copies of `demo/web` per cluster.
async fn copies(clusters: &[(&str, kube::Client)]) -> Result<BTreeMap<String, Option<Deployment>>> {
    let mut out = BTreeMap::new();
    for (name, client) in clusters {
        out.insert(name.to_string(), copy(client, "web").await?);
    }
    Ok(out)
}

fn stamp(d: &Option<Deployment>) -> Option<String> {
    d.as_ref()?.metadata.labels.as_ref()?.get("rev").cloned()
}

fn uid(d: &Option<Deployment>) -> Option<String> {
    d.as_ref()?.metadata.uid.clone()
}

async fn rollout(kcp: &kube::Client) -> Result<Option<RolloutStatus>> {
    let api: Api<ClusterWorkloadPlacement> = Api::all(kcp.clone());
    Ok(api.get(PLACEMENT).await?.status.and_then(|s| s.rollout))
}

/// The cells of `columns` in the placement's row, as `kubectl get cwp` shows them.
async fn cells(kcp: &kube::Client, columns: &[&str]) -> Result<Vec<Value>> {
    let request = http::Request::get("/apis/workload.kcp.io/v1alpha1/clusterworkloadplacements")
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())?;
    let table: Value = kcp.request(request).await?;
    let defs = table["columnDefinitions"]
        .as_array()
        .context("no columns")?;
    let rows = table["rows"].as_array().context("no rows")?;
    let row = rows
        .iter()
        .find(|r| r["object"]["metadata"]["name"] == PLACEMENT)
        .context("no row")?;
    columns
        .iter()
        .map(|c| {
            let i = defs
                .iter()
                .position(|d| d["name"] == *c)
                .with_context(|| format!("no column {c}"))?;
            Ok(row["cells"][i].clone())
        })
        .collect()
}

/// Reasons and notes of the Events on the placement, oldest first.
async fn placement_events(kcp: &kube::Client) -> Result<Vec<(String, String)>> {
    let events: Api<Event> = Api::namespaced(kcp.clone(), "default");
    let mut list: Vec<Event> = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(PLACEMENT))
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    Ok(list
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_goes_stage_by_stage_and_a_stage_that_never_becomes_available_stops_it()
-> Result<()> {
    let env = Env::start_with(|bed| {
        bed.clusters(ORDER).cluster_nodes(
            "east",
            1,
            NodeShape {
                cpu: "8".into(),
                memory: "64Gi".into(),
                pods: 1,
            },
        )
    })
    .await?;
    env.install_policy("replica-spread", "replica-spread")?;
    env.install_policy("label-stamper", "label-stamper")?;
    // The common config names west and east; north joins here.
    let north = format!(
        "\n[[clusters]]\nname = \"north\"\nkubeconfig = \"{}\"\nregion = \"us-north\"\nzone = \"us-north-1a\"\n",
        env.bed.kubeconfig_path("north")?.display()
    );
    let _daemon = env.daemon(&north).await?;
    let kcp = env.kcp().await?;
    let targets: Api<tmc_api::crd::SyncTarget> = Api::all(kcp.clone());
    for name in ORDER {
        until(&format!("SyncTarget {name} is Ready"), || async {
            Ok(match ready_status(&targets, name).await?.as_deref() {
                Some("True") => Poll::Ready(()),
                other => Poll::Pending(format!("{other:?}")),
            })
        })
        .await?;
    }
    let mut clusters = Vec::new();
    for name in ORDER {
        clusters.push((name, env.cluster(name).await?));
    }

    // The first revision of a new placement is not staged.
    apply_placement(&kcp, PLACEMENT, spec("v1", even(), 600)).await?;
    create_deployment(&kcp, "web", 3).await?;
    let before = until(
        "web: one available replica stamped v1 on each cluster",
        || async {
            let all = copies(&clusters).await?;
            let ok = all.values().all(|d| {
                replicas(d) == 1 && available(d) == 1 && stamp(d).as_deref() == Some("v1")
            });
            let shown = format!(
                "{:?}",
                all.iter()
                    .map(|(n, d)| (n, replicas(d), available(d), stamp(d)))
                    .collect::<Vec<_>>()
            );
            Ok(if ok {
                Poll::Ready(all)
            } else {
                Poll::Pending(shown)
            })
        },
    )
    .await?;
    until("the rollout of the first revision is complete", || async {
        Ok(match rollout(&kcp).await? {
            Some(r) if r.phase == RolloutPhase::Complete => Poll::Ready(()),
            other => Poll::Pending(format!("{other:?}")),
        })
    })
    .await?;

    // 1. v1 -> v2, one target per stage.
    apply_placement(&kcp, PLACEMENT, spec("v2", even(), 600)).await?;
    let started = Instant::now();
    let mut seen_states: Vec<usize> = Vec::new();
    let mut progress_seen: Vec<String> = Vec::new();
    loop {
        let all = copies(&clusters).await?;
        let flipped: Vec<bool> = ORDER
            .iter()
            .map(|n| stamp(&all[*n]).as_deref() == Some("v2"))
            .collect();
        let count = flipped.iter().filter(|f| **f).count();
        // A prefix of the stage order, never more.
        if flipped.iter().take(count).any(|f| !f) {
            bail!("v2 reached {flipped:?} (east, north, west): not in stage order");
        }
        for (name, d) in &all {
            if uid(d) != uid(&before[name]) || available(d) != 1 {
                bail!("{name}'s copy changed identity or availability mid-rollout: {d:?}");
            }
        }
        if seen_states.last() != Some(&count) {
            seen_states.push(count);
        }
        if let Some(r) = rollout(&kcp).await?
            && !r.progress.is_empty()
            && progress_seen.last() != Some(&r.progress)
        {
            progress_seen.push(r.progress.clone());
        }
        if count == 3 {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the rollout did not finish: states {seen_states:?}, progress {progress_seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "rollout v1 -> v2: {:?}, stamped targets seen {seen_states:?}, stages seen {progress_seen:?}",
        started.elapsed()
    );
    assert_eq!(seen_states, [0, 1, 2, 3], "each intermediate state is seen");
    until("the v2 rollout is complete", || async {
        Ok(match rollout(&kcp).await? {
            Some(r) if r.phase == RolloutPhase::Complete => Poll::Ready(()),
            other => Poll::Pending(format!("{other:?}")),
        })
    })
    .await?;
    assert!(
        progress_seen.iter().any(|p| p == "2/3"),
        "status showed the stages: {progress_seen:?}"
    );
    let events = placement_events(&kcp).await?;
    let started_stages: Vec<&String> = events
        .iter()
        .filter(|(r, _)| r == "RolloutStageStarted")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(started_stages.len(), 3, "{events:?}");
    for (i, target) in ORDER.iter().enumerate() {
        assert!(
            started_stages[i].contains(&format!("stage {}/3", i + 1))
                && started_stages[i].contains(target),
            "{events:?}"
        );
    }
    assert!(
        events.iter().any(|(r, _)| r == "RolloutCompleted"),
        "{events:?}"
    );
    assert_eq!(
        cells(&kcp, &["Rollout"]).await?,
        [json!("Complete")],
        "kubectl get cwp shows the phase"
    );

    // 2. east (stage 1) gets 2 replicas, which its one-pod node cannot run.
    let before = copies(&clusters).await?;
    apply_placement(
        &kcp,
        PLACEMENT,
        spec("v3", json!({"east": 5, "north": 1, "west": 1}), 15),
    )
    .await?;
    let unchanged = |all: &BTreeMap<String, Option<Deployment>>| -> Result<()> {
        for name in ["north", "west"] {
            let (d, was) = (&all[name], &before[name]);
            if uid(d) != uid(was)
                || replicas(d) != 1
                || available(d) != 1
                || stamp(d).as_deref() != Some("v2")
            {
                bail!(
                    "{name}'s copy changed: uid {:?} -> {:?}, replicas {}, available {}, stamp {:?}",
                    uid(was),
                    uid(d),
                    replicas(d),
                    available(d),
                    stamp(d)
                );
            }
        }
        Ok(())
    };
    let failed = until("the rollout stops as Failed", || async {
        let all = copies(&clusters).await?;
        unchanged(&all)?;
        Ok(match rollout(&kcp).await? {
            Some(r) if r.phase == RolloutPhase::Failed => Poll::Ready((r, all)),
            other => Poll::Pending(format!(
                "{other:?}; east {} replicas, {} available",
                replicas(&all["east"]),
                available(&all["east"])
            )),
        })
    })
    .await?;
    let (status, during) = failed;
    assert_eq!(status.stage, 1, "{status:?}");
    assert_eq!(status.stage_targets, ["east"], "{status:?}");
    assert!(
        status.message.contains("east") && status.message.contains("demo/web"),
        "{status:?}"
    );
    assert_eq!(replicas(&during["east"]), 2, "east took its new decision");
    assert!(available(&during["east"]) < 2, "east cannot run it");
    assert_eq!(
        cells(&kcp, &["Rollout", "Stage"]).await?,
        [json!("Failed"), json!("1/3")]
    );
    // And it stays so: the targets of later stages keep the previous decision.
    tokio::time::sleep(Duration::from_secs(8)).await;
    unchanged(&copies(&clusters).await?)?;
    let events = placement_events(&kcp).await?;
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "RolloutFailed" && n.contains("east")),
        "{events:?}"
    );

    // 3. A fix (back to one replica each, stamp v4) applied paused changes nothing until resumed.
    let before = copies(&clusters).await?;
    apply_placement(&kcp, PLACEMENT, paused_spec("v4", even(), 60, true)).await?;
    until(
        "the new rollout is paused before its first stage",
        || async {
            Ok(match rollout(&kcp).await? {
                Some(r) if r.phase == RolloutPhase::Paused => Poll::Ready(r),
                other => Poll::Pending(format!("{other:?}")),
            })
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let paused = copies(&clusters).await?;
    for name in ORDER {
        let (d, was) = (&paused[name], &before[name]);
        assert_eq!(
            (uid(d), replicas(d), stamp(d)),
            (uid(was), replicas(was), stamp(was)),
            "{name} changed while paused"
        );
    }
    assert_eq!(rollout(&kcp).await?.map(|r| r.stage), Some(0));
    apply_placement(&kcp, PLACEMENT, paused_spec("v4", even(), 60, false)).await?;
    until(
        "resumed, the rollout completes with v4 everywhere",
        || async {
            let all = copies(&clusters).await?;
            let everywhere = all.values().all(|d| {
                replicas(d) == 1 && available(d) == 1 && stamp(d).as_deref() == Some("v4")
            });
            Ok(match rollout(&kcp).await? {
                Some(r) if r.phase == RolloutPhase::Complete && everywhere => Poll::Ready(()),
                other => Poll::Pending(format!("{other:?}")),
            })
        },
    )
    .await?;
    let events = placement_events(&kcp).await?;
    for reason in ["RolloutPaused", "RolloutResumed"] {
        assert!(
            events.iter().any(|(r, _)| r == reason),
            "{reason}: {events:?}"
        );
    }

    // 4. A hot reload of a module the placement runs is a new revision: the
    //    same label-stamper with a custom section (other bytes, same answers)
    //    starts a rollout, whose stages change nothing and complete at once.
    let revision = rollout(&kcp).await?.context("no rollout")?.revision;
    let mut module = std::fs::read(tmc_tests::fixtures::built_policy("label-stamper")?)?;
    module.extend_from_slice(&[0x00, 0x03, 0x01, b'x', b'1']);
    let staging = env.dir.path().join("label-stamper.wasm.new");
    std::fs::write(&staging, &module)?;
    std::fs::rename(&staging, env.policy_dir().join("label-stamper.wasm"))?;
    until("the reload's rollout completes", || async {
        Ok(match rollout(&kcp).await? {
            Some(r) if r.revision != revision && r.phase == RolloutPhase::Complete => {
                Poll::Ready(())
            }
            other => Poll::Pending(format!("{other:?}")),
        })
    })
    .await?;
    let started = placement_events(&kcp)
        .await?
        .into_iter()
        .filter(|(r, _)| r == "RolloutStarted")
        .count();
    assert_eq!(started, 4, "v2, v3, v4 and the reload each started one");
    let after = copies(&clusters).await?;
    for name in ORDER {
        assert_eq!(stamp(&after[name]).as_deref(), Some("v4"), "{name}");
        assert_eq!(available(&after[name]), 1, "{name}");
    }
    Ok(())
}
