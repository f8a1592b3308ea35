//! What only SQLite does: how it stores our types, how it connects, and the
//! few statements whose meaning differs from PostgreSQL's.
//!
//! SQLite runs one writer at a time anyway; the store makes that explicit
//! with an async write lock ([`SqlStore::writer`]), so transactions queue in
//! the process instead of failing with `SQLITE_BUSY`, and activity ids are
//! in commit order by construction. Ids are stored as text, timestamps as
//! integer microseconds (exact comparisons), JSON as text — the 0001 schema.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{
    SqliteArgumentValue, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
    SqliteSynchronous, SqliteTypeInfo, SqliteValueRef,
};
use sqlx::{Decode, Encode, Sqlite, SqliteConnection, Type};
use tokio::sync::Mutex;

use super::engine::{Engine, SweptRow};
use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::{
    ApprovalId, DelegationId, FileId, FireId, InstructionId, MemoryId, ScheduleId, TokenId,
    WorkspaceId,
};

/// The SQLite implementation of [`Store`].
pub type SqliteStore = SqlStore<Sqlite>;

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.0.timestamp_micros(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let micros = <i64 as Decode<Sqlite>>::decode(value)?;
        DateTime::from_timestamp_micros(micros)
            .map(Ts)
            .ok_or_else(|| format!("timestamp {micros} is out of range").into())
    }
}

/// The ids are stored as their canonical text.
macro_rules! id_as_text {
    ($($id:ty),*) => {$(
        impl Type<Sqlite> for $id {
            fn type_info() -> SqliteTypeInfo {
                <String as Type<Sqlite>>::type_info()
            }
            fn compatible(ty: &SqliteTypeInfo) -> bool {
                <String as Type<Sqlite>>::compatible(ty)
            }
        }

        impl<'q> Encode<'q, Sqlite> for $id {
            fn encode_by_ref(
                &self,
                buf: &mut Vec<SqliteArgumentValue<'q>>,
            ) -> Result<IsNull, BoxDynError> {
                <String as Encode<Sqlite>>::encode(self.to_string(), buf)
            }
        }

        impl<'r> Decode<'r, Sqlite> for $id {
            fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as Decode<Sqlite>>::decode(value)?.parse()?)
            }
        }
    )*};
}
id_as_text!(
    WorkspaceId,
    ApprovalId,
    InstructionId,
    TokenId,
    FileId,
    MemoryId,
    DelegationId,
    ScheduleId,
    FireId
);

impl SqlStore<Sqlite> {
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
            // A COMMIT that fails (disk full, I/O error) can leave SQLite's
            // transaction open on the connection while sqlx believes it
            // ended; the next writes on that connection would then be
            // answered as committed inside a transaction that never is.
            // Probe every returned connection with one `ROLLBACK`: on a
            // clean connection SQLite refuses it (no transaction is active),
            // which is the expected answer; if it succeeds, the connection
            // was still inside a transaction, and is closed (sqlx's own
            // idea of its transaction depth cannot be trusted after that).
            .after_release(|conn, _| {
                Box::pin(async move {
                    match sqlx::query("ROLLBACK").execute(&mut *conn).await {
                        Err(sqlx::Error::Database(e))
                            if e.message().contains("no transaction is active") =>
                        {
                            Ok(true)
                        }
                        Ok(_) => {
                            tracing::warn!("closing a SQLite connection left inside a transaction");
                            Ok(false)
                        }
                        // Anything else: the connection is not to be trusted.
                        Err(_) => Ok(false),
                    }
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            write: Some(Mutex::new(())),
            between_reads: Default::default(),
            staging: Default::default(),
            pickups: Default::default(),
            memory_commits: Default::default(),
            reach: Default::default(),
        })
    }
}

impl Engine for Sqlite {
    const ENGINE: &'static str = "sqlite";

    /// No row locks: the write lock every writer holds already makes a
    /// transaction atomic with its checks.
    const ROW_LOCK: &'static str = "";

    /// No row claiming either: the write lock runs one sweep at a time.
    const SKIP_LOCKED: &'static str = "";

    async fn migrate(store: &SqlStore<Self>) -> StoreResult<()> {
        sqlx::migrate!("migrations/sqlite").run(&store.pool).await?;
        Ok(())
    }

    /// One process owns the file: every sweep may run.
    async fn try_sweep_lock(_store: &SqlStore<Self>) -> StoreResult<Option<SweepLock>> {
        Ok(Some(SweepLock::local()))
    }

    /// Events stay in the process.
    fn notifier(_store: &SqlStore<Self>) -> Option<Notifier> {
        None
    }

    /// The write lock the caller holds already serializes every change
    /// of the team tree (imports, re-parenting, deletes).
    async fn lock_tree(_conn: &mut SqliteConnection) -> StoreResult<()> {
        Ok(())
    }

    /// One writer at a time anyway: a group commit spans workspaces.
    const GROUP_ACROSS_WORKSPACES: bool = true;

    /// The write lock admits one transaction at a time.
    const WRITERS_AT_ONCE: usize = 1;

    /// The sweep's batch holds the one writer: kept short so uploads
    /// waiting behind it are not stalled.
    const UPLOAD_SWEEP_BATCH: i64 = 500;

    /// The write lock the caller holds already orders activity ids.
    async fn lock_activity_ids(
        _conn: &mut SqliteConnection,
        _workspace_id: WorkspaceId,
    ) -> StoreResult<()> {
        Ok(())
    }

    async fn lock_activity_ids_of(
        _conn: &mut SqliteConnection,
        _workspace_ids: &[WorkspaceId],
    ) -> StoreResult<()> {
        Ok(())
    }

    /// One writer at a time: no row needs claiming, two subqueries pick
    /// the oldest of each kind.
    async fn sweep_uploads(
        store: &SqlStore<Self>,
        now: DateTime<Utc>,
        acked_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SweptRow>> {
        let mut tx = store.pool.begin().await?;
        let rows = sqlx::query_as(
            "DELETE FROM pending_uploads WHERE \
               file_id IN (SELECT file_id FROM pending_uploads \
                           WHERE acked_at IS NOT NULL AND acked_at < $2 ORDER BY acked_at LIMIT $3) \
               OR file_id IN (SELECT file_id FROM pending_uploads \
                           WHERE acked_at IS NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $3) \
             RETURNING file_id, workspace_id, blob_key, (acked_at IS NOT NULL) AS was_acked",
        )
        .bind(Ts(now))
        .bind(Ts(acked_before))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// SQLite has no data-modifying CTEs: the doomed ids go through a
    /// temporary table, in one transaction.
    async fn sweep_activity(
        store: &SqlStore<Self>,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<u64> {
        let mut tx = store.pool.begin().await?;
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS swept_activity \
             (id INTEGER PRIMARY KEY, workspace_id TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM swept_activity")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO swept_activity (id, workspace_id) \
             SELECT id, workspace_id FROM activity_logs WHERE created_at < $1 ORDER BY id LIMIT $2",
        )
        .bind(Ts(cutoff))
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

    /// SQLite has no arrays: the keys travel as one JSON array.
    async fn referenced_blob_keys(
        store: &SqlStore<Self>,
        keys: &[String],
    ) -> StoreResult<Vec<String>> {
        let list = serde_json::to_string(keys).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(sqlx::query_scalar(
            "SELECT blob_key FROM pending_uploads WHERE blob_key IN (SELECT value FROM json_each($1)) \
             UNION ALL SELECT blob_key FROM plugins WHERE blob_key IN (SELECT value FROM json_each($1))",
        )
        .bind(list)
        .fetch_all(&store.pool)
        .await?)
    }

    /// The TEAM owners of the readable filter, `$3`: SQLite has no arrays,
    /// so the ids travel as one JSON array of text ids.
    const ID_LIST_3: &'static str = "SELECT value FROM json_each($3)";
    /// Ids are text already.
    const CONCAT_IDS: &'static str = "group_concat(m.id, ',')";
    /// The same for `$1`.
    const ID_LIST_1: &'static str = "SELECT value FROM json_each($1)";
    /// The FTS5 index's matches, as the rowids (`seq`) it maps to.
    const MEMORY_MATCHES_2: &'static str =
        "x.seq IN (SELECT rowid FROM memories_fts WHERE memories_fts MATCH $2)";

    /// Full-text candidates from the FTS5 index, best `bm25` first, newest
    /// first among equal scores; the readable filter is in the same
    /// statement, before the ranking, so `bm25` is computed only for the
    /// matches the reader may read. (Ordering by FTS5's `rank` column
    /// instead makes FTS5 score every match before it hands over the
    /// first: 3.9 ms against 0.85 ms per query where a reader may read 20
    /// of 2,000 matches, and only 15–30 % faster for one tree of 100,000
    /// where it reads most of them; BENCHMARKS.md.)
    fn fts_sql(readable: &str) -> String {
        format!(
            "SELECT m.id FROM memories_fts JOIN memories m ON m.seq = memories_fts.rowid \
             WHERE memories_fts MATCH $6 AND {readable} \
             ORDER BY bm25(memories_fts), m.seq DESC LIMIT $7"
        )
    }

    /// Each term a quoted FTS5 string, OR-joined: never FTS5 syntax from
    /// the user.
    fn fts_query(terms: &crate::domain::memory::SearchTerms) -> String {
        terms.fts5_query()
    }
}
