//! Agent memory: facts with a scope (LOCAL, TEAM, GLOBAL), read only through
//! the one readable filter, searched by full text and by vector.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;

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

/// One memory queued for the group commit of memory commits: on an engine
/// with one writer at a time (SQLite), concurrent
/// [`MemoryStore::insert_memory`] calls share one transaction, so one
/// durable commit (one WAL fsync) covers every memory that queued while
/// the previous commit ran; PostgreSQL commits each on its own, side by
/// side. If the shared transaction fails,
/// each memory is retried in a transaction of its own, so a refused one
/// fails alone. See [`GroupCommit`] for the leader rule and why callers
/// must not be cancelled (the route commits in a task of its own).
#[doc(hidden)]
pub struct MemoryJob {
    new: NewMemory,
    answer: tokio::sync::oneshot::Sender<StoreResult<Memory>>,
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

/// Agent memory. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait MemoryStore: Send + Sync {
    /// Inserts one memory.
    async fn insert_memory(&self, new: &NewMemory) -> StoreResult<Memory>;

    /// Readable memories, newest first; with `before`, only those listed
    /// after that memory (the last of the previous page).
    async fn list_memories(
        &self,
        filter: &MemoryFilter,
        before: Option<MemoryId>,
        limit: i64,
    ) -> StoreResult<Vec<Memory>>;

    /// How many memories `filter` reads: a listing's total.
    async fn count_memories(&self, filter: &MemoryFilter) -> StoreResult<i64>;

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
}

/// The memory `new` is once committed.
fn stored_memory(new: &NewMemory) -> Memory {
    Memory {
        id: new.id,
        workspace_id: new.workspace_id,
        scope: new.scope,
        namespace: new.namespace.clone(),
        content: new.content.clone(),
        embedded: new.embedding.is_some(),
        created_at: new.created_at,
    }
}

engines! {
    impl SqlStore<DB> {
        /// Commits queued memories in one transaction (see
        /// [`GroupCommit`]); if it fails, each in its own, so only the
        /// refused one fails. Answers each job.
        pub(super) async fn commit_memories(&self, jobs: Vec<MemoryJob>) {
            if jobs.len() > 1 {
                let news: Vec<&NewMemory> = jobs.iter().map(|j| &j.new).collect();
                if self.insert_memories(&news).await.is_ok() {
                    for job in jobs {
                        let _ = job.answer.send(Ok(stored_memory(&job.new)));
                    }
                    return;
                }
            }
            for job in jobs {
                let answer = self
                    .insert_memories(&[&job.new])
                    .await
                    .map(|()| stored_memory(&job.new));
                let _ = job.answer.send(answer);
            }
        }

        /// Inserts every memory of `news` in ONE transaction.
        async fn insert_memories(&self, news: &[&NewMemory]) -> StoreResult<()> {
            self.memory_commits.count_transaction();
            let mut tx = self.write_tx().await?;
            for new in news {
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
            }
            tx.commit().await
        }
    }

    #[async_trait]
    impl MemoryStore for SqlStore<DB> {
        async fn insert_memory(&self, new: &NewMemory) -> StoreResult<Memory> {
            if DB::WRITERS_AT_ONCE > 1 {
                // Writers commit side by side (PostgreSQL): queueing them
                // behind one leader would only serialise them.
                return self.insert_memories(&[new]).await.map(|()| stored_memory(new));
            }
            let (answer, answered) = tokio::sync::oneshot::channel();
            let job = MemoryJob {
                new: new.clone(),
                answer,
            };
            self.memory_commits
                .submit(job, |jobs| self.commit_memories(jobs))
                .await;
            answered.await.unwrap_or(Err(StoreError::Interrupted))
        }

        async fn list_memories(
            &self,
            filter: &MemoryFilter,
            before: Option<MemoryId>,
            limit: i64,
        ) -> StoreResult<Vec<Memory>> {
            let f = FilterBinds::new(filter);
            // The cursor's place in the order (created_at, seq); a cursor
            // naming no memory lists nothing (the route checks it first).
            let sql = format!(
                "SELECT {MEMORY_COLUMNS} FROM memories m WHERE {} \
                   AND ($7 IS NULL OR EXISTS (SELECT 1 FROM memories c WHERE c.id = $7 \
                     AND (m.created_at < c.created_at \
                       OR (m.created_at = c.created_at AND m.seq < c.seq)))) \
                 ORDER BY m.created_at DESC, m.seq DESC LIMIT $6",
                readable(DB::ID_LIST_3)
            );
            let rows: Vec<MemoryRow> = bind_filter!(sqlx::query_as(&sql), f)
                .bind(limit)
                .bind(before)
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn count_memories(&self, filter: &MemoryFilter) -> StoreResult<i64> {
            let f = FilterBinds::new(filter);
            let sql = format!(
                "SELECT count(*) FROM memories m WHERE {}",
                readable(DB::ID_LIST_3)
            );
            let n: i64 = bind_filter!(sqlx::query_scalar(&sql), f)
                .fetch_one(&self.pool)
                .await?;
            Ok(n)
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
            let sql = DB::fts_sql(&readable(DB::ID_LIST_3));
            Ok(bind_filter!(sqlx::query_scalar(&sql), f)
                .bind(DB::fts_query(terms))
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
            // One row carrying every id: tens of thousands of rows one at
            // a time cost more than the statement itself.
            let sql = format!(
                "SELECT {} FROM memories m \
                 WHERE m.embedding IS NOT NULL AND m.embedding_model = $6 AND {}",
                DB::CONCAT_IDS,
                readable(DB::ID_LIST_3)
            );
            let ids: Option<String> = bind_filter!(sqlx::query_scalar(&sql), f)
                .bind(model)
                .fetch_one(&self.pool)
                .await?;
            ids.as_deref()
                .unwrap_or_default()
                .split(',')
                .filter(|id| !id.is_empty())
                .map(|id| {
                    id.parse()
                        .map_err(|_| StoreError::Corrupt(format!("a memory id that is no uuid: {id}")))
                })
                .collect()
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
                DB::ID_LIST_1
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
                DB::ID_LIST_1
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
            let mut tx = self.write_tx().await?;
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
            let mut tx = self.write_tx().await?;
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
    }
}
