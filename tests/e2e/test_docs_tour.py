"""docs/tour.md stays true: its shell blocks run, in order, on a fresh demo database
(LIFE-1, SCHED-1, RAND-6, RAND-7, AUD-1)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOUR = ROOT / "docs" / "tour.md"


def _blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", TOUR.read_text(encoding="utf-8"), flags=re.S)


def test_life1_the_tour_runs_from_registration_to_completed(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "trialdesk").exists() or shutil.which("bash") is None:
        pytest.skip("needs the installed trialdesk command and bash")
    script = "set -euo pipefail\n" + "\n".join(_blocks())
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALDESK_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "S101-0001 at site S101: completed" in result.stdout
    assert "audit chain ok:" in result.stdout
