//! The official clients of the standards (MCP, A2A) as the tests drive
//! them: the Python virtualenv and the npm packages that
//! `tests/clients/setup.sh` installs (and `.ci/run` runs). Outside CI a
//! missing client skips the test; under `MOLECULE_REQUIRE_ALL_ENGINES=1` it
//! fails it.

use std::path::PathBuf;

use crate::helpers::require_all_engines;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv's Python with `mcp` and `a2a-sdk`, or `None` (skip).
pub fn python() -> Option<PathBuf> {
    let path = std::env::var_os("MOLECULE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/clients-venv/bin/python"));
    present(path, "the Python clients (bash tests/clients/setup.sh)")
}

/// The folder whose `node_modules` holds `@a2a-js/sdk`, or `None` (skip).
pub fn js_dir() -> Option<PathBuf> {
    let dir = root().join("tests/clients/js");
    present(
        dir.join("node_modules/@a2a-js/sdk"),
        "the npm clients (bash tests/clients/setup.sh)",
    )
    .map(|_| dir)
}

fn present(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        !require_all_engines(),
        "{what} missing at {} but every client is required",
        path.display()
    );
    eprintln!("skipping: {what} missing");
    None
}

/// The pinned clients import: a broken install fails here, once, rather
/// than as a confusing error inside every standard's test.
#[test]
fn official_clients_import_at_their_pinned_versions() {
    let Some(python) = python() else { return };
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "from importlib.metadata import version as v; print(v('mcp'), v('a2a-sdk'))",
        ])
        .output()
        .expect("run the virtualenv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2.3.0 1.3.0");

    let Some(dir) = js_dir() else { return };
    let out = std::process::Command::new("node")
        .current_dir(dir)
        .args([
            "-e",
            "import('@a2a-js/sdk/client').then((m) => console.log(typeof m.ClientFactory))",
        ])
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "function");
}
