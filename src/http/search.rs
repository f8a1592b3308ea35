//! `GET /search`: messages, memories and delegations across workspaces,
//! newest first, a page at a time. What a caller searches is its
//! [`Reach`]: every workspace for the operator, a team's subtree for an
//! operator token confined to one, its own workspace for a workspace
//! token. Each kind is one store query ([`crate::store::SearchStore`]);
//! this module merges them and cuts the page.

use std::collections::BTreeSet;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::Reach;
use super::extract::Query;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::search::{self, Place, SearchError, SearchKind, SearchText};
use crate::domain::WorkspaceId;
use crate::store::{SearchHit, SearchQuery};

/// Default and largest `limit`.
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 50;

impl From<SearchError> for Error {
    fn from(e: SearchError) -> Self {
        Error::BadRequest(e.to_string())
    }
}

/// Query of a search.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct SearchParams {
    /// The text to find (1–200 characters). Messages and delegations hold
    /// it as a literal substring, any case; memories hold each of its words.
    pub q: Option<String>,
    /// Comma-separated: `messages`, `memories`, `delegations` (default all).
    pub kinds: Option<String>,
    /// At most this many hits (1–50, default 20).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct SearchResult {
    /// `message`, `memory` or `delegation`.
    pub kind: String,
    /// The workspace it belongs to (a delegation's: the one asked to do it).
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// That workspace's name (null once it is purged).
    pub workspace_name: Option<String>,
    /// The message's activity id (as text), or the memory's or
    /// delegation's UUID.
    pub id: String,
    /// Up to 200 characters around the first match, on one line.
    pub snippet: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// A message's sender: `canvas_user`, `peer_agent` or `agent`.
    pub source: Option<String>,
    /// A memory's scope.
    pub scope: Option<String>,
    /// A delegation's status.
    pub status: Option<String>,
    /// A delegation's caller (a workspace id or `operator`), or the peer
    /// that sent a message.
    pub caller_id: Option<String>,
}

/// A page of hits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct SearchPage {
    /// Newest first.
    pub results: Vec<SearchResult>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

fn view(hit: SearchHit, needles: &[String]) -> SearchResult {
    let (source, scope, status) = match hit.kind {
        SearchKind::Message => (hit.label, None, None),
        SearchKind::Memory => (None, hit.label, None),
        SearchKind::Delegation => (None, None, hit.label),
    };
    SearchResult {
        kind: hit.kind.as_str().to_owned(),
        workspace_id: hit.workspace_id,
        workspace_name: hit.workspace_name,
        id: hit.id.to_string(),
        snippet: search::snippet(&hit.text, needles),
        created_at: hit.created_at,
        source,
        scope,
        status,
        caller_id: hit.caller_id,
    }
}

fn place(hit: &SearchHit) -> Place {
    Place {
        at: hit.created_at,
        kind: hit.kind,
        id: hit.id.clone(),
    }
}

fn parse_limit(raw: Option<&str>) -> Result<i64> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(DEFAULT_LIMIT);
    };
    raw.parse::<i64>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| Error::BadRequest(format!("`limit` must be between 1 and {MAX_LIMIT}")))
}

/// Runs the query of each kind asked for, each for one more hit than the
/// page holds, and merges them newest first.
async fn merged(
    state: &AppState,
    kinds: &BTreeSet<SearchKind>,
    query: &SearchQuery,
    text: &SearchText,
) -> Result<Vec<SearchHit>> {
    let store = &state.store;
    let want = |k| kinds.contains(&k);
    let (messages, memories, delegations) = tokio::try_join!(
        async {
            match want(SearchKind::Message) {
                true => store.find_messages(query, text).await,
                false => Ok(Vec::new()),
            }
        },
        async {
            match want(SearchKind::Memory) {
                true => store.find_memories(query, text).await,
                false => Ok(Vec::new()),
            }
        },
        async {
            match want(SearchKind::Delegation) {
                true => store.find_delegations(query, text).await,
                false => Ok(Vec::new()),
            }
        },
    )?;
    let mut hits: Vec<SearchHit> = [messages, memories, delegations].concat();
    hits.sort_by_key(|h| std::cmp::Reverse(place(h)));
    Ok(hits)
}

/// Messages, memories and delegations holding `q`, newest first, from the
/// workspaces the token may read: the operator every one, an operator
/// token confined to a team the team's, a workspace token its own.
#[utoipa::path(get, path = "/search", tag = "search",
    params(SearchParams),
    responses((status = 200, body = SearchPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn search_workspaces(
    State(state): State<AppState>,
    reach: Reach,
    Query(p): Query<SearchParams>,
) -> Result<Json<SearchPage>> {
    let text = SearchText::parse(p.q.as_deref().unwrap_or(""))?;
    let kinds = search::parse_kinds(p.kinds.as_deref())?;
    let limit = parse_limit(p.limit.as_deref())?;
    let after = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(raw) => Some(Place::parse_cursor(raw)?),
        None => None,
    };
    let within = match reach {
        Reach::Everything => None,
        Reach::Workspace(id) => Some(vec![id]),
        Reach::Subtree(root) => Some(state.store.workspace_subtree(root).await?),
    };
    let query = SearchQuery {
        within,
        after,
        limit: limit + 1,
    };
    let mut hits = merged(&state, &kinds, &query, &text).await?;
    let next_cursor = if hits.len() as i64 > limit {
        hits.truncate(limit as usize);
        hits.last().map(|h| place(h).cursor())
    } else {
        None
    };
    let mut needles = vec![text.as_str().to_lowercase()];
    needles.extend(text.terms().terms().iter().cloned());
    Ok(Json(SearchPage {
        results: hits.into_iter().map(|h| view(h, &needles)).collect(),
        next_cursor,
    }))
}

/// The route of this resource, with its OpenAPI operation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search_workspaces))
}
