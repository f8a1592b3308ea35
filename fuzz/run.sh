#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for a bounded time.
#
#   fuzz/run.sh SECONDS [TARGET...]      e.g. fuzz/run.sh 60
#
# Installs cargo-fuzz from crates.io when it is missing. cargo-fuzz passes
# nightly-only flags (-Zsanitizer, -Cpasses=sancov) to rustc; with
# RUSTC_BOOTSTRAP=1 the stable toolchain accepts them, so no nightly is
# needed. Set FUZZ_DEV=1 to build the targets in the dev profile (faster to
# build, slower to run). New inputs land in fuzz/corpus/TARGET (not
# committed); fuzz/seeds/TARGET are the committed seeds; a crash is written
# to fuzz/artifacts/TARGET and makes this script exit non-zero. Not part of
# CI: the proptests in the normal suite are (see fuzz/README.md).
set -euo pipefail

secs=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(multipart template plugin_archive json_bodies)
fi
profile=()
if [ "${FUZZ_DEV:-0}" = 1 ]; then
    profile=(--dev)
fi

cargo fuzz build "${profile[@]}"
failed=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "== $target: ${secs}s"
    if ! cargo fuzz run "${profile[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1; then
        echo "== $target: FAILED (see fuzz/artifacts/$target)"
        failed=1
    fi
done
exit "$failed"
