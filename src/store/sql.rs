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
use crate::domain::{
    self, Caller, DelegationId, DelegationStatus, DeliveryMode, FileId, HeartbeatReport, MemoryId,
    PluginName, SecretName, Tier, Transition, WorkspaceId,
};

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
    /// The group commit of `stage_uploads`; see [`GroupCommit`].
    pub(super) staging: GroupCommit,
}

/// One request's uploads, queued for the group commit.
pub(super) struct StageJob {
    workspace_id: WorkspaceId,
    files: Vec<(NewPendingUpload, NewActivity)>,
    now: DateTime<Utc>,
    answer: tokio::sync::oneshot::Sender<StoreResult<Vec<Activity>>>,
}

/// Group commit for staged uploads: concurrent `stage_uploads` calls share
/// one transaction, so one durable commit (one WAL fsync on SQLite) covers
/// every request that queued while the previous commit ran.
///
/// Each call queues its job, then waits for the leader lock. Whoever holds
/// it takes every queued job, commits them and answers each one before
/// letting go, so a call that gets the lock either finds its answer
/// waiting or its job still queued; there is no timer and no added wait
/// when uploads do not overlap. If the shared transaction fails, each job
/// is retried in a transaction of its own, so one refused request (a
/// removed workspace, a broken row) fails alone. The leader runs on the
/// caller's task: callers must not be cancelled mid-call (the upload path
/// stages each upload in a task of its own), or the jobs it took are
/// answered with [`StoreError::Interrupted`] and written by no one.
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct GroupCommit {
    queue: Arc<std::sync::Mutex<Vec<StageJob>>>,
    leader: Arc<Mutex<()>>,
    /// Transactions committed (or tried) for staged uploads.
    transactions: Arc<std::sync::atomic::AtomicU64>,
}

impl GroupCommit {
    fn push(&self, job: StageJob) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
    }

    fn take(&self) -> Vec<StageJob> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Jobs waiting for a leader (test hook).
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Transactions run for staged uploads so far (test hook).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Holds the leader lock: jobs queue up until the guard is dropped
    /// (test hook).
    pub async fn hold(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.leader.clone().lock_owned().await
    }
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

    /// The group commit of staged uploads (test hooks); see [`GroupCommit`].
    #[doc(hidden)]
    pub fn staging(&self) -> GroupCommit {
        self.staging.clone()
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
    parent_id: Option<WorkspaceId>,
    collapsed: bool,
    tier: i16,
    runtime: String,
    model: Option<String>,
    paused_at: Option<Ts>,
    removed_at: Option<Ts>,
    current_task: Option<String>,
    active_tasks: i32,
    error_rate: Option<f64>,
    sample_error: Option<String>,
    uptime_seconds: Option<i64>,
    inbox_picked_up_through: Option<i64>,
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
            parent_id: r.parent_id,
            collapsed: r.collapsed,
            tier: Tier::new(r.tier.into()).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            runtime: r.runtime,
            model: r.model,
            paused_at: r.paused_at.map(|t| t.0),
            removed_at: r.removed_at.map(|t| t.0),
            report: HeartbeatReport {
                current_task: r.current_task,
                active_tasks: Some(r.active_tasks.into()),
                error_rate: r.error_rate,
                sample_error: r.sample_error,
                uptime_seconds: r.uptime_seconds,
            },
            inbox_picked_up_through: r.inbox_picked_up_through,
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

/// `delegations` as read (`SELECT *`).
#[derive(sqlx::FromRow)]
pub(super) struct DelegationRow {
    id: DelegationId,
    caller_id: String,
    callee_id: WorkspaceId,
    task_preview: String,
    task: String,
    idempotency_key: String,
    status: String,
    result_preview: Option<String>,
    error_detail: Option<String>,
    deadline_at: Option<Ts>,
    last_heartbeat_at: Option<Ts>,
    created_at: Ts,
    updated_at: Ts,
    completed_at: Option<Ts>,
}

impl TryFrom<DelegationRow> for Delegation {
    type Error = StoreError;
    fn try_from(r: DelegationRow) -> StoreResult<Self> {
        Ok(Delegation {
            id: r.id,
            caller: r
                .caller_id
                .parse::<Caller>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            callee_id: r.callee_id,
            task_preview: r.task_preview,
            task: r.task,
            idempotency_key: r.idempotency_key,
            status: r
                .status
                .parse::<DelegationStatus>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            result_preview: r.result_preview,
            error_detail: r.error_detail,
            deadline_at: r.deadline_at.map(|t| t.0),
            last_heartbeat_at: r.last_heartbeat_at.map(|t| t.0),
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
            completed_at: r.completed_at.map(|t| t.0),
        })
    }
}

/// `global_secrets` / `workspace_secrets` keys as listed.
#[derive(sqlx::FromRow)]
pub(super) struct SecretMetaRow {
    name: String,
    updated_at: Ts,
}

impl TryFrom<SecretMetaRow> for SecretMeta {
    type Error = StoreError;
    fn try_from(r: SecretMetaRow) -> StoreResult<Self> {
        Ok(SecretMeta {
            name: SecretName::parse(&r.name).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            updated_at: r.updated_at.0,
        })
    }
}

/// A sealed secret as read; `own` tells the workspace's from the global.
#[derive(sqlx::FromRow)]
pub(super) struct SealedRow {
    own: bool,
    name: String,
    sealed: Vec<u8>,
}

/// `plugins` as read (`SELECT *`).
#[derive(sqlx::FromRow)]
pub(super) struct PluginRow {
    name: String,
    blob_key: String,
    size_bytes: i64,
    sha256: String,
    created_at: Ts,
    updated_at: Ts,
}

fn plugin_name(raw: &str) -> StoreResult<PluginName> {
    PluginName::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl TryFrom<PluginRow> for Plugin {
    type Error = StoreError;
    fn try_from(r: PluginRow) -> StoreResult<Self> {
        Ok(Plugin {
            name: plugin_name(&r.name)?,
            blob_key: r.blob_key,
            size: r.size_bytes,
            sha256: r.sha256,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        })
    }
}

/// Statuses a delegation is still in flight in, as an SQL list.
const IN_FLIGHT: &str = "('queued', 'dispatched', 'in_progress', 'stuck')";

/// One move of a ledger row, decided before it is written.
pub(super) struct Move<'a> {
    to: DelegationStatus,
    result_preview: Option<String>,
    error_detail: Option<String>,
    /// A callee report (a sign of life), not the sweeper.
    beat: bool,
    from: &'a Delegation,
}

/// `workspace_plugins` as read (`SELECT *`).
#[derive(sqlx::FromRow)]
pub(super) struct InstallRow {
    workspace_id: WorkspaceId,
    name: String,
    source: String,
    installed_at: Ts,
}

impl TryFrom<InstallRow> for PluginInstall {
    type Error = StoreError;
    fn try_from(r: InstallRow) -> StoreResult<Self> {
        Ok(PluginInstall {
            workspace_id: r.workspace_id,
            name: plugin_name(&r.name)?,
            source: r.source,
            installed_at: r.installed_at.0,
        })
    }
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
    pub(super) fn new(f: &MemoryFilter) -> Self {
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

            /// Whether the workspace exists and is live (a removed one
            /// neither rotates nor registers), locked until commit
            /// ([`Self::ROW_LOCK`]) so what the transaction does next is
            /// atomic with this check.
            async fn lock_workspace(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: WorkspaceId,
            ) -> StoreResult<bool> {
                let sql = format!(
                    "SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL{}",
                    Self::ROW_LOCK
                );
                let found = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
                Ok(found.is_some())
            }

            /// Inserts a workspace row, inside the caller's transaction.
            async fn insert_workspace(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: WorkspaceId,
                new: &NewWorkspace,
                now: DateTime<Utc>,
            ) -> StoreResult<WorkspaceRow> {
                sqlx::query_as(
                    "INSERT INTO workspaces (id, name, delivery_mode, url, parent_id, tier, \
                     runtime, model, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING *",
                )
                .bind(id)
                .bind(&new.name)
                .bind(new.delivery_mode.as_str())
                .bind(&new.url)
                .bind(new.parent_id)
                .bind(new.tier.get() as i16)
                .bind(&new.runtime)
                .bind(&new.model)
                .bind(Ts(now))
                .fetch_all(conn)
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("INSERT returned no row".into()))
            }

            /// Fails unless `parent` is a live workspace.
            async fn require_live_parent(
                conn: &mut <$db as sqlx::Database>::Connection,
                parent: WorkspaceId,
            ) -> StoreResult<()> {
                let live = sqlx::query("SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL")
                    .bind(parent)
                    .fetch_optional(conn)
                    .await?
                    .is_some();
                if live {
                    Ok(())
                } else {
                    Err(StoreError::UnknownParent(parent))
                }
            }

            /// Fails when making `parent` the parent of `id` would make
            /// `id` its own ancestor; the error carries the chain.
            async fn refuse_cycle(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: WorkspaceId,
                parent: WorkspaceId,
            ) -> StoreResult<()> {
                // Bounded, so even a corrupt (cyclic) table cannot make
                // this recurse forever.
                let chain: Vec<WorkspaceId> = sqlx::query_scalar(
                    "WITH RECURSIVE up(id, parent_id, depth) AS ( \
                       SELECT id, parent_id, 0 FROM workspaces WHERE id = $1 \
                       UNION ALL \
                       SELECT w.id, w.parent_id, up.depth + 1 FROM workspaces w \
                       JOIN up ON w.id = up.parent_id WHERE up.depth < 10000 \
                     ) SELECT id FROM up ORDER BY depth",
                )
                .bind(parent)
                .fetch_all(conn)
                .await?;
                match chain.iter().position(|a| *a == id) {
                    Some(at) => {
                        let mut cycle = vec![id];
                        cycle.extend_from_slice(&chain[..=at]);
                        Err(StoreError::Cycle(cycle))
                    }
                    None => Ok(()),
                }
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

            /// Commits queued upload jobs, as few transactions as the engine
            /// allows (see [`GroupCommit`]), and answers each job.
            async fn commit_staged(&self, jobs: Vec<StageJob>) {
                let mut groups: Vec<Vec<StageJob>> = Vec::new();
                for job in jobs {
                    let joins = groups.iter_mut().find(|g| {
                        Self::GROUP_ACROSS_WORKSPACES || g[0].workspace_id == job.workspace_id
                    });
                    match joins {
                        Some(group) => group.push(job),
                        None => groups.push(vec![job]),
                    }
                }
                for group in groups {
                    if group.len() > 1 {
                        if let Ok(answers) = self.insert_staged(&group).await {
                            for (job, activities) in group.into_iter().zip(answers) {
                                let _ = job.answer.send(Ok(activities));
                            }
                            continue;
                        }
                        // Some job was refused: each alone, so only it fails.
                    }
                    for job in group {
                        let answer = self
                            .insert_staged(std::slice::from_ref(&job))
                            .await
                            .map(|mut answers| answers.pop().unwrap_or_default());
                        let _ = job.answer.send(answer);
                    }
                }
            }

            /// Inserts every file and activity row of `jobs` in ONE
            /// transaction; the activities come back per job.
            async fn insert_staged(&self, jobs: &[StageJob]) -> StoreResult<Vec<Vec<Activity>>> {
                self.staging
                    .transactions
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let mut answers = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let mut activities = Vec::with_capacity(job.files.len());
                    for (file, activity) in &job.files {
                        sqlx::query(
                            "INSERT INTO pending_uploads (file_id, workspace_id, blob_key, \
                             size_bytes, sha256, filename, mimetype, created_at, expires_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        )
                        .bind(file.file_id)
                        .bind(job.workspace_id)
                        .bind(&file.blob_key)
                        .bind(file.size)
                        .bind(&file.sha256)
                        .bind(&file.filename)
                        .bind(&file.mimetype)
                        .bind(Ts(file.created_at))
                        .bind(Ts(file.expires_at))
                        .execute(&mut *tx)
                        .await?;
                        activities.push(
                            Self::insert_activity_in(&mut tx, job.workspace_id, activity, job.now)
                                .await?,
                        );
                    }
                    answers.push(activities);
                }
                tx.commit().await?;
                Ok(answers)
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

            /// Writes a decided move of a locked ledger row and, when it
            /// ends the delegation of a workspace caller, the caller's
            /// `delegation_result` row, inside the caller's transaction.
            async fn apply_move_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                mv: Move<'_>,
                now: DateTime<Utc>,
            ) -> StoreResult<Transitioned> {
                let advance = mv.from.status != mv.to;
                let ends = advance && mv.to.is_terminal();
                let row: DelegationRow = sqlx::query_as(
                    "UPDATE delegations SET status = $2, result_preview = $3, error_detail = $4, \
                       updated_at = $5, \
                       last_heartbeat_at = CASE WHEN $6 THEN $5 ELSE last_heartbeat_at END, \
                       completed_at = CASE WHEN $7 THEN $5 ELSE completed_at END \
                     WHERE id = $1 RETURNING *",
                )
                .bind(mv.from.id)
                .bind(mv.to.as_str())
                .bind(&mv.result_preview)
                .bind(&mv.error_detail)
                .bind(Ts(now))
                .bind(mv.beat)
                .bind(ends)
                .fetch_all(&mut *conn)
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("UPDATE of a locked row missed it".into()))?;
                let delegation: Delegation = row.try_into()?;
                let result_row = match (ends, delegation.caller.workspace()) {
                    (true, Some(caller)) => Some(
                        Self::insert_activity_in(
                            &mut *conn,
                            caller,
                            &delegation.result_activity(),
                            now,
                        )
                        .await?,
                    ),
                    _ => None,
                };
                Ok(Transitioned {
                    delegation,
                    from: mv.from.status,
                    result_row,
                })
            }

            /// A callee's delegation, locked until commit.
            async fn lock_delegation(
                conn: &mut <$db as sqlx::Database>::Connection,
                callee: WorkspaceId,
                id: DelegationId,
            ) -> StoreResult<Option<Delegation>> {
                let sql = format!(
                    "SELECT * FROM delegations WHERE id = $1 AND callee_id = $2{}",
                    Self::ROW_LOCK
                );
                let row: Option<DelegationRow> = sqlx::query_as(&sql)
                    .bind(id)
                    .bind(callee)
                    .fetch_optional(conn)
                    .await?;
                row.map(TryInto::try_into).transpose()
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
                if let Some(parent) = new.parent_id {
                    Self::lock_tree(&mut tx).await?;
                    Self::require_live_parent(&mut tx, parent).await?;
                }
                let row = Self::insert_workspace(&mut tx, id, new, now).await?;
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
                    sqlx::query_as(
                        "SELECT * FROM workspaces WHERE removed_at IS NULL ORDER BY created_at, id",
                    )
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
                if let Some(Some(parent)) = update.parent_id {
                    Self::lock_tree(&mut tx).await?;
                    Self::require_live_parent(&mut tx, parent).await?;
                    Self::refuse_cycle(&mut tx, id, parent).await?;
                }
                let row: Option<WorkspaceRow> = sqlx::query_as(
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
                .bind(id)
                .bind(&update.name)
                .bind(update.delivery_mode.map(DeliveryMode::as_str))
                .bind(update.url.is_some())
                .bind(update.url.clone().flatten())
                .bind(update.agent_card.as_ref().map(Json))
                .bind(Ts(now))
                .bind(update.parent_id.is_some())
                .bind(update.parent_id.flatten())
                .bind(update.collapsed)
                .bind(update.tier.map(|t| t.get() as i16))
                .bind(&update.runtime)
                .bind(&update.model)
                .fetch_all(&mut *tx)
                .await?
                .pop();
                tx.commit().await?;
                row.map(TryInto::try_into).transpose()
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %id, cascade))]
            async fn remove_workspace(
                &self,
                id: WorkspaceId,
                cascade: bool,
                now: DateTime<Utc>,
            ) -> StoreResult<Removal> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                Self::lock_tree(&mut tx).await?;
                if !Self::lock_workspace(&mut tx, id).await? {
                    return Ok(Removal::NotFound);
                }
                let children: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM workspaces WHERE parent_id = $1 AND removed_at IS NULL",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                if children > 0 && !cascade {
                    return Ok(Removal::HasLiveChildren(children));
                }
                // The live subtree, the workspace itself first.
                let subtree: Vec<(WorkspaceId, Option<WorkspaceId>)> = sqlx::query_as(
                    "WITH RECURSIVE sub(id, parent_id, depth) AS ( \
                       SELECT id, parent_id, 0 FROM workspaces WHERE id = $1 \
                       UNION ALL \
                       SELECT w.id, w.parent_id, sub.depth + 1 FROM workspaces w \
                       JOIN sub ON w.parent_id = sub.id \
                       WHERE w.removed_at IS NULL AND sub.depth < 10000 \
                     ) SELECT id, parent_id FROM sub ORDER BY depth",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                for (ws, _) in &subtree {
                    sqlx::query(
                        "UPDATE workspaces SET removed_at = $2, updated_at = $2 WHERE id = $1",
                    )
                    .bind(ws)
                    .bind(Ts(now))
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE workspace_auth_tokens SET revoked_at = $2 \
                         WHERE workspace_id = $1 AND revoked_at IS NULL",
                    )
                    .bind(ws)
                    .bind(Ts(now))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(Removal::Removed(subtree))
            }

            async fn child_ids(&self, id: WorkspaceId) -> StoreResult<Vec<WorkspaceId>> {
                Ok(sqlx::query_scalar(
                    "SELECT id FROM workspaces WHERE parent_id = $1 AND removed_at IS NULL \
                     ORDER BY created_at, id",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?)
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %id, paused))]
            async fn set_paused(
                &self,
                id: WorkspaceId,
                paused: bool,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<Workspace>> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                // Pausing twice keeps the first pause time.
                let row: Option<WorkspaceRow> = sqlx::query_as(
                    "UPDATE workspaces SET \
                       paused_at = CASE WHEN $2 THEN COALESCE(paused_at, $3) END, \
                       updated_at = $3 \
                     WHERE id = $1 AND removed_at IS NULL RETURNING *",
                )
                .bind(id)
                .bind(paused)
                .bind(Ts(now))
                .fetch_all(&mut *tx)
                .await?
                .pop();
                tx.commit().await?;
                row.map(TryInto::try_into).transpose()
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %id))]
            async fn request_restart(
                &self,
                id: WorkspaceId,
                row: &NewActivity,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<(Workspace, Activity)>> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let ws: Option<WorkspaceRow> = sqlx::query_as(
                    "UPDATE workspaces SET active_tasks = 0, updated_at = $2 \
                     WHERE id = $1 AND removed_at IS NULL RETURNING *",
                )
                .bind(id)
                .bind(Ts(now))
                .fetch_all(&mut *tx)
                .await?
                .pop();
                let Some(ws) = ws else {
                    return Ok(None);
                };
                let activity = Self::insert_activity_in(&mut tx, id, row, now).await?;
                tx.commit().await?;
                Ok(Some((ws.try_into()?, activity)))
            }

            #[tracing::instrument(skip_all, fields(nodes = nodes.len(), dry_run))]
            async fn import_org(
                &self,
                nodes: &[ImportNode],
                dry_run: bool,
                now: DateTime<Utc>,
            ) -> StoreResult<Vec<ImportedNode>> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                // Serializes imports: a second one waits here, then finds
                // every node the first one created.
                Self::lock_tree(&mut tx).await?;
                let mut out: Vec<ImportedNode> = Vec::with_capacity(nodes.len());
                for (i, node) in nodes.iter().enumerate() {
                    let parent_id = node.parent.map(|p| out[p].id);
                    // NULL parents compare equal: root nodes match roots.
                    let existing: Option<WorkspaceId> = sqlx::query_scalar(
                        "SELECT id FROM workspaces \
                         WHERE parent_id IS NOT DISTINCT FROM $1 AND name = $2 \
                           AND removed_at IS NULL \
                         ORDER BY created_at, id LIMIT 1",
                    )
                    .bind(parent_id)
                    .bind(&node.workspace.name)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(existing) = existing {
                        out.push(ImportedNode {
                            id: existing,
                            parent_id,
                            created: false,
                        });
                        continue;
                    }
                    let new = NewWorkspace {
                        parent_id,
                        ..node.workspace.clone()
                    };
                    // One microsecond apart: listings (oldest first) keep
                    // the template's order.
                    let at = now + chrono::Duration::microseconds(i as i64);
                    Self::insert_workspace(&mut tx, node.id, &new, at).await?;
                    Self::insert_token(&mut tx, node.id, node.token, at).await?;
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
                Ok(sqlx::query_scalar(
                    "SELECT w.id FROM workspace_auth_tokens t \
                     JOIN workspaces w ON w.id = t.workspace_id \
                     WHERE t.token_hash = $1 AND w.removed_at IS NOT NULL",
                )
                .bind(&token.0[..])
                .fetch_optional(&self.pool)
                .await?)
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
                Ok(Registered::Done(Box::new(row.try_into()?)))
            }

            async fn heartbeat(
                &self,
                id: WorkspaceId,
                report: &HeartbeatReport,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                // A field the heartbeat left out keeps its last value.
                let done = sqlx::query(
                    "UPDATE workspaces SET last_heartbeat_at = $2, \
                       current_task = COALESCE($3, current_task), \
                       active_tasks = COALESCE($4, active_tasks), \
                       error_rate = COALESCE($5, error_rate), \
                       sample_error = COALESCE($6, sample_error), \
                       uptime_seconds = COALESCE($7, uptime_seconds) \
                     WHERE id = $1 AND removed_at IS NULL",
                )
                .bind(id)
                .bind(Ts(now))
                .bind(&report.current_task)
                .bind(report.active_tasks.map(|n| n as i32))
                .bind(report.error_rate)
                .bind(&report.sample_error)
                .bind(report.uptime_seconds)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn mark_inbox_picked_up(&self, id: WorkspaceId, through: i64) -> StoreResult<()> {
                let _w = self.writer().await;
                sqlx::query(
                    "UPDATE workspaces SET inbox_picked_up_through = $2 \
                     WHERE id = $1 AND (inbox_picked_up_through IS NULL \
                       OR inbox_picked_up_through < $2)",
                )
                .bind(id)
                .bind(through)
                .execute(&self.pool)
                .await?;
                Ok(())
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

            #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, files = files.len()))]
            async fn stage_uploads(
                &self,
                workspace_id: WorkspaceId,
                files: Vec<(NewPendingUpload, NewActivity)>,
                now: DateTime<Utc>,
            ) -> StoreResult<Vec<Activity>> {
                let (answer, answered) = tokio::sync::oneshot::channel();
                self.staging.push(StageJob {
                    workspace_id,
                    files,
                    now,
                    answer,
                });
                {
                    let _leader = self.staging.leader.lock().await;
                    // Empty when the previous leader took this job too.
                    let jobs = self.staging.take();
                    if !jobs.is_empty() {
                        self.commit_staged(jobs).await;
                    }
                }
                answered.await.unwrap_or(Err(StoreError::Interrupted))
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
            async fn mark_pending_upload_fetched(
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

            async fn secrets_key_check(
                &self,
                candidate: &[u8],
                now: DateTime<Utc>,
            ) -> StoreResult<Vec<u8>> {
                let _w = self.writer().await;
                sqlx::query(
                    "INSERT INTO secrets_key_check (id, sealed, created_at) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(candidate)
                .bind(Ts(now))
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
                let _w = self.writer().await;
                let done = match scope {
                    SecretScope::Global => {
                        sqlx::query(
                            "INSERT INTO global_secrets (name, sealed, created_at, updated_at) \
                             VALUES ($1, $2, $3, $3) \
                             ON CONFLICT (name) DO UPDATE \
                               SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                        )
                        .bind(name.as_str())
                        .bind(sealed)
                        .bind(Ts(now))
                        .execute(&self.pool)
                        .await?
                    }
                    // Only for a live workspace: the WHERE makes a missing
                    // one insert nothing (0 rows), in the same statement.
                    SecretScope::Workspace(id) => {
                        sqlx::query(
                            "INSERT INTO workspace_secrets \
                               (workspace_id, name, sealed, created_at, updated_at) \
                             SELECT $1, $2, $3, $4, $4 \
                             WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL) \
                             ON CONFLICT (workspace_id, name) DO UPDATE \
                               SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                        )
                        .bind(id)
                        .bind(name.as_str())
                        .bind(sealed)
                        .bind(Ts(now))
                        .execute(&self.pool)
                        .await?
                    }
                };
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all, fields(secret = %name))]
            async fn delete_secret(
                &self,
                scope: SecretScope,
                name: &SecretName,
            ) -> StoreResult<bool> {
                let _w = self.writer().await;
                let done = match scope {
                    SecretScope::Global => {
                        sqlx::query("DELETE FROM global_secrets WHERE name = $1")
                            .bind(name.as_str())
                            .execute(&self.pool)
                            .await?
                    }
                    SecretScope::Workspace(id) => {
                        sqlx::query(
                            "DELETE FROM workspace_secrets WHERE workspace_id = $1 AND name = $2",
                        )
                        .bind(id)
                        .bind(name.as_str())
                        .execute(&self.pool)
                        .await?
                    }
                };
                Ok(done.rows_affected() == 1)
            }

            async fn list_secrets(&self, scope: SecretScope) -> StoreResult<Vec<SecretMeta>> {
                let rows: Vec<SecretMetaRow> = match scope {
                    SecretScope::Global => {
                        sqlx::query_as("SELECT name, updated_at FROM global_secrets ORDER BY name")
                            .fetch_all(&self.pool)
                            .await?
                    }
                    SecretScope::Workspace(id) => {
                        sqlx::query_as(
                            "SELECT name, updated_at FROM workspace_secrets \
                             WHERE workspace_id = $1 ORDER BY name",
                        )
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn sealed_secrets(
                &self,
                workspace_id: WorkspaceId,
            ) -> StoreResult<Vec<SealedSecret>> {
                let rows: Vec<SealedRow> = sqlx::query_as(
                    "SELECT false AS own, name, sealed FROM global_secrets \
                     UNION ALL \
                     SELECT true AS own, name, sealed FROM workspace_secrets WHERE workspace_id = $1",
                )
                .bind(workspace_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|r| {
                        Ok(SealedSecret {
                            scope: if r.own {
                                SecretScope::Workspace(workspace_id)
                            } else {
                                SecretScope::Global
                            },
                            name: SecretName::parse(&r.name)
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                            sealed: r.sealed,
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
                let _w = self.writer().await;
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
                       size_bytes = excluded.size_bytes, sha256 = excluded.sha256, \
                       updated_at = excluded.updated_at",
                )
                .bind(name.as_str())
                .bind(blob_key)
                .bind(size)
                .bind(sha256)
                .bind(Ts(now))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(old)
            }

            async fn get_plugin(&self, name: &PluginName) -> StoreResult<Option<Plugin>> {
                let row: Option<PluginRow> = sqlx::query_as("SELECT * FROM plugins WHERE name = $1")
                    .bind(name.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_plugins(&self) -> StoreResult<Vec<Plugin>> {
                let rows: Vec<PluginRow> = sqlx::query_as("SELECT * FROM plugins ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            #[tracing::instrument(skip_all, fields(plugin = %name))]
            async fn delete_plugin(&self, name: &PluginName) -> StoreResult<Option<String>> {
                let _w = self.writer().await;
                Ok(sqlx::query_scalar::<_, String>(
                    "DELETE FROM plugins WHERE name = $1 RETURNING blob_key",
                )
                .bind(name.as_str())
                .fetch_all(&self.pool)
                .await?
                .pop())
            }

            #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, plugin = %name))]
            async fn record_plugin_install(
                &self,
                workspace_id: WorkspaceId,
                name: &PluginName,
                source: &str,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<PluginInstall>> {
                let _w = self.writer().await;
                let row: Option<InstallRow> = sqlx::query_as(
                    "INSERT INTO workspace_plugins (workspace_id, name, source, installed_at) \
                     SELECT $1, $2, $3, $4 \
                     WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL) \
                     ON CONFLICT (workspace_id, name) DO UPDATE \
                       SET source = excluded.source, installed_at = excluded.installed_at \
                     RETURNING *",
                )
                .bind(workspace_id)
                .bind(name.as_str())
                .bind(source)
                .bind(Ts(now))
                .fetch_all(&self.pool)
                .await?
                .pop();
                row.map(TryInto::try_into).transpose()
            }

            async fn list_plugin_installs(
                &self,
                workspace_id: WorkspaceId,
            ) -> StoreResult<Vec<PluginInstall>> {
                let rows: Vec<InstallRow> = sqlx::query_as(
                    "SELECT * FROM workspace_plugins WHERE workspace_id = $1 ORDER BY name",
                )
                .bind(workspace_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            #[tracing::instrument(skip_all)]
            async fn reset_phantom_busy(
                &self,
                stale_before: DateTime<Utc>,
                limit: i64,
            ) -> StoreResult<Vec<WorkspaceId>> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let sql = format!(
                    "UPDATE workspaces SET active_tasks = 0 WHERE id IN ( \
                       SELECT id FROM workspaces WHERE active_tasks > 0 AND removed_at IS NULL \
                         AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $1) \
                       LIMIT $2{} \
                     ) RETURNING id",
                    Self::SKIP_LOCKED
                );
                let ids: Vec<WorkspaceId> = sqlx::query_scalar(&sql)
                    .bind(Ts(stale_before))
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(ids)
            }

            #[tracing::instrument(skip_all)]
            async fn purge_removed(
                &self,
                removed_before: DateTime<Utc>,
                limit: i64,
            ) -> StoreResult<u64> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                // A purged workspace's memories and keys go with it (they
                // carry no foreign key, like activity rows). Every workspace
                // past the cutoff is purged by this pass or the next batch,
                // so clearing all of theirs at once is exact.
                for table in ["memories", "memory_kv"] {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE workspace_id IN ( \
                           SELECT id FROM workspaces \
                           WHERE removed_at IS NOT NULL AND removed_at < $1)"
                    ))
                    .bind(Ts(removed_before))
                    .execute(&mut *tx)
                    .await?;
                }
                // Tokens go with the row (ON DELETE CASCADE); a child
                // purged later keeps a NULL parent (ON DELETE SET NULL).
                let sql = format!(
                    "DELETE FROM workspaces WHERE id IN ( \
                       SELECT id FROM workspaces \
                       WHERE removed_at IS NOT NULL AND removed_at < $1 \
                       ORDER BY removed_at LIMIT $2{} \
                     )",
                    Self::SKIP_LOCKED
                );
                let done = sqlx::query(&sql)
                    .bind(Ts(removed_before))
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn referenced_blob_keys(&self, keys: &[String]) -> StoreResult<Vec<String>> {
                self.referenced_blob_keys_engine(keys).await
            }

            #[tracing::instrument(skip_all, fields(delegation_id = %new.id, callee_id = %new.callee_id))]
            async fn create_delegation(
                &self,
                new: &NewDelegation,
                inbox: &NewActivity,
                now: DateTime<Utc>,
            ) -> StoreResult<Delegated> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let caller = new.caller.to_string();
                // ON CONFLICT DO NOTHING: a racing twin waits for the
                // winner's commit and then inserts nothing; the read below
                // (a fresh snapshot) finds the winner's row.
                let inserted: Option<DelegationRow> = sqlx::query_as(
                    "INSERT INTO delegations (id, caller_id, callee_id, task_preview, task, \
                       idempotency_key, status, deadline_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $8) \
                     ON CONFLICT (caller_id, idempotency_key) DO NOTHING RETURNING *",
                )
                .bind(new.id)
                .bind(&caller)
                .bind(new.callee_id)
                .bind(domain::truncate_chars(&new.task, domain::TASK_PREVIEW_CHARS))
                .bind(&new.task)
                .bind(&new.idempotency_key)
                .bind(new.deadline_at.map(Ts))
                .bind(Ts(now))
                .fetch_all(&mut *tx)
                .await?
                .pop();
                let Some(row) = inserted else {
                    let existing: DelegationRow = sqlx::query_as(
                        "SELECT * FROM delegations WHERE caller_id = $1 AND idempotency_key = $2",
                    )
                    .bind(&caller)
                    .bind(&new.idempotency_key)
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    return Ok(Delegated::Existing(existing.try_into()?));
                };
                let inbox = Self::insert_activity_in(&mut tx, new.callee_id, inbox, now).await?;
                tx.commit().await?;
                Ok(Delegated::Created {
                    delegation: row.try_into()?,
                    inbox,
                })
            }

            #[tracing::instrument(skip_all, fields(delegation_id = %id, callee_id = %callee))]
            async fn report_delegation(
                &self,
                callee: WorkspaceId,
                id: DelegationId,
                report: &StatusReport,
                now: DateTime<Utc>,
            ) -> StoreResult<ReportOutcome> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let Some(current) = Self::lock_delegation(&mut tx, callee, id).await? else {
                    return Ok(ReportOutcome::NotFound);
                };
                // The machine decides on the locked row, so two racing
                // reports are applied one after the other, never past it.
                if let Err(refused) = current.status.transition(report.status) {
                    return Ok(ReportOutcome::Refused(refused));
                }
                let mv = Move {
                    to: report.status,
                    result_preview: domain::merge_text(
                        current.result_preview.as_deref(),
                        report.result_preview.as_deref(),
                    ),
                    error_detail: domain::merge_text(
                        current.error_detail.as_deref(),
                        report.error_detail.as_deref(),
                    ),
                    beat: true,
                    from: &current,
                };
                let done = Self::apply_move_in(&mut tx, mv, now).await?;
                tx.commit().await?;
                Ok(ReportOutcome::Applied(done))
            }

            async fn heartbeat_delegation(
                &self,
                callee: WorkspaceId,
                id: DelegationId,
                now: DateTime<Utc>,
            ) -> StoreResult<BeatOutcome> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let Some(current) = Self::lock_delegation(&mut tx, callee, id).await? else {
                    return Ok(BeatOutcome::NotFound);
                };
                if current.status.is_terminal() {
                    return Ok(BeatOutcome::Over(current.status));
                }
                let row: DelegationRow = sqlx::query_as(
                    "UPDATE delegations SET last_heartbeat_at = $2 WHERE id = $1 RETURNING *",
                )
                .bind(id)
                .bind(Ts(now))
                .fetch_all(&mut *tx)
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("UPDATE of a locked row missed it".into()))?;
                tx.commit().await?;
                Ok(BeatOutcome::Beat(row.try_into()?))
            }

            async fn get_delegation(&self, id: DelegationId) -> StoreResult<Option<Delegation>> {
                let row: Option<DelegationRow> =
                    sqlx::query_as("SELECT * FROM delegations WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_delegations(
                &self,
                filter: &DelegationFilter,
            ) -> StoreResult<Vec<Delegation>> {
                let mut sql = String::from("SELECT * FROM delegations WHERE 1 = 1");
                let mut n = 0;
                let mut next = || {
                    n += 1;
                    format!("${n}")
                };
                if let Some((_, role)) = filter.party {
                    match role {
                        PartyRole::Caller => sql += &format!(" AND caller_id = {}", next()),
                        PartyRole::Callee => sql += &format!(" AND callee_id = {}", next()),
                        PartyRole::Either => {
                            sql += &format!(" AND (caller_id = {} OR callee_id = {})", next(), next())
                        }
                    }
                }
                if filter.status.is_some() {
                    sql += &format!(" AND status = {}", next());
                }
                sql += &format!(" ORDER BY created_at DESC, id DESC LIMIT {}", next());
                let mut query = sqlx::query_as::<_, DelegationRow>(&sql);
                if let Some((ws, role)) = filter.party {
                    if role != PartyRole::Callee {
                        query = query.bind(ws.to_string());
                    }
                    if role != PartyRole::Caller {
                        query = query.bind(ws);
                    }
                }
                if let Some(status) = filter.status {
                    query = query.bind(status.as_str());
                }
                let rows = query.bind(filter.limit).fetch_all(&self.pool).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn delegation_stats(&self, since: DateTime<Utc>) -> StoreResult<DelegationStats> {
                let counts: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT status, count(*) FROM delegations GROUP BY status ORDER BY status",
                )
                .fetch_all(&self.pool)
                .await?;
                let oldest: Option<Ts> = sqlx::query_scalar(&format!(
                    "SELECT min(created_at) FROM delegations WHERE status IN {IN_FLIGHT}"
                ))
                .fetch_one(&self.pool)
                .await?;
                // Bounded: the figures of a day of a very busy ledger are
                // well described by its latest 100 000 completions.
                let spans: Vec<(Ts, Ts)> = sqlx::query_as(
                    "SELECT created_at, completed_at FROM delegations \
                     WHERE status = 'completed' AND completed_at >= $1 \
                     ORDER BY completed_at DESC LIMIT 100000",
                )
                .bind(Ts(since))
                .fetch_all(&self.pool)
                .await?;
                let mut completion_seconds: Vec<f64> = spans
                    .into_iter()
                    .map(|(c, d)| (d.0 - c.0).num_microseconds().unwrap_or(0) as f64 / 1e6)
                    .collect();
                completion_seconds.sort_by(f64::total_cmp);
                Ok(DelegationStats {
                    counts: counts
                        .into_iter()
                        .map(|(s, n)| {
                            s.parse::<DelegationStatus>()
                                .map(|s| (s, n))
                                .map_err(|e| StoreError::Corrupt(e.to_string()))
                        })
                        .collect::<StoreResult<_>>()?,
                    oldest_in_flight_at: oldest.map(|t| t.0),
                    completion_seconds,
                })
            }

            async fn sweep_delegations(
                &self,
                now: DateTime<Utc>,
                silent_before: DateTime<Utc>,
                limit: i64,
            ) -> StoreResult<Vec<Transitioned>> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                // Locked: a callee report racing the sweep waits (or makes
                // the row no longer match), so the two never cross.
                let sql = format!(
                    "SELECT * FROM delegations WHERE status IN {IN_FLIGHT} AND ( \
                       (deadline_at IS NOT NULL AND deadline_at <= $1) \
                       OR (status IN ('dispatched', 'in_progress') \
                           AND COALESCE(last_heartbeat_at, updated_at) < $2)) \
                     ORDER BY created_at LIMIT $3{}",
                    Self::ROW_LOCK
                );
                let rows: Vec<DelegationRow> = sqlx::query_as(&sql)
                    .bind(Ts(now))
                    .bind(Ts(silent_before))
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut moved = Vec::with_capacity(rows.len());
                for row in rows {
                    let current: Delegation = row.try_into()?;
                    let overdue = current.deadline_at.is_some_and(|d| d <= now);
                    let (to, error) = if overdue {
                        (DelegationStatus::Failed, "deadline exceeded".to_owned())
                    } else {
                        let since = current.last_heartbeat_at.unwrap_or(current.updated_at);
                        let silent = (now - since).num_seconds();
                        (DelegationStatus::Stuck, format!("no heartbeat for {silent}s"))
                    };
                    if current.status.transition(to) != Ok(Transition::Advance) {
                        continue;
                    }
                    let mv = Move {
                        to,
                        result_preview: current.result_preview.clone(),
                        error_detail: Some(error),
                        beat: false,
                        from: &current,
                    };
                    moved.push(Self::apply_move_in(&mut tx, mv, now).await?);
                }
                tx.commit().await?;
                Ok(moved)
            }

            async fn purge_delegations(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
                let _w = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "DELETE FROM delegations WHERE id IN ( \
                       SELECT id FROM delegations \
                       WHERE completed_at IS NOT NULL AND completed_at < $1 \
                       ORDER BY completed_at LIMIT $2)",
                )
                .bind(Ts(before))
                .bind(limit)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
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

            async fn memory_vector_ids(
                &self,
                filter: &MemoryFilter,
                model: &str,
            ) -> StoreResult<Vec<MemoryId>> {
                let f = FilterBinds::new(filter);
                let sql = format!(
                    "SELECT m.id FROM memories m \
                     WHERE m.embedding IS NOT NULL AND m.embedding_model = $6 AND {}",
                    readable(Self::ID_LIST_3)
                );
                Ok(bind_filter!(sqlx::query_scalar(&sql), f)
                    .bind(model)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn memory_vectors(
                &self,
                ids: &[MemoryId],
            ) -> StoreResult<Vec<(MemoryId, Vec<u8>)>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                let sql = format!(
                    "SELECT m.id, m.embedding FROM memories m \
                     WHERE m.embedding IS NOT NULL AND m.id IN ({})",
                    Self::ID_LIST_1
                );
                Ok(sqlx::query_as(&sql)
                    .bind(serde_json::to_string(&ids).expect("BUG: strings serialize"))
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
                    "UPDATE memories SET embedding = $2, embedding_model = $3 \
                     WHERE id = $1 AND embedding IS NULL",
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
