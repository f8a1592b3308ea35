#!/usr/bin/env bash
# Instruction counts of the server for a fixed ingest workload, which do
# not depend on how busy the machine is: `molecule serve` under valgrind's
# callgrind, COUNT uploads of SIZE bytes (curl, 4 at a time), then the
# server's total instructions (user space: syscalls and the kernel's copies
# are not counted) and its top functions.
#
#   bash bench/profile.sh fs 1048576 40            # SQLite + filesystem
#   PROFILE_S3=s3://BUCKET/prefix bash bench/profile.sh s3 26214400 8
#
# PROFILE_BIN picks the binary (default: the release build); the AWS_*
# variables name the S3 server for `s3`. PROFILE_TOOL=cpu runs the server
# natively instead and prints its CPU time (user + system, from /proc, so
# the kernel's share counts) and the wall time of the workload.
# PROFILE_TOOL=perf runs it natively under `perf record` (kernel and user
# space, so the kernel's copies, page cache and block layer show too) and
# prints the top symbols. PROFILE_TOOL=switches runs it natively and prints
# the voluntary context switches per upload by thread name (one upload at a
# time, after 5 uncounted ones): the thread hand-offs a request costs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
KIND=${1:-fs}
SIZE=${2:-1048576}
COUNT=${3:-40}
BIN=${PROFILE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/molecule}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/molecule-profile.XXXXXX")
SERVER_PID=""
cleanup() {
  set +e
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
args=(serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --admin-token "$TOKEN"
  --sweep-interval 1h --max-request-size 64MiB --rate-limit off)
if [ "$KIND" = s3 ]; then args+=(--blob-store "${PROFILE_S3:?PROFILE_S3=s3://BUCKET/prefix}"); fi
if [ "${PROFILE_TOOL:-callgrind}" != callgrind ]; then
  "$BIN" "${args[@]}" >"$WORK/server.log" 2>&1 &
else
  valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" "$BIN" "${args[@]}" \
    >"$WORK/server.log" 2>&1 &
fi
SERVER_PID=$!
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
WS=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"name":"profile","delivery_mode":"poll"}' "http://127.0.0.1:$PORT/workspaces" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
head -c "$SIZE" /dev/urandom >"$WORK/file.bin"
URL="http://127.0.0.1:$PORT/workspaces/$WS/chat/uploads"
ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
if [ "${PROFILE_TOOL:-callgrind}" = switches ]; then
  one() { curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" -F "files=@$WORK/file.bin" "$URL"; }
  by_thread() {
    for t in /proc/"$SERVER_PID"/task/*; do
      echo "$(cat "$t/comm" | tr ' ' _) $(awk '/^voluntary_ctxt_switches/{print $2}' "$t/status")"
    done | awk '{n[$1] += $2} END {for (k in n) print k, n[k]}' | sort
  }
  for _ in 1 2 3 4 5; do one; done
  by_thread >"$WORK/before"
  for _ in $(seq 1 "$COUNT"); do one; done
  by_thread >"$WORK/after"
  join "$WORK/before" "$WORK/after" |
    awk -v n="$COUNT" '{d = ($3 - $2) / n; t += d; printf "%-18s %6.1f switches per upload\n", $1, d}
      END {printf "%-18s %6.1f\n", "total", t}'
  exit 0
fi
PERF_PID=""
if [ "${PROFILE_TOOL:-callgrind}" = perf ]; then
  perf record -q -g -p "$SERVER_PID" -o "$WORK/perf.data" 2>/dev/null &
  PERF_PID=$!
  sleep 0.5
fi
t0=$(ticks)
w0=$(date +%s.%N)
seq 1 "$COUNT" | xargs -P 4 -I{} curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" \
  -F "files=@$WORK/file.bin" "$URL"
w1=$(date +%s.%N)
t1=$(ticks)
if [ -n "$PERF_PID" ]; then
  kill -INT "$PERF_PID"
  wait "$PERF_PID" || true
fi
if [ "${PROFILE_TOOL:-callgrind}" = cpu ] || [ "${PROFILE_TOOL:-callgrind}" = perf ]; then
  python3 -c "
hz = $(getconf CLK_TCK); cpu = ($t1 - $t0) / hz; wall = $w1 - $w0; mib = $COUNT * $SIZE / 2**20
print(f'server CPU {cpu:.2f} s ({cpu / mib * 1000:.2f} ms per MiB), wall {wall:.2f} s ({mib / wall:.0f} MiB/s)')"
fi
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=""
[ "${PROFILE_TOOL:-callgrind}" = cpu ] && exit 0
if [ "${PROFILE_TOOL:-callgrind}" = perf ]; then
  perf report -i "$WORK/perf.data" --no-children -g none --sort symbol --percent-limit 0.7 --stdio 2>/dev/null |
    grep -E "^ +[0-9.]+%" | sed "s/ *$//" | head -40
  exit 0
fi
callgrind_annotate "$WORK/callgrind.out" 2>/dev/null | sed -n '1,40p' | grep -v '^--\|^$' |
  sed 's/ \[[^]]*\]$//' | cut -c1-200
