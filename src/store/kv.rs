//! The per-workspace key/value store: versioned writes with `if_version`,
//! expiry, and the sweep of expired keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::sql::{SqlStore, Ts};
use super::*;

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

/// `memory_kv` as read, in [`KV_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct KvRow {
    key: String,
    value: Json<Value>,
    version: i64,
    expires_at: Option<Ts>,
    updated_at: Ts,
}

impl From<KvRow> for KvEntry {
    fn from(r: KvRow) -> Self {
        KvEntry {
            key: r.key,
            value: r.value.0,
            version: r.version,
            expires_at: r.expires_at.map(|t| t.0),
            updated_at: r.updated_at.0,
        }
    }
}

pub(super) const KV_COLUMNS: &str = "key, value, version, expires_at, updated_at";

/// A key that has not expired at `$3`.
pub(super) const LIVE_KEY: &str =
    "workspace_id = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)";

/// Per-workspace key/value entries. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait KvStore: Send + Sync {
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

engines! {
    #[async_trait]
    impl KvStore for SqlStore<DB> {
        async fn kv_list(
            &self,
            workspace_id: WorkspaceId,
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<KvEntry>> {
            let sql = format!(
                "SELECT {KV_COLUMNS} FROM memory_kv WHERE workspace_id = $1 \
                 AND (expires_at IS NULL OR expires_at > $2) ORDER BY key"
            );
            let rows: Vec<KvRow> = sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(Ts(now))
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        async fn kv_get(
            &self,
            workspace_id: WorkspaceId,
            key: &str,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<KvEntry>> {
            let sql = format!("SELECT {KV_COLUMNS} FROM memory_kv WHERE {LIVE_KEY}");
            let row: Option<KvRow> = sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(key)
                .bind(Ts(now))
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(Into::into))
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn kv_set(
            &self,
            workspace_id: WorkspaceId,
            key: &str,
            write: &KvWrite,
            now: DateTime<Utc>,
        ) -> StoreResult<KvWritten> {
            let mut tx = self.write_tx().await?;
            // One statement each, so the version check and the write are
            // atomic on both engines: PostgreSQL re-checks the WHERE of
            // an UPDATE / ON CONFLICT on the row a racing writer just
            // committed, SQLite runs one writer at a time.
            let sql = match write.if_version {
                // Absent keys are created at version 1; an existing one
                // goes on from its version even past expiry, so a
                // version is never reused for a key.
                None | Some(0) => format!(
                    "INSERT INTO memory_kv AS kv (workspace_id, key, value, version, expires_at, \
                     updated_at) VALUES ($1, $2, $4, 1, $5, $3) \
                     ON CONFLICT (workspace_id, key) DO UPDATE SET value = excluded.value, \
                       version = kv.version + 1, expires_at = excluded.expires_at, \
                       updated_at = excluded.updated_at \
                     WHERE $6 IS NULL OR (kv.expires_at IS NOT NULL AND kv.expires_at <= $3) \
                     RETURNING {KV_COLUMNS}"
                ),
                Some(_) => format!(
                    "UPDATE memory_kv SET value = $4, version = version + 1, \
                       expires_at = $5, updated_at = $3 \
                     WHERE {LIVE_KEY} AND version = $6 RETURNING {KV_COLUMNS}"
                ),
            };
            let row: Option<KvRow> = sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(key)
                .bind(Ts(now))
                .bind(Json(&write.value))
                .bind(write.expires_at.map(Ts))
                .bind(write.if_version)
                .fetch_all(&mut *tx)
                .await?
                .pop();
            let outcome = match row {
                Some(row) => KvWritten::Done(row.into()),
                None => {
                    let current: Option<i64> = sqlx::query_scalar(&format!(
                        "SELECT version FROM memory_kv WHERE {LIVE_KEY}"
                    ))
                    .bind(workspace_id)
                    .bind(key)
                    .bind(Ts(now))
                    .fetch_optional(&mut *tx)
                    .await?;
                    KvWritten::Conflict {
                        current: current.unwrap_or(0),
                    }
                }
            };
            tx.commit().await?;
            Ok(outcome)
        }

        async fn kv_delete(
            &self,
            workspace_id: WorkspaceId,
            key: &str,
            now: DateTime<Utc>,
        ) -> StoreResult<bool> {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(&format!("DELETE FROM memory_kv WHERE {LIVE_KEY}"))
                .bind(workspace_id)
                .bind(key)
                .bind(Ts(now))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        }

        async fn sweep_kv(&self, now: DateTime<Utc>) -> StoreResult<u64> {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "DELETE FROM memory_kv WHERE expires_at IS NOT NULL AND expires_at <= $1",
            )
            .bind(Ts(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        }
    }
}
