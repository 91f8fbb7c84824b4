"""Allocation list files (RAND-3): the CSV an unblinded statistician imports, parsed and
checked without touching storage, so every problem of a file is found at once and located by
row. Pure: the service (:mod:`trialdesk.services.allocation.lists`) reads what the checks
need (the study's sites, the slots a list already holds) and stores what passes."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.randomization import ArmRatio, Slot, check_list

CSV_COLUMNS = ("stratum", "sequence", "block", "block_size", "arm")
MAX_NUMBER = 1_000_000
"""Largest sequence, block number or block size an imported row may carry."""
MAX_STRATUM_LENGTH = 120  # the width of the stratum columns


class ListImportRefused(ValidationFailed):
    """An imported list with problems; ``lines`` holds every one of them, located by row."""

    def __init__(self, source_name: str, problems: Sequence[tuple[str, str]]) -> None:
        self.lines = [f"{where}: {what}" for where, what in problems]
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        merged: dict[str, str] = {}
        for where, what in problems:
            merged[where] = f"{merged[where]}; {what}" if where in merged else what
        super().__init__(
            f"{source_name}: allocation list not imported, {count}: " + "; ".join(self.lines),
            merged,
        )


@dataclass
class _Row:
    row: int
    stratum: str
    sequence: int
    block: int
    block_size: int
    arm: str
    arm_known: bool = True


@dataclass
class Problems:
    """Problems with a sort key, so the refusal reads top to bottom like the file."""

    items: list[tuple[tuple[int, int, int], str, str]] = field(default_factory=list)

    def add(self, key: tuple[int, int, int], where: str, what: str) -> None:
        self.items.append((key, where, what))

    def sorted(self) -> list[tuple[str, str]]:
        return [(where, what) for _, where, what in sorted(self.items, key=lambda i: i[0])]


def _ranges(numbers: Sequence[int]) -> str:
    """``[3, 7, 8, 9]`` -> ``"3, 7-9"``."""
    ordered = sorted(set(numbers))
    parts: list[str] = []
    start = prev = ordered[0]
    for number in [*ordered[1:], None]:
        if number is not None and number == prev + 1:
            prev = number
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if number is not None:
            start = prev = number
    return ", ".join(parts)


def _rows_text(rows: Sequence[int]) -> str:
    return ("row " if len(rows) == 1 else "rows ") + _ranges(rows)


_NUMBER = re.compile(r"[0-9]+")


def _number(value: str, name: str) -> tuple[int | None, str | None]:
    if not _NUMBER.fullmatch(value):
        return None, f"{name} {value!r} is not a whole number"
    number = int(value)
    if not 1 <= number <= MAX_NUMBER:
        return None, f"{name} {number} is outside 1-{MAX_NUMBER}"
    return number, None


def parse_csv(
    csv_text: str, arm_codes: Sequence[str], problems: Problems
) -> tuple[list[_Row], set[str]]:
    """Rows that parsed, and the strata with a row that did not (their blocks cannot be
    checked until it is fixed). Row N is line N of a file without quoted line breaks."""
    rows: list[_Row] = []
    dirty: set[str] = set()
    text = csv_text.removeprefix("\ufeff")
    expected = ",".join(CSV_COLUMNS)
    if not text.strip():
        problems.add((0, 0, 0), "file", f"the file is empty; expected the header {expected}")
        return rows, dirty
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header: list[str] = []
        while not any(cell.strip() for cell in header):
            header = next(reader)
        header_row = reader.line_num
        names = [cell.strip().lower() for cell in header]
        missing = [c for c in CSV_COLUMNS if c not in names]
        extra = [n or "(blank)" for n in names if n not in CSV_COLUMNS]
        repeated = sorted({n for n in names if n in CSV_COLUMNS and names.count(n) > 1})
        if missing or extra or repeated:
            detail = [
                *([f"missing {', '.join(missing)}"] if missing else []),
                *([f"unexpected {', '.join(extra)}"] if extra else []),
                *([f"repeated {', '.join(repeated)}"] if repeated else []),
            ]
            problems.add(
                (0, header_row, 0),
                f"row {header_row}",
                f"the header must name the columns {expected} ({'; '.join(detail)})",
            )
            return rows, dirty
        col = {name: names.index(name) for name in CSV_COLUMNS}
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            where = f"row {line}"
            if len(record) != len(names):
                problems.add(
                    (0, line, 0), where, f"{len(record)} values, the header has {len(names)}"
                )
                stratum_guess = (
                    record[col["stratum"]].strip() if len(record) > col["stratum"] else ""
                )
                dirty.add(stratum_guess)
                continue
            cells = {name: record[i].strip() for name, i in col.items()}
            wrong: list[str] = []
            stratum = cells["stratum"]
            if not stratum:
                wrong.append("the stratum is empty")
            elif len(stratum) > MAX_STRATUM_LENGTH:
                wrong.append(f"the stratum is longer than {MAX_STRATUM_LENGTH} characters")
            numbers: dict[str, int] = {}
            for name in ("sequence", "block", "block_size"):
                number, why = _number(cells[name], name)
                if why is not None:
                    wrong.append(why)
                elif number is not None:
                    numbers[name] = number
            arm = cells["arm"]
            arm_known = arm in arm_codes
            if not arm_known:
                shown = repr(arm) if arm else "(empty)"
                wrong.append(f"arm {shown} is not an arm of the protocol ({', '.join(arm_codes)})")
            if len(numbers) == 3 and stratum and len(stratum) <= MAX_STRATUM_LENGTH:
                rows.append(
                    _Row(
                        line,
                        stratum,
                        numbers["sequence"],
                        numbers["block"],
                        numbers["block_size"],
                        arm,
                        arm_known,
                    )
                )
            if wrong:
                problems.add((0, line, 0), where, "; ".join(wrong))
                if len(numbers) < 3:
                    dirty.add(stratum)
    except StopIteration:
        problems.add((0, 0, 0), "file", f"the file is empty; expected the header {expected}")
    except csv.Error as exc:
        # the rest of the file is unread, so stratum-level checks would only mislead
        where = f"row {reader.line_num}"
        problems.add((0, reader.line_num, 1), where, f"unreadable CSV ({exc}); reading stopped")
        return [], dirty
    return rows, dirty


def _stratum_format(factors: Sequence[str]) -> str:
    if not factors:
        return "all"
    return "|".join(f"{f}=<site code>" if f == "site" else f"{f}=<value>" for f in factors)


def _stratum_problem(stratum: str, factors: Sequence[str], site_codes: set[str]) -> str | None:
    """Why ``stratum`` can never be drawn from, or None. Names follow randomization's
    ``factor=level`` joined by ``|`` in the protocol's factor order."""
    fmt = _stratum_format(factors)
    if not factors:
        return None if stratum == "all" else f"the protocol has no strata; use {fmt!r}"
    parts = stratum.split("|")
    if len(parts) != len(factors):
        return f"stratum {stratum!r} does not have the form {fmt!r}"
    for part, factor in zip(parts, factors, strict=True):
        name, sep, level = part.partition("=")
        if name != factor or not sep or not level:
            return f"stratum {stratum!r} does not have the form {fmt!r}"
        if factor == "site" and level not in site_codes:
            return f"stratum {stratum!r}: site {level} is not a site of this study"
    return None


def check_import(
    rows: Sequence[_Row],
    dirty: set[str],
    problems: Problems,
    *,
    arms: Sequence[ArmRatio],
    factors: Sequence[str],
    site_codes: set[str],
    existing: Mapping[str, Sequence[Slot]],
    appending: bool,
) -> dict[str, list[Slot]]:
    """Every problem of the parsed rows; the slots per stratum (meaningful when none)."""
    by_stratum: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        by_stratum[row.stratum].append(row)
    out: dict[str, list[Slot]] = {}
    for stratum, members in by_stratum.items():
        first = members[0].row
        key_row = [r.row for r in members]
        why = _stratum_problem(stratum, factors, site_codes)
        if why is not None:
            problems.add((1, first, 0), _rows_text(key_row), why)
            continue
        held = existing.get(stratum, ())
        start = max((s.sequence for s in held), default=0) + 1
        seen: dict[int, list[int]] = defaultdict(list)
        for r in members:
            seen[r.sequence].append(r.row)
        for sequence in sorted(seen):
            if len(seen[sequence]) > 1:
                problems.add(
                    (1, seen[sequence][0], 1),
                    _rows_text(seen[sequence]),
                    f"stratum {stratum}: sequence {sequence} appears {len(seen[sequence])} times",
                )
        early = sorted(s for s in seen if s < start)
        if early:
            problems.add(
                (1, seen[early[0]][0], 2),
                _rows_text([n for s in early for n in seen[s]]),
                f"stratum {stratum}: sequence {_ranges(early)} already in the list, which "
                f"holds 1-{start - 1}; added slots continue at {start}",
            )
        if stratum not in dirty:
            missing = sorted(set(range(start, max(seen) + 1)) - set(seen))
            if missing:
                problems.add(
                    (1, first, 3),
                    f"stratum {stratum}",
                    f"sequence numbers missing: {_ranges(missing)} "
                    f"(each stratum runs {start}, {start + 1}, ... without gaps)",
                )
        slots = [Slot(r.sequence, r.block, r.block_size, r.arm) for r in members]
        out[stratum] = slots
        if stratum in dirty:
            continue
        rows_of_block: dict[int, list[int]] = defaultdict(list)
        for r in members:
            rows_of_block[r.block].append(r.row)
        # a block with an unknown arm already has its row's problem; its ratio follows
        unknown_arm_blocks = {r.block for r in members if not r.arm_known}
        for message in check_list([*held, *slots], arms):
            # sequence and arm defects are reported above with their rows; the domain check
            # adds what only it knows: block composition and the ratio within each block
            head, sep, rest = message.partition(": ")
            if not (sep and head.startswith("block ")):
                continue
            number = int(head.removeprefix("block "))
            if number in unknown_arm_blocks:
                continue
            block_rows = rows_of_block.get(number)
            where = _rows_text(block_rows) if block_rows else f"stratum {stratum}"
            held_note = "" if block_rows else " (a block already in the list)"
            problems.add(
                (1, block_rows[0] if block_rows else first, 4),
                where,
                f"stratum {stratum}, block {number}{held_note}: {rest}",
            )
    if not rows and not problems.items:
        problems.add((0, 0, 0), "file", "the file has a header but no slots")
    if not appending and factors == ["site"]:
        uncovered = sorted(site_codes - {s.removeprefix("site=") for s in by_stratum})
        if uncovered and rows:
            problems.add(
                (2, 0, 0),
                "strata",
                f"no rows for site{'s' if len(uncovered) > 1 else ''} {', '.join(uncovered)}; "
                "every site of the study needs a stratum (site=<code>)",
            )
    return out
