//! Staged uploads (`pending_uploads`): the group-committed staging of a
//! batch with its inbox rows, delivery (fetch, read, ack), statistics, and
//! the sweep of acked and expired files.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::engine::{Engine, SweptRow};
use super::sql::{SqlStore, Ts};
use super::*;

/// One file to stage, its bytes already in the blob store.
#[derive(Debug, Clone)]
pub struct NewPendingUpload {
    /// Server-chosen id.
    pub file_id: FileId,
    /// Where the bytes are.
    pub blob_key: String,
    /// Size in bytes.
    pub size: i64,
    /// Hex SHA-256.
    pub sha256: String,
    /// Sanitized name.
    pub filename: String,
    /// Sanitized mimetype.
    pub mimetype: String,
    /// When its bytes were fully received; orders a batch as it was sent.
    pub created_at: DateTime<Utc>,
    /// Hard deadline.
    pub expires_at: DateTime<Utc>,
}

/// A stored `pending_uploads` row.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingUpload {
    /// Its id.
    pub file_id: FileId,
    /// Owner.
    pub workspace_id: WorkspaceId,
    /// Where the bytes are.
    pub blob_key: String,
    /// Size in bytes.
    pub size: i64,
    /// Hex SHA-256.
    pub sha256: String,
    /// Sanitized name.
    pub filename: String,
    /// Sanitized mimetype.
    pub mimetype: String,
    /// Staged at.
    pub created_at: DateTime<Utc>,
    /// Last download.
    pub fetched_at: Option<DateTime<Utc>>,
    /// Delivery.
    pub acked_at: Option<DateTime<Utc>>,
    /// Hard deadline.
    pub expires_at: DateTime<Utc>,
    /// A file the agent uploaded for the user (to its own chat): never in
    /// the workspace's list of files to fetch.
    pub to_user: bool,
}

/// How an ack ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AckOutcome {
    /// This call acked the file.
    Acked(PendingUpload),
    /// It was acked before (an idempotent retry).
    AlreadyAcked,
    /// Absent, expired, or another workspace's.
    NotFound,
}

/// Counts over the staging table, for `/admin/pending-uploads/stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UploadStats {
    /// Unacked and unexpired: waiting for delivery (fetched or not).
    pub pending: i64,
    /// Of those, fetched at least once but not acked: the stuck-fetch signal.
    pub fetched_not_acked: i64,
    /// Acked, waiting for the sweep.
    pub acked: i64,
    /// Unacked past their deadline, waiting for the sweep.
    pub expired: i64,
    /// Bytes of unacked, unexpired files.
    pub bytes_pending: i64,
    /// Creation time of the oldest unacked, unexpired file.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// Why a staged row was swept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepReason {
    /// Acked and past the retention window.
    Acked,
    /// Never acked and past its deadline.
    Expired,
}

/// A row the sweep deleted; its blob is deleted after the row is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct SweptUpload {
    /// Its id.
    pub file_id: FileId,
    /// Owner.
    pub workspace_id: WorkspaceId,
    /// The blob to delete now.
    pub blob_key: String,
    /// Why.
    pub reason: SweepReason,
}

/// One request's uploads, queued for the group commit of staged uploads:
/// concurrent `stage_uploads` calls share one transaction, so one durable
/// commit (one WAL fsync on SQLite) covers every request that queued while
/// the previous commit ran. If the shared transaction fails, each job is
/// retried in a transaction of its own, so one refused request (a removed
/// workspace, a broken row) fails alone. See [`GroupCommit`] for the
/// leader rule and why callers must not be cancelled (the upload path
/// stages each upload in a task of its own).
#[doc(hidden)]
pub struct StageJob {
    workspace_id: WorkspaceId,
    files: Vec<(NewPendingUpload, NewActivity)>,
    now: DateTime<Utc>,
    answer: tokio::sync::oneshot::Sender<StoreResult<Vec<Activity>>>,
}

/// `pending_uploads` as read, in [`UPLOAD_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct UploadRow {
    file_id: FileId,
    workspace_id: WorkspaceId,
    blob_key: String,
    size_bytes: i64,
    sha256: String,
    filename: String,
    mimetype: String,
    created_at: Ts,
    fetched_at: Option<Ts>,
    acked_at: Option<Ts>,
    expires_at: Ts,
    to_user: bool,
}

impl From<UploadRow> for PendingUpload {
    fn from(r: UploadRow) -> Self {
        PendingUpload {
            file_id: r.file_id,
            workspace_id: r.workspace_id,
            blob_key: r.blob_key,
            size: r.size_bytes,
            sha256: r.sha256,
            filename: r.filename,
            mimetype: r.mimetype,
            created_at: r.created_at.0,
            fetched_at: r.fetched_at.map(|t| t.0),
            acked_at: r.acked_at.map(|t| t.0),
            expires_at: r.expires_at.0,
            to_user: r.to_user,
        }
    }
}

impl From<SweptRow> for SweptUpload {
    fn from(r: SweptRow) -> Self {
        SweptUpload {
            file_id: r.file_id,
            workspace_id: r.workspace_id,
            blob_key: r.blob_key,
            reason: if r.was_acked {
                SweepReason::Acked
            } else {
                SweepReason::Expired
            },
        }
    }
}

/// `upload_stats` as read.
#[derive(sqlx::FromRow)]
pub(super) struct StatsRow {
    pending: i64,
    fetched_not_acked: i64,
    acked: i64,
    expired: i64,
    bytes_pending: i64,
    oldest: Option<Ts>,
}

pub(super) const UPLOAD_COLUMNS: &str = "file_id, workspace_id, blob_key, size_bytes, sha256, \
     filename, mimetype, created_at, fetched_at, acked_at, expires_at, to_user";

/// The one predicate for "this workspace's file, still deliverable": fetch,
/// read and ack all use it, so absent, acked, expired and foreign files are
/// the same miss everywhere. Binds the file id, the workspace id and now.
pub(super) const LIVE_FILE: &str =
    "file_id = $1 AND workspace_id = $2 AND acked_at IS NULL AND expires_at > $3";

/// Staged uploads. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Inserts every upload row with its activity row in ONE transaction:
    /// all of them or none. Concurrent calls may share that transaction
    /// (group commit), never a failure: a call that fails wrote nothing,
    /// whatever the others did. Not cancel-safe: run it to completion.
    async fn stage_uploads(
        &self,
        workspace_id: WorkspaceId,
        files: Vec<(NewPendingUpload, NewActivity)>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Activity>>;

    /// Stages files the agent uploads for the user (`to_user`), all or
    /// none, in one transaction; no inbox row (the agent does not get its
    /// own files back).
    async fn stage_files_to_user(
        &self,
        workspace_id: WorkspaceId,
        files: &[NewPendingUpload],
    ) -> StoreResult<()>;

    /// Unacked, unexpired files of a workspace for it to fetch (not the
    /// files it sent to the user), oldest first.
    async fn list_pending_uploads(
        &self,
        workspace_id: WorkspaceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PendingUpload>>;

    /// Stamps `fetched_at` on an unacked, unexpired file of this workspace
    /// and returns it; `None` for absent, acked, expired or foreign files.
    async fn mark_pending_upload_fetched(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PendingUpload>>;

    /// The same file as [`Store::mark_pending_upload_fetched`] finds, without
    /// stamping it (an operator looking, not the workspace fetching).
    async fn get_pending_upload(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PendingUpload>>;

    /// A file staged for this workspace, whatever its state (acked and
    /// expired ones until the sweep removes them): what a message may name
    /// as its attachment, even once the agent has fetched it.
    async fn find_upload(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
    ) -> StoreResult<Option<PendingUpload>>;

    /// Every row of a workspace still in the table, whatever its state
    /// (acked and expired ones until the sweep removes them), oldest first.
    async fn list_all_uploads(
        &self,
        workspace_id: WorkspaceId,
        limit: i64,
    ) -> StoreResult<Vec<PendingUpload>>;

    /// Stamps `acked_at` once.
    async fn ack_pending_upload(
        &self,
        workspace_id: WorkspaceId,
        file_id: FileId,
        now: DateTime<Utc>,
    ) -> StoreResult<AckOutcome>;

    /// Counts for the stats endpoint.
    async fn upload_stats(&self, now: DateTime<Utc>) -> StoreResult<UploadStats>;

    /// How many rows a sweep batch ([`UploadStore::sweep_uploads`]) should
    /// ask for on this engine.
    fn upload_sweep_batch(&self) -> i64;

    /// Deletes up to `limit` rows that are acked before `acked_before` or
    /// unacked past their deadline at `now`, and returns them. Concurrent
    /// sweepers never receive the same row.
    async fn sweep_uploads(
        &self,
        now: DateTime<Utc>,
        acked_before: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<SweptUpload>>;

    /// Which of `keys` some `pending_uploads` or `plugins` row still
    /// references (the orphan reaper keeps those).
    async fn referenced_blob_keys(&self, keys: &[String]) -> StoreResult<Vec<String>>;
}

engines! {
    impl SqlStore<DB> {
        /// Stamps `column` (`fetched_at`, `acked_at`) on a live file of
        /// this workspace, committed, and returns the row it stamped.
        pub(super) async fn stamp_live_file(
            &self,
            column: &str,
            workspace_id: WorkspaceId,
            file_id: FileId,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<UploadRow>> {
            let mut tx = self.write_tx().await?;
            let sql = format!(
                "UPDATE pending_uploads SET {column} = $3 WHERE {LIVE_FILE} \
                 RETURNING {UPLOAD_COLUMNS}"
            );
            let row = sqlx::query_as(&sql)
                .bind(file_id)
                .bind(workspace_id)
                .bind(Ts(now))
                .fetch_all(&mut *tx)
                .await?
                .pop();
            tx.commit().await?;
            Ok(row)
        }

        /// Commits queued upload jobs, as few transactions as the engine
        /// allows (see [`GroupCommit`]), and answers each job.
        pub(super) async fn commit_staged(&self, jobs: Vec<StageJob>) {
            let mut groups: Vec<Vec<StageJob>> = Vec::new();
            for job in jobs {
                let joins = groups.iter_mut().find(|g| {
                    DB::GROUP_ACROSS_WORKSPACES || g[0].workspace_id == job.workspace_id
                });
                match joins {
                    Some(group) => group.push(job),
                    None => groups.push(vec![job]),
                }
            }
            for group in groups {
                if group.len() > 1 {
                    if let Ok(answers) = self.insert_staged(&group).await {
                        for (job, activities) in group.into_iter().zip(answers) {
                            let _ = job.answer.send(Ok(activities));
                        }
                        continue;
                    }
                    // Some job was refused: each alone, so only it fails.
                }
                for job in group {
                    let answer = self
                        .insert_staged(std::slice::from_ref(&job))
                        .await
                        .map(|mut answers| answers.pop().unwrap_or_default());
                    let _ = job.answer.send(answer);
                }
            }
        }

        /// Inserts every file and activity row of `jobs` in ONE
        /// transaction; the activities come back per job.
        pub(super) async fn insert_staged(&self, jobs: &[StageJob]) -> StoreResult<Vec<Vec<Activity>>> {
            self.staging.count_transaction();
            let mut tx = self.write_tx().await?;
            let mut answers = Vec::with_capacity(jobs.len());
            for job in jobs {
                let mut activities = Vec::with_capacity(job.files.len());
                for (file, activity) in &job.files {
                    sqlx::query(
                        "INSERT INTO pending_uploads (file_id, workspace_id, blob_key, \
                         size_bytes, sha256, filename, mimetype, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(file.file_id)
                    .bind(job.workspace_id)
                    .bind(&file.blob_key)
                    .bind(file.size)
                    .bind(&file.sha256)
                    .bind(&file.filename)
                    .bind(&file.mimetype)
                    .bind(Ts(file.created_at))
                    .bind(Ts(file.expires_at))
                    .execute(&mut *tx)
                    .await?;
                    activities.push(
                        Self::insert_activity_in(&mut tx, job.workspace_id, activity, job.now)
                            .await?,
                    );
                }
                answers.push(activities);
            }
            tx.commit().await?;
            Ok(answers)
        }
    }

    #[async_trait]
    impl UploadStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, files = files.len()))]
        async fn stage_uploads(
            &self,
            workspace_id: WorkspaceId,
            files: Vec<(NewPendingUpload, NewActivity)>,
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<Activity>> {
            let (answer, answered) = tokio::sync::oneshot::channel();
            let job = StageJob {
                workspace_id,
                files,
                now,
                answer,
            };
            self.staging
                .submit(job, |jobs| self.commit_staged(jobs))
                .await;
            answered.await.unwrap_or(Err(StoreError::Interrupted))
        }

        async fn stage_files_to_user(
            &self,
            workspace_id: WorkspaceId,
            files: &[NewPendingUpload],
        ) -> StoreResult<()> {
            let mut tx = self.write_tx().await?;
            for file in files {
                sqlx::query(
                    "INSERT INTO pending_uploads (file_id, workspace_id, blob_key, \
                     size_bytes, sha256, filename, mimetype, created_at, expires_at, to_user) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, TRUE)",
                )
                .bind(file.file_id)
                .bind(workspace_id)
                .bind(&file.blob_key)
                .bind(file.size)
                .bind(&file.sha256)
                .bind(&file.filename)
                .bind(&file.mimetype)
                .bind(Ts(file.created_at))
                .bind(Ts(file.expires_at))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn list_pending_uploads(
            &self,
            workspace_id: WorkspaceId,
            now: DateTime<Utc>,
        ) -> StoreResult<Vec<PendingUpload>> {
            let sql = format!(
                "SELECT {UPLOAD_COLUMNS} FROM pending_uploads \
                 WHERE workspace_id = $1 AND acked_at IS NULL AND expires_at > $2 AND NOT to_user \
                 ORDER BY created_at, file_id"
            );
            let rows: Vec<UploadRow> = sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(Ts(now))
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, file_id = %file_id))]
        async fn mark_pending_upload_fetched(
            &self,
            workspace_id: WorkspaceId,
            file_id: FileId,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<PendingUpload>> {
            let row = self.stamp_live_file("fetched_at", workspace_id, file_id, now).await?;
            Ok(row.map(Into::into))
        }

        async fn get_pending_upload(
            &self,
            workspace_id: WorkspaceId,
            file_id: FileId,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<PendingUpload>> {
            let sql = format!("SELECT {UPLOAD_COLUMNS} FROM pending_uploads WHERE {LIVE_FILE}");
            let row: Option<UploadRow> = sqlx::query_as(&sql)
                .bind(file_id)
                .bind(workspace_id)
                .bind(Ts(now))
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(Into::into))
        }

        async fn find_upload(
            &self,
            workspace_id: WorkspaceId,
            file_id: FileId,
        ) -> StoreResult<Option<PendingUpload>> {
            let sql = format!(
                "SELECT {UPLOAD_COLUMNS} FROM pending_uploads WHERE file_id = $1 AND workspace_id = $2"
            );
            let row: Option<UploadRow> = sqlx::query_as(&sql)
                .bind(file_id)
                .bind(workspace_id)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(Into::into))
        }

        async fn list_all_uploads(
            &self,
            workspace_id: WorkspaceId,
            limit: i64,
        ) -> StoreResult<Vec<PendingUpload>> {
            let sql = format!(
                "SELECT {UPLOAD_COLUMNS} FROM pending_uploads WHERE workspace_id = $1 \
                 ORDER BY created_at, file_id LIMIT $2"
            );
            let rows: Vec<UploadRow> = sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, file_id = %file_id))]
        async fn ack_pending_upload(
            &self,
            workspace_id: WorkspaceId,
            file_id: FileId,
            now: DateTime<Utc>,
        ) -> StoreResult<AckOutcome> {
            let row = self.stamp_live_file("acked_at", workspace_id, file_id, now).await?;
            if let Some(row) = row {
                return Ok(AckOutcome::Acked(row.into()));
            }
            // Nothing updated: either acked before (a retry, which
            // succeeds) or absent / expired / foreign (404).
            let acked: Option<Option<Ts>> = sqlx::query_scalar(
                "SELECT acked_at FROM pending_uploads \
                 WHERE file_id = $1 AND workspace_id = $2 AND expires_at > $3",
            )
            .bind(file_id)
            .bind(workspace_id)
            .bind(Ts(now))
            .fetch_optional(&self.pool)
            .await?;
            Ok(match acked {
                Some(Some(_)) => AckOutcome::AlreadyAcked,
                _ => AckOutcome::NotFound,
            })
        }

        async fn upload_stats(&self, now: DateTime<Utc>) -> StoreResult<UploadStats> {
            // Delivery to agents: files the agents sent the user wait for
            // no ack and are not counted.
            let live = "acked_at IS NULL AND expires_at > $1";
            let row: StatsRow = sqlx::query_as(&format!(
                "SELECT \
                   count(*) FILTER (WHERE {live}) AS pending, \
                   count(*) FILTER (WHERE {live} AND fetched_at IS NOT NULL) \
                     AS fetched_not_acked, \
                   count(*) FILTER (WHERE acked_at IS NOT NULL) AS acked, \
                   count(*) FILTER (WHERE acked_at IS NULL AND expires_at <= $1) AS expired, \
                   CAST(COALESCE(sum(size_bytes) FILTER (WHERE {live}), 0) AS BIGINT) \
                     AS bytes_pending, \
                   min(created_at) FILTER (WHERE {live}) AS oldest \
                 FROM pending_uploads WHERE NOT to_user"
            ))
            .bind(Ts(now))
            .fetch_one(&self.pool)
            .await?;
            Ok(UploadStats {
                pending: row.pending,
                fetched_not_acked: row.fetched_not_acked,
                acked: row.acked,
                expired: row.expired,
                bytes_pending: row.bytes_pending,
                oldest_pending_at: row.oldest.map(|t| t.0),
            })
        }

        fn upload_sweep_batch(&self) -> i64 {
            DB::UPLOAD_SWEEP_BATCH
        }

        async fn sweep_uploads(
            &self,
            now: DateTime<Utc>,
            acked_before: DateTime<Utc>,
            limit: i64,
        ) -> StoreResult<Vec<SweptUpload>> {
            let _w = self.writer().await;
            let rows = DB::sweep_uploads(self, now, acked_before, limit).await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        async fn referenced_blob_keys(&self, keys: &[String]) -> StoreResult<Vec<String>> {
            DB::referenced_blob_keys(self, keys).await
        }
    }
}
