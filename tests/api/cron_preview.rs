//! `GET /schedules/preview`: the next instants of a cron expression, as
//! the schedule editor shows them while it is typed, and the create
//! route's refusals for what the editor must not save.

use chrono::{DateTime, Duration as Span, Timelike, Utc};
use chrono_tz::Tz;
use reqwest::StatusCode;

use crate::helpers::{spawn_app, Engine};

fn instants(body: &serde_json::Value) -> Vec<DateTime<Utc>> {
    body["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn preview_lists_the_next_instants_in_the_zone() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    let asked = Utc::now();
    let (status, body) = app
        .get(
            "/schedules/preview?cron_expr=*/15%20*%20*%20*%20*&count=4",
            &ws.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["cron_expr"].as_str(), body["timezone"].as_str()),
        (Some("*/15 * * * *"), Some("UTC"))
    );
    let next = instants(&body);
    assert_eq!(next.len(), 4);
    assert!(
        next[0] > asked && next[0] <= asked + Span::minutes(15),
        "first at {}",
        next[0]
    );
    for t in &next {
        assert_eq!(
            (t.minute() % 15, t.second(), t.nanosecond()),
            (0, 0, 0),
            "{t}"
        );
    }
    for pair in next.windows(2) {
        assert_eq!(pair[1] - pair[0], Span::minutes(15));
    }

    // A macro in a zone with daylight saving: local midnight each time,
    // five by default; the operator may ask too.
    let (status, body) = app
        .get(
            "/schedules/preview?cron_expr=@daily&timezone=America/New_York",
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let next = instants(&body);
    assert_eq!(next.len(), 5);
    let zone: Tz = "America/New_York".parse().unwrap();
    for t in &next {
        let local = t.with_timezone(&zone);
        assert_eq!(
            (local.hour(), local.minute()),
            (0, 0),
            "{t} is {local} there"
        );
    }
}

#[tokio::test]
async fn preview_refuses_what_create_refuses() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    for (query, needle) in [
        ("", "`cron_expr` is required"),
        ("cron_expr=%20", "`cron_expr` is required"),
        (
            "cron_expr=61%20*%20*%20*%20*",
            "is not a valid cron expression",
        ),
        (
            "cron_expr=@hourly&timezone=Mars/Olympus",
            "is not a known IANA time zone",
        ),
        ("cron_expr=0%200%2030%202%20*", "never fires"),
        (
            "cron_expr=@hourly&count=0",
            "`count` must be between 1 and 20",
        ),
        (
            "cron_expr=@hourly&count=21",
            "`count` must be between 1 and 20",
        ),
    ] {
        let (status, body) = app
            .get(&format!("/schedules/preview?{query}"), &ws.token)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "case {query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "case {query}: {body}"
        );
    }
    let (status, _) = app
        .get("/schedules/preview?cron_expr=@hourly", "not-a-token")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
