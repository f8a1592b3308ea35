#!/usr/bin/env bash
# Installs the official clients the integration tests drive: a Python
# virtualenv at target/clients-venv with tests/clients/requirements.txt, and
# tests/clients/js/node_modules from its lock file. Idempotent: a second run
# with nothing changed installs nothing. Prints the variables to export.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV="${CARGO_TARGET_DIR:-$ROOT/target}/clients-venv"
STAMP="$VENV/.requirements"

if ! cmp -s "$HERE/requirements.txt" "$STAMP" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$STAMP"
fi
if [ ! -d "$HERE/js/node_modules/@a2a-js/sdk" ]; then
  (cd "$HERE/js" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "MOLECULE_TEST_PYTHON=$VENV/bin/python"
