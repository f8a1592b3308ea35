//! Files an `--exec` agent sends the user with its reply: each line of its
//! stdout that reads `attach: <path>` (relative to `--dir`, or absolute)
//! and names a regular file is taken out of the text; connect uploads those
//! files to the workspace's own chat (`POST /workspaces/:id/notify/uploads`)
//! and the reply's `/notify` names them as its `attachments`. A line whose
//! path is not a file stays in the text as it was.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::backoff::Backoff;
use super::Ctx;
use crate::client::ClientError;

/// The prefix of a line that attaches a file.
const PREFIX: &str = "attach:";

/// The reply's text without its attach lines, and the files they name.
pub(super) fn split_reply(dir: &Path, reply: &str) -> (String, Vec<PathBuf>) {
    let mut text = Vec::new();
    let mut files = Vec::new();
    for line in reply.lines() {
        let named = line
            .trim()
            .strip_prefix(PREFIX)
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| dir.join(p))
            .filter(|p| p.is_file());
        match named {
            Some(path) => files.push(path),
            None => text.push(line),
        }
    }
    (text.join("\n").trim().to_owned(), files)
}

/// Uploads `files` for the user, retrying while the server is unreachable;
/// answers the `/notify` attachments. A refusal (too large, say) is an
/// `error` line and the reply goes without them; `None` when stopped.
pub(super) async fn upload(ctx: &Ctx, files: &[PathBuf], activity_id: i64) -> Option<Vec<Value>> {
    if files.is_empty() {
        return Some(Vec::new());
    }
    let mut backoff = Backoff::new();
    loop {
        match ctx.client.upload_files_to_user(ctx.workspace, files).await {
            Ok(sent) => {
                let attachments = sent
                    .files
                    .into_iter()
                    .map(|f| json!({"uri": f.uri, "name": f.name, "mimeType": f.mime_type, "size": f.size}))
                    .collect();
                return Some(attachments);
            }
            Err(ClientError::Unauthorized(_)) => {
                ctx.unauthorized();
                return None;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(activity_id, error = %e, "uploading the reply's files failed; retrying");
                if !backoff.wait(&ctx.stop).await {
                    return None;
                }
            }
            Err(e) => {
                tracing::error!(activity_id, error = %e, "the server refused the reply's files");
                ctx.out
                    .emit(&json!({"type": "error", "activity_id": activity_id,
                        "error": format!("the reply's files were not attached: {e}")}))
                    .await;
                return Some(Vec::new());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_lines_naming_files_leave_the_text_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("report.txt"), "r").unwrap();
        let reply =
            "Here it is.\nattach: report.txt\nattach: missing.txt\n  attach:  report.txt  \nBye";
        let (text, files) = split_reply(dir.path(), reply);
        assert_eq!(text, "Here it is.\nattach: missing.txt\nBye");
        assert_eq!(
            files,
            vec![dir.path().join("report.txt"), dir.path().join("report.txt")]
        );
    }
}
