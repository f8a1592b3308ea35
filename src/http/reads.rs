//! Read state of the chats, kept by the server per reader: the admin
//! token is one reader, each operator token another (a viewer's reading
//! never marks the admin's chats read, and it can only ever move its own
//! positions: the reader is the token, never a field of the request). The
//! canvas reads its unread counts from here and writes what the operator
//! saw, so two browsers of one reader agree; the fleet stream tells the
//! reader's other pages (`event: read`).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{LiveWorkspace, Operator};
use super::auth::Session;
use super::extract::WorkspacePath;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::{self, WorkspaceId};
use crate::events::Event;
use crate::store::{ReadMoved, ReadPosition};

/// How far the caller has read one workspace's chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ReadPositionView {
    /// The workspace.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// The newest activity row id the caller has seen (0: none).
    pub last_read_id: i64,
    /// The workspace's newest activity row id (0: none).
    pub newest_id: i64,
    /// The agent's messages after `last_read_id`.
    pub unread: i64,
}

impl From<ReadPosition> for ReadPositionView {
    fn from(p: ReadPosition) -> Self {
        Self {
            workspace_id: p.workspace_id,
            last_read_id: p.last_read_id,
            newest_id: p.newest_id,
            unread: p.unread,
        }
    }
}

/// `PUT /workspaces/:id/read-state` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MarkRead {
    /// The newest activity row id seen (0 up to the workspace's newest).
    /// A position never moves back: a lower id leaves it where it is.
    pub last_read_id: i64,
}

/// The caller's reader key; every operator session has one.
fn reader_of(session: &Session) -> Result<String> {
    session.reader().ok_or(Error::Forbidden)
}

/// Tells the reader's other pages that its positions moved.
async fn announce(state: &AppState, reader: String) {
    state.bus.publish(Event::ReadMoved { reader }).await;
}

/// The caller's read position and unread count in every live workspace.
#[utoipa::path(get, path = "/admin/read-state", tag = "messages",
    responses((status = 200, body = [ReadPositionView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn list_read_state(
    State(state): State<AppState>,
    Operator((), session): Operator<(), Session>,
) -> Result<Json<Vec<ReadPositionView>>> {
    let reader = reader_of(&session)?;
    let rows = state.store.read_positions(&reader, None).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// Moves the caller's read position in one workspace's chat forward.
#[utoipa::path(put, path = "/workspaces/{id}/read-state", tag = "messages",
    params(("id" = String, Path, description = "workspace id")),
    request_body = MarkRead,
    responses((status = 200, body = ReadPositionView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn mark_read(
    State(state): State<AppState>,
    ws: LiveWorkspace<Operator<WorkspacePath, Session>>,
    Json(body): Json<MarkRead>,
) -> Result<Json<ReadPositionView>> {
    let reader = reader_of(&ws.rule.1)?;
    if body.last_read_id < 0 {
        return Err(Error::Unprocessable(format!(
            "last_read_id must be 0 or more, not {}",
            body.last_read_id
        )));
    }
    let moved = state
        .store
        .mark_read(&reader, ws.row.id, body.last_read_id, domain::now())
        .await?;
    match moved {
        ReadMoved::Done(position) => {
            announce(&state, reader).await;
            Ok(Json(position.into()))
        }
        ReadMoved::PastNewest(newest) => Err(Error::Unprocessable(format!(
            "last_read_id {} is past the workspace's newest activity row ({newest})",
            body.last_read_id
        ))),
    }
}

/// Marks every live workspace's chat read up to its newest row, for the
/// caller; answers the positions as they are now.
#[utoipa::path(post, path = "/admin/read-state/mark-all", tag = "messages",
    responses((status = 200, body = [ReadPositionView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn mark_all_read(
    State(state): State<AppState>,
    Operator((), session): Operator<(), Session>,
) -> Result<Json<Vec<ReadPositionView>>> {
    let reader = reader_of(&session)?;
    let moved = state.store.mark_all_read(&reader, domain::now()).await?;
    if moved > 0 {
        announce(&state, reader.clone()).await;
    }
    let rows = state.store.read_positions(&reader, None).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_read_state))
        .routes(routes!(mark_read))
        .routes(routes!(mark_all_read))
}
