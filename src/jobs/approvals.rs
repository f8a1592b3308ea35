//! Approval expiry, and what surrounds every move of an approval request
//! wherever it was made (a route or this job): the counter, one JSON log
//! event, the wake-up of the inbox row the move wrote, and an `approval`
//! event for the live views — after the commit, so whoever is woken finds
//! the rows.
//!
//! Each expiry is also one audit row (`approval.expired` or
//! `approval.escalated`, actor `system`), appended in the expiry's own
//! transaction.
//!
//! Expiry runs on time: the scheduler's one-second loop calls
//! [`expire_due`] after each tick, and the job is also registered so a
//! sweep pass (and `molecule sweep --once`) catches up. Each due request
//! is one store transaction (`ApprovalStore::expire_next_approval`), which
//! claims it with `FOR UPDATE SKIP LOCKED`, so replicas share the work and
//! a person deciding at the same instant either wins or is told who did.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Counts, Job, JobContext, JobError};
use crate::audit::Entry;
use crate::domain::audit::Actor;
use crate::events::{ApprovalMove, Bus, Event};
use crate::metrics::Metrics;
use crate::store::{Activity, Approval, Expired};

const COUNTS: &[&str] = &["approved", "denied", "escalated"];

/// At most this many expiries per call, so a backlog after a long stop
/// cannot hold one tick for minutes.
const PER_CALL: u64 = 1000;

/// Applies `on_expiry` to due requests, as a registered job. Counts
/// `approved`, `denied` (decided on expiry) and `escalated`.
pub(super) struct ExpireApprovals;

#[async_trait]
impl Job for ExpireApprovals {
    fn name(&self) -> &'static str {
        "approvals"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        expire_due(cx, now).await
    }
}

/// Expires every request due at `now` (up to a bound), each in its own
/// transaction with its audit row, and announces each. Without an auditor (a
/// bare sweep pass) it expires nothing: the server's loop does, on time,
/// with its row.
pub async fn expire_due(cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
    let mut out = Counts::zero(COUNTS);
    let Some(auditor) = &cx.auditor else {
        return Ok(out);
    };
    let row = |e: &Expired| audit_entry(e).into_new();
    let audit = auditor.within(&row);
    for _ in 0..PER_CALL {
        let Some(expired) = cx.store.expire_next_approval(now, Some(&audit)).await? else {
            break;
        };
        match &expired {
            Expired::Decided(a, inbox) => {
                out.add(a.status.as_str(), 1);
                announce(&cx.bus, &cx.metrics, a, Some(inbox)).await;
            }
            Expired::Escalated(a, inbox) => {
                out.add("escalated", 1);
                announce(&cx.bus, &cx.metrics, a, inbox.as_ref()).await;
            }
        }
    }
    Ok(out)
}

/// The audit row of one expiry: `approval.expired` (decided by
/// `on_expiry`) or `approval.escalated` (handed to the next decider), by
/// the `system` actor.
fn audit_entry(expired: &Expired) -> Entry {
    let (a, action, details) = match expired {
        Expired::Decided(a, _) => (
            a,
            "approval.expired",
            json!({
                "action": a.action,
                "decision": a.status.as_str(),
                "decided_by": a.decided_by.map(|d| d.to_string()),
                "on_expiry": a.on_expiry.as_str(),
            }),
        ),
        Expired::Escalated(a, _) => (
            a,
            "approval.escalated",
            json!({
                "action": a.action,
                "approver_id": a.approver_id,
                "escalations": a.escalations,
                "expires_at": a.expires_at,
            }),
        ),
    };
    Entry::new(Actor::System, action)
        .workspace(a.workspace_id)
        .target(format!("approval:{}", a.id))
        .details(details)
}

impl super::Scheduler {
    /// Expires the approval requests due at `now` (what the scheduler's
    /// loop does after each tick; tests call it with their own clock).
    pub async fn expire_approvals(&self, now: DateTime<Utc>) -> Result<Counts, JobError> {
        expire_due(&self.cx, now).await
    }
}

/// The metric label of a request's latest move.
fn event_of(a: &Approval) -> &'static str {
    match (a.decision(), a.escalations) {
        (Some(d), _) => d.as_str(),
        (None, 0) => "requested",
        (None, _) => "escalated",
    }
}

/// Counts, logs and announces one move of `a` (created, escalated or
/// decided) and the inbox row it wrote, after the commit.
pub(crate) async fn announce(bus: &Bus, metrics: &Metrics, a: &Approval, inbox: Option<&Activity>) {
    let event = event_of(a);
    metrics.approvals.with_label_values(&[event]).inc();
    tracing::info!(
        approval_id = %a.id, workspace_id = %a.workspace_id, event,
        approver_id = a.approver_id.map(|w| w.to_string()).unwrap_or_else(|| "operator".into()),
        decided_by = a.decided_by.map(|d| d.to_string()).unwrap_or_default(),
        action = %a.action, "approval moved"
    );
    let mut events = Vec::with_capacity(2);
    if let Some(row) = inbox {
        events.push(Event::Activity {
            workspace_id: row.workspace_id,
            id: row.id,
        });
    }
    events.push(Event::Approval(ApprovalMove {
        approval_id: a.id,
        workspace_id: a.workspace_id,
        approver_id: a.approver_id,
        status: a.status.as_str().to_owned(),
        decided_by: a.decided_by.map(|d| d.to_string()),
    }));
    bus.publish_many(events).await;
}
