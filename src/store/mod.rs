//! The metadata seam: workspaces, tokens, the activity log, staged uploads,
//! the delegation ledger, agent memory, and one area per feature.
//!
//! One [`Store`] trait, two real engines chosen by the URL scheme: SQLite
//! (the embedded default) and PostgreSQL (production, several replicas).
//! Every method is one statement or one transaction. The contract test
//! suite in `tests/api/store_contract.rs` runs against both engines.
//!
//! # Where things live
//!
//! - `mod.rs` (here): [`Store`], the supertrait of every area's trait plus
//!   what concerns the database as a whole; [`StoreError`]; [`connect`].
//! - One file per area (`workspaces.rs`, `registry.rs`, `tokens.rs`,
//!   `activity.rs`, `uploads.rs`, `delegations.rs`, `memory.rs`, `kv.rs`,
//!   `secrets.rs`, `plugins.rs`, `blobs.rs`, `schedules.rs`, `approvals.rs`, `instructions.rs`,
//!   `a2a_push.rs`, `mcp_tasks.rs`, `audit.rs`, `usage.rs`, `traces.rs`, `search.rs`,
//!   `reads.rs`): the area's row types, its
//!   trait (`WorkspaceStore`, `UploadStore`, …) and its queries, written
//!   ONCE for both engines inside `engines! { … }`.
//! - `engine.rs`: the named [`Engine`](engine::Engine) trait — the few
//!   things the engines do differently in meaning — and the `engines!`
//!   macro that stamps an area's queries onto `SqlStore<Sqlite>` and
//!   `SqlStore<Postgres>`.
//! - `sql.rs`: [`SqlStore<DB>`], its write transaction (`write_tx`), and
//!   the timestamp encoding [`Ts`](sql::Ts).
//! - `sqlite.rs` / `postgres.rs`: each engine's `Engine` implementation and
//!   how it encodes our types (sqlx `Type/Encode/Decode` for the id types
//!   and `Ts`: text and integer microseconds on SQLite, `uuid` and
//!   `timestamptz` on PostgreSQL), connecting, migrations; and on
//!   PostgreSQL the mechanisms replicas share (the sweep's advisory lock as
//!   a [`SweepLock`], `LISTEN/NOTIFY` as a [`Notifier`]).
//!
//! # How to add a query (or an area)
//!
//! 1. Declare the method on the area's trait with a `///` contract (a new
//!    area: a new file with its trait, added to [`Store`]'s supertraits,
//!    to `prelude` and to the `mod`/`pub use` lists below).
//! 2. Write it once in the area's `engines! { impl … for SqlStore<DB> }`:
//!    `$1, $2…` placeholders, bind ids as the domain types (`WorkspaceId`,
//!    `FileId`), times as `Ts(t)`, JSON as `Json(&v)`; read rows into a
//!    `#[derive(sqlx::FromRow)]` struct made of those types. Portable SQL
//!    only: `CAST(x AS TEXT)`, not `x::text`; `FILTER`, `RETURNING`,
//!    `COALESCE` work on both.
//! 3. A write runs in `let mut tx = self.write_tx().await?;` (SQLite's
//!    one-writer lock, then `BEGIN`) and ends with `tx.commit().await?`,
//!    so nothing is answered before it is durable.
//! 4. Only when the engines must differ in meaning (locking, claiming,
//!    arrays) add an item to [`Engine`](engine::Engine), write it in both
//!    engine files, each saying why, and call it as `DB::item`.
//! 5. Add a case to the contract suite; it runs on both engines.
//!
//! A new table needs a migration per engine; store timestamps as integer
//! microseconds on SQLite and `timestamptz` on PostgreSQL, ids as text and
//! `uuid`, so the existing encodings apply unchanged.

#[macro_use]
mod engine;
mod fire_batch;
mod postgres;
mod reach_cache;
mod sql;
mod sqlite;

/// Declares the store's areas once: each `module: Trait` pair is a file of
/// this folder whose public items are re-exported here, whose trait is a
/// supertrait of [`Store`], and which [`prelude`] imports. A new area is
/// one line in the `areas!` list below.
macro_rules! areas {
    ($($module:ident: $area:ident),* $(,)?) => {
        $(mod $module; pub use $module::*;)*

        /// The metadata store: every area's trait. Both engines implement
        /// each area (see the module docs); anything that implements all of
        /// them is a `Store`. Methods are called on `Arc<dyn Store>` with no
        /// import; on a concrete store, import [`prelude`].
        pub trait Store: $($area +)* Send + Sync + 'static {}

        impl<T: $($area +)* Send + Sync + 'static> Store for T {}

        /// Every area's trait, imported anonymously, for calling store
        /// methods on a concrete store: `use crate::store::prelude::*;`.
        pub mod prelude {
            pub use super::Store;
            $(pub use super::$area as _;)*
        }
    };
}

areas! {
    database: DatabaseStore,
    workspaces: WorkspaceStore,
    fleet: FleetStore,
    registry: RegistryStore,
    tokens: TokenStore,
    activity: ActivityStore,
    uploads: UploadStore,
    delegations: DelegationStore,
    ledger_stats: LedgerStatsStore,
    memory: MemoryStore,
    kv: KvStore,
    secrets: SecretStore,
    plugins: PluginStore,
    blobs: BlobChunkStore,
    schedules: ScheduleStore,
    a2a_tasks: A2aTaskStore,
    mcp_tasks: McpTaskStore,
    a2a_push: A2aPushStore,
    approvals: ApprovalStore,
    instructions: InstructionStore,
    audit: AuditStore,
    usage: UsageStore,
    traces: TraceStore,
    search: SearchStore,
    reads: ReadStore,
}

use std::sync::Arc;

use crate::domain::memory::{Reader, Scope, SearchTerms};
use crate::domain::{
    Caller, DelegationId, DelegationStatus, DeliveryMode, FileId, HeartbeatReport, MemoryId,
    PluginName, Refused, SecretName, Tier, TokenHash, TokenKey, WorkspaceId,
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
            // `Protocol`: bytes that are no PostgreSQL answer, which is
            // what a server that is stopping or starting sends a new
            // connection (e.g. `0x00` to the SSLRequest during a restart).
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
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

/// Held while a sweep pass runs; see [`DatabaseStore::try_sweep_lock`].
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
/// Opens the store a URL names (`sqlite://…` or `postgres://…`). Does not
/// migrate; call [`DatabaseStore::migrate`].
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
