//! The inbox protocol: every kind of row a workspace's activity log
//! carries, as one enum, [`InboxItem`], shared by the server (which writes
//! rows from it, [`InboxItem::row`]) and by `client` / `connect` (which read
//! rows back into it, [`InboxItem::parse`]).
//!
//! This module owns the wire strings (`activity_type`, `method`) and the
//! shape of each row's `data` and `request_body`; nothing else in the crate
//! spells them. The JSON is exactly what earlier versions wrote, key for key
//! (Molecule's SDK and the canvas read it), so a row written before this
//! enum existed parses, and a row written through it reads the same.
//!
//! A schedule's fire is a [`Delegate`] row whose caller is the schedule
//! (`source_id` = `schedule:<id>`): `connect` already hands delegate rows
//! to its agent and reports the outcome to the ledger, and a poller of
//! `a2a_receive` sees the row as it sees any delegated task, so a fire
//! needs no kind of its own (a new kind would be skipped by every reader
//! built before it). A new kind is one more variant here (with its
//! `method` constant, its `row` arm and its `parse` arm), written by its
//! feature's handler or job through [`InboxItem::row`], and matched by
//! `connect`'s dispatch, which ignores (and moves its cursor past) any kind
//! it does not handle. The approval kinds live in `approval.rs`, the
//! instructions kind in `instructions.rs`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{pending_uri, truncate_chars, Caller, DelegationId, DelegationStatus};
use super::{FileId, TraceParent, WorkspaceId};

mod approval;
mod instructions;
pub use approval::{ApprovalDecided, ApprovalRequested};
pub use instructions::InstructionsChanged;

/// The `activity_type` of every row a workspace's inbox poll asks for
/// (`?type=a2a_receive`): messages, files and delegations.
pub const INBOX_TYPE: &str = "a2a_receive";
/// The `activity_type` of a restart request.
pub const RESTART_TYPE: &str = "restart_requested";
/// The `activity_type` of the agent's message to the operator.
pub const AGENT_MESSAGE_TYPE: &str = "agent_message";

/// The `method` of an A2A message.
pub const MESSAGE_SEND: &str = "message/send";
/// The `method` of a file staged for a poll-mode workspace.
pub const CHAT_UPLOAD: &str = "chat_upload_receive";
/// The `method` of a file a push-mode workspace took directly.
pub const CHAT_UPLOAD_FORWARD: &str = "chat_upload_forward";
/// The `method` of a task delegated to the workspace.
pub const DELEGATE: &str = "delegate";
/// The `method` of the outcome of a delegation the workspace made.
pub const DELEGATION_RESULT: &str = "delegation_result";
/// The `method` of the agent's message to the operator.
pub const NOTIFY: &str = "notify";
/// The `method` of the decision on the workspace's approval request.
pub const APPROVAL_DECIDED: &str = "approval_decided";
/// The `method` of an approval request the workspace may decide.
pub const APPROVAL_REQUESTED: &str = "approval_requested";
/// The `method` of the news that the workspace's platform instructions
/// changed.
pub const INSTRUCTIONS_CHANGED: &str = "instructions_changed";

/// The fields of one activity row, as the server inserts it and as the API
/// shows it (less the id and timestamp the store assigns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboxRow {
    /// `a2a_receive`, `agent_message`, `restart_requested`, or what the
    /// agent reports.
    pub activity_type: String,
    /// Discriminator within a type (`message/send`, `delegate`, …).
    pub method: Option<String>,
    /// Who sent it.
    pub source_id: Option<String>,
    /// Who it is for.
    pub target_id: Option<String>,
    /// One line for humans.
    pub summary: Option<String>,
    /// The request as received.
    pub request_body: Option<Value>,
    /// The answer, if any.
    pub response_body: Option<Value>,
    /// Outcome status.
    pub status: Option<String>,
    /// Error text, if it failed.
    pub error_detail: Option<String>,
    /// The row made easy to consume.
    pub data: Option<Value>,
}

/// One row of a workspace's activity log, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum InboxItem {
    /// An A2A `message/send` from the operator or a peer workspace.
    Message(Message),
    /// A file staged for a poll-mode workspace to download and ack.
    ChatUpload(ChatUpload),
    /// A file a push-mode workspace took directly (nothing to download).
    ForwardedUpload(ForwardedUpload),
    /// A task delegated to this workspace.
    Delegate(Delegate),
    /// The outcome of a delegation this workspace made.
    DelegationResult(DelegationResult),
    /// The operator asked the agent to restart.
    RestartRequested,
    /// The agent's message to the operator (`/notify`).
    AgentMessage(AgentMessage),
    /// The decision on an approval request the workspace made.
    ApprovalDecided(ApprovalDecided),
    /// An approval request the workspace may decide.
    ApprovalRequested(ApprovalRequested),
    /// The workspace's platform instructions changed.
    InstructionsChanged(InstructionsChanged),
    /// Any other row (what the agent reports through `/activity`), kept
    /// whole: nothing is dropped for being of a kind this build does not
    /// know.
    Other(InboxRow),
}

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The operator, from the canvas or the CLI (`canvas_user`).
    Operator,
    /// A peer workspace (`peer_agent`).
    Peer(WorkspaceId),
}

impl Sender {
    /// The `source` word of a message row's `data`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Operator => "canvas_user",
            Self::Peer(_) => "peer_agent",
        }
    }

    /// The peer, if a workspace sent it.
    pub fn peer(self) -> Option<WorkspaceId> {
        match self {
            Self::Operator => None,
            Self::Peer(id) => Some(id),
        }
    }
}

/// An A2A message in a workspace's inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who sent it; `None` on a row without `data` (an agent-reported row).
    pub sender: Option<Sender>,
    /// The recipient; `None` when the row does not name a workspace.
    pub to: Option<WorkspaceId>,
    /// The text parts, joined by newlines.
    pub text: String,
    /// The A2A parts, as sent.
    pub parts: Value,
    /// The A2A `messageId`; `None` on a row without `data`.
    pub message_id: Option<String>,
    /// The normalized JSON-RPC request (`request_body`), when it is an object.
    pub rpc: Option<Value>,
    /// The trace context the recipient works under (`data.traceparent`).
    pub traceparent: Option<TraceParent>,
}

/// A staged file, as its row announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatUpload {
    /// The staged file's id.
    pub file_id: FileId,
    /// Its sanitized name.
    pub filename: String,
    /// Its mimetype.
    #[serde(default)]
    pub mimetype: String,
    /// Its size in bytes.
    pub size: u64,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// `platform-pending:<workspace>/<file>`.
    #[serde(default)]
    pub uri: Option<String>,
    /// Staged as an attachment of a message to follow (the canvas
    /// composer): that message hands it to the agent, so `connect` does
    /// not also announce it alone. Absent (false) on a file dropped alone
    /// and on rows written before attachments existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attached: bool,
}

impl ChatUpload {
    /// The announcement of a file staged for `workspace`.
    pub fn staged(
        workspace: WorkspaceId,
        file_id: FileId,
        filename: String,
        mimetype: String,
        size: u64,
        sha256: String,
    ) -> Self {
        Self {
            uri: Some(pending_uri(workspace, file_id)),
            attached: false,
            file_id,
            filename,
            mimetype,
            size,
            sha256,
        }
    }
}

/// A file a push-mode workspace took, as its answer described it (the
/// values it sent are kept as they came).
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardedUpload {
    /// The workspace that took it.
    pub to: WorkspaceId,
    /// Its name (`file` when the answer gave none).
    pub filename: String,
    /// The answer's `mimeType`.
    pub mimetype: Value,
    /// Its size, when the answer gave one.
    pub size: Option<u64>,
    /// The answer's `sha256`.
    pub sha256: Value,
    /// The answer's `uri`.
    pub uri: Value,
}

/// A task delegated to a workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct Delegate {
    /// The ledger row.
    pub delegation_id: DelegationId,
    /// Who delegated.
    pub caller: Caller,
    /// Who is asked to do it (the inbox's owner).
    pub callee: WorkspaceId,
    /// The whole task.
    pub task: String,
    /// Past this, the sweeper fails it.
    pub deadline: Option<DateTime<Utc>>,
    /// The caller's key for exactly-once creation.
    pub idempotency_key: String,
    /// The trace context the callee works under: the delegation's span
    /// (`data.traceparent`; `None` on rows from before traces).
    pub traceparent: Option<TraceParent>,
}

/// The outcome of a delegation, in its caller's inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct DelegationResult {
    /// The ledger row.
    pub delegation_id: DelegationId,
    /// Who delegated (the inbox's owner).
    pub caller: Caller,
    /// Who did it.
    pub callee: WorkspaceId,
    /// Completed or failed.
    pub status: DelegationStatus,
    /// The start of the task, for the summary.
    pub task_preview: String,
    /// The start of the answer.
    pub result_preview: Option<String>,
    /// Why it failed.
    pub error_detail: Option<String>,
}

/// The agent's message to the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentMessage {
    /// The workspace whose agent speaks.
    pub from: WorkspaceId,
    /// The text.
    pub text: String,
    /// Files it attaches (`{uri, name, mimeType, size}`).
    pub attachments: Vec<Value>,
}

/// A row of a known kind whose fields do not fit it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a `{kind}` row cannot be read: {reason}")]
pub struct Unreadable {
    /// The row's `method` (or type).
    pub kind: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// The `data` of a delegate row.
#[derive(Serialize, Deserialize)]
struct DelegateData {
    delegation_id: DelegationId,
    task: String,
    deadline: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
}

/// The `data` of a delegation result row.
#[derive(Serialize, Deserialize)]
struct ResultData {
    delegation_id: DelegationId,
    status: DelegationStatus,
    result_preview: Option<String>,
    error_detail: Option<String>,
}

/// The first line of `text`, cut at 120 characters (with an ellipsis):
/// the `summary` of a message.
pub fn summarize(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(120).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// A size for humans, in binary units (`1.5 KiB`).
pub fn size_str(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// The text of the `text` parts of A2A `parts`, joined by newlines.
pub fn text_of_parts(parts: &Value) -> String {
    parts
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p.get("kind").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A JSON-RPC 2.0 `message/send` request.
pub fn message_send_rpc(id: Value, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": MESSAGE_SEND, "params": params})
}

/// The text parts of a JSON-RPC `message/send` answer (a Message, or a
/// Task with a status message or artifacts), joined by newlines.
pub fn answer_text(answer: &Value) -> String {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if map.get("kind").and_then(Value::as_str) == Some("text") {
                    if let Some(t) = map.get("text").and_then(Value::as_str) {
                        out.push(t.to_owned());
                        return;
                    }
                }
                for (k, v) in map {
                    if matches!(
                        k.as_str(),
                        "parts" | "result" | "status" | "message" | "artifacts"
                    ) {
                        collect(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let root = answer.get("result").unwrap_or(answer);
    collect(root, &mut out);
    out.join("\n")
}

/// Whether a JSON-RPC `method` is `message/send`.
pub fn is_message_send(method: &Value) -> bool {
    method == MESSAGE_SEND
}

impl InboxItem {
    /// The row this item is written as. Rows whose status depends on how
    /// they were delivered (a message: `queued` or `forwarded`) leave it to
    /// the writer.
    pub fn row(&self) -> InboxRow {
        match self {
            Self::Message(m) => m.row(),
            Self::ChatUpload(u) => u.row(),
            Self::ForwardedUpload(u) => u.row(),
            Self::Delegate(d) => d.row(),
            Self::DelegationResult(r) => r.row(),
            Self::RestartRequested => InboxRow {
                activity_type: RESTART_TYPE.to_owned(),
                summary: Some("the operator asked the agent to restart".to_owned()),
                status: Some("requested".to_owned()),
                data: Some(json!({"action": "restart"})),
                ..InboxRow::default()
            },
            Self::AgentMessage(a) => a.row(),
            Self::ApprovalDecided(a) => a.row(),
            Self::ApprovalRequested(a) => a.row(),
            Self::InstructionsChanged(c) => c.row(),
            Self::Other(row) => row.clone(),
        }
    }

    /// Reads a row back into its kind. A row of an unknown kind is
    /// [`InboxItem::Other`]; a row of a known kind that does not fit it is
    /// an [`Unreadable`], for the reader to skip.
    pub fn parse(row: &InboxRow) -> Result<Self, Unreadable> {
        let method = row.method.as_deref();
        Ok(match (row.activity_type.as_str(), method) {
            (INBOX_TYPE, Some(MESSAGE_SEND)) => Self::Message(Message::parse(row)),
            (INBOX_TYPE, Some(CHAT_UPLOAD)) => Self::ChatUpload(parse_upload(row)?),
            (INBOX_TYPE, Some(CHAT_UPLOAD_FORWARD)) => {
                Self::ForwardedUpload(ForwardedUpload::parse(row)?)
            }
            (INBOX_TYPE, Some(DELEGATE)) => Self::Delegate(Delegate::parse(row)?),
            (INBOX_TYPE, Some(DELEGATION_RESULT)) => {
                Self::DelegationResult(DelegationResult::parse(row)?)
            }
            (INBOX_TYPE, Some(APPROVAL_DECIDED)) => {
                Self::ApprovalDecided(ApprovalDecided::parse(row)?)
            }
            (INBOX_TYPE, Some(APPROVAL_REQUESTED)) => {
                Self::ApprovalRequested(ApprovalRequested::parse(row)?)
            }
            (INBOX_TYPE, Some(INSTRUCTIONS_CHANGED)) => {
                Self::InstructionsChanged(InstructionsChanged::parse(row)?)
            }
            (RESTART_TYPE, _) => Self::RestartRequested,
            (AGENT_MESSAGE_TYPE, Some(NOTIFY)) => Self::AgentMessage(AgentMessage::parse(row)?),
            _ => Self::Other(row.clone()),
        })
    }
}

fn unreadable(kind: &'static str, reason: impl ToString) -> Unreadable {
    Unreadable {
        kind,
        reason: reason.to_string(),
    }
}

/// A row field that names a workspace (or the operator).
fn parse_field<T: std::str::FromStr>(
    kind: &'static str,
    name: &str,
    raw: Option<&str>,
) -> Result<T, Unreadable>
where
    T::Err: std::fmt::Display,
{
    let raw = raw.ok_or_else(|| unreadable(kind, format!("no `{name}`")))?;
    raw.parse()
        .map_err(|e: T::Err| unreadable(kind, format!("`{name}`: {e}")))
}

impl Message {
    fn row(&self) -> InboxRow {
        let source_id = self.sender.and_then(Sender::peer).map(|p| p.to_string());
        let mut data = json!({
            "source": self.sender.map(Sender::kind), "source_id": source_id, "text": self.text,
            "parts": self.parts, "message_id": self.message_id,
        });
        if let Some(p) = self.traceparent {
            data["traceparent"] = json!(p.header());
        }
        InboxRow {
            activity_type: INBOX_TYPE.into(),
            method: Some(MESSAGE_SEND.into()),
            source_id,
            target_id: self.to.map(|t| t.to_string()),
            summary: Some(summarize(&self.text)),
            request_body: self.rpc.clone(),
            data: Some(data),
            ..InboxRow::default()
        }
    }

    /// Never fails: a row without `data` (an agent-reported one) still
    /// carries its parts in the JSON-RPC request.
    fn parse(row: &InboxRow) -> Self {
        let data = row.data.as_ref();
        let field = |name: &str| data.and_then(|d| d.get(name));
        let parts = field("parts")
            .cloned()
            .or_else(|| {
                row.request_body
                    .as_ref()
                    .and_then(|b| b.pointer("/params/message/parts"))
                    .cloned()
            })
            .unwrap_or_else(|| json!([]));
        let text = field("text")
            .and_then(Value::as_str)
            .map_or_else(|| text_of_parts(&parts), str::to_owned);
        let peer = field("source_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let sender = match (field("source").and_then(Value::as_str), peer) {
            (Some("canvas_user"), _) => Some(Sender::Operator),
            (Some("peer_agent"), Some(peer)) => Some(Sender::Peer(peer)),
            _ => None,
        };
        Self {
            sender,
            to: row.target_id.as_deref().and_then(|t| t.parse().ok()),
            text,
            parts,
            message_id: field("message_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            rpc: row.request_body.clone().filter(Value::is_object),
            traceparent: field("traceparent")
                .and_then(Value::as_str)
                .and_then(TraceParent::parse),
        }
    }
}

impl ChatUpload {
    fn row(&self) -> InboxRow {
        let mut body = json!({
            "file_id": self.file_id, "filename": self.filename, "mimetype": self.mimetype,
            "size": self.size, "sha256": self.sha256, "uri": self.uri,
        });
        if self.attached {
            body["attached"] = json!(true);
        }
        let target = self
            .uri
            .as_deref()
            .and_then(super::parse_pending_uri)
            .map(|(ws, _)| ws.to_string());
        InboxRow {
            activity_type: INBOX_TYPE.into(),
            method: Some(CHAT_UPLOAD.into()),
            target_id: target,
            summary: Some(format!("file {} ({})", self.filename, size_str(self.size))),
            request_body: Some(body.clone()),
            data: Some(body),
            status: Some("staged".into()),
            ..InboxRow::default()
        }
    }
}

/// The file a `chat_upload_receive` row announces (in its `data`, or in
/// its `request_body` for older rows).
fn parse_upload(row: &InboxRow) -> Result<ChatUpload, Unreadable> {
    let described = row
        .data
        .clone()
        .filter(|d| d.get("file_id").is_some())
        .or_else(|| row.request_body.clone());
    match described {
        Some(value) => serde_json::from_value(value).map_err(|e| unreadable(CHAT_UPLOAD, e)),
        None => Err(unreadable(CHAT_UPLOAD, "no file description")),
    }
}

impl ForwardedUpload {
    fn row(&self) -> InboxRow {
        let name = &self.filename;
        InboxRow {
            activity_type: INBOX_TYPE.into(),
            // Not `chat_upload_receive`: nothing waits in pending-uploads.
            method: Some(CHAT_UPLOAD_FORWARD.into()),
            target_id: Some(self.to.to_string()),
            summary: Some(match self.size {
                Some(n) => format!("file {name} ({})", size_str(n)),
                None => format!("file {name}"),
            }),
            data: Some(json!({
                "filename": name, "mimetype": self.mimetype, "size": self.size,
                "sha256": self.sha256, "uri": self.uri,
            })),
            status: Some("delivered".into()),
            ..InboxRow::default()
        }
    }

    fn parse(row: &InboxRow) -> Result<Self, Unreadable> {
        let data = row
            .data
            .as_ref()
            .ok_or_else(|| unreadable(CHAT_UPLOAD_FORWARD, "no `data`"))?;
        let field = |name: &str| data.get(name).cloned().unwrap_or(Value::Null);
        Ok(Self {
            to: parse_field(CHAT_UPLOAD_FORWARD, "target_id", row.target_id.as_deref())?,
            filename: data["filename"].as_str().unwrap_or("file").to_owned(),
            mimetype: field("mimetype"),
            size: data["size"].as_u64(),
            sha256: field("sha256"),
            uri: field("uri"),
        })
    }
}

impl Delegate {
    fn row(&self) -> InboxRow {
        let data = DelegateData {
            delegation_id: self.delegation_id,
            task: self.task.clone(),
            deadline: self.deadline,
            traceparent: self.traceparent.map(|p| p.header()),
        };
        InboxRow {
            activity_type: INBOX_TYPE.into(),
            method: Some(DELEGATE.into()),
            source_id: Some(self.caller.to_string()),
            target_id: Some(self.callee.to_string()),
            summary: Some(truncate_chars(self.task.lines().next().unwrap_or(""), 120)),
            request_body: Some(json!({
                "delegation_id": self.delegation_id, "task": self.task, "deadline": self.deadline,
                "idempotency_key": self.idempotency_key,
            })),
            status: Some("queued".into()),
            data: Some(json!(data)),
            ..InboxRow::default()
        }
    }

    fn parse(row: &InboxRow) -> Result<Self, Unreadable> {
        let data: DelegateData = row
            .data
            .clone()
            .ok_or_else(|| unreadable(DELEGATE, "no `data`"))
            .and_then(|d| serde_json::from_value(d).map_err(|e| unreadable(DELEGATE, e)))?;
        let key = row
            .request_body
            .as_ref()
            .and_then(|b| b.get("idempotency_key"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok(Self {
            delegation_id: data.delegation_id,
            caller: parse_field(DELEGATE, "source_id", row.source_id.as_deref())?,
            callee: parse_field(DELEGATE, "target_id", row.target_id.as_deref())?,
            task: data.task,
            deadline: data.deadline,
            idempotency_key: key.to_owned(),
            traceparent: data.traceparent.as_deref().and_then(TraceParent::parse),
        })
    }
}

impl DelegationResult {
    fn summary_prefix(status: DelegationStatus) -> String {
        format!("delegation {status}: ")
    }

    fn row(&self) -> InboxRow {
        let data = ResultData {
            delegation_id: self.delegation_id,
            status: self.status,
            result_preview: self.result_preview.clone(),
            error_detail: self.error_detail.clone(),
        };
        InboxRow {
            activity_type: INBOX_TYPE.into(),
            method: Some(DELEGATION_RESULT.into()),
            source_id: Some(self.callee.to_string()),
            target_id: Some(self.caller.to_string()),
            summary: Some(format!(
                "{}{}",
                Self::summary_prefix(self.status),
                self.task_preview
            )),
            status: Some(self.status.as_str().into()),
            error_detail: self.error_detail.clone(),
            data: Some(json!(data)),
            ..InboxRow::default()
        }
    }

    fn parse(row: &InboxRow) -> Result<Self, Unreadable> {
        let data: ResultData = row
            .data
            .clone()
            .ok_or_else(|| unreadable(DELEGATION_RESULT, "no `data`"))
            .and_then(|d| {
                serde_json::from_value(d).map_err(|e| unreadable(DELEGATION_RESULT, e))
            })?;
        // The task's start is only in the summary.
        let prefix = Self::summary_prefix(data.status);
        let task_preview = row
            .summary
            .as_deref()
            .and_then(|s| s.strip_prefix(&prefix))
            .unwrap_or_default();
        Ok(Self {
            delegation_id: data.delegation_id,
            caller: parse_field(DELEGATION_RESULT, "target_id", row.target_id.as_deref())?,
            callee: parse_field(DELEGATION_RESULT, "source_id", row.source_id.as_deref())?,
            status: data.status,
            task_preview: task_preview.to_owned(),
            result_preview: data.result_preview,
            error_detail: data.error_detail,
        })
    }
}

impl AgentMessage {
    fn row(&self) -> InboxRow {
        InboxRow {
            activity_type: AGENT_MESSAGE_TYPE.into(),
            method: Some(NOTIFY.into()),
            source_id: Some(self.from.to_string()),
            summary: Some(summarize(&self.text)),
            request_body: Some(json!({"message": self.text, "attachments": self.attachments})),
            data: Some(
                json!({"source": "agent", "text": self.text, "attachments": self.attachments}),
            ),
            ..InboxRow::default()
        }
    }

    fn parse(row: &InboxRow) -> Result<Self, Unreadable> {
        let data = row
            .data
            .as_ref()
            .ok_or_else(|| unreadable(NOTIFY, "no `data`"))?;
        Ok(Self {
            from: parse_field(NOTIFY, "source_id", row.source_id.as_deref())?,
            text: data["text"].as_str().unwrap_or_default().to_owned(),
            attachments: data["attachments"].as_array().cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests;
