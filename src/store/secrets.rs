//! Secrets, sealed before they reach the store: global and per-workspace
//! scopes, names listed without values, and the key check that refuses a
//! wrong secrets key at start-up.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::{SqlStore, Ts};
use super::*;

/// Whose secret: every workspace's (global) or one workspace's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretScope {
    /// Inherited by every workspace.
    Global,
    /// One workspace's own.
    Workspace(WorkspaceId),
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretMeta {
    /// Its key.
    pub name: SecretName,
    /// Last set.
    pub updated_at: DateTime<Utc>,
}

/// A secret as stored: sealed (nonce, ciphertext and tag), never plaintext.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedSecret {
    /// Global or the workspace's own.
    pub scope: SecretScope,
    /// Its key.
    pub name: SecretName,
    /// Nonce || ciphertext || tag.
    pub sealed: Vec<u8>,
}

/// `global_secrets` / `workspace_secrets` keys as listed.
#[derive(sqlx::FromRow)]
pub(super) struct SecretMetaRow {
    name: String,
    updated_at: Ts,
}

impl TryFrom<SecretMetaRow> for SecretMeta {
    type Error = StoreError;
    fn try_from(r: SecretMetaRow) -> StoreResult<Self> {
        Ok(SecretMeta {
            name: SecretName::parse(&r.name).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            updated_at: r.updated_at.0,
        })
    }
}

/// A sealed secret as read; `own` tells the workspace's from the global.
#[derive(sqlx::FromRow)]
pub(super) struct SealedRow {
    own: bool,
    name: String,
    sealed: Vec<u8>,
}

/// Sealed secrets. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Stores `candidate` as the key check value unless one is stored, and
    /// returns the stored one (the first server start writes it).
    async fn secrets_key_check(&self, candidate: &[u8], now: DateTime<Utc>)
        -> StoreResult<Vec<u8>>;

    /// Sets a secret (insert or replace); false when the workspace of a
    /// workspace scope does not exist.
    async fn put_secret(
        &self,
        scope: SecretScope,
        name: &SecretName,
        sealed: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Deletes a secret; false when absent.
    async fn delete_secret(&self, scope: SecretScope, name: &SecretName) -> StoreResult<bool>;

    /// The keys of one scope, by name.
    async fn list_secrets(&self, scope: SecretScope) -> StoreResult<Vec<SecretMeta>>;

    /// Every global secret and every secret of the workspace, sealed.
    async fn sealed_secrets(&self, workspace_id: WorkspaceId) -> StoreResult<Vec<SealedSecret>>;
}

engines! {
    #[async_trait]
    impl SecretStore for SqlStore<DB> {
        async fn secrets_key_check(
            &self,
            candidate: &[u8],
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<u8>> {
            let _w = self.writer().await;
            sqlx::query(
                "INSERT INTO secrets_key_check (id, sealed, created_at) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(candidate)
            .bind(Ts(now))
            .execute(&self.pool)
            .await?;
            Ok(
                sqlx::query_scalar("SELECT sealed FROM secrets_key_check WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?,
            )
        }

        #[tracing::instrument(skip_all, fields(secret = %name))]
        async fn put_secret(
            &self,
            scope: SecretScope,
            name: &SecretName,
            sealed: &[u8],
            now: DateTime<Utc>,
        ) -> StoreResult<bool> {
            let _w = self.writer().await;
            let done = match scope {
                SecretScope::Global => {
                    sqlx::query(
                        "INSERT INTO global_secrets (name, sealed, created_at, updated_at) \
                         VALUES ($1, $2, $3, $3) \
                         ON CONFLICT (name) DO UPDATE \
                           SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                    )
                    .bind(name.as_str())
                    .bind(sealed)
                    .bind(Ts(now))
                    .execute(&self.pool)
                    .await?
                }
                // Only for a live workspace: the WHERE makes a missing
                // one insert nothing (0 rows), in the same statement.
                SecretScope::Workspace(id) => {
                    sqlx::query(
                        "INSERT INTO workspace_secrets \
                           (workspace_id, name, sealed, created_at, updated_at) \
                         SELECT $1, $2, $3, $4, $4 \
                         WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL) \
                         ON CONFLICT (workspace_id, name) DO UPDATE \
                           SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                    )
                    .bind(id)
                    .bind(name.as_str())
                    .bind(sealed)
                    .bind(Ts(now))
                    .execute(&self.pool)
                    .await?
                }
            };
            Ok(done.rows_affected() == 1)
        }

        #[tracing::instrument(skip_all, fields(secret = %name))]
        async fn delete_secret(
            &self,
            scope: SecretScope,
            name: &SecretName,
        ) -> StoreResult<bool> {
            let _w = self.writer().await;
            let done = match scope {
                SecretScope::Global => {
                    sqlx::query("DELETE FROM global_secrets WHERE name = $1")
                        .bind(name.as_str())
                        .execute(&self.pool)
                        .await?
                }
                SecretScope::Workspace(id) => {
                    sqlx::query(
                        "DELETE FROM workspace_secrets WHERE workspace_id = $1 AND name = $2",
                    )
                    .bind(id)
                    .bind(name.as_str())
                    .execute(&self.pool)
                    .await?
                }
            };
            Ok(done.rows_affected() == 1)
        }

        async fn list_secrets(&self, scope: SecretScope) -> StoreResult<Vec<SecretMeta>> {
            let rows: Vec<SecretMetaRow> = match scope {
                SecretScope::Global => {
                    sqlx::query_as("SELECT name, updated_at FROM global_secrets ORDER BY name")
                        .fetch_all(&self.pool)
                        .await?
                }
                SecretScope::Workspace(id) => {
                    sqlx::query_as(
                        "SELECT name, updated_at FROM workspace_secrets \
                         WHERE workspace_id = $1 ORDER BY name",
                    )
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?
                }
            };
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn sealed_secrets(
            &self,
            workspace_id: WorkspaceId,
        ) -> StoreResult<Vec<SealedSecret>> {
            let rows: Vec<SealedRow> = sqlx::query_as(
                "SELECT false AS own, name, sealed FROM global_secrets \
                 UNION ALL \
                 SELECT true AS own, name, sealed FROM workspace_secrets WHERE workspace_id = $1",
            )
            .bind(workspace_id)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(SealedSecret {
                        scope: if r.own {
                            SecretScope::Workspace(workspace_id)
                        } else {
                            SecretScope::Global
                        },
                        name: SecretName::parse(&r.name)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        sealed: r.sealed,
                    })
                })
                .collect()
        }
    }
}
