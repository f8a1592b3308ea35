//! The sweeper: runs the registered background jobs (`crate::jobs`) in
//! passes, so the staging layer and the activity log do not grow without
//! bound and the delegation ledger stays honest.
//!
//! A pass runs every job of [`crate::jobs::REGISTERED`] in order (rows
//! before blobs; see that module) and reports what each did as a
//! [`SweepOutcome`]: job name → named counts, serializable, so the log and
//! `molecule sweep --once` show every job without naming any. The first
//! job that fails ends the pass with its error; the next pass starts over.
//!
//! [`Sweeper::sweep_once`] takes the clock as a parameter so tests choose
//! the time; [`Sweeper::run`] runs a pass at start-up and then every
//! interval until shutdown, each pass in its own task so a panic is logged
//! and counted instead of ending the loop. On PostgreSQL a session advisory
//! lock lets one replica sweep at a time, and `FOR UPDATE SKIP LOCKED`
//! keeps even overlapping sweepers from meeting on a row.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};
use tokio_util::sync::CancellationToken;

use crate::blob::BlobStore;
use crate::events::Bus;
use crate::jobs::{Counts, JobContext, Scheduler, TokenUses, REGISTERED};
use crate::metrics::Metrics;
use crate::store::Store;

pub use crate::jobs::{JobError as SweepError, SweepConfig, BATCH};

/// What one pass did: each registered job's counts, in the order the jobs
/// ran. Serializes as `{"jobs": {"uploads": {"acked": 2, …}, …},
/// "skipped": false}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepOutcome {
    jobs: Vec<(&'static str, Counts)>,
    /// True when another replica held the sweep lock and this pass did
    /// nothing (every count is then zero).
    pub skipped: bool,
}

impl SweepOutcome {
    /// Every registered job at zero.
    fn zero(skipped: bool) -> Self {
        Self {
            jobs: REGISTERED
                .iter()
                .map(|j| (j.name(), Counts::zero(j.counts())))
                .collect(),
            skipped,
        }
    }

    /// The count `name` of the job `job` (e.g. `("uploads", "acked")`).
    ///
    /// # Panics
    ///
    /// When no registered job reports that count (a misspelt name must not
    /// read as zero).
    pub fn count(&self, job: &str, name: &str) -> u64 {
        self.jobs
            .iter()
            .find(|(j, _)| *j == job)
            .and_then(|(_, c)| c.get(name))
            .unwrap_or_else(|| panic!("no sweep job {job:?} with a count {name:?}"))
    }

    /// Each job's name and counts, in the order they ran.
    pub fn jobs(&self) -> impl Iterator<Item = (&'static str, &Counts)> + '_ {
        self.jobs.iter().map(|(j, c)| (*j, c))
    }

    /// True when the pass ran and found nothing to do.
    pub fn is_idle(&self) -> bool {
        !self.skipped && self.jobs.iter().all(|(_, c)| c.is_zero())
    }
}

impl Default for SweepOutcome {
    fn default() -> Self {
        Self::zero(false)
    }
}

/// The jobs as one JSON object, job name → counts.
struct JobsMap<'a>(&'a [(&'static str, Counts)]);

impl Serialize for JobsMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (job, counts) in self.0 {
            map.serialize_entry(job, counts)?;
        }
        map.end()
    }
}

impl Serialize for SweepOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SweepOutcome", 2)?;
        st.serialize_field("jobs", &JobsMap(&self.jobs))?;
        st.serialize_field("skipped", &self.skipped)?;
        st.end()
    }
}

/// One line for people: `uploads: 2 acked, 0 expired, 0 errors; activity:
/// 0 removed; …`, and why nothing ran when the pass was skipped.
impl fmt::Display for SweepOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (job, counts)) in self.jobs.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}{job}:")?;
            for (k, (name, n)) in counts.iter().enumerate() {
                let sep = if k == 0 { " " } else { ", " };
                write!(f, "{sep}{n} {name}")?;
            }
        }
        if self.skipped {
            f.write_str("; skipped: another replica is sweeping")?;
        }
        Ok(())
    }
}

/// Runs sweep passes.
#[derive(Clone)]
pub struct Sweeper {
    cx: JobContext,
}

impl Sweeper {
    /// A sweeper over these stores.
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        metrics: Metrics,
        bus: Bus,
        config: SweepConfig,
    ) -> Self {
        Self {
            cx: JobContext {
                store,
                blobs,
                metrics,
                bus,
                config,
                embedder: None,
                forwarder: None,
                token_uses: TokenUses::default(),
                auditor: None,
            },
        }
    }

    /// Also back-fills memory vectors with `embedder`, when given.
    pub fn with_embedder(mut self, embedder: Option<crate::memory::Embedder>) -> Self {
        self.cx.embedder = embedder;
        self
    }

    /// Also forwards delegations (and fires) to push workspaces.
    pub fn with_forwarder(mut self, forwarder: Option<crate::push::Forwarder>) -> Self {
        self.cx.forwarder = forwarder;
        self
    }

    /// The sender of A2A push notifications, when this sweeper forwards
    /// (the server's): run right after moves as well as by the job.
    pub(crate) fn a2a_notifier(&self) -> Option<crate::a2a::push::Notifier> {
        self.cx
            .forwarder
            .as_ref()
            .map(crate::a2a::push::Notifier::of)
    }

    /// Writes the last-used stamps `uses` collects (the server's).
    pub fn with_token_uses(mut self, uses: TokenUses) -> Self {
        self.cx.token_uses = uses;
        self
    }

    /// Records what the jobs change on their own (approval expiry and
    /// escalation) with `auditor`: the server's.
    pub fn with_auditor(mut self, auditor: Option<crate::audit::Auditor>) -> Self {
        self.cx.auditor = auditor;
        self
    }

    /// The schedules' scheduler over the same stores (its own loop; see
    /// `crate::jobs::Scheduler`).
    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(self.cx.clone())
    }

    /// One pass as of `now`.
    pub async fn sweep_once(&self, now: DateTime<Utc>) -> Result<SweepOutcome, SweepError> {
        // On PostgreSQL, one replica at a time sweeps (a session-level
        // advisory lock held for the whole pass); the others skip.
        let Some(lock) = self.cx.store.try_sweep_lock().await? else {
            return Ok(SweepOutcome::zero(true));
        };
        let result = self.pass(now).await;
        lock.release().await;
        result
    }

    /// Every registered job in order; the first failure ends the pass.
    async fn pass(&self, now: DateTime<Utc>) -> Result<SweepOutcome, SweepError> {
        let mut jobs = Vec::with_capacity(REGISTERED.len());
        for job in REGISTERED {
            let counts = job.step(&self.cx, now).await?;
            debug_assert!(
                counts.declares(job.counts()),
                "BUG: the job {} reported counts it does not declare",
                job.name()
            );
            jobs.push((job.name(), counts));
        }
        Ok(SweepOutcome {
            jobs,
            skipped: false,
        })
    }

    /// Sweeps at start-up and then every interval, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.cx.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let this = self.clone();
            // Its own task: a panic in a pass is caught here, not fatal.
            let pass = tokio::spawn(async move { this.sweep_once(crate::domain::now()).await });
            self.record(pass.await);
        }
    }

    /// Counts and logs the result of one pass run by [`Sweeper::run`].
    fn record(&self, pass: Result<Result<SweepOutcome, SweepError>, tokio::task::JoinError>) {
        let runs = &self.cx.metrics.sweep_runs;
        match pass {
            Ok(Ok(out)) => {
                runs.with_label_values(&[if out.skipped { "skipped" } else { "ok" }])
                    .inc();
                if !out.is_idle() {
                    let outcome = serde_json::to_string(&JobsMap(&out.jobs))
                        .expect("BUG: counts always serialize");
                    tracing::info!(outcome, skipped = out.skipped, "sweep pass done");
                }
            }
            Ok(Err(e)) => {
                runs.with_label_values(&["error"]).inc();
                tracing::error!(error.cause_chain = %crate::telemetry::cause_chain(&e), "sweep pass failed; retrying next tick");
            }
            Err(join) => {
                runs.with_label_values(&["panic"]).inc();
                tracing::error!(error = %join, "sweep pass panicked; retrying next tick");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_shows_every_registered_job() {
        let out = SweepOutcome::zero(true);
        let json = serde_json::to_value(&out).unwrap();
        let text = out.to_string();
        for job in REGISTERED {
            for name in job.counts() {
                assert_eq!(json["jobs"][job.name()][name], 0, "{}.{name}", job.name());
                assert_eq!(out.count(job.name(), name), 0);
            }
            assert!(text.contains(&format!("{}: 0 ", job.name())), "{text}");
        }
        assert_eq!(json["skipped"], true);
        assert!(text.ends_with("; skipped: another replica is sweeping"));
        assert!(!out.is_idle());
        assert!(SweepOutcome::default().is_idle());
    }

    #[test]
    #[should_panic(expected = "no sweep job")]
    fn a_misspelt_count_does_not_read_as_zero() {
        SweepOutcome::default().count("uploads", "ackd");
    }
}
