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
use crate::domain::{DeliveryMode, FileId, PluginName, SecretName, TokenHash, WorkspaceId};

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
    })
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

fn secret_name(raw: String) -> StoreResult<SecretName> {
    SecretName::parse(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn plugin_name(raw: String) -> StoreResult<PluginName> {
    PluginName::parse(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn plugin_from_row(row: &SqliteRow) -> StoreResult<Plugin> {
    Ok(Plugin {
        name: plugin_name(row.try_get("name")?)?,
        blob_key: row.try_get("blob_key")?,
        size: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        created_at: from_micros(row.try_get("created_at")?)?,
        updated_at: from_micros(row.try_get("updated_at")?)?,
    })
}

fn install_from_row(row: &SqliteRow) -> StoreResult<PluginInstall> {
    Ok(PluginInstall {
        workspace_id: parse_id(row.try_get("workspace_id")?)?,
        name: plugin_name(row.try_get("name")?)?,
        source: row.try_get("source")?,
        installed_at: from_micros(row.try_get("installed_at")?)?,
    })
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
        let row = sqlx::query(
            "INSERT INTO workspaces (id, name, delivery_mode, url, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING *",
        )
        .bind(id.to_string())
        .bind(&new.name)
        .bind(new.delivery_mode.as_str())
        .bind(&new.url)
        .bind(micros(now))
        .fetch_one(&mut *tx)
        .await?;
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
        let rows = sqlx::query("SELECT * FROM workspaces ORDER BY created_at, id")
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
        let row = sqlx::query(
            "UPDATE workspaces SET \
               name = COALESCE(?2, name), \
               delivery_mode = COALESCE(?3, delivery_mode), \
               url = CASE WHEN ?4 THEN ?5 ELSE url END, \
               agent_card = COALESCE(?6, agent_card), \
               updated_at = ?7 \
             WHERE id = ?1 RETURNING *",
        )
        .bind(id.to_string())
        .bind(&update.name)
        .bind(update.delivery_mode.map(DeliveryMode::as_str))
        .bind(update.url.is_some())
        .bind(update.url.clone().flatten())
        .bind(json_text(&update.agent_card))
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id))]
    async fn delete_workspace(&self, id: WorkspaceId) -> StoreResult<bool> {
        let _w = self.write.lock().await;
        let done = sqlx::query("DELETE FROM workspaces WHERE id = ?1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
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
        let exists = sqlx::query("SELECT 1 FROM workspaces WHERE id = ?1")
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
        let exists = sqlx::query("SELECT 1 FROM workspaces WHERE id = ?1")
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
        Ok(Registered::Done(workspace_from_row(&row)?))
    }

    async fn heartbeat(&self, id: WorkspaceId, now: DateTime<Utc>) -> StoreResult<bool> {
        let _w = self.write.lock().await;
        let done = sqlx::query("UPDATE workspaces SET last_heartbeat_at = ?2 WHERE id = ?1")
            .bind(id.to_string())
            .bind(micros(now))
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
               AND (?5 IS NULL OR source_id = ?5) AND (?6 IS NULL OR created_at < ?6) \
             ORDER BY id LIMIT ?4"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id.to_string())
            .bind(query.since_id)
            .bind(&query.activity_type)
            .bind(query.limit)
            .bind(&query.source_id)
            .bind(query.before.map(micros))
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

    async fn secrets_key_check(
        &self,
        candidate: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<u8>> {
        let _w = self.write.lock().await;
        sqlx::query(
            "INSERT INTO secrets_key_check (id, sealed, created_at) VALUES (1, ?1, ?2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(candidate)
        .bind(micros(now))
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT sealed FROM secrets_key_check WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(skip_all, fields(secret = %name))]
    async fn put_secret(
        &self,
        scope: SecretScope,
        name: &SecretName,
        sealed: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let _w = self.write.lock().await;
        let done = match scope {
            SecretScope::Global => {
                sqlx::query(
                    "INSERT INTO global_secrets (name, sealed, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?3) \
                     ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                )
                .bind(name.as_str())
                .bind(sealed)
                .bind(micros(now))
                .execute(&self.pool)
                .await?
            }
            SecretScope::Workspace(id) => {
                sqlx::query(
                    "INSERT INTO workspace_secrets (workspace_id, name, sealed, created_at, updated_at) \
                     SELECT ?1, ?2, ?3, ?4, ?4 WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = ?1) \
                     ON CONFLICT (workspace_id, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                )
                .bind(id.to_string())
                .bind(name.as_str())
                .bind(sealed)
                .bind(micros(now))
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, fields(secret = %name))]
    async fn delete_secret(&self, scope: SecretScope, name: &SecretName) -> StoreResult<bool> {
        let _w = self.write.lock().await;
        let done = match scope {
            SecretScope::Global => {
                sqlx::query("DELETE FROM global_secrets WHERE name = ?1")
                    .bind(name.as_str())
                    .execute(&self.pool)
                    .await?
            }
            SecretScope::Workspace(id) => {
                sqlx::query("DELETE FROM workspace_secrets WHERE workspace_id = ?1 AND name = ?2")
                    .bind(id.to_string())
                    .bind(name.as_str())
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    async fn list_secrets(&self, scope: SecretScope) -> StoreResult<Vec<SecretMeta>> {
        let rows = match scope {
            SecretScope::Global => {
                sqlx::query("SELECT name, updated_at FROM global_secrets ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?
            }
            SecretScope::Workspace(id) => {
                sqlx::query(
                    "SELECT name, updated_at FROM workspace_secrets WHERE workspace_id = ?1 ORDER BY name",
                )
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(SecretMeta {
                    name: secret_name(r.try_get("name")?)?,
                    updated_at: from_micros(r.try_get("updated_at")?)?,
                })
            })
            .collect()
    }

    async fn sealed_secrets(&self, workspace_id: WorkspaceId) -> StoreResult<Vec<SealedSecret>> {
        let rows = sqlx::query(
            "SELECT NULL AS workspace_id, name, sealed FROM global_secrets \
             UNION ALL SELECT workspace_id, name, sealed FROM workspace_secrets WHERE workspace_id = ?1",
        )
        .bind(workspace_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let ws: Option<String> = r.try_get("workspace_id")?;
                Ok(SealedSecret {
                    scope: match ws {
                        None => SecretScope::Global,
                        Some(id) => SecretScope::Workspace(parse_id(id)?),
                    },
                    name: secret_name(r.try_get("name")?)?,
                    sealed: r.try_get("sealed")?,
                })
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(plugin = %name))]
    async fn put_plugin(
        &self,
        name: &PluginName,
        blob_key: &str,
        size: i64,
        sha256: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let old: Option<String> =
            sqlx::query_scalar("SELECT blob_key FROM plugins WHERE name = ?1")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO plugins (name, blob_key, size_bytes, sha256, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
             ON CONFLICT (name) DO UPDATE SET blob_key = excluded.blob_key, \
               size_bytes = excluded.size_bytes, sha256 = excluded.sha256, updated_at = excluded.updated_at",
        )
        .bind(name.as_str())
        .bind(blob_key)
        .bind(size)
        .bind(sha256)
        .bind(micros(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(old)
    }

    async fn get_plugin(&self, name: &PluginName) -> StoreResult<Option<Plugin>> {
        let row = sqlx::query("SELECT * FROM plugins WHERE name = ?1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(plugin_from_row).transpose()
    }

    async fn list_plugins(&self) -> StoreResult<Vec<Plugin>> {
        let rows = sqlx::query("SELECT * FROM plugins ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(plugin_from_row).collect()
    }

    #[tracing::instrument(skip_all, fields(plugin = %name))]
    async fn delete_plugin(&self, name: &PluginName) -> StoreResult<Option<String>> {
        let _w = self.write.lock().await;
        Ok(
            sqlx::query_scalar("DELETE FROM plugins WHERE name = ?1 RETURNING blob_key")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, plugin = %name))]
    async fn record_plugin_install(
        &self,
        workspace_id: WorkspaceId,
        name: &PluginName,
        source: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PluginInstall>> {
        let _w = self.write.lock().await;
        let row = sqlx::query(
            "INSERT INTO workspace_plugins (workspace_id, name, source, installed_at) \
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = ?1) \
             ON CONFLICT (workspace_id, name) DO UPDATE SET source = excluded.source, \
               installed_at = excluded.installed_at \
             RETURNING *",
        )
        .bind(workspace_id.to_string())
        .bind(name.as_str())
        .bind(source)
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(install_from_row).transpose()
    }

    async fn list_plugin_installs(
        &self,
        workspace_id: WorkspaceId,
    ) -> StoreResult<Vec<PluginInstall>> {
        let rows =
            sqlx::query("SELECT * FROM workspace_plugins WHERE workspace_id = ?1 ORDER BY name")
                .bind(workspace_id.to_string())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(install_from_row).collect()
    }

    async fn referenced_blob_keys(&self, keys: &[String]) -> StoreResult<Vec<String>> {
        let list = serde_json::to_string(keys).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT blob_key FROM pending_uploads WHERE blob_key IN (SELECT value FROM json_each(?1)) \
             UNION ALL SELECT blob_key FROM plugins WHERE blob_key IN (SELECT value FROM json_each(?1))",
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
