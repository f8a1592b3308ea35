//! MCP Tasks: a delegation an MCP client made (`delegate_task`,
//! `delegate_task_async`) is a durable task whose id is the delegation id
//! and whose state is the ledger row's, so this area writes no table of its
//! own. What it adds is the caller's cancel (`tasks/cancel`): the ledger
//! row fails with [`CANCELED_BY_CALLER`] (the mark an A2A cancel leaves
//! too, so both read back as canceled) and the callee's inbox gets a notice,
//! in one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::delegations::{DelegationRow, Move};
use super::engine::Engine;
use super::sql::SqlStore;
use super::*;

/// How a caller's cancel ended.
// One value per request, moved once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum CallerCanceled {
    /// The ledger row moved to failed with [`CANCELED_BY_CALLER`] and the
    /// callee's notice was written.
    Applied {
        /// The move (with the caller's result row).
        moved: Transitioned,
        /// The callee's notice.
        notice: Activity,
    },
    /// The delegation is over already: nothing written.
    Over(Delegation),
    /// No delegation with this id made by this caller.
    NotFound,
}

/// The MCP tasks' writes. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait McpTaskStore: Send + Sync {
    /// Cancels a delegation `caller` made that is still in flight: its
    /// ledger row fails with [`CANCELED_BY_CALLER`] and `notice` is written
    /// to the callee's inbox, in one transaction. Another caller's
    /// delegation is [`CallerCanceled::NotFound`], whether or not it exists.
    async fn cancel_caller_delegation(
        &self,
        caller: WorkspaceId,
        id: DelegationId,
        notice: &NewActivity,
        now: DateTime<Utc>,
    ) -> StoreResult<CallerCanceled>;
}

engines! {
    #[async_trait]
    impl McpTaskStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(delegation_id = %id, caller_id = %caller))]
        async fn cancel_caller_delegation(
            &self,
            caller: WorkspaceId,
            id: DelegationId,
            notice: &NewActivity,
            now: DateTime<Utc>,
        ) -> StoreResult<CallerCanceled> {
            let mut tx = self.write_tx().await?;
            // Locked, so a racing answer of the callee either committed
            // before (the row is over: nothing to cancel) or waits and then
            // finds it failed.
            let sql = format!(
                "SELECT * FROM delegations WHERE id = $1 AND caller_id = $2{}",
                DB::ROW_LOCK
            );
            let row: Option<DelegationRow> = sqlx::query_as(&sql)
                .bind(id)
                .bind(caller.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(current) = row.map(Delegation::try_from).transpose()? else {
                return Ok(CallerCanceled::NotFound);
            };
            if current.status.is_terminal() {
                return Ok(CallerCanceled::Over(current));
            }
            let mv = Move {
                to: DelegationStatus::Failed,
                result_preview: current.result_preview.clone(),
                error_detail: Some(CANCELED_BY_CALLER.to_owned()),
                beat: false,
                from: &current,
            };
            let moved = Self::apply_move_in(&mut tx, mv, now).await?;
            let notice = Self::insert_activity_in(&mut tx, current.callee_id, notice, now).await?;
            tx.commit().await?;
            Ok(CallerCanceled::Applied { moved, notice })
        }
    }
}
