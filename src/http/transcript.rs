//! `GET /workspaces/:id/transcript?since&limit` (Molecule's route): what
//! the agent did, in its own words. A push agent's transcript is its own
//! `GET <url>/transcript?since&limit`, passed through unchanged (503
//! without a URL, 502 when it does not answer or answers over 1 MiB); a
//! poll agent has no URL to ask, so its transcript is what it reported:
//! the `transcript` rows it wrote with `POST /workspaces/:id/activity`
//! (`{activity_type: "transcript", summary, request_body, response_body}`),
//! oldest first after the `since` cursor.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{known_workspace, SelfOrOperator};
use super::activity::ActivityView;
use super::extract::{Query, WorkspacePath};
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::DeliveryMode;
use crate::store::{ActivityPage, ActivityQuery};

/// The `activity_type` of a transcript entry a poll agent reports.
pub(crate) const TRANSCRIPT_TYPE: &str = "transcript";
/// The most of a push agent's transcript passed through.
pub(crate) const MAX_TRANSCRIPT_BYTES: usize = 1024 * 1024;

/// Query of the transcript.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct TranscriptParams {
    /// Only entries after this cursor: the agent's own for a push agent
    /// (passed as is), an activity id for a poll agent.
    pub since: Option<String>,
    /// At most this many (1–500, default 100).
    pub limit: Option<i64>,
}

/// A poll agent's transcript: what it reported.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ReportedTranscript {
    /// The workspace.
    pub workspace_id: String,
    /// Always `reported`: rows the agent wrote, not its own endpoint.
    pub source: String,
    /// Its `transcript` activity rows, oldest first.
    pub entries: Vec<ActivityView>,
    /// The cursor of the next page (the last entry's id, or `since`).
    pub next_since: i64,
}

/// The agent's transcript: a push agent's own, passed through; a poll
/// agent's reported `transcript` rows.
#[utoipa::path(get, path = "/workspaces/{id}/transcript", tag = "traces",
    params(("id" = String, Path, description = "workspace id"), TranscriptParams),
    responses((status = 200, description = "a push agent's transcript as it answered it, or a poll agent's `ReportedTranscript`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 410, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn get_transcript(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
    Query(params): Query<TranscriptParams>,
) -> Result<Response> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::BadRequest(
            "`limit` must be between 1 and 500".into(),
        ));
    }
    let ws = known_workspace(&state, id).await?;
    if ws.delivery_mode == DeliveryMode::Push {
        let Some(url) = ws.url.as_deref() else {
            return Err(Error::NotAvailable(
                "the workspace has no URL to read its transcript from".into(),
            ));
        };
        return pass_through(&state, url, params.since.as_deref(), limit).await;
    }
    let since_id = match params.since.as_deref() {
        None | Some("") => 0,
        Some(raw) => raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            Error::BadRequest(
                "`since` must be an activity id (a whole number) for a poll agent".into(),
            )
        })?,
    };
    let query = ActivityQuery {
        since_id,
        activity_type: Some(TRANSCRIPT_TYPE.into()),
        limit,
        ..ActivityQuery::default()
    };
    let rows = match state.store.list_activity(id, &query).await? {
        ActivityPage::Rows(rows) => rows,
        ActivityPage::CursorExpired { swept_through } => {
            return Err(Error::Gone {
                message: format!("entries after since={since_id} were removed by the retention sweep; restart from since={swept_through}"),
                restart_since_id: swept_through,
            })
        }
    };
    let next_since = rows.last().map_or(since_id, |r| r.id);
    Ok(Json(ReportedTranscript {
        workspace_id: id.to_string(),
        source: "reported".into(),
        entries: rows.into_iter().map(ActivityView::from).collect(),
        next_since,
    })
    .into_response())
}

/// `GET <url>/transcript?since&limit`, its body passed through up to
/// [`MAX_TRANSCRIPT_BYTES`] (read as it streams, so a huge answer costs
/// no more than the cap).
async fn pass_through(
    state: &AppState,
    url: &str,
    since: Option<&str>,
    limit: i64,
) -> Result<Response> {
    let mut target = url::Url::parse(url)
        .map_err(|_| Error::BadGateway("the workspace's URL cannot be read".into()))?;
    let path = format!("{}/transcript", target.path().trim_end_matches('/'));
    target.set_path(&path);
    {
        let mut q = target.query_pairs_mut();
        if let Some(s) = since {
            q.append_pair("since", s);
        }
        q.append_pair("limit", &limit.to_string());
    }
    let unreachable = |e: reqwest::Error| {
        Error::BadGateway(format!(
            "could not read the workspace's transcript: {}",
            e.without_url()
        ))
    };
    let answer = state
        .http
        .get(target)
        .timeout(state.config.forward_timeout)
        .send()
        .await
        .map_err(unreachable)?;
    if !answer.status().is_success() {
        return Err(Error::BadGateway(format!(
            "the workspace answered {} for its transcript",
            answer.status()
        )));
    }
    let content_type = answer
        .headers()
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| axum::http::HeaderValue::from_static("application/json"));
    let mut body = Vec::new();
    let mut stream = answer.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(unreachable)?);
        if body.len() > MAX_TRANSCRIPT_BYTES {
            return Err(Error::BadGateway(
                "the workspace's transcript is over 1 MiB; ask for fewer entries (`limit`)".into(),
            ));
        }
    }
    Ok(([(CONTENT_TYPE, content_type)], Body::from(body)).into_response())
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_transcript))
}
