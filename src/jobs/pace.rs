//! How fast the upload sweep deletes blobs: a window of delete requests in
//! flight that shrinks, and pauses, when the blob store slows down.
//!
//! The blob store also serves uploads, often on the same machine; a sweep
//! of a million rows that keeps it saturated stalls every upload meanwhile
//! (measured: upload p99 from 20 ms to 300 ms with 8–10 DeleteObjects
//! requests in flight). So every request is timed, per key, against the
//! fastest seen lately. While requests take no longer than [`SLOW`] times
//! that, the window grows by one, up to the setting; once one takes
//! longer, the store is busy (with uploads, or with the sweep itself): the
//! window halves, and that request's slot is held for [`PAUSE`] times the
//! time it lost before the next request may start. Over a few requests
//! this leaves the store idle in proportion to how loaded it is.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A request slower than this many times the fastest (per key) is a sign
/// the store is busy.
const SLOW: f64 = 2.0;

/// The fastest time per key is forgotten at this rate per request (so a
/// minimum of a quiet moment long ago does not hold forever).
const DRIFT: f64 = 1.02;

/// Times the lost time (the request's time beyond the fastest) a slow
/// request's slot stays held, idle.
const PAUSE: f64 = 1.0;

/// The longest pause after one request.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// The window of delete requests in flight, shared by a sweep's batches.
pub(super) struct DeletePacer {
    max: usize,
    state: Mutex<State>,
    freed: Notify,
}

#[derive(Debug)]
struct State {
    window: usize,
    in_flight: usize,
    /// Seconds per key of the fastest request lately.
    best: f64,
}

impl DeletePacer {
    /// At most `max` requests in flight (at least one); the window starts
    /// at one and grows while requests stay fast.
    pub(super) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            state: Mutex::new(State {
                window: 1,
                in_flight: 0,
                best: f64::INFINITY,
            }),
            freed: Notify::new(),
        }
    }

    /// Runs `request` (a delete of `keys` keys) once the window has room,
    /// and paces the next ones by how long it took.
    pub(super) async fn run<T>(
        &self,
        keys: usize,
        request: impl std::future::Future<Output = T>,
    ) -> T {
        let _slot = self.acquire().await;
        let started = Instant::now();
        let out = request.await;
        let pause = self.observe(started.elapsed(), keys);
        if !pause.is_zero() {
            tracing::debug!(
                pause_ms = pause.as_millis() as u64,
                "upload sweep: blob store slow, pausing"
            );
            tokio::time::sleep(pause).await;
        }
        out
    }

    /// A slot in the window, given back when dropped (also when the
    /// request panics or is cancelled).
    async fn acquire(&self) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            {
                let mut s = self.state.lock().expect("BUG: pacer lock poisoned");
                if s.in_flight < s.window {
                    s.in_flight += 1;
                    return Slot(self);
                }
            }
            freed.await;
        }
    }

    /// Records a request of `keys` keys that took `took`; returns how long
    /// its slot stays held.
    fn observe(&self, took: Duration, keys: usize) -> Duration {
        let mut s = self.state.lock().expect("BUG: pacer lock poisoned");
        let secs = took.as_secs_f64();
        let per_key = secs / keys.max(1) as f64;
        s.best = (s.best * DRIFT).min(per_key);
        if per_key <= SLOW * s.best {
            s.window = (s.window + 1).min(self.max);
            return Duration::ZERO;
        }
        s.window = (s.window / 2).max(1);
        let lost = secs - s.best * keys as f64;
        Duration::from_secs_f64(lost * PAUSE).min(MAX_PAUSE)
    }

    /// The window now (for tests).
    #[cfg(test)]
    fn window(&self) -> usize {
        self.state.lock().unwrap().window
    }
}

/// One request's place in the window.
struct Slot<'a>(&'a DeletePacer);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let pacer = self.0;
        match pacer.state.lock() {
            Ok(mut s) => s.in_flight -= 1,
            Err(poisoned) => poisoned.into_inner().in_flight -= 1,
        }
        pacer.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fast_requests_open_the_window_up_to_the_setting() {
        let p = DeletePacer::new(3);
        assert_eq!(p.window(), 1);
        for _ in 0..5 {
            assert_eq!(p.observe(100 * MS, 1000), Duration::ZERO);
        }
        assert_eq!(p.window(), 3);
    }

    #[test]
    fn a_slow_request_halves_the_window_and_pauses_for_the_time_lost() {
        let p = DeletePacer::new(4);
        for _ in 0..4 {
            p.observe(100 * MS, 1000);
        }
        assert_eq!(p.window(), 4);
        // Three times the fastest: 200 ms lost (less the drift).
        let pause = p.observe(300 * MS, 1000);
        assert_eq!(p.window(), 2);
        assert!(pause > 190 * MS && pause <= 200 * MS, "{pause:?}");
        // Per key: a short request is judged by its own size.
        assert_eq!(p.observe(11 * MS, 100), Duration::ZERO);
        assert_eq!(p.window(), 3);
        // Never below one, never a pause above the cap.
        p.observe(60_000 * MS, 1000);
        p.observe(60_000 * MS, 1000);
        assert_eq!(p.window(), 1);
        assert_eq!(p.observe(60_000 * MS, 1000), MAX_PAUSE);
    }

    #[tokio::test]
    async fn no_more_requests_than_the_window_run_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let p = std::sync::Arc::new(DeletePacer::new(2));
        let now = std::sync::Arc::new(AtomicUsize::new(0));
        let peak = std::sync::Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (p, now, peak) = (p.clone(), now.clone(), peak.clone());
                tokio::spawn(async move {
                    p.run(10, async {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(5 * MS).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(now.load(Ordering::SeqCst), 0);
        assert!((1..=2).contains(&peak.load(Ordering::SeqCst)));
        assert_eq!(p.state.lock().unwrap().in_flight, 0);
    }
}
