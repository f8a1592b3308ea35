//! The delegation ledger's upkeep: delegations past their deadline fail,
//! silent ones are marked stuck, finished ones past the activity retention
//! are purged. Each move is counted, logged and announced by
//! `crate::ledger`, as a move made by a request is.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{in_batches, Counts, Job, JobContext, JobError, BATCH};
use crate::domain::DelegationStatus;

const COUNTS: &[&str] = &["failed", "stuck", "purged"];

/// Fails delegations in flight past their deadline (`deadline exceeded`),
/// marks silent ones stuck (`no heartbeat for <N>s`), then purges finished
/// ones past the activity retention. Counts `failed`, `stuck`, `purged`.
pub(super) struct SweepDelegations;

#[async_trait]
impl Job for SweepDelegations {
    fn name(&self) -> &'static str {
        "delegations"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let mut out = Counts::zero(COUNTS);
        let silent_before = cx.config.delegation_stuck_after.before(now);
        loop {
            let moved = cx
                .store
                .sweep_delegations(now, silent_before, BATCH)
                .await?;
            for t in &moved {
                match t.delegation.status {
                    DelegationStatus::Failed => out.add("failed", 1),
                    DelegationStatus::Stuck => out.add("stuck", 1),
                    _ => {}
                }
                crate::ledger::announce_move(&cx.bus, &cx.metrics, t).await;
            }
            if (moved.len() as i64) < BATCH {
                break;
            }
        }
        let purge_before = cx.config.activity_retention.before(now);
        let purged = in_batches(move || async move {
            Ok(cx.store.purge_delegations(purge_before, BATCH).await?)
        })
        .await?;
        out.add("purged", purged);
        Ok(out)
    }
}
