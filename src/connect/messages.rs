//! Hand-off of inbox messages to the local agent, in the order they
//! arrived: one JSON line on stdout (default), a command run per message
//! (`--exec`, its stdout sent back as the reply), or a local push-mode agent
//! (`--forward`, its JSON-RPC answer sent back as the reply). Before a
//! message is handed over, every `platform-pending:<ws>/<fid>` URI in it is
//! rewritten to `workspace:<absolute path>` once that file is on disk.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use url::Url;

use super::backoff::Backoff;
use super::{Ctx, FileState};
use crate::client::{answer_text, ActivityView, ClientError};

/// How messages reach the agent.
#[derive(Debug, Clone)]
pub(super) enum Handoff {
    /// One JSON line per message on stdout.
    Stdout,
    /// `sh -c CMD` per message: the message JSON on stdin, stdout is the reply.
    Exec(String),
    /// A JSON-RPC `message/send` POST to a local push-mode agent.
    Forward(Url),
}

/// Attempts at reaching a `--forward` agent before a message is reported
/// as undeliverable.
const FORWARD_ATTEMPTS: u32 = 5;
/// How long a `--forward` agent may take to answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(300);

/// Handles messages one at a time until the channel closes or a stop is
/// requested (the message in hand is finished; the rest are left to the
/// next run, since the cursor has not passed them).
pub(super) async fn run(
    ctx: Arc<Ctx>,
    handoff: Handoff,
    mut rx: mpsc::UnboundedReceiver<ActivityView>,
) {
    let http = reqwest::Client::new();
    while let Some(row) = rx.recv().await {
        if ctx.stop.is_cancelled() {
            break;
        }
        if row.method.as_deref() == Some("delegate") {
            if super::delegation::handle(&ctx, &handoff, &http, &row).await {
                ctx.finish(row.id).await;
                continue;
            }
            break;
        }
        let event = if row.method.as_deref() == Some("delegation_result") {
            Some(super::delegation::result_event(&row))
        } else {
            message_event(&ctx, &row).await
        };
        let Some(event) = event else {
            // A file it names was abandoned at shutdown: retry next run.
            break;
        };
        let delivered = match &handoff {
            Handoff::Stdout => {
                ctx.out.emit(&event).await;
                true
            }
            Handoff::Exec(cmd) => exec(&ctx, cmd, &event, row.id).await,
            Handoff::Forward(url) => forward(&ctx, &http, url, &row, &event).await,
        };
        if delivered {
            ctx.finish(row.id).await;
        } else {
            break;
        }
    }
}

/// The JSON line describing a message, with its file URIs rewritten.
/// `None` when a file it names could not be settled because of a stop.
async fn message_event(ctx: &Ctx, row: &ActivityView) -> Option<Value> {
    let data = row.data.clone().unwrap_or(Value::Null);
    let mut parts = data
        .get("parts")
        .cloned()
        .or_else(|| {
            row.request_body
                .as_ref()
                .and_then(|b| b.pointer("/params/message/parts"))
                .cloned()
        })
        .unwrap_or_else(|| json!([]));
    if !rewrite_uris(ctx, &mut parts).await {
        return None;
    }
    let text = data
        .get("text")
        .cloned()
        .unwrap_or_else(|| json!(text_of(&parts)));
    Some(json!({
        "type": "message",
        "activity_id": row.id,
        "message_id": data.get("message_id").cloned().unwrap_or(Value::Null),
        "source": data.get("source").cloned().unwrap_or(Value::Null),
        "source_id": row.source_id,
        "text": text,
        "parts": parts,
        "created_at": row.created_at,
    }))
}

fn text_of(parts: &Value) -> String {
    parts
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p.get("kind").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Rewrites every `"uri": "platform-pending:<ws>/<fid>"` under `value` to
/// `workspace:<path>` once the file is on disk. `false` when a stop left a
/// named file incomplete.
async fn rewrite_uris(ctx: &Ctx, value: &mut Value) -> bool {
    let mut pending = Vec::new();
    collect_uris(value, &mut pending);
    let mut resolved = Map::new();
    for uri in pending {
        let Some(rest) = uri.strip_prefix("platform-pending:") else {
            continue;
        };
        let Some((ws, fid)) = rest.split_once('/') else {
            continue;
        };
        if ws != ctx.workspace {
            continue;
        }
        match ctx.wait_for_file(fid).await {
            FileState::Ready(path) => {
                resolved.insert(uri.clone(), json!(format!("workspace:{}", path.display())));
            }
            FileState::Abandoned => return false,
            FileState::Pending | FileState::Gone | FileState::Retrying => {
                tracing::warn!(
                    file_id = fid,
                    "a message names a file that is not on disk; its URI is left as is"
                );
            }
        }
    }
    replace_uris(value, &resolved);
    true
}

fn collect_uris(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("uri", Value::String(s)) if s.starts_with("platform-pending:") => {
                        out.push(s.clone())
                    }
                    _ => collect_uris(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_uris(v, out)),
        _ => {}
    }
}

fn replace_uris(value: &mut Value, resolved: &Map<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(s) if k == "uri" => {
                        if let Some(new) = resolved.get(s.as_str()) {
                            *v = new.clone();
                        }
                    }
                    _ => replace_uris(v, resolved),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_uris(v, resolved)),
        _ => {}
    }
}

/// Runs the command with the message on stdin; its stdout is the reply.
/// `false` only when the reply could not be sent because of a stop.
async fn exec(ctx: &Ctx, cmd: &str, event: &Value, activity_id: i64) -> bool {
    let line = format!("{event}\n");
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(&ctx.dir)
        .env("MOLECULE_WORKSPACE_ID", &ctx.workspace)
        .env("MOLECULE_UPLOADS_DIR", &ctx.uploads_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(activity_id, error = %e, "failed to start the --exec command");
            ctx.out.emit(&json!({"type": "error", "activity_id": activity_id, "error": format!("failed to start --exec: {e}")})).await;
            return true;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is fine.
        let _ = stdin.write_all(line.as_bytes()).await;
    }
    let output = match child.wait_with_output().await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(activity_id, error = %e, "the --exec command failed");
            return true;
        }
    };
    if !output.status.success() {
        tracing::warn!(activity_id, status = %output.status, "the --exec command exited unsuccessfully");
    }
    let reply = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if reply.is_empty() {
        tracing::info!(activity_id, "the --exec command printed nothing: no reply");
        return true;
    }
    reply_with(ctx, &reply, activity_id).await
}

/// Delivers the message to a local push-mode agent; its answer's text is
/// the reply.
async fn forward(
    ctx: &Ctx,
    http: &reqwest::Client,
    url: &Url,
    row: &ActivityView,
    event: &Value,
) -> bool {
    let message_id = event
        .get("message_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut rpc = row
        .request_body
        .clone()
        .filter(Value::is_object)
        .unwrap_or_else(|| {
            json!({"jsonrpc": "2.0", "id": row.id, "method": "message/send",
            "params": {"message": {"role": "user", "messageId": message_id, "parts": []}}})
        });
    // The local agent gets the rewritten parts.
    if let Some(message) = rpc.pointer_mut("/params/message") {
        message["parts"] = event.get("parts").cloned().unwrap_or_else(|| json!([]));
    }
    let mut backoff = Backoff::new();
    for attempt in 1..=FORWARD_ATTEMPTS {
        let result = http
            .post(url.clone())
            .timeout(FORWARD_TIMEOUT)
            .json(&rpc)
            .send()
            .await;
        let error = match result {
            Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                Ok(answer) => {
                    let reply = answer_text(&answer);
                    if reply.trim().is_empty() {
                        tracing::info!(
                            activity_id = row.id,
                            "the local agent's answer has no text: no reply"
                        );
                        return true;
                    }
                    return reply_with(ctx, reply.trim(), row.id).await;
                }
                Err(e) => format!("unreadable answer: {e}"),
            },
            Ok(r) => format!("the local agent answered {}", r.status()),
            Err(e) => e.without_url().to_string(),
        };
        tracing::warn!(activity_id = row.id, attempt, error = %error, url = %url, "forwarding to the local agent failed");
        if attempt == FORWARD_ATTEMPTS || !backoff.wait(&ctx.stop).await {
            if ctx.stop.is_cancelled() {
                return false;
            }
            ctx.out
                .emit(&json!({"type": "error", "activity_id": row.id,
                "error": format!("could not deliver the message to {url}: {error}")}))
                .await;
        }
    }
    true
}

/// Sends the agent's reply through `/notify`, retrying while the server is
/// unreachable. `false` when stopped before it went through.
async fn reply_with(ctx: &Ctx, reply: &str, activity_id: i64) -> bool {
    let mut backoff = Backoff::new();
    loop {
        match ctx.client.notify(&ctx.workspace, reply, &[]).await {
            Ok(_) => {
                tracing::info!(activity_id, "reply sent");
                return true;
            }
            Err(ClientError::Unauthorized(_)) => {
                ctx.unauthorized();
                return false;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(activity_id, error = %e, "sending the reply failed; retrying");
                if !backoff.wait(&ctx.stop).await {
                    return false;
                }
            }
            Err(e) => {
                tracing::error!(activity_id, error = %e, "the server refused the reply");
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_found_and_replaced_only_under_uri_keys() {
        let mut v = json!([{"kind": "text", "text": "platform-pending:w/f"},
            {"kind": "file", "file": {"uri": "platform-pending:w/f", "name": "a.txt"}}]);
        let mut found = Vec::new();
        collect_uris(&v, &mut found);
        assert_eq!(found, vec!["platform-pending:w/f".to_owned()]);
        let mut map = Map::new();
        map.insert("platform-pending:w/f".into(), json!("workspace:/x/a.txt"));
        replace_uris(&mut v, &map);
        assert_eq!(v[1]["file"]["uri"], "workspace:/x/a.txt");
        assert_eq!(v[0]["text"], "platform-pending:w/f");
    }
}
