//! `molecule memory search|commit|rm` and `molecule kv get|set|rm`.
//!
//! They run with either credential: a workspace's own (`--workspace ID`
//! with `MOLECULE_TOKEN`, `--token` or `--token-file` — the names
//! `molecule connect` uses, so the agent beside `connect` needs no second
//! client), or the operator's (the admin token, as the other operator
//! commands find it). A workspace token wins when both are present; with
//! the operator's, `memory search` and `memory rm` without `--workspace`
//! use the operator's routes over every workspace.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{Client, ClientError};

/// Server and credentials of the memory commands.
#[derive(Debug, Clone, Args)]
pub(crate) struct MemoryAuth {
    /// The server's URL.
    #[arg(long, env = "MOLECULE_SERVER", default_value = crate::config::defaults::SERVER_URL)]
    pub server: String,
    /// The workspace whose memory to use.
    #[arg(long, env = "MOLECULE_WORKSPACE_ID")]
    pub workspace: Option<String>,
    /// The workspace's token (prefer MOLECULE_TOKEN or --token-file: a flag
    /// shows in `ps`).
    #[arg(long, env = "MOLECULE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the workspace's token.
    /// (Read first when given: it wins over MOLECULE_TOKEN.)
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The operator's token, used when no workspace token is given;
    /// default: the contents of <data-dir>/admin-token.
    #[arg(long, env = "MOLECULE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Where a local server keeps its generated admin token.
    #[arg(long, env = "MOLECULE_DATA_DIR", default_value = crate::config::defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// Print the server's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl MemoryAuth {
    /// The client, with the workspace token when one is given, else the
    /// operator's.
    fn client(&self) -> anyhow::Result<Client> {
        let workspace_token = match (&self.token_file, &self.token) {
            (None, Some(t)) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            (Some(path), _) => {
                let raw = std::fs::read_to_string(path)
                    .with_context(|| format!("failed to read the token file {}", path.display()))?;
                anyhow::ensure!(
                    !raw.trim().is_empty(),
                    "the token file {} is empty",
                    path.display()
                );
                Some(raw.trim().to_owned())
            }
            _ => None,
        };
        let token = match workspace_token {
            Some(t) => {
                anyhow::ensure!(
                    self.workspace.is_some(),
                    "a workspace token needs --workspace (or MOLECULE_WORKSPACE_ID)"
                );
                t
            }
            None => match &self.admin_token {
                Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
                _ => {
                    let path = self.data_dir.join("admin-token");
                    std::fs::read_to_string(&path)
                        .with_context(|| {
                            format!(
                                "no credentials: give a workspace token (MOLECULE_TOKEN, --token or --token-file) \
                                 with --workspace, or the operator's (--admin-token, MOLECULE_ADMIN_TOKEN, or \
                                 --data-dir; could not read {})",
                                path.display()
                            )
                        })?
                        .trim()
                        .to_owned()
                }
            },
        };
        Ok(Client::new(&self.server, token)?)
    }

    fn workspace(&self) -> anyhow::Result<&str> {
        self.workspace
            .as_deref()
            .context("this command needs --workspace (or MOLECULE_WORKSPACE_ID)")
    }

    fn explain(&self, e: ClientError) -> anyhow::Error {
        let server = self.server.trim_end_matches('/');
        match e {
            ClientError::Unauthorized(_) => anyhow::anyhow!(
                "the token was refused by {server} for this workspace (check --workspace and the token)"
            ),
            e if e.is_connect() => {
                anyhow::anyhow!("could not connect to {server}: is `molecule serve` running there?")
            }
            ClientError::Status { status, message } => anyhow::anyhow!("{message} ({status})"),
            ClientError::NotFound(m) => anyhow::anyhow!("{m}"),
            other => other.into(),
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `molecule memory …`
#[derive(Debug, Subcommand)]
pub(crate) enum MemoryCommand {
    /// Recall memories: best first for a query, newest first without one.
    Search(SearchArgs),
    /// Commit a memory.
    Commit(CommitArgs),
    /// Delete a memory.
    Rm(RmArgs),
}

/// `molecule memory search`
#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// Words to recall by.
    pub query: Option<String>,
    /// Only this scope (LOCAL, TEAM, GLOBAL).
    #[arg(long)]
    pub scope: Option<String>,
    /// Only this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// At most this many (1–100).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Server and credentials.
    #[command(flatten)]
    pub auth: MemoryAuth,
}

/// `molecule memory commit`
#[derive(Debug, Args)]
pub(crate) struct CommitArgs {
    /// The fact to remember; `-` reads it from stdin.
    pub content: String,
    /// Who may read it: LOCAL, TEAM or GLOBAL.
    #[arg(long, default_value = "LOCAL")]
    pub scope: String,
    /// Its namespace (default `general`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Server and credentials.
    #[command(flatten)]
    pub auth: MemoryAuth,
}

/// `molecule memory rm`
#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// The memory id.
    pub id: String,
    /// Server and credentials.
    #[command(flatten)]
    pub auth: MemoryAuth,
}

/// `molecule kv …`
#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// Show one key, or every key without one.
    Get(KvGetArgs),
    /// Write a key.
    Set(KvSetArgs),
    /// Delete a key.
    Rm(KvRmArgs),
}

/// `molecule kv get`
#[derive(Debug, Args)]
pub(crate) struct KvGetArgs {
    /// The key; absent: list every key.
    pub key: Option<String>,
    /// Server and credentials.
    #[command(flatten)]
    pub auth: MemoryAuth,
}

/// `molecule kv set`
#[derive(Debug, Args)]
pub(crate) struct KvSetArgs {
    /// The key.
    pub key: String,
    /// The value: JSON if it parses as JSON, else a string; `-` reads it
    /// from stdin.
    pub value: String,
    /// Time to live (e.g. 30s, 1h); absent: kept until deleted.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<std::time::Duration>,
    /// Write only if the key's version is this (0: only if absent).
    #[arg(long)]
    pub if_version: Option<i64>,
    /// Server and credentials.
    #[command(flatten)]
    pub auth: MemoryAuth,
}

/// `molecule kv rm`
#[derive(Debug, Args)]
pub(crate) struct KvRmArgs {
    /// The key.
    pub key: String,
    /// Server and credentials.
    #[command(flatten)]
    pub auth: MemoryAuth,
}

fn arg_or_stdin(raw: String) -> anyhow::Result<String> {
    if raw != "-" {
        return Ok(raw);
    }
    let mut buf = String::new();
    std::io::stdin()
        .read_to_string(&mut buf)
        .context("failed to read stdin")?;
    Ok(buf)
}

/// Runs a memory command.
pub(crate) async fn memory(cmd: MemoryCommand) -> anyhow::Result<()> {
    match cmd {
        MemoryCommand::Search(args) => {
            let auth = &args.auth;
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(q) = args.query {
                query.push(("q", q));
            }
            if let Some(s) = args.scope {
                query.push(("scope", s));
            }
            if let Some(n) = args.namespace {
                query.push(("namespace", n));
            }
            if let Some(l) = args.limit {
                query.push(("limit", l.to_string()));
            }
            let hits = auth
                .client()?
                .recall_memories(auth.workspace.as_deref(), &query)
                .await
                .map_err(|e| auth.explain(e))?;
            if auth.json {
                return print_json(&hits);
            }
            if hits.is_empty() {
                println!("no memories found");
            }
            for m in hits {
                let score = m
                    .score
                    .map_or_else(String::new, |s| format!(" score {s:.4}"));
                println!("{} [{} {}]{score}", m.id, m.scope, m.namespace);
                println!("  {}", m.content.replace('\n', "\n  "));
            }
            Ok(())
        }
        MemoryCommand::Commit(args) => {
            let auth = &args.auth;
            let content = arg_or_stdin(args.content)?;
            let committed = auth
                .client()?
                .commit_memory(
                    auth.workspace()?,
                    &content,
                    &args.scope,
                    args.namespace.as_deref(),
                )
                .await
                .map_err(|e| auth.explain(e))?;
            if auth.json {
                return print_json(&committed);
            }
            println!(
                "committed memory {} ({} in {:?})",
                committed.id, committed.scope, committed.namespace
            );
            Ok(())
        }
        MemoryCommand::Rm(args) => {
            let auth = &args.auth;
            auth.client()?
                .delete_memory(auth.workspace.as_deref(), &args.id)
                .await
                .map_err(|e| auth.explain(e))?;
            if auth.json {
                return print_json(&serde_json::json!({"deleted": true, "id": args.id}));
            }
            println!("deleted memory {}", args.id);
            Ok(())
        }
    }
}

/// Runs a key/value command.
pub(crate) async fn kv(cmd: KvCommand) -> anyhow::Result<()> {
    match cmd {
        KvCommand::Get(args) => {
            let auth = &args.auth;
            let client = auth.client()?;
            let ws = auth.workspace()?;
            match args.key {
                Some(key) => {
                    let entry = client
                        .get_key(ws, &key)
                        .await
                        .map_err(|e| auth.explain(e))?;
                    if auth.json {
                        return print_json(&entry);
                    }
                    println!("{}", serde_json::to_string_pretty(&entry.value)?);
                }
                None => {
                    let entries = client.list_keys(ws).await.map_err(|e| auth.explain(e))?;
                    if auth.json {
                        return print_json(&entries);
                    }
                    for e in entries {
                        println!("{}\tv{}\t{}", e.key, e.version, e.value);
                    }
                }
            }
            Ok(())
        }
        KvCommand::Set(args) => {
            let auth = &args.auth;
            let raw = arg_or_stdin(args.value)?;
            let value: Value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
            let ttl_s = args.ttl.map(|d| d.as_secs().max(1) as i64);
            let entry = auth
                .client()?
                .set_key(auth.workspace()?, &args.key, &value, ttl_s, args.if_version)
                .await
                .map_err(|e| auth.explain(e))?;
            if auth.json {
                return print_json(&entry);
            }
            println!("{} is now at version {}", entry.key, entry.version);
            Ok(())
        }
        KvCommand::Rm(args) => {
            let auth = &args.auth;
            auth.client()?
                .delete_key(auth.workspace()?, &args.key)
                .await
                .map_err(|e| auth.explain(e))?;
            if auth.json {
                return print_json(&serde_json::json!({"deleted": true, "key": args.key}));
            }
            println!("deleted {}", args.key);
            Ok(())
        }
    }
}
