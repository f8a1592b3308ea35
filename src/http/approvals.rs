//! Approvals, with Molecule's paths and field names: an agent asks
//! (`POST /workspaces/:id/approvals`), the operator or the requester's
//! parent workspace decides exactly once (`…/approvals/:aid/decide`), the
//! decision reaches the agent's inbox. Expiry is the job in
//! `crate::jobs` (approvals), on time.
//!
//! Who decides is said by [`ApprovalDecider`] (the requester itself is
//! refused) and, atomically with the decision, by the store: a workspace
//! decides only while it is the request's current decider.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::WorkspaceItself;
use super::access::{ApprovalDecider, KnownWorkspace, LiveWorkspace, Operator, SelfOrOperator};
use super::auth::{Principal, Session};
use super::extract::{ApprovalPath, Query};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::audit::Entry;
use crate::domain::approval::{self as rules, ApprovalStatus, DecidedBy, Decision, OnExpiry};
use crate::domain::audit::Actor;
use crate::domain::{self, ApprovalId, WorkspaceId};
use crate::events::Event;
use crate::store::{Approval, Decided, NewApproval};

/// An approval request as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct ApprovalView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: ApprovalId,
    /// The requesting workspace.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// What it asks to do.
    pub action: String,
    /// Why.
    pub reason: Option<String>,
    /// Anything it adds for the decider.
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// Its own task id.
    pub task_id: Option<String>,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    /// The workspace that may decide it now besides the operator (null:
    /// the operator alone).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub approver_id: Option<WorkspaceId>,
    /// `deny`, `approve` or `escalate`.
    pub on_expiry: String,
    /// When `on_expiry` applies, unless decided first.
    pub expires_at: Option<DateTime<Utc>>,
    /// How many times expiry handed it up.
    pub escalations: i32,
    /// `operator`, the deciding workspace's id, or `expired`.
    pub decided_by: Option<String>,
    /// The decider's note.
    pub note: Option<String>,
    /// When it was asked.
    pub created_at: DateTime<Utc>,
    /// When it was decided.
    pub decided_at: Option<DateTime<Utc>>,
}

impl From<Approval> for ApprovalView {
    fn from(a: Approval) -> Self {
        Self {
            id: a.id,
            workspace_id: a.workspace_id,
            action: a.action,
            reason: a.reason,
            context: a.context,
            task_id: a.task_id,
            status: a.status.as_str().to_owned(),
            approver_id: a.approver_id,
            on_expiry: a.on_expiry.as_str().to_owned(),
            expires_at: a.expires_at,
            escalations: a.escalations,
            decided_by: a.decided_by.map(|d| d.to_string()),
            note: a.note,
            created_at: a.created_at,
            decided_at: a.decided_at,
        }
    }
}

/// `POST /workspaces/:id/approvals` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct NewApprovalRequest {
    /// What the agent wants to do: 1 to 200 characters.
    pub action: Option<String>,
    /// Why (at most 8 KiB).
    pub reason: Option<String>,
    /// Anything for the decider (at most 64 KiB as JSON).
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// The agent's own task id, echoed in the decision.
    pub task_id: Option<String>,
    /// Seconds each decider has (default 600, at most 604800).
    pub expires_in_s: Option<i64>,
    /// `deny` (default), `approve` or `escalate`.
    pub on_expiry: Option<String>,
}

/// The answer of a request.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ApprovalCreated {
    /// The new request.
    #[schema(value_type = String, format = Uuid)]
    pub approval_id: ApprovalId,
    /// Always `pending`.
    pub status: String,
    /// Who may decide it besides the operator (null: the operator alone).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub approver_id: Option<WorkspaceId>,
    /// When `on_expiry` applies.
    pub expires_at: Option<DateTime<Utc>>,
}

/// `POST …/decide` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct DecideRequest {
    /// `approved` or `denied`.
    pub decision: Option<String>,
    /// A note for the agent (at most 8 KiB).
    pub note: Option<String>,
}

/// `?status=&role=` of a workspace's list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct ListParams {
    /// Only requests with this status.
    pub status: Option<String>,
    /// `requester` (default): the workspace's own requests, newest first;
    /// `decider`: the pending requests it may decide, oldest first.
    pub role: Option<String>,
}

fn bad(e: impl ToString) -> Error {
    Error::BadRequest(e.to_string())
}

fn approval_not_found() -> Error {
    Error::NotFound("approval not found".into())
}

/// A request with every rule checked.
fn checked(body: NewApprovalRequest) -> Result<NewApproval> {
    let action = body.action.as_deref().map(str::trim).unwrap_or_default();
    if action.is_empty() || action.chars().count() > rules::MAX_ACTION_CHARS {
        return Err(bad(format!(
            "`action` is required: 1 to {} characters",
            rules::MAX_ACTION_CHARS
        )));
    }
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > rules::MAX_REASON_BYTES)
    {
        return Err(bad(format!(
            "`reason` must be at most {} bytes",
            rules::MAX_REASON_BYTES
        )));
    }
    let context_len = body.context.as_ref().map_or(0, |c| c.to_string().len());
    if context_len > rules::MAX_CONTEXT_BYTES {
        return Err(bad(format!(
            "`context` must be at most {} bytes as JSON",
            rules::MAX_CONTEXT_BYTES
        )));
    }
    if body
        .task_id
        .as_ref()
        .is_some_and(|t| t.chars().count() > rules::MAX_TASK_ID_CHARS)
    {
        return Err(bad(format!(
            "`task_id` must be at most {} characters",
            rules::MAX_TASK_ID_CHARS
        )));
    }
    let expires_in_s = body.expires_in_s.unwrap_or(rules::DEFAULT_EXPIRES_IN_S);
    if !(1..=rules::MAX_EXPIRES_IN_S).contains(&expires_in_s) {
        return Err(bad(format!(
            "`expires_in_s` must be between 1 and {} seconds",
            rules::MAX_EXPIRES_IN_S
        )));
    }
    let on_expiry = match body.on_expiry.as_deref() {
        None => OnExpiry::default(),
        Some(raw) => raw.parse().map_err(bad)?,
    };
    Ok(NewApproval {
        action: action.to_owned(),
        reason: body.reason,
        context: body.context.filter(|c| !c.is_null()),
        task_id: body.task_id,
        expires_in_s,
        on_expiry,
    })
}

/// Asks for approval: the workspace itself only. The request goes to its
/// nearest live ancestor (an `approval_requested` inbox row) and to the
/// operator; the decision comes back as an `approval_decided` inbox row.
#[utoipa::path(post, path = "/workspaces/{id}/approvals", tag = "approvals",
    params(("id" = String, Path, description = "workspace id")),
    request_body = NewApprovalRequest,
    responses((status = 201, body = ApprovalCreated), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn create_approval(
    State(state): State<AppState>,
    ws: LiveWorkspace<WorkspaceItself>,
    Json(body): Json<NewApprovalRequest>,
) -> Result<(StatusCode, Json<ApprovalCreated>)> {
    let created = request_approval(&state, ws.row.id, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Asks for approval as workspace `me` (checked live by the caller): the
/// rules, the rows, the announcement and the audit row of
/// `POST /workspaces/:id/approvals`, shared with the MCP tool
/// `request_approval`.
pub(crate) async fn request_approval(
    state: &AppState,
    me: WorkspaceId,
    body: NewApprovalRequest,
) -> Result<ApprovalCreated> {
    let new = checked(body)?;
    // The audit row commits with the request (see `crate::audit`).
    let row = |a: &Approval| {
        Entry::new(Actor::Workspace(a.workspace_id), "approval.requested")
            .workspace(a.workspace_id)
            .target(format!("approval:{}", a.id))
            .details(serde_json::json!({
                "action": a.action,
                "task_id": a.task_id,
                "approver_id": a.approver_id,
                "on_expiry": a.on_expiry.as_str(),
            }))
            .into_new()
    };
    let (a, inbox) = state
        .store
        .create_approval_audited(me, &new, domain::now(), Some(&state.audit.within(&row)))
        .await?
        .ok_or_else(Error::workspace_not_found)?;
    crate::jobs::announce_approval(&state.bus, &state.metrics, &a, inbox.as_ref()).await;
    Ok(ApprovalCreated {
        approval_id: a.id,
        status: a.status.as_str().to_owned(),
        approver_id: a.approver_id,
        expires_at: a.expires_at,
    })
}

/// A workspace's approval requests (or, `role=decider`, those it may decide).
#[utoipa::path(get, path = "/workspaces/{id}/approvals", tag = "approvals",
    params(("id" = String, Path, description = "workspace id"), ListParams),
    responses((status = 200, body = Vec<ApprovalView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_approvals(
    State(state): State<AppState>,
    ws: KnownWorkspace,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<ApprovalView>>> {
    let status: Option<ApprovalStatus> = params
        .status
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(bad)?;
    let rows = match params.role.as_deref() {
        None | Some("requester") => state.store.list_approvals(ws.row.id, status).await?,
        Some("decider") => {
            let mut rows = state.store.pending_approvals_for(Some(ws.row.id)).await?;
            rows.retain(|a| status.is_none_or(|s| a.status == s));
            rows
        }
        Some(other) => {
            return Err(bad(format!(
                "`role` must be requester or decider, not `{other}`"
            )))
        }
    };
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// One approval request of the workspace.
#[utoipa::path(get, path = "/workspaces/{id}/approvals/{aid}", tag = "approvals",
    params(("id" = String, Path, description = "workspace id"), ("aid" = String, Path, description = "approval id")),
    responses((status = 200, body = ApprovalView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_approval(
    State(state): State<AppState>,
    SelfOrOperator(ApprovalPath(ws, id), _): SelfOrOperator<ApprovalPath>,
) -> Result<Json<ApprovalView>> {
    let a = state
        .store
        .get_approval(ws, id)
        .await?
        .ok_or_else(approval_not_found)?;
    Ok(Json(a.into()))
}

/// Decides a pending request, exactly once: the operator, or the
/// workspace that is its current decider (the requester's parent, or the
/// ancestor it was escalated to). Of racing decisions one answers 200; the
/// others 409 with the decision that won in `current_status`.
#[utoipa::path(post, path = "/workspaces/{id}/approvals/{aid}/decide", tag = "approvals",
    params(("id" = String, Path, description = "requesting workspace id"), ("aid" = String, Path, description = "approval id")),
    request_body = DecideRequest,
    responses((status = 200, body = ApprovalView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn decide_approval(
    State(state): State<AppState>,
    ApprovalDecider(ApprovalPath(ws, id), who): ApprovalDecider,
    Json(body): Json<DecideRequest>,
) -> Result<Json<ApprovalView>> {
    let decision: Decision = body
        .decision
        .as_deref()
        .ok_or_else(|| bad("`decision` is required: approved or denied"))?
        .parse()
        .map_err(bad)?;
    if body
        .note
        .as_ref()
        .is_some_and(|n| n.len() > rules::MAX_NOTE_BYTES)
    {
        return Err(bad(format!(
            "`note` must be at most {} bytes",
            rules::MAX_NOTE_BYTES
        )));
    }
    let by = match who {
        Principal::Operator => DecidedBy::Operator,
        Principal::Workspace(w) => DecidedBy::Workspace(w),
    };
    let note = body.note.as_deref().filter(|n| !n.is_empty());
    // The audit row commits with the decision (see `crate::audit`).
    let row = |a: &Approval| {
        Entry::new(super::audit::actor(who), "approval.decided")
            .workspace(a.workspace_id)
            .target(format!("approval:{}", a.id))
            .details(serde_json::json!({
                "action": a.action,
                "decision": a.status.as_str(),
                "decided_by": a.decided_by.map(|d| d.to_string()),
            }))
            .into_new()
    };
    let audit = state.audit.within(&row);
    match state
        .store
        .decide_approval_audited(ws, id, by, decision, note, domain::now(), Some(&audit))
        .await?
    {
        Decided::Done(a, inbox) => {
            crate::jobs::announce_approval(&state.bus, &state.metrics, &a, Some(&inbox)).await;
            Ok(Json(a.into()))
        }
        Decided::Already(a) => Err(Error::StatusConflict {
            message: format!(
                "this approval was already decided: {} by {}",
                a.status,
                a.decided_by.map(|d| d.to_string()).unwrap_or_default()
            ),
            current_status: Some(a.status.as_str().to_owned()),
        }),
        Decided::NotFound => Err(approval_not_found()),
    }
}

/// Every pending request of the fleet, oldest first (the operator's inbox).
#[utoipa::path(get, path = "/approvals/pending", tag = "approvals",
    responses((status = 200, body = Vec<ApprovalView>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn list_pending_approvals(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<Vec<ApprovalView>>> {
    let rows = state.store.pending_approvals_for(None).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// Server-Sent Events for the operator's approvals inbox: every move of
/// every request (`event: approval`), and `event: resync` when moves may
/// have been missed: re-read `/approvals/pending` then. The stream ends
/// when its token is revoked.
#[utoipa::path(get, path = "/approvals/events", tag = "approvals",
    responses((status = 200, description = "text/event-stream"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn stream_approval_events(
    State(state): State<AppState>,
    Operator((), session): Operator<(), Session>,
) -> Result<Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>>> {
    Ok(super::stream::operator_feed(
        &state,
        session,
        |event| match event {
            Event::Approval(moved) => SseEvent::default().event("approval").json_data(&moved).ok(),
            _ => None,
        },
    ))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_approval, list_approvals))
        .routes(routes!(get_approval))
        .routes(routes!(decide_approval))
        .routes(routes!(list_pending_approvals))
        .routes(routes!(stream_approval_events))
}
