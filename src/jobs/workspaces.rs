//! The workspaces' upkeep: a busy workspace whose heartbeat stopped has
//! its `active_tasks` reset, and a removed workspace is purged for good
//! once the activity retention has passed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{in_batches, Counts, Job, JobContext, JobError, BATCH};
use crate::domain::WorkspaceId;
use crate::metrics::Metrics;

const PHANTOM_COUNTS: &[&str] = &["reset"];

/// Resets to 0 the `active_tasks` of live workspaces claiming work whose
/// heartbeat is older than `--offline-after` (phantom busy); counts them
/// as `reset`.
pub(super) struct ResetPhantomBusy;

#[async_trait]
impl Job for ResetPhantomBusy {
    fn name(&self) -> &'static str {
        "phantom_busy"
    }

    fn counts(&self) -> &'static [&'static str] {
        PHANTOM_COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let stale_before = cx.config.offline_after.before(now);
        let reset = in_batches(move || async move {
            let reset = cx.store.reset_phantom_busy(stale_before, BATCH).await?;
            announce_phantom_resets(&cx.metrics, &reset);
            Ok(reset.len() as u64)
        })
        .await?;
        let mut out = Counts::zero(PHANTOM_COUNTS);
        out.add("reset", reset);
        Ok(out)
    }
}

/// Counts and logs one committed batch of phantom-busy resets.
fn announce_phantom_resets(metrics: &Metrics, reset: &[WorkspaceId]) {
    for id in reset {
        tracing::info!(event = "workspace.phantom_busy_reset", workspace_id = %id, "active tasks of a silent workspace reset to 0");
    }
    metrics.phantom_busy_resets.inc_by(reset.len() as u64);
}

const PURGE_COUNTS: &[&str] = &["purged"];

/// Purges soft-deleted workspaces removed before the activity retention;
/// counts them as `purged`. A removed workspace is remembered (history,
/// the `deleted` answer of its state route) as long as its activity
/// would be.
pub(super) struct PurgeRemoved;

#[async_trait]
impl Job for PurgeRemoved {
    fn name(&self) -> &'static str {
        "removed_workspaces"
    }

    fn counts(&self) -> &'static [&'static str] {
        PURGE_COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let cutoff = cx.config.activity_retention.before(now);
        let purged =
            in_batches(move || async move { Ok(cx.store.purge_removed(cutoff, BATCH).await?) })
                .await?;
        let mut out = Counts::zero(PURGE_COUNTS);
        out.add("purged", purged);
        Ok(out)
    }
}
