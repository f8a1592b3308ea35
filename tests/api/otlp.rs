//! OTLP export (`--otlp-endpoint`) on both engines, against a real
//! OTLP/HTTP receiver in the test (an axum route that decodes the protobuf
//! body with the `opentelemetry-proto` messages): a delegation across two
//! workspaces under a caller's `traceparent` arrives as exactly the spans
//! `GET /traces/:id` shows (ids, parents, names, times, moments,
//! attributes); with the endpoint down, requests still succeed, the error
//! counter rises, the store keeps every span, and the spans go out once
//! the endpoint is back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode as AxumStatus};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app_with, Engine, Options, TestApp, Ws};
use crate::on_both_engines;
use crate::traces::{hop_of, llm_span, CALLER, CALLER_TRACE};

/// One span as the receiver decoded it, in the shape of the trace view.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    name: String,
    start_ns: u64,
    end_ns: u64,
    attributes: BTreeMap<String, Value>,
    events: Vec<String>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    status: i32,
}

type Received = Arc<Mutex<Vec<Got>>>;

fn scalar(v: Option<Any>) -> Value {
    match v {
        Some(Any::StringValue(s)) => json!(s),
        Some(Any::IntValue(i)) => json!(i),
        Some(Any::DoubleValue(f)) => json!(f),
        Some(Any::BoolValue(b)) => json!(b),
        other => panic!("unexpected attribute value {other:?}"),
    }
}

/// `POST /v1/traces`: decodes the request and keeps its spans.
async fn accept(
    State(got): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> (AxumStatus, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/x-protobuf"
    );
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut spans = Vec::new();
    for rs in req.resource_spans {
        let resource = rs.resource.expect("a resource");
        let service = resource
            .attributes
            .into_iter()
            .find(|kv| kv.key == "service.name")
            .map(|kv| scalar(kv.value.and_then(|v| v.value)));
        for ss in rs.scope_spans {
            assert_eq!(ss.scope.expect("a scope").name, "molecule");
            for s in ss.spans {
                spans.push(Got {
                    service: service.clone().unwrap().as_str().unwrap().to_owned(),
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: (!s.parent_span_id.is_empty())
                        .then(|| hex::encode(&s.parent_span_id)),
                    name: s.name,
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    attributes: s
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, scalar(kv.value.and_then(|v| v.value))))
                        .collect(),
                    events: s.events.into_iter().map(|e| e.name).collect(),
                    status: s.status.map_or(0, |st| st.code),
                });
            }
        }
    }
    got.lock().unwrap().extend(spans);
    (
        AxumStatus::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// Serves the receiver on `listener`; returns what it collects.
fn serve_receiver(listener: tokio::net::TcpListener) -> Received {
    let got = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(accept))
        .with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    got
}

async fn app_exporting_to(engine: Engine, base: String) -> Option<TestApp> {
    // The flag's form: a base URL, `/v1/traces` added.
    let url = molecule::config::otlp_traces_url(Some(&base)).unwrap();
    spawn_app_with(Options::new(engine).tweak(move |c| c.otlp_endpoint = url)).await
}

/// The operator delegates to A under [`CALLER`]; A delegates on to B under
/// its context; B's agent reports a model call; both report completion
/// with usage. Returns the trace view.
async fn delegation_across_two_workspaces(app: &TestApp, a: &Ws, b: &Ws) -> Value {
    let (status, a_task) = app.delegate_traced(None, a, "plan", Some(CALLER)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{a_task}");
    let (a_ctx, _, _) = hop_of(&app.last_inbox_row(a).await);
    let (status, b_task) = app.delegate_traced(Some(a), b, "build", Some(&a_ctx)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{b_task}");
    let (b_ctx, _, _) = hop_of(&app.last_inbox_row(b).await);
    let (status, body) = app
        .report_spans(b, Some(&b_ctx), &llm_span("answer", 7, 3))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (ws, task, tokens) in [(b, &b_task, 50), (a, &a_task, 20)] {
        let did = task["delegation_id"].as_str().unwrap();
        app.report_traced_status(ws, did, json!({"status": "dispatched"}))
            .await;
        let usage = json!({"input_tokens": tokens, "output_tokens": 5, "model": "gpt-4o"});
        app.report_traced_status(
            ws,
            did,
            json!({"status": "completed", "result_preview": "ok", "usage": usage}),
        )
        .await;
    }
    let (status, t) = app
        .get(&format!("/traces/{CALLER_TRACE}"), &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["span_count"], 3, "{t}");
    t
}

/// Every node of the trace view, depth first.
fn flatten(nodes: &Value, out: &mut Vec<Value>) {
    for n in nodes.as_array().unwrap() {
        out.push(n.clone());
        flatten(&n["children"], out);
    }
}

fn nanos(v: &Value) -> u64 {
    let t: chrono::DateTime<chrono::Utc> = serde_json::from_value(v.clone()).unwrap();
    t.timestamp_nanos_opt().unwrap() as u64
}

/// The spans of the view keyed by id, as the receiver should have them.
fn expected(view: &Value) -> BTreeMap<String, (Option<String>, String, u64, u64)> {
    let mut nodes = Vec::new();
    flatten(&view["roots"], &mut nodes);
    nodes
        .iter()
        .map(|n| {
            let parent = n["parent_span_id"].as_str().map(str::to_owned);
            let name = n["name"].as_str().unwrap().to_owned();
            let times = (nanos(&n["start"]), nanos(&n["end"]));
            (
                n["span_id"].as_str().unwrap().to_owned(),
                (parent, name, times.0, times.1),
            )
        })
        .collect()
}

fn received(got: &Received) -> BTreeMap<String, (Option<String>, String, u64, u64)> {
    got.lock()
        .unwrap()
        .iter()
        .map(|g| {
            assert_eq!(
                (g.trace_id.as_str(), g.service.as_str()),
                (CALLER_TRACE, "molecule")
            );
            (
                g.span_id.clone(),
                (
                    g.parent_span_id.clone(),
                    g.name.clone(),
                    g.start_ns,
                    g.end_ns,
                ),
            )
        })
        .collect()
}

async fn the_endpoint_gets_exactly_the_spans_of_the_trace_view(engine: Engine) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let got = serve_receiver(listener);
    let Some(app) = app_exporting_to(engine, base).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let view = delegation_across_two_workspaces(&app, &a, &b).await;
    let want = expected(&view);
    assert_eq!(want.len(), 3);

    eventually("the receiver has the trace's 3 spans", || {
        let n = got.lock().unwrap().len();
        async move { n >= 3 }
    })
    .await;
    // Exactly those: same ids, parents, names, start and end.
    assert_eq!(received(&got), want);
    assert_eq!(got.lock().unwrap().len(), 3, "each span sent once");
    assert_eq!(app.metric("molecule_otlp_spans_exported_total").await, 3.0);
    assert_eq!(app.metric("molecule_otlp_export_errors_total").await, 0.0);

    // What each carries: the hop's moments, status and usage; the model
    // call's tokens, model and the agent's own attributes.
    let spans = got.lock().unwrap().clone();
    let hop_a = spans
        .iter()
        .find(|g| g.parent_span_id.as_deref() == Some("b7ad6b7169203331"))
        .unwrap();
    assert_eq!(hop_a.name, "delegate");
    assert_eq!(hop_a.events, ["queued", "dispatched", "completed"]);
    assert_eq!(hop_a.status, 1, "completed is OK");
    let a_attrs: BTreeMap<String, Value> = [
        ("molecule.workspace_id", json!(a.id)),
        ("molecule.caller_id", json!("operator")),
        ("molecule.span_kind", json!("server")),
        ("molecule.status", json!("completed")),
        ("gen_ai.usage.input_tokens", json!(20)),
        ("gen_ai.usage.output_tokens", json!(5)),
        ("gen_ai.request.model", json!("gpt-4o")),
        (
            "molecule.cost_usd",
            json!(view["roots"][0]["own"]["cost_usd"]),
        ),
        (
            "molecule.delegation_id",
            view["roots"][0]["delegation_id"].clone(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(hop_a.attributes, a_attrs);
    let llm = spans.iter().find(|g| g.name == "answer").unwrap();
    assert_eq!(llm.events, Vec::<String>::new());
    assert_eq!(llm.status, 0);
    assert_eq!(llm.attributes["molecule.workspace_id"], json!(b.id));
    assert_eq!(llm.attributes["molecule.span_kind"], json!("llm"));
    assert_eq!(llm.attributes["gen_ai.usage.input_tokens"], json!(7));
    assert_eq!(llm.attributes["gen_ai.request.model"], json!("gpt-4o"));
    assert_eq!(llm.attributes["temperature"], json!(0));
}

on_both_engines!(the_endpoint_gets_exactly_the_spans_of_the_trace_view);

async fn an_endpoint_down_fails_nothing_and_loses_nothing(engine: Engine) {
    // A port nothing listens on (yet).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let Some(app) = app_exporting_to(engine, format!("http://{addr}")).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    // Every request of the delegation succeeds (asserted inside).
    let view = delegation_across_two_workspaces(&app, &a, &b).await;

    // The failures are counted, and keep being retried.
    for n in [1.0, 2.0] {
        eventually(&format!("{n} failed export(s) counted"), || async {
            app.metric("molecule_otlp_export_errors_total").await >= n
        })
        .await;
    }
    assert_eq!(app.metric("molecule_otlp_spans_exported_total").await, 0.0);
    // The built-in store still serves the whole trace.
    let (status, again) = app
        .get(&format!("/traces/{CALLER_TRACE}"), &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(expected(&again), expected(&view));
    assert_eq!(again["span_count"], 3);

    // The endpoint comes up: the spans given back go out, once each.
    let got = serve_receiver(tokio::net::TcpListener::bind(addr).await.unwrap());
    eventually("the spans arrive after the outage", || {
        let n = got.lock().unwrap().len();
        async move { n >= 3 }
    })
    .await;
    assert_eq!(received(&got), expected(&view));
    assert_eq!(got.lock().unwrap().len(), 3);
    assert_eq!(app.metric("molecule_otlp_spans_exported_total").await, 3.0);
}

on_both_engines!(an_endpoint_down_fails_nothing_and_loses_nothing);
