#!/usr/bin/env bash
# Many small uploads with curl, one fixed multipart body, to look for
# uploads refused under load (a rare `400 … incomplete multipart stream`
# was seen once in ~30,000 with the harness's own client). Starts its own
# `molecule serve` (SQLite + filesystem unless FLOOD_DATABASE_URL /
# FLOOD_BLOB_STORE say otherwise), sends FLOOD_N uploads FLOOD_CONC at a
# time with `curl --parallel`, bounded by FLOOD_BOUND seconds, and prints
# the count of each status and every refusal the server logged.
#
#   bash bench/flood.sh                       # 30,000 × 4 KiB, 8 at a time
#   FLOOD_N=20000 FLOOD_SIZE=65536 bash bench/flood.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${FLOOD_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/molecule}
N=${FLOOD_N:-30000}
CONC=${FLOOD_CONC:-8}
SIZE=${FLOOD_SIZE:-4096}
BOUND=${FLOOD_BOUND:-300}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/molecule-flood.XXXXXX")
SERVER_PID=""
cleanup() {
  set +e
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; fi
  if [ "${FLOOD_KEEP:-}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
args=(serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --admin-token "$TOKEN" --sweep-interval 1h --rate-limit off)
[ -n "${FLOOD_DATABASE_URL:-}" ] && args+=(--database-url "$FLOOD_DATABASE_URL")
[ -n "${FLOOD_BLOB_STORE:-}" ] && args+=(--blob-store "$FLOOD_BLOB_STORE")
RUST_LOG=${RUST_LOG:-info} "$BIN" "${args[@]}" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
WS=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"name":"flood","delivery_mode":"poll"}' "http://127.0.0.1:$PORT/workspaces" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

# One fixed body for every request.
B=fl00dB0undary
{
  printf -- '--%s\r\nContent-Disposition: form-data; name="files"; filename="f.bin"\r\n' "$B"
  printf 'Content-Type: application/octet-stream\r\n\r\n'
  head -c "$SIZE" /dev/urandom
  printf -- '\r\n--%s--\r\n' "$B"
} >"$WORK/body"

URL="http://127.0.0.1:$PORT/workspaces/$WS/chat/uploads"
{
  for i in $(seq 1 "$N"); do
    # `next` separates transfers; one after the last would start an empty one.
    [ "$i" -gt 1 ] && printf 'next\n'
    printf 'url = "%s"\nrequest = "POST"\nheader = "Authorization: Bearer %s"\n' "$URL" "$TOKEN"
    printf 'header = "Content-Type: multipart/form-data; boundary=%s"\n' "$B"
    printf 'data-binary = "@%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' "$WORK/body"
  done
} >"$WORK/curl.cfg"

echo "==> $N uploads of $SIZE bytes, $CONC at a time, bounded at $BOUND s, client ${FLOOD_CLIENT:-curl}" >&2
start=$(date +%s.%N)
set +e
if [ "${FLOOD_CLIENT:-curl}" = harness ]; then
  # The benchmark harness's own asyncio client, same body, for comparison.
  timeout "$BOUND" python3 - "$PORT" "$URL" "$TOKEN" "$B" "$WORK/body" "$N" "$CONC" >"$WORK/codes" 2>"$WORK/curl.err" <<'PY'
import asyncio, sys
sys.path.insert(0, "bench")
import bench
port, url, token, boundary, body, n, conc = sys.argv[1:]
path = url.split(str(port), 1)[1]
data = open(body, "rb").read()
# Written as the harness writes a file: headers, bytes, closing boundary.
head_end = data.index(b"\r\n\r\n") + 4
tail = len(f"\r\n--{boundary}--\r\n")
parts = [data[:head_end], data[head_end:-tail], data[-tail:]]
left = iter(range(int(n)))
async def worker():
    for _ in left:
        try:
            r = await bench.http(int(port), "POST", path, token, parts=parts,
                                 ctype=f"multipart/form-data; boundary={boundary}")
            print(r.status, flush=True)
        except Exception as e:
            print("000", flush=True)
            print(repr(e), file=sys.stderr, flush=True)
async def main():
    await asyncio.gather(*(worker() for _ in range(int(conc))))
asyncio.run(main())
PY
else
  timeout "$BOUND" curl -sS --no-progress-meter --parallel --parallel-immediate --parallel-max "$CONC" \
    -K "$WORK/curl.cfg" >"$WORK/codes" 2>"$WORK/curl.err"
fi
rc=$?
set -e
end=$(date +%s.%N)
done_n=$(wc -l <"$WORK/codes")
echo "==> client exit $rc; $done_n answers in $(python3 -c "print(round($end-$start,1))") s" >&2
echo "status counts:"
sort "$WORK/codes" | uniq -c
echo "client errors: $(grep -c . "$WORK/curl.err" || true)"
head -5 "$WORK/curl.err"
echo "refusals logged by the server:"
grep -i 'upload rejected\|incomplete' "$WORK/server.log" | head -20 || true
echo "server counters:"
curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/metrics" |
  grep -E '^molecule_pending_uploads_(staged_total|rejected_total)' || true
