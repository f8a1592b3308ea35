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
//! workspace and prints p50 / p99. The embedder itself is not timed: the
//! query vector is computed here, as the server would receive it.

use std::time::Instant;

use chrono::Utc;
use molecule::domain::memory::{encode_vector, Reader, Scope, SearchTerms};
use molecule::domain::{MemoryId, WorkspaceId};
use molecule::memory::recall;
use molecule::store::MemoryFilter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIMS: usize = 384;
const SIZES: &[usize] = &[1_000, 5_000, 10_000, 20_000, 50_000];
const QUERIES: usize = 200;

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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
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
    let mut rng = StdRng::seed_from_u64(7);
    for &n in SIZES {
        fill(&url, n - filled, &tree, &mut rng).await?;
        filled = n;
        let mut times = Vec::with_capacity(QUERIES);
        let mut hits = 0;
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
                &filter,
                &SearchTerms::parse(&q),
                Some(("bench", &qv)),
                20,
            )
            .await?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            hits += found.len();
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
    }
    store.close().await;
    Ok(())
}
