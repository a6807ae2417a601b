//! Routes of the admin server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::config::Mode;
use crate::placement::targets::{REGION_LABEL, ZONE_LABEL, ready_condition};
use crate::state::State;

type Shared = Arc<State>;

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    state: Shared,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the admin address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding the admin server to {addr} (fix: set admin.address to a free port)")
    })
}

/// The routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/syncers/{target}", get(syncer))
        .route("/api/v1/syncers/{target}/resync", post(resync))
        .with_state(state)
}

async fn readyz(Extract(state): Extract<Shared>) -> Response {
    if state.is_leader() {
        (StatusCode::OK, format!("leader {}", state.identity)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("standby {} (not the leader)", state.identity),
        )
            .into_response()
    }
}

async fn metrics(Extract(state): Extract<Shared>) -> Response {
    state.refresh_syncer_metrics();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn status(Extract(state): Extract<Shared>) -> Json<Value> {
    Json(status_json(&state))
}

/// The body of `GET /api/v1/status`.
pub fn status_json(state: &State) -> Value {
    let (targets, placements) = (state.targets.state(), state.placements.state());
    let mut target_rows: Vec<Value> = targets
        .iter()
        .map(|t| {
            let view = state.target_view(t);
            let mode = t.spec.sync_mode;
            let cond = ready_condition(t);
            json!({
                "name": view.name,
                "ready": view.ready,
                "readyReason": cond.map(|c| c.reason.clone()),
                "lastHeartbeat": t.status.as_ref().and_then(|s| s.last_syncer_heartbeat_time.as_ref()).map(|h| h.0.to_string()),
                // Since tmcd saw the heartbeat change, by its own clock.
                "heartbeatAgeSeconds": state.heartbeats.age(&view.name).map(|a| a.as_secs()),
                "mode": format!("{mode:?}"),
                "region": view.labels.get(REGION_LABEL),
                "zone": view.labels.get(ZONE_LABEL),
                "schedulable": view.schedulable,
                "workloadCount": t.status.as_ref().map(|s| s.workload_count),
                "syncer": state.syncer_health(&view.name),
            })
        })
        .collect();
    target_rows.sort_by_key(|r| r["name"].as_str().unwrap_or_default().to_string());
    let mut placement_rows: Vec<Value> = placements
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            json!({
                "name": p.metadata.name,
                "policy": p.spec.policy.name,
                "transformations": p.spec.transformations.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
                "priority": p.spec.priority,
                "conditions": status.conditions.iter().map(|c| json!({"type": c.type_, "status": c.status, "reason": c.reason, "message": c.message})).collect::<Vec<_>>(),
                "workloadCount": status.workload_count,
                "targets": status.targets,
                "policyGeneration": status.policy_generation,
            })
        })
        .collect();
    placement_rows.sort_by_key(|r| r["name"].as_str().unwrap_or_default().to_string());
    json!({
        "identity": state.identity,
        "leader": state.is_leader(),
        "fence": {
            "open": state.fence.is_open(),
            "writesSent": state.fence.writes_sent(),
            "writesRefused": state.fence.writes_refused(),
        },
        "policyGeneration": state.policies.generation(),
        "policies": state.policies.policies(),
        "targets": target_rows,
        "placements": placement_rows,
        "stalledMoves": state.moves.stalled(),
        "configuredClusters": state.config.clusters.iter().map(|c| json!({
            "name": c.name.get_ref(),
            "mode": if c.mode == Mode::Push { "push" } else { "pull" },
        })).collect::<Vec<_>>(),
    })
}

async fn syncer(Extract(state): Extract<Shared>, Path(target): Path<String>) -> Response {
    let Some(cluster) = state
        .config
        .clusters
        .iter()
        .find(|c| c.name.get_ref() == &target)
    else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no cluster {target:?} in the configuration (see `tmcd status`)")})),
        )
            .into_response();
    };
    Json(json!({
        "target": target,
        "mode": if cluster.mode == Mode::Push { "push" } else { "pull" },
        "leader": state.is_leader(),
        "health": state.syncer_health(&target),
        "logs": state.logs.lines(&target),
    }))
    .into_response()
}

async fn resync(Extract(state): Extract<Shared>, Path(target): Path<String>) -> Response {
    if !state
        .config
        .clusters
        .iter()
        .any(|c| c.name.get_ref() == &target)
    {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no cluster {target:?} in the configuration (see `tmcd status`)")})),
        )
            .into_response();
    }
    if !state.is_leader() {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "this replica is not the leader (ask the leader: see /readyz)"})),
        )
            .into_response();
    }
    tracing::info!(target_cluster = %target, "resync requested: re-queueing every workload");
    state.triggers.fire();
    Json(json!({"target": target, "requeued": true})).into_response()
}
