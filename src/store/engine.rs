//! The named engine interface: everything SQLite and PostgreSQL do
//! differently in meaning, as one small trait each engine implements in its
//! own file (`sqlite.rs`, `postgres.rs`), and the [`engines!`] macro that
//! stamps an area's queries onto both engines.
//!
//! Every area of the store (`workspaces.rs`, `uploads.rs`, …) writes its
//! queries once, inside `engines! { … }`, against the type alias `DB`; the
//! macro expands that text twice, with `DB = Sqlite` and `DB = Postgres`,
//! so each copy is type-checked against a concrete engine and an error
//! points at the line in the area's own file. What the text needs from the
//! engine it names as `DB::…`, an item of [`Engine`]; nothing else may
//! differ between the two.

use chrono::{DateTime, Utc};

use super::sql::SqlStore;
use super::{Notifier, StoreResult, SweepLock};
use crate::domain::memory::SearchTerms;
use crate::domain::{FileId, WorkspaceId};

/// A row the upload sweep deleted, as both engines' sweeps return it.
#[derive(sqlx::FromRow)]
pub(super) struct SweptRow {
    pub(super) file_id: FileId,
    pub(super) workspace_id: WorkspaceId,
    pub(super) blob_key: String,
    pub(super) was_acked: bool,
}

/// What an SQL engine does its own way. Implemented by `sqlx::Sqlite` and
/// `sqlx::Postgres`; only called from code [`engines!`] stamped for one
/// concrete engine, so its futures are checked for `Send` there.
pub(super) trait Engine: sqlx::Database + Sized {
    /// `sqlite` or `postgres`, as [`super::DatabaseStore::engine`] answers.
    const ENGINE: &'static str;
    /// Appended to a `SELECT` that checks a row the transaction then
    /// changes: the row lock that makes the two atomic.
    const ROW_LOCK: &'static str;
    /// Appended to a sweep's `SELECT`: claims rows so concurrent sweepers
    /// take disjoint batches.
    const SKIP_LOCKED: &'static str;
    /// Whether one group commit of staged uploads may span workspaces.
    const GROUP_ACROSS_WORKSPACES: bool;
    /// How many write transactions of one kind (the scheduler's batches)
    /// are worth running at once: more only queue on a single writer.
    const WRITERS_AT_ONCE: usize;
    /// Rows one upload sweep batch asks for.
    const UPLOAD_SWEEP_BATCH: i64;
    /// A subquery listing the ids of the JSON array of text ids bound as `$1`.
    const ID_LIST_1: &'static str;
    /// The same for `$3`.
    const ID_LIST_3: &'static str;
    /// An aggregate of `m.id` over the rows of a statement as one text,
    /// the ids separated by commas (NULL over no rows): a long id list
    /// travels as one value, not one row each.
    const CONCAT_IDS: &'static str;

    /// Full-text candidates of memories: ids, best first, filtered by
    /// `readable` in the same statement; the query is bound as `$6`, the
    /// limit as `$7`.
    fn fts_sql(readable: &str) -> String;
    /// The search terms as this engine's full-text query text.
    fn fts_query(terms: &SearchTerms) -> String;
    /// True when memory `x` matches the full-text query bound as `$2`
    /// ([`SearchTerms::all_of_query`]), answered by the engine's index.
    const MEMORY_MATCHES_2: &'static str;

    /// Applies the engine's embedded migrations.
    async fn migrate(store: &SqlStore<Self>) -> StoreResult<()>;
    /// The right to run a sweep pass, `None` while another replica has it.
    async fn try_sweep_lock(store: &SqlStore<Self>) -> StoreResult<Option<SweepLock>>;
    /// Cross-replica events, when the engine carries them.
    fn notifier(store: &SqlStore<Self>) -> Option<Notifier>;
    /// Serializes changes of the team tree until the transaction ends.
    async fn lock_tree(conn: &mut Self::Connection) -> StoreResult<()>;
    /// Orders activity ids of one workspace until the transaction ends.
    async fn lock_activity_ids(
        conn: &mut Self::Connection,
        workspace_id: WorkspaceId,
    ) -> StoreResult<()>;
    /// The same for several workspaces, taken in the order given (callers
    /// pass them sorted, so two such transactions cannot deadlock).
    async fn lock_activity_ids_of(
        conn: &mut Self::Connection,
        workspace_ids: &[WorkspaceId],
    ) -> StoreResult<()>;
    /// Deletes one batch of acked-and-retained-long-enough and expired
    /// uploads, returning what it deleted.
    async fn sweep_uploads(
        store: &SqlStore<Self>,
        now: DateTime<Utc>,
        acked_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SweptRow>>;
    /// Deletes one batch of activity rows older than `cutoff`, moving each
    /// workspace's swept-through mark.
    async fn sweep_activity(
        store: &SqlStore<Self>,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<u64>;
    /// Which of `keys` a row (upload or plugin) still names.
    async fn referenced_blob_keys(
        store: &SqlStore<Self>,
        keys: &[String],
    ) -> StoreResult<Vec<String>>;
}

/// Writes the items given once for each engine: inside, `DB` is
/// `sqlx::Sqlite` in the first copy and `sqlx::Postgres` in the second.
/// Use it for `impl SqlStore<DB> { … }` helpers and `impl AreaStore for
/// SqlStore<DB> { … }`; the engine's own items are `DB::…` ([`Engine`]).
macro_rules! engines {
    ($($item:item)*) => {
        const _: () = {
            type DB = sqlx::Sqlite;
            $($item)*
        };
        const _: () = {
            type DB = sqlx::Postgres;
            $($item)*
        };
    };
}

/// A query over the subtree of the workspace bound as `$1` (itself
/// included, removed ones too): the literal given follows the CTE
/// `sub(id, depth)`, which walks child links down, bounded so that a
/// corrupt (cyclic) tree cannot recurse forever. One walk for every area
/// that reads a team's rows (search, usage, instructions).
macro_rules! over_subtree {
    ($rest:literal) => {
        concat!(
            "WITH RECURSIVE sub(id, depth) AS ( \
               SELECT id, 0 FROM workspaces WHERE id = $1 \
               UNION ALL \
               SELECT w.id, sub.depth + 1 FROM workspaces w \
               JOIN sub ON w.parent_id = sub.id WHERE sub.depth < 10000) ",
            $rest
        )
    };
}
