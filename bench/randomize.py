"""Concurrency benchmark of randomization through the service layer (RAND-5).

C client processes, one site each, randomize N eligible subjects at once; afterwards the
integrity of the allocation is checked (no subject twice, no slot twice, slots in order per
stratum, audit chain valid). Subjects are brought to the procedure day through the real
services before the clock starts (that part is not timed).

    .venv/bin/python bench/randomize.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --clients 75 --subjects 750 --json

A PostgreSQL URL gets a fresh schema, dropped afterwards; a SQLite URL names a new file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, select, text  # noqa: E402
from tests import journey  # noqa: E402
from tests.conftest import PASSWORD, Trial  # noqa: E402
from tests.fakes import FakeClock  # noqa: E402

from trialdesk.bootstrap import bootstrap  # noqa: E402
from trialdesk.config import Settings  # noqa: E402
from trialdesk.protocol.loader import load_protocol, parse_protocol  # noqa: E402
from trialdesk.services.access import operator_actor  # noqa: E402
from trialdesk.services.allocation.lists import generate_list  # noqa: E402
from trialdesk.services.allocation.randomization import randomize  # noqa: E402
from trialdesk.services.crypto import create_key_file  # noqa: E402
from trialdesk.services.setup import create_demo_users, initialize_study  # noqa: E402
from trialdesk.store.audit import verify_chain  # noqa: E402
from trialdesk.store.database import make_engine  # noqa: E402
from trialdesk.store.tables import AllocationSlotRow, RandomizationRow  # noqa: E402

NOW = dt.datetime(2027, 2, 15, 12, tzinfo=dt.UTC)


class FixedClock(FakeClock):
    """The procedure day for every step: all dates of the journey are in its past."""

    def set_day(self, day: dt.date | str, hour: int = 12) -> None:
        return None


def _engine(url: str, schema: str | None, pool: int) -> Any:
    kwargs: dict[str, Any] = {}
    if schema:
        kwargs = {
            "connect_args": {"options": f"-csearch_path={schema}"},
            "pool_size": pool,
            "max_overflow": 0,
        }
    return make_engine(url, **kwargs)


def _settings(url: str, key: Path) -> Settings:
    return Settings(
        database_url=url, allocation_key_file=key, argon2_time_cost=1, argon2_memory_kib=1024
    )


def _worker(
    url: str,
    schema: str | None,
    key: str,
    study_id: int,
    jobs: list[tuple[str, int]],
    barrier: Any,
    out: Any,
) -> None:
    """One process (like one server worker) running one thread per client site."""
    import threading

    runtime = bootstrap(
        _settings(url, Path(key)),
        clock=FixedClock(NOW),
        engine=_engine(url, schema, len(jobs) + 2),
        run_migrations=False,
    )
    t = Trial(runtime=runtime, clock=FixedClock(NOW), study_id=study_id, backend="")
    prepared = [
        (
            site,
            [journey.anatomy_suitable(t, site) for _ in range(n)],
            journey.staff(t, "implanter", site),
        )
        for site, n in jobs
    ]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client(site: str, numbers: list[str], actor: Any) -> None:
        latencies, errors = [], []
        for number in numbers:
            start = time.perf_counter()
            try:
                randomize(runtime.context, actor, study_id, number)
            except Exception as exc:  # reported, and integrity is checked afterwards
                errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - start)
        with lock:
            results.append(
                {"site": site, "latencies": latencies, "errors": errors, "end": time.time()}
            )

    threads = [threading.Thread(target=client, args=job) for job in prepared]
    barrier.wait()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    runtime.close()
    for r in results:
        out.put(r)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def run(url: str, clients: int, subjects: int, processes: int | None = None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="td-bench-"))
    key = workdir / "allocation.key"
    create_key_file(key)
    schema = None
    if url.startswith("postgresql"):
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    elif url == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
    flagship = load_protocol(None)
    cap = max(subjects, flagship.protocol.enrolment.target_subjects)
    loaded = parse_protocol(
        flagship.text.replace("target_subjects: 352", f"target_subjects: {cap}").replace(
            "cap_total: 352", f"cap_total: {cap}"
        ),
        source="bench",
    )
    sites = [s.code for s in loaded.protocol.sites][:clients]
    if len(sites) < clients:
        raise SystemExit(f"the flagship has {len(sites)} sites; use at most that many clients")
    try:
        runtime = bootstrap(
            _settings(url, key), clock=FixedClock(NOW), engine=_engine(url, schema, 5)
        )
        operator = operator_actor()
        info = initialize_study(runtime.context, operator, loaded, code="BENCH", mode="sandbox")
        create_demo_users(runtime.context, operator, info.id, PASSWORD)
        per_site = max(1, subjects // clients)
        generate_list(
            runtime.context, operator, info.id, mode="live", seed=1, size_per_stratum=per_site + 4
        )
        ctx = mp.get_context("fork")
        workers = processes or clients
        counts = [
            subjects // clients + (1 if i < subjects % clients else 0) for i in range(clients)
        ]
        jobs = list(zip(sites, counts, strict=True))
        chunks = [jobs[w::workers] for w in range(workers)]
        barrier = ctx.Barrier(workers + 1)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_worker, args=(url, schema, str(key), info.id, chunk, barrier, out))
            for chunk in chunks
        ]
        for p in procs:
            p.start()
        barrier.wait()
        start = time.time()
        results = [out.get(timeout=3600) for _ in range(clients)]
        for p in procs:
            p.join()
        seconds = max(r["end"] for r in results) - start
        latencies = [x for r in results for x in r["latencies"]]
        errors = [e for r in results for e in r["errors"]]
        integrity = _integrity(runtime)
        runtime.close()
    finally:
        if schema:
            with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    return {
        "db": "postgresql" if schema else "sqlite",
        "clients": clients,
        "processes": processes or clients,
        "subjects": subjects,
        "seconds": round(seconds, 3),
        "randomizations_per_s": round((len(latencies) - len(errors)) / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(_percentile(latencies, 95) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 1),
        "errors": len(errors),
        "error_examples": errors[:3],
        "integrity_ok": integrity and not errors,
    }


def _integrity(runtime: Any) -> bool:
    with runtime.context.uow(readonly=True) as uow:
        rands = uow.session.scalars(select(RandomizationRow)).all()
        if len({r.subject_id for r in rands}) != len(rands):
            return False
        slots = [r.slot_id for r in rands]
        if len(set(slots)) != len(slots):
            return False
        per: dict[str, list[int]] = defaultdict(list)
        for slot in uow.session.scalars(
            select(AllocationSlotRow).where(AllocationSlotRow.used_by_subject_id.is_not(None))
        ):
            per[slot.stratum].append(slot.sequence)
        if any(sorted(v) != list(range(1, len(v) + 1)) for v in per.values()):
            return False
        return verify_chain(uow.session).ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="database URL, or 'sqlite' for a temp file")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="worker processes the clients run in (default: one each)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.db, args.clients, args.subjects, args.processes)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:22} {v}")


if __name__ == "__main__":
    main()
