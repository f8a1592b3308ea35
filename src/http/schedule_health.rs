//! Whether schedules fire: `GET /workspaces/:id/schedules/health` (the
//! workspace, the operator, and peers the communication rule lets reach
//! it; names and times only, never a prompt or an expression) and `GET
//! /admin/schedules/health` (every schedule, and this process's scheduler
//! loop from its heartbeat). A schedule is `ok`, `stale` (no fire for more
//! than twice its interval), `never_run` or `disabled`
//! (`crate::domain::schedule::classify`).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{live_workspace, AsPeer, Calling, Operator};
use super::auth::require_reach;
use super::extract::WorkspacePath;
use super::{AppState, ErrorBody, Json, Result};
use crate::domain::schedule::{classify, interval_after, CronSpec, Health};
use crate::domain::{self, ScheduleId, WorkspaceId};
use crate::store::ScheduleLastFire;

/// One schedule's health, without its prompt or expression.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct ScheduleHealthView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: ScheduleId,
    /// Its workspace.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// Whether the scheduler fires it.
    pub enabled: bool,
    /// `ok`, `stale`, `never_run` or `disabled`.
    pub status: String,
    /// The longest gap between its next instants, in seconds (stale after
    /// twice this with no fire); `None` when it fires at most once more.
    pub interval_s: Option<i64>,
    /// When its latest fire of any status (timed or manual) was handled.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// Its latest delivered fire.
    pub last_run_at: Option<DateTime<Utc>>,
    /// Its next due instant.
    pub next_run_at: DateTime<Utc>,
    /// The status of its latest fire.
    pub last_status: Option<String>,
    /// Why its latest fire was skipped or missed.
    pub last_error: Option<String>,
}

/// This process's scheduler loop, from its heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct SchedulerView {
    /// Whether this process runs the loop (`--schedule-tick` not `0s`).
    pub ticking: bool,
    /// Its latest completed tick (or the loop's start); `None`: no loop
    /// has started in this process.
    pub last_tick_at: Option<DateTime<Utc>>,
    /// The tick age past which it counts as stopped, in seconds.
    pub stall_after_s: u64,
    /// The loop runs and has not ticked for longer than that (`/ready`
    /// answers 503 then).
    pub stalled: bool,
}

/// How many schedules are in each class.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct HealthCounts {
    /// Firing on time.
    pub ok: u64,
    /// No fire for more than twice their interval.
    pub stale: u64,
    /// Never fired.
    pub never_run: u64,
    /// Disabled.
    pub disabled: u64,
}

/// `GET /admin/schedules/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct AdminSchedulesHealth {
    /// This process's scheduler loop.
    pub scheduler: SchedulerView,
    /// Schedules per class.
    pub counts: HealthCounts,
    /// Every schedule of a live workspace, by workspace then name.
    pub schedules: Vec<ScheduleHealthView>,
}

/// Classifies one schedule at `now`.
fn view(row: ScheduleLastFire, now: DateTime<Utc>) -> ScheduleHealthView {
    let s = row.schedule;
    // A stored expression parsed when it was saved; one that no longer
    // parses (a crate change) has no interval and reads as never firing.
    let spec = CronSpec::parse(&s.cron_expr, &s.timezone).ok();
    let status = spec.as_ref().map_or(Health::Stale, |spec| {
        classify(spec, s.enabled, row.last_fired_at, now)
    });
    let interval_s = spec
        .as_ref()
        .and_then(|spec| interval_after(spec, row.last_fired_at.unwrap_or(s.created_at)))
        .map(|d| d.num_seconds());
    ScheduleHealthView {
        id: s.id,
        workspace_id: s.workspace_id,
        name: s.name,
        enabled: s.enabled,
        status: status.as_str().to_owned(),
        interval_s,
        last_fired_at: row.last_fired_at,
        last_run_at: s.last_run_at,
        next_run_at: s.next_run_at,
        last_status: s.last_status,
        last_error: s.last_error,
    }
}

/// A workspace's schedules and whether they fire. The workspace itself,
/// the operator, and any workspace the communication rule lets reach it.
#[utoipa::path(get, path = "/workspaces/{id}/schedules/health", tag = "schedules",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = Vec<ScheduleHealthView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn workspace_schedules_health(
    State(state): State<AppState>,
    Calling {
        caller: calling,
        path: WorkspacePath(id),
        ..
    }: Calling<AsPeer, WorkspacePath>,
) -> Result<Json<Vec<ScheduleHealthView>>> {
    let from = super::peers::caller(&state, calling).await?;
    let target = live_workspace(&state, id).await?;
    require_reach(&from, &super::auth::node_of(&state, &target).await?)?;
    let now = domain::now();
    let rows = state.store.schedules_last_fire(Some(id)).await?;
    Ok(Json(rows.into_iter().map(|r| view(r, now)).collect()))
}

/// Every schedule of a live workspace classified, and this process's
/// scheduler loop.
#[utoipa::path(get, path = "/admin/schedules/health", tag = "schedules",
    responses((status = 200, body = AdminSchedulesHealth), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn admin_schedules_health(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Json<AdminSchedulesHealth>> {
    let now = domain::now();
    let tick = crate::jobs::liveness(&state.metrics, state.config.schedule_tick, now);
    let rows = state.store.schedules_last_fire(None).await?;
    let schedules: Vec<ScheduleHealthView> = rows.into_iter().map(|r| view(r, now)).collect();
    let mut counts = HealthCounts::default();
    for s in &schedules {
        match s.status.as_str() {
            "ok" => counts.ok += 1,
            "stale" => counts.stale += 1,
            "never_run" => counts.never_run += 1,
            _ => counts.disabled += 1,
        }
    }
    Ok(Json(AdminSchedulesHealth {
        scheduler: SchedulerView {
            ticking: tick.ticking,
            last_tick_at: tick.last_tick_at,
            stall_after_s: tick.stall_after.as_secs(),
            stalled: tick.stalled,
        },
        counts,
        schedules,
    }))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(workspace_schedules_health))
        .routes(routes!(admin_schedules_health))
}
