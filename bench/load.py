"""HTTP load benchmark of `trialdesk serve` on PostgreSQL (RAND-5, issue 7).

A fresh database ``trialdesk_load_<pid>`` is created (and dropped at the end); a demo study is
prepared through the services in forked processes (not timed): at each of C sites, R subjects
ready to randomize and V randomized subjects due for their one-month visit. The server then
runs as a subprocess (``--workers`` uvicorn processes, clock fixed at the visit day), and C
site clients (asyncio tasks, httpx) work at once over real HTTP: each randomizes its R
subjects (implanting team, with an Idempotency-Key) and records its V visits (coordinator),
interleaved. Printed: throughput, p50/p95/p99 per action, errors; then integrity (no subject
or slot twice, slots a prefix of each stratum, audit chain valid, every 2xx answer's write in
the database). The pgbench ceiling of bench/pg_ceiling.sh is measured in the same run, before
the load, and the figures are given as ratios to it.

    .venv/bin/python bench/load.py                 # 75 clients, 2 workers
    .venv/bin/python bench/load.py --quick         # 10 clients, a minute
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from tests import flagship_data as fd  # noqa: E402
from tests import journey  # noqa: E402
from tests.conftest import PASSWORD, Trial  # noqa: E402
from tests.fakes import FakeClock  # noqa: E402
from tests.server import Server  # noqa: E402

from trialdesk.bootstrap import bootstrap  # noqa: E402
from trialdesk.config import Settings  # noqa: E402
from trialdesk.protocol.loader import load_protocol, parse_protocol  # noqa: E402
from trialdesk.services.access import operator_actor  # noqa: E402
from trialdesk.services.allocation.lists import generate_list  # noqa: E402
from trialdesk.services.crypto import create_key_file  # noqa: E402
from trialdesk.services.setup import create_demo_users, initialize_study  # noqa: E402
from trialdesk.store.audit import verify_chain  # noqa: E402
from trialdesk.store.tables import (  # noqa: E402
    AllocationSlotRow,
    RandomizationRow,
    StratumCursorRow,
    SubjectRow,
    VisitRow,
)

BASE_URL = os.environ.get(
    "TRIALDESK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
START = dt.datetime(2027, 1, 25, 12, tzinfo=dt.UTC)
LOAD_DAY = dt.datetime.fromisoformat(fd.M1_DATE).replace(hour=12, tzinfo=dt.UTC)
STUDY = "/api/v1/studies/FLAGSHIP"


def _settings(url: str, key: Path) -> Settings:
    return Settings(
        database_url=url, allocation_key_file=key, argon2_time_cost=1, argon2_memory_kib=1024
    )


def _prepare_sites(
    url: str, key: str, study_id: int, sites: list[str], randomize: int, visits: int, out: Any
) -> None:
    """One forked process: users and subjects of its sites through the services."""
    clock = FakeClock(START)
    runtime = bootstrap(_settings(url, Path(key)), clock=clock, run_migrations=False)
    t = Trial(runtime=runtime, clock=clock, study_id=study_id, backend="postgres")
    for site in sites:
        staff = {
            role: journey.staff(t, role, site).username for role in ("implanter", "coordinator")
        }
        due = [journey.procedure_done(t, site)[0] for _ in range(visits)]
        ready = [journey.anatomy_suitable(t, site) for _ in range(randomize)]
        out.put({"site": site, "staff": staff, "ready": ready, "due": due})
    runtime.close()


def prepare(url: str, key: Path, clients: int, randomize: int, visits: int) -> dict[str, Any]:
    flagship = load_protocol(None)
    cap = 2 * clients * (randomize + visits) + 400  # far from the caps: the common path
    loaded = parse_protocol(
        flagship.text.replace("target_subjects: 352", f"target_subjects: {cap}").replace(
            "cap_total: 352", f"cap_total: {cap}"
        ),
        source="load bench",
    )
    sites = [s.code for s in loaded.protocol.sites][:clients]
    if len(sites) < clients:
        raise SystemExit(f"the flagship has {len(sites)} sites; use at most that many clients")
    runtime = bootstrap(_settings(url, key), clock=FakeClock(START))
    operator = operator_actor()
    info = initialize_study(runtime.context, operator, loaded, code="FLAGSHIP", mode="demo")
    create_demo_users(runtime.context, operator, info.id, PASSWORD)
    generate_list(
        runtime.context,
        operator,
        info.id,
        mode="live",
        seed=1,
        size_per_stratum=randomize + visits + 4,
    )
    runtime.close()
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_prepare_sites,
            args=(url, str(key), info.id, sites[w::2], randomize, visits, out),
        )
        for w in range(2)
    ]
    for p in procs:
        p.start()
    prepared = [out.get(timeout=3600) for _ in sites]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit("preparation failed")
    return {"study_id": info.id, "sites": sorted(prepared, key=lambda s: s["site"])}


def pg_ceiling(url: str, clients: int, seconds: int) -> dict[str, float]:
    """bench/pg_ceiling.sh against the same server; its tps and mean latency."""
    parsed = make_url(url)
    env = {
        **os.environ,
        "PGHOST": parsed.host or "127.0.0.1",
        "PGPORT": str(parsed.port or 5432),
        "PGUSER": parsed.username or "postgres",
        "PGDATABASE": parsed.database or "postgres",
    }
    done = subprocess.run(
        [str(ROOT / "bench" / "pg_ceiling.sh"), str(clients), str(seconds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    tps = re.search(r"tps = ([\d.]+)", done.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    if tps is None or latency is None:
        raise SystemExit(f"pgbench output not understood:\n{done.stdout}\n{done.stderr}")
    return {"tps": float(tps.group(1)), "latency_ms": float(latency.group(1))}


async def _token(client: httpx.AsyncClient, username: str) -> str:
    response = await client.post(
        "/api/v1/auth/token", json={"username": username, "password": PASSWORD}
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def _site_client(
    client: httpx.AsyncClient, site: dict[str, Any], tokens: dict[str, str], log: dict[str, Any]
) -> None:
    """One site: randomize its ready subjects and record its due visits, interleaved."""
    implanter = {"Authorization": f"Bearer {tokens[site['staff']['implanter']]}"}
    coordinator = {"Authorization": f"Bearer {tokens[site['staff']['coordinator']]}"}
    visit = {"visit_date": fd.M1_DATE, "forms": fd.follow_up_forms(fd.M1_DATE)}
    ready, due = list(site["ready"]), list(site["due"])
    while ready or due:
        if ready:
            number = ready.pop(0)
            start = time.perf_counter()
            response = await client.post(
                f"{STUDY}/subjects/{number}/randomize",
                headers={**implanter, "Idempotency-Key": f"{number}-load"},
            )
            log["randomize"].append(time.perf_counter() - start)
            if response.status_code == 200:
                body = response.json()
                log["randomized"][number] = (body["randomization_number"], body["arm"]["code"])
            else:
                log["errors"].append(f"randomize {number}: {response.status_code}")
        if due:
            number = due.pop(0)
            start = time.perf_counter()
            response = await client.post(
                f"{STUDY}/subjects/{number}/visits/M1", headers=coordinator, json=visit
            )
            log["visit"].append(time.perf_counter() - start)
            if response.status_code == 200:
                log["visited"].append(number)
            else:
                log["errors"].append(f"visit {number}: {response.status_code}")


async def load(base: str, prepared: dict[str, Any]) -> dict[str, Any]:
    log: dict[str, Any] = {
        "randomize": [],
        "visit": [],
        "randomized": {},
        "visited": [],
        "errors": [],
    }
    sites = prepared["sites"]
    limits = httpx.Limits(max_connections=len(sites) + 10, max_keepalive_connections=len(sites))
    async with httpx.AsyncClient(base_url=base, timeout=120.0, limits=limits) as client:
        users = sorted({u for s in sites for u in s["staff"].values()})
        got = await asyncio.gather(*(_token(client, u) for u in users))
        tokens = dict(zip(users, got, strict=True))
        # warm-up, not timed: each client reads one of its subjects (protocol parsed, pools open)
        await asyncio.gather(
            *(
                client.get(
                    f"{STUDY}/subjects/{s['ready'][0]}",
                    headers={"Authorization": f"Bearer {tokens[s['staff']['implanter']]}"},
                )
                for s in sites
                if s["ready"]
            )
        )
        started = time.perf_counter()
        await asyncio.gather(*(_site_client(client, s, tokens, log) for s in sites))
        log["seconds"] = time.perf_counter() - started
    return log


def integrity(url: str, key: Path, log: dict[str, Any]) -> dict[str, bool]:
    runtime = bootstrap(_settings(url, key), run_migrations=False)
    ctx = runtime.context
    with ctx.uow(readonly=True) as uow:
        s = uow.session
        rows = s.execute(
            select(SubjectRow.number, RandomizationRow).join(
                RandomizationRow, RandomizationRow.subject_id == SubjectRow.id
            )
        ).all()
        stored = {n: (r.number, ctx.cipher.decrypt(r.arm_enc)) for n, r in rows}
        slot_ids = [r.slot_id for _, r in rows]
        used: dict[str, list[int]] = defaultdict(list)
        for slot in s.scalars(
            select(AllocationSlotRow).where(AllocationSlotRow.used_by_subject_id.is_not(None))
        ):
            used[slot.stratum].append(slot.sequence)
        cursors = {c.stratum: c.next_sequence for c in s.scalars(select(StratumCursorRow))}
        done_visits = set(
            s.scalars(
                select(SubjectRow.number)
                .join(VisitRow, VisitRow.subject_id == SubjectRow.id)
                .where(VisitRow.visit_code == "M1", VisitRow.status == "done")
            )
        )
        chain = verify_chain(s)
    runtime.close()
    return {
        "no_subject_or_slot_twice": len(set(slot_ids)) == len(slot_ids) == len(stored),
        "slots_in_order_without_gaps": all(
            sorted(v) == list(range(1, len(v) + 1)) and cursors[k] == len(v) + 1
            for k, v in used.items()
        ),
        "audit_chain_valid": chain.ok,
        "every_2xx_randomization_stored_as_answered": all(
            stored.get(n) == tuple(answer) for n, answer in log["randomized"].items()
        ),
        "every_2xx_visit_stored": set(log["visited"]) <= done_visits,
    }


def _ms(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return round(ordered[k] * 1000, 1)


def run(
    base_url: str, clients: int, randomize: int, visits: int, workers: int, ceiling_s: int
) -> dict[str, Any]:
    name = f"trialdesk_load_{os.getpid()}"
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    workdir = Path(tempfile.mkdtemp(prefix="td-load-"))
    key = workdir / "allocation.key"
    create_key_file(key)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    server: Server | None = None
    try:
        t0 = time.perf_counter()
        prepared = prepare(url, key, clients, randomize, visits)
        prep_s = time.perf_counter() - t0
        ceiling = pg_ceiling(url, clients, ceiling_s)
        env = {
            "TRIALDESK_DATABASE_URL": url,
            "TRIALDESK_ALLOCATION_KEY_FILE": str(key),
            "TRIALDESK_CLOCK": LOAD_DAY.isoformat(),
        }
        server = Server(env, workdir / "server.log", workers=workers)
        server.start(timeout=120)
        load_before = os.getloadavg()[0]
        log = asyncio.run(load(server.base, prepared))
        log["loadavg"] = (round(load_before, 1), round(os.getloadavg()[0], 1))
        server.stop()
        server = None
        checks = integrity(url, key, log)
    finally:
        if server is not None:
            server.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    seconds = log["seconds"]
    ok_rand, ok_visit = len(log["randomized"]), len(log["visited"])
    rand_per_s = ok_rand / seconds
    req_per_s = (ok_rand + ok_visit) / seconds
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPU, {platform.platform()}, "
        f"Python {platform.python_version()}",
        "clients": clients,
        "workers": workers,
        "prepare_s": round(prep_s, 1),
        "loadavg_1min_before_after": log["loadavg"],
        "load_s": round(seconds, 2),
        "randomizations": ok_rand,
        "visits": ok_visit,
        "randomizations_per_s": round(rand_per_s, 1),
        "requests_per_s": round(req_per_s, 1),
        "randomize_ms": {
            p: _ms(log["randomize"], q) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))
        },
        "visit_ms": {p: _ms(log["visit"], q) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))},
        "errors": len(log["errors"]),
        "error_examples": log["errors"][:3],
        "pgbench_tps": ceiling["tps"],
        "pgbench_latency_ms": ceiling["latency_ms"],
        "randomizations_vs_ceiling_pct": round(100 * rand_per_s / ceiling["tps"], 2),
        "requests_vs_ceiling_pct": round(100 * req_per_s / ceiling["tps"], 2),
        "randomize_p99_vs_pgbench_latency": round(
            _ms(log["randomize"], 99) / ceiling["latency_ms"], 1
        ),
        "integrity": checks,
        "integrity_ok": all(checks.values()) and not log["errors"],
        "mean_randomize_ms": round(statistics.fmean(log["randomize"]) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", default=BASE_URL, help="PostgreSQL URL of an existing database")
    parser.add_argument("--clients", type=int, default=75)
    parser.add_argument("--randomize", type=int, default=4, help="randomizations per site")
    parser.add_argument("--visits", type=int, default=2, help="M1 visits per site")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--ceiling-seconds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="10 clients, 3 + 2 actions each")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.randomize, args.visits, args.ceiling_seconds = 10, 3, 2, 5
    if not args.db.startswith("postgresql"):
        raise SystemExit("bench/load.py runs on PostgreSQL (--db postgresql+psycopg://...)")
    result = run(
        args.db, args.clients, args.randomize, args.visits, args.workers, args.ceiling_seconds
    )
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:34} {v}")
    if not result["integrity_ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
