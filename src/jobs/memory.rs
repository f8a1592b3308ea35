//! Memory's upkeep: vectors of memories committed while the embedder was
//! failing are computed afterwards.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Counts, Job, JobContext, JobError, BATCH};
use crate::domain::MemoryId;
use crate::metrics::Metrics;

const COUNTS: &[&str] = &["backfilled"];

/// Computes the vectors of memories that have none, one batch per pass,
/// when an embedder is configured; counts them as `backfilled`. Stops at
/// the first failure (the embedder is likely still down; the next pass
/// retries).
pub(super) struct BackfillEmbeddings;

#[async_trait]
impl Job for BackfillEmbeddings {
    fn name(&self) -> &'static str {
        "memory_embeddings"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, _now: DateTime<Utc>) -> Result<Counts, JobError> {
        let mut out = Counts::zero(COUNTS);
        let Some(embedder) = &cx.embedder else {
            return Ok(out);
        };
        for (id, content) in cx.store.memories_without_embedding(BATCH).await? {
            let vector = match embedder.embed(&content).await {
                Ok(v) => v,
                Err(e) => {
                    announce_failure(&cx.metrics, id, &e);
                    break;
                }
            };
            if cx
                .store
                .set_memory_embedding(id, &vector, embedder.model())
                .await?
            {
                out.add("backfilled", 1);
                cx.metrics.memory_embeddings_backfilled.inc();
            }
        }
        Ok(out)
    }
}

/// Counts and logs a back-fill the embedder refused.
fn announce_failure(metrics: &Metrics, id: MemoryId, e: &anyhow::Error) {
    metrics.memory_embedding_failures.inc();
    tracing::warn!(memory_id = %id, error = %format!("{e:#}"), "embedding back-fill failed; retrying next pass");
}
