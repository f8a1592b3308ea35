//! The staging layer's upkeep: acked uploads past the ack retention and
//! unacked ones past their deadline go, rows first, then their blobs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Counts, Job, JobContext, JobError, BATCH};
use crate::events::{Bus, Event, UploadState};
use crate::metrics::Metrics;
use crate::store::{SweepReason, SweptUpload};

const COUNTS: &[&str] = &["acked", "expired", "errors"];

/// Deletes acked rows past the ack retention and unacked rows past their
/// deadline, then their blobs. Counts `acked`, `expired`, and `errors`
/// (blobs that could not be deleted, left for the orphan reaper).
pub(super) struct SweepUploads;

#[async_trait]
impl Job for SweepUploads {
    fn name(&self) -> &'static str {
        "uploads"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let mut out = Counts::zero(COUNTS);
        let acked_before = cx.config.ack_retention.before(now);
        loop {
            let batch = cx.store.sweep_uploads(now, acked_before, BATCH).await?;
            let n = batch.len() as i64;
            // The rows are gone (committed); now their blobs. One that
            // cannot be deleted is an orphan the reaper retries later.
            let keys: Vec<String> = batch.iter().map(|r| r.blob_key.clone()).collect();
            let failed = cx.blobs.delete_many(&keys).await as u64;
            announce_swept(&cx.bus, &cx.metrics, batch, failed, &mut out).await;
            if n < BATCH {
                return Ok(out);
            }
        }
    }
}

/// Counts, logs and announces one committed batch of swept rows whose
/// blobs are deleted (`failed` of them could not be): the
/// `molecule_pending_uploads_swept_total` counter by outcome, one log event
/// per row, and an `expired` upload event for the live views.
async fn announce_swept(
    bus: &Bus,
    metrics: &Metrics,
    batch: Vec<SweptUpload>,
    failed: u64,
    out: &mut Counts,
) {
    out.add("errors", failed);
    metrics.swept.with_label_values(&["error"]).inc_by(failed);
    let mut expired_events = Vec::new();
    for row in batch {
        let outcome = match row.reason {
            SweepReason::Acked => "acked",
            SweepReason::Expired => {
                expired_events.push(Event::Upload {
                    workspace_id: row.workspace_id,
                    file_id: row.file_id,
                    state: UploadState::Expired,
                });
                "expired"
            }
        };
        out.add(outcome, 1);
        metrics.swept.with_label_values(&[outcome]).inc();
        tracing::info!(workspace_id = %row.workspace_id, file_id = %row.file_id, outcome, "upload swept");
    }
    bus.publish_many(expired_events).await;
}
