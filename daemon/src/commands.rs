//! The subcommands of `tmcd` other than argument parsing.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use tmc_syncer::process::{LogFormat, shutdown_signal};

use crate::admin::client;
use crate::cli::SyncerCommand;
use crate::config;
use crate::{Daemon, crds, kubeconn, logging};

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
    print!("{}", render_status(&body));
    Ok(())
}

/// A JSON value as a table cell: `-` for null, strings without quotes.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The human-readable form of `GET /api/v1/status`.
pub fn render_status(body: &Value) -> String {
    let mut out = String::new();
    let role = if body["leader"].as_bool() == Some(true) {
        "leader"
    } else {
        "standby"
    };
    out.push_str(&format!(
        "tmcd {} ({role}), policy generation {}\n\n",
        cell(&body["identity"]),
        cell(&body["policyGeneration"])
    ));
    out.push_str(&format!(
        "{:<12} {:<6} {:<6} {:<10} {:<10} {:<26} {}\n",
        "TARGET", "MODE", "READY", "REGION", "ZONE", "HEARTBEAT", "SYNCER"
    ));
    for t in body["targets"].as_array().into_iter().flatten() {
        let syncer = match &t["syncer"] {
            Value::Null => "-".to_string(),
            h => format!(
                "up={} down={} synced={} failing={} err={}",
                cell(&h["upstreamConnected"]),
                cell(&h["downstreamConnected"]),
                cell(&h["objectsSynced"]),
                cell(&h["failing"]),
                cell(&h["lastError"])
            ),
        };
        out.push_str(&format!(
            "{:<12} {:<6} {:<6} {:<10} {:<10} {:<26} {}\n",
            cell(&t["name"]),
            cell(&t["mode"]),
            cell(&t["ready"]),
            cell(&t["region"]),
            cell(&t["zone"]),
            cell(&t["lastHeartbeat"]),
            syncer
        ));
    }
    out.push_str(&format!(
        "\n{:<24} {:<14} {:<8} {:<6} {}\n",
        "POLICY", "KIND", "STATUS", "", "DIGEST"
    ));
    for p in body["policies"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<24} {:<14} {:<8} {:<6} {}\n",
            cell(&p["name"]),
            cell(&p["kind"]),
            cell(&p["status"]),
            "",
            cell(&p["digest"]).chars().take(16).collect::<String>()
        ));
    }
    out.push_str(&format!(
        "\n{:<24} {:<20} {:<6} {:<10} {}\n",
        "PLACEMENT", "POLICY", "READY", "WORKLOADS", "TARGETS"
    ));
    for p in body["placements"].as_array().into_iter().flatten() {
        let ready = p["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| cell(&c["status"]))
            .unwrap_or_else(|| "-".into());
        let targets: Vec<String> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}:{}w/{}r",
                    cell(&t["name"]),
                    cell(&t["workloads"]),
                    cell(&t["replicas"])
                )
            })
            .collect();
        out.push_str(&format!(
            "{:<24} {:<20} {:<6} {:<10} {}\n",
            cell(&p["name"]),
            cell(&p["policy"]),
            ready,
            cell(&p["workloadCount"]),
            targets.join(" ")
        ));
    }
    let stalled = body["stalledMoves"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if !stalled.is_empty() {
        out.push_str(
            "\nSTALLED MOVES (the old copies are kept until the new ones are available)\n",
        );
        let mut rows = vec![
            ["WORKLOAD", "PLACEMENT", "SINCE", "KEEPING", "WAITING ON"]
                .map(String::from)
                .to_vec(),
        ];
        for m in stalled {
            let waiting: Vec<String> = m["waitingOn"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| format!("{}: {}", cell(&w["target"]), cell(&w["reason"])))
                .collect();
            let keeping: Vec<String> = m["keeping"]
                .as_array()
                .into_iter()
                .flatten()
                .map(cell)
                .collect();
            rows.push(vec![
                cell(&m["workload"]),
                cell(&m["placement"]),
                cell(&m["since"]),
                keeping.join(","),
                waiting.join("; "),
            ]);
        }
        out.push_str(&crate::table::render(&rows));
    }
    out
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
