//! A2A push notifications: a task's webhooks (configs) on the wire in both
//! versions, and the [`Notifier`] that sends what the outbox owes them.
//!
//! Every ledger move a client would see writes one outbox row per config
//! of the task, in the move's transaction (`crate::store::A2aPushStore`).
//! The notifier POSTs the task as it was at that move (1.0: a
//! `StreamResponse` `{task}`; 0.3: the bare task, as the SDKs send) with the
//! config's authentication (`Authorization: <scheme> <credentials>`) and
//! token (`X-A2A-Notification-Token`), through the push forwarder's
//! SSRF-guarded client. It runs right after a move (woken by the bus) and
//! from the sweeper's `a2a_push` job, which retries failures with
//! exponential backoff and gives up after [`MAX_ATTEMPTS`], keeping the
//! row (and its last error) as the record.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::TryRecvError;
use tokio_util::sync::CancellationToken;

use super::jsonrpc::RpcError;
use super::tasks;
use super::Dialect;
use crate::domain::{CallbackUrl, DelegationId, DelegationStatus};
use crate::events::{Bus, Event};
use crate::store::{A2aTask, PushConfig, PushNotice, PushSent, Store, StoreResult};

/// Tries before a notification is given up (about 40 minutes of backoff).
pub(crate) const MAX_ATTEMPTS: i32 = 10;
/// The wait after the first failed try; it doubles with each one.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Configs one task may have: each move is sent to every one of them.
pub(crate) const MAX_CONFIGS: usize = 10;
/// Notifications claimed at once (sent concurrently).
const CLAIM: i64 = 32;
/// Notifications sent per wake-up right after moves (the job sends the
/// rest).
const PER_WAKE: u64 = 500;

impl Dialect {
    /// The version name a config row keeps.
    pub(crate) fn version(self) -> &'static str {
        match self {
            Dialect::V1 => "1.0",
            Dialect::V03 => "0.3",
        }
    }
}

/// The wait before try `attempts + 1`, after `attempts` failed.
pub(crate) fn backoff(attempts: i32) -> Duration {
    let doublings = attempts.clamp(1, 20) as u32 - 1;
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// A string field of at most `max` characters; absent or empty is `None`.
fn text(v: &Value, key: &str, max: usize) -> Result<Option<String>, RpcError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(_) => Err(RpcError::invalid_params(format!(
            "`{key}` must be a string of at most {max} characters"
        ))),
    }
}

/// The task id a request names: 1.0 `taskId`; 0.3 `taskId` (set) or `id`.
pub(crate) fn task_param(params: &Value, dialect: Dialect) -> Result<String, RpcError> {
    let key = match (dialect, params.get("taskId")) {
        (Dialect::V03, None) => "id",
        _ => "taskId",
    };
    text(params, key, 200)?
        .ok_or_else(|| RpcError::invalid_params(format!("`params.{key}` must be a task id")))
}

/// The config id a get or delete names (0.3: `pushNotificationConfigId`,
/// which may be absent on get).
pub(crate) fn config_param(params: &Value, dialect: Dialect) -> Result<Option<String>, RpcError> {
    match dialect {
        Dialect::V1 => text(params, "id", 200)?
            .map(Some)
            .ok_or_else(|| RpcError::invalid_params("`params.id` must be a config id")),
        Dialect::V03 => text(params, "pushNotificationConfigId", 200),
    }
}

/// Reads a create request into a config of task `task_id`: the URL checked
/// like a push workspace's (no internal address unless `allow_private`).
pub(crate) fn parse_config(
    params: &Value,
    dialect: Dialect,
    task_id: DelegationId,
    allow_private: bool,
) -> Result<PushConfig, RpcError> {
    // 1.0 puts the config's fields beside `taskId`; 0.3 nests them.
    let c = match dialect {
        Dialect::V1 => params,
        Dialect::V03 => params
            .get("pushNotificationConfig")
            .filter(|c| c.is_object())
            .ok_or_else(|| {
                RpcError::invalid_params("`params.pushNotificationConfig` must be an object")
            })?,
    };
    let raw = text(c, "url", 2048)?
        .ok_or_else(|| RpcError::invalid_params("`url` must be the webhook's URL"))?;
    let url = CallbackUrl::parse(&raw, allow_private)
        .map_err(|e| RpcError::invalid_params(format!("`url` is refused: {e}")))?;
    let (scheme, credentials) = match c.get("authentication") {
        None | Some(Value::Null) => (None, None),
        Some(a @ Value::Object(_)) => {
            let scheme = match dialect {
                Dialect::V1 => text(a, "scheme", 100)?,
                // 0.3 lists schemes; the first is the one used.
                Dialect::V03 => a
                    .get("schemes")
                    .and_then(Value::as_array)
                    .and_then(|s| s.first())
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty() && s.len() <= 100)
                    .map(str::to_owned),
            };
            let credentials = text(a, "credentials", 4000)?;
            if scheme.is_none() && credentials.is_some() {
                return Err(RpcError::invalid_params(
                    "`authentication` has credentials but no scheme (e.g. \"Bearer\")",
                ));
            }
            if scheme.as_deref().is_some_and(|s| !is_token(s)) {
                return Err(RpcError::invalid_params(
                    "`authentication.scheme` must be one word, such as \"Bearer\"",
                ));
            }
            if credentials
                .as_deref()
                .is_some_and(|c| c.contains(['\r', '\n']))
            {
                return Err(RpcError::invalid_params(
                    "`authentication.credentials` must be one line",
                ));
            }
            (scheme, credentials)
        }
        Some(_) => {
            return Err(RpcError::invalid_params(
                "`authentication` must be an object",
            ))
        }
    };
    let token = text(c, "token", 1000)?;
    if token.as_deref().is_some_and(|t| t.contains(['\r', '\n'])) {
        return Err(RpcError::invalid_params("`token` must be one line"));
    }
    Ok(PushConfig {
        task_id,
        id: text(c, "id", 200)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        url: url.as_str().to_owned(),
        token,
        auth_scheme: scheme,
        auth_credentials: credentials,
        dialect: dialect.version().to_owned(),
        created_at: crate::domain::now(),
    })
}

/// The config a message names in its `configuration` (1.0
/// `taskPushNotificationConfig`, 0.3 `pushNotificationConfig`), for the
/// task it makes (`task_id` set by whoever creates the task).
pub(crate) fn inline_config(
    params: &Value,
    dialect: Dialect,
    allow_private: bool,
) -> Result<Option<PushConfig>, RpcError> {
    let config = params.get("configuration");
    let (found, wrapped) = match dialect {
        Dialect::V1 => {
            let c = config.and_then(|c| c.get("taskPushNotificationConfig"));
            (c, c.cloned())
        }
        Dialect::V03 => {
            let c = config.and_then(|c| c.get("pushNotificationConfig"));
            (c, c.map(|c| json!({ "pushNotificationConfig": c })))
        }
    };
    match (found, wrapped) {
        (None | Some(Value::Null), _) | (_, None) => Ok(None),
        (Some(Value::Object(_)), Some(w)) => {
            parse_config(&w, dialect, DelegationId::new(), allow_private).map(Some)
        }
        (Some(_), _) => Err(RpcError::invalid_params(
            "the message's push notification config must be an object",
        )),
    }
}

/// An HTTP auth scheme name: letters, digits and `-._~+!#$%&'*^|` only.
fn is_token(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~+!#$%&'*^|`".contains(c))
}

/// A config as answered: its credentials are never echoed (the client has
/// them; an answer is no place to read them back from).
pub(crate) fn config_json(c: &PushConfig, dialect: Dialect) -> Value {
    let tid = c.task_id.to_string();
    let mut inner = json!({"id": c.id, "url": c.url});
    if let Some(t) = &c.token {
        inner["token"] = json!(t);
    }
    if let Some(s) = &c.auth_scheme {
        inner["authentication"] = match dialect {
            Dialect::V1 => json!({"scheme": s}),
            Dialect::V03 => json!({"schemes": [s]}),
        };
    }
    match dialect {
        Dialect::V1 => {
            inner["taskId"] = json!(tid);
            inner
        }
        Dialect::V03 => json!({"taskId": tid, "pushNotificationConfig": inner}),
    }
}

/// The task as it was at the move a notice reports: its status and time
/// then, the answer only if it had completed, the error only if it had
/// failed.
fn as_moved(mut task: A2aTask, n: &PushNotice) -> A2aTask {
    let d = &mut task.delegation;
    d.status = n.status;
    d.updated_at = n.moved_at;
    if n.status != DelegationStatus::Completed {
        d.result_preview = None;
    }
    if n.status != DelegationStatus::Failed {
        d.error_detail = None;
        task.canceled_at = None;
    }
    task
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// Taken by their receivers.
    pub delivered: u64,
    /// Failed, to be tried again.
    pub retried: u64,
    /// Failed for the last time.
    pub gave_up: u64,
}

/// Sends the outbox's notifications (see the module docs).
#[derive(Clone)]
pub(crate) struct Notifier {
    /// The metadata store.
    pub store: Arc<dyn Store>,
    /// The push forwarder's client: names resolved to public addresses only
    /// (unless the server allows private URLs), no redirects.
    pub http: reqwest::Client,
    /// How long a receiver may take to answer.
    pub timeout: Duration,
}

impl Notifier {
    /// The notifier over the push forwarder's stores and client.
    pub(crate) fn of(f: &crate::push::Forwarder) -> Self {
        Self {
            store: f.store.clone(),
            http: f.http.clone(),
            timeout: f.timeout,
        }
    }

    /// Sends every notification due at `now`, in claimed batches, up to
    /// `limit` of them.
    pub(crate) async fn deliver_due(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Delivered> {
        let mut out = Delivered::default();
        // A claim outlives the longest send, so no one else takes the
        // row meanwhile; a sender that dies leaves it due after the lease.
        let lease = chrono::Duration::from_std(self.timeout + Duration::from_secs(60))
            .unwrap_or_else(|_| chrono::Duration::hours(1));
        while out.delivered + out.retried + out.gave_up < limit {
            let batch = self
                .store
                .claim_push_notices(now, now + lease, CLAIM)
                .await?;
            if batch.is_empty() {
                break;
            }
            let sends = batch.iter().map(|n| self.send(n));
            let results = futures::future::join_all(sends).await;
            for (n, result) in batch.iter().zip(results) {
                let sent = match result {
                    Ok(()) => {
                        out.delivered += 1;
                        PushSent::Delivered
                    }
                    Err(error) if n.attempts >= MAX_ATTEMPTS => {
                        tracing::warn!(task_id = %n.config.task_id, config_id = %n.config.id, attempts = n.attempts, %error, "gave up an A2A push notification");
                        out.gave_up += 1;
                        PushSent::GaveUp { error }
                    }
                    Err(error) => {
                        tracing::info!(task_id = %n.config.task_id, config_id = %n.config.id, attempts = n.attempts, %error, "an A2A push notification failed; retried later");
                        out.retried += 1;
                        let wait = chrono::Duration::from_std(backoff(n.attempts))
                            .unwrap_or_else(|_| chrono::Duration::hours(1));
                        PushSent::Retry {
                            at: now + wait,
                            error,
                        }
                    }
                };
                self.store
                    .finish_push_notice(n.id, &sent, crate::domain::now())
                    .await?;
            }
        }
        Ok(out)
    }

    /// One POST; `Err` says why it was not taken.
    async fn send(&self, n: &PushNotice) -> Result<(), String> {
        let task = match self.store.get_a2a_task(n.callee, n.config.task_id).await {
            Ok(Some(t)) => t,
            // Gone with its ledger row: its outbox rows go with it.
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("reading the task failed: {e}")),
        };
        let dialect = if n.config.dialect == "0.3" {
            Dialect::V03
        } else {
            Dialect::V1
        };
        let body = tasks::stream_task(&as_moved(task, n), dialect);
        let mut req = self
            .http
            .post(&n.config.url)
            .timeout(self.timeout)
            .json(&body);
        if let (Some(scheme), Some(credentials)) =
            (&n.config.auth_scheme, &n.config.auth_credentials)
        {
            req = req.header("authorization", format!("{scheme} {credentials}"));
        }
        if let Some(token) = &n.config.token {
            req = req.header("x-a2a-notification-token", token);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("the receiver answered {}", r.status())),
            Err(e) => Err(e.without_url().to_string()),
        }
    }

    /// Sends due notifications right after the moves that owe them: woken
    /// by every ledger move on the bus (a burst of moves is one pass), until
    /// `shutdown`. What fails here is the sweeper job's to retry.
    pub(crate) fn spawn(
        self,
        bus: &Bus,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let mut events = bus.subscribe();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    e = events.recv() => e,
                };
                match event {
                    Ok(Event::Delegation(m)) if m.from != Some(m.status) => {}
                    Ok(Event::Resync)
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Ok(_) => continue,
                    Err(_) => return,
                }
                loop {
                    match events.try_recv() {
                        Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Closed) => return,
                    }
                }
                let now = crate::domain::now();
                let result = match self.store.push_notices_due(now).await {
                    Ok(true) => self.deliver_due(now, PER_WAKE).await.map(drop),
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "sending A2A push notifications failed; the sweeper retries them");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(20), Duration::from_secs(3600));
    }

    #[test]
    fn both_dialects_configs_read_and_answer_without_credentials() {
        let tid = DelegationId::new();
        let v1 = json!({"taskId": tid.to_string(), "id": "c1", "url": "https://hooks.example.com/x",
            "token": "t", "authentication": {"scheme": "Bearer", "credentials": "s3cret"}});
        let c = parse_config(&v1, Dialect::V1, tid, false).unwrap();
        assert_eq!(
            (c.auth_scheme.as_deref(), c.auth_credentials.as_deref()),
            (Some("Bearer"), Some("s3cret"))
        );
        assert_eq!(
            config_json(&c, Dialect::V1),
            json!({"taskId": tid.to_string(), "id": "c1", "url": "https://hooks.example.com/x",
                "token": "t", "authentication": {"scheme": "Bearer"}})
        );
        let v03 = json!({"taskId": tid.to_string(), "pushNotificationConfig": {
            "url": "https://hooks.example.com/y", "authentication": {"schemes": ["Bearer"], "credentials": "k"}}});
        let c = parse_config(&v03, Dialect::V03, tid, false).unwrap();
        assert_eq!(c.auth_scheme.as_deref(), Some("Bearer"));
        assert_eq!(c.dialect, "0.3");
        for (bad, why) in [
            (json!({"url": "http://10.0.0.1/x"}), "private"),
            (json!({"url": "ftp://x.example.com"}), "http or https"),
            (json!({}), "url"),
            (
                json!({"url": "https://x.example.com", "authentication": {"credentials": "k"}}),
                "no scheme",
            ),
            (
                json!({"url": "https://x.example.com", "authentication": {"scheme": "Bearer x", "credentials": "k"}}),
                "one word",
            ),
        ] {
            let e = parse_config(&bad, Dialect::V1, tid, false).unwrap_err();
            assert_eq!(e.code, -32602, "{bad}");
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
    }
}
