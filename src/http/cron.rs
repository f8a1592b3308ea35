//! `GET /schedules/preview`: the next instants a cron expression fires in
//! its zone, computed by the same parser the scheduler uses, so that a
//! form (the canvas's schedule editor) shows what will happen while the
//! expression is typed, and refuses it with the create route's sentence.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::extract::Query;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::schedule::CronSpec;

/// The most instants one preview lists.
const MAX_COUNT: usize = 20;

/// Query of `GET /schedules/preview`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct PreviewParams {
    /// Five fields (minute hour day-of-month month day-of-week) or a macro
    /// such as `@hourly`.
    pub cron_expr: Option<String>,
    /// An IANA zone (default `UTC`).
    pub timezone: Option<String>,
    /// How many instants (1–20, default 5).
    pub count: Option<usize>,
}

/// The next instants of an expression.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct PreviewView {
    /// The expression as given.
    pub cron_expr: String,
    /// The zone it is read in.
    pub timezone: String,
    /// The next instants it fires, soonest first (UTC).
    pub next: Vec<DateTime<Utc>>,
}

/// The next instants `cron_expr` fires in `timezone`, from now. Any valid
/// token may ask: it reads nothing but the expression.
#[utoipa::path(get, path = "/schedules/preview", tag = "schedules", params(PreviewParams),
    security(("bearer" = [])),
    responses((status = 200, body = PreviewView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn preview(
    _caller: Principal,
    Query(params): Query<PreviewParams>,
) -> Result<Json<PreviewView>> {
    let count = params.count.unwrap_or(5);
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(Error::BadRequest(format!(
            "`count` must be between 1 and {MAX_COUNT}"
        )));
    }
    let cron_expr = params
        .cron_expr
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| Error::BadRequest("`cron_expr` is required".into()))?;
    let timezone = params.timezone.unwrap_or_else(|| "UTC".to_owned());
    let spec =
        CronSpec::parse(&cron_expr, &timezone).map_err(|e| Error::BadRequest(e.to_string()))?;
    let mut next = Vec::with_capacity(count);
    let mut at = Utc::now();
    while next.len() < count {
        let Some(t) = spec.next_after(at) else { break };
        next.push(t);
        at = t;
    }
    Ok(Json(PreviewView {
        cron_expr,
        timezone,
        next,
    }))
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(preview))
}
