//! `molecule token list|create|revoke` (a workspace's tokens, or with
//! `--org` the operator tokens) and `molecule login`, which keeps a token
//! in the user's config directory (0600) so that no command needs it on
//! its command line, where `ps` shows it to every user.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::operator::{login_file, print_json, OperatorArgs};
use crate::client::{TokenSpec, Tokens};

/// `molecule token …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// List live tokens (never their secrets).
    List {
        #[command(flatten)]
        whose: Whose,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Mint a token; its secret is printed once.
    Create {
        #[command(flatten)]
        whose: Whose,
        /// A label for it.
        #[arg(long)]
        name: Option<String>,
        /// Seconds until it stops working (default: never).
        #[arg(long)]
        expires_in_s: Option<i64>,
        /// Operator tokens: admin, operator or viewer.
        #[arg(long, requires = "org")]
        role: Option<String>,
        /// Operator tokens: limit it to this workspace and its descendants.
        #[arg(long, requires = "org")]
        team: Option<String>,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Revoke a token by its id: it stops working at once.
    Revoke {
        #[command(flatten)]
        whose: Whose,
        /// The token's id (from `molecule token list`).
        token_id: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

/// A workspace's tokens, or the operator tokens.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct Whose {
    /// The workspace whose tokens these are.
    #[arg(long)]
    workspace: Option<String>,
    /// The operator tokens (admin only).
    #[arg(long)]
    org: bool,
}

impl Whose {
    fn tokens(&self) -> Tokens<'_> {
        match &self.workspace {
            Some(id) => Tokens::Workspace(id),
            None => Tokens::Org,
        }
    }
}

/// Runs `molecule token …`.
pub(crate) async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::List { whose, op } => {
            let list = op
                .client()?
                .list_tokens(whose.tokens())
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&list);
            }
            for t in list["tokens"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}  {}  used {}{}",
                    text(&t["id"]),
                    text(&t["prefix"]),
                    t["name"].as_str().unwrap_or("-"),
                    t["last_used_at"].as_str().unwrap_or("never"),
                    t["role"]
                        .as_str()
                        .map(|r| format!("  {r}"))
                        .unwrap_or_default(),
                );
            }
            println!("{} live", list["count"]);
            Ok(())
        }
        TokenCommand::Create {
            whose,
            name,
            expires_in_s,
            role,
            team,
            op,
        } => {
            let spec = TokenSpec {
                name,
                expires_in_s,
                role,
                team_root: team,
            };
            let minted = op
                .client()?
                .create_token(whose.tokens(), &spec)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&minted);
            }
            println!(
                "token {} ({})",
                text(&minted["id"]),
                text(&minted["prefix"])
            );
            println!("{}", text(&minted["auth_token"]));
            eprintln!("the secret above is shown once: store it now (e.g. `molecule login`)");
            Ok(())
        }
        TokenCommand::Revoke {
            whose,
            token_id,
            op,
        } => {
            let done = op
                .client()?
                .revoke_token(whose.tokens(), &token_id)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&done);
            }
            println!("token {token_id} revoked");
            Ok(())
        }
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Flags of `molecule login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// Where to keep the token; default $XDG_CONFIG_HOME/molecule/token
    /// (~/.config/molecule/token).
    #[arg(long, env = "MOLECULE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// Runs `molecule login`: reads one token from standard input (never the
/// command line) and keeps it, 0600, replacing any earlier one.
pub(crate) fn login(args: LoginArgs) -> anyhow::Result<()> {
    let path = login_file(args.token_file.as_deref())
        .context("no config directory: set HOME, XDG_CONFIG_HOME or --token-file")?;
    eprintln!("paste the token and press Enter:");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("failed to read the token from standard input")?;
    let token = line.trim();
    anyhow::ensure!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "no token read: give it on standard input"
    );
    let dir = path.parent().context("the token file has no directory")?;
    crate::private_fs::create_dir_all(dir)
        .with_context(|| format!("failed to create {}", dir.display()))?;
    // Written beside, then renamed over: never a half-written token, and
    // the file is 0600 from its first byte.
    let tmp = dir.join(format!(".token.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    crate::private_fs::create_private_file(&tmp, format!("{token}\n").as_bytes())
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("failed to write {}", path.display()))?;
    println!("token saved to {}", path.display());
    Ok(())
}
