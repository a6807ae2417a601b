//! Hot reload in a running tmcd: `tmcd policy diff` shows what a candidate
//! module would move without moving it; replacing the placement policy's file
//! changes where workloads run, and the audit trail names the module that
//! decided each change; a failing policy keeps the last decision and says why.

mod common;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use kube::api::Api;
use serde_json::json;
use tmc_api::crd::ClusterWorkloadPlacement;
use tmc_daemon::audit::AuditRecord;
use tmc_daemon::config::Config;
use tmc_daemon::policy_diff::{self, Change, DiffArgs, DiffReport};
use tmc_tests::fixtures;
use tmc_tests::testbed::wait::Poll;

use common::{Env, apply_placement, copy, create_deployment, replicas, split_over_both, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_policy_file_moves_workloads_and_failures_keep_them() -> Result<()> {
    let env = Env::start().await?;
    env.install_policy("replica-spread", "chooser")?;
    let daemon = env
        .daemon("\n[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\n")
        .await?;
    let kcp = env.kcp().await?;
    let west = env.cluster("west").await?;
    let east = env.cluster("east").await?;
    let spec = |policy: &str| {
        json!({
            "policy": {"name": policy},
            "locationPreferences": [{"matchLabels": {"topology.kubernetes.io/region": "us-west"}}],
        })
    };
    apply_placement(&kcp, "choose", spec("chooser")).await?;
    create_deployment(&kcp, "api", 4).await?;
    split_over_both(&west, &east, "api", 4).await?;
    let generation = daemon.state().policies.generation();
    let serving = |daemon: &tmc_daemon::Daemon| {
        daemon
            .state()
            .policies
            .policies()
            .into_iter()
            .find(|p| p.name == "chooser")
            .and_then(|p| p.digest)
    };
    let spread_digest = serving(&daemon);

    // Shadow evaluation first: the diff shows the move and writes nothing.
    let config = tmc_daemon::config::load(&env.dir.path().join("tmc.toml"))?;
    let report = shadow(&config, "active-passive").await?;
    let row = report
        .rows
        .iter()
        .find(|r| r.workload == "Deployment demo/api")
        .with_context(|| format!("the diff lists demo/api: {report:?}"))?;
    assert_eq!(row.change, Change::Moves, "{row:?}");
    assert_eq!(row.now, split(&[("east", 2), ("west", 2)]));
    assert_eq!(row.candidate, Some(split(&[("west", 4)])));
    // The binary: a table, and exit 1 under --exit-code when something would move.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tmcd"))
        .arg("policy")
        .arg("diff")
        .arg(fixtures::built_policy("active-passive")?)
        .args(["--as", "chooser", "--exit-code", "--config"])
        .arg(env.dir.path().join("tmc.toml"))
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "tmcd policy diff:\n{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "--exit-code after a change");
    let api_row = table
        .lines()
        .find(|l| l.starts_with("Deployment demo/api"))
        .with_context(|| format!("no row for demo/api in:\n{table}"))?;
    for cell in ["choose", "moves", "east (2), west (2)", "west (4)"] {
        assert!(api_row.contains(cell), "{cell:?} missing in {api_row:?}");
    }
    let same = shadow(&config, "replica-spread").await?;
    assert!(
        !same.rows.is_empty() && same.changes().next().is_none(),
        "the running module itself changes nothing: {same:?}"
    );
    assert_eq!(
        replicas(&copy(&east, "api").await?),
        2,
        "the diff wrote nothing"
    );

    // Same name, new module: active-passive keeps everything in the preferred region.
    env.install_policy("active-passive", "chooser")?;
    until("api only on west after the reload", || async {
        let (w, e) = (copy(&west, "api").await?, copy(&east, "api").await?);
        Ok(if replicas(&w) == 4 && e.is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending(format!(
                "west {} east present {}",
                replicas(&w),
                e.is_some()
            ))
        })
    })
    .await?;
    let after = daemon.state().policies.generation();
    assert!(
        after > generation,
        "policy generation advanced: {generation} -> {after}"
    );
    // The audit trail: the first split by replica-spread, then the move by
    // active-passive, each with its module's digest and generation.
    let passive_digest = serving(&daemon);
    assert!(spread_digest.is_some() && passive_digest != spread_digest);
    let audit: Vec<AuditRecord> = std::fs::read_to_string(env.dir.path().join("audit.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("reading the audit trail back")?;
    let api: Vec<&AuditRecord> = audit
        .iter()
        .filter(|r| r.workload == "Deployment demo/api")
        .collect();
    let first = api.first().context("no audit record for api")?;
    assert!(
        first.from.is_empty(),
        "the first record places api: {first:?}"
    );
    let spread = api
        .iter()
        .find(|r| r.to.len() == 2 && r.policy_digest == spread_digest)
        .with_context(|| format!("no record of the split by replica-spread: {api:?}"))?;
    let moved = api
        .iter()
        .find(|r| r.to == split(&[("west", 4)]) && r.policy_digest == passive_digest)
        .with_context(|| format!("no record of the move to west by active-passive: {api:?}"))?;
    assert_eq!(moved.from, spread.to, "the move starts from the split");
    assert_eq!(
        (moved.placement.as_str(), moved.policy.as_str()),
        ("choose", "chooser")
    );
    assert!(
        moved.policy_generation > spread.policy_generation,
        "{moved:?}"
    );
    let placements: Api<ClusterWorkloadPlacement> = Api::all(kcp.clone());
    until("the placement's status shows the new split", || async {
        let status = placements.get("choose").await?.status.unwrap_or_default();
        let split: Vec<(String, u32)> = status
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.replicas))
            .collect();
        Ok(
            if split == [("west".to_string(), 4)] && status.policy_generation >= Some(after) {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "{split:?} at policy generation {:?}",
                    status.policy_generation
                ))
            },
        )
    })
    .await?;

    // A placement naming a policy that is not loaded: nothing moves, the placement says why.
    apply_placement(&kcp, "choose", spec("missing")).await?;
    let message = until("PolicyValid False on the placement", || async {
        let p = placements.get("choose").await?;
        let cond = p
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "PolicyValid");
        Ok(match cond {
            Some(c) if c.status == "False" => Poll::Ready(c.message),
            other => Poll::Pending(format!("{other:?}")),
        })
    })
    .await?;
    assert!(
        message.contains("missing"),
        "the condition names the policy: {message}"
    );
    let w = copy(&west, "api").await?;
    assert_eq!(replicas(&w), 4, "the last decision stays in force");
    let errors = daemon.state().metrics.render();
    assert!(
        errors.contains("tmcd_policy_evaluation_errors_total{policy=\"missing\"}"),
        "{errors}"
    );
    daemon.stop().await;
    Ok(())
}

/// `tmcd policy diff` of the built example `built` standing in for `chooser`.
async fn shadow(config: &Config, built: &str) -> Result<DiffReport> {
    let args = DiffArgs {
        module: fixtures::built_policy(built)?,
        as_name: Some("chooser".into()),
    };
    policy_diff::diff(config, &args).await
}

/// Target -> replicas.
fn split(on: &[(&str, u32)]) -> BTreeMap<String, Option<u32>> {
    on.iter().map(|(t, n)| (t.to_string(), Some(*n))).collect()
}
