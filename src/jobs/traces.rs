//! The span store's upkeep: spans that started before the activity
//! retention go (a trace is kept as long as the inbox rows it explains).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{in_batches, Counts, Job, JobContext, JobError, BATCH};

const COUNTS: &[&str] = &["removed"];

/// Deletes spans older than the activity retention; counts them as
/// `removed`.
pub(super) struct PruneSpans;

#[async_trait]
impl Job for PruneSpans {
    fn name(&self) -> &'static str {
        "traces"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let cutoff = cx.config.activity_retention.before(now);
        let removed =
            in_batches(move || async move { Ok(cx.store.prune_spans(cutoff, BATCH).await?) })
                .await?;
        let mut out = Counts::zero(COUNTS);
        out.add("removed", removed);
        Ok(out)
    }
}
