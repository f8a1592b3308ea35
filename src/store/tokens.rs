//! Tokens: workspace tokens (several per workspace, named, listed,
//! revoked one by one, rotated all at once), operator tokens with a role
//! and an optional team subtree, the lookups that resolve a presented
//! token, and the batched last-used stamps.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::{Role, TokenId, TokenKey};

/// A token as lists show it: never the secret, nor its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    /// Its id.
    pub id: TokenId,
    /// Its label, when given.
    pub name: Option<String>,
    /// `mol_` and the first characters of the secret.
    pub prefix: String,
    /// When it was minted.
    pub created_at: DateTime<Utc>,
    /// When it last authenticated a request (batched: a few seconds late).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// An operator token as the list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorTokenInfo {
    /// Id, name, prefix and stamps.
    pub token: TokenInfo,
    /// What it may do.
    pub role: Role,
    /// The subtree it is confined to, if any.
    pub team_root: Option<WorkspaceId>,
}

/// What an operator token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorGrant {
    /// The token's id.
    pub id: TokenId,
    /// Its role.
    pub role: Role,
    /// The subtree it is confined to, if any.
    pub team_root: Option<WorkspaceId>,
}

/// A token to mint.
#[derive(Debug, Clone, PartialEq)]
pub struct NewToken {
    /// Its hash and prefix.
    pub key: TokenKey,
    /// Its label (1 to 100 characters, checked by the route).
    pub name: Option<String>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// How minting a workspace token ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintOutcome {
    /// Minted, with this id.
    Minted(TokenId),
    /// No live workspace with that id; nothing written.
    NoWorkspace,
    /// The workspace already has the most live tokens allowed.
    AtCap,
}

/// Who a live token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenHolder {
    /// A workspace.
    Workspace(WorkspaceId),
    /// An operator, with what the token grants.
    Operator(OperatorGrant),
}

/// The row of a token, as read.
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: TokenId,
    name: Option<String>,
    prefix: String,
    created_at: Ts,
    last_used_at: Option<Ts>,
    expires_at: Option<Ts>,
}

impl From<TokenRow> for TokenInfo {
    fn from(r: TokenRow) -> Self {
        TokenInfo {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at.0,
            last_used_at: r.last_used_at.map(|t| t.0),
            expires_at: r.expires_at.map(|t| t.0),
        }
    }
}

/// The row of an operator token.
#[derive(sqlx::FromRow)]
struct OperatorRow {
    #[sqlx(flatten)]
    token: TokenRow,
    role: String,
    team_root: Option<WorkspaceId>,
}

impl OperatorRow {
    fn into_info(self) -> StoreResult<OperatorTokenInfo> {
        Ok(OperatorTokenInfo {
            role: parse_role(&self.role)?,
            token: self.token.into(),
            team_root: self.team_root,
        })
    }
}

fn parse_role(raw: &str) -> StoreResult<Role> {
    Role::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("unknown token role {raw:?}")))
}

/// Tokens. Part of [`Store`]; both engines implement it below.
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
        token: TokenKey,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// The workspace a live (unrevoked, unexpired at `now`) token belongs to.
    async fn workspace_for_token(
        &self,
        token: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WorkspaceId>>;

    /// Who a live token belongs to: a workspace or an operator.
    async fn token_holder(
        &self,
        token: TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<TokenHolder>>;

    /// The token with this hash, live, revoked or expired, of a workspace
    /// or an operator; `None` for a hash no token ever had.
    async fn known_token(&self, token: TokenHash) -> StoreResult<Option<KnownToken>>;

    /// A page of the workspace's live tokens, newest first, and how many
    /// there are.
    async fn list_tokens(
        &self,
        id: WorkspaceId,
        limit: i64,
        offset: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<(Vec<TokenInfo>, i64)>;

    /// Mints a token for a live workspace unless it already has `cap` live
    /// ones (checked under the workspace's lock, so racing mints cannot
    /// both pass it).
    async fn mint_token(
        &self,
        id: WorkspaceId,
        new: NewToken,
        cap: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<MintOutcome>;

    /// Revokes one live token of the workspace; false when it has no such
    /// live token.
    async fn revoke_token(
        &self,
        id: WorkspaceId,
        token: TokenId,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// A page of the live operator tokens, newest first, and how many.
    async fn list_operator_tokens(
        &self,
        limit: i64,
        offset: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<(Vec<OperatorTokenInfo>, i64)>;

    /// Mints an operator token; `None` when `team_root` names no live
    /// workspace (nothing written).
    async fn mint_operator_token(
        &self,
        new: NewToken,
        role: Role,
        team_root: Option<WorkspaceId>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<OperatorTokenInfo>>;

    /// Revokes a live operator token; false when there is none with that id.
    async fn revoke_operator_token(&self, id: TokenId, now: DateTime<Utc>) -> StoreResult<bool>;

    /// Stamps `last_used_at` of every token in `uses` (never backwards),
    /// in one transaction; how many rows moved.
    async fn touch_tokens(&self, uses: &[(TokenHash, DateTime<Utc>)]) -> StoreResult<u64>;
}

/// A token found by its hash whatever its state: what the trail names
/// when a known token is refused (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct KnownToken {
    /// Its id.
    pub id: TokenId,
    /// Its label, when given.
    pub name: Option<String>,
    /// The workspace of a workspace token; `None` for an operator token.
    pub workspace_id: Option<WorkspaceId>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it stops (or stopped) working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The columns of a [`TokenInfo`].
const INFO: &str = "id, name, prefix, created_at, last_used_at, expires_at";

engines! {
    impl SqlStore<DB> {
        /// Inserts a live token for a workspace, inside the caller's
        /// transaction.
        pub(super) async fn insert_token(
            conn: &mut <DB as sqlx::Database>::Connection,
            id: WorkspaceId,
            token: TokenKey,
            now: DateTime<Utc>,
        ) -> StoreResult<TokenId> {
            Self::insert_named_token(conn, id, &NewToken { key: token, name: None, expires_at: None }, now)
                .await
        }

        /// Inserts a live token with its name and expiry.
        async fn insert_named_token(
            conn: &mut <DB as sqlx::Database>::Connection,
            id: WorkspaceId,
            new: &NewToken,
            now: DateTime<Utc>,
        ) -> StoreResult<TokenId> {
            let token_id = TokenId::new();
            sqlx::query(
                "INSERT INTO workspace_auth_tokens \
                 (token_hash, workspace_id, created_at, id, name, prefix, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&new.key.hash.0[..])
            .bind(id)
            .bind(Ts(now))
            .bind(token_id)
            .bind(&new.name)
            .bind(new.key.prefix.as_str())
            .bind(new.expires_at.map(Ts))
            .execute(conn)
            .await?;
            Ok(token_id)
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
            token: TokenKey,
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
            now: DateTime<Utc>,
        ) -> StoreResult<Option<WorkspaceId>> {
            Ok(sqlx::query_scalar(
                "SELECT workspace_id FROM workspace_auth_tokens \
                 WHERE token_hash = $1 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(&token.0[..])
            .bind(Ts(now))
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn token_holder(
            &self,
            token: TokenHash,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<TokenHolder>> {
            if let Some(ws) = self.workspace_for_token(token, now).await? {
                return Ok(Some(TokenHolder::Workspace(ws)));
            }
            let row: Option<(TokenId, String, Option<WorkspaceId>)> = sqlx::query_as(
                "SELECT id, role, team_root FROM operator_tokens \
                 WHERE token_hash = $1 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(&token.0[..])
            .bind(Ts(now))
            .fetch_optional(&self.pool)
            .await?;
            row.map(|(id, role, team_root)| {
                Ok(TokenHolder::Operator(OperatorGrant { id, role: parse_role(&role)?, team_root }))
            })
            .transpose()
        }

        async fn known_token(&self, token: TokenHash) -> StoreResult<Option<KnownToken>> {
            type Row = (TokenId, Option<String>, Option<WorkspaceId>, Option<Ts>, Option<Ts>);
            let row: Option<Row> = sqlx::query_as(
                "SELECT id, name, workspace_id, revoked_at, expires_at \
                 FROM workspace_auth_tokens WHERE token_hash = $1 \
                 UNION ALL \
                 SELECT id, name, NULL, revoked_at, expires_at \
                 FROM operator_tokens WHERE token_hash = $1",
            )
            .bind(&token.0[..])
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|(id, name, workspace_id, revoked_at, expires_at)| KnownToken {
                id,
                name,
                workspace_id,
                revoked_at: revoked_at.map(|t| t.0),
                expires_at: expires_at.map(|t| t.0),
            }))
        }

        async fn list_tokens(
            &self,
            id: WorkspaceId,
            limit: i64,
            offset: i64,
            now: DateTime<Utc>,
        ) -> StoreResult<(Vec<TokenInfo>, i64)> {
            let live = "workspace_id = $1 AND revoked_at IS NULL \
                        AND (expires_at IS NULL OR expires_at > $2)";
            let mut conn = self.pool.acquire().await?;
            let rows: Vec<TokenRow> = sqlx::query_as(&format!(
                "SELECT {INFO} FROM workspace_auth_tokens WHERE {live} \
                 ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
            ))
            .bind(id)
            .bind(Ts(now))
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *conn)
            .await?;
            let count: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM workspace_auth_tokens WHERE {live}"
            ))
            .bind(id)
            .bind(Ts(now))
            .fetch_one(&mut *conn)
            .await?;
            Ok((rows.into_iter().map(TokenInfo::from).collect(), count))
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %id))]
        async fn mint_token(
            &self,
            id: WorkspaceId,
            new: NewToken,
            cap: i64,
            now: DateTime<Utc>,
        ) -> StoreResult<MintOutcome> {
            let mut tx = self.write_tx().await?;
            if !Self::lock_workspace(&mut tx, id).await? {
                return Ok(MintOutcome::NoWorkspace);
            }
            let live: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM workspace_auth_tokens WHERE workspace_id = $1 \
                 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(id)
            .bind(Ts(now))
            .fetch_one(&mut *tx)
            .await?;
            if live >= cap {
                return Ok(MintOutcome::AtCap);
            }
            let token_id = Self::insert_named_token(&mut tx, id, &new, now).await?;
            tx.commit().await?;
            Ok(MintOutcome::Minted(token_id))
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %id))]
        async fn revoke_token(
            &self,
            id: WorkspaceId,
            token: TokenId,
            now: DateTime<Utc>,
        ) -> StoreResult<bool> {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "UPDATE workspace_auth_tokens SET revoked_at = $3 \
                 WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $3)",
            )
            .bind(id)
            .bind(token)
            .bind(Ts(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(done == 1)
        }

        async fn list_operator_tokens(
            &self,
            limit: i64,
            offset: i64,
            now: DateTime<Utc>,
        ) -> StoreResult<(Vec<OperatorTokenInfo>, i64)> {
            let live = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)";
            let mut conn = self.pool.acquire().await?;
            let rows: Vec<OperatorRow> = sqlx::query_as(&format!(
                "SELECT {INFO}, role, team_root FROM operator_tokens WHERE {live} \
                 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
            ))
            .bind(Ts(now))
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *conn)
            .await?;
            let count: i64 =
                sqlx::query_scalar(&format!("SELECT count(*) FROM operator_tokens WHERE {live}"))
                    .bind(Ts(now))
                    .fetch_one(&mut *conn)
                    .await?;
            let rows = rows.into_iter().map(OperatorRow::into_info).collect::<StoreResult<_>>()?;
            Ok((rows, count))
        }

        #[tracing::instrument(skip_all, fields(role = %role))]
        async fn mint_operator_token(
            &self,
            new: NewToken,
            role: Role,
            team_root: Option<WorkspaceId>,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<OperatorTokenInfo>> {
            let mut tx = self.write_tx().await?;
            if let Some(root) = team_root {
                if !Self::lock_workspace(&mut tx, root).await? {
                    return Ok(None);
                }
            }
            let row: OperatorRow = sqlx::query_as(&format!(
                "INSERT INTO operator_tokens \
                 (id, token_hash, name, role, team_root, prefix, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {INFO}, role, team_root"
            ))
            .bind(TokenId::new())
            .bind(&new.key.hash.0[..])
            .bind(&new.name)
            .bind(role.as_str())
            .bind(team_root)
            .bind(new.key.prefix.as_str())
            .bind(Ts(now))
            .bind(new.expires_at.map(Ts))
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(row.into_info()?))
        }

        #[tracing::instrument(skip_all, fields(token_id = %id))]
        async fn revoke_operator_token(&self, id: TokenId, now: DateTime<Utc>) -> StoreResult<bool> {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "UPDATE operator_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(id)
            .bind(Ts(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(done == 1)
        }

        #[tracing::instrument(skip_all, fields(tokens = uses.len()))]
        async fn touch_tokens(&self, uses: &[(TokenHash, DateTime<Utc>)]) -> StoreResult<u64> {
            if uses.is_empty() {
                return Ok(0);
            }
            let mut tx = self.write_tx().await?;
            let mut moved = 0;
            for (hash, at) in uses {
                for table in ["workspace_auth_tokens", "operator_tokens"] {
                    moved += sqlx::query(&format!(
                        "UPDATE {table} SET last_used_at = $2 WHERE token_hash = $1 \
                         AND (last_used_at IS NULL OR last_used_at < $2)"
                    ))
                    .bind(&hash.0[..])
                    .bind(Ts(*at))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
            }
            tx.commit().await?;
            Ok(moved)
        }
    }
}
