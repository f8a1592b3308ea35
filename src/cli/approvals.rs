//! `molecule approval pending|decide`: the operator's approvals inbox on
//! the command line, over the HTTP API with the admin token.

use clap::{Args, Subcommand, ValueEnum};

use super::operator::{print_json, OperatorArgs};

/// `molecule approval …`
#[derive(Debug, Subcommand)]
pub(crate) enum ApprovalCommand {
    /// List every pending request of the fleet, oldest first.
    Pending(PendingArgs),
    /// Approve or deny a pending request (exactly once: a request someone
    /// already decided answers with that decision).
    Decide(DecideArgs),
}

/// `molecule approval pending`
#[derive(Debug, Args)]
pub(crate) struct PendingArgs {
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// The two decisions.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DecisionArg {
    /// Go ahead.
    Approved,
    /// Do not.
    Denied,
}

/// `molecule approval decide`
#[derive(Debug, Args)]
pub(crate) struct DecideArgs {
    /// The requesting workspace.
    pub workspace: String,
    /// The request's id.
    pub approval: String,
    /// `approved` or `denied`.
    #[arg(value_enum)]
    pub decision: DecisionArg,
    /// A note for the agent.
    #[arg(long)]
    pub note: Option<String>,
    /// Server and token.
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// Runs an approval command.
pub(crate) async fn approval(cmd: ApprovalCommand) -> anyhow::Result<()> {
    match cmd {
        ApprovalCommand::Pending(args) => {
            let op = &args.op;
            let rows = op
                .client()?
                .pending_approvals()
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&rows);
            }
            if rows.is_empty() {
                println!("no pending approvals");
            }
            for a in rows {
                let decider = a.approver_id.map_or("operator".into(), |w| w.to_string());
                println!(
                    "{}\t{}\t{}\tdecider {decider}",
                    a.id, a.workspace_id, a.action
                );
            }
            Ok(())
        }
        ApprovalCommand::Decide(args) => {
            let op = &args.op;
            let decision = match args.decision {
                DecisionArg::Approved => "approved",
                DecisionArg::Denied => "denied",
            };
            let a = op
                .client()?
                .decide_approval(
                    &args.workspace,
                    &args.approval,
                    decision,
                    args.note.as_deref(),
                )
                .await
                .map_err(|e| op.explain(e))?;
            if op.json {
                return print_json(&a);
            }
            println!("{} {}", a.id, a.status);
            Ok(())
        }
    }
}
