//! The operator's restart request (`POST /workspaces/:id/restart`, a
//! `restart_requested` row in the inbox): connect re-registers, re-reads
//! the platform instructions, stops an `--exec` command in flight (its
//! message is handed to a fresh one; a delegated task fails with the
//! reason), and reports back with a `restart_done` row, which the canvas
//! waits for to say the restart happened.

use serde_json::json;

use super::backoff::Backoff;
use super::Ctx;
use crate::client::ClientError;

/// The `activity_type` of connect's answer to a restart request.
pub(super) const DONE: &str = "restart_done";

/// Acts on the restart request of row `activity_id` and reports it done.
pub(super) async fn restart(ctx: &Ctx, activity_id: i64) {
    tracing::info!(activity_id, "the operator asked for a restart");
    ctx.restarting.notify_waiters();
    let registered = super::register(ctx).await;
    if !registered {
        return;
    }
    let instructions = super::instructions::refresh(ctx).await;
    let summary = format!(
        "connect restarted: registered again{}, stopped any --exec command in flight",
        if instructions {
            ", re-read the instructions"
        } else {
            ""
        }
    );
    let body = json!({
        "activity_type": DONE,
        "method": "restart",
        "summary": summary,
        "status": "done",
        "request_body": {"restart_activity_id": activity_id},
    });
    let mut backoff = Backoff::new();
    loop {
        match ctx.client.report_activity(ctx.workspace, &body).await {
            Ok(_) => {
                tracing::info!(activity_id, "restart done and reported");
                return;
            }
            Err(ClientError::Unauthorized(_)) => {
                ctx.unauthorized();
                return;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "reporting the restart failed; retrying");
                if !backoff.wait(&ctx.stop).await {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the server refused the restart report");
                return;
            }
        }
    }
}
