//! Read state of the chats, kept by the server: how far each reader (the
//! admin token, or one operator token) has read each workspace's chat, and
//! from it the unread counts. Two browsers of one reader agree, and "mark
//! all read" is one statement.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::{SqlStore, Ts};
use super::*;

/// Longest reader key (`token:` and a UUID fit with room).
pub const MAX_READER_LEN: usize = 64;

/// Activity rows that are the agent speaking to the operator: what counts
/// as unread. The canvas's `isFromAgent` (web/js/unread.js) is the same
/// rule; `a` is `activity_logs`.
const AGENT_SPEAKS: &str = "(a.activity_type = 'agent_message' OR \
     (a.activity_type = 'a2a_receive' AND a.method = 'message/send' \
      AND a.response_body IS NOT NULL))";

/// How far one reader has read one workspace's chat.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReadPosition {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The newest activity row id the reader has seen (0: none).
    pub last_read_id: i64,
    /// The workspace's newest activity row id (0: none).
    pub newest_id: i64,
    /// The agent's messages after `last_read_id`.
    pub unread: i64,
}

/// How moving a read position ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadMoved {
    /// The position as it is now (never moved back: a lower id leaves it).
    Done(ReadPosition),
    /// The id is past the workspace's newest row, which it names.
    PastNewest(i64),
}

/// Read positions. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait ReadStore: Send + Sync {
    /// Every live workspace's position for `reader`, with its unread
    /// count, by workspace id; `only` limits it to one workspace.
    async fn read_positions(
        &self,
        reader: &str,
        only: Option<WorkspaceId>,
    ) -> StoreResult<Vec<ReadPosition>>;

    /// Moves `reader`'s position in `workspace_id` forward to `id` (a lower
    /// id changes nothing), unless `id` is past the newest row.
    async fn mark_read(
        &self,
        reader: &str,
        workspace_id: WorkspaceId,
        id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<ReadMoved>;

    /// Moves `reader`'s position in every live workspace to its newest
    /// row; how many positions moved.
    async fn mark_all_read(&self, reader: &str, now: DateTime<Utc>) -> StoreResult<u64>;
}

/// The upsert that only moves a position forward: `$1` reader, `$2`
/// workspace, `$3` id, `$4` time (or a `SELECT` giving them).
const MOVE_FORWARD: &str = "ON CONFLICT (reader, workspace_id) DO UPDATE \
     SET last_read_id = excluded.last_read_id, updated_at = excluded.updated_at \
     WHERE excluded.last_read_id > r.last_read_id";

engines! {
    #[async_trait]
    impl ReadStore for SqlStore<DB> {
        async fn read_positions(
            &self,
            reader: &str,
            only: Option<WorkspaceId>,
        ) -> StoreResult<Vec<ReadPosition>> {
            // The counts walk idx_activity_logs_workspace_id from the
            // position on: a read chat costs nothing, an unread one its
            // unread rows.
            let sql = format!(
                "SELECT w.id AS workspace_id, COALESCE(r.last_read_id, 0) AS last_read_id, \
                   COALESCE((SELECT max(a.id) FROM activity_logs a \
                             WHERE a.workspace_id = w.id), 0) AS newest_id, \
                   (SELECT count(*) FROM activity_logs a WHERE a.workspace_id = w.id \
                     AND a.id > COALESCE(r.last_read_id, 0) AND {AGENT_SPEAKS}) AS unread \
                 FROM workspaces w \
                 LEFT JOIN read_positions r ON r.workspace_id = w.id AND r.reader = $1 \
                 WHERE w.removed_at IS NULL AND ($2 IS NULL OR w.id = $3) \
                 ORDER BY w.id"
            );
            let rows: Vec<ReadPosition> = sqlx::query_as(&sql)
                .bind(reader)
                .bind(only.map(|w| w.to_string()))
                .bind(only)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows)
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, id))]
        async fn mark_read(
            &self,
            reader: &str,
            workspace_id: WorkspaceId,
            id: i64,
            now: DateTime<Utc>,
        ) -> StoreResult<ReadMoved> {
            let mut tx = self.write_tx().await?;
            let newest: i64 = sqlx::query_scalar(
                "SELECT COALESCE(max(id), 0) FROM activity_logs WHERE workspace_id = $1",
            )
            .bind(workspace_id)
            .fetch_one(&mut *tx)
            .await?;
            if id > newest {
                return Ok(ReadMoved::PastNewest(newest));
            }
            sqlx::query(&format!(
                "INSERT INTO read_positions AS r (reader, workspace_id, last_read_id, updated_at) \
                 VALUES ($1, $2, $3, $4) {MOVE_FORWARD}"
            ))
            .bind(reader)
            .bind(workspace_id)
            .bind(id)
            .bind(Ts(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            let mut rows = self.read_positions(reader, Some(workspace_id)).await?;
            match rows.pop() {
                Some(row) => Ok(ReadMoved::Done(row)),
                // Removed between the write and the read: nothing to show.
                None => Ok(ReadMoved::PastNewest(newest)),
            }
        }

        #[tracing::instrument(skip_all)]
        async fn mark_all_read(&self, reader: &str, now: DateTime<Utc>) -> StoreResult<u64> {
            let mut tx = self.write_tx().await?;
            // `WHERE` before `GROUP BY` keeps SQLite from reading the
            // upsert's `ON CONFLICT` as a join constraint.
            let done = sqlx::query(&format!(
                "INSERT INTO read_positions AS r (reader, workspace_id, last_read_id, updated_at) \
                 SELECT $1, a.workspace_id, max(a.id), $2 FROM activity_logs a \
                 JOIN workspaces w ON w.id = a.workspace_id \
                 WHERE w.removed_at IS NULL GROUP BY a.workspace_id {MOVE_FORWARD}"
            ))
            .bind(reader)
            .bind(Ts(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        }
    }
}
