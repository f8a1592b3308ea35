//! The metadata seam: workspaces, tokens, the activity log, staged uploads,
//! the delegation ledger, agent memory.
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
use crate::domain::{
    Caller, DelegationId, DelegationStatus, DeliveryMode, FileId, HeartbeatReport, MemoryId,
    PluginName, Refused, SecretName, Tier, TokenHash, WorkspaceId,
};

pub use postgres::{Listener, Notifier, PostgresStore};
pub use sql::{BetweenReads, GroupCommit, SqlStore};
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
    /// The named parent does not exist or was removed.
    #[error("parent workspace {0} does not exist")]
    UnknownParent(WorkspaceId),
    /// The new parent would make a workspace its own ancestor; the chain
    /// runs from the workspace up to itself.
    #[error("a workspace cannot be its own ancestor")]
    Cycle(Vec<WorkspaceId>),
    /// The call that was committing this write on others' behalf was
    /// dropped before it finished; nothing of the write was kept.
    #[error("the write was interrupted before it was committed")]
    Interrupted,
}

impl StoreError {
    /// True when the database cannot take the request right now — it is
    /// unreachable, its disk is full, or its storage failed — as opposed to
    /// a bug or a refused statement. Such errors answer 503, and the write
    /// they interrupted was not committed.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else {
            return matches!(self, StoreError::Interrupted);
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
    /// Parent in the team tree; `None` for a root.
    pub parent_id: Option<WorkspaceId>,
    /// The canvas's fold of its subtree.
    pub collapsed: bool,
    /// Resource tier.
    pub tier: Tier,
    /// What runs the agent.
    pub runtime: String,
    /// The model the agent runs (`None` only for rows older than tiers).
    pub model: Option<String>,
    /// Set while paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Set once soft-deleted.
    pub removed_at: Option<DateTime<Utc>>,
    /// What the last heartbeat reported (`active_tasks` defaults to 0).
    pub report: HeartbeatReport,
    /// The highest inbox row id its own poll handed to the agent.
    pub inbox_picked_up_through: Option<i64>,
}

impl Workspace {
    /// Not soft-deleted.
    pub fn is_live(&self) -> bool {
        self.removed_at.is_none()
    }

    /// The inputs of its status.
    pub fn liveness(&self) -> crate::domain::Liveness {
        crate::domain::Liveness {
            removed: self.removed_at.is_some(),
            paused: self.paused_at.is_some(),
            error_rate: self.report.error_rate,
            last_heartbeat_at: self.last_heartbeat_at,
        }
    }
}

impl Workspace {
    /// Its place in the workspace tree, for the communication rule.
    pub fn node(&self) -> crate::domain::team::Node {
        crate::domain::team::Node {
            id: self.id,
            parent_id: self.parent_id,
        }
    }
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
    /// Parent; must be a live workspace.
    pub parent_id: Option<WorkspaceId>,
    /// Resource tier (already defaulted).
    pub tier: Tier,
    /// Runtime (already defaulted).
    pub runtime: String,
    /// Model (already defaulted).
    pub model: String,
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
    /// New parent; `Some(None)` makes it a root.
    pub parent_id: Option<Option<WorkspaceId>>,
    /// New fold state.
    pub collapsed: Option<bool>,
    /// New tier.
    pub tier: Option<Tier>,
    /// New runtime.
    pub runtime: Option<String>,
    /// New model.
    pub model: Option<String>,
}

/// How a soft delete ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Removal {
    /// No live workspace with that id.
    NotFound,
    /// It has this many live children and no cascade was asked for.
    HasLiveChildren(i64),
    /// These workspaces (the one asked for first, then its live
    /// descendants), each with its parent, are removed and their tokens
    /// revoked.
    Removed(Vec<(WorkspaceId, Option<WorkspaceId>)>),
}

/// One node of an org import, flattened in pre-order: a node's parent
/// always comes before it.
#[derive(Debug, Clone)]
pub struct ImportNode {
    /// Index of the parent node in the plan; `None` for a template root.
    pub parent: Option<usize>,
    /// The workspace to create when no live `(parent, name)` exists; its
    /// `parent_id` is filled in by the import.
    pub workspace: NewWorkspace,
    /// Id to use if created.
    pub id: WorkspaceId,
    /// First token to insert if created.
    pub token: TokenHash,
}

/// What the import did with one node.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedNode {
    /// The workspace (the existing one when skipped).
    pub id: WorkspaceId,
    /// Its parent.
    pub parent_id: Option<WorkspaceId>,
    /// True when created by this import, false when it already existed.
    pub created: bool,
}

/// How a registration ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// The workspace was updated and marked online (boxed: a workspace
    /// row is large next to the other outcomes).
    Done(Box<Workspace>),
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

/// A delegation ledger row.
#[derive(Debug, Clone, PartialEq)]
pub struct Delegation {
    /// Its id.
    pub id: DelegationId,
    /// Who delegated.
    pub caller: Caller,
    /// Who is asked to do it.
    pub callee_id: WorkspaceId,
    /// The first characters of the task.
    pub task_preview: String,
    /// The whole task.
    pub task: String,
    /// The caller's key for exactly-once creation.
    pub idempotency_key: String,
    /// Where it is.
    pub status: DelegationStatus,
    /// The start of the callee's answer.
    pub result_preview: Option<String>,
    /// Why it failed or stalled.
    pub error_detail: Option<String>,
    /// Past this, the sweeper fails it.
    pub deadline_at: Option<DateTime<Utc>>,
    /// The callee's last report or heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it became completed or failed.
    pub completed_at: Option<DateTime<Utc>>,
}

impl Delegation {
    /// The `delegation_result` row a workspace caller receives when the
    /// delegation ends.
    pub fn result_activity(&self) -> NewActivity {
        let status = self.status.as_str();
        NewActivity {
            activity_type: "a2a_receive".into(),
            method: Some("delegation_result".into()),
            source_id: Some(self.callee_id.to_string()),
            target_id: Some(self.caller.to_string()),
            summary: Some(format!("delegation {status}: {}", self.task_preview)),
            status: Some(status.into()),
            error_detail: self.error_detail.clone(),
            data: Some(serde_json::json!({
                "delegation_id": self.id,
                "status": status,
                "result_preview": self.result_preview,
                "error_detail": self.error_detail,
            })),
            ..NewActivity::default()
        }
    }
}

/// A delegation to create.
#[derive(Debug, Clone)]
pub struct NewDelegation {
    /// Server-chosen id.
    pub id: DelegationId,
    /// Who delegates.
    pub caller: Caller,
    /// To whom.
    pub callee_id: WorkspaceId,
    /// The task (non-empty).
    pub task: String,
    /// Exactly once per caller and key.
    pub idempotency_key: String,
    /// Optional deadline.
    pub deadline_at: Option<DateTime<Utc>>,
}

/// How a create ended.
// One value per request, moved once and never kept in bulk: boxing the
// row would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Delegated {
    /// A new row, and the callee's inbox row written with it.
    Created {
        /// The ledger row.
        delegation: Delegation,
        /// The callee's inbox row.
        inbox: Activity,
    },
    /// The caller used this key before: that row, nothing written.
    Existing(Delegation),
}

/// A callee's status report.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// The status reported.
    pub status: DelegationStatus,
    /// The start of the answer, if any.
    pub result_preview: Option<String>,
    /// The error, if any.
    pub error_detail: Option<String>,
}

/// A move the ledger made (or a repeat it absorbed).
#[derive(Debug, Clone, PartialEq)]
pub struct Transitioned {
    /// The row after the move.
    pub delegation: Delegation,
    /// The status before (equal to the new one for a repeat).
    pub from: DelegationStatus,
    /// The caller's `delegation_result` row, written in the same
    /// transaction when the row reached completed or failed.
    pub result_row: Option<Activity>,
}

/// How a status report ended.
// One value per request, moved once and never kept in bulk: boxing the
// row would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    /// Applied (or absorbed as a repeat).
    Applied(Transitioned),
    /// A backwards move.
    Refused(Refused),
    /// No such delegation for this callee.
    NotFound,
}

/// How a heartbeat ended.
// One value per request, moved once and never kept in bulk: boxing the
// row would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum BeatOutcome {
    /// Stamped.
    Beat(Delegation),
    /// The delegation is over; nothing to keep alive.
    Over(DelegationStatus),
    /// No such delegation for this callee.
    NotFound,
}

/// Which side of a delegation a workspace is on, in a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartyRole {
    /// It delegated.
    Caller,
    /// It was asked.
    Callee,
    /// Either.
    Either,
}

/// Which delegations to list (newest first).
#[derive(Debug, Clone)]
pub struct DelegationFilter {
    /// Only those of this workspace, on this side.
    pub party: Option<(WorkspaceId, PartyRole)>,
    /// Only those in this status.
    pub status: Option<DelegationStatus>,
    /// At most this many.
    pub limit: i64,
}

/// Figures over the ledger, for `/admin/delegations/stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DelegationStats {
    /// Rows per status (statuses with none are absent).
    pub counts: Vec<(DelegationStatus, i64)>,
    /// Creation time of the oldest row not yet completed or failed.
    pub oldest_in_flight_at: Option<DateTime<Utc>>,
    /// Created → completed, in seconds, of the rows completed since the
    /// window start, ascending.
    pub completion_seconds: Vec<f64>,
}

/// Whose secret: every workspace's (global) or one workspace's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretScope {
    /// Inherited by every workspace.
    Global,
    /// One workspace's own.
    Workspace(WorkspaceId),
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretMeta {
    /// Its key.
    pub name: SecretName,
    /// Last set.
    pub updated_at: DateTime<Utc>,
}

/// A secret as stored: sealed (nonce, ciphertext and tag), never plaintext.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedSecret {
    /// Global or the workspace's own.
    pub scope: SecretScope,
    /// Its key.
    pub name: SecretName,
    /// Nonce || ciphertext || tag.
    pub sealed: Vec<u8>,
}

/// A published plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    /// Its name.
    pub name: PluginName,
    /// Where the tarball is.
    pub blob_key: String,
    /// Size in bytes.
    pub size: i64,
    /// Hex SHA-256 of the tarball.
    pub sha256: String,
    /// First published.
    pub created_at: DateTime<Utc>,
    /// Last published.
    pub updated_at: DateTime<Utc>,
}

/// A plugin a workspace reports it installed.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInstall {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The plugin's name.
    pub name: PluginName,
    /// Where it came from, as the agent says.
    pub source: String,
    /// Last install.
    pub installed_at: DateTime<Utc>,
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

    /// Inserts a workspace and its first token in one transaction; the
    /// parent, if any, must be live ([`StoreError::UnknownParent`]).
    async fn create_workspace(
        &self,
        id: WorkspaceId,
        new: &NewWorkspace,
        token: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Workspace>;
    /// One workspace, removed ones included (check [`Workspace::is_live`]).
    async fn get_workspace(&self, id: WorkspaceId) -> StoreResult<Option<Workspace>>;
    /// Every live (not removed) workspace, oldest first.
    async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>>;
    /// Applies changes to a live workspace; `None` when there is none. A
    /// new parent must be live and not the workspace or a descendant
    /// ([`StoreError::UnknownParent`], [`StoreError::Cycle`]).
    async fn update_workspace(
        &self,
        id: WorkspaceId,
        update: &UpdateWorkspace,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Workspace>>;
    /// Soft-deletes a live workspace (with its live subtree when
    /// `cascade`): stamps `removed_at`, revokes every token, in one
    /// transaction.
    async fn remove_workspace(
        &self,
        id: WorkspaceId,
        cascade: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Removal>;
    /// Ids of the live children of a workspace, oldest first.
    async fn child_ids(&self, id: WorkspaceId) -> StoreResult<Vec<WorkspaceId>>;
    /// Pauses (`true`) or resumes a live workspace; `None` when there is
    /// no live workspace with that id.
    async fn set_paused(
        &self,
        id: WorkspaceId,
        paused: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Workspace>>;
    /// Records a restart request: resets `active_tasks` and inserts the
    /// activity row the agent sees, in one transaction; `None` when there
    /// is no live workspace with that id.
    async fn request_restart(
        &self,
        id: WorkspaceId,
        row: &NewActivity,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Workspace, Activity)>>;
    /// Imports a team tree in one transaction, serialized against every
    /// other import and tree change: a node whose `(parent, name)` exists
    /// among live workspaces (NULL parents equal) is skipped, the others
    /// are inserted with their token. With `dry_run` the transaction is
    /// rolled back, so the answer is the same and nothing is written.
    async fn import_org(
        &self,
        nodes: &[ImportNode],
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ImportedNode>>;
    /// The removed workspace a (revoked) token belonged to: lets the state
    /// route tell an agent its workspace was deleted.
    async fn removed_workspace_for_token(
        &self,
        token: TokenHash,
    ) -> StoreResult<Option<WorkspaceId>>;
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
    /// Stamps `last_heartbeat_at` of a live workspace and stores what the
    /// heartbeat reported (fields left out keep their value); false when
    /// absent.
    async fn heartbeat(
        &self,
        id: WorkspaceId,
        report: &HeartbeatReport,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records that the workspace's own inbox poll handed it every row up
    /// to `through`; only ever raises the mark.
    async fn mark_inbox_picked_up(&self, id: WorkspaceId, through: i64) -> StoreResult<()>;

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

    /// Inserts every upload row with its activity row in ONE transaction:
    /// all of them or none. Concurrent calls may share that transaction
    /// (group commit), never a failure: a call that fails wrote nothing,
    /// whatever the others did. Not cancel-safe: run it to completion.
    async fn stage_uploads(
        &self,
        workspace_id: WorkspaceId,
        files: Vec<(NewPendingUpload, NewActivity)>,
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
    async fn mark_pending_upload_fetched(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PendingUpload>>;
    /// The same file as [`Store::mark_pending_upload_fetched`] finds, without
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

    // --- secrets ---

    /// Stores `candidate` as the key check value unless one is stored, and
    /// returns the stored one (the first server start writes it).
    async fn secrets_key_check(&self, candidate: &[u8], now: DateTime<Utc>)
        -> StoreResult<Vec<u8>>;
    /// Sets a secret (insert or replace); false when the workspace of a
    /// workspace scope does not exist.
    async fn put_secret(
        &self,
        scope: SecretScope,
        name: &SecretName,
        sealed: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Deletes a secret; false when absent.
    async fn delete_secret(&self, scope: SecretScope, name: &SecretName) -> StoreResult<bool>;
    /// The keys of one scope, by name.
    async fn list_secrets(&self, scope: SecretScope) -> StoreResult<Vec<SecretMeta>>;
    /// Every global secret and every secret of the workspace, sealed.
    async fn sealed_secrets(&self, workspace_id: WorkspaceId) -> StoreResult<Vec<SealedSecret>>;

    // --- plugins ---

    /// Inserts or replaces a plugin; returns the blob key it replaced.
    async fn put_plugin(
        &self,
        name: &PluginName,
        blob_key: &str,
        size: i64,
        sha256: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<String>>;
    /// One plugin.
    async fn get_plugin(&self, name: &PluginName) -> StoreResult<Option<Plugin>>;
    /// Every plugin, by name.
    async fn list_plugins(&self) -> StoreResult<Vec<Plugin>>;
    /// Deletes a plugin and returns its blob key; `None` when absent.
    async fn delete_plugin(&self, name: &PluginName) -> StoreResult<Option<String>>;
    /// Records (or refreshes) an install; `None` when the workspace is absent.
    async fn record_plugin_install(
        &self,
        workspace_id: WorkspaceId,
        name: &PluginName,
        source: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PluginInstall>>;
    /// A workspace's installs, by name.
    async fn list_plugin_installs(
        &self,
        workspace_id: WorkspaceId,
    ) -> StoreResult<Vec<PluginInstall>>;

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
    /// Resets `active_tasks` to 0 on live workspaces claiming work whose
    /// last heartbeat is older than `stale_before` (phantom busy); returns
    /// their ids.
    async fn reset_phantom_busy(
        &self,
        stale_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<WorkspaceId>>;
    /// Deletes up to `limit` workspaces removed before `removed_before`
    /// (with their tokens) and returns how many.
    async fn purge_removed(&self, removed_before: DateTime<Utc>, limit: i64) -> StoreResult<u64>;
    /// Which of `keys` some `pending_uploads` or `plugins` row still
    /// references (the orphan reaper keeps those).
    async fn referenced_blob_keys(&self, keys: &[String]) -> StoreResult<Vec<String>>;

    // --- the delegation ledger ---

    /// Inserts the ledger row and the callee's inbox row in ONE
    /// transaction, unless the caller used this idempotency key before:
    /// then the earlier row is returned and nothing is written, even when
    /// identical requests race (the UNIQUE constraint decides).
    async fn create_delegation(
        &self,
        new: &NewDelegation,
        inbox: &NewActivity,
        now: DateTime<Utc>,
    ) -> StoreResult<Delegated>;
    /// Applies a callee's report through the status machine; on reaching
    /// completed or failed, a workspace caller's `delegation_result` row is
    /// written in the same transaction. Stamps `last_heartbeat_at`.
    async fn report_delegation(
        &self,
        callee: WorkspaceId,
        id: DelegationId,
        report: &StatusReport,
        now: DateTime<Utc>,
    ) -> StoreResult<ReportOutcome>;
    /// Stamps `last_heartbeat_at` of a delegation still in flight.
    async fn heartbeat_delegation(
        &self,
        callee: WorkspaceId,
        id: DelegationId,
        now: DateTime<Utc>,
    ) -> StoreResult<BeatOutcome>;
    /// One delegation.
    async fn get_delegation(&self, id: DelegationId) -> StoreResult<Option<Delegation>>;
    /// Delegations, newest first.
    async fn list_delegations(&self, filter: &DelegationFilter) -> StoreResult<Vec<Delegation>>;
    /// Counts per status, the oldest in-flight row, and completion times
    /// of the rows completed since `since`.
    async fn delegation_stats(&self, since: DateTime<Utc>) -> StoreResult<DelegationStats>;
    /// The sweeper's pass over up to `limit` rows in flight: past their
    /// deadline at `now` → failed (`deadline exceeded`, with the caller's
    /// result row); dispatched / in progress without a sign of life since
    /// `silent_before` → stuck (`no heartbeat for <N>s`).
    async fn sweep_delegations(
        &self,
        now: DateTime<Utc>,
        silent_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<Transitioned>>;
    /// Deletes up to `limit` completed or failed rows that ended before
    /// `before`; returns how many.
    async fn purge_delegations(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64>;

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
    /// Ids of every readable memory with a vector of `model`: the
    /// candidate set of the vector half of recall.
    async fn memory_vector_ids(
        &self,
        filter: &MemoryFilter,
        model: &str,
    ) -> StoreResult<Vec<MemoryId>>;
    /// The stored vectors of these memories (any order; absent ones and
    /// ones without a vector skipped). No readable filter: callers pass
    /// ids [`Store::memory_vector_ids`] returned.
    async fn memory_vectors(&self, ids: &[MemoryId]) -> StoreResult<Vec<(MemoryId, Vec<u8>)>>;
    /// The memories with these ids (any order; absent ones skipped).
    async fn get_memories(&self, ids: &[MemoryId]) -> StoreResult<Vec<Memory>>;
    /// Deletes a memory (only if `owner` owns it, when given); false when
    /// nothing was deleted.
    async fn delete_memory(&self, id: MemoryId, owner: Option<WorkspaceId>) -> StoreResult<bool>;
    /// Up to `limit` memories without a vector, oldest first: the back-fill.
    async fn memories_without_embedding(&self, limit: i64) -> StoreResult<Vec<(MemoryId, String)>>;
    /// Stores a memory's vector when it has none; false when the memory is
    /// gone or already has one. A stored vector never changes, which is
    /// what lets recall cache decoded vectors by id.
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
