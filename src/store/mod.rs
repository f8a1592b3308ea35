//! The metadata seam: workspaces, tokens, the activity log, staged uploads,
//! agent memory.
//!
//! One [`Store`] trait, two real engines chosen by the URL scheme: SQLite
//! (the embedded default) and PostgreSQL (production, several replicas).
//! Every method is one statement or one transaction. The contract test
//! suite in `tests/api/store_contract.rs` runs against both engines.
//!
//! # Where things live
//!
//! - `mod.rs` (here): the trait, its row types, [`StoreError`].
//! - `sql.rs`: [`SqlStore<DB>`], and every query both engines share,
//!   written ONCE in its `portable_store!` macro, which stamps the same
//!   text onto `SqlStore<Sqlite>` and `SqlStore<Postgres>`.
//! - `sqlite.rs` / `postgres.rs`: only what differs in meaning — how each
//!   engine encodes our types (sqlx `Type/Encode/Decode` for the id types
//!   and [`Ts`](sql::Ts): text and integer microseconds on SQLite, `uuid`
//!   and `timestamptz` on PostgreSQL), connecting, migrations, the
//!   activity-id lock, the row lock of a workspace, the two sweeps, the
//!   key-list match (`json_each` vs `ANY`); and on PostgreSQL the
//!   mechanisms replicas share (the sweep's advisory lock as a
//!   [`SweepLock`], `LISTEN/NOTIFY` as a [`Notifier`]).
//!
//! # How to add a query
//!
//! 1. Declare the method on [`Store`] with a `///` contract.
//! 2. Write it once in `portable_store!` in `sql.rs`: `$1, $2…`
//!    placeholders, bind ids as the domain types (`WorkspaceId`, `FileId`),
//!    times as `Ts(t)`, JSON as `Json(&v)`; read rows into a
//!    `#[derive(sqlx::FromRow)]` struct made of those types. Portable SQL
//!    only: `CAST(x AS TEXT)`, not `x::text`; `FILTER`, `RETURNING`,
//!    `COALESCE` work on both.
//! 3. A write takes `let _w = self.writer().await;` first (SQLite's
//!    one-writer lock; a no-op on PostgreSQL), runs inside
//!    `self.pool.begin()` and ends with `tx.commit().await?`, so nothing
//!    is answered before it is durable.
//! 4. Only when the engines must differ in meaning (locking, claiming,
//!    arrays) call an inherent method by name and write it in both engine
//!    files, each saying why.
//! 5. Add a case to the contract suite; it runs on both engines.
//!
//! A new table needs a migration per engine; store timestamps as integer
//! microseconds on SQLite and `timestamptz` on PostgreSQL, ids as text and
//! `uuid`, so the existing encodings apply unchanged.

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::memory::{Reader, Scope, SearchTerms};
use crate::domain::{DeliveryMode, FileId, MemoryId, TokenHash, WorkspaceId};

pub use postgres::{Listener, Notifier, PostgresStore};
pub use sql::{BetweenReads, SqlStore};
pub use sqlite::SqliteStore;

/// Size of one chunk of a blob kept in the database.
pub const BLOB_CHUNK_SIZE: usize = 1024 * 1024;

/// What can go wrong below the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("failed to apply migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row did not have the shape the code expects.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL names no engine we support.
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
}

impl StoreError {
    /// True when the database cannot take the request right now — it is
    /// unreachable, its disk is full, or its storage failed — as opposed to
    /// a bug or a refused statement. Such errors answer 503, and the write
    /// they interrupted was not committed.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                if let Some(e) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                    // Primary result codes (the low byte of the extended
                    // code): BUSY, LOCKED, IOERR, FULL, CANTOPEN.
                    let code: i32 = sqlx::error::DatabaseError::code(e)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    matches!(code & 0xff, 5 | 6 | 10 | 13 | 14)
                } else if let Some(e) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    // SQLSTATE classes: 08 connection exception, 53
                    // insufficient resources (disk full, out of memory, too
                    // many connections), 57P administrator shutdown /
                    // cannot connect now.
                    let code = e.code();
                    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
                } else {
                    false
                }
            }
            _ => false,
        }
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A workspace as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    /// Its id.
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Push or poll.
    pub delivery_mode: DeliveryMode,
    /// Callback URL of a push workspace.
    pub url: Option<String>,
    /// Agent card sent at the last registration.
    pub agent_card: Option<Value>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change by the operator or a registration.
    pub updated_at: DateTime<Utc>,
    /// Last registration or heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
}

/// A workspace to create.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    /// Display name.
    pub name: String,
    /// Push or poll.
    pub delivery_mode: DeliveryMode,
    /// Callback URL (push mode).
    pub url: Option<String>,
}

/// Changes to a workspace; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct UpdateWorkspace {
    /// New name.
    pub name: Option<String>,
    /// New mode.
    pub delivery_mode: Option<DeliveryMode>,
    /// New URL; `Some(None)` clears it.
    pub url: Option<Option<String>>,
    /// New agent card (registration only).
    pub agent_card: Option<Value>,
}

/// How a registration ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// The workspace was updated and marked online.
    Done(Workspace),
    /// No such workspace.
    NotFound,
    /// A token was to be minted, but the workspace already has a live one.
    HasLiveToken,
}

/// An activity row to insert.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewActivity {
    /// `a2a_receive`, `agent_message`, or what the agent reports.
    pub activity_type: String,
    /// Discriminator within a type, e.g. `message/send`, `chat_upload_receive`.
    pub method: Option<String>,
    /// Who sent it.
    pub source_id: Option<String>,
    /// Who it is for.
    pub target_id: Option<String>,
    /// One line for humans.
    pub summary: Option<String>,
    /// The request as received.
    pub request_body: Option<Value>,
    /// The answer, if any.
    pub response_body: Option<Value>,
    /// Outcome status.
    pub status: Option<String>,
    /// Error text, if it failed.
    pub error_detail: Option<String>,
    /// The row made easy to consume.
    pub data: Option<Value>,
}

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
#[derive(Debug, Clone)]
pub struct ActivityQuery {
    /// Only rows with a greater id.
    pub since_id: i64,
    /// Only rows of this type.
    pub activity_type: Option<String>,
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

/// One file to stage, its bytes already in the blob store.
#[derive(Debug, Clone)]
pub struct NewPendingUpload {
    /// Server-chosen id.
    pub file_id: FileId,
    /// Where the bytes are.
    pub blob_key: String,
    /// Size in bytes.
    pub size: i64,
    /// Hex SHA-256.
    pub sha256: String,
    /// Sanitized name.
    pub filename: String,
    /// Sanitized mimetype.
    pub mimetype: String,
    /// When its bytes were fully received; orders a batch as it was sent.
    pub created_at: DateTime<Utc>,
    /// Hard deadline.
    pub expires_at: DateTime<Utc>,
}

/// A stored `pending_uploads` row.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingUpload {
    /// Its id.
    pub file_id: FileId,
    /// Owner.
    pub workspace_id: WorkspaceId,
    /// Where the bytes are.
    pub blob_key: String,
    /// Size in bytes.
    pub size: i64,
    /// Hex SHA-256.
    pub sha256: String,
    /// Sanitized name.
    pub filename: String,
    /// Sanitized mimetype.
    pub mimetype: String,
    /// Staged at.
    pub created_at: DateTime<Utc>,
    /// Last download.
    pub fetched_at: Option<DateTime<Utc>>,
    /// Delivery.
    pub acked_at: Option<DateTime<Utc>>,
    /// Hard deadline.
    pub expires_at: DateTime<Utc>,
}

/// How an ack ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AckOutcome {
    /// This call acked the file.
    Acked(PendingUpload),
    /// It was acked before (an idempotent retry).
    AlreadyAcked,
    /// Absent, expired, or another workspace's.
    NotFound,
}

/// Counts over the staging table, for `/admin/pending-uploads/stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UploadStats {
    /// Unacked and unexpired: waiting for delivery (fetched or not).
    pub pending: i64,
    /// Of those, fetched at least once but not acked: the stuck-fetch signal.
    pub fetched_not_acked: i64,
    /// Acked, waiting for the sweep.
    pub acked: i64,
    /// Unacked past their deadline, waiting for the sweep.
    pub expired: i64,
    /// Bytes of unacked, unexpired files.
    pub bytes_pending: i64,
    /// Creation time of the oldest unacked, unexpired file.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// Why a staged row was swept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepReason {
    /// Acked and past the retention window.
    Acked,
    /// Never acked and past its deadline.
    Expired,
}

/// A row the sweep deleted; its blob is deleted after the row is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct SweptUpload {
    /// Its id.
    pub file_id: FileId,
    /// Owner.
    pub workspace_id: WorkspaceId,
    /// The blob to delete now.
    pub blob_key: String,
    /// Why.
    pub reason: SweepReason,
}

/// A memory to insert.
#[derive(Debug, Clone)]
pub struct NewMemory {
    /// Server-chosen id.
    pub id: MemoryId,
    /// The owner.
    pub workspace_id: WorkspaceId,
    /// Who may read it.
    pub scope: Scope,
    /// Its namespace.
    pub namespace: String,
    /// The text.
    pub content: String,
    /// Little-endian float32 vector, when the embedder answered.
    pub embedding: Option<Vec<u8>>,
    /// The model of `embedding`.
    pub embedding_model: Option<String>,
    /// Commit time.
    pub created_at: DateTime<Utc>,
}

/// A stored memory (without its vector).
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    /// Its id.
    pub id: MemoryId,
    /// The owner.
    pub workspace_id: WorkspaceId,
    /// Who may read it.
    pub scope: Scope,
    /// Its namespace.
    pub namespace: String,
    /// The text.
    pub content: String,
    /// Whether it has a vector yet.
    pub embedded: bool,
    /// Commit time.
    pub created_at: DateTime<Utc>,
}

/// Which memories a read may see: the reader's readable set, narrowed.
#[derive(Debug, Clone)]
pub struct MemoryFilter {
    /// Whose memories the reader may read.
    pub reader: Reader,
    /// Only this scope.
    pub scope: Option<Scope>,
    /// Only this namespace.
    pub namespace: Option<String>,
}

/// A live key of the key/value memory.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// Any JSON.
    pub value: Value,
    /// Incremented by every write.
    pub version: i64,
    /// When it vanishes, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last write.
    pub updated_at: DateTime<Utc>,
}

/// A key/value write.
#[derive(Debug, Clone)]
pub struct KvWrite {
    /// Any JSON.
    pub value: Value,
    /// When it vanishes, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Write only if the live version is this (0: the key must be absent).
    pub if_version: Option<i64>,
}

/// How a key/value write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum KvWritten {
    /// Written; the entry as it is now.
    Done(KvEntry),
    /// `if_version` did not match: the live version (0 when absent).
    Conflict {
        /// The version a retry must name.
        current: i64,
    },
}

/// Held while a sweep pass runs; see [`Store::try_sweep_lock`].
pub struct SweepLock(Option<postgres::PgSessionLock>);

impl SweepLock {
    /// The lock of a store only one process uses: nothing to hold.
    fn local() -> Self {
        Self(None)
    }

    /// Ends the pass: other replicas may sweep again.
    pub async fn release(self) {
        if let Some(lock) = self.0 {
            lock.release().await;
        }
    }
}

/// The metadata store. Both engines implement it; see the module docs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn engine(&self) -> &'static str;
    /// The right to run a sweep pass: `None` while another replica runs
    /// one. Release it when the pass ends.
    async fn try_sweep_lock(&self) -> StoreResult<Option<SweepLock>>;
    /// Cross-replica event delivery, when the engine has it (PostgreSQL).
    fn notifier(&self) -> Option<Notifier>;
    /// Applies the embedded migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Answers when the database does.
    async fn ping(&self) -> StoreResult<()>;
    /// Closes the pool.
    async fn close(&self);

    // --- workspaces and tokens ---

    /// Inserts a workspace and its first token in one transaction.
    async fn create_workspace(
        &self,
        id: WorkspaceId,
        new: &NewWorkspace,
        token: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Workspace>;
    /// One workspace.
    async fn get_workspace(&self, id: WorkspaceId) -> StoreResult<Option<Workspace>>;
    /// Every workspace, oldest first.
    async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>>;
    /// Applies changes; `None` when there is no such workspace.
    async fn update_workspace(
        &self,
        id: WorkspaceId,
        update: &UpdateWorkspace,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Workspace>>;
    /// Deletes a workspace and its tokens; false when absent.
    async fn delete_workspace(&self, id: WorkspaceId) -> StoreResult<bool>;
    /// Revokes every live token and inserts `token`, in one transaction;
    /// false when the workspace is absent.
    async fn rotate_token(
        &self,
        id: WorkspaceId,
        token: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The workspace a live token belongs to.
    async fn workspace_for_token(&self, token: TokenHash) -> StoreResult<Option<WorkspaceId>>;
    /// Registration: applies `update`, stamps the heartbeat and, when
    /// `mint` is given, inserts it as the first token, but only if the
    /// workspace has no live token (the bootstrap rule), all in one
    /// transaction.
    async fn register_workspace(
        &self,
        id: WorkspaceId,
        update: &UpdateWorkspace,
        mint: Option<TokenHash>,
        now: DateTime<Utc>,
    ) -> StoreResult<Registered>;
    /// Stamps `last_heartbeat_at`; false when absent.
    async fn heartbeat(&self, id: WorkspaceId, now: DateTime<Utc>) -> StoreResult<bool>;

    // --- activity ---

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

    // --- staged uploads ---

    /// Inserts every upload row with its activity row in ONE transaction.
    async fn stage_uploads(
        &self,
        workspace_id: WorkspaceId,
        files: &[(NewPendingUpload, NewActivity)],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Activity>>;
    /// Unacked, unexpired files of a workspace, oldest first.
    async fn list_pending_uploads(
        &self,
        workspace_id: WorkspaceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PendingUpload>>;
    /// Stamps `fetched_at` on an unacked, unexpired file of this workspace
    /// and returns it; `None` for absent, acked, expired or foreign files.
    async fn fetch_pending_upload(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PendingUpload>>;
    /// The same file as [`Store::fetch_pending_upload`] finds, without
    /// stamping it (an operator looking, not the workspace fetching).
    async fn get_pending_upload(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PendingUpload>>;
    /// Every row of a workspace still in the table, whatever its state
    /// (acked and expired ones until the sweep removes them), oldest first.
    async fn list_all_uploads(
        &self,
        workspace_id: WorkspaceId,
        limit: i64,
    ) -> StoreResult<Vec<PendingUpload>>;
    /// Stamps `acked_at` once.
    async fn ack_pending_upload(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
        now: DateTime<Utc>,
    ) -> StoreResult<AckOutcome>;
    /// Counts for the stats endpoint.
    async fn upload_stats(&self, now: DateTime<Utc>) -> StoreResult<UploadStats>;

    // --- sweeping ---

    /// Deletes up to `limit` rows that are acked before `acked_before` or
    /// unacked past their deadline at `now`, and returns them. Concurrent
    /// sweepers never receive the same row.
    async fn sweep_uploads(
        &self,
        now: DateTime<Utc>,
        acked_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SweptUpload>>;
    /// Deletes up to `limit` activity rows created before `cutoff`, records
    /// the highest deleted id per workspace, and returns how many it deleted.
    async fn sweep_activity(&self, cutoff: DateTime<Utc>, limit: i64) -> StoreResult<u64>;
    /// Which of `keys` some `pending_uploads` row still references.
    async fn referenced_blob_keys(&self, keys: &[String]) -> StoreResult<Vec<String>>;

    // --- blob bytes kept in the database ---

    /// Writes chunk `seq` of a blob.
    async fn put_blob_chunk(
        &self,
        key: &str,
        seq: i32,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Reads chunk `seq` of a blob.
    async fn get_blob_chunk(&self, key: &str, seq: i32) -> StoreResult<Option<Vec<u8>>>;
    /// Deletes every chunk of a blob; false when there was none.
    async fn delete_blob(&self, key: &str) -> StoreResult<bool>;
    /// Every blob key with the time its first chunk was written.
    async fn list_blobs(&self) -> StoreResult<Vec<(String, DateTime<Utc>)>>;

    // --- agent memory ---

    /// Inserts one memory.
    async fn insert_memory(&self, new: &NewMemory) -> StoreResult<Memory>;
    /// Readable memories, newest first.
    async fn list_memories(&self, filter: &MemoryFilter, limit: i64) -> StoreResult<Vec<Memory>>;
    /// Ids of readable memories matching any of `terms`, best full-text
    /// rank first.
    async fn search_memories(
        &self,
        filter: &MemoryFilter,
        terms: &SearchTerms,
        limit: i64,
    ) -> StoreResult<Vec<MemoryId>>;
    /// Every readable memory with a vector of `model`: the candidate set
    /// of the vector half of recall.
    async fn memory_vectors(
        &self,
        filter: &MemoryFilter,
        model: &str,
    ) -> StoreResult<Vec<(MemoryId, Vec<u8>)>>;
    /// The memories with these ids (any order; absent ones skipped).
    async fn get_memories(&self, ids: &[MemoryId]) -> StoreResult<Vec<Memory>>;
    /// Deletes a memory (only if `owner` owns it, when given); false when
    /// nothing was deleted.
    async fn delete_memory(&self, id: MemoryId, owner: Option<WorkspaceId>) -> StoreResult<bool>;
    /// Up to `limit` memories without a vector, oldest first: the back-fill.
    async fn memories_without_embedding(&self, limit: i64) -> StoreResult<Vec<(MemoryId, String)>>;
    /// Stores a memory's vector; false when the memory is gone.
    async fn set_memory_embedding(
        &self,
        id: MemoryId,
        embedding: &[u8],
        model: &str,
    ) -> StoreResult<bool>;

    // --- key/value memory ---

    /// Live keys of a workspace, by key.
    async fn kv_list(
        &self,
        workspace_id: WorkspaceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<KvEntry>>;
    /// One live key.
    async fn kv_get(
        &self,
        workspace_id: WorkspaceId,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<KvEntry>>;
    /// Writes a key (version + 1), atomically with the `if_version` check.
    async fn kv_set(
        &self,
        workspace_id: WorkspaceId,
        key: &str,
        write: &KvWrite,
        now: DateTime<Utc>,
    ) -> StoreResult<KvWritten>;
    /// Deletes a live key; false when absent or expired.
    async fn kv_delete(
        &self,
        workspace_id: WorkspaceId,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Deletes expired keys; how many.
    async fn sweep_kv(&self, now: DateTime<Utc>) -> StoreResult<u64>;
}

/// Opens the store a URL names (`sqlite://…` or `postgres://…`). Does not
/// migrate; call [`Store::migrate`].
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redact_url(url)))
    }
}

/// A URL with its password replaced, fit for logs and errors.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}
