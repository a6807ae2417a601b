//! End to end on real servers: capacity-aware placement. West's kwok node
//! has 4 cpu, east's 2; their syncers report it in `SyncTarget.status.capacity`,
//! tmcd turns it into each target's `capacity` for a Deployment requesting
//! 500m per replica, and `replica-spread` `{"by": "capacity"}` splits its
//! replicas 2:1. Once east is full (a pod of its own takes the rest of its
//! cpu), a new Deployment gets no replica there.

mod common;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use tmc_api::crd::{ClusterCapacity, SyncTarget};
use tmc_daemon::admin::client::request;
use tmc_daemon::explain::ExplainReport;
use tmc_tests::fixtures;
use tmc_tests::testbed::NodeShape;
use tmc_tests::testbed::wait::Poll;

use common::{Env, NS, apply_placement, copy, replicas, until};

/// One kwok node of `cpu`, with memory and pods to spare.
fn node(cpu: &str) -> NodeShape {
    NodeShape {
        cpu: cpu.into(),
        memory: "64Gi".into(),
        pods: 110,
    }
}

/// Creates Deployment `demo/<name>` upstream, each replica requesting `cpu`.
async fn create_deployment(kcp: &kube::Client, name: &str, replicas: i32, cpu: &str) -> Result<()> {
    let mut d = fixtures::deployment(NS, name, replicas, json!({}), json!({}))?;
    let mut value = serde_json::to_value(&d)?;
    value["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": cpu}});
    d = serde_json::from_value(value)?;
    Api::<Deployment>::namespaced(kcp.clone(), NS)
        .create(&PostParams::default(), &d)
        .await
        .with_context(|| format!("creating deployment {name}"))?;
    Ok(())
}

/// Waits until target `name` reports a capacity that `check` accepts.
async fn capacity(
    kcp: &kube::Client,
    name: &str,
    what: &str,
    check: impl Fn(&ClusterCapacity) -> bool,
) -> Result<ClusterCapacity> {
    let api: Api<SyncTarget> = Api::all(kcp.clone());
    until(&format!("{name}'s capacity: {what}"), || async {
        let target = api.get(name).await?;
        let cap = target.status.and_then(|s| s.capacity);
        Ok(match cap {
            Some(cap) if check(&cap) => Poll::Ready(cap),
            other => Poll::Pending(format!("{other:?}")),
        })
    })
    .await
}

/// The cell of column `column` in the row of SyncTarget `name`, as
/// `kubectl get synctargets -o wide` shows it (the server's Table, whose
/// columns of priority 1 only `-o wide` prints); and that column's priority.
async fn wide_cell(kcp: &kube::Client, name: &str, column: &str) -> Result<(Value, i64)> {
    let request = http::Request::get("/apis/workload.kcp.io/v1alpha1/synctargets")
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())?;
    let table: Value = kcp.request(request).await?;
    let columns = table["columnDefinitions"]
        .as_array()
        .context("no columns")?;
    let index = columns
        .iter()
        .position(|c| c["name"] == column)
        .with_context(|| format!("no column {column} in {columns:?}"))?;
    let rows = table["rows"].as_array().context("no rows")?;
    let row = rows
        .iter()
        .find(|r| r["object"]["metadata"]["name"] == name)
        .with_context(|| format!("no row {name} in {rows:?}"))?;
    Ok((
        row["cells"][index].clone(),
        columns[index]["priority"].as_i64().unwrap_or(0),
    ))
}

/// Pods of `demo/<app>` on a cluster that the scheduler bound to a node.
async fn bound_pods(cluster: &kube::Client, app: &str) -> Result<usize> {
    let pods: Api<Pod> = Api::namespaced(cluster.clone(), NS);
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count())
}

/// Waits until `app` has `want_west` replicas on west and `want_east` on
/// east, in the copies' spec and in pods bound to nodes.
async fn placed(
    west: &kube::Client,
    east: &kube::Client,
    app: &str,
    want_west: i32,
    want_east: i32,
) -> Result<()> {
    until(
        &format!("{app}: {want_west} replicas on west, {want_east} on east"),
        || async {
            let (w, e) = (copy(west, app).await?, copy(east, app).await?);
            let (rw, re) = (replicas(&w), replicas(&e));
            let (pw, pe) = (bound_pods(west, app).await?, bound_pods(east, app).await?);
            let want = (want_west, want_east, want_west as usize, want_east as usize);
            Ok(if w.is_some() && (rw, re, pw, pe) == want {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "copies: west {rw} east {re}; bound pods: west {pw} east {pe}"
                ))
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_free_capacity_and_a_full_cluster_gets_none() -> Result<()> {
    let env = Env::start_with(|bed| {
        bed.cluster_nodes("west", 1, node("4"))
            .cluster_nodes("east", 1, node("2"))
    })
    .await?;
    env.install_policy("replica-spread", "replica-spread")?;
    let text = env.config_text("")?.replace(
        "heartbeat_interval_seconds = 2\n",
        "heartbeat_interval_seconds = 2\ncapacity_interval_seconds = 2\n",
    );
    assert!(text.contains("capacity_interval_seconds = 2"), "{text}");
    let daemon = env.daemon_with_text("tmc.toml", &text).await?;
    let kcp = env.kcp().await?;
    let west = env.cluster("west").await?;
    let east = env.cluster("east").await?;

    // The syncers report their clusters: one node each, nothing requested yet.
    let w = capacity(&kcp, "west", "4 cpu allocatable", |c| {
        c.allocatable.cpu_millis == 4000
    })
    .await?;
    let e = capacity(&kcp, "east", "2 cpu allocatable", |c| {
        c.allocatable.cpu_millis == 2000
    })
    .await?;
    for (name, cap) in [("west", &w), ("east", &e)] {
        assert_eq!(cap.nodes, 1, "{name}: {cap:?}");
        assert_eq!(cap.allocatable.pods, 110, "{name}: {cap:?}");
        assert_eq!(cap.allocatable.memory_bytes, 64 << 30, "{name}: {cap:?}");
        assert_eq!(cap.requested.cpu_millis, 0, "{name}: {cap:?}");
        assert_eq!(cap.available, cap.allocatable, "{name}: {cap:?}");
        assert!(
            cap.observed_time.is_some() && cap.stale_reason.is_none(),
            "{name}: {cap:?}"
        );
    }
    // `kubectl get synctargets -o wide` shows what is free.
    for (column, west_value) in [("CPU-Free-Millis", 4000), ("Pods-Free", 110)] {
        let (cell, priority) = wide_cell(&kcp, "west", column).await?;
        assert_eq!(cell, json!(west_value), "{column}");
        assert_eq!(priority, 1, "{column} is an -o wide column");
    }
    let (cell, _) = wide_cell(&kcp, "east", "Memory-Free-Bytes").await?;
    assert_eq!(cell, json!(64u64 << 30));

    apply_placement(
        &kcp,
        "spread",
        json!({"policy": {"name": "replica-spread", "settings": {"by": "capacity"}}}),
    )
    .await?;

    // 500m per replica: west takes 8, east 4, so 6 replicas split 4 + 2.
    create_deployment(&kcp, "web", 6, "500m").await?;
    placed(&west, &east, "web", 4, 2).await?;
    capacity(&kcp, "east", "web's 2 replicas requested (1 cpu)", |c| {
        c.requested.cpu_millis == 1000 && c.requested.pods == 2
    })
    .await?;
    capacity(&kcp, "west", "web's 4 replicas requested (2 cpu)", |c| {
        c.requested.cpu_millis == 2000 && c.available.cpu_millis == 2000
    })
    .await?;

    // Fill east: a pod of its own (not tmc's) takes its last cpu.
    let filler: Pod = serde_json::from_value(json!({
        "metadata": {"name": "filler", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/filler:1",
                                 "resources": {"requests": {"cpu": "1"}}}]}
    }))?;
    Api::<Pod>::namespaced(east.clone(), "default")
        .create(&PostParams::default(), &filler)
        .await
        .context("creating the filler pod on east")?;
    capacity(&kcp, "east", "full (no cpu free)", |c| {
        c.available.cpu_millis == 0 && c.requested.pods == 3
    })
    .await?;

    // A new workload: east can take none of it, west takes all.
    create_deployment(&kcp, "api", 4, "500m").await?;
    placed(&west, &east, "api", 4, 0).await?;
    // And web stays as it was: its own replicas are not lost capacity.
    placed(&west, &east, "web", 4, 2).await?;

    // `tmcd explain` shows what the policy was given: west is full with api's 4 replicas (and
    // web's), which still fit there as its own; east fits none.
    let admin = format!("http://{}", daemon.admin_addr());
    until("tmcd explain api to show west fits 4, east 0", || async {
        let reply = request(&admin, "GET", "/api/v1/explain/deployment/demo/api").await?;
        let report: ExplainReport = serde_json::from_str(&reply.body)
            .with_context(|| format!("explain answered {}: {}", reply.status, reply.body))?;
        let fits: Vec<(String, Option<u32>)> = report
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.capacity))
            .collect();
        Ok(
            if fits == [("east".to_string(), Some(0)), ("west".to_string(), Some(4))] {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("targets and what fits: {fits:?}"))
            },
        )
    })
    .await?;
    Ok(())
}
