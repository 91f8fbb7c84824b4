"""Build docs/traceability.md: which tests cite which requirement of docs/requirements.md.

Run ``python scripts/traceability.py`` after adding or renaming tests; ``--check`` exits 1
when the file on disk is stale (tests/unit/test_docs.py does the same check).

Tests are read with ``ast`` and never imported, so a broken test module cannot hide the
others. A test cites a requirement by

- its name: ``test_rand5_...``, ``test_life3_elig4_...``, ``test_rand_3_...``. The compact
  form (``rand5``) counts anywhere in the name; the split form (``rand_3``) only among the
  leading ids, so ``test_window_end_1_day`` does not cite END-1;
- its docstring, its class's or its module's docstring: ``RAND-5``, ranges ``LIFE-1..4``,
  ``THER-1..THER-3`` or ``LIFE-1–4``;
- a ``pytest.mark.req("RAND-5")`` marker on the function or class, or ``pytestmark``.

Citations by a module or class count once, as that module or class, because a docstring
like "journey tests (LIFE-1..4)" does not mean every test in it proves every id.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path("docs/requirements.md")
MATRIX = Path("docs/traceability.md")
TESTS = Path("tests")
STATUSES = ("implemented", "partial", "not yet")

_ROW = re.compile(r"^\|\s*([A-Z]+-\d+)\s*\|(.*)\|\s*$")


@dataclass(frozen=True)
class Requirement:
    id: str
    text: str
    status: str
    where: str
    notes: str


@dataclass(frozen=True, order=True)
class Citation:
    """One test, or a whole module or class of tests, that names a requirement."""

    path: str
    line: int
    target: str
    """``path::test`` or ``path::Class::test``; ``path`` or ``path::Class`` for a group."""
    kind: str = "test"
    """``test``, ``class`` or ``module``."""
    tests: int = 1
    """How many tests the target holds."""

    def render(self) -> str:
        if self.kind == "test":
            return f"`{self.target}`"
        return f"`{self.target}` ({self.kind}, {self.tests} tests)"


@dataclass
class Scan:
    by_id: dict[str, list[Citation]] = field(default_factory=dict)
    unknown: dict[str, list[Citation]] = field(default_factory=dict)
    """Ids with a known prefix but no requirement (RAND-9): almost always a typo."""


def read_requirements(path: Path) -> list[Requirement]:
    """Rows of the requirements table: ``| ID | requirement | status | where | notes |``."""
    rows: list[Requirement] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line.strip())
        if match is None:
            continue
        cells = [c.strip() for c in match.group(2).split("|")]
        cells += [""] * (4 - len(cells))
        rows.append(
            Requirement(match.group(1), cells[0], cells[1].strip("`* "), cells[2], cells[3])
        )
    return rows


class Matcher:
    """Finds requirement ids in names and prose, for one set of known ids."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = list(dict.fromkeys(ids))
        prefixes = sorted({i.split("-")[0] for i in self.ids}, key=len, reverse=True)
        alt = "|".join(re.escape(p) for p in prefixes)
        self._text = re.compile(
            rf"(?<![A-Za-z0-9-])({alt})-(\d+)(?:\s*(?:\.\.|–|—)\s*(?:\1-)?(\d+))?(?![0-9])"
        )
        self._compact = re.compile(rf"^({alt.lower()})(\d+)$")
        self._prefixes = {p.lower() for p in prefixes}

    def in_text(self, text: str) -> list[str]:
        found: list[str] = []
        for match in self._text.finditer(text):
            prefix, first, last = match.group(1), int(match.group(2)), match.group(3)
            end = int(last) if last is not None else first
            found.extend(f"{prefix}-{n}" for n in range(first, max(first, end) + 1))
        return list(dict.fromkeys(found))

    def in_name(self, name: str) -> list[str]:
        tokens = name.split("_")[1:] if name.startswith("test") else []
        found: list[str] = []
        leading = True
        i = 0
        while i < len(tokens):
            token = tokens[i]
            compact = self._compact.match(token)
            if compact:
                found.append(f"{compact.group(1).upper()}-{int(compact.group(2))}")
            elif (
                leading
                and token in self._prefixes
                and i + 1 < len(tokens)
                and tokens[i + 1].isdigit()
            ):
                found.append(f"{token.upper()}-{int(tokens[i + 1])}")
                i += 1
            else:
                leading = False
            i += 1
        return list(dict.fromkeys(found))


def _req_markers(decorators: Iterable[ast.expr]) -> list[str]:
    """String arguments of ``pytest.mark.req(...)`` (or ``mark.req``) calls."""
    ids: list[str] = []
    for node in decorators:
        for sub in ast.walk(node):
            if (
                isinstance(sub, ast.Call)
                and isinstance(sub.func, ast.Attribute)
                and sub.func.attr == "req"
                and isinstance(sub.func.value, ast.Attribute | ast.Name)
                and (getattr(sub.func.value, "attr", None) or getattr(sub.func.value, "id", ""))
                == "mark"
            ):
                ids.extend(
                    a.value
                    for a in sub.args
                    if isinstance(a, ast.Constant) and isinstance(a.value, str)
                )
    return ids


def _module_marks(tree: ast.Module) -> list[ast.expr]:
    return [
        stmt.value
        for stmt in tree.body
        if isinstance(stmt, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets)
    ]


def _is_test(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")


def _test_classes(tree: ast.Module) -> Iterator[ast.ClassDef]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            yield node


def test_files(root: Path) -> list[Path]:
    """Modules pytest collects by default: ``test_*.py`` and ``*_test.py`` under tests/."""
    base = root / TESTS
    files = set(base.rglob("test_*.py")) | set(base.rglob("*_test.py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def scan(root: Path, ids: Sequence[str]) -> Scan:
    """Every citation of every test module under ``root/tests``, by requirement id."""
    matcher = Matcher(ids)
    known = set(ids)
    prefixes = {i.split("-")[0] for i in ids}
    result = Scan(by_id={i: [] for i in ids})

    def cite(found: Iterable[str], citation: Citation) -> None:
        for rid in dict.fromkeys(found):
            if rid in known:
                bucket = result.by_id[rid]
            elif rid.split("-")[0] in prefixes:
                bucket = result.unknown.setdefault(rid, [])
            else:
                continue
            if citation not in bucket:
                bucket.append(citation)

    def prose(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> str:
        return ast.get_docstring(node) or ""

    for path in test_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        except SyntaxError as exc:
            raise SystemExit(f"{rel}:{exc.lineno}: cannot parse: {exc.msg}") from exc
        classes = list(_test_classes(tree))
        functions = [n for n in tree.body if _is_test(n)]
        total = len(functions) + sum(sum(1 for m in c.body if _is_test(m)) for c in classes)
        module_ids = matcher.in_text(prose(tree)) + _req_markers(_module_marks(tree))
        cite(module_ids, Citation(rel, 1, rel, "module", total))
        for fn in functions:
            assert isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            found = (
                matcher.in_name(fn.name)
                + matcher.in_text(prose(fn))
                + _req_markers(fn.decorator_list)
            )
            cite(found, Citation(rel, fn.lineno, f"{rel}::{fn.name}"))
        for cls in classes:
            methods = [m for m in cls.body if _is_test(m)]
            class_ids = matcher.in_text(prose(cls)) + _req_markers(cls.decorator_list)
            cite(class_ids, Citation(rel, cls.lineno, f"{rel}::{cls.name}", "class", len(methods)))
            for m in methods:
                assert isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)
                found = (
                    matcher.in_name(m.name)
                    + matcher.in_text(prose(m))
                    + _req_markers(m.decorator_list)
                )
                cite(found, Citation(rel, m.lineno, f"{rel}::{cls.name}::{m.name}"))
    for bucket in [*result.by_id.values(), *result.unknown.values()]:
        bucket.sort()
    return result


def render(requirements: Sequence[Requirement], result: Scan) -> str:
    """The matrix as Markdown; deterministic, so a stale file shows up as a diff."""
    cited = [r for r in requirements if result.by_id.get(r.id)]
    lines = [
        "# Traceability matrix",
        "",
        "Generated by `python scripts/traceability.py` from `docs/requirements.md` and the test",
        "names, docstrings and `pytest.mark.req` markers under `tests/`. Do not edit by hand.",
        "",
        f"{len(cited)} of {len(requirements)} requirements are cited by at least one test.",
        "",
        "| requirement | status | tests citing it |",
        "|---|---|---|",
    ]
    for r in requirements:
        citations = result.by_id.get(r.id, [])
        lines.append(f"| [{r.id}](#{r.id.lower()}) | {r.status} | {len(citations)} |")
    lines.append("")
    for r in requirements:
        lines += [f"## {r.id}", "", f"{r.text} — *{r.status}*", ""]
        citations = result.by_id.get(r.id, [])
        lines += [f"- {c.render()}" for c in citations] or ["No test cites it yet."]
        lines.append("")
    lines += ["## Requirements with no test", ""]
    untested = [r for r in requirements if not result.by_id.get(r.id)]
    lines += [f"- {r.id} ({r.status}): {r.text}" for r in untested] or ["None."]
    lines.append("")
    if result.unknown:
        lines += ["## Cited ids that are not requirements", ""]
        for rid in sorted(result.unknown):
            where = ", ".join(c.render() for c in result.unknown[rid])
            lines.append(f"- {rid}: {where}")
        lines.append("")
    return "\n".join(lines)


def generate(root: Path = ROOT) -> str:
    requirements = read_requirements(root / REQUIREMENTS)
    return render(requirements, scan(root, [r.id for r in requirements]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/traceability.md is stale"
    )
    args = parser.parse_args(argv)
    text = generate(ROOT)
    target = ROOT / MATRIX
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print(f"{MATRIX} is stale: run python scripts/traceability.py", file=sys.stderr)
            return 1
        print(f"{MATRIX} is up to date")
        return 0
    target.write_text(text, encoding="utf-8")
    print(f"wrote {MATRIX}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
