//! Hand-off of inbox messages to the local agent, in the order they
//! arrived: one JSON line on stdout (default), a command run per message
//! (`--exec`, its stdout sent back as the reply), or a local push-mode agent
//! (`--forward`, its JSON-RPC answer sent back as the reply). Before a
//! message is handed over, every `platform-pending:<ws>/<fid>` URI in it is
//! rewritten to `workspace:<absolute path>` once that file is on disk.
//! This is also the queue delegated tasks and delegation results wait in
//! ([`super::delegation`]); how an item is handed over is [`super::handoff`].

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use url::Url;

use super::backoff::Backoff;
use super::handoff::{self, ExecError, Handoff};
use super::{attach, delegation, Ctx, FileState};
use crate::client::{answer_text, ActivityView, ClientError};
use crate::domain::inbox::{self, InboxItem, Message, Sender};
use crate::domain::FileId;

/// Handles messages one at a time until the channel closes or a stop is
/// requested (the message in hand is finished; the rest are left to the
/// next run, since the cursor has not passed them).
pub(super) async fn run(
    ctx: Arc<Ctx>,
    handoff: Handoff,
    mut rx: mpsc::UnboundedReceiver<(ActivityView, InboxItem)>,
) {
    let http = reqwest::Client::new();
    while let Some((row, item)) = rx.recv().await {
        if ctx.stop.is_cancelled() {
            break;
        }
        let (event, rpc) = match &item {
            InboxItem::Delegate(task) => {
                if delegation::handle(&ctx, &handoff, &http, &row, task).await {
                    ctx.finish(row.id).await;
                    continue;
                }
                break;
            }
            InboxItem::DelegationResult(result) => {
                (Some(delegation::result_event(&row, result)), None)
            }
            InboxItem::ApprovalDecided(decided) => (Some(approval_event(&row, decided)), None),
            InboxItem::ApprovalRequested(asked) => {
                (Some(approval_request_event(&row, asked)), None)
            }
            InboxItem::Message(message) => (
                message_event(&ctx, &row, message).await,
                message.rpc.as_ref(),
            ),
            InboxItem::ChatUpload(upload) => match file_event(&ctx, &row, upload).await {
                FileEvent::Ready(event) => (Some(event), None),
                FileEvent::Skip => {
                    ctx.finish(row.id).await;
                    continue;
                }
                FileEvent::Stopped => break,
            },
            // The poll loop sends nothing else here.
            _ => {
                ctx.finish(row.id).await;
                continue;
            }
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
            Handoff::Forward(url) => forward(&ctx, &http, url, row.id, rpc, &event).await,
        };
        if delivered {
            ctx.finish(row.id).await;
        } else {
            break;
        }
    }
}

/// The JSON line of the decision on an approval this workspace asked for:
/// what an agent blocked on the request waits for.
fn approval_event(row: &ActivityView, d: &inbox::ApprovalDecided) -> Value {
    serde_json::json!({
        "type": "approval_decision",
        "activity_id": row.id,
        "approval_id": d.approval_id,
        "action": d.action,
        "task_id": d.task_id,
        "decision": d.decision,
        "decided_by": d.decided_by,
        "note": d.note,
        "decided_at": d.decided_at,
    })
}

/// The JSON line of a request this workspace may decide (it answers with
/// `POST /workspaces/:requester/approvals/:id/decide`).
fn approval_request_event(row: &ActivityView, a: &inbox::ApprovalRequested) -> Value {
    serde_json::json!({
        "type": "approval_request",
        "activity_id": row.id,
        "approval_id": a.approval_id,
        "workspace_id": a.workspace_id,
        "action": a.action,
        "reason": a.reason,
        "context": a.context,
        "expires_at": a.expires_at,
    })
}

/// The JSON line describing a message, with its file URIs rewritten.
/// `None` when a file it names could not be settled because of a stop.
async fn message_event(ctx: &Ctx, row: &ActivityView, message: &Message) -> Option<Value> {
    let mut parts = message.parts.clone();
    if !rewrite_uris(ctx, &mut parts).await {
        return None;
    }
    let attachments = attachments_of(&parts).await;
    Some(json!({
        "type": "message",
        "activity_id": row.id,
        "message_id": message.message_id,
        "source": message.sender.map(Sender::kind),
        "source_id": row.source_id,
        "text": message.text,
        "parts": parts,
        "attachments": attachments,
        "created_at": row.created_at,
        "traceparent": message.traceparent.map(|p| p.header()),
    }))
}

/// What a file dropped alone comes to for the agent.
enum FileEvent {
    /// On disk: this `file_arrived` event.
    Ready(Value),
    /// Not deliverable (gone, or being retried): nothing to announce.
    Skip,
    /// A stop left it incomplete: the next run announces it.
    Stopped,
}

/// The `file_arrived` event of a file dropped alone, once it is on disk:
/// its description, its local `path` and `workspace:` URI, and the same
/// as one A2A `file` part (what a `--forward` agent gets).
async fn file_event(ctx: &Ctx, row: &ActivityView, upload: &inbox::ChatUpload) -> FileEvent {
    let path = match ctx.wait_for_file(upload.file_id).await {
        FileState::Ready(path) => path,
        FileState::Abandoned => return FileEvent::Stopped,
        state => {
            tracing::warn!(file_id = %upload.file_id, ?state, "a file dropped alone is not on disk; not announcing it");
            return FileEvent::Skip;
        }
    };
    let uri = format!("workspace:{}", path.display());
    let part = json!({"kind": "file", "file": {"uri": uri, "name": upload.filename,
        "mimeType": upload.mimetype}});
    FileEvent::Ready(json!({
        "type": "file_arrived",
        "activity_id": row.id,
        "message_id": format!("file-{}", upload.file_id),
        "file_id": upload.file_id,
        "filename": upload.filename,
        "mimetype": upload.mimetype,
        "size": upload.size,
        "sha256": upload.sha256,
        "path": path,
        "uri": uri,
        "parts": [part],
        "attachments": [attachment(&path, &upload.filename, &upload.mimetype, Some(upload.size))],
        "created_at": row.created_at,
    }))
}

/// One entry of an event's `attachments`: a file on this machine.
fn attachment(path: &std::path::Path, name: &str, mime: &str, size: Option<u64>) -> Value {
    json!({"name": name, "mimeType": mime, "size": size, "path": path,
        "uri": format!("workspace:{}", path.display())})
}

/// The `attachments` of a message event: each `file` part whose URI was
/// rewritten to a file on this machine, with its local `path`.
async fn attachments_of(parts: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for file in parts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("file"))
    {
        let Some(path) = file
            .get("uri")
            .and_then(Value::as_str)
            .and_then(|u| u.strip_prefix("workspace:"))
        else {
            continue;
        };
        let path = std::path::Path::new(path);
        let name = file.get("name").and_then(Value::as_str).unwrap_or_default();
        let mime = file
            .get("mimeType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let size = tokio::fs::metadata(path).await.ok().map(|m| m.len());
        out.push(attachment(path, name, mime, size));
    }
    out
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
        if ws != ctx.workspace.to_string() {
            continue;
        }
        let state = match fid.parse::<FileId>() {
            Ok(fid) => ctx.wait_for_file(fid).await,
            Err(_) => FileState::Gone,
        };
        match state {
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

/// Runs the command with the message on stdin; its stdout is the reply
/// (whatever its exit status: [`handoff::MESSAGE`]). `false` only when the
/// reply could not be sent because of a stop.
async fn exec(ctx: &Ctx, cmd: &str, event: &Value, activity_id: i64) -> bool {
    let mut answer = handoff::exec(ctx, cmd, event, &handoff::MESSAGE).await;
    // A restart stopped the command: the message is handed to a fresh one.
    while matches!(answer, Err(ExecError::Restarted)) && !ctx.stop.is_cancelled() {
        tracing::info!(activity_id, "restarted: handing the message over again");
        answer = handoff::exec(ctx, cmd, event, &handoff::MESSAGE).await;
    }
    match answer {
        Ok(reply) if reply.is_empty() => {
            tracing::info!(activity_id, "the --exec command printed nothing: no reply");
            true
        }
        Ok(reply) => {
            // `attach: <path>` lines send files to the user with the reply.
            let (text, files) = attach::split_reply(&ctx.dir, &reply);
            let Some(attachments) = attach::upload(ctx, &files, activity_id).await else {
                return false;
            };
            reply_with(ctx, &text, &attachments, activity_id).await
        }
        Err(e @ ExecError::Start(_)) => {
            tracing::error!(activity_id, error = %e, "failed to start the --exec command");
            ctx.out
                .emit(&json!({"type": "error", "activity_id": activity_id, "error": e.to_string()}))
                .await;
            true
        }
        Err(e) => {
            tracing::error!(activity_id, error = %e, "the --exec command failed");
            true
        }
    }
}

/// Delivers the message to a local push-mode agent, as its JSON-RPC
/// request (`rpc`, or one built from the line when the row has none), with
/// [`handoff::MESSAGE`]'s retries; its answer's text is the reply.
async fn forward(
    ctx: &Ctx,
    http: &reqwest::Client,
    url: &Url,
    activity_id: i64,
    rpc: Option<&Value>,
    event: &Value,
) -> bool {
    let mut rpc = rpc.cloned().unwrap_or_else(|| {
        let message_id = event.get("message_id").and_then(Value::as_str);
        inbox::message_send_rpc(
            json!(activity_id),
            json!({"message": {"role": "user", "messageId": message_id, "parts": []}}),
        )
    });
    // The local agent gets the rewritten parts, and the trace context.
    if let Some(message) = rpc.pointer_mut("/params/message") {
        message["parts"] = event.get("parts").cloned().unwrap_or_else(|| json!([]));
        let p = event.get("traceparent").filter(|p| p.is_string());
        // Only into an object (or a missing one): indexing any other JSON
        // value would panic.
        if let (Some(p), true) = (p, message.is_object()) {
            let meta = &mut message["metadata"];
            if meta.is_null() {
                *meta = json!({});
            }
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("traceparent".into(), p.clone());
            }
        }
    }
    match handoff::forward(ctx, http, url, &rpc, &handoff::MESSAGE).await {
        Ok(answer) => {
            let reply = answer_text(&answer);
            if reply.trim().is_empty() {
                tracing::info!(
                    activity_id,
                    "the local agent's answer has no text: no reply"
                );
                return true;
            }
            reply_with(ctx, reply.trim(), &[], activity_id).await
        }
        Err(_) if ctx.stop.is_cancelled() => false,
        Err(error) => {
            ctx.out
                .emit(&json!({"type": "error", "activity_id": activity_id,
                    "error": format!("could not deliver the message to {url}: {error}")}))
                .await;
            true
        }
    }
}

/// Sends the agent's reply through `/notify`, retrying while the server is
/// unreachable. `false` when stopped before it went through.
async fn reply_with(ctx: &Ctx, reply: &str, attachments: &[Value], activity_id: i64) -> bool {
    let mut backoff = Backoff::new();
    loop {
        match ctx.client.notify(ctx.workspace, reply, attachments).await {
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
