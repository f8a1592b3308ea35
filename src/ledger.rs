//! What surrounds every move of the delegation ledger, wherever it was
//! made (a request or the sweeper): the counter and the duration
//! histogram, one JSON log event, the wake-up of any inbox row the move
//! wrote, and a `delegation` event for the live views (the canvas) — after
//! the commit, so whoever is woken finds the rows.

use crate::domain::DelegationStatus;
use crate::events::{Bus, DelegationMove, Event};
use crate::metrics::Metrics;
use crate::store::{Activity, Delegation, Transitioned};

/// Announces a new delegation and the callee's inbox row written with it.
pub(crate) async fn announce_created(
    bus: &Bus,
    metrics: &Metrics,
    d: &Delegation,
    inbox: &Activity,
) {
    bus.publish_many(record_created(metrics, d, inbox)).await;
}

/// Counts and logs a new delegation, and gives the events that announce
/// it, for a caller that publishes many moves at once (on PostgreSQL one
/// NOTIFY statement for a batch instead of one each).
pub(crate) fn record_created(metrics: &Metrics, d: &Delegation, inbox: &Activity) -> Vec<Event> {
    metrics
        .delegations
        .with_label_values(&[d.status.as_str()])
        .inc();
    tracing::info!(
        delegation_id = %d.id, caller_id = %d.caller, callee_id = %d.callee_id,
        to = d.status.as_str(), activity_id = inbox.id, "delegation created"
    );
    vec![
        Event::Activity {
            workspace_id: inbox.workspace_id,
            id: inbox.id,
        },
        moved(d, None),
    ]
}

/// Announces a delegation refused before delivery (written `failed`):
/// counted as a failure, logged, streamed.
pub(crate) async fn announce_refused(bus: &Bus, metrics: &Metrics, d: &Delegation) {
    metrics
        .delegations
        .with_label_values(&[d.status.as_str()])
        .inc();
    tracing::warn!(
        delegation_id = %d.id, caller_id = %d.caller, callee_id = %d.callee_id,
        error_detail = d.error_detail.as_deref().unwrap_or(""), "delegation refused"
    );
    bus.publish(moved(d, None)).await;
}

/// Announces a callee's heartbeat to the live views (the row's
/// `last_heartbeat_at` moved; its status did not). Not counted, not logged:
/// heartbeats come every few tens of seconds per delegation in flight.
pub(crate) async fn announce_heartbeat(bus: &Bus, d: &Delegation) {
    bus.publish(moved(d, Some(d.status))).await;
}

/// The stream event of a move of `d` from `from`.
fn moved(d: &Delegation, from: Option<DelegationStatus>) -> Event {
    Event::Delegation(DelegationMove {
        delegation_id: d.id,
        caller_id: d.caller.to_string(),
        callee_id: d.callee_id,
        from,
        status: d.status,
        updated_at: d.updated_at,
    })
}

/// Announces a move (a repeat of the same status is logged and streamed,
/// since it may have applied a preview, but not counted).
pub(crate) async fn announce_move(bus: &Bus, metrics: &Metrics, t: &Transitioned) {
    let d = &t.delegation;
    if t.from == d.status {
        tracing::info!(
            delegation_id = %d.id, status = d.status.as_str(),
            "delegation status repeated; non-empty previews applied"
        );
        bus.publish(moved(d, Some(t.from))).await;
        return;
    }
    metrics
        .delegations
        .with_label_values(&[d.status.as_str()])
        .inc();
    if let (true, Some(done)) = (d.status.is_terminal(), d.completed_at) {
        let secs = (done - d.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
        metrics.delegation_seconds.observe(secs.max(0.0));
    }
    tracing::info!(
        delegation_id = %d.id, caller_id = %d.caller, callee_id = %d.callee_id,
        from = t.from.as_str(), to = d.status.as_str(),
        error_detail = d.error_detail.as_deref().unwrap_or(""), "delegation transition"
    );
    let mut events = Vec::with_capacity(2);
    if let Some(row) = &t.result_row {
        events.push(Event::Activity {
            workspace_id: row.workspace_id,
            id: row.id,
        });
    }
    events.push(moved(d, Some(t.from)));
    bus.publish_many(events).await;
}
