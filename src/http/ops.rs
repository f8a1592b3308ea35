//! Operations: liveness, readiness, metrics, staging statistics, and the
//! settings a client must know before it acts (the canvas reads them to
//! refuse an over-limit file before sending it and to judge "online" with
//! the server's own window).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::Operator;
use super::auth::Session;
use super::{AppState, ErrorBody, Json, Result};
use crate::domain::{self, Tier, WorkspaceId};

/// `{status}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Status {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Counts over the staging table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct UploadStatsView {
    /// Unacked and unexpired: waiting for delivery.
    pub pending: i64,
    /// Of those, downloaded but never acked (the stuck-fetch signal).
    pub fetched_not_acked: i64,
    /// Acked, waiting for the sweep.
    pub acked: i64,
    /// Past their deadline unacked, waiting for the sweep.
    pub expired: i64,
    /// Bytes waiting for delivery.
    pub bytes_pending: i64,
    /// Age of the oldest file waiting for delivery, in seconds (0 if none).
    pub oldest_pending_age_s: i64,
}

/// The server's settings that shape what a client may send and how it
/// reads a workspace's status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(super) struct ServerConfigView {
    /// Largest accepted file, in bytes (`--max-file-size`).
    pub max_file_bytes: u64,
    /// Largest accepted upload request, the sum of its files, in bytes
    /// (`--max-request-size`).
    pub max_request_bytes: u64,
    /// A workspace is online while its last contact is at most this many
    /// seconds old (`--offline-after`).
    pub offline_after_seconds: u64,
    /// Tier of a workspace whose create or import request names none
    /// (`--default-tier`).
    #[schema(value_type = i64, minimum = 1, maximum = 4)]
    pub default_tier: Tier,
    /// The role of the token that asks: `admin` (also the first-start
    /// admin token), `operator` or `viewer`. A client hides what that
    /// role may not do (the server refuses it anyway).
    pub role: String,
    /// The team subtree that token is confined to, if any.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub team_root: Option<WorkspaceId>,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/health", tag = "operations", security(()),
    responses((status = 200, body = Status)))]
pub(super) async fn health() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the database and the blob store answer, and this process's
/// scheduler loop (when it runs one) has ticked recently.
#[utoipa::path(get, path = "/ready", tag = "operations", security(()),
    responses((status = 200, body = Status), (status = 503, body = ErrorBody)))]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "not ready: database");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(ErrorBody::new("the database does not answer")),
        )
            .into_response();
    }
    if let Err(e) = state.blobs.ping().await {
        tracing::warn!(error = %e, "not ready: blob store");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(ErrorBody::new("the blob store does not answer")),
        )
            .into_response();
    }
    let tick = crate::jobs::liveness(&state.metrics, state.config.schedule_tick, domain::now());
    if tick.stalled {
        let age = tick
            .last_tick_at
            .map_or(0, |t| (domain::now() - t).num_seconds());
        tracing::warn!(
            last_tick_age_s = age,
            "not ready: the scheduler stopped ticking"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(ErrorBody::new(format!(
                "the scheduler has not ticked for {age}s (stopped after {}s)",
                tick.stall_after.as_secs()
            ))),
        )
            .into_response();
    }
    axum::Json(Status { status: "ready" }).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_metrics(State(state): State<AppState>, _: Operator) -> Result<Response> {
    Ok(metrics_response(&state))
}

/// The `/metrics` answer (also served unauthenticated on `--metrics-listen`).
pub(crate) fn metrics_response(state: &AppState) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

/// The settings a client needs before it acts: upload limits, the online
/// window and the default tier (operator only: nothing here is secret, but
/// nothing here is anyone else's business either).
#[utoipa::path(get, path = "/admin/config", tag = "operations",
    responses((status = 200, body = ServerConfigView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_server_config(
    State(state): State<AppState>,
    Operator((), session): Operator<(), Session>,
) -> Result<Json<ServerConfigView>> {
    let config = &state.config;
    let (role, team_root) = session
        .operator_role()
        .expect("BUG: the Operator rule admits operators only");
    Ok(Json(ServerConfigView {
        max_file_bytes: config.limits.max_file_size,
        max_request_bytes: config.limits.max_request_size,
        offline_after_seconds: config.offline_after.as_secs(),
        default_tier: config.default_tier,
        role: role.as_str().to_owned(),
        team_root,
    }))
}

/// Staging statistics.
#[utoipa::path(get, path = "/admin/pending-uploads/stats", tag = "operations",
    responses((status = 200, body = UploadStatsView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_upload_stats(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<UploadStatsView>> {
    let now = domain::now();
    let s = state.store.upload_stats(now).await?;
    Ok(Json(UploadStatsView {
        pending: s.pending,
        fetched_not_acked: s.fetched_not_acked,
        acked: s.acked,
        expired: s.expired,
        bytes_pending: s.bytes_pending,
        oldest_pending_age_s: s
            .oldest_pending_at
            .map_or(0, |t| (now - t).num_seconds().max(0)),
    }))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_upload_stats))
        .routes(routes!(get_server_config))
        .routes(routes!(get_metrics))
        .routes(routes!(health))
        .routes(routes!(ready))
}
