//! The canvas: the operator's web page, served by `molecule serve` at `/`.
//!
//! The page is plain HTML, CSS and JavaScript from `web/`, compiled into the
//! binary with `include_bytes!` (the ES modules of `web/js/` through the list
//! `build.rs` makes, see [`crate::web`]), so a deployment is still one file
//! and the page works offline (no CDN, no external fonts). These routes
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
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

use super::AppState;

/// Only this origin; no inline script or style, no plugins, no framing.
/// `connect-src 'self'` covers the API calls and the event stream; `blob:`
/// images allow previews of files the page itself downloaded.
pub(super) const CONTENT_SECURITY_POLICY_VALUE: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's entry module, loaded by its `<script type="module">`; every
/// other module of `web/js/` gets a `modulepreload` link.
const ENTRY_MODULE: &str = "app.js";

/// The comment line of `web/index.html` that [`page`] replaces with the
/// `modulepreload` links (matched up to here, after the indentation).
const PRELOAD_MARKER: &str = "<!-- modulepreload:";

/// The `Content-Type` of every ES module.
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// One file of the page.
struct Asset {
    /// The URL path it is served at.
    path: String,
    /// Its bytes: compiled in, or (the page) built once from them.
    body: Bytes,
    /// Its `Content-Type`.
    content_type: &'static str,
}

impl Asset {
    /// A file compiled in as it is.
    fn fixed(path: &str, body: &'static [u8], content_type: &'static str) -> Self {
        Asset {
            path: path.to_owned(),
            body: Bytes::from_static(body),
            content_type,
        }
    }
}

/// Every file of the page, in one table so that the router and the tests
/// agree: the page first, then its style and icon, then every ES module of
/// `web/js/` (listed at build time by `build.rs`, see [`crate::web`]; the
/// page is split into modules by concern and `app.js` imports the rest).
fn assets() -> Vec<Asset> {
    let fixed = [
        Asset {
            path: "/".to_owned(),
            body: Bytes::from(page()),
            content_type: "text/html; charset=utf-8",
        },
        Asset::fixed(
            "/assets/style.css",
            include_bytes!("../../web/style.css"),
            "text/css; charset=utf-8",
        ),
        Asset::fixed(
            "/assets/favicon.svg",
            include_bytes!("../../web/favicon.svg"),
            "image/svg+xml",
        ),
    ];
    let modules = crate::web::MODULES
        .iter()
        .map(|&(name, body)| Asset::fixed(&format!("/assets/js/{name}"), body, JAVASCRIPT));
    fixed.into_iter().chain(modules).collect()
}

/// `web/index.html` with its preload marker replaced by one
/// `<link rel="modulepreload">` per module but the entry, so that the
/// browser fetches them in parallel rather than one import level at a
/// time. Built once, when the router is.
fn page() -> String {
    let html = std::str::from_utf8(include_bytes!("../../web/index.html"))
        .expect("BUG: web/index.html is UTF-8");
    let mut page = String::with_capacity(html.len() + 64 * crate::web::MODULES.len());
    let mut markers = 0;
    for line in html.split_inclusive('\n') {
        let text = line.trim_start();
        if !text.starts_with(PRELOAD_MARKER) {
            page.push_str(line);
            continue;
        }
        markers += 1;
        let indent = &line[..line.len() - text.len()];
        for name in crate::web::module_names().filter(|&name| name != ENTRY_MODULE) {
            writeln!(
                page,
                "{indent}<link rel=\"modulepreload\" href=\"/assets/js/{name}\">"
            )
            .expect("BUG: writing to a String cannot fail");
        }
    }
    assert_eq!(markers, 1, "BUG: web/index.html has one preload marker");
    page
}

/// An asset ready to serve: its bytes, type and strong `ETag` (cheap to
/// clone: the bytes and the tag are shared).
#[derive(Clone)]
struct Served {
    body: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

/// The canvas routes: `/` and `/assets/…`, GET (and HEAD) only, no auth.
pub(super) fn router() -> Router<AppState> {
    assets().into_iter().fold(Router::new(), |router, asset| {
        // The ETag is the content hash, computed once here rather than per
        // request; it changes exactly when a new binary ships a new file.
        let digest = hex::encode(Sha256::digest(&asset.body));
        let etag = HeaderValue::from_str(&format!("\"{}\"", &digest[..32]))
            .expect("BUG: a hex digest is a valid header value");
        let served = Served {
            body: asset.body,
            content_type: asset.content_type,
            etag,
        };
        router.route(
            &asset.path,
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
            [(CONTENT_TYPE, HeaderValue::from_static(served.content_type))],
            served.body.clone(),
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
        let assets = assets();
        let mut paths: Vec<_> = assets.iter().map(|a| a.path.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), assets.len(), "duplicate asset path");
        for asset in &assets {
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
        }
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let assets = assets();
        let html = std::str::from_utf8(&assets[0].body).expect("index.html is UTF-8");
        for asset in &assets[1..] {
            assert!(
                html.contains(&asset.path),
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
        let assets = assets();
        let paths: Vec<_> = assets.iter().map(|a| a.path.as_str()).collect();
        for asset in assets.iter().filter(|a| a.path.starts_with("/assets/js/")) {
            let source = std::str::from_utf8(&asset.body).expect("modules are UTF-8");
            for line in source.lines().filter(|l| l.starts_with("import ")) {
                let name = line
                    .rsplit_once("from './")
                    .and_then(|(_, rest)| rest.split_once('\''))
                    .map(|(name, _)| name)
                    .unwrap_or_else(|| panic!("{}: not a relative import: {line}", asset.path));
                let path = format!("/assets/js/{name}");
                assert!(
                    paths.contains(&path.as_str()),
                    "{} imports {path}, which is not served",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn the_page_preloads_every_module_but_the_entry_once() {
        let html = page();
        assert!(!html.contains(PRELOAD_MARKER), "the marker is replaced");
        assert!(html.contains(&format!(
            "<script type=\"module\" src=\"/assets/js/{ENTRY_MODULE}\"></script>"
        )));
        assert!(crate::web::module_names().any(|name| name == ENTRY_MODULE));
        for name in crate::web::module_names() {
            let link = format!("  <link rel=\"modulepreload\" href=\"/assets/js/{name}\">\n");
            let expected = usize::from(name != ENTRY_MODULE);
            assert_eq!(html.matches(&link).count(), expected, "{name}");
        }
    }
}
