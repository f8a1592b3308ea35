//! Optional export of the span store to an OTLP/HTTP endpoint
//! (`--otlp-endpoint`), for operators who read traces in Jaeger, Tempo or
//! Langfuse; the built-in store keeps serving the canvas either way.
//!
//! The store is the source: every span it holds (the server's hops and what
//! agents report) is sent once it has ended, with its ids, parent, name,
//! times, moments and attributes (workspace, caller, delegation, status,
//! tokens, cost, model, the agent's own), so a viewer draws the same tree
//! as `GET /traces/:id`. A task beside the server claims a batch of ended
//! spans (a flag on the row, so replicas never send a span twice), hands
//! it to OpenTelemetry's OTLP exporter (HTTP/protobuf over reqwest), and
//! gives the batch back when the endpoint refused it or could not be
//! reached: it is retried after a back-off, so an outage loses nothing the
//! retention still keeps. Requests never wait on it. Failures are counted
//! (`molecule_otlp_export_errors_total`) and logged at most once a minute.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value as OtelValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::trace::SpanKind;
use crate::domain::usage::MICROS_PER_USD;
use crate::metrics::Metrics;
use crate::store::{Span, Store};

/// How often the exporter looks for ended spans while the endpoint is up.
const EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Spans per OTLP request.
const BATCH: i64 = 512;
/// A server span is sent this long after it ended: the usage a callee
/// reports with its final status is written right after the move that
/// ended the span.
const SETTLE: Duration = Duration::from_secs(1);
/// Longest wait between attempts while the endpoint is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// One OTLP request's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one failure line per this long (the rest are counted).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Starts the exporter when `endpoint` is set (the traces URL from
/// [`crate::config::otlp_traces_url`]); it stops when `shutdown` fires.
pub(crate) fn start(
    endpoint: Option<&str>,
    store: Arc<dyn Store>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?,
        last_error: Arc::default(),
    };
    let last_error = client.last_error.clone();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(REQUEST_TIMEOUT)
        .build()?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name("molecule")
            .build(),
    );
    tracing::info!(%endpoint, "exporting spans over OTLP/HTTP");
    let export = Export {
        exporter,
        store,
        metrics,
        last_error,
    };
    Ok(Some(tokio::spawn(export.run(shutdown))))
}

/// OpenTelemetry's exporter sends through a reqwest client of the version
/// the rest of the server uses (rustls), and keeps the last transport
/// error for the log (the exporter's own error only says "network error").
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    last_error: Arc<Mutex<Option<String>>>,
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let sent = async {
            let response = self.http.execute(request.try_into()?).await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, HttpError>(Response::builder().status(status).body(body)?)
        };
        let result = sent.await;
        let error = match &result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the endpoint answered {}", r.status())),
            Err(e) => Some(chain(e.as_ref())),
        };
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
        result
    }
}

/// An error and its causes, `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

struct Export {
    exporter: opentelemetry_otlp::SpanExporter,
    store: Arc<dyn Store>,
    metrics: Metrics,
    last_error: Arc<Mutex<Option<String>>>,
}

/// Why a round stopped early.
enum Failure {
    /// The store did not answer; nothing was claimed or sent.
    Store(String),
    /// The endpoint refused or was unreachable; the batch was given back.
    Endpoint(String),
}

impl Export {
    async fn run(self, shutdown: CancellationToken) {
        let mut wait = EXPORT_INTERVAL;
        let mut last_log: Option<Instant> = None;
        let mut unlogged = 0u64;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
            let Err(failure) = self.round().await else {
                wait = EXPORT_INTERVAL;
                continue;
            };
            wait = (wait * 2).min(MAX_BACKOFF);
            if last_log.is_some_and(|t| t.elapsed() < LOG_EVERY) {
                unlogged += 1;
                continue;
            }
            last_log = Some(Instant::now());
            match failure {
                Failure::Endpoint(e) => tracing::warn!(
                    error = %e, earlier_failures_not_logged = unlogged, retry_in = ?wait,
                    "OTLP export failed; the spans stay in the store and are retried"
                ),
                Failure::Store(e) => tracing::warn!(
                    error = %e, earlier_failures_not_logged = unlogged, retry_in = ?wait,
                    "OTLP export could not read the span store"
                ),
            }
            unlogged = 0;
        }
    }

    /// Sends every ended span waiting, a batch at a time.
    async fn round(&self) -> Result<(), Failure> {
        loop {
            let settled =
                Utc::now() - chrono::Duration::from_std(SETTLE).expect("BUG: a small duration");
            let spans = self
                .store
                .claim_unexported_spans(settled, BATCH)
                .await
                .map_err(|e| Failure::Store(e.to_string()))?;
            if spans.is_empty() {
                return Ok(());
            }
            let full = spans.len() as i64 >= BATCH;
            let batch = spans.iter().map(span_data).collect();
            if let Err(e) = self.exporter.export(batch).await {
                self.metrics.otlp_export_errors.inc();
                let keys: Vec<_> = spans.into_iter().map(|s| (s.trace_id, s.span_id)).collect();
                // If even this fails the spans stay claimed: at most once.
                if let Err(re) = self.store.release_unexported_spans(&keys).await {
                    tracing::warn!(error = %re, spans = keys.len(), "could not give back unsent spans");
                }
                let cause = self
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                return Err(Failure::Endpoint(match cause {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                }));
            }
            self.metrics.otlp_spans_exported.inc_by(spans.len() as u64);
            if !full {
                return Ok(());
            }
        }
    }
}

/// One stored span as OpenTelemetry's export record.
pub(crate) fn span_data(s: &Span) -> SpanData {
    let trace_id = TraceId::from_hex(&s.trace_id).unwrap_or(TraceId::INVALID);
    let span_id = SpanId::from_hex(&s.span_id).unwrap_or(SpanId::INVALID);
    let parent = s
        .parent_span_id
        .as_deref()
        .and_then(|p| SpanId::from_hex(p).ok())
        .unwrap_or(SpanId::INVALID);
    let end = s.end_at.unwrap_or(s.start_at);
    let mut moments = SpanEvents::default();
    moments.events = events(&s.events);
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: match s.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Llm => OtelKind::Client,
            SpanKind::Agent | SpanKind::Tool => OtelKind::Internal,
        },
        name: Cow::Owned(s.name.clone()),
        start_time: time(s.start_at),
        end_time: time(end),
        attributes: attributes(s),
        dropped_attributes_count: 0,
        events: moments,
        links: SpanLinks::default(),
        status: match s.status.as_deref() {
            Some("completed") => Status::Ok,
            Some(st @ ("failed" | "stuck")) => Status::error(st.to_owned()),
            _ => Status::Unset,
        },
        instrumentation_scope: InstrumentationScope::builder("molecule")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    }
}

fn time(t: DateTime<Utc>) -> SystemTime {
    SystemTime::from(t)
}

/// The server's attributes (`molecule.*`, and the GenAI conventions'
/// token and model names viewers such as Langfuse read), then the
/// agent's own (a key the server sets is the server's).
fn attributes(s: &Span) -> Vec<KeyValue> {
    let mut out = vec![
        KeyValue::new("molecule.workspace_id", s.workspace_id.to_string()),
        KeyValue::new("molecule.span_kind", s.kind.as_str()),
        KeyValue::new("gen_ai.usage.input_tokens", s.input_tokens),
        KeyValue::new("gen_ai.usage.output_tokens", s.output_tokens),
        KeyValue::new("molecule.cost_usd", s.cost_micros as f64 / MICROS_PER_USD),
    ];
    let optional = [
        ("molecule.caller_id", s.caller_id.clone()),
        (
            "molecule.delegation_id",
            s.delegation_id.map(|d| d.to_string()),
        ),
        ("molecule.status", s.status.clone()),
        ("gen_ai.request.model", s.model.clone()),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            out.push(KeyValue::new(key, v));
        }
    }
    if let Value::Object(agent) = &s.attributes {
        for (key, value) in agent {
            if out.iter().any(|kv| kv.key.as_str() == key) {
                continue;
            }
            out.push(KeyValue::new(key.clone(), attribute(value)));
        }
    }
    out
}

/// A JSON attribute as an OTLP one: scalars as they are, anything else as
/// its JSON text.
fn attribute(v: &Value) -> OtelValue {
    match v {
        Value::Bool(b) => OtelValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => OtelValue::I64(i),
            None => OtelValue::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => OtelValue::String(s.clone().into()),
        other => OtelValue::String(other.to_string().into()),
    }
}

/// A server span's moments (`[{name, at}]`) as span events.
fn events(moments: &Value) -> Vec<Event> {
    let Value::Array(list) = moments else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|m| {
            let name = m.get("name")?.as_str()?.to_owned();
            let at: DateTime<Utc> = serde_json::from_value(m.get("at")?.clone()).ok()?;
            Some(Event::new(name, time(at), Vec::new(), 0))
        })
        .collect()
}
