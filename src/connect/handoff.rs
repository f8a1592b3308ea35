//! Handing work to the local agent: how (`--exec`, `--forward`, or one JSON
//! line on stdout) and, per kind of work, with which [`Policy`]. Messages
//! ([`super::messages`]) and delegated tasks ([`super::delegation`]) both go
//! through here; they differ only in their policy.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use url::Url;

use super::backoff::Backoff;
use super::Ctx;
use crate::domain::trace::{TRACEPARENT, TRACEPARENT_ENV};

/// How work reaches the agent.
#[derive(Debug, Clone)]
pub(super) enum Handoff {
    /// One JSON line per item on stdout.
    Stdout,
    /// `sh -c CMD` per item: the item's JSON line on stdin, stdout is the
    /// answer.
    Exec(String),
    /// A JSON-RPC `message/send` POST to a local push-mode agent.
    Forward(Url),
}

/// What a non-zero exit of an `--exec` command means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NonZeroExit {
    /// Its stdout is still the answer (the exit is logged).
    StdoutIsTheAnswer,
    /// It failed: the exit status is the error.
    Fails,
}

/// How one kind of work is handed over.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Tries at reaching a `--forward` agent before the work is reported
    /// undeliverable (with backoff between them).
    pub attempts: u32,
    /// How long a `--forward` agent may take to answer one try.
    pub timeout: Duration,
    /// The exit-status rule of `--exec`. It differs by kind on purpose: a
    /// delegation has a ledger that must say `failed` when the agent failed
    /// (and the caller's agent is told so), so a non-zero exit fails it; a
    /// message has no ledger, only a chat, and an agent that printed an
    /// answer before exiting non-zero has still answered the user, so its
    /// words are sent rather than dropped.
    pub nonzero_exit: NonZeroExit,
}

/// Messages: a chat turn is short and safe to send again, so a `--forward`
/// agent is tried five times, each answer awaited up to 5 minutes.
pub(super) const MESSAGE: Policy = Policy {
    attempts: 5,
    timeout: Duration::from_secs(300),
    nonzero_exit: NonZeroExit::StdoutIsTheAnswer,
};

/// Delegated tasks: a task may run long (an hour), and running it twice
/// is not harmless, so it is tried once; its failure goes to the ledger.
pub(super) const DELEGATION: Policy = Policy {
    attempts: 1,
    timeout: Duration::from_secs(3600),
    nonzero_exit: NonZeroExit::Fails,
};

/// Why an `--exec` command gave no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum ExecError {
    /// It could not be started.
    #[error("failed to start --exec: {0}")]
    Start(std::io::Error),
    /// Waiting for it failed.
    #[error("the --exec command failed: {0}")]
    Wait(std::io::Error),
    /// It exited non-zero under [`NonZeroExit::Fails`].
    #[error("the --exec command exited with {0}")]
    Exit(std::process::ExitStatus),
    /// The operator asked for a restart while it ran: it was stopped.
    #[error("the --exec command was stopped by a restart request")]
    Restarted,
}

/// Runs `sh -c cmd` in the agent's folder with `event` as one line on its
/// stdin (and the event's `traceparent` as `TRACEPARENT` in its
/// environment); its trimmed stdout is the answer, a non-zero exit as
/// `policy` says.
pub(super) async fn exec(
    ctx: &Ctx,
    cmd: &str,
    event: &Value,
    policy: &Policy,
) -> Result<String, ExecError> {
    let mut command = tokio::process::Command::new("sh");
    // The agent's own spans and delegations join the trace it works in.
    match event.get(TRACEPARENT).and_then(Value::as_str) {
        Some(p) => command.env(TRACEPARENT_ENV, p),
        None => command.env_remove(TRACEPARENT_ENV),
    };
    let mut child = command
        .arg("-c")
        .arg(cmd)
        .current_dir(&ctx.dir)
        .env("MOLECULE_WORKSPACE_ID", ctx.workspace.to_string())
        .env("MOLECULE_UPLOADS_DIR", &ctx.uploads_dir)
        .env(super::instructions::ENV, ctx.instructions_file())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(ExecError::Start)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is fine.
        let _ = stdin.write_all(format!("{event}\n").as_bytes()).await;
    }
    // Dropping the child on a restart kills it (`kill_on_drop`).
    let output = tokio::select! {
        output = child.wait_with_output() => output.map_err(ExecError::Wait)?,
        () = ctx.restarting.notified() => return Err(ExecError::Restarted),
    };
    if !output.status.success() {
        match policy.nonzero_exit {
            NonZeroExit::Fails => return Err(ExecError::Exit(output.status)),
            NonZeroExit::StdoutIsTheAnswer => {
                tracing::warn!(status = %output.status, "the --exec command exited unsuccessfully")
            }
        }
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// POSTs `rpc` to a local push-mode agent, up to `policy.attempts` times
/// with backoff (a stop ends the waiting), and returns its JSON answer, or
/// the last error. The message's `metadata.traceparent` also goes as the
/// `traceparent` header, as the server's own push forwarding sends it.
pub(super) async fn forward(
    ctx: &Ctx,
    http: &reqwest::Client,
    url: &Url,
    rpc: &Value,
    policy: &Policy,
) -> Result<Value, String> {
    let mut backoff = Backoff::new();
    let mut attempt = 1;
    let trace = rpc
        .pointer("/params/message/metadata/traceparent")
        .and_then(Value::as_str);
    loop {
        let mut request = http.post(url.clone()).timeout(policy.timeout).json(rpc);
        if let Some(p) = trace {
            request = request.header(TRACEPARENT, p);
        }
        let result = request.send().await;
        let error = match result {
            Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                Ok(answer) => return Ok(answer),
                Err(e) => format!("unreadable answer: {e}"),
            },
            Ok(r) => format!("the local agent answered {}", r.status()),
            Err(e) => e.without_url().to_string(),
        };
        tracing::warn!(attempt, error = %error, url = %url, "forwarding to the local agent failed");
        if attempt >= policy.attempts || !backoff.wait(&ctx.stop).await {
            return Err(error);
        }
        attempt += 1;
    }
}
