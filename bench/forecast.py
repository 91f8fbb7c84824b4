"""Timings of the REP-1 enrolment forecast for the flagship trial (352 subjects, 75 sites).

Run: ``.venv/bin/python bench/forecast.py``; prints one JSON object. The trial state is
synthetic but shaped like mid-recruitment: 40 sites open with data, 10 just opened, 25 opening
over the next 9 months.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import numpy as np

from trialdesk.stats.forecast import SiteState, fit_prior, forecast, planning, simulate_completion

TARGET = 352
SIMULATIONS = 10_000
REPEATS = 7


def flagship_sites(seed: int = 1) -> list[SiteState]:
    """75 sites: data-bearing, freshly opened and future ones."""
    rng = np.random.default_rng(seed)
    sites: list[SiteState] = []
    for i in range(40):
        months = float(rng.uniform(2.0, 14.0))
        rate = float(rng.gamma(2.0, 1 / 8.0))
        sites.append(SiteState(f"S{i + 1:03d}", int(rng.poisson(rate * months)), months))
    sites += [SiteState(f"S{i + 1:03d}", 0, 0.0) for i in range(40, 50)]
    sites += [
        SiteState(f"S{i + 1:03d}", 0, 0.0, opens_in_months=float(rng.uniform(0.5, 9.0)))
        for i in range(50, 75)
    ]
    return sites


def _time(fn: Callable[[], object]) -> dict[str, float]:
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"min_s": round(min(runs), 4), "median_s": round(statistics.median(runs), 4)}


def main() -> None:
    sites = flagship_sites()
    already = sum(s.recruited for s in sites)
    alpha, beta = fit_prior(sites)
    fc = forecast(alpha, beta, sites, TARGET, already, SIMULATIONS, seed=7, as_of=date(2025, 1, 1))
    report: dict[str, Any] = {
        "target": TARGET,
        "sites": len(sites),
        "open_with_data": sum(1 for s in sites if s.months_open > 0),
        "opening_later": sum(1 for s in sites if s.opens_in_months > 0),
        "already": already,
        "simulations": SIMULATIONS,
        "repeats": REPEATS,
        "prior": {"alpha": round(alpha, 4), "beta": round(beta, 4)},
        "forecast": fc.to_dict(),
        "timings": {
            "fit_prior": _time(lambda: fit_prior(sites)),
            "simulate_completion": _time(
                lambda: simulate_completion(alpha, beta, sites, TARGET - already, SIMULATIONS, 7)
            ),
            "forecast": _time(
                lambda: forecast(alpha, beta, sites, TARGET, already, SIMULATIONS, seed=7)
            ),
            "planning": _time(lambda: planning(TARGET, 75, 1.2, 6.0, SIMULATIONS, seed=7)),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
