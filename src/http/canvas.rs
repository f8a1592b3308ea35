//! The canvas: the operator's web page, served by `molecule serve` at `/`.
//!
//! The page is plain HTML, CSS and JavaScript from `web/`, compiled into the
//! binary with `include_str!`/`include_bytes!`, so a deployment is still one
//! file and the page works offline (no CDN, no external fonts). These routes
//! need no token (the page asks for the admin token itself and sends it on
//! every API call) and are not part of the OpenAPI document: they are not
//! API.
//!
//! Every response carries a strict `Content-Security-Policy` (only this
//! origin may supply scripts, styles, images and connections; no inline
//! script, no framing), and assets are revalidated with an `ETag` so that a
//! new binary's page is picked up on the next load without stale caches.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::AppState;

/// Only this origin; no inline script or style, no plugins, no framing.
/// `connect-src 'self'` covers the API calls and the event stream; `blob:`
/// images allow previews of files the page itself downloaded.
pub(super) const CONTENT_SECURITY_POLICY_VALUE: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file of the page.
#[derive(Clone, Copy)]
struct Asset {
    /// The URL path it is served at.
    path: &'static str,
    /// Its bytes, compiled in.
    body: &'static [u8],
    /// Its `Content-Type`.
    content_type: &'static str,
}

/// A JavaScript module of the page, served at `/assets/js/<name>`.
macro_rules! module {
    ($name:literal) => {
        Asset {
            path: concat!("/assets/js/", $name),
            body: include_bytes!(concat!("../../web/js/", $name)),
            content_type: "text/javascript; charset=utf-8",
        }
    };
}

/// Every file of the page, in one table so the router and the tests agree.
/// The page is split into ES modules by concern (`web/js/app.js` imports the
/// rest); every module must be listed here, or the browser's import fails.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        body: include_bytes!("../../web/index.html"),
        content_type: "text/html; charset=utf-8",
    },
    Asset {
        path: "/assets/style.css",
        body: include_bytes!("../../web/style.css"),
        content_type: "text/css; charset=utf-8",
    },
    Asset {
        path: "/assets/favicon.svg",
        body: include_bytes!("../../web/favicon.svg"),
        content_type: "image/svg+xml",
    },
    module!("app.js"),
    module!("api.js"),
    module!("state.js"),
    module!("dom.js"),
    module!("stream.js"),
    module!("workspaces.js"),
    module!("create.js"),
    module!("chat.js"),
    module!("panels.js"),
    module!("tabs.js"),
    module!("secrets.js"),
    module!("delegations.js"),
    module!("memory.js"),
    module!("messages.js"),
    module!("chips.js"),
    module!("uploads.js"),
    module!("unread.js"),
    module!("markdown.js"),
    module!("manage.js"),
    module!("config.js"),
    module!("tree.js"),
    module!("teamform.js"),
    module!("lifecycle.js"),
    module!("orgimport.js"),
];

/// An asset ready to serve: its table entry and its strong `ETag`.
#[derive(Clone)]
struct Served {
    asset: Asset,
    etag: HeaderValue,
}

/// The canvas routes: `/` and `/assets/…`, GET (and HEAD) only, no auth.
pub(super) fn router() -> Router<AppState> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        // The ETag is the content hash, computed once here rather than per
        // request; it changes exactly when a new binary ships a new file.
        let digest = hex::encode(Sha256::digest(asset.body));
        let etag = HeaderValue::from_str(&format!("\"{}\"", &digest[..32]))
            .expect("BUG: a hex digest is a valid header value");
        let served = Served {
            asset: *asset,
            etag,
        };
        router.route(
            asset.path,
            get(move |headers: HeaderMap| {
                let served = served.clone();
                async move { serve_asset(&served, &headers) }
            }),
        )
    })
}

/// Answers one asset: 304 when the browser's copy is current, else the
/// bytes; both with the security headers.
fn serve_asset(served: &Served, request: &HeaderMap) -> Response {
    let fresh = request
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == served.etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                CONTENT_TYPE,
                HeaderValue::from_static(served.asset.content_type),
            )],
            served.asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(ETAG, served.etag.clone());
    // `no-cache` = keep a copy but revalidate it every time: the file
    // names carry no version, so a long max-age would pin an old page.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_path_and_a_body() {
        let mut paths: Vec<_> = ASSETS.iter().map(|a| a.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len(), "duplicate asset path");
        for asset in ASSETS {
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
        }
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let html = std::str::from_utf8(ASSETS[0].body).expect("index.html is UTF-8");
        for asset in &ASSETS[1..] {
            assert!(
                html.contains(asset.path),
                "index.html does not reference {}",
                asset.path
            );
        }
        for attr in ["src=\"", "href=\""] {
            for scheme in ["http:", "https:", "//"] {
                assert!(
                    !html.contains(&format!("{attr}{scheme}")),
                    "index.html must not load anything from another origin ({attr}{scheme})"
                );
            }
        }
        assert!(
            !html.contains("<script>"),
            "inline scripts are refused by the CSP"
        );
    }

    #[test]
    fn every_module_import_names_a_listed_asset() {
        let paths: Vec<_> = ASSETS.iter().map(|a| a.path).collect();
        for asset in ASSETS.iter().filter(|a| a.path.starts_with("/assets/js/")) {
            let source = std::str::from_utf8(asset.body).expect("modules are UTF-8");
            for line in source.lines().filter(|l| l.starts_with("import ")) {
                let name = line
                    .rsplit_once("from './")
                    .and_then(|(_, rest)| rest.split_once('\''))
                    .map(|(name, _)| name)
                    .unwrap_or_else(|| panic!("{}: not a relative import: {line}", asset.path));
                let path = format!("/assets/js/{name}");
                assert!(
                    paths.contains(&path.as_str()),
                    "{} imports {path}, which is not in ASSETS",
                    asset.path
                );
            }
        }
    }
}
