"""What a new protocol version changes, section by section (PROT-2).

A study manager signs an amendment only after reading what it changes; this module turns two
protocol models into that reading: criteria, visits and windows, forms and fields, caps,
sites, arms and randomization, each as one plain sentence. It is pure (two models in, a
:class:`ProtocolDiff` out); what the change means for subjects already enrolled needs the
database and is worked out by :mod:`trialdesk.services.amendments` from this diff.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from trialdesk.protocol.checks import describe_rule
from trialdesk.protocol.models import (
    ConsentVersion,
    Criterion,
    Form,
    FormField,
    Protocol,
    Visit,
)

SECTIONS = (
    "criteria",
    "visits",
    "forms",
    "caps",
    "sites",
    "arms",
    "randomization",
    "records",
    "other",
)
"""Sections in the order a reader is shown them."""

DESIGN_SECTIONS = frozenset({"arms", "randomization"})
"""Changes here alter how subjects are allocated: the statistician co-signs them."""


@dataclass(frozen=True)
class Change:
    """One difference: ``kind`` is added, removed or changed; ``key`` names the item."""

    section: str
    kind: str
    key: str
    text: str


@dataclass(frozen=True)
class ProtocolDiff:
    old_version: str
    new_version: str
    changes: tuple[Change, ...]
    design_changed: bool
    """Arms, ratio or randomization (method, strata, blocks, minimization) changed."""
    criteria_added: tuple[str, ...] = ()
    criteria_removed: tuple[str, ...] = ()
    criteria_changed: tuple[str, ...] = ()
    visits_added: tuple[str, ...] = ()
    visits_removed: tuple[str, ...] = ()
    windows_changed: tuple[str, ...] = ()
    """Visits whose target day or window changed (not-done visits follow the new one)."""
    sites_added: tuple[str, ...] = ()
    sites_removed: tuple[str, ...] = ()
    sites_moved: tuple[str, ...] = ()
    """Existing sites given another time zone or country."""
    arms_removed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes

    def section(self, name: str) -> list[Change]:
        return [c for c in self.changes if c.section == name]

    def lines(self) -> list[str]:
        """The diff as readable lines, grouped by section."""
        out: list[str] = []
        for name in SECTIONS:
            items = self.section(name)
            if items:
                out.append(f"{name}:")
                out.extend(f"  {_MARK[c.kind]} {c.text}" for c in items)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "design_changed": self.design_changed,
            "changes": [
                {"section": c.section, "kind": c.kind, "key": c.key, "text": c.text}
                for c in self.changes
            ],
        }


_MARK = {"added": "+", "removed": "-", "changed": "~"}

T = TypeVar("T", bound=BaseModel)


def _by_key(items: Iterable[T], key: Callable[[T], str]) -> dict[str, T]:
    return {key(item): item for item in items}


def _window(v: Visit) -> str:
    return (
        f"day {v.target_day} -{v.window_before}/+{v.window_after} "
        f"(days {v.target_day - v.window_before}-{v.target_day + v.window_after})"
    )


def _criterion_check(c: Criterion) -> str:
    return describe_rule(c.rule) if c.rule is not None else "investigator confirms"


def _field_text(f: FormField) -> str:
    parts = [f.type.value]
    if f.unit:
        parts.append(f.unit)
    if f.min is not None or f.max is not None:
        parts.append(f"{f.min if f.min is not None else ''}..{f.max if f.max is not None else ''}")
    if f.choices:
        parts.append("choices " + "/".join(c.code for c in f.choices))
    parts.append("required" if f.required else "optional")
    return ", ".join(parts)


def _criteria(old: Protocol, new: Protocol, out: list[Change]) -> tuple[list[str], ...]:
    before = _by_key(old.criteria, lambda c: c.id)
    after = _by_key(new.criteria, lambda c: c.id)
    added, removed, changed = [], [], []
    for cid, c in after.items():
        if cid not in before:
            added.append(cid)
            out.append(
                Change(
                    "criteria",
                    "added",
                    cid,
                    f"{cid} ({c.kind}, {c.gate.value}): {c.text} [{_criterion_check(c)}]",
                )
            )
            continue
        b = before[cid]
        if b == c:
            continue
        changed.append(cid)
        what = []
        if b.text != c.text:
            what.append(f"text now: {c.text}")
        if b.kind != c.kind:
            what.append(f"kind {b.kind} -> {c.kind}")
        if b.gate != c.gate:
            what.append(f"gate {b.gate.value} -> {c.gate.value}")
        if b.rule != c.rule:
            what.append(f"check {_criterion_check(b)} -> {_criterion_check(c)}")
        if not what:
            what.append("annotation changed")
        out.append(Change("criteria", "changed", cid, f"{cid}: " + "; ".join(what)))
    for cid, b in before.items():
        if cid not in after:
            removed.append(cid)
            out.append(Change("criteria", "removed", cid, f"{cid} ({b.kind}): {b.text}"))
    return added, removed, changed


def _visits(old: Protocol, new: Protocol, out: list[Change]) -> tuple[list[str], ...]:
    before = _by_key(old.visits, lambda v: v.code)
    after = _by_key(new.visits, lambda v: v.code)
    added, removed, windows = [], [], []
    for code, v in after.items():
        if code not in before:
            added.append(code)
            out.append(Change("visits", "added", code, f"{code} {v.name}: {_window(v)}"))
            continue
        b = before[code]
        if b == v:
            continue
        what = []
        if (b.target_day, b.window_before, b.window_after) != (
            v.target_day,
            v.window_before,
            v.window_after,
        ):
            windows.append(code)
            what.append(f"window {_window(b)} -> {_window(v)}")
        if b.forms != v.forms:
            what.append(f"forms {', '.join(b.forms) or '-'} -> {', '.join(v.forms) or '-'}")
        if b.kind != v.kind:
            what.append(f"kind {b.kind.value} -> {v.kind.value}")
        if b.name != v.name:
            what.append(f"name {b.name!r} -> {v.name!r}")
        if not what:
            what.append("annotation changed")
        out.append(Change("visits", "changed", code, f"{code}: " + "; ".join(what)))
    for code, b in before.items():
        if code not in after:
            removed.append(code)
            out.append(Change("visits", "removed", code, f"{code} {b.name}: {_window(b)}"))
    return added, removed, windows


def _arm_forms(*protocols: Protocol) -> set[str]:
    return {a.procedure_form for p in protocols for a in p.arms if a.procedure_form}


def _forms(old: Protocol, new: Protocol, out: list[Change], hide_arms: bool) -> None:
    before = _by_key(old.forms, lambda f: f.code)
    after = _by_key(new.forms, lambda f: f.code)
    hidden = _arm_forms(old, new) if hide_arms else set()
    changed_hidden = sorted(code for code in hidden if before.get(code) != after.get(code))
    if changed_hidden:
        # a procedure form tells the arm; blinded readers learn only that one changed
        out.append(Change("forms", "changed", "procedure form", "an arm's procedure form changed"))
    before = {k: v for k, v in before.items() if k not in hidden}
    after = {k: v for k, v in after.items() if k not in hidden}
    for code, form in after.items():
        if code not in before:
            fields = ", ".join(f.code for f in form.fields)
            out.append(Change("forms", "added", code, f"form {code} ({form.name}): {fields}"))
            continue
        _form_fields(before[code], form, out)
    for code, form in before.items():
        if code not in after:
            out.append(Change("forms", "removed", code, f"form {code} ({form.name})"))


def _form_fields(b: Form, a: Form, out: list[Change]) -> None:
    if b == a:
        return
    old_fields = _by_key(b.fields, lambda f: f.code)
    new_fields = _by_key(a.fields, lambda f: f.code)
    for code, f in new_fields.items():
        key = f"{a.code}.{code}"
        if code not in old_fields:
            out.append(Change("forms", "added", key, f"field {key}: {f.label} ({_field_text(f)})"))
        elif old_fields[code] != f:
            o = old_fields[code]
            text = f"field {key}: {_field_text(o)} -> {_field_text(f)}"
            if o.label != f.label:
                text += f"; label {o.label!r} -> {f.label!r}"
            out.append(Change("forms", "changed", key, text))
    for code, f in old_fields.items():
        if code not in new_fields:
            key = f"{b.code}.{code}"
            out.append(Change("forms", "removed", key, f"field {key}: {f.label}"))
    rest_b = b.model_dump(exclude={"fields"})
    rest_a = a.model_dump(exclude={"fields"})
    for name in sorted(set(rest_a) | set(rest_b)):
        if rest_b.get(name) != rest_a.get(name):
            out.append(
                Change(
                    "forms",
                    "changed",
                    f"{a.code}.{name}",
                    f"form {a.code} {name}: {rest_b.get(name)!r} -> {rest_a.get(name)!r}",
                )
            )


def _cap(value: int | None) -> str:
    return "none" if value is None else str(value)


def _caps(old: Protocol, new: Protocol, out: list[Change]) -> None:
    eo, en = old.enrolment, new.enrolment
    for label, b, a in (
        ("target subjects", eo.target_subjects, en.target_subjects),
        ("study cap", eo.total_cap, en.total_cap),
        ("cap per site", eo.cap_per_site, en.cap_per_site),
    ):
        if b != a:
            out.append(Change("caps", "changed", label, f"{label} {_cap(b)} -> {_cap(a)}"))
    countries_b = _by_key(old.countries, lambda c: c.code)
    for c in new.countries:
        b_country = countries_b.get(c.code)
        if b_country is None:
            out.append(
                Change("caps", "added", c.code, f"country {c.code} ({c.name}), cap {_cap(c.cap)}")
            )
        elif b_country.cap != c.cap:
            out.append(
                Change(
                    "caps",
                    "changed",
                    c.code,
                    f"country {c.code} cap {_cap(b_country.cap)} -> {_cap(c.cap)}",
                )
            )
    sites_b = _by_key(old.sites, lambda s: s.code)
    for s in new.sites:
        b_site = sites_b.get(s.code)
        if b_site is not None and b_site.cap != s.cap:
            out.append(
                Change(
                    "caps",
                    "changed",
                    s.code,
                    f"site {s.code} cap {_cap(b_site.cap)} -> {_cap(s.cap)}",
                )
            )


def _sites(old: Protocol, new: Protocol, out: list[Change]) -> tuple[list[str], ...]:
    before = _by_key(old.sites, lambda s: s.code)
    after = _by_key(new.sites, lambda s: s.code)
    added, removed, moved = [], [], []
    for code, s in after.items():
        b = before.get(code)
        if b is None:
            added.append(code)
            out.append(
                Change("sites", "added", code, f"{code} {s.name} ({s.country}, {s.timezone})")
            )
        elif (b.timezone, b.country) != (s.timezone, s.country):
            moved.append(code)
            out.append(
                Change(
                    "sites",
                    "changed",
                    code,
                    f"{code}: {b.country} {b.timezone} -> {s.country} {s.timezone}",
                )
            )
        elif (b.name, b.planned_activation) != (s.name, s.planned_activation):
            out.append(Change("sites", "changed", code, f"{code}: name or planned activation"))
    for code, b in before.items():
        if code not in after:
            removed.append(code)
            out.append(Change("sites", "removed", code, f"{code} {b.name}"))
    return added, removed, moved


def _arms(old: Protocol, new: Protocol, out: list[Change], hide_arms: bool) -> list[str]:
    before = _by_key(old.arms, lambda a: a.code)
    after = _by_key(new.arms, lambda a: a.code)
    removed = [code for code in before if code not in after]
    if hide_arms:
        _arms_blinded(old, new, out)
        return removed
    for code, a in after.items():
        b = before.get(code)
        if b is None:
            out.append(Change("arms", "added", code, f"arm {code} ({a.label}), ratio {a.ratio}"))
            continue
        if b.ratio != a.ratio:
            out.append(Change("arms", "changed", code, f"arm {code} ratio {b.ratio} -> {a.ratio}"))
        if b.label != a.label:
            out.append(
                Change("arms", "changed", code, f"arm {code} label {b.label!r} -> {a.label!r}")
            )
        if b.procedure_form != a.procedure_form:
            out.append(
                Change(
                    "arms",
                    "changed",
                    code,
                    f"arm {code} procedure form {b.procedure_form or '-'} -> "
                    f"{a.procedure_form or '-'}",
                )
            )
    for code, b in before.items():
        if code not in after:
            out.append(Change("arms", "removed", code, f"arm {code} ({b.label})"))
    ratio_b = ":".join(str(a.ratio) for a in old.arms)
    ratio_a = ":".join(str(a.ratio) for a in new.arms)
    if ratio_b != ratio_a and list(before) == list(after):
        out.append(Change("arms", "changed", "ratio", f"allocation ratio {ratio_b} -> {ratio_a}"))
    return removed


def _arms_blinded(old: Protocol, new: Protocol, out: list[Change]) -> None:
    """The arm changes without an arm's code, label or procedure form (RAND-6)."""
    before = _by_key(old.arms, lambda a: a.code)
    after = _by_key(new.arms, lambda a: a.code)
    added = sum(1 for code in after if code not in before)
    removed = sum(1 for code in before if code not in after)
    relabelled = sum(
        1
        for code, a in after.items()
        if code in before
        and (before[code].label, before[code].procedure_form) != (a.label, a.procedure_form)
    )
    if added:
        out.append(Change("arms", "added", "arm", f"{added} arm(s) added"))
    if removed:
        out.append(Change("arms", "removed", "arm", f"{removed} arm(s) removed"))
    if relabelled:
        out.append(Change("arms", "changed", "arm", f"{relabelled} arm(s) relabelled"))
    ratio_b = ":".join(str(a.ratio) for a in old.arms)
    ratio_a = ":".join(str(a.ratio) for a in new.arms)
    if ratio_b != ratio_a:
        out.append(Change("arms", "changed", "ratio", f"allocation ratio {ratio_b} -> {ratio_a}"))


def _randomization(old: Protocol, new: Protocol, out: list[Change]) -> None:
    rb, ra = old.randomization, new.randomization
    if rb.method != ra.method:
        out.append(
            Change(
                "randomization",
                "changed",
                "method",
                f"method {rb.method.value} -> {ra.method.value}",
            )
        )
    if rb.strata != ra.strata:
        out.append(
            Change(
                "randomization",
                "changed",
                "strata",
                f"strata {', '.join(rb.strata) or 'none'} -> {', '.join(ra.strata) or 'none'}",
            )
        )
    if rb.block_sizes != ra.block_sizes:
        out.append(
            Change(
                "randomization",
                "changed",
                "block_sizes",
                f"block sizes {rb.block_sizes} -> {ra.block_sizes}",
            )
        )
    if rb.minimization != ra.minimization:
        out.append(Change("randomization", "changed", "minimization", "minimization settings"))
    rest_b = rb.model_dump(exclude={"method", "strata", "block_sizes", "minimization"})
    rest_a = ra.model_dump(exclude={"method", "strata", "block_sizes", "minimization"})
    for name in sorted(rest_a):
        if rest_b.get(name) != rest_a.get(name):
            out.append(
                Change(
                    "other",
                    "changed",
                    f"randomization.{name}",
                    f"randomization.{name}: {rest_b.get(name)!r} -> {rest_a.get(name)!r}",
                )
            )


_OTHER = (
    "title",
    "description",
    "assumptions",
    "regions",
    "screening",
    "blinding",
    "therapies",
    "follow_up",
    "endpoints",
)


def _other(old: Protocol, new: Protocol, out: list[Change]) -> None:
    for name in _OTHER:
        b, a = getattr(old, name), getattr(new, name)
        if b != a:
            out.append(Change("other", "changed", name, f"{name} changed"))
    countries_a = {c.code for c in new.countries}
    for c in old.countries:
        if c.code not in countries_a:
            out.append(Change("other", "removed", c.code, f"country {c.code} ({c.name})"))


_RECORDS = ("data_quality", "sdv", "sign_off", "freeze", "queries", "exits")


def _consent_versions(p: Protocol) -> dict[tuple[str, str], ConsentVersion]:
    if p.consent is None:
        return {}
    return {(d.code, v.version): v for d in p.consent.documents for v in d.versions}


def _consent_text(document: str, version: ConsentVersion) -> str:
    when = f"from {version.effective_from}" if version.effective_from else "from the start"
    where = ""
    if version.approvals:
        places = ", ".join(
            f"{a.site or a.country} from {a.effective_from}" for a in version.approvals
        )
        where = f", approved at {places}"
    again = "; subjects still in the study must re-consent" if version.reconsent else ""
    return f"consent {document} {version.version} ({when}{where}{again})"


def _records(old: Protocol, new: Protocol, out: list[Change]) -> None:
    """Consent versions one by one (a new version may call for re-consent, REC-8); the other
    records sections (REC-1..REC-9) by name."""
    before, after = _consent_versions(old), _consent_versions(new)
    for key, version in after.items():
        name = f"{key[0]} {key[1]}"
        if key not in before:
            out.append(Change("records", "added", name, _consent_text(key[0], version)))
        elif before[key] != version:
            text = f"{_consent_text(key[0], before[key])} -> {_consent_text(key[0], version)}"
            out.append(Change("records", "changed", name, text))
    for key, version in before.items():
        if key not in after:
            name = f"{key[0]} {key[1]}"
            out.append(Change("records", "removed", name, _consent_text(key[0], version)))
    for name in _RECORDS:
        if getattr(old, name) != getattr(new, name):
            out.append(Change("records", "changed", name, f"{name} changed"))


def diff_protocols(old: Protocol, new: Protocol, *, hide_arms: bool = False) -> ProtocolDiff:
    """Every difference between ``old`` and ``new`` that a signer needs to read.

    With ``hide_arms`` no arm code, label or procedure form appears in the text (a blinded
    reader's view, RAND-6); the ratio and the number of arms changed still do.
    """
    out: list[Change] = []
    crit_added, crit_removed, crit_changed = _criteria(old, new, out)
    visits_added, visits_removed, windows = _visits(old, new, out)
    _forms(old, new, out, hide_arms)
    _caps(old, new, out)
    sites_added, sites_removed, sites_moved = _sites(old, new, out)
    arms_removed = _arms(old, new, out, hide_arms)
    _randomization(old, new, out)
    _records(old, new, out)
    _other(old, new, out)
    if old.name != new.name:
        out.append(Change("other", "changed", "name", f"protocol name {old.name} -> {new.name}"))
    order = {name: i for i, name in enumerate(SECTIONS)}
    changes = tuple(sorted(out, key=lambda c: order[c.section]))
    return ProtocolDiff(
        old_version=old.version,
        new_version=new.version,
        changes=changes,
        design_changed=any(c.section in DESIGN_SECTIONS for c in changes),
        criteria_added=tuple(crit_added),
        criteria_removed=tuple(crit_removed),
        criteria_changed=tuple(crit_changed),
        visits_added=tuple(visits_added),
        visits_removed=tuple(visits_removed),
        windows_changed=tuple(windows),
        sites_added=tuple(sites_added),
        sites_removed=tuple(sites_removed),
        sites_moved=tuple(sites_moved),
        arms_removed=tuple(arms_removed),
    )
