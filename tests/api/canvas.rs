//! The canvas's files: every ES module of the page (its vendored libraries
//! in `web/js/vendor/` too) is served from the binary
//! with a JavaScript content type, the strict CSP and a working `ETag`.

use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;

use crate::helpers::{spawn_app, Engine};
use crate::on_both_engines;

async fn every_module_is_served_as_javascript_with_an_etag(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let index = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    let html = index.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/js/app.js"></script>"#));
    let mut on_disk = Vec::new();
    modules_on_disk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/js"),
        "",
        &mut on_disk,
    );
    on_disk.sort_unstable();
    assert!(
        on_disk.iter().any(|n| n == "vendor/marked.esm.js"),
        "the vendored Markdown parser is under web/js/vendor: {on_disk:?}"
    );
    // The modules the binary embeds (listed by build.rs): all of web/js,
    // its vendored libraries in web/js/vendor included.
    let modules: Vec<&str> = molecule::web::module_names().collect();
    assert_eq!(on_disk, modules, "web/js holds {on_disk:?}");
    for name in modules {
        if name != "app.js" {
            let preload = format!(r#"<link rel="modulepreload" href="/assets/js/{name}">"#);
            assert!(html.contains(&preload), "the page does not preload {name}");
        }
        let url = format!("{}/assets/js/{name}", app.address);
        let res = app.client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        assert_eq!(
            res.headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8",
            "{name}"
        );
        assert!(res.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let etag = res.headers()[ETAG].clone();
        let body = res.bytes().await.unwrap();
        let expected =
            std::fs::read(format!("{}/web/js/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert_eq!(
            body.as_ref(),
            expected.as_slice(),
            "{name} differs from web/js"
        );
        let again = app
            .client
            .get(&url)
            .header(IF_NONE_MATCH, etag.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{name}");
        assert_eq!(again.headers()[ETAG], etag);
    }
    // The old single-file path is gone rather than serving a stale copy.
    let old = app
        .client
        .get(format!("{}/assets/app.js", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::NOT_FOUND);
}
on_both_engines!(every_module_is_served_as_javascript_with_an_etag);

/// The `.js` and `.mjs` files under `dir`, subfolders included, as paths
/// from `web/js/` (what build.rs lists, found here independently).
fn modules_on_disk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_dir() {
            modules_on_disk(&entry.path(), &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".js") || name.ends_with(".mjs") {
            out.push(format!("{prefix}{name}"));
        }
    }
}
