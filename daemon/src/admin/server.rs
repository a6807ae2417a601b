//! Routes of the admin server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use serde_json::{Value, json};

use super::auth::{self, Access};
use super::status::{
    ClusterReport, ConditionReport, FenceReport, PlacementReport, StatusReport, TargetReport,
};
use super::tls::{self, TlsListener};
use crate::config::{Config, Mode};
use crate::placement::selector::placement_key;
use crate::placement::targets::{REGION_LABEL, ZONE_LABEL, ready_condition};
use crate::state::State;

type Shared = Arc<State>;

/// The bound admin address: plain TCP or TLS, and who may call it.
pub struct Listener {
    inner: Inner,
    access: Access,
}

enum Inner {
    Plain(tokio::net::TcpListener),
    Tls(TlsListener),
}

impl Listener {
    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.inner {
            Inner::Plain(l) => l.local_addr(),
            Inner::Tls(l) => axum::serve::Listener::local_addr(l),
        }
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    state: Shared,
    listener: Listener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state, listener.access);
    match listener.inner {
        Inner::Plain(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
        Inner::Tls(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
    }
}

/// Binds `admin.address` with the token and TLS of `[admin]`.
pub async fn bind(config: &Config) -> anyhow::Result<Listener> {
    use anyhow::Context as _;
    let addr = *config.admin.address.get_ref();
    let access = Access::from_config(config)?;
    let tls = match (&config.admin.tls_cert_file, &config.admin.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::server_config(
            &config.resolve(cert.get_ref()),
            &config.resolve(key.get_ref()),
        )?),
        _ => None,
    };
    let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding the admin server to {addr} (fix: set admin.address to a free port)")
    })?;
    let inner = match tls {
        Some(tls) => Inner::Tls(TlsListener::new(tcp, tls)?),
        None => Inner::Plain(tcp),
    };
    Ok(Listener { inner, access })
}

/// The routes: the probes open, everything else behind [`auth::require`].
pub fn router(state: Shared, access: Access) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/explain/{kind}/{namespace}/{name}", get(explain))
        .route("/api/v1/syncers/{target}", get(syncer))
        .route("/api/v1/syncers/{target}/resync", post(resync))
        .route_layer(middleware::from_fn_with_state(access, auth::require));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(guarded)
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
    super::gauges::refresh(&state);
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
    // Through a JSON value: its keys are sorted, as this endpoint always served them.
    Json(serde_json::to_value(status_report(&state)).unwrap_or(Value::Null))
}

/// The body of `GET /api/v1/status`.
pub fn status_report(state: &State) -> StatusReport {
    let mut targets: Vec<TargetReport> = state
        .targets
        .state()
        .iter()
        .map(|t| {
            let view = state.target_view(t);
            TargetReport {
                ready: view.ready,
                ready_reason: ready_condition(t).map(|c| c.reason.clone()),
                last_heartbeat: t
                    .status
                    .as_ref()
                    .and_then(|s| s.last_syncer_heartbeat_time.as_ref())
                    .map(|h| h.0.to_string()),
                heartbeat_age_seconds: state.heartbeats.age(&view.name).map(|a| a.as_secs()),
                mode: format!("{:?}", t.spec.sync_mode),
                region: view.labels.get(REGION_LABEL).cloned(),
                zone: view.labels.get(ZONE_LABEL).cloned(),
                schedulable: view.schedulable,
                workload_count: t.status.as_ref().map(|s| s.workload_count),
                syncer: state
                    .syncer_health(&view.name)
                    .and_then(|h| serde_json::to_value(h).ok()),
                name: view.name,
            }
        })
        .collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    let mut placements: Vec<PlacementReport> = state
        .placements
        .state()
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            PlacementReport {
                name: p.metadata.name.as_ref().map(|_| placement_key(p)),
                policy: p.spec.policy.name.clone(),
                transformations: p
                    .spec
                    .transformations
                    .iter()
                    .map(|t| t.name.clone())
                    .collect(),
                priority: p.spec.priority,
                conditions: status
                    .conditions
                    .iter()
                    .map(|c| ConditionReport {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                    })
                    .collect(),
                workload_count: status.workload_count,
                targets: status.targets,
                policy_generation: status.policy_generation,
            }
        })
        .collect();
    placements.sort_by(|a, b| a.name.cmp(&b.name));
    StatusReport {
        identity: state.identity.clone(),
        leader: state.is_leader(),
        fence: FenceReport {
            open: state.fence.is_open(),
            writes_sent: state.fence.writes_sent(),
            writes_refused: state.fence.writes_refused(),
        },
        policy_generation: state.policies.generation(),
        policies: state.policies.policies(),
        targets,
        placements,
        stalled_moves: state.moves.stalled(),
        configured_clusters: state
            .config
            .clusters
            .iter()
            .map(|c| ClusterReport {
                name: c.name.get_ref().clone(),
                mode: mode_name(c.mode).into(),
            })
            .collect(),
    }
}

fn mode_name(mode: Mode) -> &'static str {
    if mode == Mode::Push { "push" } else { "pull" }
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
        "mode": mode_name(cluster.mode),
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

/// The query of an explanation: the workload's workspace, in export mode.
#[derive(serde::Deserialize)]
struct ExplainQuery {
    workspace: Option<String>,
}

/// `GET /api/v1/explain/{kind}/{namespace}/{name}[?workspace=<logical cluster>]`: an
/// [`ExplainReport`](crate::explain::ExplainReport).
async fn explain(
    Extract(state): Extract<Shared>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
    Query(query): Query<ExplainQuery>,
) -> Response {
    use crate::explain::{LookupError, explain_live};
    match explain_live(&state, query.workspace.as_deref(), &kind, &namespace, &name).await {
        Ok(report) => Json(report).into_response(),
        Err(err) => {
            let code = match err {
                LookupError::UnknownKind { .. } | LookupError::NotFound { .. } => {
                    StatusCode::NOT_FOUND
                }
                LookupError::Read { .. } => StatusCode::BAD_GATEWAY,
                LookupError::WorkspaceNeeded | LookupError::BadWorkspace(_) => {
                    StatusCode::BAD_REQUEST
                }
            };
            (code, Json(json!({"error": err.to_string()}))).into_response()
        }
    }
}
