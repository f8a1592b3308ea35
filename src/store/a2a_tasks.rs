//! A2A tasks: a task sent through `POST /workspaces/:id/a2a` to a poll
//! (or paused) workspace is a delegation ledger row (task id = delegation
//! id) plus one `a2a_tasks` row for what the ledger has no column for (the
//! context id, the message id, the cancel mark). Created, listed and
//! canceled here, each in one transaction with the ledger and inbox rows it
//! goes with.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::delegations::{DelegationRow, Move};
use super::sql::{SqlStore, Ts};
use super::*;

/// The `error_detail` a canceled task's ledger row is failed with.
pub const CANCELED_BY_CALLER: &str = "canceled by the caller";

/// A task: its ledger row and its A2A columns.
#[derive(Debug, Clone, PartialEq)]
pub struct A2aTask {
    /// The ledger row (its id is the task id).
    pub delegation: Delegation,
    /// The A2A contextId.
    pub context_id: String,
    /// The messageId of the message that made it.
    pub message_id: String,
    /// When the caller canceled it.
    pub canceled_at: Option<DateTime<Utc>>,
    /// The action of the pending approval request the task waits on: one
    /// its callee made with the task's id as `task_id` (A2A's
    /// `input-required` while the task is in flight).
    pub awaiting_approval: Option<String>,
}

/// Which tasks to list: always one callee's, newest first.
#[derive(Debug, Clone)]
pub struct A2aTaskFilter {
    /// The agent the tasks were sent to.
    pub callee: WorkspaceId,
    /// Only those this caller sent (`None`: every caller's).
    pub caller: Option<Caller>,
    /// Only those of this context.
    pub context_id: Option<String>,
    /// Only ledger rows in one of these statuses (empty: any).
    pub statuses: Vec<DelegationStatus>,
    /// Only canceled (`Some(true)`) or not canceled (`Some(false)`) ones.
    pub canceled: Option<bool>,
    /// Only those waiting on a pending approval (`Some(true)`) or not
    /// (`Some(false)`).
    pub awaiting_approval: Option<bool>,
    /// Only those after this task in the listing order (the page token).
    pub after: Option<DelegationId>,
    /// At most this many.
    pub limit: i64,
}

/// How a cancel ended.
// One value per request, moved once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Canceled {
    /// The ledger row moved to failed, the task is marked canceled, and
    /// the callee's inbox row telling it so was written.
    Applied {
        /// The move (with the caller's result row, if any).
        moved: Transitioned,
        /// The callee's notice.
        notice: Activity,
    },
    /// The task is over already: nothing written.
    Over(A2aTask),
    /// No such task of this callee.
    NotFound,
}

/// `a2a_tasks` joined to its ledger row.
#[derive(sqlx::FromRow)]
struct TaskRow {
    #[sqlx(flatten)]
    delegation: DelegationRow,
    context_id: String,
    message_id: String,
    canceled_at: Option<Ts>,
    awaiting_approval: Option<String>,
}

impl TryFrom<TaskRow> for A2aTask {
    type Error = StoreError;
    fn try_from(r: TaskRow) -> StoreResult<Self> {
        Ok(A2aTask {
            delegation: r.delegation.try_into()?,
            context_id: r.context_id,
            message_id: r.message_id,
            canceled_at: r.canceled_at.map(|t| t.0),
            awaiting_approval: r.awaiting_approval,
        })
    }
}

/// The pending approval requests a task waits on: its callee's, naming
/// the task's id (the delegation id) as `task_id`. Index
/// `idx_approvals_pending_task`. A macro, so the SELECT below can be one
/// `concat!` of it.
macro_rules! pending_for_task {
    () => {
        "FROM approvals ap WHERE ap.workspace_id = d.callee_id \
         AND ap.status = 'pending' AND ap.task_id = CAST(d.id AS TEXT)"
    };
}

/// [`pending_for_task!`] for the listing's filter.
const PENDING_FOR_TASK: &str = pending_for_task!();

/// A task row: the ledger row, the A2A columns, and the action of the
/// oldest pending approval request it waits on (NULL: none).
const SELECT_TASK: &str = concat!(
    "SELECT d.*, t.context_id, t.message_id, t.canceled_at, (SELECT ap.action ",
    pending_for_task!(),
    " ORDER BY ap.created_at LIMIT 1) AS awaiting_approval \
     FROM a2a_tasks t JOIN delegations d ON d.id = t.id"
);

/// The A2A tasks. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait A2aTaskStore: Send + Sync {
    /// Creates the ledger row, the callee's inbox row, the task row and
    /// the push notification config the message came with (its `task_id`
    /// is the new delegation's) in one transaction; a repeat of the
    /// caller's key answers the existing delegation (`Existing`) and writes
    /// nothing.
    async fn create_a2a_task(
        &self,
        new: &NewDelegation,
        inbox: &NewActivity,
        context_id: &str,
        message_id: &str,
        push: Option<&PushConfig>,
        now: DateTime<Utc>,
    ) -> StoreResult<Delegated>;

    /// One task of `callee`.
    async fn get_a2a_task(
        &self,
        callee: WorkspaceId,
        id: DelegationId,
    ) -> StoreResult<Option<A2aTask>>;

    /// Tasks, newest first, with the number matching the filter (without
    /// the page token and the limit).
    async fn list_a2a_tasks(&self, filter: &A2aTaskFilter) -> StoreResult<(Vec<A2aTask>, i64)>;

    /// Cancels a task in flight: its ledger row fails with
    /// [`CANCELED_BY_CALLER`], it is marked canceled, and `notice` is
    /// written to the callee's inbox, in one transaction.
    async fn cancel_a2a_task(
        &self,
        callee: WorkspaceId,
        id: DelegationId,
        notice: &NewActivity,
        now: DateTime<Utc>,
    ) -> StoreResult<Canceled>;
}

/// The WHERE clause of a listing and its count (binds in order: callee,
/// caller?, context?, statuses…, after?).
fn list_where(f: &A2aTaskFilter) -> String {
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let mut sql = String::from(" WHERE d.callee_id = $1");
    if f.caller.is_some() {
        sql += &format!(" AND d.caller_id = {}", next());
    }
    if f.context_id.is_some() {
        sql += &format!(" AND t.context_id = {}", next());
    }
    if !f.statuses.is_empty() {
        let list: Vec<String> = f.statuses.iter().map(|_| next()).collect();
        sql += &format!(" AND d.status IN ({})", list.join(", "));
    }
    match f.canceled {
        Some(true) => sql += " AND t.canceled_at IS NOT NULL",
        Some(false) => sql += " AND t.canceled_at IS NULL",
        None => {}
    }
    match f.awaiting_approval {
        Some(true) => sql += &format!(" AND EXISTS (SELECT 1 {PENDING_FOR_TASK})"),
        Some(false) => sql += &format!(" AND NOT EXISTS (SELECT 1 {PENDING_FOR_TASK})"),
        None => {}
    }
    sql
}

engines! {
    #[async_trait]
    impl A2aTaskStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(delegation_id = %new.id, callee_id = %new.callee_id))]
        async fn create_a2a_task(
            &self,
            new: &NewDelegation,
            inbox: &NewActivity,
            context_id: &str,
            message_id: &str,
            push: Option<&PushConfig>,
            now: DateTime<Utc>,
        ) -> StoreResult<Delegated> {
            let mut tx = self.write_tx().await?;
            // As create_delegation: the callee's row locked, so a removal
            // either came first or fails this row with the others.
            if !Self::lock_workspace(&mut tx, new.callee_id).await? {
                return Ok(Delegated::CalleeGone);
            }
            let Some(row) = Self::insert_delegation_in(&mut tx, new, now).await? else {
                let existing: DelegationRow = sqlx::query_as(
                    "SELECT * FROM delegations WHERE caller_id = $1 AND idempotency_key = $2",
                )
                .bind(new.caller.to_string())
                .bind(&new.idempotency_key)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(Delegated::Existing(existing.try_into()?));
            };
            sqlx::query("INSERT INTO a2a_tasks (id, context_id, message_id) VALUES ($1, $2, $3)")
                .bind(new.id)
                .bind(context_id)
                .bind(message_id)
                .execute(&mut *tx)
                .await?;
            if let Some(push) = push {
                let config = PushConfig {
                    task_id: new.id,
                    ..push.clone()
                };
                Self::insert_push_config_in(&mut tx, &config).await?;
            }
            let inbox = Self::insert_activity_in(&mut tx, new.callee_id, inbox, now).await?;
            tx.commit().await?;
            Ok(Delegated::Created {
                delegation: row.try_into()?,
                inbox,
            })
        }

        async fn get_a2a_task(
            &self,
            callee: WorkspaceId,
            id: DelegationId,
        ) -> StoreResult<Option<A2aTask>> {
            let row: Option<TaskRow> =
                sqlx::query_as(&format!("{SELECT_TASK} WHERE d.id = $1 AND d.callee_id = $2"))
                    .bind(id)
                    .bind(callee)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(TryInto::try_into).transpose()
        }

        async fn list_a2a_tasks(
            &self,
            f: &A2aTaskFilter,
        ) -> StoreResult<(Vec<A2aTask>, i64)> {
            let filter = list_where(f);
            let binds = 1 + usize::from(f.caller.is_some())
                + usize::from(f.context_id.is_some())
                + f.statuses.len();
            let mut sql = format!("{SELECT_TASK}{filter}");
            if f.after.is_some() {
                // Keyset paging: strictly after the token's row in the
                // (created_at, id) DESC order, stable under new inserts.
                sql += &format!(
                    " AND (d.created_at, d.id) < (SELECT created_at, id FROM delegations WHERE id = ${})",
                    binds + 1
                );
            }
            sql += &format!(
                " ORDER BY d.created_at DESC, d.id DESC LIMIT ${}",
                binds + 1 + usize::from(f.after.is_some())
            );
            let count_sql = format!(
                "SELECT count(*) FROM a2a_tasks t JOIN delegations d ON d.id = t.id{filter}"
            );
            let mut rows = sqlx::query_as::<_, TaskRow>(&sql).bind(f.callee);
            let mut count = sqlx::query_scalar::<_, i64>(&count_sql).bind(f.callee);
            if let Some(caller) = f.caller {
                rows = rows.bind(caller.to_string());
                count = count.bind(caller.to_string());
            }
            if let Some(ctx) = &f.context_id {
                rows = rows.bind(ctx.clone());
                count = count.bind(ctx.clone());
            }
            for s in &f.statuses {
                rows = rows.bind(s.as_str());
                count = count.bind(s.as_str());
            }
            if let Some(after) = f.after {
                rows = rows.bind(after);
            }
            let rows = rows.bind(f.limit).fetch_all(&self.pool).await?;
            let total = count.fetch_one(&self.pool).await?;
            let tasks = rows
                .into_iter()
                .map(TryInto::try_into)
                .collect::<StoreResult<Vec<_>>>()?;
            Ok((tasks, total))
        }

        #[tracing::instrument(skip_all, fields(delegation_id = %id, callee_id = %callee))]
        async fn cancel_a2a_task(
            &self,
            callee: WorkspaceId,
            id: DelegationId,
            notice: &NewActivity,
            now: DateTime<Utc>,
        ) -> StoreResult<Canceled> {
            let mut tx = self.write_tx().await?;
            let Some(current) = Self::lock_delegation(&mut tx, callee, id).await? else {
                return Ok(Canceled::NotFound);
            };
            let row: Option<TaskRow> = sqlx::query_as(&format!("{SELECT_TASK} WHERE d.id = $1"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(task) = row.map(A2aTask::try_from).transpose()? else {
                return Ok(Canceled::NotFound);
            };
            if current.status.is_terminal() {
                return Ok(Canceled::Over(task));
            }
            let mv = Move {
                to: DelegationStatus::Failed,
                result_preview: current.result_preview.clone(),
                error_detail: Some(CANCELED_BY_CALLER.to_owned()),
                beat: false,
                from: &current,
            };
            let moved = Self::apply_move_in(&mut tx, mv, now).await?;
            sqlx::query("UPDATE a2a_tasks SET canceled_at = $2 WHERE id = $1")
                .bind(id)
                .bind(Ts(now))
                .execute(&mut *tx)
                .await?;
            let notice = Self::insert_activity_in(&mut tx, callee, notice, now).await?;
            tx.commit().await?;
            Ok(Canceled::Applied { moved, notice })
        }
    }
}
