//! Operator commands for what remote agents consume: `secret set|list|rm`
//! (per workspace or global) and `plugin push|list`. Like the other
//! operator commands they only call the HTTP API with the admin token.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::operator::{print_json, OperatorArgs};

/// Whose secret: one workspace's or the global ones.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct SecretScopeArgs {
    /// A secret of this workspace only.
    #[arg(long, value_name = "ID")]
    pub workspace: Option<String>,
    /// A global secret, inherited by every workspace (a workspace's own
    /// secret of the same key wins).
    #[arg(long)]
    pub global: bool,
}

/// `molecule secret …`
#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Set a secret. The value is read from standard input unless given
    /// (a value on the command line ends up in shell history).
    Set(SecretSetArgs),
    /// List secret keys (values are never shown).
    List(SecretListArgs),
    /// Delete a secret.
    Rm(SecretRmArgs),
}

/// `molecule secret set`
#[derive(Debug, Args)]
pub(crate) struct SecretSetArgs {
    /// The key: A-Z, 0-9 and _, not starting with a digit.
    pub key: String,
    /// The value; default: read from standard input (one trailing newline
    /// is dropped).
    pub value: Option<String>,
    /// Workspace or global.
    #[command(flatten)]
    pub scope: SecretScopeArgs,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule secret list`
#[derive(Debug, Args)]
pub(crate) struct SecretListArgs {
    /// Workspace or global.
    #[command(flatten)]
    pub scope: SecretScopeArgs,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule secret rm`
#[derive(Debug, Args)]
pub(crate) struct SecretRmArgs {
    /// The key.
    pub key: String,
    /// Workspace or global.
    #[command(flatten)]
    pub scope: SecretScopeArgs,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

fn scope_label(workspace: Option<&str>) -> String {
    match workspace {
        Some(id) => format!("workspace {id}"),
        None => "every workspace (global)".to_owned(),
    }
}

/// Runs a secret command.
pub(crate) async fn secret(cmd: SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Set(args) => {
            let op = &args.op;
            let value = match args.value {
                Some(v) => v,
                None => {
                    let mut raw = String::new();
                    std::io::stdin()
                        .read_to_string(&mut raw)
                        .context("failed to read the secret's value from standard input")?;
                    let trimmed = raw.strip_suffix('\n').unwrap_or(&raw);
                    trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned()
                }
            };
            let ws = args.scope.workspace.as_deref();
            let set = op
                .client()?
                .set_secret(ws, &args.key, &value)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&set);
            }
            println!("set {} for {}", set.key, scope_label(ws));
            Ok(())
        }
        SecretCommand::List(args) => {
            let op = &args.op;
            let ws = args.scope.workspace.as_deref();
            let keys = op
                .client()?
                .list_secrets(ws)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&keys);
            }
            if keys.is_empty() {
                println!("no secrets for {}", scope_label(ws));
            }
            for k in keys {
                println!("{}\t{}", k.key, k.updated_at.to_rfc3339());
            }
            Ok(())
        }
        SecretCommand::Rm(args) => {
            let op = &args.op;
            let ws = args.scope.workspace.as_deref();
            op.client()?
                .delete_secret(ws, &args.key)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&serde_json::json!({"deleted": true, "key": args.key}));
            }
            println!("deleted {} for {}", args.key, scope_label(ws));
            Ok(())
        }
    }
}

/// `molecule plugin …`
#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Publish a plugin from a directory (packed as .tar.gz) or a .tar.gz file.
    Push(PluginPushArgs),
    /// List published plugins.
    List(PluginListArgs),
}

/// `molecule plugin push`
#[derive(Debug, Args)]
pub(crate) struct PluginPushArgs {
    /// The plugin's name: a-z, 0-9, `.`, `_`, `-`.
    pub name: String,
    /// A directory to pack, or a ready .tar.gz file.
    pub path: PathBuf,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule plugin list`
#[derive(Debug, Args)]
pub(crate) struct PluginListArgs {
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// Packs a directory as a `.tar.gz` whose entries are relative to it.
/// Symbolic links are stored as links (the server checks they stay inside).
pub(crate) fn pack_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .with_context(|| format!("failed to pack {}", dir.display()))?;
    let gz = builder
        .into_inner()
        .context("failed to finish the archive")?;
    gz.finish().context("failed to finish the archive")
}

/// Runs a plugin command.
pub(crate) async fn plugin(cmd: PluginCommand) -> anyhow::Result<()> {
    match cmd {
        PluginCommand::Push(args) => {
            let op = &args.op;
            let meta = std::fs::metadata(&args.path)
                .with_context(|| format!("failed to read {}", args.path.display()))?;
            let tarball = if meta.is_dir() {
                pack_dir(&args.path)?
            } else {
                std::fs::read(&args.path)
                    .with_context(|| format!("failed to read {}", args.path.display()))?
            };
            let published = op
                .client()?
                .publish_plugin(&args.name, tarball)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&published);
            }
            println!(
                "published {} ({} bytes, sha256 {})",
                published.name, published.size, published.sha256
            );
            Ok(())
        }
        PluginCommand::List(args) => {
            let op = &args.op;
            let plugins = op
                .client()?
                .list_plugins()
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&plugins);
            }
            if plugins.is_empty() {
                println!("no plugins published");
            }
            for p in plugins {
                println!(
                    "{}\t{} bytes\t{}\t{}",
                    p.name,
                    p.size,
                    p.sha256,
                    p.updated_at.to_rfc3339()
                );
            }
            Ok(())
        }
    }
}
