//! The blob store's upkeep: blobs no row references, older than a grace
//! period longer than any upload can take, are reaped. It runs after every
//! job that deletes rows, so what they leave behind goes in the same pass.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Counts, Job, JobContext, JobError, BATCH};

const COUNTS: &[&str] = &["reaped"];

/// Deletes unreferenced blobs older than the orphan grace, checking the
/// references a batch at a time; counts them as `reaped` (a blob whose
/// delete failed is not counted, and is retried next pass).
pub(super) struct ReapOrphans;

#[async_trait]
impl Job for ReapOrphans {
    fn name(&self) -> &'static str {
        "orphan_blobs"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let cutoff = cx.config.orphan_grace.before(now);
        let old: Vec<String> = cx
            .blobs
            .list()
            .await?
            .into_iter()
            .filter(|b| b.modified < cutoff)
            .map(|b| b.key)
            .collect();
        let mut out = Counts::zero(COUNTS);
        for chunk in old.chunks(BATCH as usize) {
            let referenced = cx.store.referenced_blob_keys(chunk).await?;
            let orphans: Vec<String> = chunk
                .iter()
                .filter(|k| !referenced.contains(k))
                .cloned()
                .collect();
            let failed = cx.blobs.delete_many(&orphans).await;
            out.add("reaped", (orphans.len() - failed) as u64);
            for key in &orphans {
                tracing::info!(key, "orphan blob reaped");
            }
        }
        Ok(out)
    }
}
