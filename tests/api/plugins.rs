//! Plugins: publish (checked while streaming), list, download with ETag,
//! install records as Molecule's SDK sends them, delete, and a table of
//! hostile archives refused with nothing stored.

use std::io::Write;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    random_bytes, sha256_hex, spawn_app, spawn_app_with, Engine, Options, TestApp,
};
use crate::on_both_engines;

/// One archive entry, written byte for byte (the tar crate's builder would
/// refuse the hostile ones).
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    CharDevice(&'a str),
    BlockDevice(&'a str),
    Fifo(&'a str),
}

/// A `.tar.gz` holding exactly `entries`.
pub fn tgz(entries: &[Entry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for entry in entries {
        let (name, kind, link, data): (&str, tar::EntryType, Option<&str>, &[u8]) = match entry {
            Entry::File(n, d) => (n, tar::EntryType::Regular, None, d),
            Entry::Dir(n) => (n, tar::EntryType::Directory, None, b""),
            Entry::Symlink(n, t) => (n, tar::EntryType::Symlink, Some(t), b""),
            Entry::Hardlink(n, t) => (n, tar::EntryType::Link, Some(t), b""),
            Entry::CharDevice(n) => (n, tar::EntryType::Char, None, b""),
            Entry::BlockDevice(n) => (n, tar::EntryType::Block, None, b""),
            Entry::Fifo(n) => (n, tar::EntryType::Fifo, None, b""),
        };
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    let mut gz = builder.into_inner().unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap()
}

fn good_plugin(marker: &str) -> Vec<u8> {
    tgz(&[
        Entry::Dir("./"),
        Entry::File(
            "./plugin.yaml",
            format!("name: tools\nmarker: {marker}\n").as_bytes(),
        ),
        Entry::Dir("./skills/"),
        Entry::File("./skills/run.sh", b"#!/bin/sh\necho hi\n"),
        Entry::Symlink("./skills/latest", "run.sh"),
        Entry::Symlink("./docs", "skills/../plugin.yaml"),
        Entry::Hardlink("./skills/copy.sh", "./skills/run.sh"),
    ])
}

impl TestApp {
    /// `molecule plugin push`: PUT the tarball as the operator.
    pub async fn publish(&self, name: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        // A connection of its own: a refusal (413) may answer before the
        // body is read and close the connection, which must not be handed
        // back to the shared pool for the next request.
        Self::json(
            reqwest::Client::new()
                .put(self.url(&format!("/plugins/{name}")))
                .bearer_auth(&self.admin_token)
                .header("content-type", "application/gzip")
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn plugin_blobs(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .blob_keys()
            .await
            .into_iter()
            .filter(|k| k.starts_with("plugins/"))
            .collect();
        keys.sort();
        keys
    }
}

async fn a_plugin_is_published_downloaded_installed_and_deleted(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let ws = app.create_poll_workspace("agent").await;
    let v1 = good_plugin("one");
    let (status, body) = app.publish("tools", v1.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "tools");
    assert_eq!(body["size"], v1.len());
    assert_eq!(body["sha256"], sha256_hex(&v1));
    let blobs_v1 = app.plugin_blobs().await;
    assert_eq!(blobs_v1.len(), 1);
    let stored = app
        .store
        .get_plugin(&molecule::domain::PluginName::parse("tools").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.blob_key.as_str(), stored.size),
        (blobs_v1[0].as_str(), v1.len() as i64)
    );

    let (status, listing) = app.get("/plugins", &app.admin_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listing, json!([body]));

    // The SDK's download: the workspace token, optional ?source=.
    let url = app.url(&format!(
        "/workspaces/{}/plugins/tools/download?source=local://tools",
        ws.id
    ));
    let resp = app
        .client
        .get(&url)
        .bearer_auth(&ws.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = format!("\"{}\"", sha256_hex(&v1));
    assert_eq!(resp.headers()["etag"], etag.as_str());
    assert_eq!(resp.headers()["content-type"], "application/gzip");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), v1.as_slice());
    let resp = app
        .client
        .get(&url)
        .bearer_auth(&ws.token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let (status, body) = app
        .get(
            &format!("/workspaces/{}/plugins/nope/download", ws.id),
            &ws.token,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "no plugin named nope"})
        )
    );

    // The SDK records the install with `{"source"}` only.
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/plugins", ws.id),
            &ws.token,
            &json!({"source": "local://tools"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["source"].as_str()),
        (Some("tools"), Some("local://tools"))
    );
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/plugins", ws.id),
            &ws.token,
            &json!({"name": "other", "source": "https://example.com/other.tar.gz"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            &format!("/workspaces/{}/plugins", ws.id),
            &ws.token,
            &json!({"source": "https://example.com/x.tar.gz"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "`name` is required unless `source` is local://NAME"})
        )
    );
    for token in [&ws.token, &app.admin_token] {
        let (status, installs) = app
            .get(&format!("/workspaces/{}/plugins", ws.id), token)
            .await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<_> = installs
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].clone())
            .collect();
        assert_eq!(names, [json!("other"), json!("tools")]);
    }

    // The orphan reaper keeps a published plugin's blob.
    let later = molecule::domain::now() + chrono::Duration::hours(3);
    app.sweeper.sweep_once(later).await.unwrap();
    assert_eq!(
        app.plugin_blobs().await,
        blobs_v1,
        "the reaper took a plugin's blob"
    );

    // Publishing again replaces the tarball and deletes the old blob.
    let v2 = good_plugin("two");
    let (status, body) = app.publish("tools", v2.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sha256"], sha256_hex(&v2));
    let blobs_v2 = app.plugin_blobs().await;
    assert_eq!(blobs_v2.len(), 1);
    assert_ne!(blobs_v2, blobs_v1);

    // Workspace tokens may not publish or list the registry.
    let resp = app
        .client
        .put(app.url("/plugins/tools"))
        .bearer_auth(&ws.token)
        .body(v1.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (status, _) = app.get("/plugins", &ws.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, _) = app.delete_as("/plugins/tools", &app.admin_token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.delete_as("/plugins/tools", &app.admin_token).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "no plugin named tools"})
        )
    );
    assert_eq!(
        app.get("/plugins", &app.admin_token).await,
        (StatusCode::OK, json!([]))
    );
    assert_eq!(app.plugin_blobs().await, Vec::<String>::new());
    let (status, _) = app
        .get(
            &format!("/workspaces/{}/plugins/tools/download", ws.id),
            &ws.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.publish("Bad/Name", v1).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a slash is another route");
}
on_both_engines!(a_plugin_is_published_downloaded_installed_and_deleted);

async fn hostile_archives_are_refused_with_nothing_stored(engine: Engine) {
    const LIMIT: u64 = 64 * 1024;
    let Some(app) = spawn_app_with(Options::new(engine).tweak(|c| c.max_plugin_size = LIMIT)).await
    else {
        return;
    };
    // A good version is already published under the same name: a refused
    // archive must leave it exactly as it was.
    let good = good_plugin("kept");
    let (status, published) = app.publish("tools", good.clone()).await;
    assert_eq!(status, StatusCode::OK, "{published}");
    let blobs_before = app.plugin_blobs().await;

    let refused =
        |entry: &str, reason: &str| format!("archive entry `{entry}` is refused: {reason}");
    let oversize = tgz(&[Entry::File("big.bin", &random_bytes(3 * LIMIT as usize, 7))]);
    let cases: Vec<(&str, Vec<u8>, StatusCode, String)> = vec![
        (
            "traversal",
            tgz(&[Entry::File("ok.txt", b"x"), Entry::File("../evil.sh", b"x")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("../evil.sh", "`..` path components are not allowed"),
        ),
        (
            "traversal inside",
            tgz(&[Entry::File("a/../../evil.sh", b"x")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("a/../../evil.sh", "`..` path components are not allowed"),
        ),
        (
            "absolute",
            tgz(&[Entry::File("/etc/cron.d/evil", b"x")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("/etc/cron.d/evil", "absolute paths are not allowed"),
        ),
        (
            "symlink out",
            tgz(&[
                Entry::Dir("skills/"),
                Entry::Symlink("skills/link", "../../etc/passwd"),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused(
                "skills/link",
                "a symbolic link pointing outside the archive",
            ),
        ),
        (
            "symlink out from ./",
            tgz(&[Entry::Symlink("./link", "../x")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("./link", "a symbolic link pointing outside the archive"),
        ),
        (
            "symlink absolute",
            tgz(&[Entry::Symlink("passwd", "/etc/passwd")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("passwd", "a symbolic link pointing outside the archive"),
        ),
        (
            "hardlink out",
            tgz(&[Entry::Hardlink("hard", "../outside")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("hard", "a hard link pointing outside the archive"),
        ),
        (
            "hardlink absolute",
            tgz(&[Entry::Hardlink("shadow", "/etc/shadow")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("shadow", "a hard link pointing outside the archive"),
        ),
        (
            "a chain of links that each look inside",
            tgz(&[
                Entry::Symlink("d/l", ".."),
                Entry::Symlink("d/l2", "l/.."),
                Entry::File("d/l2/pwned.txt", b"x"),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused(
                "d/l2",
                "a symbolic link pointing to or through another link",
            ),
        ),
        (
            "the chain, links in the other order",
            tgz(&[
                Entry::Symlink("d/l2", "l/.."),
                Entry::Symlink("d/l", ".."),
                Entry::File("d/l2/pwned.txt", b"x"),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused(
                "d/l",
                "a symbolic link in place of a path the archive already uses or links to",
            ),
        ),
        (
            "`..` through a link",
            tgz(&[
                Entry::Dir("a/b/c/"),
                Entry::Symlink("a/s", "b/c"),
                Entry::Symlink("x", "a/s/../../.."),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("x", "a symbolic link pointing to or through another link"),
        ),
        (
            "a file through a link",
            tgz(&[Entry::Symlink("d/up", ".."), Entry::File("d/up/x", b"x")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("d/up/x", "a path through a symbolic link in the archive"),
        ),
        (
            "a hard link to a link",
            tgz(&[
                Entry::Symlink("a/b/s", "../x"),
                Entry::Hardlink("h", "a/b/s"),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("h", "a hard link to or through a symbolic link"),
        ),
        (
            "an absolute target in a chain",
            tgz(&[Entry::Symlink("a/l", "b"), Entry::Symlink("a/b", "/etc")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused(
                "a/b",
                "a symbolic link in place of a path the archive already uses or links to",
            ),
        ),
        (
            "a file shadowing a link",
            tgz(&[
                Entry::Symlink("d/l", ".."),
                Entry::Symlink("d/l3", "l/../sibling.txt"),
                Entry::File("d/l3", b"x"),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused(
                "d/l3",
                "a symbolic link pointing to or through another link",
            ),
        ),
        (
            "a file in place of a link",
            tgz(&[Entry::Symlink("x", "f"), Entry::File("x", b"x")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("x", "an entry in place of a symbolic link in the archive"),
        ),
        (
            "names that differ only in case",
            tgz(&[
                Entry::Symlink("d/L", ".."),
                Entry::Symlink("d/l2", "l/../../x"),
            ]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused(
                "d/l2",
                "a symbolic link pointing to or through another link",
            ),
        ),
        (
            "character device",
            tgz(&[Entry::CharDevice("null")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("null", "device files are not allowed"),
        ),
        (
            "block device",
            tgz(&[Entry::BlockDevice("sda")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("sda", "device files are not allowed"),
        ),
        (
            "fifo",
            tgz(&[Entry::Fifo("pipe")]),
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("pipe", "FIFOs are not allowed"),
        ),
        (
            "empty archive",
            tgz(&[]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the archive is empty".into(),
        ),
        (
            "not gzip",
            b"just some text, not an archive".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body is not a gzip-compressed tar archive (invalid gzip header)".into(),
        ),
        (
            "oversize",
            oversize.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "the plugin archive is over the 64.0 KiB limit".into(),
        ),
    ];
    for (case, body, status, error) in cases {
        let answer = app.publish("tools", body).await;
        assert_eq!(answer, (status, json!({"error": error})), "{case}");
        assert_eq!(
            app.get("/plugins", &app.admin_token).await,
            (StatusCode::OK, json!([published])),
            "{case}: rows"
        );
        assert_eq!(app.plugin_blobs().await, blobs_before, "{case}: blobs");
    }
    // Oversize without a Content-Length: cut while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        oversize.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect();
    let answer = app
        .publish(
            "tools",
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await;
    assert_eq!(
        answer,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "the plugin archive is over the 64.0 KiB limit"})
        )
    );
    // A hostile archive under a new name leaves no row either.
    let (status, _) = app.publish("fresh", tgz(&[Entry::Symlink("x", "/")])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.get("/plugins", &app.admin_token).await,
        (StatusCode::OK, json!([published]))
    );
    assert_eq!(app.plugin_blobs().await, blobs_before);
}
on_both_engines!(hostile_archives_are_refused_with_nothing_stored);
