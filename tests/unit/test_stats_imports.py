"""Issue 16: the statistics package imports only the domain (numpy/scipy and the standard
library besides); the demo driver, which calls the services, lives in ``trialdesk.demo``. And
the CLI starts without scipy: it is imported only when a closed form is computed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "trialdesk"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_stats_imports_only_the_domain_of_ours() -> None:
    """REP-1, RAND-2: stats/ is statistics on domain values, not an adapter."""
    offending = {
        f"{path.name}: {module}"
        for path in sorted((SRC / "stats").glob("*.py"))
        for module in _imported_modules(path)
        if module.startswith("trialdesk") and not module.startswith("trialdesk.domain")
    }
    assert not offending, f"stats/ may import only trialdesk.domain: {sorted(offending)}"
    assert not (SRC / "sim").exists(), "sim/ was renamed stats/ (and demo/)"


def test_the_demo_driver_is_outside_the_statistics() -> None:
    """REP-1: the simulator that drives services is in demo/, and it does use the services."""
    modules = _imported_modules(SRC / "demo" / "trial.py")
    assert any(m.startswith("trialdesk.services") for m in modules)


def test_cli_starts_without_scipy() -> None:
    """REP-1: `trialdesk` commands do not pay scipy's import unless a closed form is needed."""
    code = (
        "import sys, trialdesk.cli.main, trialdesk.cli.report_cmd, trialdesk.services.reports; "
        "print('scipy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False", out.stderr
