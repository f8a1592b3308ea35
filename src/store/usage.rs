//! Usage and budgets: token and cost sums per workspace, UTC day and model
//! (`usage_daily`), the operator's monthly ceilings and the heartbeat's
//! reported spend (`workspace_budgets`), and the one budget check every
//! path that starts work calls ([`UsageStore::budget_refusal`], and
//! `over_budget_in` inside the scheduler's fire transaction).
//!
//! A workspace's spend this month is the larger of what its heartbeat last
//! reported this month and what its recorded usage sums to (the two are
//! the same money seen twice, so they are never added). A budget on a
//! workspace covers its whole subtree: the spend it is held against is the
//! sum over the workspace and every descendant.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::SqlStore;
use super::*;
use crate::domain::usage::{self, Usage};

/// One recorded report, priced.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// The report.
    pub usage: Usage,
    /// Its cost in micro-USD (the agent's figure or the price table's).
    pub cost_micros: i64,
}

/// Sums of usage under one key (a day, a model, a workspace or a team).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageTotals {
    /// The group's key: `YYYY-MM-DD`, a model name, or a workspace id.
    pub key: String,
    /// Tokens sent to models.
    pub input_tokens: i64,
    /// Tokens models produced.
    pub output_tokens: i64,
    /// Reports summed.
    pub calls: i64,
    /// Cost in micro-USD.
    pub cost_micros: i64,
}

/// How one workspace's usage is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    /// One row per UTC day.
    Day,
    /// One row per model.
    Model,
}

/// How usage across workspaces is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetGroup {
    /// One row per workspace.
    Workspace,
    /// One row per team: the root of each workspace's tree.
    Team,
    /// One row per UTC day.
    Day,
}

/// A budget that applies to a workspace: its own or an ancestor's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetLine {
    /// The workspace the ceiling is set on.
    pub owner: WorkspaceId,
    /// The ceiling in cents.
    pub limit: i64,
    /// The owner's subtree's spend this month, in cents.
    pub spend: i64,
    /// The month its 80 % warning was last raised in.
    pub warned_month: Option<String>,
}

/// A workspace's own budget as `GET /workspaces/:id/budget` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Its own ceiling in cents.
    pub limit: Option<i64>,
    /// Its subtree's spend this month, in cents.
    pub spend: i64,
}

#[derive(sqlx::FromRow)]
struct SpendRow {
    recorded: i64,
    reported: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct ChainRow {
    id: WorkspaceId,
    budget_limit: Option<i64>,
    warned_month: Option<String>,
}

const SUMS: &str = "CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
     CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
     CAST(SUM(calls) AS BIGINT) AS calls, CAST(SUM(cost_micros) AS BIGINT) AS cost_micros";

/// Usage sums and budgets. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds one report to the workspace's row of `now`'s UTC day and the
    /// report's model (one call).
    async fn record_usage(
        &self,
        workspace_id: WorkspaceId,
        record: &UsageRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Keeps the heartbeat's `monthly_spend` (cents) for `now`'s month.
    async fn report_monthly_spend(
        &self,
        workspace_id: WorkspaceId,
        cents: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// One workspace's sums between two days (both included), by key.
    async fn workspace_usage(
        &self,
        workspace_id: WorkspaceId,
        from: &str,
        to: &str,
        group: UsageGroup,
    ) -> StoreResult<Vec<UsageTotals>>;

    /// The sums of `root` and every descendant between two days (both
    /// included), by key: what a budget on `root` is held against, as a
    /// team's usage panel shows it.
    async fn subtree_usage(
        &self,
        root: WorkspaceId,
        from: &str,
        to: &str,
        group: UsageGroup,
    ) -> StoreResult<Vec<UsageTotals>>;

    /// Every workspace's sums between two days (both included), by key.
    async fn fleet_usage(
        &self,
        from: &str,
        to: &str,
        group: FleetGroup,
    ) -> StoreResult<Vec<UsageTotals>>;

    /// Sets (or with `None` lifts) the workspace's own ceiling in cents.
    async fn set_budget_limit(
        &self,
        workspace_id: WorkspaceId,
        limit: Option<i64>,
    ) -> StoreResult<()>;

    /// The workspace's own ceiling and its subtree's spend in `now`'s month.
    async fn budget(&self, workspace_id: WorkspaceId, now: DateTime<Utc>) -> StoreResult<Budget>;

    /// Every ceiling that applies to the workspace (its own, then each
    /// ancestor's), with the spend it is held against.
    async fn budget_lines(
        &self,
        workspace_id: WorkspaceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<BudgetLine>>;

    /// Marks `owner`'s 80 % warning as raised in `now`'s month; false when
    /// it already was (another report raised it first).
    async fn mark_budget_warned(&self, owner: WorkspaceId, now: DateTime<Utc>)
        -> StoreResult<bool>;

    /// Why new work for the workspace is refused, when a ceiling that
    /// applies to it is spent: the sentence of the 402.
    async fn budget_refusal(
        &self,
        workspace_id: WorkspaceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<String>>;
}

/// The sentence of a spent budget.
fn refusal(target: WorkspaceId, line: &BudgetLine) -> String {
    let whose = if line.owner == target {
        "its".to_owned()
    } else {
        format!("its team's (set on {})", line.owner)
    };
    format!(
        "budget exceeded: workspace {target} has spent {} of {} cents of {whose} monthly budget",
        line.spend, line.limit
    )
}

engines! {
    impl SqlStore<DB> {
        /// The spend this month, in cents, of `root` and its subtree.
        async fn subtree_spend_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            root: WorkspaceId,
            now: DateTime<Utc>,
        ) -> StoreResult<i64> {
            let (first, next) = usage::month_bounds(now);
            let rows: Vec<SpendRow> = sqlx::query_as(over_subtree!(
                "SELECT \
                   CAST(COALESCE((SELECT SUM(u.cost_micros) FROM usage_daily u \
                     WHERE u.workspace_id = sub.id AND u.day >= $2 AND u.day < $3), 0) AS BIGINT) \
                     AS recorded, \
                   (SELECT b.reported_spend FROM workspace_budgets b \
                     WHERE b.workspace_id = sub.id AND b.reported_month = $4) AS reported \
                 FROM sub"
            ))
            .bind(root)
            .bind(&first)
            .bind(&next)
            .bind(usage::month_of(now))
            .fetch_all(&mut *conn)
            .await?;
            Ok(rows
                .iter()
                .map(|r| usage::micros_to_cents(r.recorded).max(r.reported.unwrap_or(0)))
                .sum())
        }

        /// Every ceiling on the workspace or an ancestor, nearest first.
        async fn budget_lines_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            workspace_id: WorkspaceId,
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<BudgetLine>> {
            let chain: Vec<ChainRow> = sqlx::query_as(
                "WITH RECURSIVE up(id, parent_id, depth) AS ( \
                   SELECT id, parent_id, 0 FROM workspaces WHERE id = $1 \
                   UNION ALL \
                   SELECT w.id, w.parent_id, up.depth + 1 FROM workspaces w \
                   JOIN up ON w.id = up.parent_id WHERE up.depth < 10000 \
                 ) SELECT up.id, b.budget_limit, b.warned_month FROM up \
                 JOIN workspace_budgets b ON b.workspace_id = up.id \
                 WHERE b.budget_limit IS NOT NULL ORDER BY up.depth",
            )
            .bind(workspace_id)
            .fetch_all(&mut *conn)
            .await?;
            let mut lines = Vec::with_capacity(chain.len());
            for row in chain {
                let spend = Self::subtree_spend_in(&mut *conn, row.id, now).await?;
                lines.push(BudgetLine {
                    owner: row.id,
                    limit: row.budget_limit.unwrap_or_default(),
                    spend,
                    warned_month: row.warned_month,
                });
            }
            Ok(lines)
        }

        /// Whether any workspace has a budget at all: when none has, a
        /// batch of fires skips the per-fire walk up the tree.
        pub(super) async fn any_budget_in(
            conn: &mut <DB as sqlx::Database>::Connection,
        ) -> StoreResult<bool> {
            let any: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM workspace_budgets WHERE budget_limit IS NOT NULL)",
            )
            .fetch_one(&mut *conn)
            .await?;
            Ok(any)
        }

        /// The refusal of new work for the workspace, inside a transaction
        /// (the scheduler's fire): the first spent ceiling that applies.
        pub(super) async fn over_budget_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            workspace_id: WorkspaceId,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<String>> {
            let lines = Self::budget_lines_in(conn, workspace_id, now).await?;
            Ok(lines
                .iter()
                .find(|l| l.spend >= l.limit)
                .map(|l| refusal(workspace_id, l)))
        }
    }

    #[async_trait]
    impl UsageStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn record_usage(
            &self,
            workspace_id: WorkspaceId,
            record: &UsageRecord,
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            let mut tx = self.write_tx().await?;
            sqlx::query(
                "INSERT INTO usage_daily (workspace_id, day, model, input_tokens, output_tokens, \
                   calls, cost_micros) VALUES ($1, $2, $3, $4, $5, 1, $6) \
                 ON CONFLICT (workspace_id, day, model) DO UPDATE SET \
                   input_tokens = usage_daily.input_tokens + excluded.input_tokens, \
                   output_tokens = usage_daily.output_tokens + excluded.output_tokens, \
                   calls = usage_daily.calls + 1, \
                   cost_micros = usage_daily.cost_micros + excluded.cost_micros",
            )
            .bind(workspace_id)
            .bind(usage::day_of(now))
            .bind(&record.usage.model)
            .bind(record.usage.input_tokens)
            .bind(record.usage.output_tokens)
            .bind(record.cost_micros)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn report_monthly_spend(
            &self,
            workspace_id: WorkspaceId,
            cents: i64,
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            let mut tx = self.write_tx().await?;
            sqlx::query(
                "INSERT INTO workspace_budgets (workspace_id, reported_spend, reported_month) \
                 VALUES ($1, $2, $3) ON CONFLICT (workspace_id) DO UPDATE SET \
                   reported_spend = excluded.reported_spend, reported_month = excluded.reported_month",
            )
            .bind(workspace_id)
            .bind(cents)
            .bind(usage::month_of(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn workspace_usage(
            &self,
            workspace_id: WorkspaceId,
            from: &str,
            to: &str,
            group: UsageGroup,
        ) -> StoreResult<Vec<UsageTotals>> {
            let key = match group {
                UsageGroup::Day => "day",
                UsageGroup::Model => "model",
            };
            let sql = format!(
                "SELECT {key} AS key, {SUMS} FROM usage_daily \
                 WHERE workspace_id = $1 AND day >= $2 AND day <= $3 GROUP BY {key} ORDER BY {key}"
            );
            Ok(sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?)
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %root))]
        async fn subtree_usage(
            &self,
            root: WorkspaceId,
            from: &str,
            to: &str,
            group: UsageGroup,
        ) -> StoreResult<Vec<UsageTotals>> {
            let key = match group {
                UsageGroup::Day => "day",
                UsageGroup::Model => "model",
            };
            // The same walk down as the budget's spend.
            let sql = format!(
                over_subtree!(
                    "SELECT {key} AS key, {sums} FROM usage_daily \
                     JOIN sub ON sub.id = usage_daily.workspace_id \
                     WHERE day >= $2 AND day <= $3 GROUP BY {key} ORDER BY {key}"
                ),
                key = key,
                sums = SUMS
            );
            Ok(sqlx::query_as(&sql)
                .bind(root)
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?)
        }

        #[tracing::instrument(skip_all)]
        async fn fleet_usage(
            &self,
            from: &str,
            to: &str,
            group: FleetGroup,
        ) -> StoreResult<Vec<UsageTotals>> {
            let sql = match group {
                FleetGroup::Day | FleetGroup::Workspace => {
                    let key = if group == FleetGroup::Day { "day" } else { "CAST(workspace_id AS TEXT)" };
                    format!(
                        "SELECT {key} AS key, {SUMS} FROM usage_daily \
                         WHERE day >= $1 AND day <= $2 GROUP BY {key} ORDER BY {key}"
                    )
                }
                // A team is the tree under a root workspace (no parent).
                FleetGroup::Team => format!(
                    "WITH RECURSIVE tree(id, top, depth) AS ( \
                       SELECT id, id, 0 FROM workspaces WHERE parent_id IS NULL \
                       UNION ALL \
                       SELECT w.id, tree.top, tree.depth + 1 FROM workspaces w \
                       JOIN tree ON w.parent_id = tree.id WHERE tree.depth < 10000 \
                     ) SELECT CAST(tree.top AS TEXT) AS key, {SUMS} FROM usage_daily \
                     JOIN tree ON tree.id = usage_daily.workspace_id \
                     WHERE day >= $1 AND day <= $2 GROUP BY tree.top ORDER BY key"
                ),
            };
            Ok(sqlx::query_as(&sql)
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?)
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn set_budget_limit(
            &self,
            workspace_id: WorkspaceId,
            limit: Option<i64>,
        ) -> StoreResult<()> {
            let mut tx = self.write_tx().await?;
            // A new ceiling may be crossed anew: its warning is re-armed.
            sqlx::query(
                "INSERT INTO workspace_budgets (workspace_id, budget_limit) VALUES ($1, $2) \
                 ON CONFLICT (workspace_id) DO UPDATE SET \
                   budget_limit = excluded.budget_limit, warned_month = NULL",
            )
            .bind(workspace_id)
            .bind(limit)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn budget(&self, workspace_id: WorkspaceId, now: DateTime<Utc>) -> StoreResult<Budget> {
            let mut conn = self.pool.acquire().await?;
            let limit: Option<Option<i64>> = sqlx::query_scalar(
                "SELECT budget_limit FROM workspace_budgets WHERE workspace_id = $1",
            )
            .bind(workspace_id)
            .fetch_optional(&mut *conn)
            .await?;
            let spend = Self::subtree_spend_in(&mut conn, workspace_id, now).await?;
            Ok(Budget {
                limit: limit.flatten(),
                spend,
            })
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn budget_lines(
            &self,
            workspace_id: WorkspaceId,
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<BudgetLine>> {
            let mut conn = self.pool.acquire().await?;
            Self::budget_lines_in(&mut conn, workspace_id, now).await
        }

        #[tracing::instrument(skip_all, fields(owner = %owner))]
        async fn mark_budget_warned(
            &self,
            owner: WorkspaceId,
            now: DateTime<Utc>,
        ) -> StoreResult<bool> {
            let month = usage::month_of(now);
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "UPDATE workspace_budgets SET warned_month = $2 \
                 WHERE workspace_id = $1 AND (warned_month IS NULL OR warned_month <> $2)",
            )
            .bind(owner)
            .bind(&month)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(done == 1)
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn budget_refusal(
            &self,
            workspace_id: WorkspaceId,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<String>> {
            let mut conn = self.pool.acquire().await?;
            Self::over_budget_in(&mut conn, workspace_id, now).await
        }
    }
}
