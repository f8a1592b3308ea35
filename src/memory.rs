//! Agent memory beyond the store: the embedder client, hybrid recall, and
//! who may read whose TEAM memories.
//!
//! Recall runs two rankings over the same readable set — the engine's
//! full-text rank and, when an embedder is configured, cosine similarity
//! of stored vectors computed here — and fuses them by reciprocal rank
//! (k = 60). The readable filter is part of every statement, so ranking
//! only ever sees memories the caller may read. A failing embedder never
//! fails a request: a commit stores the row without a vector (the sweeper
//! back-fills it), a recall falls back to full-text rank alone.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::domain::memory::{cosine_bytes, encode_vector, reciprocal_rank_fusion, SearchTerms};
use crate::domain::team::{self, Caller};
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
/// The rule is the communication rule ([`team::may_reach`]): the caller
/// itself, its parent, its children and its siblings. Removed workspaces
/// are left out (their memories go with them when the sweeper purges them).
pub async fn team_of(store: &dyn Store, caller: WorkspaceId) -> StoreResult<Vec<WorkspaceId>> {
    let Some(me) = store.get_workspace(caller).await? else {
        return Ok(vec![caller]);
    };
    let from = Caller::Workspace(me.node());
    let mut team: Vec<WorkspaceId> = store
        .list_workspaces()
        .await?
        .into_iter()
        .filter(|w| w.is_live() && team::may_reach(from, w.node()))
        .map(|w| w.id)
        .collect();
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
    filter: &MemoryFilter,
    terms: &SearchTerms,
    query_vector: Option<(&str, &[u8])>,
    limit: i64,
) -> StoreResult<Vec<Hit>> {
    let mut lists: Vec<Vec<MemoryId>> =
        vec![store.search_memories(filter, terms, CANDIDATES).await?];
    if let Some((model, query)) = query_vector {
        let mut scored: Vec<(MemoryId, f64)> = store
            .memory_vectors(filter, model)
            .await?
            .into_iter()
            .filter_map(|(id, v)| cosine_bytes(query, &v).map(|s| (id, s)))
            .filter(|(_, s)| *s > 0.0)
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(CANDIDATES as usize);
        lists.push(scored.into_iter().map(|(id, _)| id).collect());
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
