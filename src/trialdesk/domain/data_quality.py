"""Data-quality rules over one subject's saved data (REC-6).

Rules are protocol data of five typed kinds (``compare``, ``change``, ``range``, ``criteria``,
``requires_form``); nothing is ever evaluated as code. Given a subject's saved records by visit
and form and its key dates, :func:`evaluate` returns the discrepancies, each on one record and
field, with a stable key so a rerun finds the query it already opened (:func:`reconcile`).
A rule excluded for a record (with a reason, as REDCap's data quality module allows) still
reports the discrepancy, marked excluded, and opens no query.

A value not entered yet never makes a discrepancy: missing data is the missing-data report's
business (:mod:`trialdesk.domain.database_lock`). Pure, stdlib only.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trialdesk.domain.eligibility import CriterionSpec, evaluate_rule, fields_read
from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.records import RecordRef

KINDS = frozenset({"compare", "change", "range", "criteria", "requires_form"})
EVENTS = frozenset({"registration", "consent", "randomization", "unblinding", "exit"})
_OPS: dict[str, tuple[str, Callable[[int], bool]]] = {
    "eq": ("=", lambda s: s == 0),
    "ne": ("≠", lambda s: s != 0),
    "lt": ("<", lambda s: s < 0),
    "le": ("≤", lambda s: s <= 0),
    "gt": (">", lambda s: s > 0),
    "ge": ("≥", lambda s: s >= 0),
}


@dataclass(frozen=True)
class DqRuleSpec:
    """One rule as the protocol's ``data_quality.rules[]`` states it; ``criteria`` holds the
    named criteria themselves (the services resolve them from the protocol)."""

    id: str
    text: str
    kind: str
    severity: str = "major"
    run: str = "on_save"
    when: Mapping[str, Any] | None = None
    left: str | None = None
    op: str | None = None
    right: str | None = None
    offset: float | None = None
    series: tuple[str, ...] = ()
    against: str = "previous"
    max_change: float | None = None
    max_change_pct: float | None = None
    field: str | None = None
    min: float | None = None
    max: float | None = None
    criteria: tuple[CriterionSpec, ...] = ()
    form: str | None = None

    def reads(self) -> tuple[str, ...]:
        """``form.field`` names and subject events the rule reads, each once."""
        names: list[str] = [n for n in (self.left, self.right) if n]
        names += self.series
        names += [self.field] if self.field else []
        names += list(fields_read(self.when))
        for criterion in self.criteria:
            names += list(fields_read(criterion.rule))
        return tuple(dict.fromkeys(names))

    def reads_form(self, form: str) -> bool:
        """Whether saving ``form`` can change this rule's answer (its own target included)."""
        return self.form == form or any(n.partition(".")[0] == form for n in self.reads())


@dataclass(frozen=True)
class FormRecord:
    """One saved record and its typed values (dates may also be ISO text)."""

    ref: RecordRef
    values: Mapping[str, object]


@dataclass(frozen=True)
class SubjectData:
    """What the rules read of one subject. ``visit_order`` is the protocol's visit order
    (records outside visits come first); ``events`` holds the subject dates a ``compare`` rule
    may name; ``passed_gates`` the screening gates the subject passed."""

    subject: str
    records: tuple[FormRecord, ...]
    events: Mapping[str, dt.date] = field(default_factory=dict)
    visit_order: tuple[str, ...] = ()
    passed_gates: frozenset[str] = frozenset()

    def of(self, form: str) -> list[FormRecord]:
        """The subject's records of ``form`` in visit order, then record number."""
        rank = {code: i for i, code in enumerate(self.visit_order)}
        found = [r for r in self.records if r.ref.form == form]
        return sorted(found, key=lambda r: (rank.get(r.ref.visit, -1), r.ref.visit, r.ref.seq))

    def once(self, form: str) -> FormRecord | None:
        """The one record of a form filled in once outside visits, or None (none, several,
        or a visit's record: which visit a rule meant would be a guess)."""
        found = self.of(form)
        return found[0] if len(found) == 1 and not found[0].ref.visit else None


@dataclass(frozen=True)
class Discrepancy:
    """What a rule found on one record and field; ``excluded`` holds the exclusion reason."""

    rule: str
    severity: str
    ref: RecordRef
    field: str
    text: str
    detail: str
    excluded: str | None = None

    @property
    def key(self) -> str:
        """Stable across reruns: the same finding on the same record has the same key."""
        return f"{self.rule}|{self.ref.key}|{self.field}"

    @property
    def active(self) -> bool:
        return self.excluded is None

    def query_text(self) -> str:
        """What the automatic query says to the site."""
        return f"{self.rule}: {self.text} ({self.detail})"


Exclusions = Mapping[tuple[str, RecordRef], str]
"""``(rule id, record) -> reason``: a rule switched off for one record."""


def rules_to_run(rules: Iterable[DqRuleSpec], saved_form: str | None = None) -> list[DqRuleSpec]:
    """On saving ``saved_form``: the ``on_save`` rules that read it (or require it). On demand
    (``saved_form`` None): every rule."""
    if saved_form is None:
        return list(rules)
    return [r for r in rules if r.run == "on_save" and r.reads_form(saved_form)]


def evaluate(
    rules: Iterable[DqRuleSpec],
    data: SubjectData,
    *,
    exclusions: Exclusions | None = None,
) -> list[Discrepancy]:
    """Every discrepancy the rules find in one subject's data, in rule order."""
    excluded = exclusions or {}
    out: list[Discrepancy] = []
    for rule in rules:
        for found in _run(rule, data):
            reason = excluded.get((rule.id, found.ref))
            out.append(found if reason is None else _with_exclusion(found, reason))
    return out


def _with_exclusion(found: Discrepancy, reason: str) -> Discrepancy:
    return Discrepancy(
        found.rule, found.severity, found.ref, found.field, found.text, found.detail, reason
    )


def _run(rule: DqRuleSpec, data: SubjectData) -> Iterator[Discrepancy]:
    runner = {
        "compare": _compare_rule,
        "change": _change_rule,
        "range": _range_rule,
        "criteria": _criteria_rule,
        "requires_form": _requires_rule,
    }.get(rule.kind)
    if runner is None:
        raise ValueError(f"unknown data-quality rule kind {rule.kind!r}")
    yield from runner(rule, data)


def _found(rule: DqRuleSpec, ref: RecordRef, field_name: str, detail: str) -> Discrepancy:
    return Discrepancy(rule.id, rule.severity, ref, field_name, rule.text, detail)


def _context(data: SubjectData, record: FormRecord | None) -> dict[str, Mapping[str, object]]:
    """Values a ``when`` may read: forms filled in once, and the record under check."""
    values: dict[str, Mapping[str, object]] = {}
    forms = {r.ref.form for r in data.records}
    for form in forms:
        one = data.once(form)
        if one is not None:
            values[form] = one.values
    if record is not None:
        values[record.ref.form] = record.values
    return values


def _truth(rule: Mapping[str, Any], values: Mapping[str, Mapping[str, object]]) -> bool | None:
    """Kleene value of a condition; a value of the wrong type (saved under another protocol
    version) makes it unknown rather than failing the save that ran the rule."""
    try:
        return evaluate_rule(rule, values)
    except ValidationFailed:
        return None


def _applies(rule: DqRuleSpec, data: SubjectData, record: FormRecord | None) -> bool:
    """``when`` holds (unknown means the rule does not apply yet)."""
    return rule.when is None or _truth(rule.when, _context(data, record)) is True


def _split(name: str) -> tuple[str, str]:
    form, _, field_name = name.partition(".")
    return form, field_name


# --- values ------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _date(value: object) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        for parse in (dt.date.fromisoformat, dt.datetime.fromisoformat):
            try:
                parsed = parse(value.strip())
            except ValueError:
                continue
            return parsed.date() if isinstance(parsed, dt.datetime) else parsed
    return None


def _comparable(value: object) -> float | dt.date | None:
    """A number or a date; dates first, so ISO text is read as a date, never a number."""
    if isinstance(value, dt.date) or (isinstance(value, str) and _date(value) is not None):
        return _date(value)
    return _number(value)


def _show(value: object) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _order(a: float | dt.date, b: float | dt.date) -> int | None:
    if isinstance(a, dt.date) != isinstance(b, dt.date):
        return None
    return (a > b) - (a < b)  # type: ignore[operator]


# --- the five kinds --------------------------------------------------------------------


def _at(ref: RecordRef) -> str:
    return f" at {ref.visit}" if ref.visit else ""


def _compare_rule(rule: DqRuleSpec, data: SubjectData) -> Iterator[Discrepancy]:
    assert rule.left is not None and rule.right is not None and rule.op is not None
    left_form, left_field = _split(rule.left)
    word, holds = _OPS[rule.op]
    for record in data.of(left_form):
        left = _comparable(record.values.get(left_field))
        if left is None or not _applies(rule, data, record):
            continue
        right, right_name = _right_value(rule.right, data, record)
        if right is None:
            continue
        shift = rule.offset or 0
        if shift:
            right = (
                right + dt.timedelta(days=int(shift))
                if isinstance(right, dt.date)
                else right + shift
            )
            right_name += f" {'+' if shift > 0 else '-'} {abs(shift):g}" + (
                " days" if isinstance(right, dt.date) else ""
            )
        sign = _order(left, right)
        if sign is None or holds(sign):
            continue
        detail = (
            f"{rule.left}{_at(record.ref)} is {_show(left)}; expected {word} {right_name} "
            f"({_show(right)})"
        )
        yield _found(rule, record.ref, left_field, detail)


def _right_value(
    name: str, data: SubjectData, record: FormRecord
) -> tuple[float | dt.date | None, str]:
    if name in EVENTS:
        return _date(data.events.get(name)), name
    form, field_name = _split(name)
    if form == record.ref.form:
        other: FormRecord | None = record
    else:
        other = data.once(form)
        if other is None and record.ref.visit:
            at_visit = [r for r in data.of(form) if r.ref.visit == record.ref.visit]
            other = at_visit[0] if len(at_visit) == 1 else None
    if other is None:
        return None, name
    return _comparable(other.values.get(field_name)), name


def _change_rule(rule: DqRuleSpec, data: SubjectData) -> Iterator[Discrepancy]:
    points: list[tuple[tuple[int, int, int], FormRecord, str, float]] = []
    rank = {code: i for i, code in enumerate(data.visit_order)}
    for index, name in enumerate(rule.series):
        form, field_name = _split(name)
        for record in data.of(form):
            value = _number(record.values.get(field_name))
            if value is None or not _applies(rule, data, record):
                continue
            order = (rank.get(record.ref.visit, -1), index, record.ref.seq)
            points.append((order, record, name, value))
    points.sort(key=lambda p: p[0])
    for position in range(1, len(points)):
        _, record, name, value = points[position]
        _, base_record, base_name, base = points[0 if rule.against == "baseline" else position - 1]
        delta = value - base
        too_far = rule.max_change is not None and abs(delta) > rule.max_change
        pct = abs(delta) / abs(base) * 100 if base else None
        too_far_pct = (
            rule.max_change_pct is not None and pct is not None and pct > rule.max_change_pct
        )
        if not (too_far or too_far_pct):
            continue
        limit = []
        if rule.max_change is not None:
            limit.append(f"{rule.max_change:g}")
        if rule.max_change_pct is not None:
            limit.append(f"{rule.max_change_pct:g} %")
        where = "baseline" if rule.against == "baseline" else "previous"
        detail = (
            f"{name}{_at(record.ref)} is {_show(value)}, {delta:+g} from the {where} value "
            f"{_show(base)} ({base_name}{_at(base_record.ref)}); largest allowed change "
            f"{' or '.join(limit)}"
        )
        yield _found(rule, record.ref, _split(name)[1], detail)


def _range_rule(rule: DqRuleSpec, data: SubjectData) -> Iterator[Discrepancy]:
    assert rule.field is not None
    form, field_name = _split(rule.field)
    low = "-∞" if rule.min is None else f"{rule.min:g}"
    high = "∞" if rule.max is None else f"{rule.max:g}"
    for record in data.of(form):
        value = _number(record.values.get(field_name))
        if value is None or not _applies(rule, data, record):
            continue
        if (rule.min is not None and value < rule.min) or (
            rule.max is not None and value > rule.max
        ):
            detail = f"{rule.field}{_at(record.ref)} is {_show(value)}, outside {low}..{high}"
            yield _found(rule, record.ref, field_name, detail)


def _criteria_rule(rule: DqRuleSpec, data: SubjectData) -> Iterator[Discrepancy]:
    if not _applies(rule, data, None):
        return
    values = _context(data, None)
    for criterion in rule.criteria:
        if criterion.rule is None or criterion.gate not in data.passed_gates:
            continue
        holds = _truth(criterion.rule, values)
        if holds is None:
            continue
        failed = holds is False if criterion.kind == "inclusion" else holds is True
        if not failed:
            continue
        read = fields_read(criterion.rule)
        first = next((n for n in read if _split(n)[0] in values), read[0])
        form, field_name = _split(first)
        record = data.once(form)
        ref = record.ref if record is not None else RecordRef(data.subject, form)
        shown = ", ".join(
            f"{n} = {_show(values.get(_split(n)[0], {}).get(_split(n)[1]))}" for n in read
        )
        verb = "no longer met" if criterion.kind == "inclusion" else "now applies"
        detail = f"{criterion.id} ({criterion.text.strip()}) is {verb}: {shown}"
        yield _found(rule, ref, field_name, detail)


def _requires_rule(rule: DqRuleSpec, data: SubjectData) -> Iterator[Discrepancy]:
    assert rule.form is not None and rule.when is not None
    if data.of(rule.form):
        return
    read = fields_read(rule.when)
    trigger_form, trigger_field = _split(read[0])
    for record in data.of(trigger_form):
        if not _applies(rule, data, record):
            continue
        detail = f"{read[0]}{_at(record.ref)} is {_show(record.values.get(trigger_field))}"
        yield _found(rule, record.ref, trigger_field, f"{detail}; no {rule.form} form saved")


# --- automatic queries ----------------------------------------------------------------------


@dataclass(frozen=True)
class RuleQuery:
    """A query opened by a rule: its discrepancy key and whether it is still open."""

    query_id: int
    rule: str
    key: str
    open: bool


@dataclass(frozen=True)
class Reconciliation:
    """What a rerun does to the automatic queries of the rules it ran."""

    to_open: tuple[Discrepancy, ...]
    """Active discrepancies with no query yet: open one, assigned to the site."""
    to_reopen: tuple[int, ...]
    """Closed queries whose discrepancy is back."""
    resolved: tuple[int, ...]
    """Open queries whose discrepancy is gone (or excluded): answered by the data change, for
    the monitor to verify."""


def reconcile(
    found: Sequence[Discrepancy], existing: Iterable[RuleQuery], ran: Iterable[str]
) -> Reconciliation:
    """Match a rerun's discrepancies with the queries earlier runs opened; only the rules in
    ``ran`` are judged (a save runs some rules, and leaves the others' queries alone)."""
    judged = set(ran)
    active = {d.key: d for d in found if d.active and d.rule in judged}
    queries = [q for q in existing if q.rule in judged]
    by_key: dict[str, list[RuleQuery]] = {}
    for query in queries:
        by_key.setdefault(query.key, []).append(query)
    to_open = tuple(d for key, d in active.items() if key not in by_key)
    to_reopen = tuple(
        max(q.query_id for q in qs)
        for key, qs in by_key.items()
        if key in active and not any(q.open for q in qs)
    )
    resolved = tuple(q.query_id for q in queries if q.open and q.key not in active)
    return Reconciliation(to_open, to_reopen, resolved)
