//! The lifecycle of a workspace: pause, resume, restart (operator), and the
//! state an agent polls between heartbeats to learn that it was paused or
//! deleted (Molecule's SDK exits its run loop on either).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{KnownWorkspace, Operator, SelfOrOperatorEvenRemoved};
use super::extract::WorkspacePath;
use super::workspaces::{record_event, WorkspaceView};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::{self, InboxItem, WorkspaceId, WorkspaceStatus};
use crate::events::Event;

/// `GET /workspaces/:id/state` answer for a workspace that exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct WorkspaceState {
    /// The workspace id.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// Its status.
    pub status: WorkspaceStatus,
    /// True while paused.
    pub paused: bool,
    /// Always false here; a deleted workspace answers 404 `{"deleted": true}`.
    pub deleted: bool,
}

/// `{"deleted": true}`: the 404 of a deleted workspace's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct DeletedState {
    /// Always true.
    pub deleted: bool,
}

/// Pauses a workspace: its status says `paused`; messages and files are
/// still staged for it (nothing is refused or lost), but nothing is
/// delivered: its agent's own inbox poll answers no rows (a long poll is
/// held) and a push workspace is not called, until Resume.
#[utoipa::path(post, path = "/workspaces/{id}/pause", tag = "lifecycle",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn pause_workspace(
    State(state): State<AppState>,
    Operator(WorkspacePath(id), _): Operator<WorkspacePath>,
) -> Result<Json<WorkspaceView>> {
    set_paused(&state, id, true).await
}

/// Resumes a paused workspace: its status is online or offline again, by
/// its heartbeat, and its agent's held polls read what waited, in order.
#[utoipa::path(post, path = "/workspaces/{id}/resume", tag = "lifecycle",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn resume_workspace(
    State(state): State<AppState>,
    Operator(WorkspacePath(id), _): Operator<WorkspacePath>,
) -> Result<Json<WorkspaceView>> {
    set_paused(&state, id, false).await
}

async fn set_paused(
    state: &AppState,
    id: WorkspaceId,
    paused: bool,
) -> Result<Json<WorkspaceView>> {
    let w = state
        .store
        .set_paused(id, paused, domain::now())
        .await?
        .ok_or_else(Error::workspace_not_found)?;
    let event = if paused {
        "workspace.paused"
    } else {
        "workspace.resumed"
    };
    record_event(state, event, id, w.parent_id).await;
    if !paused {
        state.bus.publish(Event::Resumed { workspace_id: id }).await;
    }
    Ok(Json(WorkspaceView::load(state, w).await?))
}

/// Asks the agent to restart: writes a `restart_requested` activity row
/// (which its inbox poll sees) and resets `active_tasks` to 0.
#[utoipa::path(post, path = "/workspaces/{id}/restart", tag = "lifecycle",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 202, body = WorkspaceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn restart_workspace(
    State(state): State<AppState>,
    Operator(WorkspacePath(id), _): Operator<WorkspacePath>,
) -> Result<(StatusCode, Json<WorkspaceView>)> {
    let row = InboxItem::RestartRequested.row();
    let (w, activity) = state
        .store
        .request_restart(id, &row, domain::now())
        .await?
        .ok_or_else(Error::workspace_not_found)?;
    state
        .bus
        .publish(Event::Activity {
            workspace_id: id,
            id: activity.id,
        })
        .await;
    record_event(&state, "workspace.restart_requested", id, w.parent_id).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(WorkspaceView::load(&state, w).await?),
    ))
}

/// What an agent polls between heartbeats: `200 {workspace_id, status,
/// paused, deleted: false}` while the workspace exists (a live workspace
/// never answers 404 here), `404 {"deleted": true}` once it was deleted,
/// for as long as the server remembers it. The workspace's own token
/// (also the one revoked by the delete) or the operator's.
#[utoipa::path(get, path = "/workspaces/{id}/state", tag = "lifecycle",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceState), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = DeletedState)))]
pub(super) async fn get_workspace_state(
    State(state): State<AppState>,
    KnownWorkspace {
        row: w,
        rule: SelfOrOperatorEvenRemoved(id),
    }: KnownWorkspace<SelfOrOperatorEvenRemoved>,
) -> Result<Response> {
    if !w.is_live() {
        return Ok((StatusCode::NOT_FOUND, Json(DeletedState { deleted: true })).into_response());
    }
    let status = w
        .liveness()
        .status(domain::now(), state.config.offline_after);
    Ok(Json(WorkspaceState {
        workspace_id: id,
        status,
        paused: w.paused_at.is_some(),
        deleted: false,
    })
    .into_response())
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pause_workspace))
        .routes(routes!(resume_workspace))
        .routes(routes!(restart_workspace))
        .routes(routes!(get_workspace_state))
}
