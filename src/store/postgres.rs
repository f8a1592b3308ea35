//! What only PostgreSQL does: how it connects, the few statements whose
//! meaning differs from SQLite's, and the mechanisms several replicas
//! share — advisory locks, `LISTEN/NOTIFY`, `FOR UPDATE SKIP LOCKED`. Nothing
//! outside this file touches a `PgPool`: the sweeper takes a [`SweepLock`]
//! and the event bus a [`Notifier`].
//!
//! Ordering of activity ids relies on a per-workspace transaction-scoped
//! advisory lock taken before the id is drawn; sweeps claim rows with
//! `FOR UPDATE SKIP LOCKED` so concurrent sweepers never meet. The domain
//! ids and [`Ts`] use sqlx's own `uuid` and `timestamptz` encodings.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgListener, PgPoolOptions, PgTypeInfo, PgValueRef,
};
use sqlx::{Decode, Encode, PgConnection, PgPool, Postgres, Type};
use uuid::Uuid;

use super::engine::{Engine, SweptRow};
use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::{
    ApprovalId, DelegationId, FileId, FireId, InstructionId, MemoryId, ScheduleId, TokenId,
    WorkspaceId,
};

/// The PostgreSQL implementation of [`Store`].
pub type PostgresStore = SqlStore<Postgres>;

/// Advisory-lock class for per-workspace activity id assignment.
const ACTIVITY_LOCK_CLASS: i32 = 0x6d6f_6c01;
/// Advisory-lock class of the team tree (see `lock_tree`).
const TREE_LOCK_CLASS: i32 = 0x6d6f_6c02;

/// Session advisory lock held by the one replica running a sweep pass.
const SWEEP_LOCK_KEY: i64 = 0x6d6f_6c73_7765_6570;

/// How long a request waits for a pooled connection, connecting included.
/// Short: while the database is down every request waits this long before
/// its 503 (it was 10 s); long enough for a busy but healthy pool to hand a
/// connection over. A returning database is found by the next acquire, no
/// restart needed.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(2000);

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Ts(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
    }
}

/// The ids are stored as `uuid`.
macro_rules! id_as_uuid {
    ($($id:ident),*) => {$(
        impl Type<Postgres> for $id {
            fn type_info() -> PgTypeInfo {
                <Uuid as Type<Postgres>>::type_info()
            }
        }

        impl Encode<'_, Postgres> for $id {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $id {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok($id(<Uuid as Decode<Postgres>>::decode(value)?))
            }
        }
    )*};
}
id_as_uuid!(
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

fn workspace_lock_key(id: WorkspaceId) -> i32 {
    let b = id.0.as_bytes();
    i32::from_be_bytes([
        b[0] ^ b[4] ^ b[8] ^ b[12],
        b[1] ^ b[5] ^ b[9] ^ b[13],
        b[2] ^ b[6] ^ b[10] ^ b[14],
        b[3] ^ b[7] ^ b[11] ^ b[15],
    ])
}

impl SqlStore<Postgres> {
    /// Connects a pool to `url`.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            write: None,
            between_reads: Default::default(),
            staging: Default::default(),
            pickups: Default::default(),
            memory_commits: Default::default(),
            reach: Default::default(),
        })
    }
}

impl Engine for Postgres {
    const ENGINE: &'static str = "postgres";

    /// The row lock that makes a check and what follows it atomic.
    const ROW_LOCK: &'static str = " FOR UPDATE";

    /// Claims rows in a sweep batch: concurrent sweepers get disjoint rows
    /// instead of waiting on each other.
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    /// Takes the team-tree lock until the transaction ends: imports,
    /// re-parentings, soft deletes and creates under a parent run one at a
    /// time, so two concurrent imports cannot both miss a `(parent, name)`
    /// and create it twice, and two racing re-parentings cannot form a
    /// cycle.
    async fn lock_tree(conn: &mut PgConnection) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(TREE_LOCK_CLASS)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn migrate(store: &SqlStore<Self>) -> StoreResult<()> {
        sqlx::migrate!("migrations/postgres")
            .run(&store.pool)
            .await?;
        Ok(())
    }

    /// A session-level advisory lock on one detached connection, held for
    /// the whole pass; `None` when another replica holds it.
    async fn try_sweep_lock(store: &SqlStore<Self>) -> StoreResult<Option<SweepLock>> {
        let mut conn = store.pool.acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SWEEP_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if !got {
            let _ = sqlx::Connection::close(conn).await;
            return Ok(None);
        }
        Ok(Some(SweepLock(Some(PgSessionLock(conn)))))
    }

    /// `LISTEN/NOTIFY` over this pool.
    fn notifier(store: &SqlStore<Self>) -> Option<Notifier> {
        Some(Notifier {
            pool: store.pool.clone(),
        })
    }

    /// A group commit stays within one workspace: a transaction holding the
    /// activity-id locks of several workspaces could deadlock with another
    /// writer taking them in another order.
    const GROUP_ACROSS_WORKSPACES: bool = false;

    /// A batch of fires is about six statement round trips per fire, not
    /// server work: four at once (row claims with SKIP LOCKED, activity
    /// locks taken in one order) overlap those waits, and leave most of
    /// the pool of 20 to the requests the fires wake.
    const WRITERS_AT_ONCE: usize = 4;

    /// Deletes block no upload (new rows, other rows), so a batch is as
    /// large as keeps its statement short (≈ 50 ms for 5,000 rows): ten
    /// times fewer round trips and index descents than SQLite's 500.
    const UPLOAD_SWEEP_BATCH: i64 = 5_000;

    /// Serializes id assignment per workspace: the id is drawn only after
    /// the lock is held, and the lock is released at commit, so within one
    /// workspace ids become visible in the order they were handed out.
    async fn lock_activity_ids(
        conn: &mut PgConnection,
        workspace_id: WorkspaceId,
    ) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(ACTIVITY_LOCK_CLASS)
            .bind(workspace_lock_key(workspace_id))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// One statement: the function scan yields the keys in array order,
    /// and each row takes its lock as it is produced.
    async fn lock_activity_ids_of(
        conn: &mut PgConnection,
        workspace_ids: &[WorkspaceId],
    ) -> StoreResult<()> {
        let keys: Vec<i32> = workspace_ids
            .iter()
            .map(|id| workspace_lock_key(*id))
            .collect();
        sqlx::query(
            "SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int4[]) WITH ORDINALITY AS t(k, i)",
        )
        .bind(ACTIVITY_LOCK_CLASS)
        .bind(keys)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Each branch walks its own partial index; SKIP LOCKED hands
    /// concurrent sweepers disjoint rows instead of making them wait. The
    /// claimed rows are deleted by their `ctid` (a TID scan): a row locked
    /// by this statement cannot move, and a join on `file_id` made the
    /// planner hash the whole table once a batch passed a few thousand rows.
    async fn sweep_uploads(
        store: &SqlStore<Self>,
        now: DateTime<Utc>,
        acked_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SweptRow>> {
        Ok(sqlx::query_as(
            "WITH acked AS ( \
               SELECT ctid FROM pending_uploads \
               WHERE acked_at IS NOT NULL AND acked_at < $2 \
               ORDER BY acked_at LIMIT $3 FOR UPDATE SKIP LOCKED \
             ), expired AS ( \
               SELECT ctid FROM pending_uploads \
               WHERE acked_at IS NULL AND expires_at <= $1 \
               ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED \
             ) \
             DELETE FROM pending_uploads \
             WHERE ctid = ANY(ARRAY(SELECT ctid FROM acked UNION ALL SELECT ctid FROM expired)) \
             RETURNING file_id, workspace_id, blob_key, (acked_at IS NOT NULL) AS was_acked",
        )
        .bind(Ts(now))
        .bind(Ts(acked_before))
        .bind(limit)
        .fetch_all(&store.pool)
        .await?)
    }

    /// One statement: claim, delete, and raise each workspace's mark.
    async fn sweep_activity(
        store: &SqlStore<Self>,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<u64> {
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
        .bind(Ts(cutoff))
        .bind(limit)
        .fetch_one(&store.pool)
        .await?;
        Ok(deleted as u64)
    }

    async fn referenced_blob_keys(
        store: &SqlStore<Self>,
        keys: &[String],
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT blob_key FROM pending_uploads WHERE blob_key = ANY($1) \
                 UNION ALL SELECT blob_key FROM plugins WHERE blob_key = ANY($1)",
        )
        .bind(keys)
        .fetch_all(&store.pool)
        .await?)
    }

    /// The TEAM owners of the readable filter, `$3`, bound as one JSON
    /// array of text ids like on SQLite, so the query is written once.
    const ID_LIST_3: &'static str =
        "SELECT CAST(value AS uuid) FROM jsonb_array_elements_text(CAST($3 AS jsonb))";
    /// The uuids as text.
    const CONCAT_IDS: &'static str = "string_agg(CAST(m.id AS text), ',')";
    /// The same for `$1`.
    const ID_LIST_1: &'static str =
        "SELECT CAST(value AS uuid) FROM jsonb_array_elements_text(CAST($1 AS jsonb))";
    /// The generated `tsvector` (GIN index) against the query;
    /// `websearch_to_tsquery` never raises a syntax error.
    const MEMORY_MATCHES_2: &'static str = "x.content_tsv @@ websearch_to_tsquery('simple', $2)";

    /// Full-text candidates from the generated `tsvector` (GIN index),
    /// best `ts_rank_cd` first; the readable filter is in the same
    /// statement. `websearch_to_tsquery` never raises a syntax error.
    fn fts_sql(readable: &str) -> String {
        format!(
            "SELECT m.id FROM memories m, websearch_to_tsquery('simple', $6) q \
             WHERE m.content_tsv @@ q AND {readable} \
             ORDER BY ts_rank_cd(m.content_tsv, q) DESC, m.seq DESC LIMIT $7"
        )
    }

    /// Each term quoted, OR-joined, for `websearch_to_tsquery`.
    fn fts_query(terms: &crate::domain::memory::SearchTerms) -> String {
        terms.websearch_query()
    }
}

/// The connection holding the sweep's session advisory lock.
pub(super) struct PgSessionLock(PgConnection);

impl PgSessionLock {
    pub(super) async fn release(mut self) {
        // Closing the session releases the lock even if the unlock fails.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SWEEP_LOCK_KEY)
            .execute(&mut self.0)
            .await;
        let _ = sqlx::Connection::close(self.0).await;
    }
}

/// Cross-replica event delivery: `NOTIFY` to send, `LISTEN` to receive.
#[derive(Clone)]
pub struct Notifier {
    pool: PgPool,
}

impl Notifier {
    /// Sends every payload on `channel`, in one statement: a sweep of
    /// thousands of rows is not thousands of round trips (each NOTIFY also
    /// takes the cluster-wide notify lock at commit).
    pub async fn notify(&self, channel: &str, payloads: &[String]) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, e) FROM unnest($2::text[]) AS e")
            .bind(channel)
            .bind(payloads)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A dedicated connection listening on `channel`.
    pub async fn listen(&self, channel: &str) -> StoreResult<Listener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(channel).await?;
        Ok(Listener(listener))
    }
}

/// A connection receiving notifications; see [`Notifier::listen`].
pub struct Listener(PgListener);

impl Listener {
    /// The next notification's payload; an error means the connection was
    /// lost (listen again, and re-read: events may have been missed).
    pub async fn recv(&mut self) -> StoreResult<String> {
        Ok(self.0.recv().await?.payload().to_owned())
    }
}
