//! The SQLite engine: the embedded default, one file under the data dir.
//!
//! SQLite runs one writer at a time anyway; the store makes that explicit
//! with an async write lock, so transactions queue in the process instead of
//! failing with `SQLITE_BUSY`, and activity ids are in commit order by
//! construction. Ids are stored as text, timestamps as integer
//! microseconds (exact comparisons), JSON as text.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use tokio::sync::Mutex;

use super::*;
use crate::domain::{DeliveryMode, FileId, HeartbeatReport, Tier, TokenHash, WorkspaceId};

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    pool: SqlitePool,
    write: Mutex<()>,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(v: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

fn opt_from_micros(v: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    v.map(from_micros).transpose()
}

fn parse_id<T: FromStr>(raw: String) -> StoreResult<T> {
    raw.parse()
        .map_err(|_| StoreError::Corrupt(format!("id {raw:?}")))
}

fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

fn json_col(row: &SqliteRow, col: &str) -> StoreResult<Option<Value>> {
    let raw: Option<String> = row.try_get(col)?;
    raw.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}"))))
        .transpose()
}

fn workspace_from_row(row: &SqliteRow) -> StoreResult<Workspace> {
    let mode: String = row.try_get("delivery_mode")?;
    Ok(Workspace {
        id: parse_id(row.try_get("id")?)?,
        name: row.try_get("name")?,
        delivery_mode: mode
            .parse::<DeliveryMode>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        url: row.try_get("url")?,
        agent_card: json_col(row, "agent_card")?,
        created_at: from_micros(row.try_get("created_at")?)?,
        updated_at: from_micros(row.try_get("updated_at")?)?,
        last_heartbeat_at: opt_from_micros(row.try_get("last_heartbeat_at")?)?,
        parent_id: row
            .try_get::<Option<String>, _>("parent_id")?
            .map(parse_id)
            .transpose()?,
        collapsed: row.try_get("collapsed")?,
        tier: Tier::new(row.try_get("tier")?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        runtime: row.try_get("runtime")?,
        model: row.try_get("model")?,
        paused_at: opt_from_micros(row.try_get("paused_at")?)?,
        removed_at: opt_from_micros(row.try_get("removed_at")?)?,
        report: HeartbeatReport {
            current_task: row.try_get("current_task")?,
            active_tasks: Some(row.try_get("active_tasks")?),
            error_rate: row.try_get("error_rate")?,
            sample_error: row.try_get("sample_error")?,
            uptime_seconds: row.try_get("uptime_seconds")?,
        },
    })
}

/// Inserts a workspace row, inside the caller's transaction.
async fn insert_workspace(
    conn: &mut sqlx::SqliteConnection,
    id: WorkspaceId,
    new: &NewWorkspace,
    now: DateTime<Utc>,
) -> StoreResult<SqliteRow> {
    Ok(sqlx::query(
        "INSERT INTO workspaces (id, name, delivery_mode, url, parent_id, tier, runtime, model, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) RETURNING *",
    )
    .bind(id.to_string())
    .bind(&new.name)
    .bind(new.delivery_mode.as_str())
    .bind(&new.url)
    .bind(new.parent_id.map(|p| p.to_string()))
    .bind(new.tier.get())
    .bind(&new.runtime)
    .bind(&new.model)
    .bind(micros(now))
    .fetch_one(conn)
    .await?)
}

/// Fails unless `parent` is a live workspace.
async fn require_live_parent(
    conn: &mut sqlx::SqliteConnection,
    parent: WorkspaceId,
) -> StoreResult<()> {
    let live = sqlx::query("SELECT 1 FROM workspaces WHERE id = ?1 AND removed_at IS NULL")
        .bind(parent.to_string())
        .fetch_optional(conn)
        .await?
        .is_some();
    if live {
        Ok(())
    } else {
        Err(StoreError::UnknownParent(parent))
    }
}

/// The chain from `parent` up to the root, stopping at `id` if it is met
/// (which makes `id` its own ancestor).
async fn ancestors(
    conn: &mut sqlx::SqliteConnection,
    parent: WorkspaceId,
) -> StoreResult<Vec<WorkspaceId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE up(id, parent_id, depth) AS ( \
           SELECT id, parent_id, 0 FROM workspaces WHERE id = ?1 \
           UNION ALL \
           SELECT w.id, w.parent_id, up.depth + 1 FROM workspaces w JOIN up ON w.id = up.parent_id \
           WHERE up.depth < 10000 \
         ) SELECT id FROM up ORDER BY depth",
    )
    .bind(parent.to_string())
    .fetch_all(conn)
    .await?;
    ids.into_iter().map(parse_id).collect()
}

fn activity_from_row(row: &SqliteRow) -> StoreResult<Activity> {
    Ok(Activity {
        id: row.try_get("id")?,
        workspace_id: parse_id(row.try_get("workspace_id")?)?,
        row: NewActivity {
            activity_type: row.try_get("activity_type")?,
            method: row.try_get("method")?,
            source_id: row.try_get("source_id")?,
            target_id: row.try_get("target_id")?,
            summary: row.try_get("summary")?,
            request_body: json_col(row, "request_body")?,
            response_body: json_col(row, "response_body")?,
            status: row.try_get("status")?,
            error_detail: row.try_get("error_detail")?,
            data: json_col(row, "data")?,
        },
        created_at: from_micros(row.try_get("created_at")?)?,
    })
}

fn upload_from_row(row: &SqliteRow) -> StoreResult<PendingUpload> {
    Ok(PendingUpload {
        file_id: parse_id(row.try_get("file_id")?)?,
        workspace_id: parse_id(row.try_get("workspace_id")?)?,
        blob_key: row.try_get("blob_key")?,
        size: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        filename: row.try_get("filename")?,
        mimetype: row.try_get("mimetype")?,
        created_at: from_micros(row.try_get("created_at")?)?,
        fetched_at: opt_from_micros(row.try_get("fetched_at")?)?,
        acked_at: opt_from_micros(row.try_get("acked_at")?)?,
        expires_at: from_micros(row.try_get("expires_at")?)?,
    })
}

const UPLOAD_COLUMNS: &str = "file_id, workspace_id, blob_key, size_bytes, sha256, filename, \
     mimetype, created_at, fetched_at, acked_at, expires_at";

/// The one predicate for "this workspace's file, still deliverable": fetch,
/// read and ack all use it, so absent, acked, expired and foreign files are
/// the same miss everywhere. Binds the file id, the workspace id and now.
const LIVE_FILE: &str =
    "file_id = ?1 AND workspace_id = ?2 AND acked_at IS NULL AND expires_at > ?3";

const ACTIVITY_COLUMNS: &str = "id, workspace_id, activity_type, method, source_id, target_id, \
     summary, request_body, response_body, status, error_detail, data, created_at";

/// Inserts a live token for a workspace, inside the caller's transaction.
async fn insert_token(
    conn: &mut sqlx::SqliteConnection,
    id: WorkspaceId,
    token: TokenHash,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO workspace_auth_tokens (token_hash, workspace_id, created_at) VALUES (?1, ?2, ?3)")
        .bind(&token.0[..])
        .bind(id.to_string())
        .bind(micros(now))
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert_activity_tx(
    conn: &mut sqlx::SqliteConnection,
    workspace_id: WorkspaceId,
    row: &NewActivity,
    now: DateTime<Utc>,
) -> StoreResult<Activity> {
    let sql = format!(
        "INSERT INTO activity_logs (workspace_id, activity_type, method, source_id, target_id, \
         summary, request_body, response_body, status, error_detail, data, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING {ACTIVITY_COLUMNS}"
    );
    let inserted = sqlx::query(&sql)
        .bind(workspace_id.to_string())
        .bind(&row.activity_type)
        .bind(&row.method)
        .bind(&row.source_id)
        .bind(&row.target_id)
        .bind(&row.summary)
        .bind(json_text(&row.request_body))
        .bind(json_text(&row.response_body))
        .bind(&row.status)
        .bind(&row.error_detail)
        .bind(json_text(&row.data))
        .bind(micros(now))
        .fetch_one(&mut *conn)
        .await?;
    activity_from_row(&inserted)
}

impl SqliteStore {
    /// Opens (creating if needed) the database a `sqlite://PATH` URL names.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a transaction acknowledged to a client survives a power
            // loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            write: Mutex::new(()),
        })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        let _w = self.write.lock().await;
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id))]
    async fn create_workspace(
        &self,
        id: WorkspaceId,
        new: &NewWorkspace,
        token: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Workspace> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        if let Some(parent) = new.parent_id {
            require_live_parent(&mut tx, parent).await?;
        }
        let row = insert_workspace(&mut tx, id, new, now).await?;
        insert_token(&mut tx, id, token, now).await?;
        tx.commit().await?;
        workspace_from_row(&row)
    }

    async fn get_workspace(&self, id: WorkspaceId) -> StoreResult<Option<Workspace>> {
        let row = sqlx::query("SELECT * FROM workspaces WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>> {
        let rows = sqlx::query(
            "SELECT * FROM workspaces WHERE removed_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(workspace_from_row).collect()
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id))]
    async fn update_workspace(
        &self,
        id: WorkspaceId,
        update: &UpdateWorkspace,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Workspace>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        if let Some(Some(parent)) = update.parent_id {
            require_live_parent(&mut tx, parent).await?;
            let chain = ancestors(&mut tx, parent).await?;
            if let Some(at) = chain.iter().position(|a| *a == id) {
                let mut cycle = vec![id];
                cycle.extend_from_slice(&chain[..=at]);
                return Err(StoreError::Cycle(cycle));
            }
        }
        let row = sqlx::query(
            "UPDATE workspaces SET \
               name = COALESCE(?2, name), \
               delivery_mode = COALESCE(?3, delivery_mode), \
               url = CASE WHEN ?4 THEN ?5 ELSE url END, \
               agent_card = COALESCE(?6, agent_card), \
               parent_id = CASE WHEN ?8 THEN ?9 ELSE parent_id END, \
               collapsed = COALESCE(?10, collapsed), \
               tier = COALESCE(?11, tier), \
               runtime = COALESCE(?12, runtime), \
               model = COALESCE(?13, model), \
               updated_at = ?7 \
             WHERE id = ?1 AND removed_at IS NULL RETURNING *",
        )
        .bind(id.to_string())
        .bind(&update.name)
        .bind(update.delivery_mode.map(DeliveryMode::as_str))
        .bind(update.url.is_some())
        .bind(update.url.clone().flatten())
        .bind(json_text(&update.agent_card))
        .bind(micros(now))
        .bind(update.parent_id.is_some())
        .bind(update.parent_id.flatten().map(|p| p.to_string()))
        .bind(update.collapsed)
        .bind(update.tier.map(Tier::get))
        .bind(&update.runtime)
        .bind(&update.model)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id, cascade))]
    async fn remove_workspace(
        &self,
        id: WorkspaceId,
        cascade: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Removal> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let live = sqlx::query("SELECT 1 FROM workspaces WHERE id = ?1 AND removed_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !live {
            return Ok(Removal::NotFound);
        }
        let children: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workspaces WHERE parent_id = ?1 AND removed_at IS NULL",
        )
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if children > 0 && !cascade {
            return Ok(Removal::HasLiveChildren(children));
        }
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "WITH RECURSIVE sub(id, parent_id, depth) AS ( \
               SELECT id, parent_id, 0 FROM workspaces WHERE id = ?1 \
               UNION ALL \
               SELECT w.id, w.parent_id, sub.depth + 1 FROM workspaces w JOIN sub ON w.parent_id = sub.id \
               WHERE w.removed_at IS NULL \
             ) SELECT id, parent_id FROM sub ORDER BY depth",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let mut removed = Vec::with_capacity(rows.len());
        for (ws, parent) in rows {
            sqlx::query("UPDATE workspaces SET removed_at = ?2, updated_at = ?2 WHERE id = ?1")
                .bind(&ws)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE workspace_auth_tokens SET revoked_at = ?2 WHERE workspace_id = ?1 AND revoked_at IS NULL",
            )
            .bind(&ws)
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            removed.push((parse_id(ws)?, parent.map(parse_id).transpose()?));
        }
        tx.commit().await?;
        Ok(Removal::Removed(removed))
    }

    async fn child_ids(&self, id: WorkspaceId) -> StoreResult<Vec<WorkspaceId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM workspaces WHERE parent_id = ?1 AND removed_at IS NULL ORDER BY created_at, id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        ids.into_iter().map(parse_id).collect()
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id, paused))]
    async fn set_paused(
        &self,
        id: WorkspaceId,
        paused: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Workspace>> {
        let _w = self.write.lock().await;
        let row = sqlx::query(
            "UPDATE workspaces SET paused_at = CASE WHEN ?2 THEN COALESCE(paused_at, ?3) END, \
             updated_at = ?3 WHERE id = ?1 AND removed_at IS NULL RETURNING *",
        )
        .bind(id.to_string())
        .bind(paused)
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id))]
    async fn request_restart(
        &self,
        id: WorkspaceId,
        row: &NewActivity,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Workspace, Activity)>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let ws = sqlx::query(
            "UPDATE workspaces SET active_tasks = 0, updated_at = ?2 \
             WHERE id = ?1 AND removed_at IS NULL RETURNING *",
        )
        .bind(id.to_string())
        .bind(micros(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(ws) = ws else {
            return Ok(None);
        };
        let activity = insert_activity_tx(&mut tx, id, row, now).await?;
        tx.commit().await?;
        Ok(Some((workspace_from_row(&ws)?, activity)))
    }

    #[tracing::instrument(skip_all, fields(nodes = nodes.len(), dry_run))]
    async fn import_org(
        &self,
        nodes: &[ImportNode],
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ImportedNode>> {
        // The write lock serializes imports (and every other write), so two
        // concurrent imports of one template still make one tree.
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut out: Vec<ImportedNode> = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            let parent_id = node.parent.map(|i| out[i].id);
            // `IS` compares NULL equal to NULL: root nodes match roots.
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT id FROM workspaces WHERE parent_id IS ?1 AND name = ?2 \
                 AND removed_at IS NULL ORDER BY created_at, id LIMIT 1",
            )
            .bind(parent_id.map(|p| p.to_string()))
            .bind(&node.workspace.name)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(existing) = existing {
                out.push(ImportedNode {
                    id: parse_id(existing)?,
                    parent_id,
                    created: false,
                });
                continue;
            }
            let new = NewWorkspace {
                parent_id,
                ..node.workspace.clone()
            };
            // One microsecond apart: listings (oldest first) keep the
            // template's order.
            let at = now + chrono::Duration::microseconds(i as i64);
            insert_workspace(&mut tx, node.id, &new, at).await?;
            insert_token(&mut tx, node.id, node.token, at).await?;
            out.push(ImportedNode {
                id: node.id,
                parent_id,
                created: true,
            });
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(out)
    }

    async fn removed_workspace_for_token(
        &self,
        token: TokenHash,
    ) -> StoreResult<Option<WorkspaceId>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT w.id FROM workspace_auth_tokens t JOIN workspaces w ON w.id = t.workspace_id \
             WHERE t.token_hash = ?1 AND w.removed_at IS NOT NULL",
        )
        .bind(&token.0[..])
        .fetch_optional(&self.pool)
        .await?;
        id.map(parse_id).transpose()
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id))]
    async fn rotate_token(
        &self,
        id: WorkspaceId,
        token: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM workspaces WHERE id = ?1 AND removed_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE workspace_auth_tokens SET revoked_at = ?2 WHERE workspace_id = ?1 AND revoked_at IS NULL",
        )
        .bind(id.to_string())
        .bind(micros(now))
        .execute(&mut *tx)
        .await?;
        insert_token(&mut tx, id, token, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn workspace_for_token(&self, token: TokenHash) -> StoreResult<Option<WorkspaceId>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT workspace_id FROM workspace_auth_tokens WHERE token_hash = ?1 AND revoked_at IS NULL",
        )
        .bind(&token.0[..])
        .fetch_optional(&self.pool)
        .await?;
        id.map(parse_id).transpose()
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id))]
    async fn register_workspace(
        &self,
        id: WorkspaceId,
        update: &UpdateWorkspace,
        mint: Option<TokenHash>,
        now: DateTime<Utc>,
    ) -> StoreResult<Registered> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        // A removed workspace has no live token; it must not bootstrap one.
        let exists = sqlx::query("SELECT 1 FROM workspaces WHERE id = ?1 AND removed_at IS NULL")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(Registered::NotFound);
        }
        if let Some(token) = mint {
            let live: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM workspace_auth_tokens WHERE workspace_id = ?1 AND revoked_at IS NULL",
            )
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
            if live > 0 {
                return Ok(Registered::HasLiveToken);
            }
            insert_token(&mut tx, id, token, now).await?;
        }
        let row = sqlx::query(
            "UPDATE workspaces SET \
               delivery_mode = COALESCE(?2, delivery_mode), \
               url = CASE WHEN ?3 THEN ?4 ELSE url END, \
               agent_card = COALESCE(?5, agent_card), \
               updated_at = ?6, last_heartbeat_at = ?6 \
             WHERE id = ?1 RETURNING *",
        )
        .bind(id.to_string())
        .bind(update.delivery_mode.map(DeliveryMode::as_str))
        .bind(update.url.is_some())
        .bind(update.url.clone().flatten())
        .bind(json_text(&update.agent_card))
        .bind(micros(now))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Registered::Done(Box::new(workspace_from_row(&row)?)))
    }

    async fn heartbeat(
        &self,
        id: WorkspaceId,
        report: &HeartbeatReport,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "UPDATE workspaces SET last_heartbeat_at = ?2, \
               current_task = COALESCE(?3, current_task), \
               active_tasks = COALESCE(?4, active_tasks), \
               error_rate = COALESCE(?5, error_rate), \
               sample_error = COALESCE(?6, sample_error), \
               uptime_seconds = COALESCE(?7, uptime_seconds) \
             WHERE id = ?1 AND removed_at IS NULL",
        )
        .bind(id.to_string())
        .bind(micros(now))
        .bind(&report.current_task)
        .bind(report.active_tasks)
        .bind(report.error_rate)
        .bind(&report.sample_error)
        .bind(report.uptime_seconds)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
    async fn insert_activity(
        &self,
        workspace_id: WorkspaceId,
        row: &NewActivity,
        now: DateTime<Utc>,
    ) -> StoreResult<Activity> {
        let _w = self.write.lock().await;
        let mut conn = self.pool.acquire().await?;
        insert_activity_tx(&mut conn, workspace_id, row, now).await
    }

    async fn list_activity(
        &self,
        workspace_id: WorkspaceId,
        query: &ActivityQuery,
    ) -> StoreResult<ActivityPage> {
        if query.since_id > 0 {
            let swept: Option<i64> =
                sqlx::query_scalar("SELECT activity_swept_through FROM workspaces WHERE id = ?1")
                    .bind(workspace_id.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(swept_through) = swept.filter(|s| query.since_id < *s) {
                return Ok(ActivityPage::CursorExpired { swept_through });
            }
        }
        let sql = format!(
            "SELECT {ACTIVITY_COLUMNS} FROM activity_logs \
             WHERE workspace_id = ?1 AND id > ?2 AND (?3 IS NULL OR activity_type = ?3) \
             ORDER BY id LIMIT ?4"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id.to_string())
            .bind(query.since_id)
            .bind(&query.activity_type)
            .bind(query.limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(ActivityPage::Rows(
            rows.iter()
                .map(activity_from_row)
                .collect::<StoreResult<_>>()?,
        ))
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, files = files.len()))]
    async fn stage_uploads(
        &self,
        workspace_id: WorkspaceId,
        files: &[(NewPendingUpload, NewActivity)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Activity>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut activities = Vec::with_capacity(files.len());
        for (file, activity) in files {
            sqlx::query(
                "INSERT INTO pending_uploads (file_id, workspace_id, blob_key, size_bytes, sha256, \
                 filename, mimetype, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .bind(file.file_id.to_string())
            .bind(workspace_id.to_string())
            .bind(&file.blob_key)
            .bind(file.size)
            .bind(&file.sha256)
            .bind(&file.filename)
            .bind(&file.mimetype)
            .bind(micros(file.created_at))
            .bind(micros(file.expires_at))
            .execute(&mut *tx)
            .await?;
            activities.push(insert_activity_tx(&mut tx, workspace_id, activity, now).await?);
        }
        tx.commit().await?;
        Ok(activities)
    }

    async fn list_pending_uploads(
        &self,
        workspace_id: WorkspaceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PendingUpload>> {
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS} FROM pending_uploads \
             WHERE workspace_id = ?1 AND acked_at IS NULL AND expires_at > ?2 \
             ORDER BY created_at, file_id"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id.to_string())
            .bind(micros(now))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(upload_from_row).collect()
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, file_id = %file_id))]
    async fn fetch_pending_upload(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PendingUpload>> {
        let _w = self.write.lock().await;
        let sql = format!(
            "UPDATE pending_uploads SET fetched_at = ?3 \
             WHERE {LIVE_FILE} \
             RETURNING {UPLOAD_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(file_id.to_string())
            .bind(workspace_id.to_string())
            .bind(micros(now))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(upload_from_row).transpose()
    }

    async fn get_pending_upload(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PendingUpload>> {
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS} FROM pending_uploads \
             WHERE {LIVE_FILE}"
        );
        let row = sqlx::query(&sql)
            .bind(file_id.to_string())
            .bind(workspace_id.to_string())
            .bind(micros(now))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(upload_from_row).transpose()
    }

    async fn list_all_uploads(
        &self,
        workspace_id: WorkspaceId,
        limit: i64,
    ) -> StoreResult<Vec<PendingUpload>> {
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS} FROM pending_uploads WHERE workspace_id = ?1 \
             ORDER BY created_at, file_id LIMIT ?2"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id.to_string())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(upload_from_row).collect()
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, file_id = %file_id))]
    async fn ack_pending_upload(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
        now: DateTime<Utc>,
    ) -> StoreResult<AckOutcome> {
        let _w = self.write.lock().await;
        let sql = format!(
            "UPDATE pending_uploads SET acked_at = ?3 \
             WHERE {LIVE_FILE} \
             RETURNING {UPLOAD_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(file_id.to_string())
            .bind(workspace_id.to_string())
            .bind(micros(now))
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return Ok(AckOutcome::Acked(upload_from_row(&row)?));
        }
        let acked: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT acked_at FROM pending_uploads WHERE file_id = ?1 AND workspace_id = ?2 AND expires_at > ?3",
        )
        .bind(file_id.to_string())
        .bind(workspace_id.to_string())
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match acked {
            Some(Some(_)) => AckOutcome::AlreadyAcked,
            _ => AckOutcome::NotFound,
        })
    }

    async fn upload_stats(&self, now: DateTime<Utc>) -> StoreResult<UploadStats> {
        let row = sqlx::query(
            "SELECT \
               count(*) FILTER (WHERE acked_at IS NULL AND expires_at > ?1) AS pending, \
               count(*) FILTER (WHERE acked_at IS NULL AND expires_at > ?1 AND fetched_at IS NOT NULL) AS fetched_not_acked, \
               count(*) FILTER (WHERE acked_at IS NOT NULL) AS acked, \
               count(*) FILTER (WHERE acked_at IS NULL AND expires_at <= ?1) AS expired, \
               COALESCE(sum(size_bytes) FILTER (WHERE acked_at IS NULL AND expires_at > ?1), 0) AS bytes_pending, \
               min(created_at) FILTER (WHERE acked_at IS NULL AND expires_at > ?1) AS oldest \
             FROM pending_uploads",
        )
        .bind(micros(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(UploadStats {
            pending: row.try_get("pending")?,
            fetched_not_acked: row.try_get("fetched_not_acked")?,
            acked: row.try_get("acked")?,
            expired: row.try_get("expired")?,
            bytes_pending: row.try_get("bytes_pending")?,
            oldest_pending_at: opt_from_micros(row.try_get("oldest")?)?,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn sweep_uploads(
        &self,
        now: DateTime<Utc>,
        acked_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SweptUpload>> {
        let _w = self.write.lock().await;
        let rows = sqlx::query(
            "DELETE FROM pending_uploads WHERE \
               file_id IN (SELECT file_id FROM pending_uploads \
                           WHERE acked_at IS NOT NULL AND acked_at < ?2 ORDER BY acked_at LIMIT ?3) \
               OR file_id IN (SELECT file_id FROM pending_uploads \
                           WHERE acked_at IS NULL AND expires_at <= ?1 ORDER BY expires_at LIMIT ?3) \
             RETURNING file_id, workspace_id, blob_key, (acked_at IS NOT NULL) AS was_acked",
        )
        .bind(micros(now))
        .bind(micros(acked_before))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let acked: bool = row.try_get("was_acked")?;
                Ok(SweptUpload {
                    file_id: parse_id(row.try_get("file_id")?)?,
                    workspace_id: parse_id(row.try_get("workspace_id")?)?,
                    blob_key: row.try_get("blob_key")?,
                    reason: if acked {
                        SweepReason::Acked
                    } else {
                        SweepReason::Expired
                    },
                })
            })
            .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn sweep_activity(&self, cutoff: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS swept_activity (id INTEGER PRIMARY KEY, workspace_id TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM swept_activity")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO swept_activity (id, workspace_id) \
             SELECT id, workspace_id FROM activity_logs WHERE created_at < ?1 ORDER BY id LIMIT ?2",
        )
        .bind(micros(cutoff))
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        let deleted =
            sqlx::query("DELETE FROM activity_logs WHERE id IN (SELECT id FROM swept_activity)")
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query(
            "UPDATE workspaces SET activity_swept_through = max(activity_swept_through, \
               (SELECT max(id) FROM swept_activity s WHERE s.workspace_id = workspaces.id)) \
             WHERE id IN (SELECT workspace_id FROM swept_activity)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM swept_activity")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    #[tracing::instrument(skip_all)]
    async fn reset_phantom_busy(
        &self,
        stale_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<WorkspaceId>> {
        let _w = self.write.lock().await;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE workspaces SET active_tasks = 0 WHERE id IN ( \
               SELECT id FROM workspaces WHERE active_tasks > 0 AND removed_at IS NULL \
               AND (last_heartbeat_at IS NULL OR last_heartbeat_at < ?1) LIMIT ?2 \
             ) RETURNING id",
        )
        .bind(micros(stale_before))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        ids.into_iter().map(parse_id).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn purge_removed(&self, removed_before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "DELETE FROM workspaces WHERE id IN ( \
               SELECT id FROM workspaces WHERE removed_at IS NOT NULL AND removed_at < ?1 \
               ORDER BY removed_at LIMIT ?2 \
             )",
        )
        .bind(micros(removed_before))
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn referenced_blob_keys(&self, keys: &[String]) -> StoreResult<Vec<String>> {
        let list = serde_json::to_string(keys).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT blob_key FROM pending_uploads WHERE blob_key IN (SELECT value FROM json_each(?1))",
        )
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        Ok(found)
    }

    async fn put_blob_chunk(
        &self,
        key: &str,
        seq: i32,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let _w = self.write.lock().await;
        sqlx::query(
            "INSERT INTO blob_chunks (blob_key, seq, content, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(key)
        .bind(seq)
        .bind(bytes)
        .bind(micros(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_blob_chunk(&self, key: &str, seq: i32) -> StoreResult<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT content FROM blob_chunks WHERE blob_key = ?1 AND seq = ?2")
                .bind(key)
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn delete_blob(&self, key: &str) -> StoreResult<bool> {
        let _w = self.write.lock().await;
        let done = sqlx::query("DELETE FROM blob_chunks WHERE blob_key = ?1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_blobs(&self) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        let rows = sqlx::query(
            "SELECT blob_key, created_at FROM blob_chunks WHERE seq = 0 ORDER BY blob_key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("blob_key")?,
                    from_micros(r.try_get("created_at")?)?,
                ))
            })
            .collect()
    }
}
