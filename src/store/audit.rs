//! The audit trail: append-only rows chained by HMAC (the rule is
//! `crate::domain::audit`), their filtered listing, and the pages the
//! chain check walks.
//!
//! An append is one write transaction: lock the head row (the one-writer
//! lock on SQLite, `FOR UPDATE` on PostgreSQL, so appends from any number
//! of tasks or replicas queue and never fork the chain), seal the new row
//! to the head's hash, insert it, move the head.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::audit::{self as chain, AuditKey, Sealed, Stored};

/// One row of the trail, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Its place in the chain, from 1.
    pub seq: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// `operator`, `workspace:<id>` or `system`.
    pub actor: String,
    /// What happened.
    pub action: String,
    /// The workspace it concerns.
    pub workspace_id: Option<WorkspaceId>,
    /// What was acted on.
    pub target: Option<String>,
    /// The details, JSON text.
    pub details: String,
    /// SHA-256 of `details` (hex).
    pub details_hash: String,
    /// The previous row's hash (hex).
    pub prev_hash: String,
    /// This row's HMAC (hex).
    pub hash: String,
}

/// [`AuditRecord`] as the engines encode it.
#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    at: Ts,
    actor: String,
    action: String,
    workspace_id: Option<WorkspaceId>,
    target: Option<String>,
    details: String,
    details_hash: String,
    prev_hash: String,
    hash: String,
}

impl From<AuditRow> for AuditRecord {
    fn from(r: AuditRow) -> Self {
        Self {
            seq: r.seq,
            at: r.at.0,
            actor: r.actor,
            action: r.action,
            workspace_id: r.workspace_id,
            target: r.target,
            details: r.details,
            details_hash: r.details_hash,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

impl AuditRecord {
    /// The row as the chain checker reads it.
    pub fn stored(&self) -> Stored<'_> {
        Stored {
            sealed: Sealed {
                seq: self.seq,
                at: self.at,
                actor: &self.actor,
                action: &self.action,
                workspace_id: self.workspace_id,
                target: self.target.as_deref(),
                details_hash: &self.details_hash,
            },
            details: &self.details,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
        }
    }
}

/// A row to append; the store gives it its seq, time and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    /// `operator`, `workspace:<id>` or `system`.
    pub actor: String,
    /// What happened.
    pub action: String,
    /// The workspace it concerns.
    pub workspace_id: Option<WorkspaceId>,
    /// What was acted on.
    pub target: Option<String>,
    /// The details, JSON text (hashed byte for byte).
    pub details: String,
}

/// An audit row appended inside the transaction of the change it
/// records, so that the change and its row commit together or not at all:
/// the chain's key, and the row made from what the change did.
pub struct AuditIn<'a, T: ?Sized> {
    /// The chain's key.
    pub key: &'a AuditKey,
    /// The row, from the change's outcome.
    pub row: &'a (dyn Fn(&T) -> NewAuditEvent + Send + Sync),
}

/// Which rows a listing shows; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// Only rows about this workspace.
    pub workspace_id: Option<WorkspaceId>,
    /// Only rows at or after.
    pub from: Option<DateTime<Utc>>,
    /// Only rows before.
    pub to: Option<DateTime<Utc>>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// At most this many rows.
    pub limit: i64,
    /// After skipping this many, newest first.
    pub offset: i64,
}

const COLUMNS: &str =
    "seq, at, actor, action, workspace_id, target, details, details_hash, prev_hash, hash";

const WHERE: &str = "($1 IS NULL OR workspace_id = $1) AND ($2 IS NULL OR at >= $2) \
     AND ($3 IS NULL OR at < $3) AND (CAST($4 AS TEXT) IS NULL OR actor = $4) \
     AND (CAST($5 AS TEXT) IS NULL OR action = $5)";

/// The audit trail. Part of [`Store`]; both engines implement it.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends one row sealed under `key` to the chain's head.
    async fn append_audit(
        &self,
        key: &AuditKey,
        new: &NewAuditEvent,
        now: DateTime<Utc>,
    ) -> StoreResult<AuditRecord>;

    /// The rows `filter` selects, newest first, and how many it selects in
    /// all (ignoring limit and offset).
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<(Vec<AuditRecord>, i64)>;

    /// Up to `limit` rows after `after_seq`, oldest first: a page of the
    /// chain check.
    async fn audit_chain_page(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<AuditRecord>>;

    /// The newest row's seq and hash as the head records them.
    async fn audit_head(&self) -> StoreResult<(i64, String)>;
}

engines! {
    impl SqlStore<DB> {
        /// Appends one row sealed under `key` to the chain's head inside
        /// the caller's transaction (the head row stays locked until it
        /// commits): the row commits with the change it records, or not
        /// at all.
        pub(super) async fn append_audit_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            key: &AuditKey,
            new: &NewAuditEvent,
            now: DateTime<Utc>,
        ) -> StoreResult<AuditRecord> {
            let sql = format!("SELECT seq, hash FROM audit_head WHERE id = 1{}", DB::ROW_LOCK);
            let (head_seq, head_hash): (i64, String) =
                sqlx::query_as(&sql).fetch_one(&mut *conn).await?;
            let prev = hex::decode(&head_hash)
                .map_err(|_| StoreError::Corrupt("audit head hash is not hex".into()))?;
            let seq = head_seq + 1;
            let details_hash = chain::details_hash(&new.details);
            let hash = chain::seal(
                key,
                &prev,
                &Sealed {
                    seq,
                    at: now,
                    actor: &new.actor,
                    action: &new.action,
                    workspace_id: new.workspace_id,
                    target: new.target.as_deref(),
                    details_hash: &details_hash,
                },
            );
            let sql = format!(
                "INSERT INTO audit_events ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
            );
            let row: AuditRow = sqlx::query_as(&sql)
                .bind(seq)
                .bind(Ts(now))
                .bind(&new.actor)
                .bind(&new.action)
                .bind(new.workspace_id)
                .bind(&new.target)
                .bind(&new.details)
                .bind(&details_hash)
                .bind(&head_hash)
                .bind(&hash)
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(&hash)
                .execute(&mut *conn)
                .await?;
            Ok(row.into())
        }
    }

    #[async_trait]
    impl AuditStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(action = %new.action))]
        async fn append_audit(
            &self,
            key: &AuditKey,
            new: &NewAuditEvent,
            now: DateTime<Utc>,
        ) -> StoreResult<AuditRecord> {
            let mut tx = self.write_tx().await?;
            let row = Self::append_audit_in(&mut tx, key, new, now).await?;
            tx.commit().await?;
            Ok(row)
        }

        async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<(Vec<AuditRecord>, i64)> {
            let sql = format!(
                "SELECT {COLUMNS} FROM audit_events WHERE {WHERE} \
                 ORDER BY seq DESC LIMIT $6 OFFSET $7"
            );
            let rows: Vec<AuditRow> = sqlx::query_as(&sql)
                .bind(filter.workspace_id)
                .bind(filter.from.map(Ts))
                .bind(filter.to.map(Ts))
                .bind(&filter.actor)
                .bind(&filter.action)
                .bind(filter.limit)
                .bind(filter.offset)
                .fetch_all(&self.pool)
                .await?;
            let sql = format!("SELECT COUNT(*) FROM audit_events WHERE {WHERE}");
            let total: i64 = sqlx::query_scalar(&sql)
                .bind(filter.workspace_id)
                .bind(filter.from.map(Ts))
                .bind(filter.to.map(Ts))
                .bind(&filter.actor)
                .bind(&filter.action)
                .fetch_one(&self.pool)
                .await?;
            Ok((rows.into_iter().map(Into::into).collect(), total))
        }

        async fn audit_chain_page(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<AuditRecord>> {
            let sql = format!(
                "SELECT {COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
            );
            let rows: Vec<AuditRow> = sqlx::query_as(&sql)
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        async fn audit_head(&self) -> StoreResult<(i64, String)> {
            Ok(sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?)
        }
    }
}
