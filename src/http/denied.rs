//! The trail of refused credentials: when a token the server knows is
//! refused (revoked, expired, or an operator token outside its role or
//! team subtree), one audit row `token.use_denied` names the token (its
//! id and name, never the secret), the route (its template, never the
//! query) and the reason.
//!
//! A client hammering with a revoked token must not flood the trail, nor
//! the database: at most one row per token per minute, counted in this
//! process's memory before anything is looked up (so repeats cost no
//! query), with the memory itself bounded. A bearer string that is not
//! one of ours (no `mol_` scheme) is never looked up and never recorded;
//! one with the scheme that no token ever had is looked up once a minute
//! and recorded nowhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::request::Parts;
use serde_json::json;

use super::AppState;
use crate::audit::Entry;
use crate::domain::audit::Actor;
use crate::domain::{self as d, AuthToken, TokenHash};

/// At most one row per token in this window.
const WINDOW: Duration = Duration::from_secs(60);
/// The most tokens remembered at once; past it (a flood of distinct
/// strings), refusals go unrecorded until the window frees room.
const MAX_TRACKED: usize = 10_000;

/// Why a known token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    /// Revoked (one by one, rotated, or with its workspace).
    Revoked,
    /// Past its expiry.
    Expired,
    /// An operator token whose role does not cover the route.
    Role,
    /// An operator token confined to a team subtree the route is outside.
    Subtree,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Revoked => "revoked",
            Reason::Expired => "expired",
            Reason::Role => "role",
            Reason::Subtree => "subtree",
        }
    }
}

/// When each recently refused token was last recorded (or looked up).
#[derive(Debug, Clone, Default)]
pub struct DeniedUses(Arc<Mutex<HashMap<TokenHash, Instant>>>);

impl DeniedUses {
    /// Whether a refusal of `token` may be recorded at `now`; counts it
    /// when so.
    fn admit(&self, token: TokenHash, now: Instant) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get(&token)
            .is_some_and(|at| now.duration_since(*at) < WINDOW)
        {
            return false;
        }
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, at| now.duration_since(*at) < WINDOW);
            if seen.len() >= MAX_TRACKED {
                return false;
            }
        }
        seen.insert(token, now);
        true
    }
}

/// Records that `token` was refused on the route of `parts`: for `reason`
/// when the caller knows it (an operator token's role or subtree), else
/// for whatever the store says (revoked or expired; nothing for a token
/// it never had). Never fails the request: a failed write is logged.
pub(super) async fn record(
    state: &AppState,
    parts: &Parts,
    token: &AuthToken,
    reason: Option<Reason>,
) {
    if !token.expose().starts_with("mol_") || !state.denied.admit(token.hash(), Instant::now()) {
        return;
    }
    let known = match state.store.known_token(token.hash()).await {
        Ok(Some(known)) => known,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not look up a refused token for the audit trail");
            return;
        }
    };
    let reason = match reason {
        Some(reason) => reason,
        None if known.revoked_at.is_some() => Reason::Revoked,
        None if known.expires_at.is_some_and(|at| at <= d::now()) => Reason::Expired,
        // Live after all (refused for another cause): not this trail's.
        None => return,
    };
    let route = format!(
        "{} {}",
        parts.method,
        parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str)
            .unwrap_or_default()
    );
    tracing::info!(token_id = %known.id, route, reason = reason.as_str(), "refused a known token");
    let mut entry = Entry::new(Actor::Token(known.id), "token.use_denied")
        .target(format!("token:{}", known.id))
        .details(json!({"route": route, "reason": reason.as_str(), "name": known.name}));
    if let Some(ws) = known.workspace_id {
        entry = entry.workspace(ws);
    }
    // Straight to the auditor: `http::audit` reads the caller (`auth`),
    // which records here.
    state.audit.record(state.store.as_ref(), entry).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per token per window; another token has its own.
    #[test]
    fn a_token_is_admitted_once_per_window() {
        let uses = DeniedUses::default();
        let (a, b) = (TokenHash([1; 32]), TokenHash([2; 32]));
        let t0 = Instant::now();
        assert!(uses.admit(a, t0));
        assert!(!uses.admit(a, t0 + Duration::from_secs(59)));
        assert!(uses.admit(b, t0 + Duration::from_secs(1)));
        assert!(uses.admit(a, t0 + WINDOW));
    }

    /// The memory stays bounded: a full map admits nothing new until the
    /// window frees room.
    #[test]
    fn a_full_map_admits_nothing_new_until_the_window_passes() {
        let uses = DeniedUses::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert!(uses.admit(TokenHash(h), t0));
        }
        assert!(!uses.admit(TokenHash([0xff; 32]), t0 + Duration::from_secs(1)));
        assert!(uses.admit(TokenHash([0xff; 32]), t0 + WINDOW));
        assert_eq!(uses.0.lock().unwrap().len(), 1);
    }
}
