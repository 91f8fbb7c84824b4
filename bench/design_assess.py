"""Time the design-assessment simulator on the flagship design (352 subjects, one stratum
per site, its block sizes) for each method; prints the figures as JSON.

    .venv/bin/python bench/design_assess.py [--simulations 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np

from trialdesk.protocol.loader import load_protocol
from trialdesk.stats.design import assess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    protocol = load_protocol(None).protocol
    subjects = protocol.enrolment.target_subjects
    strata = len(protocol.sites)
    block_sizes = list(protocol.randomization.block_sizes)
    ratio = [arm.ratio for arm in protocol.arms]
    results = []
    for method in ("complete", "blocks", "minimization"):
        result = assess(
            method,
            block_sizes=block_sizes,
            strata=strata,
            subjects=subjects,
            simulations=args.simulations,
            seed=args.seed,
            arms_ratio=ratio,
        )
        result.pop("interpretation")
        results.append(result)
    report = {
        "benchmark": "design_assess",
        "design": {
            "subjects": subjects,
            "strata": strata,
            "block_sizes": block_sizes,
            "arms_ratio": ratio,
        },
        "simulations": args.simulations,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "results": results,
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
