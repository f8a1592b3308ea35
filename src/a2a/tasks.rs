//! Tasks and messages on the wire, in both versions' JSON. A task is a
//! ledger row: its A2A state is read off the delegation status (and the
//! cancel mark, and whether its agent waits on an approval), its history is the message that made it, and a completed
//! task carries the agent's answer as a text artifact.

use serde_json::{json, Value};

use super::jsonrpc::RpcError;
use super::Dialect;
use crate::domain::{DelegationStatus, TASK_PREVIEW_CHARS};
use crate::store::A2aTask;

/// The A2A states a ledger row can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// `queued`: in the agent's inbox.
    Submitted,
    /// `dispatched`, `in_progress`, `stuck`: the agent has it.
    Working,
    /// In flight (any of the above) while its agent waits on a pending
    /// approval request naming the task: someone has to say yes or no.
    InputRequired,
    /// `completed`.
    Completed,
    /// `failed`, not by a cancel.
    Failed,
    /// `failed` by CancelTask.
    Canceled,
}

impl TaskState {
    /// Every state, for parsing.
    const ALL: [TaskState; 6] = [
        Self::Submitted,
        Self::Working,
        Self::InputRequired,
        Self::Completed,
        Self::Failed,
        Self::Canceled,
    ];

    /// The state of a task.
    pub(crate) fn of(task: &A2aTask) -> Self {
        let status = task.delegation.status;
        if task.awaiting_approval.is_some() && !status.is_terminal() {
            return Self::InputRequired;
        }
        match status {
            DelegationStatus::Queued => Self::Submitted,
            DelegationStatus::Dispatched
            | DelegationStatus::InProgress
            | DelegationStatus::Stuck => Self::Working,
            DelegationStatus::Completed => Self::Completed,
            DelegationStatus::Failed if task.canceled_at.is_some() => Self::Canceled,
            DelegationStatus::Failed => Self::Failed,
        }
    }

    /// Its name in a dialect.
    pub(crate) fn name(self, dialect: Dialect) -> &'static str {
        match (dialect, self) {
            (Dialect::V1, Self::Submitted) => "TASK_STATE_SUBMITTED",
            (Dialect::V1, Self::Working) => "TASK_STATE_WORKING",
            (Dialect::V1, Self::InputRequired) => "TASK_STATE_INPUT_REQUIRED",
            (Dialect::V1, Self::Completed) => "TASK_STATE_COMPLETED",
            (Dialect::V1, Self::Failed) => "TASK_STATE_FAILED",
            (Dialect::V1, Self::Canceled) => "TASK_STATE_CANCELED",
            (Dialect::V03, Self::Submitted) => "submitted",
            (Dialect::V03, Self::Working) => "working",
            (Dialect::V03, Self::InputRequired) => "input-required",
            (Dialect::V03, Self::Completed) => "completed",
            (Dialect::V03, Self::Failed) => "failed",
            (Dialect::V03, Self::Canceled) => "canceled",
        }
    }

    /// A state by either dialect's name; `None` for a state no ledger row
    /// can be in (`rejected`, `auth-required`, …) or no state at all.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name(Dialect::V1) == name || s.name(Dialect::V03) == name)
    }

    /// Over: completed, failed or canceled.
    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }

    /// Over, or waiting on someone's input: where a blocking send stops
    /// waiting.
    pub(crate) fn is_interrupted(self) -> bool {
        self.is_terminal() || self == Self::InputRequired
    }

    /// This state as a ListTasks filter: the ledger statuses, whether it
    /// is the canceled kind of `failed`, and whether the task waits on a
    /// pending approval (in flight only).
    pub(crate) fn ledger(self) -> (Vec<DelegationStatus>, Option<bool>, Option<bool>) {
        use DelegationStatus::*;
        match self {
            Self::Submitted => (vec![Queued], None, Some(false)),
            Self::Working => (vec![Dispatched, InProgress, Stuck], None, Some(false)),
            Self::InputRequired => (
                vec![Queued, Dispatched, InProgress, Stuck],
                None,
                Some(true),
            ),
            Self::Completed => (vec![Completed], None, None),
            Self::Failed => (vec![Failed], Some(false), None),
            Self::Canceled => (vec![Failed], Some(true), None),
        }
    }
}

/// A message as received: what a task is made from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Incoming {
    /// The sender's messageId.
    pub message_id: String,
    /// The contextId it names, if any.
    pub context_id: Option<String>,
    /// The taskId it names, if any (a follow-up to a task).
    pub task_id: Option<String>,
    /// Its parts as the task's text: text parts as they are, a file as a
    /// line naming it, data as JSON.
    pub text: String,
}

/// Ids a client names are at most this long (the columns' bound).
const MAX_ID_CHARS: usize = 200;

fn id_field(m: &Value, key: &str) -> Result<Option<String>, RpcError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => Ok(Some(s.clone())),
        Some(_) => Err(RpcError::invalid_params(format!(
            "`message.{key}` must be a string of at most {MAX_ID_CHARS} characters"
        ))),
    }
}

/// Reads `params.message` of either dialect.
pub(crate) fn incoming(params: &Value) -> Result<Incoming, RpcError> {
    let Some(m) = params.get("message").filter(|m| m.is_object()) else {
        return Err(RpcError::invalid_params(
            "`params.message` must be an object",
        ));
    };
    let Some(parts) = m
        .get("parts")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
    else {
        return Err(RpcError::invalid_params(
            "`params.message.parts` must be a non-empty array",
        ));
    };
    let mut lines = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        lines.push(part_text(part).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "part {i} holds no text, file or data the server can read"
            ))
        })?);
    }
    let text = lines.join("\n");
    if text.trim().is_empty() {
        return Err(RpcError::invalid_params("the message has no content"));
    }
    Ok(Incoming {
        message_id: id_field(m, "messageId")?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        context_id: id_field(m, "contextId")?,
        task_id: id_field(m, "taskId")?,
        text,
    })
}

/// One part as text: 1.0 parts are `{text}` / `{url, filename}` /
/// `{data}`; 0.3 parts carry `kind` and keep a file under `file`.
fn part_text(part: &Value) -> Option<String> {
    if let Some(t) = part.get("text").and_then(Value::as_str) {
        return Some(t.to_owned());
    }
    let file = part.get("file").unwrap_or(part);
    let uri = file
        .get("url")
        .or_else(|| file.get("uri"))
        .and_then(Value::as_str);
    if let Some(uri) = uri {
        let name = file
            .get("filename")
            .or_else(|| file.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("file");
        return Some(format!("[{name}]({uri})"));
    }
    part.get("data").map(Value::to_string)
}

fn text_part(dialect: Dialect, text: &str) -> Value {
    match dialect {
        Dialect::V1 => json!({"text": text}),
        Dialect::V03 => json!({"kind": "text", "text": text}),
    }
}

/// A message in a dialect.
fn message(dialect: Dialect, task: &A2aTask, id: &str, agent: bool, text: &str) -> Value {
    let role = match (dialect, agent) {
        (Dialect::V1, false) => "ROLE_USER",
        (Dialect::V1, true) => "ROLE_AGENT",
        (Dialect::V03, false) => "user",
        (Dialect::V03, true) => "agent",
    };
    let mut m = json!({
        "messageId": id,
        "contextId": task.context_id,
        "taskId": task.delegation.id.to_string(),
        "role": role,
        "parts": [text_part(dialect, text)],
    });
    if dialect == Dialect::V03 {
        m["kind"] = json!("message");
    }
    m
}

/// A task in a dialect: id, contextId, status (with the error as the
/// agent's message when it failed), the asking message as history, and
/// the answer as the `result` artifact once completed.
pub(crate) fn task_json(task: &A2aTask, dialect: Dialect) -> Value {
    let d = &task.delegation;
    let mut out = json!({
        "id": d.id.to_string(),
        "contextId": task.context_id,
        "status": status_json(task, dialect),
        "history": [message(dialect, task, &task.message_id, false, &d.task)],
    });
    if let Some(artifact) = artifact_json(task, dialect) {
        out["artifacts"] = json!([artifact]);
    }
    if dialect == Dialect::V03 {
        out["kind"] = json!("task");
    }
    out
}

/// A task's status: its state, when it moved there, and the error as the
/// agent's message when it failed.
fn status_json(task: &A2aTask, dialect: Dialect) -> Value {
    let d = &task.delegation;
    let state = TaskState::of(task);
    let mut status = json!({
        "state": state.name(dialect),
        "timestamp": d.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    if let (TaskState::Failed | TaskState::Canceled, Some(err)) = (state, &d.error_detail) {
        status["message"] = message(dialect, task, &format!("{}-status", d.id), true, err);
    }
    if let (TaskState::InputRequired, Some(action)) = (state, &task.awaiting_approval) {
        let text = format!("waiting for approval: {action}");
        status["message"] = message(dialect, task, &format!("{}-approval", d.id), true, &text);
    }
    status
}

/// The `result` artifact: the agent's answer, once the task completed.
fn artifact_json(task: &A2aTask, dialect: Dialect) -> Option<Value> {
    let d = &task.delegation;
    let (TaskState::Completed, Some(result)) = (TaskState::of(task), &d.result_preview) else {
        return None;
    };
    let mut artifact = json!({
        "artifactId": format!("{}-result", d.id),
        "name": "result",
        "parts": [text_part(dialect, result)],
    });
    if dialect == Dialect::V03 {
        artifact["kind"] = json!("artifact");
    }
    Some(artifact)
}

/// The first event of a task's stream: the task itself (1.0 wraps it as
/// a `StreamResponse`; 0.3 sends it bare, `kind: task`).
pub(crate) fn stream_task(task: &A2aTask, dialect: Dialect) -> Value {
    match dialect {
        Dialect::V1 => json!({ "task": task_json(task, dialect) }),
        Dialect::V03 => task_json(task, dialect),
    }
}

/// The events a move of the task makes on its stream: the `result`
/// artifact when it completed, then its new status (0.3 marks the last
/// one `final`).
pub(crate) fn stream_moves(task: &A2aTask, dialect: Dialect) -> Vec<Value> {
    let tid = task.delegation.id.to_string();
    let mut out = Vec::with_capacity(2);
    if let Some(artifact) = artifact_json(task, dialect) {
        out.push(match dialect {
            Dialect::V1 => json!({"artifactUpdate": {"taskId": tid, "contextId": task.context_id,
                "artifact": artifact, "append": false, "lastChunk": true}}),
            Dialect::V03 => json!({"kind": "artifact-update", "taskId": tid,
                "contextId": task.context_id, "artifact": artifact, "append": false, "lastChunk": true}),
        });
    }
    let status = status_json(task, dialect);
    out.push(match dialect {
        Dialect::V1 => json!({"statusUpdate": {"taskId": tid, "contextId": task.context_id,
            "status": status}}),
        Dialect::V03 => json!({"kind": "status-update", "taskId": tid,
            "contextId": task.context_id, "status": status,
            "final": TaskState::of(task).is_terminal()}),
    });
    out
}

/// The one line a task's inbox row and ledger preview show.
pub(crate) fn summary(text: &str) -> String {
    crate::domain::truncate_chars(text, TASK_PREVIEW_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_either_name() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.name(Dialect::V1)), Some(s));
            assert_eq!(TaskState::parse(s.name(Dialect::V03)), Some(s));
        }
        assert_eq!(TaskState::parse("TASK_STATE_AUTH_REQUIRED"), None);
    }

    #[test]
    fn both_dialects_parts_become_text() {
        let v1 = json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [
            {"text": "hi"}, {"url": "https://x/y", "filename": "y.txt"}, {"data": {"a": 1}}]}});
        let got = incoming(&v1).unwrap();
        assert_eq!(got.text, "hi\n[y.txt](https://x/y)\n{\"a\":1}");
        assert_eq!(got.message_id, "m");
        let v03 = json!({"message": {"kind": "message", "role": "user", "contextId": "c", "parts": [
            {"kind": "file", "file": {"uri": "https://x/z", "name": "z"}}]}});
        let got = incoming(&v03).unwrap();
        assert_eq!(got.text, "[z](https://x/z)");
        assert_eq!(got.context_id.as_deref(), Some("c"));
        for bad in [
            json!({}),
            json!({"message": {"parts": []}}),
            json!({"message": {"parts": [{"kind": "video"}]}}),
        ] {
            assert_eq!(incoming(&bad).unwrap_err().code, -32602, "{bad}");
        }
    }
}
