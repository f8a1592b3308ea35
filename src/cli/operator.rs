//! Operator commands: `workspace create|list|show|rotate|delete`, `send`,
//! `upload` (a progress bar per file) and `status`. Each one is a thin
//! shell over [`crate::client::Client`] with the admin token: it resolves
//! the server and token, makes one or two calls, and prints either a short
//! human summary or, with `--json`, the server's answer as JSON.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, ClientError, NewWorkspace, ProgressFn};

/// Flags every operator command takes.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// The server's URL.
    #[arg(long, env = "MOLECULE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The operator's token; default: the contents of <data-dir>/admin-token.
    #[arg(long, env = "MOLECULE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Where a local server keeps its generated admin token.
    #[arg(long, env = "MOLECULE_DATA_DIR", default_value = "./molecule-data")]
    pub data_dir: PathBuf,
    /// Print machine-readable JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl OperatorArgs {
    /// A client with the operator's token.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let token = match &self.admin_token {
            Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
            _ => {
                let path = self.data_dir.join("admin-token");
                let raw = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "no admin token: pass --admin-token, set MOLECULE_ADMIN_TOKEN, or point --data-dir at the \
                         server's data directory (could not read {})",
                        path.display()
                    )
                })?;
                raw.trim().to_owned()
            }
        };
        Ok(Client::new(&self.server, token)?)
    }

    /// Turns a client error into the sentence an operator can act on.
    pub(crate) fn explain(&self, e: ClientError) -> anyhow::Error {
        let server = self.server.trim_end_matches('/');
        match e {
            ClientError::Unauthorized(_) => anyhow::anyhow!(
                "the admin token was refused by {server} (check --admin-token / MOLECULE_ADMIN_TOKEN)"
            ),
            e if e.is_connect() => anyhow::anyhow!("could not connect to {server}: is `molecule serve` running at {server}?"),
            ClientError::Transport { source, .. } => {
                anyhow::anyhow!("the connection to {server} failed: {source} (is `molecule serve` running there?)")
            }
            ClientError::Status { status, message } => anyhow::anyhow!("{message} ({status})"),
            ClientError::NotFound(m) | ClientError::Gone { message: m, .. } => anyhow::anyhow!("{m}"),
            other => other.into(),
        }
    }
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("failed to render JSON")?
    );
    Ok(())
}

/// Delivery mode of a new workspace.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// The server forwards to the workspace's public URL.
    Push,
    /// The workspace long-polls (behind NAT; `molecule connect`).
    Poll,
}

/// `molecule workspace …`
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace and print the `molecule connect` line to paste.
    Create(CreateArgs),
    /// List workspaces.
    List(ListArgs),
    /// Show one workspace.
    Show(IdArgs),
    /// Mint a new token for a workspace (earlier tokens stop working).
    Rotate(IdArgs),
    /// Delete a workspace (revokes its tokens).
    Delete(IdArgs),
}

/// `molecule workspace create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// How messages and files reach it.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Its public callback URL (push mode).
    #[arg(long)]
    pub url: Option<String>,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule workspace list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// A command about one workspace.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The workspace id.
    pub id: String,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule send`
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The workspace id.
    pub id: String,
    /// The message text.
    pub text: String,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule upload`
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The workspace id.
    pub id: String,
    /// The files to send.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// Runs a workspace command.
pub async fn workspace(cmd: WorkspaceCommand) -> anyhow::Result<()> {
    match cmd {
        WorkspaceCommand::Create(args) => {
            let op = &args.op;
            let client = op.client()?;
            let new = NewWorkspace {
                name: args.name.clone(),
                delivery_mode: match args.mode {
                    Mode::Push => crate::domain::DeliveryMode::Push,
                    Mode::Poll => crate::domain::DeliveryMode::Poll,
                },
                url: args.url.clone(),
            };
            let created = client
                .create_workspace(&new)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&created);
            }
            let w = &created.workspace;
            println!(
                "created workspace {:?} ({}), {} mode",
                w.name, w.id, w.delivery_mode
            );
            println!("token (shown this once): {}", created.auth_token);
            println!();
            println!("on the agent's machine, run:");
            println!();
            println!("  {}", created.connection.connect_command);
            Ok(())
        }
        WorkspaceCommand::List(args) => {
            let op = &args.op;
            let list = op
                .client()?
                .list_workspaces()
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("no workspaces yet: `molecule workspace create --name N --mode poll`");
                return Ok(());
            }
            println!("{:<36}  {:<4}  {:<15}  NAME", "ID", "MODE", "STATUS");
            for w in list {
                println!(
                    "{:<36}  {:<4}  {:<15}  {}",
                    w.id, w.delivery_mode, w.status, w.name
                );
            }
            Ok(())
        }
        WorkspaceCommand::Show(args) => {
            let op = &args.op;
            let w = op
                .client()?
                .get_workspace(&args.id)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&w);
            }
            println!("id:             {}", w.id);
            println!("name:           {}", w.name);
            println!("mode:           {}", w.delivery_mode);
            println!("url:            {}", w.url.as_deref().unwrap_or("-"));
            println!("status:         {}", w.status);
            println!("created:        {}", w.created_at);
            let beat = w
                .last_heartbeat_at
                .map_or_else(|| "never".to_owned(), |t| t.to_string());
            println!("last heartbeat: {beat}");
            Ok(())
        }
        WorkspaceCommand::Rotate(args) => {
            let op = &args.op;
            let rotated = op
                .client()?
                .rotate_token(&args.id)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&rotated);
            }
            println!(
                "new token (shown this once; every earlier token stopped working): {}",
                rotated.auth_token
            );
            println!();
            println!("on the agent's machine, restart with:");
            println!();
            println!("  {}", rotated.connection.connect_command);
            Ok(())
        }
        WorkspaceCommand::Delete(args) => {
            let op = &args.op;
            op.client()?
                .delete_workspace(&args.id)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&serde_json::json!({"deleted": true, "id": args.id}));
            }
            println!("deleted workspace {} (its tokens no longer work)", args.id);
            Ok(())
        }
    }
}

/// Runs `send`.
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let op = &args.op;
    let answer = op
        .client()?
        .send_text(&args.id, &args.text)
        .await
        .map_err(|e| op.explain(e))?;
    if op.json {
        return print_json(&answer);
    }
    if answer.get("queued").and_then(Value::as_bool) == Some(true) {
        let id = answer
            .get("activity_id")
            .map(Value::to_string)
            .unwrap_or_default();
        println!("queued for the workspace (activity {id})");
    } else {
        // A push workspace answered synchronously: show its text.
        let text = crate::client::answer_text(&answer);
        if text.is_empty() {
            println!("{}", serde_json::to_string(&answer).unwrap_or_default());
        } else {
            println!("{text}");
        }
    }
    Ok(())
}

/// Runs `upload`.
pub async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let op = &args.op;
    let client = op.client()?;
    let mut sizes = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        anyhow::ensure!(meta.is_file(), "{} is not a file", path.display());
        sizes.push(meta.len());
    }
    let multi = MultiProgress::new();
    if op.json {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(
        "{prefix:30!} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
    )
    .context("BUG: progress template")?
    .progress_chars("=> ");
    let bars: Vec<ProgressBar> = args
        .files
        .iter()
        .zip(&sizes)
        .map(|(path, size)| {
            let bar = multi.add(ProgressBar::new(*size));
            bar.set_style(style.clone());
            bar.set_prefix(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            bar
        })
        .collect();
    let shared = Arc::new(bars);
    let for_progress = shared.clone();
    let progress: ProgressFn = Arc::new(move |index, sent| {
        if let Some(bar) = for_progress.get(index) {
            bar.set_position(sent);
        }
    });
    let result = client.upload_files(&args.id, &args.files, progress).await;
    for bar in shared.iter() {
        bar.finish();
    }
    let uploaded = result.map_err(|e| op.explain(e))?;
    if op.json {
        return print_json(&uploaded);
    }
    println!("uploaded {} file(s):", uploaded.files.len());
    for f in &uploaded.files {
        println!(
            "  {}  {}  {} bytes  sha256 {}",
            f.uri, f.name, f.size, f.sha256
        );
    }
    Ok(())
}

/// Runs `status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let op = &args.op;
    let stats = op.client()?.stats().await.map_err(|e| op.explain(e))?;
    if op.json {
        return print_json(&stats);
    }
    println!("pending uploads:    {}", stats.pending);
    println!("  fetched, unacked: {}", stats.fetched_not_acked);
    println!(
        "  bytes pending:    {}",
        bytesize::ByteSize(stats.bytes_pending.max(0) as u64)
    );
    println!("  oldest pending:   {} s", stats.oldest_pending_age_s);
    println!("acked (to sweep):   {}", stats.acked);
    println!("expired (to sweep): {}", stats.expired);
    Ok(())
}
