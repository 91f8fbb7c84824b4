"""Issue 13's figures in one command: the hot path per call, and 75 concurrent clients
in-process and over HTTP, each beside the pgbench ceiling measured in the same run.

    .venv/bin/python bench/issue13.py                  # everything (about 10 minutes)
    .venv/bin/python bench/issue13.py --only calls     # per-call costs only (a minute)
    .venv/bin/python bench/issue13.py --json out.json  # also write the figures as JSON

Per call (PostgreSQL on this host, one process, after a warm-up so that psycopg's prepared
statements are in place): Python CPU of this process, CPU of the PostgreSQL backends serving
it (read from /proc), statements and round trips (statements + BEGIN + COMMIT + ROLLBACK + the
pool's pre-ping on checkout: psycopg sends each transaction's BEGIN on its own), for
randomize (the implanting team, who sees the arm), record visit (M1 with its forms),
subject read, sign-in (``issue_token``, argon2 at the cheap bench settings), an API request
without a token (the 401, through the ASGI app) and an API subject read with one.

Concurrency (``bench/randomize.py`` in-process: 75 client threads in 2 processes, each a site
randomizing its subjects; ``bench/load.py`` over HTTP: ``serve --workers 2``, 75 asyncio
clients randomizing and recording visits): throughput, p50/p95/p99, errors and the integrity
checks, each with ``bench/pg_ceiling.sh`` run just before it at the same client count.

The machine's load (``uptime``) is recorded before and after: on a shared machine the
figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DEFAULT_URL = os.environ.get(
    "TRIALDESK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TARGETS_MS = {"randomize": 3.0, "record_visit": 3.0, "subject_read": 1.0, "unauthorized": 0.5}
TARGET_ROUND_TRIPS = {"randomize": 12}
TARGET_RATIO = {"in_process": 0.08, "http": 0.04}


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


# --------------------------------------------------------------------------- per call


def per_call(url: str, n: int, warmup: int) -> dict[str, Any]:
    """The hot path, call by call, on a database of its own (dropped afterwards)."""
    from sqlalchemy import create_engine, event, text
    from sqlalchemy.engine import make_url
    from tests import flagship_data as fd
    from tests import journey
    from tests.conftest import PASSWORD, build_trial, flagship
    from tests.factory import ready_to_randomize
    from tests.fakes import FakeClock

    from trialdesk.api.app import create_app
    from trialdesk.bootstrap import bootstrap
    from trialdesk.services import followup, queries
    from trialdesk.services.allocation import lists, randomization
    from trialdesk.services.sessions import issue_token
    from trialdesk.store.database import make_engine

    name = f"td_bench13_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(db_url, pool_size=2, max_overflow=0)
    backends: set[int] = set()
    counts = {"statements": 0, "begins": 0, "commits": 0, "rollbacks": 0, "pings": 0}

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("select pg_backend_pid()")
            backends.add(int(cur.fetchone()[0]))

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(*_a: Any) -> None:
        counts["statements"] += 1

    for kind, key in (("begin", "begins"), ("commit", "commits"), ("rollback", "rollbacks")):

        def _count(*_a: Any, key: str = key) -> None:
            counts[key] += 1

        event.listen(engine, kind, _count)

    @event.listens_for(engine.pool, "checkout")
    def _checkout(*_a: Any) -> None:
        counts["pings"] += 1 if engine.pool._pre_ping else 0  # the pool's pre-ping

    try:

        class Db:
            backend = "postgres"

        Db.url = db_url  # type: ignore[attr-defined]
        Db.engine = engine  # type: ignore[attr-defined]
        workdir = Path(tempfile.mkdtemp(prefix="td-bench13-"))
        t = build_trial(Db, workdir, flagship())  # type: ignore[arg-type]
        numbers = ready_to_randomize(t, journey.SITE, count=n + warmup)
        # slots enough ahead: the common randomization, not the extension of a stratum
        lists.extend(t.ctx, t.actor("statistician"), t.study_id, f"site={journey.SITE}",
                     blocks=(n + warmup) // 2 + 8)  # fmt: skip
        implanter = t.actor("implanter")
        coordinator = t.actor("coordinator")
        ctx, study_id = t.ctx, t.study_id

        def run(calls: list[Any]) -> dict[str, float]:
            before = dict(counts)
            server = sum(_cpu_ticks(pid) for pid in backends)
            cpu, wall = time.process_time(), time.perf_counter()
            for call in calls:
                call()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            server = sum(_cpu_ticks(pid) for pid in backends) - server
            k = len(calls)
            tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
            out = {
                "calls": k,
                "client_cpu_ms": round(cpu * 1000 / k, 3),
                "server_cpu_ms": round(server * tick_ms / k, 3),
                "wall_ms": round(wall * 1000 / k, 3),
                **{key: round((counts[key] - before[key]) / k, 2) for key in counts},
            }
            out["round_trips"] = round(
                out["statements"]
                + out["begins"]
                + out["commits"]
                + out["rollbacks"]
                + out["pings"],
                2,
            )
            return out

        results: dict[str, Any] = {}

        def rand(number: str) -> Any:
            return lambda: randomization.randomize(ctx, implanter, study_id, number)

        run([rand(x) for x in numbers[:warmup]])
        results["randomize"] = run([rand(x) for x in numbers[warmup:]])

        # visits and reads a month later, on a second runtime sharing the engine
        day = dt.date.fromisoformat(fd.M1_DATE)
        later = FakeClock(dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC))
        runtime = bootstrap(t.runtime.context.settings, clock=later, engine=engine)
        ctx2 = runtime.context
        forms = fd.follow_up_forms(fd.M1_DATE)

        def visit(number: str) -> Any:
            return lambda: followup.record_visit(
                ctx2, coordinator, study_id, number, visit_code="M1", visit_date=day, forms=forms
            )

        def read(number: str) -> Any:
            return lambda: queries.get_subject(ctx2, coordinator, study_id, number)

        run([visit(x) for x in numbers[:warmup]])
        results["record_visit"] = run([visit(x) for x in numbers[warmup:]])
        reads = [read(numbers[i % len(numbers)]) for i in range(4 * n + warmup)]
        run(reads[:warmup])
        results["subject_read"] = run(reads[warmup:])

        def sign_in() -> Any:
            return lambda: issue_token(ctx2, "coordinator", PASSWORD, client="bench")

        run([sign_in() for _ in range(5)])
        results["sign_in"] = run([sign_in() for _ in range(max(20, n // 5))])

        app = create_app(runtime)
        path = f"/api/v1/studies/FLAGSHIP/subjects/{numbers[0]}"

        async def call_app(headers: list[tuple[bytes, bytes]]) -> int:
            status = 0
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": [(b"host", b"bench"), *headers],
                "client": ("127.0.0.1", 1),
                "server": ("bench", 80),
            }

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]

            await app(scope, receive, send)
            return status

        loop = asyncio.new_event_loop()
        for _ in range(warmup):
            assert loop.run_until_complete(call_app([])) == 401
        results["unauthorized"] = run(
            [lambda: loop.run_until_complete(call_app([])) for _ in range(4 * n)]
        )
        token = issue_token(ctx2, "coordinator", PASSWORD, client="bench").token
        bearer = [(b"authorization", f"Bearer {token}".encode())]
        for _ in range(warmup):
            assert loop.run_until_complete(call_app(bearer)) == 200
        results["api_subject_read"] = run(
            [lambda: loop.run_until_complete(call_app(bearer)) for _ in range(n)]
        )
        loop.close()
        runtime.close()
        t.runtime.close()
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return results


# --------------------------------------------------------------------------- ceilings


def pg_ceiling(clients: int, seconds: int) -> dict[str, Any]:
    script = ROOT / "bench" / "pg_ceiling.sh"
    env = dict(os.environ)
    pg_bin = "/usr/lib/postgresql/15/bin"
    if Path(pg_bin).is_dir():
        env["PATH"] = f"{env.get('PATH', '')}:{pg_bin}"
    out = subprocess.run(
        [str(script), str(clients), str(seconds)], capture_output=True, text=True, env=env
    )
    match = re.search(r"tps = ([0-9.]+)", out.stdout)
    latency = re.search(r"latency average = ([0-9.]+) ms", out.stdout)
    if match is None:
        raise SystemExit(f"pgbench failed: {out.stdout}\n{out.stderr}")
    return {
        "clients": clients,
        "tps": float(match.group(1)),
        "latency_ms": float(latency.group(1)) if latency else None,
    }


def in_process(url: str, clients: int, subjects: int, processes: int) -> dict[str, Any]:
    import randomize as bench_randomize  # bench/randomize.py

    return dict(bench_randomize.run(url, clients, subjects, processes))


def over_http(
    clients: int, workers: int, quick: bool, randomize: int, visits: int
) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "bench" / "load.py"), "--json"]
    cmd += ["--clients", str(clients), "--workers", str(workers)]
    cmd += ["--randomize", str(randomize), "--visits", str(visits)]
    if quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"bench/load.py failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return dict(json.loads(lines[-1]))


# --------------------------------------------------------------------------- report


def _calls_table(calls: dict[str, Any]) -> list[str]:
    lines = [
        "| call | client CPU ms | target | server CPU ms | wall ms | statements | round trips |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, r in calls.items():
        target = TARGETS_MS.get(kind)
        trips = TARGET_ROUND_TRIPS.get(kind)
        mark = "" if target is None else (" ok" if r["client_cpu_ms"] <= target else " MISSED")
        trip_mark = "" if trips is None else (" ok" if r["round_trips"] <= trips else " MISSED")
        lines.append(
            f"| {kind} | {r['client_cpu_ms']:.3f} | "
            f"{'' if target is None else f'≤ {target}{mark}'} | {r['server_cpu_ms']:.3f} | "
            f"{r['wall_ms']:.3f} | {r['statements']:.1f} | {r['round_trips']:.1f}"
            f"{'' if trips is None else f' (≤ {trips}{trip_mark})'} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", default=DEFAULT_URL, help="PostgreSQL URL (server on this host)")
    parser.add_argument("--only", choices=["calls", "in-process", "http"], default=None)
    parser.add_argument("--calls", type=int, default=200, help="randomizations measured")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--clients", type=int, default=75)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=750, help="in-process randomizations")
    parser.add_argument("--http-randomize", type=int, default=4, help="per site, over HTTP")
    parser.add_argument("--http-visits", type=int, default=2, help="M1 visits per site")
    parser.add_argument("--ceiling-seconds", type=int, default=15)
    parser.add_argument("--quick-http", action="store_true", help="bench/load.py --quick")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()

    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "uptime_before": _uptime(),
    }
    if args.only in (None, "calls"):
        report["calls"] = per_call(args.db, args.calls, args.warmup)
        print("\n".join(_calls_table(report["calls"])), flush=True)
    if args.only in (None, "in-process"):
        ceiling = pg_ceiling(args.clients, args.ceiling_seconds)
        result = in_process(args.db, args.clients, args.subjects, args.processes)
        result["ceiling_tps"] = ceiling["tps"]
        result["ratio"] = round(result["randomizations_per_s"] / ceiling["tps"], 4)
        result["target"] = TARGET_RATIO["in_process"]
        report["in_process"] = result
        print(json.dumps({"in_process": result}), flush=True)
    if args.only in (None, "http"):
        result = over_http(
            args.clients, args.processes, args.quick_http, args.http_randomize, args.http_visits
        )
        result["ratio"] = round(result["randomizations_per_s"] / result["pgbench_tps"], 4)
        result["ratio_requests"] = round(result["requests_per_s"] / result["pgbench_tps"], 4)
        result["target"] = TARGET_RATIO["http"]
        report["http"] = result
        print(json.dumps({"http": result}), flush=True)
    report["uptime_after"] = _uptime()
    print(f"uptime before: {report['uptime_before']}\nuptime after:  {report['uptime_after']}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
