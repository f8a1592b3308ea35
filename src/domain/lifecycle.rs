//! The lifecycle vocabulary of a workspace: its status, its tier, its
//! runtime and model, and what a heartbeat may report.
//!
//! Each rule exists exactly once here, so every entry point (create, org
//! import, the canvas, the CLI) decides a default tier, a default model or
//! a status the same way.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The one status vocabulary of a workspace, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceStatus {
    /// A heartbeat (or registration) within the offline window.
    Online,
    /// No heartbeat within the offline window, or never one.
    Offline,
    /// The operator paused it: messages and files are still staged, the
    /// agent is told to stop working.
    Paused,
    /// Deleted; the row is kept for the retention window, then purged.
    Removed,
    /// The agent's last heartbeat reported every recent task failing
    /// (`error_rate` 1.0).
    Failed,
}

impl WorkspaceStatus {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceStatus::Online => "online",
            WorkspaceStatus::Offline => "offline",
            WorkspaceStatus::Paused => "paused",
            WorkspaceStatus::Removed => "removed",
            WorkspaceStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for WorkspaceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so column widths in tables apply.
        f.pad(self.as_str())
    }
}

/// What the status of a workspace is decided from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Liveness {
    /// Soft-deleted.
    pub removed: bool,
    /// Paused by the operator.
    pub paused: bool,
    /// Error rate of the last heartbeat.
    pub error_rate: Option<f64>,
    /// Last registration or heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
}

impl Liveness {
    /// The status as of `now`: removed, then paused, then failed, then
    /// online or offline by the heartbeat.
    pub fn status(&self, now: DateTime<Utc>, offline_after: Duration) -> WorkspaceStatus {
        if self.removed {
            return WorkspaceStatus::Removed;
        }
        if self.paused {
            return WorkspaceStatus::Paused;
        }
        if self.is_online(now, offline_after) && self.error_rate.is_some_and(|r| r >= 1.0) {
            return WorkspaceStatus::Failed;
        }
        if self.is_online(now, offline_after) {
            WorkspaceStatus::Online
        } else {
            WorkspaceStatus::Offline
        }
    }

    /// Whether the last heartbeat is within `offline_after` of `now`.
    pub fn is_online(&self, now: DateTime<Utc>, offline_after: Duration) -> bool {
        let window = chrono::Duration::from_std(offline_after).unwrap_or(chrono::Duration::MAX);
        self.last_heartbeat_at.is_some_and(|t| now - t <= window)
    }
}

/// The resource tier of a workspace, 1 (smallest) to 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Tier(u8);

/// Why a value is not a tier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`tier` must be 1, 2, 3 or 4, not {0}")]
pub struct TierError(pub i64);

impl Tier {
    /// The tier when nothing else is configured.
    pub const DEFAULT: Tier = Tier(3);

    /// Parses 1–4.
    pub fn new(raw: i64) -> Result<Self, TierError> {
        match raw {
            1..=4 => Ok(Tier(raw as u8)),
            other => Err(TierError(other)),
        }
    }

    /// Its number.
    pub fn get(self) -> i64 {
        i64::from(self.0)
    }

    /// THE rule for a tier a request left out: the configured default
    /// (`--default-tier`). Create, org import and every other entry point
    /// call this, so a changed default reaches them all at once.
    pub fn resolve(requested: Option<Tier>, configured_default: Tier) -> Tier {
        requested.unwrap_or(configured_default)
    }
}

impl TryFrom<i64> for Tier {
    type Error = TierError;
    fn try_from(raw: i64) -> Result<Self, TierError> {
        Tier::new(raw)
    }
}

impl From<Tier> for i64 {
    fn from(t: Tier) -> i64 {
        t.get()
    }
}

impl FromStr for Tier {
    type Err = TierError;
    fn from_str(raw: &str) -> Result<Self, TierError> {
        raw.trim()
            .parse::<i64>()
            .map_err(|_| TierError(-1))
            .and_then(Tier::new)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0.to_string())
    }
}

/// The runtime when a request names none: an agent the operator runs
/// elsewhere and connects with `molecule connect`.
pub const DEFAULT_RUNTIME: &str = "external";

/// The runtime whose default model is `sonnet`.
pub const CLAUDE_CODE: &str = "claude-code";

/// The model every other runtime gets when none is named, unless
/// configured otherwise (`--default-model`).
pub const DEFAULT_UNIVERSAL_MODEL: &str = "anthropic:claude-sonnet-4-5";

/// Why a runtime or model name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` must be 1 to 100 printable characters")]
pub struct NameError {
    /// Which field.
    pub field: &'static str,
}

fn check_label(field: &'static str, raw: &str) -> Result<String, NameError> {
    let v = raw.trim();
    if v.is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) {
        return Err(NameError { field });
    }
    Ok(v.to_owned())
}

/// The runtime to store: the requested one (checked), else
/// [`DEFAULT_RUNTIME`].
pub fn resolve_runtime(requested: Option<&str>) -> Result<String, NameError> {
    match requested {
        Some(raw) => check_label("runtime", raw),
        None => Ok(DEFAULT_RUNTIME.to_owned()),
    }
}

/// THE rule for a model a request left out: `claude-code` runs `sonnet`;
/// every other runtime (also unknown ones, compared case-sensitively) the
/// configured universal default. Never returns an empty string.
pub fn default_model(runtime: &str, universal_default: &str) -> String {
    if runtime == CLAUDE_CODE {
        "sonnet".to_owned()
    } else if universal_default.trim().is_empty() {
        DEFAULT_UNIVERSAL_MODEL.to_owned()
    } else {
        universal_default.to_owned()
    }
}

/// The model to store: the requested one (checked), else
/// [`default_model`] for the runtime.
pub fn resolve_model(
    requested: Option<&str>,
    runtime: &str,
    universal_default: &str,
) -> Result<String, NameError> {
    match requested {
        Some(raw) => check_label("model", raw),
        None => Ok(default_model(runtime, universal_default)),
    }
}

/// What a heartbeat may report besides "alive", validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeartbeatReport {
    /// What the agent works on now (one line, ≤ 1,000 characters).
    pub current_task: Option<String>,
    /// Tasks in flight (0–10,000).
    pub active_tasks: Option<i64>,
    /// Share of recent tasks that failed (0.0–1.0).
    pub error_rate: Option<f64>,
    /// One recent error message (≤ 4,000 characters).
    pub sample_error: Option<String>,
    /// Seconds since the agent started (≥ 0).
    pub uptime_seconds: Option<i64>,
}

/// Why a heartbeat field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HeartbeatError(pub String);

impl HeartbeatReport {
    /// Checks every reported field; a field left out stays `None`.
    pub fn parse(
        current_task: Option<String>,
        active_tasks: Option<i64>,
        error_rate: Option<f64>,
        sample_error: Option<String>,
        uptime_seconds: Option<i64>,
    ) -> Result<Self, HeartbeatError> {
        if let Some(t) = &current_task {
            if t.chars().count() > 1000 {
                return Err(HeartbeatError(
                    "`current_task` must be at most 1000 characters".into(),
                ));
            }
        }
        if let Some(n) = active_tasks {
            if !(0..=10_000).contains(&n) {
                return Err(HeartbeatError(
                    "`active_tasks` must be between 0 and 10000".into(),
                ));
            }
        }
        if let Some(r) = error_rate {
            if !(0.0..=1.0).contains(&r) {
                return Err(HeartbeatError(
                    "`error_rate` must be between 0.0 and 1.0".into(),
                ));
            }
        }
        if let Some(e) = &sample_error {
            if e.chars().count() > 4000 {
                return Err(HeartbeatError(
                    "`sample_error` must be at most 4000 characters".into(),
                ));
            }
        }
        if let Some(u) = uptime_seconds {
            if u < 0 {
                return Err(HeartbeatError(
                    "`uptime_seconds` must not be negative".into(),
                ));
            }
        }
        Ok(Self {
            current_task,
            active_tasks,
            error_rate,
            sample_error,
            uptime_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(at: Option<i64>) -> Liveness {
        Liveness {
            removed: false,
            paused: false,
            error_rate: None,
            last_heartbeat_at: at.map(|s| DateTime::from_timestamp(s, 0).unwrap()),
        }
    }

    #[test]
    fn status_follows_the_heartbeat_window_and_precedence() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let w = std::time::Duration::from_secs(90);
        assert_eq!(live(None).status(now, w), WorkspaceStatus::Offline);
        assert_eq!(live(Some(910)).status(now, w), WorkspaceStatus::Online);
        assert_eq!(live(Some(909)).status(now, w), WorkspaceStatus::Offline);
        let failing = Liveness {
            error_rate: Some(1.0),
            ..live(Some(999))
        };
        assert_eq!(failing.status(now, w), WorkspaceStatus::Failed);
        let paused = Liveness {
            paused: true,
            ..failing
        };
        assert_eq!(paused.status(now, w), WorkspaceStatus::Paused);
        let removed = Liveness {
            removed: true,
            ..paused
        };
        assert_eq!(removed.status(now, w), WorkspaceStatus::Removed);
    }

    #[test]
    fn tier_is_one_to_four_and_defaults_through_one_rule() {
        assert_eq!(Tier::new(0), Err(TierError(0)));
        assert_eq!(Tier::new(5), Err(TierError(5)));
        assert_eq!(Tier::new(4).unwrap().get(), 4);
        assert_eq!(Tier::resolve(None, Tier::DEFAULT), Tier::DEFAULT);
        assert_eq!(Tier::DEFAULT.get(), 3);
        let t1 = Tier::new(1).unwrap();
        assert_eq!(Tier::resolve(Some(t1), Tier::DEFAULT), t1);
        assert_eq!(Tier::resolve(None, t1), t1);
    }

    #[test]
    fn default_model_is_sonnet_only_for_claude_code_and_never_empty() {
        assert_eq!(default_model("claude-code", "u"), "sonnet");
        for rt in ["external", "codex", "", "CLAUDE-CODE", "langgraph"] {
            assert_eq!(default_model(rt, "u"), "u", "{rt}");
            assert!(!default_model(rt, "").is_empty(), "{rt}");
        }
        assert_eq!(resolve_model(Some(" gpt "), "x", "u").unwrap(), "gpt");
        assert!(resolve_model(Some(""), "x", "u").is_err());
        assert_eq!(resolve_runtime(None).unwrap(), "external");
    }

    #[test]
    fn heartbeat_fields_are_range_checked() {
        assert!(HeartbeatReport::parse(None, Some(-1), None, None, None).is_err());
        assert!(HeartbeatReport::parse(None, None, Some(1.5), None, None).is_err());
        assert!(HeartbeatReport::parse(None, None, Some(f64::NAN), None, None).is_err());
        assert!(HeartbeatReport::parse(None, None, None, None, Some(-5)).is_err());
        assert!(HeartbeatReport::parse(Some("x".repeat(1001)), None, None, None, None).is_err());
        let ok =
            HeartbeatReport::parse(Some("t".into()), Some(2), Some(0.5), None, Some(10)).unwrap();
        assert_eq!(ok.active_tasks, Some(2));
    }
}
