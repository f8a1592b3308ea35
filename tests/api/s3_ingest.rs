//! Uploads streamed to S3 as they arrive: files larger than one part land
//! whole with the hash answered; a cut-short or dropped upload leaves no
//! object and no open multipart upload in the bucket (checked with the
//! bucket's own listing of multipart uploads); uploads over the memory
//! budget spill to the spool folder and still land whole.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use molecule::blob::{BlobError, BlobStore, ByteStream, S3BlobStore};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use crate::helpers::{
    eventually, random_bytes, require_all_engines, sha256_hex, spawn_app_with, Engine, Options,
};

const MIB: usize = 1024 * 1024;

/// The test bucket, or `None` (skipped) outside CI without one.
fn bucket() -> Option<String> {
    match std::env::var("MOLECULE_TEST_S3_BUCKET") {
        Ok(b) => Some(b),
        Err(_) => {
            assert!(
                !require_all_engines(),
                "MOLECULE_TEST_S3_BUCKET is not set but every engine is required"
            );
            eprintln!("skipping: MOLECULE_TEST_S3_BUCKET is not set");
            None
        }
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// The multipart uploads open in the bucket under `prefix`, by key: the
/// S3 `ListMultipartUploads` call, signed (SigV4) by hand since the
/// object store crate has no such listing.
async fn open_multipart_uploads(bucket: &str, prefix: &str) -> Vec<String> {
    let endpoint = std::env::var("AWS_ENDPOINT").expect("AWS_ENDPOINT");
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY");
    let host = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let now = chrono::Utc::now();
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let day = now.format("%Y%m%d").to_string();
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%2D", "-")
            .replace("%2E", ".")
            .replace("%5F", "_")
            .replace("%7E", "~")
    };
    let query = format!("prefix={}&uploads=", enc(prefix));
    let payload = "UNSIGNED-PAYLOAD";
    let signed = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "GET\n/{bucket}\n{query}\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\n{signed}\n{payload}"
    );
    let scope = format!("{day}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut k = format!("AWS4{secret}").into_bytes();
    for part in [day.as_str(), region.as_str(), "s3", "aws4_request"] {
        k = hmac(&k, part.as_bytes());
    }
    let signature = hex::encode(hmac(&k, to_sign.as_bytes()));
    let resp = reqwest::Client::new()
        .get(format!("{}/{bucket}?{query}", endpoint.trim_end_matches('/')))
        .header("x-amz-content-sha256", payload)
        .header("x-amz-date", &amz_date)
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, Signature={signature}"
            ),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let xml = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "ListMultipartUploads: {xml}");
    xml.split("<Upload>")
        .skip(1)
        .map(|u| {
            let key = u.split("<Key>").nth(1).unwrap_or("");
            key.split("</Key>").next().unwrap_or("").to_owned()
        })
        .collect()
}

/// A store under a fresh prefix, with its own spool folder.
fn store(bucket: &str, prefix: &str, spool: &std::path::Path) -> S3BlobStore {
    S3BlobStore::from_env(bucket, prefix, spool).unwrap()
}

/// `good` in 256 KiB chunks, then (if `fail`) the client going away.
fn body(good: &[u8], fail: bool) -> ByteStream<'static> {
    let mut chunks: Vec<io::Result<Bytes>> = good
        .chunks(256 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    if fail {
        chunks.push(Err(io::Error::other("client went away")));
    }
    futures::stream::iter(chunks).boxed()
}

async fn on_s3_a_file_larger_than_a_part_lands_whole(engine: Engine) {
    let Some(bucket) = bucket() else { return };
    let prefix = format!("ingest-{}", uuid::Uuid::new_v4());
    let blob_store = format!("s3://{bucket}/{prefix}");
    let Some(app) =
        spawn_app_with(Options::new(engine).tweak(move |c| c.blob_store = blob_store)).await
    else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    // One byte, exactly one part (a single PUT), one part and a byte, and
    // three parts with a short last one.
    let files: Vec<Vec<u8>> = [1, 5 * MIB, 5 * MIB + 1, 12 * MIB + 17]
        .iter()
        .enumerate()
        .map(|(i, &n)| random_bytes(n, 300 + i as u64))
        .collect();
    let upload: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, b)| {
            crate::helpers::file(&format!("f{i}.bin"), "application/octet-stream", b.clone())
        })
        .collect();
    let (status, answer) = app.upload(&ws.id, upload).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let answered = answer["files"].as_array().unwrap();
    assert_eq!(answered.len(), files.len());
    for (f, bytes) in answered.iter().zip(&files) {
        assert_eq!(f["size"], bytes.len() as u64);
        assert_eq!(f["sha256"], sha256_hex(bytes));
        let fid = f["uri"].as_str().unwrap().rsplit('/').next().unwrap();
        let resp = app.content(&ws.id, fid, &ws.token).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);
    }
    assert_eq!(app.blob_keys().await.len(), files.len());
    assert_eq!(app.list_pending(&ws).await.len(), files.len());
    assert!(
        open_multipart_uploads(&bucket, &prefix).await.is_empty(),
        "every multipart upload completed"
    );
}
crate::on_both_engines!(on_s3_a_file_larger_than_a_part_lands_whole);

async fn on_s3_an_upload_cut_short_leaves_no_object_and_no_multipart_upload(engine: Engine) {
    let Some(bucket) = bucket() else { return };
    let prefix = format!("cut-{}", uuid::Uuid::new_v4());
    let blob_store = format!("s3://{bucket}/{prefix}");
    let Some(app) =
        spawn_app_with(Options::new(engine).tweak(move |c| c.blob_store = blob_store)).await
    else {
        return;
    };
    let ws = app.create_poll_workspace("w").await;
    // Two whole parts sent (so a multipart upload is open, with parts in
    // it), then the client goes away mid-file.
    let mut head = b"--cUt\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    head.extend_from_slice(&random_bytes(11 * MIB, 5));
    let chunks: Vec<io::Result<Vec<u8>>> = head
        .chunks(256 * 1024)
        .map(|c| Ok(c.to_vec()))
        .chain(std::iter::once(Err(io::Error::other("client went away"))))
        .collect();
    let sent = app
        .upload_raw(
            &ws.id,
            "cUt",
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await;
    assert!(sent.is_err(), "the request cannot complete: {sent:?}");
    eventually("the cut-short upload is aborted", || {
        let (bucket, prefix) = (bucket.clone(), prefix.clone());
        async move { open_multipart_uploads(&bucket, &prefix).await.is_empty() }
    })
    .await;
    assert!(app.blob_keys().await.is_empty());
    assert!(app.list_pending(&ws).await.is_empty());
}
crate::on_both_engines!(on_s3_an_upload_cut_short_leaves_no_object_and_no_multipart_upload);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_dropped_s3_put_leaves_no_multipart_upload() {
    let Some(bucket) = bucket() else { return };
    let prefix = format!("abort-{}", uuid::Uuid::new_v4());
    let spool = tempfile::tempdir().unwrap();
    let s3 = Arc::new(store(&bucket, &prefix, &spool.path().join("spool")));

    // A body that fails after two parts: an error, nothing left.
    let err = s3
        .put("uploads/w/failed", body(&random_bytes(11 * MIB, 1), true))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Body(_)), "{err:?}");
    assert!(open_multipart_uploads(&bucket, &prefix).await.is_empty());
    assert!(s3.list().await.unwrap().is_empty());

    // A put whose future is dropped while its multipart upload is open
    // (the body stalls after two parts): aborted in the background.
    let stalled = body(&random_bytes(11 * MIB, 2), false).chain(futures::stream::pending());
    let putting = {
        let s3 = s3.clone();
        tokio::spawn(async move { s3.put("uploads/w/dropped", stalled.boxed()).await })
    };
    eventually("the stalled upload's multipart upload is open", || {
        let (bucket, prefix) = (bucket.clone(), prefix.clone());
        async move { !open_multipart_uploads(&bucket, &prefix).await.is_empty() }
    })
    .await;
    assert_eq!(
        open_multipart_uploads(&bucket, &prefix).await,
        vec![format!("{prefix}/uploads/w/dropped")]
    );
    putting.abort();
    assert!(putting.await.unwrap_err().is_cancelled());
    eventually("the dropped upload is aborted", || {
        let (bucket, prefix) = (bucket.clone(), prefix.clone());
        async move { open_multipart_uploads(&bucket, &prefix).await.is_empty() }
    })
    .await;
    assert!(s3.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_uploads_over_the_memory_budget_spill_to_the_spool_and_land_whole() {
    let Some(bucket) = bucket() else { return };
    let prefix = format!("spill-{}", uuid::Uuid::new_v4());
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = spool_dir.path().join("spool");
    let s3 = Arc::new(store(&bucket, &prefix, &spool));
    // More uploads, each holding most of a part in memory and then
    // stalling, than the fill budget has parts for: some must spill.
    let n = molecule::blob::S3_FILL_BUDGET / molecule::blob::S3_PART_SIZE + 2;
    let files: Vec<Vec<u8>> = (0..n)
        .map(|i| random_bytes(12 * MIB + i, 40 + i as u64))
        .collect();
    let mut gates = Vec::new();
    let mut puts = Vec::new();
    for (i, bytes) in files.iter().enumerate() {
        let (open, gate) = tokio::sync::oneshot::channel::<()>();
        gates.push(open);
        let first = body(&bytes[..4 * MIB], false);
        let rest = body(&bytes[4 * MIB..], false);
        let stream = first
            .chain(futures::stream::once(async move {
                let _ = gate.await;
                Ok(Bytes::new())
            }))
            .chain(rest)
            .boxed();
        let s3 = s3.clone();
        puts.push(tokio::spawn(async move {
            s3.put(&format!("uploads/w/{i}"), stream).await
        }));
    }
    eventually("an upload spilled to the spool folder", || {
        let spool = spool.clone();
        async move { std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0) > 0 }
    })
    .await;
    for open in gates {
        open.send(()).unwrap();
    }
    for (put, bytes) in puts.into_iter().zip(&files) {
        assert_eq!(put.await.unwrap().unwrap(), bytes.len() as u64);
    }
    for (i, bytes) in files.iter().enumerate() {
        let got: Vec<Bytes> = s3
            .get(&format!("uploads/w/{i}"), None)
            .await
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(sha256_hex(&got.concat()), sha256_hex(bytes), "file {i}");
    }
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool files are removed"
    );
    assert!(open_multipart_uploads(&bucket, &prefix).await.is_empty());
    let keys = s3.list().await.unwrap();
    assert_eq!(keys.len(), n);
    assert_eq!(
        s3.delete_many(&keys.into_iter().map(|k| k.key).collect::<Vec<_>>())
            .await,
        0
    );
}
