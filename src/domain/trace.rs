//! Traces: the W3C trace context every message, delegation, schedule fire
//! and MCP call carries ([`TraceParent`], the `traceparent` header and the
//! `TRACEPARENT` variable `molecule connect` hands its agent), the span the
//! server opens for each hop ([`Hop`]), and the spans an agent reports
//! ([`NewSpan`], read from OTLP/JSON or from the small JSON of
//! `POST /workspaces/:id/traces`).
//!
//! Parsing and writing the header is OpenTelemetry's own propagator and new
//! ids its random generator: the rules of the format (lowercase hex, an
//! all-zero id is invalid, unknown flags dropped) are theirs, not ours. A
//! malformed header is ignored and a new trace started, as the W3C
//! specification asks of a receiver; it is never an error.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use serde_json::{Map, Value};

/// The HTTP header (and A2A metadata key) of the trace context.
pub const TRACEPARENT: &str = "traceparent";
/// The environment variable `molecule connect` sets for an `--exec` agent,
/// and the CLI reads to carry the trace on (OpenTelemetry's name for the
/// context in an environment).
pub const TRACEPARENT_ENV: &str = "TRACEPARENT";

/// One W3C `traceparent`: a trace id, the id of the span that is the parent
/// of whatever the receiver does, and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
}

impl TraceParent {
    /// Reads a `traceparent` header value; `None` when it is not a valid
    /// one (the receiver then starts a new trace).
    pub fn parse(header: &str) -> Option<Self> {
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), header.to_owned())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| Self {
            trace_id: sc.trace_id(),
            span_id: sc.span_id(),
            flags: sc.trace_flags(),
        })
    }

    /// The root of a new trace (sampled: the built-in store keeps every
    /// trace).
    pub fn start() -> Self {
        let ids = RandomIdGenerator::default();
        Self {
            trace_id: ids.new_trace_id(),
            span_id: ids.new_span_id(),
            flags: TraceFlags::SAMPLED,
        }
    }

    /// A new span of the same trace, a child of this one.
    pub fn child(&self) -> Self {
        Self {
            span_id: RandomIdGenerator::default().new_span_id(),
            ..*self
        }
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        self.trace_id.to_string()
    }

    /// The span id, 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        self.span_id.to_string()
    }

    /// The header value, written by OpenTelemetry's propagator.
    pub fn header(&self) -> String {
        let sc = SpanContext::new(
            self.trace_id,
            self.span_id,
            self.flags,
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        carrier.remove(TRACEPARENT).unwrap_or_default()
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.header())
    }
}

/// Whether `s` is a valid trace id (32 lowercase hex digits, not all zero).
pub fn is_trace_id(s: &str) -> bool {
    s.len() == 32 && is_lower_hex(s) && TraceId::from_hex(s).is_ok_and(|t| t != TraceId::INVALID)
}

/// Whether `s` is a valid span id (16 lowercase hex digits, not all zero).
pub fn is_span_id(s: &str) -> bool {
    s.len() == 16 && is_lower_hex(s) && SpanId::from_hex(s).is_ok_and(|t| t != SpanId::INVALID)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The span the server opens for one hop (a delegation, a message): its own
/// context, which the receiver gets as its `traceparent`, and the span it
/// hangs under (the caller's, when the caller sent a context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The hop's own span: what the receiver is handed.
    pub context: TraceParent,
    /// The caller's span id, `None` at the root of a trace.
    pub parent_span_id: Option<SpanId>,
}

impl Hop {
    /// A hop under the caller's context, or the root of a new trace.
    pub fn open(incoming: Option<TraceParent>) -> Self {
        match incoming {
            Some(p) => Self {
                context: p.child(),
                parent_span_id: Some(p.span_id),
            },
            None => Self {
                context: TraceParent::start(),
                parent_span_id: None,
            },
        }
    }

    /// The parent span id as hex, if any.
    pub fn parent(&self) -> Option<String> {
        self.parent_span_id.map(|s| s.to_string())
    }
}

/// What a span is, as the trace view tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    /// The server's own span of a hop (a delegation, a message).
    Server,
    /// The agent's work as a whole.
    Agent,
    /// A tool call.
    Tool,
    /// A model call (with tokens).
    Llm,
}

impl SpanKind {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Agent => "agent",
            Self::Tool => "tool",
            Self::Llm => "llm",
        }
    }

    /// Reads the stored word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "server" => Self::Server,
            "agent" => Self::Agent,
            "tool" => Self::Tool,
            "llm" => Self::Llm,
            _ => return None,
        })
    }
}

/// Most spans one report may carry.
pub const MAX_SPANS_PER_REPORT: usize = 500;
/// Largest `attributes` object of one span, in bytes of JSON.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// A span an agent reports, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSpan {
    /// Its trace.
    pub trace_id: String,
    /// Its id.
    pub span_id: String,
    /// The span it hangs under.
    pub parent_span_id: Option<String>,
    /// What it was (1–200 characters).
    pub name: String,
    /// Tool, model call, or the agent's work.
    pub kind: SpanKind,
    /// When it started.
    pub start: DateTime<Utc>,
    /// When it ended (not before `start`).
    pub end: DateTime<Utc>,
    /// Tokens sent to a model.
    pub input_tokens: i64,
    /// Tokens a model produced.
    pub output_tokens: i64,
    /// The model, for a model call.
    pub model: Option<String>,
    /// Cost in micro-USD, when the agent gave one.
    pub cost_micros: Option<i64>,
    /// Anything else the agent attached.
    pub attributes: Map<String, Value>,
}

/// Why a span report was refused: the sentence of the 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpanError(pub String);

fn bad(at: &str, what: impl std::fmt::Display) -> SpanError {
    SpanError(format!("{at}: {what}"))
}

/// Reads a report: OTLP/JSON (`{resourceSpans: …}`) or the small JSON
/// (`{spans: [{name, kind, start, end, …}]}`). Spans without a trace id
/// belong to `parent`'s trace (the request's `traceparent`), and those
/// without a parent hang under `parent`'s span; without a `traceparent`
/// each must name its trace.
pub fn parse_spans(body: &Value, parent: Option<TraceParent>) -> Result<Vec<NewSpan>, SpanError> {
    let spans = if let Some(resources) = body.get("resourceSpans") {
        otlp::flatten(resources)?
    } else {
        match body.get("spans").and_then(Value::as_array) {
            Some(spans) => spans.iter().map(|s| (s.clone(), false)).collect(),
            None => {
                return Err(SpanError(
                    "the body must hold `spans` (a list) or OTLP `resourceSpans`".into(),
                ))
            }
        }
    };
    if spans.is_empty() || spans.len() > MAX_SPANS_PER_REPORT {
        return Err(SpanError(format!(
            "a report holds 1 to {MAX_SPANS_PER_REPORT} spans"
        )));
    }
    spans
        .iter()
        .enumerate()
        .map(|(i, (span, is_otlp))| {
            let at = format!("spans[{i}]");
            let span = if *is_otlp {
                otlp::simple(span).map_err(|e| bad(&at, e))?
            } else {
                span.clone()
            };
            one_span(&span, parent).map_err(|e| bad(&at, e))
        })
        .collect()
}

fn one_span(s: &Value, parent: Option<TraceParent>) -> Result<NewSpan, String> {
    let text = |name: &str| s.get(name).and_then(Value::as_str).map(str::to_owned);
    let trace_id = match (text("trace_id"), parent) {
        (Some(t), _) if is_trace_id(&t) => t,
        (Some(_), _) => return Err("`trace_id` must be 32 lowercase hex digits".into()),
        (None, Some(p)) => p.trace_id(),
        (None, None) => return Err("no `trace_id` and no `traceparent` header".into()),
    };
    let span_id = match text("span_id") {
        Some(id) if is_span_id(&id) => id,
        Some(_) => return Err("`span_id` must be 16 lowercase hex digits".into()),
        None => RandomIdGenerator::default().new_span_id().to_string(),
    };
    let same_trace = parent.filter(|p| p.trace_id() == trace_id);
    let parent_span_id = match text("parent_span_id") {
        Some(id) if is_span_id(&id) => Some(id),
        Some(_) => return Err("`parent_span_id` must be 16 lowercase hex digits".into()),
        None => same_trace.map(|p| p.span_id()),
    };
    let name = text("name").unwrap_or_default();
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err("`name` must be 1 to 200 characters".into());
    }
    let kind = match text("kind").as_deref() {
        None => SpanKind::Tool,
        Some(k) => SpanKind::parse(k)
            .filter(|k| *k != SpanKind::Server)
            .ok_or("`kind` must be tool, llm or agent")?,
    };
    let time = |name: &str| -> Result<DateTime<Utc>, String> {
        let raw = text(name).ok_or(format!("`{name}` is required (RFC 3339)"))?;
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| format!("`{name}` must be an RFC 3339 time"))
    };
    let (start, end) = (time("start")?, time("end")?);
    if end < start {
        return Err("`end` is before `start`".into());
    }
    let tokens = |name: &str| -> Result<i64, String> {
        match s.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v
                .as_i64()
                .filter(|n| (0..=1_000_000_000_000).contains(n))
                .ok_or(format!(
                    "`{name}` must be a whole number of tokens, 0 or more"
                )),
        }
    };
    let cost_micros = match s.get("cost_usd") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|c| (0.0..=1e6).contains(c))
                .map(|c| (c * 1e6).round() as i64)
                .ok_or("`cost_usd` must be a number from 0 to 1000000")?,
        ),
    };
    let model = text("model").filter(|m| !m.trim().is_empty());
    if model.as_ref().is_some_and(|m| m.chars().count() > 200) {
        return Err("`model` must be at most 200 characters".into());
    }
    let attributes = match s.get("attributes") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("`attributes` must be an object".into()),
    };
    if Value::Object(attributes.clone()).to_string().len() > MAX_ATTRIBUTES_BYTES {
        return Err(format!(
            "`attributes` must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON"
        ));
    }
    Ok(NewSpan {
        trace_id,
        span_id,
        parent_span_id,
        name,
        kind,
        start,
        end,
        input_tokens: tokens("input_tokens")?,
        output_tokens: tokens("output_tokens")?,
        model,
        cost_micros,
        attributes,
    })
}

/// OTLP/JSON (the protobuf JSON mapping of `ExportTraceServiceRequest`)
/// read into the small JSON: ids are hex, times nanoseconds since the
/// epoch as strings, attributes `[{key, value: {stringValue|intValue|…}}]`;
/// token counts and the model come from the GenAI semantic conventions.
mod otlp {
    use super::*;

    /// Every span of every resource and scope, each marked as OTLP.
    pub(super) fn flatten(resources: &Value) -> Result<Vec<(Value, bool)>, SpanError> {
        let list = |v: &Value, key: &str| -> Result<Vec<Value>, SpanError> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => Ok(items.clone()),
                Some(_) => Err(SpanError(format!("OTLP `{key}` must be a list"))),
            }
        };
        let Some(resources) = resources.as_array() else {
            return Err(SpanError("OTLP `resourceSpans` must be a list".into()));
        };
        let mut out = Vec::new();
        for r in resources {
            for scope in list(r, "scopeSpans")? {
                out.extend(list(&scope, "spans")?.into_iter().map(|s| (s, true)));
            }
        }
        Ok(out)
    }

    fn attribute_value(v: &Value) -> Value {
        for key in ["stringValue", "boolValue", "doubleValue"] {
            if let Some(x) = v.get(key) {
                return x.clone();
            }
        }
        match v.get("intValue") {
            // int64 is a string in the JSON mapping.
            Some(Value::String(s)) => s.parse::<i64>().map_or(Value::Null, Value::from),
            Some(n) => n.clone(),
            None => Value::Null,
        }
    }

    fn nanos(v: Option<&Value>) -> Option<DateTime<Utc>> {
        let n: i64 = match v? {
            Value::String(s) => s.parse().ok()?,
            n => n.as_i64()?,
        };
        Utc.timestamp_opt(
            n.div_euclid(1_000_000_000),
            n.rem_euclid(1_000_000_000) as u32,
        )
        .single()
    }

    /// One OTLP span as the small JSON.
    pub(super) fn simple(s: &Value) -> Result<Value, String> {
        let mut attributes = Map::new();
        for a in s
            .get("attributes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(k), Some(v)) = (a.get("key").and_then(Value::as_str), a.get("value")) {
                attributes.insert(k.to_owned(), attribute_value(v));
            }
        }
        let id = |k: &str| s.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        let time = |k: &str| {
            nanos(s.get(k))
                .map(|t| Value::from(t.to_rfc3339()))
                .ok_or(format!("`{k}` must be nanoseconds since the epoch"))
        };
        let usage = |k: &str| attributes.get(k).cloned().unwrap_or(Value::Null);
        let (input, output) = (
            usage("gen_ai.usage.input_tokens"),
            usage("gen_ai.usage.output_tokens"),
        );
        let model = attributes
            .get("gen_ai.response.model")
            .or_else(|| attributes.get("gen_ai.request.model"))
            .cloned()
            .unwrap_or(Value::Null);
        let kind = match attributes.get("molecule.kind").and_then(Value::as_str) {
            Some(k) => k.to_owned(),
            None if !input.is_null() || !output.is_null() || !model.is_null() => "llm".into(),
            None => "tool".into(),
        };
        let mut out = serde_json::json!({
            "name": s.get("name").cloned().unwrap_or(Value::Null),
            "kind": kind,
            "start": time("startTimeUnixNano")?,
            "end": time("endTimeUnixNano")?,
            "input_tokens": input, "output_tokens": output, "model": model,
            "attributes": attributes,
        });
        for (from, to) in [
            ("traceId", "trace_id"),
            ("spanId", "span_id"),
            ("parentSpanId", "parent_span_id"),
        ] {
            if let Some(v) = id(from) {
                out[to] = Value::from(v.to_ascii_lowercase());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_traceparent_round_trips_and_a_bad_one_is_none() {
        let raw = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceParent::parse(raw).expect("valid");
        assert_eq!(p.header(), raw);
        assert_eq!(p.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id(), "00f067aa0ba902b7");
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "junk",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_hop_is_a_child_of_the_callers_span_or_a_new_root() {
        let caller = TraceParent::start();
        let hop = Hop::open(Some(caller));
        assert_eq!(hop.context.trace_id(), caller.trace_id());
        assert_ne!(hop.context.span_id(), caller.span_id());
        assert_eq!(hop.parent(), Some(caller.span_id()));
        let root = Hop::open(None);
        assert_eq!(root.parent(), None);
        assert_ne!(root.context.trace_id(), caller.trace_id());
        assert!(TraceParent::parse(&root.context.header()).is_some());
    }

    #[test]
    fn small_json_spans_hang_under_the_header_and_otlp_reads_genai_usage() {
        let p = TraceParent::start();
        let spans = parse_spans(
            &json!({"spans": [{"name": "call model", "kind": "llm", "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-01T00:00:02Z", "input_tokens": 10, "output_tokens": 5, "model": "m"}]}),
            Some(p),
        )
        .unwrap();
        assert_eq!(spans[0].trace_id, p.trace_id());
        assert_eq!(spans[0].parent_span_id, Some(p.span_id()));
        assert_eq!((spans[0].input_tokens, spans[0].output_tokens), (10, 5));
        let otlp = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": p.trace_id(), "spanId": "1111111111111111", "name": "chat",
            "startTimeUnixNano": "1767225600000000000", "endTimeUnixNano": "1767225601000000000",
            "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}},
                           {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}]}]}]}]});
        let spans = parse_spans(&otlp, None).unwrap();
        assert_eq!(spans[0].kind, SpanKind::Llm);
        assert_eq!(spans[0].input_tokens, 7);
        assert_eq!(spans[0].model.as_deref(), Some("gpt-4o"));
        assert_eq!(spans[0].parent_span_id, None);
        let err = parse_spans(&json!({"spans": [{"name": "x"}]}), None).unwrap_err();
        assert_eq!(err.0, "spans[0]: no `trace_id` and no `traceparent` header");
        let err = parse_spans(
            &json!({"spans": [{"name": "x", "kind": "server"}]}),
            Some(p),
        )
        .unwrap_err();
        assert_eq!(err.0, "spans[0]: `kind` must be tool, llm or agent");
    }
}
