//! Exponential backoff with jitter for `molecule connect`: when the server
//! is down or answers 5xx, wait 0.2 s, 0.4 s, … up to about 10 s between
//! tries (a file that cannot be written here: 1 s up to 5 min), each delay
//! drawn at random from its upper half so that many workspaces coming back
//! after an outage do not retry in lockstep.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Delay of the first retry.
const BASE: Duration = Duration::from_millis(200);
/// Longest delay between two tries.
const CAP: Duration = Duration::from_secs(10);

/// The state of one retry loop.
#[derive(Debug)]
pub(super) struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::with_limits(BASE, CAP)
    }
}

impl Backoff {
    /// A fresh loop: the next delay is the shortest.
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// A fresh loop whose delays start at `base` and double up to `cap`.
    pub(super) fn with_limits(base: Duration, cap: Duration) -> Self {
        Self {
            attempt: 0,
            base,
            cap,
        }
    }

    /// Whether the last call failed (a retry is under way).
    pub(super) fn is_retrying(&self) -> bool {
        self.attempt > 0
    }

    /// Back to the shortest delay, after a success.
    pub(super) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: `BASE * 2^attempt`, capped, with its lower half
    /// replaced by jitter.
    pub(super) fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// Sleeps for the next delay; `false` when `stop` fired first.
    pub(super) async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_under_the_cap_and_reset() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= BASE / 2 && first <= BASE, "{first:?}");
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(d <= CAP, "{d:?}");
        }
        assert!(b.next_delay() >= CAP / 2);
        b.reset();
        assert!(b.next_delay() <= BASE);
    }
}
