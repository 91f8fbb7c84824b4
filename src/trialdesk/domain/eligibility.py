"""Eligibility criteria as data, evaluated with three-valued logic (ELIG-0, ELIG-1, ELIG-4).

A rule is a plain JSON-like dict in the protocol file's own syntax, so the domain never needs
the pydantic models: a condition ``{"field": "form.field", "op": OP, "value": V}`` or
``{"all": [...]}``, ``{"any": [...]}``, ``{"not": rule}``.

A value that has not been entered yet (missing or ``None``) makes its condition *unknown*,
and ``all``/``any``/``not`` follow Kleene logic, so a subject is never called ineligible for
data that simply is not there yet: ``all`` is false as soon as one part is false, ``any`` is
true as soon as one part is true, and otherwise unknown wins over the remaining answer.

Comparisons (documented because choice codes are strings and YAML numbers are not):

* two strings compare as strings (``"3" == "3"``, ``"3.0" != "3"``);
* a number and a numeric string compare as numbers, for every operator (MR grade ``"3"``
  ``ge 1`` holds, ``"3" eq 3`` holds); ``bool`` is never a number (``True != 1``);
* a date/time value and an ISO string compare as dates/times;
* an ordering operator (``lt``, ``le``, ``gt``, ``ge``, ``between``) on values that have no
  order between them (text, booleans, a date against a number) is a protocol error and is
  refused with :class:`ValidationFailed` naming the criterion, never silently false.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from trialdesk.domain.errors import ValidationFailed

Truth = bool | None
"""Kleene truth value: ``None`` is *unknown*."""

COMPARISON_OPS: frozenset[str] = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
LIST_OPS: frozenset[str] = frozenset({"in", "not_in"})
FLAG_OPS: frozenset[str] = frozenset({"is_true", "is_false"})
OPERATORS: frozenset[str] = COMPARISON_OPS | LIST_OPS | FLAG_OPS | {"between"}
ORDER_OPS: frozenset[str] = frozenset({"lt", "le", "gt", "ge", "between"})
KINDS: frozenset[str] = frozenset({"inclusion", "exclusion"})

_NUMERIC = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_FIELD = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")


class CriterionStatus(StrEnum):
    MET = "met"
    NOT_MET = "not_met"
    AWAITING_DATA = "awaiting_data"
    AWAITING_CONFIRMATION = "awaiting_confirmation"


@dataclass(frozen=True)
class CriterionSpec:
    """One criterion as the domain needs it (ELIG-1); ``rule`` is ``None`` when the
    investigator confirms it by hand."""

    id: str
    kind: Literal["inclusion", "exclusion"]
    text: str
    gate: str = "echo"
    rule: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class CriterionOutcome:
    """What one criterion says now; ``missing`` lists read fields with no value yet."""

    id: str
    kind: str
    status: CriterionStatus
    text: str
    gate: str
    fields: tuple[str, ...]
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class EligibilityResult:
    """Per-criterion outcomes in protocol order plus the summary the screening log needs."""

    outcomes: tuple[CriterionOutcome, ...]

    @property
    def eligible(self) -> bool:
        """All evaluated criteria MET; vacuously true when a gate has no criteria."""
        return all(o.status is CriterionStatus.MET for o in self.outcomes)

    @property
    def failed_ids(self) -> tuple[str, ...]:
        """NOT_MET criterion ids: the screen-failure reasons (LIFE-3)."""
        return tuple(o.id for o in self.outcomes if o.status is CriterionStatus.NOT_MET)

    @property
    def pending_ids(self) -> tuple[str, ...]:
        """Criteria still waiting for data or for the investigator's confirmation."""
        pending = {CriterionStatus.AWAITING_DATA, CriterionStatus.AWAITING_CONFIRMATION}
        return tuple(o.id for o in self.outcomes if o.status in pending)

    def outcome(self, criterion_id: str) -> CriterionOutcome:
        for o in self.outcomes:
            if o.id == criterion_id:
                return o
        raise KeyError(criterion_id)


class _RuleError(Exception):
    """A rule that cannot be evaluated; turned into ValidationFailed per criterion."""


def _is_scalar(value: object) -> bool:
    return isinstance(value, (bool, int, float, str))


def rule_problems(rule: object, path: str = "rule") -> list[str]:
    """Every syntax problem of ``rule`` (empty when well formed); reused by protocol checks."""
    if not isinstance(rule, Mapping):
        return [f"{path}: must be a mapping, got {type(rule).__name__}"]
    for combinator in ("all", "any"):
        if combinator in rule:
            if len(rule) != 1:
                return [f"{path}: '{combinator}' cannot be mixed with other keys"]
            parts = rule[combinator]
            if not isinstance(parts, Sequence) or isinstance(parts, str) or not parts:
                return [f"{path}.{combinator}: must be a non-empty list of rules"]
            problems: list[str] = []
            for i, part in enumerate(parts):
                problems += rule_problems(part, f"{path}.{combinator}[{i}]")
            return problems
    if "not" in rule:
        if len(rule) != 1:
            return [f"{path}: 'not' cannot be mixed with other keys"]
        return rule_problems(rule["not"], f"{path}.not")
    return _condition_problems(rule, path)


def _condition_problems(rule: Mapping[str, Any], path: str) -> list[str]:
    problems: list[str] = []
    extra = sorted(set(rule) - {"field", "op", "value"})
    if extra:
        problems.append(f"{path}: unknown keys {', '.join(map(str, extra))}")
    field, op, value = rule.get("field"), rule.get("op"), rule.get("value")
    if not isinstance(field, str) or not _FIELD.match(field):
        problems.append(f"{path}.field: must be 'form.field', got {field!r}")
    if op not in OPERATORS:
        problems.append(f"{path}.op: {op!r} is not one of {', '.join(sorted(OPERATORS))}")
        return problems
    if op in COMPARISON_OPS and not _is_scalar(value):
        problems.append(f"{path}.value: '{op}' needs one value, got {value!r}")
    elif op in ORDER_OPS - {"between"} and isinstance(value, bool):
        problems.append(f"{path}.value: '{op}' needs a number or a date, got {value!r}")
    elif op in LIST_OPS and not (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and value
        and all(_is_scalar(v) for v in value)
    ):
        problems.append(f"{path}.value: '{op}' needs a non-empty list of values, got {value!r}")
    elif op == "between":
        if not (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and len(value) == 2
            and all(_is_scalar(v) for v in value)
        ):
            problems.append(f"{path}.value: 'between' needs [low, high], got {value!r}")
        else:
            low, high = _number(value[0]), _number(value[1])
            if low is not None and high is not None and low > high:
                problems.append(f"{path}.value: 'between' low {value[0]!r} > high {value[1]!r}")
    elif op in FLAG_OPS and value is not None:
        problems.append(f"{path}.value: '{op}' takes no value, got {value!r}")
    return problems


def _walk_fields(rule: Mapping[str, Any]) -> Iterator[str]:
    for combinator in ("all", "any"):
        if combinator in rule:
            for part in rule[combinator]:
                yield from _walk_fields(part)
            return
    if "not" in rule:
        yield from _walk_fields(rule["not"])
        return
    yield str(rule["field"])


def fields_read(rule: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The ``form.field`` names a rule reads, in first-use order, each once."""
    if rule is None:
        return ()
    return tuple(dict.fromkeys(_walk_fields(rule)))


def _number(value: object) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMERIC.match(value):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return float(text)
    return None


def _align(actual: object, expected: object) -> tuple[object, object]:
    """Bring a rule value to the type of the recorded value where the module doc allows."""
    if isinstance(actual, str) and isinstance(expected, str):
        return actual, expected
    a_num, e_num = _number(actual), _number(expected)
    if a_num is not None and e_num is not None:
        return a_num, e_num
    for temporal in (dt.datetime, dt.date, dt.time):
        if isinstance(actual, temporal) and isinstance(expected, str):
            try:
                return actual, temporal.fromisoformat(expected)
            except ValueError:
                return actual, expected
    return actual, expected


def _equal(actual: object, expected: object) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    a, e = _align(actual, expected)
    return a == e


def _compare(actual: object, expected: object) -> int:
    """-1, 0 or 1; raises _RuleError when the two have no order between them."""
    a_num, e_num = _number(actual), _number(expected)
    if a_num is not None and e_num is not None:
        return (a_num > e_num) - (a_num < e_num)
    a, e = _align(actual, expected)
    if isinstance(a, (dt.date, dt.time)) and type(a) is type(e):
        try:
            return (a > e) - (a < e)  # type: ignore[operator]
        except TypeError:  # aware against naive
            pass
    raise _RuleError(f"cannot order {actual!r} against {expected!r}")


def _lookup(values: Mapping[str, Mapping[str, object]], field: str) -> object:
    form, _, name = field.partition(".")
    record = values.get(form)
    return None if record is None else record.get(name)


def evaluate_rule(rule: Mapping[str, Any], values: Mapping[str, Mapping[str, object]]) -> Truth:
    """Kleene value of one rule over typed form values (``None``: unknown yet)."""
    problems = rule_problems(rule)
    if problems:
        raise ValidationFailed("rule is malformed: " + "; ".join(problems), {"rule": problems[0]})
    try:
        return _eval(rule, values)
    except _RuleError as exc:
        raise ValidationFailed(f"rule cannot be evaluated: {exc}", {"rule": str(exc)}) from None


def _eval(rule: Mapping[str, Any], values: Mapping[str, Mapping[str, object]]) -> Truth:
    if "all" in rule:
        parts = [_eval(p, values) for p in rule["all"]]
        if any(p is False for p in parts):
            return False
        return None if any(p is None for p in parts) else True
    if "any" in rule:
        parts = [_eval(p, values) for p in rule["any"]]
        if any(p is True for p in parts):
            return True
        return None if any(p is None for p in parts) else False
    if "not" in rule:
        inner = _eval(rule["not"], values)
        return None if inner is None else not inner
    field, op = str(rule["field"]), str(rule["op"])
    expected: Any = rule.get("value")
    actual = _lookup(values, field)
    if actual is None:
        return None
    if op in FLAG_OPS:
        if not isinstance(actual, bool):
            raise _RuleError(f"'{op}' needs a yes/no field, but {field} is {actual!r}")
        return actual is (op == "is_true")
    if op == "eq":
        return _equal(actual, expected)
    if op == "ne":
        return not _equal(actual, expected)
    if op in LIST_OPS:
        found = any(_equal(actual, option) for option in expected)
        return found if op == "in" else not found
    try:
        if op == "between":
            low, high = expected
            return _compare(actual, low) >= 0 and _compare(actual, high) <= 0
        sign = _compare(actual, expected)
    except _RuleError as exc:
        raise _RuleError(f"{field} {op} {expected!r}: {exc}") from None
    return {"lt": sign < 0, "le": sign <= 0, "gt": sign > 0, "ge": sign >= 0}[op]


def _spec_problems(criteria: Sequence[CriterionSpec]) -> dict[str, str]:
    problems: dict[str, str] = {}
    seen: set[str] = set()
    for criterion in criteria:
        found: list[str] = []
        if criterion.id in seen:
            found.append("duplicate criterion id")
        seen.add(criterion.id)
        if criterion.kind not in KINDS:
            found.append(f"kind must be inclusion or exclusion, got {criterion.kind!r}")
        if criterion.rule is not None:
            found += rule_problems(criterion.rule)
        if found:
            problems[criterion.id] = "; ".join(found)
    return problems


def _status(kind: str, holds: Truth) -> CriterionStatus:
    if holds is None:
        return CriterionStatus.AWAITING_DATA
    met = holds if kind == "inclusion" else not holds
    return CriterionStatus.MET if met else CriterionStatus.NOT_MET


def evaluate(
    criteria: Sequence[CriterionSpec],
    values: Mapping[str, Mapping[str, object]],
    confirmations: Mapping[str, bool],
    *,
    gate: str | None = None,
) -> EligibilityResult:
    """Evaluate the criteria of ``gate`` (all when ``None``) against typed form values.

    ``values`` maps form code -> field code -> typed value. ``confirmations`` maps a criterion
    id to the investigator's answer to "is this criterion met?" for criteria without a rule
    (for an exclusion, True means the exclusion does not apply); unanswered ones await
    confirmation and an answer of False is NOT_MET. Confirmations of criteria that have a
    rule are ignored: the data decide. A malformed rule, or one comparing values without an
    order, raises ValidationFailed naming every bad criterion.
    """
    problems = _spec_problems(criteria)
    if problems:
        raise ValidationFailed(_summary("eligibility rules are malformed", problems), problems)
    outcomes: list[CriterionOutcome] = []
    for criterion in criteria:
        if gate is not None and criterion.gate != gate:
            continue
        fields = fields_read(criterion.rule)
        missing = tuple(f for f in fields if _lookup(values, f) is None)
        if criterion.rule is None:
            answer = confirmations.get(criterion.id)
            if answer is None:
                status = CriterionStatus.AWAITING_CONFIRMATION
            else:
                status = CriterionStatus.MET if answer else CriterionStatus.NOT_MET
        else:
            try:
                status = _status(criterion.kind, _eval(criterion.rule, values))
            except _RuleError as exc:
                problems[criterion.id] = str(exc)
                continue
        outcomes.append(
            CriterionOutcome(
                id=criterion.id,
                kind=criterion.kind,
                status=status,
                text=criterion.text,
                gate=criterion.gate,
                fields=fields,
                missing=missing,
            )
        )
    if problems:
        raise ValidationFailed(
            _summary("eligibility rules cannot be evaluated", problems), problems
        )
    return EligibilityResult(tuple(outcomes))


def _summary(head: str, problems: Mapping[str, str]) -> str:
    return head + ": " + "; ".join(f"{key}: {msg}" for key, msg in problems.items())
