//! The subcommands of `tmcd` other than argument parsing.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use tmc_syncer::process::{LogFormat, shutdown_signal};

use crate::admin::client;
use crate::admin::status::StatusReport;
use crate::cli::{Output, SyncerCommand};
use crate::config;
use crate::explain::{self, ExplainReport};
use crate::{Daemon, crds, kubeconn, logging, table};

/// `tmcd crds [--split DIR]`.
pub fn crds(split: Option<&Path>) -> Result<()> {
    match split {
        None => print!("{}", crds::yaml_stream()?),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (file, yaml) in crds::files()? {
                let path = dir.join(&file);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

/// `tmcd [run]`: runs until SIGINT or SIGTERM.
pub async fn run(path: &Path, log_format: Option<LogFormat>) -> Result<()> {
    let config = config::load(path)?;
    let logs = logging::init(log_format.unwrap_or(config.log_format));
    crate::allocator::start_background_purge();
    let daemon = Daemon::start(config, logs).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    daemon.stop().await;
    Ok(())
}

async fn get_json(admin: &str, method: &str, path: &str) -> Result<Value> {
    let reply = client::request(admin, method, path).await?;
    let body: Value = serde_json::from_str(&reply.body).with_context(|| {
        format!(
            "tmcd at {admin} answered {} with a body that is not JSON",
            reply.status
        )
    })?;
    if reply.status >= 400 {
        bail!(
            "{}",
            body.get("error")
                .and_then(Value::as_str)
                .unwrap_or(&reply.body)
        );
    }
    Ok(body)
}

/// `tmcd status`.
pub async fn status(admin: &str, raw: bool) -> Result<()> {
    let body = get_json(admin, "GET", "/api/v1/status").await?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let report: StatusReport = serde_json::from_value(body).with_context(|| {
        format!("tmcd at {admin} answered a status this tmcd cannot read (fix: run the tmcd binary of the same version)")
    })?;
    print!("{}", render_status(&report));
    Ok(())
}

/// `tmcd explain KIND/NAMESPACE/NAME [--workspace LOGICAL_CLUSTER]`.
pub async fn explain(
    admin: &str,
    workspace: Option<&str>,
    workload: &str,
    output: Output,
) -> Result<()> {
    let (kind, namespace, name) = workload_path(workload)?;
    let mut path = format!("/api/v1/explain/{kind}/{namespace}/{name}");
    if let Some(workspace) = workspace {
        let cluster = tmc_api::tenancy::LogicalCluster::new(workspace)
            .with_context(|| format!("--workspace {workspace:?}"))?;
        path = format!("{path}?workspace={cluster}");
    }
    let body = get_json(admin, "GET", &path).await?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let report: ExplainReport = serde_json::from_value(body).with_context(|| {
        format!("tmcd at {admin} answered an explanation this tmcd cannot read (fix: run the tmcd binary of the same version)")
    })?;
    print!("{}", explain::render(&report));
    Ok(())
}

/// `KIND/NAMESPACE/NAME` split in three (non-empty, no other `/`).
fn workload_path(text: &str) -> Result<(&str, &str, &str)> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [kind, namespace, name] if [kind, namespace, name].iter().all(|p| !p.is_empty()) => {
            Ok((kind, namespace, name))
        }
        _ => bail!(
            "{text:?} is not KIND/NAMESPACE/NAME (fix: e.g. deployment/demo/web; `-` as the namespace of a cluster-scoped kind)"
        ),
    }
}

/// A JSON value as a table cell: `-` for null, strings without quotes.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An optional value as a table cell: `-` for none.
fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The human-readable form of `GET /api/v1/status`.
pub fn render_status(report: &StatusReport) -> String {
    let role = if report.leader { "leader" } else { "standby" };
    let mut out = format!(
        "tmcd {} ({role}), policy generation {}\n\n",
        report.identity, report.policy_generation
    );
    let mut targets = vec![header(&[
        "TARGET",
        "MODE",
        "READY",
        "REGION",
        "ZONE",
        "HEARTBEAT",
        "SYNCER",
    ])];
    for t in &report.targets {
        let syncer = match &t.syncer {
            None | Some(Value::Null) => "-".to_string(),
            Some(h) => format!(
                "up={} down={} synced={} failing={} err={}",
                cell(&h["upstreamConnected"]),
                cell(&h["downstreamConnected"]),
                cell(&h["objectsSynced"]),
                cell(&h["failing"]),
                cell(&h["lastError"])
            ),
        };
        targets.push(vec![
            t.name.clone(),
            t.mode.clone(),
            t.ready.to_string(),
            or_dash(t.region.as_ref()),
            or_dash(t.zone.as_ref()),
            or_dash(t.last_heartbeat.as_ref()),
            syncer,
        ]);
    }
    out.push_str(&table::render(&targets));
    let mut policies = vec![header(&["POLICY", "KIND", "STATUS", "DIGEST"])];
    for p in &report.policies {
        policies.push(vec![
            p.name.clone(),
            p.kind.map_or("-", |k| k.as_str()).to_string(),
            p.status.as_str().to_string(),
            p.digest
                .as_deref()
                .unwrap_or("-")
                .chars()
                .take(16)
                .collect(),
        ]);
    }
    out.push('\n');
    out.push_str(&table::render(&policies));
    let mut placements = vec![header(&[
        "PLACEMENT",
        "POLICY",
        "READY",
        "WORKLOADS",
        "TARGETS",
    ])];
    for p in &report.placements {
        let ready = p
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map_or_else(|| "-".into(), |c| c.status.clone());
        let targets: Vec<String> = p
            .targets
            .iter()
            .map(|t| format!("{}:{}w/{}r", t.name, t.workloads, t.replicas))
            .collect();
        placements.push(vec![
            or_dash(p.name.as_ref()),
            p.policy.clone(),
            ready,
            p.workload_count.to_string(),
            targets.join(" "),
        ]);
    }
    out.push('\n');
    out.push_str(&table::render(&placements));
    if !report.stalled_moves.is_empty() {
        out.push_str(
            "\nSTALLED MOVES (the old copies are kept until the new ones are available)\n",
        );
        let mut rows = vec![header(&[
            "WORKLOAD",
            "PLACEMENT",
            "SINCE",
            "KEEPING",
            "WAITING ON",
        ])];
        for m in &report.stalled_moves {
            let waiting: Vec<String> = m
                .waiting_on
                .iter()
                .map(|w| format!("{}: {}", w.target, w.reason))
                .collect();
            rows.push(vec![
                m.workload.clone(),
                m.placement.clone(),
                m.since.clone(),
                m.keeping.join(","),
                waiting.join("; "),
            ]);
        }
        out.push_str(&table::render(&rows));
    }
    out
}

/// A table's header row.
fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// `tmcd syncer logs|resync`.
pub async fn syncer(cmd: SyncerCommand) -> Result<()> {
    match cmd {
        SyncerCommand::Logs { cluster, admin } => {
            let body = get_json(&admin, "GET", &format!("/api/v1/syncers/{cluster}")).await?;
            if let Some(health) = body.get("health").filter(|h| !h.is_null()) {
                println!("# {cluster}: {}", serde_json::to_string(health)?);
            } else {
                println!(
                    "# {cluster}: no push syncer runs in this tmcd (mode {}, leader {})",
                    cell(&body["mode"]),
                    cell(&body["leader"])
                );
            }
            for line in body["logs"].as_array().into_iter().flatten() {
                println!("{}", cell(line));
            }
        }
        SyncerCommand::Resync { cluster, admin } => {
            get_json(&admin, "POST", &format!("/api/v1/syncers/{cluster}/resync")).await?;
            println!("re-queued every workload for {cluster}");
        }
    }
    Ok(())
}

/// `tmcd verify`: reaches the control plane (and the workspace) and each cluster.
pub async fn verify(path: &Path) -> Result<()> {
    let config = config::load(path)?;
    let mut failures = 0;
    let ws = config.control_plane.workspace.as_ref().map(|w| w.get_ref());
    let label = format!(
        "control plane{}",
        ws.map(|w| format!(" (workspace {w})")).unwrap_or_default()
    );
    match kubeconn::control_plane(&config).await {
        Ok(c) => match c.list_core_api_versions().await {
            Ok(_) => println!("ok    {label}"),
            Err(err) => {
                failures += 1;
                println!("FAIL  {label}: {err}");
            }
        },
        Err(err) => {
            failures += 1;
            println!("FAIL  {label}: {err:#}");
        }
    }
    for cluster in &config.clusters {
        let name = cluster.name.get_ref();
        let Some(kc) = cluster.kubeconfig.as_ref() else {
            println!(
                "skip  cluster {name}: pull mode without kubeconfig (its agent connects on its own)"
            );
            continue;
        };
        let kc = config.resolve(kc.get_ref());
        let reached = match kubeconn::client(Some(&kc), cluster.context.as_deref(), None).await {
            Ok(c) => c
                .apiserver_version()
                .await
                .map(|v| v.git_version)
                .map_err(anyhow::Error::from),
            Err(err) => Err(err),
        };
        match reached {
            Ok(version) => println!("ok    cluster {name} ({version})"),
            Err(err) => {
                failures += 1;
                println!("FAIL  cluster {name}: {err:#}");
            }
        }
    }
    if failures > 0 {
        bail!("{failures} connection(s) failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_paths_have_three_parts() {
        assert_eq!(
            workload_path("deployment/demo/web").expect("ok"),
            ("deployment", "demo", "web")
        );
        for bad in [
            "deployment/web",
            "deployment/demo/web/x",
            "deployment//web",
            "",
        ] {
            let err = workload_path(bad).expect_err(bad).to_string();
            assert!(err.contains("KIND/NAMESPACE/NAME"), "{err}");
        }
    }
}
