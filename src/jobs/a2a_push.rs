//! A2A push notifications owed by the outbox (`crate::a2a::push`): sends
//! the due ones — the first try of those the server could not send right
//! after their move (it stopped, or was busy), and the retries of failed
//! ones, with exponential backoff — gives up a notification after
//! `MAX_ATTEMPTS` tries, and purges given-up rows once the activity
//! retention has passed (they are the record until then).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Counts, Job, JobContext, JobError, BATCH};
use crate::a2a::push::Notifier;

/// See the module docs.
pub(super) struct SendA2aPush;

const COUNTS: &[&str] = &["delivered", "retried", "gave_up", "purged"];

#[async_trait]
impl Job for SendA2aPush {
    fn name(&self) -> &'static str {
        "a2a_push"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let mut out = Counts::zero(COUNTS);
        // A bare sweep (`sweep --once`) has no outbound client: it sends
        // nothing, the server does.
        if let Some(forwarder) = &cx.forwarder {
            let sent = Notifier::of(forwarder)
                .deliver_due(now, BATCH as u64)
                .await?;
            out.add("delivered", sent.delivered);
            out.add("retried", sent.retried);
            out.add("gave_up", sent.gave_up);
        }
        let before = cx.config.activity_retention.before(now);
        let purged =
            super::in_batches(|| async { Ok(cx.store.purge_push_notices(before, BATCH).await?) })
                .await?;
        out.add("purged", purged);
        Ok(out)
    }
}
