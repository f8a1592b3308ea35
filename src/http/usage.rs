//! Usage and budgets: what each workspace spent (tokens and cost per UTC
//! day and model), the operator's monthly ceilings, and the one check that
//! refuses new work for a workspace whose ceiling is spent.
//!
//! Usage arrives four ways, all through [`account`]: `POST
//! /workspaces/:id/usage`, the `usage` of a delegation status report (how
//! a poll agent answers an A2A task too), the `usage` a push agent puts in
//! its forwarded A2A answer, and the heartbeat's `monthly_spend` (cents,
//! as Molecule's agents send it; kept beside the sums, never added to
//! them). Every path that starts work for a workspace — A2A sends,
//! delegations (HTTP and MCP) and schedule fires — asks [`require_budget`]
//! (the scheduler asks the same store check inside its fire transaction).
//! At 80 % of a ceiling a `budget_warning` activity row is written on the
//! workspace the ceiling is set on (once a month), which the bus carries
//! to the canvas.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{known_workspace, live_workspace, Operator, SelfOrOperator};
use super::extract::{Query, WorkspacePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::inbox::InboxRow;
use crate::domain::usage::{self, Usage, MICROS_PER_USD};
use crate::domain::{self, WorkspaceId};
use crate::store::{FleetGroup, UsageGroup, UsageRecord, UsageTotals};

/// The activity type of the 80 % warning.
pub(crate) const BUDGET_WARNING: &str = "budget_warning";

/// The `error_detail` of a delegation or schedule fire refused because a
/// budget is spent.
pub(crate) const BUDGET_EXCEEDED: &str = "budget exceeded";

/// Largest accepted ceiling, in cents (ten billion dollars).
const MAX_BUDGET_CENTS: i64 = 1_000_000_000_000;

/// Longest range a usage query may span.
const MAX_RANGE_DAYS: i64 = 400;

/// Refuses new work for `workspace` with 402 when a ceiling that applies
/// to it (its own or an ancestor's) is spent. The single check of every
/// path that starts work.
pub(super) async fn require_budget(state: &AppState, workspace: WorkspaceId) -> Result<()> {
    match state.store.budget_refusal(workspace, domain::now()).await? {
        Some(sentence) => Err(Error::PaymentRequired(sentence)),
        None => Ok(()),
    }
}

/// Records one usage report of `workspace`: priced, summed into its day
/// and model, counted in the metrics, and checked against the 80 % mark.
pub(super) async fn account(state: &AppState, workspace: WorkspaceId, usage: Usage) -> Result<i64> {
    let prices = &state.config.prices;
    let cost_micros = prices.cost_micros(&usage);
    let label = prices.label(&usage.model);
    let ws = workspace.to_string();
    let record = UsageRecord { usage, cost_micros };
    state
        .store
        .record_usage(workspace, &record, domain::now())
        .await?;
    let m = &state.metrics;
    m.tokens
        .with_label_values(&[&ws, "input", &label])
        .inc_by(record.usage.input_tokens as u64);
    m.tokens
        .with_label_values(&[&ws, "output", &label])
        .inc_by(record.usage.output_tokens as u64);
    m.cost_usd
        .with_label_values(&[&ws])
        .inc_by(cost_micros as f64 / MICROS_PER_USD);
    tracing::info!(workspace_id = %workspace, model = %record.usage.model,
        input_tokens = record.usage.input_tokens, output_tokens = record.usage.output_tokens,
        cost_micros, "usage recorded");
    warn_if_near(state, workspace).await?;
    Ok(cost_micros)
}

/// Records the `usage` a forwarded A2A answer carries, if any. Best effort:
/// the answer is already the caller's, so a failure is logged, not raised.
pub(super) async fn account_answer(state: &AppState, workspace: WorkspaceId, answer: &Value) {
    if let Some(usage) = Usage::from_answer(answer) {
        if let Err(e) = account(state, workspace, usage).await {
            tracing::warn!(workspace_id = %workspace, error = %e, "recording the usage of a forwarded answer failed");
        }
    }
}

/// Keeps the heartbeat's `monthly_spend` (cents) and checks the 80 % mark.
pub(super) async fn report_spend(
    state: &AppState,
    workspace: WorkspaceId,
    cents: i64,
) -> Result<()> {
    state
        .store
        .report_monthly_spend(workspace, cents, domain::now())
        .await?;
    warn_if_near(state, workspace).await
}

/// Writes the `budget_warning` row of every ceiling over `workspace` that
/// has reached 80 % and has not warned this month.
async fn warn_if_near(state: &AppState, workspace: WorkspaceId) -> Result<()> {
    let now = domain::now();
    let month = usage::month_of(now);
    for line in state.store.budget_lines(workspace, now).await? {
        let near = line.spend.saturating_mul(100) >= line.limit.saturating_mul(80);
        if !near || line.warned_month.as_deref() == Some(month.as_str()) {
            continue;
        }
        if !state.store.mark_budget_warned(line.owner, now).await? {
            continue;
        }
        let percent = if line.limit == 0 {
            100
        } else {
            line.spend.saturating_mul(100) / line.limit
        };
        let row = InboxRow {
            activity_type: BUDGET_WARNING.into(),
            summary: Some(format!(
                "{percent} % of the monthly budget is spent: {} of {} cents",
                line.spend, line.limit
            )),
            status: Some("warning".into()),
            data: Some(json!({
                "budget_limit": line.limit,
                "monthly_spend": line.spend,
                "percent": percent,
                "month": month,
            })),
            ..InboxRow::default()
        };
        super::activity::record(state, line.owner, &row).await?;
        tracing::warn!(workspace_id = %line.owner, spend = line.spend, limit = line.limit, "budget at 80 %");
    }
    Ok(())
}

fn usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD
}

/// A usage report as recorded.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct UsageRecorded {
    /// The UTC day it was added to.
    pub day: String,
    /// The model it was filed under.
    pub model: String,
    /// Tokens sent to the model.
    pub input_tokens: i64,
    /// Tokens the model produced.
    pub output_tokens: i64,
    /// Its cost: the agent's `cost_usd`, else the price table's.
    pub cost_usd: f64,
}

/// The workspace (or the operator) reports usage:
/// `{input_tokens, output_tokens, model, cost_usd?}`.
#[utoipa::path(post, path = "/workspaces/{id}/usage", tag = "usage",
    params(("id" = String, Path, description = "workspace id")),
    request_body(content = Object, description = "`{input_tokens, output_tokens, model, cost_usd?}`"),
    responses((status = 201, body = UsageRecorded), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn report_usage(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<UsageRecorded>)> {
    let usage = Usage::parse(&body).map_err(|e| Error::BadRequest(e.to_string()))?;
    live_workspace(&state, id).await?;
    let (model, input_tokens, output_tokens) =
        (usage.model.clone(), usage.input_tokens, usage.output_tokens);
    let cost = account(&state, id, usage).await?;
    Ok((
        StatusCode::CREATED,
        Json(UsageRecorded {
            day: usage::day_of(domain::now()),
            model,
            input_tokens,
            output_tokens,
            cost_usd: usd(cost),
        }),
    ))
}

/// Today's totals of a workspace (Molecule's `/metrics` of a workspace).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct WorkspaceMetrics {
    /// The workspace.
    pub workspace_id: String,
    /// The UTC day.
    pub date: String,
    /// Tokens sent to models today.
    pub input_tokens: i64,
    /// Tokens models produced today.
    pub output_tokens: i64,
    /// Reports today.
    pub total_calls: i64,
    /// Cost today, USD.
    pub cost_usd: f64,
}

/// Today's (UTC) token and cost totals of a workspace.
#[utoipa::path(get, path = "/workspaces/{id}/metrics", tag = "usage",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceMetrics), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_workspace_metrics(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
) -> Result<Json<WorkspaceMetrics>> {
    known_workspace(&state, id).await?;
    let today = usage::day_of(domain::now());
    let rows = state
        .store
        .workspace_usage(id, &today, &today, UsageGroup::Day)
        .await?;
    let t = rows.into_iter().next();
    let get = |f: fn(&UsageTotals) -> i64| t.as_ref().map_or(0, f);
    Ok(Json(WorkspaceMetrics {
        workspace_id: id.to_string(),
        date: today,
        input_tokens: get(|t| t.input_tokens),
        output_tokens: get(|t| t.output_tokens),
        total_calls: get(|t| t.calls),
        cost_usd: usd(get(|t| t.cost_micros)),
    }))
}

/// Query of the usage reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct UsageParams {
    /// First UTC day, `YYYY-MM-DD` (default: the first of this month).
    pub from: Option<String>,
    /// Last UTC day, included (default: today).
    pub to: Option<String>,
    /// `day` or `model` for a workspace; `workspace`, `team` or `day`
    /// across workspaces.
    pub group_by: Option<String>,
    /// A workspace's read only: `workspace` (default, its own usage) or
    /// `subtree` (it and every descendant: its team's, what a budget on it
    /// is held against).
    pub scope: Option<String>,
}

/// One group's sums.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct UsageRow {
    /// The group: a day, a model, a workspace id, or a team's root id.
    pub key: String,
    /// Tokens sent to models.
    pub input_tokens: i64,
    /// Tokens models produced.
    pub output_tokens: i64,
    /// Reports.
    pub calls: i64,
    /// Cost, USD.
    pub cost_usd: f64,
}

/// A usage read.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct UsageReport {
    /// First day.
    pub from: String,
    /// Last day (included).
    pub to: String,
    /// The grouping.
    pub group_by: String,
    /// One row per group, by key.
    pub rows: Vec<UsageRow>,
}

/// The checked range of a query.
fn range(params: &UsageParams, now: DateTime<Utc>) -> Result<(String, String)> {
    let bad = |e: usage::UsageError| Error::BadRequest(e.to_string());
    let from = match &params.from {
        Some(d) => usage::parse_day(d).map_err(bad)?,
        None => usage::month_bounds(now).0,
    };
    let to = match &params.to {
        Some(d) => usage::parse_day(d).map_err(bad)?,
        None => usage::day_of(now),
    };
    let (f, t) = (
        from.parse::<chrono::NaiveDate>()
            .map_err(|_| Error::BadRequest("bad `from`".into()))?,
        to.parse::<chrono::NaiveDate>()
            .map_err(|_| Error::BadRequest("bad `to`".into()))?,
    );
    if t < f {
        return Err(Error::BadRequest("`from` must not be after `to`".into()));
    }
    if t - f > Duration::days(MAX_RANGE_DAYS) {
        return Err(Error::BadRequest(format!(
            "the range must span at most {MAX_RANGE_DAYS} days"
        )));
    }
    Ok((from, to))
}

fn report(from: String, to: String, group_by: &str, rows: Vec<UsageTotals>) -> UsageReport {
    UsageReport {
        from,
        to,
        group_by: group_by.into(),
        rows: rows
            .into_iter()
            .map(|r| UsageRow {
                key: r.key,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                calls: r.calls,
                cost_usd: usd(r.cost_micros),
            })
            .collect(),
    }
}

/// A workspace's usage between two UTC days, by day or by model; with
/// `scope=subtree`, of it and its whole subtree.
#[utoipa::path(get, path = "/workspaces/{id}/usage", tag = "usage",
    params(("id" = String, Path, description = "workspace id"), UsageParams),
    responses((status = 200, body = UsageReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_workspace_usage(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
    Query(params): Query<UsageParams>,
) -> Result<Json<UsageReport>> {
    let (from, to) = range(&params, domain::now())?;
    let (group, name) = match params.group_by.as_deref() {
        None | Some("day") => (UsageGroup::Day, "day"),
        Some("model") => (UsageGroup::Model, "model"),
        Some(_) => return Err(Error::BadRequest("`group_by` must be day or model".into())),
    };
    let subtree = match params.scope.as_deref() {
        None | Some("workspace") => false,
        Some("subtree") => true,
        Some(_) => {
            return Err(Error::BadRequest(
                "`scope` must be workspace or subtree".into(),
            ))
        }
    };
    known_workspace(&state, id).await?;
    let rows = if subtree {
        state.store.subtree_usage(id, &from, &to, group).await?
    } else {
        state.store.workspace_usage(id, &from, &to, group).await?
    };
    Ok(Json(report(from, to, name, rows)))
}

/// Every workspace's usage between two UTC days, by workspace, team (the
/// root of each tree) or day. Operator only.
#[utoipa::path(get, path = "/admin/usage", tag = "usage",
    params(UsageParams),
    responses((status = 200, body = UsageReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_fleet_usage(
    State(state): State<AppState>,
    _: Operator,
    Query(params): Query<UsageParams>,
) -> Result<Json<UsageReport>> {
    if params.scope.is_some() {
        return Err(Error::BadRequest(
            "`scope` applies to one workspace's usage, not the fleet's".into(),
        ));
    }
    let (from, to) = range(&params, domain::now())?;
    let (group, name) = match params.group_by.as_deref() {
        None | Some("workspace") => (FleetGroup::Workspace, "workspace"),
        Some("team") => (FleetGroup::Team, "team"),
        Some("day") => (FleetGroup::Day, "day"),
        Some(_) => {
            return Err(Error::BadRequest(
                "`group_by` must be workspace, team or day".into(),
            ))
        }
    };
    let rows = state.store.fleet_usage(&from, &to, group).await?;
    Ok(Json(report(from, to, name, rows)))
}

/// A workspace's budget (Molecule's shape, plus whether work is refused).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct BudgetView {
    /// Its own monthly ceiling in cents; null: none.
    pub budget_limit: Option<i64>,
    /// What it and its subtree spent this UTC month, in cents.
    pub monthly_spend: i64,
    /// `budget_limit - monthly_spend`, never below 0; null without a ceiling.
    pub budget_remaining: Option<i64>,
    /// True when its own or an ancestor's ceiling is spent: new work for
    /// it answers 402.
    pub budget_exceeded: bool,
}

async fn budget_view(state: &AppState, id: WorkspaceId) -> Result<BudgetView> {
    let now = domain::now();
    let b = state.store.budget(id, now).await?;
    let refused = state.store.budget_refusal(id, now).await?;
    Ok(BudgetView {
        budget_limit: b.limit,
        monthly_spend: b.spend,
        budget_remaining: b.limit.map(|l| (l - b.spend).max(0)),
        budget_exceeded: refused.is_some(),
    })
}

/// A workspace's monthly ceiling and spend (the workspace or the operator).
#[utoipa::path(get, path = "/workspaces/{id}/budget", tag = "usage",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = BudgetView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_budget(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
) -> Result<Json<BudgetView>> {
    known_workspace(&state, id).await?;
    Ok(Json(budget_view(&state, id).await?))
}

/// Sets or lifts a workspace's monthly ceiling, in cents, for it and its
/// subtree. Operator only: an agent cannot lift its own ceiling.
#[utoipa::path(patch, path = "/workspaces/{id}/budget", tag = "usage",
    params(("id" = String, Path, description = "workspace id")),
    request_body(content = Object, description = "`{budget_limit}`: cents (0 to 10^12), or null for none"),
    responses((status = 200, body = BudgetView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn update_budget(
    State(state): State<AppState>,
    Operator(WorkspacePath(id), _): Operator<WorkspacePath>,
    Json(body): Json<Value>,
) -> Result<Json<BudgetView>> {
    let limit = match body.get("budget_limit") {
        None => {
            return Err(Error::BadRequest(
                "`budget_limit` is required: cents, or null for none".into(),
            ))
        }
        Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|c| (0..=MAX_BUDGET_CENTS).contains(c))
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "`budget_limit` must be whole cents between 0 and {MAX_BUDGET_CENTS}, or null"
                    ))
                })?,
        ),
    };
    live_workspace(&state, id).await?;
    state.store.set_budget_limit(id, limit).await?;
    tracing::info!(workspace_id = %id, budget_limit = ?limit, "budget set");
    warn_if_near(&state, id).await?;
    Ok(Json(budget_view(&state, id).await?))
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(report_usage))
        .routes(routes!(get_workspace_metrics))
        .routes(routes!(get_workspace_usage))
        .routes(routes!(get_fleet_usage))
        .routes(routes!(get_budget, update_budget))
}
