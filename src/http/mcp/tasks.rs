//! MCP Tasks, as the current revision defines them: the `io.modelcontextprotocol/tasks`
//! extension (SEP-2663) that `rmcp` implements. A client that declares the
//! extension in a request's `_meta` capabilities gets a task handle
//! (`resultType: "task"`) from `delegate_task` and `request_approval`
//! instead of a blocking call, then polls `tasks/get` (the result inlined
//! once it is terminal) and may `tasks/cancel`.
//!
//! Nothing is kept in memory: a delegation's task id IS its ledger id and
//! an approval's task id its approval id, so a task survives a restart and
//! is answered by any replica. The status comes from the row:
//!
//! | row | task |
//! |---|---|
//! | delegation queued / dispatched / in_progress / stuck | `working` (`statusMessage` says which) |
//! | … while the callee waits on its own approval for this delegation (`task_id` = the delegation id) | `input_required` |
//! | delegation completed | `completed`, `result` = what `delegate_task` answers |
//! | delegation failed | `failed`, `error` = JSON-RPC error `-32000` with the detail |
//! | delegation failed as canceled by its caller | `cancelled` |
//! | approval pending | `input_required` (a person decides; nothing for the client to send) |
//! | approval approved / denied | `completed`, `result` = the decision |
//!
//! A task is its creator's: a workspace asks `tasks/get` of its own
//! delegations (as caller) and approval requests only; any other id is
//! `-32602`, whether or not it exists.

use rmcp::model::{
    CallToolResult, ContentBlock, CreateTaskResult, DetailedTask, ErrorData, GetTaskResult,
    InputRequests, JsonObject, Task, TaskPayload,
};
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use serde_json::{json, Value};

use super::super::a2a::TASK_CANCELED;
use super::super::{AppState, Error};
use super::tools::{status_view, Bound};
use crate::audit::Entry;
use crate::domain::approval::ApprovalStatus;
use crate::domain::audit::Actor;
use crate::domain::inbox::{self, InboxItem, InboxRow};
use crate::domain::{self, ApprovalId, Caller, DelegationId, DelegationStatus};
use crate::events::Event;
use crate::store::{Approval, CallerCanceled, Delegation, CANCELED_BY_CALLER};

/// The poll interval a task suggests: the ledger moves in seconds.
const POLL_INTERVAL_MS: u64 = 1_000;

/// The JSON-RPC code of a failed delegation's `error` (implementation-
/// defined server error range): the callee gave up, not the protocol.
const DELEGATION_FAILED: i64 = -32000;

/// A task's base fields from its row's times; no TTL (the row is kept
/// until the ledger's retention purges it).
fn base(
    id: impl ToString,
    created: chrono::DateTime<chrono::Utc>,
    updated: chrono::DateTime<chrono::Utc>,
) -> Task {
    Task::new(
        id.to_string(),
        Default::default(),
        created.to_rfc3339(),
        updated.to_rfc3339(),
    )
    .with_poll_interval_ms(POLL_INTERVAL_MS)
}

/// A tool result as the object `tasks/get` inlines.
fn result_object(value: &Value) -> Result<JsonObject, ErrorData> {
    let result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
    match serde_json::to_value(result) {
        Ok(Value::Object(o)) => Ok(o),
        _ => {
            tracing::error!("BUG: a tool result did not serialize to an object");
            Err(ErrorData::internal_error(
                "the server failed to handle this request",
                None,
            ))
        }
    }
}

/// A delegation as a task; `waiting` is the callee's pending approval for
/// it, if any.
fn delegation_task(d: &Delegation, waiting: Option<&Approval>) -> Result<DetailedTask, ErrorData> {
    let task = base(d.id, d.created_at, d.updated_at);
    let (payload, message) = match (d.status, waiting) {
        (DelegationStatus::Completed, _) => (
            TaskPayload::Completed {
                result: result_object(&status_view(d))?,
            },
            "the peer answered".to_owned(),
        ),
        (DelegationStatus::Failed, _) if d.error_detail.as_deref() == Some(CANCELED_BY_CALLER) => {
            (TaskPayload::Cancelled, CANCELED_BY_CALLER.to_owned())
        }
        (DelegationStatus::Failed, _) => {
            let detail = d.error_detail.clone().unwrap_or_default();
            let mut error = JsonObject::new();
            error.insert("code".into(), json!(DELEGATION_FAILED));
            error.insert(
                "message".into(),
                json!(format!("the delegation failed: {detail}")),
            );
            error.insert("data".into(), status_view(d));
            (TaskPayload::Failed { error }, detail)
        }
        (_, Some(a)) => (
            TaskPayload::InputRequired {
                input_requests: InputRequests::new(),
            },
            format!("the peer waits for an approval decision: {}", a.action),
        ),
        (DelegationStatus::Stuck, None) => (
            TaskPayload::Working,
            "the peer has gone silent; it may still finish".to_owned(),
        ),
        (s, None) => (TaskPayload::Working, format!("the delegation is {s}")),
    };
    Ok(DetailedTask::new(
        task.with_status_message(message),
        payload,
    ))
}

/// The JSON an approval shows to the agent that asked.
pub(super) fn approval_view(a: &Approval) -> Value {
    json!({
        "approval_id": a.id, "status": a.status.as_str(), "action": a.action,
        "task_id": a.task_id, "approver_id": a.approver_id, "expires_at": a.expires_at,
        "decided_by": a.decided_by.map(|d| d.to_string()), "note": a.note,
        "created_at": a.created_at, "decided_at": a.decided_at,
    })
}

/// An approval request as a task.
pub(super) fn approval_task(a: &Approval) -> Result<DetailedTask, ErrorData> {
    let task = base(a.id, a.created_at, a.decided_at.unwrap_or(a.created_at));
    let (payload, message) = match a.status {
        ApprovalStatus::Pending => (
            TaskPayload::InputRequired {
                input_requests: InputRequests::new(),
            },
            match a.approver_id {
                Some(w) => format!("waiting for a decision by workspace {w} or the operator"),
                None => "waiting for a decision by the operator".to_owned(),
            },
        ),
        decided => (
            TaskPayload::Completed {
                result: result_object(&approval_view(a))?,
            },
            format!(
                "{decided} by {}",
                a.decided_by.map(|d| d.to_string()).unwrap_or_default()
            ),
        ),
    };
    Ok(DetailedTask::new(
        task.with_status_message(message),
        payload,
    ))
}

/// True when this request declared the tasks extension in its own `_meta`
/// capabilities (the 2026-07-28 per-request envelope): only such a client
/// can read a task handle.
pub(super) fn wanted(context: &RequestContext<RoleServer>) -> bool {
    context
        .meta
        .client_capabilities()
        .is_some_and(|c| c.supports_tasks())
}

/// The handle a task-augmented `tools/call` answers with.
pub(super) fn created(task: DetailedTask) -> CreateTaskResult {
    CreateTaskResult::new(task.task)
}

/// One of `b`'s tasks, read from its row.
enum Owned {
    Delegation(Delegation),
    Approval(Approval),
}

/// The task `raw` names, if it is `b`'s; `-32602` otherwise.
async fn owned(b: &Bound, raw: &str) -> Result<Owned, ErrorData> {
    let unknown = || ErrorData::invalid_params(format!("no task {raw:?} of this workspace"), None);
    let (Ok(did), Ok(aid)) = (
        raw.trim().parse::<DelegationId>(),
        raw.trim().parse::<ApprovalId>(),
    ) else {
        return Err(unknown());
    };
    let store = &b.state.store;
    match store.get_delegation(did).await {
        Ok(Some(d)) if d.caller == Caller::Workspace(b.workspace) => {
            return Ok(Owned::Delegation(d))
        }
        Ok(_) => {}
        Err(e) => return Err(fault(e.into())),
    }
    match store.get_approval(b.workspace, aid).await {
        Ok(Some(a)) => Ok(Owned::Approval(a)),
        Ok(None) => Err(unknown()),
        Err(e) => Err(fault(e.into())),
    }
}

/// A server fault as `-32603`, logged once, without its internals.
fn fault(e: Error) -> ErrorData {
    tracing::error!(error.cause_chain = ?e, "an MCP task request failed");
    ErrorData::internal_error("the server failed to handle this request", None)
}

/// The task of a delegation as it stands now.
pub(super) async fn delegation_state(
    state: &AppState,
    d: &Delegation,
) -> Result<DetailedTask, ErrorData> {
    let waiting = if d.status.is_terminal() {
        None
    } else {
        let pending = state
            .store
            .list_approvals(d.callee_id, Some(ApprovalStatus::Pending))
            .await
            .map_err(|e| fault(e.into()))?;
        let id = d.id.to_string();
        pending
            .into_iter()
            .find(|a| a.task_id.as_deref() == Some(id.as_str()))
    };
    delegation_task(d, waiting.as_ref())
}

/// `tasks/get`.
pub(super) async fn get_task(b: &Bound, raw: &str) -> Result<GetTaskResult, ErrorData> {
    let task = match owned(b, raw).await? {
        Owned::Delegation(d) => delegation_state(&b.state, &d).await?,
        Owned::Approval(a) => approval_task(&a)?,
    };
    Ok(GetTaskResult::new(task))
}

/// `tasks/update`: no task of ours ever asks its client for input (an
/// `input_required` task waits on a person, with no `inputRequests`), so
/// responses are acknowledged and ignored, as the extension says of keys
/// that are not outstanding; another workspace's task is `-32602`.
pub(super) async fn update_task(b: &Bound, raw: &str) -> Result<(), ErrorData> {
    owned(b, raw).await.map(|_| ())
}

/// `tasks/cancel`: a delegation in flight fails as canceled by its caller
/// (the callee's inbox is told, as for an A2A cancel); one that is over
/// already, or an approval request (decided by a person or its expiry,
/// never withdrawn), is `-32602` saying so.
pub(super) async fn cancel_task(b: &Bound, raw: &str) -> Result<(), ErrorData> {
    let d = match owned(b, raw).await? {
        Owned::Delegation(d) => d,
        Owned::Approval(_) => {
            return Err(ErrorData::invalid_params(
                "an approval request cannot be canceled: it is decided or expires",
                None,
            ))
        }
    };
    let notice = InboxItem::Other(InboxRow {
        activity_type: inbox::INBOX_TYPE.into(),
        method: Some(TASK_CANCELED.into()),
        source_id: Some(b.workspace.to_string()),
        target_id: Some(d.callee_id.to_string()),
        summary: Some(format!("task canceled: {}", d.task_preview)),
        request_body: None,
        response_body: None,
        status: None,
        error_detail: None,
        data: Some(json!({"task_id": d.id.to_string(), "delegation_id": d.id.to_string()})),
    })
    .row();
    let state = &b.state;
    let outcome = state
        .store
        .cancel_caller_delegation(b.workspace, d.id, &notice, domain::now())
        .await
        .map_err(|e| fault(e.into()))?;
    match outcome {
        CallerCanceled::Applied { moved, notice } => {
            crate::ledger::announce_move(&state.bus, &state.metrics, &moved).await;
            state
                .bus
                .publish(Event::Activity {
                    workspace_id: notice.workspace_id,
                    id: notice.id,
                })
                .await;
            let entry = Entry::new(Actor::Workspace(b.workspace), "delegation.canceled")
                .workspace(b.workspace)
                .target(format!("delegation:{}", d.id))
                .details(json!({"callee_id": d.callee_id, "via": "mcp tasks/cancel"}));
            super::super::audit::record(state, entry).await;
            Ok(())
        }
        CallerCanceled::Over(d) => Err(ErrorData::invalid_params(
            format!("task {} is over already: {}", d.id, d.status),
            None,
        )),
        CallerCanceled::NotFound => Err(ErrorData::invalid_params(
            format!("no task {raw:?} of this workspace"),
            None,
        )),
    }
}
