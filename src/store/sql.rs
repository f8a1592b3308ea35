//! The store over one sqlx engine: [`SqlStore<DB>`] for `Sqlite` and
//! `Postgres`, the write transaction every write runs in, the timestamp
//! type both engines encode their own way, and the test hooks. The queries
//! themselves live in the area files, stamped onto both engines by
//! `engines!` (see `engine.rs`); the [`Store`] methods that concern the
//! database as a whole are in `database.rs`.

use chrono::{DateTime, Utc};
use sqlx::{Database, Pool};
use tokio::sync::{Mutex, MutexGuard};

use super::*;

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
    pub(super) staging: GroupCommit<StageJob>,
    /// The group commit of inbox pickup marks; see [`GroupCommit`].
    pub(super) pickups: GroupCommit<PickupJob>,
    /// The group commit of memory commits; see [`GroupCommit`].
    pub(super) memory_commits: GroupCommit<MemoryJob>,
    /// The reach query's last answers; see [`super::reach_cache`].
    pub(super) reach: super::reach_cache::ReachCache,
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

    pub(super) async fn run(&self) {
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

    /// A write transaction: the engine's write lock (SQLite's one writer;
    /// nothing on PostgreSQL) taken first, then `BEGIN`. Every write of the
    /// store runs in one, and is answered only after [`WriteTx::commit`].
    pub(super) async fn write_tx(&self) -> StoreResult<WriteTx<'_, DB>> {
        let writer = self.writer().await;
        let tx = self.pool.begin().await?;
        Ok(WriteTx {
            tx,
            _writer: writer,
        })
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
    pub fn staging(&self) -> GroupCommit<StageJob> {
        self.staging.clone()
    }

    /// The group commit of inbox pickup marks (test hooks).
    #[doc(hidden)]
    pub fn pickups(&self) -> GroupCommit<PickupJob> {
        self.pickups.clone()
    }

    /// The group commit of memory commits (test hooks).
    #[doc(hidden)]
    pub fn memory_commits(&self) -> GroupCommit<MemoryJob> {
        self.memory_commits.clone()
    }
}

/// Group commit: concurrent calls of one kind of write share one
/// transaction, so one durable commit (one WAL fsync on SQLite, one round
/// of PostgreSQL's pool) covers every call that queued while the previous
/// commit ran.
///
/// Each call queues its job (which carries its own answer channel), then
/// waits for the leader lock. Whoever holds it takes every queued job,
/// commits them and answers each one before letting go, so a call that
/// gets the lock either finds its answer waiting or its job still queued;
/// there is no timer and no added wait when calls do not overlap. The
/// leader runs on the caller's task: callers must not be cancelled
/// mid-call, or the jobs it took are answered with
/// [`StoreError::Interrupted`] and written by no one.
#[doc(hidden)]
pub struct GroupCommit<J> {
    queue: Arc<std::sync::Mutex<Vec<J>>>,
    leader: Arc<Mutex<()>>,
    /// Transactions committed (or tried) for these jobs.
    transactions: Arc<std::sync::atomic::AtomicU64>,
}

impl<J> Default for GroupCommit<J> {
    fn default() -> Self {
        Self {
            queue: Default::default(),
            leader: Default::default(),
            transactions: Default::default(),
        }
    }
}

impl<J> Clone for GroupCommit<J> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            leader: self.leader.clone(),
            transactions: self.transactions.clone(),
        }
    }
}

impl<J> GroupCommit<J> {
    /// Queues `job`, then, once leader, commits every job still queued
    /// with `commit` (which must answer each). Returns when `job` has been
    /// taken by some leader and that leader has let go.
    pub(super) async fn submit<F, Fut>(&self, job: J, commit: F)
    where
        F: FnOnce(Vec<J>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
        let _leader = self.leader.lock().await;
        // Empty when the previous leader took this job too.
        let jobs = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        if !jobs.is_empty() {
            commit(jobs).await;
        }
    }

    /// Counts one transaction run for these jobs.
    pub(super) fn count_transaction(&self) {
        self.transactions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Jobs waiting for a leader (test hook).
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Transactions run for these jobs so far (test hook).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Holds the leader lock: jobs queue up until the guard is dropped
    /// (test hook).
    pub async fn hold(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.leader.clone().lock_owned().await
    }
}

/// A transaction holding the engine's write lock; see
/// [`SqlStore::write_tx`]. Dropped without [`WriteTx::commit`], it rolls
/// back, and only then lets the next writer in (fields drop in order).
pub(super) struct WriteTx<'a, DB: Database> {
    tx: sqlx::Transaction<'static, DB>,
    _writer: Option<MutexGuard<'a, ()>>,
}

impl<DB: Database> WriteTx<'_, DB> {
    /// Commits, then releases the write lock.
    pub(super) async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Rolls back, then releases the write lock.
    pub(super) async fn rollback(self) -> StoreResult<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

impl<DB: Database> std::ops::Deref for WriteTx<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: Database> std::ops::DerefMut for WriteTx<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}
