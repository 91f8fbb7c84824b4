"""Screenshots for the user guide (issue 14): browser tests call :func:`guide_shot` on the
pages they walk, and the picture lands in docs/img/ under a stable name that
docs/user-guide.md links to. Re-running the browser tests refreshes the guide's pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GUIDE_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "img"


def guide_shot(page: Any, name: str, *, full_page: bool = False) -> Path:
    """Save ``page`` as docs/img/<name>.png (``name``: lowercase words and dashes)."""
    assert name.replace("-", "").isalnum() and name == name.lower(), name
    GUIDE_IMAGES.mkdir(parents=True, exist_ok=True)
    path = GUIDE_IMAGES / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
