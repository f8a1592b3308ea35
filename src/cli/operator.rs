//! Operator commands: `workspace create|list|show|rotate|delete|pause|
//! resume|restart`, `org import`, `send`, `upload` (a progress bar per
//! file), `status`, `delegate` and `delegations`. Each one is a thin
//! shell over [`crate::client::Client`] with the admin token: it resolves
//! the server and token, makes one or two calls, and prints either a short
//! human summary or, with `--json`, the server's answer as JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, ClientError, NewWorkspace, ProgressFn};

/// Flags every operator command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct OperatorArgs {
    /// The server's URL.
    #[arg(long, env = "MOLECULE_SERVER", default_value = crate::config::defaults::SERVER_URL)]
    pub server: String,
    /// The operator's token; default: the token `molecule login` saved,
    /// else the contents of <data-dir>/admin-token.
    #[arg(long, env = "MOLECULE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Where a local server keeps its generated admin token.
    #[arg(long, env = "MOLECULE_DATA_DIR", default_value = crate::config::defaults::DATA_DIR)]
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
                let saved = login_file(None)
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .map(|raw| raw.trim().to_owned())
                    .filter(|t| !t.is_empty());
                if let Some(token) = saved {
                    return Ok(Client::new(&self.server, token)?);
                }
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

/// The file `molecule login` writes and operator commands read when no
/// token is given by flag or environment.
pub(crate) fn login_file(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("molecule").join("token"))
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
pub(crate) enum Mode {
    /// The server forwards to the workspace's public URL.
    Push,
    /// The workspace long-polls (behind NAT; `molecule connect`).
    Poll,
}

/// `molecule workspace …`
#[derive(Debug, Subcommand)]
pub(crate) enum WorkspaceCommand {
    /// Create a workspace and print the `molecule connect` line to paste.
    Create(CreateArgs),
    /// List workspaces.
    List(ListArgs),
    /// Show one workspace.
    Show(IdArgs),
    /// Mint a new token for a workspace (earlier tokens stop working).
    Rotate(IdArgs),
    /// Delete a workspace (revokes its tokens).
    Delete(DeleteArgs),
    /// Pause a workspace (messages and files are still staged for it).
    Pause(IdArgs),
    /// Resume a paused workspace.
    Resume(IdArgs),
    /// Ask a workspace's agent to restart.
    Restart(IdArgs),
}

/// `molecule workspace delete`
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The workspace id.
    pub id: String,
    /// Also remove every workspace below it.
    #[arg(long)]
    pub cascade: bool,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule org …`
#[derive(Debug, Subcommand)]
pub(crate) enum OrgCommand {
    /// Create a team tree from a YAML or JSON template (idempotent: what
    /// exists is skipped).
    Import(ImportArgs),
}

/// `molecule org import`
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The template file (`.json` is sent as JSON, anything else as YAML).
    pub file: PathBuf,
    /// Show what would be created, without creating anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule workspace create`
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// How messages and files reach it.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Its public callback URL (push mode).
    #[arg(long)]
    pub url: Option<String>,
    /// Its parent workspace's id (omitted: a root).
    #[arg(long)]
    pub parent: Option<String>,
    /// Tier 1–4 (omitted: the server's default tier).
    #[arg(long)]
    pub tier: Option<i64>,
    /// Runtime, e.g. `external` or `claude-code` (omitted: `external`).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Model (omitted: the runtime's default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule workspace list`
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// A command about one workspace.
#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The workspace id.
    pub id: String,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule send`
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
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
pub(crate) struct UploadArgs {
    /// The workspace id.
    pub id: String,
    /// The files to send.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule delegate`
#[derive(Debug, Args)]
pub(crate) struct DelegateArgs {
    /// The delegating workspace's id, or `operator`.
    pub from: String,
    /// The workspace asked to do it.
    pub to: String,
    /// The task.
    pub task: String,
    /// Exactly once per caller and key (default: derived from the target,
    /// the task and the current minute).
    #[arg(long)]
    pub key: Option<String>,
    /// Fail the delegation if it is not finished within this long (e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<std::time::Duration>,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule delegations`
#[derive(Debug, Args)]
pub(crate) struct DelegationsArgs {
    /// Only this status (queued, dispatched, in_progress, completed, failed, stuck).
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Show the ledger's figures instead of the rows.
    #[arg(long)]
    pub stats: bool,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule status`
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// Runs a workspace command.
pub(crate) async fn workspace(cmd: WorkspaceCommand) -> anyhow::Result<()> {
    match cmd {
        WorkspaceCommand::Create(args) => create(args).await,
        WorkspaceCommand::List(args) => list(args).await,
        WorkspaceCommand::Show(args) => show(args).await,
        WorkspaceCommand::Rotate(args) => rotate(args).await,
        WorkspaceCommand::Delete(args) => delete(args).await,
        WorkspaceCommand::Pause(args) => lifecycle(args, "pause", "paused").await,
        WorkspaceCommand::Resume(args) => lifecycle(args, "resume", "resumed").await,
        WorkspaceCommand::Restart(args) => {
            lifecycle(
                args,
                "restart",
                "asked to restart (active tasks reset to 0)",
            )
            .await
        }
    }
}

/// `molecule workspace create`: creates it and prints its token and the
/// `molecule connect` line to run on the agent's machine.
async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let op = &args.op;
    let client = op.client()?;
    let new = NewWorkspace {
        name: args.name.clone(),
        delivery_mode: match args.mode {
            Mode::Push => crate::domain::DeliveryMode::Push,
            Mode::Poll => crate::domain::DeliveryMode::Poll,
        },
        url: args.url.clone(),
        parent_id: args.parent.clone(),
        tier: args.tier,
        runtime: args.runtime.clone(),
        model: args.model.clone(),
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
        "created workspace {:?} ({}), {} mode, tier {}, runtime {}, model {}",
        w.name,
        w.id,
        w.delivery_mode,
        w.tier,
        w.runtime,
        w.model.as_deref().unwrap_or("-")
    );
    if let Some(parent) = w.parent_id {
        println!("parent: {parent}");
    }
    println!("token (shown this once): {}", created.auth_token);
    println!();
    println!("on the agent's machine, run:");
    println!();
    println!("  {}", created.connection.connect_command);
    print_mcp_setup(&created.connection);
    Ok(())
}

/// `molecule workspace list`: the workspaces as a tree.
async fn list(args: ListArgs) -> anyhow::Result<()> {
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
    print!("{}", render_tree(&list));
    Ok(())
}

/// `molecule workspace show`: one workspace, a field a line.
async fn show(args: IdArgs) -> anyhow::Result<()> {
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
    println!(
        "parent:         {}",
        w.parent_id
            .map_or_else(|| "-".to_owned(), |p| p.to_string())
    );
    println!("children:       {}", w.children.len());
    println!("tier:           {}", w.tier);
    println!("runtime:        {}", w.runtime);
    println!("model:          {}", w.model.as_deref().unwrap_or("-"));
    println!("active tasks:   {}", w.active_tasks);
    println!(
        "current task:   {}",
        w.current_task.as_deref().unwrap_or("-")
    );
    println!("created:        {}", w.created_at);
    let beat = w
        .last_heartbeat_at
        .map_or_else(|| "never".to_owned(), |t| t.to_string());
    println!("last heartbeat: {beat}");
    Ok(())
}

/// `molecule workspace rotate`: a new token and the line to restart with.
async fn rotate(args: IdArgs) -> anyhow::Result<()> {
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
    print_mcp_setup(&rotated.connection);
    Ok(())
}

/// The MCP client block of a connection, after its connect command.
fn print_mcp_setup(c: &crate::http::Connection) {
    let file = format!("~/.molecule/{}.token", c.workspace_id);
    println!();
    println!("to use its tools from an MCP client (Claude Code, opencode, …):");
    println!();
    println!(
        "{}",
        crate::domain::mcp_setup_text(&c.platform_url, c.workspace_id, &file)
    );
}

/// `molecule workspace delete`: deletes it (and below it with `--cascade`).
async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let op = &args.op;
    op.client()?
        .delete_workspace(&args.id, args.cascade)
        .await
        .map_err(|e| op.explain(e))?;
    if op.json {
        return print_json(&serde_json::json!({"deleted": true, "id": args.id}));
    }
    println!("deleted workspace {} (its tokens no longer work)", args.id);
    Ok(())
}

async fn lifecycle(args: IdArgs, verb: &str, done: &str) -> anyhow::Result<()> {
    let op = &args.op;
    let w = op
        .client()?
        .lifecycle(&args.id, verb)
        .await
        .map_err(|e| op.explain(e))?;
    if op.json {
        return print_json(&w);
    }
    println!(
        "workspace {:?} ({}) {done}; status {}",
        w.name, w.id, w.status
    );
    Ok(())
}

/// The workspace list drawn as a tree: children under their parent,
/// siblings oldest first, a workspace whose parent is not in the list
/// shown as a root.
pub(crate) fn render_tree(list: &[crate::client::WorkspaceView]) -> String {
    use std::collections::{HashMap, HashSet};
    use std::fmt::Write;
    let ids: HashSet<_> = list.iter().map(|w| w.id).collect();
    let mut children: HashMap<_, Vec<&crate::client::WorkspaceView>> = HashMap::new();
    let mut roots = Vec::new();
    for w in list {
        match w.parent_id.filter(|p| ids.contains(p)) {
            Some(p) => children.entry(p).or_default().push(w),
            None => roots.push(w),
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36}  {:<7}  {:<4}  {:<4}  NAME",
        "ID", "STATUS", "MODE", "TIER"
    );
    fn walk(
        out: &mut String,
        w: &crate::client::WorkspaceView,
        prefix: &str,
        last: bool,
        root: bool,
        children: &HashMap<crate::domain::WorkspaceId, Vec<&crate::client::WorkspaceView>>,
    ) {
        let branch = if root {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let _ = writeln!(
            out,
            "{:<36}  {:<7}  {:<4}  {:<4}  {prefix}{branch}{}",
            w.id, w.status, w.delivery_mode, w.tier, w.name
        );
        let below = if root {
            String::new()
        } else if last {
            format!("{prefix}   ")
        } else {
            format!("{prefix}│  ")
        };
        let kids = children.get(&w.id).map(Vec::as_slice).unwrap_or_default();
        for (i, c) in kids.iter().enumerate() {
            walk(out, c, &below, i + 1 == kids.len(), false, children);
        }
    }
    for r in roots {
        walk(&mut out, r, "", true, true, &children);
    }
    out
}

/// Runs an org command.
pub(crate) async fn org(cmd: OrgCommand) -> anyhow::Result<()> {
    match cmd {
        OrgCommand::Import(args) => {
            let op = &args.op;
            let template = std::fs::read_to_string(&args.file)
                .with_context(|| format!("cannot read {}", args.file.display()))?;
            let content_type = match args.file.extension().and_then(|e| e.to_str()) {
                Some("json") => "application/json",
                _ => "application/yaml",
            };
            let report = op
                .client()?
                .import_org(template, content_type, args.dry_run)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&report);
            }
            print!("{}", render_import(&report));
            Ok(())
        }
    }
}

/// The import answer as a table (names indented two spaces per level, so
/// the NAME column draws the tree), then the totals sentence and, for
/// created workspaces, their tokens (shown this once).
pub(crate) fn render_import(report: &crate::client::ImportReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8}  {:<36}  {:<36}  {:<4}  {:<12}  NAME",
        "ACTION", "ID", "PARENT", "TIER", "RUNTIME"
    );
    let dash = || "-".to_owned();
    for w in &report.workspaces {
        let action = match (w.created, report.dry_run) {
            (true, true) => "create",
            (true, false) => "created",
            (false, _) => "skipped",
        };
        let _ = writeln!(
            out,
            "{action:<8}  {:<36}  {:<36}  {:<4}  {:<12}  {}{}",
            w.id.map_or_else(dash, |i| i.to_string()),
            w.parent_id.map_or_else(dash, |i| i.to_string()),
            w.tier,
            w.runtime,
            "  ".repeat(w.depth),
            w.name
        );
    }
    let _ = writeln!(out, "{}", report.summary);
    if report.dry_run {
        let _ = writeln!(out, "dry run: nothing was written");
    }
    let tokens: Vec<_> = report
        .workspaces
        .iter()
        .filter_map(|w| Some((w.id?, w.auth_token.as_deref()?, &w.name)))
        .collect();
    if !tokens.is_empty() {
        let _ = writeln!(out, "\ntokens of the created workspaces (shown this once):");
        for (id, token, name) in tokens {
            let _ = writeln!(out, "  {id}  {token}  {name}");
        }
    }
    out
}

/// Runs `send`.
pub(crate) async fn send(args: SendArgs) -> anyhow::Result<()> {
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
pub(crate) async fn upload(args: UploadArgs) -> anyhow::Result<()> {
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
pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<()> {
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

/// Runs `delegate`: the operator hands a task to `to` on behalf of `from`.
pub(crate) async fn delegate(args: DelegateArgs) -> anyhow::Result<()> {
    let op = &args.op;
    let deadline_s = args.deadline.map(|d| d.as_secs().max(1) as i64);
    let created = op
        .client()?
        .delegate(
            Some(&args.from),
            &args.to,
            &args.task,
            args.key.as_deref(),
            deadline_s,
        )
        .await
        .map_err(|e| op.explain(e))?;
    if op.json {
        return print_json(&created);
    }
    if created.deduplicated {
        println!(
            "already delegated as {} ({}); nothing sent again",
            created.delegation_id, created.status
        );
    } else {
        println!(
            "delegated as {} ({})",
            created.delegation_id, created.status
        );
    }
    Ok(())
}

/// Runs `delegations`: the ledger, newest first, or its figures.
pub(crate) async fn delegations(args: DelegationsArgs) -> anyhow::Result<()> {
    let op = &args.op;
    let client = op.client()?;
    if args.stats {
        let stats = client.delegation_stats().await.map_err(|e| op.explain(e))?;
        if op.json {
            return print_json(&stats);
        }
        for (status, n) in &stats.counts {
            println!("{status:<12} {n}");
        }
        let secs = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{s:.1} s"));
        let oldest = stats
            .oldest_in_flight_age_s
            .map_or("-".to_owned(), |s| format!("{s} s"));
        println!("oldest in flight: {oldest}");
        println!(
            "completed in 24 h: {} (p50 {}, p95 {})",
            stats.completed_24h,
            secs(stats.p50_completion_s),
            secs(stats.p95_completion_s)
        );
        return Ok(());
    }
    let rows = client
        .list_delegations(args.status.as_deref(), args.limit)
        .await
        .map_err(|e| op.explain(e))?;
    if op.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("no delegations");
    }
    for d in rows {
        let outcome = d
            .result_preview
            .as_deref()
            .or(d.error_detail.as_deref())
            .map(|t| crate::domain::truncate_chars(t.lines().next().unwrap_or(""), 60))
            .unwrap_or_default();
        println!(
            "{}  {:<11}  {} → {}  {:?}  {}",
            d.id,
            d.status.as_str(),
            d.caller_id,
            d.callee_id,
            crate::domain::truncate_chars(&d.task_preview, 40),
            outcome
        );
    }
    Ok(())
}
