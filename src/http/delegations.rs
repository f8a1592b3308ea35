//! Delegation between workspaces: a caller hands a task to a callee
//! (`POST /workspaces/:target/delegate`), the callee reports progress and
//! the outcome (`…/delegations/:did/status`, `…/heartbeat`), both parties
//! read the ledger, and the operator has the global views.
//!
//! The ledger row and the inbox row that carries it (the callee's
//! `delegate`, later the caller's `delegation_result`) are always written in
//! one transaction by the store; the status machine is
//! [`crate::domain::DelegationStatus::transition`]; what surrounds each move
//! (metric, log event, wake-up) is [`crate::ledger`].

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use chrono::{DateTime, Duration as Span, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{
    known_workspace, live_workspace, Callee, Calling, OnBehalf, Operator, SelfOrOperator,
};
use super::auth::Session;
use super::extract::{DelegationPath, Query, WorkspacePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::audit::Entry;
use crate::domain::audit::Actor;
use crate::domain::inbox::{Delegate, InboxItem};
use crate::domain::{self, Caller, DelegationId, DelegationStatus, DeliveryMode, WorkspaceId};
use crate::events::Event;
use crate::store::{
    BeatOutcome, Delegated, Delegation, DelegationFilter, NewDelegation, PartyRole, ReportOutcome,
    StatusReport,
};

/// Longest accepted task, in bytes.
pub(super) const MAX_TASK_BYTES: usize = 64 * 1024;
/// Longest accepted `deadline_s`: the activity retention's default, past
/// which the inbox row announcing the task would be gone anyway.
pub(super) const MAX_DEADLINE_S: i64 = 7 * 24 * 3600;
/// Largest accepted `limit` of a listing.
pub(super) const MAX_LIMIT: i64 = 500;

/// A ledger row as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct DelegationView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: DelegationId,
    /// The delegating workspace's id, or `operator`.
    pub caller_id: String,
    /// The workspace asked to do it.
    #[schema(value_type = String, format = Uuid)]
    pub callee_id: WorkspaceId,
    /// The first 200 characters of the task.
    pub task_preview: String,
    /// The whole task.
    pub task: String,
    /// The caller's key for exactly-once creation.
    pub idempotency_key: String,
    /// Where it is.
    pub status: DelegationStatus,
    /// The start of the callee's answer.
    pub result_preview: Option<String>,
    /// Why it failed or stalled.
    pub error_detail: Option<String>,
    /// Past this, the sweeper fails it.
    pub deadline_at: Option<DateTime<Utc>>,
    /// The callee's last report or heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it was completed or failed.
    pub completed_at: Option<DateTime<Utc>>,
    /// The W3C context its callee was handed (null on rows from before
    /// traces).
    #[serde(default)]
    pub traceparent: Option<String>,
    /// Its trace, for `GET /traces/:trace_id`.
    #[serde(default)]
    pub trace_id: Option<String>,
}

impl From<Delegation> for DelegationView {
    fn from(d: Delegation) -> Self {
        Self {
            id: d.id,
            caller_id: d.caller.to_string(),
            callee_id: d.callee_id,
            task_preview: d.task_preview,
            task: d.task,
            idempotency_key: d.idempotency_key,
            status: d.status,
            result_preview: d.result_preview,
            error_detail: d.error_detail,
            deadline_at: d.deadline_at,
            last_heartbeat_at: d.last_heartbeat_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
            completed_at: d.completed_at,
            traceparent: d.traceparent.map(|p| p.header()),
            trace_id: d.traceparent.map(|p| p.trace_id()),
        }
    }
}

/// Body of `POST /workspaces/:target/delegate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct NewDelegationRequest {
    /// What the callee should do (non-empty, at most 64 KiB).
    pub task: String,
    /// Exactly once per caller and key (1–200 characters). Default: derived
    /// from the target, the task and the current minute, like the SDK's.
    pub idempotency_key: Option<String>,
    /// Seconds from now after which the delegation fails (1 to 604800).
    pub deadline_s: Option<i64>,
    /// The caller's trace context (the `traceparent` header, or MCP's
    /// `_meta.traceparent`), never the body.
    #[serde(skip)]
    #[schema(ignore)]
    pub traceparent: Option<domain::TraceParent>,
}

/// Answer of `POST /workspaces/:target/delegate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct DelegationCreated {
    /// The ledger row.
    #[schema(value_type = String, format = Uuid)]
    pub delegation_id: DelegationId,
    /// `queued` for a new one; the current status for a repeat.
    pub status: DelegationStatus,
    /// True when the key was used before and nothing new was delivered.
    pub deduplicated: bool,
}

/// The communication rule (`domain::team`): a workspace delegates only to
/// its parent, its children and its siblings; the operator to anyone.
async fn check_communication(state: &AppState, caller: Caller, target: WorkspaceId) -> Result<()> {
    let Caller::Workspace(from) = caller else {
        return Ok(());
    };
    let from = super::auth::node_of(state, &live_workspace(state, from).await?).await?;
    let to = super::auth::node_of(state, &live_workspace(state, target).await?).await?;
    super::auth::require_reach(&domain::team::Caller::Workspace(from), &to)
}

/// A spent budget over the target: the refusal is a failed ledger row
/// (never silently dropped) and a 402. A repeat of a key passes, to be
/// answered as a repeat.
async fn refuse_if_spent(state: &AppState, new: &NewDelegation, now: DateTime<Utc>) -> Result<()> {
    let Err(refused) = super::usage::require_budget(state, new.callee_id).await else {
        return Ok(());
    };
    match state
        .store
        .refuse_delegation(new, super::usage::BUDGET_EXCEEDED, now)
        .await?
    {
        Some(d) => {
            crate::ledger::announce_refused(&state.bus, &state.metrics, &d).await;
            Err(refused)
        }
        None => Ok(()),
    }
}

/// The SDK's default key: the same task to the same target within one
/// minute is one delegation.
fn default_key(target: WorkspaceId, task: &str, now: DateTime<Utc>) -> String {
    let minute = now.timestamp().div_euclid(60);
    let digest = Sha256::digest(format!("{target}\n{minute}\n{task}").as_bytes());
    hex::encode(digest)
}

/// Hands a task to the target workspace: a ledger row and the callee's
/// inbox row, in one transaction. A repeat of a caller's key returns the
/// same delegation and delivers nothing new.
#[utoipa::path(post, path = "/workspaces/{id}/delegate", tag = "delegations",
    params(("id" = String, Path, description = "the target (callee) workspace"),
           ("X-Workspace-ID" = Option<String>, Header, description = "the calling workspace (a workspace token must name itself)")),
    request_body = NewDelegationRequest,
    responses((status = 202, body = DelegationCreated), (status = 200, description = "a repeat of the key", body = DelegationCreated),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn create_delegation(
    State(state): State<AppState>,
    Calling {
        caller,
        principal,
        path: WorkspacePath(target),
        ..
    }: Calling<OnBehalf, WorkspacePath>,
    headers: axum::http::HeaderMap,
    Json(mut body): Json<NewDelegationRequest>,
) -> Result<(StatusCode, Json<DelegationCreated>)> {
    body.traceparent = super::traces::incoming(&headers);
    let actor = super::audit::actor(principal);
    let (status, created) = delegate_by(&state, actor, caller, target, body).await?;
    Ok((status, Json(created)))
}

/// Hands `body`'s task from `caller` to `target` (the MCP delegation
/// tools, where the caller is the token's own): 202 for a new delegation,
/// 200 for a repeat.
pub(super) async fn delegate(
    state: &AppState,
    caller: Caller,
    target: WorkspaceId,
    body: NewDelegationRequest,
) -> Result<(StatusCode, DelegationCreated)> {
    delegate_by(state, actor_of(caller), caller, target, body).await
}

/// The audit actor of a caller that is its token's own principal.
pub(super) fn actor_of(caller: Caller) -> Actor {
    match caller {
        Caller::Workspace(w) => Actor::Workspace(w),
        Caller::Operator => Actor::Operator,
        Caller::Schedule(_) => Actor::System,
    }
}

/// Records a new delegation in the audit trail: who, caller → callee and
/// its id; never the task's text (it may hold anything).
pub(super) async fn audit_created(state: &AppState, actor: Actor, d: &Delegation) {
    let entry = Entry::new(actor, "delegation.created")
        .workspace(d.callee_id)
        .target(format!("delegation:{}", d.id))
        .details(serde_json::json!({
            "delegation_id": d.id,
            "caller_id": d.caller.to_string(),
            "callee_id": d.callee_id,
        }));
    super::audit::record(state, entry).await;
}

/// [`delegate`] made by `actor` (the route: the operator may delegate as
/// a workspace it names, and is then still the actor).
pub(super) async fn delegate_by(
    state: &AppState,
    actor: Actor,
    caller: Caller,
    target: WorkspaceId,
    body: NewDelegationRequest,
) -> Result<(StatusCode, DelegationCreated)> {
    let now = domain::now();
    if body.task.trim().is_empty() {
        return Err(Error::BadRequest("`task` must not be empty".into()));
    }
    if body.task.len() > MAX_TASK_BYTES {
        return Err(Error::BadRequest(format!(
            "`task` must be at most {MAX_TASK_BYTES} bytes"
        )));
    }
    let key = match body.idempotency_key {
        Some(k) if (1..=200).contains(&k.chars().count()) && !k.trim().is_empty() => k,
        Some(_) => {
            return Err(Error::BadRequest(
                "`idempotency_key` must be 1 to 200 characters".into(),
            ))
        }
        None => default_key(target, &body.task, now),
    };
    let deadline_at = match body.deadline_s {
        None => None,
        Some(s) if (1..=MAX_DEADLINE_S).contains(&s) => Some(now + Span::seconds(s)),
        Some(_) => {
            return Err(Error::BadRequest(format!(
                "`deadline_s` must be between 1 and {MAX_DEADLINE_S} seconds"
            )))
        }
    };
    // A removed workspace answers nothing: 404, as to a workspace caller.
    let callee = live_workspace(state, target).await?;
    if caller == Caller::Workspace(target) {
        return Err(Error::Unprocessable(
            "a workspace cannot delegate to itself".into(),
        ));
    }
    check_communication(state, caller, target).await?;
    let new = NewDelegation {
        id: DelegationId::new(),
        caller,
        callee_id: target,
        task: body.task,
        idempotency_key: key,
        deadline_at,
        trace: domain::Hop::open(body.traceparent),
    };
    refuse_if_spent(state, &new, now).await?;
    let inbox = InboxItem::Delegate(Delegate {
        delegation_id: new.id,
        caller,
        callee: target,
        task: new.task.clone(),
        deadline: deadline_at,
        idempotency_key: new.idempotency_key.clone(),
        traceparent: Some(new.trace.context),
    })
    .row();
    match state.store.create_delegation(&new, &inbox, now).await? {
        Delegated::Created { delegation, inbox } => {
            crate::ledger::announce_created(&state.bus, &state.metrics, &delegation, &inbox).await;
            audit_created(state, actor, &delegation).await;
            if callee.delivery_mode == DeliveryMode::Push {
                super::forwarder(state).spawn(delegation.clone());
            }
            Ok((
                StatusCode::ACCEPTED,
                DelegationCreated {
                    delegation_id: delegation.id,
                    status: delegation.status,
                    deduplicated: false,
                },
            ))
        }
        Delegated::CalleeGone => Err(Error::workspace_not_found()),
        Delegated::Existing(d) if d.callee_id != target => Err(Error::StatusConflict {
            message: "this idempotency_key was already used for a delegation to another workspace"
                .into(),
            current_status: None,
        }),
        Delegated::Existing(d) => {
            tracing::info!(delegation_id = %d.id, caller_id = %d.caller, "delegation repeated; nothing delivered");
            Ok((
                StatusCode::OK,
                DelegationCreated {
                    delegation_id: d.id,
                    status: d.status,
                    deduplicated: true,
                },
            ))
        }
    }
}

/// Body of a callee's status report.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct StatusReportRequest {
    /// `dispatched`, `in_progress`, `completed` or `failed` (`queued` only
    /// as a repeat; `stuck` is the sweeper's).
    pub status: String,
    /// The start of the answer (kept up to 4096 characters).
    pub result_preview: Option<String>,
    /// The error (kept up to 4096 characters).
    pub error_detail: Option<String>,
    /// What the task cost: `{input_tokens, output_tokens, model,
    /// cost_usd?}`, added to the callee's usage.
    #[schema(value_type = Option<Object>)]
    pub usage: Option<serde_json::Value>,
}

fn delegation_not_found() -> Error {
    Error::delegation_not_found()
}

fn conflict(current: DelegationStatus, message: String) -> Error {
    Error::StatusConflict {
        message,
        current_status: Some(current.as_str().to_owned()),
    }
}

/// The callee reports progress or the outcome. Forward only; a repeat of
/// the current status still applies a non-empty preview; on completed or
/// failed, a workspace caller gets a `delegation_result` inbox row.
#[utoipa::path(post, path = "/workspaces/{id}/delegations/{did}/status", tag = "delegations",
    params(("id" = String, Path, description = "the callee workspace"), ("did" = String, Path, description = "delegation id")),
    request_body = StatusReportRequest,
    responses((status = 200, body = DelegationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn report_delegation_status(
    State(state): State<AppState>,
    Callee(DelegationPath(callee, id)): Callee,
    Json(body): Json<StatusReportRequest>,
) -> Result<Json<DelegationView>> {
    let status: DelegationStatus = body
        .status
        .parse()
        .map_err(|e: domain::StatusError| Error::BadRequest(e.to_string()))?;
    if status == DelegationStatus::Stuck {
        return Err(Error::BadRequest(
            "`stuck` is set by the sweeper; report in_progress, completed or failed".into(),
        ));
    }
    let usage = body
        .usage
        .as_ref()
        .map(crate::domain::usage::Usage::parse)
        .transpose()
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let report = StatusReport {
        status,
        result_preview: body.result_preview,
        error_detail: body.error_detail,
    };
    match state
        .store
        .report_delegation(callee, id, &report, domain::now())
        .await?
    {
        ReportOutcome::Applied(t) => {
            crate::ledger::announce_move(&state.bus, &state.metrics, &t).await;
            // Only a report that moved the row counts: a retried report
            // (a repeat of the status) is not billed twice.
            if let Some(usage) = usage.filter(|_| t.from != t.delegation.status) {
                let (input, output) = (usage.input_tokens, usage.output_tokens);
                let model = usage.model.clone();
                let cost = super::usage::account(&state, callee, usage).await?;
                // The delegation's span in its trace carries what it cost.
                state
                    .store
                    .add_delegation_usage(id, input, output, cost, &model)
                    .await?;
            }
            Ok(Json(t.delegation.into()))
        }
        ReportOutcome::Refused(r) => Err(conflict(r.current, r.to_string())),
        ReportOutcome::NotFound => Err(delegation_not_found()),
    }
}

/// The callee says it is still working: bumps `last_heartbeat_at`, so the
/// sweeper does not mark the delegation stuck.
#[utoipa::path(post, path = "/workspaces/{id}/delegations/{did}/heartbeat", tag = "delegations",
    params(("id" = String, Path, description = "the callee workspace"), ("did" = String, Path, description = "delegation id")),
    responses((status = 200, body = DelegationView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn heartbeat_delegation(
    State(state): State<AppState>,
    Callee(DelegationPath(callee, id)): Callee,
) -> Result<Json<DelegationView>> {
    match state
        .store
        .heartbeat_delegation(callee, id, domain::now())
        .await?
    {
        BeatOutcome::Beat(d) => {
            crate::ledger::announce_heartbeat(&state.bus, &d).await;
            Ok(Json(d.into()))
        }
        BeatOutcome::Over(current) => Err(conflict(
            current,
            format!("the delegation is already {current}; there is nothing to keep alive"),
        )),
        BeatOutcome::NotFound => Err(delegation_not_found()),
    }
}

/// Query of the listings.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct ListParams {
    /// `caller` or `callee` (workspace listing only; default: both).
    pub role: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// At most this many (1–500, default 100).
    pub limit: Option<i64>,
    /// The id of the last row of the previous page: only the rows listed
    /// after it (older, newest first).
    pub before: Option<String>,
}

/// The filter of a listing, its `before` cursor read from the ledger (a
/// cursor naming no delegation of the listing is a 400).
async fn read_filter(
    state: &AppState,
    mut params: ListParams,
    party: Option<WorkspaceId>,
) -> Result<DelegationFilter> {
    let before = params.before.take();
    let mut filter = parse_filter(params, party)?;
    if let Some(raw) = before {
        let unknown = || {
            Error::BadRequest(format!(
                "`before` names no delegation of this listing: `{}`",
                domain::truncate_chars(&raw, 64)
            ))
        };
        let id: DelegationId = raw.parse().map_err(|_| unknown())?;
        let row = state.store.get_delegation(id).await?.ok_or_else(unknown)?;
        if party.is_some_and(|p| row.callee_id != p && row.caller != Caller::Workspace(p)) {
            return Err(unknown());
        }
        filter.before = Some((row.created_at, row.id));
    }
    Ok(filter)
}

fn parse_filter(params: ListParams, party: Option<WorkspaceId>) -> Result<DelegationFilter> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::BadRequest(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let status = params
        .status
        .map(|s| s.parse::<DelegationStatus>())
        .transpose()
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let role = match params.role.as_deref() {
        None | Some("") => PartyRole::Either,
        Some("caller") => PartyRole::Caller,
        Some("callee") => PartyRole::Callee,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "`role` must be caller or callee, not `{}`",
                domain::truncate_chars(other, 64)
            )))
        }
    };
    Ok(DelegationFilter {
        party: party.map(|id| (id, role)),
        status,
        limit,
        before: None,
    })
}

/// The delegations a workspace made or received, newest first.
#[utoipa::path(get, path = "/workspaces/{id}/delegations", tag = "delegations",
    params(("id" = String, Path, description = "workspace id"), ListParams),
    responses((status = 200, body = [DelegationView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_workspace_delegations(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<DelegationView>>> {
    known_workspace(&state, id).await?;
    let filter = read_filter(&state, params, Some(id)).await?;
    let rows = state.store.list_delegations(&filter).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// One delegation, for either party (or the operator through either).
#[utoipa::path(get, path = "/workspaces/{id}/delegations/{did}", tag = "delegations",
    params(("id" = String, Path, description = "the caller or callee workspace"), ("did" = String, Path, description = "delegation id")),
    responses((status = 200, body = DelegationView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_delegation(
    State(state): State<AppState>,
    SelfOrOperator(DelegationPath(party, id), _): SelfOrOperator<DelegationPath>,
) -> Result<Json<DelegationView>> {
    match state.store.get_delegation(id).await? {
        Some(d) if d.callee_id == party || d.caller == Caller::Workspace(party) => {
            Ok(Json(d.into()))
        }
        _ => Err(delegation_not_found()),
    }
}

/// Every delegation, newest first (operator only).
#[utoipa::path(get, path = "/admin/delegations", tag = "delegations",
    params(ListParams),
    responses((status = 200, body = [DelegationView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_all_delegations(
    State(state): State<AppState>,
    _: Operator,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<DelegationView>>> {
    let filter = read_filter(&state, params, None).await?;
    let rows = state.store.list_delegations(&filter).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// Server-Sent Events for the operator's global view: every move of every
/// delegation (`event: delegation`, the same body a workspace's own stream
/// carries), and `event: resync` when moves may have been missed (a lagging
/// reader, a lost database listener): re-read the listing then. Operator
/// only; the stream ends at shutdown, or when its token is revoked.
#[utoipa::path(get, path = "/admin/delegations/events", tag = "delegations",
    responses((status = 200, description = "text/event-stream"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn stream_delegation_events(
    State(state): State<AppState>,
    Operator((), session): Operator<(), Session>,
) -> Result<Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>>> {
    Ok(super::stream::operator_feed(
        &state,
        session,
        |event| match event {
            Event::Delegation(moved) => SseEvent::default()
                .event("delegation")
                .json_data(&moved)
                .ok(),
            _ => None,
        },
    ))
}

/// Figures over the ledger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct DelegationStatsView {
    /// Rows per status; every status is present.
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, i64>,
    /// Age of the oldest delegation not yet completed or failed, in
    /// seconds (null if none).
    pub oldest_in_flight_age_s: Option<i64>,
    /// Delegations completed in the last 24 h.
    pub completed_24h: i64,
    /// Median created → completed time over the last 24 h, in seconds.
    pub p50_completion_s: Option<f64>,
    /// 95th percentile of the same.
    pub p95_completion_s: Option<f64>,
}

/// Nearest-rank percentile of ascending values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Counts per status, the oldest delegation in flight, and completion
/// times over the last 24 h (operator only).
#[utoipa::path(get, path = "/admin/delegations/stats", tag = "delegations",
    responses((status = 200, body = DelegationStatsView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn get_delegation_stats(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<DelegationStatsView>> {
    Ok(Json(stats(&state, None).await?))
}

/// The same figures over the delegations a workspace made or received
/// (either side): its listing's total is the sum of `counts`.
#[utoipa::path(get, path = "/workspaces/{id}/delegations/stats", tag = "delegations",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = DelegationStatsView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn get_workspace_delegation_stats(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
) -> Result<Json<DelegationStatsView>> {
    known_workspace(&state, id).await?;
    Ok(Json(stats(&state, Some(id)).await?))
}

/// The ledger's figures, of one workspace's rows or of all.
async fn stats(state: &AppState, party: Option<WorkspaceId>) -> Result<DelegationStatsView> {
    let now = domain::now();
    let stats = state
        .store
        .delegation_stats(now - Span::hours(24), party)
        .await?;
    let mut counts: BTreeMap<String, i64> = DelegationStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for (status, n) in stats.counts {
        counts.insert(status.as_str().to_owned(), n);
    }
    let secs = &stats.completion_seconds;
    Ok(DelegationStatsView {
        counts,
        oldest_in_flight_age_s: stats
            .oldest_in_flight_at
            .map(|t| (now - t).num_seconds().max(0)),
        completed_24h: secs.len() as i64,
        p50_completion_s: percentile(secs, 0.50),
        p95_completion_s: percentile(secs, 0.95),
    })
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_delegation))
        .routes(routes!(report_delegation_status))
        .routes(routes!(heartbeat_delegation))
        .routes(routes!(list_workspace_delegations))
        .routes(routes!(get_delegation))
        .routes(routes!(list_all_delegations))
        .routes(routes!(get_delegation_stats))
        .routes(routes!(get_workspace_delegation_stats))
        .routes(routes!(stream_delegation_events))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(10.0));
        assert_eq!(percentile(&v, 0.95), Some(19.0));
        assert_eq!(percentile(&[3.0], 0.95), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
