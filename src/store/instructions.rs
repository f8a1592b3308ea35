//! Platform instructions: the operator's rules and their resolution for
//! one workspace.
//!
//! Every change is ONE transaction that also writes an
//! `instructions_changed` inbox row for each live workspace the rule
//! applied to before or applies to after (every workspace for a global
//! rule, the team's subtree for a team rule, the one workspace otherwise),
//! so an agent whose instructions changed learns it, whatever restarts in
//! between. Resolution is one read: the workspace's ancestor chain (a
//! bounded recursive query) joined with the rules, in the order
//! `crate::domain::instruction` documents.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::inbox::{InboxItem, InstructionsChanged};
use crate::domain::instruction::InstructionScope;
use crate::domain::InstructionId;

/// A platform instruction as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// Its id.
    pub id: InstructionId,
    /// Whom it applies to.
    pub scope: InstructionScope,
    /// The team's lead or the workspace; `None` for global.
    pub scope_target: Option<WorkspaceId>,
    /// Its heading.
    pub title: String,
    /// Its Markdown.
    pub content: String,
    /// Within its group, higher first.
    pub priority: i32,
    /// Left out of resolution when false.
    pub enabled: bool,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// An instruction's fields, checked by the route.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInstruction {
    /// Whom it applies to.
    pub scope: InstructionScope,
    /// Set exactly when the scope needs a target.
    pub scope_target: Option<WorkspaceId>,
    /// 1 to 200 characters.
    pub title: String,
    /// At most 8 KiB.
    pub content: String,
    /// Within its group, higher first.
    pub priority: i32,
    /// Included in resolution.
    pub enabled: bool,
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum InstructionWrite {
    /// Written, with the `instructions_changed` rows of the affected
    /// workspaces' inboxes.
    Done(Instruction, Vec<Activity>),
    /// `scope_target` names no live workspace; nothing written.
    UnknownTarget(WorkspaceId),
    /// No instruction with that id.
    NotFound,
}

#[derive(sqlx::FromRow)]
struct InstructionRow {
    id: InstructionId,
    scope: String,
    scope_target: Option<WorkspaceId>,
    title: String,
    content: String,
    priority: i32,
    enabled: bool,
    created_at: Ts,
    updated_at: Ts,
}

impl TryFrom<InstructionRow> for Instruction {
    type Error = StoreError;
    fn try_from(r: InstructionRow) -> StoreResult<Self> {
        Ok(Instruction {
            scope: r
                .scope
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("instruction {}: {e}", r.id)))?,
            id: r.id,
            scope_target: r.scope_target,
            title: r.title,
            content: r.content,
            priority: r.priority,
            enabled: r.enabled,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        })
    }
}

const COLUMNS: &str =
    "id, scope, scope_target, title, content, priority, enabled, created_at, updated_at";

/// Platform instructions. Part of [`Store`]; both engines implement it.
#[async_trait]
pub trait InstructionStore: Send + Sync {
    /// Records a new instruction and tells the workspaces it applies to.
    async fn create_instruction(
        &self,
        new: &NewInstruction,
        now: DateTime<Utc>,
    ) -> StoreResult<InstructionWrite>;

    /// Every instruction: global, team, workspace; higher priority first.
    async fn list_instructions(&self) -> StoreResult<Vec<Instruction>>;

    /// One instruction.
    async fn get_instruction(&self, id: InstructionId) -> StoreResult<Option<Instruction>>;

    /// Replaces an instruction's fields and tells the workspaces it applied
    /// to before or applies to now.
    async fn update_instruction(
        &self,
        id: InstructionId,
        new: &NewInstruction,
        now: DateTime<Utc>,
    ) -> StoreResult<InstructionWrite>;

    /// Deletes an instruction and tells the workspaces it applied to;
    /// `Done` carries the row as it was.
    async fn delete_instruction(
        &self,
        id: InstructionId,
        now: DateTime<Utc>,
    ) -> StoreResult<InstructionWrite>;

    /// The enabled instructions that apply to `workspace`, in resolution
    /// order: global; then team rules of its ancestors from the root down
    /// to itself; then its own; each group by priority, higher first, ties
    /// older first.
    async fn resolve_instructions(&self, workspace: WorkspaceId) -> StoreResult<Vec<Instruction>>;
}

engines! {
    impl SqlStore<DB> {
        /// The live workspaces a rule of `scope`/`target` applies to.
        async fn instruction_audience(
            conn: &mut <DB as sqlx::Database>::Connection,
            scope: InstructionScope,
            target: Option<WorkspaceId>,
        ) -> StoreResult<Vec<WorkspaceId>> {
            let ids: Vec<WorkspaceId> = match scope {
                InstructionScope::Global => {
                    sqlx::query_scalar("SELECT id FROM workspaces WHERE removed_at IS NULL")
                        .fetch_all(&mut *conn)
                        .await?
                }
                InstructionScope::Team => {
                    sqlx::query_scalar(over_subtree!(
                        "SELECT w.id FROM sub JOIN workspaces w ON w.id = sub.id \
                         WHERE w.removed_at IS NULL"
                    ))
                    .bind(target)
                    .fetch_all(&mut *conn)
                    .await?
                }
                InstructionScope::Workspace => {
                    sqlx::query_scalar(
                        "SELECT id FROM workspaces WHERE id = $1 AND removed_at IS NULL",
                    )
                    .bind(target)
                    .fetch_all(&mut *conn)
                    .await?
                }
            };
            Ok(ids)
        }

        /// Writes the `instructions_changed` row of every workspace in
        /// `audience` (each once).
        async fn announce_instruction_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            mut audience: Vec<WorkspaceId>,
            id: InstructionId,
            change: &str,
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<Activity>> {
            audience.sort_by_key(|w| w.to_string());
            audience.dedup();
            let mut rows = Vec::with_capacity(audience.len());
            for workspace_id in audience {
                let item = InboxItem::InstructionsChanged(InstructionsChanged {
                    workspace_id,
                    instruction_id: id,
                    change: change.to_owned(),
                });
                rows.push(Self::insert_activity_in(conn, workspace_id, &item.row(), now).await?);
            }
            Ok(rows)
        }

        /// Whether `target` (when the scope has one) is a live workspace.
        async fn target_is_live(
            conn: &mut <DB as sqlx::Database>::Connection,
            new: &NewInstruction,
        ) -> StoreResult<Option<WorkspaceId>> {
            let Some(target) = new.scope_target else { return Ok(None) };
            let live: Option<(WorkspaceId,)> = sqlx::query_as(
                "SELECT id FROM workspaces WHERE id = $1 AND removed_at IS NULL",
            )
            .bind(target)
            .fetch_optional(&mut *conn)
            .await?;
            Ok(if live.is_some() { None } else { Some(target) })
        }
    }

    #[async_trait]
    impl InstructionStore for SqlStore<DB> {
        #[tracing::instrument(skip_all)]
        async fn create_instruction(
            &self,
            new: &NewInstruction,
            now: DateTime<Utc>,
        ) -> StoreResult<InstructionWrite> {
            let mut tx = self.write_tx().await?;
            if let Some(unknown) = Self::target_is_live(&mut tx, new).await? {
                tx.rollback().await?;
                return Ok(InstructionWrite::UnknownTarget(unknown));
            }
            let sql = format!(
                "INSERT INTO instructions ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {COLUMNS}"
            );
            let row: InstructionRow = sqlx::query_as(&sql)
                .bind(InstructionId::new())
                .bind(new.scope.as_str())
                .bind(new.scope_target)
                .bind(&new.title)
                .bind(&new.content)
                .bind(new.priority)
                .bind(new.enabled)
                .bind(Ts(now))
                .fetch_one(&mut *tx)
                .await?;
            let i = Instruction::try_from(row)?;
            let audience = Self::instruction_audience(&mut tx, i.scope, i.scope_target).await?;
            let inbox = Self::announce_instruction_in(&mut tx, audience, i.id, "created", now).await?;
            tx.commit().await?;
            Ok(InstructionWrite::Done(i, inbox))
        }

        async fn list_instructions(&self) -> StoreResult<Vec<Instruction>> {
            let sql = format!(
                "SELECT {COLUMNS} FROM instructions ORDER BY \
                   CASE scope WHEN 'global' THEN 0 WHEN 'team' THEN 1 ELSE 2 END, \
                   priority DESC, created_at, id"
            );
            let rows: Vec<InstructionRow> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
            rows.into_iter().map(Instruction::try_from).collect()
        }

        async fn get_instruction(&self, id: InstructionId) -> StoreResult<Option<Instruction>> {
            let sql = format!("SELECT {COLUMNS} FROM instructions WHERE id = $1");
            let row: Option<InstructionRow> = sqlx::query_as(&sql)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            row.map(Instruction::try_from).transpose()
        }

        #[tracing::instrument(skip_all, fields(instruction_id = %id))]
        async fn update_instruction(
            &self,
            id: InstructionId,
            new: &NewInstruction,
            now: DateTime<Utc>,
        ) -> StoreResult<InstructionWrite> {
            let mut tx = self.write_tx().await?;
            let sql = format!("SELECT {COLUMNS} FROM instructions WHERE id = $1{}", DB::ROW_LOCK);
            let before: Option<InstructionRow> =
                sqlx::query_as(&sql).bind(id).fetch_optional(&mut *tx).await?;
            let Some(before) = before.map(Instruction::try_from).transpose()? else {
                tx.rollback().await?;
                return Ok(InstructionWrite::NotFound);
            };
            if let Some(unknown) = Self::target_is_live(&mut tx, new).await? {
                tx.rollback().await?;
                return Ok(InstructionWrite::UnknownTarget(unknown));
            }
            let sql = format!(
                "UPDATE instructions SET scope = $2, scope_target = $3, title = $4, \
                   content = $5, priority = $6, enabled = $7, updated_at = $8 \
                 WHERE id = $1 RETURNING {COLUMNS}"
            );
            let row: InstructionRow = sqlx::query_as(&sql)
                .bind(id)
                .bind(new.scope.as_str())
                .bind(new.scope_target)
                .bind(&new.title)
                .bind(&new.content)
                .bind(new.priority)
                .bind(new.enabled)
                .bind(Ts(now))
                .fetch_one(&mut *tx)
                .await?;
            let after = Instruction::try_from(row)?;
            let mut audience =
                Self::instruction_audience(&mut tx, before.scope, before.scope_target).await?;
            audience
                .extend(Self::instruction_audience(&mut tx, after.scope, after.scope_target).await?);
            let inbox = Self::announce_instruction_in(&mut tx, audience, id, "updated", now).await?;
            tx.commit().await?;
            Ok(InstructionWrite::Done(after, inbox))
        }

        #[tracing::instrument(skip_all, fields(instruction_id = %id))]
        async fn delete_instruction(
            &self,
            id: InstructionId,
            now: DateTime<Utc>,
        ) -> StoreResult<InstructionWrite> {
            let mut tx = self.write_tx().await?;
            let sql = format!("DELETE FROM instructions WHERE id = $1 RETURNING {COLUMNS}");
            let row: Option<InstructionRow> =
                sqlx::query_as(&sql).bind(id).fetch_optional(&mut *tx).await?;
            let Some(gone) = row.map(Instruction::try_from).transpose()? else {
                tx.rollback().await?;
                return Ok(InstructionWrite::NotFound);
            };
            let audience = Self::instruction_audience(&mut tx, gone.scope, gone.scope_target).await?;
            let inbox = Self::announce_instruction_in(&mut tx, audience, id, "deleted", now).await?;
            tx.commit().await?;
            Ok(InstructionWrite::Done(gone, inbox))
        }

        async fn resolve_instructions(&self, workspace: WorkspaceId) -> StoreResult<Vec<Instruction>> {
            // `up` is the workspace (depth 0) and its ancestors; a team
            // rule applies when its target is on that chain, root first
            // (the greatest depth). Bounded against a corrupt cycle.
            let sql = format!(
                "WITH RECURSIVE up(id, parent_id, depth) AS ( \
                   SELECT id, parent_id, 0 FROM workspaces WHERE id = $1 \
                   UNION ALL \
                   SELECT w.id, w.parent_id, up.depth + 1 FROM workspaces w \
                   JOIN up ON w.id = up.parent_id WHERE up.depth < 10000 \
                 ) \
                 SELECT {cols} FROM instructions i LEFT JOIN up ON i.scope_target = up.id \
                 WHERE i.enabled AND (i.scope = 'global' \
                   OR (i.scope = 'team' AND up.id IS NOT NULL) \
                   OR (i.scope = 'workspace' AND i.scope_target = $1)) \
                 ORDER BY CASE i.scope WHEN 'global' THEN 0 WHEN 'team' THEN 1 ELSE 2 END, \
                   up.depth DESC, i.priority DESC, i.created_at, i.id",
                cols = COLUMNS
                    .split(", ")
                    .map(|c| format!("i.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let rows: Vec<InstructionRow> = sqlx::query_as(&sql)
                .bind(workspace)
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter().map(Instruction::try_from).collect()
        }
    }
}
