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
use crate::domain::{DeliveryMode, FileId, HeartbeatReport, Tier, TokenHash, WorkspaceId};

/// Advisory-lock class for per-workspace activity id assignment.
const ACTIVITY_LOCK_CLASS: i32 = 0x6d6f_6c01;
/// Advisory-lock class of the team tree: imports, re-parenting, soft
/// deletes and creates under a parent take it (transaction-scoped), so two
/// concurrent imports cannot both miss a `(parent, name)` and create it
/// twice, and no cycle can be formed by two racing re-parentings.
const TREE_LOCK_CLASS: i32 = 0x6d6f_6c02;

/// Takes the tree lock until the transaction ends.
async fn lock_tree(conn: &mut sqlx::PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
        .bind(TREE_LOCK_CLASS)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts a workspace row, inside the caller's transaction.
async fn insert_workspace(
    conn: &mut sqlx::PgConnection,
    id: WorkspaceId,
    new: &NewWorkspace,
    now: DateTime<Utc>,
) -> StoreResult<PgRow> {
    Ok(sqlx::query(
        "INSERT INTO workspaces (id, name, delivery_mode, url, parent_id, tier, runtime, model, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING *",
    )
    .bind(id.0)
    .bind(&new.name)
    .bind(new.delivery_mode.as_str())
    .bind(&new.url)
    .bind(new.parent_id.map(|p| p.0))
    .bind(new.tier.get() as i16)
    .bind(&new.runtime)
    .bind(&new.model)
    .bind(now)
    .fetch_one(conn)
    .await?)
}

/// Fails unless `parent` is a live workspace.
async fn require_live_parent(
    conn: &mut sqlx::PgConnection,
    parent: WorkspaceId,
) -> StoreResult<()> {
    let live = sqlx::query("SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL")
        .bind(parent.0)
        .fetch_optional(conn)
        .await?
        .is_some();
    if live {
        Ok(())
    } else {
        Err(StoreError::UnknownParent(parent))
    }
}

/// The chain from `parent` up to the root.
async fn ancestors(
    conn: &mut sqlx::PgConnection,
    parent: WorkspaceId,
) -> StoreResult<Vec<WorkspaceId>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "WITH RECURSIVE up(id, parent_id, depth) AS ( \
           SELECT id, parent_id, 0 FROM workspaces WHERE id = $1 \
           UNION ALL \
           SELECT w.id, w.parent_id, up.depth + 1 FROM workspaces w JOIN up ON w.id = up.parent_id \
           WHERE up.depth < 10000 \
         ) SELECT id FROM up ORDER BY depth",
    )
    .bind(parent.0)
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(WorkspaceId).collect())
}

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
        parent_id: row
            .try_get::<Option<Uuid>, _>("parent_id")?
            .map(WorkspaceId),
        collapsed: row.try_get("collapsed")?,
        tier: Tier::new(row.try_get::<i16, _>("tier")?.into())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        runtime: row.try_get("runtime")?,
        model: row.try_get("model")?,
        paused_at: row.try_get("paused_at")?,
        removed_at: row.try_get("removed_at")?,
        report: HeartbeatReport {
            current_task: row.try_get("current_task")?,
            active_tasks: Some(row.try_get::<i32, _>("active_tasks")?.into()),
            error_rate: row.try_get("error_rate")?,
            sample_error: row.try_get("sample_error")?,
            uptime_seconds: row.try_get("uptime_seconds")?,
        },
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
        if let Some(parent) = new.parent_id {
            lock_tree(&mut tx).await?;
            require_live_parent(&mut tx, parent).await?;
        }
        let row = insert_workspace(&mut tx, id, new, now).await?;
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
        let mut tx = self.pool.begin().await?;
        if let Some(Some(parent)) = update.parent_id {
            lock_tree(&mut tx).await?;
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
               name = COALESCE($2, name), \
               delivery_mode = COALESCE($3, delivery_mode), \
               url = CASE WHEN $4 THEN $5 ELSE url END, \
               agent_card = COALESCE($6, agent_card), \
               parent_id = CASE WHEN $8 THEN $9 ELSE parent_id END, \
               collapsed = COALESCE($10, collapsed), \
               tier = COALESCE($11, tier), \
               runtime = COALESCE($12, runtime), \
               model = COALESCE($13, model), \
               updated_at = $7 \
             WHERE id = $1 AND removed_at IS NULL RETURNING *",
        )
        .bind(id.0)
        .bind(&update.name)
        .bind(update.delivery_mode.map(DeliveryMode::as_str))
        .bind(update.url.is_some())
        .bind(update.url.clone().flatten())
        .bind(update.agent_card.as_ref().map(Json))
        .bind(now)
        .bind(update.parent_id.is_some())
        .bind(update.parent_id.flatten().map(|p| p.0))
        .bind(update.collapsed)
        .bind(update.tier.map(|t| t.get() as i16))
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
        let mut tx = self.pool.begin().await?;
        lock_tree(&mut tx).await?;
        let live = sqlx::query("SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !live {
            return Ok(Removal::NotFound);
        }
        let children: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workspaces WHERE parent_id = $1 AND removed_at IS NULL",
        )
        .bind(id.0)
        .fetch_one(&mut *tx)
        .await?;
        if children > 0 && !cascade {
            return Ok(Removal::HasLiveChildren(children));
        }
        let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
            "WITH RECURSIVE sub(id, parent_id, depth) AS ( \
               SELECT id, parent_id, 0 FROM workspaces WHERE id = $1 \
               UNION ALL \
               SELECT w.id, w.parent_id, sub.depth + 1 FROM workspaces w JOIN sub ON w.parent_id = sub.id \
               WHERE w.removed_at IS NULL \
             ) SELECT id, parent_id FROM sub ORDER BY depth",
        )
        .bind(id.0)
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<Uuid> = rows.iter().map(|(w, _)| *w).collect();
        sqlx::query("UPDATE workspaces SET removed_at = $2, updated_at = $2 WHERE id = ANY($1)")
            .bind(&ids)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE workspace_auth_tokens SET revoked_at = $2 WHERE workspace_id = ANY($1) AND revoked_at IS NULL",
        )
        .bind(&ids)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Removal::Removed(
            rows.into_iter()
                .map(|(w, p)| (WorkspaceId(w), p.map(WorkspaceId)))
                .collect(),
        ))
    }

    async fn child_ids(&self, id: WorkspaceId) -> StoreResult<Vec<WorkspaceId>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM workspaces WHERE parent_id = $1 AND removed_at IS NULL ORDER BY created_at, id",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(WorkspaceId).collect())
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id, paused))]
    async fn set_paused(
        &self,
        id: WorkspaceId,
        paused: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Workspace>> {
        let row = sqlx::query(
            "UPDATE workspaces SET paused_at = CASE WHEN $2 THEN COALESCE(paused_at, $3) END, \
             updated_at = $3 WHERE id = $1 AND removed_at IS NULL RETURNING *",
        )
        .bind(id.0)
        .bind(paused)
        .bind(now)
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
        let mut tx = self.pool.begin().await?;
        let ws = sqlx::query(
            "UPDATE workspaces SET active_tasks = 0, updated_at = $2 \
             WHERE id = $1 AND removed_at IS NULL RETURNING *",
        )
        .bind(id.0)
        .bind(now)
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
        let mut tx = self.pool.begin().await?;
        // Serializes concurrent imports: the second one waits here and then
        // finds every node the first one created.
        lock_tree(&mut tx).await?;
        let mut out: Vec<ImportedNode> = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            let parent_id = node.parent.map(|i| out[i].id);
            let existing: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM workspaces WHERE parent_id IS NOT DISTINCT FROM $1 AND name = $2 \
                 AND removed_at IS NULL ORDER BY created_at, id LIMIT 1",
            )
            .bind(parent_id.map(|p| p.0))
            .bind(&node.workspace.name)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(existing) = existing {
                out.push(ImportedNode {
                    id: WorkspaceId(existing),
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
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT w.id FROM workspace_auth_tokens t JOIN workspaces w ON w.id = t.workspace_id \
             WHERE t.token_hash = $1 AND w.removed_at IS NOT NULL",
        )
        .bind(&token.0[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(id.map(WorkspaceId))
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %id))]
    async fn rotate_token(
        &self,
        id: WorkspaceId,
        token: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let exists =
            sqlx::query("SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL FOR UPDATE")
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
        let exists =
            sqlx::query("SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL FOR UPDATE")
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
        Ok(Registered::Done(Box::new(workspace_from_row(&row)?)))
    }

    async fn heartbeat(
        &self,
        id: WorkspaceId,
        report: &HeartbeatReport,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE workspaces SET last_heartbeat_at = $2, \
               current_task = COALESCE($3, current_task), \
               active_tasks = COALESCE($4, active_tasks), \
               error_rate = COALESCE($5, error_rate), \
               sample_error = COALESCE($6, sample_error), \
               uptime_seconds = COALESCE($7, uptime_seconds) \
             WHERE id = $1 AND removed_at IS NULL",
        )
        .bind(id.0)
        .bind(now)
        .bind(&report.current_task)
        .bind(report.active_tasks.map(|n| n as i32))
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
             ORDER BY id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id.0)
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

    #[tracing::instrument(skip_all)]
    async fn reset_phantom_busy(
        &self,
        stale_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<WorkspaceId>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE workspaces SET active_tasks = 0 WHERE id IN ( \
               SELECT id FROM workspaces WHERE active_tasks > 0 AND removed_at IS NULL \
               AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $1) \
               LIMIT $2 FOR UPDATE SKIP LOCKED \
             ) RETURNING id",
        )
        .bind(stale_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(WorkspaceId).collect())
    }

    #[tracing::instrument(skip_all)]
    async fn purge_removed(&self, removed_before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM workspaces WHERE id IN ( \
               SELECT id FROM workspaces WHERE removed_at IS NOT NULL AND removed_at < $1 \
               ORDER BY removed_at LIMIT $2 FOR UPDATE SKIP LOCKED \
             )",
        )
        .bind(removed_before)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn referenced_blob_keys(&self, keys: &[String]) -> StoreResult<Vec<String>> {
        let found: Vec<String> =
            sqlx::query_scalar("SELECT blob_key FROM pending_uploads WHERE blob_key = ANY($1)")
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
