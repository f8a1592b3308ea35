//! Rate limits: the `RATE` of `--rate-limit` and `--mcp-rate-limit`
//! (`600/min`, `10/s`, `off`), and the keyed token bucket both limits run
//! on ([`Limiter`], over `governor`'s GCRA).
//!
//! A rate of N per window is a bucket of N calls refilled one call every
//! window / N: a client may burst up to N at once, then gets one call per
//! refill interval. (A fixed window let a client spend 2 × N across a
//! window's edge.) Buckets live in this process's memory: behind a load
//! balancer each replica counts its own share, which only makes the limit
//! looser by the replica count, and nothing else depends on it, so it does
//! not go through the database.

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Every this many checks, buckets that are full again (their clients
/// went quiet) are dropped, so forgotten keys do not pile up.
const PRUNE_EVERY: u64 = 4096;

/// Calls allowed per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Calls per window (at least 1): also the burst.
    pub calls: u32,
    /// The window.
    pub per: Duration,
}

impl Rate {
    /// `calls` per `per`.
    pub fn new(calls: u32, per: Duration) -> Self {
        Self { calls, per }
    }

    /// Parses a flag's value: `N/s`, `N/min`, `N/h` or a bare `N` (per
    /// minute); `off` is `None`, no limit.
    pub fn parse_flag(raw: &str) -> Result<Option<Rate>, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (n, per) = match raw.split_once('/') {
            None => (raw, Duration::from_secs(60)),
            Some((n, "min" | "m")) => (n, Duration::from_secs(60)),
            Some((n, "s" | "sec")) => (n, Duration::from_secs(1)),
            Some((n, "h")) => (n, Duration::from_secs(3600)),
            Some(_) => return Err(format!("`{raw}`: the window must be /s, /min or /h")),
        };
        match n.trim().parse::<u32>() {
            // The refill interval must be at least a nanosecond.
            Ok(calls) if calls >= 1 && !(per / calls).is_zero() => Ok(Some(Rate { calls, per })),
            _ => Err(format!(
                "`{raw}` is not a rate: N/min, N/s, N/h, a bare N (per minute) or off"
            )),
        }
    }

    /// The bucket: `calls` at once, one more every `per / calls`.
    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.calls).expect("BUG: a parsed rate allows a call");
        Quota::with_period(self.per / self.calls)
            .expect("BUG: a parsed rate refills in at least a nanosecond")
            .allow_burst(burst)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} calls per {} s", self.calls, self.per.as_secs_f64())
    }
}

/// The `RATE` value of a flag as clap parses it: a [`Rate`] or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateFlag(pub Option<Rate>);

impl std::str::FromStr for RateFlag {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        Rate::parse_flag(raw).map(RateFlag)
    }
}

/// One token bucket per key, all of the same [`Rate`].
pub struct Limiter<K: Hash + Eq + Clone> {
    rate: Rate,
    buckets: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter").field("rate", &self.rate).finish()
    }
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// Buckets of `rate`, all full.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: RateLimiter::keyed(rate.quota()),
            checks: AtomicU64::new(0),
        }
    }

    /// The rate every bucket has.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one call from `key`'s bucket: `Ok` when there was one, else
    /// how long until there is (the `Retry-After`).
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.buckets.retain_recent();
            self.buckets.shrink_to_fit();
        }
        self.buckets
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.buckets.clock().now()))
    }

    /// Keys with a bucket that is not full.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when every bucket is full.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// A wait as whole seconds for `Retry-After`: rounded up, at least 1 (a
/// client told 0 would retry at once and be refused again).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_window_and_off() {
        let min = Duration::from_secs(60);
        let cases = [
            ("600/min", Ok(Some(Rate::new(600, min)))),
            ("120/m", Ok(Some(Rate::new(120, min)))),
            ("5", Ok(Some(Rate::new(5, min)))),
            ("10/s", Ok(Some(Rate::new(10, Duration::from_secs(1))))),
            ("2/h", Ok(Some(Rate::new(2, Duration::from_secs(3600))))),
            ("off", Ok(None)),
            ("OFF", Ok(None)),
            ("0/min", Err(())),
            ("ten", Err(())),
            ("3/week", Err(())),
            ("4000000000/s", Err(())),
        ];
        for (raw, want) in cases {
            let got = Rate::parse_flag(raw).map_err(|_| ());
            assert_eq!(got, want, "{raw}");
        }
    }

    #[test]
    fn a_key_bursts_its_rate_then_waits_one_refill_and_keys_count_apart() {
        let limiter = Limiter::new(Rate::new(3, Duration::from_secs(3600)));
        for call in 1..=3 {
            assert_eq!(limiter.check(&"a"), Ok(()), "call {call} is in the burst");
        }
        let wait = limiter.check(&"a").expect_err("the fourth call");
        // One call comes back every 3600 s / 3.
        assert!(
            wait > Duration::from_secs(1190) && wait <= Duration::from_secs(1200),
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 1200);
        assert_eq!(
            limiter.check(&"b"),
            Ok(()),
            "another key has its own bucket"
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
