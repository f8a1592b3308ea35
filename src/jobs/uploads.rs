//! The staging layer's upkeep: acked uploads past the ack retention and
//! unacked ones past their deadline go, rows first, then their blobs.
//!
//! Pipelined: while a batch's blobs are deleted and the batch announced
//! (in a task of its own, at most [`IN_FLIGHT`] at once), the next batch's
//! rows are deleted. A batch's rows are committed gone before any of its
//! blobs is touched, so a crash or a failed delete leaves at worst an
//! orphan blob for the reaper (`blobs.rs`), never a row naming a missing
//! blob. The blob deletes of all batches share one [`DeletePacer`]: at
//! most `--sweep-deletes-in-flight` requests, fewer and paused while the
//! blob store (which serves the uploads too) answers slowly.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::pace::DeletePacer;
use super::{Counts, Job, JobContext, JobError};
use crate::events::{Bus, Event, UploadState};
use crate::metrics::Metrics;
use crate::store::{SweepReason, SweptUpload};

const COUNTS: &[&str] = &["acked", "expired", "errors"];

/// Batches whose rows are gone and whose blobs are still being deleted,
/// at most, while the next batch's rows are deleted: one, so the rows
/// deleted run at most a batch ahead of the paced blob deletes.
const IN_FLIGHT: usize = 1;

/// Events per publication: on PostgreSQL each is one `pg_notify`
/// statement, whose commit holds the cluster-wide notify lock that every
/// upload's commit takes too, so it is kept short.
const EVENTS_PER_PUBLISH: usize = 500;

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
        let acked_before = cx.config.ack_retention.before(now);
        let limit = cx
            .config
            .upload_batch
            .unwrap_or_else(|| cx.store.upload_sweep_batch());
        let pacer = Arc::new(DeletePacer::new(cx.config.deletes_in_flight));
        let mut tally = Tally::default();
        let mut in_flight: VecDeque<JoinHandle<Tally>> = VecDeque::new();
        let swept = loop {
            let started = Instant::now();
            let batch = match cx.store.sweep_uploads(now, acked_before, limit).await {
                Ok(batch) => batch,
                Err(e) => break Err(e),
            };
            let more = batch.len() as i64 >= limit;
            tracing::debug!(
                rows = batch.len(),
                ms = started.elapsed().as_millis() as u64,
                "upload sweep: rows deleted"
            );
            if !batch.is_empty() {
                in_flight.push_back(tokio::spawn(finish(cx.clone(), pacer.clone(), batch)));
            }
            while in_flight.len() > IN_FLIGHT || (!more && !in_flight.is_empty()) {
                tally.add(joined(in_flight.pop_front().expect("non-empty")).await);
            }
            if !more {
                break Ok(());
            }
        };
        // A failed batch ends the step, but only once the batches already
        // deleted are finished and announced.
        for handle in in_flight {
            tally.add(joined(handle).await);
        }
        swept?;
        let mut out = Counts::zero(COUNTS);
        out.add("acked", tally.acked);
        out.add("expired", tally.expired);
        out.add("errors", tally.errors);
        Ok(out)
    }
}

/// What the batches finished so far did.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    acked: u64,
    expired: u64,
    errors: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.acked += other.acked;
        self.expired += other.expired;
        self.errors += other.errors;
    }
}

/// The outcome of a batch's task; its panic is the step's panic.
async fn joined(handle: JoinHandle<Tally>) -> Tally {
    match handle.await {
        Ok(tally) => tally,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down. The rows are gone; the
        // blobs left are orphans the reaper takes.
        Err(_) => Tally::default(),
    }
}

/// Deletes the blobs of one committed batch of swept rows, a request at a
/// time as `pacer` lets it, then announces the batch.
async fn finish(cx: JobContext, pacer: Arc<DeletePacer>, batch: Vec<SweptUpload>) -> Tally {
    let started = Instant::now();
    let keys: Vec<String> = batch.iter().map(|r| r.blob_key.clone()).collect();
    // One that cannot be deleted is an orphan the reaper retries later.
    let requests: Vec<Vec<String>> = keys
        .chunks(cx.blobs.keys_per_delete().max(1))
        .map(<[String]>::to_vec)
        .collect();
    let failed = futures::stream::iter(requests)
        .map(|chunk: Vec<String>| {
            let (blobs, pacer) = (cx.blobs.clone(), pacer.clone());
            async move { pacer.run(chunk.len(), blobs.delete_many(&chunk)).await }
        })
        .buffer_unordered(cx.config.deletes_in_flight.max(1))
        .fold(0u64, |failed, n| futures::future::ready(failed + n as u64))
        .await;
    let blobs_ms = started.elapsed().as_millis() as u64;
    let tally = announce_swept(&cx.bus, &cx.metrics, batch, failed).await;
    tracing::debug!(
        blobs = keys.len(),
        blobs_ms,
        ms = started.elapsed().as_millis() as u64,
        "upload sweep: blobs deleted, batch announced"
    );
    tally
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
) -> Tally {
    let mut tally = Tally {
        errors: failed,
        ..Tally::default()
    };
    let mut expired_events = Vec::new();
    for row in batch {
        let outcome = match row.reason {
            SweepReason::Acked => {
                tally.acked += 1;
                "acked"
            }
            SweepReason::Expired => {
                tally.expired += 1;
                expired_events.push(Event::Upload {
                    workspace_id: row.workspace_id,
                    file_id: row.file_id,
                    state: UploadState::Expired,
                });
                "expired"
            }
        };
        tracing::info!(workspace_id = %row.workspace_id, file_id = %row.file_id, outcome, "upload swept");
    }
    let swept = &metrics.swept;
    swept.with_label_values(&["error"]).inc_by(tally.errors);
    swept.with_label_values(&["acked"]).inc_by(tally.acked);
    swept.with_label_values(&["expired"]).inc_by(tally.expired);
    while !expired_events.is_empty() {
        let rest = expired_events.split_off(expired_events.len().min(EVENTS_PER_PUBLISH));
        bus.publish_many(std::mem::replace(&mut expired_events, rest))
            .await;
    }
    tally
}
