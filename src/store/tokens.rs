//! Workspace tokens: looked up by hash, rotated, and the lookup that tells
//! a revoked token of a removed workspace from an unknown one.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::{SqlStore, Ts};
use super::*;

/// Workspace tokens. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// The removed workspace a (revoked) token belonged to: lets the state
    /// route tell an agent its workspace was deleted.
    async fn removed_workspace_for_token(
        &self,
        token: TokenHash,
    ) -> StoreResult<Option<WorkspaceId>>;

    /// Revokes every live token and inserts `token`, in one transaction;
    /// false when the workspace is absent.
    async fn rotate_token(
        &self,
        id: WorkspaceId,
        token: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// The workspace a live token belongs to.
    async fn workspace_for_token(&self, token: TokenHash) -> StoreResult<Option<WorkspaceId>>;
}

engines! {
    impl SqlStore<DB> {
        /// Inserts a live token for a workspace, inside the caller's
        /// transaction.
        pub(super) async fn insert_token(
            conn: &mut <DB as sqlx::Database>::Connection,
            id: WorkspaceId,
            token: TokenHash,
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO workspace_auth_tokens (token_hash, workspace_id, created_at) \
                 VALUES ($1, $2, $3)",
            )
            .bind(&token.0[..])
            .bind(id)
            .bind(Ts(now))
            .execute(conn)
            .await?;
            Ok(())
        }
    }

    #[async_trait]
    impl TokenStore for SqlStore<DB> {
        async fn removed_workspace_for_token(
            &self,
            token: TokenHash,
        ) -> StoreResult<Option<WorkspaceId>> {
            Ok(sqlx::query_scalar(
                "SELECT w.id FROM workspace_auth_tokens t \
                 JOIN workspaces w ON w.id = t.workspace_id \
                 WHERE t.token_hash = $1 AND w.removed_at IS NOT NULL",
            )
            .bind(&token.0[..])
            .fetch_optional(&self.pool)
            .await?)
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %id))]
        async fn rotate_token(
            &self,
            id: WorkspaceId,
            token: TokenHash,
            now: DateTime<Utc>,
        ) -> StoreResult<bool> {
            let mut tx = self.write_tx().await?;
            if !Self::lock_workspace(&mut tx, id).await? {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE workspace_auth_tokens SET revoked_at = $2 \
                 WHERE workspace_id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(Ts(now))
            .execute(&mut *tx)
            .await?;
            Self::insert_token(&mut tx, id, token, now).await?;
            tx.commit().await?;
            Ok(true)
        }

        async fn workspace_for_token(
            &self,
            token: TokenHash,
        ) -> StoreResult<Option<WorkspaceId>> {
            Ok(sqlx::query_scalar(
                "SELECT workspace_id FROM workspace_auth_tokens \
                 WHERE token_hash = $1 AND revoked_at IS NULL",
            )
            .bind(&token.0[..])
            .fetch_optional(&self.pool)
            .await?)
        }
    }
}
