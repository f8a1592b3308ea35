//! SQLite on a full disk: every write is either refused with a 503 and a
//! sentence, or it is really there after a restart — never a success that
//! was not committed, never a reused activity id.
//!
//! The disk is a real one: a tmpfs of a few MiB mounted as the database
//! directory, filled with a file until the kernel says ENOSPC. Mounting
//! needs root (CI runs as root); without it the test says so and skips.
//! PostgreSQL is not covered here: its disk is the shared test server's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use molecule::store::{ActivityPage, ActivityQuery, NewActivity};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{file, spawn_app_with, Engine, Options, TestApp};

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { dir }),
            Ok(out) => {
                eprintln!(
                    "skipping: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Writes a filler file until the filesystem is full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.filler()).expect("create filler");
        for chunk in [64 * 1024, 4096, 512, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        let _ = f.sync_all();
    }

    /// Gives the space back.
    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

/// A refusal must be a 503 with a sentence, nothing else.
fn assert_refused(what: &str, status: StatusCode, body: &serde_json::Value) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert_eq!(
        body["error"], "storage is unavailable; try again shortly",
        "{what}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_acknowledges_a_write_it_loses() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let db_url = format!("sqlite://{}", fs.path().join("molecule.db").display());
    let url = db_url.clone();
    let mut app: TestApp =
        spawn_app_with(Options::new(Engine::Sqlite).tweak(move |c| c.database_url = url))
            .await
            .expect("sqlite always runs");
    let ws = app.create_poll_workspace("w").await;
    let mut files = Vec::new();
    for i in 0..30 {
        files.push(
            app.stage(&ws, file(&format!("f{i}.txt"), "text/plain", "x"))
                .await,
        );
    }

    fs.fill();
    let (mut messages, mut acks, mut creates, mut refused) = (vec![], vec![], vec![], 0);
    for (i, fid) in files.iter().enumerate() {
        let (status, body) = app.send_text(&ws.id, &"m".repeat(3000)).await;
        if status == StatusCode::ACCEPTED {
            messages.push(body["activity_id"].as_i64().expect("an activity id"));
        } else {
            assert_refused("message", status, &body);
            refused += 1;
        }
        let (status, body) = app.ack(&ws.id, fid, &ws.token).await;
        if status == StatusCode::OK {
            acks.push(fid.clone());
        } else {
            assert_refused("ack", status, &body);
            refused += 1;
        }
        let (status, body) = app
            .create_workspace(json!({"name": format!("c{i}"), "delivery_mode": "poll"}))
            .await;
        if status == StatusCode::CREATED {
            creates.push(body["id"].as_str().unwrap().to_owned());
        } else {
            assert_refused("create", status, &body);
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "the disk never filled up: the test proved nothing"
    );

    // Space comes back while the server runs: new writes succeed, and
    // must survive too (a connection poisoned by a failed commit would
    // answer them inside a transaction that never commits).
    fs.free();
    for i in 0..5 {
        let (status, body) = app.send_text(&ws.id, "after").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        messages.push(body["activity_id"].as_i64().unwrap());
        let (status, body) = app
            .create_workspace(json!({"name": format!("after{i}"), "delivery_mode": "poll"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        creates.push(body["id"].as_str().unwrap().to_owned());
    }
    app.stop().await;
    app.store.close().await;

    // A fresh process opens the same file.
    let store = molecule::store::connect(&db_url).await.unwrap();
    store.migrate().await.unwrap();
    let wid = ws.wid();
    let ActivityPage::Rows(rows) = store
        .list_activity(
            wid,
            &ActivityQuery {
                since_id: 0,
                activity_type: None,
                limit: 1000,
                ..ActivityQuery::default()
            },
        )
        .await
        .unwrap()
    else {
        panic!("nothing was swept");
    };
    let stored: Vec<i64> = rows.iter().map(|r| r.id).collect();
    eprintln!(
        "answered {messages:?} acks {} creates {} refused {refused}; stored {stored:?}",
        acks.len(),
        creates.len()
    );
    for id in &messages {
        assert!(
            stored.contains(id),
            "message {id} was answered 202 but is gone"
        );
    }
    let uploads = store.list_all_uploads(wid, 1000).await.unwrap();
    for fid in &acks {
        let row = uploads
            .iter()
            .find(|u| u.file_id.to_string() == *fid)
            .expect("the acked file's row");
        assert!(
            row.acked_at.is_some(),
            "file {fid} was answered 200 but is not acked"
        );
    }
    for id in &creates {
        let found = store.get_workspace(id.parse().unwrap()).await.unwrap();
        assert!(
            found.is_some(),
            "workspace {id} was answered 201 but is gone"
        );
    }
    // No answered id is handed out again.
    let next = store
        .insert_activity(
            wid,
            &NewActivity {
                activity_type: "a2a_receive".into(),
                ..NewActivity::default()
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let highest = stored.iter().chain(&messages).max().copied().unwrap_or(0);
    assert!(
        next.id > highest,
        "id {} reused (highest answered {highest})",
        next.id
    );
    store.close().await;
}
