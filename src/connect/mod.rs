//! The workspace side: `molecule connect`.

use clap::Args;

/// Flags of `molecule connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {}

/// Runs the workspace side until stopped.
pub async fn run(_args: ConnectArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
