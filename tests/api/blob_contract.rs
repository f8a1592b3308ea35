//! The `BlobStore` contract: one suite, run against the filesystem, the
//! database (both engines) and a real S3-compatible server.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use molecule::blob::{
    BlobError, BlobStore, ByteStream, DatabaseBlobStore, FsBlobStore, S3BlobStore,
};

use crate::helpers::{fresh_postgres_url, random_bytes, require_all_engines};

fn stream_of(bytes: &[u8], chunk: usize) -> ByteStream<'static> {
    let chunks: Vec<io::Result<Bytes>> = bytes
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

async fn read_all(
    blobs: &dyn BlobStore,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let s = blobs.get(key, range).await.unwrap();
    let parts: Vec<Bytes> = s.try_collect().await.unwrap();
    parts.concat()
}

async fn contract(blobs: Arc<dyn BlobStore>) {
    let keys =
        |list: Vec<molecule::blob::BlobEntry>| list.into_iter().map(|b| b.key).collect::<Vec<_>>();
    assert!(
        keys(blobs.list().await.unwrap()).is_empty(),
        "{} starts empty",
        blobs.kind()
    );
    blobs.ping().await.unwrap();
    // Sizes around the database chunk (1 MiB) and the S3 part (8 MiB).
    let small = b"hello blob".to_vec();
    let big = random_bytes(9 * 1024 * 1024 + 123, 42);
    assert_eq!(
        blobs
            .put("uploads/w/small", stream_of(&small, 3))
            .await
            .unwrap(),
        small.len() as u64
    );
    assert_eq!(
        blobs
            .put("uploads/w/big", stream_of(&big, 64 * 1024 + 7))
            .await
            .unwrap(),
        big.len() as u64
    );
    assert_eq!(read_all(&*blobs, "uploads/w/small", None).await, small);
    assert_eq!(read_all(&*blobs, "uploads/w/big", None).await, big);
    for (start, end) in [
        (0u64, 1u64),
        (5, 10),
        (1024 * 1024 - 3, 1024 * 1024 + 3),
        (8 * 1024 * 1024, big.len() as u64),
    ] {
        assert_eq!(
            read_all(&*blobs, "uploads/w/big", Some(start..end)).await,
            &big[start as usize..end as usize],
            "range {start}..{end}"
        );
    }
    assert_eq!(
        keys(blobs.list().await.unwrap()),
        vec!["uploads/w/big".to_owned(), "uploads/w/small".to_owned()]
    );
    assert!(matches!(
        blobs.get("uploads/w/missing", None).await,
        Err(BlobError::NotFound)
    ));
    // A body that fails part-way leaves nothing under its key, small or big.
    for (key, before) in [
        ("uploads/w/failed-small", 100usize),
        ("uploads/w/failed-big", 9 * 1024 * 1024),
    ] {
        let good = random_bytes(before, 7);
        let chunks: Vec<io::Result<Bytes>> = good
            .chunks(256 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .chain(std::iter::once(Err(io::Error::other("client went away"))))
            .collect();
        let err = blobs
            .put(key, futures::stream::iter(chunks).boxed())
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::Body(_)), "{err:?}");
        assert!(
            matches!(blobs.get(key, None).await, Err(BlobError::NotFound)),
            "{key}"
        );
    }
    assert_eq!(
        keys(blobs.list().await.unwrap()).len(),
        2,
        "{}: no leftovers",
        blobs.kind()
    );
    blobs.delete("uploads/w/small").await.unwrap();
    blobs.delete("uploads/w/small").await.unwrap();
    blobs.delete("uploads/w/big").await.unwrap();
    assert!(keys(blobs.list().await.unwrap()).is_empty());
    // Batches: present and absent keys alike, nothing fails, nothing stays.
    let batch: Vec<String> = (0..40).map(|i| format!("uploads/many/{i}")).collect();
    for key in &batch[..30] {
        blobs.put(key, stream_of(key.as_bytes(), 4)).await.unwrap();
    }
    assert_eq!(keys(blobs.list().await.unwrap()).len(), 30);
    assert_eq!(blobs.delete_many(&batch).await, 0);
    assert!(
        keys(blobs.list().await.unwrap()).is_empty(),
        "{} after delete_many",
        blobs.kind()
    );
}

#[tokio::test]
async fn filesystem_blob_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(Arc::new(FsBlobStore::open(dir.path()).await.unwrap())).await;
    // Keys cannot climb out of the root.
    let store = FsBlobStore::open(dir.path()).await.unwrap();
    assert!(store.put("../escape", stream_of(b"x", 1)).await.is_err());
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}

#[tokio::test]
async fn database_blob_store_on_sqlite_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        molecule::store::connect(&format!("sqlite://{}", dir.path().join("b.db").display()))
            .await
            .unwrap();
    store.migrate().await.unwrap();
    contract(Arc::new(DatabaseBlobStore::new(store))).await;
}

#[tokio::test]
async fn database_blob_store_on_postgres_meets_the_contract() {
    let Some(url) = fresh_postgres_url().await else {
        return;
    };
    let store = molecule::store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    contract(Arc::new(DatabaseBlobStore::new(store))).await;
}

/// An S3 blob store on the test server, under a prefix of its own.
pub fn test_s3() -> Option<S3BlobStore> {
    let Ok(bucket) = std::env::var("MOLECULE_TEST_S3_BUCKET") else {
        assert!(
            !require_all_engines(),
            "MOLECULE_TEST_S3_BUCKET is not set but every engine is required"
        );
        eprintln!("skipping: MOLECULE_TEST_S3_BUCKET is not set");
        return None;
    };
    let spool = std::env::temp_dir().join(format!("molecule-spool-{}", uuid::Uuid::new_v4()));
    Some(S3BlobStore::from_env(&bucket, &format!("test-{}", uuid::Uuid::new_v4()), &spool).unwrap())
}

#[tokio::test]
async fn s3_blob_store_meets_the_contract() {
    let Some(store) = test_s3() else { return };
    contract(Arc::new(store)).await;
}

/// Bulk deletes on S3 span several DeleteObjects requests (1,000 keys
/// each) and count per key: every present and absent key of 2,500 goes,
/// and when the requests themselves fail (a bucket that does not exist)
/// every key counts as failed, not one per request.
#[tokio::test]
async fn s3_bulk_deletes_count_every_key() {
    let Some(store) = test_s3() else { return };
    let keys =
        |list: Vec<molecule::blob::BlobEntry>| list.into_iter().map(|b| b.key).collect::<Vec<_>>();
    let batch: Vec<String> = (0..2_500).map(|i| format!("uploads/bulk/{i}")).collect();
    for key in [&batch[0], &batch[1_234], &batch[2_499]] {
        store.put(key, stream_of(key.as_bytes(), 4)).await.unwrap();
    }
    assert_eq!(keys(store.list().await.unwrap()).len(), 3);
    assert_eq!(store.delete_many(&batch).await, 0);
    assert!(keys(store.list().await.unwrap()).is_empty());

    let spool = std::env::temp_dir().join(format!("molecule-spool-{}", uuid::Uuid::new_v4()));
    let missing = format!("no-such-bucket-{}", uuid::Uuid::new_v4().simple());
    let nowhere = S3BlobStore::from_env(&missing, "test", &spool).unwrap();
    assert_eq!(nowhere.delete_many(&batch).await, batch.len());
}
