//! Last-used stamps of tokens, written in batches: a request records its
//! token's use in memory ([`TokenUses::record`], no database write) and
//! this job writes what piled up since its last pass in one transaction.
//! A replica whose pass is skipped (another holds the sweep lock) keeps
//! its uses for its next pass, so a stamp is at most a few passes late.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Counts, Job, JobContext, JobError};
use crate::domain::TokenHash;

const COUNTS: &[&str] = &["stamped"];

/// The uses of tokens not yet written: the latest instant per token.
#[derive(Debug, Clone, Default)]
pub struct TokenUses(Arc<Mutex<HashMap<TokenHash, DateTime<Utc>>>>);

impl TokenUses {
    /// Notes that `token` authenticated a request at `at`.
    pub fn record(&self, token: TokenHash, at: DateTime<Utc>) {
        let mut uses = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let last = uses.entry(token).or_insert(at);
        if *last < at {
            *last = at;
        }
    }

    /// Takes every use noted so far.
    fn drain(&self) -> Vec<(TokenHash, DateTime<Utc>)> {
        let mut uses = self.0.lock().unwrap_or_else(|e| e.into_inner());
        uses.drain().collect()
    }

    /// Puts uses back after a failed write (a later use of the same token
    /// wins).
    fn restore(&self, uses: Vec<(TokenHash, DateTime<Utc>)>) {
        for (token, at) in uses {
            self.record(token, at);
        }
    }
}

/// Writes the piled-up last-used stamps; counts the rows as `stamped`.
pub(super) struct StampTokenUses;

#[async_trait]
impl Job for StampTokenUses {
    fn name(&self) -> &'static str {
        "token_uses"
    }

    fn counts(&self) -> &'static [&'static str] {
        COUNTS
    }

    async fn step(&self, cx: &JobContext, _now: DateTime<Utc>) -> Result<Counts, JobError> {
        let mut out = Counts::zero(COUNTS);
        let uses = cx.token_uses.drain();
        match cx.store.touch_tokens(&uses).await {
            Ok(n) => out.add("stamped", n),
            Err(e) => {
                cx.token_uses.restore(uses);
                return Err(e.into());
            }
        }
        Ok(out)
    }
}
