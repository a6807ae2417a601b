//! The pull-mode binary against real servers: `tmc-syncer` with the
//! workspace's and `west`'s kubeconfigs and a prefixed namespace mapping
//! applies a placed Deployment into `tmc-shop`, heals a deleted copy there,
//! and heartbeats; `kill -9` of the agent deletes nothing and a restarted
//! agent resumes syncing and reporting, with the synced-from value recorded on
//! its SyncTarget. Prints the agent's resident memory.
//! Needs the test bed binaries (`hack/testbed/build.sh`).

mod common;

use std::process::Stdio;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tmc_api::crd::SyncTarget;
use tmc_tests::rbac;
use tmc_tests::testbed::KCP;

use common::{Fixture, annotations_of, labels_of, wait_until};

/// The synced-from value "tmcd" recorded on SyncTarget west.
const RECORDED: &str = "root-tmc-0a1b2c3d4e";

/// Stops the agent; on a failed `outcome`, prints its log first.
async fn stop_agent(
    mut child: tokio::process::Child,
    log: &std::path::Path,
    outcome: Result<()>,
) -> Result<()> {
    child.start_kill().context("stopping tmc-syncer")?;
    let _ = child.wait().await;
    if outcome.is_err() {
        eprintln!(
            "----- tmc-syncer log -----\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    outcome
}

/// Starts the pull agent for `west` with the bed's admin kubeconfigs, appending its output to `log`.
fn start_agent(fx: &Fixture, log: &std::path::Path) -> Result<tokio::process::Child> {
    start_agent_with(
        &fx.bed.kubeconfig_path(KCP)?,
        &fx.bed.kubeconfig_path("west")?,
        log,
    )
}

/// Starts the pull agent for `west` with these kubeconfigs, appending its output to `log`.
fn start_agent_with(
    upstream: &std::path::Path,
    downstream: &std::path::Path,
    log: &std::path::Path,
) -> Result<tokio::process::Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tmc-syncer"))
        .arg("--upstream-kubeconfig")
        .arg(upstream)
        .arg("--downstream-kubeconfig")
        .arg(downstream)
        .args([
            "--sync-target",
            "west",
            "--resources",
            "apps/v1/Deployment,v1/ConfigMap",
        ])
        .args(["--heartbeat-interval", "1", "--log-format", "json"])
        .args(["--namespace-mapping", "prefix:tmc"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .context("starting tmc-syncer")
}

#[tokio::test]
async fn pull_mode_binary_syncs_and_heartbeats() -> Result<()> {
    let fx = Fixture::start().await?;
    // tmcd records the synced-from value on the SyncTargets it registers; the
    // agent takes it from there (no --synced-from flag).
    Api::<SyncTarget>::all(fx.kcp.clone())
        .patch(
            "west",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "workload.kcp.io/synced-from": RECORDED}}})),
        )
        .await?;
    let log = fx.bed.dir().join("tmc-syncer.log");
    let mut child = start_agent(&fx, &log)?;

    let outcome = async {
        fx.create_placed("web", 2).await?;
        let prefixed: Api<Deployment> = Api::namespaced(fx.west.clone(), "tmc-shop");
        let copy = wait_until("copy web in west namespace tmc-shop", || {
            let prefixed = prefixed.clone();
            async move {
                Ok(match prefixed.get_opt("web").await? {
                    Some(d) => Ok(d),
                    None => Err("no copy".to_string()),
                })
            }
        })
        .await?;
        assert_eq!(copy.spec.as_ref().and_then(|s| s.replicas), Some(2));
        let annotations = annotations_of(&copy);
        assert_eq!(
            annotations
                .get("workload.kcp.io/upstream-namespace")
                .map(String::as_str),
            Some("shop")
        );
        // The synced-from value is the one recorded on the SyncTarget; the
        // workspace path comes from the upstream URL (/clusters/root:tmc).
        assert_eq!(
            labels_of(&copy)
                .get("workload.kcp.io/synced-from")
                .map(String::as_str),
            Some(RECORDED)
        );
        assert_eq!(
            annotations
                .get("workload.kcp.io/source-cluster")
                .map(String::as_str),
            Some("root:tmc")
        );
        let ns = Api::<Namespace>::all(fx.west.clone())
            .get("tmc-shop")
            .await?;
        assert_eq!(
            annotations_of(&ns)
                .get("workload.kcp.io/upstream-namespace")
                .map(String::as_str),
            Some("shop")
        );
        // A deleted copy is recreated: the downstream key maps back to shop/web.
        let old_uid = copy.metadata.uid.clone();
        prefixed.delete("web", &DeleteParams::default()).await?;
        wait_until("copy web to be recreated in tmc-shop", || {
            let (prefixed, old_uid) = (prefixed.clone(), old_uid.clone());
            async move {
                Ok(match prefixed.get_opt("web").await? {
                    Some(d) if d.metadata.uid != old_uid => Ok(()),
                    _ => Err("not recreated yet".to_string()),
                })
            }
        })
        .await?;
        assert!(
            fx.west_deployments().get_opt("web").await?.is_none(),
            "nothing lands in the unprefixed namespace"
        );
        if let Some(pid) = child.id()
            && let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(rss) = status.lines().find(|l| l.starts_with("VmRSS:"))
        {
            println!(
                "MEASURE tmc-syncer pull agent after syncing 1 Deployment: {}",
                rss.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
            );
        }
        fx.wait_ready("True", None).await?;

        // kill -9 of the agent: nothing is deleted, and a new agent resumes.
        let live = prefixed.get("web").await?;
        child.start_kill().context("killing tmc-syncer")?;
        let _ = child.wait().await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert_eq!(
            prefixed.get_opt("web").await?.and_then(|d| d.metadata.uid),
            live.metadata.uid,
            "the copy must outlive its agent"
        );
        child = start_agent(&fx, &log)?;
        fx.create_placed("after-restart", 1).await?;
        wait_until("the restarted agent to sync a new workload", || {
            let prefixed = prefixed.clone();
            async move {
                Ok(match prefixed.get_opt("after-restart").await? {
                    Some(_) => Ok(()),
                    None => Err("no copy".to_string()),
                })
            }
        })
        .await?;
        wait_until(
            "the restarted agent to report a status upstream",
            || async {
                let up = fx.upstream_deployments().get("after-restart").await?;
                Ok(
                    match annotations_of(&up).get("status.workload.kcp.io/west") {
                        Some(status) => Ok(status.clone()),
                        None => Err("no status reported".to_string()),
                    },
                )
            },
        )
        .await?;
        assert_eq!(
            prefixed.get_opt("web").await?.and_then(|d| d.metadata.uid),
            live.metadata.uid,
            "the restarted agent keeps the copy it finds"
        );
        anyhow::Ok(())
    }
    .await;
    stop_agent(child, &log, outcome).await
}

/// The agent with least privilege: `config/rbac/pull-agent-upstream.yaml` in the workspace and
/// `config/rbac/physical-cluster.yaml` on west, and only ServiceAccount tokens bound to them, under the
/// decision-protocol guard of `config/admission/` (which refuses the agent a decision of its own). It
/// syncs, reports status, heartbeats and holds its claim with no request forbidden, and on the upstream
/// deletion removes the copy and then its keys and finalizer.
#[tokio::test]
async fn pull_agent_runs_on_the_shipped_least_privilege_roles() -> Result<()> {
    let fx = Fixture::start().await?;
    rbac::apply(&fx.kcp, &rbac::manifest("pull-agent-upstream.yaml")).await?;
    rbac::apply(&fx.west, &rbac::manifest("physical-cluster.yaml")).await?;
    let dir = fx.bed.dir();
    let upstream = rbac::token_kubeconfig(
        &fx.kcp,
        "tmc-system",
        "tmc-syncer",
        &fx.bed.kubeconfig_path(KCP)?,
        &dir.join("kcp-tmc-syncer.kubeconfig"),
    )
    .await?;
    let downstream = rbac::token_kubeconfig(
        &fx.west,
        "tmc-system",
        "tmc-syncer",
        &fx.bed.kubeconfig_path("west")?,
        &dir.join("west-tmc-syncer.kubeconfig"),
    )
    .await?;
    // The decision-protocol guard tmcd installs (config/admission/), with
    // the bed's admin standing in for tmcd: the agent is not exempt.
    let shipped = std::fs::read_to_string(
        tmc_tests::testbed::binaries::repo_root().join("config/admission/decision-protocol.yaml"),
    )?;
    let guard = dir.join("decision-protocol.yaml");
    std::fs::write(
        &guard,
        shipped.replace("system:serviceaccount:tmc-system:tmcd", "kcp-admin"),
    )?;
    rbac::apply(&fx.kcp, &guard).await?;
    fx.create_placed("web", 2).await?;
    let as_agent: Api<Deployment> = Api::namespaced(
        tmc_tests::testbed::kubeconfig::client(&upstream, None).await?,
        common::NS,
    );
    wait_until(
        "the guard refuses the agent a decision of its own",
        || async {
            let dry = PatchParams {
                dry_run: true,
                ..PatchParams::default()
            };
            let forged = json!({"metadata": {"labels": {"state.workload.kcp.io/east": "Sync"}}});
            Ok(
                match as_agent.patch("web", &dry, &Patch::Merge(&forged)).await {
                    Err(kube::Error::Api(s))
                        if s.code == 403 && s.message.contains("decision protocol") =>
                    {
                        Ok(())
                    }
                    other => Err(format!("not refused yet: {other:?}")),
                },
            )
        },
    )
    .await?;
    let log = dir.join("tmc-syncer-rbac.log");
    let child = start_agent_with(&upstream, &downstream, &log)?;
    let outcome = async {
        wait_until("web synced and its status reported upstream", || async {
            let copy = Api::<Deployment>::namespaced(fx.west.clone(), "tmc-shop")
                .get_opt("web")
                .await?;
            let up = fx.upstream_deployments().get("web").await?;
            Ok(
                match (copy, annotations_of(&up).get("status.workload.kcp.io/west")) {
                    (Some(_), Some(_)) => Ok(()),
                    (copy, status) => Err(format!(
                        "copy {}, status {}",
                        copy.is_some(),
                        status.is_some()
                    )),
                },
            )
        })
        .await?;
        fx.wait_ready("True", None).await?;
        let text = std::fs::read_to_string(&log)?;
        let denied: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
            .collect();
        anyhow::ensure!(
            denied.is_empty(),
            "requests were forbidden with the shipped roles:\n{}",
            denied.join("\n")
        );
        // Deleted upstream: the agent removes the copy, then its keys and
        // finalizer (removals pass the guard), and the object goes.
        fx.upstream_deployments()
            .delete("web", &DeleteParams::default())
            .await?;
        wait_until(
            "web and its copy gone after the upstream deletion",
            || async {
                let copy = Api::<Deployment>::namespaced(fx.west.clone(), "tmc-shop")
                    .get_opt("web")
                    .await?;
                let up = fx.upstream_deployments().get_opt("web").await?;
                Ok(match (copy, up) {
                    (None, None) => Ok(()),
                    (copy, up) => Err(format!(
                        "copy {}, upstream {:?}",
                        copy.is_some(),
                        up.map(|u| u.metadata.finalizers)
                    )),
                })
            },
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    stop_agent(child, &log, outcome).await
}
