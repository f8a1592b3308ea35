//! Delegations on the workspace side. A `delegate` inbox row is handed to
//! the local agent like a message — one `{"type": "delegation", …}` JSON
//! line, the stdin of `--exec`, or a `message/send` to `--forward` — and
//! connect keeps the ledger informed: `dispatched` when it hands the task
//! over, a heartbeat while the agent works, then `completed` with the
//! first 4 KiB of the answer or `failed` with the error or exit status.
//! With plain stdout there is no answer to wait for: the agent reports
//! through the API itself. A connect killed mid-task replays the row when
//! it comes back and, if the ledger still has the task in flight (perhaps
//! `stuck` by then), runs it again. A `delegation_result` row (the answer to a
//! delegation this workspace made) reaches the agent the same way as a
//! message: a `{"type": "delegation_result", …}` line, or `--exec` stdin.

use std::time::Duration;

use serde_json::{json, Value};
use url::Url;

use super::backoff::Backoff;
use super::handoff::{self, Handoff};
use super::Ctx;
use crate::client::{answer_text, ActivityView, ClientError};
use crate::domain::inbox::{self, Delegate, DelegationResult};
use crate::domain::{DelegationId, DelegationStatus};

/// How often the ledger hears that the agent is still working; well under
/// the server's default `--delegation-stuck-after` (10 min).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
/// Bytes of the answer kept as `result_preview`.
const PREVIEW_BYTES: usize = 4096;

/// The first `max` bytes of `text`, cut at a character boundary.
fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// The JSON line of a `delegate` row.
fn delegation_event(row: &ActivityView, task: &Delegate) -> Value {
    json!({
        "type": "delegation",
        "activity_id": row.id,
        "delegation_id": task.delegation_id,
        "task": task.task,
        "deadline": task.deadline,
        "source_id": row.source_id,
        "created_at": row.created_at,
        "traceparent": task.traceparent.map(|p| p.header()),
    })
}

/// The JSON line of a `delegation_result` row.
pub(super) fn result_event(row: &ActivityView, result: &DelegationResult) -> Value {
    json!({
        "type": "delegation_result",
        "activity_id": row.id,
        "delegation_id": result.delegation_id,
        "status": result.status,
        "result_preview": result.result_preview,
        "error_detail": result.error_detail,
        "source_id": row.source_id,
        "created_at": row.created_at,
    })
}

/// What a report to the ledger came to.
enum Reported {
    /// Applied.
    Ok,
    /// The ledger refused (409: already further along, or over; 404).
    Refused(String),
    /// Stopped, or the token was refused: give up on this row for now.
    Stopped,
}

async fn report(
    ctx: &Ctx,
    id: DelegationId,
    status: DelegationStatus,
    preview: Option<&str>,
    error: Option<&str>,
) -> Reported {
    let mut backoff = Backoff::new();
    loop {
        match ctx
            .client
            .report_delegation(ctx.workspace, id, status, preview, error)
            .await
        {
            Ok(_) => {
                tracing::info!(delegation_id = %id, %status, "delegation reported");
                return Reported::Ok;
            }
            Err(ClientError::Unauthorized(_)) => {
                ctx.unauthorized();
                return Reported::Stopped;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(delegation_id = %id, error = %e, "reporting a delegation failed; retrying");
                if !backoff.wait(&ctx.stop).await {
                    return Reported::Stopped;
                }
            }
            Err(e) => {
                tracing::warn!(delegation_id = %id, %status, error = %e, "the ledger refused the report");
                return Reported::Refused(e.to_string());
            }
        }
    }
}

/// Heartbeats `id` until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(ctx: &std::sync::Arc<Ctx>, id: DelegationId) -> Self {
        let ctx = ctx.clone();
        Self(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(HEARTBEAT_EVERY);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(e) = ctx.client.heartbeat_delegation(ctx.workspace, id).await {
                    tracing::warn!(delegation_id = %id, error = %e, "delegation heartbeat failed");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands a `delegate` row to the agent and reports its outcome. `false`
/// only when stopped before the hand-off was settled (the row is retried
/// on the next run).
pub(super) async fn handle(
    ctx: &std::sync::Arc<Ctx>,
    handoff: &Handoff,
    http: &reqwest::Client,
    row: &ActivityView,
    task: &Delegate,
) -> bool {
    let (id, event) = (task.delegation_id, delegation_event(row, task));
    // True when this run takes over a task an earlier run started.
    let mut resumed = false;
    match report(ctx, id, DelegationStatus::Dispatched, None, None).await {
        Reported::Ok => {}
        Reported::Stopped => return false,
        Reported::Refused(why) => {
            // A replay after a restart: the cursor had not passed this row,
            // so an earlier run of connect handed it over and never settled
            // it. With `--exec` / `--forward` that run's agent died with it
            // (a killed connect, a crashed machine): if the ledger still has
            // the task in flight (`in_progress`, or `stuck` once the sweeper
            // noticed the silence), the callee is back and runs it again.
            // Over (completed, failed), or handed to a stdout agent that
            // reports for itself: the agent had it; never run it twice.
            let again = match handoff {
                Handoff::Stdout => Reported::Refused(why),
                _ => report(ctx, id, DelegationStatus::InProgress, None, None).await,
            };
            match again {
                Reported::Ok => {}
                Reported::Stopped => return false,
                Reported::Refused(why) => {
                    tracing::info!(delegation_id = %id, why, "delegation not handed over again");
                    return true;
                }
            }
            tracing::info!(delegation_id = %id, "resuming a delegation an earlier run left unfinished");
            resumed = true;
        }
    }
    let outcome = match handoff {
        Handoff::Stdout => {
            ctx.out.emit(&event).await;
            return true;
        }
        Handoff::Exec(cmd) => {
            let _beat = Heartbeat::start(ctx, id);
            if !resumed {
                report(ctx, id, DelegationStatus::InProgress, None, None).await;
            }
            handoff::exec(ctx, cmd, &event, &handoff::DELEGATION)
                .await
                .map_err(|e| e.to_string())
        }
        Handoff::Forward(url) => {
            let _beat = Heartbeat::start(ctx, id);
            if !resumed {
                report(ctx, id, DelegationStatus::InProgress, None, None).await;
            }
            run_forward(ctx, http, url, id, &event).await
        }
    };
    let reported = match &outcome {
        Ok(answer) => {
            report(
                ctx,
                id,
                DelegationStatus::Completed,
                Some(head(answer, PREVIEW_BYTES)),
                None,
            )
            .await
        }
        Err(error) => report(ctx, id, DelegationStatus::Failed, None, Some(error)).await,
    };
    !matches!(reported, Reported::Stopped)
}

/// Sends the task as a `message/send` to the local agent; the text of its
/// answer is the result.
async fn run_forward(
    ctx: &Ctx,
    http: &reqwest::Client,
    url: &Url,
    id: DelegationId,
    event: &Value,
) -> Result<String, String> {
    let task = event.get("task").and_then(Value::as_str).unwrap_or("");
    let rpc = inbox::message_send_rpc(
        json!(id),
        json!({"message": {"role": "user", "messageId": id,
            "parts": [{"kind": "text", "text": task}],
            "metadata": {"delegation_id": id, "source_id": event.get("source_id"),
                "traceparent": event.get("traceparent")}}}),
    );
    let answer = handoff::forward(ctx, http, url, &rpc, &handoff::DELEGATION).await?;
    if let Some(error) = answer.get("error") {
        return Err(format!("the local agent answered an error: {error}"));
    }
    Ok(answer_text(&answer).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::head;

    #[test]
    fn the_preview_is_cut_at_a_character_boundary() {
        assert_eq!(head("abc", 4096), "abc");
        let text = format!("{}é", "a".repeat(4095));
        assert_eq!(head(&text, 4096), "a".repeat(4095));
    }
}
