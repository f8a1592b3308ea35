//! The key/value store's upkeep: entries past their expiry go.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Counts, Job, JobContext, JobError};

const COUNTS: &[&str] = &["expired"];

/// Deletes key/value entries whose expiry is past; counts them as
/// `expired`.
pub(super) struct SweepKv;

#[async_trait]
impl Job for SweepKv {
    fn name(&self) -> &'static str {
        "kv"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let mut out = Counts::zero(COUNTS);
        out.add("expired", cx.store.sweep_kv(now).await?);
        Ok(out)
    }
}
