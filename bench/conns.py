#!/usr/bin/env python3
"""Parked connections bench (issue 31), printed, not a timed test.

Two arms, each on a fresh server per round:

- `polls`: N workspaces (default 10,000; created through the API, each
  with its own token), one inbox long poll parked per workspace
  (`GET …/activity?type=a2a_receive&since_id=&wait=60`, one raw socket
  each; a poll that ends re-parks at once). The server's RSS (VmRSS) is
  read before the polls and with all of them parked, and VmHWM over the
  whole arm; then K random workspaces (default 500, distinct) get one
  message each, 50 a second: wake = message POST sent → that workspace's
  poll answered with the row. A message whose row no poll returned
  within 10 s is lost.
- `fanout`: S workspaces (default 1,000), one SSE stream each
  (`GET /workspaces/:id/events`, what the canvas reads), or with
  `--fanout-kind fleet` S copies of the operator's fleet stream
  (`GET /admin/activity/events`: every event to every stream). Then
  `--rate` messages a second (default 100) to random workspaces for
  `--seconds` (default 20): delay = message POST sent → its `activity`
  event read on a stream (fleet: on every stream). RSS before, with the
  streams open, and its peak while the events flow; the client's own CPU
  is printed too (the client can be the limit on two cores).

The server's connection cap is raised with `--max-connections` to N plus
headroom, then lowered by the server to what its file-descriptor limit
allows (it logs `max_connections`); the bench parks at most that cap
minus 32 (the messages need connections too) and says so.

SQLite always; PostgreSQL when --pg names a server (a database
`bench_conns_<pid>` is created and dropped per round). A message that fails
(connection reset, timeout) is counted in `send_errors`, not timed. Python 3.11
standard library only; reuses bench.py's HTTP client and process helpers.
"""

import asyncio
import json
import os
import random
import re
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Server, RssSampler, http, pct, ms, proc_status, psql_run, say, spread, run_in_temp_work, engine_args  # noqa: E402


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def server_cap(srv, timeout=10.0):
    """The connection cap the server logged at start (after fitting it to
    its file-descriptor limit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(os.path.join(srv.dir, "server.log"), "rb") as f:
            text = f.read().decode("utf-8", "replace")
        m = re.search(r'max_connections"?[=:]\s*(\d+)', text)
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    return None


async def create_workspaces(srv, n, prefix):
    sem = asyncio.Semaphore(16)

    async def one(i):
        async with sem:
            return await srv.workspace(f"{prefix}-{i}")

    return await asyncio.gather(*(one(i) for i in range(n)))


def kib_to_mib(k):
    return round(k / 1024, 1)


# ---------------------------------------------------------------- polls

class Poller:
    """One workspace's long poll over a raw socket: parks, reads the answer,
    parks again from the last id it saw."""

    def __init__(self, port, ws, tok, seen, errors):
        self.port, self.ws, self.tok, self.seen, self.errors = port, ws, tok, seen, errors
        self.since, self.parked = 0, False

    async def run(self):
        while True:
            path = f"/workspaces/{self.ws}/activity?type=a2a_receive&since_id={self.since}&wait=60"
            try:
                self.parked = True
                r = await http(self.port, "GET", path, self.tok, timeout=90)
            except (OSError, asyncio.TimeoutError) as e:
                self.parked = False
                self.errors.append(repr(e))
                await asyncio.sleep(0.5)
                continue
            now = time.monotonic()
            self.parked = False
            if r.status != 200:
                self.errors.append(r.status)
                await asyncio.sleep(0.5)
                continue
            for row in r.json():
                self.seen.setdefault(row["id"], now)
                self.since = max(self.since, row["id"])


async def paced_sends(srv, targets, rate, text):
    """Sends `text` to each workspace of `targets` in turn, `rate` a second
    from now, without waiting for one answer before the next send. Returns
    {activity id: time the POST started} and the sends that failed."""
    sent, errors = {}, []

    async def send_one(ws):
        t = time.monotonic()
        try:
            aid = await srv.send(ws, text)
        except (OSError, asyncio.TimeoutError, AssertionError) as e:
            errors.append(repr(e))
            return
        sent[aid] = t

    start = time.monotonic()
    sends = []
    for i, ws in enumerate(targets):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        sends.append(asyncio.create_task(send_one(ws)))
    await asyncio.gather(*sends)
    return sent, errors


async def arm_polls(srv, n, wakes, wake_rate):
    cap = server_cap(srv)
    park = min(n, cap - 32) if cap else n  # the messages need connections too
    t0 = time.monotonic()
    wss = await create_workspaces(srv, park, "poll")
    create_s = time.monotonic() - t0
    await asyncio.sleep(2)
    rss_before = proc_status(srv.pid, "VmRSS")
    sampler = RssSampler(srv.pid)
    seen, errors = {}, []
    pollers = [Poller(srv.port, ws, tok, seen, errors) for ws, tok in wss]
    t0 = time.monotonic()
    tasks = []
    for i, p in enumerate(pollers):
        tasks.append(asyncio.create_task(p.run()))
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # about 4,000 a second: the backlog never overflows
    park_s = time.monotonic() - t0
    await asyncio.sleep(5)  # every poll reaches the server and parks
    rss_parked = proc_status(srv.pid, "VmRSS")
    targets = random.sample([ws for ws, _ in wss], min(wakes, len(wss)))
    sent, send_errors = await paced_sends(srv, targets, wake_rate, "wake up")
    deadline = time.monotonic() + 10
    while any(a not in seen for a in sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    peak = sampler.finish()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = [seen[a] - sent[a] for a in sent if a in seen]
    return {
        "requested": n, "server_cap": cap, "parked": park, "create_s": round(create_s, 1),
        "park_s": round(park_s, 1),
        "rss_before_MiB": kib_to_mib(rss_before), "rss_parked_MiB": kib_to_mib(rss_parked),
        "rss_peak_MiB": kib_to_mib(peak),
        "KiB_per_poll": round((rss_parked - rss_before) / park, 2),
        "wakes": len(sent), "delivered": len(lat), "lost": len(sent) - len(lat),
        "wake_p50_ms": ms(pct(lat, .5)), "wake_p99_ms": ms(pct(lat, .99)),
        "wake_max_ms": ms(max(lat)) if lat else None, "poll_errors": len(errors),
        "send_errors": len(send_errors),
    }


# ---------------------------------------------------------------- fan-out

class SseReader(asyncio.Protocol):
    """One SSE stream: notes when each `activity` event (by row id) first
    arrives. A Protocol, not a StreamReader: 100,000 events a second on
    the fleet stream are read by one Python process."""

    ID = re.compile(rb'"id":(\d+)')

    def __init__(self, arrivals, fleet):
        self.arrivals, self.fleet = arrivals, fleet
        self.buf, self.head_done, self.status = b"", False, None
        self.events, self.closed = 0, asyncio.get_running_loop().create_future()

    def data_received(self, data):
        now = time.monotonic()
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self.buf.split(b" ", 2)[1])
            self.head_done, self.buf = True, self.buf[end + 4:]
        # Chunked framing is skipped: event blocks are found by their
        # fields, the chunk sizes between them are ignored.
        while True:
            end = self.buf.find(b"\n\n")
            if end < 0:
                return
            block, self.buf = self.buf[:end], self.buf[end + 2:]
            if b"event: activity" not in block and b"event:activity" not in block:
                continue
            self.events += 1
            m = self.ID.search(block)
            if m:
                rid = int(m.group(1))
                if self.fleet:
                    self.arrivals.setdefault(rid, []).append(now)
                else:
                    self.arrivals.setdefault(rid, now)

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)


async def open_stream(port, path, token, arrivals, fleet):
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(lambda: SseReader(arrivals, fleet), "127.0.0.1", port)
    head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {token}\r\n\r\n")
    transport.write(head.encode())
    return transport, proto


async def arm_fanout(srv, streams, rate, seconds, kind):
    fleet = kind == "fleet"
    wss = await create_workspaces(srv, streams, "sse")
    await asyncio.sleep(2)
    rss_before = proc_status(srv.pid, "VmRSS")
    arrivals = {}
    opened = []
    for i, (ws, _) in enumerate(wss):
        path = "/admin/activity/events" if fleet else f"/workspaces/{ws}/events"
        opened.append(await open_stream(srv.port, path, srv.token, arrivals, fleet))
        if i % 100 == 99:
            await asyncio.sleep(0.02)
    await asyncio.sleep(3)
    bad = [p.status for _, p in opened if p.status != 200]
    rss_open = proc_status(srv.pid, "VmRSS")
    sampler = RssSampler(srv.pid)
    c0 = os.times()
    t_start = time.monotonic()
    targets = [random.choice(wss)[0] for _ in range(int(rate * seconds))]
    sent, send_errors = await paced_sends(srv, targets, rate, "event")
    want = streams if fleet else 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            len(arrivals.get(a, ())) < want if fleet else a not in arrivals for a in sent):
        await asyncio.sleep(0.05)
    c1 = os.times()
    window = time.monotonic() - t_start
    peak = sampler.finish()
    rss_end = proc_status(srv.pid, "VmRSS")
    for t, _ in opened:
        t.close()
    lat, missing = [], 0
    for a, t in sent.items():
        got = arrivals.get(a)
        if fleet:
            got = got or []
            lat += [x - t for x in got]
            missing += want - len(got)
        elif got is None:
            missing += 1
        else:
            lat.append(got - t)
    client_cpu = (c1.user + c1.system - c0.user - c0.system) / window
    return {
        "kind": kind, "streams": streams, "refused": len(bad), "events": len(sent),
        "deliveries": len(lat), "missing": missing,
        "delay_p50_ms": ms(pct(lat, .5)) if lat else None, "delay_p99_ms": ms(pct(lat, .99)) if lat else None,
        "delay_max_ms": ms(max(lat)) if lat else None,
        "rss_before_MiB": kib_to_mib(rss_before), "rss_streams_open_MiB": kib_to_mib(rss_open),
        "rss_peak_MiB": kib_to_mib(peak), "rss_end_MiB": kib_to_mib(rss_end),
        "client_cpu_pct": round(100 * client_cpu, 1), "send_errors": len(send_errors),
    }


# ---------------------------------------------------------------- driver

async def one_round(args, backend, arm, rnd):
    db_url, db = None, None
    if backend == "postgres":
        db = f"bench_conns_{os.getpid()}"
        psql_run(args.psql, args.pg + "/postgres", f"CREATE DATABASE {db}")
        db_url = f"{args.pg}/{db}"
    want = args.n if arm == "polls" else args.streams
    # Headroom above the held connections for the messages (one
    # connection each, many at once when the machine is slow).
    flags = ["--max-connections", str(want + 1000)]
    srv = await Server(args, f"{backend}-{arm}-{rnd}", db_url, flags=flags).ready()
    try:
        if arm == "polls":
            return await arm_polls(srv, args.n, args.wakes, args.wake_rate)
        return await arm_fanout(srv, args.streams, args.rate, args.seconds, args.fanout_kind)
    finally:
        srv.close()
        if db:
            psql_run(args.psql, args.pg + "/postgres", f"DROP DATABASE {db}")


SUMMARY = {
    "polls": ["rss_before_MiB", "rss_parked_MiB", "rss_peak_MiB", "KiB_per_poll", "wake_p50_ms",
              "wake_p99_ms", "lost"],
    "fanout": ["rss_before_MiB", "rss_streams_open_MiB", "rss_peak_MiB", "delay_p50_ms", "delay_p99_ms",
               "missing", "client_cpu_pct"],
}


async def amain(args):
    res = {}
    for backend in (["sqlite"] + (["postgres"] if args.pg else [])):
        if args.only and backend != args.only:
            continue
        for arm in args.arms.split(","):
            rounds = []
            for rnd in range(args.rounds):
                say(f"[{backend}] {arm} round {rnd + 1}/{args.rounds}; load {os.getloadavg()[0]:.2f}")
                r = await one_round(args, backend, arm, rnd)
                say(f"[{backend}] {arm} {json.dumps(r)}")
                rounds.append(r)
            summary = {k: spread([r[k] for r in rounds if r[k] is not None]) for k in SUMMARY[arm]}
            res[f"{backend}/{arm}"] = {"rounds": rounds, "median [min-max]": summary}
    return res


def main():
    ap = engine_args()
    ap.add_argument("--arms", default="polls,fanout", help="polls, fanout or both")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=10_000, help="parked long polls")
    ap.add_argument("--wakes", type=int, default=500, help="workspaces woken (one message each)")
    ap.add_argument("--wake-rate", type=float, default=50.0, help="wake messages a second")
    ap.add_argument("--streams", type=int, default=1000, help="SSE streams")
    ap.add_argument("--fanout-kind", choices=["workspace", "fleet"], default="workspace")
    ap.add_argument("--rate", type=float, default=100.0, help="events a second")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    soft = raise_fd_limit()
    say(f"client descriptor limit {soft}; server environment MALLOC_ARENA_MAX="
        f"{os.environ.get('MALLOC_ARENA_MAX', '(unset)')}")
    run_in_temp_work(args, amain)


if __name__ == "__main__":
    main()
