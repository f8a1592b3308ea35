//! The HTTP+SSE transport of MCP 2024-11-05, for clients that still use it:
//! `GET /workspaces/:id/mcp/stream` opens a session whose first event,
//! `endpoint`, names the path to POST messages to
//! (`/workspaces/:id/mcp/messages?sessionId=…`); each answer arrives on the
//! stream as a `message` event. Behind it runs the same `rmcp` server as
//! Streamable HTTP, fed over a channel pair and bound to the workspace for
//! the session's life.
//!
//! A session lives in this process's memory while its stream is open (a
//! load balancer must keep a client on one replica, as for any SSE
//! transport); closing the stream ends it, and its message path answers
//! 404 from then on. Revoking the token that opened it closes the stream
//! (on whichever replica holds it).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use serde::Deserialize;

use super::super::access::{LiveWorkspace, WorkspaceItself};
use super::super::auth::Session as AuthSession;
use super::super::extract::WorkspacePath;
use super::super::stream::cut_on_revocation;
use super::super::{AppState, Error, ErrorBody, Result};
use super::tools::{Bound, MoleculeMcp};
use super::{read_body, token_of, Mcp};
use crate::domain::WorkspaceId;

/// Messages a session buffers towards its server before a POST waits.
const CHANNEL: usize = 64;

/// One open session: whose it is and where its messages go.
struct Session {
    workspace: WorkspaceId,
    to_server: mpsc::Sender<ClientJsonRpcMessage>,
}

/// The open legacy sessions of this process, by session id.
#[derive(Clone, Default)]
pub(super) struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0
            .lock()
            .expect("BUG: the session map's lock is never held across a panic")
    }
}

/// Removes its session when the stream is dropped (the client went away
/// or the server shuts down); the server's input then ends and it stops.
struct Closer {
    sessions: Sessions,
    id: String,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
        tracing::debug!(session_id = %self.id, "legacy MCP session closed");
    }
}

/// Opens a legacy HTTP+SSE session.
#[utoipa::path(get, path = "/workspaces/{id}/mcp/stream", tag = "mcp",
    params(("id" = String, Path, description = "the workspace; the bearer must be its own token")),
    responses((status = 200, description = "text/event-stream: `endpoint` first, then `message` events"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, description = "over the rate limit")))]
pub(super) async fn open_stream(
    State(state): State<AppState>,
    Extension(mcp): Extension<Mcp>,
    ws: LiveWorkspace<WorkspaceItself<WorkspacePath, AuthSession>>,
    req: Request,
) -> Result<Response> {
    if let Some(refused) = token_of(req.headers()).and_then(|t| mcp.admit(&state, &t, b"")) {
        return Ok(refused);
    }
    let workspace = ws.row.id;
    let session_id = uuid::Uuid::new_v4().simple().to_string();
    let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL);
    let (to_client, from_server) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL);
    mcp.sessions.lock().insert(
        session_id.clone(),
        Session {
            workspace,
            to_server,
        },
    );
    let server = MoleculeMcp::bound_to(Bound {
        state: state.clone(),
        workspace,
        checked_live: false,
    });
    let ct = state.shutdown.child_token();
    tokio::spawn(async move {
        match rmcp::service::serve_server_with_ct(server, (to_client, from_client), ct).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => tracing::debug!(error = %e, "legacy MCP session ended before initialize"),
        }
    });
    let endpoint = format!("/workspaces/{workspace}/mcp/messages?sessionId={session_id}");
    let closer = Closer {
        sessions: mcp.sessions.clone(),
        id: session_id,
    };
    // Each message is checked on its own; the stream itself ends when
    // the token that opened it is revoked, and its session with it.
    let events = cut_on_revocation(&state, ws.rule.1, events(endpoint, from_server, closer));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `endpoint`, then every message of the server, until either side ends.
fn events(
    endpoint: String,
    from_server: mpsc::Receiver<ServerJsonRpcMessage>,
    closer: Closer,
) -> impl Stream<Item = std::result::Result<SseEvent, Infallible>> {
    let first =
        futures::stream::once(
            async move { Ok(SseEvent::default().event("endpoint").data(endpoint)) },
        );
    let rest = from_server.filter_map(move |msg| {
        let _keep = &closer;
        let event = match serde_json::to_string(&msg) {
            Ok(json) => Some(Ok(SseEvent::default().event("message").data(json))),
            Err(e) => {
                tracing::error!(error = %e, "BUG: an MCP message did not serialize");
                None
            }
        };
        futures::future::ready(event)
    });
    first.chain(rest)
}

/// `?sessionId=` of the message path.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionParams {
    /// The session the `endpoint` event named.
    pub session_id: String,
}

/// One message of a legacy session; its answer comes on the stream.
#[utoipa::path(post, path = "/workspaces/{id}/mcp/messages", tag = "mcp",
    params(("id" = String, Path, description = "the workspace; the bearer must be its own token"), SessionParams),
    request_body(content = Object, description = "a JSON-RPC 2.0 MCP message", content_type = "application/json"),
    responses((status = 202, description = "accepted; the answer is sent on the stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, description = "over the rate limit")))]
pub(super) async fn post_message(
    State(state): State<AppState>,
    Extension(mcp): Extension<Mcp>,
    ws: LiveWorkspace<WorkspaceItself>,
    params: std::result::Result<Query<SessionParams>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Response> {
    let Query(SessionParams { session_id }) =
        params.map_err(|_| Error::BadRequest("`sessionId` is required".into()))?;
    let token = token_of(req.headers());
    let bytes = read_body(req.into_body()).await?;
    if let Some(refused) = token.and_then(|t| mcp.admit(&state, &t, &bytes)) {
        return Ok(refused);
    }
    let message: ClientJsonRpcMessage = serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadRequest(format!("not an MCP JSON-RPC message: {e}")))?;
    // A session of another workspace is as absent as a closed one.
    let to_server = match mcp.sessions.lock().get(&session_id) {
        Some(s) if s.workspace == ws.row.id => s.to_server.clone(),
        _ => return Err(no_session()),
    };
    let mut to_server = to_server;
    to_server.send(message).await.map_err(|_| no_session())?;
    Ok(StatusCode::ACCEPTED.into_response())
}

fn no_session() -> Error {
    Error::NotFound("no such MCP session; open GET /workspaces/:id/mcp/stream again".into())
}
