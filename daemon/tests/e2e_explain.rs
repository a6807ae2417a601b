//! `tmcd explain` on real servers: after a placement that keeps a
//! Deployment in one region, the binary explains (as a table and as JSON,
//! through a running tmcd's admin API) the placement, the policies, the
//! chosen target with its copy in place, and the target dropped for its
//! location; and mistakes (no such workload, kind or form) say what to fix.

mod common;

use std::process::Command;

use anyhow::Result;
use serde_json::json;
use tmc_daemon::explain::{ExplainReport, Verdict};
use tmc_tests::testbed::wait::Poll;

use common::{Env, apply_placement, copy, create_deployment, replicas, until};

/// Runs `tmcd explain ARGS... --admin ADMIN`; (exit success, stdout, stderr).
fn explain(admin: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tmcd"))
        .arg("explain")
        .args(args)
        .args(["--admin", admin])
        .output()
        .expect("tmcd runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_placement_the_targets_and_the_copies() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "replica-spread")?;
    env.install_policy("label-stamper", "label-stamper")?;
    let daemon = env.daemon("").await?;
    let kcp = env.kcp().await?;
    let east = env.cluster("east").await?;
    apply_placement(&kcp, "east-only", json!({
        "policy": {"name": "replica-spread"},
        "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": "us-east"}}],
        "transformations": [{"name": "label-stamper", "settings": {"labels": {"team": "demo"}}}],
    }))
    .await?;
    create_deployment(&kcp, "web", 2).await?;
    until("web on east with 2 replicas", || async {
        let e = copy(&east, "web").await?;
        Ok(if replicas(&e) == 2 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("east replicas {}", replicas(&e)))
        })
    })
    .await?;

    let admin = format!("http://{}", daemon.admin_addr());
    // JSON: the typed report, once east's syncer reports its copy in place.
    let report = until("east's copy reported in place", || async {
        let (ok, stdout, stderr) = explain(&admin, &["deployment/demo/web", "-o", "json"]);
        anyhow::ensure!(ok, "tmcd explain failed: {stderr}");
        let report: ExplainReport = serde_json::from_str(&stdout)?;
        let in_place = report
            .targets
            .iter()
            .find(|t| t.name == "east")
            .and_then(|t| t.copy.as_ref())
            .is_some_and(|c| c.in_place);
        Ok(if in_place {
            Poll::Ready(report)
        } else {
            Poll::Pending(format!("{:?}", report.targets))
        })
    })
    .await?;
    assert_eq!(report.placement.as_deref(), Some("east-only"));
    let policy = report.policy.as_ref().expect("policy");
    assert_eq!(policy.name, "replica-spread");
    assert_eq!(policy.status.as_deref(), Some("active"));
    assert!(
        policy.digest.as_ref().is_some_and(|d| d.len() == 64),
        "{policy:?}"
    );
    assert_eq!(report.transformations[0].name, "label-stamper");
    assert!(report.policy_generation >= 1);
    let decision = report.decision.as_ref().expect("a decision");
    assert!(
        decision.recorded,
        "the workload records what tmcd decides now"
    );
    let verdicts: Vec<(&str, Verdict, &str)> = report
        .targets
        .iter()
        .map(|t| (t.name.as_str(), t.verdict, t.reason.as_str()))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("east", Verdict::Chosen, "chosen"),
            ("west", Verdict::Dropped, "locationMismatch")
        ]
    );
    let east_row = &report.targets[0];
    assert_eq!(east_row.replicas, Some(2));
    assert_eq!(
        east_row.labels.set.get("team").map(String::as_str),
        Some("demo")
    );
    assert!(east_row.recorded.as_ref().is_some_and(|r| r.sync));

    // The table for people.
    let (ok, table, stderr) = explain(&admin, &["deployments.apps/demo/web"]);
    assert!(ok, "{stderr}");
    for text in [
        "Deployment demo/web",
        "placement:   east-only",
        "replica-spread",
        "label-stamper",
        "decision:    east (2) (recorded)",
        "edits:       east: labels team=demo",
        "matches none of the placement's location selectors",
        "in place, 2/2 available",
    ] {
        assert!(table.contains(text), "missing {text:?} in:\n{table}");
    }
    eprintln!("tmcd explain deployment/demo/web:\n{table}");

    // Mistakes say what to fix.
    let (ok, _, stderr) = explain(&admin, &["deployment/demo/nope"]);
    assert!(!ok && stderr.contains("does not exist"), "{stderr}");
    let (ok, _, stderr) = explain(&admin, &["statefulset/demo/web"]);
    assert!(!ok && stderr.contains("does not sync"), "{stderr}");
    let (ok, _, stderr) = explain(&admin, &["web"]);
    assert!(!ok && stderr.contains("KIND/NAMESPACE/NAME"), "{stderr}");

    daemon.stop().await;
    Ok(())
}
