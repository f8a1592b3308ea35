//! Schedules and their fires: the definitions a workspace keeps, and the
//! scheduler's one move — a due instant becomes, in ONE transaction, a
//! `schedule_fires` row and, when delivered, a delegation ledger row
//! (caller `schedule:<id>`) with the callee's inbox row, while the
//! schedule's `next_run_at` moves past it.
//!
//! Exactly once per due instant: the due schedule is claimed with `FOR
//! UPDATE SKIP LOCKED` on PostgreSQL (SQLite has one writer), and the
//! UNIQUE `(schedule_id, due_at)` of `schedule_fires` is the final guard.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;
use crate::domain::schedule::{FireStatus, Overlap};
use crate::domain::{FireId, ScheduleId};

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Its id.
    pub id: ScheduleId,
    /// The workspace its prompt is delivered to.
    pub workspace_id: WorkspaceId,
    /// Unique within the workspace.
    pub name: String,
    /// Five-field cron or a macro.
    pub cron_expr: String,
    /// The IANA zone the expression is read in.
    pub timezone: String,
    /// What the agent is asked on each fire.
    pub prompt: String,
    /// Whether the scheduler fires it.
    pub enabled: bool,
    /// What a fire does while an earlier one is in flight.
    pub overlap: Overlap,
    /// Seconds: fires due longer ago are recorded missed.
    pub catch_up_s: i64,
    /// The latest delivered fire.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The next due instant.
    pub next_run_at: DateTime<Utc>,
    /// Fires delivered.
    pub run_count: i64,
    /// The status of the latest fire of any kind.
    pub last_status: Option<String>,
    /// Why the latest fire was skipped or missed.
    pub last_error: Option<String>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Last change of the definition or of the fields above.
    pub updated_at: DateTime<Utc>,
}

/// What a create or an edit writes: every field of the definition, and
/// the next due instant the caller computed from it.
#[derive(Debug, Clone)]
pub struct ScheduleDef {
    /// Unique within the workspace.
    pub name: String,
    /// Checked by [`CronSpec::parse`] before it gets here.
    pub cron_expr: String,
    /// Checked with the expression.
    pub timezone: String,
    /// Non-empty.
    pub prompt: String,
    /// Whether the scheduler fires it.
    pub enabled: bool,
    /// The overlap policy.
    pub overlap: Overlap,
    /// The catch-up window, in seconds.
    pub catch_up_s: i64,
    /// The first instant to fire.
    pub next_run_at: DateTime<Utc>,
}

/// How a create or an edit ended.
// One value per request, moved once and never kept in bulk: boxing the
// row would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    /// Written.
    Saved(Schedule),
    /// The workspace has another schedule of that name; nothing written.
    NameTaken,
    /// No such schedule in that workspace (edits only).
    NotFound,
}

/// One fire of a schedule, as its history shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    /// Its id.
    pub id: FireId,
    /// The schedule.
    pub schedule_id: ScheduleId,
    /// The instant the expression named (a manual run: its request time).
    pub due_at: DateTime<Utc>,
    /// The scheduler's clock when it handled the fire: the start of its
    /// tick (the instant the catch-up window is measured at), not the
    /// commit, which comes later; a manual run: its request time. The
    /// fire lag metric and log event use the commit instead.
    pub fired_at: DateTime<Utc>,
    /// Delivered, skipped or missed as written; in a history, a delivered
    /// fire whose delegation ended reads answered or failed.
    pub status: FireStatus,
    /// The delegation a delivered fire made.
    pub delegation_id: Option<DelegationId>,
    /// Why it was skipped, missed or failed.
    pub detail: Option<String>,
}

/// What a fire wrote, for the caller to count, log and announce.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// The schedule after the fire.
    pub schedule: Schedule,
    /// The fire row.
    pub fire: Fire,
    /// The delegation and the callee's inbox row, when delivered.
    pub delivered: Option<(Delegation, Activity)>,
}

/// What one batch of the scheduler did ([`ScheduleStore::fire_due`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FireBatch {
    /// Due schedules claimed; `0`: nothing was due (or every due one is
    /// claimed by another scheduler), so the tick is done.
    pub claimed: usize,
    /// The fires written, committed together. Fewer than `claimed` when
    /// an instant had its fire already (its `next_run_at` moved on).
    pub fired: Vec<Fired>,
}

/// A schedule with the time of its latest fire of any status, for the
/// health answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleLastFire {
    /// The schedule.
    pub schedule: Schedule,
    /// When its latest fire (timed or manual) was handled; `None`: never.
    pub last_fired_at: Option<DateTime<Utc>>,
}

/// Schedules and the scheduler's fire. Part of [`Store`].
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates a schedule; [`Saved::NameTaken`] when the workspace has one
    /// of that name (the UNIQUE constraint decides, even for a race).
    async fn create_schedule(
        &self,
        workspace_id: WorkspaceId,
        def: &ScheduleDef,
        now: DateTime<Utc>,
    ) -> StoreResult<Saved>;

    /// A workspace's schedules, by name.
    async fn list_schedules(&self, workspace_id: WorkspaceId) -> StoreResult<Vec<Schedule>>;

    /// One schedule of a workspace.
    async fn get_schedule(
        &self,
        workspace_id: WorkspaceId,
        id: ScheduleId,
    ) -> StoreResult<Option<Schedule>>;

    /// Replaces a schedule's definition (its counters and history stay).
    async fn update_schedule(
        &self,
        workspace_id: WorkspaceId,
        id: ScheduleId,
        def: &ScheduleDef,
        now: DateTime<Utc>,
    ) -> StoreResult<Saved>;

    /// Deletes a schedule and its history; the deleted row, if any. The
    /// delegations it made stay in the ledger.
    async fn delete_schedule(
        &self,
        workspace_id: WorkspaceId,
        id: ScheduleId,
    ) -> StoreResult<Option<Schedule>>;

    /// The schedules of live workspaces (of one workspace, or all), each
    /// with its latest fire's time, by workspace then name.
    async fn schedules_last_fire(
        &self,
        workspace_id: Option<WorkspaceId>,
    ) -> StoreResult<Vec<ScheduleLastFire>>;

    /// Up to `limit` fires of a schedule, newest first, a delivered one
    /// read as answered or failed once its delegation ended.
    async fn schedule_history(&self, id: ScheduleId, limit: i64) -> StoreResult<Vec<Fire>>;

    /// The scheduler's step: up to `limit` enabled schedules of live,
    /// unpaused workspaces that are due at `now`, earliest first (claimed,
    /// so concurrent schedulers take different ones), each fire its one
    /// earliest due instant, all in ONE transaction: missed when it is
    /// older than the catch-up window, skipped when the overlap policy
    /// says so, else delivered; then each `next_run_at` moves to the
    /// instant after it. A schedule with more instants due fires the next
    /// one in the next batch, so its fires stay in order.
    async fn fire_due(&self, now: DateTime<Utc>, limit: i64) -> StoreResult<FireBatch>;

    /// How many [`Self::fire_due`] batches are worth running at once on
    /// this engine (one where writers queue on a single lock).
    fn fire_batches_at_once(&self) -> usize;

    /// Fires a schedule now (due at `now`), through the same path as a
    /// timed fire (the overlap policy applies; `next_run_at` stays).
    async fn run_schedule(
        &self,
        workspace_id: WorkspaceId,
        id: ScheduleId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Fired>>;
}

/// `schedules` as read (`SELECT *`).
#[derive(sqlx::FromRow)]
struct ScheduleRow {
    id: ScheduleId,
    workspace_id: WorkspaceId,
    name: String,
    cron_expr: String,
    timezone: String,
    prompt: String,
    enabled: bool,
    overlap: String,
    catch_up_s: i64,
    last_run_at: Option<Ts>,
    next_run_at: Ts,
    run_count: i64,
    last_status: Option<String>,
    last_error: Option<String>,
    created_at: Ts,
    updated_at: Ts,
}

impl TryFrom<ScheduleRow> for Schedule {
    type Error = StoreError;
    fn try_from(r: ScheduleRow) -> StoreResult<Self> {
        Ok(Schedule {
            id: r.id,
            workspace_id: r.workspace_id,
            name: r.name,
            cron_expr: r.cron_expr,
            timezone: r.timezone,
            prompt: r.prompt,
            enabled: r.enabled,
            overlap: r
                .overlap
                .parse()
                .map_err(|e: crate::domain::schedule::UnknownWord| {
                    StoreError::Corrupt(e.to_string())
                })?,
            catch_up_s: r.catch_up_s,
            last_run_at: r.last_run_at.map(|t| t.0),
            next_run_at: r.next_run_at.0,
            run_count: r.run_count,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        })
    }
}

/// A schedule row with its latest fire's time.
#[derive(sqlx::FromRow)]
struct LastFireRow {
    #[sqlx(flatten)]
    schedule: ScheduleRow,
    last_fired_at: Option<Ts>,
}

/// `schedule_fires` as read, with its delegation's status and error when
/// a history asks for them.
#[derive(sqlx::FromRow)]
pub(super) struct FireRow {
    id: FireId,
    pub(super) schedule_id: ScheduleId,
    due_at: Ts,
    fired_at: Ts,
    status: String,
    delegation_id: Option<DelegationId>,
    detail: Option<String>,
    #[sqlx(default)]
    delegation_status: Option<String>,
    #[sqlx(default)]
    delegation_error: Option<String>,
}

impl TryFrom<FireRow> for Fire {
    type Error = StoreError;
    fn try_from(r: FireRow) -> StoreResult<Self> {
        let corrupt = |e: crate::domain::schedule::UnknownWord| StoreError::Corrupt(e.to_string());
        let mut status: FireStatus = r.status.parse().map_err(corrupt)?;
        let mut detail = r.detail;
        match r.delegation_status.as_deref() {
            Some("completed") => status = FireStatus::Answered,
            Some("failed") => {
                status = FireStatus::Failed;
                detail = r.delegation_error.or(detail);
            }
            _ => {}
        }
        Ok(Fire {
            id: r.id,
            schedule_id: r.schedule_id,
            due_at: r.due_at.0,
            fired_at: r.fired_at.0,
            status,
            delegation_id: r.delegation_id,
            detail,
        })
    }
}

/// Whether a database error is a UNIQUE violation (a taken name).
fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation())
}

engines! {
    #[async_trait]
    impl ScheduleStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id))]
        async fn create_schedule(
            &self,
            workspace_id: WorkspaceId,
            def: &ScheduleDef,
            now: DateTime<Utc>,
        ) -> StoreResult<Saved> {
            let mut tx = self.write_tx().await?;
            let inserted: StoreResult<Vec<ScheduleRow>> = sqlx::query_as(
                "INSERT INTO schedules (id, workspace_id, name, cron_expr, timezone, prompt, \
                   enabled, overlap, catch_up_s, next_run_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING *",
            )
            .bind(ScheduleId::new())
            .bind(workspace_id)
            .bind(&def.name)
            .bind(&def.cron_expr)
            .bind(&def.timezone)
            .bind(&def.prompt)
            .bind(def.enabled)
            .bind(def.overlap.as_str())
            .bind(def.catch_up_s)
            .bind(Ts(def.next_run_at))
            .bind(Ts(now))
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::from);
            // Rolled back before the answer, not on drop: SQLite's writer
            // lock must be free when the next write begins.
            let row = match inserted {
                Err(e) if is_unique_violation(&e) => {
                    tx.rollback().await?;
                    return Ok(Saved::NameTaken);
                }
                other => other?
                    .pop()
                    .ok_or_else(|| StoreError::Corrupt("INSERT returned no row".into()))?,
            };
            tx.commit().await?;
            Ok(Saved::Saved(row.try_into()?))
        }

        async fn list_schedules(&self, workspace_id: WorkspaceId) -> StoreResult<Vec<Schedule>> {
            let rows: Vec<ScheduleRow> =
                sqlx::query_as("SELECT * FROM schedules WHERE workspace_id = $1 ORDER BY name, id")
                    .bind(workspace_id)
                    .fetch_all(&self.pool)
                    .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn get_schedule(
            &self,
            workspace_id: WorkspaceId,
            id: ScheduleId,
        ) -> StoreResult<Option<Schedule>> {
            let row: Option<ScheduleRow> =
                sqlx::query_as("SELECT * FROM schedules WHERE id = $1 AND workspace_id = $2")
                    .bind(id)
                    .bind(workspace_id)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(TryInto::try_into).transpose()
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, schedule_id = %id))]
        async fn update_schedule(
            &self,
            workspace_id: WorkspaceId,
            id: ScheduleId,
            def: &ScheduleDef,
            now: DateTime<Utc>,
        ) -> StoreResult<Saved> {
            let mut tx = self.write_tx().await?;
            let updated: StoreResult<Vec<ScheduleRow>> = sqlx::query_as(
                "UPDATE schedules SET name = $3, cron_expr = $4, timezone = $5, prompt = $6, \
                   enabled = $7, overlap = $8, catch_up_s = $9, next_run_at = $10, updated_at = $11 \
                 WHERE id = $1 AND workspace_id = $2 RETURNING *",
            )
            .bind(id)
            .bind(workspace_id)
            .bind(&def.name)
            .bind(&def.cron_expr)
            .bind(&def.timezone)
            .bind(&def.prompt)
            .bind(def.enabled)
            .bind(def.overlap.as_str())
            .bind(def.catch_up_s)
            .bind(Ts(def.next_run_at))
            .bind(Ts(now))
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::from);
            let row = match updated {
                Err(e) if is_unique_violation(&e) => {
                    tx.rollback().await?;
                    return Ok(Saved::NameTaken);
                }
                other => match other?.pop() {
                    Some(row) => row,
                    None => {
                        tx.rollback().await?;
                        return Ok(Saved::NotFound);
                    }
                },
            };
            tx.commit().await?;
            Ok(Saved::Saved(row.try_into()?))
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, schedule_id = %id))]
        async fn delete_schedule(
            &self,
            workspace_id: WorkspaceId,
            id: ScheduleId,
        ) -> StoreResult<Option<Schedule>> {
            let mut tx = self.write_tx().await?;
            let row: Option<ScheduleRow> = sqlx::query_as(
                "DELETE FROM schedules WHERE id = $1 AND workspace_id = $2 RETURNING *",
            )
            .bind(id)
            .bind(workspace_id)
            .fetch_all(&mut *tx)
            .await?
            .pop();
            tx.commit().await?;
            row.map(TryInto::try_into).transpose()
        }

        async fn schedules_last_fire(
            &self,
            workspace_id: Option<WorkspaceId>,
        ) -> StoreResult<Vec<ScheduleLastFire>> {
            // The newest fire through the UNIQUE (schedule_id, due_at)
            // index's schedule prefix; removed workspaces' schedules have
            // stopped and are left out.
            let sql = format!(
                "SELECT s.*, (SELECT MAX(f.fired_at) FROM schedule_fires f \
                   WHERE f.schedule_id = s.id) AS last_fired_at \
                 FROM schedules s JOIN workspaces w ON w.id = s.workspace_id \
                 WHERE w.removed_at IS NULL{} ORDER BY s.workspace_id, s.name, s.id",
                if workspace_id.is_some() { " AND s.workspace_id = $1" } else { "" }
            );
            let mut query = sqlx::query_as::<_, LastFireRow>(&sql);
            if let Some(id) = workspace_id {
                query = query.bind(id);
            }
            let rows = query.fetch_all(&self.pool).await?;
            rows.into_iter()
                .map(|r| {
                    Ok(ScheduleLastFire {
                        schedule: r.schedule.try_into()?,
                        last_fired_at: r.last_fired_at.map(|t| t.0),
                    })
                })
                .collect()
        }

        async fn schedule_history(&self, id: ScheduleId, limit: i64) -> StoreResult<Vec<Fire>> {
            let rows: Vec<FireRow> = sqlx::query_as(
                "SELECT f.*, d.status AS delegation_status, d.error_detail AS delegation_error \
                 FROM schedule_fires f LEFT JOIN delegations d ON d.id = f.delegation_id \
                 WHERE f.schedule_id = $1 ORDER BY f.fired_at DESC, f.due_at DESC LIMIT $2",
            )
            .bind(id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        fn fire_batches_at_once(&self) -> usize {
            DB::WRITERS_AT_ONCE
        }

        async fn fire_due(&self, now: DateTime<Utc>, limit: i64) -> StoreResult<FireBatch> {
            let mut tx = self.write_tx().await?;
            // Claimed: a concurrent scheduler skips these rows and takes
            // the next due ones (or none), and re-checks `next_run_at`
            // after our commit moved it.
            // EXISTS, not `workspace_id IN (…)`: with the IN list
            // SQLite's planner (after ANALYZE, 100,000 schedules) walked
            // every schedule by workspace and sorted them, 440 ms a tick;
            // this walks the due index in order (0.2 ms; bench/schedules.py).
            let sql = format!(
                "SELECT * FROM schedules s WHERE enabled AND next_run_at <= $1 \
                   AND EXISTS (SELECT 1 FROM workspaces w WHERE w.id = s.workspace_id \
                     AND w.removed_at IS NULL AND w.paused_at IS NULL) \
                 ORDER BY next_run_at, id LIMIT $2{}",
                DB::SKIP_LOCKED
            );
            let rows: Vec<ScheduleRow> = sqlx::query_as(&sql)
                .bind(Ts(now))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            let mut due = rows
                .into_iter()
                .map(Schedule::try_from)
                .collect::<StoreResult<Vec<_>>>()?;
            // Each delivered fire takes its workspace's activity-id lock
            // until the commit; taking them in one order (by workspace)
            // keeps two schedulers' batches from deadlocking on them.
            due.sort_by_key(|s| (s.workspace_id, s.next_run_at));
            let budgets = !due.is_empty() && Self::any_budget_in(&mut tx).await?;
            // An instant that had its fire already is not among `fired`:
            // only its `next_run_at` moved, and the next batch sees the
            // schedule again.
            let fired = Self::fire_many_in(&mut tx, &due, now, budgets, false).await?;
            tx.commit().await?;
            Ok(FireBatch { claimed: due.len(), fired })
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, schedule_id = %id))]
        async fn run_schedule(
            &self,
            workspace_id: WorkspaceId,
            id: ScheduleId,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<Fired>> {
            let mut tx = self.write_tx().await?;
            let sql = format!(
                "SELECT * FROM schedules WHERE id = $1 AND workspace_id = $2{}",
                DB::ROW_LOCK
            );
            let row: Option<ScheduleRow> = sqlx::query_as(&sql)
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                return Ok(None);
            };
            let s: Schedule = row.try_into()?;
            // A batch of one, due now; budgets are always checked.
            let fired = Self::fire_many_in(&mut tx, std::slice::from_ref(&s), now, true, true)
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("a manual run met a fire of the same instant".into()))?;
            tx.commit().await?;
            Ok(Some(fired))
        }
    }
}
