//! Schedule health: the workspace route's access (itself, the operator,
//! peers within the communication rule; never the prompt or expression),
//! the classes `never_run`, `ok`, `stale`, `disabled`, and the scheduler
//! loop's heartbeat in `/admin/schedules/health` and `/ready`.

use chrono::Duration as Span;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app, spawn_app_with, Engine, Options, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    async fn create_under(&self, name: &str, parent: Option<&Ws>) -> Ws {
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

    /// Moves every fire of the store `hours` into the past, straight in
    /// the database: no route back-dates a fire.
    async fn age_fires_directly(&self, hours: i64) {
        let url = &self.config.database_url;
        if url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query("UPDATE schedule_fires SET fired_at = fired_at - ?1")
                .bind(hours * 3_600_000_000)
                .execute(&pool)
                .await
                .unwrap();
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(
                "UPDATE schedule_fires SET fired_at = fired_at - make_interval(hours => $1)",
            )
            .bind(hours as i32)
            .execute(&pool)
            .await
            .unwrap();
        }
    }
}

/// The statuses of a health answer, by schedule name.
fn classes(rows: &Value) -> Vec<(String, String)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn workspace_health_follows_the_rule_and_classifies(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let lead = app.create_under("lead", None).await;
    let child = app.create_under("child", Some(&lead)).await;
    let sibling = app.create_under("sibling", None).await;
    let nephew = app.create_under("nephew", Some(&sibling)).await;
    let base = format!("/workspaces/{}/schedules", lead.id);
    for (name, cron, enabled) in [
        ("hourly", "0 * * * *", true),
        ("nightly", "0 3 * * *", true),
        ("off", "*/5 * * * *", false),
    ] {
        let (status, s) = app
            .post(
                &base,
                &lead.token,
                &json!({"name": name, "cron_expr": cron, "enabled": enabled,
                        "prompt": "SECRET-PROMPT do the rounds"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{s}");
    }
    let health = format!("{base}/health");
    let expect = |rows: &Value, want: &[(&str, &str)]| {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(classes(rows), want, "{rows}");
    };
    // Itself, the operator, its child and a root sibling may ask.
    for token in [&lead.token, &app.admin_token, &child.token, &sibling.token] {
        let (status, rows) = app.get(&health, token).await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        expect(
            &rows,
            &[
                ("hourly", "never_run"),
                ("nightly", "never_run"),
                ("off", "disabled"),
            ],
        );
        let text = rows.to_string();
        assert!(
            !text.contains("SECRET-PROMPT") && !text.contains("* * *"),
            "{text}"
        );
        let first = &rows[0];
        assert_eq!(first["interval_s"], 3600, "{first}");
        assert_eq!(first["workspace_id"], lead.id.as_str());
        assert!(first["last_fired_at"].is_null() && first.get("prompt").is_none());
    }
    // A sibling's child is out of reach; no token is 401.
    let (status, body) = app.get(&health, &nephew.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("out of reach"),
        "{body}"
    );
    let (status, _) = app.get(&health, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Both fire (manual runs count as fires): ok.
    for s in app.get(&base, &lead.token).await.1.as_array().unwrap() {
        if s["enabled"] == true {
            let (status, f) = app
                .post(
                    &format!("{base}/{}/run", s["id"].as_str().unwrap()),
                    &lead.token,
                    &json!({}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{f}");
        }
    }
    let (_, rows) = app.get(&health, &lead.token).await;
    expect(
        &rows,
        &[("hourly", "ok"), ("nightly", "ok"), ("off", "disabled")],
    );
    // Three hours later the hourly one is stale (> 2 × 1 h), the nightly
    // one is not (2 × 24 h).
    app.age_fires_directly(3).await;
    let (_, rows) = app.get(&health, &lead.token).await;
    expect(
        &rows,
        &[("hourly", "stale"), ("nightly", "ok"), ("off", "disabled")],
    );
    let (status, admin) = app.get("/admin/schedules/health", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    assert_eq!(
        admin["counts"],
        json!({"ok": 1, "stale": 1, "never_run": 0, "disabled": 1})
    );
    expect(
        &admin["schedules"],
        &[("hourly", "stale"), ("nightly", "ok"), ("off", "disabled")],
    );
    // The loop is off in tests: not ticking, never ticked, not stalled.
    assert_eq!(
        admin["scheduler"],
        json!({"ticking": false, "last_tick_at": null, "stall_after_s": 60, "stalled": false})
    );
    let (status, _) = app.get("/admin/schedules/health", &lead.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A removed workspace's schedules have stopped: gone from the answer.
    let (status, _) = app
        .client
        .delete(app.url(&format!("/workspaces/{}?cascade=true", lead.id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert!(status.is_success(), "{status}");
    let (_, admin) = app.get("/admin/schedules/health", &app.admin_token).await;
    assert_eq!(admin["schedules"], json!([]), "{admin}");
}
on_both_engines!(workspace_health_follows_the_rule_and_classifies);

/// A scheduler loop that stops ticking makes `/ready` 503 and shows as
/// stalled; its next tick makes both healthy again. The loop runs with a
/// 10-minute period (stalled after 6,000 s), so after its first tick the
/// test alone moves the heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_stops_ticking_is_visible_in_ready_and_health() {
    let options = Options::new(Engine::Sqlite)
        .tweak(|c| c.schedule_tick = std::time::Duration::from_secs(600));
    let app = spawn_app_with(options).await.unwrap();
    eventually("the loop's first tick", || async {
        app.metric("molecule_schedule_ticks_total").await >= 1.0
    })
    .await;
    let (status, admin) = app.get("/admin/schedules/health", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(admin["scheduler"]["ticking"], true, "{admin}");
    assert_eq!(admin["scheduler"]["stalled"], false, "{admin}");
    assert_eq!(admin["scheduler"]["stall_after_s"], 6000, "{admin}");
    let first: chrono::DateTime<chrono::Utc> = admin["scheduler"]["last_tick_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((molecule::domain::now() - first).num_seconds().abs() < 60);
    let (status, _) = app.get("/ready", "").await;
    assert_eq!(status, StatusCode::OK);

    // The latest tick 2 h ago: stopped.
    let scheduler = app.sweeper.scheduler();
    scheduler.mark_tick(molecule::domain::now() - Span::hours(2));
    let (status, body) = app.get("/ready", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body,
        json!({"error": "the scheduler has not ticked for 7200s (stopped after 6000s)"})
    );
    let (_, admin) = app.get("/admin/schedules/health", &app.admin_token).await;
    assert_eq!(admin["scheduler"]["stalled"], true, "{admin}");

    scheduler.mark_tick(molecule::domain::now());
    let (status, _) = app.get("/ready", "").await;
    assert_eq!(status, StatusCode::OK);
    let (_, admin) = app.get("/admin/schedules/health", &app.admin_token).await;
    assert_eq!(admin["scheduler"]["stalled"], false, "{admin}");
}
