//! The per-token rate limit of the MCP endpoint (Molecule's 120 calls a
//! minute): a fixed window per token hash, kept in this process's memory.
//! Behind a load balancer each replica counts its own share, which only
//! makes the limit looser by the replica count; nothing else depends on it,
//! so it does not go through the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::TokenHash;

/// Windows older than this many of their length are dropped when the map
/// grows past [`PRUNE_AT`] entries, so forgotten tokens do not pile up.
const PRUNE_AT: usize = 10_000;

/// Calls counted per token in the current window.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    windows: Mutex<HashMap<TokenHash, (Instant, u32)>>,
}

impl RateLimiter {
    /// Counts one call of `token` at `now` against `calls` per `per`: `Ok`
    /// when within the limit, else the time until the window ends (the
    /// `Retry-After`).
    pub(crate) fn check(
        &self,
        token: TokenHash,
        (calls, per): (u32, Duration),
        now: Instant,
    ) -> Result<(), Duration> {
        let mut windows = self
            .windows
            .lock()
            .expect("BUG: the rate limiter's lock is never held across a panic");
        if windows.len() >= PRUNE_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < per);
        }
        let (start, count) = windows.entry(token).or_insert((now, 0));
        if now.duration_since(*start) >= per {
            (*start, *count) = (now, 0);
        }
        if *count >= calls {
            return Err(per.saturating_sub(now.duration_since(*start)));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_over_the_limit_waits_for_the_window_and_tokens_count_apart() {
        let limiter = RateLimiter::default();
        let (a, b) = (TokenHash([1; 32]), TokenHash([2; 32]));
        let rate = (2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limiter.check(a, rate, t0), Ok(()));
        assert_eq!(limiter.check(a, rate, t0), Ok(()));
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            limiter.check(a, rate, later),
            Err(Duration::from_secs(40)),
            "third call in the window"
        );
        assert_eq!(limiter.check(b, rate, later), Ok(()), "another token");
        let next = t0 + Duration::from_secs(60);
        assert_eq!(limiter.check(a, rate, next), Ok(()), "a new window");
    }
}
