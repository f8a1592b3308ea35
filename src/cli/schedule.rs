//! `molecule schedule list|add|rm|run|history`: a workspace's schedules
//! over the HTTP API with the operator's token.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::operator::{print_json, OperatorArgs};
use crate::client::FireView;

/// `molecule schedule …`
#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// List a workspace's schedules with their next run and last status.
    List(ScheduleListArgs),
    /// Add a schedule: a prompt sent to the workspace on a cron clock.
    Add(ScheduleAddArgs),
    /// Delete a schedule (its delegations stay in the ledger).
    Rm(ScheduleIdArgs),
    /// Fire a schedule now, through the same path as a timed fire.
    Run(ScheduleIdArgs),
    /// A schedule's fires, newest first.
    History(ScheduleHistoryArgs),
}

/// `molecule schedule list`
#[derive(Debug, Args)]
pub(crate) struct ScheduleListArgs {
    /// The workspace.
    #[arg(long, value_name = "ID")]
    pub workspace: String,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule schedule add`
#[derive(Debug, Args)]
pub(crate) struct ScheduleAddArgs {
    /// The workspace.
    #[arg(long, value_name = "ID")]
    pub workspace: String,
    /// Five-field cron (`0 9 * * 1-5`) or a macro (`@hourly`, `@daily`, …).
    #[arg(long = "cron", value_name = "EXPR")]
    pub cron_expr: String,
    /// What the agent is asked on each fire.
    #[arg(long)]
    pub prompt: String,
    /// Unique in the workspace; default: the prompt's first line.
    #[arg(long)]
    pub name: Option<String>,
    /// IANA time zone the expression is read in; default UTC.
    #[arg(long)]
    pub timezone: Option<String>,
    /// `skip` (default), `buffer_one` or `allow_all`.
    #[arg(long)]
    pub overlap: Option<String>,
    /// Catch-up window in seconds (default 3600).
    #[arg(long, value_name = "SECONDS")]
    pub catch_up: Option<i64>,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule schedule rm|run`
#[derive(Debug, Args)]
pub(crate) struct ScheduleIdArgs {
    /// The schedule's id.
    pub id: String,
    /// Its workspace.
    #[arg(long, value_name = "ID")]
    pub workspace: String,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `molecule schedule history`
#[derive(Debug, Args)]
pub(crate) struct ScheduleHistoryArgs {
    /// The schedule's id.
    pub id: String,
    /// Its workspace.
    #[arg(long, value_name = "ID")]
    pub workspace: String,
    /// At most this many fires (1 to 500).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// One fire as a line: due, status, detail.
fn fire_line(f: &FireView) -> String {
    format!(
        "{}\t{}\t{}\t{}",
        f.fire_id,
        f.due_at.to_rfc3339(),
        f.status,
        f.detail.as_deref().unwrap_or("")
    )
}

/// The create body: only the flags given, so the server's defaults apply.
fn add_body(args: &ScheduleAddArgs) -> Value {
    let mut body = json!({"cron_expr": args.cron_expr, "prompt": args.prompt});
    let optional = [
        ("name", args.name.clone().map(Value::from)),
        ("timezone", args.timezone.clone().map(Value::from)),
        ("overlap", args.overlap.clone().map(Value::from)),
        ("catch_up", args.catch_up.map(Value::from)),
        ("enabled", args.disabled.then_some(Value::Bool(false))),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            body[key] = v;
        }
    }
    body
}

/// Runs a schedule command.
pub(crate) async fn schedule(cmd: ScheduleCommand) -> anyhow::Result<()> {
    match cmd {
        ScheduleCommand::List(args) => {
            let op = &args.op;
            let rows = op
                .client()?
                .list_schedules(&args.workspace)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&rows);
            }
            if rows.is_empty() {
                println!("no schedules in workspace {}", args.workspace);
            }
            for s in rows {
                println!(
                    "{}\t{}\t{} ({})\tnext {}\tlast {}{}",
                    s.id,
                    s.name,
                    s.cron_expr,
                    s.timezone,
                    s.next_run_at.to_rfc3339(),
                    s.last_status.as_deref().unwrap_or("never"),
                    if s.enabled { "" } else { "\tdisabled" }
                );
            }
            Ok(())
        }
        ScheduleCommand::Add(args) => {
            let op = &args.op;
            let s = op
                .client()?
                .create_schedule(&args.workspace, &add_body(&args))
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&s);
            }
            println!(
                "added {} ({}), next run {}",
                s.name,
                s.id,
                s.next_run_at.to_rfc3339()
            );
            Ok(())
        }
        ScheduleCommand::Rm(args) => {
            let op = &args.op;
            let deleted = op
                .client()?
                .delete_schedule(&args.workspace, &args.id)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&deleted);
            }
            println!("deleted schedule {}", deleted.id);
            Ok(())
        }
        ScheduleCommand::Run(args) => {
            let op = &args.op;
            let fire = op
                .client()?
                .run_schedule(&args.workspace, &args.id)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&fire);
            }
            println!("{}", fire_line(&fire));
            Ok(())
        }
        ScheduleCommand::History(args) => {
            let op = &args.op;
            let fires = op
                .client()?
                .schedule_history(&args.workspace, &args.id, args.limit)
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&fires);
            }
            if fires.is_empty() {
                println!("no fires yet");
            }
            for f in &fires {
                println!("{}", fire_line(f));
            }
            Ok(())
        }
    }
}
