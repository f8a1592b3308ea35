//! Agent memory beyond the store: the embedder client, hybrid recall, and
//! who may read whose TEAM memories.
//!
//! Recall runs two rankings over the same readable set — the engine's
//! full-text rank and, when an embedder is configured, cosine similarity
//! of stored vectors computed here — and fuses them by reciprocal rank
//! (k = 60). The readable filter is part of every statement, so ranking
//! only ever sees memories the caller may read. Decoded vectors are kept
//! in a [`VectorCache`]: a recall asks the database only for the ids it
//! may read and the vectors it has not decoded yet. A failing embedder never
//! fails a request: a commit stores the row without a vector (the sweeper
//! back-fills it), a recall falls back to full-text rank alone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::domain::memory::{
    encode_vector, reciprocal_rank_fusion, unit_vector, Quantized, SearchTerms,
};
use crate::domain::{MemoryId, WorkspaceId};
use crate::store::{Memory, MemoryFilter, Store, StoreResult};

/// How many candidates each ranking contributes to the fusion.
pub const CANDIDATES: i64 = 100;

/// How long one embedding call may take: a commit waits for it.
pub const EMBED_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of an OpenAI-compatible `/v1/embeddings` endpoint.
#[derive(Debug, Clone)]
pub struct Embedder {
    client: reqwest::Client,
    url: Arc<str>,
    model: Arc<str>,
}

#[derive(Deserialize)]
struct EmbeddingsAnswer {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
}

impl Embedder {
    /// A client for the endpoint at `url` (the full URL, e.g.
    /// `http://127.0.0.1:8081/v1/embeddings`) asking for `model`. The
    /// operator configured the URL, so private addresses are allowed.
    pub fn new(url: &str, model: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(EMBED_TIMEOUT)
            .build()
            .context("failed to build the embeddings client")?;
        Ok(Self {
            client,
            url: url.into(),
            model: model.into(),
        })
    }

    /// The model vectors are tagged with.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The vector of `text`, encoded as stored (little-endian float32).
    pub async fn embed(&self, text: &str) -> anyhow::Result<Vec<u8>> {
        let answer = self
            .client
            .post(&*self.url)
            .json(&serde_json::json!({"model": &*self.model, "input": [text]}))
            .send()
            .await
            .context("the embeddings endpoint is unreachable")?
            .error_for_status()
            .context("the embeddings endpoint refused the request")?
            .json::<EmbeddingsAnswer>()
            .await
            .context("the embeddings endpoint answered something else than embeddings")?;
        let vector = answer
            .data
            .into_iter()
            .next()
            .map(|d| d.embedding)
            .filter(|v| !v.is_empty() && v.iter().all(|x| x.is_finite()))
            .context("the embeddings endpoint answered no usable vector")?;
        Ok(encode_vector(&vector))
    }
}

/// The workspaces whose TEAM memories `caller` may read — the ONE place
/// the TEAM rule is applied to memory.
///
/// The rule is the communication rule ([`crate::domain::team::may_reach`]): the caller
/// itself, its siblings, and its ancestors and descendants up to
/// [`crate::domain::team::MAX_LEVELS`] levels away. Removed workspaces
/// are left out (their memories go with them when the sweeper purges them).
pub async fn team_of(store: &dyn Store, caller: WorkspaceId) -> StoreResult<Vec<WorkspaceId>> {
    // One recursive query over the caller's neighbourhood (the rule in
    // SQL, see `store::fleet`), ids only, not a listing of every
    // workspace; while the tree does not change, the store answers it
    // from its reach cache after reading one generation number. An id that names no workspace reaches nothing: the
    // caller alone.
    let mut team = store.reachable_ids(caller).await?;
    if !team.contains(&caller) {
        team.push(caller);
    }
    Ok(team)
}

/// Whether `caller` may write GLOBAL memories: root workspaces may (the
/// operator always may; the HTTP layer checks that).
pub async fn may_write_global(store: &dyn Store, caller: WorkspaceId) -> StoreResult<bool> {
    Ok(store
        .get_workspace(caller)
        .await?
        .is_some_and(|w| w.parent_id.is_none()))
}

/// The byte budget of the server's [`VectorCache`]: 64 MiB, about 138,000
/// vectors of 384 dimensions (one byte a component, see [`Quantized`]).
pub const VECTOR_CACHE_BYTES: usize = 64 << 20;

/// What one cache entry costs besides its bytes: the key, the scale, the
/// `Arc`'s counts and pointer, the box's pointer, the map's and the
/// queue's slots.
const ENTRY_OVERHEAD: usize = 100;

/// Decoded, unit-length vectors by memory id, within a byte budget, each
/// [`Quantized`] to a byte a component: 100,000 vectors of 384 dimensions
/// fit in 48 MiB, so a tree of that size is scored without reading any
/// vector again, and the scan reads a quarter of the bytes.
///
/// Safe to share across replicas without invalidation: a memory's vector
/// never changes once stored ([`Store::set_memory_embedding`] fills only a
/// missing one), and a recall scores only ids the database has just
/// listed as readable — a deleted memory, or one the caller may not read,
/// is never scored even while its vector is still cached. Over budget the
/// oldest entries go first.
#[derive(Debug)]
pub struct VectorCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// An empty vector stands for a stored vector that cannot be compared
    /// (zero, or not float32s): kept so it is not read again.
    vectors: HashMap<MemoryId, Arc<Quantized>>,
    /// Insertion order, oldest first: the eviction order.
    order: VecDeque<MemoryId>,
    bytes: usize,
}

/// A held vector, shared with the cache so scoring runs outside its lock.
type Held = (MemoryId, Arc<Quantized>);

fn entry_bytes(v: &Quantized) -> usize {
    v.len() + ENTRY_OVERHEAD
}

impl VectorCache {
    /// An empty cache holding at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding the lock leaves consistent data (every
        // mutation is complete before the next may panic): keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes held (floats plus per-entry overhead).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How many vectors are held.
    pub fn len(&self) -> usize {
        self.lock().vectors.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the vector of `id` is held.
    pub fn contains(&self, id: MemoryId) -> bool {
        self.lock().vectors.contains_key(&id)
    }

    /// The held vectors of `ids`, and the ids not held.
    fn split(&self, ids: &[MemoryId]) -> (Vec<Held>, Vec<MemoryId>) {
        let inner = self.lock();
        let mut held = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match inner.vectors.get(id) {
                Some(v) => held.push((*id, v.clone())),
                None => missing.push(*id),
            }
        }
        (held, missing)
    }

    /// Holds the vector of `id` decoded from its stored bytes (unit
    /// length, quantized), evicting the oldest entries while over budget;
    /// returns it.
    pub fn insert(&self, id: MemoryId, stored: &[u8]) -> Arc<Quantized> {
        let v =
            Arc::new(unit_vector(stored).map_or_else(Quantized::default, |v| Quantized::new(&v)));
        let size = entry_bytes(&v);
        if size > self.budget {
            return v;
        }
        let mut inner = self.lock();
        if inner.vectors.insert(id, v.clone()).is_none() {
            inner.order.push_back(id);
            inner.bytes += size;
        }
        while inner.bytes > self.budget {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.vectors.remove(&old) {
                inner.bytes -= entry_bytes(&gone);
            }
        }
        v
    }
}

/// The vector half of recall: the readable memories with a vector of
/// `model`, best cosine similarity to `query` first (of the quantized
/// vectors: within about 0.01 of the exact cosine), at most
/// [`CANDIDATES`], none with a similarity of zero or less.
pub async fn vector_candidates(
    store: &dyn Store,
    cache: &VectorCache,
    filter: &MemoryFilter,
    model: &str,
    query: &[u8],
) -> StoreResult<Vec<MemoryId>> {
    let Some(query) = unit_vector(query) else {
        return Ok(Vec::new());
    };
    // The readable filter stays in SQL: only these ids are ever scored.
    let ids = store.memory_vector_ids(filter, model).await?;
    let (mut vectors, missing) = cache.split(&ids);
    if !missing.is_empty() {
        for (id, stored) in store.memory_vectors(&missing).await? {
            vectors.push((id, cache.insert(id, &stored)));
        }
    }
    let mut scored: Vec<(MemoryId, f32)> = vectors
        .iter()
        .filter_map(|(id, v)| v.dot(&query).map(|s| (*id, s)))
        .filter(|(_, s)| *s > 0.0)
        .collect();
    let best_first = |a: &(MemoryId, f32), b: &(MemoryId, f32)| b.1.total_cmp(&a.1);
    if scored.len() > CANDIDATES as usize {
        scored.select_nth_unstable_by(CANDIDATES as usize, best_first);
        scored.truncate(CANDIDATES as usize);
    }
    scored.sort_by(best_first);
    Ok(scored.into_iter().map(|(id, _)| id).collect())
}

/// One recalled memory and its fused score.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The memory.
    pub memory: Memory,
    /// Reciprocal-rank-fusion score: higher is better.
    pub score: f64,
}

/// Hybrid recall over the readable set of `filter`: full-text candidates
/// for `terms`, and, when `query_vector` is given (`(model, vector)`), the
/// readable memories of that model by cosine similarity; fused, best
/// first, at most `limit`.
pub async fn recall(
    store: &dyn Store,
    cache: &VectorCache,
    filter: &MemoryFilter,
    terms: &SearchTerms,
    query_vector: Option<(&str, &[u8])>,
    limit: i64,
) -> StoreResult<Vec<Hit>> {
    let mut lists: Vec<Vec<MemoryId>> =
        vec![store.search_memories(filter, terms, CANDIDATES).await?];
    if let Some((model, query)) = query_vector {
        lists.push(vector_candidates(store, cache, filter, model, query).await?);
    }
    let mut fused = reciprocal_rank_fusion(&lists);
    fused.truncate(limit.max(0) as usize);
    let ids: Vec<MemoryId> = fused.iter().map(|(id, _)| *id).collect();
    let mut rows = store.get_memories(&ids).await?;
    let mut hits = Vec::with_capacity(fused.len());
    for (id, score) in fused {
        // A memory deleted between the two reads simply drops out.
        if let Some(i) = rows.iter().position(|m| m.id == id) {
            hits.push(Hit {
                memory: rows.swap_remove(i),
                score,
            });
        }
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::memory::dot;

    fn stored(dims: usize, seed: f32) -> Vec<u8> {
        encode_vector(&(0..dims).map(|i| i as f32 + seed).collect::<Vec<_>>())
    }

    #[test]
    fn cache_evicts_oldest_first_within_its_budget() {
        let one = entry_bytes(&Quantized::new(&[0f32; 4]));
        let cache = VectorCache::new(3 * one);
        let ids: Vec<MemoryId> = (0..5).map(|_| MemoryId::new()).collect();
        for (i, id) in ids.iter().enumerate() {
            let v = cache.insert(*id, &stored(4, i as f32));
            let exact = unit_vector(&stored(4, i as f32)).unwrap();
            assert!((v.dot(&exact).unwrap() - 1.0).abs() < 0.01, "unit length");
            assert!((dot(&exact, &exact).unwrap() - 1.0).abs() < 1e-6);
            assert!(cache.bytes() <= 3 * one);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.bytes(), 3 * one);
        assert!(!cache.contains(ids[0]) && !cache.contains(ids[1]));
        assert!(ids[2..].iter().all(|id| cache.contains(*id)));
        // The same id again neither counts twice nor evicts anything.
        cache.insert(ids[4], &stored(4, 4.0));
        assert_eq!((cache.len(), cache.bytes()), (3, 3 * one));
        // A vector larger than the whole budget is returned, not held.
        let big = MemoryId::new();
        assert_eq!(cache.insert(big, &stored(400, 1.0)).len(), 400);
        assert!(!cache.contains(big));
        assert_eq!(cache.len(), 3);
        // A vector that cannot be compared is held as empty: read once.
        let zero = MemoryId::new();
        assert!(cache.insert(zero, &encode_vector(&[0.0; 4])).is_empty());
        assert!(cache.contains(zero));
        assert_eq!(
            cache.bytes(),
            3 * one - one + entry_bytes(&Quantized::default())
        );
    }
}
