//! Blob bytes kept in the database, in chunks, for the `database` blob
//! store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::{SqlStore, Ts};
use super::*;

/// Blob bytes kept in the database. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait BlobChunkStore: Send + Sync {
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
}

engines! {
    #[async_trait]
    impl BlobChunkStore for SqlStore<DB> {
        async fn put_blob_chunk(
            &self,
            key: &str,
            seq: i32,
            bytes: &[u8],
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            let mut tx = self.write_tx().await?;
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
            let mut tx = self.write_tx().await?;
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
    }
}
