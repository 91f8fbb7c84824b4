"""Checks that span a protocol file: what one model field cannot see on its own.

Each problem is ``(yaml path, message)`` so the loader can add the file line; a protocol that
passes these checks can be trusted by the services without re-checking (an arm code is unique,
a rule names a real field, a stratum can be read, a visit code exists, a time zone resolves).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from trialdesk.domain.roles import Role
from trialdesk.protocol.models import (
    AllOf,
    AnyOf,
    Arm,
    Condition,
    DqKind,
    DqRule,
    FieldType,
    Form,
    FormField,
    Method,
    Operator,
    Protocol,
    ResponseChange,
    Rule,
    SdvLevel,
    SubjectEvent,
)

Problems = list[tuple[str, str]]

NUMERIC_TYPES = frozenset({FieldType.INTEGER, FieldType.DECIMAL})
DATE_TYPES = frozenset({FieldType.DATE, FieldType.TIME, FieldType.DATETIME})
CATEGORICAL_TYPES = frozenset({FieldType.CHOICE, FieldType.BOOLEAN})
ORDER_OPS = frozenset({Operator.LT, Operator.LE, Operator.GT, Operator.GE})
LIST_OPS = frozenset({Operator.IN, Operator.NOT_IN})
TRUTH_OPS = frozenset({Operator.IS_TRUE, Operator.IS_FALSE})
MAY_SEE_ALLOCATION = frozenset({Role.IMPLANTER, Role.STATISTICIAN, Role.DSMB})
"""SYSTEM.md §1: every other role never sees allocation, so no protocol may unblind it."""

_OP_WORDS = {
    Operator.EQ: "=",
    Operator.NE: "≠",
    Operator.LT: "<",
    Operator.LE: "≤",
    Operator.GT: ">",
    Operator.GE: "≥",
    Operator.IN: "in",
    Operator.NOT_IN: "not in",
}


def check_protocol(p: Protocol) -> Problems:
    """Every cross-file problem of ``p``; an empty list means the services may rely on it."""
    problems: Problems = []
    problems += _check_unique(p)
    problems += _check_places(p)
    problems += _check_enrolment(p)
    problems += _check_forms(p)
    problems += _check_form_references(p)
    problems += _check_criteria(p)
    problems += _check_visits(p)
    problems += _check_randomization(p)
    problems += _check_blinding_and_visit_references(p)
    problems += _check_supply(p)
    problems += _check_consent(p)
    problems += _check_data_quality(p)
    problems += _check_sdv(p)
    problems += _check_freeze(p)
    problems += _check_queries(p)
    problems += _check_exits(p)
    return problems


def iter_conditions(rule: Rule, path: str = "rule") -> Iterator[tuple[str, Condition]]:
    """Each condition of a rule with its YAML path below ``path``, in file order."""
    if isinstance(rule, Condition):
        yield path, rule
    elif isinstance(rule, AllOf):
        for index, sub in enumerate(rule.all):
            yield from iter_conditions(sub, f"{path}.all[{index}]")
    elif isinstance(rule, AnyOf):
        for index, sub in enumerate(rule.any):
            yield from iter_conditions(sub, f"{path}.any[{index}]")
    else:
        yield from iter_conditions(rule.not_, f"{path}.not")


def rule_fields(rule: Rule) -> list[str]:
    """The ``form.field`` names a rule reads, each once (ELIG-1: what a criterion reads)."""
    names: list[str] = []
    for _, condition in iter_conditions(rule):
        if condition.field not in names:
            names.append(condition.field)
    return names


def describe_rule(rule: Rule) -> str:
    """A rule as one readable line, e.g. ``tte.lvef_pct ≤ 50``, for screens and reports."""
    if isinstance(rule, Condition):
        op, value = rule.op, rule.value
        if op is Operator.IS_TRUE:
            return f"{rule.field} is yes"
        if op is Operator.IS_FALSE:
            return f"{rule.field} is no"
        if op is Operator.BETWEEN and isinstance(value, list) and len(value) == 2:
            return f"{rule.field} between {_show(value[0])} and {_show(value[1])}"
        return f"{rule.field} {_OP_WORDS.get(op, op.value)} {_show(value)}"
    if isinstance(rule, AllOf):
        return "(" + " and ".join(describe_rule(sub) for sub in rule.all) + ")"
    if isinstance(rule, AnyOf):
        return "(" + " or ".join(describe_rule(sub) for sub in rule.any) + ")"
    return f"not {describe_rule(rule.not_)}"


def _show(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _duplicates(values: Iterable[str], path: str, what: str, key: str | None = None) -> Problems:
    """A problem at each repeat of a value in the list at ``path`` (items' ``key`` if given)."""
    first: dict[str, int] = {}
    problems: Problems = []
    for index, value in enumerate(values):
        if value in first:
            at = f"{path}[{index}]" + (f".{key}" if key else "")
            problems.append((at, f"duplicate {what} '{value}' (first at {path}[{first[value]}])"))
        else:
            first[value] = index
    return problems


def _check_unique(p: Protocol) -> Problems:
    problems: Problems = []
    problems += _duplicates((a.code for a in p.arms), "arms", "arm code", "code")
    problems += _duplicates((r.code for r in p.regions), "regions", "region code", "code")
    problems += _duplicates((c.code for c in p.countries), "countries", "country code", "code")
    problems += _duplicates((s.code for s in p.sites), "sites", "site code", "code")
    problems += _duplicates((f.code for f in p.forms), "forms", "form code", "code")
    for fi, form in enumerate(p.forms):
        problems += _duplicates(
            (f.code for f in form.fields),
            f"forms[{fi}].fields",
            f"field code in {form.code}",
            "code",
        )
        for di, field in enumerate(form.fields):
            if field.choices:
                problems += _duplicates(
                    (c.code for c in field.choices),
                    f"forms[{fi}].fields[{di}].choices",
                    f"choice code in {form.code}.{field.code}",
                    "code",
                )
    problems += _duplicates((c.id for c in p.criteria), "criteria", "criterion id", "id")
    problems += _duplicates((v.code for v in p.visits), "visits", "visit code", "code")
    problems += _duplicates(
        (t.code for t in p.therapies.types), "therapies.types", "therapy type", "code"
    )
    return problems


def _check_places(p: Protocol) -> Problems:
    """Countries name a region, sites a country and a real time zone (TIME-1, REP-1)."""
    problems: Problems = []
    regions = {r.code for r in p.regions}
    countries = {c.code for c in p.countries}
    for index, country in enumerate(p.countries):
        if country.region not in regions:
            problems.append(
                (
                    f"countries[{index}].region",
                    f"unknown region '{country.region}'{_among(regions)}",
                )
            )
    for index, site in enumerate(p.sites):
        if site.country not in countries:
            problems.append(
                (f"sites[{index}].country", f"unknown country '{site.country}'{_among(countries)}")
            )
        if not _is_time_zone(site.timezone):
            problems.append(
                (
                    f"sites[{index}].timezone",
                    f"'{site.timezone}' is not an IANA time zone (e.g. Europe/Berlin)",
                )
            )
    return problems


def _is_time_zone(name: str) -> bool:
    if not name or name != name.strip():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _among(known: Iterable[str]) -> str:
    names = sorted(known)
    if not names:
        return ""
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f" (known: {shown})"


def _check_enrolment(p: Protocol) -> Problems:
    e = p.enrolment
    if e.cap_total is not None and e.cap_total < e.target_subjects:
        return [
            (
                "enrolment.cap_total",
                f"cap {e.cap_total} is below the target of {e.target_subjects}: "
                "the target could never be reached",
            )
        ]
    return []


def _check_forms(p: Protocol) -> Problems:
    """Each field's type agrees with its choices, range and length (DATA-1)."""
    problems: Problems = []
    for fi, form in enumerate(p.forms):
        for di, field in enumerate(form.fields):
            at = f"forms[{fi}].fields[{di}]"
            if field.type is FieldType.CHOICE and not field.choices:
                problems.append((at, f"choice field '{field.code}' needs choices"))
            if field.type is not FieldType.CHOICE and field.choices:
                problems.append(
                    (f"{at}.choices", f"choices are only for type choice, not {field.type}")
                )
            if field.type not in NUMERIC_TYPES:
                for bound in ("min", "max"):
                    if getattr(field, bound) is not None:
                        problems.append(
                            (f"{at}.{bound}", f"{bound} is only for integer or decimal fields")
                        )
            elif field.min is not None and field.max is not None and field.min > field.max:
                problems.append((f"{at}.min", f"min {field.min:g} is above max {field.max:g}"))
            if field.max_length is not None and field.type is not FieldType.TEXT:
                problems.append((f"{at}.max_length", "max_length is only for text fields"))
        if form.date_field is not None:
            date_field = _field_of(form, form.date_field)
            if date_field is None:
                problems.append(
                    (
                        f"forms[{fi}].date_field",
                        f"form {form.code} has no field '{form.date_field}'",
                    )
                )
            elif date_field.type not in (FieldType.DATE, FieldType.DATETIME):
                problems.append(
                    (
                        f"forms[{fi}].date_field",
                        f"'{form.date_field}' is a {date_field.type} field, not a date",
                    )
                )
    return problems


def _field_of(form: Form, code: str) -> FormField | None:
    for field in form.fields:
        if field.code == code:
            return field
    return None


def _check_form_references(p: Protocol) -> Problems:
    """Every form named anywhere exists, so a screen never asks for a form nobody defined."""
    forms = {f.code for f in p.forms}
    named: list[tuple[str, str | None]] = []
    named += [(f"arms[{i}].procedure_form", a.procedure_form) for i, a in enumerate(p.arms)]
    named += [(f"screening.forms[{i}]", code) for i, code in enumerate(p.screening.forms)]
    named.append(("screening.echo_form", p.screening.echo_form))
    named += [
        (f"screening.anatomy_forms[{i}]", code) for i, code in enumerate(p.screening.anatomy_forms)
    ]
    for vi, visit in enumerate(p.visits):
        named += [(f"visits[{vi}].forms[{i}]", code) for i, code in enumerate(visit.forms)]
    named.append(("therapies.form", p.therapies.form))
    return [
        (path, f"unknown form '{code}'{_among(forms)}")
        for path, code in named
        if code is not None and code not in forms
    ]


def _check_criteria(p: Protocol) -> Problems:
    """Rules read real fields with values that fit them (ELIG-1); their gates are screened."""
    problems: Problems = []
    gates = set(p.screening.gates)
    problems += _duplicates(p.screening.gates, "screening.gates", "gate")
    for ci, criterion in enumerate(p.criteria):
        if criterion.gate not in gates:
            problems.append(
                (
                    f"criteria[{ci}].gate",
                    f"gate '{criterion.gate}' is not among screening.gates "
                    f"({', '.join(g.value for g in p.screening.gates)})",
                )
            )
        if criterion.rule is None:
            continue
        for path, condition in iter_conditions(criterion.rule):
            at = f"criteria[{ci}].{path}"
            problems += _check_condition(p, condition, at)
    return problems


def _lookup(p: Protocol, name: str) -> tuple[FormField | None, str]:
    """The field ``form.field`` names, or why there is none."""
    form_code, _, field_code = name.partition(".")
    try:
        form = p.form(form_code)
    except KeyError:
        return None, f"no form '{form_code}'"
    field = _field_of(form, field_code)
    if field is None:
        return None, f"form {form_code} has no field '{field_code}'"
    return field, ""


def _check_condition(p: Protocol, c: Condition, at: str) -> Problems:
    field, why = _lookup(p, c.field)
    if field is None:
        return [(f"{at}.field", f"'{c.field}' cannot be read: {why}")]
    op, value, kind = c.op, c.value, field.type
    where = f"{at}.value"

    if op in TRUTH_OPS:
        if kind is not FieldType.BOOLEAN:
            return [(f"{at}.op", f"{op} needs a boolean field; {c.field} is {kind}")]
        if value is not None:
            return [(where, f"{op} takes no value")]
        return []
    if value is None:
        return [(where, f"{op} needs a value")]
    ordering = op in ORDER_OPS or op is Operator.BETWEEN
    if ordering and kind not in NUMERIC_TYPES | DATE_TYPES and not _numeric_choices(field):
        hint = " (use in / not_in with choice codes)" if kind is FieldType.CHOICE else ""
        return [(f"{at}.op", f"{op} compares numbers or dates; {c.field} is {kind}{hint}")]
    if op is Operator.BETWEEN:
        if not isinstance(value, list) or len(value) != 2:
            return [(where, "between needs exactly two bounds, e.g. [150, 450]")]
        problems = [
            _fits(field, c.field, item, f"{where}[{i}]", ordering=True)
            for i, item in enumerate(value)
        ]
        found = [problem for problem in problems if problem is not None]
        if found:
            return found
        low, high = value
        if _sort_key(kind, low) > _sort_key(kind, high):
            return [(where, f"the lower bound {low} is above the upper bound {high}")]
        return []
    if op in LIST_OPS:
        if not isinstance(value, list) or not value:
            return [(where, f"{op} needs a non-empty list of values")]
        items = [_fits(field, c.field, item, f"{where}[{i}]") for i, item in enumerate(value)]
        return [problem for problem in items if problem is not None]
    if isinstance(value, list):
        return [(where, f"{op} compares with one value, not a list")]
    problem = _fits(field, c.field, value, where, ordering=ordering)
    return [problem] if problem is not None else []


def _numeric_choices(field: FormField) -> bool:
    """Choice codes that are all numbers ("0".."4") may be ordered, as eligibility does."""
    codes = [choice.code for choice in field.choices or []]
    return field.type is FieldType.CHOICE and bool(codes) and all(map(_is_number, codes))


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def _sort_key(kind: FieldType, value: object) -> tuple[float, str]:
    """Bounds of ``between`` as comparable keys (numbers, numeric codes or ISO text)."""
    if kind in DATE_TYPES:
        return 0.0, str(value)
    return float(str(value)), ""


def _fits(
    field: FormField, name: str, value: object, where: str, *, ordering: bool = False
) -> tuple[str, str] | None:
    """Why ``value`` cannot be compared with ``field``, or None when it can."""
    kind = field.type
    if kind is FieldType.CHOICE and ordering:
        if not _is_number(value):
            return where, f"{name} has numeric choice codes: compare it with a number"
        return None
    if kind in NUMERIC_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return where, f"{name} is {kind}: compare it with a number, not {value!r}"
        if (field.min is not None and value < field.min) or (
            field.max is not None and value > field.max
        ):
            low = "-∞" if field.min is None else f"{field.min:g}"
            high = "∞" if field.max is None else f"{field.max:g}"
            return where, f"{value} is outside {name}'s range {low}..{high}"
        return None
    if kind is FieldType.CHOICE:
        codes = [choice.code for choice in field.choices or []]
        if not isinstance(value, str) or value not in codes:
            hint = " (choice codes are text: quote them)" if not isinstance(value, str) else ""
            return where, f"{value!r} is not a choice of {name} ({', '.join(codes)}){hint}"
        return None
    if kind is FieldType.BOOLEAN:
        if not isinstance(value, bool):
            return where, f"{name} is boolean: compare it with true or false (or use is_true)"
        return None
    if kind is FieldType.TEXT:
        if not isinstance(value, str):
            return where, f"{name} is text: compare it with text, not {value!r}"
        return None
    parse = {
        FieldType.DATE: dt.date.fromisoformat,
        FieldType.TIME: dt.time.fromisoformat,
        FieldType.DATETIME: dt.datetime.fromisoformat,
    }[kind]
    try:
        parse(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return where, f"{name} is {kind}: compare it with an ISO {kind} in quotes, not {value!r}"
    return None


def _check_visits(p: Protocol) -> Problems:
    """Visits in order, windows apart and after day 0 (SCHED-1: windows are inclusive)."""
    problems: Problems = []
    for index, visit in enumerate(p.visits):
        start = visit.target_day - visit.window_before
        if start < 1:
            problems.append(
                (
                    f"visits[{index}].window_before",
                    f"window opens on day {start}, not after randomization (day 0)",
                )
            )
        if index == 0:
            continue
        before = p.visits[index - 1]
        if visit.target_day <= before.target_day:
            problems.append(
                (
                    f"visits[{index}].target_day",
                    f"day {visit.target_day} is not after {before.code}'s day {before.target_day}:"
                    " list visits in increasing target_day order",
                )
            )
            continue
        end_before = before.target_day + before.window_after
        if start <= end_before:
            problems.append(
                (
                    f"visits[{index}].window_before",
                    f"window days {start}-{visit.target_day + visit.window_after} overlaps "
                    f"{before.code}'s window days {before.target_day - before.window_before}-"
                    f"{end_before} (windows include both ends)",
                )
            )
    return problems


def _check_randomization(p: Protocol) -> Problems:
    """Strata can be read before randomization; blocks keep the arm ratio (RAND-1, RAND-2)."""
    r = p.randomization
    problems: Problems = []
    pre_randomization = set(p.screening.forms) | set(p.screening.anatomy_forms)
    if p.screening.echo_form:
        pre_randomization.add(p.screening.echo_form)

    def factor_problem(name: str, at: str) -> tuple[str, str] | None:
        if name == "site":
            return None
        if "." not in name:
            return at, f"'{name}' is neither 'site' nor 'form.field'"
        field, why = _lookup(p, name)
        if field is None:
            return at, f"'{name}' cannot be read: {why}"
        if name.partition(".")[0] not in pre_randomization:
            return at, f"'{name}' is not on a screening form, so it is unknown at randomization"
        if field.type not in CATEGORICAL_TYPES:
            return at, f"'{name}' is {field.type}; a stratum needs a choice or boolean field"
        return None

    problems += _duplicates(r.strata, "randomization.strata", "stratum")
    for index, name in enumerate(r.strata):
        found = factor_problem(name, f"randomization.strata[{index}]")
        if found:
            problems.append(found)
    ratio_sum = sum(arm.ratio for arm in p.arms)
    if r.method is Method.PERMUTED_BLOCKS:
        if not r.block_sizes:
            problems.append(
                (
                    "randomization.block_sizes",
                    f"permuted_blocks needs block_sizes (multiples of {ratio_sum}, the sum of "
                    "the arm ratios)",
                )
            )
        for index, size in enumerate(r.block_sizes):
            if size <= 0 or size % ratio_sum:
                problems.append(
                    (
                        f"randomization.block_sizes[{index}]",
                        f"block size {size} is not a positive multiple of {ratio_sum}, "
                        "the sum of the arm ratios",
                    )
                )
        good = [size for size in r.block_sizes if size > 0]
        if r.list_size_per_stratum is not None and good:
            step = math.gcd(*good)
            if r.list_size_per_stratum % step:
                problems.append(
                    (
                        "randomization.list_size_per_stratum",
                        f"{r.list_size_per_stratum} slots cannot be filled with whole blocks "
                        f"of {', '.join(map(str, good))}",
                    )
                )
    if r.method is Method.MINIMIZATION and r.minimization is None:
        problems.append(
            ("randomization.minimization", "method minimization needs a minimization section")
        )
    if r.minimization is not None:
        names = [f.factor for f in r.minimization.factors]
        problems += _duplicates(names, "randomization.minimization.factors", "factor", "factor")
        for index, name in enumerate(names):
            found = factor_problem(name, f"randomization.minimization.factors[{index}].factor")
            if found:
                problems.append(found)
    if r.seed_policy == "fixed" and r.seed is None:
        problems.append(("randomization.seed", "seed_policy fixed needs a seed"))
    return problems


def _check_blinding_and_visit_references(p: Protocol) -> Problems:
    """Only roles allowed to know may be unblinded (RAND-6); named visits exist (RAND-7)."""
    problems: Problems = []
    roles = {role.value for role in Role}
    problems += _duplicates(p.blinding.unblinded_roles, "blinding.unblinded_roles", "role")
    for index, name in enumerate(p.blinding.unblinded_roles):
        at = f"blinding.unblinded_roles[{index}]"
        if name not in roles:
            problems.append((at, f"unknown role '{name}' (roles: {', '.join(sorted(roles))})"))
        elif Role(name) not in MAY_SEE_ALLOCATION:
            problems.append((at, f"role '{name}' never sees allocation (SYSTEM.md §1)"))
    visits = {visit.code for visit in p.visits}
    named = [
        ("blinding.unblind_after_visit", p.blinding.unblind_after_visit),
        ("follow_up.completion_visit", p.follow_up.completion_visit),
        ("endpoints.safety_visit", p.endpoints.safety_visit),
        ("endpoints.efficacy_visit", p.endpoints.efficacy_visit),
    ]
    problems += [
        (path, f"unknown visit '{code}'{_among(visits)}")
        for path, code in named
        if code is not None and code not in visits
    ]
    return problems


def _check_supply(p: Protocol) -> Problems:
    """Device arms exist and their procedure form has the text field naming the device; site
    reorder levels name real sites (SUP-1, SUP-2)."""
    if p.supply is None:
        return []
    problems: Problems = []
    arms: dict[str, Arm] = {}
    for arm_def in p.arms:
        arms.setdefault(arm_def.code, arm_def)  # a duplicate code is reported elsewhere
    forms: dict[str, Form] = {}
    for form_def in p.forms:
        forms.setdefault(form_def.code, form_def)
    for index, code in enumerate(p.supply.device_arms):
        at = f"supply.device_arms[{index}]"
        arm = arms.get(code)
        if arm is None:
            problems.append((at, f"unknown arm '{code}'{_among(arms)}"))
            continue
        if arm.procedure_form is None:
            problems.append((at, f"arm '{code}' has no procedure form to name its device in"))
            continue
        form = forms.get(arm.procedure_form)
        if form is None:
            continue  # an unknown procedure form is reported by _check_form_references
        field = _field_of(form, p.supply.device_field)
        if field is None or field.type is not FieldType.TEXT:
            problems.append(
                (
                    "supply.device_field",
                    f"form '{form.code}' of arm '{code}' has no text field "
                    f"'{p.supply.device_field}' naming the device",
                )
            )
        released = p.supply.released_field
        if released is not None:
            flag = _field_of(form, released)
            if flag is None or flag.type is not FieldType.BOOLEAN:
                problems.append(
                    (
                        "supply.released_field",
                        f"form '{form.code}' of arm '{code}' has no boolean field '{released}'",
                    )
                )
    sites = {s.code for s in p.sites}
    for code, level in p.supply.site_reorder_levels.items():
        at = f"supply.site_reorder_levels.{code}"
        if code not in sites:
            problems.append((at, f"unknown site '{code}'{_among(sites)}"))
        elif level < 0:
            problems.append((at, "a reorder level cannot be negative"))
    return problems


# --- Records that hold (issue 15) -----------------------------------------------------------


def _forms_by_code(p: Protocol) -> dict[str, Form]:
    forms: dict[str, Form] = {}
    for form in p.forms:
        forms.setdefault(form.code, form)  # a duplicate code is reported elsewhere
    return forms


def arm_forms(p: Protocol) -> frozenset[str]:
    """Forms only one arm fills in: nothing a blinded role sees may depend on them (RAND-6)."""
    return frozenset(a.procedure_form for a in p.arms if a.procedure_form)


def visit_forms(p: Protocol) -> frozenset[str]:
    return frozenset(code for visit in p.visits for code in visit.forms)


def single_instance(p: Protocol, form_code: str) -> bool:
    """A form a subject has at most one record of: not repeating and not filled in at visits,
    so a rule may read it from any other record without saying which copy (REC-6)."""
    forms = _forms_by_code(p)
    form = forms.get(form_code)
    return form is not None and not form.repeating and form_code not in visit_forms(p)


def _finite(value: float | None, at: str) -> Problems:
    if value is not None and not math.isfinite(value):
        return [(at, f"{value} is not a finite number")]
    return []


def _check_consent(p: Protocol) -> Problems:
    """Documents and versions unique, versions oldest first with dates, approvals naming real
    sites or countries (REC-8)."""
    if p.consent is None:
        return []
    problems: Problems = []
    docs = p.consent.documents
    problems += _duplicates((d.code for d in docs), "consent.documents", "document", "code")
    sites = {s.code for s in p.sites}
    countries = {c.code for c in p.countries}
    for di, doc in enumerate(docs):
        base = f"consent.documents[{di}].versions"
        problems += _duplicates((v.version for v in doc.versions), base, "version", "version")
        previous: dt.date | None = None
        for vi, version in enumerate(doc.versions):
            at = f"{base}[{vi}]"
            if version.effective_from is None:
                if vi > 0:
                    problems.append(
                        (
                            f"{at}.version",
                            f"version {version.version} needs effective_from: only the first "
                            "version may take effect with the study",
                        )
                    )
            else:
                if previous is not None and version.effective_from < previous:
                    problems.append(
                        (
                            f"{at}.effective_from",
                            f"{version.effective_from} is before the previous version's "
                            f"{previous}: list versions oldest first",
                        )
                    )
                previous = version.effective_from
            if vi == 0 and version.reconsent:
                problems.append(
                    (f"{at}.reconsent", "the first version has no earlier one to re-consent from")
                )
            seen: dict[str, int] = {}
            for ai, approval in enumerate(version.approvals):
                where = f"{at}.approvals[{ai}]"
                if (approval.site is None) == (approval.country is None):
                    problems.append((where, "an approval names either a site or a country"))
                    continue
                if approval.site is not None:
                    target = f"site {approval.site}"
                    if approval.site not in sites:
                        problems.append(
                            (f"{where}.site", f"unknown site '{approval.site}'{_among(sites)}")
                        )
                else:
                    target = f"country {approval.country}"
                    if approval.country not in countries:
                        problems.append(
                            (
                                f"{where}.country",
                                f"unknown country '{approval.country}'{_among(countries)}",
                            )
                        )
                if target in seen:
                    problems.append(
                        (where, f"{target} is approved twice (first at approvals[{seen[target]}])")
                    )
                else:
                    seen[target] = ai
    return problems


_DQ_COMMON = frozenset({"id", "text", "kind", "severity", "run", "when", "assumption"})
_DQ_KEYS: dict[DqKind, tuple[str, ...]] = {
    DqKind.COMPARE: ("left", "op", "right", "offset"),
    DqKind.CHANGE: ("series", "against", "max_change", "max_change_pct"),
    DqKind.RANGE: ("field", "min", "max"),
    DqKind.CRITERIA: ("criteria",),
    DqKind.REQUIRES_FORM: ("form",),
}
_DQ_REQUIRED: dict[DqKind, tuple[str, ...]] = {
    DqKind.COMPARE: ("left", "op", "right"),
    DqKind.CHANGE: ("series",),
    DqKind.RANGE: ("field",),
    DqKind.CRITERIA: ("criteria",),
    DqKind.REQUIRES_FORM: ("form", "when"),
}
COMPARE_OPS = frozenset(
    {Operator.EQ, Operator.NE, Operator.LT, Operator.LE, Operator.GT, Operator.GE}
)
EVENTS = frozenset(event.value for event in SubjectEvent)


def dq_rule_reads(rule: DqRule) -> list[str]:
    """The ``form.field`` names (and subject events) a data-quality rule reads, each once, in
    the order the rule names them: what decides which rules run when a form is saved."""
    names: list[str] = []

    def add(name: str | None) -> None:
        if name and name not in names:
            names.append(name)

    add(rule.left)
    add(rule.right)
    for name in rule.series or []:
        add(name)
    add(rule.field)
    if rule.when is not None:
        for name in rule_fields(rule.when):
            add(name)
    return names


def _dq_record_form(rule: DqRule) -> str | None:
    """The form whose records the rule is evaluated on, one discrepancy per record."""
    if rule.kind is DqKind.COMPARE and rule.left:
        return rule.left.partition(".")[0]
    if rule.kind is DqKind.RANGE and rule.field:
        return rule.field.partition(".")[0]
    if rule.kind is DqKind.REQUIRES_FORM and rule.when is not None:
        read = rule_fields(rule.when)
        return read[0].partition(".")[0] if read else None
    return None


def _check_data_quality(p: Protocol) -> Problems:
    """Data-quality rules name real fields of fitting types, use only their kind's keys, and
    never read an arm's procedure form (REC-6, RAND-6)."""
    if p.data_quality is None:
        return []
    problems: Problems = []
    rules = p.data_quality.rules
    problems += _duplicates((r.id for r in rules), "data_quality.rules", "rule id", "id")
    for index, rule in enumerate(rules):
        problems += _check_dq_rule(p, rule, f"data_quality.rules[{index}]")
    return problems


def _check_dq_rule(p: Protocol, rule: DqRule, at: str) -> Problems:
    problems: Problems = []
    uses = _DQ_KEYS[rule.kind]
    for key in (
        "left",
        "op",
        "right",
        "offset",
        "series",
        "against",
        "max_change",
        "max_change_pct",
        "field",
        "min",
        "max",
        "criteria",
        "form",
    ):
        if getattr(rule, key) is not None and key not in uses:
            problems.append(
                (
                    f"{at}.{key}",
                    f"kind {rule.kind} does not use '{key}' (it uses: {', '.join(uses)})",
                )
            )
    missing = [key for key in _DQ_REQUIRED[rule.kind] if getattr(rule, key) is None]
    for key in missing:
        problems.append((f"{at}.{key}", f"kind {rule.kind} needs '{key}'"))
    for key in ("offset", "min", "max", "max_change", "max_change_pct"):
        problems += _finite(getattr(rule, key), f"{at}.{key}")
    if problems:
        return problems
    arms = arm_forms(p)
    for name in dq_rule_reads(rule) + ([f"{rule.form}."] if rule.form else []):
        form_code = name.partition(".")[0]
        if form_code in arms:
            return [
                (
                    at,
                    f"reads form {form_code}, an arm's procedure form: whether it finds a "
                    "discrepancy would tell the arm (RAND-6)",
                )
            ]
    if rule.kind is DqKind.COMPARE:
        problems += _check_dq_compare(p, rule, at)
    elif rule.kind is DqKind.CHANGE:
        problems += _check_dq_change(p, rule, at)
    elif rule.kind is DqKind.RANGE:
        problems += _check_dq_range(p, rule, at)
    elif rule.kind is DqKind.CRITERIA:
        problems += _check_dq_criteria(p, rule, at)
    else:
        problems += _check_dq_requires(p, rule, at)
    if rule.when is not None:
        problems += _check_dq_when(p, rule, at)
    return problems


def _dq_field(p: Protocol, name: str, at: str) -> tuple[FormField | None, Problems]:
    if "." not in name:
        return None, [(at, f"'{name}' is not 'form.field'")]
    field, why = _lookup(p, name)
    if field is None:
        return None, [(at, f"'{name}' cannot be read: {why}")]
    return field, []


def _check_dq_compare(p: Protocol, rule: DqRule, at: str) -> Problems:
    assert rule.left is not None and rule.right is not None and rule.op is not None
    if rule.op not in COMPARE_OPS:
        allowed = ", ".join(op.value for op in Operator if op in COMPARE_OPS)
        return [(f"{at}.op", f"compare takes {allowed}, not {rule.op}")]
    left, problems = _dq_field(p, rule.left, f"{at}.left")
    if left is None:
        return problems
    if left.type not in NUMERIC_TYPES | {FieldType.DATE, FieldType.DATETIME}:
        return [(f"{at}.left", f"{rule.left} is {left.type}: compare reads numbers or dates")]
    left_is_date = left.type not in NUMERIC_TYPES
    if rule.right in EVENTS:
        if not left_is_date:
            return [(f"{at}.right", f"{rule.right} is a date; {rule.left} is {left.type}")]
    else:
        right, problems = _dq_field(p, rule.right, f"{at}.right")
        if right is None:
            hint = f" or a subject event ({', '.join(sorted(EVENTS))})"
            return [(path, message + hint) for path, message in problems]
        right_is_date = right.type not in NUMERIC_TYPES
        if right.type not in NUMERIC_TYPES | {FieldType.DATE, FieldType.DATETIME} or (
            right_is_date != left_is_date
        ):
            return [(f"{at}.right", f"{rule.right} is {right.type}; {rule.left} is {left.type}")]
        left_form = rule.left.partition(".")[0]
        right_form = rule.right.partition(".")[0]
        visits = visit_forms(p)
        if not (
            right_form == left_form
            or single_instance(p, right_form)
            or (right_form in visits and left_form in visits)
        ):
            return [
                (
                    f"{at}.right",
                    f"form {right_form} has several records per subject: compare it with the "
                    "same form, a form filled in once, or at the same visit",
                )
            ]
    if left_is_date and rule.offset is not None and not float(rule.offset).is_integer():
        return [(f"{at}.offset", "an offset between dates is a whole number of days")]
    return []


def _check_dq_change(p: Protocol, rule: DqRule, at: str) -> Problems:
    assert rule.series is not None
    problems: Problems = []
    if not rule.series:
        return [(f"{at}.series", "name at least one form.field")]
    problems += _duplicates(rule.series, f"{at}.series", "field")
    forms = _forms_by_code(p)
    for index, name in enumerate(rule.series):
        field, found = _dq_field(p, name, f"{at}.series[{index}]")
        problems += found
        if field is None:
            continue
        if field.type not in NUMERIC_TYPES:
            problems.append((f"{at}.series[{index}]", f"{name} is {field.type}, not a number"))
        form = forms.get(name.partition(".")[0])
        if form is not None and form.repeating:
            problems.append(
                (
                    f"{at}.series[{index}]",
                    f"form {form.code} repeats: its values have no visit order",
                )
            )
    if rule.max_change is None and rule.max_change_pct is None:
        problems.append((at, "kind change needs max_change or max_change_pct"))
    return problems


def _check_dq_range(p: Protocol, rule: DqRule, at: str) -> Problems:
    assert rule.field is not None
    field, problems = _dq_field(p, rule.field, f"{at}.field")
    if field is None:
        return problems
    if field.type not in NUMERIC_TYPES:
        return [(f"{at}.field", f"{rule.field} is {field.type}: range reads numbers")]
    if rule.min is None and rule.max is None:
        return [(at, "kind range needs min, max or both")]
    if rule.min is not None and rule.max is not None and rule.min > rule.max:
        return [(f"{at}.min", f"min {rule.min:g} is above max {rule.max:g}")]
    return []


def _check_dq_criteria(p: Protocol, rule: DqRule, at: str) -> Problems:
    assert rule.criteria is not None
    if not rule.criteria:
        return [(f"{at}.criteria", "name at least one criterion")]
    problems = _duplicates(rule.criteria, f"{at}.criteria", "criterion")
    known = {c.id: c for c in p.criteria}
    for index, criterion_id in enumerate(rule.criteria):
        criterion = known.get(criterion_id)
        where = f"{at}.criteria[{index}]"
        if criterion is None:
            problems.append((where, f"unknown criterion '{criterion_id}'{_among(known)}"))
        elif criterion.rule is None:
            problems.append(
                (
                    where,
                    f"{criterion_id} has no rule (the investigator confirms it): nothing to check",
                )
            )
    return problems


def _check_dq_requires(p: Protocol, rule: DqRule, at: str) -> Problems:
    assert rule.form is not None
    if rule.form not in _forms_by_code(p):
        return [(f"{at}.form", f"unknown form '{rule.form}'{_among(_forms_by_code(p))}")]
    return []


def _check_dq_when(p: Protocol, rule: DqRule, at: str) -> Problems:
    assert rule.when is not None
    problems: Problems = []
    record_form = _dq_record_form(rule)
    for path, condition in iter_conditions(rule.when, "when"):
        found = _check_condition(p, condition, f"{at}.{path}")
        problems += found
        if found:
            continue
        form_code = condition.field.partition(".")[0]
        if form_code != record_form and not single_instance(p, form_code):
            problems.append(
                (
                    f"{at}.{path}.field",
                    f"form {form_code} has several records per subject: a condition may read "
                    f"the rule's own record{f' ({record_form})' if record_form else ''} or a "
                    "form filled in once",
                )
            )
    return problems


def _check_sdv(p: Protocol) -> Problems:
    """Forms and fields of the SDV policy exist; blinded monitors never verify an arm's form
    (REC-1, RAND-6)."""
    if p.sdv is None:
        return []
    problems: Problems = []
    forms = _forms_by_code(p)
    arms = arm_forms(p)
    entries = p.sdv.forms
    problems += _duplicates((e.form for e in entries), "sdv.forms", "form", "form")
    for index, entry in enumerate(entries):
        at = f"sdv.forms[{index}]"
        form = forms.get(entry.form)
        if form is None:
            problems.append((f"{at}.form", f"unknown form '{entry.form}'{_among(forms)}"))
            continue
        if entry.form in arms:
            problems.append(
                (
                    f"{at}.form",
                    f"{entry.form} is an arm's procedure form: blinded monitors "
                    "cannot verify it (RAND-6)",
                )
            )
        if entry.fields is not None:
            if entry.level is SdvLevel.NONE:
                problems.append((f"{at}.fields", "fields are for levels full and sample"))
            if not entry.fields:
                problems.append((f"{at}.fields", "name at least one field, or leave fields out"))
            problems += _duplicates(entry.fields, f"{at}.fields", f"field of {entry.form}")
            codes = {f.code for f in form.fields}
            for fi, code in enumerate(entry.fields):
                if code not in codes:
                    problems.append(
                        (f"{at}.fields[{fi}]", f"form {entry.form} has no field '{code}'")
                    )
        if entry.rate is not None and entry.level is not SdvLevel.SAMPLE:
            problems.append((f"{at}.rate", "a rate is for level sample"))
    return problems


def _check_freeze(p: Protocol) -> Problems:
    """The freeze names real visits and forms, never an arm's form, and covers only visits
    that come before the unblinding they freeze at (REC-4, RAND-7)."""
    if p.freeze is None:
        return []
    problems: Problems = []
    f = p.freeze
    problems += _duplicates(f.unblinding, "freeze.unblinding", "unblinding kind")
    codes = [visit.code for visit in p.visits]
    if f.visits_through not in codes:
        problems.append(
            ("freeze.visits_through", f"unknown visit '{f.visits_through}'{_among(codes)}")
        )
    else:
        after = p.blinding.unblind_after_visit
        if after in codes and codes.index(f.visits_through) > codes.index(after):
            problems.append(
                (
                    "freeze.visits_through",
                    f"{f.visits_through} comes after {after}, the visit unblinding follows: its "
                    "data are recorded after unblinding and cannot be frozen by it",
                )
            )
    forms = _forms_by_code(p)
    arms = arm_forms(p)
    problems += _duplicates(f.forms, "freeze.forms", "form")
    for index, code in enumerate(f.forms):
        at = f"freeze.forms[{index}]"
        if code not in forms:
            problems.append((at, f"unknown form '{code}'{_among(forms)}"))
        elif code in arms:
            problems.append(
                (
                    at,
                    f"{code} is an arm's procedure form: a lock on it shown to blinded roles "
                    "would tell the arm (RAND-6)",
                )
            )
    return problems


def _check_queries(p: Protocol) -> Problems:
    """Response codes unique and consistent (REC-7)."""
    if p.queries is None:
        return []
    problems: Problems = []
    responses = p.queries.responses
    problems += _duplicates((r.code for r in responses), "queries.responses", "response", "code")
    for index, response in enumerate(responses):
        if response.marks_missing and response.change is ResponseChange.REQUIRED:
            problems.append(
                (
                    f"queries.responses[{index}].marks_missing",
                    f"'{response.code}' cannot both change the value and mark it missing",
                )
            )
    return problems


def _exit_form(p: Protocol, code: str, at: str) -> tuple[Form | None, Problems]:
    forms = _forms_by_code(p)
    form = forms.get(code)
    if form is None:
        return None, [(at, f"unknown form '{code}'{_among(forms)}")]
    if form.repeating:
        return None, [(at, f"form {code} repeats; a subject exits once")]
    if form.date_field is None:
        return None, [(at, f"form {code} has no date_field: the exit date is read from it")]
    return form, []


def _exit_field(form: Form, code: str | None, at: str, types: frozenset[FieldType]) -> Problems:
    if code is None:
        return []
    field = _field_of(form, code)
    if field is None:
        return [(at, f"form {form.code} has no field '{code}'")]
    if field.type not in types:
        wanted = " or ".join(sorted(t.value for t in types))
        return [(at, f"'{code}' is a {field.type} field, not {wanted}")]
    return []


def _check_exits(p: Protocol) -> Problems:
    """Death and withdrawal read their forms; withdrawal kinds match the kind field's choices
    and name contact forms that exist (LIFE-4, REC-9)."""
    if p.exits is None:
        return []
    problems: Problems = []
    reasons = frozenset({FieldType.CHOICE, FieldType.TEXT})
    death = p.exits.death
    if death is not None:
        form, found = _exit_form(p, death.form, "exits.death.form")
        problems += found
        if form is not None:
            problems += _exit_field(form, death.cause_field, "exits.death.cause_field", reasons)
    withdrawal = p.exits.withdrawal
    if withdrawal is None:
        return problems
    kinds = withdrawal.kinds
    problems += _duplicates((k.code for k in kinds), "exits.withdrawal.kinds", "kind", "code")
    form, found = _exit_form(p, withdrawal.form, "exits.withdrawal.form")
    problems += found
    if form is not None:
        problems += _exit_field(
            form, withdrawal.reason_field, "exits.withdrawal.reason_field", reasons
        )
        kind_problems = _exit_field(
            form,
            withdrawal.kind_field,
            "exits.withdrawal.kind_field",
            frozenset({FieldType.CHOICE}),
        )
        problems += kind_problems
        field = _field_of(form, withdrawal.kind_field) if withdrawal.kind_field else None
        if field is not None and not kind_problems:
            choices = {c.code for c in field.choices or []}
            codes = {k.code for k in kinds}
            if choices != codes:
                problems.append(
                    (
                        "exits.withdrawal.kind_field",
                        f"the choices of {form.code}.{field.code} ({', '.join(sorted(choices))}) "
                        f"must be the withdrawal kinds ({', '.join(sorted(codes))})",
                    )
                )
    forms = _forms_by_code(p)
    arms = arm_forms(p)
    screening = set(p.screening.forms) | set(p.screening.anatomy_forms)
    for ki, kind in enumerate(kinds):
        at = f"exits.withdrawal.kinds[{ki}]"
        if kind.contact_forms and not kind.contact_allowed:
            problems.append(
                (f"{at}.contact_forms", f"'{kind.code}' allows no contact, so no contact forms")
            )
        problems += _duplicates(kind.contact_forms, f"{at}.contact_forms", "form")
        for fi, code in enumerate(kind.contact_forms):
            where = f"{at}.contact_forms[{fi}]"
            if code not in forms:
                problems.append((where, f"unknown form '{code}'{_among(forms)}"))
            elif code in arms or code in screening:
                problems.append(
                    (where, f"{code} is a screening or procedure form, not a follow-up contact")
                )
    return problems
