#!/usr/bin/env python3
"""Schedules bench (issue 24), printed, not a timed test:

1. fire lag: N workspaces (default 1,000), each holding a long poll on its
   inbox, each with a schedule due in the same minute; lag = the wall
   clock when a poll answers with the fire's `delegate` row minus the due
   instant. p50 / p99 / max.
2. database time per tick with M schedules (default 100,000), none due:
   the scheduler's exact claim query (`fire_due`) in its write
   transaction, timed on SQLite (python's sqlite3 over the server's file)
   and, with --pg, inside PostgreSQL (a PL/pgSQL loop, so no client round
   trip is counted).

SQLite always; PostgreSQL when --pg names a server (a database
`bench_sched_<pid>` is created and dropped). Python 3.11 standard library
only; reuses bench.py's HTTP client and process helpers.
"""

import asyncio
import json
import os
import sqlite3
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Server, http, pct, ms, psql_run, say, run_in_temp_work, engine_args  # noqa: E402

# The scheduler's claim, as src/store/schedules.rs writes it.
CLAIM = ("SELECT * FROM schedules s WHERE enabled AND next_run_at <= {now} "
         "AND EXISTS (SELECT 1 FROM workspaces w WHERE w.id = s.workspace_id "
         "AND w.removed_at IS NULL AND w.paused_at IS NULL) "
         "ORDER BY next_run_at, id LIMIT 100")


async def fire_lag(srv, n):
    sem = asyncio.Semaphore(16)

    async def create(i):
        async with sem:
            return await srv.workspace(f"sched-{i}")

    wss = await asyncio.gather(*(create(i) for i in range(n)))
    seen = {}
    errors = {}  # poll answers other than 200, by status

    async def poller(ws, tok):
        while ws not in seen:
            try:
                r = await http(srv.port, "GET", f"/workspaces/{ws}/activity?type=a2a_receive&wait=30", tok,
                               timeout=45)
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)
                continue
            now = time.time()
            if r.status != 200:
                errors[r.status] = errors.get(r.status, 0) + 1
                await asyncio.sleep(0.2)
                continue
            if r.status == 200 and any(row.get("method") == "delegate" for row in r.json()):
                seen[ws] = now

    pollers = [asyncio.create_task(poller(ws, tok)) for ws, tok in wss]
    await asyncio.sleep(3)  # every poll reaches the server and parks
    # One minute for all, at least 40 s away so every schedule exists
    # before it is due.
    due = (int(time.time()) + 40) // 60 * 60 + 60
    cron = time.strftime("%M %H * * *", time.gmtime(due))

    async def schedule(ws):
        async with sem:
            r = await http(srv.port, "POST", f"/workspaces/{ws}/schedules", srv.token,
                           {"name": "lag", "cron_expr": cron, "prompt": "tick", "overlap": "allow_all"})
            assert r.status == 201, (r.status, r.body)

    t0 = time.time()
    await asyncio.gather(*(schedule(ws) for ws, _ in wss))
    created_s = time.time() - t0
    assert time.time() < due - 1, "creating the schedules took past their due minute; rerun"
    say(f"{n} schedules created in {created_s:.1f} s; due {time.strftime('%H:%M:%S', time.gmtime(due))} UTC")
    deadline = due + 60
    while len(seen) < n and time.time() < deadline:
        await asyncio.sleep(0.1)
    for p in pollers:
        p.cancel()
    lags = [t - due for t in seen.values()]
    metrics = (await http(srv.port, "GET", "/metrics", srv.token)).body.decode()
    return {"workspaces": n, "delivered": len(lags), "poll_errors": errors, "lag_p50_ms": ms(pct(lags, 0.5)),
            "lag_p99_ms": ms(pct(lags, 0.99)), "lag_max_ms": ms(max(lags) if lags else float("nan")),
            "committed_within": committed_within(metrics)}


def committed_within(metrics_text):
    """The server's own share of the lag: the fraction of fires whose inbox
    row committed within 0.5 / 1 / 2 / 5 s of the due instant (its
    `molecule_schedule_fire_lag_seconds` histogram), so the bench tells
    the scheduler's time apart from the polls' wake-up and answer."""
    series = "molecule_schedule_fire_lag_seconds"
    buckets, count = {}, None
    for line in metrics_text.splitlines():
        if line.startswith(series + "_bucket{le="):
            le = line.split('"')[1]
            buckets[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(series + "_count "):
            count = float(line.rsplit(" ", 1)[1])
    if not count:
        return None
    return {f"{le}s": round(buckets[le] / count, 4) for le in ("0.5", "1", "2", "5") if le in buckets}


def sqlite_tick(db_path, m, runs=2000):
    """Adds `m` schedules due tomorrow over the server's workspaces, then
    times the claim in a write transaction, as a tick does."""
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute("PRAGMA busy_timeout = 10000")
    wss = [r[0] for r in con.execute("SELECT id FROM workspaces")]
    now_us = int(time.time() * 1e6)
    later = now_us + 86_400_000_000
    rows = [(str(uuid.uuid4()), wss[i % len(wss)], f"idle-{i}", "0 3 * * *", "UTC", "p", 1, "skip", 3600,
             later + i, now_us, now_us) for i in range(m)]
    con.execute("BEGIN")
    con.executemany("INSERT INTO schedules (id, workspace_id, name, cron_expr, timezone, prompt, enabled, overlap, "
                    "catch_up_s, next_run_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.execute("COMMIT")
    con.execute("ANALYZE")
    plan = " / ".join(r[3] for r in con.execute("EXPLAIN QUERY PLAN " + CLAIM.format(now=now_us)))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        assert con.execute(CLAIM.format(now=int(time.time() * 1e6))).fetchone() is None
        con.execute("COMMIT")
        times.append(time.perf_counter() - t)
    total = con.execute("SELECT COUNT(*) FROM schedules").fetchone()[0]
    con.close()
    return {"schedules": total, "tick_p50_ms": round(pct(times, 0.5) * 1000, 3),
            "tick_p99_ms": round(pct(times, 0.99) * 1000, 3), "plan": plan}


def pg_tick(psql, url, m, runs=2000):
    psql_run(psql, url, f"""
        INSERT INTO schedules (id, workspace_id, name, cron_expr, timezone, prompt, enabled, overlap,
            catch_up_s, next_run_at, created_at, updated_at)
        SELECT gen_random_uuid(), w.a[1 + g % array_length(w.a, 1)], 'idle-' || g, '0 3 * * *', 'UTC', 'p',
               true, 'skip', 3600, now() + interval '1 day' + g * interval '1 ms', now(), now()
        FROM generate_series(1, {m}) g, (SELECT array_agg(id) AS a FROM workspaces) w;
        ANALYZE schedules; ANALYZE workspaces;""")
    # now(), not clock_timestamp(): a stable value can bound the index scan,
    # as the server's bound parameter does.
    claim = CLAIM.format(now="now()") + " FOR UPDATE SKIP LOCKED"
    per_tick = psql_run(psql, url, f"""
        CREATE FUNCTION pg_temp.bench_claim() RETURNS float8 AS $f$
        DECLARE t0 timestamptz; r record; BEGIN
          t0 := clock_timestamp();
          FOR i IN 1..{runs} LOOP
            FOR r IN {claim} LOOP RAISE 'a schedule is due'; END LOOP;
          END LOOP;
          RETURN extract(epoch FROM clock_timestamp() - t0) * 1000 / {runs};
        END $f$ LANGUAGE plpgsql;
        SELECT round(pg_temp.bench_claim()::numeric, 4);""")
    plan = psql_run(psql, url, "EXPLAIN (ANALYZE, COSTS OFF) " + claim)
    total = psql_run(psql, url, "SELECT COUNT(*) FROM schedules")
    return {"schedules": int(total), "tick_mean_ms": float(per_tick), "plan": plan.replace("\n", " / ")}


async def amain(args):
    res = {}
    for backend in (["sqlite"] + (["postgres"] if args.pg else [])):
        if args.only and backend != args.only:
            continue
        db_url, db = None, None
        if backend == "postgres":
            db = f"bench_sched_{os.getpid()}"
            psql_run(args.psql, args.pg + "/postgres", f"CREATE DATABASE {db}")
            db_url = f"{args.pg}/{db}"
        srv = await Server(args, f"{backend}-sched", db_url).ready()
        try:
            say(f"[{backend}] fire lag, {args.n} workspaces")
            lag = await fire_lag(srv, args.n)
        finally:
            srv.close()
        say(f"[{backend}] tick cost, {args.m} schedules none due")
        if backend == "sqlite":
            tick = sqlite_tick(os.path.join(srv.dir, "molecule.db"), args.m)
        else:
            tick = pg_tick(args.psql, db_url, args.m)
            psql_run(args.psql, args.pg + "/postgres", f"DROP DATABASE {db}")
        res[backend] = {"fire_lag": lag, "tick": tick}
        say(f"[{backend}] {json.dumps(res[backend])}")
    return res


def main():
    ap = engine_args()
    ap.add_argument("-n", type=int, default=1000, help="workspaces due in the same minute")
    ap.add_argument("-m", type=int, default=100_000, help="schedules, none due, for the tick cost")
    args = ap.parse_args()
    run_in_temp_work(args, amain)


if __name__ == "__main__":
    main()
