#!/usr/bin/env bash
# The benchmark run: builds the release binary, starts throw-away
# PostgreSQL 15, Garage (S3) and nginx on 127.0.0.1, runs bench/bench.py
# against `molecule serve` on SQLite + filesystem and on PostgreSQL + S3,
# prints the table, and stops everything it started.
#
#   bash bench/run.sh            # everything (about 8–10 minutes)
#   BENCH_ONLY=ingest,rss bash bench/run.sh    # a subset (delivery, ingest,
#                                # rss, scale, sweep); BENCH_BACKENDS=sqlite
#
# Results: bench/out/results.md and bench/out/results.json.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/molecule-bench.XXXXXX")
chmod 755 "$WORK"
PG_DIR=""
GARAGE_PID=""
BENCH_PID=""

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

cleanup() {
  set +e
  if [ -n "$BENCH_PID" ]; then kill -TERM "$BENCH_PID" 2>/dev/null; wait "$BENCH_PID" 2>/dev/null; fi
  if [ -n "$GARAGE_PID" ]; then kill "$GARAGE_PID" 2>/dev/null; wait "$GARAGE_PID" 2>/dev/null; fi
  if [ -n "$PG_DIR" ]; then run_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" -m immediate stop >/dev/null 2>&1; fi
  if [ "${BENCH_KEEP:-}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ------------------------------------------------------------ tools
command -v nginx >/dev/null 2>&1 || ls /usr/sbin/nginx >/dev/null 2>&1 || {
  log "installing nginx-light (the ingest baseline) from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
}
export PATH="$HOME/.cargo/bin:/usr/sbin:$PATH"
command -v garage >/dev/null 2>&1 || { log "garage is needed (cargo install garage --locked --version 2.5.0)"; exit 1; }

if [ "${BENCH_NO_BUILD:-}" != 1 ]; then
  log "cargo build --release"
  cargo build --release --quiet
fi
BIN="${BENCH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/molecule}"

# Room for 1,000 long polls (server and client each hold one socket per poll).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------ PostgreSQL
PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")
PG_PORT=$(free_port)
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home "$WORK" postgres
  mkdir -p "$WORK/pg" && chown postgres "$WORK/pg"
  run_pg() { runuser -u postgres -- "$@"; }
else
  mkdir -p "$WORK/pg"
  run_pg() { "$@"; }
fi
log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
run_pg "$PG_BIN/initdb" -D "$WORK/pg" -U molecule --auth=trust -E UTF8 >/dev/null
# fsync stays on: the server's durability cost is part of what is measured.
run_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/server.log" -w \
  -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=400" start >/dev/null
PG_DIR=$WORK/pg
export BENCH_PG_URL="postgres://molecule@127.0.0.1:$PG_PORT"
export BENCH_PSQL="$PG_BIN/psql"

# ------------------------------------------------------------ Garage (S3)
G="$WORK/garage"
mkdir -p "$G/meta" "$G/data"
S3_PORT=$(free_port)
RPC_PORT=$(free_port)
cat >"$G/garage.toml" <<TOML
metadata_dir = "$G/meta"
data_dir = "$G/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
TOML
log "starting Garage on 127.0.0.1:$S3_PORT"
garage -c "$G/garage.toml" server >"$G/server.log" 2>&1 &
GARAGE_PID=$!
gctl() { garage -c "$G/garage.toml" "$@"; }
NODE=""
for _ in $(seq 1 50); do
  if NODE=$(gctl node id -q 2>/dev/null); then break; fi
  sleep 0.2
done
NODE=${NODE%%@*}
# `node id` can answer from the key file before the RPC port listens;
# `status` needs the running server.
for _ in $(seq 1 50); do
  if gctl status >/dev/null 2>&1; then break; fi
  sleep 0.2
done
gctl layout assign -z dc1 -c 1G "$NODE" >/dev/null
gctl layout apply --version 1 >/dev/null
gctl bucket create molecule-bench >/dev/null
KEY_OUT=$(gctl key create molecule-bench-key)
gctl bucket allow --read --write --owner molecule-bench --key molecule-bench-key >/dev/null
export AWS_ACCESS_KEY_ID=$(printf '%s\n' "$KEY_OUT" | awk -F': *' '/Key ID/ {print $2}')
export AWS_SECRET_ACCESS_KEY=$(printf '%s\n' "$KEY_OUT" | awk -F': *' '/Secret key/ {print $2}')
export AWS_ENDPOINT="http://127.0.0.1:$S3_PORT"
export AWS_REGION=garage
export AWS_ALLOW_HTTP=true
export BENCH_S3_BUCKET=molecule-bench
export BENCH_GARAGE_PID=$GARAGE_PID

# ------------------------------------------------------------ tus
# The upload server a user might pick instead: the tus reference server
# for Node (@tus/server, the port of tusd), from npm, when node is here.
if [ "${BENCH_NO_TUS:-}" != 1 ] && command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  log "installing @tus/server from npm (set BENCH_NO_TUS=1 to skip)"
  mkdir -p "$WORK/tus"
  if (cd "$WORK/tus" && npm install --no-audit --no-fund --silent \
        @tus/server@2.4.5 @tus/file-store@2.1.1 @tus/s3-store@2.0.7 >/dev/null 2>&1); then
    cp "$ROOT/bench/tus_server.mjs" "$WORK/tus/"
    export BENCH_TUS_DIR="$WORK/tus"
  else
    log "npm install failed: tus is not measured"
  fi
fi

# ------------------------------------------------------------ run
mkdir -p "$ROOT/bench/out"
log "running the benchmarks"
python3 "$ROOT/bench/bench.py" --molecule "$BIN" --work "$WORK" --out "$ROOT/bench/out" &
BENCH_PID=$!
wait "$BENCH_PID"
BENCH_PID=""
