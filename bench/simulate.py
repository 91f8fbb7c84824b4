"""Timings of the whole-trial simulator (``trialdesk simulate``) and its consistency checks.

Run: ``.venv/bin/python bench/simulate.py --subjects 5000 --backend sqlite`` (or ``postgres``,
URL from TRIALDESK_BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test;
a fresh schema is made and dropped). Sizes above the flagship's enrolment cap of 352 use the
flagship protocol with its target and cap raised to the size (the protocol is data). Prints one
JSON object: subjects randomized and screened, service calls, seconds, subjects/s, and the
problems :func:`trialdesk.demo.trial.check_consistency` found (none expected).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from trialdesk.bootstrap import bootstrap
from trialdesk.config import Settings
from trialdesk.demo.trial import SimulationConfig, check_consistency, simulate_trial
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol, load_protocol, parse_protocol
from trialdesk.services.access import operator_actor
from trialdesk.services.allocation.lists import generate_list
from trialdesk.services.auth import authenticate
from trialdesk.services.crypto import create_key_file
from trialdesk.services.setup import create_user, initialize_study
from trialdesk.store.database import make_engine

PG_URL = os.environ.get(
    "TRIALDESK_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def protocol_for(subjects: int) -> LoadedProtocol:
    """The flagship, with target and cap raised when ``subjects`` exceeds them."""
    flagship = load_protocol(None)
    if subjects <= flagship.protocol.enrolment.total_cap:
        return flagship
    text_ = flagship.text.replace(
        "target_subjects: 352\n  cap_total: 352",
        f"target_subjects: {subjects}\n  cap_total: {subjects}",
    )
    assert text_ != flagship.text, "flagship enrolment block changed; update the bench"
    return parse_protocol(text_, source="flagship (bench size)")


def run(subjects: int, sites: int, backend: str, seed: int, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="trialdesk-bench-") as tmp:
        key = Path(tmp) / "bench.key"
        create_key_file(key)
        schema = None
        if backend == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
            engine = make_engine(url)
        else:
            url = PG_URL
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
        try:
            settings = Settings(database_url=url, allocation_key_file=key)
            runtime = bootstrap(settings, engine=engine)
            ctx, operator = runtime.context, operator_actor()
            info = initialize_study(
                ctx, operator, protocol_for(subjects), code="BENCH", mode="sandbox"
            )
            generate_list(ctx, operator, info.id, mode="live", seed=seed)
            config = SimulationConfig(
                subjects=subjects, sites=sites, seed=seed, screened_per_site_month=rate
            )
            started = time.perf_counter()
            summary = simulate_trial(ctx, "BENCH", config)
            elapsed = time.perf_counter() - started
            create_user(
                ctx,
                operator,
                info.id,
                username="bench-monitor",
                full_name="Bench monitor",
                password="bench-password-1",
                roles=[(Role.MONITOR, None)],
            )
            reader = authenticate(ctx, "bench-monitor", "bench-password-1")
            started = time.perf_counter()
            problems = check_consistency(ctx, reader, info.id)
            check_s = time.perf_counter() - started
            runtime.close()
        finally:
            engine.dispose()
            if schema is not None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    return {
        "backend": backend,
        "subjects_randomized": summary.randomized,
        "subjects_screened": summary.registered,
        "sites": sites,
        "simulated": f"{summary.start} .. {summary.end}",
        "service_calls": summary.service_calls,
        "simulate_s": round(elapsed, 1),
        "randomized_per_s": round(summary.randomized / elapsed, 2),
        "screened_per_s": round(summary.registered / elapsed, 2),
        "calls_per_s": round(summary.service_calls / elapsed, 1),
        "check_s": round(check_s, 1),
        "problems": problems,
        "states": summary.states,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--sites", type=int, default=75)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=4.0, help="subjects screened per site-month")
    args = parser.parse_args()
    for n in args.subjects:
        result = run(n, args.sites, args.backend, args.seed, args.rate)
        print(json.dumps({"subjects": n, **result}), flush=True)


if __name__ == "__main__":
    main()
