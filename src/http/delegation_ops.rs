//! What the operator does to the ledger from the canvas: cancel a
//! delegation in flight (`POST …/delegations/:did/cancel`), retry a failed
//! one (`POST …/delegations/:did/retry`), and read the ledger as a graph
//! of who asks whom (`GET /admin/delegations/edges`, the topology view).
//!
//! Cancel is the failure the callee would have reported, made by the
//! operator: the same forward-only move, the caller's `delegation_result`
//! row in the same transaction, and a 409 once the row is over. Retry is
//! a new delegation with the same caller, callee and task, under a key
//! derived from the failed row, so a double click delivers once.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::Operator;
use super::delegations::{DelegationCreated, DelegationView, NewDelegationRequest};
use super::extract::{DelegationPath, Query};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::audit::Entry;
use crate::domain::audit::Actor;
use crate::domain::{self, Caller, DelegationStatus, WorkspaceId};
use crate::store::{Delegation, ReportOutcome, StatusReport};

/// The error a cancelled delegation carries (its caller reads it in its
/// `delegation_result` row).
pub(super) const CANCELLED: &str = "cancelled by the operator";

/// The delegation of the path, if the path's workspace is one of its
/// parties (else the 404 a stranger gets).
async fn party_delegation(state: &AppState, path: &DelegationPath) -> Result<Delegation> {
    let DelegationPath(party, id) = *path;
    match state.store.get_delegation(id).await? {
        Some(d) if d.callee_id == party || d.caller == Caller::Workspace(party) => Ok(d),
        _ => Err(Error::delegation_not_found()),
    }
}

/// Records an operator's move on a delegation in the audit trail.
async fn audit(state: &AppState, action: &str, d: &Delegation, details: serde_json::Value) {
    let entry = Entry::new(Actor::Operator, action)
        .workspace(d.callee_id)
        .target(format!("delegation:{}", d.id))
        .details(details);
    super::audit::record(state, entry).await;
}

/// Cancels a delegation in flight: it fails with "cancelled by the
/// operator", a workspace caller gets its result row, and the callee's
/// later reports are refused (409). A row already completed or failed is
/// a 409 naming its status, and stays as it was.
#[utoipa::path(post, path = "/workspaces/{id}/delegations/{did}/cancel", tag = "delegations",
    params(("id" = String, Path, description = "the caller or callee workspace"), ("did" = String, Path, description = "delegation id")),
    responses((status = 200, body = DelegationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn cancel_delegation(
    State(state): State<AppState>,
    Operator(path, _): Operator<DelegationPath>,
) -> Result<Json<DelegationView>> {
    let d = party_delegation(&state, &path).await?;
    if d.status.is_terminal() {
        return Err(Error::StatusConflict {
            message: format!(
                "the delegation is already {}; there is nothing to cancel",
                d.status
            ),
            current_status: Some(d.status.as_str().to_owned()),
        });
    }
    let report = StatusReport {
        status: DelegationStatus::Failed,
        result_preview: None,
        error_detail: Some(CANCELLED.to_owned()),
    };
    match state
        .store
        .report_delegation(d.callee_id, d.id, &report, domain::now())
        .await?
    {
        ReportOutcome::Applied(t) => {
            crate::ledger::announce_move(&state.bus, &state.metrics, &t).await;
            let details = serde_json::json!({"delegation_id": d.id, "from": t.from.as_str()});
            audit(&state, "delegation.cancelled", &t.delegation, details).await;
            Ok(Json(t.delegation.into()))
        }
        // The callee finished it between the read and the move.
        ReportOutcome::Refused(r) => Err(Error::StatusConflict {
            message: format!(
                "the delegation is already {}; there is nothing to cancel",
                r.current
            ),
            current_status: Some(r.current.as_str().to_owned()),
        }),
        ReportOutcome::NotFound => Err(Error::delegation_not_found()),
    }
}

/// Delegates a failed delegation's task again, from the same caller to
/// the same callee (the communication rule and the budget apply as to any
/// delegation): 202 with the new row, 200 with the same new row when the
/// failed one was retried before. Only a failed row can be retried (409).
#[utoipa::path(post, path = "/workspaces/{id}/delegations/{did}/retry", tag = "delegations",
    params(("id" = String, Path, description = "the caller or callee workspace"), ("did" = String, Path, description = "delegation id")),
    responses((status = 202, body = DelegationCreated), (status = 200, description = "retried before: that retry", body = DelegationCreated),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn retry_delegation(
    State(state): State<AppState>,
    Operator(path, _): Operator<DelegationPath>,
) -> Result<(StatusCode, Json<DelegationCreated>)> {
    let d = party_delegation(&state, &path).await?;
    if d.status != DelegationStatus::Failed {
        return Err(Error::StatusConflict {
            message: format!(
                "only a failed delegation can be retried; this one is {}",
                d.status
            ),
            current_status: Some(d.status.as_str().to_owned()),
        });
    }
    let body = NewDelegationRequest {
        task: d.task.clone(),
        idempotency_key: Some(format!("retry:{}", d.id)),
        deadline_s: None,
        traceparent: None,
    };
    let (status, created) =
        super::delegations::delegate_by(&state, Actor::Operator, d.caller, d.callee_id, body)
            .await?;
    if !created.deduplicated {
        let details = serde_json::json!({"delegation_id": d.id, "retry_id": created.delegation_id});
        audit(&state, "delegation.retried", &d, details).await;
    }
    Ok((status, Json(created)))
}

/// Query of `GET /admin/delegations/edges`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct EdgeParams {
    /// At most this many pairs, the busiest first (1–2000, default 500).
    pub limit: Option<i64>,
}

/// Largest accepted `limit` of the edges.
const MAX_EDGES: i64 = 2000;

/// Who asked whom, over the delegations the ledger keeps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct DelegationEdgeView {
    /// The caller: a workspace id, `operator` or `schedule:<id>`.
    pub caller_id: String,
    /// The callee.
    #[schema(value_type = String, format = Uuid)]
    pub callee_id: WorkspaceId,
    /// Delegations from the caller to the callee.
    pub total: i64,
    /// Of which failed.
    pub failed: i64,
    /// Of which not yet completed or failed.
    pub in_flight: i64,
    /// Creation of the newest.
    pub last_at: DateTime<Utc>,
}

/// The ledger as a graph: one edge per caller and callee that ever
/// delegated (in the rows the ledger still keeps), with how often and how
/// many failed, the busiest first (operator only).
#[utoipa::path(get, path = "/admin/delegations/edges", tag = "delegations",
    params(EdgeParams),
    responses((status = 200, body = [DelegationEdgeView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_delegation_edges(
    State(state): State<AppState>,
    _: Operator,
    Query(params): Query<EdgeParams>,
) -> Result<Json<Vec<DelegationEdgeView>>> {
    let limit = params.limit.unwrap_or(500);
    if !(1..=MAX_EDGES).contains(&limit) {
        return Err(Error::BadRequest(format!(
            "`limit` must be between 1 and {MAX_EDGES}"
        )));
    }
    let edges = state.store.delegation_edges(limit).await?;
    Ok(Json(
        edges
            .into_iter()
            .map(|e| DelegationEdgeView {
                caller_id: e.caller,
                callee_id: e.callee_id,
                total: e.total,
                failed: e.failed,
                in_flight: e.in_flight,
                last_at: e.last_at,
            })
            .collect(),
    ))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cancel_delegation))
        .routes(routes!(retry_delegation))
        .routes(routes!(list_delegation_edges))
}
