"""Import rules between the packages (issue 13), read from the source with ``ast`` so that an
import inside a function or under TYPE_CHECKING counts as much as one at the top:

- the domain imports nothing of ours outside the domain (it is pure rules);
- statistics (``sim/``, being renamed ``stats/``) import only the domain;
- the two HTTP adapters, ``api`` and ``web``, do not import each other (the composition root,
  ``bootstrap.create_app``, puts them on one app);
- the adapters (``api``, ``web``, ``cli``) do not import the store: they reach the database
  only through the services and the composition root.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "trialdesk"

STATISTICS = ("sim", "stats")
ADAPTERS = ("api", "web", "cli")

KNOWN_EXCEPTIONS: dict[str, set[str]] = {}
"""Imports still breaking a rule, by module path (relative to the package) -> imported
modules. May only shrink: a listed import that is gone fails the last test."""


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) of every import of ``trialdesk`` in the file."""
    here = path.relative_to(PACKAGE.parent).with_suffix("").parts
    yield from _imports_in(path.read_text(encoding="utf-8"), here)


def _imports_in(source: str, here: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "trialdesk":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here[: len(here) - node.level]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] == "trialdesk":
                if module == "trialdesk":  # from trialdesk import web -> trialdesk.web
                    for alias in node.names:
                        yield node.lineno, f"trialdesk.{alias.name}"
                else:
                    yield node.lineno, module


def _top(module: str) -> str:
    """The first-level package of ``trialdesk.x.y`` (``x``), or the module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _rule_broken(package: str, target: str) -> str | None:
    if package == "domain" and target != "domain":
        return "the domain imports nothing of ours outside the domain"
    if package in STATISTICS and target not in ("domain", package):
        return "statistics import only the domain"
    if (package, target) in {("api", "web"), ("web", "api")}:
        return "api and web do not import each other"
    if package in ADAPTERS and target == "store":
        return "adapters do not import the store"
    return None


def violations() -> dict[str, set[str]]:
    """module path -> imported modules that break a rule (with the rule)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) < 2:
            continue  # top-level modules (bootstrap, config, http_status) are not layered
        package = rel.parts[0]
        for _line, module in _imports(path):
            rule = _rule_broken(package, _top(module))
            if rule is not None:
                found.setdefault(rel.as_posix(), set()).add(module)
    return found


def test_the_rules_see_imports_inside_functions_and_relative_ones() -> None:
    """The parser itself: lazy, type-only, relative and package imports are all found."""
    source = (
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import trialdesk.web.render\n"
        "def f():\n    from trialdesk.store import tables\n"
        "from ..services import views\n"
        "from trialdesk import web\n"
    )
    found = [module for _line, module in _imports_in(source, ("trialdesk", "api", "x"))]
    expected = ["trialdesk.services", "trialdesk.store", "trialdesk.web", "trialdesk.web.render"]
    assert sorted(found) == expected
    assert _rule_broken("cli", "store") and _rule_broken("api", "web")
    assert _rule_broken("domain", "protocol") and _rule_broken("stats", "services")
    assert _rule_broken("stats", "domain") is None and _rule_broken("services", "store") is None


def test_packages_import_only_what_the_layering_allows() -> None:
    """Domain pure, statistics on the domain only, api and web apart, adapters off the store."""
    new = {
        module: sorted(imported - KNOWN_EXCEPTIONS.get(module, set()))
        for module, imported in violations().items()
    }
    new = {module: imported for module, imported in new.items() if imported}
    assert not new, f"imports that break the layering rules: {new}"


def test_known_exceptions_only_shrink() -> None:
    found = violations()
    stale = {
        module: sorted(imported - found.get(module, set()))
        if (PACKAGE / module).exists()
        else ["(module gone)"]
        for module, imported in KNOWN_EXCEPTIONS.items()
        if imported - found.get(module, set())
    }
    assert not stale, f"fixed: remove from KNOWN_EXCEPTIONS: {stale}"


def test_the_composition_root_assembles_the_app() -> None:
    """api/app.py builds only the API; the web pages are put on by bootstrap.create_app."""
    api_app = (PACKAGE / "api" / "app.py").read_text(encoding="utf-8")
    assert "install_pages" not in api_app
    root = (PACKAGE / "bootstrap.py").read_text(encoding="utf-8")
    assert "install_pages(app)" in root and "build_api(" in root
