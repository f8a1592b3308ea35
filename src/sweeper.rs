//! The sweeper: keeps the staging layer and the activity log from growing
//! without bound, and keeps the delegation ledger honest.
//!
//! Each pass deletes, in bounded batches, acked uploads past the retention
//! window, unacked uploads past their deadline, activity rows past the
//! activity retention; fails delegations past their deadline
//! (`deadline exceeded`), marks silent ones stuck (`no heartbeat for <N>s`)
//! and purges finished ones past the activity retention; and reaps orphan
//! blobs (no row, older than a grace period
//! longer than any upload can take). Rows are deleted before their blobs,
//! so a crash in between leaves at worst an orphan blob, which a later pass
//! reaps, and never a row pointing at a missing blob. It also purges
//! soft-deleted workspaces past the activity retention, and resets the
//! `active_tasks` of workspaces whose heartbeat stopped while they claimed
//! work (phantom busy).
//!
//! [`Sweeper::sweep_once`] takes the clock as a parameter so tests choose
//! the time; [`Sweeper::run`] runs a pass at start-up and then every
//! interval until shutdown, each pass in its own task so a panic is logged
//! and counted instead of ending the loop. On PostgreSQL a session advisory
//! lock lets one replica sweep at a time, and `FOR UPDATE SKIP LOCKED`
//! keeps even overlapping sweepers from meeting on a row.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::blob::BlobStore;
use crate::domain::{DelegationStatus, Period};
use crate::events::{Bus, Event, UploadState};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, SweepReason};

/// Rows per batch: one short transaction each.
pub const BATCH: i64 = 500;

/// Retention settings of the sweep, each a [`Period`] checked at start-up
/// (no fallback here can turn into "sweep everything").
#[derive(Debug, Clone, Copy)]
pub struct SweepConfig {
    /// Acked rows older than this go.
    pub ack_retention: Period,
    /// Activity rows, and finished delegations, older than this go.
    pub activity_retention: Period,
    /// A delegation in flight silent this long is stuck.
    pub delegation_stuck_after: Period,
    /// Unreferenced blobs older than this go.
    pub orphan_grace: Period,
    /// Time between passes.
    pub interval: Duration,
    /// A busy workspace silent this long has its `active_tasks` reset.
    pub offline_after: Period,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Acked upload rows removed.
    pub acked: u64,
    /// Expired upload rows removed.
    pub expired: u64,
    /// Their blobs that could not be deleted (left for the orphan reaper).
    pub errors: u64,
    /// Activity rows removed.
    pub activity: u64,
    /// Orphan blobs removed.
    pub orphans: u64,
    /// Expired key/value entries removed.
    pub kv: u64,
    /// Memories whose vector was back-filled.
    pub embedded: u64,
    /// Delegations failed for their deadline.
    pub delegations_failed: u64,
    /// Delegations marked stuck.
    pub delegations_stuck: u64,
    /// Finished delegations purged.
    pub delegations_purged: u64,
    /// Workspaces whose phantom `active_tasks` were reset to 0.
    pub phantom_busy: u64,
    /// Soft-deleted workspaces purged for good.
    pub purged: u64,
    /// True when another replica held the sweep lock and this pass did nothing.
    pub skipped: bool,
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The database failed.
    #[error("sweep failed in the database")]
    Store(#[from] StoreError),
    /// Listing the blob store failed.
    #[error("sweep failed to list the blob store")]
    Blob(#[from] crate::blob::BlobError),
}

/// Runs sweep passes.
#[derive(Clone)]
pub struct Sweeper {
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    metrics: Metrics,
    bus: Bus,
    config: SweepConfig,
    embedder: Option<crate::memory::Embedder>,
}

impl Sweeper {
    /// A sweeper over these stores.
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        metrics: Metrics,
        bus: Bus,
        config: SweepConfig,
    ) -> Self {
        Self {
            store,
            blobs,
            metrics,
            bus,
            config,
            embedder: None,
        }
    }

    /// Also back-fills memory vectors with `embedder`, when given.
    pub fn with_embedder(mut self, embedder: Option<crate::memory::Embedder>) -> Self {
        self.embedder = embedder;
        self
    }

    /// One pass as of `now`.
    pub async fn sweep_once(&self, now: DateTime<Utc>) -> Result<SweepOutcome, SweepError> {
        // On PostgreSQL, one replica at a time sweeps (a session-level
        // advisory lock held for the whole pass); the others skip.
        let Some(lock) = self.store.try_sweep_lock().await? else {
            return Ok(SweepOutcome {
                skipped: true,
                ..SweepOutcome::default()
            });
        };
        let result = self.pass(now).await;
        lock.release().await;
        result
    }

    async fn pass(&self, now: DateTime<Utc>) -> Result<SweepOutcome, SweepError> {
        let mut out = SweepOutcome::default();
        let acked_before = self.config.ack_retention.before(now);
        loop {
            let batch = self.store.sweep_uploads(now, acked_before, BATCH).await?;
            let n = batch.len() as i64;
            // The rows are gone (committed); now their blobs. One that
            // cannot be deleted is an orphan the reaper retries later.
            let keys: Vec<String> = batch.iter().map(|r| r.blob_key.clone()).collect();
            let failed = self.blobs.delete_many(&keys).await as u64;
            out.errors += failed;
            self.metrics
                .swept
                .with_label_values(&["error"])
                .inc_by(failed);
            let mut expired_events = Vec::new();
            for row in batch {
                let outcome = match row.reason {
                    SweepReason::Acked => {
                        out.acked += 1;
                        "acked"
                    }
                    SweepReason::Expired => {
                        out.expired += 1;
                        expired_events.push(Event::Upload {
                            workspace_id: row.workspace_id,
                            file_id: row.file_id,
                            state: UploadState::Expired,
                        });
                        "expired"
                    }
                };
                self.metrics.swept.with_label_values(&[outcome]).inc();
                tracing::info!(workspace_id = %row.workspace_id, file_id = %row.file_id, outcome, "upload swept");
            }
            self.bus.publish_many(expired_events).await;
            if n < BATCH {
                break;
            }
        }
        let activity_cutoff = self.config.activity_retention.before(now);
        loop {
            let n = self.store.sweep_activity(activity_cutoff, BATCH).await?;
            out.activity += n;
            if (n as i64) < BATCH {
                break;
            }
        }
        out.kv = self.store.sweep_kv(now).await?;
        out.embedded = self.backfill_embeddings().await?;
        self.sweep_delegations(now, &mut out).await?;
        let stale_before = self.config.offline_after.before(now);
        loop {
            let reset = self.store.reset_phantom_busy(stale_before, BATCH).await?;
            for id in &reset {
                tracing::info!(event = "workspace.phantom_busy_reset", workspace_id = %id, "active tasks of a silent workspace reset to 0");
            }
            self.metrics.phantom_busy_resets.inc_by(reset.len() as u64);
            out.phantom_busy += reset.len() as u64;
            if (reset.len() as i64) < BATCH {
                break;
            }
        }
        // A removed workspace is remembered (history, the `deleted` answer
        // of its state route) as long as its activity would be.
        loop {
            let n = self.store.purge_removed(activity_cutoff, BATCH).await?;
            out.purged += n;
            if (n as i64) < BATCH {
                break;
            }
        }
        out.orphans = self.reap_orphans(now).await?;
        Ok(out)
    }

    /// Computes the vectors of memories committed while the embedder was
    /// failing, one batch per pass; stops at the first failure (the
    /// embedder is likely still down; the next pass retries).
    async fn backfill_embeddings(&self) -> Result<u64, SweepError> {
        let Some(embedder) = &self.embedder else {
            return Ok(0);
        };
        let mut done = 0;
        for (id, content) in self.store.memories_without_embedding(BATCH).await? {
            match embedder.embed(&content).await {
                Ok(v) => {
                    if self
                        .store
                        .set_memory_embedding(id, &v, embedder.model())
                        .await?
                    {
                        done += 1;
                        self.metrics.memory_embeddings_backfilled.inc();
                    }
                }
                Err(e) => {
                    self.metrics.memory_embedding_failures.inc();
                    tracing::warn!(memory_id = %id, error = %format!("{e:#}"), "embedding back-fill failed; retrying next pass");
                    break;
                }
            }
        }
        Ok(done)
    }

    async fn sweep_delegations(
        &self,
        now: DateTime<Utc>,
        out: &mut SweepOutcome,
    ) -> Result<(), SweepError> {
        let silent_before = self.config.delegation_stuck_after.before(now);
        loop {
            let moved = self
                .store
                .sweep_delegations(now, silent_before, BATCH)
                .await?;
            for t in &moved {
                match t.delegation.status {
                    DelegationStatus::Failed => out.delegations_failed += 1,
                    DelegationStatus::Stuck => out.delegations_stuck += 1,
                    _ => {}
                }
                crate::ledger::announce_move(&self.bus, &self.metrics, t).await;
            }
            if (moved.len() as i64) < BATCH {
                break;
            }
        }
        let purge_before = self.config.activity_retention.before(now);
        loop {
            let n = self.store.purge_delegations(purge_before, BATCH).await?;
            out.delegations_purged += n;
            if (n as i64) < BATCH {
                break;
            }
        }
        Ok(())
    }

    async fn reap_orphans(&self, now: DateTime<Utc>) -> Result<u64, SweepError> {
        let cutoff = self.config.orphan_grace.before(now);
        let old: Vec<String> = self
            .blobs
            .list()
            .await?
            .into_iter()
            .filter(|b| b.modified < cutoff)
            .map(|b| b.key)
            .collect();
        let mut reaped = 0;
        for chunk in old.chunks(BATCH as usize) {
            let referenced = self.store.referenced_blob_keys(chunk).await?;
            let orphans: Vec<String> = chunk
                .iter()
                .filter(|k| !referenced.contains(k))
                .cloned()
                .collect();
            let failed = self.blobs.delete_many(&orphans).await;
            reaped += (orphans.len() - failed) as u64;
            for key in &orphans {
                tracing::info!(key, "orphan blob reaped");
            }
        }
        Ok(reaped)
    }

    /// Sweeps at start-up and then every interval, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let this = self.clone();
            // Its own task: a panic in a pass is caught here, not fatal.
            let pass = tokio::spawn(async move { this.sweep_once(crate::domain::now()).await });
            match pass.await {
                Ok(Ok(out)) => {
                    self.metrics
                        .sweep_runs
                        .with_label_values(&[if out.skipped { "skipped" } else { "ok" }])
                        .inc();
                    if out != SweepOutcome::default() {
                        tracing::info!(
                            acked = out.acked,
                            expired = out.expired,
                            errors = out.errors,
                            activity = out.activity,
                            orphans = out.orphans,
                            kv = out.kv,
                            embedded = out.embedded,
                            delegations_failed = out.delegations_failed,
                            delegations_stuck = out.delegations_stuck,
                            delegations_purged = out.delegations_purged,
                            phantom_busy = out.phantom_busy,
                            purged = out.purged,
                            skipped = out.skipped,
                            "sweep pass done"
                        );
                    }
                }
                Ok(Err(e)) => {
                    self.metrics.sweep_runs.with_label_values(&["error"]).inc();
                    tracing::error!(error.cause_chain = %crate::telemetry::cause_chain(&e), "sweep pass failed; retrying next tick");
                }
                Err(join) => {
                    self.metrics.sweep_runs.with_label_values(&["panic"]).inc();
                    tracing::error!(error = %join, "sweep pass panicked; retrying next tick");
                }
            }
        }
    }
}
