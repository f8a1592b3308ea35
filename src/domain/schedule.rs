//! Schedules: a cron expression read in an IANA time zone ([`CronSpec`]),
//! the overlap policy of a schedule ([`Overlap`]), and what became of one
//! due instant ([`FireStatus`]).
//!
//! Cron is standard five-field (minute hour day-of-month month
//! day-of-week) plus the `@hourly`-style macros, parsed by the `croner`
//! crate; zones come from `chrono-tz`. Daylight saving time follows the
//! Open Cron Pattern Specification croner implements: a fixed local time
//! that happens twice (the autumn fall-back) fires once, at its first
//! instant; one that does not exist (the spring gap) fires at the first
//! valid instant after the gap. An expression that repeats within the hour
//! (`*/15 * * * *`) keeps firing every 15 minutes of real time through
//! either change.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A fire due longer ago than this (in seconds) is recorded `missed`
/// instead of made, unless the schedule says otherwise: one hour.
pub const DEFAULT_CATCH_UP_S: i64 = 3600;
/// The widest catch-up window a schedule may ask for: one week.
pub const MAX_CATCH_UP_S: i64 = 7 * 24 * 3600;
/// The zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// The longest schedule name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest prompt, in bytes (the same bound as a delegated task).
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;

/// Why a schedule's fields were refused; each message is a sentence the
/// API answers as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is not valid cron.
    #[error("`{expr}` is not a valid cron expression ({reason}); use five fields (minute hour day-of-month month day-of-week) or a macro such as @hourly")]
    Cron {
        /// The expression, cut to 100 characters.
        expr: String,
        /// The parser's reason.
        reason: String,
    },
    /// The zone is not an IANA zone name.
    #[error("`{0}` is not a known IANA time zone (such as UTC or Europe/Berlin)")]
    TimeZone(String),
    /// The expression never matches (e.g. 30 February).
    #[error("the cron expression `{0}` never fires")]
    Never(String),
}

/// A parsed cron expression in its zone: valid by construction.
#[derive(Debug, Clone)]
pub struct CronSpec {
    cron: Cron,
    tz: Tz,
}

impl CronSpec {
    /// Parses `expr` (five fields or a macro; seconds and years are
    /// refused) in the zone `timezone`, and checks that it fires at all.
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let tz: Tz = timezone
            .parse()
            .map_err(|_| ScheduleError::TimeZone(timezone.chars().take(100).collect()))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron {
                expr: expr.chars().take(100).collect(),
                reason: e.to_string(),
            })?;
        let spec = Self { cron, tz };
        // A pattern such as `0 0 30 2 *` parses but never matches: refused
        // now rather than found out by a scheduler that waits forever.
        if spec.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::Never(expr.chars().take(100).collect()));
        }
        Ok(spec)
    }

    /// The first instant strictly after `t` that the expression matches in
    /// its zone; `None` when there is none (croner searches a bounded
    /// number of years).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|n| n.with_timezone(&Utc))
    }

    /// The zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }
}

/// What a fire does while an earlier fire of the same schedule is still
/// in flight (its delegation not yet completed or failed). Temporal's
/// policies, with the inbox as the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// Recorded `skipped` (the default).
    #[default]
    Skip,
    /// Delivered when no earlier fire is still waiting to be picked up
    /// (queued), so at most one waits behind the one running; otherwise
    /// `skipped`.
    BufferOne,
    /// Always delivered.
    AllowAll,
}

impl Overlap {
    /// Every policy.
    pub const ALL: [Overlap; 3] = [Overlap::Skip, Overlap::BufferOne, Overlap::AllowAll];

    /// Its wire and stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer_one",
            Overlap::AllowAll => "allow_all",
        }
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Overlap`] or [`FireStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}; use one of: {allowed}")]
pub struct UnknownWord {
    what: &'static str,
    value: String,
    allowed: String,
}

impl FromStr for Overlap {
    type Err = UnknownWord;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == raw)
            .ok_or_else(|| UnknownWord {
                what: "overlap policy",
                value: raw.chars().take(64).collect(),
                allowed: "skip, buffer_one, allow_all".into(),
            })
    }
}

/// What became of one due instant of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireStatus {
    /// A delegation and its inbox row were written; the agent has not
    /// finished it yet.
    Delivered,
    /// The agent completed the delegation.
    Answered,
    /// The delegation failed.
    Failed,
    /// The overlap policy held it back.
    Skipped,
    /// It was due before the catch-up window.
    Missed,
}

impl FireStatus {
    /// Every status.
    pub const ALL: [FireStatus; 5] = [
        FireStatus::Delivered,
        FireStatus::Answered,
        FireStatus::Failed,
        FireStatus::Skipped,
        FireStatus::Missed,
    ];

    /// Its wire and stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            FireStatus::Delivered => "delivered",
            FireStatus::Answered => "answered",
            FireStatus::Failed => "failed",
            FireStatus::Skipped => "skipped",
            FireStatus::Missed => "missed",
        }
    }
}

impl fmt::Display for FireStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FireStatus {
    type Err = UnknownWord;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == raw)
            .ok_or_else(|| UnknownWord {
                what: "fire status",
                value: raw.chars().take(64).collect(),
                allowed: "delivered, answered, failed, skipped, missed".into(),
            })
    }
}

/// How a schedule's firing looks from outside (`…/schedules/health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Its latest fire is within twice its interval.
    Ok,
    /// No fire for more than twice its interval: something holds it
    /// (the scheduler, a paused workspace, a long outage).
    Stale,
    /// It has never fired.
    NeverRun,
    /// Disabled: it is not meant to fire, so it cannot be stale.
    Disabled,
}

impl Health {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Stale => "stale",
            Health::NeverRun => "never_run",
            Health::Disabled => "disabled",
        }
    }
}

/// How many instants after a fire [`interval_after`] looks at: a week of
/// a daily expression, so a weekday-only schedule's weekend gap counts.
const INTERVAL_PROBES: usize = 8;

/// The longest gap between consecutive instants of `spec` after `from`
/// (over [`INTERVAL_PROBES`] instants): the schedule's interval for the
/// staleness rule, so an irregular expression (weekdays, month ends) is
/// not called stale over its own longest pause. `None`: fewer than two
/// instants remain.
pub fn interval_after(spec: &CronSpec, from: DateTime<Utc>) -> Option<chrono::Duration> {
    let mut at = spec.next_after(from)?;
    let mut longest: Option<chrono::Duration> = None;
    for _ in 0..INTERVAL_PROBES {
        let Some(next) = spec.next_after(at) else {
            break;
        };
        longest = Some(longest.map_or(next - at, |l| l.max(next - at)));
        at = next;
    }
    longest
}

/// Classifies a schedule: disabled, never run, stale (its latest fire,
/// of any status, is older than twice its interval) or ok.
pub fn classify(
    spec: &CronSpec,
    enabled: bool,
    last_fired_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Health {
    if !enabled {
        return Health::Disabled;
    }
    let Some(last) = last_fired_at else {
        return Health::NeverRun;
    };
    match interval_after(spec, last) {
        Some(interval) if now - last > interval * 2 => Health::Stale,
        _ => Health::Ok,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn five_fields_and_macros_parse_and_seconds_do_not() {
        for expr in [
            "*/15 * * * *",
            "0 9 * * 1-5",
            "@hourly",
            "@daily",
            "@weekly",
        ] {
            assert!(CronSpec::parse(expr, "UTC").is_ok(), "{expr}");
        }
        for expr in ["", "* * * *", "0 0 9 * * *", "61 * * * *", "nonsense"] {
            assert!(
                matches!(
                    CronSpec::parse(expr, "UTC"),
                    Err(ScheduleError::Cron { .. })
                ),
                "{expr}"
            );
        }
        assert_eq!(
            CronSpec::parse("0 0 30 2 *", "UTC").unwrap_err(),
            ScheduleError::Never("0 0 30 2 *".into())
        );
        assert_eq!(
            CronSpec::parse("@hourly", "Mars/Olympus").unwrap_err(),
            ScheduleError::TimeZone("Mars/Olympus".into())
        );
    }

    #[test]
    fn the_next_fire_is_strictly_after_and_in_the_zone() {
        let spec = CronSpec::parse("0 9 * * *", "America/New_York").unwrap();
        // 09:00 EST is 14:00 UTC in January.
        let t = utc("2026-01-10T14:00:00Z");
        assert_eq!(spec.next_after(t), Some(utc("2026-01-11T14:00:00Z")));
        assert_eq!(spec.next_after(t - chrono::Duration::seconds(1)), Some(t));
        let hourly = CronSpec::parse("@hourly", "UTC").unwrap();
        assert_eq!(
            hourly.next_after(utc("2026-01-10T14:59:59.5Z")),
            Some(utc("2026-01-10T15:00:00Z"))
        );
    }

    #[test]
    fn a_local_time_that_happens_twice_fires_once() {
        // Europe/Berlin falls back on 2025-10-26: 03:00 CEST → 02:00 CET,
        // so 02:30 happens at 00:30 UTC and again at 01:30 UTC.
        let spec = CronSpec::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let first = spec.next_after(utc("2025-10-25T23:00:00Z")).unwrap();
        assert_eq!(first, utc("2025-10-26T00:30:00Z"));
        let next = spec.next_after(first).unwrap();
        assert_eq!(
            next,
            utc("2025-10-27T01:30:00Z"),
            "the second 02:30 of the 26th must not fire"
        );
    }

    #[test]
    fn a_local_time_that_does_not_exist_fires_at_the_next_valid_instant() {
        // Europe/Berlin springs forward on 2025-03-30: 02:00 CET → 03:00
        // CEST, so 02:30 does not exist; it fires at 03:00 CEST (01:00 UTC).
        let spec = CronSpec::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let gap = spec.next_after(utc("2025-03-29T23:00:00Z")).unwrap();
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(
            gap,
            berlin
                .with_ymd_and_hms(2025, 3, 30, 3, 0, 0)
                .single()
                .unwrap()
                .with_timezone(&Utc)
        );
        // And the day after, at 02:30 CEST as usual, once.
        assert_eq!(spec.next_after(gap), Some(utc("2025-03-31T00:30:00Z")));
    }

    #[test]
    fn an_interval_keeps_real_time_through_the_changes() {
        let spec = CronSpec::parse("*/30 * * * *", "Europe/Berlin").unwrap();
        let mut t = utc("2025-10-25T23:45:00Z");
        let mut fires = Vec::new();
        while t < utc("2025-10-26T02:00:00Z") {
            t = spec.next_after(t).unwrap();
            fires.push(t);
        }
        let steps: Vec<i64> = fires
            .windows(2)
            .map(|w| (w[1] - w[0]).num_minutes())
            .collect();
        assert!(steps.iter().all(|m| *m == 30), "{fires:?}");
    }

    #[test]
    fn a_fire_is_a_delegate_row_naming_its_schedule() {
        use crate::domain::inbox::{Delegate, InboxItem};
        use crate::domain::{Caller, DelegationId, ScheduleId, WorkspaceId};
        let schedule = ScheduleId::new();
        let item = InboxItem::Delegate(Delegate {
            delegation_id: DelegationId::new(),
            caller: Caller::Schedule(schedule),
            callee: WorkspaceId::new(),
            task: "check the queue".into(),
            deadline: None,
            idempotency_key: "fire:1".into(),
            traceparent: None,
        });
        let row = item.row();
        assert_eq!(row.source_id, Some(format!("schedule:{schedule}")));
        assert_eq!(row.activity_type, crate::domain::inbox::INBOX_TYPE);
        assert_eq!(InboxItem::parse(&row), Ok(item));
    }

    #[test]
    fn words_round_trip() {
        for o in Overlap::ALL {
            assert_eq!(o.as_str().parse::<Overlap>(), Ok(o));
        }
        for s in FireStatus::ALL {
            assert_eq!(s.as_str().parse::<FireStatus>(), Ok(s));
        }
        assert_eq!(
            "queue".parse::<Overlap>().unwrap_err().to_string(),
            "`queue` is not a valid overlap policy; use one of: skip, buffer_one, allow_all"
        );
    }

    #[test]
    fn health_is_stale_after_twice_the_longest_gap() {
        let hourly = CronSpec::parse("0 * * * *", "UTC").unwrap();
        let last = utc("2026-03-02T10:00:00Z");
        let at = |s: &str| classify(&hourly, true, Some(last), utc(s));
        assert_eq!(at("2026-03-02T12:00:00Z"), Health::Ok);
        assert_eq!(at("2026-03-02T12:00:01Z"), Health::Stale);
        assert_eq!(classify(&hourly, true, None, last), Health::NeverRun);
        assert_eq!(classify(&hourly, false, Some(last), last), Health::Disabled);
        // Weekdays at 9: Friday's fire is not stale on Sunday (the weekend
        // gap of 3 days is the interval), but is after Monday + 3 days.
        let weekdays = CronSpec::parse("0 9 * * 1-5", "UTC").unwrap();
        let friday = utc("2026-03-06T09:00:00Z");
        assert_eq!(
            classify(&weekdays, true, Some(friday), utc("2026-03-08T12:00:00Z")),
            Health::Ok
        );
        assert_eq!(
            classify(&weekdays, true, Some(friday), utc("2026-03-12T09:00:01Z")),
            Health::Stale
        );
    }
}
