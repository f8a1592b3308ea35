//! The scheduler: turns due instants of schedules into fires.
//!
//! The sweeper's five-minute pass is far too coarse for a clock, so the
//! scheduler has a loop of its own ([`Scheduler::run`], one tick a second by
//! default, `--schedule-tick`, started beside the sweeper); it is also registered as a job so a sweep
//! pass (and `molecule sweep --once`) catches up whatever is due. Both
//! call [`Scheduler::tick`] with the clock as a parameter, which tests
//! drive without sleeping.
//!
//! Fires are made in batches of up to [`FIRES_PER_BATCH`], one store
//! transaction each (`ScheduleStore::fire_due`): one commit (and one
//! fsync) for a hundred fires instead of one each, so a thousand
//! schedules due in the same minute land within about a second. After a
//! batch's commit each fire is counted (`molecule_schedule_fires_total`),
//! its lag — commit time minus due instant — observed and logged as one
//! JSON event, and a delivered fire announced like any new delegation
//! (which wakes the callee's long poll). Several replicas may tick at
//! once: the store claims due schedules with `FOR UPDATE SKIP LOCKED` and
//! the UNIQUE `(schedule_id, due_at)` decides.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{Counts, Job, JobContext, JobError};
use crate::domain::schedule::FireStatus;
use crate::events::{Bus, Event};
use crate::metrics::Metrics;
use crate::store::Fired;

const COUNTS: &[&str] = &["delivered", "skipped", "missed"];

/// At most this many fires per tick, so a catch-up after a long stop
/// cannot hold one tick for minutes; the next tick goes on.
pub const FIRES_PER_TICK: u64 = 1000;

/// At most this many fires per transaction: large enough that commits no
/// longer bound the fire rate, small enough that one batch holds its
/// workspaces' activity-id locks (and SQLite's writer) only briefly.
pub const FIRES_PER_BATCH: i64 = 100;

/// Fires what is due, as a registered job (see the module docs).
/// Counts `delivered`, `skipped`, `missed`.
pub(super) struct FireSchedules;

#[async_trait]
impl Job for FireSchedules {
    fn name(&self) -> &'static str {
        "schedules"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, now: DateTime<Utc>) -> Result<Counts, JobError> {
        Scheduler::new(cx.clone()).tick(now).await
    }
}

/// Fires schedules: [`Scheduler::tick`] once, or [`Scheduler::run`] in a
/// loop.
#[derive(Clone)]
pub struct Scheduler {
    pub(super) cx: JobContext,
}

impl Scheduler {
    /// A scheduler over the jobs' context.
    pub fn new(cx: JobContext) -> Self {
        Self { cx }
    }

    /// Fires every instant due at `now` (up to [`FIRES_PER_TICK`]), in
    /// batches of [`FIRES_PER_BATCH`] per transaction, each schedule's
    /// instants in order, and says what became of them. Where the engine
    /// takes several writers (PostgreSQL), several batches run at once:
    /// their claims skip each other's rows, so they fire disjoint
    /// schedules, and a round ends the tick when it claimed nothing.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Counts, JobError> {
        let mut out = Counts::zero(COUNTS);
        let started = Instant::now();
        let at_once = self.cx.store.fire_batches_at_once().max(1);
        let mut claimed = 0;
        while claimed < FIRES_PER_TICK {
            let left = (FIRES_PER_TICK - claimed).div_ceil(FIRES_PER_BATCH as u64);
            let round = (0..at_once.min(left as usize)).map(|_| self.batch(now, started));
            let mut round_claimed = 0;
            for batch in futures::future::join_all(round).await {
                let (n, counts) = batch?;
                round_claimed += n as u64;
                for (name, n) in counts.iter() {
                    out.add(name, n);
                }
            }
            if round_claimed == 0 {
                break;
            }
            claimed += round_claimed;
        }
        Ok(out)
    }

    /// One batch: claims and fires up to [`FIRES_PER_BATCH`] due
    /// schedules in one transaction, then counts, logs and announces its
    /// fires. Gives the number claimed (`0`: nothing left to claim).
    async fn batch(
        &self,
        now: DateTime<Utc>,
        started: Instant,
    ) -> Result<(usize, Counts), JobError> {
        let mut out = Counts::zero(COUNTS);
        let batch = self.cx.store.fire_due(now, FIRES_PER_BATCH).await?;
        if batch.claimed == 0 {
            return Ok((0, out));
        }
        // The commit's time on the tick's clock: `now` is the wall
        // clock at the tick's start in service (and a test's clock in
        // tests), so the lag counts the batches before this one too.
        let committed_at = now + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
        let mut events = Vec::new();
        for fired in &batch.fired {
            out.add(fired.fire.status.as_str(), 1);
            events.extend(record(&self.cx.metrics, fired, committed_at));
        }
        // One publish per batch: on PostgreSQL one NOTIFY statement,
        // not one round trip per fire. Not held to the tick's end: a
        // thousand polls woken at once queued for the pool past its
        // acquire timeout (503s in bench/schedules.py on PostgreSQL).
        self.cx.bus.publish_many(events).await;
        if let Some(forwarder) = &self.cx.forwarder {
            let delivered = batch.fired.iter().filter_map(|f| f.delivered.as_ref());
            forwarder.spawn_for_push(delivered.map(|(d, _)| d.clone()).collect());
        }
        Ok((batch.claimed, out))
    }

    /// Ticks every `period` until `shutdown`. A failed tick is logged and
    /// the loop goes on; each tick runs in its own task so a panic is
    /// caught too.
    pub async fn run(self, period: Duration, shutdown: CancellationToken) {
        // Alive from the start: a first tick that hangs ages this mark.
        self.mark_tick(crate::domain::now());
        let mut first = true;
        loop {
            // The first tick at once (catch-up after a start); the next
            // ones just past each multiple of `period` on the wall clock,
            // where cron instants fall, so a fire due at :00 is claimed
            // within milliseconds rather than up to a period late.
            if !std::mem::take(&mut first) {
                let wait = until_next_boundary(crate::domain::now(), period);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            } else if shutdown.is_cancelled() {
                return;
            }
            let this = self.clone();
            // Approval expiry shares the clock: due requests are decided
            // or escalated within a tick of their `expires_at`.
            let tick = tokio::spawn(async move {
                let now = crate::domain::now();
                let fired = this.tick(now).await;
                let expired = super::approvals::expire_due(&this.cx, now).await;
                fired.and(expired)
            });
            match tick.await {
                Ok(Ok(_)) => {
                    self.mark_tick(crate::domain::now());
                    self.cx.metrics.schedule_ticks.inc();
                }
                Ok(Err(e)) => {
                    tracing::error!(error.cause_chain = %crate::telemetry::cause_chain(&e), "schedule tick failed; retrying next tick");
                }
                Err(join) => {
                    tracing::error!(error = %join, "schedule tick panicked; retrying next tick");
                }
            }
        }
    }
}

/// How far past a period boundary a tick runs: enough that a fire due
/// exactly on it reads as due on a clock a little behind.
const BOUNDARY_SLACK: Duration = Duration::from_millis(2);

/// The wait from `now` until just past the next multiple of `period` since
/// the Unix epoch (a tick period of 1 s: the next whole second).
fn until_next_boundary(now: DateTime<Utc>, period: Duration) -> Duration {
    let period_us = period.as_micros().max(1) as i64;
    let now_us = now.timestamp_micros();
    let next = (now_us.div_euclid(period_us) + 1) * period_us;
    Duration::from_micros((next - now_us) as u64) + BOUNDARY_SLACK
}

impl Scheduler {
    /// The bus its fires are announced on.
    pub fn bus(&self) -> &Bus {
        &self.cx.bus
    }

    /// Records a completed tick in the heartbeat gauge [`liveness`] reads.
    pub fn mark_tick(&self, at: DateTime<Utc>) {
        let secs = at.timestamp_micros() as f64 / 1e6;
        self.cx.metrics.schedule_last_tick.set(secs);
    }
}

/// The scheduler loop is called stopped when its latest tick is older
/// than this many periods (and at least [`STALL_FLOOR`]): one tick may
/// hold up to [`FIRES_PER_TICK`] fires on a slow database.
pub const STALL_PERIODS: u32 = 10;

/// The least age of the latest tick that counts as stopped.
pub const STALL_FLOOR: Duration = Duration::from_secs(60);

/// What the heartbeat says about this process's scheduler loop.
#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    /// Whether this process runs the loop (`--schedule-tick` not `0s`).
    pub ticking: bool,
    /// Its latest completed tick (or the loop's start); `None`: no loop
    /// has started in this process.
    pub last_tick_at: Option<DateTime<Utc>>,
    /// The age past which the loop counts as stopped.
    pub stall_after: Duration,
    /// The loop runs and its latest tick is older than `stall_after`.
    pub stalled: bool,
}

/// Reads the heartbeat of `metrics` for a loop of `period` at `now`.
pub fn liveness(metrics: &Metrics, period: Duration, now: DateTime<Utc>) -> Liveness {
    let stall_after = (period * STALL_PERIODS).max(STALL_FLOOR);
    let mark = metrics.schedule_last_tick.get();
    let last_tick_at = (mark > 0.0)
        .then(|| DateTime::from_timestamp_micros((mark * 1e6) as i64))
        .flatten();
    let ticking = !period.is_zero();
    let stalled = ticking
        && last_tick_at.is_some_and(|t| (now - t).to_std().unwrap_or_default() > stall_after);
    Liveness {
        ticking,
        last_tick_at,
        stall_after,
        stalled,
    }
}

/// Counts, logs and announces one fire, after its transaction committed
/// at `committed_at` (see [`record`]).
pub(crate) async fn announce(
    bus: &Bus,
    metrics: &Metrics,
    fired: &Fired,
    committed_at: DateTime<Utc>,
) {
    bus.publish_many(record(metrics, fired, committed_at)).await;
}

/// Counts and logs one fire whose transaction committed at
/// `committed_at`, and gives the events that announce a delivered one.
/// The fire lag is `committed_at - due_at`: the time from its due instant
/// until its rows (the inbox row among them) could be read.
fn record(metrics: &Metrics, fired: &Fired, committed_at: DateTime<Utc>) -> Vec<Event> {
    let (s, f) = (&fired.schedule, &fired.fire);
    metrics
        .schedule_fires
        .with_label_values(&[f.status.as_str()])
        .inc();
    let lag = (committed_at - f.due_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    tracing::info!(
        schedule_id = %s.id, workspace_id = %s.workspace_id, fire_id = %f.id,
        due_at = %f.due_at.to_rfc3339(), fired_at = %f.fired_at.to_rfc3339(),
        committed_at = %committed_at.to_rfc3339(), status = f.status.as_str(), lag_seconds = lag,
        delegation_id = f.delegation_id.map(|d| d.to_string()).unwrap_or_default(),
        detail = f.detail.as_deref().unwrap_or(""), "schedule fired"
    );
    match (f.status, &fired.delivered) {
        (FireStatus::Delivered, Some((delegation, inbox))) => {
            metrics.schedule_fire_lag.observe(lag.max(0.0));
            crate::ledger::record_created(metrics, delegation, inbox)
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_wait_until_just_past_the_next_period_boundary() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(
            until_next_boundary(at("2026-01-01T00:00:00.900Z"), second),
            Duration::from_millis(100) + BOUNDARY_SLACK
        );
        // Exactly on a boundary: the next one, not now again.
        assert_eq!(
            until_next_boundary(at("2026-01-01T00:00:00Z"), second),
            second + BOUNDARY_SLACK
        );
        assert_eq!(
            until_next_boundary(at("2026-01-01T00:00:07.250Z"), Duration::from_secs(5)),
            Duration::from_millis(2750) + BOUNDARY_SLACK
        );
    }

    #[test]
    fn liveness_reads_the_heartbeat_against_ten_periods_or_a_minute() {
        let m = Metrics::new();
        let now: DateTime<Utc> = "2026-03-02T10:00:00Z".parse().unwrap();
        let second = Duration::from_secs(1);
        // No loop yet: nothing to call stopped.
        let l = liveness(&m, second, now);
        assert_eq!((l.ticking, l.last_tick_at, l.stalled), (true, None, false));
        assert_eq!(l.stall_after, STALL_FLOOR);
        m.schedule_last_tick
            .set((now - chrono::Duration::seconds(60)).timestamp() as f64);
        assert!(!liveness(&m, second, now).stalled);
        m.schedule_last_tick
            .set((now - chrono::Duration::seconds(61)).timestamp() as f64);
        assert!(liveness(&m, second, now).stalled);
        // Ten periods of 10 s: 100 s; off: never stalled.
        assert!(!liveness(&m, Duration::from_secs(10), now).stalled);
        assert_eq!(
            liveness(&m, Duration::from_secs(10), now)
                .stall_after
                .as_secs(),
            100
        );
        assert!(!liveness(&m, Duration::ZERO, now).stalled);
    }
}
