#!/usr/bin/env python3
"""Fleet bench (issue 31), printed, not a timed test:

N workspaces (default 10,000) in teams: R roots (default 100), each with
N/R - 1 children, created through `POST /org/import` (1,000 nodes per
import). Then, one call at a time, each over at least 200 calls:

- `GET /workspaces?limit=100`: the first page, and pages from random
  places of the list (`after=` a random workspace);
- `GET /workspaces`: the whole list (what Molecule's clients read);
- `GET /registry/:id/peers` of a random child (its parent and its
  siblings: N/R - 1 peers) and of a random root (the other roots and its
  children), as the operator.

p50 / p99 / max in ms, and the size of the answers. SQLite always;
PostgreSQL when --pg names a server (a database `bench_fleet_<pid>` is
created and dropped). Python 3.11 standard library only; reuses
bench.py's HTTP client and process helpers.
"""

import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Server, http, pct, ms, psql_run, say, run_in_temp_work, engine_args  # noqa: E402


async def populate(srv, n, roots):
    """Creates the fleet; returns (root ids, child ids)."""
    per_team = max(1, n // roots)
    teams_per_import = max(1, 1000 // per_team)
    made = 0
    while made < roots:
        batch = min(teams_per_import, roots - made)
        template = {"workspaces": [
            {"name": f"team-{made + t}",
             "children": [{"name": f"agent-{made + t}-{c}"} for c in range(per_team - 1)]}
            for t in range(batch)]}
        r = await http(srv.port, "POST", "/org/import", srv.token, template, timeout=600)
        assert r.status == 200, (r.status, r.body[:300])
        made += batch
    r = await http(srv.port, "GET", "/workspaces", srv.token, timeout=120)
    assert r.status == 200, r.status
    every = r.json()
    root_ids = [w["id"] for w in every if w.get("parent_id") is None]
    child_ids = [w["id"] for w in every if w.get("parent_id") is not None]
    return root_ids, child_ids


async def timed(srv, paths, calls):
    """Calls each path of `paths()` in turn, one at a time; latencies and
    the answers' sizes (entries)."""
    lat, sizes = [], []
    for _ in range(calls):
        path = paths()
        t0 = time.perf_counter()
        r = await http(srv.port, "GET", path, srv.token, timeout=120)
        lat.append(time.perf_counter() - t0)
        assert r.status == 200, (path, r.status, r.body[:200])
        sizes.append(len(r.json()))
    return {"p50_ms": ms(pct(lat, 0.5)), "p99_ms": ms(pct(lat, 0.99)), "max_ms": ms(max(lat)),
            "calls": calls, "entries_p50": pct(sizes, 0.5)}


async def measure(srv, n, roots, calls):
    t0 = time.perf_counter()
    root_ids, child_ids = await populate(srv, n, roots)
    every = root_ids + child_ids
    say(f"  {len(every)} workspaces in {time.perf_counter() - t0:.1f} s")
    rnd = random.Random(31)
    out = {"workspaces": len(every)}
    # Warm up the connection pool and caches alike for every arm.
    await timed(srv, lambda: "/workspaces?limit=100", 10)
    out["page_first_100"] = await timed(srv, lambda: "/workspaces?limit=100", calls)
    out["page_after_100"] = await timed(
        srv, lambda: f"/workspaces?limit=100&after={rnd.choice(every)}", calls)
    out["full_list"] = await timed(srv, lambda: "/workspaces", calls)
    out["peers_of_child"] = await timed(
        srv, lambda: f"/registry/{rnd.choice(child_ids)}/peers", calls)
    out["peers_of_root"] = await timed(
        srv, lambda: f"/registry/{rnd.choice(root_ids)}/peers", calls)
    return out


async def amain(args):
    res = {}
    for backend in (["sqlite"] + (["postgres"] if args.pg else [])):
        if args.only and backend != args.only:
            continue
        db_url, db = None, None
        if backend == "postgres":
            db = f"bench_fleet_{os.getpid()}"
            psql_run(args.psql, args.pg + "/postgres", f"CREATE DATABASE {db}")
            db_url = f"{args.pg}/{db}"
        srv = await Server(args, f"{backend}-fleet", db_url).ready()
        try:
            say(f"[{backend}] fleet of {args.n} workspaces, {args.roots} teams")
            res[backend] = await measure(srv, args.n, args.roots, args.calls)
        finally:
            srv.close()
            if db:
                psql_run(args.psql, args.pg + "/postgres", f"DROP DATABASE {db}")
        say(f"[{backend}] {json.dumps(res[backend])}")
    return res


def main():
    ap = engine_args()
    ap.add_argument("-n", type=int, default=10_000, help="workspaces in the fleet")
    ap.add_argument("--roots", type=int, default=100, help="teams (root workspaces)")
    ap.add_argument("--calls", type=int, default=200, help="calls per measure (at least 200)")
    args = ap.parse_args()
    run_in_temp_work(args, amain)


if __name__ == "__main__":
    main()
