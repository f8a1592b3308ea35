//! A2A streaming (`SendStreamingMessage` and `SubscribeToTask`): Server-Sent
//! Events, each one a JSON-RPC response whose `result` is the task first,
//! then an artifact update and a status update for each move of its ledger
//! row (and each time its agent starts or stops waiting on an approval:
//! `input-required`), read off the event bus (which announces every move). The stream
//! ends when the task does (completed, failed or canceled), when the
//! caller's token is revoked, or with the server: a client that lost it resubscribes, or calls `GetTask` when the
//! task ended meanwhile (the ledger row holds its final state).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};

use super::auth::Session;
use super::AppState;
use crate::a2a::jsonrpc;
use crate::a2a::tasks::{self, TaskState};
use crate::a2a::Dialect;
use crate::domain::WorkspaceId;
use crate::events::Event;
use crate::store::A2aTask;

/// One task's stream being served.
struct TaskStream {
    state: AppState,
    /// The request's JSON-RPC id, repeated on every event.
    rpc_id: Value,
    dialect: Dialect,
    /// The agent the task was sent to.
    callee: WorkspaceId,
    /// Subscribed before the task was read, so no move falls between.
    events: broadcast::Receiver<Event>,
    /// The task as last sent.
    last: A2aTask,
    /// Results to send before waiting for the next move.
    ready: VecDeque<Value>,
}

impl TaskStream {
    /// The next result, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(v) = self.ready.pop_front() {
                return Some(v);
            }
            if TaskState::of(&self.last).is_terminal() {
                return None;
            }
            let event = tokio::select! {
                _ = self.state.shutdown.cancelled() => return None,
                event = self.events.recv() => event,
            };
            let tid = self.last.delegation.id;
            match event {
                Ok(Event::Delegation(m)) if m.delegation_id == tid => {}
                // An approval request of its agent may name the task
                // (input-required), or a decision end that wait.
                Ok(Event::Approval(m)) if m.workspace_id == self.callee => {}
                // Moves may have been missed: read the row again.
                Ok(Event::Resync) | Err(RecvError::Lagged(_)) => {}
                Ok(_) => continue,
                Err(RecvError::Closed) => return None,
            }
            let now = match self.state.store.get_a2a_task(self.callee, tid).await {
                Ok(Some(t)) => t,
                // Gone (its callee deleted) or unreadable: the client's
                // GetTask tells it what is left.
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(task_id = %tid, error = %e, "reading a streamed A2A task failed");
                    return None;
                }
            };
            // A heartbeat or a repeat moves nothing a client sees.
            if TaskState::of(&now) != TaskState::of(&self.last)
                || now.delegation.result_preview != self.last.delegation.result_preview
            {
                self.ready.extend(tasks::stream_moves(&now, self.dialect));
            }
            self.last = now;
        }
    }
}

/// The SSE answer streaming `task` (just read, after `events` subscribed).
pub(super) fn respond(
    state: &AppState,
    session: Session,
    rpc_id: Value,
    dialect: Dialect,
    task: A2aTask,
    events: broadcast::Receiver<Event>,
) -> Response {
    let first = tasks::stream_task(&task, dialect);
    let stream = TaskStream {
        state: state.clone(),
        rpc_id,
        dialect,
        callee: task.delegation.callee_id,
        events,
        last: task,
        ready: VecDeque::from([first]),
    };
    let events = futures::stream::unfold(stream, |mut s| async move {
        let result = s.next().await?;
        let body = jsonrpc::envelope(&s.rpc_id, Ok(result));
        let ev = SseEvent::default().data(body.to_string());
        Some((Ok::<_, Infallible>(ev), s))
    });
    Sse::new(super::stream::cut_on_revocation(state, session, events))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
