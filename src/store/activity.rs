//! The activity log, which is also every workspace's inbox: rows in commit
//! order per workspace, read after a cursor, swept past the retention.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;

/// An activity row to insert: the inbox protocol's row
/// ([`InboxRow`](crate::domain::inbox::InboxRow)), which every kind of
/// [`InboxItem`](crate::domain::inbox::InboxItem) builds.
pub type NewActivity = crate::domain::inbox::InboxRow;

/// A stored activity row.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// The poll cursor.
    pub id: i64,
    /// Owner.
    pub workspace_id: WorkspaceId,
    /// The fields as inserted.
    pub row: NewActivity,
    /// Insertion time.
    pub created_at: DateTime<Utc>,
}

/// Which activity rows to read.
#[derive(Debug, Clone, Default)]
pub struct ActivityQuery {
    /// Only rows with a greater id.
    pub since_id: i64,
    /// Only rows of this type.
    pub activity_type: Option<String>,
    /// Only rows whose `source_id` equals this (the inbox's `peer_id`).
    pub source_id: Option<String>,
    /// Only rows created strictly before this instant (`before_ts`).
    pub before: Option<DateTime<Utc>>,
    /// At most this many rows.
    pub limit: i64,
}

/// Rows read from the activity log.
#[derive(Debug, Clone, PartialEq)]
pub enum ActivityPage {
    /// The rows after the cursor, oldest first.
    Rows(Vec<Activity>),
    /// The cursor points before the retained window: rows were swept.
    CursorExpired {
        /// Highest swept id; a poller must restart from here.
        swept_through: i64,
    },
}

/// `activity_logs` as read, in [`ACTIVITY_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct ActivityRow {
    id: i64,
    workspace_id: WorkspaceId,
    activity_type: String,
    method: Option<String>,
    source_id: Option<String>,
    target_id: Option<String>,
    summary: Option<String>,
    request_body: Option<Json<Value>>,
    response_body: Option<Json<Value>>,
    status: Option<String>,
    error_detail: Option<String>,
    data: Option<Json<Value>>,
    created_at: Ts,
}

impl From<ActivityRow> for Activity {
    fn from(r: ActivityRow) -> Self {
        Activity {
            id: r.id,
            workspace_id: r.workspace_id,
            row: NewActivity {
                activity_type: r.activity_type,
                method: r.method,
                source_id: r.source_id,
                target_id: r.target_id,
                summary: r.summary,
                request_body: r.request_body.map(|j| j.0),
                response_body: r.response_body.map(|j| j.0),
                status: r.status,
                error_detail: r.error_detail,
                data: r.data.map(|j| j.0),
            },
            created_at: r.created_at.0,
        }
    }
}

pub(super) const ACTIVITY_COLUMNS: &str = "id, workspace_id, activity_type, method, source_id, \
     target_id, summary, request_body, response_body, status, error_detail, data, created_at";

/// The activity log (the inbox). Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait ActivityStore: Send + Sync {
    /// Inserts one row; ids of one workspace are handed out in commit order.
    async fn insert_activity(
        &self,
        workspace_id: WorkspaceId,
        row: &NewActivity,
        now: DateTime<Utc>,
    ) -> StoreResult<Activity>;

    /// Rows after the cursor, oldest first.
    async fn list_activity(
        &self,
        workspace_id: WorkspaceId,
        query: &ActivityQuery,
    ) -> StoreResult<ActivityPage>;

    /// The newest `query.limit` rows matching `query` with an id below
    /// `before_id`, oldest first: history read backwards, a page at a time
    /// (the canvas opens a long chat at its newest page). No expired
    /// cursor here: reading back never skips a row silently.
    async fn list_activity_before(
        &self,
        workspace_id: WorkspaceId,
        query: &ActivityQuery,
        before_id: i64,
    ) -> StoreResult<Vec<Activity>>;

    /// Whether `before_id` is a cursor of `workspace_id`'s history read
    /// backwards: a row of it, past its newest row (read from the
    /// newest), or at or below its swept-through mark (a row the
    /// retention sweep removed).
    async fn activity_cursor_known(
        &self,
        workspace_id: WorkspaceId,
        before_id: i64,
    ) -> StoreResult<bool>;

    /// Deletes up to `limit` activity rows created before `cutoff`, records
    /// the highest deleted id per workspace, and returns how many it deleted.
    async fn sweep_activity(&self, cutoff: DateTime<Utc>, limit: i64) -> StoreResult<u64>;
}

engines! {
    impl SqlStore<DB> {
        /// Inserts one activity row inside the caller's transaction,
        /// after taking the engine's per-workspace id lock.
        pub(super) async fn insert_activity_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            workspace_id: WorkspaceId,
            row: &NewActivity,
            now: DateTime<Utc>,
        ) -> StoreResult<Activity> {
            DB::lock_activity_ids(&mut *conn, workspace_id).await?;
            let sql = format!(
                "INSERT INTO activity_logs (workspace_id, activity_type, method, source_id, \
                 target_id, summary, request_body, response_body, status, error_detail, \
                 data, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 RETURNING {ACTIVITY_COLUMNS}"
            );
            let inserted: ActivityRow = sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(&row.activity_type)
                .bind(&row.method)
                .bind(&row.source_id)
                .bind(&row.target_id)
                .bind(&row.summary)
                .bind(row.request_body.as_ref().map(Json))
                .bind(row.response_body.as_ref().map(Json))
                .bind(&row.status)
                .bind(&row.error_detail)
                .bind(row.data.as_ref().map(Json))
                .bind(Ts(now))
                .fetch_all(&mut *conn)
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("INSERT returned no row".into()))?;
            Ok(inserted.into())
        }
    }

    #[async_trait]
    impl ActivityStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn insert_activity(
            &self,
            workspace_id: WorkspaceId,
            row: &NewActivity,
            now: DateTime<Utc>,
        ) -> StoreResult<Activity> {
            let mut tx = self.write_tx().await?;
            let activity = Self::insert_activity_in(&mut tx, workspace_id, row, now).await?;
            tx.commit().await?;
            Ok(activity)
        }

        async fn list_activity(
            &self,
            workspace_id: WorkspaceId,
            query: &ActivityQuery,
        ) -> StoreResult<ActivityPage> {
            let sql = format!(
                "SELECT {ACTIVITY_COLUMNS} FROM activity_logs \
                 WHERE workspace_id = $1 AND id > $2 \
                   AND (CAST($3 AS TEXT) IS NULL OR activity_type = $3) \
                   AND (CAST($5 AS TEXT) IS NULL OR source_id = $5) \
                   AND ($6 IS NULL OR created_at < $6) \
                 ORDER BY id LIMIT $4"
            );
            let rows: Vec<ActivityRow> = sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(query.since_id)
                .bind(&query.activity_type)
                .bind(query.limit)
                .bind(&query.source_id)
                .bind(query.before.map(Ts))
                .fetch_all(&self.pool)
                .await?;
            // The rows first, the swept-through mark after: a sweep that
            // commits between the two reads raises the mark, so the
            // cursor is answered as expired instead of silently jumping
            // over the rows it deleted. (Mark first, rows after, would
            // miss exactly that sweep.)
            self.between_reads.run().await;
            if query.since_id > 0 {
                let swept: Option<i64> = sqlx::query_scalar(
                    "SELECT activity_swept_through FROM workspaces WHERE id = $1",
                )
                .bind(workspace_id)
                .fetch_optional(&self.pool)
                .await?;
                if let Some(swept_through) = swept.filter(|s| query.since_id < *s) {
                    return Ok(ActivityPage::CursorExpired { swept_through });
                }
            }
            Ok(ActivityPage::Rows(rows.into_iter().map(Into::into).collect()))
        }

        async fn list_activity_before(
            &self,
            workspace_id: WorkspaceId,
            query: &ActivityQuery,
            before_id: i64,
        ) -> StoreResult<Vec<Activity>> {
            let sql = format!(
                "SELECT {ACTIVITY_COLUMNS} FROM activity_logs \
                 WHERE workspace_id = $1 AND id > $2 AND id < $7 \
                   AND (CAST($3 AS TEXT) IS NULL OR activity_type = $3) \
                   AND (CAST($5 AS TEXT) IS NULL OR source_id = $5) \
                   AND ($6 IS NULL OR created_at < $6) \
                 ORDER BY id DESC LIMIT $4"
            );
            let rows: Vec<ActivityRow> = sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(query.since_id)
                .bind(&query.activity_type)
                .bind(query.limit)
                .bind(&query.source_id)
                .bind(query.before.map(Ts))
                .bind(before_id)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().rev().map(Into::into).collect())
        }

        async fn activity_cursor_known(
            &self,
            workspace_id: WorkspaceId,
            before_id: i64,
        ) -> StoreResult<bool> {
            // Three index lookups in one round trip.
            let (newest, named, swept): (Option<i64>, i64, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT max(id) FROM activity_logs WHERE workspace_id = $1), \
                   (SELECT count(*) FROM activity_logs WHERE workspace_id = $1 AND id = $2), \
                   (SELECT activity_swept_through FROM workspaces WHERE id = $1)",
            )
            .bind(workspace_id)
            .bind(before_id)
            .fetch_one(&self.pool)
            .await?;
            Ok(named > 0 || before_id > newest.unwrap_or(0) || before_id <= swept.unwrap_or(0))
        }

        async fn sweep_activity(&self, cutoff: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
            let _w = self.writer().await;
            DB::sweep_activity(self, cutoff, limit).await
        }
    }
}
