//! The push forwarder's safety net: delegations (and schedule fires) to
//! push workspaces still queued [`crate::push::RETRY_AFTER`] after they
//! were written — the server stopped between the commit and the call, or
//! the workspace was paused and has resumed — are forwarded now. The claim
//! on the ledger row keeps a row forwarded once however many replicas run
//! this.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Counts, Job, JobContext, JobError, BATCH};

/// See the module docs.
pub(super) struct ForwardPush;

const COUNTS: &[&str] = &["forwarded"];

#[async_trait]
impl Job for ForwardPush {
    fn name(&self) -> &'static str {
        "forward_push"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let mut out = Counts::zero(COUNTS);
        let Some(forwarder) = &cx.forwarder else {
            return Ok(out);
        };
        let before = now - chrono::Duration::from_std(crate::push::RETRY_AFTER).unwrap_or_default();
        // One batch a pass: each call may take the forward timeout, and
        // they run in tasks of their own, so the pass is not held by them.
        for d in cx.store.queued_push_delegations(before, BATCH).await? {
            forwarder.spawn(d);
            out.add("forwarded", 1);
        }
        Ok(out)
    }
}
