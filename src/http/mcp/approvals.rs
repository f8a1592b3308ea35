//! The approval tools (issue 27's "MCP tools expose it"): `request_approval`
//! asks exactly as `POST /workspaces/:id/approvals` does (the same rules,
//! rows, announcement and audit row: it calls the route's code), and
//! `check_approval` reads one of the workspace's own requests. Both can
//! wait a bounded time for the decision, woken by the request's own moves
//! on the event bus; a task-capable client gets `request_approval` as a
//! task that is `input_required` until a person decides (see [`super::tasks`]).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::super::approvals::{request_approval, NewApprovalRequest};
use super::super::{AppState, Error};
use super::tasks::approval_view;
use crate::domain::approval::ApprovalStatus;
use crate::domain::{ApprovalId, WorkspaceId};
use crate::events::Event;
use crate::store::Approval;

/// The longest a tool call waits for a decision (Molecule's bound for a
/// blocking tool, as `delegate_task`'s).
pub(super) const MAX_WAIT_S: u64 = 30;

/// `request_approval`'s arguments: the route's body plus `wait_s`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RequestArgs {
    action: String,
    reason: Option<String>,
    context: Option<Value>,
    task_id: Option<String>,
    expires_in_s: Option<i64>,
    on_expiry: Option<String>,
    #[serde(default)]
    wait_s: Option<u64>,
}

/// `check_approval`'s arguments.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckArgs {
    approval_id: String,
    #[serde(default)]
    wait_s: Option<u64>,
}

/// The input schema of `request_approval`.
pub(super) fn request_schema() -> Value {
    json!({"type": "object", "required": ["action"], "additionalProperties": false,
        "properties": {
            "action": {"type": "string", "minLength": 1, "maxLength": 200,
                "description": "what you want to do, in one line a person can judge"},
            "reason": {"type": "string", "maxLength": 8192,
                "description": "why it is needed"},
            "context": {"type": "object",
                "description": "anything the decider should see (at most 64 KiB as JSON)"},
            "task_id": {"type": "string", "maxLength": 200,
                "description": "your own task id; a delegation id here makes that delegation \
                    show as waiting for input to its caller"},
            "expires_in_s": {"type": "integer", "minimum": 1, "maximum": 604800, "default": 600,
                "description": "seconds each decider has"},
            "on_expiry": {"type": "string", "enum": ["deny", "approve", "escalate"],
                "default": "deny",
                "description": "what happens when nobody decides in time: escalate hands the \
                    request to the next ancestor, then the operator"},
            "wait_s": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0,
                "description": "wait up to this many seconds for the decision before returning"}}})
}

/// The input schema of `check_approval`.
pub(super) fn check_schema() -> Value {
    json!({"type": "object", "required": ["approval_id"], "additionalProperties": false,
        "properties": {
            "approval_id": {"type": "string", "format": "uuid",
                "description": "the approval_id request_approval returned"},
            "wait_s": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0,
                "description": "wait up to this many seconds for the decision while it is pending"}}})
}

/// A `wait_s` within its bound, or the refusal naming it.
fn wait_of(wait_s: Option<u64>) -> Result<Duration, Error> {
    match wait_s.unwrap_or(0) {
        s if s <= MAX_WAIT_S => Ok(Duration::from_secs(s)),
        s => Err(Error::BadRequest(format!(
            "`wait_s` must be between 0 and {MAX_WAIT_S}, got {s}"
        ))),
    }
}

/// Creates the request (the route's code); the new row.
pub(super) async fn create(
    state: &AppState,
    me: WorkspaceId,
    a: RequestArgs,
) -> Result<(Approval, Duration), Error> {
    let wait = wait_of(a.wait_s)?;
    let body = NewApprovalRequest {
        action: Some(a.action),
        reason: a.reason,
        context: a.context,
        task_id: a.task_id,
        expires_in_s: a.expires_in_s,
        on_expiry: a.on_expiry,
    };
    let created = request_approval(state, me, body).await?;
    let row = read(state, me, created.approval_id).await?;
    Ok((row, wait))
}

/// `request_approval` as a plain tool: the request, waited on for `wait_s`.
pub(super) async fn request_tool(
    state: &AppState,
    me: WorkspaceId,
    a: RequestArgs,
) -> Result<Value, Error> {
    // Subscribed before the row exists, so no decision can be missed.
    let events = state.bus.subscribe();
    let (row, wait) = create(state, me, a).await?;
    let row = decided(state, me, row.id, events, wait).await?;
    Ok(approval_view(&row))
}

/// `check_approval`.
pub(super) async fn check_tool(
    state: &AppState,
    me: WorkspaceId,
    a: CheckArgs,
) -> Result<Value, Error> {
    let wait = wait_of(a.wait_s)?;
    let id: ApprovalId = a.approval_id.trim().parse().map_err(|_| {
        Error::BadRequest(format!(
            "`approval_id` must be a UUID, got {:?}",
            a.approval_id
        ))
    })?;
    let events = state.bus.subscribe();
    let row = decided(state, me, id, events, wait).await?;
    Ok(approval_view(&row))
}

/// One of `me`'s requests; any other id is "not found".
async fn read(state: &AppState, me: WorkspaceId, id: ApprovalId) -> Result<Approval, Error> {
    state
        .store
        .get_approval(me, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no approval request {id} of this workspace")))
}

/// The request once decided, or as it stands after `bound` (or at
/// shutdown). Woken by its own moves; a lagging or resynced bus re-reads.
async fn decided(
    state: &AppState,
    me: WorkspaceId,
    id: ApprovalId,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    bound: Duration,
) -> Result<Approval, Error> {
    let until = tokio::time::Instant::now() + bound;
    loop {
        let a = read(state, me, id).await?;
        if a.status != ApprovalStatus::Pending || bound.is_zero() {
            return Ok(a);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return Ok(a),
            _ = state.shutdown.cancelled() => return Ok(a),
            _ = next_move(&mut events, id) => {}
        }
    }
}

/// Returns at the next event that may have moved request `id`.
async fn next_move(events: &mut tokio::sync::broadcast::Receiver<Event>, id: ApprovalId) {
    loop {
        match events.recv().await {
            Ok(Event::Approval(m)) if m.approval_id == id => return,
            Ok(Event::Resync) | Err(RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
