//! The canvas's JavaScript modules as compiled into the binary. `build.rs`
//! lists `web/js/` (subfolders included: the vendored Markdown parser and
//! HTML sanitiser live in `web/js/vendor/`) at build time, so a module is embedded and served (by
//! `http::canvas`, which also writes its `modulepreload` link into the
//! page) as soon as its file exists: there is no list of them to keep by
//! hand. The integration tests read the same list through
//! [`module_names`].

include!(concat!(env!("OUT_DIR"), "/web_js.rs"));

/// The paths of the canvas's ES modules under `web/js/` (`app.js`,
/// `vendor/marked.esm.js`, …), sorted; each is served at
/// `/assets/js/<path>`.
pub fn module_names() -> impl Iterator<Item = &'static str> {
    MODULES.iter().map(|&(name, _)| name)
}
