//! Schedules outside their routes: org templates' `schedules:` (checked
//! like the route, idempotent on re-import, nothing written on a bad one)
//! and the `molecule schedule` commands against a running server.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Engine, TestApp};
use crate::on_both_engines;

impl TestApp {
    async fn import_yaml(&self, query: &str, body: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/org/import{query}")))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/yaml")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        Self::json(resp).await
    }

    /// Every workspace's schedules as `(workspace name, schedule name,
    /// cron, zone, enabled)`, sorted.
    async fn all_schedules(&self) -> Vec<(String, String, String, String, bool)> {
        let (_, list) = self.get("/workspaces", &self.admin_token).await;
        let mut out = Vec::new();
        for w in list.as_array().unwrap() {
            let id = w["id"].as_str().unwrap();
            let (status, rows) = self
                .get(&format!("/workspaces/{id}/schedules"), &self.admin_token)
                .await;
            assert_eq!(status, StatusCode::OK, "{rows}");
            for s in rows.as_array().unwrap() {
                out.push((
                    w["name"].as_str().unwrap().to_owned(),
                    s["name"].as_str().unwrap().to_owned(),
                    s["cron_expr"].as_str().unwrap().to_owned(),
                    s["timezone"].as_str().unwrap().to_owned(),
                    s["enabled"].as_bool().unwrap(),
                ));
            }
        }
        out.sort();
        out
    }
}

const TEMPLATE: &str = "
workspaces:
  - name: lead
    schedules:
      - name: standup
        cron_expr: '0 9 * * 1-5'
        timezone: Europe/Berlin
        prompt: Run the standup
    children:
      - name: coder
        schedules:
          - name: nightly
            cron_expr: '@daily'
            prompt: Rebuild the index
            enabled: false
";

fn names(report: &Value) -> Vec<(String, Value)> {
    report["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_owned(),
                w["schedules"].clone(),
            )
        })
        .collect()
}

async fn org_templates_import_schedules_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    // Bad schedules: 400 naming the place, nothing written.
    let bad = [
        (
            TEMPLATE.replace("'0 9 * * 1-5'", "'0 9 * *'"),
            "workspaces[0].schedules[0]: ",
        ),
        (
            TEMPLATE.replace("Europe/Berlin", "Mars/Olympus"),
            "workspaces[0].schedules[0]: ",
        ),
        (
            TEMPLATE.replace("prompt: Rebuild the index", "prompt: ''"),
            "workspaces[0].children[0].schedules[0]: cron_expr and prompt are required",
        ),
        (
            TEMPLATE.replace("name: nightly", "name: nightly\n            colour: red"),
            "malformed template: ",
        ),
    ];
    for (body, start) in bad {
        let (status, answer) = app.import_yaml("", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.starts_with(start), "{error}");
        let (_, list) = app.get("/workspaces", &app.admin_token).await;
        assert_eq!(list, json!([]), "a refused import wrote workspaces");
    }
    let twice = TEMPLATE.replace(
        "            enabled: false\n",
        "            enabled: false\n          - name: nightly\n            cron_expr: '@hourly'\n            prompt: again\n",
    );
    let (status, answer) = app.import_yaml("", &twice).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        answer["error"],
        "workspaces[0].children[0].schedules[1].name: `nightly` appears twice in this workspace's schedules"
    );

    // A dry run says what it would create and writes nothing.
    let (status, dry) = app.import_yaml("?dry_run=true", TEMPLATE).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    let created = |n: &str| json!([{"name": n, "created": true}]);
    assert_eq!(
        names(&dry),
        vec![
            ("lead".into(), created("standup")),
            ("coder".into(), created("nightly"))
        ]
    );
    assert!(app.all_schedules().await.is_empty());

    let (status, first) = app.import_yaml("", TEMPLATE).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        names(&first),
        vec![
            ("lead".into(), created("standup")),
            ("coder".into(), created("nightly"))
        ]
    );
    let want = vec![
        (
            "coder".to_owned(),
            "nightly".to_owned(),
            "@daily".to_owned(),
            "UTC".to_owned(),
            false,
        ),
        (
            "lead".to_owned(),
            "standup".to_owned(),
            "0 9 * * 1-5".to_owned(),
            "Europe/Berlin".to_owned(),
            true,
        ),
    ];
    assert_eq!(app.all_schedules().await, want);

    // Re-import: nothing doubled; a schedule deleted since comes back.
    let coder = first["workspaces"][1]["id"].as_str().unwrap().to_owned();
    let (_, rows) = app
        .get(&format!("/workspaces/{coder}/schedules"), &app.admin_token)
        .await;
    let sid = rows[0]["id"].as_str().unwrap();
    let resp = app
        .client
        .delete(app.url(&format!("/workspaces/{coder}/schedules/{sid}")))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, again) = app.import_yaml("", TEMPLATE).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        names(&again),
        vec![
            (
                "lead".into(),
                json!([{"name": "standup", "created": false}])
            ),
            ("coder".into(), created("nightly")),
        ]
    );
    assert_eq!(app.all_schedules().await, want);
    let (_, third) = app.import_yaml("", TEMPLATE).await;
    assert_eq!(
        third["workspaces"][1]["schedules"],
        json!([{"name": "nightly", "created": false}])
    );
    assert_eq!(app.all_schedules().await, want);
}
on_both_engines!(org_templates_import_schedules_once);

/// Runs the real `molecule` binary against the app.
async fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args(args)
        .args(["--server", &app.address, "--admin-token", &app.admin_token])
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_runs_and_removes_schedules() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let ws = app.create_poll_workspace("w").await;
    let (ok, out, err) = cli(
        &app,
        &[
            "schedule",
            "add",
            "--workspace",
            &ws.id,
            "--cron",
            "30 8 * * *",
            "--prompt",
            "Check the queue",
            "--name",
            "queue",
            "--timezone",
            "Asia/Tokyo",
            "--overlap",
            "allow_all",
            "--catch-up",
            "60",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let added: Value = serde_json::from_str(&out).unwrap();
    let sid = added["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            &added["name"],
            &added["cron_expr"],
            &added["timezone"],
            &added["overlap"],
            &added["catch_up"],
            &added["enabled"]
        ),
        (
            &json!("queue"),
            &json!("30 8 * * *"),
            &json!("Asia/Tokyo"),
            &json!("allow_all"),
            &json!(60),
            &json!(true)
        )
    );
    // The server's sentence on a bad expression, and a failing exit.
    let (ok, _, err) = cli(
        &app,
        &[
            "schedule",
            "add",
            "--workspace",
            &ws.id,
            "--cron",
            "61 * * * *",
            "--prompt",
            "x",
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("400"), "{err}");

    let (ok, out, err) = cli(&app, &["schedule", "list", "--workspace", &ws.id]).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("{sid}\tqueue\t30 8 * * * (Asia/Tokyo)\tnext ")),
        "{out}"
    );
    assert!(out.trim_end().ends_with("\tlast never"), "{out}");

    let (ok, out, err) = cli(
        &app,
        &["schedule", "run", &sid, "--workspace", &ws.id, "--json"],
    )
    .await;
    assert!(ok, "{err}");
    let fire: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(fire["status"], "delivered", "{fire}");
    // The fire is the workspace's delegate inbox row.
    let (_, rows) = app.activity(&ws, "type=a2a_receive&limit=10").await;
    let tasks: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "delegate")
        .collect();
    assert_eq!(tasks.len(), 1, "{rows}");

    let (ok, out, err) = cli(&app, &["schedule", "history", &sid, "--workspace", &ws.id]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&format!("{}\t", fire["fire_id"].as_str().unwrap())),
        "{out}"
    );
    assert!(out.contains("\tdelivered\t"), "{out}");

    let (ok, out, err) = cli(&app, &["schedule", "rm", &sid, "--workspace", &ws.id]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("deleted schedule {sid}"));
    let (ok, out, _) = cli(&app, &["schedule", "list", "--workspace", &ws.id, "--json"]).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
    let (ok, _, err) = cli(&app, &["schedule", "rm", &sid, "--workspace", &ws.id]).await;
    assert!(!ok);
    assert!(err.contains("schedule not found"), "{err}");
}
