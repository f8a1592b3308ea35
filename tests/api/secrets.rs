//! Secrets: set, list (keys only), merged values for the workspace, the
//! encryption at rest (read straight from the database), and the start-up
//! check of the key.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Engine, Options, TestApp};
use crate::on_both_engines;

impl TestApp {
    pub async fn put(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        Self::json(
            self.client
                .put(self.url(path))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn delete_as(&self, path: &str, token: &str) -> (StatusCode, Value) {
        Self::json(
            self.client
                .delete(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// What `RemoteAgentClient.pull_secrets()` sends.
    async fn pull_secrets(&self, ws: &crate::helpers::Ws) -> (StatusCode, Value) {
        self.get(&format!("/workspaces/{}/secrets/values", ws.id), &ws.token)
            .await
    }

    /// Every sealed value in the secret tables, read straight from the
    /// database.
    async fn sealed_in_database(&self) -> Vec<Vec<u8>> {
        let url = &self.config.database_url;
        let sql =
            "SELECT sealed FROM global_secrets UNION ALL SELECT sealed FROM workspace_secrets";
        if url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
        }
    }
}

fn keys(listing: &Value) -> Vec<&str> {
    listing
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn secrets_are_merged_for_the_workspace_and_never_stored_or_listed_in_plaintext(
    engine: Engine,
) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let other = app.create_poll_workspace("other").await;
    let admin = &app.admin_token;
    let wpath = |key: &str| format!("/workspaces/{}/secrets/{key}", ws.id);

    // Nothing set yet: an empty object.
    assert_eq!(app.pull_secrets(&ws).await, (StatusCode::OK, json!({})));

    let plain = [
        ("GLOBAL_ONLY", "plaintext-global-only-7781"),
        ("SHARED", "plaintext-shared-global-3321"),
    ];
    for (key, value) in plain {
        let (status, body) = app
            .put(
                &format!("/admin/secrets/{key}"),
                admin,
                &json!({"value": value}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["key"], key);
        assert!(body.get("value").is_none());
    }
    for (key, value) in [
        ("SHARED", "plaintext-shared-own-9912"),
        ("OWN_KEY", "plaintext-own-5567"),
    ] {
        let (status, body) = app.put(&wpath(key), admin, &json!({"value": value})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // The workspace reads global merged under its own; its own wins.
    assert_eq!(
        app.pull_secrets(&ws).await,
        (
            StatusCode::OK,
            json!({"GLOBAL_ONLY": "plaintext-global-only-7781", "OWN_KEY": "plaintext-own-5567",
                   "SHARED": "plaintext-shared-own-9912"})
        )
    );
    assert_eq!(
        app.pull_secrets(&other).await,
        (
            StatusCode::OK,
            json!({"GLOBAL_ONLY": "plaintext-global-only-7781", "SHARED": "plaintext-shared-global-3321"})
        )
    );

    // Listings: keys and times, never values.
    let (status, listing) = app
        .get(&format!("/workspaces/{}/secrets", ws.id), admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&listing), ["OWN_KEY", "SHARED"]);
    let (_, global) = app.get("/admin/secrets", admin).await;
    assert_eq!(keys(&global), ["GLOBAL_ONLY", "SHARED"]);
    for row in listing
        .as_array()
        .unwrap()
        .iter()
        .chain(global.as_array().unwrap())
    {
        assert_eq!(
            row.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["key", "updated_at"]
        );
        assert!(!row.to_string().contains("plaintext"), "{row}");
    }

    // At rest: nonce (24) + ciphertext + tag (16), no plaintext anywhere.
    let sealed = app.sealed_in_database().await;
    assert_eq!(sealed.len(), 4);
    for blob in &sealed {
        assert!(blob.len() >= 24 + 16 + "plaintext-own-5567".len());
        assert!(
            !contains(blob, b"plaintext"),
            "a sealed value holds plaintext"
        );
    }
    if engine == Engine::Sqlite {
        // The whole database file and its write-ahead log.
        for name in ["molecule.db", "molecule.db-wal"] {
            if let Ok(bytes) = std::fs::read(app.data_dir.path().join(name)) {
                assert!(!contains(&bytes, b"plaintext"), "{name} holds plaintext");
            }
        }
    }

    // Who may do what.
    let (status, _) = app
        .get(&format!("/workspaces/{}/secrets/values", ws.id), admin)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the operator never reads values"
    );
    let (status, _) = app
        .get(
            &format!("/workspaces/{}/secrets/values", ws.id),
            &other.token,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .put(&wpath("X"), &ws.token, &json!({"value": "v"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .get(&format!("/workspaces/{}/secrets", ws.id), &ws.token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Bad input changes nothing.
    let (status, body) = app
        .put(&wpath("lower"), admin, &json!({"value": "v"}))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "`lower` is not a valid secret key: use 1 to 128 characters of A-Z, 0-9 and _, not starting with a digit"})
        )
    );
    let (status, body) = app
        .put(
            &wpath("BIG"),
            admin,
            &json!({"value": "x".repeat(64 * 1024 + 1)}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "the value of secret BIG is 65537 bytes; the limit is 65536 bytes (64 KiB)"})
        )
    );
    let (status, _) = app
        .put(
            &wpath("EXACTLY_64K"),
            admin,
            &json!({"value": "x".repeat(64 * 1024)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .put(
            &format!("/workspaces/{}/secrets/K", uuid::Uuid::new_v4()),
            admin,
            &json!({"value": "v"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "workspace not found"})
        )
    );
    assert_eq!(app.sealed_in_database().await.len(), 5);

    // Deleting the workspace's own SHARED uncovers the global one.
    let (status, _) = app.delete_as(&wpath("SHARED"), admin).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.delete_as(&wpath("SHARED"), admin).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "no secret named SHARED"})
        )
    );
    let (_, values) = app.pull_secrets(&ws).await;
    assert_eq!(values["SHARED"], "plaintext-shared-global-3321");
    let (status, _) = app.delete_as("/admin/secrets/SHARED", admin).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, values) = app.pull_secrets(&other).await;
    assert_eq!(values, json!({"GLOBAL_ONLY": "plaintext-global-only-7781"}));
}
on_both_engines!(secrets_are_merged_for_the_workspace_and_never_stored_or_listed_in_plaintext);

async fn a_wrong_secrets_key_is_a_clear_start_up_error(engine: Engine) {
    let Some(mut app) = spawn_app_with(Options::new(engine)).await else {
        return;
    };
    // No key given: one was generated into the data dir, mode 0600.
    let key_file = app.data_dir.path().join("secrets-key");
    let original = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(original.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let ws = app.create_poll_workspace("w").await;
    let (status, _) = app
        .put(
            &format!("/workspaces/{}/secrets/TOKEN", ws.id),
            &app.admin_token,
            &json!({"value": "kept"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;

    let mut wrong = app.config.clone();
    wrong.secrets_key = Some(molecule::secrets::SecretsKey::generate());
    let err = match molecule::app::Application::build(wrong).await {
        Ok(_) => panic!("a wrong secrets key started the server"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.starts_with(
            "the secrets key does not match the key this database's secrets were encrypted with"
        ),
        "{err}"
    );

    // The right key given explicitly starts and reads the value back.
    let mut right = app.config.clone();
    right.secrets_key = Some(molecule::secrets::SecretsKey::parse(&original).unwrap());
    let again = molecule::app::Application::build(right).await.unwrap();
    let state = again.state().clone();
    let sealed = state.store.sealed_secrets(ws.wid()).await.unwrap();
    assert_eq!(sealed.len(), 1);
    assert_eq!(
        state
            .sealer
            .open(sealed[0].scope, "TOKEN", &sealed[0].sealed)
            .unwrap(),
        "kept"
    );
    state.store.close().await;
}
on_both_engines!(a_wrong_secrets_key_is_a_clear_start_up_error);

/// Runs the real `molecule` binary against the app, feeding `stdin`.
async fn cli(app: &TestApp, args: &[&str], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args(args)
        .args(["--server", &app.address, "--admin-token", &app.admin_token])
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

async fn the_cli_manages_secrets_and_pushes_a_plugin_directory(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    let (ok, out, err) = cli(
        &app,
        &["secret", "set", "API_KEY", "--workspace", &ws.id],
        "from-stdin\n",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("set API_KEY for workspace {}\n", ws.id));
    let (ok, _, err) = cli(
        &app,
        &["secret", "set", "REGION", "eu-west", "--global"],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        app.pull_secrets(&ws).await,
        (
            StatusCode::OK,
            json!({"API_KEY": "from-stdin", "REGION": "eu-west"})
        )
    );
    let (ok, out, _) = cli(&app, &["secret", "list", "--workspace", &ws.id], "").await;
    assert!(ok);
    assert!(
        out.starts_with("API_KEY\t") && !out.contains("from-stdin"),
        "{out}"
    );
    let (ok, _, err) = cli(&app, &["secret", "list"], "").await;
    assert!(!ok, "a scope is required");
    assert!(
        err.contains("--workspace") && err.contains("--global"),
        "{err}"
    );
    let (ok, _, err) = cli(&app, &["secret", "set", "bad-key", "--global"], "v").await;
    assert!(!ok);
    assert!(err.contains("is not a valid secret key"), "{err}");
    let (ok, out, err) = cli(
        &app,
        &["secret", "rm", "API_KEY", "--workspace", &ws.id],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, format!("deleted API_KEY for workspace {}\n", ws.id));
    assert_eq!(
        app.pull_secrets(&ws).await,
        (StatusCode::OK, json!({"REGION": "eu-west"}))
    );

    // plugin push DIR packs the directory; the server accepts the result.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("skills")).unwrap();
    std::fs::write(dir.path().join("plugin.yaml"), "name: tools\n").unwrap();
    std::fs::write(dir.path().join("skills/run.sh"), "echo hi\n").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("run.sh", dir.path().join("skills/latest")).unwrap();
    let path = dir.path().to_str().unwrap();
    let (ok, out, err) = cli(&app, &["plugin", "push", "tools", path], "").await;
    assert!(ok, "{err}");
    let (_, listing) = app.get("/plugins", &app.admin_token).await;
    assert_eq!(
        out,
        format!(
            "published tools ({} bytes, sha256 {})\n",
            listing[0]["size"],
            listing[0]["sha256"].as_str().unwrap()
        )
    );
    let resp = app
        .client
        .get(app.url(&format!("/workspaces/{}/plugins/tools/download", ws.id)))
        .bearer_auth(&ws.token)
        .send()
        .await
        .unwrap();
    let bytes = resp.bytes().await.unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.contains(&"./plugin.yaml".to_owned()) || names.contains(&"plugin.yaml".to_owned()),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("skills/latest")),
        "{names:?}"
    );
    // A symlink escaping the directory is refused by the server, named.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("escape")).unwrap();
        let (ok, _, err) = cli(&app, &["plugin", "push", "tools", path], "").await;
        assert!(!ok);
        assert!(
            err.contains(
                "archive entry `escape` is refused: a symbolic link pointing outside the archive"
            ),
            "{err}"
        );
    }
}
on_both_engines!(the_cli_manages_secrets_and_pushes_a_plugin_directory);

impl TestApp {
    /// Flips one byte of the sealed value of every secret named `name` in
    /// `table`, straight in the database (a tampered row).
    async fn tamper_secret(&self, table: &str, name: &str) {
        let url = &self.config.database_url;
        let read = format!("SELECT sealed FROM {table} WHERE name = $1");
        let write = format!("UPDATE {table} SET sealed = $1 WHERE name = $2");
        let flip = |mut v: Vec<u8>| {
            let last = v.len() - 1;
            v[last] ^= 0x01;
            v
        };
        if url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let v: Vec<u8> = sqlx::query_scalar(&read)
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap();
            let done = sqlx::query(&write)
                .bind(flip(v))
                .bind(name)
                .execute(&pool)
                .await;
            assert_eq!(done.unwrap().rows_affected(), 1);
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let v: Vec<u8> = sqlx::query_scalar(&read)
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap();
            let done = sqlx::query(&write)
                .bind(flip(v))
                .bind(name)
                .execute(&pool)
                .await;
            assert_eq!(done.unwrap().rows_affected(), 1);
        }
    }

    /// `GET …/secrets/values`: status, the undecryptable-secrets header,
    /// and the body as text.
    async fn pull_secrets_raw(
        &self,
        ws: &crate::helpers::Ws,
    ) -> (StatusCode, Option<String>, String) {
        let resp = self
            .client
            .get(self.url(&format!("/workspaces/{}/secrets/values", ws.id)))
            .bearer_auth(&ws.token)
            .send()
            .await
            .unwrap();
        let header = resp
            .headers()
            .get("x-molecule-undecryptable-secrets")
            .map(|v| v.to_str().unwrap().to_owned());
        (resp.status(), header, resp.text().await.unwrap())
    }
}

async fn a_tampered_secret_is_named_and_counted_and_the_others_still_served(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let admin = &app.admin_token;
    let ws = app.create_poll_workspace("w").await;
    let other = app.create_poll_workspace("other").await;
    for (key, value) in [
        ("G_OK", "g-ok-1"),
        ("G_BAD", "g-bad-2"),
        ("SHARED", "g-shared-3"),
    ] {
        let (status, body) = app
            .put(
                &format!("/admin/secrets/{key}"),
                admin,
                &json!({"value": value}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for (key, value) in [
        ("OWN_OK", "o-ok-4"),
        ("OWN_BAD", "o-bad-5"),
        ("SHARED", "o-shared-6"),
    ] {
        let (status, body) = app
            .put(
                &format!("/workspaces/{}/secrets/{key}", ws.id),
                admin,
                &json!({"value": value}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let before = app.metrics_text().await;
    app.tamper_secret("global_secrets", "G_BAD").await;
    app.tamper_secret("workspace_secrets", "OWN_BAD").await;
    app.tamper_secret("workspace_secrets", "SHARED").await;

    let (status, header, body) = app.pull_secrets_raw(&ws).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header.as_deref(), Some("G_BAD,OWN_BAD,SHARED"));
    // The workspace's own SHARED did not open: the global value it
    // overrides is not handed out in its place.
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"G_OK": "g-ok-1", "OWN_OK": "o-ok-4"})
    );
    // Another workspace only misses the broken global.
    let (status, header, body) = app.pull_secrets_raw(&other).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header.as_deref(), Some("G_BAD"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"G_OK": "g-ok-1", "SHARED": "g-shared-3"})
    );
    // Nothing broken, no header.
    let (status, _) = app.delete_as("/admin/secrets/G_BAD", admin).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, header, body) = app.pull_secrets_raw(&other).await;
    assert_eq!((status, header), (StatusCode::OK, None), "{body}");

    let after = app.metrics_text().await;
    let delta = |series: &str| {
        crate::helpers::metric_value(&after, series) - crate::helpers::metric_value(&before, series)
    };
    assert_eq!(
        delta("molecule_secret_open_failures_total{scope=\"global\"}"),
        2.0
    );
    assert_eq!(
        delta("molecule_secret_open_failures_total{scope=\"workspace\"}"),
        2.0
    );
}
on_both_engines!(a_tampered_secret_is_named_and_counted_and_the_others_still_served);

async fn a_secrets_key_file_others_may_read_stops_the_start(engine: Engine) {
    use std::os::unix::fs::PermissionsExt;
    let Some(mut app) = spawn_app_with(Options::new(engine)).await else {
        return;
    };
    app.stop().await;
    let key_file = app.data_dir.path().join("secrets-key");
    let original = std::fs::read_to_string(&key_file).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = match molecule::app::Application::build(app.config.clone()).await {
            Ok(_) => panic!("a key file of mode {mode:o} was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert_eq!(
            err,
            format!(
                "the secrets key file {path} is accessible by other users (mode {mode:o}); \
                 it must be private: run `chmod 600 {path}` and start again",
                path = key_file.display()
            )
        );
        assert!(!err.contains(original.trim()), "the key leaked: {err}");
        // Refused, not repaired behind the operator's back.
        let now = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(now & 0o777, mode);
    }
    // The fix the message names.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let again = molecule::app::Application::build(app.config.clone())
        .await
        .unwrap();
    again.state().store.close().await;
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), original);
}
on_both_engines!(a_secrets_key_file_others_may_read_stops_the_start);
