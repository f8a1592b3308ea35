//! Messages and the inbox: A2A `message/send`, the agent's replies
//! (`/notify`), reported activity, the long-polled activity log, and the
//! SSE stream the canvas follows.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::access::{
    known_workspace, live_workspace, AsPeer, Calling, Operator, SelfOrOperator, WorkspaceItself,
};
use super::auth::{require_reach, Principal, Session};
use super::extract::{Query, WorkspacePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::team::Caller;
use crate::domain::{self, DeliveryMode, WorkspaceId};
use crate::events::Event;
use crate::store::{Activity, ActivityPage, ActivityQuery, NewActivity};

/// Longest accepted `wait`, in seconds.
pub(crate) const MAX_WAIT_SECS: u64 = 60;
/// Largest accepted `limit`.
pub(super) const MAX_LIMIT: i64 = 500;

/// An activity row as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct ActivityView {
    /// The poll cursor.
    pub id: i64,
    /// Owner.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// `a2a_receive`, `agent_message`, …
    pub activity_type: String,
    /// Discriminator (`message/send`, `chat_upload_receive`, …).
    pub method: Option<String>,
    /// Sender.
    pub source_id: Option<String>,
    /// Recipient.
    pub target_id: Option<String>,
    /// One line for humans.
    pub summary: Option<String>,
    /// The request as received.
    #[schema(value_type = Option<Object>)]
    pub request_body: Option<Value>,
    /// The answer.
    #[schema(value_type = Option<Object>)]
    pub response_body: Option<Value>,
    /// Outcome.
    pub status: Option<String>,
    /// Error text.
    pub error_detail: Option<String>,
    /// Insertion time.
    pub created_at: DateTime<Utc>,
    /// The row made easy to consume.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

impl From<Activity> for ActivityView {
    fn from(a: Activity) -> Self {
        Self {
            id: a.id,
            workspace_id: a.workspace_id,
            activity_type: a.row.activity_type,
            method: a.row.method,
            source_id: a.row.source_id,
            target_id: a.row.target_id,
            summary: a.row.summary,
            request_body: a.row.request_body,
            response_body: a.row.response_body,
            status: a.row.status,
            error_detail: a.row.error_detail,
            created_at: a.created_at,
            data: a.row.data,
        }
    }
}

/// Inserts an activity row and wakes whoever waits for it (long polls,
/// event streams, other replicas), in that order: a waiter woken by the
/// event always finds the row committed.
pub(super) async fn record(
    state: &AppState,
    id: WorkspaceId,
    row: &NewActivity,
) -> Result<Activity> {
    let stored = state.store.insert_activity(id, row, domain::now()).await?;
    state
        .bus
        .publish(Event::Activity {
            workspace_id: id,
            id: stored.id,
        })
        .await;
    Ok(stored)
}

fn summarize(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(120).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// A `message/send` request, normalized: wrapper and ids filled in.
struct MessageSend {
    rpc: Value,
    text: String,
    parts: Value,
    message_id: String,
}

fn normalize_message_send(body: Value) -> Result<MessageSend> {
    let Value::Object(mut obj) = body else {
        return Err(Error::BadRequest(
            "the body must be a JSON object (a JSON-RPC `message/send`)".into(),
        ));
    };
    if let Some(method) = obj.get("method") {
        if method != "message/send" {
            return Err(Error::BadRequest(format!(
                "unsupported method {method}: only \"message/send\" is accepted"
            )));
        }
    }
    let mut params = match obj.remove("params") {
        Some(Value::Object(p)) => p,
        Some(_) => return Err(Error::BadRequest("`params` must be an object".into())),
        // Molecule's canvas may send the params alone.
        None if obj.contains_key("message") => std::mem::take(&mut obj),
        None => return Err(Error::BadRequest("missing `params.message`".into())),
    };
    let Some(Value::Object(message)) = params.get_mut("message") else {
        return Err(Error::BadRequest(
            "`params.message` must be an object".into(),
        ));
    };
    let parts = match message.get("parts") {
        Some(Value::Array(parts)) if !parts.is_empty() => parts.clone(),
        _ => {
            return Err(Error::BadRequest(
                "`params.message.parts` must be a non-empty array".into(),
            ))
        }
    };
    let text = part_texts(&parts)?;
    message.entry("role").or_insert_with(|| json!("user"));
    let message_id = match message.get("messageId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            message.insert("messageId".into(), json!(id));
            id
        }
    };
    let rpc_id = obj
        .get("id")
        .cloned()
        .filter(|v| !v.is_null())
        .unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()));
    let rpc = json!({"jsonrpc": "2.0", "id": rpc_id, "method": "message/send", "params": params});
    Ok(MessageSend {
        rpc,
        text: text.join("\n"),
        parts: Value::Array(parts),
        message_id,
    })
}

/// The text of the `text` parts, after checking every part's shape.
fn part_texts(parts: &[Value]) -> Result<Vec<String>> {
    let mut text = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        match part.get("kind").and_then(Value::as_str) {
            Some("text") => match part.get("text").and_then(Value::as_str) {
                Some(t) => text.push(t.to_owned()),
                None => {
                    return Err(Error::BadRequest(format!(
                        "part {i} is kind \"text\" but has no string `text`"
                    )))
                }
            },
            Some("file") => {
                if !part
                    .get("file")
                    .and_then(|f| f.get("uri"))
                    .is_some_and(Value::is_string)
                {
                    return Err(Error::BadRequest(format!(
                        "part {i} is kind \"file\" but has no `file.uri`"
                    )));
                }
            }
            Some("data") => {}
            _ => {
                return Err(Error::BadRequest(format!(
                    "part {i} needs a `kind` of \"text\", \"file\" or \"data\""
                )))
            }
        }
    }
    Ok(text)
}

/// `{queued, activity_id}`: a message queued for a poll-mode workspace.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Queued {
    /// Always true.
    pub queued: bool,
    /// The inbox row.
    pub activity_id: i64,
}

/// Sends an A2A `message/send` to a workspace: forwarded to a push
/// workspace (its JSON-RPC answer returned), queued in a poll workspace's
/// inbox. With a workspace token it is a peer call: the caller is the
/// token's workspace and the communication rule decides whether it may
/// reach the target (403 otherwise).
#[utoipa::path(post, path = "/workspaces/{id}/a2a", tag = "messages",
    params(("id" = String, Path, description = "workspace id"),
           ("X-Workspace-ID" = Option<String>, Header, description = "the calling workspace (Molecule's SDK); must be the token's workspace"),
           ("X-Source-Workspace-Id" = Option<String>, Header, description = "the calling workspace (molecule's clients); must be the token's workspace")),
    request_body(content = Object, description = "JSON-RPC 2.0 message/send (wrapper and messageId optional)"),
    responses((status = 200, description = "push: the workspace's JSON-RPC answer", body = Object),
        (status = 202, body = Queued), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub(super) async fn send_a2a_message(
    State(state): State<AppState>,
    Calling {
        caller: sender,
        path: WorkspacePath(id),
        ..
    }: Calling<AsPeer, WorkspacePath>,
    Json(body): Json<Value>,
) -> Result<Response> {
    // A peer call: the caller is the token's workspace, which may also name
    // itself in a header; the target must be within its reach.
    let source = sender.workspace();
    let workspace = live_workspace(&state, id).await?;
    if let Some(own) = source {
        let caller = live_workspace(&state, own).await?;
        require_reach(Caller::Workspace(caller.node()), workspace.node())?;
    }
    let msg = normalize_message_send(body)?;
    let row = inbox_row(id, source, &msg);
    // A paused workspace is not called: its messages wait in its inbox
    // (never dropped) and are there when it resumes, whatever its mode.
    let paused = workspace.paused_at.is_some();
    match (workspace.delivery_mode, workspace.url.as_deref()) {
        (DeliveryMode::Push, Some(url)) if !paused => {
            forward_message(&state, id, url, &msg, row).await
        }
        (DeliveryMode::Push, None) if !paused => Err(super::workspaces::push_without_url()),
        _ => queue_message(&state, id, row).await,
    }
}

/// The activity row a message becomes (its status set on delivery).
fn inbox_row(id: WorkspaceId, source: Option<WorkspaceId>, msg: &MessageSend) -> NewActivity {
    let (source_kind, source_id) = match source {
        None => ("canvas_user", None),
        Some(peer) => ("peer_agent", Some(peer.to_string())),
    };
    let data = json!({
        "source": source_kind, "source_id": source_id, "text": msg.text,
        "parts": msg.parts, "message_id": msg.message_id,
    });
    NewActivity {
        activity_type: "a2a_receive".into(),
        method: Some("message/send".into()),
        source_id,
        target_id: Some(id.to_string()),
        summary: Some(summarize(&msg.text)),
        request_body: Some(msg.rpc.clone()),
        data: Some(data),
        ..NewActivity::default()
    }
}

/// Push mode: hands the message to the workspace and returns its answer;
/// the row is written only once the workspace has answered.
async fn forward_message(
    state: &AppState,
    id: WorkspaceId,
    url: &str,
    msg: &MessageSend,
    mut row: NewActivity,
) -> Result<Response> {
    let answer = state
        .http
        .post(url)
        .timeout(state.config.forward_timeout)
        .json(&msg.rpc)
        .send()
        .await;
    let answer = match answer {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()),
        Ok(r) => Err(format!("the workspace answered {}", r.status())),
        Err(e) => Err(e.without_url().to_string()),
    };
    match answer {
        Ok(answer) => {
            row.status = Some("forwarded".into());
            row.response_body = Some(answer.clone());
            record(state, id, &row).await?;
            // The workspace answered: that is contact, as good as a
            // heartbeat (a push agent need not send any).
            state
                .store
                .heartbeat(id, &domain::HeartbeatReport::default(), domain::now())
                .await?;
            Ok(axum::Json(answer).into_response())
        }
        Err(cause) => {
            tracing::warn!(workspace_id = %id, error = %cause, "forwarding a message to a push workspace failed");
            Err(Error::BadGateway(format!(
                "could not deliver the message to the workspace: {cause}"
            )))
        }
    }
}

/// Poll mode: the message waits in the inbox.
async fn queue_message(
    state: &AppState,
    id: WorkspaceId,
    mut row: NewActivity,
) -> Result<Response> {
    row.status = Some("queued".into());
    let stored = record(state, id, &row).await?;
    tracing::info!(workspace_id = %id, activity_id = stored.id, "message queued");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Queued {
            queued: true,
            activity_id: stored.id,
        }),
    )
        .into_response())
}

/// `/notify` body: the agent's message to the canvas user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct Notify {
    /// The text.
    pub message: String,
    /// Files the agent attaches (`{uri, name, mimeType, size}`).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub attachments: Vec<Value>,
}

/// `{status, activity_id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Stored {
    /// Always `ok`.
    pub status: &'static str,
    /// The row written.
    pub activity_id: i64,
}

/// The agent says something to the canvas user.
#[utoipa::path(post, path = "/workspaces/{id}/notify", tag = "messages",
    params(("id" = String, Path, description = "workspace id")),
    request_body = Notify,
    responses((status = 200, body = Stored), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn notify_operator(
    State(state): State<AppState>,
    WorkspaceItself(WorkspacePath(id), _): WorkspaceItself,
    Json(body): Json<Notify>,
) -> Result<Json<Stored>> {
    if body
        .attachments
        .iter()
        .any(|a| !a.get("uri").is_some_and(Value::is_string))
    {
        return Err(Error::BadRequest(
            "every attachment needs a string `uri`".into(),
        ));
    }
    let row = NewActivity {
        activity_type: "agent_message".into(),
        method: Some("notify".into()),
        source_id: Some(id.to_string()),
        summary: Some(summarize(&body.message)),
        request_body: Some(json!({"message": body.message, "attachments": body.attachments})),
        data: Some(
            json!({"source": "agent", "text": body.message, "attachments": body.attachments}),
        ),
        ..NewActivity::default()
    };
    let stored = record(&state, id, &row).await?;
    Ok(Json(Stored {
        status: "ok",
        activity_id: stored.id,
    }))
}

/// An activity row reported by the agent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct NewActivityReport {
    /// Type (1–100 characters).
    pub activity_type: String,
    /// Discriminator.
    pub method: Option<String>,
    /// One line for humans.
    pub summary: Option<String>,
    /// Sender.
    pub source_id: Option<String>,
    /// Recipient.
    pub target_id: Option<String>,
    /// Outcome.
    pub status: Option<String>,
    /// Error text.
    pub error_detail: Option<String>,
    /// Request payload.
    #[schema(value_type = Option<Object>)]
    pub request_body: Option<Value>,
    /// Response payload.
    #[schema(value_type = Option<Object>)]
    pub response_body: Option<Value>,
}

/// `{id}` of a created row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CreatedId {
    /// The new row's id.
    pub id: i64,
}

/// The agent reports an activity row.
#[utoipa::path(post, path = "/workspaces/{id}/activity", tag = "messages",
    params(("id" = String, Path, description = "workspace id")),
    request_body = NewActivityReport,
    responses((status = 201, body = CreatedId), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn report_activity(
    State(state): State<AppState>,
    WorkspaceItself(WorkspacePath(id), _): WorkspaceItself,
    Json(body): Json<NewActivityReport>,
) -> Result<(StatusCode, Json<CreatedId>)> {
    let ty = body.activity_type.trim();
    if ty.is_empty() || ty.chars().count() > 100 {
        return Err(Error::BadRequest(
            "`activity_type` must be 1 to 100 characters".into(),
        ));
    }
    let row = NewActivity {
        activity_type: ty.to_owned(),
        method: body.method,
        source_id: body.source_id,
        target_id: body.target_id,
        summary: body.summary,
        request_body: body.request_body,
        response_body: body.response_body,
        status: body.status,
        error_detail: body.error_detail,
        data: None,
    };
    let stored = record(&state, id, &row).await?;
    Ok((StatusCode::CREATED, Json(CreatedId { id: stored.id })))
}

/// Query of `GET /workspaces/:id/activity`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct ActivityParams {
    /// Only rows of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub activity_type: Option<String>,
    /// Only rows after this id.
    pub since_id: Option<i64>,
    /// At most this many rows (1–500, default 100).
    pub limit: Option<i64>,
    /// Seconds to hold the request when nothing matches (0–60).
    pub wait: Option<u64>,
    /// Only rows sent by this workspace (`source_id` equals it).
    pub peer_id: Option<String>,
    /// Only rows created strictly before this RFC 3339 instant.
    pub before_ts: Option<String>,
}

/// Parses `before_ts`, rounding sub-microsecond digits up: rows keep
/// microseconds, and "strictly before 1.5 µs" includes a row at 1 µs.
fn parse_before_ts(raw: &str) -> Result<DateTime<Utc>> {
    use chrono::SubsecRound;
    // An unencoded `+` in a query string arrives as a space.
    let parsed = DateTime::parse_from_rfc3339(raw)
        .or_else(|e| DateTime::parse_from_rfc3339(&raw.replace(' ', "+")).map_err(|_| e))
        .map_err(|e| {
            Error::BadRequest(format!(
                "`before_ts` must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z ({e})"
            ))
        })?
        .with_timezone(&Utc);
    let truncated = parsed.trunc_subsecs(6);
    Ok(if truncated < parsed {
        truncated + chrono::Duration::microseconds(1)
    } else {
        truncated
    })
}

impl ActivityParams {
    /// The store query and how long to hold the request, or the 400.
    fn into_query(self) -> Result<(ActivityQuery, Duration)> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::BadRequest(format!(
                "`limit` must be between 1 and {MAX_LIMIT}"
            )));
        }
        let wait = self.wait.unwrap_or(0);
        if wait > MAX_WAIT_SECS {
            return Err(Error::BadRequest(format!(
                "`wait` must be between 0 and {MAX_WAIT_SECS} seconds"
            )));
        }
        let since_id = self.since_id.unwrap_or(0);
        if since_id < 0 {
            return Err(Error::BadRequest("`since_id` must not be negative".into()));
        }
        let source_id = self
            .peer_id
            .as_deref()
            .map(|raw| {
                raw.parse::<WorkspaceId>()
                    .map(|p| p.to_string())
                    .map_err(|e| {
                        Error::BadRequest(format!("`peer_id` must be a workspace id: {e}"))
                    })
            })
            .transpose()?;
        let before = self.before_ts.as_deref().map(parse_before_ts).transpose()?;
        // The long poll re-reads with this same query, so a row that does
        // not match the filters wakes it but is never answered.
        let query = ActivityQuery {
            since_id,
            activity_type: self.activity_type,
            source_id,
            before,
            limit,
        };
        Ok((query, Duration::from_secs(wait)))
    }
}

/// One page of the inbox, or the 410 of a cursor the sweep passed.
async fn read_page(
    state: &AppState,
    id: WorkspaceId,
    query: &ActivityQuery,
) -> Result<Vec<ActivityView>> {
    match state.store.list_activity(id, query).await? {
        ActivityPage::Rows(rows) => Ok(rows.into_iter().map(ActivityView::from).collect()),
        ActivityPage::CursorExpired { swept_through } => Err(Error::Gone {
            message: format!(
                "rows after since_id={} were removed by the retention sweep (through id {swept_through}); restart from since_id={swept_through}",
                query.since_id
            ),
            restart_since_id: swept_through,
        }),
    }
}

/// Ends a held request whose token was revoked (401) or whose workspace
/// was deleted (404) while it waited. Costs nothing unless a revocation
/// happened since the token was last checked.
async fn still_allowed(state: &AppState, session: &mut Session, id: WorkspaceId) -> Result<()> {
    if session.may_be_revoked(state) {
        session.recheck(state).await?;
        live_workspace(state, id).await?;
    }
    Ok(())
}

/// The inbox: rows after `since_id`, oldest first; with `wait`, a long
/// poll that answers as soon as a row arrives, and with 401 as soon as its
/// token is revoked.
#[utoipa::path(get, path = "/workspaces/{id}/activity", tag = "messages",
    params(("id" = String, Path, description = "workspace id"), ActivityParams),
    responses((status = 200, body = [ActivityView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub(super) async fn list_activity(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), mut session): SelfOrOperator<WorkspacePath, Session>,
    Query(params): Query<ActivityParams>,
) -> Result<Json<Vec<ActivityView>>> {
    let (query, wait) = params.into_query()?;
    known_workspace(&state, id).await?;
    let deadline = tokio::time::Instant::now() + wait;
    // Watch before each read: a row committed (or a token revoked)
    // between the read and the wait still wakes us.
    let mut wakeups = state.bus.watch_activity(id);
    loop {
        wakeups.borrow_and_update();
        still_allowed(&state, &mut session, id).await?;
        let rows = read_page(&state, id, &query).await?;
        if !rows.is_empty() || tokio::time::Instant::now() >= deadline {
            mark_picked_up(&state, &session.principal, id, &query, &rows).await?;
            return Ok(Json(rows));
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(Vec::new())),
            _ = state.shutdown.cancelled() => return Ok(Json(Vec::new())),
            changed = wakeups.changed() => {
                if changed.is_err() {
                    return Ok(Json(Vec::new()));
                }
            }
        }
    }
}

/// Records that the agent picked its messages up: only its own poll counts
/// (the operator reading the inbox proves nothing), and only an unfiltered
/// one or one for messages (`type=a2a_receive`, any source): then every
/// message up to the last row returned has reached the agent.
async fn mark_picked_up(
    state: &AppState,
    principal: &Principal,
    id: WorkspaceId,
    query: &ActivityQuery,
    rows: &[ActivityView],
) -> Result<()> {
    let own = matches!(principal, Principal::Workspace(w) if *w == id);
    let every_message = query.source_id.is_none()
        && query.before.is_none()
        && matches!(query.activity_type.as_deref(), None | Some("a2a_receive"));
    if let (true, true, Some(last)) = (own, every_message, rows.last()) {
        state.store.mark_inbox_picked_up(id, last.id).await?;
    }
    Ok(())
}

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
            Ok(Event::Revoked { .. }) => {
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
        events: state.bus.subscribe(),
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
