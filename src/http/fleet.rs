//! The operator's stream of the whole fleet (`GET /admin/activity/events`):
//! which workspace has a new activity row, so a page reads only the one
//! that changed instead of polling every workspace's activity in turn.

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::Operator;
use super::auth::Session;
use super::{AppState, ErrorBody, Result};
use crate::domain::WorkspaceId;
use crate::events::Event;

/// A new activity row of some workspace, on the fleet's stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct FleetActivity {
    /// The workspace.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// The row's id: read it (and any before it) with
    /// `GET /workspaces/{id}/activity?since_id=`.
    pub id: i64,
}

/// Server-Sent Events for the operator's view of the whole fleet: `event:
/// activity` with `{workspace_id, id}` for every committed activity row of
/// any workspace, `event: read` when this token's read positions moved
/// (another page of the same reader read a chat: re-read
/// `GET /admin/read-state`), and `event: resync` when rows may have been missed (a
/// lagging reader, a lost database listener): re-read then. One stream in
/// place of reading every workspace's activity in turn to find what is
/// new (unread counts, notifications). Operator only; ends at shutdown,
/// or when its token is revoked.
#[utoipa::path(get, path = "/admin/activity/events", tag = "messages",
    responses((status = 200, description = "text/event-stream of `activity` (FleetActivity), `read` and `resync`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn stream_fleet_activity(
    State(state): State<AppState>,
    Operator((), session): Operator<(), Session>,
) -> Result<Sse<impl futures::Stream<Item = std::result::Result<SseEvent, Infallible>>>> {
    let me = session.reader();
    Ok(super::stream::operator_feed(
        &state,
        session,
        move |event| match event {
            Event::Activity { workspace_id, id } => SseEvent::default()
                .event("activity")
                .json_data(FleetActivity { workspace_id, id })
                .ok(),
            // Only this reader's own positions: another's are not news here.
            Event::ReadMoved { reader } if Some(&reader) == me.as_ref() => {
                Some(SseEvent::default().event("read").data("{}"))
            }
            _ => None,
        },
    ))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_fleet_activity))
}
