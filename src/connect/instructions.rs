//! The workspace's platform instructions, handed to the agent as a file:
//! `<dir>/.molecule/instructions.md`, whose path `--exec` commands get in
//! `MOLECULE_INSTRUCTIONS_FILE`. Fetched at start and again on every
//! `instructions_changed` inbox row; written atomically (a temporary file
//! renamed over it), so the agent never reads half a text. A fetch that
//! fails keeps the file it had (the next change or start fetches again).

use std::path::PathBuf;

use super::Ctx;

/// The file's name, in `<dir>/.molecule/`.
const FILE: &str = "instructions.md";
/// The variable that names the file for `--exec` commands.
pub(super) const ENV: &str = "MOLECULE_INSTRUCTIONS_FILE";

impl Ctx {
    /// Where the instructions are written.
    pub(super) fn instructions_file(&self) -> PathBuf {
        self.dir.join(".molecule").join(FILE)
    }
}

/// Fetches the resolved instructions and writes them to the file; `false`
/// (logged) when either failed.
pub(super) async fn refresh(ctx: &Ctx) -> bool {
    let resolved = match ctx.client.resolve_instructions(ctx.workspace).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "failed to fetch the platform instructions; keeping the last ones");
            return false;
        }
    };
    let path = ctx.instructions_file();
    let tmp = path.with_extension("md.tmp");
    let text = resolved.instructions;
    let bytes = text.len();
    let wrote = async {
        tokio::fs::write(&tmp, text.as_bytes()).await?;
        tokio::fs::rename(&tmp, &path).await
    }
    .await;
    match wrote {
        Ok(()) => {
            tracing::info!(path = %path.display(), bytes, "platform instructions written");
            true
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "failed to write the platform instructions");
            false
        }
    }
}
