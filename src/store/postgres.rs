//! The PostgreSQL engine: production, and the one several replicas share.
//!
//! Ordering of activity ids relies on a per-workspace transaction-scoped
//! advisory lock taken before the id is drawn; sweeps claim rows with
//! `FOR UPDATE SKIP LOCKED` so concurrent sweepers never meet.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::*;
use crate::domain::{DeliveryMode, FileId, PluginName, SecretName, TokenHash, WorkspaceId};

/// Advisory-lock class for per-workspace activity id assignment.
const ACTIVITY_LOCK_CLASS: i32 = 0x6d6f_6c01;

/// The PostgreSQL implementation of [`Store`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects a pool to `url`.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn workspace_lock_key(id: WorkspaceId) -> i32 {
    let b = id.0.as_bytes();
    i32::from_be_bytes([
        b[0] ^ b[4] ^ b[8] ^ b[12],
        b[1] ^ b[5] ^ b[9] ^ b[13],
        b[2] ^ b[6] ^ b[10] ^ b[14],
        b[3] ^ b[7] ^ b[11] ^ b[15],
    ])
}

fn secret_name(raw: String) -> StoreResult<SecretName> {
    SecretName::parse(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn plugin_name(raw: String) -> StoreResult<PluginName> {
    PluginName::parse(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn plugin_from_row(row: &PgRow) -> StoreResult<Plugin> {
    Ok(Plugin {
        name: plugin_name(row.try_get("name")?)?,
        blob_key: row.try_get("blob_key")?,
        size: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn install_from_row(row: &PgRow) -> StoreResult<PluginInstall> {
    Ok(PluginInstall {
        workspace_id: WorkspaceId(row.try_get("workspace_id")?),
        name: plugin_name(row.try_get("name")?)?,
        source: row.try_get("source")?,
        installed_at: row.try_get("installed_at")?,
    })
}

fn workspace_from_row(row: &PgRow) -> StoreResult<Workspace> {
    let mode: String = row.try_get("delivery_mode")?;
    let card: Option<Json<Value>> = row.try_get("agent_card")?;
    Ok(Workspace {
        id: WorkspaceId(row.try_get("id")?),
        name: row.try_get("name")?,
        delivery_mode: mode
            .parse::<DeliveryMode>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        url: row.try_get("url")?,
        agent_card: card.map(|j| j.0),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_heartbeat_at: row.try_get("last_heartbeat_at")?,
    })
}

fn json_opt(row: &PgRow, col: &str) -> StoreResult<Option<Value>> {
    let v: Option<Json<Value>> = row.try_get(col)?;
    Ok(v.map(|j| j.0))
}

fn activity_from_row(row: &PgRow) -> StoreResult<Activity> {
    Ok(Activity {
        id: row.try_get("id")?,
        workspace_id: WorkspaceId(row.try_get("workspace_id")?),
        row: NewActivity {
            activity_type: row.try_get("activity_type")?,
            method: row.try_get("method")?,
            source_id: row.try_get("source_id")?,
            target_id: row.try_get("target_id")?,
            summary: row.try_get("summary")?,
            request_body: json_opt(row, "request_body")?,
            response_body: json_opt(row, "response_body")?,
            status: row.try_get("status")?,
            error_detail: row.try_get("error_detail")?,
            data: json_opt(row, "data")?,
        },
        created_at: row.try_get("created_at")?,
    })
}

fn upload_from_row(row: &PgRow) -> StoreResult<PendingUpload> {
    Ok(PendingUpload {
        file_id: FileId(row.try_get("file_id")?),
        workspace_id: WorkspaceId(row.try_get("workspace_id")?),
        blob_key: row.try_get("blob_key")?,
        size: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        filename: row.try_get("filename")?,
        mimetype: row.try_get("mimetype")?,
        created_at: row.try_get("created_at")?,
        fetched_at: row.try_get("fetched_at")?,
        acked_at: row.try_get("acked_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

const UPLOAD_COLUMNS: &str = "file_id, workspace_id, blob_key, size_bytes, sha256, filename, \
     mimetype, created_at, fetched_at, acked_at, expires_at";

/// The one predicate for "this workspace's file, still deliverable": fetch,
/// read and ack all use it, so absent, acked, expired and foreign files are
/// the same miss everywhere. Binds the file id, the workspace id and now.
const LIVE_FILE: &str =
    "file_id = $1 AND workspace_id = $2 AND acked_at IS NULL AND expires_at > $3";

const ACTIVITY_COLUMNS: &str = "id, workspace_id, activity_type, method, source_id, target_id, \
     summary, request_body, response_body, status, error_detail, data, created_at";

/// Inserts a live token for a workspace, inside the caller's transaction.
async fn insert_token(
    conn: &mut sqlx::PgConnection,
    id: WorkspaceId,
    token: TokenHash,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO workspace_auth_tokens (token_hash, workspace_id, created_at) VALUES ($1, $2, $3)")
        .bind(&token.0[..])
        .bind(id.0)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert_activity_tx(
    tx: &mut sqlx::PgConnection,
    workspace_id: WorkspaceId,
    row: &NewActivity,
    now: DateTime<Utc>,
) -> StoreResult<Activity> {
    // Serialize id assignment per workspace: the id is drawn only after the
    // lock is held, and the lock is released at commit, so within one
    // workspace ids become visible in the order they were handed out.
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(ACTIVITY_LOCK_CLASS)
        .bind(workspace_lock_key(workspace_id))
        .execute(&mut *tx)
        .await?;
    let sql = format!(
        "INSERT INTO activity_logs (workspace_id, activity_type, method, source_id, target_id, \
         summary, request_body, response_body, status, error_detail, data, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {ACTIVITY_COLUMNS}"
    );
    let inserted = sqlx::query(&sql)
        .bind(workspace_id.0)
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
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
    activity_from_row(&inserted)
}

#[async_trait]
impl Store for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn pg_pool(&self) -> Option<PgPool> {
        Some(self.pool.clone())
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO workspaces (id, name, delivery_mode, url, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING *",
        )
        .bind(id.0)
        .bind(&new.name)
        .bind(new.delivery_mode.as_str())
        .bind(&new.url)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        insert_token(&mut tx, id, token, now).await?;
        tx.commit().await?;
        workspace_from_row(&row)
    }

    async fn get_workspace(&self, id: WorkspaceId) -> StoreResult<Option<Workspace>> {
        let row = sqlx::query("SELECT * FROM workspaces WHERE id = $1")
            .bind(id.0)
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
        let row = sqlx::query(
            "UPDATE workspaces SET \
               name = COALESCE($2, name), \
               delivery_mode = COALESCE($3, delivery_mode), \
               url = CASE WHEN $4 THEN $5 ELSE url END, \
               agent_card = COALESCE($6, agent_card), \
               updated_at = $7 \
             WHERE id = $1 RETURNING *",
        )
        .bind(id.0)
        .bind(&update.name)
        .bind(update.delivery_mode.map(DeliveryMode::as_str))
        .bind(update.url.is_some())
        .bind(update.url.clone().flatten())
        .bind(update.agent_card.as_ref().map(Json))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id))]
    async fn delete_workspace(&self, id: WorkspaceId) -> StoreResult<bool> {
        // Tokens go with the row (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM workspaces WHERE id = $1")
            .bind(id.0)
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
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE workspace_auth_tokens SET revoked_at = $2 WHERE workspace_id = $1 AND revoked_at IS NULL",
        )
        .bind(id.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_token(&mut tx, id, token, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn workspace_for_token(&self, token: TokenHash) -> StoreResult<Option<WorkspaceId>> {
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT workspace_id FROM workspace_auth_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&token.0[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(id.map(WorkspaceId))
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id))]
    async fn register_workspace(
        &self,
        id: WorkspaceId,
        update: &UpdateWorkspace,
        mint: Option<TokenHash>,
        now: DateTime<Utc>,
    ) -> StoreResult<Registered> {
        let mut tx = self.pool.begin().await?;
        // The row lock makes the "no live token yet" check and the insert of
        // the first token one atomic step: two racing bootstrap
        // registrations cannot both mint.
        let exists = sqlx::query("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(Registered::NotFound);
        }
        if let Some(token) = mint {
            let live: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM workspace_auth_tokens WHERE workspace_id = $1 AND revoked_at IS NULL",
            )
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
            if live > 0 {
                return Ok(Registered::HasLiveToken);
            }
            insert_token(&mut tx, id, token, now).await?;
        }
        let row = sqlx::query(
            "UPDATE workspaces SET \
               delivery_mode = COALESCE($2, delivery_mode), \
               url = CASE WHEN $3 THEN $4 ELSE url END, \
               agent_card = COALESCE($5, agent_card), \
               updated_at = $6, last_heartbeat_at = $6 \
             WHERE id = $1 RETURNING *",
        )
        .bind(id.0)
        .bind(update.delivery_mode.map(DeliveryMode::as_str))
        .bind(update.url.is_some())
        .bind(update.url.clone().flatten())
        .bind(update.agent_card.as_ref().map(Json))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Registered::Done(workspace_from_row(&row)?))
    }

    async fn heartbeat(&self, id: WorkspaceId, now: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE workspaces SET last_heartbeat_at = $2 WHERE id = $1")
            .bind(id.0)
            .bind(now)
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
        let mut tx = self.pool.begin().await?;
        let activity = insert_activity_tx(&mut tx, workspace_id, row, now).await?;
        tx.commit().await?;
        Ok(activity)
    }

    async fn list_activity(
        &self,
        workspace_id: WorkspaceId,
        query: &ActivityQuery,
    ) -> StoreResult<ActivityPage> {
        if query.since_id > 0 {
            let swept: Option<i64> =
                sqlx::query_scalar("SELECT activity_swept_through FROM workspaces WHERE id = $1")
                    .bind(workspace_id.0)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(swept_through) = swept.filter(|s| query.since_id < *s) {
                return Ok(ActivityPage::CursorExpired { swept_through });
            }
        }
        let sql = format!(
            "SELECT {ACTIVITY_COLUMNS} FROM activity_logs \
             WHERE workspace_id = $1 AND id > $2 AND ($3::text IS NULL OR activity_type = $3) \
               AND ($5::text IS NULL OR source_id = $5) \
               AND ($6::timestamptz IS NULL OR created_at < $6) \
             ORDER BY id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id.0)
            .bind(query.since_id)
            .bind(&query.activity_type)
            .bind(query.limit)
            .bind(&query.source_id)
            .bind(query.before)
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
        let mut tx = self.pool.begin().await?;
        let mut activities = Vec::with_capacity(files.len());
        for (file, activity) in files {
            sqlx::query(
                "INSERT INTO pending_uploads (file_id, workspace_id, blob_key, size_bytes, sha256, \
                 filename, mimetype, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(file.file_id.0)
            .bind(workspace_id.0)
            .bind(&file.blob_key)
            .bind(file.size)
            .bind(&file.sha256)
            .bind(&file.filename)
            .bind(&file.mimetype)
            .bind(file.created_at)
            .bind(file.expires_at)
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
             WHERE workspace_id = $1 AND acked_at IS NULL AND expires_at > $2 \
             ORDER BY created_at, file_id"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id.0)
            .bind(now)
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
        let sql = format!(
            "UPDATE pending_uploads SET fetched_at = $3 \
             WHERE {LIVE_FILE} \
             RETURNING {UPLOAD_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(file_id.0)
            .bind(workspace_id.0)
            .bind(now)
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
            .bind(file_id.0)
            .bind(workspace_id.0)
            .bind(now)
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
            "SELECT {UPLOAD_COLUMNS} FROM pending_uploads WHERE workspace_id = $1 \
             ORDER BY created_at, file_id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id.0)
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
        let sql = format!(
            "UPDATE pending_uploads SET acked_at = $3 \
             WHERE {LIVE_FILE} \
             RETURNING {UPLOAD_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(file_id.0)
            .bind(workspace_id.0)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return Ok(AckOutcome::Acked(upload_from_row(&row)?));
        }
        // Nothing updated: either acked before (a retry, which succeeds) or
        // absent / expired / foreign (404).
        let acked: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
            "SELECT acked_at FROM pending_uploads WHERE file_id = $1 AND workspace_id = $2 AND expires_at > $3",
        )
        .bind(file_id.0)
        .bind(workspace_id.0)
        .bind(now)
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
               count(*) FILTER (WHERE acked_at IS NULL AND expires_at > $1) AS pending, \
               count(*) FILTER (WHERE acked_at IS NULL AND expires_at > $1 AND fetched_at IS NOT NULL) AS fetched_not_acked, \
               count(*) FILTER (WHERE acked_at IS NOT NULL) AS acked, \
               count(*) FILTER (WHERE acked_at IS NULL AND expires_at <= $1) AS expired, \
               COALESCE(sum(size_bytes) FILTER (WHERE acked_at IS NULL AND expires_at > $1), 0)::bigint AS bytes_pending, \
               min(created_at) FILTER (WHERE acked_at IS NULL AND expires_at > $1) AS oldest \
             FROM pending_uploads",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(UploadStats {
            pending: row.try_get("pending")?,
            fetched_not_acked: row.try_get("fetched_not_acked")?,
            acked: row.try_get("acked")?,
            expired: row.try_get("expired")?,
            bytes_pending: row.try_get("bytes_pending")?,
            oldest_pending_at: row.try_get("oldest")?,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn sweep_uploads(
        &self,
        now: DateTime<Utc>,
        acked_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SweptUpload>> {
        // Each branch walks its own partial index; SKIP LOCKED hands
        // concurrent sweepers disjoint rows instead of making them wait.
        let rows = sqlx::query(
            "WITH acked AS ( \
               SELECT file_id FROM pending_uploads \
               WHERE acked_at IS NOT NULL AND acked_at < $2 \
               ORDER BY acked_at LIMIT $3 FOR UPDATE SKIP LOCKED \
             ), expired AS ( \
               SELECT file_id FROM pending_uploads \
               WHERE acked_at IS NULL AND expires_at <= $1 \
               ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED \
             ), doomed AS ( \
               SELECT file_id FROM acked UNION SELECT file_id FROM expired \
             ) \
             DELETE FROM pending_uploads p USING doomed d WHERE p.file_id = d.file_id \
             RETURNING p.file_id, p.workspace_id, p.blob_key, (p.acked_at IS NOT NULL) AS was_acked",
        )
        .bind(now)
        .bind(acked_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let acked: bool = row.try_get("was_acked")?;
                Ok(SweptUpload {
                    file_id: FileId(row.try_get("file_id")?),
                    workspace_id: WorkspaceId(row.try_get("workspace_id")?),
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
        let deleted: i64 = sqlx::query_scalar(
            "WITH doomed AS ( \
               SELECT id FROM activity_logs WHERE created_at < $1 \
               ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED \
             ), gone AS ( \
               DELETE FROM activity_logs a USING doomed d WHERE a.id = d.id \
               RETURNING a.workspace_id, a.id \
             ), marks AS ( \
               SELECT workspace_id, max(id) AS top FROM gone GROUP BY workspace_id \
             ), bumped AS ( \
               UPDATE workspaces w SET activity_swept_through = GREATEST(w.activity_swept_through, m.top) \
               FROM marks m WHERE w.id = m.workspace_id RETURNING 1 \
             ) \
             SELECT count(*) FROM gone",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_one(&self.pool)
        .await?;
        Ok(deleted as u64)
    }

    async fn secrets_key_check(
        &self,
        candidate: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<u8>> {
        sqlx::query(
            "INSERT INTO secrets_key_check (id, sealed, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(candidate)
        .bind(now)
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
        let done = match scope {
            SecretScope::Global => {
                sqlx::query(
                    "INSERT INTO global_secrets (name, sealed, created_at, updated_at) \
                     VALUES ($1, $2, $3, $3) \
                     ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                )
                .bind(name.as_str())
                .bind(sealed)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
            SecretScope::Workspace(id) => {
                sqlx::query(
                    "INSERT INTO workspace_secrets (workspace_id, name, sealed, created_at, updated_at) \
                     SELECT $1, $2, $3, $4, $4 WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = $1) \
                     ON CONFLICT (workspace_id, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                )
                .bind(id.0)
                .bind(name.as_str())
                .bind(sealed)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, fields(secret = %name))]
    async fn delete_secret(&self, scope: SecretScope, name: &SecretName) -> StoreResult<bool> {
        let done = match scope {
            SecretScope::Global => {
                sqlx::query("DELETE FROM global_secrets WHERE name = $1")
                    .bind(name.as_str())
                    .execute(&self.pool)
                    .await?
            }
            SecretScope::Workspace(id) => {
                sqlx::query("DELETE FROM workspace_secrets WHERE workspace_id = $1 AND name = $2")
                    .bind(id.0)
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
                    "SELECT name, updated_at FROM workspace_secrets WHERE workspace_id = $1 ORDER BY name",
                )
                .bind(id.0)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(SecretMeta {
                    name: secret_name(r.try_get("name")?)?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn sealed_secrets(&self, workspace_id: WorkspaceId) -> StoreResult<Vec<SealedSecret>> {
        let rows = sqlx::query(
            "SELECT NULL::uuid AS workspace_id, name, sealed FROM global_secrets \
             UNION ALL SELECT workspace_id, name, sealed FROM workspace_secrets WHERE workspace_id = $1",
        )
        .bind(workspace_id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let ws: Option<Uuid> = r.try_get("workspace_id")?;
                Ok(SealedSecret {
                    scope: match ws {
                        None => SecretScope::Global,
                        Some(id) => SecretScope::Workspace(WorkspaceId(id)),
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
        let mut tx = self.pool.begin().await?;
        let old: Option<String> =
            sqlx::query_scalar("SELECT blob_key FROM plugins WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO plugins (name, blob_key, size_bytes, sha256, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (name) DO UPDATE SET blob_key = excluded.blob_key, \
               size_bytes = excluded.size_bytes, sha256 = excluded.sha256, updated_at = excluded.updated_at",
        )
        .bind(name.as_str())
        .bind(blob_key)
        .bind(size)
        .bind(sha256)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(old)
    }

    async fn get_plugin(&self, name: &PluginName) -> StoreResult<Option<Plugin>> {
        let row = sqlx::query("SELECT * FROM plugins WHERE name = $1")
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
        Ok(
            sqlx::query_scalar("DELETE FROM plugins WHERE name = $1 RETURNING blob_key")
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
        let row = sqlx::query(
            "INSERT INTO workspace_plugins (workspace_id, name, source, installed_at) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = $1) \
             ON CONFLICT (workspace_id, name) DO UPDATE SET source = excluded.source, \
               installed_at = excluded.installed_at \
             RETURNING *",
        )
        .bind(workspace_id.0)
        .bind(name.as_str())
        .bind(source)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(install_from_row).transpose()
    }

    async fn list_plugin_installs(
        &self,
        workspace_id: WorkspaceId,
    ) -> StoreResult<Vec<PluginInstall>> {
        let rows =
            sqlx::query("SELECT * FROM workspace_plugins WHERE workspace_id = $1 ORDER BY name")
                .bind(workspace_id.0)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(install_from_row).collect()
    }

    async fn referenced_blob_keys(&self, keys: &[String]) -> StoreResult<Vec<String>> {
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT blob_key FROM pending_uploads WHERE blob_key = ANY($1) \
                 UNION ALL SELECT blob_key FROM plugins WHERE blob_key = ANY($1)",
        )
        .bind(keys)
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
        sqlx::query(
            "INSERT INTO blob_chunks (blob_key, seq, content, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key)
        .bind(seq)
        .bind(bytes)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_blob_chunk(&self, key: &str, seq: i32) -> StoreResult<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT content FROM blob_chunks WHERE blob_key = $1 AND seq = $2")
                .bind(key)
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn delete_blob(&self, key: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM blob_chunks WHERE blob_key = $1")
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
            .map(|r| Ok((r.try_get("blob_key")?, r.try_get("created_at")?)))
            .collect()
    }
}
