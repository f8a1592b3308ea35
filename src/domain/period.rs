//! Retention and time-to-live periods that are known to fit the clock
//! arithmetic done with them.
//!
//! A `std::time::Duration` from a flag can be far larger than what a
//! `chrono` duration holds, and even one that fits can push `now - period`
//! outside the representable dates. Converting with a fallback (zero, say)
//! would silently mean "everything is already past retention": the sweep
//! would delete every row. A [`Period`] is checked once, at start-up, and
//! then cannot fail.

use chrono::{DateTime, TimeDelta, Utc};

/// The longest accepted period: a century, far beyond any sensible
/// retention, well inside what dates can represent around now.
pub const MAX_PERIOD_SECS: u64 = 100 * 365 * 24 * 3600;

/// A duration of at most [`MAX_PERIOD_SECS`], usable as a retention window
/// or a time-to-live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(TimeDelta);

/// A period that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} is {given}, longer than the 100 years a retention or time-to-live may be")]
pub struct PeriodError {
    /// The flag or setting it came from.
    pub name: String,
    /// The value given, for humans.
    pub given: String,
}

impl Period {
    /// Checks `value`, read from the setting `name` (named in the error).
    pub fn new(name: &str, value: std::time::Duration) -> Result<Self, PeriodError> {
        let too_long = || PeriodError {
            name: name.to_owned(),
            given: humantime::format_duration(value).to_string(),
        };
        if value.as_secs() > MAX_PERIOD_SECS {
            return Err(too_long());
        }
        TimeDelta::from_std(value).map(Self).map_err(|_| too_long())
    }

    /// `at - self`: the cutoff for rows older than this period.
    pub fn before(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.checked_sub_signed(self.0)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// `at + self`: a deadline this period from `at`.
    pub fn after(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.checked_add_signed(self.0)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn periods_that_do_not_fit_are_refused_with_their_name() {
        let err = Period::new("--ack-retention", Duration::from_secs(u64::MAX)).unwrap_err();
        assert!(err.to_string().starts_with("--ack-retention is "), "{err}");
        assert!(Period::new("x", Duration::from_secs(MAX_PERIOD_SECS + 1)).is_err());
        let ok = Period::new("x", Duration::from_secs(3600)).unwrap();
        let now = crate::domain::now();
        assert_eq!(ok.before(now), now - TimeDelta::hours(1));
        assert_eq!(ok.after(now), now + TimeDelta::hours(1));
        let century = Period::new("x", Duration::from_secs(MAX_PERIOD_SECS)).unwrap();
        assert!(century.before(now) < now && century.after(now) > now);
    }
}
