//! Scoped memories: commit, recall (hybrid full-text + vector), delete,
//! and the operator's view over every workspace.
//!
//! Who may read what is decided by [`crate::memory::team_of`] and the
//! store's readable filter; the handlers only check who may write and
//! delete.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{known_workspace, Operator, ScopedPath, SelfOrOperator};
use super::auth::Principal;
use super::extract::WorkspacePath;
use super::{AppState, Error, ErrorBody, Json, Result};
use crate::domain::memory::{Content, MemoryError, Namespace, Reader, Scope, SearchTerms};
use crate::domain::{self, MemoryId, WorkspaceId};
use crate::memory::{self, Hit};
use crate::store::{Memory, MemoryFilter, NewMemory};

/// Default and largest `limit` of a recall.
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

impl From<MemoryError> for Error {
    fn from(e: MemoryError) -> Self {
        match e {
            MemoryError::ContentTooLarge(_) | MemoryError::ValueTooLarge(_) => {
                Error::PayloadTooLarge(e.to_string())
            }
            other => Error::BadRequest(other.to_string()),
        }
    }
}

/// `POST /workspaces/:id/memories` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct CommitMemory {
    /// The fact to remember (1 byte to 64 KiB).
    pub content: String,
    /// `LOCAL`, `TEAM` or `GLOBAL`.
    pub scope: String,
    /// Default `general`.
    pub namespace: Option<String>,
}

/// A committed memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct CommittedMemory {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: MemoryId,
    /// Who may read it.
    pub scope: Scope,
    /// Its namespace.
    pub namespace: String,
    /// Commit time.
    pub created_at: DateTime<Utc>,
}

/// A memory as recalled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct MemoryView {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: MemoryId,
    /// The workspace that committed it.
    #[schema(value_type = String, format = Uuid)]
    pub workspace_id: WorkspaceId,
    /// Who may read it.
    pub scope: Scope,
    /// Its namespace.
    pub namespace: String,
    /// The text.
    pub content: String,
    /// Whether it has a vector (false until the embedder answered).
    pub embedded: bool,
    /// Commit time.
    pub created_at: DateTime<Utc>,
    /// With `q`: the fused rank score, higher is better. Without: null.
    pub score: Option<f64>,
}

impl MemoryView {
    fn new(m: Memory, score: Option<f64>) -> Self {
        Self {
            id: m.id,
            workspace_id: m.workspace_id,
            scope: m.scope,
            namespace: m.namespace,
            content: m.content,
            embedded: m.embedded,
            created_at: m.created_at,
            score,
        }
    }
}

/// Query of a recall.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct RecallParams {
    /// Words to recall by; without it, newest first.
    pub q: Option<String>,
    /// Only this scope.
    pub scope: Option<String>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// At most this many (1–100, default 20).
    pub limit: Option<i64>,
    /// Without `q`: the id of the last memory of the previous page, for
    /// the next one (older).
    pub before: Option<String>,
}

/// Query of the operator's recall.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct AdminRecallParams {
    /// Only memories this workspace committed.
    pub workspace_id: Option<String>,
    /// Words to recall by; without it, newest first.
    pub q: Option<String>,
    /// Only this scope.
    pub scope: Option<String>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// At most this many (1–100, default 20).
    pub limit: Option<i64>,
    /// Without `q`: the id of the last memory of the previous page, for
    /// the next one (older).
    pub before: Option<String>,
}

/// `/workspaces/{id}/memories/{mid}`
#[derive(Debug, Clone, Copy)]
pub(super) struct MemoryPath(pub WorkspaceId, pub MemoryId);

impl<S: Send + Sync> FromRequestParts<S> for MemoryPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path((ws, mid)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        Ok(MemoryPath(
            ws.parse()
                .map_err(|e: domain::IdError| Error::BadRequest(e.to_string()))?,
            mid.parse()
                .map_err(|e: domain::IdError| Error::BadRequest(e.to_string()))?,
        ))
    }
}

impl ScopedPath for MemoryPath {
    fn workspace_id(&self) -> WorkspaceId {
        self.0
    }
}

fn memory_not_found() -> Error {
    Error::NotFound("memory not found".into())
}

/// Commits a memory. LOCAL and TEAM: the workspace or the operator;
/// GLOBAL: a root workspace or the operator. The vector is computed now
/// when an embedder is configured; if it fails the memory is stored
/// without one and back-filled by the sweeper.
#[utoipa::path(post, path = "/workspaces/{id}/memories", tag = "memory",
    params(("id" = String, Path, description = "workspace id")),
    request_body = CommitMemory,
    responses((status = 201, body = CommittedMemory), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(super) async fn commit_memory(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), principal): SelfOrOperator,
    Json(body): Json<CommitMemory>,
) -> Result<(StatusCode, Json<CommittedMemory>)> {
    let m = commit(&state, id, principal, body).await?;
    Ok((StatusCode::CREATED, Json(m)))
}

/// Commits a memory of workspace `id` as `principal` under the scope
/// rules, for the route above and the MCP tool `commit_memory`.
pub(super) async fn commit(
    state: &AppState,
    id: WorkspaceId,
    principal: Principal,
    body: CommitMemory,
) -> Result<CommittedMemory> {
    let scope: Scope = body.scope.parse()?;
    let content = Content::parse(body.content)?;
    let namespace = match body.namespace.as_deref() {
        None => Namespace::general(),
        Some(raw) => Namespace::parse(raw)?,
    };
    known_workspace(state, id).await?;
    if scope == Scope::Global
        && principal != Principal::Operator
        && !memory::may_write_global(&*state.store, id).await?
    {
        return Err(Error::Denied(
            "only a root workspace or the operator may write GLOBAL memories".into(),
        ));
    }
    let (embedding, embedding_model) = match &state.embedder {
        Some(e) => match e.embed(content.as_str()).await {
            Ok(v) => (Some(v), Some(e.model().to_owned())),
            Err(err) => {
                state.metrics.memory_embedding_failures.inc();
                tracing::warn!(workspace_id = %id, error = %format!("{err:#}"),
                    "embedding failed; the memory is stored without a vector and back-filled later");
                (None, None)
            }
        },
        None => (None, None),
    };
    let new = NewMemory {
        id: MemoryId::new(),
        workspace_id: id,
        scope,
        namespace: namespace.as_str().to_owned(),
        content: content.as_str().to_owned(),
        embedding,
        embedding_model,
        created_at: domain::now(),
    };
    // In a task of its own: the store's group commit must not be
    // cancelled mid-call (a dropped request would strand the memories of
    // the other requests it was committing).
    let store = state.store.clone();
    let m = tokio::spawn(async move { store.insert_memory(&new).await })
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("the memory commit task failed: {e}")))??;
    tracing::info!(workspace_id = %id, memory_id = %m.id, scope = %m.scope, embedded = m.embedded, "memory committed");
    Ok(CommittedMemory {
        id: m.id,
        scope: m.scope,
        namespace: m.namespace,
        created_at: m.created_at,
    })
}

struct Narrowing {
    q: Option<String>,
    scope: Option<Scope>,
    namespace: Option<String>,
    limit: i64,
    before: Option<MemoryId>,
}

fn narrowing(
    q: Option<String>,
    scope: Option<String>,
    namespace: Option<String>,
    limit: Option<i64>,
    before: Option<String>,
) -> Result<Narrowing> {
    let scope = scope
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Scope>())
        .transpose()?;
    let namespace = namespace
        .filter(|s| !s.is_empty())
        .map(|n| Namespace::parse(&n).map(|n| n.as_str().to_owned()))
        .transpose()?;
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::BadRequest(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let q = q.filter(|q| !q.trim().is_empty());
    let before = match before.filter(|b| !b.is_empty()) {
        None => None,
        Some(_) if q.is_some() => {
            return Err(Error::BadRequest(
                "`before` pages the newest-first listing; it cannot be combined with `q`".into(),
            ))
        }
        Some(b) => Some(b.parse::<MemoryId>().map_err(|_| {
            Error::BadRequest(format!(
                "`before` names no memory: `{}`",
                domain::truncate_chars(&b, 64)
            ))
        })?),
    };
    Ok(Narrowing {
        q,
        scope,
        namespace,
        limit,
        before,
    })
}

/// The total of a newest-first listing, as `X-Total-Count` (a recall by
/// `q` has no total: it is ranked, not listed).
const TOTAL_HEADER: &str = "x-total-count";

/// The memories a listing's `filter` reads in all, and the checked cursor.
async fn listing_total(state: &AppState, reader: &Reader, n: &Narrowing) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    if n.q.is_some() {
        return Ok(headers);
    }
    if let Some(before) = n.before {
        if state.store.get_memories(&[before]).await?.is_empty() {
            return Err(Error::BadRequest(format!(
                "`before` names no memory: `{before}`"
            )));
        }
    }
    let filter = MemoryFilter {
        reader: reader.clone(),
        scope: n.scope,
        namespace: n.namespace.clone(),
    };
    let total = state.store.count_memories(&filter).await?;
    headers.insert(TOTAL_HEADER, HeaderValue::from(total));
    Ok(headers)
}

async fn run_recall(state: &AppState, reader: Reader, n: Narrowing) -> Result<Vec<MemoryView>> {
    let filter = MemoryFilter {
        reader,
        scope: n.scope,
        namespace: n.namespace,
    };
    let Some(q) = n.q else {
        let rows = state
            .store
            .list_memories(&filter, n.before, n.limit)
            .await?;
        return Ok(rows.into_iter().map(|m| MemoryView::new(m, None)).collect());
    };
    let query_vector = match &state.embedder {
        Some(e) => match e.embed(&q).await {
            Ok(v) => Some((e.model(), v)),
            Err(err) => {
                state.metrics.memory_embedding_failures.inc();
                tracing::warn!(error = %format!("{err:#}"),
                    "embedding the query failed; recalling by full-text rank alone");
                None
            }
        },
        None => None,
    };
    let terms = SearchTerms::parse(&q);
    let hits = memory::recall(
        &*state.store,
        &state.vectors,
        &filter,
        &terms,
        query_vector.as_ref().map(|(m, v)| (*m, v.as_slice())),
        n.limit,
    )
    .await?;
    Ok(hits
        .into_iter()
        .map(|Hit { memory, score }| MemoryView::new(memory, Some(score)))
        .collect())
}

/// The memories this workspace may read (its LOCAL ones, the TEAM ones of
/// its team, every GLOBAL one), best first with `q`, newest first without.
/// The operator reads as the workspace.
#[utoipa::path(get, path = "/workspaces/{id}/memories", tag = "memory",
    params(("id" = String, Path, description = "workspace id"), RecallParams),
    responses((status = 200, body = [MemoryView], headers(("X-Total-Count" = i64,
            description = "without `q`: how many memories the listing holds in all"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn recall_memories(
    State(state): State<AppState>,
    SelfOrOperator(WorkspacePath(id), _): SelfOrOperator,
    params: std::result::Result<Query<RecallParams>, axum::extract::rejection::QueryRejection>,
) -> Result<(HeaderMap, Json<Vec<MemoryView>>)> {
    let Query(p) = params.map_err(|e| Error::BadRequest(e.body_text()))?;
    let (total, rows) = recall_listed(&state, id, p).await?;
    Ok((total, Json(rows)))
}

/// What workspace `id` recalls, for the MCP tool `recall_memory`;
/// `checked_live`: the caller has just read `id`'s row, live, so it is
/// not read again.
pub(super) async fn recall(
    state: &AppState,
    id: WorkspaceId,
    p: RecallParams,
    checked_live: bool,
) -> Result<Vec<MemoryView>> {
    let n = narrowing(p.q, p.scope, p.namespace, p.limit, p.before)?;
    if !checked_live {
        known_workspace(state, id).await?;
    }
    Ok(recall_of(state, id, n).await?.1)
}

/// What workspace `id` recalls, with a listing's total (see
/// [`listing_total`]).
async fn recall_listed(
    state: &AppState,
    id: WorkspaceId,
    p: RecallParams,
) -> Result<(HeaderMap, Vec<MemoryView>)> {
    let n = narrowing(p.q, p.scope, p.namespace, p.limit, p.before)?;
    known_workspace(state, id).await?;
    recall_of(state, id, n).await
}

/// What workspace `id` (known to exist) recalls under `n`, with the
/// listing's total.
async fn recall_of(
    state: &AppState,
    id: WorkspaceId,
    n: Narrowing,
) -> Result<(HeaderMap, Vec<MemoryView>)> {
    let team = memory::team_of(&*state.store, id).await?;
    let reader = Reader::Workspace { id, team };
    let total = listing_total(state, &reader, &n).await?;
    Ok((total, run_recall(state, reader, n).await?))
}

/// Deletes a memory this workspace committed (the workspace or the
/// operator); another workspace's memory is a 404.
#[utoipa::path(delete, path = "/workspaces/{id}/memories/{mid}", tag = "memory",
    params(("id" = String, Path, description = "workspace id"), ("mid" = String, Path, description = "memory id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn delete_memory(
    State(state): State<AppState>,
    SelfOrOperator(MemoryPath(id, mid), _): SelfOrOperator<MemoryPath>,
) -> Result<StatusCode> {
    if !state.store.delete_memory(mid, Some(id)).await? {
        return Err(memory_not_found());
    }
    tracing::info!(workspace_id = %id, memory_id = %mid, "memory deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Every memory (of one workspace with `workspace_id`), whatever its
/// scope: the operator's view.
#[utoipa::path(get, path = "/admin/memories", tag = "memory",
    params(AdminRecallParams),
    responses((status = 200, body = [MemoryView], headers(("X-Total-Count" = i64,
            description = "without `q`: how many memories the listing holds in all"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn admin_recall_memories(
    State(state): State<AppState>,
    _: Operator,
    params: std::result::Result<Query<AdminRecallParams>, axum::extract::rejection::QueryRejection>,
) -> Result<(HeaderMap, Json<Vec<MemoryView>>)> {
    let Query(p) = params.map_err(|e| Error::BadRequest(e.body_text()))?;
    let owner = p
        .workspace_id
        .filter(|w| !w.is_empty())
        .map(|w| w.parse::<WorkspaceId>())
        .transpose()
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let n = narrowing(p.q, p.scope, p.namespace, p.limit, p.before)?;
    let reader = Reader::Operator { owner };
    let total = listing_total(&state, &reader, &n).await?;
    Ok((total, Json(run_recall(&state, reader, n).await?)))
}

/// Deletes any memory (the operator).
#[utoipa::path(delete, path = "/admin/memories/{mid}", tag = "memory",
    params(("mid" = String, Path, description = "memory id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn admin_delete_memory(
    State(state): State<AppState>,
    _: Operator,
    Path(mid): Path<String>,
) -> Result<StatusCode> {
    let mid: MemoryId = mid
        .parse()
        .map_err(|e: domain::IdError| Error::BadRequest(e.to_string()))?;
    if !state.store.delete_memory(mid, None).await? {
        return Err(memory_not_found());
    }
    tracing::info!(memory_id = %mid, "memory deleted by the operator");
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of this resource, with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(commit_memory, recall_memories))
        .routes(routes!(delete_memory))
        .routes(routes!(admin_recall_memories))
        .routes(routes!(admin_delete_memory))
}
