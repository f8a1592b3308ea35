//! The portable half of the store: every query both engines share, written
//! once.
//!
//! [`SqlStore<DB>`] is one struct over an sqlx database (`Sqlite` or
//! `Postgres`). The [`Store`] methods below are written once, in
//! [`portable_store!`], with `$N` placeholders (which sqlx-sqlite accepts
//! too) and with the values bound as types whose encoding each engine
//! decides in its own file: [`Ts`] for timestamps, the domain id types,
//! `Json<Value>` for JSON. The macro stamps that one text onto
//! `SqlStore<Sqlite>` and `SqlStore<Postgres>`, so each expansion is
//! type-checked against a concrete engine; what it calls by name
//! (`migrate_engine`, `lock_activity_ids`, the sweeps, …) is the short list
//! of inherent methods each engine file defines, the only places the
//! engines differ in meaning.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Database, Pool};
use tokio::sync::{Mutex, MutexGuard};

use super::*;
use crate::domain::memory::Reader;
use crate::domain::{DeliveryMode, FileId, MemoryId, WorkspaceId};

/// A timestamp as the store binds and reads it: integer microseconds on
/// SQLite (exact comparisons, the 0001 schema), `timestamptz` on
/// PostgreSQL. The encodings live in the engine files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ts(pub DateTime<Utc>);

/// The metadata store over one sqlx engine. See the module docs.
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    /// SQLite only: one writer at a time, queued in the process (instead of
    /// `SQLITE_BUSY`), which also hands out activity ids in commit order.
    /// PostgreSQL has row locks and advisory locks instead, so `None`.
    pub(super) write: Option<Mutex<()>>,
    /// Test hook: runs between the two reads of `list_activity`.
    pub(super) between_reads: BetweenReads,
}

type Hook = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

/// A test hook run once between the two reads of `list_activity`, so a
/// test can commit a sweep exactly there (the reads are microseconds
/// apart; no real interleaving can be forced from outside).
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct BetweenReads(Arc<std::sync::Mutex<(Option<Hook>, bool)>>);

impl BetweenReads {
    /// Runs `hook` at the next `list_activity`, between its reads.
    pub fn set(
        &self,
        hook: impl FnOnce() -> futures::future::BoxFuture<'static, ()> + Send + 'static,
    ) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(Box::new(hook));
    }

    /// Whether the hook has run.
    pub fn ran(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    async fn run(&self) {
        let hook = self.0.lock().unwrap_or_else(|e| e.into_inner()).0.take();
        if let Some(hook) = hook {
            hook().await;
            self.0.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        }
    }
}

impl<DB: Database> SqlStore<DB> {
    /// The engine's write lock, when it has one; hold it across a write.
    pub(super) async fn writer(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.write {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// The test hook of `list_activity`; see [`BetweenReads`].
    #[doc(hidden)]
    pub fn between_activity_reads(&self) -> BetweenReads {
        self.between_reads.clone()
    }
}

/// `workspaces` as read (`SELECT *`; extra columns are ignored).
#[derive(sqlx::FromRow)]
pub(super) struct WorkspaceRow {
    id: WorkspaceId,
    name: String,
    delivery_mode: String,
    url: Option<String>,
    agent_card: Option<Json<Value>>,
    created_at: Ts,
    updated_at: Ts,
    last_heartbeat_at: Option<Ts>,
}

impl TryFrom<WorkspaceRow> for Workspace {
    type Error = StoreError;
    fn try_from(r: WorkspaceRow) -> StoreResult<Self> {
        Ok(Workspace {
            id: r.id,
            name: r.name,
            delivery_mode: r
                .delivery_mode
                .parse::<DeliveryMode>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            url: r.url,
            agent_card: r.agent_card.map(|j| j.0),
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
            last_heartbeat_at: r.last_heartbeat_at.map(|t| t.0),
        })
    }
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

/// `pending_uploads` as read, in [`UPLOAD_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct UploadRow {
    file_id: FileId,
    workspace_id: WorkspaceId,
    blob_key: String,
    size_bytes: i64,
    sha256: String,
    filename: String,
    mimetype: String,
    created_at: Ts,
    fetched_at: Option<Ts>,
    acked_at: Option<Ts>,
    expires_at: Ts,
}

impl From<UploadRow> for PendingUpload {
    fn from(r: UploadRow) -> Self {
        PendingUpload {
            file_id: r.file_id,
            workspace_id: r.workspace_id,
            blob_key: r.blob_key,
            size: r.size_bytes,
            sha256: r.sha256,
            filename: r.filename,
            mimetype: r.mimetype,
            created_at: r.created_at.0,
            fetched_at: r.fetched_at.map(|t| t.0),
            acked_at: r.acked_at.map(|t| t.0),
            expires_at: r.expires_at.0,
        }
    }
}

/// A row the upload sweep deleted, as both engines' sweeps return it.
#[derive(sqlx::FromRow)]
pub(super) struct SweptRow {
    file_id: FileId,
    workspace_id: WorkspaceId,
    blob_key: String,
    was_acked: bool,
}

impl From<SweptRow> for SweptUpload {
    fn from(r: SweptRow) -> Self {
        SweptUpload {
            file_id: r.file_id,
            workspace_id: r.workspace_id,
            blob_key: r.blob_key,
            reason: if r.was_acked {
                SweepReason::Acked
            } else {
                SweepReason::Expired
            },
        }
    }
}

/// `upload_stats` as read.
#[derive(sqlx::FromRow)]
pub(super) struct StatsRow {
    pending: i64,
    fetched_not_acked: i64,
    acked: i64,
    expired: i64,
    bytes_pending: i64,
    oldest: Option<Ts>,
}

pub(super) const UPLOAD_COLUMNS: &str = "file_id, workspace_id, blob_key, size_bytes, sha256, \
     filename, mimetype, created_at, fetched_at, acked_at, expires_at";

/// The one predicate for "this workspace's file, still deliverable": fetch,
/// read and ack all use it, so absent, acked, expired and foreign files are
/// the same miss everywhere. Binds the file id, the workspace id and now.
pub(super) const LIVE_FILE: &str =
    "file_id = $1 AND workspace_id = $2 AND acked_at IS NULL AND expires_at > $3";

pub(super) const ACTIVITY_COLUMNS: &str = "id, workspace_id, activity_type, method, source_id, \
     target_id, summary, request_body, response_body, status, error_detail, data, created_at";

/// `memories` as read, in [`MEMORY_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct MemoryRow {
    id: MemoryId,
    workspace_id: WorkspaceId,
    scope: String,
    namespace: String,
    content: String,
    embedded: bool,
    created_at: Ts,
}

impl TryFrom<MemoryRow> for Memory {
    type Error = StoreError;
    fn try_from(r: MemoryRow) -> StoreResult<Self> {
        Ok(Memory {
            id: r.id,
            workspace_id: r.workspace_id,
            scope: r
                .scope
                .parse()
                .map_err(|e: crate::domain::memory::MemoryError| {
                    StoreError::Corrupt(e.to_string())
                })?,
            namespace: r.namespace,
            content: r.content,
            embedded: r.embedded,
            created_at: r.created_at.0,
        })
    }
}

pub(super) const MEMORY_COLUMNS: &str = "m.id, m.workspace_id, m.scope, m.namespace, m.content, \
     (m.embedding IS NOT NULL) AS embedded, m.created_at";

/// `memory_kv` as read, in [`KV_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct KvRow {
    key: String,
    value: Json<Value>,
    version: i64,
    expires_at: Option<Ts>,
    updated_at: Ts,
}

impl From<KvRow> for KvEntry {
    fn from(r: KvRow) -> Self {
        KvEntry {
            key: r.key,
            value: r.value.0,
            version: r.version,
            expires_at: r.expires_at.map(|t| t.0),
            updated_at: r.updated_at.0,
        }
    }
}

pub(super) const KV_COLUMNS: &str = "key, value, version, expires_at, updated_at";

/// A key that has not expired at `$3`.
pub(super) const LIVE_KEY: &str =
    "workspace_id = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)";

/// The one predicate for "a memory this reader may see", over `memories m`:
/// every read of memories (list, full-text, vectors) filters with it inside
/// the statement, so a memory the caller may not read is never a candidate,
/// whatever the query. Binds, in order: `$1` the operator flag, `$2` the
/// reader (or the operator's owner filter), `$3` the JSON list of
/// workspaces whose TEAM memories the reader may read (matched by the
/// engine's `ID_LIST_3`), `$4` the scope filter, `$5` the namespace filter.
pub(super) fn readable(id_list_3: &str) -> String {
    format!(
        "(($1 AND (CAST($2 AS TEXT) IS NULL OR m.workspace_id = $2)) \
          OR (NOT $1 AND (m.scope = 'GLOBAL' \
              OR (m.scope = 'LOCAL' AND m.workspace_id = $2) \
              OR (m.scope = 'TEAM' AND m.workspace_id IN ({id_list_3}))))) \
         AND (CAST($4 AS TEXT) IS NULL OR m.scope = $4) \
         AND (CAST($5 AS TEXT) IS NULL OR m.namespace = $5)"
    )
}

/// The values [`readable`] binds.
pub(super) struct FilterBinds {
    pub operator: bool,
    pub who: Option<WorkspaceId>,
    pub team: String,
    pub scope: Option<&'static str>,
    pub namespace: Option<String>,
}

impl FilterBinds {
    pub fn new(f: &MemoryFilter) -> Self {
        let (operator, who, team) = match &f.reader {
            Reader::Operator { owner } => (true, *owner, Vec::new()),
            Reader::Workspace { id, team } => (false, Some(*id), team.clone()),
        };
        let team: Vec<String> = team.iter().map(ToString::to_string).collect();
        Self {
            operator,
            who,
            team: serde_json::to_string(&team).expect("BUG: strings serialize"),
            scope: f.scope.map(|s| s.as_str()),
            namespace: f.namespace.clone(),
        }
    }
}

/// Binds a [`FilterBinds`] as `$1…$5` of [`readable`].
macro_rules! bind_filter {
    ($q:expr, $f:expr) => {
        $q.bind($f.operator)
            .bind($f.who)
            .bind(&$f.team)
            .bind($f.scope)
            .bind(&$f.namespace)
    };
}

/// Writes the [`Store`] implementation for `SqlStore<$db>`: the portable
/// methods here, the per-engine ones delegated by name to the engine file.
macro_rules! portable_store {
    ($db:ty, $engine:literal) => {
        impl SqlStore<$db> {
            /// Stamps `column` (`fetched_at`, `acked_at`) on a live file of
            /// this workspace, committed, and returns the row it stamped.
            async fn stamp_live_file(
                &self,
                column: &str,
                workspace_id: WorkspaceId,
                file_id: FileId,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<UploadRow>> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let sql = format!(
                    "UPDATE pending_uploads SET {column} = $3 WHERE {LIVE_FILE} \
                     RETURNING {UPLOAD_COLUMNS}"
                );
                let row = sqlx::query_as(&sql)
                    .bind(file_id)
                    .bind(workspace_id)
                    .bind(Ts(now))
                    .fetch_all(&mut *tx)
                    .await?
                    .pop();
                tx.commit().await?;
                Ok(row)
            }

            /// Whether the workspace exists, locked until commit
            /// ([`Self::ROW_LOCK`]) so what the transaction does next is
            /// atomic with this check.
            async fn lock_workspace(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: WorkspaceId,
            ) -> StoreResult<bool> {
                let sql = format!("SELECT 1 FROM workspaces WHERE id = $1{}", Self::ROW_LOCK);
                let found = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
                Ok(found.is_some())
            }

            /// Inserts a live token for a workspace, inside the caller's
            /// transaction.
            async fn insert_token(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: WorkspaceId,
                token: TokenHash,
                now: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO workspace_auth_tokens (token_hash, workspace_id, created_at) \
                     VALUES ($1, $2, $3)",
                )
                .bind(&token.0[..])
                .bind(id)
                .bind(Ts(now))
                .execute(conn)
                .await?;
                Ok(())
            }

            /// Inserts one activity row inside the caller's transaction,
            /// after taking the engine's per-workspace id lock.
            async fn insert_activity_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                workspace_id: WorkspaceId,
                row: &NewActivity,
                now: DateTime<Utc>,
            ) -> StoreResult<Activity> {
                Self::lock_activity_ids(&mut *conn, workspace_id).await?;
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
        impl Store for SqlStore<$db> {
            fn engine(&self) -> &'static str {
                $engine
            }

            async fn migrate(&self) -> StoreResult<()> {
                let _w = self.writer().await;
                self.migrate_engine().await
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            async fn try_sweep_lock(&self) -> StoreResult<Option<SweepLock>> {
                self.try_sweep_lock_engine().await
            }

            fn notifier(&self) -> Option<Notifier> {
                self.notifier_engine()
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %id))]
            async fn create_workspace(
                &self,
                id: WorkspaceId,
                new: &NewWorkspace,
                token: TokenHash,
                now: DateTime<Utc>,
            ) -> StoreResult<Workspace> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let row: WorkspaceRow = sqlx::query_as(
                    "INSERT INTO workspaces (id, name, delivery_mode, url, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) RETURNING *",
                )
                .bind(id)
                .bind(&new.name)
                .bind(new.delivery_mode.as_str())
                .bind(&new.url)
                .bind(Ts(now))
                .fetch_all(&mut *tx)
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("INSERT returned no row".into()))?;
                Self::insert_token(&mut tx, id, token, now).await?;
                tx.commit().await?;
                row.try_into()
            }

            async fn get_workspace(&self, id: WorkspaceId) -> StoreResult<Option<Workspace>> {
                let row: Option<WorkspaceRow> =
                    sqlx::query_as("SELECT * FROM workspaces WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>> {
                let rows: Vec<WorkspaceRow> =
                    sqlx::query_as("SELECT * FROM workspaces ORDER BY created_at, id")
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %id))]
            async fn update_workspace(
                &self,
                id: WorkspaceId,
                update: &UpdateWorkspace,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<Workspace>> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let row: Option<WorkspaceRow> = sqlx::query_as(
                    "UPDATE workspaces SET \
                       name = COALESCE($2, name), \
                       delivery_mode = COALESCE($3, delivery_mode), \
                       url = CASE WHEN $4 THEN $5 ELSE url END, \
                       agent_card = COALESCE($6, agent_card), \
                       updated_at = $7 \
                     WHERE id = $1 RETURNING *",
                )
                .bind(id)
                .bind(&update.name)
                .bind(update.delivery_mode.map(DeliveryMode::as_str))
                .bind(update.url.is_some())
                .bind(update.url.clone().flatten())
                .bind(update.agent_card.as_ref().map(Json))
                .bind(Ts(now))
                .fetch_all(&mut *tx)
                .await?
                .pop();
                tx.commit().await?;
                row.map(TryInto::try_into).transpose()
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %id))]
            async fn delete_workspace(&self, id: WorkspaceId) -> StoreResult<bool> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                // Tokens go with the row (ON DELETE CASCADE).
                let done = sqlx::query("DELETE FROM workspaces WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %id))]
            async fn rotate_token(
                &self,
                id: WorkspaceId,
                token: TokenHash,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                if !Self::lock_workspace(&mut tx, id).await? {
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE workspace_auth_tokens SET revoked_at = $2 \
                     WHERE workspace_id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(Ts(now))
                .execute(&mut *tx)
                .await?;
                Self::insert_token(&mut tx, id, token, now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn workspace_for_token(
                &self,
                token: TokenHash,
            ) -> StoreResult<Option<WorkspaceId>> {
                Ok(sqlx::query_scalar(
                    "SELECT workspace_id FROM workspace_auth_tokens \
                     WHERE token_hash = $1 AND revoked_at IS NULL",
                )
                .bind(&token.0[..])
                .fetch_optional(&self.pool)
                .await?)
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %id))]
            async fn register_workspace(
                &self,
                id: WorkspaceId,
                update: &UpdateWorkspace,
                mint: Option<TokenHash>,
                now: DateTime<Utc>,
            ) -> StoreResult<Registered> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                // The workspace lock makes the "no live token yet" check and
                // the insert of the first token one atomic step: two racing
                // bootstrap registrations cannot both mint.
                if !Self::lock_workspace(&mut tx, id).await? {
                    return Ok(Registered::NotFound);
                }
                if let Some(token) = mint {
                    let live: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM workspace_auth_tokens \
                         WHERE workspace_id = $1 AND revoked_at IS NULL",
                    )
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    if live > 0 {
                        return Ok(Registered::HasLiveToken);
                    }
                    Self::insert_token(&mut tx, id, token, now).await?;
                }
                let row: WorkspaceRow = sqlx::query_as(
                    "UPDATE workspaces SET \
                       delivery_mode = COALESCE($2, delivery_mode), \
                       url = CASE WHEN $3 THEN $4 ELSE url END, \
                       agent_card = COALESCE($5, agent_card), \
                       updated_at = $6, last_heartbeat_at = $6 \
                     WHERE id = $1 RETURNING *",
                )
                .bind(id)
                .bind(update.delivery_mode.map(DeliveryMode::as_str))
                .bind(update.url.is_some())
                .bind(update.url.clone().flatten())
                .bind(update.agent_card.as_ref().map(Json))
                .bind(Ts(now))
                .fetch_all(&mut *tx)
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("UPDATE of a locked row missed it".into()))?;
                tx.commit().await?;
                Ok(Registered::Done(row.try_into()?))
            }

            async fn heartbeat(&self, id: WorkspaceId, now: DateTime<Utc>) -> StoreResult<bool> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let done =
                    sqlx::query("UPDATE workspaces SET last_heartbeat_at = $2 WHERE id = $1")
                        .bind(id)
                        .bind(Ts(now))
                        .execute(&mut *tx)
                        .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
            async fn insert_activity(
                &self,
                workspace_id: WorkspaceId,
                row: &NewActivity,
                now: DateTime<Utc>,
            ) -> StoreResult<Activity> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
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
                     ORDER BY id LIMIT $4"
                );
                let rows: Vec<ActivityRow> = sqlx::query_as(&sql)
                    .bind(workspace_id)
                    .bind(query.since_id)
                    .bind(&query.activity_type)
                    .bind(query.limit)
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

            #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, files = files.len()))]
            async fn stage_uploads(
                &self,
                workspace_id: WorkspaceId,
                files: &[(NewPendingUpload, NewActivity)],
                now: DateTime<Utc>,
            ) -> StoreResult<Vec<Activity>> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let mut activities = Vec::with_capacity(files.len());
                for (file, activity) in files {
                    sqlx::query(
                        "INSERT INTO pending_uploads (file_id, workspace_id, blob_key, \
                         size_bytes, sha256, filename, mimetype, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(file.file_id)
                    .bind(workspace_id)
                    .bind(&file.blob_key)
                    .bind(file.size)
                    .bind(&file.sha256)
                    .bind(&file.filename)
                    .bind(&file.mimetype)
                    .bind(Ts(file.created_at))
                    .bind(Ts(file.expires_at))
                    .execute(&mut *tx)
                    .await?;
                    activities
                        .push(Self::insert_activity_in(&mut tx, workspace_id, activity, now).await?);
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
                let rows: Vec<UploadRow> = sqlx::query_as(&sql)
                    .bind(workspace_id)
                    .bind(Ts(now))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, file_id = %file_id))]
            async fn fetch_pending_upload(
                &self,
                workspace_id: WorkspaceId,
                file_id: FileId,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<PendingUpload>> {
                let row = self.stamp_live_file("fetched_at", workspace_id, file_id, now).await?;
                Ok(row.map(Into::into))
            }

            async fn get_pending_upload(
                &self,
                workspace_id: WorkspaceId,
                file_id: FileId,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<PendingUpload>> {
                let sql = format!("SELECT {UPLOAD_COLUMNS} FROM pending_uploads WHERE {LIVE_FILE}");
                let row: Option<UploadRow> = sqlx::query_as(&sql)
                    .bind(file_id)
                    .bind(workspace_id)
                    .bind(Ts(now))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Into::into))
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
                let rows: Vec<UploadRow> = sqlx::query_as(&sql)
                    .bind(workspace_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, file_id = %file_id))]
            async fn ack_pending_upload(
                &self,
                workspace_id: WorkspaceId,
                file_id: FileId,
                now: DateTime<Utc>,
            ) -> StoreResult<AckOutcome> {
                let row = self.stamp_live_file("acked_at", workspace_id, file_id, now).await?;
                if let Some(row) = row {
                    return Ok(AckOutcome::Acked(row.into()));
                }
                // Nothing updated: either acked before (a retry, which
                // succeeds) or absent / expired / foreign (404).
                let acked: Option<Option<Ts>> = sqlx::query_scalar(
                    "SELECT acked_at FROM pending_uploads \
                     WHERE file_id = $1 AND workspace_id = $2 AND expires_at > $3",
                )
                .bind(file_id)
                .bind(workspace_id)
                .bind(Ts(now))
                .fetch_optional(&self.pool)
                .await?;
                Ok(match acked {
                    Some(Some(_)) => AckOutcome::AlreadyAcked,
                    _ => AckOutcome::NotFound,
                })
            }

            async fn upload_stats(&self, now: DateTime<Utc>) -> StoreResult<UploadStats> {
                let live = "acked_at IS NULL AND expires_at > $1";
                let row: StatsRow = sqlx::query_as(&format!(
                    "SELECT \
                       count(*) FILTER (WHERE {live}) AS pending, \
                       count(*) FILTER (WHERE {live} AND fetched_at IS NOT NULL) \
                         AS fetched_not_acked, \
                       count(*) FILTER (WHERE acked_at IS NOT NULL) AS acked, \
                       count(*) FILTER (WHERE acked_at IS NULL AND expires_at <= $1) AS expired, \
                       CAST(COALESCE(sum(size_bytes) FILTER (WHERE {live}), 0) AS BIGINT) \
                         AS bytes_pending, \
                       min(created_at) FILTER (WHERE {live}) AS oldest \
                     FROM pending_uploads"
                ))
                .bind(Ts(now))
                .fetch_one(&self.pool)
                .await?;
                Ok(UploadStats {
                    pending: row.pending,
                    fetched_not_acked: row.fetched_not_acked,
                    acked: row.acked,
                    expired: row.expired,
                    bytes_pending: row.bytes_pending,
                    oldest_pending_at: row.oldest.map(|t| t.0),
                })
            }

            async fn sweep_uploads(
                &self,
                now: DateTime<Utc>,
                acked_before: DateTime<Utc>,
                limit: i64,
            ) -> StoreResult<Vec<SweptUpload>> {
                let _w = self.writer().await;
                let rows = self.sweep_uploads_engine(now, acked_before, limit).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn sweep_activity(&self, cutoff: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
                let _w = self.writer().await;
                self.sweep_activity_engine(cutoff, limit).await
            }

            async fn referenced_blob_keys(&self, keys: &[String]) -> StoreResult<Vec<String>> {
                self.referenced_blob_keys_engine(keys).await
            }

            async fn put_blob_chunk(
                &self,
                key: &str,
                seq: i32,
                bytes: &[u8],
                now: DateTime<Utc>,
            ) -> StoreResult<()> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO blob_chunks (blob_key, seq, content, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(key)
                .bind(seq)
                .bind(bytes)
                .bind(Ts(now))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_blob_chunk(&self, key: &str, seq: i32) -> StoreResult<Option<Vec<u8>>> {
                Ok(sqlx::query_scalar(
                    "SELECT content FROM blob_chunks WHERE blob_key = $1 AND seq = $2",
                )
                .bind(key)
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn delete_blob(&self, key: &str) -> StoreResult<bool> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query("DELETE FROM blob_chunks WHERE blob_key = $1")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_blobs(&self) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
                let rows: Vec<(String, Ts)> = sqlx::query_as(
                    "SELECT blob_key, created_at FROM blob_chunks WHERE seq = 0 ORDER BY blob_key",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(k, t)| (k, t.0)).collect())
            }
            async fn insert_memory(&self, new: &NewMemory) -> StoreResult<Memory> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO memories (id, workspace_id, scope, namespace, content, \
                     embedding, embedding_model, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(new.id)
                .bind(new.workspace_id)
                .bind(new.scope.as_str())
                .bind(&new.namespace)
                .bind(&new.content)
                .bind(new.embedding.as_deref())
                .bind(&new.embedding_model)
                .bind(Ts(new.created_at))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Memory {
                    id: new.id,
                    workspace_id: new.workspace_id,
                    scope: new.scope,
                    namespace: new.namespace.clone(),
                    content: new.content.clone(),
                    embedded: new.embedding.is_some(),
                    created_at: new.created_at,
                })
            }

            async fn list_memories(
                &self,
                filter: &MemoryFilter,
                limit: i64,
            ) -> StoreResult<Vec<Memory>> {
                let f = FilterBinds::new(filter);
                let sql = format!(
                    "SELECT {MEMORY_COLUMNS} FROM memories m WHERE {} \
                     ORDER BY m.created_at DESC, m.seq DESC LIMIT $6",
                    readable(Self::ID_LIST_3)
                );
                let rows: Vec<MemoryRow> = bind_filter!(sqlx::query_as(&sql), f)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn search_memories(
                &self,
                filter: &MemoryFilter,
                terms: &SearchTerms,
                limit: i64,
            ) -> StoreResult<Vec<MemoryId>> {
                if terms.is_empty() {
                    return Ok(Vec::new());
                }
                let f = FilterBinds::new(filter);
                let sql = Self::fts_sql(&readable(Self::ID_LIST_3));
                Ok(bind_filter!(sqlx::query_scalar(&sql), f)
                    .bind(Self::fts_query(terms))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn memory_vectors(
                &self,
                filter: &MemoryFilter,
                model: &str,
            ) -> StoreResult<Vec<(MemoryId, Vec<u8>)>> {
                let f = FilterBinds::new(filter);
                let sql = format!(
                    "SELECT m.id, m.embedding FROM memories m \
                     WHERE m.embedding IS NOT NULL AND m.embedding_model = $6 AND {}",
                    readable(Self::ID_LIST_3)
                );
                Ok(bind_filter!(sqlx::query_as(&sql), f)
                    .bind(model)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn get_memories(&self, ids: &[MemoryId]) -> StoreResult<Vec<Memory>> {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                let sql = format!(
                    "SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.id IN ({})",
                    Self::ID_LIST_1
                );
                let rows: Vec<MemoryRow> = sqlx::query_as(&sql)
                    .bind(serde_json::to_string(&ids).expect("BUG: strings serialize"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn delete_memory(
                &self,
                id: MemoryId,
                owner: Option<WorkspaceId>,
            ) -> StoreResult<bool> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "DELETE FROM memories WHERE id = $1 \
                     AND (CAST($2 AS TEXT) IS NULL OR workspace_id = $2)",
                )
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn memories_without_embedding(
                &self,
                limit: i64,
            ) -> StoreResult<Vec<(MemoryId, String)>> {
                Ok(sqlx::query_as(
                    "SELECT id, content FROM memories WHERE embedding IS NULL ORDER BY seq LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn set_memory_embedding(
                &self,
                id: MemoryId,
                embedding: &[u8],
                model: &str,
            ) -> StoreResult<bool> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE memories SET embedding = $2, embedding_model = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(embedding)
                .bind(model)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn kv_list(
                &self,
                workspace_id: WorkspaceId,
                now: DateTime<Utc>,
            ) -> StoreResult<Vec<KvEntry>> {
                let sql = format!(
                    "SELECT {KV_COLUMNS} FROM memory_kv WHERE workspace_id = $1 \
                     AND (expires_at IS NULL OR expires_at > $2) ORDER BY key"
                );
                let rows: Vec<KvRow> = sqlx::query_as(&sql)
                    .bind(workspace_id)
                    .bind(Ts(now))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn kv_get(
                &self,
                workspace_id: WorkspaceId,
                key: &str,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<KvEntry>> {
                let sql = format!("SELECT {KV_COLUMNS} FROM memory_kv WHERE {LIVE_KEY}");
                let row: Option<KvRow> = sqlx::query_as(&sql)
                    .bind(workspace_id)
                    .bind(key)
                    .bind(Ts(now))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Into::into))
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
            async fn kv_set(
                &self,
                workspace_id: WorkspaceId,
                key: &str,
                write: &KvWrite,
                now: DateTime<Utc>,
            ) -> StoreResult<KvWritten> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                // One statement each, so the version check and the write are
                // atomic on both engines: PostgreSQL re-checks the WHERE of
                // an UPDATE / ON CONFLICT on the row a racing writer just
                // committed, SQLite runs one writer at a time.
                let sql = match write.if_version {
                    // Absent keys are created at version 1; an existing one
                    // goes on from its version even past expiry, so a
                    // version is never reused for a key.
                    None | Some(0) => format!(
                        "INSERT INTO memory_kv AS kv (workspace_id, key, value, version, expires_at, \
                         updated_at) VALUES ($1, $2, $4, 1, $5, $3) \
                         ON CONFLICT (workspace_id, key) DO UPDATE SET value = excluded.value, \
                           version = kv.version + 1, expires_at = excluded.expires_at, \
                           updated_at = excluded.updated_at \
                         WHERE $6 IS NULL OR (kv.expires_at IS NOT NULL AND kv.expires_at <= $3) \
                         RETURNING {KV_COLUMNS}"
                    ),
                    Some(_) => format!(
                        "UPDATE memory_kv SET value = $4, version = version + 1, \
                           expires_at = $5, updated_at = $3 \
                         WHERE {LIVE_KEY} AND version = $6 RETURNING {KV_COLUMNS}"
                    ),
                };
                let row: Option<KvRow> = sqlx::query_as(&sql)
                    .bind(workspace_id)
                    .bind(key)
                    .bind(Ts(now))
                    .bind(Json(&write.value))
                    .bind(write.expires_at.map(Ts))
                    .bind(write.if_version)
                    .fetch_all(&mut *tx)
                    .await?
                    .pop();
                let outcome = match row {
                    Some(row) => KvWritten::Done(row.into()),
                    None => {
                        let current: Option<i64> = sqlx::query_scalar(&format!(
                            "SELECT version FROM memory_kv WHERE {LIVE_KEY}"
                        ))
                        .bind(workspace_id)
                        .bind(key)
                        .bind(Ts(now))
                        .fetch_optional(&mut *tx)
                        .await?;
                        KvWritten::Conflict {
                            current: current.unwrap_or(0),
                        }
                    }
                };
                tx.commit().await?;
                Ok(outcome)
            }

            async fn kv_delete(
                &self,
                workspace_id: WorkspaceId,
                key: &str,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(&format!("DELETE FROM memory_kv WHERE {LIVE_KEY}"))
                    .bind(workspace_id)
                    .bind(key)
                    .bind(Ts(now))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn sweep_kv(&self, now: DateTime<Utc>) -> StoreResult<u64> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "DELETE FROM memory_kv WHERE expires_at IS NOT NULL AND expires_at <= $1",
                )
                .bind(Ts(now))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }
        }
    };
}

portable_store!(sqlx::Sqlite, "sqlite");
portable_store!(sqlx::Postgres, "postgres");
