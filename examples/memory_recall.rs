//! Recall latency of agent memory as the number of memories per tree grows.
//!
//! ```sh
//! cargo run --release --example memory_recall                # SQLite in a temp dir
//! cargo run --release --example memory_recall -- postgres://… # an EMPTY PostgreSQL database
//! ```
//!
//! For each size N it fills one tree (8 workspaces; memories spread over
//! LOCAL/TEAM/GLOBAL) with N memories of 12–40 words drawn from a
//! 5,000-word vocabulary, each with a 384-dimension vector (a hashed bag
//! of words, the size of common small embedding models), then runs 200
//! hybrid recalls (full-text + cosine over the readable set, fused) as one
//! workspace and prints p50 / p99, then each half alone and the first
//! recall after the fill (the one that decodes the new vectors). The embedder itself is not timed: the
//! query vector is computed here, as the server would receive it.
//!
//! After the last size it times commits: 16 writers at once, each
//! inserting one memory (with its vector) per commit through the store,
//! and prints the commit p50 / p99 and the rate.
//!
//! `MEMORY_RECALL_SIZES=1000,100000` chooses the sizes (cumulative fills
//! of the same tree); `MEMORY_RECALL_KEEP=1` keeps the SQLite file and
//! prints its path (to profile statements with the `sqlite3` shell).

use std::time::Instant;

use chrono::Utc;
use molecule::domain::memory::{dot, encode_vector, unit_vector, Reader, Scope, SearchTerms};
use molecule::domain::{MemoryId, WorkspaceId};
use molecule::memory::{recall, vector_candidates, VectorCache, CANDIDATES, VECTOR_CACHE_BYTES};
use molecule::store::MemoryFilter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIMS: usize = 384;
const SIZES: &[usize] = &[1_000, 5_000, 10_000, 20_000, 50_000, 100_000];
const QUERIES: usize = 200;
const WRITERS: usize = 16;
const COMMITS_PER_WRITER: usize = 100;

fn sizes() -> Vec<usize> {
    match std::env::var("MEMORY_RECALL_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .replace('_', "")
                    .parse()
                    .expect("sizes are numbers")
            })
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

fn vector(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    for word in text.split_whitespace() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        v[(h % DIMS as u64) as usize] += 1.0;
        v[((h >> 32) % DIMS as u64) as usize] += 0.5;
    }
    v
}

fn word(i: usize) -> String {
    // Pronounceable, distinct: two syllables from a base-20 number.
    const S: [&str; 20] = [
        "ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "va", "de", "zu", "fi", "go", "ha", "ju",
        "be", "co", "wa", "xi", "ye",
    ];
    let mut n = i;
    let mut out = String::new();
    for _ in 0..3 {
        out.push_str(S[n % 20]);
        n /= 20;
    }
    out
}

fn sentence(rng: &mut StdRng) -> String {
    let len = rng.random_range(12..=40);
    (0..len)
        .map(|_| {
            // Zipf-ish: low ids far more common.
            let r: f64 = rng.random();
            word((r * r * r * 5000.0) as usize)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn fill(url: &str, n: usize, tree: &[WorkspaceId], rng: &mut StdRng) -> anyhow::Result<()> {
    // Bulk insert in one transaction per 1,000 rows straight through sqlx:
    // the store's one-row commits would spend the run in fsync.
    let rows: Vec<(MemoryId, WorkspaceId, Scope, String, Vec<u8>)> = (0..n)
        .map(|i| {
            let content = sentence(rng);
            let scope = match i % 3 {
                0 => Scope::Local,
                1 => Scope::Team,
                _ => Scope::Global,
            };
            let v = encode_vector(&vector(&content));
            (MemoryId::new(), tree[i % tree.len()], scope, content, v)
        })
        .collect();
    let now = Utc::now();
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        for chunk in rows.chunks(1000) {
            let mut tx = pool.begin().await?;
            for (id, ws, scope, content, v) in chunk {
                sqlx::query(
                    "INSERT INTO memories (id, workspace_id, scope, namespace, content, embedding, \
                     embedding_model, created_at) VALUES ($1, $2, $3, 'general', $4, $5, 'bench', $6)",
                )
                .bind(id.to_string())
                .bind(ws.to_string())
                .bind(scope.as_str())
                .bind(content)
                .bind(v)
                .bind(now.timestamp_micros())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        for chunk in rows.chunks(1000) {
            let mut tx = pool.begin().await?;
            for (id, ws, scope, content, v) in chunk {
                sqlx::query(
                    "INSERT INTO memories (id, workspace_id, scope, namespace, content, embedding, \
                     embedding_model, created_at) VALUES ($1, $2, $3, 'general', $4, $5, 'bench', $6)",
                )
                .bind(id.0)
                .bind(ws.0)
                .bind(scope.as_str())
                .bind(content)
                .bind(v)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        sqlx::query("ANALYZE memories").execute(&pool).await?;
    }
    Ok(())
}

/// How many queries per size also run the exact vector search, to report
/// the recall of the cached (quantized) vectors against it.
const EXACT_CHECKS: usize = 20;

/// The vector half computed exactly: every readable vector read from the
/// database, decoded as float32s, scored by cosine; best first, at most
/// [`CANDIDATES`], none at zero or less.
async fn exact_vector_candidates(
    store: &dyn molecule::store::Store,
    filter: &MemoryFilter,
    query: &[u8],
) -> anyhow::Result<Vec<MemoryId>> {
    let query = unit_vector(query).expect("the query has a direction");
    let ids = store.memory_vector_ids(filter, "bench").await?;
    let mut scored: Vec<(MemoryId, f32)> = Vec::new();
    for chunk in ids.chunks(5_000) {
        for (id, stored) in store.memory_vectors(chunk).await? {
            if let Some(s) = unit_vector(&stored).and_then(|v| dot(&query, &v)) {
                if s > 0.0 {
                    scored.push((id, s));
                }
            }
        }
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(CANDIDATES as usize);
    Ok(scored.into_iter().map(|(id, _)| id).collect())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut dir = tempfile::tempdir()?;
    if std::env::var_os("MEMORY_RECALL_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("kept: {}", dir.path().join("bench.db").display());
    }
    let given = std::env::args().nth(1);
    println!("engine    N memories/tree   recall p50 (ms)   p99 (ms)   hits/query");
    let mut filled = 0;
    let url = given
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let store = molecule::store::connect(&url).await?;
    store.migrate().await?;
    let tree: Vec<WorkspaceId> = (0..8).map(|_| WorkspaceId::new()).collect();
    let reader = Reader::Workspace {
        id: tree[0],
        // The reader's team: itself and its parent/children/siblings; in
        // a tree of 8 that is most of it.
        team: tree[..6].to_vec(),
    };
    let filter = MemoryFilter {
        reader,
        scope: None,
        namespace: None,
    };
    // The server's cache and budget: vectors decoded once, then reused.
    let cache = VectorCache::new(VECTOR_CACHE_BYTES);
    let mut rng = StdRng::seed_from_u64(7);
    for n in sizes() {
        fill(&url, n - filled, &tree, &mut rng).await?;
        filled = n;
        let mut times = Vec::with_capacity(QUERIES);
        let mut hits = 0;
        let mut cold = 0.0;
        let (mut fts, mut vec) = (Vec::new(), Vec::new());
        let (mut found10, mut found100, mut wanted10, mut wanted100) = (0, 0, 0, 0);
        let mut uncached = Vec::new();
        for _ in 0..QUERIES {
            let len = rng.random_range(2..=6);
            let q: String = (0..len)
                .map(|_| {
                    let r: f64 = rng.random();
                    word((r * r * 5000.0) as usize)
                })
                .collect::<Vec<_>>()
                .join(" ");
            let qv = encode_vector(&vector(&q));
            let start = Instant::now();
            let found = recall(
                &*store,
                &cache,
                &filter,
                &SearchTerms::parse(&q),
                Some(("bench", &qv)),
                20,
            )
            .await?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            if times.len() == 1 {
                cold = times[0];
            }
            hits += found.len();
            // Profile: each half alone, the vector half with a warm cache.
            let t = Instant::now();
            store
                .search_memories(&filter, &SearchTerms::parse(&q), CANDIDATES)
                .await?;
            fts.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let got = vector_candidates(&*store, &cache, &filter, "bench", &qv).await?;
            vec.push(t.elapsed().as_secs_f64() * 1000.0);
            if fts.len() <= EXACT_CHECKS {
                let t = Instant::now();
                let exact = exact_vector_candidates(&*store, &filter, &qv).await?;
                uncached.push(t.elapsed().as_secs_f64() * 1000.0);
                for (k, found) in [(10, &mut found10), (100, &mut found100)] {
                    let want = &exact[..k.min(exact.len())];
                    *found += want
                        .iter()
                        .filter(|id| got[..k.min(got.len())].contains(id))
                        .count();
                }
                (wanted10, wanted100) = (
                    wanted10 + exact.len().min(10),
                    wanted100 + exact.len().min(100),
                );
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{:<9} {:>16}   {:>15.1}   {:>8.1}   {:>10.1}",
            store.engine(),
            n,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            hits as f64 / QUERIES as f64
        );
        for (name, mut t) in [("full-text half", fts), ("vector half", vec)] {
            t.sort_by(f64::total_cmp);
            println!(
                "    {name}: p50 {:.1} ms, p99 {:.1} ms",
                percentile(&t, 0.5),
                percentile(&t, 0.99)
            );
        }
        println!("    first recall after the fill (cold cache for the new memories): {cold:.1} ms");
        uncached.sort_by(f64::total_cmp);
        println!(
            "    vector half reading and decoding every readable vector (no cache): p50 {:.1} ms",
            percentile(&uncached, 0.5)
        );
        println!(
            "    vector half against exact float32 cosine ({EXACT_CHECKS} queries): recall@10 {:.4}, recall@100 {:.4}",
            found10 as f64 / wanted10.max(1) as f64,
            found100 as f64 / wanted100.max(1) as f64
        );
    }
    commits(&store, &tree).await?;
    store.close().await;
    Ok(())
}

/// 16 writers at once, each committing one memory (with its vector) at a
/// time through the store, as the commit route does after embedding.
async fn commits(
    store: &std::sync::Arc<dyn molecule::store::Store>,
    tree: &[WorkspaceId],
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let ws = tree[w % tree.len()];
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(100 + w as u64);
            let mut times = Vec::with_capacity(COMMITS_PER_WRITER);
            for _ in 0..COMMITS_PER_WRITER {
                let content = sentence(&mut rng);
                let new = molecule::store::NewMemory {
                    id: MemoryId::new(),
                    workspace_id: ws,
                    scope: Scope::Team,
                    namespace: "general".into(),
                    embedding: Some(encode_vector(&vector(&content))),
                    embedding_model: Some("bench".into()),
                    content,
                    created_at: Utc::now(),
                };
                let t = Instant::now();
                store.insert_memory(&new).await?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(times)
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    println!(
        "commits, {WRITERS} writers: p50 {:.1} ms, p99 {:.1} ms, {:.0}/s",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.len() as f64 / secs
    );
    Ok(())
}
