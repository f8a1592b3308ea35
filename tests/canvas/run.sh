#!/usr/bin/env bash
# Browser tests of the canvas: builds the binary, starts a real
# `molecule serve` on a free 127.0.0.1 port with throw-away state, drives the
# page in headless Chromium (tests/canvas/canvas.test.mjs), and stops the
# server on the way out. Screenshots and logs land in artifacts/canvas/.
# CANVAS_ONLY=<regex> runs the setup steps, then only the steps whose names
# match (e.g. CANVAS_ONLY='thread|topology'); CANVAS_KEEP_GOING=1 runs on
# past failures.
#
# Needs: cargo, node >= 20 with npm, the sqlite3 shell (to seed a past
# day's usage), and Chromium at /usr/bin/chromium
# (or CHROMIUM=/path/to/chromium).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ARTIFACTS="$ROOT/artifacts/canvas"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/molecule"
ADMIN_TOKEN="canvas-test-admin-token"
SERVER_PID=""
DATA=""

log() { printf '==> %s\n' "$*" >&2; }

cleanup() {
  set +e
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  if [ -n "$DATA" ]; then rm -rf "$DATA"; fi
}
trap cleanup EXIT

log "cargo build"
(cd "$ROOT" && cargo build --quiet)

if [ ! -d "$HERE/node_modules/playwright-core" ] || [ ! -d "$HERE/node_modules/axe-core" ]; then
  log "npm ci (playwright-core, axe-core)"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
fi

mkdir -p "$ARTIFACTS"
DATA=$(mktemp -d "${TMPDIR:-/tmp}/molecule-canvas.XXXXXX")
PORT=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
URL="http://127.0.0.1:$PORT"

log "starting molecule serve on $URL"
# A 1 MiB file limit so that the test can show the refusal with a small
# file; a 60 s online window (not the default 90 s) so that the test can
# see the page follow the server's; private URLs because the test's push
# agent listens on 127.0.0.1; no rate limit, as the suite drives one server
# hard from one browser.
"$BIN" serve --listen "127.0.0.1:$PORT" --public-url "$URL" --data-dir "$DATA" \
  --admin-token "$ADMIN_TOKEN" --max-file-size 1MiB --offline-after 60s --allow-private-urls --rate-limit off >"$ARTIFACTS/server.log" 2>&1 &
SERVER_PID=$!

healthy() { node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$URL/health"; }
for _ in $(seq 1 100); do
  if healthy; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "molecule serve exited at start; its log:" >&2
    cat "$ARTIFACTS/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
healthy || { echo "molecule serve did not answer /health within 10 s" >&2; exit 1; }

log "canvas tests in Chromium"
# The test bounds itself (8 min; 14 with CANVAS_KEEP_GOING, 29 with the
# bench's CANVAS_TRACE); `timeout` is the backstop if it hangs.
BACKSTOP=540
if [ "${CANVAS_TRACE:-}" = 1 ]; then BACKSTOP=1800; elif [ "${CANVAS_KEEP_GOING:-}" = 1 ]; then BACKSTOP=900; fi
CANVAS_URL="$URL" CANVAS_ADMIN_TOKEN="$ADMIN_TOKEN" CANVAS_BIN="$BIN" CANVAS_DATA="$DATA" CANVAS_ARTIFACTS="$ARTIFACTS" \
  timeout "$BACKSTOP" node "$HERE/canvas.test.mjs"
