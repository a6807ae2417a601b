//! The bed's fault primitives against real servers: kill -9 / SIGTERM / pause a cluster's kube-apiserver or
//! etcd and kcp, start them again on the same port with the same data, and kill -9 a process the test started.
//!
//! Needs the binaries from `hack/testbed/build.sh`.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use tmc_tests::testbed::process::process_state;
use tmc_tests::testbed::wait::{self, Poll};
use tmc_tests::testbed::{Component, TestBed};

/// How long a request to a paused server is given before we call it hung.
const HUNG_AFTER: Duration = Duration::from_secs(3);

fn config_map(name: &str) -> Result<ConfigMap> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "namespace": "default" },
        "data": { "kept": "yes" },
    }))
    .context("building a ConfigMap")
}

/// Reads the ConfigMap and checks its data survived.
async fn assert_kept(config_maps: &Api<ConfigMap>, name: &str, after: &str) -> Result<()> {
    let cm = config_maps
        .get(name)
        .await
        .with_context(|| format!("reading ConfigMap {name} after {after}"))?;
    let data = cm.data.unwrap_or_default();
    if data != BTreeMap::from([("kept".to_owned(), "yes".to_owned())]) {
        bail!("ConfigMap {name} after {after} has data {data:?}");
    }
    Ok(())
}

/// The request fails fast (connection refused), rather than hanging: the server is down.
async fn assert_down(config_maps: &Api<ConfigMap>, name: &str, what: &str) -> Result<()> {
    match tokio::time::timeout(HUNG_AFTER, config_maps.get(name)).await {
        Ok(Err(_)) => Ok(()),
        Ok(Ok(_)) => bail!("{what}: the server still answers"),
        Err(_) => bail!("{what}: the request hung instead of failing"),
    }
}

/// The request hangs past `HUNG_AFTER`: the server is paused.
async fn assert_hangs(config_maps: &Api<ConfigMap>, name: &str, what: &str) -> Result<()> {
    let started = Instant::now();
    match tokio::time::timeout(HUNG_AFTER, config_maps.get(name)).await {
        Err(_) => Ok(()),
        Ok(r) => bail!(
            "{what}: the request returned after {:?} instead of hanging: {:?}",
            started.elapsed(),
            r.map(|_| "ok")
        ),
    }
}

/// A Deployment that is fully available again after the faults, within `timeout`.
async fn wait_available(
    deployments: &Api<Deployment>,
    name: &str,
    replicas: i32,
    timeout: Duration,
) -> Result<()> {
    let what = format!("Deployment {name} to have {replicas} available replicas");
    wait::until(&what, timeout, Duration::from_millis(500), || {
        let deployments = deployments.clone();
        let name = name.to_owned();
        async move {
            let available = match deployments.get(&name).await {
                Ok(d) => d.status.and_then(|s| s.available_replicas).unwrap_or(0),
                Err(e) => return Ok(Poll::Pending(format!("reading it: {e}"))),
            };
            Ok(if available == replicas {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("{available}/{replicas} available"))
            })
        }
    })
    .await
}

/// kube-apiserver: kill -9 then relaunch, pause then resume, SIGTERM then relaunch; etcd: kill -9 then
/// relaunch. Objects survive each, the port stays, a running Deployment is available at the end. Then a
/// process the test starts through the bed is paused, killed with SIGKILL and relaunched.
#[tokio::test]
async fn cluster_servers_killed_paused_and_relaunched_keep_their_objects() -> Result<()> {
    let mut bed = TestBed::builder()
        .clusters(["west"])
        .without_kcp()
        .start()
        .await?;
    let url = bed.cluster("west")?.server_url();
    let client = bed.cluster_client("west").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    config_maps
        .create(&PostParams::default(), &config_map("keep")?)
        .await
        .context("creating ConfigMap keep")?;
    let web = tmc_tests::fixtures::deployment(
        "default",
        "web",
        2,
        serde_json::json!({}),
        serde_json::json!({}),
    )?;
    deployments
        .create(&PostParams::default(), &web)
        .await
        .context("creating Deployment web")?;
    wait_available(&deployments, "web", 2, Duration::from_secs(60)).await?;

    // kill -9 and relaunch.
    let west = bed.cluster_mut("west")?;
    let first_pid = west.pid(Component::KubeApiserver)?;
    west.kill(Component::KubeApiserver)?;
    assert!(!west.apiserver_running());
    assert_down(&config_maps, "keep", "kube-apiserver killed").await?;
    west.relaunch(Component::KubeApiserver).await?;
    assert_ne!(
        west.pid(Component::KubeApiserver)?,
        first_pid,
        "a new process"
    );
    assert_eq!(west.server_url(), url, "the same port");
    assert_kept(&config_maps, "keep", "kube-apiserver kill -9 and relaunch").await?;
    let err = west
        .relaunch(Component::KubeApiserver)
        .await
        .expect_err("relaunch while running");
    assert!(format!("{err:#}").contains("still running"), "{err:#}");

    // Paused: requests hang; resumed: the same client gets answers again.
    west.pause(Component::KubeApiserver)?;
    assert_hangs(&config_maps, "keep", "kube-apiserver paused").await?;
    west.resume(Component::KubeApiserver)?;
    tokio::time::timeout(
        Duration::from_secs(30),
        assert_kept(&config_maps, "keep", "pause and resume"),
    )
    .await
    .context("kube-apiserver still does not answer 30 s after resume")??;

    // SIGTERM and relaunch.
    west.stop(Component::KubeApiserver).await?;
    assert_down(&config_maps, "keep", "kube-apiserver stopped").await?;
    west.relaunch(Component::KubeApiserver).await?;
    assert_kept(&config_maps, "keep", "kube-apiserver SIGTERM and relaunch").await?;

    // etcd kill -9 and relaunch: kube-apiserver reconnects, the data is still there.
    west.kill(Component::Etcd)?;
    west.relaunch(Component::Etcd).await?;
    assert_kept(&config_maps, "keep", "etcd kill -9 and relaunch").await?;

    wait_available(&deployments, "web", 2, Duration::from_secs(60))
        .await
        .context("the Deployment is not available again after the faults")?;

    // A process the test started through the bed: paused, kill -9, relaunched, logging into the bed dir.
    let mut child = bed.spawn("sleeper", "/bin/sh", ["-c", "echo started; exec sleep 300"])?;
    let pid = child.pid();
    let log_path = bed.dir().join("sleeper.log");
    // Paused or killed before its first line, the run would leave nothing to count.
    wait_logged(&log_path, 1, "the first run of sleeper").await?;
    child.pause()?;
    assert_eq!(process_state(pid), Some('T'), "paused means stopped");
    child.resume()?;
    child.kill();
    let status = child.exit_status().context("exited after kill")?;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "killed by SIGKILL: {status}"
    );
    child.relaunch()?;
    assert_ne!(child.pid(), pid);
    child.ensure_running()?;
    wait_logged(&log_path, 2, "both runs of sleeper").await?;
    drop(child);
    Ok(())
}

/// kcp: kill -9 then relaunch, pause then resume, SIGTERM then relaunch. Objects survive, and clients made
/// before the faults keep working (same port, same admin token).
#[tokio::test]
async fn kcp_killed_paused_and_relaunched_keeps_its_objects_and_token() -> Result<()> {
    let mut bed = TestBed::builder().workspace("root:tmc").start().await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(bed.kcp_client().await?, "default");
    config_maps
        .create(&PostParams::default(), &config_map("keep")?)
        .await
        .context("creating ConfigMap keep in root:tmc")?;

    let kcp = bed.kcp_mut()?;
    let first_pid = kcp.process_mut().pid();
    kcp.kill();
    assert!(!kcp.running());
    assert_down(&config_maps, "keep", "kcp killed").await?;
    kcp.relaunch().await?;
    assert_ne!(kcp.process_mut().pid(), first_pid, "a new process");
    assert_kept(&config_maps, "keep", "kcp kill -9 and relaunch").await?;

    kcp.pause()?;
    assert_hangs(&config_maps, "keep", "kcp paused").await?;
    kcp.resume()?;
    tokio::time::timeout(
        Duration::from_secs(30),
        assert_kept(&config_maps, "keep", "kcp pause and resume"),
    )
    .await
    .context("kcp still does not answer 30 s after resume")??;

    kcp.stop().await;
    assert_down(&config_maps, "keep", "kcp stopped").await?;
    kcp.relaunch().await?;
    assert_kept(&config_maps, "keep", "kcp SIGTERM and relaunch").await?;
    Ok(())
}

/// Waits until `log` holds `count` lines `started`.
async fn wait_logged(log: &std::path::Path, count: usize, what: &str) -> Result<()> {
    let what = format!("{what} to log into the bed dir");
    wait::until(
        &what,
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            async move {
                Ok(if text.matches("started").count() == count {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("{}: {text:?}", log.display()))
                })
            }
        },
    )
    .await
}
