//! The activity log's upkeep: rows past the activity retention go.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{in_batches, Counts, Job, JobContext, JobError, BATCH};

const COUNTS: &[&str] = &["removed"];

/// Deletes activity rows older than the activity retention; counts them
/// as `removed`. (A cursor from before the retained window then gets 410.)
pub(super) struct SweepActivity;

#[async_trait]
impl Job for SweepActivity {
    fn name(&self) -> &'static str {
        "activity"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let cutoff = cx.config.activity_retention.before(now);
        let removed =
            in_batches(move || async move { Ok(cx.store.sweep_activity(cutoff, BATCH).await?) })
                .await?;
        let mut out = Counts::zero(COUNTS);
        out.add("removed", removed);
        Ok(out)
    }
}
