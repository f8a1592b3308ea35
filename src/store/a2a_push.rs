//! A2A push notifications: the webhooks a task's caller registered
//! (`CreateTaskPushNotificationConfig` and its kin) and the durable outbox
//! of what is owed to them. The ledger's one move function writes a task's
//! outbox rows in the transaction of the move ([`enqueue_in`]), so a
//! committed move always has its notifications, whatever stops after; a
//! sender claims due rows under a lease, then records each delivery, retry
//! or give-up.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::engine::Engine;
use super::sql::{SqlStore, Ts};
use super::*;

/// One task's webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct PushConfig {
    /// The task (its delegation id).
    pub task_id: DelegationId,
    /// The config's id, unique per task.
    pub id: String,
    /// Where notifications are POSTed (checked when set).
    pub url: String,
    /// Sent back as `X-A2A-Notification-Token`.
    pub token: Option<String>,
    /// The `Authorization` scheme (e.g. `Bearer`).
    pub auth_scheme: Option<String>,
    /// The credentials sent with the scheme.
    pub auth_credentials: Option<String>,
    /// The A2A version of the body: `1.0` or `0.3`.
    pub dialect: String,
    /// When it was set.
    pub created_at: DateTime<Utc>,
}

/// A notification claimed for sending, with its config.
#[derive(Debug, Clone, PartialEq)]
pub struct PushNotice {
    /// The outbox row.
    pub id: i64,
    /// Where it goes and how.
    pub config: PushConfig,
    /// The agent the task was sent to (tasks are read by callee).
    pub callee: WorkspaceId,
    /// The ledger status the move reached.
    pub status: DelegationStatus,
    /// When the move happened.
    pub moved_at: DateTime<Utc>,
    /// Tries so far, this one included.
    pub attempts: i32,
}

/// An outbox row as it stands (what is owed, what was given up).
#[derive(Debug, Clone, PartialEq)]
pub struct OwedNotice {
    /// The outbox row.
    pub id: i64,
    /// The config owed it.
    pub config_id: String,
    /// The ledger status the move reached.
    pub status: String,
    /// Tries so far.
    pub attempts: i32,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// Set when the sender stopped trying.
    pub gave_up_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct OwedRow {
    id: i64,
    config_id: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    gave_up_at: Option<Ts>,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PushSent {
    /// The receiver took it (2xx): the row goes.
    Delivered,
    /// It failed; tried again at `at`.
    Retry {
        /// When it is due again.
        at: DateTime<Utc>,
        /// Why it failed.
        error: String,
    },
    /// It failed for the last time: the row stays as the record.
    GaveUp {
        /// Why it failed.
        error: String,
    },
}

#[derive(sqlx::FromRow)]
struct ConfigRow {
    task_id: DelegationId,
    id: String,
    url: String,
    token: Option<String>,
    auth_scheme: Option<String>,
    auth_credentials: Option<String>,
    dialect: String,
    created_at: Ts,
}

impl From<ConfigRow> for PushConfig {
    fn from(r: ConfigRow) -> Self {
        PushConfig {
            task_id: r.task_id,
            id: r.id,
            url: r.url,
            token: r.token,
            auth_scheme: r.auth_scheme,
            auth_credentials: r.auth_credentials,
            dialect: r.dialect,
            created_at: r.created_at.0,
        }
    }
}

#[derive(sqlx::FromRow)]
struct NoticeRow {
    #[sqlx(flatten)]
    config: ConfigRow,
    notice_id: i64,
    callee_id: WorkspaceId,
    status: String,
    moved_at: Ts,
    attempts: i32,
}

/// The ledger statuses an A2A client sees as one state (`working`): a
/// move among them is no news to a webhook.
fn working(s: DelegationStatus) -> bool {
    matches!(
        s,
        DelegationStatus::Dispatched | DelegationStatus::InProgress | DelegationStatus::Stuck
    )
}

/// True when a move from `from` to `to` changes the state an A2A client
/// sees (and so owes its webhooks a notification).
pub(super) fn a2a_visible(from: DelegationStatus, to: DelegationStatus) -> bool {
    from != to && !(working(from) && working(to))
}

/// The A2A push notification configs and their outbox. Part of
/// [`Store`]; both engines implement it below.
#[async_trait]
pub trait A2aPushStore: Send + Sync {
    /// Sets a config (a new one, or replaces the task's config of that id).
    async fn put_push_config(&self, config: &PushConfig) -> StoreResult<()>;

    /// One config of a task.
    async fn get_push_config(
        &self,
        task: DelegationId,
        id: &str,
    ) -> StoreResult<Option<PushConfig>>;

    /// A task's configs, oldest first.
    async fn list_push_configs(&self, task: DelegationId) -> StoreResult<Vec<PushConfig>>;

    /// Deletes a config and what it is still owed; false when there was
    /// none.
    async fn delete_push_config(&self, task: DelegationId, id: &str) -> StoreResult<bool>;

    /// True when some notification is due at `now` (a read, so a sender
    /// woken for nothing takes no write lock).
    async fn push_notices_due(&self, now: DateTime<Utc>) -> StoreResult<bool>;

    /// Claims up to `limit` due notifications — of each config only its
    /// oldest owed one, so a config's notifications arrive in order —
    /// counting the try and leasing each until `lease_until`.
    async fn claim_push_notices(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<PushNotice>>;

    /// Records how the send of a claimed notification ended.
    async fn finish_push_notice(
        &self,
        id: i64,
        sent: &PushSent,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// A task's outbox rows, oldest first.
    async fn push_notices(&self, task: DelegationId) -> StoreResult<Vec<OwedNotice>>;

    /// Deletes up to `limit` given-up rows older than `before`.
    async fn purge_push_notices(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64>;
}

engines! {
    impl SqlStore<DB> {
        /// Writes the notifications a move of task `task` owes its
        /// webhooks, inside the move's transaction (see the module docs).
        pub(super) async fn enqueue_push_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            task: DelegationId,
            to: DelegationStatus,
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO a2a_push_outbox (task_id, config_id, status, moved_at, next_at) \
                 SELECT task_id, id, $2, $3, $3 FROM a2a_push_configs WHERE task_id = $1",
            )
            .bind(task)
            .bind(to.as_str())
            .bind(Ts(now))
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// Inserts a config inside the caller's transaction.
        pub(super) async fn insert_push_config_in(
            conn: &mut <DB as sqlx::Database>::Connection,
            c: &PushConfig,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO a2a_push_configs (task_id, id, url, token, auth_scheme, \
                   auth_credentials, dialect, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(c.task_id)
            .bind(&c.id)
            .bind(&c.url)
            .bind(&c.token)
            .bind(&c.auth_scheme)
            .bind(&c.auth_credentials)
            .bind(&c.dialect)
            .bind(Ts(c.created_at))
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
    }

    #[async_trait]
    impl A2aPushStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(task_id = %c.task_id))]
        async fn put_push_config(&self, c: &PushConfig) -> StoreResult<()> {
            let mut tx = self.write_tx().await?;
            // Replacing drops what the old config was still owed (its URL
            // or credentials may be the reason it is replaced).
            sqlx::query("DELETE FROM a2a_push_configs WHERE task_id = $1 AND id = $2")
                .bind(c.task_id)
                .bind(&c.id)
                .execute(&mut *tx)
                .await?;
            Self::insert_push_config_in(&mut tx, c).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn get_push_config(
            &self,
            task: DelegationId,
            id: &str,
        ) -> StoreResult<Option<PushConfig>> {
            let row: Option<ConfigRow> =
                sqlx::query_as("SELECT * FROM a2a_push_configs WHERE task_id = $1 AND id = $2")
                    .bind(task)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.map(Into::into))
        }

        async fn list_push_configs(&self, task: DelegationId) -> StoreResult<Vec<PushConfig>> {
            let rows: Vec<ConfigRow> = sqlx::query_as(
                "SELECT * FROM a2a_push_configs WHERE task_id = $1 ORDER BY created_at, id",
            )
            .bind(task)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        #[tracing::instrument(skip_all, fields(task_id = %task))]
        async fn delete_push_config(&self, task: DelegationId, id: &str) -> StoreResult<bool> {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query("DELETE FROM a2a_push_configs WHERE task_id = $1 AND id = $2")
                .bind(task)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        }

        async fn push_notices_due(&self, now: DateTime<Utc>) -> StoreResult<bool> {
            let due: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM a2a_push_outbox WHERE gave_up_at IS NULL AND next_at <= $1 LIMIT 1",
            )
            .bind(Ts(now))
            .fetch_optional(&self.pool)
            .await?;
            Ok(due.is_some())
        }

        #[tracing::instrument(skip_all)]
        async fn claim_push_notices(
            &self,
            now: DateTime<Utc>,
            lease_until: DateTime<Utc>,
            limit: i64,
        ) -> StoreResult<Vec<PushNotice>> {
            let mut tx = self.write_tx().await?;
            let sql = format!(
                "SELECT id FROM a2a_push_outbox o WHERE gave_up_at IS NULL AND next_at <= $1 \
                   AND NOT EXISTS (SELECT 1 FROM a2a_push_outbox e \
                     WHERE e.task_id = o.task_id AND e.config_id = o.config_id \
                       AND e.id < o.id AND e.gave_up_at IS NULL) \
                 ORDER BY next_at, id LIMIT $2{}",
                DB::SKIP_LOCKED
            );
            let ids: Vec<i64> = sqlx::query_scalar(&sql)
                .bind(Ts(now))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                sqlx::query(
                    "UPDATE a2a_push_outbox SET attempts = attempts + 1, next_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(Ts(lease_until))
                .execute(&mut *tx)
                .await?;
                let row: NoticeRow = sqlx::query_as(
                    "SELECT c.*, o.id AS notice_id, d.callee_id, o.status, o.moved_at, o.attempts \
                     FROM a2a_push_outbox o \
                     JOIN a2a_push_configs c ON c.task_id = o.task_id AND c.id = o.config_id \
                     JOIN delegations d ON d.id = o.task_id WHERE o.id = $1",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                claimed.push(PushNotice {
                    id: row.notice_id,
                    callee: row.callee_id,
                    status: row.status.parse().map_err(|_| {
                        StoreError::Corrupt(format!("outbox status {:?}", row.status))
                    })?,
                    moved_at: row.moved_at.0,
                    attempts: row.attempts,
                    config: row.config.into(),
                });
            }
            tx.commit().await?;
            Ok(claimed)
        }

        #[tracing::instrument(skip_all, fields(notice_id = id))]
        async fn finish_push_notice(
            &self,
            id: i64,
            sent: &PushSent,
            now: DateTime<Utc>,
        ) -> StoreResult<()> {
            let mut tx = self.write_tx().await?;
            match sent {
                PushSent::Delivered => {
                    sqlx::query("DELETE FROM a2a_push_outbox WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                PushSent::Retry { at, error } => {
                    sqlx::query(
                        "UPDATE a2a_push_outbox SET next_at = $2, last_error = $3 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(Ts(*at))
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                }
                PushSent::GaveUp { error } => {
                    sqlx::query(
                        "UPDATE a2a_push_outbox SET gave_up_at = $2, last_error = $3 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(Ts(now))
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        }

        async fn push_notices(&self, task: DelegationId) -> StoreResult<Vec<OwedNotice>> {
            let rows: Vec<OwedRow> = sqlx::query_as(
                "SELECT id, config_id, status, attempts, last_error, gave_up_at \
                 FROM a2a_push_outbox WHERE task_id = $1 ORDER BY id",
            )
            .bind(task)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| OwedNotice {
                    id: r.id,
                    config_id: r.config_id,
                    status: r.status,
                    attempts: r.attempts,
                    last_error: r.last_error,
                    gave_up_at: r.gave_up_at.map(|t| t.0),
                })
                .collect())
        }

        async fn purge_push_notices(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "DELETE FROM a2a_push_outbox WHERE id IN ( \
                   SELECT id FROM a2a_push_outbox WHERE gave_up_at IS NOT NULL AND gave_up_at < $1 \
                   ORDER BY gave_up_at LIMIT $2)",
            )
            .bind(Ts(before))
            .bind(limit)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        }
    }
}
