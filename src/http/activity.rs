//! The activity log: the row as the API shows it ([`ActivityView`]), the
//! one way a handler writes a row and wakes its waiters ([`record`]), the
//! rows the agent reports itself, and the long-polled inbox
//! (`GET /workspaces/:id/activity`). What the inbox rows mean is
//! [`crate::domain::inbox`]; messages are [`super::messages`], the canvas's
//! live feed is [`super::stream`].

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{known_workspace, live_workspace, SelfOrOperator, WorkspaceItself};
use super::auth::{Principal, Session};
use super::extract::{Query, WorkspacePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::inbox::{self, InboxItem, InboxRow, Unreadable};
use crate::domain::{self, WorkspaceId};
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

impl ActivityView {
    /// The row's fields, as [`InboxItem::parse`] reads them.
    pub(crate) fn inbox_row(&self) -> InboxRow {
        InboxRow {
            activity_type: self.activity_type.clone(),
            method: self.method.clone(),
            source_id: self.source_id.clone(),
            target_id: self.target_id.clone(),
            summary: self.summary.clone(),
            request_body: self.request_body.clone(),
            response_body: self.response_body.clone(),
            status: self.status.clone(),
            error_detail: self.error_detail.clone(),
            data: self.data.clone(),
        }
    }

    /// The row read back as its kind of inbox item.
    pub(crate) fn item(&self) -> std::result::Result<InboxItem, Unreadable> {
        InboxItem::parse(&self.inbox_row())
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
    // Kept as it came: to a reader it is an `InboxItem::Other`.
    let row = InboxRow {
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
    /// Reads history backwards: the newest `limit` rows with a smaller id,
    /// still oldest first (page back with the first row's id). Above every
    /// id, the newest page; otherwise it must name a row of this
    /// workspace (400), or one the retention sweep removed. Not with
    /// `wait`.
    pub before_id: Option<i64>,
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
    fn into_query(self) -> Result<(ActivityQuery, Duration, Option<i64>)> {
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
        if self.before_id.is_some_and(|b| b < 1) {
            return Err(Error::BadRequest("`before_id` must be at least 1".into()));
        }
        if self.before_id.is_some() && wait > 0 {
            return Err(Error::BadRequest(
                "`before_id` reads history backwards and cannot be combined with `wait`".into(),
            ));
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
        Ok((query, Duration::from_secs(wait), self.before_id))
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
pub(super) async fn still_allowed(
    state: &AppState,
    session: &mut Session,
    id: WorkspaceId,
) -> Result<()> {
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
    let (query, wait, before_id) = params.into_query()?;
    known_workspace(&state, id).await?;
    if let Some(before_id) = before_id {
        if !state.store.activity_cursor_known(id, before_id).await? {
            return Err(Error::BadRequest(format!(
                "`before_id` {before_id} names no row of this workspace's activity: start above \
                 every id (such as {}) for the newest page, then page back with each page's first id",
                i64::MAX
            )));
        }
        let rows: Vec<ActivityView> = state
            .store
            .list_activity_before(id, &query, before_id)
            .await?
            .into_iter()
            .map(ActivityView::from)
            .collect();
        mark_picked_up(&state, &session.principal, id, &query, &rows).await?;
        return Ok(Json(rows));
    }
    let deadline = tokio::time::Instant::now() + wait;
    // The agent's own poll of a paused workspace gets nothing: what waits
    // stays `queued` until Resume (which wakes this poll). The operator
    // still reads everything.
    let own = matches!(session.principal, Principal::Workspace(w) if w == id);
    // Watch before each read: a row committed (or a token revoked, or the
    // workspace resumed) between the read and the wait still wakes us.
    let mut wakeups = state.bus.watch_activity(id);
    loop {
        wakeups.borrow_and_update();
        still_allowed(&state, &mut session, id).await?;
        let held = own && live_workspace(&state, id).await?.paused_at.is_some();
        let rows = if held {
            Vec::new()
        } else {
            read_page(&state, id, &query).await?
        };
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
        && matches!(
            query.activity_type.as_deref(),
            None | Some(inbox::INBOX_TYPE)
        );
    if let (true, true, Some(last)) = (own, every_message, rows.last()) {
        // Group-committed with the other polls' marks, in a task of its
        // own: a poll whose client hangs up must not abandon the marks of
        // the polls it was committing for (see `store::GroupCommit`).
        let (store, through) = (state.store.clone(), last.id);
        tokio::spawn(async move { store.mark_inbox_picked_up(id, through).await })
            .await
            .map_err(|e| Error::Internal(anyhow::Error::new(e)))??;
    }
    Ok(())
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_activity, report_activity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Caller, DelegationId, DelegationStatus};
    use crate::store::Delegation;

    /// The caller's `delegation_result` row (`Delegation::result_activity`,
    /// built from the enum) is exactly the row the ledger always wrote.
    #[test]
    fn the_delegation_result_row_keeps_its_wire_shape() {
        for (status, preview, error) in [
            (DelegationStatus::Completed, Some("done"), None),
            (DelegationStatus::Failed, None, Some("exit status 3")),
        ] {
            let now = domain::now();
            let d = Delegation {
                id: DelegationId::new(),
                caller: Caller::Workspace(WorkspaceId::new()),
                callee_id: WorkspaceId::new(),
                task_preview: "sum it up".into(),
                task: "sum it up".into(),
                idempotency_key: "k".into(),
                status,
                result_preview: preview.map(str::to_owned),
                error_detail: error.map(str::to_owned),
                deadline_at: None,
                last_heartbeat_at: None,
                traceparent: None,
                created_at: now,
                updated_at: now,
                completed_at: Some(now),
            };
            let expected = InboxRow {
                activity_type: inbox::INBOX_TYPE.into(),
                method: Some(inbox::DELEGATION_RESULT.into()),
                source_id: Some(d.callee_id.to_string()),
                target_id: Some(d.caller.to_string()),
                summary: Some(format!("delegation {}: sum it up", status.as_str())),
                status: Some(status.as_str().into()),
                error_detail: error.map(str::to_owned),
                data: Some(serde_json::json!({
                    "delegation_id": d.id,
                    "status": status.as_str(),
                    "result_preview": preview,
                    "error_detail": error,
                })),
                ..InboxRow::default()
            };
            assert_eq!(d.result_activity(), expected, "{status}");
        }
    }
}
