//! Schedules: a workspace's prompts on a clock, with Molecule's paths and
//! field names. The workspace itself and the operator manage them; the
//! scheduler (`crate::jobs::Scheduler`) fires them, and `…/run` fires one
//! now through the same store transaction.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{KnownWorkspace, LiveWorkspace, SelfOrOperator};
use super::extract::{Query, SchedulePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::schedule::{self, CronSpec, Overlap};
use crate::domain::{
    self, DelegationId, DeliveryMode, FireId, ScheduleId, TemplateSchedule, WorkspaceId,
};
use crate::store::{Fire, Fired, Saved, Schedule, ScheduleDef};

/// The sentence of a create without its two required fields (Molecule's).
const REQUIRED: &str = "cron_expr and prompt are required";

/// A schedule as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct ScheduleView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: ScheduleId,
    /// The workspace its prompt goes to.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// Unique within the workspace.
    pub name: String,
    /// Five-field cron or a macro such as `@hourly`.
    pub cron_expr: String,
    /// The IANA zone the expression is read in.
    pub timezone: String,
    /// What the agent is asked on each fire.
    pub prompt: String,
    /// Whether the scheduler fires it.
    pub enabled: bool,
    /// `skip`, `buffer_one` or `allow_all`.
    pub overlap: String,
    /// The catch-up window, in seconds.
    pub catch_up: i64,
    /// The latest delivered fire.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The next due instant.
    pub next_run_at: DateTime<Utc>,
    /// Fires delivered.
    pub run_count: i64,
    /// The status of the latest fire.
    pub last_status: Option<String>,
    /// Why the latest fire was skipped or missed.
    pub last_error: Option<String>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<Schedule> for ScheduleView {
    fn from(s: Schedule) -> Self {
        Self {
            id: s.id,
            workspace_id: s.workspace_id,
            name: s.name,
            cron_expr: s.cron_expr,
            timezone: s.timezone,
            prompt: s.prompt,
            enabled: s.enabled,
            overlap: s.overlap.as_str().to_owned(),
            catch_up: s.catch_up_s,
            last_run_at: s.last_run_at,
            next_run_at: s.next_run_at,
            run_count: s.run_count,
            last_status: s.last_status,
            last_error: s.last_error,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// One fire, as the history and `…/run` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct FireView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub fire_id: FireId,
    /// The instant the expression named (a manual run: its request time).
    pub due_at: DateTime<Utc>,
    /// When it was handled.
    pub fired_at: DateTime<Utc>,
    /// `delivered`, `answered`, `failed`, `skipped` or `missed`.
    pub status: String,
    /// The delegation a delivered fire made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub delegation_id: Option<DelegationId>,
    /// Why it was skipped, missed or failed.
    pub detail: Option<String>,
}

impl From<Fire> for FireView {
    fn from(f: Fire) -> Self {
        Self {
            fire_id: f.id,
            due_at: f.due_at,
            fired_at: f.fired_at,
            status: f.status.as_str().to_owned(),
            delegation_id: f.delegation_id,
            detail: f.detail,
        }
    }
}

/// `POST /workspaces/:id/schedules` body (and, every field optional, the
/// `PATCH` body).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(crate) struct ScheduleRequest {
    /// Unique within the workspace; on create, defaults to the prompt's
    /// first line (cut to 60 characters).
    pub name: Option<String>,
    /// Five-field cron or a macro (`@hourly`, `@daily`, …).
    pub cron_expr: Option<String>,
    /// IANA zone; default `UTC`.
    pub timezone: Option<String>,
    /// What the agent is asked.
    pub prompt: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// `skip` (default), `buffer_one` or `allow_all`.
    pub overlap: Option<String>,
    /// Catch-up window in seconds (default 3600, at most 604800).
    pub catch_up: Option<i64>,
}

/// The answer of a delete.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ScheduleDeleted {
    /// Always `deleted`.
    pub status: String,
    /// The deleted schedule.
    #[schema(value_type = String, format = Uuid)]
    pub id: ScheduleId,
}

/// `?limit=` of the history.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct HistoryParams {
    /// 1 to 500, default 50.
    pub limit: Option<i64>,
}

fn bad(e: impl ToString) -> Error {
    Error::BadRequest(e.to_string())
}

/// A schedule's definition with every rule checked, its fields trimmed
/// and its next due instant set to the first after `now`.
fn checked(mut def: ScheduleDef, now: DateTime<Utc>) -> Result<ScheduleDef> {
    def.name = def.name.trim().to_owned();
    def.cron_expr = def.cron_expr.trim().to_owned();
    def.timezone = def.timezone.trim().to_owned();
    if def.name.is_empty() || def.name.chars().count() > schedule::MAX_NAME_CHARS {
        return Err(bad(format!(
            "`name` must be 1 to {} characters",
            schedule::MAX_NAME_CHARS
        )));
    }
    if def.prompt.len() > schedule::MAX_PROMPT_BYTES {
        return Err(bad(format!(
            "`prompt` must be at most {} bytes",
            schedule::MAX_PROMPT_BYTES
        )));
    }
    if !(0..=schedule::MAX_CATCH_UP_S).contains(&def.catch_up_s) {
        return Err(bad(format!(
            "`catch_up` must be between 0 and {} seconds",
            schedule::MAX_CATCH_UP_S
        )));
    }
    let spec = CronSpec::parse(&def.cron_expr, &def.timezone).map_err(bad)?;
    def.next_run_at = spec.next_after(now).ok_or_else(|| {
        bad(format!(
            "the cron expression `{}` never fires",
            def.cron_expr
        ))
    })?;
    Ok(def)
}

/// A template node's schedule as a checked definition: the create
/// route's rules and sentences, with the overlap policy and catch-up
/// window at their defaults.
pub(super) fn template_def(t: &TemplateSchedule, now: DateTime<Utc>) -> Result<ScheduleDef> {
    if t.cron_expr.trim().is_empty() || t.prompt.trim().is_empty() {
        return Err(bad(REQUIRED));
    }
    checked(
        ScheduleDef {
            name: t.name.clone(),
            cron_expr: t.cron_expr.clone(),
            timezone: t
                .timezone
                .clone()
                .unwrap_or_else(|| schedule::DEFAULT_TIMEZONE.to_owned()),
            prompt: t.prompt.clone(),
            enabled: t.enabled.unwrap_or(true),
            overlap: Overlap::default(),
            catch_up_s: schedule::DEFAULT_CATCH_UP_S,
            next_run_at: now,
        },
        now,
    )
}

fn parse_overlap(raw: Option<&str>, default: Overlap) -> Result<Overlap> {
    raw.map_or(Ok(default), |o| o.parse().map_err(bad))
}

fn schedule_not_found() -> Error {
    Error::NotFound("schedule not found".into())
}

fn name_taken(name: &str) -> Error {
    Error::Conflict(format!(
        "this workspace already has a schedule named `{name}`"
    ))
}

/// A workspace's schedules, by name.
#[utoipa::path(get, path = "/workspaces/{id}/schedules", tag = "schedules",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = Vec<ScheduleView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_schedules(
    State(state): State<AppState>,
    ws: KnownWorkspace,
) -> Result<Json<Vec<ScheduleView>>> {
    let rows = state.store.list_schedules(ws.row.id).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// The audit row of a schedule's change (its name and timing, not its
/// prompt).
async fn record_change(
    state: &AppState,
    who: super::auth::Principal,
    action: &'static str,
    s: &Schedule,
) {
    let entry = crate::audit::Entry::new(super::audit::actor(who), action)
        .workspace(s.workspace_id)
        .target(format!("schedule:{}", s.id))
        .details(serde_json::json!({
            "name": s.name,
            "cron_expr": s.cron_expr,
            "timezone": s.timezone,
            "enabled": s.enabled,
        }));
    super::audit::record(state, entry).await;
}

/// Creates a schedule.
#[utoipa::path(post, path = "/workspaces/{id}/schedules", tag = "schedules",
    params(("id" = String, Path, description = "workspace id")),
    request_body = ScheduleRequest,
    responses((status = 201, body = ScheduleView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_schedule(
    State(state): State<AppState>,
    ws: LiveWorkspace,
    Json(body): Json<ScheduleRequest>,
) -> Result<(StatusCode, Json<ScheduleView>)> {
    let now = domain::now();
    let (Some(cron_expr), Some(prompt)) = (
        body.cron_expr.filter(|c| !c.trim().is_empty()),
        body.prompt.filter(|p| !p.trim().is_empty()),
    ) else {
        return Err(bad(REQUIRED));
    };
    let name = body
        .name
        .unwrap_or_else(|| domain::truncate_chars(prompt.lines().next().unwrap_or(""), 60));
    let def = checked(
        ScheduleDef {
            name,
            cron_expr,
            timezone: body
                .timezone
                .unwrap_or_else(|| schedule::DEFAULT_TIMEZONE.to_owned()),
            prompt,
            enabled: body.enabled.unwrap_or(true),
            overlap: parse_overlap(body.overlap.as_deref(), Overlap::default())?,
            catch_up_s: body.catch_up.unwrap_or(schedule::DEFAULT_CATCH_UP_S),
            next_run_at: now,
        },
        now,
    )?;
    match state.store.create_schedule(ws.row.id, &def, now).await? {
        Saved::Saved(s) => {
            tracing::info!(schedule_id = %s.id, workspace_id = %s.workspace_id, name = %s.name,
                cron_expr = %s.cron_expr, timezone = %s.timezone, "schedule created");
            record_change(&state, ws.rule.1, "schedule.created", &s).await;
            Ok((StatusCode::CREATED, Json(s.into())))
        }
        Saved::NameTaken => Err(name_taken(&def.name)),
        Saved::NotFound => Err(Error::workspace_not_found()),
    }
}

/// The path's schedule, after the rule let the caller at its workspace.
async fn schedule_of(state: &AppState, SchedulePath(ws, id): SchedulePath) -> Result<Schedule> {
    state
        .store
        .get_schedule(ws, id)
        .await?
        .ok_or_else(schedule_not_found)
}

/// Changes a schedule: the fields given replace the stored ones. A new
/// expression, zone, or a re-enable sets the next run from now.
#[utoipa::path(patch, path = "/workspaces/{id}/schedules/{sid}", tag = "schedules",
    params(("id" = String, Path, description = "workspace id"), ("sid" = String, Path, description = "schedule id")),
    request_body = ScheduleRequest,
    responses((status = 200, body = ScheduleView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn update_schedule(
    State(state): State<AppState>,
    SelfOrOperator(path, who): SelfOrOperator<SchedulePath>,
    Json(body): Json<ScheduleRequest>,
) -> Result<Json<ScheduleView>> {
    let now = domain::now();
    let current = schedule_of(&state, path).await?;
    if matches!(&body.prompt, Some(p) if p.trim().is_empty()) {
        return Err(bad("`prompt` must not be empty"));
    }
    let retimed = body.cron_expr.is_some()
        || body.timezone.is_some()
        || (body.enabled == Some(true) && !current.enabled);
    let mut def = checked(
        ScheduleDef {
            name: body.name.unwrap_or(current.name),
            cron_expr: body.cron_expr.unwrap_or(current.cron_expr),
            timezone: body.timezone.unwrap_or(current.timezone),
            prompt: body.prompt.unwrap_or(current.prompt),
            enabled: body.enabled.unwrap_or(current.enabled),
            overlap: parse_overlap(body.overlap.as_deref(), current.overlap)?,
            catch_up_s: body.catch_up.unwrap_or(current.catch_up_s),
            next_run_at: now,
        },
        now,
    )?;
    if !retimed {
        def.next_run_at = current.next_run_at;
    }
    match state
        .store
        .update_schedule(path.0, path.1, &def, now)
        .await?
    {
        Saved::Saved(s) => {
            tracing::info!(schedule_id = %s.id, workspace_id = %s.workspace_id, "schedule updated");
            record_change(&state, who, "schedule.updated", &s).await;
            Ok(Json(s.into()))
        }
        Saved::NameTaken => Err(name_taken(&def.name)),
        Saved::NotFound => Err(schedule_not_found()),
    }
}

/// Deletes a schedule and its history (its delegations stay in the
/// ledger). Answers JSON, not an empty 204: Molecule's canvas parses
/// every success.
#[utoipa::path(delete, path = "/workspaces/{id}/schedules/{sid}", tag = "schedules",
    params(("id" = String, Path, description = "workspace id"), ("sid" = String, Path, description = "schedule id")),
    responses((status = 200, body = ScheduleDeleted), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_schedule(
    State(state): State<AppState>,
    SelfOrOperator(SchedulePath(ws, id), who): SelfOrOperator<SchedulePath>,
) -> Result<Json<ScheduleDeleted>> {
    let deleted = state
        .store
        .delete_schedule(ws, id)
        .await?
        .ok_or_else(schedule_not_found)?;
    tracing::info!(schedule_id = %deleted.id, workspace_id = %ws, "schedule deleted");
    record_change(&state, who, "schedule.deleted", &deleted).await;
    Ok(Json(ScheduleDeleted {
        status: "deleted".into(),
        id,
    }))
}

/// Fires a schedule now, through the same path as a timed fire (the
/// overlap policy applies; the next timed run stays); answers the fire.
#[utoipa::path(post, path = "/workspaces/{id}/schedules/{sid}/run", tag = "schedules",
    params(("id" = String, Path, description = "workspace id"), ("sid" = String, Path, description = "schedule id")),
    responses((status = 200, body = FireView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn run_schedule(
    State(state): State<AppState>,
    SelfOrOperator(SchedulePath(ws, id), _): SelfOrOperator<SchedulePath>,
) -> Result<Json<FireView>> {
    let workspace = super::access::live_workspace(&state, ws).await?;
    let fired: Fired = state
        .store
        .run_schedule(ws, id, domain::now())
        .await?
        .ok_or_else(schedule_not_found)?;
    crate::jobs::announce_fire(&state.bus, &state.metrics, &fired, domain::now()).await;
    if let (Some((d, _)), DeliveryMode::Push) = (&fired.delivered, workspace.delivery_mode) {
        super::forwarder(&state).spawn(d.clone());
    }
    Ok(Json(fired.fire.into()))
}

/// A schedule's fires, newest first.
#[utoipa::path(get, path = "/workspaces/{id}/schedules/{sid}/history", tag = "schedules",
    params(("id" = String, Path, description = "workspace id"), ("sid" = String, Path, description = "schedule id"), HistoryParams),
    responses((status = 200, body = Vec<FireView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn schedule_history(
    State(state): State<AppState>,
    SelfOrOperator(path, _): SelfOrOperator<SchedulePath>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<Vec<FireView>>> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad("`limit` must be between 1 and 500"));
    }
    let s = schedule_of(&state, path).await?;
    let fires = state.store.schedule_history(s.id, limit).await?;
    Ok(Json(fires.into_iter().map(Into::into).collect()))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_schedules, create_schedule))
        .routes(routes!(update_schedule, delete_schedule))
        .routes(routes!(run_schedule))
        .routes(routes!(schedule_history))
}
