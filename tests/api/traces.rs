//! Traces on both engines: the `traceparent` a caller sends is carried
//! onto the delegation's inbox row and its server span (a malformed one
//! starts a new trace); a chain of delegations is one tree across
//! workspaces with each hop's moments, the usage reported on it and the
//! spans its agent sent, summed; who may read and add to a trace; the span
//! report's errors; a message's traceparent to a poll inbox and to a push
//! agent; the sweep's prune.

use chrono::Duration as Span;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

pub(crate) const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
pub(crate) const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

impl TestApp {
    /// `POST /workspaces/:to/delegate` as `from` (or the operator), with a
    /// `traceparent` header when given.
    pub(crate) async fn delegate_traced(
        &self,
        from: Option<&Ws>,
        to: &Ws,
        task: &str,
        traceparent: Option<&str>,
    ) -> (StatusCode, Value) {
        let token = from.map_or(self.admin_token.as_str(), |f| f.token.as_str());
        let mut req = self
            .client
            .post(self.url(&format!("/workspaces/{}/delegate", to.id)))
            .bearer_auth(token)
            .json(&json!({"task": task}));
        if let Some(f) = from {
            req = req.header("X-Workspace-ID", &f.id);
        }
        if let Some(p) = traceparent {
            req = req.header("traceparent", p);
        }
        Self::json(req.send().await.unwrap()).await
    }

    /// The newest inbox row of `ws`.
    pub(crate) async fn last_inbox_row(&self, ws: &Ws) -> Value {
        let (status, rows) = self.activity(ws, "type=a2a_receive").await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array().unwrap().last().cloned().expect("a row")
    }

    pub(crate) async fn report_traced_status(&self, ws: &Ws, did: &str, body: Value) {
        let (status, b) = self
            .post(
                &format!("/workspaces/{}/delegations/{did}/status", ws.id),
                &ws.token,
                &body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{b}");
    }

    pub(crate) async fn report_spans(
        &self,
        ws: &Ws,
        traceparent: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(self.url(&format!("/workspaces/{}/traces", ws.id)))
            .bearer_auth(&ws.token)
            .json(body);
        if let Some(p) = traceparent {
            req = req.header("traceparent", p);
        }
        Self::json(req.send().await.unwrap()).await
    }
}

/// A delegate row's traceparent, checked to be a W3C one; (trace, span).
pub(crate) fn hop_of(row: &Value) -> (String, String, String) {
    let p = row["data"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent in {row}"))
        .to_owned();
    let parts: Vec<&str> = p.split('-').collect();
    assert_eq!(parts.len(), 4, "{p}");
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{p}");
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "{p}");
    (p.clone(), parts[1].to_owned(), parts[2].to_owned())
}

/// A model call of 1.5 s that starts now (after the hops it hangs under).
pub(crate) fn llm_span(name: &str, input: i64, output: i64) -> Value {
    let start = chrono::Utc::now();
    let end = start + Span::milliseconds(1500);
    json!({"spans": [{"name": name, "kind": "llm", "start": start.to_rfc3339(),
        "end": end.to_rfc3339(), "input_tokens": input, "output_tokens": output,
        "model": "gpt-4o", "attributes": {"temperature": 0}}]})
}

fn names(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect()
}

async fn a_delegation_chain_is_one_trace_across_workspaces_with_summed_usage(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let b = app.create_poll_workspace("b").await;
    let c = app.create_poll_workspace("c").await;
    let d = app.create_poll_workspace("d").await;

    // The operator's tracer hands A a task: A's row is a child of its span.
    let (status, a_task) = app.delegate_traced(None, &a, "plan", Some(CALLER)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{a_task}");
    let (a_ctx, trace, a_span) = hop_of(&app.last_inbox_row(&a).await);
    assert_eq!(trace, CALLER_TRACE);
    assert_ne!(a_span, "b7ad6b7169203331");
    // A delegates on under its context, B under its own.
    let (_, b_task) = app
        .delegate_traced(Some(&a), &b, "build", Some(&a_ctx))
        .await;
    let (b_ctx, b_trace, b_span) = hop_of(&app.last_inbox_row(&b).await);
    assert_eq!(b_trace, trace);
    let (_, c_task) = app
        .delegate_traced(Some(&b), &c, "test", Some(&b_ctx))
        .await;
    let (c_ctx, c_trace, c_span) = hop_of(&app.last_inbox_row(&c).await);
    assert_eq!(c_trace, trace);
    // The ledger row keeps the context its callee was handed.
    let c_did = c_task["delegation_id"].as_str().unwrap();
    let (status, row) = app
        .get(
            &format!("/workspaces/{}/delegations/{c_did}", c.id),
            &c.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{row}");
    assert_eq!(
        (row["traceparent"].as_str(), row["trace_id"].as_str()),
        (Some(c_ctx.as_str()), Some(trace.as_str()))
    );

    // C's agent reports a model call under its hop; each callee reports
    // its outcome with the usage of its task.
    let (status, body) = app
        .report_spans(&c, Some(&c_ctx), &llm_span("answer", 7, 3))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"recorded": 1, "duplicates": 0, "trace_ids": [trace]})
    );
    for (ws, task, usage) in [
        (
            &c,
            &c_task,
            json!({"input_tokens": 100, "output_tokens": 10, "model": "gpt-4o"}),
        ),
        (
            &b,
            &b_task,
            json!({"input_tokens": 50, "output_tokens": 5, "model": "gpt-4o"}),
        ),
        (
            &a,
            &a_task,
            json!({"input_tokens": 20, "output_tokens": 2, "model": "gpt-4o"}),
        ),
    ] {
        let did = task["delegation_id"].as_str().unwrap();
        app.report_traced_status(ws, did, json!({"status": "dispatched"}))
            .await;
        app.report_traced_status(
            ws,
            did,
            json!({"status": "completed", "result_preview": "ok", "usage": usage}),
        )
        .await;
    }

    let (status, t) = app.get(&format!("/traces/{trace}"), &app.admin_token).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["trace_id"], trace.as_str());
    assert_eq!(t["span_count"], 4);
    assert_eq!(t["truncated"], 0);
    assert_eq!(
        t["workspaces"],
        json!([a.id, "operator", b.id, c.id]),
        "callee, then caller, in order of first appearance"
    );
    assert_eq!(t["total"]["input_tokens"], 177);
    assert_eq!(t["total"]["output_tokens"], 20);
    let roots = t["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{t}");
    let hop_a = &roots[0];
    assert_eq!(
        (hop_a["span_id"].as_str(), hop_a["parent_span_id"].as_str()),
        (Some(a_span.as_str()), Some("b7ad6b7169203331"))
    );
    assert_eq!(
        (hop_a["name"].as_str(), hop_a["kind"].as_str()),
        (Some("delegate"), Some("server"))
    );
    assert_eq!(hop_a["caller_id"], "operator");
    assert_eq!(hop_a["workspace_id"], a.id.as_str());
    assert_eq!(hop_a["status"], "completed");
    assert_eq!(
        names(&hop_a["events"]),
        vec!["queued", "dispatched", "completed"]
    );
    assert!(hop_a["duration_ms"].as_i64().unwrap() >= 0);
    assert_eq!(hop_a["own"]["input_tokens"], 20);
    assert_eq!(hop_a["total"]["input_tokens"], 177);
    let hop_b = &hop_a["children"][0];
    assert_eq!(hop_b["span_id"], b_span.as_str());
    assert_eq!(hop_b["caller_id"], a.id.as_str());
    assert_eq!(hop_b["total"]["input_tokens"], 157);
    let hop_c = &hop_b["children"][0];
    assert_eq!(hop_c["span_id"], c_span.as_str());
    assert_eq!(hop_c["caller_id"], b.id.as_str());
    assert_eq!(
        (
            hop_c["own"]["input_tokens"].as_i64(),
            hop_c["total"]["input_tokens"].as_i64()
        ),
        (Some(100), Some(107))
    );
    let llm = &hop_c["children"][0];
    assert_eq!(
        (llm["name"].as_str(), llm["kind"].as_str()),
        (Some("answer"), Some("llm"))
    );
    assert_eq!(llm["workspace_id"], c.id.as_str());
    assert_eq!(llm["duration_ms"], 1500);
    assert_eq!(llm["attributes"], json!({"temperature": 0}));
    assert_eq!(llm["children"], json!([]));

    // Who may read it: every workspace that took part, never another.
    for ws in [&a, &b, &c] {
        let (status, t) = app.get(&format!("/traces/{trace}"), &ws.token).await;
        assert_eq!(
            (status, t["span_count"].clone()),
            (StatusCode::OK, json!(4))
        );
    }
    let not_found = json!({"error": "trace not found"});
    let (status, body) = app.get(&format!("/traces/{trace}"), &d.token).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found.clone()));
    let unknown = "1".repeat(32);
    let (status, body) = app
        .get(&format!("/traces/{unknown}"), &app.admin_token)
        .await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found));
    let (status, body) = app.get("/traces/ABC", &app.admin_token).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "a trace id is 32 lowercase hex digits, not all zero"})
        )
    );
    // D cannot hang spans on it (nor so become a reader).
    let (status, body) = app
        .report_spans(&d, Some(&c_ctx), &llm_span("sneak", 1, 1))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["error"],
        format!("this workspace took no part in trace {trace}: report under the traceparent it was handed")
    );
    let (_, t) = app.get(&format!("/traces/{trace}"), &app.admin_token).await;
    assert_eq!(t["span_count"], 4);

    // The workspace listings.
    let (status, list) = app
        .get(&format!("/workspaces/{}/traces", b.id), &b.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["trace_id"], trace.as_str());
    assert_eq!(list[0]["spans"], 4);
    assert_eq!(list[0]["total"]["input_tokens"], 177);
    let (_, list) = app
        .get(&format!("/workspaces/{}/traces", d.id), &d.token)
        .await;
    assert_eq!(list, json!([]));
    let (status, body) = app
        .get(&format!("/workspaces/{}/traces?limit=0", b.id), &b.token)
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "`limit` must be between 1 and 100"})
        )
    );
    let (status, _) = app
        .get(&format!("/workspaces/{}/traces", b.id), &d.token)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A malformed traceparent starts a new trace: a root hop.
    app.delegate_traced(None, &d, "fresh", Some("00-XYZ-1-01"))
        .await;
    let (_, fresh_trace, fresh_span) = hop_of(&app.last_inbox_row(&d).await);
    assert_ne!(fresh_trace, trace);
    let (_, t) = app.get(&format!("/traces/{fresh_trace}"), &d.token).await;
    assert_eq!(t["roots"][0]["span_id"], fresh_span.as_str());
    assert_eq!(t["roots"][0]["parent_span_id"], Value::Null);
    assert_eq!(t["roots"][0]["end"], Value::Null, "in flight");
    assert_eq!(t["roots"][0]["duration_ms"], Value::Null);
}
on_both_engines!(a_delegation_chain_is_one_trace_across_workspaces_with_summed_usage);

async fn span_reports_are_checked_and_otlp_is_read(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    let ctx = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (body, header, error) in [
        (
            json!({"nope": 1}),
            Some(ctx),
            "the body must hold `spans` (a list) or OTLP `resourceSpans`",
        ),
        (
            json!({"spans": []}),
            Some(ctx),
            "a report holds 1 to 500 spans",
        ),
        (
            json!({"spans": [{"name": "x", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:01Z"}]}),
            None,
            "spans[0]: no `trace_id` and no `traceparent` header",
        ),
        (
            json!({"spans": [{"name": "", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:01Z"}]}),
            Some(ctx),
            "spans[0]: `name` must be 1 to 200 characters",
        ),
        (
            json!({"spans": [{"name": "x", "start": "2026-01-01T00:00:02Z", "end": "2026-01-01T00:00:01Z"}]}),
            Some(ctx),
            "spans[0]: `end` is before `start`",
        ),
        (
            json!({"spans": [{"name": "x", "start": "yesterday", "end": "2026-01-01T00:00:01Z"}]}),
            Some(ctx),
            "spans[0]: `start` must be an RFC 3339 time",
        ),
        (
            json!({"spans": [{"name": "x", "kind": "server", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:01Z"}]}),
            Some(ctx),
            "spans[0]: `kind` must be tool, llm or agent",
        ),
        (
            json!({"spans": [{"name": "x", "input_tokens": -1, "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:01Z"}]}),
            Some(ctx),
            "spans[0]: `input_tokens` must be a whole number of tokens, 0 or more",
        ),
        (
            json!({"spans": [{"name": "x", "trace_id": "abc", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:01Z"}]}),
            Some(ctx),
            "spans[0]: `trace_id` must be 32 lowercase hex digits",
        ),
    ] {
        let (status, got) = app.report_spans(&a, header, &body).await;
        assert_eq!(
            (status, got),
            (StatusCode::BAD_REQUEST, json!({"error": error})),
            "{body}"
        );
    }
    let (status, _) = app
        .get("/traces/4bf92f3577b34da6a3ce929d0e0e4736", &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");

    // OTLP/JSON: ids, nanosecond times, GenAI token attributes.
    let otlp = json!({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "1111111111111111",
         "parentSpanId": "", "name": "agent turn", "kind": 1,
         "startTimeUnixNano": "1767225600000000000", "endTimeUnixNano": "1767225603000000000",
         "attributes": [{"key": "molecule.kind", "value": {"stringValue": "agent"}}]},
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "2222222222222222",
         "parentSpanId": "1111111111111111", "name": "chat gpt-4o",
         "startTimeUnixNano": "1767225601000000000", "endTimeUnixNano": "1767225602000000000",
         "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "40"}},
                        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 4}},
                        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}]}]}]}]});
    let (status, body) = app.report_spans(&a, None, &otlp).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["recorded"], 2);
    // A retried report is absorbed.
    let (_, body) = app.report_spans(&a, None, &otlp).await;
    assert_eq!(
        (body["recorded"].as_i64(), body["duplicates"].as_i64()),
        (Some(0), Some(2))
    );
    let (_, t) = app
        .get("/traces/4bf92f3577b34da6a3ce929d0e0e4736", &a.token)
        .await;
    let turn = &t["roots"][0];
    assert_eq!(
        (turn["name"].as_str(), turn["kind"].as_str()),
        (Some("agent turn"), Some("agent"))
    );
    assert_eq!(turn["duration_ms"], 3000);
    assert_eq!(turn["start"], "2026-01-01T00:00:00Z");
    let chat = &turn["children"][0];
    assert_eq!(
        (chat["kind"].as_str(), chat["model"].as_str()),
        (Some("llm"), Some("gpt-4o"))
    );
    assert_eq!(
        (
            chat["own"]["input_tokens"].as_i64(),
            chat["own"]["output_tokens"].as_i64()
        ),
        (Some(40), Some(4))
    );
    assert_eq!(t["total"]["input_tokens"], 40);
}
on_both_engines!(span_reports_are_checked_and_otlp_is_read);

/// A push agent that records the `traceparent` header of each request.
async fn spawn_recording_agent() -> (String, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let tx = tx.clone();
                async move {
                    let p = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let _ = tx.send(p);
                    axum::Json(json!({"jsonrpc": "2.0", "id": body["id"], "result": {
                    "kind": "message", "role": "agent", "messageId": "m1",
                    "parts": [{"kind": "text", "text": "done"}]}}))
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}/"), rx)
}

async fn messages_and_push_forwards_carry_the_traceparent(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let poll = app.create_poll_workspace("poll").await;
    let (url, mut seen) = spawn_recording_agent().await;
    let push = app.create_push_workspace("push", &url).await;
    let send = |ws: &Ws, p: Option<&'static str>| {
        let mut req = app
            .client
            .post(app.url(&format!("/workspaces/{}/a2a", ws.id)))
            .bearer_auth(&app.admin_token)
            .json(
                &json!({"method": "message/send", "params": {"message": {"role": "user",
                "parts": [{"kind": "text", "text": "hi"}]}}}),
            );
        if let Some(p) = p {
            req = req.header("traceparent", p);
        }
        req.send()
    };

    // Poll: the inbox row carries a child of the caller's span.
    let r = send(&poll, Some(CALLER)).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (_, trace, span) = hop_of(&app.last_inbox_row(&poll).await);
    assert_eq!(trace, CALLER_TRACE);
    let (_, t) = app.get(&format!("/traces/{trace}"), &poll.token).await;
    let hop = &t["roots"][0];
    assert_eq!(
        (hop["name"].as_str(), hop["status"].as_str()),
        (Some("message"), Some("queued"))
    );
    assert_eq!(hop["span_id"], span.as_str());
    assert_eq!(hop["parent_span_id"], "b7ad6b7169203331");

    // Push: the forwarded request's header is the same hop's context.
    let r = send(&push, Some(CALLER)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let header = seen.recv().await.unwrap().expect("a traceparent header");
    let (_, trace, span) = hop_of(&json!({"data": {"traceparent": header}}));
    assert_eq!(trace, CALLER_TRACE);
    let (_, t) = app.get(&format!("/traces/{trace}"), &app.admin_token).await;
    let forwarded = t["roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["span_id"] == span.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no span {span} in {t}"));
    assert_eq!(forwarded["status"], "forwarded");
    assert_eq!(forwarded["workspace_id"], push.id.as_str());

    // A delegation to the push agent is forwarded with its span's context.
    let (status, created) = app.delegate_traced(None, &push, "work", Some(CALLER)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let header = seen.recv().await.unwrap().expect("a traceparent header");
    let (_, trace, span) = hop_of(&json!({"data": {"traceparent": header}}));
    assert_eq!(trace, CALLER_TRACE);
    crate::helpers::eventually("the forwarded delegation's span completed", || async {
        let (_, t) = app.get(&format!("/traces/{trace}"), &app.admin_token).await;
        t["roots"].as_array().unwrap().iter().any(|n| {
            n["span_id"] == span.as_str()
                && n["status"] == "completed"
                && names(&n["events"]) == vec!["queued", "dispatched", "completed"]
        })
    })
    .await;
}
on_both_engines!(messages_and_push_forwards_carry_the_traceparent);

async fn the_sweep_prunes_spans_past_the_retention(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.create_poll_workspace("a").await;
    app.delegate_traced(None, &a, "old", None).await;
    let (_, trace, _) = hop_of(&app.last_inbox_row(&a).await);
    let out = app
        .sweeper
        .sweep_once(molecule::domain::now())
        .await
        .unwrap();
    assert_eq!(out.count("traces", "removed"), 0);
    let out = app
        .sweeper
        .sweep_once(molecule::domain::now() + Span::days(8))
        .await
        .unwrap();
    assert_eq!(out.count("traces", "removed"), 1);
    let (status, _) = app.get(&format!("/traces/{trace}"), &app.admin_token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
on_both_engines!(the_sweep_prunes_spans_past_the_retention);

/// A push agent serving `/transcript`: answers `body` and records each
/// request's query.
async fn spawn_transcript_agent(
    body: String,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/agent/transcript",
        axum::routing::get(move |uri: axum::http::Uri| {
            let (tx, body) = (tx.clone(), body.clone());
            async move {
                let _ = tx.send(uri.query().map(str::to_owned));
                ([("content-type", "application/json")], body)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}/agent"), rx)
}

async fn the_transcript_is_the_push_agents_own_or_what_a_poll_agent_reported(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    // Push: passed through, with `since` and `limit`.
    let own = r#"{"entries":[{"role":"assistant","text":"did it"}],"cursor":"c2"}"#;
    let (url, mut queries) = spawn_transcript_agent(own.to_owned()).await;
    let push = app.create_push_workspace("push", &url).await;
    let r = app
        .client
        .get(app.url(&format!(
            "/workspaces/{}/transcript?since=c1&limit=5",
            push.id
        )))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), own);
    assert_eq!(
        queries.recv().await.unwrap().as_deref(),
        Some("since=c1&limit=5")
    );

    // Over 1 MiB: 502, nothing passed on.
    let huge = format!("\"{}\"", "x".repeat(1024 * 1024 + 1));
    let (url, _q) = spawn_transcript_agent(huge).await;
    let big = app.create_push_workspace("big", &url).await;
    let (status, body) = app
        .get(
            &format!("/workspaces/{}/transcript", big.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_GATEWAY,
            json!({"error": "the workspace's transcript is over 1 MiB; ask for fewer entries (`limit`)"})
        )
    );
    // Unreachable: 502.
    let gone_port = crate::helpers::free_port();
    let dead = app
        .create_push_workspace("dead", &format!("http://127.0.0.1:{gone_port}/"))
        .await;
    let (status, body) = app
        .get(
            &format!("/workspaces/{}/transcript", dead.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("could not read the workspace's transcript: "),
        "{body}"
    );
    // No URL (a push workspace whose URL was cleared in the store): 503.
    let update = molecule::store::UpdateWorkspace {
        url: Some(None),
        ..Default::default()
    };
    app.store
        .update_workspace(dead.id.parse().unwrap(), &update, molecule::domain::now())
        .await
        .unwrap();
    let (status, body) = app
        .get(
            &format!("/workspaces/{}/transcript", dead.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the workspace has no URL to read its transcript from"})
        )
    );

    // Poll: the `transcript` rows the agent reported, after the cursor.
    let poll = app.create_poll_workspace("poll").await;
    let mut ids = Vec::new();
    for text in ["read the file", "wrote the summary"] {
        let (status, row) = app
            .post(
                &format!("/workspaces/{}/activity", poll.id),
                &poll.token,
                &json!({"activity_type": "transcript", "summary": text}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{row}");
        ids.push(row["id"].as_i64().unwrap());
    }
    app.send_text(&poll.id, "not a transcript entry").await;
    let (status, t) = app
        .get(&format!("/workspaces/{}/transcript", poll.id), &poll.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(
        (t["source"].as_str(), t["next_since"].as_i64()),
        (Some("reported"), Some(ids[1]))
    );
    let summaries: Vec<&str> = t["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"].as_str().unwrap())
        .collect();
    assert_eq!(summaries, vec!["read the file", "wrote the summary"]);
    let (_, t) = app
        .get(
            &format!("/workspaces/{}/transcript?since={}", poll.id, ids[0]),
            &poll.token,
        )
        .await;
    assert_eq!(t["entries"].as_array().unwrap().len(), 1);
    for (query, error) in [
        ("limit=0", "`limit` must be between 1 and 500"),
        (
            "since=c1",
            "`since` must be an activity id (a whole number) for a poll agent",
        ),
    ] {
        let (status, body) = app
            .get(
                &format!("/workspaces/{}/transcript?{query}", poll.id),
                &poll.token,
            )
            .await;
        assert_eq!(
            (status, body),
            (StatusCode::BAD_REQUEST, json!({"error": error})),
            "{query}"
        );
    }
}
on_both_engines!(the_transcript_is_the_push_agents_own_or_what_a_poll_agent_reported);
