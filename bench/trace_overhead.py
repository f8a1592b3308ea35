#!/usr/bin/env python3
"""What tracing costs message delivery: p50/p99 of POST /a2a → the long
poll's answer, for a build with traces and one without (an earlier
commit), on SQLite, in alternating rounds so both arms see the same
machine.

    python3 bench/trace_overhead.py --traced target/release/molecule \
        --baseline /path/to/molecule-before-traces [--messages 400] [--rounds 4]

Each arm is its own `molecule serve` on a temp data dir and a free port,
with one poll workspace. Per message: a long poll
(`GET …/activity?type=a2a_receive&since_id=<last>&wait=10`) is opened, the
message is POSTed (with a `traceparent` header, as a traced caller sends
it; the baseline ignores it), and the delivery time is POST sent → the
poll's answer. Standard library only.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

ADMIN = "bench-trace-admin-token"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, token, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    h.update(headers or {})
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data) if data else None


class Arm:
    def __init__(self, name, binary):
        self.name, self.dir, self.port = name, tempfile.mkdtemp(prefix=f"trace-{name}-"), free_port()
        env = dict(os.environ, MOLECULE_RATE_LIMIT="off", RUST_LOG="warn")
        env.pop("DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--admin-token", ADMIN,
             "--data-dir", self.dir],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                if call(self.port, "GET", "/health", ADMIN)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        status, ws = call(self.port, "POST", "/workspaces", ADMIN,
                          {"name": "bench", "delivery_mode": "poll"})
        assert status == 201, ws
        self.ws, self.token, self.last, self.samples = ws["id"], ws["auth_token"], 0, []

    def one(self):
        answer = {}

        def poll():
            path = f"/workspaces/{self.ws}/activity?type=a2a_receive&since_id={self.last}&wait=10"
            answer["rows"] = call(self.port, "GET", path, self.token)[1]
            answer["at"] = time.perf_counter()

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.005)  # the poll is parked before the message is sent
        sent = time.perf_counter()
        status, _ = call(self.port, "POST", f"/workspaces/{self.ws}/a2a", ADMIN,
                         {"method": "message/send", "params": {"message": {
                             "role": "user", "parts": [{"kind": "text", "text": "ping"}]}}},
                         {"traceparent": TRACEPARENT})
        assert status == 202, status
        t.join()
        self.last = answer["rows"][-1]["id"]
        self.samples.append(answer["at"] - sent)

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        shutil.rmtree(self.dir, ignore_errors=True)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--traced", required=True)
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    arms = [Arm("baseline", args.baseline), Arm("traced", args.traced)]
    try:
        for arm in arms:  # warm-up
            for _ in range(20):
                arm.one()
            arm.samples.clear()
        per_round = args.messages // args.rounds
        for r in range(args.rounds):
            for arm in arms if r % 2 == 0 else reversed(arms):
                for _ in range(per_round):
                    arm.one()
    finally:
        for arm in arms:
            arm.close()
    base, traced = arms
    print(f"{'arm':10} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for arm in arms:
        print(f"{arm.name:10} {len(arm.samples):5} {pct(arm.samples, 0.5) * 1e3:8.2f} "
              f"{pct(arm.samples, 0.99) * 1e3:8.2f}")
    p50 = pct(traced.samples, 0.5) / pct(base.samples, 0.5) - 1
    p99 = pct(traced.samples, 0.99) / pct(base.samples, 0.99) - 1
    print(f"tracing overhead on message delivery: p50 {p50 * 100:+.1f} %, p99 {p99 * 100:+.1f} %")


if __name__ == "__main__":
    main()
