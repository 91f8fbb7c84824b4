"""Per-call cost of the two hottest reads and writes of a site's day on PostgreSQL: reading a
subject (``queries.get_subject``) and recording a visit (``followup.record_visit``), for this
checkout and for an earlier revision of the code, on copies of one prepared database.

    .venv/bin/python bench/hot_path.py --before a399702          # main before issue 13
    .venv/bin/python bench/hot_path.py --before a399702 --json

For each code version it prints, per call: Python CPU of this process (the client), CPU of the
PostgreSQL backend processes serving its connections (read from /proc, so the server must run
on this machine), SQL statements sent, and COMMITs and ROLLBACKs. The first calls of each kind
are a warm-up (psycopg prepares a statement on its fifth execution) and are not counted.

Preparation (not measured): a fresh database with the flagship study in demo mode, its demo
users, a live list and N randomized subjects (tests/factory.py, then the randomization
service); every measurement runs on its own ``CREATE DATABASE ... TEMPLATE`` copy of it, so
both versions record the same first visit of the same subjects.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
M1_FORMS_DAY = "2027-03-17"  # tests/flagship_data.py M1_DATE: in the window


# --------------------------------------------------------------------------- measurement


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in a child process whose ``trialdesk`` is the code version under test."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import event
    from tests import flagship_data as fd

    import trialdesk
    from trialdesk.bootstrap import bootstrap
    from trialdesk.config import Settings
    from trialdesk.services import followup, queries
    from trialdesk.services.auth import authenticate
    from trialdesk.store.database import make_engine

    engine = make_engine(args.url, pool_size=2, max_overflow=0)
    backends: set[int] = set()
    counts = {"statements": 0, "commits": 0, "rollbacks": 0}

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("select pg_backend_pid()")
            backends.add(int(cur.fetchone()[0]))

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(*_a: Any) -> None:
        counts["statements"] += 1

    @event.listens_for(engine, "commit")
    def _commit(*_a: Any) -> None:
        counts["commits"] += 1

    @event.listens_for(engine, "rollback")
    def _rollback(*_a: Any) -> None:
        counts["rollbacks"] += 1

    day = dt.date.fromisoformat(M1_FORMS_DAY)
    noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)
    settings = Settings(
        database_url=args.url,
        allocation_key_file=Path(args.key),
        argon2_time_cost=1,
        argon2_memory_kib=1024,
    )
    runtime = bootstrap(settings, clock=lambda: noon, engine=engine, run_migrations=False)
    ctx, study_id = runtime.context, args.study
    coordinator = authenticate(ctx, "coordinator", args.password)
    numbers = json.loads(Path(args.numbers).read_text())
    (forms,) = [fd.follow_up_forms(M1_FORMS_DAY)]

    def run(calls: list[Any]) -> dict[str, float]:
        before = dict(counts)
        server = sum(_cpu_ticks(pid) for pid in backends)
        cpu, wall = time.process_time(), time.perf_counter()
        for call in calls:
            call()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        server = sum(_cpu_ticks(pid) for pid in backends) - server
        n = len(calls)
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        return {
            "calls": n,
            "client_cpu_ms": round(cpu * 1000 / n, 3),
            "server_cpu_ms": round(server * tick_ms / n, 3),
            "wall_ms": round(wall * 1000 / n, 3),
            **{k: round((counts[k] - before[k]) / n, 2) for k in counts},
        }

    def read(number: str) -> Any:
        return lambda: queries.get_subject(ctx, coordinator, study_id, number)

    def visit(number: str) -> Any:
        return lambda: followup.record_visit(
            ctx, coordinator, study_id, number, visit_code="M1", visit_date=day, forms=forms
        )

    warm = args.warmup
    reads = [read(numbers[i % len(numbers)]) for i in range(args.reads + warm)]
    run(reads[:warm])
    subject_read = run(reads[warm:])
    run([visit(n) for n in numbers[:warm]])
    record_visit = run([visit(n) for n in numbers[warm:]])
    runtime.close()
    return {
        "code": str(Path(trialdesk.__file__).parent),
        "subject_read": subject_read,
        "record_visit": record_visit,
    }


# --------------------------------------------------------------------------- preparation


def prepare(url: str, subjects: int, workdir: Path) -> dict[str, Any]:
    """A template database with ``subjects`` randomized subjects at the first site."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from tests import journey
    from tests.conftest import PASSWORD, Trial, build_trial, flagship
    from tests.factory import ready_to_randomize

    from trialdesk.services.allocation import randomization
    from trialdesk.store.database import make_engine

    name = f"td_bench_{uuid.uuid4().hex[:10]}"
    with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(db_url)

    class Db:
        backend, url = "postgres", db_url

    Db.engine = engine  # type: ignore[attr-defined]
    t: Trial = build_trial(Db, workdir, flagship())  # type: ignore[arg-type]
    implanter = t.actor("implanter")
    numbers = ready_to_randomize(t, journey.SITE, count=subjects)
    for number in numbers:
        randomization.randomize(t.ctx, implanter, t.study_id, number)
    t.runtime.close()
    engine.dispose()
    (workdir / "numbers.json").write_text(json.dumps(numbers))
    return {
        "template": name,
        "key": str(workdir / "allocation.key"),
        "study": t.study_id,
        "numbers": str(workdir / "numbers.json"),
        "password": PASSWORD,
    }


def _clone(url: str, template: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"td_bench_{uuid.uuid4().hex[:10]}"
    with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    return name, make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop(url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _source_of(rev: str, workdir: Path) -> Path:
    """The ``src`` folder of revision ``rev`` of this repository, unpacked in ``workdir``."""
    archive = workdir / "before.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(workdir / "before", filter="data")
    return workdir / "before" / "src"


def _run_child(args: argparse.Namespace, prepared: dict[str, Any], src: Path) -> dict[str, Any]:
    name, db_url = _clone(args.db, prepared["template"])
    try:
        cmd = [
            sys.executable,
            __file__,
            "--measure",
            "--url",
            db_url,
            "--key",
            prepared["key"],
            "--study",
            str(prepared["study"]),
            "--numbers",
            prepared["numbers"],
            "--password",
            prepared["password"],
            "--reads",
            str(args.reads),
            "--warmup",
            str(args.warmup),
        ]
        env = {**os.environ, "PYTHONPATH": str(src)}
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        return dict(json.loads(out.strip().splitlines()[-1]))
    finally:
        _drop(args.db, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", default=DEFAULT_URL, help="a PostgreSQL URL (server on this host)")
    parser.add_argument("--before", help="git revision to compare with (e.g. a399702)")
    parser.add_argument("--subjects", type=int, default=300)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--study", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--numbers", help=argparse.SUPPRESS)
    parser.add_argument("--password", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args)))
        return
    workdir = Path(tempfile.mkdtemp(prefix="td-hot-path-"))
    prepared = prepare(args.db, args.subjects, workdir)
    try:
        results: dict[str, Any] = {}
        if args.before:
            results["before"] = _run_child(args, prepared, _source_of(args.before, workdir))
            results["before"]["revision"] = args.before
        results["after"] = _run_child(args, prepared, ROOT / "src")
    finally:
        _drop(args.db, prepared["template"])
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'':14} {'version':8} {'client CPU':>11} {'server CPU':>11} {'wall':>8} "
          f"{'statements':>10} {'COMMIT':>7} {'ROLLBACK':>8}")  # fmt: skip
    for kind in ("subject_read", "record_visit"):
        for version in ("before", "after"):
            if version not in results:
                continue
            r = results[version][kind]
            print(
                f"{kind:14} {version:8} {r['client_cpu_ms']:9.3f}ms {r['server_cpu_ms']:9.3f}ms "
                f"{r['wall_ms']:6.2f}ms {r['statements']:10.2f} {r['commits']:7.2f} "
                f"{r['rollbacks']:8.2f}"
            )
    print(f"machine: {results['machine']}")


if __name__ == "__main__":
    main()
