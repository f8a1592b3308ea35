//! The audit trail over HTTP: a workspace's trail
//! (`GET /workspaces/:id/audit`, the workspace itself or the operator),
//! the fleet's (`GET /admin/audit`), an agent's own records
//! (`POST /workspaces/:id/audit`: Molecule's `task_start`, `llm_call`,
//! `tool_call`, `task_end`), and the fleet's event log read from the same
//! rows (`GET /events`, `GET /events/:id`, newest first).
//!
//! The listings answer `chain_valid` by walking the whole chain
//! ([`crate::audit::Auditor::verify`]), so a row edited or deleted in the
//! database shows at the next read, with the first broken row named.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{KnownWorkspace, LiveWorkspace, Operator, WorkspaceItself};
use super::auth::Principal;
use super::extract::{Query, WorkspacePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::audit::Entry;
use crate::domain::audit::{Actor, Broken, AGENT_ACTIONS};
use crate::domain::WorkspaceId;
use crate::store::{AuditFilter, AuditRecord};

/// Rows per page unless `limit` says otherwise.
const DEFAULT_LIMIT: i64 = 100;
/// The most rows one page shows.
const MAX_LIMIT: i64 = 1000;
/// The most an agent's record may carry in `details`, as JSON.
const MAX_DETAILS_BYTES: usize = 8 * 1024;
/// The longest `task_id`, `input_hash` or `output_hash`.
const MAX_FIELD_CHARS: usize = 200;

/// Who made a request, as the trail names it.
pub(super) fn actor(who: Principal) -> Actor {
    match who {
        Principal::Operator => Actor::Operator,
        Principal::Workspace(w) => Actor::Workspace(w),
    }
}

/// Appends a row for a change that has committed (a failure is logged:
/// the change stands).
pub(super) async fn record(state: &AppState, entry: Entry) {
    state.audit.record(state.store.as_ref(), entry).await;
}

/// One row of the trail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct AuditEventView {
    /// Its place in the chain, from 1.
    pub seq: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// `operator`, `workspace:<id>`, `system`, or `token:<id>` (a refused token).
    pub actor: String,
    /// What happened, e.g. `secret.set`, `approval.decided`, `tool_call`.
    pub action: String,
    /// The workspace it concerns.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub workspace_id: Option<WorkspaceId>,
    /// What was acted on, e.g. `secret:API_KEY`.
    pub target: Option<String>,
    /// Names and ids, never secret values.
    #[schema(value_type = Object)]
    pub details: Value,
    /// SHA-256 of the details as stored (hex).
    pub details_hash: String,
    /// The previous row's hash (hex).
    pub prev_hash: String,
    /// HMAC-SHA256 over `prev_hash` and this row (hex).
    pub hash: String,
}

impl From<AuditRecord> for AuditEventView {
    fn from(r: AuditRecord) -> Self {
        Self {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            workspace_id: r.workspace_id,
            // A row whose details were edited into non-JSON still shows
            // (as a string); `chain_valid` says it was edited.
            details: serde_json::from_str(&r.details).unwrap_or(Value::String(r.details)),
            target: r.target,
            details_hash: r.details_hash,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// The first row of the chain that does not check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct BrokenRow {
    /// Its `seq` (for deleted rows: the first missing one).
    pub seq: i64,
    /// What is wrong with it.
    pub reason: String,
}

impl From<Broken> for BrokenRow {
    fn from(b: Broken) -> Self {
        Self {
            seq: b.seq,
            reason: b.reason,
        }
    }
}

/// A page of the trail, with the verdict on the whole chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    /// The rows, newest first.
    pub events: Vec<AuditEventView>,
    /// How many rows the filter selects in all.
    pub total: i64,
    /// True when every row of the whole trail checks.
    pub chain_valid: bool,
    /// The first broken row when `chain_valid` is false.
    pub first_broken: Option<BrokenRow>,
}

/// `?from&to&actor&action&limit&offset` (and, for `/admin/audit`,
/// `workspace_id`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct AuditParams {
    /// Only rows at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only rows before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Only this actor (`operator`, `workspace:<id>`, `system`, `token:<id>`).
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// At most this many rows (1 to 1000, default 100).
    pub limit: Option<i64>,
    /// Skip this many rows first (default 0).
    pub offset: Option<i64>,
    /// `/admin/audit` only: rows about this workspace.
    #[param(value_type = Option<String>, format = Uuid)]
    pub workspace_id: Option<WorkspaceId>,
}

fn bad(e: impl ToString) -> Error {
    Error::BadRequest(e.to_string())
}

fn page_bounds(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64)> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(format!("`limit` must be between 1 and {MAX_LIMIT}")));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(bad("`offset` must not be negative"));
    }
    Ok((limit, offset))
}

fn filter(params: AuditParams, workspace_id: Option<WorkspaceId>) -> Result<AuditFilter> {
    let (limit, offset) = page_bounds(params.limit, params.offset)?;
    Ok(AuditFilter {
        workspace_id,
        from: params.from,
        to: params.to,
        actor: params.actor,
        action: params.action,
        limit,
        offset,
    })
}

async fn page(state: &AppState, filter: AuditFilter) -> Result<Json<AuditPage>> {
    let (rows, total) = state.store.list_audit(&filter).await?;
    let report = state.audit.verify(state.store.as_ref()).await?;
    Ok(Json(AuditPage {
        events: rows.into_iter().map(Into::into).collect(),
        total,
        chain_valid: report.valid(),
        first_broken: report.first_broken.map(Into::into),
    }))
}

/// The rows about one workspace, newest first, and whether the whole chain
/// checks. The workspace itself or the operator.
#[utoipa::path(get, path = "/workspaces/{id}/audit", tag = "audit",
    params(("id" = String, Path, description = "workspace id"), AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_workspace_audit(
    State(state): State<AppState>,
    ws: KnownWorkspace,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditPage>> {
    if params.workspace_id.is_some() {
        return Err(bad(
            "`workspace_id` is for /admin/audit; the path names the workspace",
        ));
    }
    page(&state, filter(params, Some(ws.row.id))?).await
}

/// Every row of the trail (or those `workspace_id` names), newest first,
/// and whether the whole chain checks. The operator only.
#[utoipa::path(get, path = "/admin/audit", tag = "audit",
    params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_audit(
    State(state): State<AppState>,
    _: Operator,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditPage>> {
    let ws = params.workspace_id;
    page(&state, filter(params, ws)?).await
}

/// `POST /workspaces/:id/audit` body: what the agent did.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct NewAgentRecord {
    /// `task_start`, `llm_call`, `tool_call` or `task_end`.
    pub action: Option<String>,
    /// The agent's task id.
    pub task_id: Option<String>,
    /// A hash of the input (e.g. `sha256:…`); never the input itself.
    pub input_hash: Option<String>,
    /// A hash of the output.
    pub output_hash: Option<String>,
    /// Anything else (a JSON object, at most 8 KiB): model, tool name,
    /// token counts, duration.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// The record with every rule checked, as the row's details.
fn agent_details(body: &NewAgentRecord) -> Result<Value> {
    let mut out = Map::new();
    for (name, value) in [
        ("task_id", &body.task_id),
        ("input_hash", &body.input_hash),
        ("output_hash", &body.output_hash),
    ] {
        if let Some(v) = value {
            if v.chars().count() > MAX_FIELD_CHARS {
                return Err(bad(format!(
                    "`{name}` must be at most {MAX_FIELD_CHARS} characters"
                )));
            }
            out.insert(name.to_owned(), json!(v));
        }
    }
    match &body.details {
        None | Some(Value::Null) => {}
        Some(d @ Value::Object(_)) => {
            if d.to_string().len() > MAX_DETAILS_BYTES {
                return Err(bad(format!(
                    "`details` must be at most {MAX_DETAILS_BYTES} bytes as JSON"
                )));
            }
            out.insert("details".to_owned(), d.clone());
        }
        Some(_) => return Err(bad("`details` must be a JSON object")),
    }
    Ok(Value::Object(out))
}

/// An agent records what it did (Molecule's task_start / llm_call /
/// tool_call / task_end, with hashes of inputs and outputs). The workspace
/// itself only; the row's actor is the workspace, so an agent cannot
/// write as the operator or as another workspace.
#[utoipa::path(post, path = "/workspaces/{id}/audit", tag = "audit",
    params(("id" = String, Path, description = "workspace id")),
    request_body = NewAgentRecord,
    responses((status = 201, body = AuditEventView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn create_audit_record(
    State(state): State<AppState>,
    ws: LiveWorkspace<WorkspaceItself>,
    Json(body): Json<NewAgentRecord>,
) -> Result<(StatusCode, Json<AuditEventView>)> {
    let action = body.action.as_deref().unwrap_or_default();
    if !AGENT_ACTIONS.contains(&action) {
        return Err(bad(format!(
            "`action` must be one of {}",
            AGENT_ACTIONS.join(", ")
        )));
    }
    let details = agent_details(&body)?;
    let mut entry = Entry::new(Actor::Workspace(ws.row.id), action)
        .workspace(ws.row.id)
        .details(details);
    if let Some(task) = &body.task_id {
        entry = entry.target(format!("task:{task}"));
    }
    let row = state.audit.append(state.store.as_ref(), entry).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// `?limit` of the event log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct EventParams {
    /// At most this many events (1 to 1000, default 100).
    pub limit: Option<i64>,
    /// Skip this many first (default 0).
    pub offset: Option<i64>,
}

async fn events(
    state: &AppState,
    params: EventParams,
    workspace_id: Option<WorkspaceId>,
) -> Result<Json<Vec<AuditEventView>>> {
    let (limit, offset) = page_bounds(params.limit, params.offset)?;
    let (rows, _) = state
        .store
        .list_audit(&AuditFilter {
            workspace_id,
            limit,
            offset,
            ..AuditFilter::default()
        })
        .await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// The fleet's structured events, newest first (Molecule's event log),
/// read from the audit trail. The operator only.
#[utoipa::path(get, path = "/events", tag = "audit",
    params(EventParams),
    responses((status = 200, body = Vec<AuditEventView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_events(
    State(state): State<AppState>,
    _: Operator,
    Query(params): Query<EventParams>,
) -> Result<Json<Vec<AuditEventView>>> {
    events(&state, params, None).await
}

/// One workspace's events, newest first. The operator only.
#[utoipa::path(get, path = "/events/{id}", tag = "audit",
    params(("id" = String, Path, description = "workspace id"), EventParams),
    responses((status = 200, body = Vec<AuditEventView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn list_workspace_events(
    State(state): State<AppState>,
    ws: KnownWorkspace<Operator<WorkspacePath>>,
    Query(params): Query<EventParams>,
) -> Result<Json<Vec<AuditEventView>>> {
    events(&state, params, Some(ws.row.id)).await
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workspace_audit, create_audit_record))
        .routes(routes!(list_audit))
        .routes(routes!(list_events))
        .routes(routes!(list_workspace_events))
}
