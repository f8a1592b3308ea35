#!/usr/bin/env python3
"""molecule benchmarks: delivery latency, ingest throughput against nginx,
peak RSS, inbox scale and sweep scale, against real servers on 127.0.0.1.

Run through bench/run.sh, which starts PostgreSQL, Garage and builds the
binary, then calls this script. Python 3.11 standard library only: the HTTP
client below is a few dozen lines of asyncio over raw sockets, the same one
for molecule and for nginx.
"""

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
CHILDREN: list[subprocess.Popen] = []
ASYNC_CHILDREN: list = []


def say(*a):
    print("   ", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def spawn(cmd, **kw) -> subprocess.Popen:
    p = subprocess.Popen(cmd, **kw)
    CHILDREN.append(p)
    return p


def stop(p: subprocess.Popen, sig=signal.SIGTERM, grace=10.0):
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in CHILDREN:
        CHILDREN.remove(p)


def stop_all():
    for p in list(CHILDREN):
        try:
            stop(p, grace=5)
        except Exception:
            pass
    for p in list(ASYNC_CHILDREN):
        try:
            if p.returncode is None:
                p.kill()
        except Exception:
            pass


def engine_args():
    """The options every engine-comparing bench script takes: the binary,
    the PostgreSQL server to make a database in, and one engine only."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--molecule", required=True, help="the molecule binary")
    ap.add_argument("--pg", help="postgres://user@host:port (a server to create a database in)")
    ap.add_argument("--psql", default="psql")
    ap.add_argument("--only", choices=["sqlite", "postgres"], help="run one engine only")
    return ap


def run_in_temp_work(args, amain):
    """The tail of a bench script's main(): `amain(args)` with `args.work` a
    temporary directory, every child stopped at the end (also on SIGTERM),
    and its result printed as JSON."""
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    with tempfile.TemporaryDirectory() as work:
        args.work = work
        try:
            res = asyncio.run(amain(args))
        finally:
            stop_all()
    print(json.dumps(res, indent=2))


def proc_status(pid: int, field: str) -> int:
    """A /proc/PID/status field in KiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class RssSampler:
    """Samples VmRSS every 10 ms in a thread; also resets and reads VmHWM."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        try:  # "5" resets the peak RSS (VmHWM) of the process
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))
            except OSError:
                return
            time.sleep(0.01)

    def finish(self) -> int:
        self._stop.set()
        self.thread.join()
        try:
            self.peak = max(self.peak, proc_status(self.pid, "VmHWM"))
        except OSError:
            pass
        return self.peak


# ---------------------------------------------------------------- HTTP client

class Resp:
    def __init__(self, status, headers, body, nbytes):
        self.status, self.headers, self.body, self.nbytes = status, headers, body, nbytes

    def json(self):
        return json.loads(self.body)


async def http(port, method, path, token=None, body=None, parts=None, ctype=None,
               sink=False, timeout=120.0, extra=None) -> Resp:
    """One HTTP/1.1 request on its own connection. `parts` is a list of
    bytes-like objects sent one after the other (1 MiB writes); with `sink`
    the response body is counted, not kept."""
    return await asyncio.wait_for(_http(port, method, path, token, body, parts, ctype, sink, extra), timeout)


async def _http(port, method, path, token, body, parts, ctype, sink, extra):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        if body is not None:
            if not isinstance(body, (bytes, bytearray)):
                body = json.dumps(body).encode()
                ctype = ctype or "application/json"
            parts = [body]
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        if token:
            head.append(f"Authorization: Bearer {token}")
        if parts is not None:
            head.append(f"Content-Length: {sum(len(p) for p in parts)}")
            if ctype:
                head.append(f"Content-Type: {ctype}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        for p in parts or ():
            mv = memoryview(p)
            for i in range(0, len(mv), MIB):
                writer.write(mv[i:i + MIB])
                await writer.drain()
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("connection closed before a response")
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        chunks, n = [], 0
        if "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                c = await reader.read(min(left, MIB))
                if not c:
                    raise ConnectionError("body cut short")
                left -= len(c)
                n += len(c)
                if not sink:
                    chunks.append(c)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                c = await reader.readexactly(size)
                await reader.readexactly(2)
                n += size
                if not sink:
                    chunks.append(c)
        else:
            while c := await reader.read(MIB):
                n += len(c)
                if not sink:
                    chunks.append(c)
        return Resp(status, headers, b"".join(chunks), n)
    finally:
        writer.close()


def s3_put_headers(port, path):
    """AWS SigV4 headers of a path-style PUT with an unsigned payload."""
    import datetime
    import hashlib
    import hmac
    key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    region = os.environ.get("AWS_REGION", "garage")
    now = datetime.datetime.now(datetime.timezone.utc)
    amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = (f"PUT\n{path}\n\nhost:127.0.0.1:{port}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n"
                 f"x-amz-date:{amz}\n\n{signed}\nUNSIGNED-PAYLOAD")
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    k = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": amz,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={signed}, Signature={sig}"}


def multipart(filename: str, data: bytes):
    b = "molbench" + uuid.uuid4().hex
    pre = (f"--{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{filename}\"\r\n"
           f"Content-Type: application/octet-stream\r\n\r\n").encode()
    return f"multipart/form-data; boundary={b}", [pre, data, f"\r\n--{b}--\r\n".encode()]


def pct(xs, q):
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def ms(x):
    return round(x * 1000, 1)


# ---------------------------------------------------------------- molecule

class Server:
    def __init__(self, args, name, database_url=None, blob_store=None, binary=None, flags=()):
        self.args, self.name = args, name
        self.port = free_port()
        self.token = uuid.uuid4().hex + uuid.uuid4().hex
        self.dir = os.path.join(args.work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [binary or args.molecule, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.dir,
               "--admin-token", self.token, "--max-request-size", "64MiB", "--sweep-interval", "1h",
               "--rate-limit", "off"]  # a load test: never throttled
        if database_url:
            cmd += ["--database-url", database_url]
        if blob_store:
            cmd += ["--blob-store", blob_store]
        cmd += list(flags)
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = spawn(cmd, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    async def ready(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"molecule serve ({self.name}) exited; see {self.dir}/server.log")
            try:
                if (await http(self.port, "GET", "/ready", timeout=5)).status == 200:
                    return self
            except (OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"molecule serve ({self.name}) did not become ready")

    def close(self):
        stop(self.proc)
        self.log.close()

    async def workspace(self, name):
        r = await http(self.port, "POST", "/workspaces", self.token, {"name": name, "delivery_mode": "poll"})
        assert r.status == 201, (r.status, r.body)
        w = r.json()
        return w["id"], w["auth_token"]

    async def upload(self, ws, filename, data):
        ctype, parts = multipart(filename, data)
        r = await http(self.port, "POST", f"/workspaces/{ws}/chat/uploads", self.token, parts=parts, ctype=ctype)
        assert r.status == 200, (r.status, r.body[:300])
        return r.json()["files"][0]["uri"].rsplit("/", 1)[1]

    async def send(self, ws, text):
        body = {"params": {"message": {"role": "user", "parts": [{"kind": "text", "text": text}]}}}
        r = await http(self.port, "POST", f"/workspaces/{ws}/a2a", self.token, body)
        assert r.status == 202, (r.status, r.body)
        return r.json()["activity_id"]


# ---------------------------------------------------------------- 6. MCP

MCP_ACCEPT = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


async def mcp_call(srv, ws, token, rid, method, params):
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    r = await http(srv.port, "POST", f"/workspaces/{ws}/mcp", token, body, extra=MCP_ACCEPT)
    assert r.status == 200, (r.status, r.body[:300])
    answer = r.json()
    assert "result" in answer and not answer["result"].get("isError"), answer
    return answer


def histogram_le(metrics_text, series, bound):
    """(observations at or below the bucket `bound` (s), all observations)
    of `series` in one /metrics text."""
    le, count = 0.0, 0.0
    for line in metrics_text.splitlines():
        if line.startswith(series + "_bucket{") and f'le="{bound}"' in line:
            le = float(line.rsplit(" ", 1)[1])
        elif line.startswith(series + "_count{"):
            count = float(line.rsplit(" ", 1)[1])
    return le, count


async def mcp_route_metrics(srv):
    text = (await http(srv.port, "GET", "/metrics", srv.token)).body.decode()
    return "\n".join(l for l in text.splitlines() if 'path="/workspaces/:id/mcp"' in l)


def share_within(before, after, bound):
    """Fraction of the MCP requests between two /metrics reads the server
    answered within `bound` seconds (a difference of cumulative buckets)."""
    series = "molecule_http_request_duration_seconds"
    le0, n0 = histogram_le(before, series, bound)
    le1, n1 = histogram_le(after, series, bound)
    return round((le1 - le0) / (n1 - n0), 4) if n1 > n0 else None


async def bench_mcp(srv, sessions=100, calls=40, paced_s=20.0, paced_rate=1.0):
    """`sessions` workspaces (roots, so each lists the other 99 as peers),
    each an MCP client of its own token. Two arms over the same sessions:

    - *saturated*: all at once, `calls` tools/call each back to back
      (alternating list_peers and recall_memory over 20 memories each), so
      100 calls are always in flight and the figure is the machine's
      throughput with its queue;
    - *paced*: every session calls `paced_rate` times a second at random
      phase for `paced_s` seconds — 100 open sessions at an ordinary
      agent's pace — which is where the server-side time of one call shows.

    Latency is the client's (request written → answer read, one TCP
    connection per call); the server's own share comes from its
    request-duration histogram of the MCP route, read before and after each
    arm."""
    team = [await srv.workspace(f"mcp-{i}") for i in range(sessions)]
    for ws, token in team:
        for k in range(20):
            r = await http(srv.port, "POST", f"/workspaces/{ws}/memories", token, {
                "content": f"fact {k} about the deploy pipeline of service {k % 7}", "scope": "LOCAL"})
            assert r.status == 201, (r.status, r.body)

    async def call(ws, token, i, lat):
        tool = "list_peers" if i % 2 == 0 else "recall_memory"
        args = {} if tool == "list_peers" else {"query": f"deploy pipeline service {i % 7}"}
        t0 = time.perf_counter()
        await mcp_call(srv, ws, token, i + 1, "tools/call", {"name": tool, "arguments": args})
        lat[tool].append(time.perf_counter() - t0)

    async def saturated(ws, token, lat):
        for i in range(calls):
            await call(ws, token, i, lat)

    async def paced(ws, token, lat, start):
        at, i = start + random.uniform(0, 1 / paced_rate), 0
        while at < start + paced_s:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            await call(ws, token, i, lat)
            at, i = at + 1 / paced_rate, i + 1

    async def arm(name, run):
        lat = {"list_peers": [], "recall_memory": []}
        before = await mcp_route_metrics(srv)
        t0 = time.monotonic()
        await asyncio.gather(*(run(ws, token, lat) for ws, token in team))
        wall = time.monotonic() - t0
        after = await mcp_route_metrics(srv)
        n = sum(len(v) for v in lat.values())
        res = {f"{name}_calls": n, f"{name}_calls_per_s": round(n / wall)}
        for tool, xs in lat.items():
            res[f"{name}_{tool}_p50_ms"], res[f"{name}_{tool}_p99_ms"] = ms(pct(xs, 0.5)), ms(pct(xs, 0.99))
        for bound, label in (("0.001", "1ms"), ("0.005", "5ms")):
            res[f"{name}_server_le_{label}"] = share_within(before, after, bound)
        return res

    await asyncio.gather(*(mcp_call(srv, ws, token, 0, "initialize", {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}})
        for ws, token in team))
    out = {"sessions": sessions}
    out.update(await arm("saturated", saturated))
    start = time.monotonic()
    out.update(await arm("paced", lambda ws, token, lat: paced(ws, token, lat, start)))
    return out


# ---------------------------------------------------------------- 1. delivery

async def sdk_poller(srv, ws, n, interval=5.0, window=25.0):
    """Molecule's SDK style: GET activity?since_id= every `interval` s, no wait.
    `n` messages are sent at uniformly random moments of `window`."""
    sent, seen = {}, {}
    start = time.monotonic()

    async def sender():
        for at in sorted(random.uniform(0, window) for _ in range(n)):
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            aid = await srv.send(ws, "sdk-poll")
            sent[aid] = time.monotonic()

    async def poller():
        since, tick = 0, 0
        while len([a for a in sent if a in seen]) < n:
            r = await http(srv.port, "GET", f"/workspaces/{ws}/activity?type=a2a_receive&since_id={since}&limit=500",
                           srv.token)
            now = time.monotonic()
            for row in r.json():
                seen.setdefault(row["id"], now)
                since = max(since, row["id"])
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * interval - time.monotonic()))
            if time.monotonic() - start > window + 4 * interval:
                break

    await asyncio.gather(sender(), poller())
    return [seen[a] - sent[a] for a in sent if a in seen]


async def bench_delivery(args, srv, n_files, n_msgs, n_poll):
    ws, tok = await srv.workspace("delivery")
    poll_ws, _ = await srv.workspace("sdk-poll")
    ddir = os.path.join(srv.dir, "agent")
    errlog = open(os.path.join(srv.dir, "connect.log"), "wb")
    proc = await asyncio.create_subprocess_exec(
        args.molecule, "connect", "--server", srv.url, "--workspace", ws, "--token", tok, "--dir", ddir,
        stdout=asyncio.subprocess.PIPE, stderr=errlog, stdin=asyncio.subprocess.DEVNULL)
    ASYNC_CHILDREN.append(proc)
    futs: dict = {}

    def fut(key):
        if key not in futs:
            futs[key] = asyncio.get_running_loop().create_future()
        return futs[key]

    async def read_lines():
        while line := await proc.stdout.readline():
            now = time.monotonic()
            ev = json.loads(line)
            if ev.get("type") == "file":
                key = ("file", ev["file_id"])
                assert ev.get("acked") and os.path.exists(ev["path"]), ev
            else:
                key = ("msg", ev.get("activity_id"))
            f = fut(key)
            if not f.done():
                f.set_result(now)

    reader = asyncio.create_task(read_lines())
    # Warm up: registration, first long poll.
    await asyncio.wait_for(fut(("msg", await srv.send(ws, "warm-up"))), 30)
    poll_arm = asyncio.create_task(sdk_poller(srv, poll_ws, n_poll))

    files, msgs = [], []
    for i in range(n_files):
        fid = await srv.upload(ws, f"small-{i}.bin", os.urandom(1024))
        t0 = time.monotonic()
        files.append(await asyncio.wait_for(fut(("file", fid)), 30) - t0)
        await asyncio.sleep(random.uniform(0.01, 0.05))
    for i in range(n_msgs):
        aid = await srv.send(ws, f"message {i}")
        t0 = time.monotonic()
        msgs.append(await asyncio.wait_for(fut(("msg", aid)), 30) - t0)
        await asyncio.sleep(random.uniform(0.01, 0.05))
    polled = await poll_arm
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
    reader.cancel()
    errlog.close()
    return {
        "upload_n": len(files), "upload_p50_ms": ms(pct(files, .5)), "upload_p99_ms": ms(pct(files, .99)),
        "upload_max_ms": ms(max(files)),
        "message_n": len(msgs), "message_p50_ms": ms(pct(msgs, .5)), "message_p99_ms": ms(pct(msgs, .99)),
        "poll5s_n": len(polled), "poll5s_p50_ms": ms(pct(polled, .5)), "poll5s_p99_ms": ms(pct(polled, .99)),
    }


# ---------------------------------------------------------------- 2. ingest

class Nginx:
    """nginx with one DAV location: PUT bodies are read to a temp file
    (client_body_in_file_only) and renamed into place."""

    def __init__(self, args):
        self.dir = os.path.join(args.work, "nginx")
        for d in ("body", "www/dav"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        for root, dirs, _ in os.walk(self.dir):
            os.chmod(root, 0o777)
        self.port = free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 2;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {self.dir}/body;
  client_body_in_file_only on;
  client_max_body_size 100m;
  server {{
    listen 127.0.0.1:{self.port};
    location /dav/ {{ root {self.dir}/www; dav_methods PUT; }}
  }}
}}
""")
        nginx = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "nginx"
        self.proc = spawn([nginx, "-p", self.dir, "-c", conf, "-e", f"{self.dir}/error.log"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    async def ready(self):
        for _ in range(100):
            try:
                await http(self.port, "GET", "/", timeout=2)
                return self
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def workers_ticks(self):
        total = 0
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        st = f.read()
                    if int(st.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        total += cpu_ticks(int(pid))
                except (OSError, ValueError, IndexError):
                    pass
        return total + cpu_ticks(self.proc.pid)

    def clean(self):
        d = os.path.join(self.dir, "www/dav")
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))

    def close(self):
        stop(self.proc, sig=signal.SIGQUIT)


class Tus:
    """The tus reference server for Node (@tus/server, the port of tusd)
    on the filesystem or on S3, installed by run.sh (BENCH_TUS_DIR). Each
    file is one request: POST with the bytes (creation-with-upload)."""

    def __init__(self, args, kind, target):
        self.port = free_port()
        self.log = open(os.path.join(args.work, f"tus-{kind}.log"), "wb")
        self.proc = spawn(["node", os.path.join(os.environ["BENCH_TUS_DIR"], "tus_server.mjs"), str(self.port),
                           kind, target], stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.dir = target if kind == "file" else None

    async def ready(self):
        for _ in range(200):
            try:
                await http(self.port, "OPTIONS", "/files", timeout=2)
                return self
            except (OSError, asyncio.TimeoutError, ValueError, IndexError):
                await asyncio.sleep(0.05)
        raise RuntimeError("the tus server did not start")

    def arm(self, label, data):
        async def to_tus(i):
            r = await http(self.port, "POST", "/files", parts=[data], ctype="application/offset+octet-stream",
                           extra={"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data))})
            assert r.status == 201 and r.headers.get("upload-offset") == str(len(data)), (r.status, r.body[:200])

        def clean():
            if self.dir:
                for name in os.listdir(self.dir):
                    os.unlink(os.path.join(self.dir, name))
        to_tus.clean = clean
        return to_tus

    def close(self):
        stop(self.proc)
        self.log.close()


async def run_ingest(make_request, n, conc, ticks):
    """`n` requests, `conc` at a time; returns seconds, server CPU share, client CPU share."""
    idx = iter(range(n))
    t0, c0, s0 = time.monotonic(), time.process_time(), ticks()

    durations = []

    async def worker():
        for i in idx:
            t = time.monotonic()
            await make_request(i)
            durations.append(time.monotonic() - t)

    await asyncio.gather(*(worker() for _ in range(conc)))
    wall = time.monotonic() - t0
    run_ingest.slowest = max(durations)
    return wall, (ticks() - s0) / CLK_TCK / wall, (time.process_time() - c0) / wall


def spread(xs):
    """Median and range of per-round figures."""
    s = sorted(xs)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"median": round(med, 3), "min": round(s[0], 3), "max": round(s[-1], 3),
            "rounds": [round(x, 3) for x in xs]}


async def bench_ingest(srv, nginx, plan, rounds=5, conc=4, s3=None, extra_arms=()):
    """The same multipart bodies POSTed to molecule and PUT to nginx, in
    alternating rounds (the order rotates each round, so drift and warm-up
    hit every arm alike). With `s3` (port, bucket), also the raw file bytes
    PUT straight to the S3 server (Garage): the ceiling of the blob store.
    `extra_arms` are (name, make(label, data) -> request fn, ticks fn) of
    other upload servers measured beside. Each ratio is computed per round
    (arms of one round ran within seconds of each other) and reported as
    the median and range over the rounds."""
    ws, _ = await srv.workspace("ingest")
    out = {}
    for label, size, n in plan:
        data = os.urandom(size)

        async def to_molecule(i):
            await srv.upload(ws, f"{label}-{i}.bin", data)

        async def to_nginx(i):
            ctype, parts = multipart(f"{label}-{i}.bin", data)
            r = await http(nginx.port, "PUT", f"/dav/{uuid.uuid4().hex}.bin", parts=parts, ctype=ctype)
            assert r.status in (201, 204), (r.status, r.body[:200])

        async def to_s3(i):
            path = f"/{s3[1]}/direct/{uuid.uuid4().hex}"
            r = await http(s3[0], "PUT", path, parts=[data], ctype="application/octet-stream",
                           extra=s3_put_headers(s3[0], path))
            assert r.status == 200, (r.status, r.body[:300])

        arms = [("nginx", to_nginx, nginx.workers_ticks), ("molecule", to_molecule, lambda: cpu_ticks(srv.pid))]
        if s3:
            arms.append(("s3_direct", to_s3, lambda: cpu_ticks(int(os.environ["BENCH_GARAGE_PID"]))))
        for name, make, ticks in extra_arms:
            arms.append((name, make(label, data), ticks))
        walls = {name: [] for name, _, _ in arms}
        scpu = {name: 0.0 for name, _, _ in arms}
        ccpu = {name: 0.0 for name, _, _ in arms}
        slowest = {name: 0.0 for name, _, _ in arms}
        for _, fn, ticks in arms:  # warm
            await run_ingest(fn, 2, 2, ticks)
        nginx.clean()
        os.sync()
        for k in range(rounds):
            for name, fn, ticks in arms[k % len(arms):] + arms[:k % len(arms)]:
                wall, s_cpu, c_cpu = await run_ingest(fn, n, conc, ticks)
                walls[name].append(wall)
                scpu[name] += s_cpu * wall
                ccpu[name] += c_cpu * wall
                slowest[name] = max(slowest[name], run_ingest.slowest)
                if name == "nginx":
                    nginx.clean()
                if hasattr(fn, "clean"):
                    fn.clean()
                # Each arm starts with no dirty pages of another arm's
                # files: the kernel writes them back ~30 s later, in
                # whichever arm runs then, so without this one arm's
                # page-cache writes are paid for by the next one's time.
                os.sync()
        mb = n * size / MIB
        tot = {name: sum(w) for name, w in walls.items()}
        r = out[label] = {
            "requests_per_round": n, "rounds": rounds, "concurrency": conc,
            "MiBps": {name: spread([mb / w for w in ws_]) for name, ws_ in walls.items()},
            "ratio_to_nginx": {name: spread([x / w for x, w in zip(walls["nginx"], ws_)])
                               for name, ws_ in walls.items() if name != "nginx"},
            "server_cpu_cores": {name: round(scpu[name] / tot[name], 2) for name in walls},
            "client_cpu_cores": {name: round(ccpu[name] / tot[name], 2) for name in walls},
            "slowest_request_s": {k: round(v, 2) for k, v in slowest.items()},
        }
        # Kept under the old names too, for the table.
        r["molecule_MiBps"] = r["MiBps"]["molecule"]["median"]
        r["nginx_MiBps"] = r["MiBps"]["nginx"]["median"]
        r["ratio"] = r["ratio_to_nginx"]["molecule"]["median"]
        r["molecule_server_cpu"] = r["server_cpu_cores"]["molecule"]
        r["nginx_server_cpu"] = r["server_cpu_cores"]["nginx"]
        r["client_cpu_molecule_arm"] = r["client_cpu_cores"]["molecule"]
        if s3:
            r["ratio_to_s3_direct"] = {name: spread([g / w for g, w in zip(walls["s3_direct"], ws_)])
                                       for name, ws_ in walls.items() if name != "s3_direct"}
            r["s3_direct_MiBps"] = r["MiBps"]["s3_direct"]["median"]
        say(label, json.dumps(r))
    return out


class DurableDisk:
    """The ceiling the disk sets for any server that keeps what it
    acknowledges: each file written to a new file on the same filesystem
    as the servers' data (64 KiB writes), its data fsynced, then its
    folder fsynced, four at a time, in this process. No network, no
    parsing, no hashing, no database: what is left is the disk's own cost
    of making a file durable. (nginx's arm never pays it: its files are
    deleted before the kernel writes them back.)"""

    def __init__(self, args):
        self.dir = os.path.join(args.work, "durable-disk")
        os.makedirs(self.dir, exist_ok=True)

    def _write(self, path, data):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            for off in range(0, len(data), 64 * 1024):
                os.write(fd, view[off:off + 64 * 1024])
            os.fdatasync(fd)
        finally:
            os.close(fd)
        folder = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def arm(self, label, data):
        async def to_disk(i):
            path = os.path.join(self.dir, f"{label}-{i}-{uuid.uuid4().hex}.bin")
            await asyncio.to_thread(self._write, path, data)

        def clean():
            for name in os.listdir(self.dir):
                os.unlink(os.path.join(self.dir, name))
        to_disk.clean = clean
        return to_disk


# ---------------------------------------------------------------- 3. RSS

async def bench_rss(srv, restart, n=32, size=25 * MIB):
    """Peak RSS above idle: 32 concurrent 25 MiB uploads, then (after a
    restart, so that idle is idle again) 32 concurrent downloads of them."""
    ws, _ = await srv.workspace("rss")
    data = os.urandom(size)
    fid = await srv.upload(ws, "warm.bin", os.urandom(2 * MIB))
    await http(srv.port, "GET", f"/workspaces/{ws}/pending-uploads/{fid}/content", srv.token, sink=True)
    await asyncio.sleep(1)
    idle = proc_status(srv.pid, "VmRSS")
    s = RssSampler(srv.pid)
    t0 = time.monotonic()
    fids = await asyncio.gather(*(srv.upload(ws, f"big-{i}.bin", data) for i in range(n)))
    up_wall = time.monotonic() - t0
    up_peak = s.finish()
    srv.close()
    srv = await restart()
    await http(srv.port, "GET", f"/workspaces/{ws}/pending-uploads/{fid}/content", srv.token, sink=True)
    await asyncio.sleep(1)
    idle2 = proc_status(srv.pid, "VmRSS")
    s = RssSampler(srv.pid)
    t0 = time.monotonic()
    rs = await asyncio.gather(*(http(srv.port, "GET", f"/workspaces/{ws}/pending-uploads/{f}/content", srv.token,
                                     sink=True) for f in fids))
    down_wall = time.monotonic() - t0
    down_peak = s.finish()
    assert all(r.status == 200 and r.nbytes == size for r in rs)
    srv.close()
    return {
        "idle_MiB": round(idle / 1024, 1),
        "upload_peak_MiB": round(up_peak / 1024, 1), "upload_above_idle_MiB": round((up_peak - idle) / 1024, 1),
        "upload_MiBps": round(n * size / MIB / up_wall, 1),
        "idle_after_restart_MiB": round(idle2 / 1024, 1), "download_peak_MiB": round(down_peak / 1024, 1),
        "download_above_idle_MiB": round((down_peak - idle2) / 1024, 1),
        "download_MiBps": round(n * size / MIB / down_wall, 1),
    }


# ---------------------------------------------------------------- 4. scale

async def bench_scale(srv, n_ws=1000, rate=20, seconds=20):
    sem = asyncio.Semaphore(16)

    async def create(i):
        async with sem:
            return await srv.workspace(f"scale-{i}")

    t0 = time.monotonic()
    wss = await asyncio.gather(*(create(i) for i in range(n_ws)))
    create_s = time.monotonic() - t0
    await asyncio.sleep(1)
    rss_before = proc_status(srv.pid, "VmRSS")
    seen: dict = {}
    answered = [0]
    errors = []

    async def poller(ws, tok):
        since = 0
        while True:
            try:
                r = await http(srv.port, "GET", f"/workspaces/{ws}/activity?type=a2a_receive&since_id={since}&wait=30",
                               tok, timeout=45)
            except (OSError, asyncio.TimeoutError) as e:
                errors.append(repr(e))
                await asyncio.sleep(0.5)
                continue
            now = time.monotonic()
            answered[0] += 1
            if r.status != 200:
                errors.append(r.status)
                await asyncio.sleep(0.5)
                continue
            for row in r.json():
                seen.setdefault(row["id"], now)
                since = max(since, row["id"])

    pollers = [asyncio.create_task(poller(ws, tok)) for ws, tok in wss]
    await asyncio.sleep(3)  # every poll reaches the server and parks
    sampler = RssSampler(srv.pid)
    c0, t_idle = cpu_ticks(srv.pid), time.monotonic()
    await asyncio.sleep(5)
    idle_cpu = (cpu_ticks(srv.pid) - c0) / CLK_TCK / (time.monotonic() - t_idle)
    rss_held = proc_status(srv.pid, "VmRSS")

    sent = {}
    c0, t_start = cpu_ticks(srv.pid), time.monotonic()

    async def send_one(ws):
        t = time.monotonic()
        aid = await srv.send(ws, "wake up")
        sent[aid] = t

    sends = []
    for i in range(rate * seconds):
        await asyncio.sleep(max(0.0, t_start + i / rate - time.monotonic()))
        sends.append(asyncio.create_task(send_one(random.choice(wss)[0])))
    await asyncio.gather(*sends)
    deadline = time.monotonic() + 10
    while any(a not in seen for a in sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    window = time.monotonic() - t_start
    busy_cpu = (cpu_ticks(srv.pid) - c0) / CLK_TCK / window
    peak = sampler.finish()
    for p in pollers:
        p.cancel()
    await asyncio.gather(*pollers, return_exceptions=True)
    lat = [seen[a] - sent[a] for a in sent if a in seen]
    return {
        "workspaces": n_ws, "create_s": round(create_s, 1), "messages": len(sent), "delivered": len(lat),
        "wake_p50_ms": ms(pct(lat, .5)), "wake_p99_ms": ms(pct(lat, .99)), "wake_max_ms": ms(max(lat)) if lat else None,
        "cpu_idle_polls_pct": round(100 * idle_cpu, 1), "cpu_trickle_pct": round(100 * busy_cpu, 1),
        "rss_before_polls_MiB": round(rss_before / 1024, 1), "rss_polls_held_MiB": round(rss_held / 1024, 1),
        "rss_peak_MiB": round(peak / 1024, 1), "poll_errors": len(errors),
    }


# ---------------------------------------------------------------- 5. sweep

class Psql:
    """A psql co-process: one query in, one line out."""

    def __init__(self, psql, url):
        self.p = spawn([psql, "-X", "-A", "-t", "-q", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def one(self, sql):
        self.p.stdin.write(sql.strip().rstrip(";") + ";\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self):
        self.p.stdin.close()
        stop(self.p)


def psql_run(psql, url, sql, timeout=600):
    return subprocess.run([psql, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                          check=True, capture_output=True, text=True, timeout=timeout).stdout.strip()


async def bench_sweep(args, pg_base, rows, bound_s):
    db = "bench_sweep"
    psql_run(args.psql, pg_base + "/postgres", f"CREATE DATABASE {db}")
    url = f"{pg_base}/{db}"
    blob = f"s3://{args.s3_bucket}/sweep"
    srv = await Server(args, "pg-sweep", url, blob).ready()
    try:
        ws, _ = await srv.workspace("sweep")
        t0 = time.monotonic()
        psql_run(args.psql, url, f"""
            INSERT INTO pending_uploads (file_id, workspace_id, blob_key, size_bytes, sha256, filename, mimetype,
                                         created_at, expires_at)
            SELECT gen_random_uuid(), gen_random_uuid(), 'uploads/bench-missing/' || g, 1024, repeat('0', 64),
                   'f.bin', 'application/octet-stream', now() - interval '2 days', now() - interval '1 day'
            FROM generate_series(1, {rows}) g""")
        psql_run(args.psql, url, "VACUUM ANALYZE pending_uploads")
        insert_s = time.monotonic() - t0
        say(f"inserted {rows} expired rows in {insert_s:.1f} s")

        # Lock waits, sampled every 50 ms: (time, longest wait, lock types, waiters).
        stop_flag = threading.Event()
        samples: list = []

        def sample():
            q = Psql(args.psql, url)
            try:
                while not stop_flag.is_set():
                    line = q.one("""SELECT coalesce(extract(epoch FROM max(clock_timestamp() - waitstart)), 0),
                                           coalesce(string_agg(DISTINCT locktype, ','), ''),
                                           (SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock')
                                    FROM pg_locks WHERE NOT granted""")
                    w, types, n = line.split("|")
                    samples.append((time.monotonic(), float(w), types, int(n)))
                    time.sleep(0.05)
            finally:
                q.close()

        lat: list = []  # (start, seconds)
        running = [True]
        data = os.urandom(4096)

        failures: list = []  # (start, error)

        async def uploader(k):
            i = 0
            while running[0]:
                t = time.monotonic()
                try:
                    await srv.upload(ws, f"during-{k}-{i}.bin", data)
                    lat.append((t, time.monotonic() - t))
                except (AssertionError, OSError, asyncio.TimeoutError) as e:
                    failures.append((t, repr(e)[:300]))
                    say("upload failed during the sweep test:", repr(e)[:300])
                i += 1

        ups = [asyncio.create_task(uploader(k)) for k in range(2)]
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        await asyncio.sleep(5)  # baseline
        t_sweep = time.monotonic()
        log = open(os.path.join(srv.dir, "sweep.log"), "wb")
        sweep = await asyncio.create_subprocess_exec(
            args.molecule, "sweep", "--once", "--json", "--data-dir", os.path.join(srv.dir, "sweep-cli"),
            "--admin-token", srv.token, "--database-url", url, "--blob-store", blob,
            *os.environ.get("BENCH_SWEEP_ARGS", "").split(),
            stdout=asyncio.subprocess.PIPE, stderr=log, stdin=asyncio.subprocess.DEVNULL)
        ASYNC_CHILDREN.append(sweep)
        finished = True
        try:
            stdout, _ = await asyncio.wait_for(sweep.communicate(), bound_s)
        except asyncio.TimeoutError:
            finished = False
            sweep.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(sweep.wait(), 10)
            except asyncio.TimeoutError:
                sweep.kill()
                await sweep.wait()
            stdout = b""
        sweep_s = time.monotonic() - t_sweep
        running[0] = False
        await asyncio.gather(*ups)
        stop_flag.set()
        sampler.join()
        log.close()
        left = int(psql_run(args.psql, url, "SELECT count(*) FROM pending_uploads WHERE blob_key LIKE 'uploads/bench-missing/%'"))
        swept = rows - left
        base = [s for t, s in lat if t < t_sweep]
        during = [s for t, s in lat if t_sweep <= t < t_sweep + sweep_s]
        s_base = [x for x in samples if x[0] < t_sweep]
        s_during = [x for x in samples if t_sweep <= x[0] < t_sweep + sweep_s]
        types = sorted({t for x in s_during for t in x[2].split(",") if t})
        res = {
            "rows": rows, "insert_s": round(insert_s, 1), "finished": finished,
            "upload_failures": len(failures), "upload_failure_examples": [e for _, e in failures[:3]],
            "upload_failures_during_sweep": sum(1 for t, _ in failures if t >= t_sweep),
            "sweep_s": round(sweep_s, 1), "rows_swept": swept, "rows_per_s": round(swept / sweep_s),
            "projected_full_s": round(sweep_s if finished else rows / max(swept / sweep_s, 1e-9)),
            "sweep_output": stdout.decode().strip(),
            "lock_wait_max_ms": ms(max((x[1] for x in s_during), default=0)),
            "lock_wait_max_baseline_ms": ms(max((x[1] for x in s_base), default=0)),
            "lock_types_waited": types, "lock_samples": len(s_during),
            "samples_with_lock_waiters": sum(1 for x in s_during if x[3] > 0),
            "samples_with_lock_waiters_baseline": f"{sum(1 for x in s_base if x[3] > 0)}/{len(s_base)}",
            "max_lock_waiters": max((x[3] for x in s_during), default=0),
            "upload_baseline_n": len(base), "upload_baseline_p50_ms": ms(pct(base, .5)),
            "upload_baseline_p99_ms": ms(pct(base, .99)),
            "upload_during_n": len(during), "upload_during_p50_ms": ms(pct(during, .5)),
            "upload_during_p99_ms": ms(pct(during, .99)), "upload_during_max_ms": ms(max(during)) if during else None,
        }
        return res
    finally:
        srv.close()


# ---------------------------------------------------------------- main

def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"nproc": os.cpu_count(), "cpu": model, "mem_GiB": round(mem_kib / 1024 / 1024, 1),
            "kernel": os.uname().release}


def table(results):
    L = []
    add = L.append
    backends = [b for b in ("sqlite+fs", "postgres+s3") if b in results]
    add("| measurement | " + " | ".join(backends) + " | target |")
    add("|---|" + "---|" * len(backends) + "---|")

    def row(label, fn, target=""):
        cells = []
        for b in backends:
            try:
                cells.append(fn(results[b]))
            except (KeyError, TypeError):
                cells.append("–")
        add(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    row("1. upload → on disk + acked, p50 / p99 (ms)",
        lambda r: f"{r['delivery']['upload_p50_ms']} / {r['delivery']['upload_p99_ms']} (n={r['delivery']['upload_n']})",
        "≤ 50 / ≤ 250")
    row("1. message → stdout line, p50 / p99 (ms)",
        lambda r: f"{r['delivery']['message_p50_ms']} / {r['delivery']['message_p99_ms']} (n={r['delivery']['message_n']})",
        "≤ 50 / ≤ 250")
    row("1. same, 5 s poll (SDK), p50 / p99 (ms)",
        lambda r: f"{r['delivery']['poll5s_p50_ms']} / {r['delivery']['poll5s_p99_ms']} (n={r['delivery']['poll5s_n']})",
        "(baseline)")
    def med(sp):
        return f"{sp['median']} [{sp['min']}–{sp['max']}]"

    for label in ("1MiB", "25MiB"):
        row(f"2. ingest {label}: MiB/s median [range], per arm",
            lambda r, l=label: "; ".join(f"{k} {med(v)}" for k, v in r['ingest'][l]['MiBps'].items()))
        row(f"2. ingest {label}: ratio to nginx, median [range] of rounds",
            lambda r, l=label: "; ".join(f"{k} **{med(v)}**" for k, v in r['ingest'][l]['ratio_to_nginx'].items()),
            "fs ≥ 0.9 (25 MiB), ≥ 0.7 (1 MiB)")
        row(f"2. ingest {label}: ratio to Garage direct PUT, median [range]",
            lambda r, l=label: "; ".join(f"{k} **{med(v)}**" for k, v in r['ingest'][l]['ratio_to_s3_direct'].items()
                                         if k != "nginx"),
            "≥ 0.9")
        row(f"2. ingest {label}: server CPU cores per arm / client (molecule arm)",
            lambda r, l=label: ("; ".join(f"{k} {v}" for k, v in r['ingest'][l]['server_cpu_cores'].items())
                                + f" / {r['ingest'][l]['client_cpu_molecule_arm']}"))
    row("3. RSS idle (MiB)", lambda r: f"{r['rss']['idle_MiB']}")
    row("3. peak RSS above idle, 32 × 25 MiB uploads (MiB)", lambda r: f"**{r['rss']['upload_above_idle_MiB']}**", "≤ 64")
    row("3. peak RSS above idle, 32 × 25 MiB downloads (MiB)", lambda r: f"**{r['rss']['download_above_idle_MiB']}**", "≤ 64")
    row("4. 1,000 long polls: wake-up p50 / p99 (ms)",
        lambda r: f"{r['scale']['wake_p50_ms']} / {r['scale']['wake_p99_ms']} (n={r['scale']['delivered']}/{r['scale']['messages']})")
    row("4. server CPU: polls parked / 20 msg/s (% of a core)",
        lambda r: f"{r['scale']['cpu_idle_polls_pct']} / {r['scale']['cpu_trickle_pct']}")
    row("4. RSS: before polls / 1,000 parked / peak (MiB)",
        lambda r: f"{r['scale']['rss_before_polls_MiB']} / {r['scale']['rss_polls_held_MiB']} / {r['scale']['rss_peak_MiB']}")
    row("6. MCP, 100 sessions back to back: calls/s; list_peers / recall_memory p99 (ms)",
        lambda r: (f"{r['mcp']['saturated_calls_per_s']}; {r['mcp']['saturated_list_peers_p99_ms']} / "
                   f"{r['mcp']['saturated_recall_memory_p99_ms']} (n={r['mcp']['saturated_calls']})"))
    row("6. MCP, 100 sessions back to back: server answered within 1 / 5 ms",
        lambda r: f"{r['mcp']['saturated_server_le_1ms']} / {r['mcp']['saturated_server_le_5ms']}")
    row("6. MCP, 100 sessions at 1 call/s each: list_peers / recall_memory p50 / p99 (ms)",
        lambda r: (f"{r['mcp']['paced_list_peers_p50_ms']} / {r['mcp']['paced_list_peers_p99_ms']}, "
                   f"{r['mcp']['paced_recall_memory_p50_ms']} / {r['mcp']['paced_recall_memory_p99_ms']} "
                   f"(n={r['mcp']['paced_calls']})"))
    row("6. MCP, 100 sessions at 1 call/s each: server answered within 1 / 5 ms",
        lambda r: f"{r['mcp']['paced_server_le_1ms']} / **{r['mcp']['paced_server_le_5ms']}**", "≥ 0.99 within 5 ms")
    row("5. sweep: rows swept / seconds (finished?)",
        lambda r: f"{r['sweep']['rows_swept']} / {r['sweep']['sweep_s']} ({'yes' if r['sweep']['finished'] else 'no, bounded'})")
    row("5. sweep: rows/s, projected time for all rows (s)",
        lambda r: f"{r['sweep']['rows_per_s']}, {r['sweep']['projected_full_s']}")
    row("5. longest lock wait: during sweep / before (ms), types",
        lambda r: (f"{r['sweep']['lock_wait_max_ms']} / {r['sweep']['lock_wait_max_baseline_ms']}, "
                   f"{','.join(r['sweep']['lock_types_waited']) or 'none'}"))
    row("5. upload p50 / p99 before → during sweep (ms)",
        lambda r: (f"{r['sweep']['upload_baseline_p50_ms']} / {r['sweep']['upload_baseline_p99_ms']} → "
                   f"{r['sweep']['upload_during_p50_ms']} / {r['sweep']['upload_during_p99_ms']}"))
    return "\n".join(L)


async def amain(args):
    only = set(filter(None, os.environ.get("BENCH_ONLY", "delivery,ingest,rss,scale,mcp,sweep").split(",")))
    backends = set(filter(None, os.environ.get("BENCH_BACKENDS", "sqlite,postgres").split(",")))
    quick = os.environ.get("BENCH_QUICK") == "1"
    results = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    nginx = await Nginx(args).ready() if "ingest" in only else None
    plan = [("1MiB", MIB, 50 if quick else 150), ("25MiB", 25 * MIB, 8 if quick else 12)]
    try:
        for backend in ("sqlite", "postgres"):
            if backend not in backends:
                continue
            name = "sqlite+fs" if backend == "sqlite" else "postgres+s3"
            res = results[name] = {}

            def server(phase, fresh=True):
                # The MCP arm measures latency, not the per-token limit.
                flags = ("--mcp-rate-limit", "off") if phase == "mcp" else ()
                if backend == "sqlite":
                    return Server(args, f"sqlite-{phase}", flags=flags)
                db = f"bench_{phase}"
                if fresh:
                    psql_run(args.psql, args.pg + "/postgres", f"CREATE DATABASE {db}")
                return Server(args, f"pg-{phase}", f"{args.pg}/{db}", f"s3://{args.s3_bucket}/{phase}", flags=flags)

            for phase in ("delivery", "ingest", "rss", "scale", "mcp"):
                if phase not in only:
                    continue
                say(f"[{name}] {phase}")
                t0 = time.monotonic()
                srv = await server(phase).ready()
                try:
                    if phase == "delivery":
                        n = (50, 20, 10) if quick else (200, 100, 20)
                        res[phase] = await bench_delivery(args, srv, *n)
                    elif phase == "ingest":
                        s3 = (int(os.environ["AWS_ENDPOINT"].rsplit(":", 1)[1]), args.s3_bucket) \
                            if backend == "postgres" else None
                        tus = None
                        if os.environ.get("BENCH_TUS_DIR"):
                            target = (f"{args.s3_bucket}" if s3 else os.path.join(args.work, "tus-files"))
                            os.makedirs(os.path.join(args.work, "tus-files"), exist_ok=True)
                            tus = await Tus(args, "s3" if s3 else "file", target).ready()
                        extra = [("tus", tus.arm, lambda: cpu_ticks(tus.pid))] if tus else []
                        if not s3:
                            extra.append(("durable_disk", DurableDisk(args).arm, lambda: 0))
                        # An earlier build beside this one, in the same rounds:
                        # before/after figures taken under the same conditions.
                        base = None
                        if os.environ.get("BENCH_BASELINE_BIN"):
                            if backend == "sqlite":
                                base = Server(args, "sqlite-ingest-baseline",
                                              binary=os.environ["BENCH_BASELINE_BIN"])
                            else:
                                psql_run(args.psql, args.pg + "/postgres", "CREATE DATABASE bench_baseline")
                                base = Server(args, "pg-ingest-baseline", f"{args.pg}/bench_baseline",
                                              f"s3://{args.s3_bucket}/baseline",
                                              binary=os.environ["BENCH_BASELINE_BIN"])
                            await base.ready()
                            base_ws, _ = await base.workspace("ingest")

                            def baseline_arm(label, data, base=base, base_ws=base_ws):
                                async def to_baseline(i):
                                    await base.upload(base_ws, f"{label}-{i}.bin", data)
                                return to_baseline
                            extra.append(("molecule_baseline", baseline_arm, lambda: cpu_ticks(base.pid)))
                        try:
                            res[phase] = await bench_ingest(srv, nginx, plan, s3=s3, extra_arms=extra,
                                                            rounds=int(os.environ.get("BENCH_ROUNDS", "5")))
                        finally:
                            if tus:
                                tus.close()
                            if base:
                                base.close()
                    elif phase == "rss":
                        res[phase] = await bench_rss(srv, lambda: server("rss", fresh=False).ready())
                    elif phase == "scale":
                        res[phase] = await bench_scale(srv, n_ws=200 if quick else 1000)
                    elif phase == "mcp":
                        res[phase] = await bench_mcp(srv, calls=10 if quick else 40)
                finally:
                    srv.close()
                say(f"[{name}] {phase} done in {time.monotonic() - t0:.0f} s: {json.dumps(res[phase])}")
            if backend == "postgres" and "sweep" in only:
                say(f"[{name}] sweep")
                t0 = time.monotonic()
                res["sweep"] = await bench_sweep(args, args.pg, 100_000 if quick else 1_000_000,
                                                 30 if quick else args.sweep_bound)
                say(f"[{name}] sweep done in {time.monotonic() - t0:.0f} s: {json.dumps(res['sweep'])}")
    finally:
        if nginx:
            nginx.close()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--molecule", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pg", default=os.environ.get("BENCH_PG_URL"))
    ap.add_argument("--psql", default=os.environ.get("BENCH_PSQL", "psql"))
    ap.add_argument("--s3-bucket", default=os.environ.get("BENCH_S3_BUCKET"))
    ap.add_argument("--sweep-bound", type=float, default=float(os.environ.get("BENCH_SWEEP_BOUND", "120")))
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    try:
        results = asyncio.run(amain(args))
    finally:
        stop_all()
    results["total_s"] = round(time.monotonic() - t0)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    m = results["machine"]
    md = (f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_GiB']} GiB RAM, Linux {m['kernel']}; "
          f"run {results['started']} → {results['finished']} ({results['total_s']} s)\n\n" + table(results) + "\n")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
