"""Reports from live data: the CONSORT flow (REP-2), operational reports and the DSMB report
(REP-3), unblinding events (RAND-7).

Arms are read here only when :func:`trialdesk.services.blinding.may_see_arm_definitions` says
the caller is a by-arm reader; every other report counts without decrypting an allocation.
The screening log and open queries are :func:`trialdesk.services.dashboard.screening_log` and
:func:`trialdesk.services.data_queries.open_queries`.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import Counter, defaultdict

from trialdesk.domain.errors import NotFound
from trialdesk.domain.lifecycle import ScreenFailureReason, SubjectState
from trialdesk.domain.roles import Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.reports.consort import ArmFlow, ConsortFlow, render_consort
from trialdesk.reports.operational import (
    ComplianceRow,
    CrcKindWorkload,
    CrcWorkload,
    Deviation,
    DsmbArm,
    DsmbReport,
    UnblindingEvent,
    VisitCompliance,
    render_dsmb_html,
)
from trialdesk.services import endpoints
from trialdesk.services.access import Actor, require
from trialdesk.services.audit_trail import record_disclosure
from trialdesk.services.blinding import may_see_arm_definitions
from trialdesk.services.common import loaded_protocol, version_in_force
from trialdesk.services.context import ServiceContext
from trialdesk.services.forms import CONCEALED_PROCEDURE_FORM, concealed_procedure
from trialdesk.store.records import CrcCase, Subject, Visit
from trialdesk.store.uow import UnitOfWork

STUDY_READERS = (Role.MANAGER, Role.MONITOR, Role.ADMIN, Role.STATISTICIAN, Role.DSMB)
"""Study-wide roles that follow the trial as a whole; the CONSORT flow is theirs."""
COMPLIANCE_READERS = (
    Role.MANAGER,
    Role.MONITOR,
    Role.STATISTICIAN,
    Role.DSMB,
    Role.COORDINATOR,
)
"""Site coordinators see their own site's compliance and deviations (ACC-1)."""
CRC_READERS = (Role.CRC, Role.MANAGER, Role.MONITOR)
UNBLINDING_READERS = (Role.MANAGER, Role.MONITOR, Role.STATISTICIAN, Role.DSMB)

RELEASED_FIELD = "implant_released"
"""Procedure-form field that, when false, means the device was attempted but not implanted."""
PROCEDURE_DATE_FIELD = "procedure_date"
AE_FORM = endpoints.AE_FORM
AE_CATEGORY = endpoints.AE_CATEGORY
NOT_MAE = endpoints.NOT_MAE

NOT_RELEASED = "implant not released"
NOT_YET_DONE = "procedure not yet done"
EXITED_BEFORE = "left the study before the procedure"
WITHDREW = "withdrew consent"
DIED = "died"
IN_ERROR = "randomized in error"
LOST_UNSTATED = "no reason recorded"


def _live_subjects(uow: UnitOfWork, actor: Actor, study_id: int) -> list[Subject]:
    return uow.study_records.live_subjects(study_id, actor.site_ids(study_id))


def _by(cutoff: dt.date | None, on: dt.date | None) -> bool:
    """Whether a clinical date is known and on or before the cut-off (None: no cut-off)."""
    return on is not None and (cutoff is None or on <= cutoff)


def _site_codes(uow: UnitOfWork, study_id: int) -> dict[int, str]:
    return {site.id: site.code for site in uow.sites.of_study(study_id)}


# --------------------------------------------------------------------------- CONSORT (REP-2)


def _arm_flows(
    ctx: ServiceContext,
    uow: UnitOfWork,
    loaded: LoadedProtocol,
    subjects: list[Subject],
    cutoff: dt.date | None,
    sets: endpoints.AnalysisSets,
) -> list[ArmFlow]:
    """Per-arm boxes; decrypts allocations and concealed procedures (by-arm readers only).
    Analysed: the primary endpoints' analysis sets as the endpoint code defines them."""
    ids = [s.id for s in subjects]
    rands = uow.study_records.allocations_of(ids)
    procedures = {
        r.subject_id: r for r in uow.study_records.forms_of(ids, CONCEALED_PROCEDURE_FORM)
    }
    counts: dict[str, dict[str, Counter[str]]] = {
        arm.code: defaultdict(Counter) for arm in loaded.protocol.arms
    }
    for subject in subjects:
        rand = rands.get(subject.id)
        if rand is None or not _by(cutoff, subject.randomized_on or rand.randomized_on):
            continue
        code = ctx.cipher.decrypt(rand.arm_enc)
        box = counts.setdefault(code, defaultdict(Counter))
        box["n"]["allocated"] += 1
        exited = _by(cutoff, subject.exit_date)
        record = procedures.get(subject.id)
        values = concealed_procedure(ctx, record)[1] if record is not None else None
        done_on = values.get(PROCEDURE_DATE_FIELD) if values is not None else None
        if values is not None and (cutoff is None or str(done_on) <= cutoff.isoformat()):
            if values.get(RELEASED_FIELD) is False:
                box["not_received"][NOT_RELEASED] += 1
            else:
                box["n"]["received"] += 1
        elif exited:
            box["not_received"][EXITED_BEFORE] += 1
        else:
            box["not_received"][NOT_YET_DONE] += 1
        if exited and subject.state == SubjectState.LOST_TO_FOLLOW_UP.value:
            box["n"]["lost"] += 1
            box["lost"][subject.exit_reason or LOST_UNSTATED] += 1
        elif exited and subject.state == SubjectState.WITHDRAWN.value:
            box["discontinued"][WITHDREW] += 1
        elif exited and subject.state == SubjectState.DIED.value:
            box["discontinued"][DIED] += 1
        if rand.in_error:
            box["excluded"][IN_ERROR] += 1
    flows: list[ArmFlow] = []
    for arm in loaded.protocol.arms:
        box = counts[arm.code]
        allocated = box["n"]["allocated"]
        flows.append(
            ArmFlow(
                code=arm.code,
                label=arm.label,
                allocated=allocated,
                received=box["n"]["received"],
                not_received=sum(box["not_received"].values()),
                not_received_reasons=dict(box["not_received"]),
                lost_to_follow_up=box["n"]["lost"],
                discontinued=sum(box["discontinued"].values()),
                discontinued_reasons=dict(box["discontinued"]),
                analysed=len(sets.efficacy.get(arm.code, [])),
                excluded_from_analysis=dict(box["excluded"]),
                lost_reasons=dict(box["lost"]),
                analysed_safety=len(sets.safety) if arm.code == sets.safety_arm else None,
                safety_not_evaluable=(
                    len(sets.safety_not_evaluable) if arm.code == sets.safety_arm else 0
                ),
            )
        )
    return flows


def consort(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> ConsortFlow:
    """The CONSORT flow from live data (REP-2): pooled for everyone, per arm only for by-arm
    readers (the unblinded statistician, DSMB members holding no blinded role).

    Phases (CONSORT 2025): enrolment, allocation, follow-up, analysis. Assessed: every
    registered live subject (registered by ``as_of``). Excluded: screen failures by reason.
    Per arm (intention to treat): received = the arm's procedure recorded (for the implant,
    released); lost (with the recorded reason) and discontinued (withdrawn, died) by exit
    date; analysed = the primary efficacy analysis set of :func:`endpoints.analysis_sets`
    (every randomized subject, randomizations in error excluded), and for the intervention
    arm the primary safety set (12 months of follow-up, or an event or death within them).
    ``as_of`` is a clinical-date cut-off; None counts everything recorded.
    """
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, STUDY_READERS, action="CONSORT flow")
        loaded = loaded_protocol(ctx, uow, version_in_force(uow, study_id))
        subjects = [s for s in _live_subjects(uow, actor, study_id) if _by(as_of, s.registered_on)]
        excluded = {reason.value: 0 for reason in ScreenFailureReason}
        randomized = 0
        for subject in subjects:
            if subject.state == SubjectState.SCREEN_FAILED.value:
                reason = subject.screen_failure_reason or ScreenFailureReason.OTHER.value
                excluded[reason] = excluded.get(reason, 0) + 1
            elif _by(as_of, subject.randomized_on):
                randomized += 1
        arms = None
        if may_see_arm_definitions(actor, study_id):
            sets = endpoints.analysis_sets(ctx, uow, actor, study_id, as_of)
            arms = _arm_flows(ctx, uow, loaded, subjects, as_of, sets)
    if arms is not None:
        record_disclosure(ctx, actor, study_id, "endpoint_by_arm", what="CONSORT flow by arm")
    return ConsortFlow(
        as_of=as_of.isoformat() if as_of else None,
        assessed=len(subjects),
        excluded=excluded,
        randomized=randomized,
        in_screening=len(subjects) - randomized - sum(excluded.values()),
        arms=arms,
    )


def consort_figure(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    as_of: dt.date | None = None,
    fmt: str = "svg",
) -> bytes:
    """The CONSORT diagram as SVG or PNG; blinded callers get the pooled boxes only."""
    from trialdesk.domain.errors import ValidationFailed
    from trialdesk.reports.consort import FORMATS

    if fmt not in FORMATS:
        raise ValidationFailed(
            f"unknown figure format {fmt!r}; one of {', '.join(FORMATS)}", {"format": "unknown"}
        )
    return render_consort(consort(ctx, actor, study_id, as_of), fmt)


# --------------------------------------------------------------------------- REP-3


def _day(moment: dt.datetime) -> dt.date:
    """The UTC date of a stored moment (SQLite returns them without their zone)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).date()


def _visit_known(visit: Visit, as_of: dt.date | None) -> bool:
    """Whether a recorded visit was known on ``as_of``: a done visit by its date, a missed one
    by the day it was marked missed."""
    if as_of is None:
        return True
    if visit.status == "missed":
        return _day(visit.recorded_at) <= as_of
    return visit.visit_date is not None and visit.visit_date <= as_of


def visit_compliance(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> VisitCompliance:
    """Recorded visits per visit and site: on time, early, late, missed (REP-3, SCHED-2),
    as known on ``as_of`` (default: everything recorded)."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, COMPLIANCE_READERS, action="visit compliance")
        loaded = loaded_protocol(ctx, uow, version_in_force(uow, study_id))
        order = {v.code: i for i, v in enumerate(loaded.protocol.visits)}
        sites = _site_codes(uow, study_id)
        subjects = {s.id: s for s in _live_subjects(uow, actor, study_id)}
        counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for visit in uow.study_records.visits_of(list(subjects)):
            if not _visit_known(visit, as_of):
                continue
            site = sites[subjects[visit.subject_id].site_id]
            timing = "missed" if visit.status == "missed" else (visit.timing or "on_time")
            counts[(visit.visit_code, site)][timing] += 1
            counts[(visit.visit_code, "ALL")][timing] += 1

        def rows(all_sites: bool) -> list[ComplianceRow]:
            keys = [k for k in counts if (k[1] == "ALL") == all_sites]
            keys.sort(key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))
            return [
                ComplianceRow(v, s, **{t: counts[(v, s)][t] for t in counts[(v, s)]})
                for v, s in keys
            ]

        return VisitCompliance(rows=rows(False), totals=rows(True))


def deviations(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> list[Deviation]:
    """Protocol deviations found in the data (REP-3): visits outside their window or missed
    (SCHED-2) and randomizations flagged in error; oldest first; as known on ``as_of``."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, COMPLIANCE_READERS, action="protocol deviations")
        sites = _site_codes(uow, study_id)
        subjects = {s.id: s for s in _live_subjects(uow, actor, study_id)}
        found: list[tuple[str, Deviation]] = []
        for visit in uow.study_records.visits_of(list(subjects)):
            if not _visit_known(visit, as_of):
                continue
            subject = subjects[visit.subject_id]
            if visit.status == "missed":
                kind, on, detail = "visit_missed", visit.window_end, visit.missed_reason
            elif visit.timing in ("early", "late"):
                kind, on = f"visit_{visit.timing}", visit.visit_date or visit.window_end
                detail = (
                    f"window {visit.window_start.isoformat()} to {visit.window_end.isoformat()}"
                )
            else:
                continue
            found.append(
                (
                    on.isoformat(),
                    Deviation(
                        subject.number,
                        sites[subject.site_id],
                        kind,
                        visit.visit_code,
                        on.isoformat(),
                        detail,
                    ),
                )
            )
        for rand in uow.study_records.in_error(list(subjects)):
            if as_of is not None and rand.randomized_on > as_of:
                continue
            subject = subjects[rand.subject_id]
            day = rand.randomized_on.isoformat()
            found.append(
                (
                    day,
                    Deviation(
                        subject.number,
                        sites[subject.site_id],
                        "randomized_in_error",
                        None,
                        day,
                        rand.reason,
                    ),
                )
            )
        found.sort(key=lambda item: (item[0], item[1].subject, item[1].visit or ""))
        return [d for _on, d in found]


def _hours(start: dt.datetime, end: dt.datetime) -> float:
    # SQLite hands stored times back without their zone (they are UTC)
    start = start if start.tzinfo else start.replace(tzinfo=dt.UTC)
    end = end if end.tzinfo else end.replace(tzinfo=dt.UTC)
    return round((end - start).total_seconds() / 3600, 2)


def crc_workload(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> CrcWorkload:
    """CRC cases opened, pending and decided by kind, with turnaround from opening to the
    signed decision (REP-3, CRC-1), decisions by outcome and by reviewer. With ``as_of``:
    cases opened by then, and a case signed later counts as pending."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, CRC_READERS, action="CRC workload")
        cases = uow.study_records.live_crc_cases(study_id)
        if as_of is not None:
            cases = [c for c in cases if _day(c.opened_at) <= as_of]

        def decided_by(case: CrcCase) -> bool:
            if case.status != "decided" or case.signed_at is None:
                return False
            return as_of is None or _day(case.signed_at) <= as_of

        by_kind: dict[str, list[CrcCase]] = defaultdict(list)
        for case in cases:
            by_kind[case.kind].append(case)
        kinds: list[CrcKindWorkload] = []
        for kind in sorted(by_kind):
            group = by_kind[kind]
            turnaround = [
                _hours(c.opened_at, c.signed_at)
                for c in group
                if decided_by(c) and c.signed_at is not None
            ]
            kinds.append(
                CrcKindWorkload(
                    kind=kind,
                    opened=len(group),
                    pending=sum(not decided_by(c) for c in group),
                    info_requested=sum(c.status == "info_requested" for c in group),
                    decided=len(turnaround),
                    median_turnaround_hours=statistics.median(turnaround) if turnaround else None,
                    max_turnaround_hours=max(turnaround) if turnaround else None,
                )
            )
        decided = [c for c in cases if decided_by(c)]
        return CrcWorkload(
            by_kind=kinds,
            decisions=dict(Counter(c.decision or "" for c in decided)),
            by_reviewer=dict(Counter(c.signed_by or "" for c in decided)),
        )


def unblinding_events(ctx: ServiceContext, actor: Actor, study_id: int) -> list[UnblindingEvent]:
    """Every unblinding (RAND-7): emergency and scheduled per subject, trial-level request
    and confirmation; who, when and why, never the arm. Oldest first."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, UNBLINDING_READERS, action="unblinding events")
        sites = _site_codes(uow, study_id)
        subjects = {s.id: s for s in _live_subjects(uow, actor, study_id)}
        kinds = {"emergency_unblind": "emergency", "unblind": "scheduled"}
        events: list[UnblindingEvent] = []
        for entry in uow.study_records.audit_actions(study_id, list(kinds)):
            subject = subjects.get(entry.subject_id or -1)
            if subject is None:
                continue  # test subject, or a site the caller does not see
            events.append(
                UnblindingEvent(
                    kind=kinds[entry.action],
                    at=_utc(dt.datetime.fromisoformat(entry.at)),
                    by=entry.actor,
                    subject=subject.number,
                    site=sites[subject.site_id],
                    reason=entry.reason,
                )
            )
        for row in uow.study_records.trial_unblindings(study_id):
            events.append(
                UnblindingEvent(
                    kind="trial_requested",
                    at=_utc(row.requested_at),
                    by=row.requested_by,
                    reason=row.reason,
                )
            )
            if row.confirmed_at is not None and row.confirmed_by is not None:
                events.append(
                    UnblindingEvent(
                        kind="trial_confirmed",
                        at=_utc(row.confirmed_at),
                        by=row.confirmed_by,
                        reason=row.reason,
                    )
                )
        events.sort(key=lambda e: dt.datetime.fromisoformat(e.at))  # stable: ties keep order
        return events


def _utc(moment: dt.datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).isoformat()


# --------------------------------------------------------------------------- DSMB


def _dsmb_arms(
    ctx: ServiceContext,
    uow: UnitOfWork,
    loaded: LoadedProtocol,
    actor: Actor,
    study_id: int,
    as_of: dt.date | None,
) -> list[DsmbArm]:
    sites = _site_codes(uow, study_id)
    subjects = _live_subjects(uow, actor, study_id)
    sets = endpoints.analysis_sets(ctx, uow, actor, study_id, as_of)
    flows = {f.code: f for f in _arm_flows(ctx, uow, loaded, subjects, as_of, sets)}
    ids = [s.id for s in subjects]
    rands = uow.study_records.allocations_of(ids)
    today = ctx.now().date()
    acc: dict[str, dict[str, Counter[str]]] = {
        a.code: defaultdict(Counter) for a in loaded.protocol.arms
    }
    years: defaultdict[str, float] = defaultdict(float)
    arm_of: dict[int, str] = {}
    for subject in subjects:
        rand = rands.get(subject.id)
        start = subject.randomized_on or (rand.randomized_on if rand else None)
        if rand is None or start is None or not _by(as_of, start):
            continue
        arm = ctx.cipher.decrypt(rand.arm_enc)
        arm_of[subject.id] = arm
        box = acc.setdefault(arm, defaultdict(Counter))
        box["site"][sites[subject.site_id]] += 1
        box["n"]["in_error"] += int(rand.in_error)
        end = as_of or today
        if _by(as_of, subject.exit_date):
            assert subject.exit_date is not None
            end = min(end, subject.exit_date)
            box["n"][subject.state] += 1
        years[arm] += max((end - start).days, 0) / 365.25
    for record in uow.study_records.forms_of(list(arm_of), AE_FORM):
        values = json.loads(record.data)
        onset = values.get(endpoints.AE_ONSET)
        if as_of is not None and onset and dt.date.fromisoformat(str(onset)[:10]) > as_of:
            continue
        box = acc[arm_of[record.subject_id]]
        box["n"]["ae"] += 1
        box["ae_subjects"][str(record.subject_id)] = 1
        category = str(values.get(AE_CATEGORY) or NOT_MAE)
        if category != NOT_MAE:
            box["mae"][category] += 1
    return [
        DsmbArm(
            code=arm.code,
            label=arm.label,
            randomized=flows[arm.code].allocated,
            in_error=acc[arm.code]["n"]["in_error"],
            by_site=dict(acc[arm.code]["site"]),
            received=flows[arm.code].received,
            follow_up_years=round(years[arm.code], 2),
            adverse_events=acc[arm.code]["n"]["ae"],
            subjects_with_adverse_event=len(acc[arm.code]["ae_subjects"]),
            major_adverse_events=dict(acc[arm.code]["mae"]),
            deaths=acc[arm.code]["n"][SubjectState.DIED.value],
            withdrawn=acc[arm.code]["n"][SubjectState.WITHDRAWN.value],
            lost_to_follow_up=acc[arm.code]["n"][SubjectState.LOST_TO_FOLLOW_UP.value],
        )
        for arm in loaded.protocol.arms
    ]


def dsmb_report_html(
    ctx: ServiceContext, actor: Actor, study_id: int, as_of: dt.date | None = None
) -> str:
    """The DSMB by-arm report (REP-3) as one HTML document: enrolment, exposure, adverse
    events and deaths, endpoint summaries. Refused (``blinded``) unless the caller is a by-arm
    reader holding no blinded role (RAND-6, ACC-2)."""
    if not may_see_arm_definitions(actor, study_id):
        raise endpoints.ArmsBlinded(
            "'DSMB report' is reported by arm; only the unblinded statistician or a DSMB member "
            f"holding no blinded role may read it, and {actor.username} may not"
        )
    safety = endpoints.safety_summary(ctx, actor, study_id, as_of).to_dict()
    efficacy = endpoints.efficacy_summary(ctx, actor, study_id, as_of).to_dict()
    record_disclosure(
        ctx,
        actor,
        study_id,
        "dsmb_report",
        what="DSMB report",
        detail={"as_of": as_of.isoformat()} if as_of else None,
    )
    with ctx.uow(readonly=True) as uow:
        study = uow.studies.get(study_id)
        if study is None:
            raise NotFound(f"study {study_id} not found")
        loaded = loaded_protocol(ctx, uow, version_in_force(uow, study_id))
        arms = _dsmb_arms(ctx, uow, loaded, actor, study_id, as_of)
        report = DsmbReport(
            study=study.code,
            generated_at=ctx.now().isoformat(),
            as_of=as_of.isoformat() if as_of else None,
            arms=arms,
            safety=safety,
            efficacy=efficacy,
        )
    return render_dsmb_html(report)
