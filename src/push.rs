//! Delegations (and schedule fires, which are delegations) to push-mode
//! workspaces: the server hands the task to the workspace's URL as an A2A
//! `message/send` and completes the ledger row with its answer, so a push
//! agent gets its work the way a poll agent's `molecule connect` does,
//! without polling.
//!
//! The ledger row is written first (queued, with its inbox row), then
//! forwarded: right after the commit by whoever made it (the delegation
//! route, the scheduler), and again by the sweeper's `forward_push` job
//! for a row still queued a while later (a crash between the commit and
//! the call, a paused workspace resumed). The claim is the ledger's own
//! `queued → dispatched` move on the locked row, so of two replicas (or
//! the route and the job) exactly one forwards.

use std::time::Duration;

use serde_json::{json, Value};

use crate::domain::{inbox, DelegationStatus, DeliveryMode, HeartbeatReport, WorkspaceId};
use crate::events::Bus;
use crate::metrics::Metrics;
use crate::store::{Delegation, ReportOutcome, StatusReport, Store};

/// How long a queued row to a push workspace waits before the sweeper's
/// job forwards it (the route and the scheduler forward at once; this
/// only catches what they could not).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What forwarding needs: the stores and the outbound client.
#[derive(Clone)]
pub struct Forwarder {
    /// The metadata store.
    pub store: std::sync::Arc<dyn Store>,
    /// Where ledger moves are announced.
    pub bus: Bus,
    /// The server's metrics.
    pub metrics: Metrics,
    /// The client of push-mode forwarding (SSRF-checked, as for messages).
    pub http: reqwest::Client,
    /// How long the workspace may take to answer.
    pub timeout: Duration,
    /// Called with each answer a workspace gave (the server records the
    /// `usage` it carries); the server's routes set it, a bare sweep not.
    pub on_answer: Option<AnswerHook>,
}

/// See [`Forwarder::on_answer`].
pub type AnswerHook = std::sync::Arc<
    dyn Fn(WorkspaceId, Value) -> futures::future::BoxFuture<'static, ()> + Send + Sync,
>;

/// How one forward ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// Not ours to forward: not a live, unpaused push workspace with a
    /// URL, or the row is no longer queued (someone else claimed it).
    Skipped,
    /// The workspace answered; the row is completed.
    Completed,
    /// The call failed; the row is failed with the reason.
    Failed,
}

impl Forwarder {
    /// Forwards `d` in a task of its own when its callee is a push
    /// workspace (returns at once; the ledger records the outcome).
    pub fn spawn(&self, d: Delegation) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.forward(&d).await {
                tracing::warn!(delegation_id = %d.id, error = %e, "forwarding a delegation to a push workspace failed; the sweeper retries it");
            }
        });
    }

    /// Forwards those of `ds` whose callee is a push workspace, each in a
    /// task of its own; the callees are read in one task first, so a batch
    /// of fires to poll workspaces costs one read each and no task.
    pub fn spawn_for_push(&self, ds: Vec<Delegation>) {
        if ds.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            for d in ds {
                match this.store.get_workspace(d.callee_id).await {
                    Ok(Some(ws)) if ws.delivery_mode == DeliveryMode::Push => this.spawn(d),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(delegation_id = %d.id, error = %e, "could not read a fire's workspace; the sweeper forwards it if it is a push workspace");
                    }
                }
            }
        });
    }

    /// Claims `d` (queued → dispatched), calls its workspace, and records
    /// the answer (completed) or the failure (failed, with the reason).
    pub async fn forward(&self, d: &Delegation) -> Result<Forwarded, crate::store::StoreError> {
        let Some(ws) = self.store.get_workspace(d.callee_id).await? else {
            return Ok(Forwarded::Skipped);
        };
        let url = match (ws.delivery_mode, ws.url.as_deref()) {
            (DeliveryMode::Push, Some(url)) if ws.is_live() && ws.paused_at.is_none() => {
                url.to_owned()
            }
            _ => return Ok(Forwarded::Skipped),
        };
        if !self
            .report(d, DelegationStatus::Dispatched, None, None, true)
            .await?
        {
            return Ok(Forwarded::Skipped);
        }
        match self.call(d, &url).await {
            Ok(answer) => {
                let text = inbox::answer_text(&answer).trim().to_owned();
                self.report(d, DelegationStatus::Completed, Some(text), None, false)
                    .await?;
                if let Some(hook) = &self.on_answer {
                    hook(d.callee_id, answer).await;
                }
                // An answer is contact, as good as a heartbeat.
                self.store
                    .heartbeat(
                        d.callee_id,
                        &HeartbeatReport::default(),
                        crate::domain::now(),
                    )
                    .await?;
                Ok(Forwarded::Completed)
            }
            Err(cause) => {
                tracing::warn!(delegation_id = %d.id, workspace_id = %d.callee_id, error = %cause, "push workspace did not take the delegation");
                let detail = format!("could not deliver to the push workspace: {cause}");
                self.report(d, DelegationStatus::Failed, None, Some(detail), false)
                    .await?;
                Ok(Forwarded::Failed)
            }
        }
    }

    /// The task as `message/send`; the workspace's answer.
    async fn call(&self, d: &Delegation, url: &str) -> Result<Value, String> {
        let rpc = inbox::message_send_rpc(
            json!(d.id),
            json!({"message": {"role": "user", "messageId": d.id,
                "parts": [{"kind": "text", "text": d.task}],
                "metadata": {"delegation_id": d.id, "source_id": d.caller.to_string(),
                    "traceparent": d.traceparent.map(|p| p.header())}}}),
        );
        let mut request = self.http.post(url).timeout(self.timeout).json(&rpc);
        // The delegation's span is the agent's parent: its own spans and
        // nested delegations stay in the caller's trace.
        if let Some(p) = d.traceparent {
            request = request.header(crate::domain::trace::TRACEPARENT, p.header());
        }
        let answer = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !answer.status().is_success() {
            return Err(format!("the workspace answered {}", answer.status()));
        }
        let answer: Value = answer
            .json()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if let Some(error) = answer.get("error") {
            return Err(format!("the workspace answered an error: {error}"));
        }
        Ok(answer)
    }

    /// Applies one move and announces it; with `claim`, true only when
    /// this call moved the row out of `queued` (false: someone else did,
    /// or it ended meanwhile).
    async fn report(
        &self,
        d: &Delegation,
        status: DelegationStatus,
        result_preview: Option<String>,
        error_detail: Option<String>,
        claim: bool,
    ) -> Result<bool, crate::store::StoreError> {
        let report = StatusReport {
            status,
            result_preview,
            error_detail,
        };
        let outcome = self
            .store
            .report_delegation(d.callee_id, d.id, &report, crate::domain::now())
            .await?;
        match outcome {
            ReportOutcome::Applied(t) => {
                let won = !claim || t.from == DelegationStatus::Queued;
                if won {
                    crate::ledger::announce_move(&self.bus, &self.metrics, &t).await;
                }
                Ok(won)
            }
            _ => Ok(false),
        }
    }
}
