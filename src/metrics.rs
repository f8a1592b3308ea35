//! Every metric molecule exports, declared in one place with its help text
//! and, for histograms, buckets chosen for what they measure. Each server
//! has its own registry (no global state), rendered at `GET /metrics`.

use prometheus::{
    CounterVec, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    Opts, Registry, TextEncoder,
};

/// The metrics of one server.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Files staged for poll-mode workspaces.
    pub staged: IntCounter,
    /// Bytes staged.
    pub staged_bytes: IntCounter,
    /// Content downloads started.
    pub fetched: IntCounter,
    /// First acks.
    pub acked: IntCounter,
    /// Rows the sweep removed, by outcome.
    pub swept: IntCounterVec,
    /// Staged → acked.
    pub delivery_seconds: Histogram,
    /// Uploads refused, by reason.
    pub rejected: IntCounterVec,
    /// Sweep passes, by result.
    pub sweep_runs: IntCounterVec,
    /// Embedding calls that failed (commit, recall or back-fill).
    pub memory_embedding_failures: IntCounter,
    /// Memories whose vector the sweeper back-filled.
    pub memory_embeddings_backfilled: IntCounter,
    /// Delegation transitions, by the status reached.
    pub delegations: IntCounterVec,
    /// Stored secret values that did not open when a workspace read them,
    /// by scope.
    pub secret_open_failures: IntCounterVec,
    /// Delegation created → completed or failed.
    pub delegation_seconds: Histogram,
    /// Fires of schedules, by status (delivered, skipped, missed).
    pub schedule_fires: IntCounterVec,
    /// A delivered fire's due instant → its inbox row.
    pub schedule_fire_lag: Histogram,
    /// Unix time of the scheduler loop's latest completed tick (0: this
    /// process runs no loop, or it has not ticked yet). `/ready` and
    /// `/admin/schedules/health` read it to tell a stopped scheduler.
    pub schedule_last_tick: Gauge,
    /// Completed ticks of the scheduler loop.
    pub schedule_ticks: IntCounter,
    /// Approval moves, by event (requested, approved, denied, escalated).
    pub approvals: IntCounterVec,
    /// Workspaces whose `active_tasks` the sweep reset after their
    /// heartbeat stopped.
    pub phantom_busy_resets: IntCounter,
    /// MCP tool calls, by tool and outcome (ok, error).
    pub mcp_tool_calls: IntCounterVec,
    /// MCP requests refused by the per-token rate limit.
    pub mcp_rate_limited: IntCounter,
    /// Tokens reported, by workspace, direction (input, output) and model
    /// (the price table's name, or `other`: a bounded label set).
    pub tokens: IntCounterVec,
    /// Cost reported or priced, USD, by workspace.
    pub cost_usd: CounterVec,
    /// Requests refused by `--rate-limit`, by the bucket that was empty
    /// (token, address).
    pub rate_limited: IntCounterVec,
    /// Requests by method, route pattern and status.
    pub http_requests: IntCounterVec,
    /// Request latency by method and route pattern.
    pub http_duration: HistogramVec,
    /// OTLP export attempts that failed (endpoint unreachable or refused).
    pub otlp_export_errors: IntCounter,
    /// Spans the OTLP endpoint accepted.
    pub otlp_spans_exported: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Declares and registers every metric, feature by feature.
    pub fn new() -> Self {
        let r = Registrar(Registry::new());
        let Uploads {
            staged,
            staged_bytes,
            fetched,
            acked,
            swept,
            delivery_seconds,
            rejected,
        } = Uploads::register(&r);
        let (delegations, delegation_seconds) = register_delegations(&r);
        let (http_requests, http_duration) = register_http(&r);
        let (schedule_fires, schedule_fire_lag, schedule_last_tick) = register_schedules(&r);
        let (otlp_export_errors, otlp_spans_exported) = register_otlp(&r);
        let schedule_ticks = r.counter(
            "molecule_schedule_ticks_total",
            "Completed ticks of the scheduler loop.",
        );
        Self {
            staged,
            staged_bytes,
            fetched,
            acked,
            swept,
            delivery_seconds,
            rejected,
            sweep_runs: r.counter_vec(
                "molecule_sweep_runs_total",
                "Sweep passes, by result.",
                &["result"],
            ),
            memory_embedding_failures: r.counter(
                "molecule_memory_embedding_failures_total",
                "Embedding calls that failed; the memory was stored or recalled without a vector.",
            ),
            memory_embeddings_backfilled: r.counter(
                "molecule_memory_embeddings_backfilled_total",
                "Memories whose vector the sweeper computed after their commit.",
            ),
            delegations,
            delegation_seconds,
            schedule_fires,
            schedule_fire_lag,
            schedule_last_tick,
            schedule_ticks,
            approvals: register_approvals(&r),
            secret_open_failures: register_secrets(&r),
            phantom_busy_resets: r.counter(
                "molecule_phantom_busy_resets_total",
                "Workspaces whose active_tasks the sweeper reset to 0 because their heartbeat stopped while they claimed work.",
            ),
            mcp_tool_calls: r.counter_vec(
                "molecule_mcp_tool_calls_total",
                "MCP tools/call requests answered, by tool and outcome (ok, or error for a result with isError).",
                &["tool", "outcome"],
            ),
            mcp_rate_limited: r.counter(
                "molecule_mcp_rate_limited_total",
                "MCP requests refused with HTTP 429 because their token was over its rate limit.",
            ),
            tokens: r.counter_vec(
                "molecule_tokens_total",
                "Model tokens workspaces reported, by workspace, direction (input, output) and model (the price table's name, or other).",
                &["workspace", "direction", "model"],
            ),
            cost_usd: r.register(
                CounterVec::new(
                    Opts::new(
                        "molecule_cost_usd_total",
                        "Model cost workspaces reported (or the price table gave), in USD, by workspace.",
                    ),
                    &["workspace"],
                )
                .expect("BUG: valid metric"),
            ),
            rate_limited: r.counter_vec(
                "molecule_rate_limited_total",
                "Requests refused with HTTP 429 by --rate-limit, by the bucket that was empty: token (the bearer token's) or address (the client address's: requests without a token, and every request from an address whose refused tokens emptied it).",
                &["bucket"],
            ),
            http_requests,
            http_duration,
            otlp_export_errors,
            otlp_spans_exported,
            registry: r.0,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("BUG: text encoding cannot fail");
        String::from_utf8(out).expect("BUG: the text format is UTF-8")
    }
}

/// The OTLP exporter's counters: failed attempts, spans accepted.
fn register_otlp(r: &Registrar) -> (IntCounter, IntCounter) {
    (
        r.counter(
            "molecule_otlp_export_errors_total",
            "OTLP export requests that failed (endpoint unreachable, timed out or refused); their spans stay in the store and are retried.",
        ),
        r.counter(
            "molecule_otlp_spans_exported_total",
            "Spans the OTLP endpoint (--otlp-endpoint) accepted.",
        ),
    )
}

/// Declares metrics into one registry (a name used twice is a bug).
struct Registrar(Registry);

impl Registrar {
    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> M {
        self.0
            .register(Box::new(m.clone()))
            .expect("BUG: unique metric");
        m
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("BUG: valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("BUG: valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("BUG: valid metric"),
        )
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> HistogramVec {
        self.register(
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("BUG: valid metric"),
        )
    }
}

/// The staging layer's metrics (see the fields of [`Metrics`]).
struct Uploads {
    staged: IntCounter,
    staged_bytes: IntCounter,
    fetched: IntCounter,
    acked: IntCounter,
    swept: IntCounterVec,
    delivery_seconds: Histogram,
    rejected: IntCounterVec,
}

impl Uploads {
    fn register(r: &Registrar) -> Self {
        let swept = r.counter_vec(
            "molecule_pending_uploads_swept_total",
            "Staged files removed by the sweep: acked past retention, expired unacked, or failed.",
            &["outcome"],
        );
        for outcome in ["acked", "expired", "error"] {
            swept.with_label_values(&[outcome]);
        }
        Self {
            staged: r.counter(
                "molecule_pending_uploads_staged_total",
                "Files staged for poll-mode workspaces.",
            ),
            staged_bytes: r.counter(
                "molecule_pending_uploads_staged_bytes_total",
                "Bytes of files staged for poll-mode workspaces.",
            ),
            fetched: r.counter(
                "molecule_pending_uploads_fetched_total",
                "Downloads of staged files started by workspaces.",
            ),
            acked: r.counter(
                "molecule_pending_uploads_acked_total",
                "Staged files acknowledged by their workspace (first ack only).",
            ),
            swept,
            // Long-poll delivery is milliseconds; an offline laptop is hours.
            delivery_seconds: r.histogram(
                "molecule_pending_uploads_delivery_seconds",
                "Time from staging a file to its first ack.",
                vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                    21600.0, 86400.0,
                ],
            ),
            rejected: r.counter_vec(
                "molecule_pending_uploads_rejected_total",
                "Upload requests refused, by reason.",
                &["reason"],
            ),
        }
    }
}

/// The delegation ledger's transition counter (every status present from
/// the start) and its duration histogram.
fn register_delegations(r: &Registrar) -> (IntCounterVec, Histogram) {
    let delegations = r.counter_vec(
        "molecule_delegations_total",
        "Delegation ledger transitions, by the status reached (queued counts creations).",
        &["status"],
    );
    for status in crate::domain::DelegationStatus::ALL {
        delegations.with_label_values(&[status.as_str()]);
    }
    // Agents answer in seconds to hours; deadlines run up to days.
    let seconds = r.histogram(
        "molecule_delegation_duration_seconds",
        "Time from creating a delegation to its completion or failure.",
        vec![
            0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
            86400.0, 604800.0,
        ],
    );
    (delegations, seconds)
}

/// The approval counter, every event present from the start.
fn register_approvals(r: &Registrar) -> IntCounterVec {
    let moves = r.counter_vec(
        "molecule_approvals_total",
        "Approval requests made, decided (approved, denied; by a decider or on expiry) and escalated on expiry.",
        &["event"],
    );
    for event in ["requested", "approved", "denied", "escalated"] {
        moves.with_label_values(&[event]);
    }
    moves
}

/// The schedule fire counter (every status present from the start), the
/// fire lag histogram and the scheduler's heartbeat.
fn register_schedules(r: &Registrar) -> (IntCounterVec, Histogram, Gauge) {
    let fires = r.counter_vec(
        "molecule_schedule_fires_total",
        "Due instants of schedules handled, by status (delivered, skipped by the overlap policy, missed outside the catch-up window).",
        &["status"],
    );
    for status in ["delivered", "skipped", "missed"] {
        fires.with_label_values(&[status]);
    }
    // The scheduler ticks every second: a healthy lag is under 2 s; the
    // upper buckets tell a catch-up after downtime apart.
    let lag = r.histogram(
        "molecule_schedule_fire_lag_seconds",
        "Time from a fire's due instant to its inbox row.",
        vec![
            0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
        ],
    );
    // An alert is `time() - molecule_schedule_last_tick_timestamp_seconds
    // > 60` where the loop runs.
    let last_tick = r.register(
        Gauge::new(
            "molecule_schedule_last_tick_timestamp_seconds",
            "Unix time of the scheduler loop's latest completed tick (0: no loop in this process yet).",
        )
        .expect("BUG: valid metric"),
    );
    (fires, lag, last_tick)
}

/// The counter of secret values that did not open (both scopes present
/// from the start, so an alert on any increase needs no first failure).
fn register_secrets(r: &Registrar) -> IntCounterVec {
    let failures = r.counter_vec(
        "molecule_secret_open_failures_total",
        "Stored secret values that could not be decrypted when a workspace read them (tampered or moved row, or a key changed behind the check), by scope.",
        &["scope"],
    );
    for scope in ["global", "workspace"] {
        failures.with_label_values(&[scope]);
    }
    failures
}

/// The request counter and latency histogram of the HTTP layer.
fn register_http(r: &Registrar) -> (IntCounterVec, HistogramVec) {
    let requests = r.counter_vec(
        "molecule_http_requests_total",
        "HTTP requests by method, route pattern and status.",
        &["method", "path", "status"],
    );
    // Most routes answer in milliseconds; long polls hold up to 60 s.
    let duration = r.histogram_vec(
        "molecule_http_request_duration_seconds",
        "HTTP request latency by method and route pattern.",
        &["method", "path"],
        vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ],
    );
    (requests, duration)
}
