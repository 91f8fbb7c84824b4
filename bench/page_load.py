"""Server time of the largest list pages (issue 14) at 1,000 subjects: the subject list, the
users page and the record status grid (and the home page, the query list), each page fetched
through the ASGI app in this process, so the time is the server's (no network, no browser).

    .venv/bin/python bench/page_load.py [--subjects 1000] [--randomized 300] [--users 300]
                                        [--repeat 15] [--backend sqlite|postgresql] [--json]

Preparation (not timed): a flagship demo study (tests' build_trial) with ``--subjects``
subjects spread over the sites (tests/factory.py), ``--randomized`` of them randomized
through the service (so the grid has visit windows) and ``--users`` more users. Each page
is fetched once to warm up, then ``--repeat`` times; the median and the slowest are
reported. The target is a median under 300 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = (
    ("subjects, 100 a page", "/subjects?per_page=100"),
    ("subjects, last page", "/subjects?per_page=100&page=10"),
    ("subjects, search", "/subjects?q=S101-00"),
    ("users, 25 a page", "/admin/users"),
    ("status grid, 100 a page", "/grid?per_page=100"),
    ("status grid, overdue only", "/grid?status=overdue&per_page=100"),
    ("home", "/home"),
    ("queries", "/queries?status=all&per_page=100"),
)


def prepare(args: argparse.Namespace, tmp: Path) -> Any:
    from sqlalchemy import text
    from tests import factory
    from tests.conftest import PASSWORD, Database, build_trial, flagship

    from trialdesk.domain.roles import Role
    from trialdesk.services import randomization
    from trialdesk.services.access import operator_actor
    from trialdesk.services.setup import create_user
    from trialdesk.store.database import make_engine

    if args.backend == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = make_engine(args.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = args.url.rsplit("/", 1)[0] + f"/{name}"
    t = build_trial(Database(args.backend, url, make_engine(url)), tmp, flagship())
    sites = ["S101", "S102", "S103", "S104", "S105"]
    numbers = factory.ready_at_sites(t, sites, args.subjects)
    by_site: dict[str, Any] = {}
    for number in numbers[: args.randomized]:
        site = number.split("-")[0]
        if site not in by_site:
            by_site[site] = t.actor("implanter") if site == "S101" else _implanter(t, site)
        randomization.randomize(t.ctx, by_site[site], t.study_id, number)
    for i in range(args.users):
        create_user(
            t.ctx,
            operator_actor(),
            t.study_id,
            username=f"bench-{i:04d}",
            full_name=f"Bench User {i:04d}",
            password=PASSWORD,
            roles=[(Role.MONITOR, None)],
        )
    return t


def _implanter(t: Any, site: str) -> Any:
    from tests import journey

    return journey.staff(t, "implanter", site)


def measure(t: Any, repeat: int) -> list[dict[str, Any]]:
    from fastapi.testclient import TestClient
    from tests.e2e.test_web_pages import sign_in

    from trialdesk.api.app import create_app

    app = create_app(t.runtime)
    clients = {}
    for user in ("manager", "admin"):
        c = TestClient(app, base_url="https://testserver", follow_redirects=False)
        assert sign_in(c, user).status_code == 303
        clients[user] = c
    results = []
    for label, url in PAGES:
        c = clients["admin" if url.startswith("/admin") else "manager"]
        response = c.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[-300:])
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            response = c.get(url)
            times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200
        results.append(
            {
                "page": label,
                "url": url,
                "median_ms": round(statistics.median(times), 1),
                "max_ms": round(max(times), 1),
                "bytes": len(response.content),
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--randomized", type=int, default=300)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        t = prepare(args, Path(tmp))
        prepared_s = time.perf_counter() - started
        results = measure(t, args.repeat)
        t.runtime.close()
    report = {
        "benchmark": "page_load",
        "backend": args.backend,
        "subjects": args.subjects,
        "randomized": args.randomized,
        "extra_users": args.users,
        "repeat": args.repeat,
        "preparation_s": round(prepared_s, 1),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in results:
            print(f"{r['page']:<28} median {r['median_ms']:>7.1f} ms  max {r['max_ms']:>7.1f} ms")
        print(f"machine load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
