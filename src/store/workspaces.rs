//! Workspaces and the team tree: create, read, list, update, soft delete
//! (with its cascade), pause and restart, org import, and the purge of
//! removed workspaces.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;

/// A workspace as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    /// Its id.
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Push or poll.
    pub delivery_mode: DeliveryMode,
    /// Callback URL of a push workspace.
    pub url: Option<String>,
    /// Agent card sent at the last registration.
    pub agent_card: Option<Value>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change by the operator or a registration.
    pub updated_at: DateTime<Utc>,
    /// Last registration or heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Parent in the team tree; `None` for a root.
    pub parent_id: Option<WorkspaceId>,
    /// The canvas's fold of its subtree.
    pub collapsed: bool,
    /// Resource tier.
    pub tier: Tier,
    /// What runs the agent.
    pub runtime: String,
    /// The model the agent runs (`None` only for rows older than tiers).
    pub model: Option<String>,
    /// Set while paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Set once soft-deleted.
    pub removed_at: Option<DateTime<Utc>>,
    /// What the last heartbeat reported (`active_tasks` defaults to 0).
    pub report: HeartbeatReport,
    /// The highest inbox row id its own poll handed to the agent.
    pub inbox_picked_up_through: Option<i64>,
}

impl Workspace {
    /// Not soft-deleted.
    pub fn is_live(&self) -> bool {
        self.removed_at.is_none()
    }

    /// The inputs of its status.
    pub fn liveness(&self) -> crate::domain::Liveness {
        crate::domain::Liveness {
            removed: self.removed_at.is_some(),
            paused: self.paused_at.is_some(),
            error_rate: self.report.error_rate,
            last_heartbeat_at: self.last_heartbeat_at,
        }
    }
}

impl Workspace {
    /// Its place in the workspace tree, for the communication rule, with
    /// its ancestor chain (as [`WorkspaceStore::ancestor_chain`] reads it).
    pub fn node(&self, ancestors: Vec<WorkspaceId>) -> crate::domain::team::Node {
        crate::domain::team::Node {
            id: self.id,
            parent_id: self.parent_id,
            ancestors,
        }
    }
}

/// A workspace to create.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    /// Display name.
    pub name: String,
    /// Push or poll.
    pub delivery_mode: DeliveryMode,
    /// Callback URL (push mode).
    pub url: Option<String>,
    /// Parent; must be a live workspace.
    pub parent_id: Option<WorkspaceId>,
    /// Resource tier (already defaulted).
    pub tier: Tier,
    /// Runtime (already defaulted).
    pub runtime: String,
    /// Model (already defaulted).
    pub model: String,
}

/// Changes to a workspace; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct UpdateWorkspace {
    /// New name.
    pub name: Option<String>,
    /// New mode.
    pub delivery_mode: Option<DeliveryMode>,
    /// New URL; `Some(None)` clears it.
    pub url: Option<Option<String>>,
    /// New agent card (registration only).
    pub agent_card: Option<Value>,
    /// New parent; `Some(None)` makes it a root.
    pub parent_id: Option<Option<WorkspaceId>>,
    /// New fold state.
    pub collapsed: Option<bool>,
    /// New tier.
    pub tier: Option<Tier>,
    /// New runtime.
    pub runtime: Option<String>,
    /// New model.
    pub model: Option<String>,
}

/// How a soft delete ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Removal {
    /// No live workspace with that id.
    NotFound,
    /// It has this many live children and no cascade was asked for.
    HasLiveChildren(i64),
    /// Removed, their tokens revoked, their delegations in flight failed.
    Removed {
        /// The workspaces removed (the one asked for first, then its live
        /// descendants), each with its parent.
        workspaces: Vec<(WorkspaceId, Option<WorkspaceId>)>,
        /// The delegations in flight to them, failed with `callee
        /// removed` (each with its caller's result row), to announce.
        failed: Vec<Transitioned>,
    },
}

/// One node of an org import, flattened in pre-order: a node's parent
/// always comes before it.
#[derive(Debug, Clone)]
pub struct ImportNode {
    /// Index of the parent node in the plan; `None` for a template root.
    pub parent: Option<usize>,
    /// The workspace to create when no live `(parent, name)` exists; its
    /// `parent_id` is filled in by the import.
    pub workspace: NewWorkspace,
    /// Id to use if created.
    pub id: WorkspaceId,
    /// First token to insert if created.
    pub token: TokenKey,
}

/// What the import did with one node.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedNode {
    /// The workspace (the existing one when skipped).
    pub id: WorkspaceId,
    /// Its parent.
    pub parent_id: Option<WorkspaceId>,
    /// True when created by this import, false when it already existed.
    pub created: bool,
}

/// `workspaces` as read (`SELECT *`; extra columns are ignored).
#[derive(sqlx::FromRow)]
pub(super) struct WorkspaceRow {
    id: WorkspaceId,
    name: String,
    delivery_mode: String,
    url: Option<String>,
    agent_card: Option<Json<Value>>,
    created_at: Ts,
    updated_at: Ts,
    last_heartbeat_at: Option<Ts>,
    parent_id: Option<WorkspaceId>,
    collapsed: bool,
    tier: i16,
    runtime: String,
    model: Option<String>,
    paused_at: Option<Ts>,
    removed_at: Option<Ts>,
    current_task: Option<String>,
    active_tasks: i32,
    error_rate: Option<f64>,
    sample_error: Option<String>,
    uptime_seconds: Option<i64>,
    inbox_picked_up_through: Option<i64>,
}

/// A stored delivery mode, read back (anything else is a corrupt row).
pub(super) fn stored_mode(mode: &str) -> StoreResult<DeliveryMode> {
    mode.parse::<DeliveryMode>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A stored tier, read back (anything else is a corrupt row).
pub(super) fn stored_tier(tier: i16) -> StoreResult<Tier> {
    Tier::new(tier.into()).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl TryFrom<WorkspaceRow> for Workspace {
    type Error = StoreError;
    fn try_from(r: WorkspaceRow) -> StoreResult<Self> {
        Ok(Workspace {
            id: r.id,
            name: r.name,
            delivery_mode: stored_mode(&r.delivery_mode)?,
            url: r.url,
            agent_card: r.agent_card.map(|j| j.0),
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
            last_heartbeat_at: r.last_heartbeat_at.map(|t| t.0),
            parent_id: r.parent_id,
            collapsed: r.collapsed,
            tier: stored_tier(r.tier)?,
            runtime: r.runtime,
            model: r.model,
            paused_at: r.paused_at.map(|t| t.0),
            removed_at: r.removed_at.map(|t| t.0),
            report: HeartbeatReport {
                current_task: r.current_task,
                active_tasks: Some(r.active_tasks.into()),
                error_rate: r.error_rate,
                sample_error: r.sample_error,
                uptime_seconds: r.uptime_seconds,
            },
            inbox_picked_up_through: r.inbox_picked_up_through,
        })
    }
}

/// Workspaces and the team tree. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Inserts a workspace and its first token in one transaction; the
    /// parent, if any, must be live ([`StoreError::UnknownParent`]).
    async fn create_workspace(
        &self,
        id: WorkspaceId,
        new: &NewWorkspace,
        token: TokenKey,
        now: DateTime<Utc>,
    ) -> StoreResult<Workspace>;

    /// One workspace, removed ones included (check [`Workspace::is_live`]).
    async fn get_workspace(&self, id: WorkspaceId) -> StoreResult<Option<Workspace>>;

    /// Every live (not removed) workspace, oldest first.
    async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>>;

    /// Applies changes to a live workspace; `None` when there is none. A
    /// new parent must be live and not the workspace or a descendant
    /// ([`StoreError::UnknownParent`], [`StoreError::Cycle`]).
    async fn update_workspace(
        &self,
        id: WorkspaceId,
        update: &UpdateWorkspace,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Workspace>>;

    /// Soft-deletes a live workspace (with its live subtree when
    /// `cascade`): stamps `removed_at`, revokes every token and fails every
    /// delegation in flight to them (`callee removed`, with the callers'
    /// result rows), in one transaction.
    async fn remove_workspace(
        &self,
        id: WorkspaceId,
        cascade: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Removal>;

    /// Ids of the live children of a workspace, oldest first.
    async fn child_ids(&self, id: WorkspaceId) -> StoreResult<Vec<WorkspaceId>>;

    /// The live ancestors of a workspace, parent first, at most
    /// [`MAX_LEVELS`](crate::domain::team::MAX_LEVELS) of them: one query
    /// (the communication rule's view of the tree).
    async fn ancestor_chain(&self, id: WorkspaceId) -> StoreResult<Vec<WorkspaceId>>;

    /// Pauses (`true`) or resumes a live workspace; `None` when there is
    /// no live workspace with that id.
    async fn set_paused(
        &self,
        id: WorkspaceId,
        paused: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Workspace>>;

    /// Records a restart request: resets `active_tasks` and inserts the
    /// activity row the agent sees, in one transaction; `None` when there
    /// is no live workspace with that id.
    async fn request_restart(
        &self,
        id: WorkspaceId,
        row: &NewActivity,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Workspace, Activity)>>;

    /// Imports a team tree in one transaction, serialized against every
    /// other import and tree change: a node whose `(parent, name)` exists
    /// among live workspaces (NULL parents equal) is skipped, the others
    /// are inserted with their token. With `dry_run` the transaction is
    /// rolled back, so the answer is the same and nothing is written.
    async fn import_org(
        &self,
        nodes: &[ImportNode],
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ImportedNode>>;

    /// Deletes up to `limit` workspaces removed before `removed_before`
    /// (with their tokens) and returns how many.
    async fn purge_removed(&self, removed_before: DateTime<Utc>, limit: i64) -> StoreResult<u64>;
}

engines! {
    impl SqlStore<DB> {
        /// Whether the workspace exists and is live (a removed one
        /// neither rotates nor registers), locked until commit
        /// ([`DB::ROW_LOCK`]) so what the transaction does next is
        /// atomic with this check.
        pub(super) async fn lock_workspace(
            conn: &mut <DB as sqlx::Database>::Connection,
            id: WorkspaceId,
        ) -> StoreResult<bool> {
            let sql = format!(
                "SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL{}",
                DB::ROW_LOCK
            );
            let found = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
            Ok(found.is_some())
        }

        /// Inserts a workspace row, inside the caller's transaction.
        pub(super) async fn insert_workspace(
            conn: &mut <DB as sqlx::Database>::Connection,
            id: WorkspaceId,
            new: &NewWorkspace,
            now: DateTime<Utc>,
        ) -> StoreResult<WorkspaceRow> {
            sqlx::query_as(
                "INSERT INTO workspaces (id, name, delivery_mode, url, parent_id, tier, \
                 runtime, model, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING *",
            )
            .bind(id)
            .bind(&new.name)
            .bind(new.delivery_mode.as_str())
            .bind(&new.url)
            .bind(new.parent_id)
            .bind(new.tier.get() as i16)
            .bind(&new.runtime)
            .bind(&new.model)
            .bind(Ts(now))
            .fetch_all(conn)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("INSERT returned no row".into()))
        }

        /// Fails unless `parent` is a live workspace.
        pub(super) async fn require_live_parent(
            conn: &mut <DB as sqlx::Database>::Connection,
            parent: WorkspaceId,
        ) -> StoreResult<()> {
            let live = sqlx::query("SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL")
                .bind(parent)
                .fetch_optional(conn)
                .await?
                .is_some();
            if live {
                Ok(())
            } else {
                Err(StoreError::UnknownParent(parent))
            }
        }

        /// Fails when making `parent` the parent of `id` would make
        /// `id` its own ancestor; the error carries the chain.
        pub(super) async fn refuse_cycle(
            conn: &mut <DB as sqlx::Database>::Connection,
            id: WorkspaceId,
            parent: WorkspaceId,
        ) -> StoreResult<()> {
            // Bounded, so even a corrupt (cyclic) table cannot make
            // this recurse forever.
            let chain: Vec<WorkspaceId> = sqlx::query_scalar(
                "WITH RECURSIVE up(id, parent_id, depth) AS ( \
                   SELECT id, parent_id, 0 FROM workspaces WHERE id = $1 \
                   UNION ALL \
                   SELECT w.id, w.parent_id, up.depth + 1 FROM workspaces w \
                   JOIN up ON w.id = up.parent_id WHERE up.depth < 10000 \
                 ) SELECT id FROM up ORDER BY depth",
            )
            .bind(parent)
            .fetch_all(conn)
            .await?;
            match chain.iter().position(|a| *a == id) {
                Some(at) => {
                    let mut cycle = vec![id];
                    cycle.extend_from_slice(&chain[..=at]);
                    Err(StoreError::Cycle(cycle))
                }
                None => Ok(()),
            }
        }
    }

    #[async_trait]
    impl WorkspaceStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(workspace_id = %id))]
        async fn create_workspace(
            &self,
            id: WorkspaceId,
            new: &NewWorkspace,
            token: TokenKey,
            now: DateTime<Utc>,
        ) -> StoreResult<Workspace> {
            let mut tx = self.write_tx().await?;
            if let Some(parent) = new.parent_id {
                DB::lock_tree(&mut tx).await?;
                Self::require_live_parent(&mut tx, parent).await?;
            }
            let row = Self::insert_workspace(&mut tx, id, new, now).await?;
            Self::insert_token(&mut tx, id, token, now).await?;
            tx.commit().await?;
            row.try_into()
        }

        async fn get_workspace(&self, id: WorkspaceId) -> StoreResult<Option<Workspace>> {
            let row: Option<WorkspaceRow> =
                sqlx::query_as("SELECT * FROM workspaces WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(TryInto::try_into).transpose()
        }

        async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>> {
            let rows: Vec<WorkspaceRow> =
                sqlx::query_as(
                    "SELECT * FROM workspaces WHERE removed_at IS NULL ORDER BY created_at, id",
                )
                    .fetch_all(&self.pool)
                    .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %id))]
        async fn update_workspace(
            &self,
            id: WorkspaceId,
            update: &UpdateWorkspace,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<Workspace>> {
            let mut tx = self.write_tx().await?;
            if let Some(Some(parent)) = update.parent_id {
                DB::lock_tree(&mut tx).await?;
                Self::require_live_parent(&mut tx, parent).await?;
                Self::refuse_cycle(&mut tx, id, parent).await?;
            }
            let row: Option<WorkspaceRow> = sqlx::query_as(
                "UPDATE workspaces SET \
                   name = COALESCE($2, name), \
                   delivery_mode = COALESCE($3, delivery_mode), \
                   url = CASE WHEN $4 THEN $5 ELSE url END, \
                   agent_card = COALESCE($6, agent_card), \
                   parent_id = CASE WHEN $8 THEN $9 ELSE parent_id END, \
                   collapsed = COALESCE($10, collapsed), \
                   tier = COALESCE($11, tier), \
                   runtime = COALESCE($12, runtime), \
                   model = COALESCE($13, model), \
                   updated_at = $7 \
                 WHERE id = $1 AND removed_at IS NULL RETURNING *",
            )
            .bind(id)
            .bind(&update.name)
            .bind(update.delivery_mode.map(DeliveryMode::as_str))
            .bind(update.url.is_some())
            .bind(update.url.clone().flatten())
            .bind(update.agent_card.as_ref().map(Json))
            .bind(Ts(now))
            .bind(update.parent_id.is_some())
            .bind(update.parent_id.flatten())
            .bind(update.collapsed)
            .bind(update.tier.map(|t| t.get() as i16))
            .bind(&update.runtime)
            .bind(&update.model)
            .fetch_all(&mut *tx)
            .await?
            .pop();
            tx.commit().await?;
            row.map(TryInto::try_into).transpose()
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %id, cascade))]
        async fn remove_workspace(
            &self,
            id: WorkspaceId,
            cascade: bool,
            now: DateTime<Utc>,
        ) -> StoreResult<Removal> {
            let mut tx = self.write_tx().await?;
            DB::lock_tree(&mut tx).await?;
            if !Self::lock_workspace(&mut tx, id).await? {
                return Ok(Removal::NotFound);
            }
            let children: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM workspaces WHERE parent_id = $1 AND removed_at IS NULL",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if children > 0 && !cascade {
                return Ok(Removal::HasLiveChildren(children));
            }
            // The live subtree, the workspace itself first.
            let subtree: Vec<(WorkspaceId, Option<WorkspaceId>)> = sqlx::query_as(
                "WITH RECURSIVE sub(id, parent_id, depth) AS ( \
                   SELECT id, parent_id, 0 FROM workspaces WHERE id = $1 \
                   UNION ALL \
                   SELECT w.id, w.parent_id, sub.depth + 1 FROM workspaces w \
                   JOIN sub ON w.parent_id = sub.id \
                   WHERE w.removed_at IS NULL AND sub.depth < 10000 \
                 ) SELECT id, parent_id FROM sub ORDER BY depth",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for (ws, _) in &subtree {
                sqlx::query(
                    "UPDATE workspaces SET removed_at = $2, updated_at = $2 WHERE id = $1",
                )
                .bind(ws)
                .bind(Ts(now))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE workspace_auth_tokens SET revoked_at = $2 \
                     WHERE workspace_id = $1 AND revoked_at IS NULL",
                )
                .bind(ws)
                .bind(Ts(now))
                .execute(&mut *tx)
                .await?;
            }
            // After every row above is written (and locked): a delegation
            // created meanwhile committed before, so this read sees it, and
            // the callers' inbox locks come after the workspace rows, in
            // the order a create takes them.
            let mut failed = Vec::new();
            for (ws, _) in &subtree {
                failed.extend(Self::fail_callee_delegations_in(&mut tx, *ws, now).await?);
            }
            tx.commit().await?;
            Ok(Removal::Removed {
                workspaces: subtree,
                failed,
            })
        }

        async fn ancestor_chain(&self, id: WorkspaceId) -> StoreResult<Vec<WorkspaceId>> {
            // Walks parent links up from `id`, one level per step, stopping
            // at the bound (a cycle, were one ever written, ends there too).
            Ok(sqlx::query_scalar(
                "WITH RECURSIVE chain (id, parent_id, depth) AS ( \
                   SELECT id, parent_id, 0 FROM workspaces WHERE id = $1 \
                   UNION ALL \
                   SELECT w.id, w.parent_id, c.depth + 1 FROM workspaces w \
                   JOIN chain c ON w.id = c.parent_id \
                   WHERE c.depth < $2 AND w.removed_at IS NULL) \
                 SELECT id FROM chain WHERE depth > 0 ORDER BY depth",
            )
            .bind(id)
            .bind(crate::domain::team::MAX_LEVELS as i32)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn child_ids(&self, id: WorkspaceId) -> StoreResult<Vec<WorkspaceId>> {
            Ok(sqlx::query_scalar(
                "SELECT id FROM workspaces WHERE parent_id = $1 AND removed_at IS NULL \
                 ORDER BY created_at, id",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %id, paused))]
        async fn set_paused(
            &self,
            id: WorkspaceId,
            paused: bool,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<Workspace>> {
            let mut tx = self.write_tx().await?;
            // Pausing twice keeps the first pause time.
            let row: Option<WorkspaceRow> = sqlx::query_as(
                "UPDATE workspaces SET \
                   paused_at = CASE WHEN $2 THEN COALESCE(paused_at, $3) END, \
                   updated_at = $3 \
                 WHERE id = $1 AND removed_at IS NULL RETURNING *",
            )
            .bind(id)
            .bind(paused)
            .bind(Ts(now))
            .fetch_all(&mut *tx)
            .await?
            .pop();
            tx.commit().await?;
            row.map(TryInto::try_into).transpose()
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %id))]
        async fn request_restart(
            &self,
            id: WorkspaceId,
            row: &NewActivity,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<(Workspace, Activity)>> {
            let mut tx = self.write_tx().await?;
            let ws: Option<WorkspaceRow> = sqlx::query_as(
                "UPDATE workspaces SET active_tasks = 0, updated_at = $2 \
                 WHERE id = $1 AND removed_at IS NULL RETURNING *",
            )
            .bind(id)
            .bind(Ts(now))
            .fetch_all(&mut *tx)
            .await?
            .pop();
            let Some(ws) = ws else {
                return Ok(None);
            };
            let activity = Self::insert_activity_in(&mut tx, id, row, now).await?;
            tx.commit().await?;
            Ok(Some((ws.try_into()?, activity)))
        }

        #[tracing::instrument(skip_all, fields(nodes = nodes.len(), dry_run))]
        async fn import_org(
            &self,
            nodes: &[ImportNode],
            dry_run: bool,
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<ImportedNode>> {
            let mut tx = self.write_tx().await?;
            // Serializes imports: a second one waits here, then finds
            // every node the first one created.
            DB::lock_tree(&mut tx).await?;
            let mut out: Vec<ImportedNode> = Vec::with_capacity(nodes.len());
            for (i, node) in nodes.iter().enumerate() {
                let parent_id = node.parent.map(|p| out[p].id);
                // NULL parents compare equal: root nodes match roots.
                let existing: Option<WorkspaceId> = sqlx::query_scalar(
                    "SELECT id FROM workspaces \
                     WHERE parent_id IS NOT DISTINCT FROM $1 AND name = $2 \
                       AND removed_at IS NULL \
                     ORDER BY created_at, id LIMIT 1",
                )
                .bind(parent_id)
                .bind(&node.workspace.name)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(existing) = existing {
                    out.push(ImportedNode {
                        id: existing,
                        parent_id,
                        created: false,
                    });
                    continue;
                }
                let new = NewWorkspace {
                    parent_id,
                    ..node.workspace.clone()
                };
                // One microsecond apart: listings (oldest first) keep
                // the template's order.
                let at = now + chrono::Duration::microseconds(i as i64);
                Self::insert_workspace(&mut tx, node.id, &new, at).await?;
                Self::insert_token(&mut tx, node.id, node.token, at).await?;
                out.push(ImportedNode {
                    id: node.id,
                    parent_id,
                    created: true,
                });
            }
            if dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok(out)
        }

        #[tracing::instrument(skip_all)]
        async fn purge_removed(
            &self,
            removed_before: DateTime<Utc>,
            limit: i64,
        ) -> StoreResult<u64> {
            let mut tx = self.write_tx().await?;
            // A purged workspace's memories and keys go with it (they
            // carry no foreign key, like activity rows). Every workspace
            // past the cutoff is purged by this pass or the next batch,
            // so clearing all of theirs at once is exact.
            for table in ["memories", "memory_kv"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE workspace_id IN ( \
                       SELECT id FROM workspaces \
                       WHERE removed_at IS NOT NULL AND removed_at < $1)"
                ))
                .bind(Ts(removed_before))
                .execute(&mut *tx)
                .await?;
            }
            // Tokens go with the row (ON DELETE CASCADE); a child
            // purged later keeps a NULL parent (ON DELETE SET NULL).
            let sql = format!(
                "DELETE FROM workspaces WHERE id IN ( \
                   SELECT id FROM workspaces \
                   WHERE removed_at IS NOT NULL AND removed_at < $1 \
                   ORDER BY removed_at LIMIT $2{} \
                 )",
                DB::SKIP_LOCKED
            );
            let done = sqlx::query(&sql)
                .bind(Ts(removed_before))
                .bind(limit)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        }
    }
}
