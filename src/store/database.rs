//! What concerns the database as a whole rather than one area: which
//! engine it is, migrations, liveness, closing, and the two mechanisms
//! replicas share (the sweep lock and cross-replica notification).

use async_trait::async_trait;

use super::engine::Engine;
use super::sql::SqlStore;
use super::*;

/// The database as a whole. Part of [`Store`]; both engines implement it
/// below.
#[async_trait]
pub trait DatabaseStore: Send + Sync {
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
}

engines! {
    #[async_trait]
    impl DatabaseStore for SqlStore<DB> {
        fn engine(&self) -> &'static str {
            DB::ENGINE
        }

        async fn migrate(&self) -> StoreResult<()> {
            let _w = self.writer().await;
            DB::migrate(self).await
        }

        async fn ping(&self) -> StoreResult<()> {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        }

        async fn close(&self) {
            self.pool.close().await;
        }

        async fn try_sweep_lock(&self) -> StoreResult<Option<SweepLock>> {
            DB::try_sweep_lock(self).await
        }

        fn notifier(&self) -> Option<Notifier> {
            DB::notifier(self)
        }
    }
}
