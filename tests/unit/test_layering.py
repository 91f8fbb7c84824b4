"""Services hold no SQL (issue 13): no ``select(``, no session, no dialect check, no
SQLAlchemy import under services/ except in the modules wave 2 has still to move onto the
repositories, listed here. The list may only shrink: a new service module with SQL fails, and
so does a listed module that no longer needs to be listed."""

from __future__ import annotations

import re
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "src" / "trialdesk" / "services"

STILL_HOLDING_SQL = {
    "accounts",
    "admin",
    "amendments",
    "auth",
    "exports",
    "orm_rows",
    "sessions",
    "setup",
}
"""Service modules that still hold SQL, to be moved onto repositories in wave 2."""

SQL = re.compile(
    r"\bselect\(|\bsession\b|\.dialect\b|\bsqlalchemy\b|with_for_update|(?<![.\w])text\("
)


def _name(path: Path) -> str:
    """``devices`` for services/devices.py, ``supply/lots`` for a module of a package."""
    return path.relative_to(SERVICES).with_suffix("").as_posix()


def _holding_sql() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(SERVICES.rglob("*.py")):
        lines = [
            f"{n}: {line.strip()}"
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if SQL.search(line) and not line.lstrip().startswith("#")
        ]
        if lines:
            found[_name(path)] = lines
    return found


def test_services_hold_no_sql_outside_the_wave_2_list() -> None:
    holding = _holding_sql()
    new = {name: lines[:3] for name, lines in holding.items() if name not in STILL_HOLDING_SQL}
    assert not new, f"services must use repositories (store/), not SQL: {new}"


def test_the_wave_2_list_only_names_modules_that_still_hold_sql() -> None:
    moved = STILL_HOLDING_SQL - set(_holding_sql())
    assert not moved, f"no SQL left in {sorted(moved)}: remove them from STILL_HOLDING_SQL"


def test_the_converted_families_are_clean() -> None:
    """The families converted in wave 1 (screening, CRC, follow-up, visits, forms, data
    queries, subject reads and their views) are held to it by name."""
    converted = {"screening", "crc", "followup", "visits", "forms", "data_queries", "queries"}
    assert converted | {"views", "common"} <= {p.stem for p in SERVICES.glob("*.py")}
    assert not (converted | {"views", "common"}) & set(_holding_sql())


def test_subpackages_are_scanned() -> None:
    """Feature packages (services/supply/, services/allocation/, ...) are held to the rule
    too: their modules are named by path, so a package module with SQL cannot hide."""
    names = {_name(p) for p in SERVICES.rglob("*.py")}
    assert {"supply/lots", "supply/shipments", "supply/site_stock", "supply/procedure"} <= names
    assert not {n for n in _holding_sql() if n.startswith("supply/")}


def test_the_allocation_family_is_clean() -> None:
    """Lists, randomization and unblinding (issue 13, lane x13a) hold no SQL and no dialect
    check: their statements and locks are in store/allocation.py."""
    family = {"allocation/lists", "allocation/randomization", "allocation/unblinding"}
    assert family <= {_name(p) for p in SERVICES.rglob("*.py")}
    assert not family & set(_holding_sql())
