//! The workspace side: `molecule connect`, run on the agent's machine.
//!
//! It registers the workspace in poll mode, heartbeats, and long-polls its
//! inbox (`GET /workspaces/:id/activity?type=a2a_receive&since_id=…&wait=…`).
//! Each row is read once into a [`crate::domain::InboxItem`]. A staged
//! file becomes a download ([`files`], [`download`]) that runs concurrently
//! with the poll loop; each message, delegated task and delegation result
//! is handed to the local agent in arrival order ([`messages`],
//! [`delegation`]), by one hand-off with a policy per kind ([`handoff`]). The cursor persisted
//! in `<dir>/.molecule/cursor` ([`cursor`]) only moves past rows that are
//! handled, so a restart neither skips nor repeats work. A file that
//! cannot be written is kept in hand and tried again; the server's list of
//! unacked files, read at every start, carries that work across restarts.
//! `<dir>/.molecule/lock` keeps one process per folder. A restart request
//! of the operator ([`restart`]) re-registers, re-reads the instructions,
//! stops an `--exec` command in flight (its work is handed over again) and
//! reports `restart_done`. The platform
//! instructions are fetched at start and on change into a file
//! ([`instructions`]). It reaches the
//! server only through [`crate::client`]; stdout carries nothing but JSON
//! lines for the agent, logs go to stderr. File work runs off the async
//! threads (`tokio::fs`, `spawn_blocking`).

mod attach;
mod backoff;
mod cursor;
mod delegation;
mod download;
mod files;
mod handoff;
mod instructions;
mod messages;
mod restart;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::client::{ActivityQuery, ActivityView, Client, ClientError};
use crate::domain::inbox::InboxItem;
use crate::domain::{FileId, WorkspaceId};
use backoff::Backoff;
use cursor::Cursor;
use handoff::Handoff;

/// Flags of `molecule connect`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("auth").required(true).args(["token", "token_file"])))]
pub(crate) struct ConnectArgs {
    /// The server's URL.
    #[arg(long, env = "MOLECULE_SERVER", default_value = crate::config::defaults::SERVER_URL)]
    pub server: String,
    /// This workspace's id.
    #[arg(long, env = "MOLECULE_WORKSPACE_ID")]
    pub workspace: String,
    /// This workspace's token (from `molecule workspace create` or `rotate`).
    /// On the command line it is visible to every user of the machine
    /// (`ps`): prefer the MOLECULE_TOKEN variable or --token-file.
    #[arg(long, env = "MOLECULE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read this workspace's token from a file (surrounding whitespace is
    /// ignored; keep the file readable only by you, mode 0600).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// The agent's working directory; files land in <dir>/.molecule/chat-uploads/.
    /// One `connect` per directory (a second one exits with an error).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Deliver each message as an A2A `message/send` to a local push-mode
    /// agent at this URL; the text of its answer is sent back as the reply.
    #[arg(long, conflicts_with = "exec")]
    pub forward: Option<Url>,
    /// Run this command (via `sh -c`) per message, the message JSON on its
    /// stdin; what it prints is sent back as the reply.
    #[arg(long)]
    pub exec: Option<String>,
    /// How often to tell the server this workspace is alive.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// How long the server holds each long poll when nothing is new, in
    /// seconds (0–60); the read timeout of polls always outlasts it.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=crate::http::MAX_WAIT_SECS))]
    pub poll_wait: u64,
    /// Files downloaded at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Cap each download at this many bytes per second (e.g. 2MiB).
    #[arg(long)]
    pub limit_rate: Option<bytesize::ByteSize>,
}

/// Where a staged file is, as seen by a message that names it.
#[derive(Debug, Clone)]
pub(crate) enum FileState {
    /// Still downloading.
    Pending,
    /// On disk at this path.
    Ready(PathBuf),
    /// The server has no such file, or it failed verification.
    Gone,
    /// Stopped before it was complete.
    Abandoned,
    /// It could not be written here; it is being tried again.
    Retrying,
}

/// The JSON lines on stdout, one `write` each so lines never interleave.
/// A reader that does not keep up blocks the write, so it happens on a
/// blocking thread.
#[derive(Debug, Default)]
pub(crate) struct Output;

impl Output {
    /// Writes one JSON line and flushes it; returns once it is written.
    pub(crate) async fn emit(&self, value: &Value) {
        let line = format!("{value}\n");
        let written = tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "failed to write to stdout"),
            Err(e) => tracing::warn!(error = %e, "BUG: the stdout task failed"),
        }
    }
}

/// What every task of a running `connect` shares.
pub(crate) struct Ctx {
    client: Client,
    workspace: WorkspaceId,
    dir: PathBuf,
    uploads_dir: PathBuf,
    /// Fired by Ctrl-C / SIGTERM, or by a fatal error.
    stop: CancellationToken,
    fatal: Mutex<Option<String>>,
    cursor: Cursor,
    files: Mutex<HashMap<FileId, watch::Receiver<FileState>>>,
    out: Output,
    limit_rate: Option<u64>,
    /// Fired by a restart request: an `--exec` command in flight is
    /// stopped (and its work handed over again).
    restarting: tokio::sync::Notify,
}

impl Ctx {
    /// The token was refused: nothing will work until the operator acts.
    fn unauthorized(&self) {
        self.fail(format!(
            "the server refused this workspace's token (401): it was revoked or rotated. Ask the operator for a new \
             one (`molecule workspace rotate {}`) and restart with it (--token-file, MOLECULE_TOKEN or --token)",
            self.workspace
        ));
    }

    /// The workspace is gone: nothing will work again.
    fn no_workspace(&self) {
        self.fail(format!(
            "the server has no workspace {} (deleted?)",
            self.workspace
        ));
    }

    fn fail(&self, message: String) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if fatal.is_none() {
            tracing::error!("{message}");
            *fatal = Some(message);
        }
        self.stop.cancel();
    }

    /// Marks a row handled; returns once the cursor saying so is durable.
    async fn finish(&self, id: i64) {
        if let Err(e) = self.cursor.finish(id).await {
            tracing::error!(error = format!("{e:#}"), "failed to persist the cursor");
        }
    }

    /// The server dropped the rows before `to` (410): start over from there.
    async fn reset_cursor(&self, to: i64) {
        if let Err(e) = self.cursor.reset(to).await {
            tracing::error!(error = format!("{e:#}"), "failed to persist the cursor");
        }
    }

    /// Waits until the file is settled; a file not downloaded by this run
    /// is looked for on disk.
    async fn wait_for_file(&self, file_id: FileId) -> FileState {
        let rx = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&file_id)
            .cloned();
        match rx {
            Some(mut rx) => match rx.wait_for(|s| !matches!(s, FileState::Pending)).await {
                Ok(state) => state.clone(),
                Err(_) => FileState::Abandoned,
            },
            None => self
                .find_on_disk(file_id)
                .await
                .map_or(FileState::Gone, FileState::Ready),
        }
    }

    /// The path of a file an earlier run delivered, if it is there.
    async fn find_on_disk(&self, file_id: FileId) -> Option<PathBuf> {
        let prefix = format!("{file_id}-");
        let mut entries = tokio::fs::read_dir(&self.uploads_dir).await.ok()?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                return Some(entry.path());
            }
        }
        None
    }

    /// How the run ended: an error when something fatal stopped it.
    fn outcome(&self) -> anyhow::Result<()> {
        let fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner()).take();
        match fatal {
            Some(message) => Err(anyhow::anyhow!(message)),
            None => {
                tracing::info!(since_id = self.cursor.position(), "stopped");
                Ok(())
            }
        }
    }
}

/// Runs the workspace side until stopped (exit 0) or until the token is
/// refused (an error).
pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let workspace = WorkspaceId::from_str(args.workspace.trim()).map_err(|e| {
        anyhow::anyhow!(
            "--workspace {:?} is not a workspace id: {e}",
            args.workspace
        )
    })?;
    let dir = args.dir.clone();
    let folder = tokio::task::spawn_blocking(move || Folder::prepare(&dir))
        .await
        .context("BUG: the folder-preparing task panicked")??;
    let cursor = Cursor::load(folder.state_dir.join("cursor")).await?;
    let client = Client::new(&args.server, read_token(&args).await?)?;
    let stop = CancellationToken::new();
    watch_signals(stop.clone());
    let ctx = Arc::new(Ctx {
        client,
        workspace,
        dir: folder.dir.clone(),
        uploads_dir: folder.uploads_dir.clone(),
        stop,
        fatal: Mutex::new(None),
        cursor,
        files: Mutex::new(HashMap::new()),
        out: Output,
        limit_rate: args.limit_rate.map(|b| b.as_u64().max(1)),
        restarting: tokio::sync::Notify::new(),
    });
    tracing::info!(workspace_id = %ctx.workspace, server = %ctx.client.base(), dir = %ctx.dir.display(),
        since_id = ctx.cursor.position(), "connecting");

    if register(&ctx).await {
        instructions::refresh(&ctx).await;
        print_mcp_setup(&ctx, &args);
        serve(&ctx, &args).await;
    }
    ctx.cursor.flush().await?;
    drop(folder); // releases the lock, last
    ctx.outcome()
}

/// The agent's folder, resolved, with `.molecule/chat-uploads/` created
/// and `.molecule/lock` held for as long as this value lives.
struct Folder {
    dir: PathBuf,
    state_dir: PathBuf,
    uploads_dir: PathBuf,
    _lock: std::fs::File,
}

impl Folder {
    /// Blocking: run it off the async threads.
    fn prepare(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("failed to resolve {}", dir.display()))?;
        let state_dir = dir.join(".molecule");
        let uploads_dir = state_dir.join("chat-uploads");
        std::fs::create_dir_all(&uploads_dir)
            .with_context(|| format!("failed to create {}", uploads_dir.display()))?;
        let lock = lock_dir(&state_dir)?;
        Ok(Self {
            dir,
            state_dir,
            uploads_dir,
            _lock: lock,
        })
    }
}

/// Registered: heartbeats, hands messages over and polls until stopped,
/// then finishes what is in flight.
async fn serve(ctx: &Arc<Ctx>, args: &ConnectArgs) {
    let handoff = match (&args.exec, &args.forward) {
        (Some(cmd), _) => Handoff::Exec(cmd.clone()),
        (None, Some(url)) => Handoff::Forward(url.clone()),
        (None, None) => Handoff::Stdout,
    };
    let heartbeat = tokio::spawn(heartbeat(ctx.clone(), args.heartbeat_interval));
    let (tx, rx) = mpsc::unbounded_channel();
    let messages = tokio::spawn(messages::run(ctx.clone(), handoff.clone(), rx));
    let mut dispatch = Dispatch {
        emit_files: matches!(handoff, Handoff::Stdout),
        messages: tx,
        downloads: JoinSet::new(),
        permits: Arc::new(Semaphore::new(args.concurrency as usize)),
    };
    poll(ctx, &mut dispatch, args.poll_wait).await;

    // Stopping: finish what is in flight.
    let Dispatch {
        messages: tx,
        mut downloads,
        ..
    } = dispatch;
    drop(tx);
    let in_flight = downloads.len();
    if in_flight > 0 {
        tracing::info!(in_flight, "finishing downloads in flight");
    }
    while downloads.join_next().await.is_some() {}
    let _ = messages.await;
    heartbeat.abort();
}

/// Takes `<dir>/.molecule/lock`, an OS advisory lock released when the
/// process ends however it ends: a second `connect` on the same folder
/// would race the first over the cursor and the partial downloads.
fn lock_dir(state_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = state_dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (process {pid})"),
            };
            anyhow::bail!(
                "another `molecule connect` is already running on {}{holder}: it holds {}. Stop it \
                 first, or give this one its own --dir",
                state_dir.parent().unwrap_or(state_dir).display(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("failed to lock {}", path.display()))
        }
    }
    // Who holds it, for the message above; only informative.
    let _ = file
        .set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

/// The token from --token / MOLECULE_TOKEN, or from --token-file.
async fn read_token(args: &ConnectArgs) -> anyhow::Result<String> {
    let Some(path) = &args.token_file else {
        let token = args.token.as_deref().unwrap_or_default().trim();
        anyhow::ensure!(
            !token.is_empty(),
            "the token (--token or MOLECULE_TOKEN) is empty"
        );
        return Ok(token.to_owned());
    };
    let raw = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("failed to read the token file {}", path.display()))?;
    let token = raw.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "{} is empty: it should hold this workspace's token",
        path.display()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = tokio::fs::metadata(path).await?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777),
                "the token file is readable by other users; `chmod 600` it");
        }
    }
    Ok(token.to_owned())
}

/// Ctrl-C or SIGTERM fires `stop`; a second one exits at once.
fn watch_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        for round in 0.. {
            crate::signal::terminated().await;
            if round == 0 {
                tracing::info!(
                    "stopping: finishing the work in flight (signal again to exit at once)"
                );
                stop.cancel();
            } else {
                tracing::warn!("exiting at once");
                std::process::exit(130);
            }
        }
    });
}

/// Registers in poll mode, retrying while the server is unreachable;
/// `false` when stopped or refused.
/// Shows, on stderr (stdout carries the agent's lines), how to give an MCP
/// client on this machine the same workspace's tools; the token stays in
/// its file or variable.
fn print_mcp_setup(ctx: &Ctx, args: &ConnectArgs) {
    let file = match &args.token_file {
        Some(path) => path.display().to_string(),
        None => "<the file holding this workspace's token>".to_owned(),
    };
    eprintln!(
        "\n{}\n",
        crate::domain::mcp_setup_text(ctx.client.base().as_str(), ctx.workspace, &file)
    );
}

async fn register(ctx: &Ctx) -> bool {
    let mut backoff = Backoff::new();
    let card = json!({"name": "molecule connect", "version": env!("CARGO_PKG_VERSION")});
    loop {
        match ctx
            .client
            .register(ctx.workspace, "poll", Some(card.clone()))
            .await
        {
            Ok(w) => {
                tracing::info!(workspace_id = %ctx.workspace, name = %w.workspace.name, "registered in poll mode");
                return true;
            }
            Err(ClientError::Unauthorized(_)) => {
                ctx.unauthorized();
                return false;
            }
            Err(ClientError::NotFound(_)) => {
                ctx.no_workspace();
                return false;
            }
            Err(e) => {
                if e.is_connect() {
                    tracing::warn!(error = %e, "the server is unreachable; retrying");
                } else {
                    tracing::warn!(error = %e, "registration failed; retrying");
                }
                if !backoff.wait(&ctx.stop).await {
                    return false;
                }
            }
        }
    }
}

async fn heartbeat(ctx: Arc<Ctx>, every: Duration) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // registration just stamped it
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match ctx.client.heartbeat(ctx.workspace).await {
            Ok(()) => tracing::debug!("heartbeat"),
            Err(ClientError::Unauthorized(_)) => {
                ctx.unauthorized();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Rows asked for per poll.
const PAGE: usize = 100;

/// Where the rows of a poll go: messages to the hand-off task, in order;
/// files to download tasks.
struct Dispatch {
    /// Default mode: each settled file is also a JSON line for the agent.
    emit_files: bool,
    messages: mpsc::UnboundedSender<(ActivityView, InboxItem)>,
    downloads: JoinSet<()>,
    permits: Arc<Semaphore>,
}

/// What one poll came back with.
enum Page {
    Rows(Vec<ActivityView>),
    /// Poll again (after a backoff, or a cursor reset).
    Again,
    /// Stopped, or a fatal answer.
    Stop,
}

/// The long-poll loop: runs until `stop` fires.
///
/// Until the backlog is read, polls do not wait; then the server's list of
/// unacked files is read once, so files an earlier run could not write
/// (its cursor is past their rows) are tried again.
async fn poll(ctx: &Arc<Ctx>, dispatch: &mut Dispatch, wait: u64) {
    let mut since = ctx.cursor.position();
    let mut backoff = Backoff::new();
    let mut backlog_read = false;
    let mut list_unacked_at = Some(Instant::now());
    loop {
        while dispatch.downloads.try_join_next().is_some() {}
        let wait = if backlog_read { wait } else { 0 };
        let rows = match next_page(ctx, &mut since, wait, &mut backoff).await {
            Page::Rows(rows) => rows,
            Page::Again => continue,
            Page::Stop => return,
        };
        let full = rows.len() >= PAGE;
        if !dispatch_rows(ctx, dispatch, rows, &mut since).await {
            return;
        }
        backlog_read |= !full;
        if backlog_read && list_unacked_at.is_some_and(|at| at <= Instant::now()) {
            list_unacked_at = files::resume_unacked(ctx, dispatch).await;
        }
    }
}

/// One long poll after `since`; a 410 resets the cursor to where the
/// server says.
async fn next_page(ctx: &Ctx, since: &mut i64, wait: u64, backoff: &mut Backoff) -> Page {
    let query = ActivityQuery {
        // Every row, not only `a2a_receive`: a restart request is a row
        // of its own type. Rows of other kinds are passed over.
        activity_type: None,
        since_id: Some(*since),
        limit: Some(PAGE as u32),
        wait: Some(wait),
    };
    let answer = tokio::select! {
        _ = ctx.stop.cancelled() => return Page::Stop,
        answer = ctx.client.list_activity(ctx.workspace, &query) => answer,
    };
    match answer {
        Ok(rows) => {
            if backoff.is_retrying() {
                tracing::info!("the server is reachable again");
            }
            backoff.reset();
            Page::Rows(rows)
        }
        Err(ClientError::Unauthorized(_)) => {
            ctx.unauthorized();
            Page::Stop
        }
        Err(ClientError::NotFound(_)) => {
            ctx.no_workspace();
            Page::Stop
        }
        Err(ClientError::Gone {
            message,
            restart_since_id: to,
        }) => {
            tracing::warn!(since_id = *since, restart_from = to, error = %message,
                "the server no longer has rows after our cursor; resetting it");
            *since = to;
            ctx.reset_cursor(to).await;
            Page::Again
        }
        Err(e) => {
            // One warning per outage, not one per retry.
            if backoff.is_retrying() {
                tracing::debug!(error = %e, "polling the inbox failed again");
            } else {
                tracing::warn!(error = %e, "polling the inbox failed; retrying with backoff until it answers");
            }
            if backoff.wait(&ctx.stop).await {
                Page::Again
            } else {
                Page::Stop
            }
        }
    }
}

/// Hands each new row to its handler; `false` when the message task is gone.
async fn dispatch_rows(
    ctx: &Arc<Ctx>,
    dispatch: &mut Dispatch,
    rows: Vec<ActivityView>,
    since: &mut i64,
) -> bool {
    for row in rows {
        if row.id <= *since {
            continue;
        }
        *since = row.id;
        if !ctx.cursor.begin(row.id) {
            continue;
        }
        match row.item() {
            // A file dropped alone, with an agent that gets no JSON lines
            // (`--exec`, `--forward`): downloaded as any file, then
            // announced through the message queue ("file arrived"), which
            // moves the cursor past the row once it is handed over.
            Ok(InboxItem::ChatUpload(upload)) if !dispatch.emit_files && !upload.attached => {
                files::start_delivery(ctx, dispatch, upload.clone(), None).await;
                if dispatch
                    .messages
                    .send((row, InboxItem::ChatUpload(upload)))
                    .is_err()
                {
                    return false;
                }
            }
            Ok(InboxItem::ChatUpload(upload)) => {
                files::start_delivery(ctx, dispatch, upload, Some(row.id)).await;
            }
            // Delegations, their results and approvals go through the
            // message queue: the agent gets them in inbox order, one at a
            // time.
            Ok(
                item @ (InboxItem::Message(_)
                | InboxItem::Delegate(_)
                | InboxItem::DelegationResult(_)
                | InboxItem::ApprovalDecided(_)
                | InboxItem::ApprovalRequested(_)),
            ) => {
                if dispatch.messages.send((row, item)).is_err() {
                    return false;
                }
            }
            Ok(InboxItem::RestartRequested) => {
                restart::restart(ctx, row.id).await;
                ctx.finish(row.id).await;
            }
            Ok(InboxItem::InstructionsChanged(_)) => {
                instructions::refresh(ctx).await;
                ctx.finish(row.id).await;
            }
            Ok(_) => {
                tracing::debug!(activity_id = row.id, method = ?row.method, "ignoring an inbox row of another kind");
                ctx.finish(row.id).await;
            }
            Err(error) => {
                tracing::error!(activity_id = row.id, %error, "an inbox row cannot be read; skipping it");
                ctx.finish(row.id).await;
            }
        }
    }
    true
}
