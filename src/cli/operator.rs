//! Operator commands: workspaces, send, upload, status.

use clap::{Args, Subcommand};

/// `molecule workspace …`
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// List workspaces.
    List,
}

/// `molecule send`
#[derive(Debug, Args)]
pub struct SendArgs {}

/// `molecule upload`
#[derive(Debug, Args)]
pub struct UploadArgs {}

/// `molecule status`
#[derive(Debug, Args)]
pub struct StatusArgs {}

/// Runs a workspace command.
pub async fn workspace(_cmd: WorkspaceCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

/// Runs `send`.
pub async fn send(_args: SendArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

/// Runs `upload`.
pub async fn upload(_args: UploadArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

/// Runs `status`.
pub async fn status(_args: StatusArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
