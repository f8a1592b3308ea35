//! Search across workspaces: chat messages (activity rows), memories and
//! delegations matching a query, newest first, below a cursor, within the
//! workspaces the caller may read.
//!
//! Memories match by the full-text index each engine already keeps
//! (FTS5 on SQLite, the `tsvector` GIN index on PostgreSQL): every word of
//! the query must appear. Messages and delegations match the query as a
//! literal substring, case-insensitively, with `LIKE` (its `%`, `_` and
//! `\` escaped): no index serves a substring, so each query walks its
//! table newest first (`created_at` is indexed) until it has `limit` hits,
//! which for a rare word is every row of the scope. The activity log is
//! bounded by its retention (7 days by default); the ledger by its purge.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::inbox::{AGENT_MESSAGE_TYPE, INBOX_TYPE, MESSAGE_SEND};
use crate::domain::search::{HitId, Place, SearchKind, SearchText, Tie};

/// What one search reads.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Only rows of these workspaces; `None`: every workspace.
    pub within: Option<Vec<WorkspaceId>>,
    /// Only rows listed after this place (the previous page's last hit).
    pub after: Option<Place>,
    /// At most this many rows of each kind.
    pub limit: i64,
}

/// A row that matched, of any kind.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// What it is.
    pub kind: SearchKind,
    /// Its id.
    pub id: HitId,
    /// The workspace it belongs to (a delegation's: its callee).
    pub workspace_id: WorkspaceId,
    /// That workspace's name (`None` once its row is purged).
    pub workspace_name: Option<String>,
    /// The text that matched (a delegation's task, result or error).
    pub text: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// A message's sender kind (`canvas_user`, `peer_agent`, `agent`), a
    /// delegation's status, a memory's scope.
    pub label: Option<String>,
    /// A delegation's caller (a workspace id or `operator`); a message's
    /// peer sender.
    pub caller_id: Option<String>,
}

/// The search. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait SearchStore: Send + Sync {
    /// `root` and every workspace under it, removed ones included (their
    /// history stays readable to the team's operator).
    async fn workspace_subtree(&self, root: WorkspaceId) -> StoreResult<Vec<WorkspaceId>>;

    /// Chat messages (the operator's and peers' `message/send` rows, the
    /// agent's `notify` rows) whose text holds `text`.
    async fn find_messages(
        &self,
        query: &SearchQuery,
        text: &SearchText,
    ) -> StoreResult<Vec<SearchHit>>;

    /// Memories holding every word of `text` (none when it has no word).
    async fn find_memories(
        &self,
        query: &SearchQuery,
        text: &SearchText,
    ) -> StoreResult<Vec<SearchHit>>;

    /// Delegations whose task, result or error holds `text`, in scope as
    /// callee or as caller.
    async fn find_delegations(
        &self,
        query: &SearchQuery,
        text: &SearchText,
    ) -> StoreResult<Vec<SearchHit>>;
}

/// Before every row: the bound of a first page.
fn end_of_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .expect("BUG: a valid date")
}

/// The cursor of `query` for `kind` as binds: the instant, what to take
/// at that instant (0 nothing, 1 everything, 2 ids below the third).
fn bound(query: &SearchQuery, kind: SearchKind) -> (Ts, i32, Tie<HitId>) {
    match &query.after {
        None => (Ts(end_of_time()), 1, Tie::All),
        Some(place) => {
            let (at, tie) = place.bound_for(kind);
            let mode = match tie {
                Tie::Nothing => 0,
                Tie::All => 1,
                Tie::Below(_) => 2,
            };
            (Ts(at), mode, tie)
        }
    }
}

/// The workspaces of `query` as the JSON list `ID_LIST_1` reads (`None`:
/// every workspace).
fn within(query: &SearchQuery) -> Option<String> {
    query.within.as_ref().map(|ids| {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        serde_json::to_string(&ids).expect("BUG: strings serialize")
    })
}

/// Rows after the cursor, over alias `x`: `$3` the instant, `$4` the
/// mode of [`bound`], `$5` the id.
const AFTER: &str = "(x.created_at < $3 OR (x.created_at = $3 \
     AND ($4 = 1 OR ($4 = 2 AND x.id < $5))))";

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    workspace_id: WorkspaceId,
    workspace_name: Option<String>,
    text: Option<String>,
    source: Option<String>,
    source_id: Option<String>,
    created_at: Ts,
}

#[derive(sqlx::FromRow)]
struct MemoryHitRow {
    id: MemoryId,
    workspace_id: WorkspaceId,
    workspace_name: Option<String>,
    content: String,
    scope: String,
    created_at: Ts,
}

#[derive(sqlx::FromRow)]
struct DelegationHitRow {
    id: DelegationId,
    workspace_id: WorkspaceId,
    workspace_name: Option<String>,
    text: Option<String>,
    status: String,
    caller_id: String,
    created_at: Ts,
}

engines! {
    #[async_trait]
    impl SearchStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(workspace_id = %root))]
        async fn workspace_subtree(&self, root: WorkspaceId) -> StoreResult<Vec<WorkspaceId>> {
            Ok(sqlx::query_scalar(over_subtree!("SELECT id FROM sub"))
                .bind(root)
                .fetch_all(&self.pool)
            .await?)
        }

        #[tracing::instrument(skip_all, fields(limit = query.limit))]
        async fn find_messages(
            &self,
            query: &SearchQuery,
            text: &SearchText,
        ) -> StoreResult<Vec<SearchHit>> {
            let (at, mode, tie) = bound(query, SearchKind::Message);
            let sql = format!(
                "SELECT x.id, x.workspace_id, w.name AS workspace_name, \
                   x.data ->> 'text' AS text, x.data ->> 'source' AS source, x.source_id, \
                   x.created_at \
                 FROM activity_logs x LEFT JOIN workspaces w ON w.id = x.workspace_id \
                 WHERE (CAST($1 AS TEXT) IS NULL OR x.workspace_id IN ({list})) \
                   AND (x.activity_type = '{AGENT_MESSAGE_TYPE}' \
                     OR (x.activity_type = '{INBOX_TYPE}' AND x.method = '{MESSAGE_SEND}')) \
                   AND lower(x.data ->> 'text') LIKE $2 ESCAPE '\\' AND {AFTER} \
                 ORDER BY x.created_at DESC, x.id DESC LIMIT $6",
                list = DB::ID_LIST_1
            );
            let rows: Vec<MessageRow> = sqlx::query_as(&sql)
                .bind(within(query))
                .bind(text.like_pattern())
                .bind(at)
                .bind(mode)
                .bind(match tie.rows() { Tie::Below(n) => Some(n), _ => None })
                .bind(query.limit)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| SearchHit {
                    kind: SearchKind::Message,
                    id: HitId::Row(r.id),
                    workspace_id: r.workspace_id,
                    workspace_name: r.workspace_name,
                    text: r.text.unwrap_or_default(),
                    created_at: r.created_at.0,
                    // Only a peer's row names another sender (the agent's
                    // own rows name itself).
                    caller_id: r.source_id.filter(|_| r.source.as_deref() == Some("peer_agent")),
                    label: r.source,
                })
                .collect())
        }

        #[tracing::instrument(skip_all, fields(limit = query.limit))]
        async fn find_memories(
            &self,
            query: &SearchQuery,
            text: &SearchText,
        ) -> StoreResult<Vec<SearchHit>> {
            let terms = text.terms();
            if terms.is_empty() {
                return Ok(Vec::new());
            }
            let (at, mode, tie) = bound(query, SearchKind::Memory);
            let sql = format!(
                "SELECT x.id, x.workspace_id, w.name AS workspace_name, x.content, x.scope, \
                   x.created_at \
                 FROM memories x LEFT JOIN workspaces w ON w.id = x.workspace_id \
                 WHERE (CAST($1 AS TEXT) IS NULL OR x.workspace_id IN ({list})) \
                   AND {matches} AND {AFTER} \
                 ORDER BY x.created_at DESC, x.id DESC LIMIT $6",
                list = DB::ID_LIST_1,
                matches = DB::MEMORY_MATCHES_2
            );
            let rows: Vec<MemoryHitRow> = sqlx::query_as(&sql)
                .bind(within(query))
                .bind(terms.all_of_query())
                .bind(at)
                .bind(mode)
                .bind(match tie.uuids() { Tie::Below(u) => Some(MemoryId(u)), _ => None })
                .bind(query.limit)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| SearchHit {
                    kind: SearchKind::Memory,
                    id: HitId::Uuid(r.id.0),
                    workspace_id: r.workspace_id,
                    workspace_name: r.workspace_name,
                    text: r.content,
                    created_at: r.created_at.0,
                    label: Some(r.scope),
                    caller_id: None,
                })
                .collect())
        }

        #[tracing::instrument(skip_all, fields(limit = query.limit))]
        async fn find_delegations(
            &self,
            query: &SearchQuery,
            text: &SearchText,
        ) -> StoreResult<Vec<SearchHit>> {
            let (at, mode, tie) = bound(query, SearchKind::Delegation);
            let like = |col: &str| format!("lower({col}) LIKE $2 ESCAPE '\\'");
            let sql = format!(
                "SELECT x.id, x.callee_id AS workspace_id, w.name AS workspace_name, \
                   CASE WHEN {task} THEN x.task WHEN {result} THEN x.result_preview \
                     ELSE x.error_detail END AS text, \
                   x.status, x.caller_id, x.created_at \
                 FROM delegations x LEFT JOIN workspaces w ON w.id = x.callee_id \
                 WHERE (CAST($1 AS TEXT) IS NULL OR x.callee_id IN ({list}) \
                     OR x.caller_id IN (SELECT CAST(c.id AS TEXT) FROM workspaces c \
                       WHERE c.id IN ({list}))) \
                   AND ({task} OR {result} OR {error}) AND {AFTER} \
                 ORDER BY x.created_at DESC, x.id DESC LIMIT $6",
                task = like("x.task"),
                result = like("x.result_preview"),
                error = like("x.error_detail"),
                list = DB::ID_LIST_1
            );
            let rows: Vec<DelegationHitRow> = sqlx::query_as(&sql)
                .bind(within(query))
                .bind(text.like_pattern())
                .bind(at)
                .bind(mode)
                .bind(match tie.uuids() { Tie::Below(u) => Some(DelegationId(u)), _ => None })
                .bind(query.limit)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| SearchHit {
                    kind: SearchKind::Delegation,
                    id: HitId::Uuid(r.id.0),
                    workspace_id: r.workspace_id,
                    workspace_name: r.workspace_name,
                    text: r.text.unwrap_or_default(),
                    created_at: r.created_at.0,
                    label: Some(r.status),
                    caller_id: Some(r.caller_id),
                })
                .collect())
        }
    }
}
