//! The canvas's live feed: `GET /workspaces/:id/events`, Server-Sent
//! Events for each new activity row, each staged-file state change and each
//! delegation and approval move of one workspace, replayed from a cursor and then
//! followed on the event bus until the token is revoked or the workspace
//! deleted.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{known_workspace, Operator};
use super::activity::{still_allowed, ActivityView, MAX_LIMIT};
use super::auth::Session;
use super::extract::{Query, WorkspacePath};
use super::{AppState, ErrorBody, Result};
use crate::domain::WorkspaceId;
use crate::events::Event;
use crate::store::{ActivityPage, ActivityQuery};

/// Query of the SSE stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct EventParams {
    /// Also replay activity rows after this id before following live.
    pub since_id: Option<i64>,
}

struct SseCursor {
    state: AppState,
    session: Session,
    id: WorkspaceId,
    events: tokio::sync::broadcast::Receiver<Event>,
    cursor: Option<i64>,
    ready: VecDeque<SseEvent>,
}

impl SseCursor {
    async fn read_after_cursor(&mut self) {
        let Some(since_id) = self.cursor else { return };
        let query = ActivityQuery {
            since_id,
            activity_type: None,
            source_id: None,
            before: None,
            limit: MAX_LIMIT,
        };
        match self.state.store.list_activity(self.id, &query).await {
            Ok(ActivityPage::Rows(rows)) => {
                for row in rows {
                    self.cursor = Some(row.id);
                    let id = row.id;
                    let view = ActivityView::from(row);
                    if let Ok(ev) = SseEvent::default()
                        .event("activity")
                        .id(id.to_string())
                        .json_data(&view)
                    {
                        self.ready.push_back(ev);
                    }
                }
            }
            Ok(ActivityPage::CursorExpired { swept_through }) => self.cursor = Some(swept_through),
            Err(e) => {
                tracing::warn!(error = %e, workspace_id = %self.id, "SSE stream could not read activity")
            }
        }
    }

    /// Turns one bus event into zero or more queued SSE events; `false`
    /// ends the stream (the bus closed, the token was revoked or the
    /// workspace deleted: a reconnect then gets its 401 or 404).
    async fn handle(&mut self, event: std::result::Result<Event, RecvError>) -> bool {
        match event {
            Ok(Event::Activity { workspace_id, id }) if workspace_id == self.id => {
                if self.cursor.is_none() {
                    self.cursor = Some(id - 1);
                }
                self.read_after_cursor().await;
            }
            Ok(Event::Upload {
                workspace_id,
                file_id,
                state,
            }) if workspace_id == self.id => {
                let body = json!({"file_id": file_id, "state": state});
                if let Ok(ev) = SseEvent::default().event("upload").json_data(body) {
                    self.ready.push_back(ev);
                }
            }
            Ok(Event::Delegation(moved)) if moved.concerns(self.id) => {
                if let Ok(ev) = SseEvent::default().event("delegation").json_data(&moved) {
                    self.ready.push_back(ev);
                }
            }
            Ok(Event::Approval(moved)) if moved.concerns(self.id) => {
                if let Ok(ev) = SseEvent::default().event("approval").json_data(&moved) {
                    self.ready.push_back(ev);
                }
            }
            Ok(Event::Revoked { .. } | Event::OperatorRevoked) => {
                return still_allowed(&self.state, &mut self.session, self.id)
                    .await
                    .is_ok();
            }
            Ok(Event::Resync) | Err(RecvError::Lagged(_)) => {
                if still_allowed(&self.state, &mut self.session, self.id)
                    .await
                    .is_err()
                {
                    return false;
                }
                self.read_after_cursor().await;
            }
            Ok(_) => {}
            Err(RecvError::Closed) => return false,
        }
        true
    }

    /// The next SSE event, or `None` when the stream ends.
    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Some(ev);
            }
            let event = tokio::select! {
                _ = self.state.shutdown.cancelled() => return None,
                event = self.events.recv() => event,
            };
            if !self.handle(event).await {
                return None;
            }
        }
    }
}

/// Server-Sent Events: each new activity row (`event: activity`), each
/// staged-file state change (`event: upload`) of the workspace, and each
/// move of a delegation it made or received (`event: delegation`). The
/// stream ends when its token is revoked or the workspace is deleted.
#[utoipa::path(get, path = "/workspaces/{id}/events", tag = "messages",
    params(("id" = String, Path, description = "workspace id"), EventParams),
    responses((status = 200, description = "text/event-stream"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn stream_events(
    State(state): State<AppState>,
    Operator(WorkspacePath(id), session): Operator<WorkspacePath, Session>,
    Query(params): Query<EventParams>,
) -> Result<Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>>> {
    known_workspace(&state, id).await?;
    let mut cursor = SseCursor {
        events: state.bus.subscribe_workspace(id),
        state,
        session,
        id,
        cursor: params.since_id,
        ready: VecDeque::new(),
    };
    // Subscribed first, then replayed: nothing falls between the two.
    cursor.read_after_cursor().await;
    let stream = futures::stream::unfold(cursor, |mut s| async move {
        let ev = s.next_event().await?;
        Some((Ok(ev), s))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_events))
}

/// `stream` until the token of `session` is revoked (on any replica),
/// then its end: a response held open never outlives its credential. A
/// reconnect with the revoked token gets its 401.
pub(super) fn cut_on_revocation<S: Stream + Send>(
    state: &AppState,
    session: Session,
    stream: S,
) -> impl Stream<Item = S::Item> + Send {
    stream.take_until(Box::pin(session.revoked(state.clone())))
}

/// An operator's fleet-wide feed of the event bus: each event `pick`
/// names becomes one SSE event, `event: resync` is sent when events may
/// have been missed (a lagging reader, a lost database listener), and the
/// stream ends at shutdown or when the token of `session` is revoked. The
/// global delegation and approval views are this with their own `pick`.
pub(super) fn operator_feed(
    state: &AppState,
    session: Session,
    pick: impl Fn(Event) -> Option<SseEvent> + Send + 'static,
) -> Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>> {
    let events = state.bus.subscribe();
    let shutdown = state.shutdown.clone();
    let stream = futures::stream::unfold(
        (events, shutdown, pick),
        move |(mut events, shutdown, pick)| async move {
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    event = events.recv() => event,
                };
                let sse = match event {
                    Ok(Event::Resync) | Err(RecvError::Lagged(_)) => {
                        Some(SseEvent::default().event("resync").data("{}"))
                    }
                    Ok(event) => pick(event),
                    Err(RecvError::Closed) => return None,
                };
                if let Some(ev) = sse {
                    return Some((Ok(ev), (events, shutdown, pick)));
                }
            }
        },
    );
    Sse::new(cut_on_revocation(state, session, stream))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
