//! A2A on the wire: Agent Cards (per workspace, the server's, the catalog,
//! `update-card`), and the JSON-RPC methods of `/workspaces/:id/a2a` in
//! both versions' names — a task to a poll workspace is a ledger row and
//! an inbox row, visible to its caller and callee only — with A2A's errors.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    async fn ws_under(&self, name: &str, parent: Option<&Ws>) -> Ws {
        let mut body = json!({"name": name, "delivery_mode": "poll"});
        if let Some(p) = parent {
            body["parent_id"] = json!(p.id);
        }
        let (status, body) = self.create_workspace(body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Ws {
            id: body["id"].as_str().unwrap().to_owned(),
            token: body["auth_token"].as_str().unwrap().to_owned(),
        }
    }

    /// One JSON-RPC call to `to`'s A2A endpoint with `token`.
    async fn rpc(
        &self,
        to: &Ws,
        token: &str,
        version: Option<&str>,
        method: &str,
        params: Value,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(self.url(&format!("/workspaces/{}/a2a", to.id)))
            .bearer_auth(token)
            .json(&json!({"jsonrpc": "2.0", "id": "r1", "method": method, "params": params}));
        if let Some(v) = version {
            req = req.header("A2A-Version", v);
        }
        Self::json(req.send().await.unwrap()).await
    }

    /// The result of a call that must succeed.
    async fn rpc_ok(&self, to: &Ws, token: &str, method: &str, params: Value) -> Value {
        let (status, body) = self.rpc(to, token, Some("1.0"), method, params).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["id"], "r1");
        assert!(body.get("error").is_none(), "{method}: {body}");
        body["result"].clone()
    }

    /// The error code of a call that must fail the JSON-RPC way.
    async fn rpc_err(&self, to: &Ws, token: &str, method: &str, params: Value) -> i64 {
        let (status, body) = self.rpc(to, token, Some("1.0"), method, params).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("result").is_none(), "{body}");
        body["error"]["code"].as_i64().unwrap()
    }
}

fn text_message(text: &str) -> Value {
    json!({"messageId": uuid::Uuid::new_v4().to_string(), "role": "ROLE_USER", "parts": [{"text": text}]})
}

fn send_params(text: &str) -> Value {
    json!({"message": text_message(text), "configuration": {"returnImmediately": true}})
}

/// Cards: the workspace's (both paths, same document), the registered
/// card's name and skills after update-card, the communication rule on
/// who may read them, the catalog of what the caller may reach, and the
/// server's public card.
async fn agent_cards_are_served_by_reach(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let a = app.ws_under("alpha", None).await;
    let a1 = app.ws_under("alpha-kid", Some(&a)).await;
    let b = app.ws_under("beta", None).await;
    let b1 = app.ws_under("beta-kid", Some(&b)).await;

    let (status, card) = app
        .get(
            &format!("/workspaces/{}/.well-known/agent-card.json", a1.id),
            &a.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{card}");
    let endpoint = app.url(&format!("/workspaces/{}/a2a", a1.id));
    assert_eq!(card["name"], "alpha-kid");
    assert_eq!(
        card["supportedInterfaces"],
        json!([{"url": endpoint, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
               {"url": endpoint, "protocolBinding": "JSONRPC", "protocolVersion": "0.3"}])
    );
    assert_eq!(
        card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"],
        "Bearer"
    );
    assert_eq!(
        card["securityRequirements"],
        json!([{"schemes": {"bearer": {"list": []}}}])
    );
    assert_eq!(card["defaultInputModes"], json!(["text/plain"]));
    assert_eq!(card["skills"], json!([]));
    let (status, same) = app
        .get(
            &format!("/workspaces/{}/agent-card", a1.id),
            &app.admin_token,
        )
        .await;
    assert_eq!((status, &same), (StatusCode::OK, &card));

    // update-card: by the workspace itself; shows in the served card.
    let (status, updated) = app
        .post("/registry/update-card", &a1.token, &json!({"workspace_id": a1.id,
            "agent_card": {"name": "Summarizer", "description": "sums up", "skills": [{"id": "sum", "name": "Summarize"}]}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Summarizer");
    assert_eq!(
        updated["skills"],
        json!([{"id": "sum", "name": "Summarize", "description": "Summarize", "tags": []}])
    );
    let (_, card) = app
        .get(&format!("/workspaces/{}/agent-card", a1.id), &a.token)
        .await;
    assert_eq!(card, updated);
    // Refusals change nothing.
    for (token, body, want) in [
        (
            &a1.token,
            json!({"workspace_id": a1.id, "agent_card": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            &b.token,
            json!({"workspace_id": a1.id, "agent_card": {"name": "evil"}}),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let (status, answer) = app.post("/registry/update-card", token, &body).await;
        assert_eq!(status, want, "{answer}");
    }
    let (_, card) = app
        .get(&format!("/workspaces/{}/agent-card", a1.id), &a.token)
        .await;
    assert_eq!(card["name"], "Summarizer");

    // Out of reach (a cousin): 403; unknown: 404; no token: 401.
    let (status, _) = app
        .get(&format!("/workspaces/{}/agent-card", b1.id), &a1.token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .get(
            &format!("/workspaces/{}/agent-card", uuid::Uuid::new_v4()),
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let r = app
        .client
        .get(app.url(&format!("/workspaces/{}/agent-card", a.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The catalog: what each caller may reach.
    let names = |v: Value| -> Vec<String> {
        v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, all) = app.get("/agents", &app.admin_token).await;
    assert_eq!(names(all), ["Summarizer", "alpha", "beta", "beta-kid"]);
    let (_, mine) = app.get("/agents", &a1.token).await;
    assert_eq!(names(mine), ["Summarizer", "alpha"]);

    // The server's card needs no token.
    let r = app
        .client
        .get(app.url("/.well-known/agent-card.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let server: Value = r.json().await.unwrap();
    assert_eq!(server["name"], "molecule");
    assert_eq!(server["supportedInterfaces"], json!([]));
}
on_both_engines!(agent_cards_are_served_by_reach);

/// SendMessage to a poll workspace: a submitted task that is a ledger row
/// (task id = delegation id) and a `delegate` inbox row; GetTask by caller
/// and callee, not by anyone else; the callee's report completes it with
/// the answer as an artifact; a repeat of the messageId is the same task.
async fn send_message_makes_a_task_in_the_ledger(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let boss = app.ws_under("boss", None).await;
    let kid = app.ws_under("kid", Some(&boss)).await;
    let params = send_params("add 2 and 2");
    let sent = app
        .rpc_ok(&kid, &boss.token, "SendMessage", params.clone())
        .await;
    let task = &sent["task"];
    let tid = task["id"].as_str().unwrap().to_owned();
    assert_eq!(task["status"]["state"], "TASK_STATE_SUBMITTED");
    assert_eq!(task["contextId"], tid);
    assert_eq!(
        task["history"][0]["parts"],
        json!([{"text": "add 2 and 2"}])
    );
    assert_eq!(
        task["history"][0]["messageId"],
        params["message"]["messageId"]
    );
    // The ledger row and the callee's inbox row.
    let (status, row) = app
        .get(
            &format!("/workspaces/{}/delegations/{tid}", kid.id),
            &kid.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            row["caller_id"].as_str(),
            row["status"].as_str(),
            row["task"].as_str()
        ),
        (Some(boss.id.as_str()), Some("queued"), Some("add 2 and 2"))
    );
    let (_, inbox) = app.activity(&kid, "type=a2a_receive").await;
    assert_eq!(inbox.as_array().unwrap().len(), 1);
    assert_eq!(inbox[0]["method"], "delegate");
    assert_eq!(inbox[0]["request_body"]["delegation_id"], tid);
    // The same messageId again: the same task, nothing new.
    let again = app.rpc_ok(&kid, &boss.token, "SendMessage", params).await;
    assert_eq!(again["task"]["id"], tid);
    let (_, inbox) = app.activity(&kid, "type=a2a_receive").await;
    assert_eq!(inbox.as_array().unwrap().len(), 1);

    // Visible to caller and callee; not to the operator, who did not send it.
    for token in [&boss.token, &kid.token] {
        let got = app.rpc_ok(&kid, token, "GetTask", json!({"id": tid})).await;
        assert_eq!(got["id"], tid);
    }
    assert_eq!(
        app.rpc_err(&kid, &app.admin_token, "GetTask", json!({"id": tid}))
            .await,
        -32001
    );

    // The agent answers (as `molecule connect` does): completed, with the answer.
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/delegations/{tid}/status", kid.id),
            &kid.token,
            &json!({"status": "completed", "result_preview": "4"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let done = app
        .rpc_ok(&kid, &boss.token, "GetTask", json!({"id": tid}))
        .await;
    assert_eq!(done["status"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(done["artifacts"][0]["parts"], json!([{"text": "4"}]));
    // 0.3 names answer in 0.3 shapes.
    let (_, old) = app
        .rpc(
            &kid,
            &boss.token,
            Some("0.3"),
            "tasks/get",
            json!({"id": tid}),
        )
        .await;
    assert_eq!(old["result"]["kind"], "task");
    assert_eq!(old["result"]["status"]["state"], "completed");
    assert_eq!(
        old["result"]["artifacts"][0]["parts"],
        json!([{"kind": "text", "text": "4"}])
    );
}
on_both_engines!(send_message_makes_a_task_in_the_ledger);

/// A blocking SendMessage (the default) answers once the agent has
/// finished; message/send with `A2A-Version: 0.3` answers a 0.3 task.
async fn blocking_send_waits_for_the_answer(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let boss = app.ws_under("boss", None).await;
    let kid = app.ws_under("kid", Some(&boss)).await;
    let sending = {
        let (app_url, token) = (
            app.url(&format!("/workspaces/{}/a2a", kid.id)),
            boss.token.clone(),
        );
        let client = app.client.clone();
        tokio::spawn(async move {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": text_message("ping")}});
            client
                .post(app_url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The agent's side: wait for the row (a long poll), then answer.
    let (_, rows) = app.activity(&kid, "type=a2a_receive&wait=20").await;
    let tid = rows[0]["request_body"]["delegation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .post(
            &format!("/workspaces/{}/delegations/{tid}/status", kid.id),
            &kid.token,
            &json!({"status": "completed", "result_preview": "pong"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer = sending.await.unwrap();
    assert_eq!(answer["result"]["task"]["id"], tid);
    assert_eq!(
        answer["result"]["task"]["status"]["state"],
        "TASK_STATE_COMPLETED"
    );
    assert_eq!(
        answer["result"]["task"]["artifacts"][0]["parts"][0]["text"],
        "pong"
    );

    let (status, old) = app
        .rpc(&kid, &boss.token, Some("0.3"), "message/send", json!({"message": {"kind": "message", "role": "user",
            "messageId": "m-03", "contextId": "ctx-1", "parts": [{"kind": "text", "text": "hi"}]}, "configuration": {"blocking": false}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{old}");
    assert_eq!(old["result"]["kind"], "task");
    assert_eq!(old["result"]["contextId"], "ctx-1");
    assert_eq!(old["result"]["status"]["state"], "submitted");
}
on_both_engines!(blocking_send_waits_for_the_answer);

/// ListTasks: newest first, the caller's own (all for the agent itself),
/// filtered by state and context, paged by token; CancelTask moves a task
/// in flight to canceled (the ledger row failed, the agent told through
/// its inbox) and refuses an ended one.
async fn list_and_cancel_tasks(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let boss = app.ws_under("boss", None).await;
    let kid = app.ws_under("kid", Some(&boss)).await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let sent = app
            .rpc_ok(&kid, &boss.token, "SendMessage", send_params(text))
            .await;
        ids.push(sent["task"]["id"].as_str().unwrap().to_owned());
    }
    let by_operator = app
        .rpc_ok(&kid, &app.admin_token, "SendMessage", send_params("op"))
        .await;
    let op_task = by_operator["task"]["id"].as_str().unwrap().to_owned();

    let listed = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let page1 = app
        .rpc_ok(&kid, &boss.token, "ListTasks", json!({"pageSize": 2}))
        .await;
    assert_eq!(listed(&page1), [ids[2].clone(), ids[1].clone()]);
    assert_eq!(page1["totalSize"], 3);
    assert_eq!(page1["nextPageToken"], ids[1]);
    let page2 = app
        .rpc_ok(
            &kid,
            &boss.token,
            "ListTasks",
            json!({"pageSize": 2, "pageToken": ids[1]}),
        )
        .await;
    assert_eq!(listed(&page2), [ids[0].clone()]);
    assert_eq!(page2["nextPageToken"], "");
    let everything = app.rpc_ok(&kid, &kid.token, "ListTasks", json!({})).await;
    assert_eq!(
        listed(&everything),
        [
            op_task.clone(),
            ids[2].clone(),
            ids[1].clone(),
            ids[0].clone()
        ]
    );

    // Cancel one in flight.
    let canceled = app
        .rpc_ok(&kid, &boss.token, "CancelTask", json!({"id": ids[0]}))
        .await;
    assert_eq!(canceled["status"]["state"], "TASK_STATE_CANCELED");
    let (_, row) = app
        .get(
            &format!("/workspaces/{}/delegations/{}", kid.id, ids[0]),
            &kid.token,
        )
        .await;
    assert_eq!(
        (row["status"].as_str(), row["error_detail"].as_str()),
        (Some("failed"), Some("canceled by the caller"))
    );
    let (_, inbox) = app.activity(&kid, "type=a2a_receive").await;
    let notice = inbox.as_array().unwrap().last().unwrap().clone();
    assert_eq!(notice["method"], "task_canceled");
    assert_eq!(notice["data"]["task_id"], ids[0]);
    // The caller's inbox has the outcome as for any delegation.
    let (_, results) = app.activity(&boss, "type=a2a_receive").await;
    assert_eq!(results[0]["method"], "delegation_result");
    // Again: not cancelable; a completed one neither.
    assert_eq!(
        app.rpc_err(&kid, &boss.token, "CancelTask", json!({"id": ids[0]}))
            .await,
        -32002
    );
    app.post(
        &format!("/workspaces/{}/delegations/{}/status", kid.id, ids[1]),
        &kid.token,
        &json!({"status": "completed", "result_preview": "2"}),
    )
    .await;
    assert_eq!(
        app.rpc_err(&kid, &boss.token, "CancelTask", json!({"id": ids[1]}))
            .await,
        -32002
    );
    // Someone else's task is not found, for cancel as for get.
    assert_eq!(
        app.rpc_err(&kid, &boss.token, "CancelTask", json!({"id": op_task}))
            .await,
        -32001
    );

    // Filters by state.
    let canceled = app
        .rpc_ok(
            &kid,
            &boss.token,
            "ListTasks",
            json!({"status": "TASK_STATE_CANCELED"}),
        )
        .await;
    assert_eq!(listed(&canceled), [ids[0].clone()]);
    let failed = app
        .rpc_ok(
            &kid,
            &boss.token,
            "ListTasks",
            json!({"status": "TASK_STATE_FAILED"}),
        )
        .await;
    assert_eq!(listed(&failed), Vec::<String>::new());
    let submitted = app
        .rpc_ok(
            &kid,
            &boss.token,
            "ListTasks",
            json!({"status": "TASK_STATE_SUBMITTED"}),
        )
        .await;
    assert_eq!(listed(&submitted), [ids[2].clone()]);
    let ctx = app
        .rpc_ok(&kid, &boss.token, "ListTasks", json!({"contextId": ids[2]}))
        .await;
    assert_eq!(listed(&ctx), [ids[2].clone()]);
}
on_both_engines!(list_and_cancel_tasks);

/// A2A's errors with their JSON-RPC codes, and nothing written by any of
/// them; Molecule's bare message/send keeps its `{queued}` answer.
async fn a2a_errors_have_their_codes(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let boss = app.ws_under("boss", None).await;
    let kid = app.ws_under("kid", Some(&boss)).await;
    let t = &boss.token;
    assert_eq!(
        app.rpc_err(
            &kid,
            t,
            "GetTask",
            json!({"id": uuid::Uuid::new_v4().to_string()})
        )
        .await,
        -32001
    );
    assert_eq!(
        app.rpc_err(&kid, t, "GetTask", json!({"id": "nope"})).await,
        -32001
    );
    assert_eq!(app.rpc_err(&kid, t, "GetTask", json!({})).await, -32602);
    assert_eq!(
        app.rpc_err(&kid, t, "SendMessage", json!({"message": {"parts": []}}))
            .await,
        -32602
    );
    let unknown_task =
        json!({"message": {"taskId": uuid::Uuid::new_v4().to_string(), "parts": [{"text": "x"}]}});
    assert_eq!(
        app.rpc_err(&kid, t, "SendMessage", unknown_task).await,
        -32001
    );
    assert_eq!(
        app.rpc_err(&kid, &kid.token, "SendMessage", send_params("self"))
            .await,
        -32602
    );
    assert_eq!(
        app.rpc_err(
            &kid,
            t,
            "SubscribeToTask",
            json!({"id": uuid::Uuid::new_v4().to_string()})
        )
        .await,
        -32001
    );
    assert_eq!(
        app.rpc_err(&kid, t, "CreateTaskPushNotificationConfig", json!({}))
            .await,
        -32602
    );
    assert_eq!(
        app.rpc_err(
            &kid,
            t,
            "ListTasks",
            json!({"status": "TASK_STATE_REJECTED"})
        )
        .await,
        -32602
    );
    assert_eq!(
        app.rpc_err(&kid, t, "ListTasks", json!({"pageSize": 1000}))
            .await,
        -32602
    );
    assert_eq!(app.rpc_err(&kid, t, "Nope", json!({})).await, -32601);
    let (_, body) = app
        .rpc(&kid, t, Some("2.0"), "GetTask", json!({"id": "x"}))
        .await;
    assert_eq!(body["error"]["code"], -32009);
    let (status, body) = raw_rpc(
        &app,
        &kid,
        t,
        json!({"jsonrpc": "1.0", "id": 5, "method": "GetTask"}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"], &body["id"]),
        (StatusCode::OK, &json!(-32600), &json!(5))
    );
    // The extended card is the workspace's card.
    let card = app.rpc_ok(&kid, t, "GetExtendedAgentCard", json!({})).await;
    assert_eq!(card["name"], "kid");
    // Nothing was written by any refusal.
    let (_, inbox) = app.activity(&kid, "").await;
    assert_eq!(inbox, json!([]));
    // The canvas's bare message/send is unchanged.
    let (status, body) = app.send_text(&kid.id, "hi").await;
    assert_eq!(
        (status, body["queued"].as_bool()),
        (StatusCode::ACCEPTED, Some(true))
    );
}
on_both_engines!(a2a_errors_have_their_codes);

/// A body sent as it is, with `A2A-Version: 1.0`.
async fn raw_rpc(app: &TestApp, to: &Ws, token: &str, body: Value) -> (StatusCode, Value) {
    TestApp::json(
        app.client
            .post(app.url(&format!("/workspaces/{}/a2a", to.id)))
            .bearer_auth(token)
            .header("A2A-Version", "1.0")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// SendMessage to a push workspace is forwarded as it is and its answer
/// passed back; the server keeps no task. An unreachable one is 502.
async fn send_message_to_a_push_workspace_is_forwarded(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let agent = crate::uploads::spawn_push_agent().await;
    let push = app.create_push_workspace("p", &format!("{agent}/")).await;
    let (status, body) = app
        .rpc(
            &push,
            &app.admin_token,
            Some("1.0"),
            "SendMessage",
            send_params("hi"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "r1");
    assert_eq!(body["result"]["parts"][0]["text"], "echo: hi");
    let (_, ledger) = app.get("/admin/delegations", &app.admin_token).await;
    assert_eq!(ledger, json!([]));
    let dead = app
        .create_push_workspace("dead", "http://127.0.0.1:9")
        .await;
    let (status, _) = app
        .rpc(
            &dead,
            &app.admin_token,
            Some("1.0"),
            "SendMessage",
            send_params("hi"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}
on_both_engines!(send_message_to_a_push_workspace_is_forwarded);
