"""Endpoint numbers from the live follow-up data (END-1, END-2, END-3).

The statistics are the pure functions of :mod:`trialdesk.domain.endpoints`; this module decides
which subjects and which recorded facts feed them, and who may read the result. Safety and
efficacy are by arm, so only a caller who may see every subject's arm (the unblinded
statistician or a DSMB member holding no blinded role, as
:func:`trialdesk.services.blinding.may_see_arm` decides) gets them; anyone else is refused with
:class:`ArmsBlinded` (code ``blinded``). The interim status reveals no arm, so the study
manager may read it too. Every definition below is written out in docs/endpoints.md
("From recorded data to the endpoints").

Common rules:

- ``as_of`` is a clinical-date cut-off: only subjects randomized, and only visits, adverse
  events, therapies and exits dated on or before it count (data entered late but dated
  earlier does count). ``None`` means each site's own today (TIME-1).
- Randomizations flagged "in error" are left out and counted in ``excluded_in_error``; test
  subjects (randomized from a test list) are never part of an analysis.
- The protocol's first arm is the intervention, its second the control.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import statistics
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from trialdesk.domain.endpoints import (
    SubjectOutcome,
    interim_due,
    interim_threshold,
    safety_bound,
    win_ratio,
)
from trialdesk.domain.errors import NotFound, PermissionDenied
from trialdesk.domain.lifecycle import SubjectState
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require
from trialdesk.services.blinding import may_see_arm
from trialdesk.services.common import loaded_protocol, site_today, version_in_force
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import CONCEALED_PROCEDURE_FORM, concealed_procedure, typed_values
from trialdesk.store.uow import UnitOfWork

BY_ARM_ROLES = (Role.STATISTICIAN, Role.DSMB)
INTERIM_ROLES = (Role.MANAGER, Role.STATISTICIAN, Role.DSMB)

# Where the endpoint facts live in the flagship forms. The protocol file names the visits,
# the MAE categories, the goal and the KCCQ threshold; these field names are the flagship's.
AE_FORM = "adverse_event"
AE_ONSET = "onset_date"
AE_CATEGORY = "mae_category"
NOT_MAE = "none"
BASELINE_KCCQ_FORM = "kccq"
BASELINE_KCCQ_FIELD = "overall_score"
VISIT_KCCQ_FIELD = "kccq_overall_score"
VISIT_HF_FIELD = "hf_hospitalizations"
# Amendment 1 (flagship 2.0): a hospitalization is an adverse event with its own dates
AE_HOSPITALIZED = "hospitalized"
AE_HOSPITALIZATION_REASON = "hospitalization_reason"
AE_ADMISSION = "admission_date"
AE_HOSPITAL_DISCHARGE = "hospital_discharge_date"
HF_REASON = "heart_failure"
TRANSPLANT_OR_LVAD = frozenset({"lvad", "heart_transplant"})
MITRAL_INTERVENTION = frozenset({"mitral_surgery", "transcatheter_mitral_repair"})

DEFAULT_SAFETY_DAYS = 365
DEFAULT_EFFICACY_DAYS = 730
DEFAULT_GOAL = 0.90
DEFAULT_KCCQ_POINTS = 5.0


class ArmsBlinded(PermissionDenied):
    """The caller may not see allocations, and the result is by arm (RAND-6)."""

    code = "blinded"


# --------------------------------------------------------------------------- results


def _json(value: Any) -> Any:
    """JSON-ready: dataclasses to dicts, enums to their value, inf/nan to strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return _json(value.value)
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


@dataclass(frozen=True)
class SafetySummary:
    """END-1 for the intervention arm; ``lower_bound`` is None while nobody is evaluable."""

    as_of: str | None
    arm: str
    horizon_days: int
    subjects: int
    events: int
    event_free_rate: float | None
    lower_bound: float | None
    confidence: float
    goal: float
    meets_goal: bool
    method: str
    major_adverse_events: list[str]
    analysed: list[str]
    with_event: list[str]
    not_yet_evaluable: int
    excluded_in_error: int
    note: str | None = None
    changed_after_unblinding: tuple[dict[str, Any], ...] = ()
    """Values of the frozen blinded phase changed after their subject's unblinding (REC-4)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json(self)
        return out


@dataclass(frozen=True)
class EfficacySummary:
    """END-2: ``win_ratio`` is the domain result as a JSON-ready dict (None with ``note``)."""

    as_of: str | None
    horizon_days: int
    intervention_arm: str
    control_arm: str
    n_intervention: int
    n_control: int
    excluded_in_error: int
    kccq_threshold: float
    win_ratio: dict[str, Any] | None
    outcomes: tuple[SubjectOutcome, ...] = field(default_factory=tuple)
    note: str | None = None
    changed_after_unblinding: tuple[dict[str, Any], ...] = ()
    """Values of the frozen blinded phase changed after their subject's unblinding (REC-4)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json(self)
        return out


@dataclass(frozen=True)
class InterimStatus:
    """END-3: counts only, no arm; ``first_due_on`` is the first date the look was due."""

    as_of: str | None
    randomized: int
    past_12_months: int
    threshold: int
    due: bool
    first_due_on: str | None
    excluded_in_error: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json(self)
        return out


# --------------------------------------------------------------------------- facts


@dataclass
class _Facts:
    """What one randomized subject contributes, already cut at its ``cutoff`` date."""

    number: str
    site_id: int
    randomized_on: dt.date
    cutoff: dt.date
    in_error: bool
    arm_enc: bytes
    state: str
    exit_date: dt.date | None
    discharged_on: dt.date | None
    visits_done: dict[str, dt.date] = field(default_factory=dict)
    therapies: list[tuple[dt.date, str]] = field(default_factory=list)
    adverse_events: list[tuple[dt.date, str]] = field(default_factory=list)
    hf_dates: list[dt.date] = field(default_factory=list)
    hospital_dates: list[dt.date] = field(default_factory=list)
    """Admission and discharge dates of hospitalizations (flagship 2.0): contacts too."""
    visit_kccq: dict[str, float] = field(default_factory=dict)
    baseline_kccq: float | None = None

    def day(self, on: dt.date) -> int:
        return (on - self.randomized_on).days

    @property
    def death_date(self) -> dt.date | None:
        if self.state == SubjectState.DIED.value and self.exit_date is not None:
            return self.exit_date if self.exit_date <= self.cutoff else None
        return None

    def exited_before(self, on: dt.date) -> bool:
        """Died, withdrew or was lost before ``on`` (as known at the cut-off)."""
        return (
            self.state
            in (SubjectState.DIED, SubjectState.WITHDRAWN, SubjectState.LOST_TO_FOLLOW_UP)
            and self.exit_date is not None
            and self.exit_date <= self.cutoff
            and self.exit_date < on
        )

    def last_contact(self) -> dt.date:
        """Latest date the subject is known to have been alive and followed."""
        dates = [self.randomized_on, *self.visits_done.values()]
        if self.discharged_on is not None and self.discharged_on <= self.cutoff:
            dates.append(self.discharged_on)
        dates += [d for d, _ in self.therapies] + [d for d, _ in self.adverse_events]
        dates += [d for d in self.hospital_dates if d <= self.cutoff]
        if (
            self.state == SubjectState.WITHDRAWN.value
            and self.exit_date is not None
            and self.exit_date <= self.cutoff
        ):
            dates.append(self.exit_date)
        return max(dates)


def _load_facts(
    ctx: ServiceContext, uow: UnitOfWork, actor: Actor, study_id: int, as_of: dt.date | None
) -> list[_Facts]:
    """Every randomized, non-test subject in the actor's sites, randomized by its cut-off."""
    now = ctx.now()
    allowed = actor.site_ids(study_id)
    facts: dict[int, _Facts] = {}
    for subject, rand, site in uow.study_records.randomized(study_id, allowed):
        cutoff = as_of or site_today(site, now)
        randomized_on = subject.randomized_on or rand.randomized_on
        if randomized_on > cutoff:
            continue
        facts[subject.id] = _Facts(
            number=subject.number,
            site_id=subject.site_id,
            randomized_on=randomized_on,
            cutoff=cutoff,
            in_error=rand.in_error,
            arm_enc=rand.arm_enc,
            state=subject.state,
            exit_date=subject.exit_date,
            discharged_on=subject.discharged_on,
        )
    if not facts:
        return []
    for visit in uow.study_records.visits(study_id):
        f = facts.get(visit.subject_id)
        if f and visit.status == "done" and visit.visit_date and visit.visit_date <= f.cutoff:
            f.visits_done[visit.visit_code] = visit.visit_date
    for therapy in uow.study_records.therapies(study_id):
        f = facts.get(therapy.subject_id)
        if f and therapy.therapy_date <= f.cutoff:
            f.therapies.append((therapy.therapy_date, therapy.therapy_type))
    _read_forms(ctx, uow, study_id, facts)
    return list(facts.values())


def _read_forms(
    ctx: ServiceContext, uow: UnitOfWork, study_id: int, facts: dict[int, _Facts]
) -> None:
    """Adverse events, the baseline KCCQ and the follow-up visit values, each typed under the
    protocol version it was saved with (PROT-2); corrections are already in the stored row."""
    versions: dict[int, LoadedProtocol] = {}
    for row in uow.study_records.forms(study_id):
        f = facts.get(row.subject_id)
        if f is None:
            continue
        visit_form = row.visit_code != ""
        if not visit_form and row.form_code not in (AE_FORM, BASELINE_KCCQ_FORM):
            continue
        if visit_form and row.visit_code not in f.visits_done:
            continue  # a visit after the cut-off
        loaded = versions.get(row.protocol_version_id)
        if loaded is None:
            version = uow.protocols.get(row.protocol_version_id)
            loaded = versions[row.protocol_version_id] = loaded_protocol(ctx, uow, version)
        values = typed_values(loaded, row.form_code, json.loads(row.data))
        if visit_form:
            hf = values.get(VISIT_HF_FIELD)
            if isinstance(hf, int) and hf > 0:
                f.hf_dates.append(f.visits_done[row.visit_code])
            kccq = values.get(VISIT_KCCQ_FIELD)
            if isinstance(kccq, int | float):
                f.visit_kccq[row.visit_code] = float(kccq)
        elif row.form_code == AE_FORM:
            onset, category = values.get(AE_ONSET), values.get(AE_CATEGORY)
            if isinstance(onset, dt.date) and onset <= f.cutoff:
                f.adverse_events.append((onset, str(category or NOT_MAE)))
            admitted = hf_admission(values)
            if admitted is not None and admitted <= f.cutoff:
                f.hf_dates.append(admitted)
            for key in (AE_ADMISSION, AE_HOSPITAL_DISCHARGE):
                stay = values.get(key)
                if isinstance(stay, dt.date):
                    f.hospital_dates.append(stay)
        else:
            score = values.get(BASELINE_KCCQ_FIELD)
            if isinstance(score, int | float):
                f.baseline_kccq = float(score)


def hf_admission(values: dict[str, object]) -> dt.date | None:
    """The admission date of a heart-failure hospitalization recorded on an adverse-event form
    (flagship 2.0); the onset date when the admission date was left empty; None otherwise."""
    if values.get(AE_HOSPITALIZED) is not True:
        return None
    if values.get(AE_HOSPITALIZATION_REASON) != HF_REASON:
        return None
    admitted = values.get(AE_ADMISSION) or values.get(AE_ONSET)
    return admitted if isinstance(admitted, dt.date) else None


# --------------------------------------------------------------------------- access


def _require_by_arm_reader(uow: UnitOfWork, actor: Actor, study_id: int, action: str) -> None:
    """Refuse with ``blinded`` unless the actor may see the arm of any subject at any of the
    study's sites it can see, as blinding.may_see_arm decides (RAND-6, ACC-2)."""
    refusal = ArmsBlinded(
        f"'{action}' is reported by arm; only the unblinded statistician or a DSMB member "
        f"holding no blinded role may read it, and {actor.username} may not"
    )
    if actor.operator or not actor.has(study_id, BY_ARM_ROLES):
        raise refusal
    study = uow.studies.get(study_id)
    unblinded = study is not None and study.trial_unblinded_at is not None
    for site_id in (site.id for site in uow.sites.of_study(study_id)):
        if actor.sees_site(study_id, site_id) and not may_see_arm(
            actor, study_id, site_id, subject_unblinded=False, trial_unblinded=unblinded
        ):
            raise refusal


def _disclosed(
    ctx: ServiceContext, actor: Actor, study_id: int, what: str, as_of: dt.date | None
) -> None:
    """By-arm results are a disclosure: audited (who, what, when; no arm, no figure)."""
    from trialdesk.services.audit_trail import record_disclosure

    detail = {"as_of": as_of.isoformat()} if as_of else None
    record_disclosure(ctx, actor, study_id, "endpoint_by_arm", what=what, detail=detail)


def _protocol(ctx: ServiceContext, uow: UnitOfWork, study_id: int) -> LoadedProtocol:
    if uow.studies.get(study_id) is None:
        raise NotFound(f"study {study_id} not found")
    return loaded_protocol(ctx, uow, version_in_force(uow, study_id))


def _visit_day(loaded: LoadedProtocol, code: str | None, default: int) -> int:
    if code is None:
        return default
    return loaded.protocol.visit(code).target_day


def _later_visits(loaded: LoadedProtocol, code: str | None, day: int) -> set[str]:
    """The landmark visit and every visit planned after it."""
    found = {v.code for v in loaded.protocol.visits if v.target_day >= day}
    return found | ({code} if code else set())


# --------------------------------------------------------------------------- END-1


def safety_summary(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> SafetySummary:
    """END-1: freedom from major adverse events at 12 months in the intervention arm.

    Analysed: intervention subjects (ITT, not in error) with 12 months of follow-up, i.e. the
    safety visit (M12) or a later visit done, or a death or a major adverse event within the
    12 months. Event: an adverse event whose ``mae_category`` is one of the protocol's
    ``major_adverse_events`` (any category but ``none`` when the list is empty), onset within
    365 days (the safety visit's target day) of randomization. One per subject.
    """
    with ctx.uow(readonly=True) as uow:
        _require_by_arm_reader(uow, actor, study_id, "safety endpoint")
        loaded = _protocol(ctx, uow, study_id)
        facts = _load_facts(ctx, uow, actor, study_id, as_of)
        changed = changed_after_unblinding(uow, study_id)
    _disclosed(ctx, actor, study_id, "safety endpoint", as_of)
    ep = loaded.protocol.endpoints
    arm = loaded.protocol.arms[0].code
    horizon = _visit_day(loaded, ep.safety_visit, DEFAULT_SAFETY_DAYS)
    maes = set(ep.major_adverse_events)
    goal = ep.safety_performance_goal if ep.safety_performance_goal is not None else DEFAULT_GOAL

    analysed, with_event, not_evaluable = _safety_split(ctx, loaded, facts)
    waiting = len(not_evaluable)
    excluded = sum(1 for f in facts if f.in_error)
    common: dict[str, Any] = {
        "as_of": as_of.isoformat() if as_of else None,
        "arm": arm,
        "horizon_days": horizon,
        "major_adverse_events": sorted(maes) if maes else [f"any but {NOT_MAE}"],
        "analysed": analysed,
        "with_event": with_event,
        "not_yet_evaluable": waiting,
        "excluded_in_error": excluded,
    }
    if not analysed:
        return SafetySummary(
            subjects=0,
            events=0,
            event_free_rate=None,
            lower_bound=None,
            confidence=0.95,
            goal=float(goal),
            meets_goal=False,
            method="Clopper-Pearson exact one-sided lower bound",
            note="no intervention subject has 12 months of follow-up yet",
            changed_after_unblinding=changed,
            **common,
        )
    result = safety_bound(len(with_event), len(analysed), goal=float(goal))
    return SafetySummary(
        subjects=result.subjects,
        events=result.events,
        event_free_rate=result.event_free_rate,
        lower_bound=result.lower_bound,
        confidence=result.confidence,
        goal=result.goal,
        meets_goal=result.meets_goal,
        method=result.method,
        changed_after_unblinding=changed,
        **common,
    )


# --------------------------------------------------------------------------- END-2


def _outcome(f: _Facts, arm: str, horizon: int, landmark: str | None) -> SubjectOutcome:
    """One subject's END-2 record; see docs/endpoints.md for each rule."""

    def first(days: list[int], end: int) -> int | None:
        inside = [d for d in days if d <= end]
        return min(inside) if inside else None

    death = f.death_date
    if death is not None:
        end = min(horizon, f.day(death))
        death_day = f.day(death) if f.day(death) <= horizon else None
    else:
        end = min(horizon, f.day(f.last_contact()))
        death_day = None
    change = None
    if landmark is not None and landmark in f.visit_kccq and f.baseline_kccq is not None:
        change = round(f.visit_kccq[landmark] - f.baseline_kccq, 6)
    return SubjectOutcome(
        subject_id=f.number,
        arm=arm,
        follow_up_days=end,
        death_day=death_day,
        transplant_or_lvad_day=first(
            [f.day(on) for on, kind in f.therapies if kind in TRANSPLANT_OR_LVAD], end
        ),
        mitral_intervention_day=first(
            [f.day(on) for on, kind in f.therapies if kind in MITRAL_INTERVENTION], end
        ),
        hf_hospitalization_day=first([f.day(on) for on in f.hf_dates], end),
        kccq_change=change,
    )


def efficacy_summary(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> EfficacySummary:
    """END-2: the win ratio over every randomized subject in its arm (intention to treat).

    Follow-up ends at death, else at the last contact (a done visit, an adverse event onset, a
    therapy, the discharge, a withdrawal), capped at 730 days (the efficacy visit's target
    day). The first heart-failure hospitalization is the earliest admission date of an adverse
    event recorded as a heart-failure hospitalization (flagship 2.0 forms), or the first visit
    whose 1.0 form counts ``hf_hospitalizations`` > 0 (those forms have counts, not dates: the
    visit that reports it dates it). KCCQ change is the M24 score
    minus the screening score, None if either is missing.
    """
    with ctx.uow(readonly=True) as uow:
        _require_by_arm_reader(uow, actor, study_id, "efficacy endpoint")
        loaded = _protocol(ctx, uow, study_id)
        facts = _load_facts(ctx, uow, actor, study_id, as_of)
        changed = changed_after_unblinding(uow, study_id)
    _disclosed(ctx, actor, study_id, "efficacy endpoint", as_of)
    ep = loaded.protocol.endpoints
    arms = loaded.protocol.arms
    treated, control = arms[0].code, arms[1].code
    horizon = _visit_day(loaded, ep.efficacy_visit, DEFAULT_EFFICACY_DAYS)
    threshold = float(ep.kccq_improvement_points or DEFAULT_KCCQ_POINTS)
    outcomes = tuple(
        _outcome(f, ctx.cipher.decrypt(f.arm_enc), horizon, ep.efficacy_visit)
        for f in facts
        if not f.in_error
    )
    analysed = tuple(o for o in outcomes if o.arm in (treated, control))
    n1 = sum(1 for o in analysed if o.arm == treated)
    n0 = len(analysed) - n1
    result: dict[str, Any] | None = None
    note = None
    if n1 and n0:
        computed = win_ratio(
            analysed, intervention_arm=treated, control_arm=control, kccq_threshold=threshold
        )
        result = {**_json(computed), "pairs": computed.pairs}
    else:
        note = "the win ratio needs at least one randomized subject in each arm"
    return EfficacySummary(
        as_of=as_of.isoformat() if as_of else None,
        horizon_days=horizon,
        intervention_arm=treated,
        control_arm=control,
        n_intervention=n1,
        n_control=n0,
        excluded_in_error=sum(1 for f in facts if f.in_error),
        kccq_threshold=threshold,
        win_ratio=result,
        outcomes=analysed,
        note=note,
        changed_after_unblinding=changed,
    )


# --------------------------------------------------------------------------- END-3


def changed_after_unblinding(uow: UnitOfWork, study_id: int) -> tuple[dict[str, Any], ...]:
    """The flagged values (REC-4): subject, form, visit, field, old and new value, when, who
    and why; the endpoint outputs and the DSMB report list them beside the results."""
    rows = uow.holds.unblinding_changes(study_id)
    numbers = uow.holds.subject_numbers([r.subject_id for r in rows])
    return tuple(
        {
            "subject": numbers.get(r.subject_id, ""),
            "form": r.form_code,
            "visit": r.visit_code,
            "field": r.field,
            "flag": r.flag,
            "old": json.loads(r.old),
            "new": json.loads(r.new),
            "changed_at": r.changed_at.isoformat(),
            "changed_by": r.changed_by,
            "reason": r.reason,
        }
        for r in rows
    )


def _past_12_months_on(f: _Facts, landmark: str | None, days: int) -> dt.date | None:
    """When the subject passed 12 months: the M12 visit done, or day 365 reached while still
    on study (not died, withdrawn or lost before it); None if not by its cut-off."""
    dates: list[dt.date] = []
    if landmark is not None and landmark in f.visits_done:
        dates.append(f.visits_done[landmark])
    anniversary = f.randomized_on + dt.timedelta(days=days)
    if anniversary <= f.cutoff and not f.exited_before(anniversary):
        dates.append(anniversary)
    return min(dates) if dates else None


def interim_status(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> InterimStatus:
    """END-3: is the interim look due (half the randomized subjects past 12 months), and since
    when. Reveals no arm, so the study manager may read it too."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, INTERIM_ROLES, action="interim status")
        loaded = _protocol(ctx, uow, study_id)
        facts = _load_facts(ctx, uow, actor, study_id, as_of)
    ep = loaded.protocol.endpoints
    days = _visit_day(loaded, ep.safety_visit, DEFAULT_SAFETY_DAYS)
    counted = [f for f in facts if not f.in_error]
    randomized = [f.randomized_on for f in counted]
    passed = [
        d for d in (_past_12_months_on(f, ep.safety_visit, days) for f in counted) if d is not None
    ]
    first_due = None
    for day in sorted(set(randomized) | set(passed)):
        n = sum(1 for r in randomized if r <= day)
        if interim_due(n, sum(1 for p in passed if p <= day)):
            first_due = day
            break
    return InterimStatus(
        as_of=as_of.isoformat() if as_of else None,
        randomized=len(randomized),
        past_12_months=len(passed),
        threshold=interim_threshold(len(randomized)),
        due=interim_due(len(randomized), len(passed)),
        first_due_on=first_due.isoformat() if first_due else None,
        excluded_in_error=len(facts) - len(counted),
    )


@dataclass(frozen=True)
class TimeInLab:
    """Index-procedure duration by arm (RAND-8): implant and sham recorded alike, so the
    unblinded statistician can check that time in the lab does not tell the arms apart."""

    arms: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"arms": self.arms}


def _minutes(start: str, end: str) -> int:
    begin = dt.datetime.strptime(start[:5], "%H:%M")
    finish = dt.datetime.strptime(end[:5], "%H:%M")
    return int((finish - begin).total_seconds() // 60) % (24 * 60)


def time_in_lab(ctx: ServiceContext, actor: Actor, study_id: int) -> TimeInLab:
    """Minutes from start to end of the index procedure per arm: n, mean, median, min, max
    (unblinded roles only; the records are stored concealed)."""
    with ctx.uow(readonly=True) as uow:
        _require_by_arm_reader(uow, actor, study_id, "time in the lab by arm")
        rows = uow.study_records.procedures_with_arm(study_id, CONCEALED_PROCEDURE_FORM)
        durations: dict[str, list[int]] = {}
        for record, arm_enc in rows:
            _form, values = concealed_procedure(ctx, record)
            start, end = values.get("start_time"), values.get("end_time")
            if isinstance(start, str) and isinstance(end, str):
                code = ctx.cipher.decrypt(arm_enc)
                durations.setdefault(code, []).append(_minutes(start, end))
        loaded = _protocol(ctx, uow, study_id)
    _disclosed(ctx, actor, study_id, "time in the lab", None)
    arms: dict[str, dict[str, Any]] = {}
    for arm in loaded.protocol.arms:
        minutes = sorted(durations.get(arm.code, []))
        arms[arm.code] = {
            "label": arm.label,
            "n": len(minutes),
            "mean": round(statistics.fmean(minutes), 1) if minutes else None,
            "median": statistics.median(minutes) if minutes else None,
            "min": minutes[0] if minutes else None,
            "max": minutes[-1] if minutes else None,
        }
    return TimeInLab(arms=arms)


# --- issue 16, lane x16b: who the primary outcomes analyse (the CONSORT analysis boxes) -------


def _safety_split(
    ctx: ServiceContext, loaded: LoadedProtocol, facts: list[_Facts]
) -> tuple[list[str], list[str], list[str]]:
    """END-1's analysed subjects, those of them with an event, and the safety arm's subjects
    not yet evaluable (no 12 months of follow-up, no event, no death): the rules of
    :func:`safety_summary`."""
    ep = loaded.protocol.endpoints
    arm = loaded.protocol.arms[0].code
    horizon = _visit_day(loaded, ep.safety_visit, DEFAULT_SAFETY_DAYS)
    landmark = _later_visits(loaded, ep.safety_visit, horizon)
    maes = set(ep.major_adverse_events)

    def is_mae(category: str) -> bool:
        return category in maes if maes else category != NOT_MAE

    analysed: list[str] = []
    with_event: list[str] = []
    waiting: list[str] = []
    for f in facts:
        if f.in_error or ctx.cipher.decrypt(f.arm_enc) != arm:
            continue
        event = any(is_mae(cat) and 0 <= f.day(on) <= horizon for on, cat in f.adverse_events)
        death = f.death_date
        if (
            event
            or (death is not None and f.day(death) <= horizon)
            or landmark & set(f.visits_done)
        ):
            analysed.append(f.number)
            if event:
                with_event.append(f.number)
        else:
            waiting.append(f.number)
    return analysed, with_event, waiting


@dataclass(frozen=True)
class AnalysisSets:
    """Who each primary endpoint analyses, per arm, by the rules of :func:`safety_summary`
    (END-1, the intervention arm) and :func:`efficacy_summary` (END-2, every arm, intention
    to treat); randomizations in error are in neither."""

    efficacy: dict[str, list[str]]
    safety_arm: str
    safety: list[str]
    safety_not_evaluable: list[str]
    in_error: list[str]


def analysis_sets(
    ctx: ServiceContext, uow: UnitOfWork, actor: Actor, study_id: int, as_of: dt.date | None
) -> AnalysisSets:
    """The analysis sets for a by-arm reader the caller has already checked (the CONSORT
    flow records its own disclosure)."""
    loaded = _protocol(ctx, uow, study_id)
    facts = _load_facts(ctx, uow, actor, study_id, as_of)
    efficacy: dict[str, list[str]] = {a.code: [] for a in loaded.protocol.arms}
    for f in facts:
        if not f.in_error:
            efficacy.setdefault(ctx.cipher.decrypt(f.arm_enc), []).append(f.number)
    safety, _events, waiting = _safety_split(ctx, loaded, facts)
    return AnalysisSets(
        efficacy=efficacy,
        safety_arm=loaded.protocol.arms[0].code,
        safety=safety,
        safety_not_evaluable=waiting,
        in_error=[f.number for f in facts if f.in_error],
    )
