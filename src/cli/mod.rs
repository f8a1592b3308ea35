//! The command line: one clap tree for every face of the binary. The
//! server commands (`serve`, `migrate`, `sweep`) are wired here; the
//! operator commands live in `operator.rs` (workspaces, messages, uploads)
//! `agent.rs` (secrets, plugins), `schedule.rs` and `audit.rs` (which
//! reads the database directly, like `migrate`), and the workspace side in
//! `crate::connect`. Both of those reach the server only over HTTP.

pub(crate) mod agent;
pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod memory;
pub(crate) mod operator;
pub(crate) mod schedule;
pub(crate) mod tokens;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::{self, Application};
use crate::config::ServeArgs;

/// molecule: a workspace server for AI agents.
#[derive(Debug, Parser)]
#[command(name = "molecule", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(MigrateArgs),
    /// Run one sweep pass (uploads, activity, delegations, orphan blobs) and exit.
    Sweep(SweepArgs),
    /// Run the workspace side on the agent's machine: register in poll mode,
    /// long-poll the inbox, download files, hand messages to the agent.
    ///
    /// Give the token as MOLECULE_TOKEN or --token-file rather than --token,
    /// which `ps` shows to every user. One process per --dir: it holds
    /// <dir>/.molecule/lock while it runs. A file that cannot be written (disk
    /// full, a failed write or rename) is tried again with backoff, also
    /// after a restart, until it is acked or the server no longer has it.
    Connect(crate::connect::ConnectArgs),
    /// Manage workspaces.
    #[command(subcommand)]
    Workspace(operator::WorkspaceCommand),
    /// Import a team tree from a template.
    #[command(subcommand)]
    Org(operator::OrgCommand),
    /// Send a text message to a workspace.
    Send(operator::SendArgs),
    /// Upload files to a workspace, with a progress bar per file.
    Upload(operator::UploadArgs),
    /// Show pending-upload statistics.
    Status(operator::StatusArgs),
    /// Agent memory: recall, commit and delete scoped memories (with a
    /// workspace's token or the operator's).
    #[command(subcommand)]
    Memory(memory::MemoryCommand),
    /// The key/value memory of a workspace: get, set, delete keys.
    #[command(subcommand)]
    Kv(memory::KvCommand),
    /// Hand a task from one workspace (or `operator`) to another.
    Delegate(operator::DelegateArgs),
    /// List the delegation ledger, newest first (or its figures, --stats).
    Delegations(operator::DelegationsArgs),
    /// Manage secrets (per workspace or global); values are never shown.
    #[command(subcommand)]
    Secret(agent::SecretCommand),
    /// Publish and list plugins.
    #[command(subcommand)]
    Plugin(agent::PluginCommand),
    /// A workspace's schedules: list, add, rm, run now, history.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// The approvals inbox: list pending requests, approve or deny one.
    #[command(subcommand)]
    Approval(approvals::ApprovalCommand),
    /// The audit trail: `verify` checks its HMAC chain in the database.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Tokens: a workspace's (--workspace ID) or the operators' (--org).
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Keep a token (read from standard input) in the user's config
    /// directory, 0600; operator commands use it when neither
    /// --admin-token nor MOLECULE_ADMIN_TOKEN is given.
    Login(tokens::LoginArgs),
}

/// Flags of `molecule migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Data directory (for the default SQLite database).
    #[arg(long, env = "MOLECULE_DATA_DIR", default_value = crate::config::defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// Database URL; default sqlite://<data-dir>/molecule.db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// Flags of `molecule sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Run one pass and exit (the only mode; the server sweeps on its own).
    #[arg(long)]
    pub once: bool,
    /// Print the outcome as JSON: `{"jobs": {<job>: {<count>: n, …}, …},
    /// "skipped": bool}`, every job the sweeper runs.
    #[arg(long)]
    pub json: bool,
    /// The server's configuration (database, blob store, retention).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.resolve()?;
            let app = Application::build(config).await?;
            app.run_until_stopped(app::shutdown_signal()).await
        }
        Command::Migrate(args) => {
            crate::private_fs::prepare_data_dir(&args.data_dir)
                .with_context(|| format!("failed to create {}", args.data_dir.display()))?;
            let url = args.database_url.unwrap_or_else(|| {
                format!("sqlite://{}", args.data_dir.join("molecule.db").display())
            });
            crate::private_fs::prepare_sqlite_file(&url)
                .context("failed to create the SQLite database file")?;
            let store = crate::store::connect(&url).await?;
            store.migrate().await?;
            store.close().await;
            println!("migrations applied to {}", crate::store::redact_url(&url));
            Ok(())
        }
        Command::Sweep(args) => {
            anyhow::ensure!(args.once, "`molecule sweep` runs one pass: pass --once");
            let json = args.json;
            let mut serve = args.serve;
            // The pass does not serve; bind nothing that could clash.
            serve.listen = "127.0.0.1:0".parse().expect("BUG: literal address");
            serve.metrics_listen = None;
            let app = Application::build_for_sweep(serve.resolve()?).await?;
            let out = app.sweeper().sweep_once(crate::domain::now()).await?;
            // Every registered job and its counts, none named here.
            if json {
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!("swept: {out}");
            }
            app.state().store.close().await;
            Ok(())
        }
        Command::Connect(args) => crate::connect::run(args).await,
        Command::Workspace(cmd) => operator::workspace(cmd).await,
        Command::Org(cmd) => operator::org(cmd).await,
        Command::Send(args) => operator::send(args).await,
        Command::Upload(args) => operator::upload(args).await,
        Command::Status(args) => operator::status(args).await,
        Command::Memory(cmd) => memory::memory(cmd).await,
        Command::Kv(cmd) => memory::kv(cmd).await,
        Command::Delegate(args) => operator::delegate(args).await,
        Command::Delegations(args) => operator::delegations(args).await,
        Command::Secret(cmd) => agent::secret(cmd).await,
        Command::Plugin(cmd) => agent::plugin(cmd).await,
        Command::Schedule(cmd) => schedule::schedule(cmd).await,
        Command::Approval(cmd) => approvals::approval(cmd).await,
        Command::Audit(cmd) => audit::audit(cmd).await,
        Command::Token(cmd) => tokens::token(cmd).await,
        Command::Login(args) => tokens::login(args),
    }
}
