"""Copy the user guide's screenshots from test-artifacts/screens/ to docs/images/.

Run `.venv/bin/pytest tests/browser -q` first: the Playwright journey saves every page it
visits as ``<user>-<NN>-<name>.png``. The counter ``NN`` shifts when the journey gains a step,
so a shot is chosen by user and name (the newest file when several match), never by number.
A missing shot or one over the size limit is an error that names it, and nothing is copied.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCREENS = ROOT / "test-artifacts" / "screens"
IMAGES = ROOT / "docs" / "images"
MAX_BYTES = 150_000

CHOSEN: dict[str, tuple[str, str]] = {
    "coordinator-home.png": ("coordinator", "home"),
    "coordinator-consented.png": ("coordinator", "consented"),
    "coordinator-form-tte.png": ("coordinator", "form-tte"),
    "coordinator-sign-criteria.png": ("coordinator", "sign-EXC-6"),
    "coordinator-echo-qualified.png": ("coordinator", "echo-qualified"),
    "crc-queue.png": ("crc", "crc-queue"),
    "implanter-anatomy.png": ("implanter", "anatomy"),
    "implanter-randomized-with-arm.png": ("implanter", "randomized-with-arm"),
    "coordinator-randomized-blinded.png": ("coordinator", "randomized-blinded"),
    "coordinator-visit-error.png": ("coordinator", "visit-error"),
}
"""docs/images name -> (user, shot name) in test-artifacts/screens."""


def find(user: str, name: str, screens: Path = SCREENS) -> Path | None:
    """The newest ``<user>-<NN>-<name>.png``, or None."""
    hits = [
        p
        for p in screens.glob(f"{user}-*-{name}.png")
        if p.stem.split("-", 2)[1].isdigit() and p.stem.split("-", 2)[2] == name
    ]
    return max(hits, key=lambda p: p.stat().st_mtime, default=None)


def main() -> int:
    sources: dict[str, Path] = {}
    problems: list[str] = []
    for target, (user, name) in CHOSEN.items():
        found = find(user, name)
        if found is None:
            problems.append(f"{target}: no {user}-NN-{name}.png in {SCREENS}")
        elif found.stat().st_size > MAX_BYTES:
            problems.append(f"{target}: {found.name} is {found.stat().st_size} bytes")
        else:
            sources[target] = found
    if problems:
        print("screenshots not copied (run .venv/bin/pytest tests/browser -q first):")
        print("\n".join("  " + p for p in problems))
        return 1
    IMAGES.mkdir(parents=True, exist_ok=True)
    for target, source in sources.items():
        shutil.copyfile(source, IMAGES / target)
        print(f"{source.name} -> docs/images/{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
