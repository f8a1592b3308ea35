//! `molecule audit verify`: walks the audit trail in the database itself
//! (no server needed) and names the first row that does not check — a row
//! edited or deleted behind the server's back, or sealed under another key.
//! The key is derived from the secrets key, read as the server reads it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

/// `molecule audit …`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the whole HMAC chain; exit 1 naming the first broken row.
    Verify(VerifyArgs),
}

/// Flags of `molecule audit verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Data directory (the default SQLite database and the secrets key).
    #[arg(long, env = "MOLECULE_DATA_DIR", default_value = crate::config::defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// Database URL; default sqlite://<data-dir>/molecule.db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The server's secrets key (64 hex characters); default
    /// <data-dir>/secrets-key.
    #[arg(long, env = "MOLECULE_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// Print `{"valid", "checked", "first_broken": {"seq", "reason"} | null}`.
    #[arg(long)]
    pub json: bool,
}

/// Runs an `audit` subcommand.
pub(crate) async fn audit(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify(args) => verify(args).await,
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let key = match args.secrets_key.as_deref().filter(|k| !k.trim().is_empty()) {
        Some(raw) => crate::secrets::SecretsKey::parse(raw)
            .context("--secrets-key / MOLECULE_SECRETS_KEY")?,
        None => crate::secrets::load_existing_key(&args.data_dir)?,
    };
    let url = args
        .database_url
        .unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("molecule.db").display()));
    let store = crate::store::connect(&url)
        .await
        .with_context(|| format!("failed to open {}", crate::store::redact_url(&url)))?;
    let report = crate::audit::Auditor::new(&key)
        .verify(store.as_ref())
        .await;
    store.close().await;
    let report = report.context("failed to read the audit trail")?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "valid": report.valid(),
                "checked": report.checked,
                "first_broken": report.first_broken,
            })
        );
    }
    match &report.first_broken {
        None => {
            if !args.json {
                println!("audit trail intact: {} rows checked", report.checked);
            }
            Ok(())
        }
        Some(b) => anyhow::bail!("audit trail broken at row {}: {}", b.seq, b.reason),
    }
}
