//! Several replicas: two real `molecule serve` processes on one PostgreSQL
//! database and one S3 bucket work as one server.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    free_port, fresh_postgres_url, random_bytes, require_all_engines, sha256_hex, wait_until_ready,
};

struct Replica {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    base: String,
}

/// The secrets key every replica of one test shares (a test value).
const REPLICA_SECRETS_KEY: &str =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn start_replica(database_url: &str, blob_store: &str, admin: &str) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .args([
            "--database-url",
            database_url,
            "--blob-store",
            blob_store,
            "--admin-token",
            admin,
        ])
        // Replicas seal secrets under one key; each generating its own
        // would make the second refuse to start (the key check).
        .env("MOLECULE_SECRETS_KEY", REPLICA_SECRETS_KEY)
        // Suites hammer one server from one address.
        .env("MOLECULE_RATE_LIMIT", "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start molecule serve");
    let base = format!("http://127.0.0.1:{port}");
    wait_until_ready(&base, &mut child).await;
    Replica {
        _child: child,
        _dir: dir,
        base,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_uploads_and_wake_each_others_long_polls() {
    let Some(db) = fresh_postgres_url().await else {
        return;
    };
    let Ok(bucket) = std::env::var("MOLECULE_TEST_S3_BUCKET") else {
        assert!(
            !require_all_engines(),
            "MOLECULE_TEST_S3_BUCKET is not set but every engine is required"
        );
        return;
    };
    let blob_store = format!("s3://{bucket}/replicas-{}", uuid::Uuid::new_v4());
    let admin = molecule::domain::AuthToken::generate().expose().to_owned();
    let a = start_replica(&db, &blob_store, &admin).await;
    let b = start_replica(&db, &blob_store, &admin).await;
    let client = reqwest::Client::new();

    let created: Value = client
        .post(format!("{}/workspaces", a.base))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "shared", "delivery_mode": "poll"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws = created["id"].as_str().unwrap().to_owned();
    let token = created["auth_token"].as_str().unwrap().to_owned();

    // A long poll held by B…
    let poll = {
        let (client, url, token) = (
            client.clone(),
            format!(
                "{}/workspaces/{ws}/activity?type=a2a_receive&wait=30",
                b.base
            ),
            token.clone(),
        );
        tokio::spawn(async move {
            let resp = client.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            (resp.json::<Value>().await.unwrap(), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished());
    // …wakes when A stages a file.
    let bytes = random_bytes(2 * 1024 * 1024 + 5, 99);
    let form = reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(bytes.clone()).file_name("shared.bin"),
    );
    let resp = client
        .post(format!("{}/workspaces/{ws}/chat/uploads", a.base))
        .bearer_auth(&admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let staged_at = Instant::now();
    assert_eq!(resp.status(), StatusCode::OK);
    let uploaded: Value = resp.json().await.unwrap();
    let (rows, woke_at) = poll.await.unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["data"]["uri"], uploaded["files"][0]["uri"]);
    let wake = woke_at.saturating_duration_since(staged_at);
    eprintln!("cross-replica wake-up after the upload answered: {wake:?}");
    assert!(
        wake < Duration::from_secs(10),
        "woken by the other replica, not by the 30 s timeout"
    );

    // Fetched and acked through B.
    let fid = rows[0]["data"]["file_id"].as_str().unwrap();
    let resp = client
        .get(format!(
            "{}/workspaces/{ws}/pending-uploads/{fid}/content",
            b.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha256_hex(&body), sha256_hex(&bytes));
    let resp = client
        .post(format!(
            "{}/workspaces/{ws}/pending-uploads/{fid}/ack",
            b.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A sees it delivered.
    let pending: Value = client
        .get(format!("{}/workspaces/{ws}/pending-uploads", a.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending, serde_json::json!([]));
    let stats: Value = client
        .get(format!("{}/admin/pending-uploads/stats", a.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (stats["pending"].as_i64(), stats["acked"].as_i64()),
        (Some(0), Some(1))
    );
}

/// Starts `molecule serve` on the embedded default in `dir` (no admin token
/// given) and waits until it answers; returns the child and its stderr.
async fn start_default(dir: &std::path::Path) -> (tokio::process::Child, u16) {
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_molecule"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("MOLECULE_ADMIN_TOKEN")
        // Suites hammer one server from one address.
        .env("MOLECULE_RATE_LIMIT", "off")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start molecule serve");
    wait_until_ready(&format!("http://127.0.0.1:{port}"), &mut child).await;
    (child, port)
}

async fn stop_with_sigterm(mut child: tokio::process::Child) -> String {
    use tokio::io::AsyncReadExt;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    stderr
}

#[tokio::test]
async fn the_embedded_default_generates_the_admin_token_once_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("molecule-data");
    let (child, port) = start_default(&data).await;
    let token_file = data.join("admin-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.starts_with("mol_") && token.len() == 68, "{token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(data.join("molecule.db").exists());
    assert!(data.join("blobs").is_dir());
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/workspaces"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let first = stop_with_sigterm(child).await;
    assert!(
        first.contains(&token),
        "the first start shows the token once"
    );
    assert!(
        first.contains("MOLECULE_ADMIN_TOKEN"),
        "with a hint how to use it"
    );
    // The second start reuses it and does not print it again.
    let (child, _) = start_default(&data).await;
    let second = stop_with_sigterm(child).await;
    assert!(!second.contains(&token), "{second}");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
}

/// The first `event: delegation` of an SSE body, within 10 s.
async fn next_delegation_event(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
) -> Value {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.lines().any(|l| l == "event: delegation") {
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                return serde_json::from_str(data).unwrap();
            }
        }
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("the other replica's delegation event within 10 s")
            .unwrap()
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// A delegation moved through replica A shows on the event streams held
/// by replica B (the workspace's and the operator's): the `delegation`
/// event travels through PostgreSQL `NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_events_reach_streams_held_by_another_replica() {
    let Some(db) = fresh_postgres_url().await else {
        return;
    };
    let admin = molecule::domain::AuthToken::generate().expose().to_owned();
    let a = start_replica(&db, "database", &admin).await;
    let b = start_replica(&db, "database", &admin).await;
    let client = reqwest::Client::new();
    let create = |name: &'static str| {
        let (client, url, admin) = (
            client.clone(),
            format!("{}/workspaces", a.base),
            admin.clone(),
        );
        async move {
            let v: Value = client
                .post(url)
                .bearer_auth(admin)
                .json(&serde_json::json!({"name": name, "delivery_mode": "poll"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (
                v["id"].as_str().unwrap().to_owned(),
                v["auth_token"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (caller, caller_token) = create("caller").await;
    let (callee, callee_token) = create("callee").await;
    let open = |path: String| {
        let (client, admin) = (client.clone(), admin.clone());
        async move {
            let resp = client.get(path).bearer_auth(admin).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            Box::pin(resp.bytes_stream())
        }
    };
    let mut on_b_ws = open(format!("{}/workspaces/{callee}/events", b.base)).await;
    let mut on_b_all = open(format!("{}/admin/delegations/events", b.base)).await;
    let (mut buf_ws, mut buf_all) = (String::new(), String::new());

    let created: Value = client
        .post(format!("{}/workspaces/{callee}/delegate", a.base))
        .bearer_auth(&caller_token)
        .header("X-Workspace-ID", &caller)
        .json(&serde_json::json!({"task": "across replicas", "idempotency_key": "r-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let did = created["delegation_id"].as_str().unwrap().to_owned();
    let resp = client
        .post(format!(
            "{}/workspaces/{callee}/delegations/{did}/status",
            a.base
        ))
        .bearer_auth(&callee_token)
        .json(&serde_json::json!({"status": "dispatched"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let row: Value = resp.json().await.unwrap();

    for (body, buffer) in [(&mut on_b_ws, &mut buf_ws), (&mut on_b_all, &mut buf_all)] {
        let first = next_delegation_event(body, buffer).await;
        assert_eq!(
            (&first["delegation_id"], &first["from"], &first["status"]),
            (
                &Value::from(did.as_str()),
                &Value::Null,
                &Value::from("queued")
            )
        );
        let second = next_delegation_event(body, buffer).await;
        assert_eq!(
            second,
            serde_json::json!({"delegation_id": did, "caller_id": caller, "callee_id": callee,
                "from": "queued", "status": "dispatched", "updated_at": row["updated_at"]})
        );
    }
}

/// A workspace token revoked through replica A ends, within moments, the
/// long poll held with it on replica B (the revocation travels through
/// PostgreSQL `NOTIFY`); the workspace's other token keeps working there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_on_one_replica_ends_what_it_holds_open_on_another() {
    let Some(db) = fresh_postgres_url().await else {
        return;
    };
    let admin = molecule::domain::AuthToken::generate().expose().to_owned();
    let a = start_replica(&db, "database", &admin).await;
    let b = start_replica(&db, "database", &admin).await;
    let client = reqwest::Client::new();
    let ws: Value = client
        .post(format!("{}/workspaces", a.base))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "held", "delivery_mode": "poll"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = ws["id"].as_str().unwrap().to_owned();
    let first = ws["auth_token"].as_str().unwrap().to_owned();
    let minted: Value = client
        .post(format!("{}/workspaces/{id}/tokens", a.base))
        .bearer_auth(&first)
        .json(&serde_json::json!({"name": "second machine"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second = minted["auth_token"].as_str().unwrap().to_owned();
    let poll = {
        let (client, url, token) = (
            client.clone(),
            format!("{}/workspaces/{id}/activity?wait=30", b.base),
            second.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let status = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status();
            (status, started.elapsed())
        })
    };
    // A head start for the poll to park (the outcome is the same if it has
    // not: its token is then refused on arrival).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked = client
        .delete(format!(
            "{}/workspaces/{id}/tokens/{}",
            a.base,
            minted["id"].as_str().unwrap()
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let (status, took) = poll.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        took < Duration::from_secs(10),
        "ended by the revocation: {took:?}"
    );
    let (still, again) = (
        client
            .get(format!("{}/workspaces/{id}/activity", b.base))
            .bearer_auth(&first)
            .send()
            .await
            .unwrap()
            .status(),
        client
            .get(format!("{}/workspaces/{id}/activity", b.base))
            .bearer_auth(&second)
            .send()
            .await
            .unwrap()
            .status(),
    );
    assert_eq!((still, again), (StatusCode::OK, StatusCode::UNAUTHORIZED));
}

/// An operator token revoked through replica A ends, within moments, the
/// event streams it holds open on replica B (the fleet's delegation feed
/// and a workspace's feed), and a workspace token revoked through A ends
/// its legacy MCP session on B; the admin's stream on B stays open and
/// carries the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_on_one_replica_ends_its_streams_on_another() {
    use crate::revocation::Held;
    let Some(db) = fresh_postgres_url().await else {
        return;
    };
    let admin = molecule::domain::AuthToken::generate().expose().to_owned();
    let a = start_replica(&db, "database", &admin).await;
    let b = start_replica(&db, "database", &admin).await;
    let client = reqwest::Client::new();
    let post = |url: String, token: String, body: Value| {
        let client = client.clone();
        async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (_, ws) = post(
        format!("{}/workspaces", a.base),
        admin.clone(),
        serde_json::json!({"name": "watched", "delivery_mode": "poll"}),
    )
    .await;
    let (id, first) = (
        ws["id"].as_str().unwrap().to_owned(),
        ws["auth_token"].as_str().unwrap().to_owned(),
    );
    let (status, viewer) = post(
        format!("{}/org/tokens", a.base),
        admin.clone(),
        serde_json::json!({"role": "viewer"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{viewer}");
    let (status, second) = post(
        format!("{}/workspaces/{id}/tokens", a.base),
        first.clone(),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let viewer_token = viewer["auth_token"].as_str().unwrap();
    let fleet = Held::open(
        &client,
        format!("{}/admin/delegations/events", b.base),
        viewer_token,
    )
    .await;
    let feed = Held::open(
        &client,
        format!("{}/workspaces/{id}/events", b.base),
        viewer_token,
    )
    .await;
    let mut kept = Held::open(&client, format!("{}/approvals/events", b.base), &admin).await;
    let mut mcp = Held::open(
        &client,
        format!("{}/workspaces/{id}/mcp/stream", b.base),
        second["auth_token"].as_str().unwrap(),
    )
    .await;
    mcp.next("endpoint").await;

    let revoke = |path: String| {
        let (client, admin) = (client.clone(), admin.clone());
        async move {
            client
                .delete(path)
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let status = revoke(format!(
        "{}/org/tokens/{}",
        a.base,
        viewer["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    fleet.ends().await;
    feed.ends().await;
    let status = revoke(format!(
        "{}/workspaces/{id}/tokens/{}",
        a.base,
        second["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    mcp.ends().await;

    let (status, asked) = post(
        format!("{}/workspaces/{id}/approvals", a.base),
        first,
        serde_json::json!({"action": "deploy"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    let moved: Value = serde_json::from_str(&kept.next("approval").await).unwrap();
    assert_eq!(moved["approval_id"], asked["approval_id"], "{moved}");
}
