//! The pull-mode binary against real servers: `tmc-syncer` with the
//! workspace's and `west`'s kubeconfigs applies a placed Deployment and
//! heartbeats. Needs the test bed binaries (`hack/testbed/build.sh`).

mod common;

use std::process::Stdio;

use anyhow::{Context, Result};
use tmc_tests::testbed::KCP;

use common::{Fixture, annotations_of, labels_of};

#[tokio::test]
async fn pull_mode_binary_syncs_and_heartbeats() -> Result<()> {
    let fx = Fixture::start().await?;
    let log = fx.bed.dir().join("tmc-syncer.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tmc-syncer"))
        .arg("--upstream-kubeconfig")
        .arg(fx.bed.kubeconfig_path(KCP)?)
        .arg("--downstream-kubeconfig")
        .arg(fx.bed.kubeconfig_path("west")?)
        .args([
            "--sync-target",
            "west",
            "--resources",
            "apps/v1/Deployment,v1/ConfigMap",
        ])
        .args(["--heartbeat-interval", "1", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .context("starting tmc-syncer")?;

    let outcome = async {
        fx.create_placed("web", 2).await?;
        let copy = fx.wait_copy("web", 2).await?;
        // The workspace path comes from the upstream URL (/clusters/root:tmc).
        assert_eq!(
            labels_of(&copy)
                .get("workload.kcp.io/synced-from")
                .map(String::as_str),
            Some("root-tmc")
        );
        assert_eq!(
            annotations_of(&copy)
                .get("workload.kcp.io/source-cluster")
                .map(String::as_str),
            Some("root:tmc")
        );
        fx.wait_ready("True", None).await?;
        anyhow::Ok(())
    }
    .await;
    child.start_kill().context("stopping tmc-syncer")?;
    let _ = child.wait().await;
    if outcome.is_err() {
        eprintln!(
            "----- tmc-syncer log -----\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    outcome
}
