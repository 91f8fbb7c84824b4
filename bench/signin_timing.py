"""Sign-in timing by outcome (issue 12: a locked known account and an unknown name must not be
told apart by time). Each sign-in goes through the API (``POST /api/v1/auth/token`` over the
ASGI app) with the installation's default argon2 cost (t=3, 64 MiB), on a fresh SQLite file
(and PostgreSQL with ``--backend postgres``). Outcomes are interleaved round-robin so that
load on a shared machine hits them alike.

Outcomes: ``unknown`` (a name nobody has), ``wrong`` (a known name, wrong password),
``backing_off`` (a known name whose client backed off after failures, right password),
``inactive`` (a deactivated account), and ``ok`` (a successful sign-in, for reference).

Run: ``.venv/bin/python bench/signin_timing.py --rounds 40``. Prints one JSON object: per
outcome the median, 10th and 90th percentile in ms, and each refusal's median as a ratio to
the ``wrong`` median.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from trialdesk.bootstrap import bootstrap, create_app
from trialdesk.config import Settings
from trialdesk.protocol.loader import load_protocol
from trialdesk.services import admin
from trialdesk.services.access import operator_actor
from trialdesk.services.crypto import create_key_file
from trialdesk.services.setup import create_demo_users, initialize_study
from trialdesk.store.database import make_engine

PG_URL = os.environ.get(
    "TRIALDESK_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PASSWORD = "bench-password-1"
TOKEN = "/api/v1/auth/token"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(backend: str, rounds: int, tmp: Path) -> dict[str, Any]:
    key = tmp / "bench.key"
    create_key_file(key)
    schema = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp}/signin.db"
        engine = make_engine(url)
    else:
        url = PG_URL
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with create_engine(PG_URL, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        # a clock that stands still: the back-off must not run out during the measurement
        now = dt.datetime.now(dt.UTC)
        runtime = bootstrap(
            Settings(database_url=url, allocation_key_file=key), engine=engine, clock=lambda: now
        )
        ctx, op = runtime.context, operator_actor()
        info = initialize_study(ctx, op, load_protocol(None), code="BENCH", mode="demo")
        create_demo_users(ctx, op, info.id, PASSWORD)
        admin.deactivate_user(ctx, op, info.id, "dsmb")
        api = TestClient(create_app(runtime), client=("bench-client", 1))
        for _ in range(ctx.settings.lockout_attempts):  # the implanter backs off for this client
            api.post(TOKEN, json={"username": "implanter", "password": "wrong"})
        cases = {
            "unknown": {"username": "nobody-by-this-name", "password": "wrong password"},
            "wrong": {"username": "monitor", "password": "wrong password"},
            "backing_off": {"username": "implanter", "password": PASSWORD},
            "inactive": {"username": "dsmb", "password": PASSWORD},
            "ok": {"username": "crc", "password": PASSWORD},
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        statuses: dict[str, set[int]] = {name: set() for name in cases}
        bodies: dict[str, set[str]] = {name: set() for name in cases}
        for n in range(rounds):
            for name, body in cases.items():
                # a fresh client per round for the refusals that must not back off themselves
                client = "bench-client" if name == "backing_off" else f"c{n}-{name}"
                api = TestClient(create_app(runtime), client=(client, 1))
                started = time.perf_counter()
                response = api.post(TOKEN, json=body)
                times[name].append((time.perf_counter() - started) * 1000)
                statuses[name].add(response.status_code)
                if name != "ok":
                    bodies[name].add(response.text)
        runtime.close()
    finally:
        engine.dispose()
        if schema is not None:
            with create_engine(PG_URL, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    wrong = statistics.median(times["wrong"])
    refusals = [name for name in cases if name != "ok"]
    return {
        "backend": backend,
        "rounds": rounds,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "load_average": os.getloadavg(),
        "outcomes": {
            name: {
                "status": sorted(statuses[name]),
                "median_ms": round(statistics.median(v), 1),
                "p10_ms": round(_percentile(v, 0.1), 1),
                "p90_ms": round(_percentile(v, 0.9), 1),
                "median_ratio_to_wrong": round(statistics.median(v) / wrong, 3),
            }
            for name, v in times.items()
        },
        "identical_refusal_bodies": len(set().union(*(bodies[n] for n in refusals))) == 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(args.backend, args.rounds, Path(tmp)), indent=2))


if __name__ == "__main__":
    main()
