//! Messages: A2A `message/send` to a workspace (forwarded to a push
//! workspace, queued in a poll workspace's inbox) and the agent's replies
//! to the operator (`/notify`). The rows they write are
//! [`crate::domain::inbox`] items.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{live_workspace, AsPeer, Calling, WorkspaceItself};
use super::activity::record;
use super::auth::{require_reach, Session};
use super::extract::WorkspacePath;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::inbox::{self, AgentMessage, InboxItem, Message, Sender};
use crate::domain::team::Caller;
use crate::domain::{self, DeliveryMode, WorkspaceId};
use crate::store::{HopSpan, NewActivity};

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
        if !inbox::is_message_send(method) {
            return Err(Error::BadRequest(format!(
                "unsupported method {method}: only {:?} is accepted",
                inbox::MESSAGE_SEND
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
    let rpc = inbox::message_send_rpc(rpc_id, Value::Object(params));
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

/// Every `file` part naming a staged file (`platform-pending:<ws>/<fid>`)
/// must name one staged for this workspace (fetched or acked is fine: the
/// agent may already have it). Another workspace's file and an unknown id
/// get the same 422, before anything is stored or forwarded.
async fn check_attachments(state: &AppState, id: WorkspaceId, parts: &Value) -> Result<()> {
    let files = parts
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.get("kind").and_then(Value::as_str) == Some("file"))
        .filter_map(|p| p.pointer("/file/uri").and_then(Value::as_str));
    for uri in files.filter(|u| u.starts_with("platform-pending:")) {
        let staged = match domain::parse_pending_uri(uri) {
            // A file the agent sent the user is never the agent's to fetch.
            Some((ws, fid)) if ws == id => state
                .store
                .find_upload(id, fid)
                .await?
                .filter(|f| !f.to_user),
            _ => None,
        };
        if staged.is_none() {
            return Err(Error::Unprocessable(format!(
                "the message names {uri}, which is not a file staged for this workspace; \
                 upload it first (POST /workspaces/{id}/chat/uploads?attach=true) and name the URI it answers"
            )));
        }
    }
    Ok(())
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
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub(super) async fn send_a2a_message(
    State(state): State<AppState>,
    Calling {
        caller: sender,
        path: WorkspacePath(id),
        ..
    }: Calling<AsPeer, WorkspacePath>,
    session: Session,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response> {
    // A peer call: the caller is the token's workspace, which may also name
    // itself in a header; the target must be within its reach.
    let source = sender.workspace();
    let workspace = live_workspace(&state, id).await?;
    if let Some(own) = source {
        let caller = live_workspace(&state, own).await?;
        let from = Caller::Workspace(super::auth::node_of(&state, &caller).await?);
        require_reach(&from, &super::auth::node_of(&state, &workspace).await?)?;
    }
    // New work for a workspace whose budget is spent: 402, nothing
    // queued or forwarded. Reads of tasks go on.
    if starts_work(&body) {
        super::usage::require_budget(&state, id).await?;
    }
    if super::a2a::is_a2a(&headers, &body) {
        return super::a2a::rpc(&state, sender, session, id, &headers, body).await;
    }
    let msg = normalize_message_send(body)?;
    check_attachments(&state, id, &msg.parts).await?;
    let hop = domain::Hop::open(super::traces::incoming(&headers));
    let row = inbox_row(id, source, &msg, hop.context);
    let sent = Sent {
        id,
        hop,
        caller: source.map_or_else(|| "operator".to_owned(), |s| s.to_string()),
    };
    // A paused workspace is not called: its messages wait in its inbox
    // (never dropped) and are there when it resumes, whatever its mode.
    let paused = workspace.paused_at.is_some();
    match (workspace.delivery_mode, workspace.url.as_deref()) {
        (DeliveryMode::Push, Some(url)) if !paused => {
            forward_message(&state, &sent, url, &msg, row).await
        }
        (DeliveryMode::Push, None) if !paused => Err(super::workspaces::push_without_url()),
        _ => queue_message(&state, &sent, row).await,
    }
}

/// Whether a request to `/a2a` hands the workspace new work: Molecule's
/// bare `message/send` (no method) or an A2A send of either version.
fn starts_work(body: &Value) -> bool {
    match body.get("method").and_then(Value::as_str) {
        None => true,
        Some(name) => matches!(
            crate::a2a::jsonrpc::Method::parse(name),
            Some((
                crate::a2a::jsonrpc::Method::SendMessage
                    | crate::a2a::jsonrpc::Method::SendStreamingMessage,
                _
            ))
        ),
    }
}

/// A message on its way: to whom, its hop in the trace, from whom.
struct Sent {
    id: WorkspaceId,
    hop: domain::Hop,
    caller: String,
}

impl Sent {
    /// Writes the message's row with its hop's span (one transaction),
    /// then wakes whoever waits for the row, as [`record`] does.
    async fn record(
        &self,
        state: &AppState,
        row: &NewActivity,
        start: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::store::Activity> {
        let now = domain::now();
        let span = HopSpan {
            hop: &self.hop,
            workspace_id: self.id,
            caller: self.caller.clone(),
            name: "message",
            delegation_id: None,
            status: row.status.as_deref().unwrap_or("queued"),
            ended_at: Some(now),
        };
        let stored = state
            .store
            .insert_traced_activity(self.id, row, &span, start, now)
            .await?;
        let event = crate::events::Event::Activity {
            workspace_id: self.id,
            id: stored.id,
        };
        state.bus.publish(event).await;
        Ok(stored)
    }
}

/// The activity row a message becomes (its status set on delivery).
fn inbox_row(
    id: WorkspaceId,
    source: Option<WorkspaceId>,
    msg: &MessageSend,
    traceparent: domain::TraceParent,
) -> NewActivity {
    let item = InboxItem::Message(Message {
        sender: Some(source.map_or(Sender::Operator, Sender::Peer)),
        to: Some(id),
        text: msg.text.clone(),
        parts: msg.parts.clone(),
        message_id: Some(msg.message_id.clone()),
        rpc: Some(msg.rpc.clone()),
        traceparent: Some(traceparent),
    });
    item.row()
}

/// Push mode: hands the message to the workspace and returns its answer;
/// the row is written only once the workspace has answered.
async fn forward_message(
    state: &AppState,
    sent: &Sent,
    url: &str,
    msg: &MessageSend,
    mut row: NewActivity,
) -> Result<Response> {
    let (id, start) = (sent.id, domain::now());
    let answer = state
        .http
        .post(url)
        .header(domain::trace::TRACEPARENT, sent.hop.context.header())
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
            sent.record(state, &row, start).await?;
            super::usage::account_answer(state, id, &answer).await;
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
async fn queue_message(state: &AppState, sent: &Sent, mut row: NewActivity) -> Result<Response> {
    let id = sent.id;
    row.status = Some("queued".into());
    let stored = sent.record(state, &row, domain::now()).await?;
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
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn notify_operator(
    State(state): State<AppState>,
    WorkspaceItself(WorkspacePath(id), _): WorkspaceItself,
    Json(body): Json<Notify>,
) -> Result<Json<Stored>> {
    Ok(Json(notify(&state, id, body).await?))
}

/// Stores the agent's message to the canvas user, for `/notify` and the
/// MCP tool `send_message_to_user`.
pub(super) async fn notify(state: &AppState, id: WorkspaceId, body: Notify) -> Result<Stored> {
    if body
        .attachments
        .iter()
        .any(|a| !a.get("uri").is_some_and(Value::is_string))
    {
        return Err(Error::BadRequest(
            "every attachment needs a string `uri`".into(),
        ));
    }
    let attachments = files_to_user(state, id, body.attachments).await?;
    let row = InboxItem::AgentMessage(AgentMessage {
        from: id,
        text: body.message,
        attachments,
    })
    .row();
    let stored = record(state, id, &row).await?;
    Ok(Stored {
        status: "ok",
        activity_id: stored.id,
    })
}

/// An attachment naming a staged file (`platform-pending:<ws>/<fid>`)
/// must name one this workspace uploaded for the user
/// (`POST /workspaces/:id/notify/uploads`); its name, type and size are
/// the server's record. Anything else is 422, and nothing is stored.
async fn files_to_user(
    state: &AppState,
    id: WorkspaceId,
    attachments: Vec<Value>,
) -> Result<Vec<Value>> {
    let mut checked = Vec::with_capacity(attachments.len());
    for mut a in attachments {
        let uri = a["uri"].as_str().unwrap_or_default().to_owned();
        if uri.starts_with("platform-pending:") {
            let file = match domain::parse_pending_uri(&uri) {
                Some((ws, fid)) if ws == id => state
                    .store
                    .find_upload(id, fid)
                    .await?
                    .filter(|f| f.to_user),
                _ => None,
            };
            let Some(file) = file else {
                return Err(Error::Unprocessable(format!(
                    "the attachment names {uri}, which is not a file this workspace uploaded for the user; \
                     upload it first (POST /workspaces/{id}/notify/uploads) and name the URI it answers"
                )));
            };
            a["name"] = file.filename.into();
            a["mimeType"] = file.mimetype.into();
            a["size"] = file.size.into();
        }
        checked.push(a);
    }
    Ok(checked)
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_a2a_message))
        .routes(routes!(notify_operator))
}
