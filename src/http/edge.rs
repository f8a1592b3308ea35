//! The edge: what every response passes through on its way out, whatever
//! answered it (a handler, an error, the 404 fallback, a panic, the
//! canvas), and what every request passes before a handler sees it.
//!
//! - Rate limits (`--rate-limit`, a token bucket per key, [`RateLimits`]):
//!   a request with a bearer token draws on that token's bucket; one
//!   without draws on its client address's. A token refused with 401 also
//!   draws on its address's bucket, and an address whose bucket ran dry
//!   that way is refused whatever token it shows next, so guessing tokens
//!   (each new one with a full bucket of its own) is throttled too. Over
//!   the limit: 429, the JSON error and `Retry-After`, counted in
//!   `molecule_rate_limited_total{bucket}`.
//! - CORS (`--cors-origin`): off unless origins are named; then
//!   tower-http's `CorsLayer` answers preflights for exactly those origins.
//!   It sits outside the limits so a browser can read a 429's body.
//! - Security headers on every response: `nosniff`, `no-referrer`, no
//!   framing (`X-Frame-Options: DENY` and a `frame-ancestors 'none'` CSP
//!   where the response has no CSP of its own; the canvas keeps its
//!   stricter one), and `Strict-Transport-Security` with `--hsts`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{
    self, CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use super::{AppState, ErrorBody};
use crate::domain::{AuthToken, TokenHash};
use crate::rate::{retry_after_secs, Limiter, Rate};

/// The CSP of every response that brings none of its own: nothing may be
/// loaded by it, and no page may frame it.
pub(super) const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// `Strict-Transport-Security` with `--hsts`: one year, subdomains too.
pub(super) const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Addresses refused for their failed tokens are forgotten once this many
/// pile up and their wait is over.
const PRUNE_REFUSED_AT: usize = 10_000;

/// Wraps the whole application (`app` has its state already) in the edge.
pub(super) fn wrap(app: Router, state: &AppState) -> Router {
    let config = &state.config;
    let mut app = app;
    if let Some(rate) = config.rate_limit {
        let limits = Arc::new(RateLimits::new(rate, state.metrics.clone()));
        app = app.layer(middleware::from_fn_with_state(limits, limit_rate));
    }
    if !config.cors_origins.is_empty() {
        app = app.layer(cors(&config.cors_origins));
    }
    app = app
        .layer(SetResponseHeaderLayer::if_not_present(
            X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_CONTENT_SECURITY_POLICY),
        ));
    if config.hsts {
        app = app.layer(SetResponseHeaderLayer::overriding(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ));
    }
    app
}

/// CORS for exactly `origins` (checked at start-up to be origins): the
/// methods and headers the API uses, bearer tokens in `Authorization`
/// (no cookies, so no credentials mode), `Retry-After` readable.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .map(|o| HeaderValue::from_str(o).expect("BUG: origins are checked at start-up"))
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("mcp-protocol-version"),
        ])
        .expose_headers([header::RETRY_AFTER, header::LOCATION])
        .max_age(Duration::from_secs(600))
}

/// The buckets of `--rate-limit`: one per token, one per client address.
pub(super) struct RateLimits {
    tokens: Limiter<TokenHash>,
    addresses: Limiter<IpAddr>,
    /// Addresses whose bucket refused tokens emptied, until when.
    refused: Mutex<HashMap<IpAddr, Instant>>,
    metrics: crate::metrics::Metrics,
}

/// Which bucket was empty (the metric's label).
#[derive(Debug, Clone, Copy)]
enum Bucket {
    Token,
    Address,
}

impl RateLimits {
    fn new(rate: Rate, metrics: crate::metrics::Metrics) -> Self {
        Self {
            tokens: Limiter::new(rate),
            addresses: Limiter::new(rate),
            refused: Mutex::default(),
            metrics,
        }
    }

    /// The wait of an address refused for its failed tokens, if it lasts.
    fn refused_for(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let refused = self.refused.lock().expect("BUG: never held across a panic");
        refused
            .get(&addr)
            .map(|until| until.saturating_duration_since(now))
            .filter(|wait| !wait.is_zero())
    }

    /// A token was refused (401): it costs its address a call; the address
    /// is refused outright once that runs its bucket dry.
    fn charge_failure(&self, addr: IpAddr, now: Instant) {
        if let Err(wait) = self.addresses.check(&addr) {
            let mut refused = self.refused.lock().expect("BUG: never held across a panic");
            if refused.len() >= PRUNE_REFUSED_AT {
                refused.retain(|_, until| *until > now);
            }
            refused.insert(addr, now + wait);
        }
    }

    /// The 429 of an empty `bucket`, counted.
    fn refuse(&self, bucket: Bucket, wait: Duration) -> Response {
        let (label, whose) = match bucket {
            Bucket::Token => ("token", "this token"),
            Bucket::Address => ("address", "this client address"),
        };
        self.metrics.rate_limited.with_label_values(&[label]).inc();
        let retry_after = retry_after_secs(wait);
        let body = ErrorBody::new(format!(
            "rate limit exceeded: {} for {whose}; retry after {retry_after} s",
            self.tokens.rate()
        ));
        let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        response
    }
}

/// The bucket key of a client address: an IPv4 address, or the /64 of an
/// IPv6 one (a single host commonly holds a whole /64, so a finer key
/// would let it rotate through fresh buckets).
fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// The hash of the request's bearer token, if it shows one (whether it is
/// valid is the access rules' business; a malformed header counts as a
/// request without a token).
fn bearer_hash(req: &Request) -> Option<TokenHash> {
    let raw = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = raw.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
        .then(|| AuthToken::from_plaintext(token).hash())
}

async fn limit_rate(State(limits): State<Arc<RateLimits>>, req: Request, next: Next) -> Response {
    // The server loop puts the peer in every request; a router driven
    // without it (in-process tests) shares one address bucket.
    let addr = address_key(
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
    );
    let now = Instant::now();
    let Some(token) = bearer_hash(&req) else {
        return match limits.addresses.check(&addr) {
            Ok(()) => next.run(req).await,
            Err(wait) => limits.refuse(Bucket::Address, wait),
        };
    };
    if let Some(wait) = limits.refused_for(addr, now) {
        return limits.refuse(Bucket::Address, wait);
    }
    if let Err(wait) = limits.tokens.check(&token) {
        return limits.refuse(Bucket::Token, wait);
    }
    let response = next.run(req).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        limits.charge_failure(addr, now);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_keyed_by_its_slash_64_and_a_mapped_v4_by_its_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b), "the same /64");
        assert_ne!(address_key(a), address_key(other), "another /64");
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
    }
}
