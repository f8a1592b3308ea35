//! Schedules: every route and its errors, and the scheduler driven with
//! `tick(now)` (the server's own loop is off in tests): a timed fire
//! reaches the inbox once, the overlap policies, the catch-up window, a
//! manual run, and racing schedulers on one database.

use chrono::{DateTime, Duration as Span, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    async fn patch_as(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self.client.patch(self.url(path)).bearer_auth(token);
        Self::json(resp.json(body).send().await.unwrap()).await
    }

    async fn delete_schedule_as(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let resp = self.client.delete(self.url(path)).bearer_auth(token);
        Self::json(resp.send().await.unwrap()).await
    }

    async fn create_schedule(&self, ws: &Ws, body: Value) -> Value {
        let (status, s) = self
            .post(
                &format!("/workspaces/{}/schedules", ws.id),
                &ws.token,
                &body,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body} → {s}");
        s
    }

    async fn schedules(&self, ws: &Ws) -> Vec<Value> {
        let (status, rows) = self
            .get(&format!("/workspaces/{}/schedules", ws.id), &ws.token)
            .await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array().unwrap().clone()
    }

    async fn history(&self, ws: &Ws, sid: &str) -> Vec<Value> {
        let (status, rows) = self
            .get(
                &format!("/workspaces/{}/schedules/{sid}/history", ws.id),
                &ws.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array().unwrap().clone()
    }

    /// One scheduler tick at `now`: (delivered, skipped, missed).
    async fn tick(&self, now: DateTime<Utc>) -> (u64, u64, u64) {
        let c = self.sweeper.scheduler().tick(now).await.unwrap();
        let get = |n| c.get(n).unwrap();
        (get("delivered"), get("skipped"), get("missed"))
    }

    async fn delegate_rows(&self, ws: &Ws) -> Vec<Value> {
        let (status, rows) = self.activity(ws, "type=a2a_receive&limit=500").await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == "delegate")
            .cloned()
            .collect()
    }

    async fn report_status(&self, ws: &Ws, did: &str, status: &str) {
        let (code, body) = self
            .post(
                &format!("/workspaces/{}/delegations/{did}/status", ws.id),
                &ws.token,
                &json!({"status": status}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
}

fn ts(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

async fn routes_create_list_patch_delete_and_their_errors(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let other = app.create_poll_workspace("other").await;
    let base = format!("/workspaces/{}/schedules", ws.id);
    let before = molecule::domain::now();
    let s = app
        .create_schedule(
            &ws,
            json!({"name": "morning", "cron_expr": "0 9 * * *", "prompt": "plan the day"}),
        )
        .await;
    let next = ts(&s["next_run_at"]);
    assert!(next > before && next <= before + Span::days(1), "{s}");
    assert_eq!(next.format("%H:%M:%S").to_string(), "09:00:00");
    assert_eq!(
        (
            &s["workspace_id"],
            &s["timezone"],
            &s["enabled"],
            &s["overlap"],
            &s["catch_up"],
            &s["run_count"],
            &s["last_run_at"],
            &s["last_status"],
            &s["last_error"]
        ),
        (
            &json!(ws.id),
            &json!("UTC"),
            &json!(true),
            &json!("skip"),
            &json!(3600),
            &json!(0),
            &Value::Null,
            &Value::Null,
            &Value::Null
        )
    );
    // The operator may create too; every optional field taken.
    let (status, s2) = app
        .post(
            &base,
            &app.admin_token,
            &json!({"name": "ny", "cron_expr": "@hourly", "timezone": "America/New_York",
                "prompt": "p", "enabled": false, "overlap": "allow_all", "catch_up": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s2}");
    assert_eq!(
        (
            &s2["enabled"],
            &s2["overlap"],
            &s2["catch_up"],
            &s2["timezone"]
        ),
        (
            &json!(false),
            &json!("allow_all"),
            &json!(60),
            &json!("America/New_York")
        )
    );

    // Bad input: a sentence each, nothing written.
    let bad = [
        (
            json!({"name": "x", "prompt": "p"}),
            "cron_expr and prompt are required",
        ),
        (
            json!({"name": "x", "cron_expr": "@daily"}),
            "cron_expr and prompt are required",
        ),
        (
            json!({"name": "x", "cron_expr": "", "prompt": "p"}),
            "cron_expr and prompt are required",
        ),
        (
            json!({"name": "x", "cron_expr": "@daily", "prompt": "  "}),
            "cron_expr and prompt are required",
        ),
        (
            json!({"name": "x", "cron_expr": "99 * * * *", "prompt": "p"}),
            "is not a valid cron expression",
        ),
        (
            json!({"name": "x", "cron_expr": "0 0 9 * * *", "prompt": "p"}),
            "is not a valid cron expression",
        ),
        (
            json!({"name": "x", "cron_expr": "@daily", "timezone": "Mars/Base", "prompt": "p"}),
            "`Mars/Base` is not a known IANA time zone",
        ),
        (
            json!({"name": "x", "cron_expr": "@daily", "prompt": "p", "overlap": "queue"}),
            "`queue` is not a valid overlap policy",
        ),
        (
            json!({"name": "x", "cron_expr": "@daily", "prompt": "p", "catch_up": -1}),
            "`catch_up` must be between 0 and 604800 seconds",
        ),
        (
            json!({"name": "", "cron_expr": "@daily", "prompt": "p"}),
            "`name` must be 1 to 200 characters",
        ),
    ];
    for (body, sentence) in bad {
        let (status, answer) = app.post(&base, &ws.token, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(sentence), "{body} → {error}");
    }
    // The same name twice is a conflict.
    let (status, answer) = app
        .post(
            &base,
            &ws.token,
            &json!({"name": "morning", "cron_expr": "@daily", "prompt": "p"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(
        answer["error"],
        "this workspace already has a schedule named `morning`"
    );
    // Another workspace's token may not list, create or touch them.
    let (status, _) = app.get(&base, &other.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            &base,
            &other.token,
            &json!({"cron_expr": "@daily", "prompt": "p"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let sid = s["id"].as_str().unwrap();
    let one = format!("{base}/{sid}");
    let (status, _) = app
        .patch_as(&one, &other.token, &json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.delete_schedule_as(&one, &other.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let names: Vec<_> = app
        .schedules(&ws)
        .await
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("morning"), json!("ny")]);
    let (status, listed) = app.get(&base, &app.admin_token).await;
    assert_eq!(
        (status, listed.as_array().unwrap().len()),
        (StatusCode::OK, 2)
    );

    // PATCH: a new expression moves the next run; a taken name conflicts.
    let (status, patched) = app
        .patch_as(
            &one,
            &ws.token,
            &json!({"cron_expr": "30 7 * * *", "name": "early"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (&patched["name"], &patched["cron_expr"], &patched["prompt"]),
        (
            &json!("early"),
            &json!("30 7 * * *"),
            &json!("plan the day")
        )
    );
    assert_eq!(
        ts(&patched["next_run_at"]).format("%H:%M").to_string(),
        "07:30"
    );
    let (status, answer) = app.patch_as(&one, &ws.token, &json!({"name": "ny"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, answer) = app
        .patch_as(&one, &ws.token, &json!({"timezone": "Nowhere"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let unknown = format!("{base}/{}", uuid::Uuid::new_v4());
    let (status, _) = app
        .patch_as(&unknown, &ws.token, &json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .patch_as(&format!("{base}/nope"), &ws.token, &json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let after: Vec<_> = app.schedules(&ws).await;
    assert_eq!(
        after[0]["name"], "early",
        "the refused edits changed nothing"
    );
    assert_eq!(after[0]["timezone"], "UTC");

    // DELETE answers JSON; then the schedule is gone.
    let (status, answer) = app.delete_schedule_as(&one, &ws.token).await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"status": "deleted", "id": sid}))
    );
    let (status, _) = app.delete_schedule_as(&one, &ws.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.schedules(&ws).await.len(), 1);
}
on_both_engines!(routes_create_list_patch_delete_and_their_errors);

async fn a_timed_fire_reaches_the_inbox_exactly_once_and_wakes_its_long_poll(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let s = app
        .create_schedule(
            &ws,
            json!({"name": "hourly", "cron_expr": "0 * * * *", "prompt": "check the queue"}),
        )
        .await;
    let sid = s["id"].as_str().unwrap();
    let due = ts(&s["next_run_at"]);
    // Not yet due: nothing.
    assert_eq!(app.tick(due - Span::seconds(1)).await, (0, 0, 0));
    assert!(app.delegate_rows(&ws).await.is_empty());

    let poll = {
        let url = app.url(&format!(
            "/workspaces/{}/activity?type=a2a_receive&wait=20",
            ws.id
        ));
        let (client, token) = (app.client.clone(), ws.token.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let rows: Value = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (rows, started.elapsed())
        })
    };
    assert_eq!(app.tick(due + Span::milliseconds(400)).await, (1, 0, 0));
    // The same instant again, and again later in the hour: nothing more.
    assert_eq!(app.tick(due + Span::seconds(1)).await, (0, 0, 0));
    assert_eq!(app.tick(due + Span::minutes(59)).await, (0, 0, 0));
    let (rows, waited) = poll.await.unwrap();
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");

    let inbox = app.delegate_rows(&ws).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let row = &inbox[0];
    let did = row["data"]["delegation_id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            &row["activity_type"],
            &row["source_id"],
            &row["target_id"],
            &row["data"]["task"]
        ),
        (
            &json!("a2a_receive"),
            &json!(format!("schedule:{sid}")),
            &json!(ws.id),
            &json!("check the queue")
        )
    );
    // The ledger names the schedule as the caller.
    let (status, ledger) = app
        .get("/admin/delegations?limit=500", &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK, "{ledger}");
    assert_eq!(ledger.as_array().unwrap().len(), 1, "{ledger}");
    let d = &ledger[0];
    assert_eq!(d["id"], did.as_str());
    assert_eq!(
        (&d["caller_id"], &d["callee_id"], &d["status"]),
        (
            &json!(format!("schedule:{sid}")),
            &json!(ws.id),
            &json!("queued")
        )
    );

    let history = app.history(&ws, sid).await;
    assert_eq!(history.len(), 1);
    assert_eq!(
        (
            &history[0]["due_at"],
            &history[0]["status"],
            &history[0]["delegation_id"],
            &history[0]["detail"]
        ),
        (&json!(due), &json!("delivered"), &json!(did), &Value::Null)
    );
    assert_eq!(ts(&history[0]["fired_at"]), due + Span::milliseconds(400));
    let listed = &app.schedules(&ws).await[0];
    assert_eq!(
        (
            &listed["run_count"],
            &listed["last_status"],
            ts(&listed["next_run_at"])
        ),
        (&json!(1), &json!("delivered"), due + Span::hours(1))
    );
    assert_eq!(ts(&listed["last_run_at"]), due + Span::milliseconds(400));
    // The agent's answer completes the ledger row: the fire reads answered.
    app.report_status(&ws, &did, "completed").await;
    assert_eq!(app.history(&ws, sid).await[0]["status"], "answered");
    let fires = app
        .metric("molecule_schedule_fires_total{status=\"delivered\"}")
        .await;
    assert_eq!(fires, 1.0);
    assert_eq!(
        app.metric("molecule_schedule_fire_lag_seconds_count").await,
        1.0
    );
}
on_both_engines!(a_timed_fire_reaches_the_inbox_exactly_once_and_wakes_its_long_poll);

/// A schedule every 15 minutes with `overlap`; its first due instant.
async fn quarterly(app: &TestApp, ws: &Ws, name: &str, overlap: &str) -> (String, DateTime<Utc>) {
    let s = app
        .create_schedule(
            ws,
            json!({"name": name, "cron_expr": "*/15 * * * *", "prompt": name, "overlap": overlap}),
        )
        .await;
    (s["id"].as_str().unwrap().to_owned(), ts(&s["next_run_at"]))
}

async fn overlap_policies_skip_buffer_one_and_allow_all(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let q = Span::minutes(15);
    // skip: a fire while the previous one is in flight is skipped, and says why.
    let ws = app.create_poll_workspace("skip").await;
    let (sid, t0) = quarterly(&app, &ws, "skip", "skip").await;
    assert_eq!(app.tick(t0).await, (1, 0, 0));
    assert_eq!(app.tick(t0 + q).await, (0, 1, 0));
    let did = app.history(&ws, &sid).await[1]["delegation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.report_status(&ws, &did, "in_progress").await;
    assert_eq!(
        app.tick(t0 + q * 2).await,
        (0, 1, 0),
        "in progress is in flight"
    );
    app.report_status(&ws, &did, "completed").await;
    assert_eq!(
        app.tick(t0 + q * 3).await,
        (1, 0, 0),
        "the previous one answered"
    );
    let h = app.history(&ws, &sid).await;
    let statuses: Vec<_> = h.iter().map(|f| f["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["delivered", "skipped", "skipped", "answered"]);
    assert_eq!(
        h[1]["detail"],
        format!(
            "the fire due at {} is still in flight (overlap policy skip)",
            t0.to_rfc3339()
        )
    );
    assert!(h[1].get("delegation_id").is_none(), "{}", h[1]);
    assert_eq!(app.delegate_rows(&ws).await.len(), 2);
    let s = &app.schedules(&ws).await[0];
    assert_eq!(
        (&s["run_count"], &s["last_status"]),
        (&json!(2), &json!("delivered"))
    );

    // buffer_one: one more may wait (queued) behind the one running.
    let ws = app.create_poll_workspace("buffer").await;
    let (sid, t0) = quarterly(&app, &ws, "buffer", "buffer_one").await;
    assert_eq!(app.tick(t0).await, (1, 0, 0));
    assert_eq!(
        app.tick(t0 + q).await,
        (0, 1, 0),
        "the first is still queued"
    );
    let first = app.history(&ws, &sid).await[1]["delegation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.report_status(&ws, &first, "in_progress").await;
    assert_eq!(
        app.tick(t0 + q * 2).await,
        (1, 0, 0),
        "buffered behind the running one"
    );
    assert_eq!(
        app.tick(t0 + q * 3).await,
        (0, 1, 0),
        "one is buffered already"
    );
    let h = app.history(&ws, &sid).await;
    assert!(
        h[0]["detail"]
            .as_str()
            .unwrap()
            .ends_with("is still waiting to be picked up (overlap policy buffer_one)"),
        "{}",
        h[0]
    );

    // allow_all: every fire is delivered.
    let ws = app.create_poll_workspace("all").await;
    let (_, t0) = quarterly(&app, &ws, "all", "allow_all").await;
    for k in 0..3 {
        assert_eq!(app.tick(t0 + q * k).await, (1, 0, 0));
    }
    assert_eq!(app.delegate_rows(&ws).await.len(), 3);
    assert_eq!(
        app.metric("molecule_schedule_fires_total{status=\"skipped\"}")
            .await,
        4.0
    );
}
on_both_engines!(overlap_policies_skip_buffer_one_and_allow_all);

async fn catch_up_makes_fires_in_the_window_once_each_and_records_older_ones_missed(
    engine: Engine,
) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let s = app
        .create_schedule(
            &ws,
            json!({"name": "q", "cron_expr": "*/15 * * * *", "prompt": "p", "overlap": "allow_all", "catch_up": 1800}),
        )
        .await;
    let sid = s["id"].as_str().unwrap();
    let t0 = ts(&s["next_run_at"]);
    // The scheduler was down for an hour: t0 and t0+15 are older than the
    // 30-minute window; t0+30, t0+45 and t0+60 are made, once each, in order.
    let now = t0 + Span::minutes(60);
    assert_eq!(app.tick(now).await, (3, 0, 2));
    assert_eq!(
        app.tick(now).await,
        (0, 0, 0),
        "never a burst of duplicates"
    );
    let mut h = app.history(&ws, sid).await;
    h.sort_by_key(|f| ts(&f["due_at"]));
    let seen: Vec<_> = h
        .iter()
        .map(|f| {
            (
                (ts(&f["due_at"]) - t0).num_minutes(),
                f["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, "missed".to_owned()),
            (15, "missed".to_owned()),
            (30, "delivered".to_owned()),
            (45, "delivered".to_owned()),
            (60, "delivered".to_owned())
        ]
    );
    assert_eq!(
        h[0]["detail"],
        "due 3600s before the scheduler reached it, outside the catch-up window of 1800s"
    );
    // The inbox holds the three, in due order.
    let inbox = app.delegate_rows(&ws).await;
    assert_eq!(inbox.len(), 3);
    let delivered: Vec<_> = h
        .iter()
        .filter(|f| f["status"] == "delivered")
        .map(|f| f["delegation_id"].clone())
        .collect();
    let in_inbox: Vec<_> = inbox
        .iter()
        .map(|r| r["data"]["delegation_id"].clone())
        .collect();
    assert_eq!(in_inbox, delivered);
    let listed = &app.schedules(&ws).await[0];
    assert_eq!(ts(&listed["next_run_at"]), t0 + Span::minutes(75));
    assert_eq!(listed["run_count"], 3);
    assert_eq!(
        app.metric("molecule_schedule_fires_total{status=\"missed\"}")
            .await,
        2.0
    );
}
on_both_engines!(catch_up_makes_fires_in_the_window_once_each_and_records_older_ones_missed);

async fn paused_workspaces_wait_and_disabled_schedules_do_not_fire(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let (sid, t0) = quarterly(&app, &ws, "q", "allow_all").await;
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/pause", ws.id),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.tick(t0 + Span::minutes(20)).await,
        (0, 0, 0),
        "paused: held"
    );
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/resume", ws.id),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.tick(t0 + Span::minutes(20)).await,
        (2, 0, 0),
        "delivered on resume"
    );
    // Disabled: nothing, however late.
    let (status, _) = app
        .patch_as(
            &format!("/workspaces/{}/schedules/{sid}", ws.id),
            &ws.token,
            &json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.tick(t0 + Span::minutes(50)).await, (0, 0, 0));
    assert_eq!(app.history(&ws, &sid).await.len(), 2);
}
on_both_engines!(paused_workspaces_wait_and_disabled_schedules_do_not_fire);

async fn run_now_fires_through_the_same_path_and_history_pages(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let other = app.create_poll_workspace("other").await;
    let (sid, t0) = quarterly(&app, &ws, "q", "skip").await;
    let run = format!("/workspaces/{}/schedules/{sid}/run", ws.id);
    let (status, fire) = app.post(&run, &ws.token, &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{fire}");
    assert_eq!(fire["status"], "delivered");
    assert_eq!(fire["due_at"], fire["fired_at"]);
    // The same overlap rule as a timed fire.
    let (status, second) = app.post(&run, &app.admin_token, &json!({})).await;
    assert_eq!(
        (status, &second["status"]),
        (StatusCode::OK, &json!("skipped"))
    );
    let (status, _) = app.post(&run, &other.token, &json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let missing = format!(
        "/workspaces/{}/schedules/{}/run",
        ws.id,
        uuid::Uuid::new_v4()
    );
    let (status, _) = app.post(&missing, &ws.token, &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let listed = &app.schedules(&ws).await[0];
    assert_eq!(
        ts(&listed["next_run_at"]),
        t0,
        "a manual run keeps the timed one"
    );
    // The delivered run counted; the skipped one only left its status.
    assert_eq!(
        (
            &listed["enabled"],
            &listed["run_count"],
            &listed["last_status"],
            &listed["last_run_at"]
        ),
        (
            &json!(true),
            &json!(1),
            &json!("skipped"),
            &fire["fired_at"]
        )
    );
    assert_eq!(app.delegate_rows(&ws).await.len(), 1);

    // History: newest first, limited, refused for others and bad limits.
    let h = app.history(&ws, &sid).await;
    assert_eq!(
        h.iter().map(|f| f["fire_id"].clone()).collect::<Vec<_>>(),
        vec![second["fire_id"].clone(), fire["fire_id"].clone()]
    );
    let base = format!("/workspaces/{}/schedules/{sid}/history", ws.id);
    let (status, one) = app.get(&format!("{base}?limit=1"), &ws.token).await;
    assert_eq!((status, one.as_array().unwrap().len()), (StatusCode::OK, 1));
    for bad in ["0", "501", "x"] {
        let (status, _) = app.get(&format!("{base}?limit={bad}"), &ws.token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={bad}");
    }
    let (status, _) = app.get(&base, &other.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .get(
            &format!("/workspaces/{}/schedules/{}/history", other.id, sid),
            &other.token,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another workspace's schedule id"
    );
}
on_both_engines!(run_now_fires_through_the_same_path_and_history_pages);

async fn racing_schedulers_make_one_fire_per_due_instant(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let mut first = Vec::new();
    for i in 0..6 {
        let ws = app.create_poll_workspace(&format!("w{i}")).await;
        for name in ["a", "b"] {
            let (_, t0) = quarterly(&app, &ws, name, "allow_all").await;
            first.push(t0);
        }
    }
    let t0 = first[0];
    assert!(first.iter().all(|t| *t == t0));
    // Four instants due for each of the 12 schedules; eight schedulers
    // (each its own connections) race for them.
    let now = t0 + Span::minutes(45);
    let ticks: Vec<_> = (0..8)
        .map(|_| {
            let scheduler = app.sweeper.scheduler();
            tokio::spawn(async move { scheduler.tick(now).await.unwrap() })
        })
        .collect();
    let mut delivered = 0;
    for t in ticks {
        delivered += t.await.unwrap().get("delivered").unwrap();
    }
    assert_eq!(delivered, 48);
    assert_eq!(app.tick(now).await, (0, 0, 0));
    let (status, ledger) = app
        .get("/admin/delegations?limit=500", &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ledger.as_array().unwrap().len(), 48);
}
on_both_engines!(racing_schedulers_make_one_fire_per_due_instant);

async fn many_schedules_due_at_once_fire_once_each_in_one_tick_in_batches(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    // 250 schedules over five workspaces, all due at the same instant:
    // more than two batches of `FIRES_PER_BATCH`.
    let mut schedules = Vec::new();
    for i in 0..5 {
        let ws = app.create_poll_workspace(&format!("w{i}")).await;
        for n in 0..50 {
            let (sid, t0) = quarterly(&app, &ws, &format!("s{n}"), "allow_all").await;
            schedules.push((ws.clone(), sid, t0));
        }
    }
    let t0 = schedules[0].2;
    assert!(schedules.iter().all(|(_, _, t)| *t == t0));
    let per_batch = molecule::jobs::FIRES_PER_BATCH as usize;
    assert!(schedules.len() > 2 * per_batch);

    let now = t0 + Span::milliseconds(400);
    let started = std::time::Instant::now();
    assert_eq!(app.tick(now).await, (250, 0, 0));
    let took = started.elapsed().as_secs_f64();
    assert_eq!(app.tick(now).await, (0, 0, 0), "never a second fire");
    for (ws, sid, _) in &schedules {
        let h = app.history(ws, sid).await;
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(
            (ts(&h[0]["due_at"]), &h[0]["status"]),
            (t0, &json!("delivered"))
        );
    }
    let mut delegations = std::collections::BTreeSet::new();
    for (ws, _, _) in schedules.iter().step_by(50) {
        let inbox = app.delegate_rows(ws).await;
        assert_eq!(inbox.len(), 50);
        delegations.extend(inbox.iter().map(|r| r["data"]["delegation_id"].to_string()));
    }
    assert_eq!(delegations.len(), 250, "one delegation per fire");
    let (status, ledger) = app
        .get("/admin/delegations?limit=500", &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ledger.as_array().unwrap().len(), 250);
    // The lag is commit time minus due instant: more than the 400 ms the
    // tick started late (a batch's commit takes well over 0.1 ms), no more
    // than that plus the tick's own duration.
    assert_eq!(
        app.metric("molecule_schedule_fire_lag_seconds_count").await,
        250.0
    );
    let sum = app.metric("molecule_schedule_fire_lag_seconds_sum").await;
    assert!(
        sum > 250.0 * 0.4001,
        "lag sum {sum}: the tick's start, not the commit"
    );
    assert!(
        sum <= 250.0 * (0.4 + took),
        "lag sum {sum}, tick took {took} s"
    );

    // One store call makes one batch: a hundred fires, one commit.
    let next = t0 + Span::minutes(15) + Span::milliseconds(400);
    let batch = app.store.fire_due(next, per_batch as i64).await.unwrap();
    assert_eq!((batch.claimed, batch.fired.len()), (per_batch, per_batch));
    assert!(batch
        .fired
        .iter()
        .all(|f| f.fire.due_at == t0 + Span::minutes(15)));
    assert_eq!(app.tick(next).await, (150, 0, 0));
    assert_eq!(app.tick(next).await, (0, 0, 0));
}
on_both_engines!(many_schedules_due_at_once_fire_once_each_in_one_tick_in_batches);

async fn more_parked_long_polls_than_pool_connections_still_let_fires_through(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    // More than either pool holds (PostgreSQL 20, SQLite 8): a parked
    // poll that kept its connection would starve the rest (503 "pool
    // timed out") and the fire below.
    const POLLS: usize = 40;
    let mut wss = Vec::new();
    for i in 0..POLLS {
        wss.push(app.create_poll_workspace(&format!("w{i}")).await);
    }
    let (_, due) = quarterly(&app, &wss[0], "timed", "allow_all").await;
    let manual = app
        .create_schedule(
            &wss[1],
            json!({"name": "manual", "cron_expr": "0 0 1 1 *", "prompt": "now"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let polls: Vec<_> = wss
        .iter()
        .map(|ws| {
            let url = app.url(&format!(
                "/workspaces/{}/activity?type=a2a_receive&wait=6",
                ws.id
            ));
            let (client, token) = (app.client.clone(), ws.token.clone());
            tokio::spawn(async move {
                let resp = client.get(url).bearer_auth(token).send().await.unwrap();
                let status = resp.status();
                (status, resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let bus = app.sweeper.scheduler().bus().clone();
    while bus.parked_polls() < POLLS {
        tokio::task::yield_now().await;
    }
    // With every poll in: a timed fire and a manual run get through.
    assert_eq!(app.tick(due + Span::milliseconds(100)).await, (1, 0, 0));
    let (status, fire) = app
        .post(
            &format!("/workspaces/{}/schedules/{manual}/run", wss[1].id),
            &wss[1].token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fire}");
    let mut answered = Vec::new();
    for p in polls {
        let (status, rows) = p.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{rows}");
        answered.push(rows.as_array().unwrap().len());
    }
    let mut expected = vec![0; POLLS];
    expected[0] = 1;
    expected[1] = 1;
    assert_eq!(answered, expected);
}
on_both_engines!(more_parked_long_polls_than_pool_connections_still_let_fires_through);
