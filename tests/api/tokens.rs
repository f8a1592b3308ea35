//! Workspace tokens (`/workspaces/:id/tokens`) and operator tokens
//! (`/org/tokens`): minting, listing without the secret, the 50-token cap,
//! revocation (also of requests held open), the mint rate limit, the
//! batched last-used stamp, and the permission matrix over every route of
//! the OpenAPI document.

use std::time::{Duration, Instant};

use molecule::domain::{now, Role};
use molecule::permissions::{need, Need, DECLARED, NARROWED};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Engine, TestApp, Ws};
use crate::on_both_engines;

impl TestApp {
    /// Mints an operator token with the admin token; its secret and id.
    async fn mint_operator(&self, body: Value) -> (String, String) {
        let (status, minted) = self.post("/org/tokens", &self.admin_token, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{minted}");
        (
            minted["auth_token"].as_str().unwrap().to_owned(),
            minted["id"].as_str().unwrap().to_owned(),
        )
    }
}

/// The keys of a listed token: never the secret.
fn keys(token: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = token
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

async fn workspace_tokens_are_minted_listed_and_revoked_one_by_one(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("tokens").await;
    let other = app.create_poll_workspace("other").await;
    let path = format!("/workspaces/{}/tokens", ws.id);

    // Bad input: the right status and nothing minted.
    for (body, want) in [
        (json!({"name": ""}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"name": "x".repeat(101)}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"expires_in_s": 0}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"role": "viewer"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"expires_in_s": "soon"}), StatusCode::BAD_REQUEST),
    ] {
        let (status, answer) = app.post(&path, &ws.token, &body).await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    // Another workspace's token may not even learn the path exists.
    let (status, _) = app.post(&path, &other.token, &json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = app.get(&path, &app.admin_token).await;
    assert_eq!(list["count"], 1, "only the token of the create: {list}");

    // The workspace mints a second token for itself, named, expiring.
    let (status, minted) = app
        .post(
            &path,
            &ws.token,
            &json!({"name": "ci", "expires_in_s": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let second = minted["auth_token"].as_str().unwrap().to_owned();
    let second_id = minted["id"].as_str().unwrap().to_owned();
    assert_eq!(minted["workspace_id"], ws.id.as_str());
    assert_eq!(minted["prefix"], &second[..12]);
    assert_ne!(second, ws.token);

    // Both work; the list shows both, newest first, never a secret.
    for token in [&ws.token, &second] {
        let (status, _) = app
            .get(&format!("/workspaces/{}/activity", ws.id), token)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, list) = app.get(&path, &app.admin_token).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["count"], 2);
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0]["id"], second_id.as_str());
    assert_eq!(tokens[0]["name"], "ci");
    assert_eq!(
        keys(&tokens[0]),
        [
            "created_at",
            "expires_at",
            "id",
            "last_used_at",
            "name",
            "prefix"
        ]
    );
    assert_eq!(
        keys(&tokens[1]),
        ["created_at", "id", "last_used_at", "prefix"]
    );
    assert_eq!(tokens[1]["prefix"], &ws.token[..12]);
    assert!(
        !list.to_string().contains(&second[12..]),
        "no secret in {list}"
    );
    let (_, page) = app
        .get(&format!("{path}?limit=1&offset=1"), &ws.token)
        .await;
    assert_eq!(page["count"], 2);
    assert_eq!(page["tokens"][0]["prefix"], &ws.token[..12]);
    let (status, _) = app.get(&format!("{path}?limit=0"), &ws.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Revoking one leaves the other working.
    let one = format!("{path}/{second_id}");
    let (status, body) = app.delete_as(&one, &ws.token).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "revoked"}))
    );
    let (status, _) = app
        .get(&format!("/workspaces/{}/activity", ws.id), &second)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .get(&format!("/workspaces/{}/activity", ws.id), &ws.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.delete_as(&one, &app.admin_token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already revoked");
    // Another workspace's path does not reach this workspace's token.
    let (status, _) = app
        .delete_as(
            &format!("/workspaces/{}/tokens/{second_id}", other.id),
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .delete_as(&format!("{path}/not-an-id"), &app.admin_token)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, list) = app.get(&path, &ws.token).await;
    assert_eq!(list["count"], 1);

    // Rotate keeps its meaning: every token revoked, one new.
    app.post(&path, &ws.token, &json!({})).await;
    let (status, rotated) = app
        .post(
            &format!("/workspaces/{}/external/rotate", ws.id),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = app.get(&path, &app.admin_token).await;
    assert_eq!(list["count"], 1);
    assert_eq!(
        list["tokens"][0]["prefix"],
        &rotated["auth_token"].as_str().unwrap()[..12]
    );
}
on_both_engines!(workspace_tokens_are_minted_listed_and_revoked_one_by_one);

async fn a_workspace_holds_at_most_fifty_live_tokens(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("capped").await;
    let path = format!("/workspaces/{}/tokens", ws.id);
    // One from the create, 49 more.
    for _ in 0..49 {
        let (status, body) = app.post(&path, &app.admin_token, &json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = app.post(&path, &ws.token, &json!({"name": "51st"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("50 live tokens"),
        "{body}"
    );
    let (_, list) = app.get(&path, &app.admin_token).await;
    assert_eq!(list["count"], 50, "the refused mint wrote nothing");
    // Revoking one makes room for one.
    let id = list["tokens"][0]["id"].as_str().unwrap();
    app.delete_as(&format!("{path}/{id}"), &app.admin_token)
        .await;
    let (status, _) = app.post(&path, &ws.token, &json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
}
on_both_engines!(a_workspace_holds_at_most_fifty_live_tokens);

async fn last_used_is_stamped_by_the_sweep_not_by_each_request(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("stamped").await;
    let (viewer, viewer_id) = app.mint_operator(json!({"role": "viewer"})).await;
    let before = now();
    app.get(&format!("/workspaces/{}/activity", ws.id), &ws.token)
        .await;
    app.get("/workspaces", &viewer).await;
    let path = format!("/workspaces/{}/tokens", ws.id);
    let (_, list) = app.get(&path, &app.admin_token).await;
    assert_eq!(
        list["tokens"][0]["last_used_at"],
        Value::Null,
        "not written per request"
    );
    app.sweeper.sweep_once(now()).await.unwrap();
    let (_, list) = app.get(&path, &app.admin_token).await;
    let used: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(list["tokens"][0]["last_used_at"].clone()).unwrap();
    assert!(used >= before - chrono::Duration::milliseconds(1), "{list}");
    let (_, org) = app.get("/org/tokens", &app.admin_token).await;
    let row = &org["tokens"][0];
    assert_eq!(row["id"], viewer_id.as_str());
    assert!(row["last_used_at"].is_string(), "{org}");
}
on_both_engines!(last_used_is_stamped_by_the_sweep_not_by_each_request);

async fn operator_tokens_carry_a_role_and_are_revocable(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    for (body, want) in [
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"role": "root"}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"role": "viewer", "team_root": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"role": "viewer", "team_root": uuid::Uuid::new_v4().to_string()}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, answer) = app.post("/org/tokens", &app.admin_token, &body).await;
        assert_eq!(status, want, "{body} -> {answer}");
    }
    let (_, org) = app.get("/org/tokens", &app.admin_token).await;
    assert_eq!(org["count"], 0, "refused mints wrote nothing: {org}");
    // A workspace token may not mint operator tokens.
    let (status, _) = app
        .post("/org/tokens", &ws.token, &json!({"role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (viewer, viewer_id) = app
        .mint_operator(json!({"role": "viewer", "name": "ci"}))
        .await;
    let (operator, _) = app.mint_operator(json!({"role": "operator"})).await;
    let (admin, _) = app.mint_operator(json!({"role": "admin"})).await;
    // The viewer reads and writes nothing.
    let (status, _) = app.get("/workspaces", &viewer).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .post(
            "/workspaces",
            &viewer,
            &json!({"name": "v", "delivery_mode": "poll"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["error"],
        "this operator token's role (viewer) may not use POST /workspaces"
    );
    // The operator writes, but mints no token.
    let (status, _) = app
        .post(
            "/workspaces",
            &operator,
            &json!({"name": "o", "delivery_mode": "poll"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .post("/org/tokens", &operator, &json!({"role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get("/org/tokens", &operator).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An admin token does what the admin token does.
    let (status, list) = app.get("/org/tokens", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["count"], 3);
    let row = &list["tokens"].as_array().unwrap()[2];
    assert_eq!(row["id"], viewer_id.as_str());
    assert_eq!(row["role"], "viewer");
    assert_eq!(row["name"], "ci");
    assert_eq!(row["prefix"], &viewer[..12]);
    assert!(!list.to_string().contains(&viewer[12..]));

    // Revoked: 401 at once; a second revoke is 404.
    let (status, body) = app
        .delete_as(&format!("/org/tokens/{viewer_id}"), &admin)
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "revoked"}))
    );
    let (status, _) = app.get("/workspaces", &viewer).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .delete_as(&format!("/org/tokens/{viewer_id}"), &admin)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/org/tokens", &app.admin_token).await;
    assert_eq!(list["count"], 2);
}
on_both_engines!(operator_tokens_carry_a_role_and_are_revocable);

#[tokio::test]
async fn minting_operator_tokens_is_limited_to_ten_an_hour_per_client() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (admin, _) = app.mint_operator(json!({"role": "admin"})).await;
    for _ in 0..9 {
        app.mint_operator(json!({"role": "viewer"})).await;
    }
    let resp = app
        .client
        .post(app.url("/org/tokens"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&retry), "Retry-After {retry}");
    let (_, list) = app.get("/org/tokens", &app.admin_token).await;
    assert_eq!(list["count"], 10, "the refused mint wrote nothing");
    // Another client (another credential) has its own allowance.
    let (status, _) = app
        .post("/org/tokens", &admin, &json!({"role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// A long poll held with a token ends with 401 as soon as that token is
/// revoked (not at its timeout), for a workspace token and an operator
/// token alike; the other tokens' polls keep waiting.
async fn revoking_a_token_ends_the_long_polls_held_with_it(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("held").await;
    let path = format!("/workspaces/{}/tokens", ws.id);
    let (_, minted) = app.post(&path, &app.admin_token, &json!({})).await;
    let second = minted["auth_token"].as_str().unwrap().to_owned();
    let (viewer, viewer_id) = app.mint_operator(json!({"role": "viewer"})).await;
    let poll = |token: String| {
        let (client, url) = (
            app.client.clone(),
            app.url(&format!("/workspaces/{}/activity?wait=30", ws.id)),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = client.get(url).bearer_auth(token).send().await.unwrap();
            (resp.status(), started.elapsed())
        })
    };
    let kept = poll(ws.token.clone());
    let by_second = poll(second);
    let by_viewer = poll(viewer);
    let bus = app.sweeper.scheduler().bus().clone();
    while bus.parked_polls() < 3 {
        tokio::task::yield_now().await;
    }
    app.delete_as(
        &format!("{path}/{}", minted["id"].as_str().unwrap()),
        &ws.token,
    )
    .await;
    let (status, took) = by_second.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        took < Duration::from_secs(10),
        "ended by the revocation: {took:?}"
    );
    app.delete_as(&format!("/org/tokens/{viewer_id}"), &app.admin_token)
        .await;
    let (status, took) = by_viewer.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        took < Duration::from_secs(10),
        "ended by the revocation: {took:?}"
    );
    // The workspace's own token still waits; a message answers it.
    assert!(!kept.is_finished());
    app.send_text(&ws.id, "still here").await;
    let (status, _) = kept.await.unwrap();
    assert_eq!(status, StatusCode::OK);
}
on_both_engines!(revoking_a_token_ends_the_long_polls_held_with_it);

/// The routes of the OpenAPI document, as (method, path).
async fn openapi_routes(app: &TestApp) -> Vec<(String, String)> {
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes.sort();
    routes
}

/// Every route of the OpenAPI document × every role × a token limited to
/// a subtree (the route's workspace inside it, or outside) × an unlimited
/// one: the answer is the permission table's. A route without a declared
/// permission fails here.
#[tokio::test]
async fn every_route_answers_every_role_as_the_permission_table_declares() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let routes = openapi_routes(&app).await;
    let undeclared: Vec<_> = routes
        .iter()
        .filter(|(m, p)| need(&m.parse().unwrap(), p).is_none())
        .collect();
    assert!(
        undeclared.is_empty(),
        "routes without a declared permission: {undeclared:?}"
    );
    let stale: Vec<_> = DECLARED
        .iter()
        .filter(|(m, p, _)| !routes.contains(&(m.to_string(), p.to_string())))
        .collect();
    assert!(
        stale.is_empty(),
        "declared routes that do not exist: {stale:?}"
    );

    let root = app.create_poll_workspace("team").await;
    let (status, child) = app
        .create_workspace(json!({"name": "member", "delivery_mode": "poll", "parent_id": root.id}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{child}");
    let inside = child["id"].as_str().unwrap().to_owned();
    let outside: Ws = app.create_poll_workspace("elsewhere").await;
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let (open, _) = app.mint_operator(json!({"role": role.as_str()})).await;
        tokens.push((role, false, open));
        let (limited, _) = app
            .mint_operator(json!({"role": role.as_str(), "team_root": root.id}))
            .await;
        tokens.push((role, true, limited));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (method, path) in &routes {
        let declared = need(&method.parse().unwrap(), path).unwrap();
        let names_workspace =
            path.starts_with("/workspaces/{id}") || path.starts_with("/registry/{id}");
        // A narrowed route answers a limited token with its subtree.
        let narrowed = NARROWED.iter().any(|(m, p)| m == method && p == path);
        for (ws, in_subtree) in [(&inside, true), (&outside.id, false)] {
            let url = path
                .replace("{id}", if names_workspace { ws } else { &outside.id })
                .replace("{target}", ws)
                .replace("{key}", "k")
                .replace("{name}", "p");
            let url = regex_free_ids(&url);
            for (role, limited, token) in &tokens {
                let allowed = declared == Need::Public
                    || (declared.allows(*role)
                        && (!limited || narrowed || (names_workspace && in_subtree)));
                let resp = client
                    .request(method.parse::<Method>().unwrap(), app.url(&url))
                    .bearer_auth(token)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                // The streams answer with their headers; do not wait on them.
                let body = if resp
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json"))
                {
                    resp.json::<Value>().await.unwrap_or(Value::Null)
                } else {
                    Value::Null
                };
                let denied = status == StatusCode::FORBIDDEN
                    && body["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("this operator token"));
                checked += 1;
                if denied == allowed {
                    wrong.push(format!(
                        "{method} {url} as {role:?}{}: {status} {body}",
                        if *limited { " (subtree)" } else { "" }
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {checked} answers differ from the table:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Fills every id placeholder left (`{mid}`, `{tid}`, …) with a fresh id.
fn regex_free_ids(url: &str) -> String {
    let mut out = String::new();
    let mut rest = url;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .map(|e| start + e + 1)
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        out.push_str(&uuid::Uuid::new_v4().to_string());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Runs the real `molecule` binary with `env` (and no admin token unless
/// `env` gives one), feeding `stdin`.
async fn cli(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args(args)
        .env_remove("MOLECULE_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `molecule login` keeps a token (from standard input) 0600 in the
/// config directory; `molecule token …` then works with no token on its
/// command line or in its environment.
#[tokio::test]
async fn the_cli_logs_in_from_stdin_and_manages_tokens_without_a_token_argument() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let ws = app.create_poll_workspace("cli").await;
    let config = tempfile::tempdir().unwrap();
    let dir = config.path().to_str().unwrap();
    let env = [
        ("XDG_CONFIG_HOME", dir),
        ("MOLECULE_SERVER", app.address.as_str()),
    ];
    let empty = tempfile::tempdir().unwrap();
    let data_dir = ["--data-dir", empty.path().to_str().unwrap()];

    // No token anywhere: a clear error.
    let (ok, _, err) = cli(
        &[&["token", "list", "--org"][..], &data_dir].concat(),
        &env,
        "",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("no admin token"), "{err}");

    let (ok, out, err) = cli(&["login"], &env, &format!("{}\n", app.admin_token)).await;
    assert!(ok, "{err}");
    let file = config.path().join("molecule/token");
    assert!(out.contains(file.to_str().unwrap()), "{out}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        app.admin_token
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let (ok, out, err) = cli(
        &[
            &[
                "token", "create", "--org", "--role", "viewer", "--name", "ci", "--json",
            ][..],
            &data_dir,
        ]
        .concat(),
        &env,
        "",
    )
    .await;
    assert!(ok, "{err}");
    let minted: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(minted["role"], "viewer");
    let id = minted["id"].as_str().unwrap();
    let (ok, out, _) = cli(
        &[&["token", "list", "--org"][..], &data_dir].concat(),
        &env,
        "",
    )
    .await;
    assert!(ok);
    assert!(
        out.contains(id) && out.contains("viewer") && out.contains("1 live"),
        "{out}"
    );
    assert!(!out.contains(minted["auth_token"].as_str().unwrap()));
    let (ok, out, err) = cli(
        &[&["token", "create", "--workspace", &ws.id][..], &data_dir].concat(),
        &env,
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("mol_"), "{out}");
    let (_, list) = app
        .get(&format!("/workspaces/{}/tokens", ws.id), &ws.token)
        .await;
    assert_eq!(list["count"], 2);
    let (ok, out, err) = cli(
        &[&["token", "revoke", "--org", id][..], &data_dir].concat(),
        &env,
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("revoked"), "{out}");
    let (_, org) = app.get("/org/tokens", &app.admin_token).await;
    assert_eq!(org["count"], 0);
    // --role is for operator tokens only.
    let (ok, _, _) = cli(
        &[
            &["token", "create", "--workspace", &ws.id, "--role", "viewer"][..],
            &data_dir,
        ]
        .concat(),
        &env,
        "",
    )
    .await;
    assert!(!ok);
}

/// The trail's `token.use_denied` rows, oldest first, as (actor, target,
/// workspace, details).
async fn denied_uses(app: &TestApp) -> (Vec<Value>, String) {
    let (status, page) = app
        .get(
            "/admin/audit?action=token.use_denied&limit=100",
            &app.admin_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut rows: Vec<Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            json!({"actor": e["actor"], "target": e["target"], "workspace_id": e["workspace_id"],
                "details": e["details"]})
        })
        .collect();
    rows.reverse();
    (rows, page.to_string())
}

/// A known token refused (revoked, expired, or an operator token outside
/// its role or subtree) leaves one `token.use_denied` row naming it, the
/// route and the reason, never the secret; a client repeating the refused
/// call adds no row within the minute; bearer strings no token ever had
/// leave nothing.
async fn refused_known_tokens_are_recorded_once_a_minute_and_garbage_never(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let team = app.create_poll_workspace("team").await;
    let outside = app.create_poll_workspace("outside").await;
    let tokens = format!("/workspaces/{}/tokens", team.id);
    let (_, laptop) = app
        .post(&tokens, &app.admin_token, &json!({"name": "laptop"}))
        .await;
    let (laptop, laptop_id) = (
        laptop["auth_token"].as_str().unwrap().to_owned(),
        laptop["id"].as_str().unwrap().to_owned(),
    );
    app.delete_as(&format!("{tokens}/{laptop_id}"), &app.admin_token)
        .await;
    let (viewer, viewer_id) = app
        .mint_operator(json!({"role": "viewer", "name": "dash"}))
        .await;
    let (member, member_id) = app
        .mint_operator(json!({"role": "operator", "team_root": team.id}))
        .await;
    let (_, soon) = app
        .post(&tokens, &app.admin_token, &json!({"expires_in_s": 1}))
        .await;
    let (soon, soon_id) = (
        soon["auth_token"].as_str().unwrap().to_owned(),
        soon["id"].as_str().unwrap().to_owned(),
    );
    let activity = format!("/workspaces/{}/activity", team.id);

    for _ in 0..3 {
        let (status, _) = app.get(&activity, &laptop).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = app
            .post(
                "/workspaces",
                &viewer,
                &json!({"name": "nope", "delivery_mode": "poll"}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app
            .get(&format!("/workspaces/{}/activity", outside.id), &member)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    // Unknown strings, ours in shape or not, are refused and not recorded.
    let unknown = molecule::domain::AuthToken::generate().expose().to_owned();
    for garbage in ["nonsense", unknown.as_str()] {
        let (status, _) = app.get(&activity, garbage).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The expiring token works until its second is up, then is refused.
    let started = Instant::now();
    loop {
        let (status, _) = app.get(&activity, &soon).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = app.get(&activity, &soon).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (rows, page) = denied_uses(&app).await;
    let workspace_route = "GET /workspaces/{id}/activity";
    assert_eq!(
        rows,
        vec![
            json!({"actor": format!("token:{laptop_id}"), "target": format!("token:{laptop_id}"),
                "workspace_id": team.id,
                "details": {"route": workspace_route, "reason": "revoked", "name": "laptop"}}),
            json!({"actor": format!("token:{viewer_id}"), "target": format!("token:{viewer_id}"),
                "workspace_id": null,
                "details": {"route": "POST /workspaces", "reason": "role", "name": "dash"}}),
            json!({"actor": format!("token:{member_id}"), "target": format!("token:{member_id}"),
                "workspace_id": null,
                "details": {"route": workspace_route, "reason": "subtree", "name": null}}),
            json!({"actor": format!("token:{soon_id}"), "target": format!("token:{soon_id}"),
                "workspace_id": team.id,
                "details": {"route": workspace_route, "reason": "expired", "name": null}}),
        ]
    );
    for secret in [&laptop, &viewer, &member, &soon] {
        assert!(!page.contains(secret.as_str()), "a secret in the trail");
    }
}
on_both_engines!(refused_known_tokens_are_recorded_once_a_minute_and_garbage_never);

/// `GET /admin/config` tells the asking token its role, so a client (the
/// canvas) can hide what that role may not do. (A token confined to a
/// subtree is refused this fleet-wide route, as it is `GET /workspaces`.)
async fn the_config_names_the_role_of_the_token_that_asks(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    for role in ["viewer", "operator", "admin"] {
        let (token, _) = app.mint_operator(json!({"role": role})).await;
        let (status, config) = app.get("/admin/config", &token).await;
        assert_eq!(status, StatusCode::OK, "{config}");
        assert_eq!(
            (&config["role"], &config["team_root"]),
            (&json!(role), &Value::Null),
            "{config}"
        );
    }
}
on_both_engines!(the_config_names_the_role_of_the_token_that_asks);
