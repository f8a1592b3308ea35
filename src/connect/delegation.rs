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

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use url::Url;

use super::backoff::Backoff;
use super::messages::Handoff;
use super::Ctx;
use crate::client::{answer_text, ActivityView, ClientError};

/// How often the ledger hears that the agent is still working; well under
/// the server's default `--delegation-stuck-after` (10 min).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
/// Bytes of the answer kept as `result_preview`.
const PREVIEW_BYTES: usize = 4096;
/// How long a `--forward` agent may work on a delegated task.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3600);

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
pub(super) fn delegation_event(row: &ActivityView) -> Option<(String, Value)> {
    let data = row.data.as_ref()?;
    let id = data.get("delegation_id")?.as_str()?.to_owned();
    let event = json!({
        "type": "delegation",
        "activity_id": row.id,
        "delegation_id": id,
        "task": data.get("task").cloned().unwrap_or(Value::Null),
        "deadline": data.get("deadline").cloned().unwrap_or(Value::Null),
        "source_id": row.source_id,
        "created_at": row.created_at,
    });
    Some((id, event))
}

/// The JSON line of a `delegation_result` row.
pub(super) fn result_event(row: &ActivityView) -> Value {
    let data = row.data.clone().unwrap_or(Value::Null);
    json!({
        "type": "delegation_result",
        "activity_id": row.id,
        "delegation_id": data.get("delegation_id").cloned().unwrap_or(Value::Null),
        "status": data.get("status").cloned().unwrap_or(Value::Null),
        "result_preview": data.get("result_preview").cloned().unwrap_or(Value::Null),
        "error_detail": data.get("error_detail").cloned().unwrap_or(Value::Null),
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
    id: &str,
    status: &str,
    preview: Option<&str>,
    error: Option<&str>,
) -> Reported {
    let mut backoff = Backoff::new();
    loop {
        match ctx
            .client
            .report_delegation(&ctx.workspace, id, status, preview, error)
            .await
        {
            Ok(_) => {
                tracing::info!(delegation_id = id, status, "delegation reported");
                return Reported::Ok;
            }
            Err(ClientError::Unauthorized(_)) => {
                ctx.unauthorized();
                return Reported::Stopped;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(delegation_id = id, error = %e, "reporting a delegation failed; retrying");
                if !backoff.wait(&ctx.stop).await {
                    return Reported::Stopped;
                }
            }
            Err(e) => {
                tracing::warn!(delegation_id = id, status, error = %e, "the ledger refused the report");
                return Reported::Refused(e.to_string());
            }
        }
    }
}

/// Heartbeats `id` until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(ctx: &std::sync::Arc<Ctx>, id: &str) -> Self {
        let ctx = ctx.clone();
        let id = id.to_owned();
        Self(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(HEARTBEAT_EVERY);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(e) = ctx.client.heartbeat_delegation(&ctx.workspace, &id).await {
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
) -> bool {
    let Some((id, event)) = delegation_event(row) else {
        tracing::warn!(
            activity_id = row.id,
            "a delegate row without a delegation id; skipped"
        );
        return true;
    };
    // True when this run takes over a task an earlier run started.
    let mut resumed = false;
    match report(ctx, &id, "dispatched", None, None).await {
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
                _ => report(ctx, &id, "in_progress", None, None).await,
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
            let _beat = Heartbeat::start(ctx, &id);
            if !resumed {
                report(ctx, &id, "in_progress", None, None).await;
            }
            run_exec(ctx, cmd, &event).await
        }
        Handoff::Forward(url) => {
            let _beat = Heartbeat::start(ctx, &id);
            if !resumed {
                report(ctx, &id, "in_progress", None, None).await;
            }
            run_forward(http, url, &id, &event).await
        }
    };
    let reported = match &outcome {
        Ok(answer) => {
            report(
                ctx,
                &id,
                "completed",
                Some(head(answer, PREVIEW_BYTES)),
                None,
            )
            .await
        }
        Err(error) => report(ctx, &id, "failed", None, Some(error)).await,
    };
    !matches!(reported, Reported::Stopped)
}

/// Runs the command with the delegation on stdin: its stdout is the
/// answer when it exits 0; otherwise the exit status is the error.
async fn run_exec(ctx: &Ctx, cmd: &str, event: &Value) -> Result<String, String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(&ctx.dir)
        .env("MOLECULE_WORKSPACE_ID", &ctx.workspace)
        .env("MOLECULE_UPLOADS_DIR", &ctx.uploads_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("failed to start --exec: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(format!("{event}\n").as_bytes()).await;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("the --exec command failed: {e}"))?;
    if !output.status.success() {
        return Err(format!("the --exec command exited with {}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Sends the task as a `message/send` to the local agent; the text of its
/// answer is the result.
async fn run_forward(
    http: &reqwest::Client,
    url: &Url,
    id: &str,
    event: &Value,
) -> Result<String, String> {
    let task = event.get("task").and_then(Value::as_str).unwrap_or("");
    let rpc = json!({"jsonrpc": "2.0", "id": id, "method": "message/send",
        "params": {"message": {"role": "user", "messageId": id,
            "parts": [{"kind": "text", "text": task}],
            "metadata": {"delegation_id": id, "source_id": event.get("source_id")}}}});
    let answer = http
        .post(url.clone())
        .timeout(FORWARD_TIMEOUT)
        .json(&rpc)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !answer.status().is_success() {
        return Err(format!("the local agent answered {}", answer.status()));
    }
    let answer: Value = answer
        .json()
        .await
        .map_err(|e| format!("unreadable answer: {e}"))?;
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
