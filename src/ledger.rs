//! What surrounds every move of the delegation ledger, wherever it was
//! made (a request or the sweeper): the counter and the duration
//! histogram, one JSON log event, and the wake-up of any inbox row the move
//! wrote — after the commit, so a woken long poll finds the row.

use crate::events::{Bus, Event};
use crate::metrics::Metrics;
use crate::store::{Activity, Delegation, Transitioned};

/// Announces a new delegation and the callee's inbox row written with it.
pub(crate) async fn announce_created(
    bus: &Bus,
    metrics: &Metrics,
    d: &Delegation,
    inbox: &Activity,
) {
    metrics
        .delegations
        .with_label_values(&[d.status.as_str()])
        .inc();
    tracing::info!(
        delegation_id = %d.id, caller_id = %d.caller, callee_id = %d.callee_id,
        to = d.status.as_str(), activity_id = inbox.id, "delegation created"
    );
    bus.publish(Event::Activity {
        workspace_id: inbox.workspace_id,
        id: inbox.id,
    })
    .await;
}

/// Announces a move (a repeat of the same status is logged, not counted).
pub(crate) async fn announce_move(bus: &Bus, metrics: &Metrics, t: &Transitioned) {
    let d = &t.delegation;
    if t.from == d.status {
        tracing::info!(
            delegation_id = %d.id, status = d.status.as_str(),
            "delegation status repeated; non-empty previews applied"
        );
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
    if let Some(row) = &t.result_row {
        bus.publish(Event::Activity {
            workspace_id: row.workspace_id,
            id: row.id,
        })
        .await;
    }
}
