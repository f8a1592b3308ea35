//! What a running agent reports about itself: registration (which may mint
//! its first token), heartbeats, the inbox pick-up mark, and the reset of
//! phantom `active_tasks` when the heartbeats stop.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;

/// How a registration ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// The workspace was updated and marked online (boxed: a workspace
    /// row is large next to the other outcomes).
    Done(Box<Workspace>),
    /// No such workspace.
    NotFound,
    /// A token was to be minted, but the workspace already has a live one.
    HasLiveToken,
}

/// Registration and heartbeats of running agents. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait RegistryStore: Send + Sync {
    /// Registration: applies `update`, stamps the heartbeat and, when
    /// `mint` is given, inserts it as the first token, but only if the
    /// workspace has no live token (the bootstrap rule), all in one
    /// transaction.
    async fn register_workspace(
        &self,
        id: WorkspaceId,
        update: &UpdateWorkspace,
        mint: Option<TokenKey>,
        now: DateTime<Utc>,
    ) -> StoreResult<Registered>;

    /// Stamps `last_heartbeat_at` of a live workspace and stores what the
    /// heartbeat reported (fields left out keep their value); false when
    /// absent.
    async fn heartbeat(
        &self,
        id: WorkspaceId,
        report: &HeartbeatReport,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Records that the workspace's own inbox poll handed it every row up
    /// to `through`; only ever raises the mark.
    async fn mark_inbox_picked_up(&self, id: WorkspaceId, through: i64) -> StoreResult<()>;

    /// Resets `active_tasks` to 0 on live workspaces claiming work whose
    /// last heartbeat is older than `stale_before` (phantom busy); returns
    /// their ids.
    async fn reset_phantom_busy(
        &self,
        stale_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<WorkspaceId>>;
}

/// One poll's pickup mark, queued for the group commit of pickup marks
/// (see [`GroupCommit`]): when a fire or a broadcast wakes a thousand
/// long polls at once, their marks share one transaction instead of
/// queueing a thousand writes behind SQLite's one writer (or a thousand
/// PostgreSQL pool acquisitions) before the polls can answer.
#[doc(hidden)]
pub struct PickupJob {
    id: WorkspaceId,
    through: i64,
    answer: tokio::sync::oneshot::Sender<StoreResult<()>>,
}

engines! {
    impl SqlStore<DB> {
        /// Raises every queued pickup mark in ONE transaction and answers
        /// each job; if that fails, each mark alone, so only a failing
        /// one fails.
        async fn commit_pickups(&self, jobs: Vec<PickupJob>) {
            if jobs.len() > 1 && self.raise_pickup_marks(&jobs).await.is_ok() {
                for job in jobs {
                    let _ = job.answer.send(Ok(()));
                }
                return;
            }
            for job in jobs {
                let answer = self.raise_pickup_marks(std::slice::from_ref(&job)).await;
                let _ = job.answer.send(answer);
            }
        }

        async fn raise_pickup_marks(&self, jobs: &[PickupJob]) -> StoreResult<()> {
            self.pickups.count_transaction();
            let mut tx = self.write_tx().await?;
            for job in jobs {
                sqlx::query(
                    "UPDATE workspaces SET inbox_picked_up_through = $2 \
                     WHERE id = $1 AND (inbox_picked_up_through IS NULL \
                       OR inbox_picked_up_through < $2)",
                )
                .bind(job.id)
                .bind(job.through)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
    }

    #[async_trait]
    impl RegistryStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(workspace_id = %id))]
        async fn register_workspace(
            &self,
            id: WorkspaceId,
            update: &UpdateWorkspace,
            mint: Option<TokenKey>,
            now: DateTime<Utc>,
        ) -> StoreResult<Registered> {
            let mut tx = self.write_tx().await?;
            // The workspace lock makes the "no live token yet" check and
            // the insert of the first token one atomic step: two racing
            // bootstrap registrations cannot both mint.
            if !Self::lock_workspace(&mut tx, id).await? {
                return Ok(Registered::NotFound);
            }
            if let Some(token) = mint {
                let live: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM workspace_auth_tokens \
                     WHERE workspace_id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                if live > 0 {
                    return Ok(Registered::HasLiveToken);
                }
                Self::insert_token(&mut tx, id, token, now).await?;
            }
            let row: WorkspaceRow = sqlx::query_as(
                "UPDATE workspaces SET \
                   delivery_mode = COALESCE($2, delivery_mode), \
                   url = CASE WHEN $3 THEN $4 ELSE url END, \
                   agent_card = COALESCE($5, agent_card), \
                   updated_at = $6, last_heartbeat_at = $6 \
                 WHERE id = $1 RETURNING *",
            )
            .bind(id)
            .bind(update.delivery_mode.map(DeliveryMode::as_str))
            .bind(update.url.is_some())
            .bind(update.url.clone().flatten())
            .bind(update.agent_card.as_ref().map(Json))
            .bind(Ts(now))
            .fetch_all(&mut *tx)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("UPDATE of a locked row missed it".into()))?;
            tx.commit().await?;
            Ok(Registered::Done(Box::new(row.try_into()?)))
        }

        async fn heartbeat(
            &self,
            id: WorkspaceId,
            report: &HeartbeatReport,
            now: DateTime<Utc>,
        ) -> StoreResult<bool> {
            let mut tx = self.write_tx().await?;
            // A field the heartbeat left out keeps its last value.
            let done = sqlx::query(
                "UPDATE workspaces SET last_heartbeat_at = $2, \
                   current_task = COALESCE($3, current_task), \
                   active_tasks = COALESCE($4, active_tasks), \
                   error_rate = COALESCE($5, error_rate), \
                   sample_error = COALESCE($6, sample_error), \
                   uptime_seconds = COALESCE($7, uptime_seconds) \
                 WHERE id = $1 AND removed_at IS NULL",
            )
            .bind(id)
            .bind(Ts(now))
            .bind(&report.current_task)
            .bind(report.active_tasks.map(|n| n as i32))
            .bind(report.error_rate)
            .bind(&report.sample_error)
            .bind(report.uptime_seconds)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        }

        async fn mark_inbox_picked_up(&self, id: WorkspaceId, through: i64) -> StoreResult<()> {
            let (answer, answered) = tokio::sync::oneshot::channel();
            let job = PickupJob {
                id,
                through,
                answer,
            };
            self.pickups
                .submit(job, |jobs| self.commit_pickups(jobs))
                .await;
            answered.await.unwrap_or(Err(StoreError::Interrupted))
        }

        #[tracing::instrument(skip_all)]
        async fn reset_phantom_busy(
            &self,
            stale_before: DateTime<Utc>,
            limit: i64,
        ) -> StoreResult<Vec<WorkspaceId>> {
            let mut tx = self.write_tx().await?;
            let sql = format!(
                "UPDATE workspaces SET active_tasks = 0 WHERE id IN ( \
                   SELECT id FROM workspaces WHERE active_tasks > 0 AND removed_at IS NULL \
                     AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $1) \
                   LIMIT $2{} \
                 ) RETURNING id",
                DB::SKIP_LOCKED
            );
            let ids: Vec<WorkspaceId> = sqlx::query_scalar(&sql)
                .bind(Ts(stale_before))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(ids)
        }
    }
}
