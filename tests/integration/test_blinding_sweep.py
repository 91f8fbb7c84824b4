"""Blinding sweep (RAND-6, ACC-1, ACC-2): a trial with subjects in many states, read by every
blinded role through every read service, the audit trail and the raw database, shows no arm.

New read services are not skipped silently: ``test_rand6_sweep_covers_every_service`` fails
when a service function (``ctx, actor, ...``) is neither in READ_CALLS nor classified as a
write action below.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import pytest
from sqlalchemy import MetaData, select

import trialdesk.services
from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial, flagship
from tests.factory import hard_lock
from tests.protocol_variants import design_changed
from trialdesk.domain.errors import NotFound, TrialError
from trialdesk.domain.roles import Role
from trialdesk.domain.schedule import VisitState
from trialdesk.protocol.models import Gate
from trialdesk.services import (
    accounts,
    admin,
    amendments,
    audit_trail,
    casebook,
    consent,
    crc,
    crc_dossier,
    dashboard,
    data_queries,
    design,
    devices,
    endpoints,
    exits,
    followup,
    history,
    preferences,
    quality,
    queries,
    query_pages,
    record_grid,
    report_views,
    reports,
    screening,
    setup,
    study_info,
    subject_record,
    visits,
)
from trialdesk.services.access import Actor, operator_actor
from trialdesk.services.allocation import lists, randomization, unblinding
from trialdesk.services.records import checklist as records_checklist
from trialdesk.services.records import locks as records_locks
from trialdesk.services.records import review as records_review
from trialdesk.services.setup import create_user

# --- what an arm looks like in text ----------------------------------------------------------

ARM_TOKEN = re.compile(r"\b(INT|CTRL)\b")
ARM_TEXT = ("Intervention", "Control (sham", "CARILLON implant")


def arm_leaks(text: str) -> list[str]:
    """Arm codes (whole tokens) and arm labels found in ``text``."""
    return ARM_TOKEN.findall(text) + [t for t in ARM_TEXT if t in text]


def arm_proxies() -> list[str]:
    """Names that tell the arm as surely as its code: each arm's own procedure form."""
    return sorted({a.procedure_form for a in flagship().protocol.arms if a.procedure_form})


def dump(obj: object) -> str:
    """Everything a caller could print of a result: repr, to_dict() and asdict()."""
    if isinstance(obj, TrialError):
        return f"{type(obj).__name__}: {obj.message} {getattr(obj, 'problems', '')}"
    parts = [repr(obj)]
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        parts.append(json.dumps(to_dict(), default=str))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        parts.append(json.dumps(dataclasses.asdict(obj), default=str))
    if isinstance(obj, list | tuple):
        parts.extend(dump(item) for item in obj)
    return "\n".join(parts)


# --- the read services ---------------------------------------------------------------------

ReadCall = Callable[[Trial, Actor, str], object]


def outcome(call: ReadCall, trial: Trial, actor: Actor, number: str) -> str:
    """The serialised result, or the refusal's message (a refusal must not leak either)."""
    try:
        return dump(call(trial, actor, number))
    except TrialError as exc:
        return dump(exc)


def each(calls: list[Callable[[], object]]) -> list[object]:
    """Each call's result or its refusal: one refused item does not hide the others. When
    every item is refused the first refusal is raised, so a caller refused outright (another
    study's user, tests/integration/test_multi_study.py) reads as refused, not answered."""
    out: list[object] = []
    for call in calls:
        try:
            out.append(call())
        except TrialError as exc:
            out.append(exc)
    refusals = [item for item in out if isinstance(item, TrialError)]
    if refusals and len(refusals) == len(out):
        raise refusals[0]
    return out


def saved_forms(t: Trial, number: str) -> list[tuple[str, str]]:
    """Every (form, visit) the subject has a saved record of, then each arm's procedure form
    and the concealed procedure record asked for by name: what a blinded reader may try."""
    from trialdesk.services.forms import CONCEALED_PROCEDURE_FORM
    from trialdesk.store.tables import FormRecordRow, SubjectRow

    with t.ctx.uow(readonly=True) as uow:
        saved = uow.session.execute(
            select(FormRecordRow.form_code, FormRecordRow.visit_code)
            .join(SubjectRow, SubjectRow.id == FormRecordRow.subject_id)
            .where(SubjectRow.study_id == t.study_id, SubjectRow.number == number)
            .distinct()
        ).all()
    asked = [(code, "") for code in [CONCEALED_PROCEDURE_FORM, *arm_proxies()]]
    return sorted({(form, visit) for form, visit in saved}) + asked


def crc_cases(t: Trial, number: str) -> list[int]:
    """The ids of the subject's CRC cases (eligibility and therapy), oldest first."""
    from trialdesk.store.tables import CrcCaseRow, SubjectRow

    with t.ctx.uow(readonly=True) as uow:
        return list(
            uow.session.scalars(
                select(CrcCaseRow.id)
                .join(SubjectRow, SubjectRow.id == CrcCaseRow.subject_id)
                .where(SubjectRow.study_id == t.study_id, SubjectRow.number == number)
                .order_by(CrcCaseRow.id)
            )
        )


READ_CALLS: dict[str, ReadCall] = {
    "amendments.list_protocol_versions": lambda t, a, n: amendments.list_protocol_versions(
        t.ctx, a, t.study_id
    ),
    "amendments.preview_amendment": lambda t, a, n: amendments.preview_amendment(
        t.ctx, a, t.study_id, design_changed()
    ),
    # a signed design amendment is swept in tests/integration/test_amendments.py
    "amendments.amendment_diff": lambda t, a, n: amendments.amendment_diff(t.ctx, a, t.study_id, 1),
    "queries.get_subject": lambda t, a, n: queries.get_subject(t.ctx, a, t.study_id, n),
    "queries.subject_actions": lambda t, a, n: queries.subject_actions(t.ctx, a, t.study_id, n),
    "devices.site_inventory": lambda t, a, n: devices.site_inventory(t.ctx, a, t.study_id),
    "devices.device_list": lambda t, a, n: [
        devices.device_list(t.ctx, a, t.study_id, order=order, limit=500)
        for order in ("serial", "lot", "expiry", "site", "status")
    ],  # every ordering of the page (issue 14): none may move a device by arm
    "exits.contacts_offered": lambda t, a, n: exits.contacts_offered(t.ctx, a, t.study_id, n),
    "devices.stock_warnings": lambda t, a, n: devices.stock_warnings(t.ctx, a, t.study_id),
    "devices.list_lots": lambda t, a, n: devices.list_lots(t.ctx, a, t.study_id),
    "devices.list_shipments": lambda t, a, n: devices.list_shipments(t.ctx, a, t.study_id),
    "devices.recall_subjects": lambda t, a, n: devices.recall_subjects(
        t.ctx, a, t.study_id, "LOT2701"
    ),  # subject lists without arms for blinded callers: tests/integration/test_devices.py
    "history.subject_history": lambda t, a, n: history.subject_history(t.ctx, a, t.study_id, n),
    "preferences.viewer_zone": lambda t, a, n: preferences.viewer_zone(t.ctx, a, t.study_id),
    "queries.list_subjects": lambda t, a, n: queries.list_subjects(t.ctx, a, t.study_id, limit=500),
    "screening.check_eligibility": lambda t, a, n: [
        screening.check_eligibility(t.ctx, a, t.study_id, n, gate=gate) for gate in Gate
    ],
    "setup.list_studies": lambda t, a, n: setup.list_studies(t.ctx, a),
    "setup.resolve_study": lambda t, a, n: setup.resolve_study(t.ctx, a, None),
    "setup.study_contents": lambda t, a, n: setup.study_contents(t.ctx, a, None),  # operator
    "lists.list_info": lambda t, a, n: lists.list_info(t.ctx, a, t.study_id),
    "lists.download_list": lambda t, a, n: lists.download_list(t.ctx, a, t.study_id, 1),
    "audit_trail.audit_entries": lambda t, a, n: audit_trail.audit_entries(
        t.ctx, a, t.study_id, limit=1000
    ),
    "lists.stratum_status": lambda t, a, n: lists.stratum_status(t.ctx, a, t.study_id),
    "crc.crc_queue": lambda t, a, n: crc.crc_queue(t.ctx, a, t.study_id),
    "data_queries.open_queries": lambda t, a, n: data_queries.open_queries(t.ctx, a, t.study_id),
    "endpoints.safety_summary": lambda t, a, n: endpoints.safety_summary(t.ctx, a, t.study_id),
    "endpoints.efficacy_summary": lambda t, a, n: endpoints.efficacy_summary(t.ctx, a, t.study_id),
    "endpoints.interim_status": lambda t, a, n: endpoints.interim_status(t.ctx, a, t.study_id),
    "endpoints.time_in_lab": lambda t, a, n: endpoints.time_in_lab(t.ctx, a, t.study_id),
    "visits.visit_worklist": lambda t, a, n: visits.visit_worklist(
        t.ctx, a, t.study_id, states=tuple(s.value for s in VisitState)
    ),
    "unblinding.notifications": lambda t, a, n: unblinding.notifications(t.ctx, a, t.study_id),
    "unblinding.trial_unblinding_status": lambda t, a, n: unblinding.trial_unblinding_status(
        t.ctx, a, t.study_id
    ),
    "dashboard.enrolment": lambda t, a, n: dashboard.enrolment(t.ctx, a, t.study_id),
    "dashboard.my_sites": lambda t, a, n: dashboard.my_sites(t.ctx, a, t.study_id),
    "dashboard.screening_log": lambda t, a, n: dashboard.screening_log(t.ctx, a, t.study_id),
    "admin.list_users": lambda t, a, n: admin.list_users(t.ctx, a, t.study_id),
    "accounts.list_invitations": lambda t, a, n: accounts.list_invitations(t.ctx, a, t.study_id),
    "accounts.list_approvals": lambda t, a, n: accounts.list_approvals(t.ctx, a, t.study_id),
    "accounts.totp_status": lambda t, a, n: accounts.totp_status(t.ctx, a),
    "design.design_defaults": lambda t, a, n: design.design_defaults(t.ctx, a, t.study_id),
    "design.assess_design": lambda t, a, n: design.assess_design(
        t.ctx, a, t.study_id, method="blocks", block_sizes=(4,), subjects=8, simulations=2, seed=1
    ),
    "study_info.list_sites": lambda t, a, n: study_info.list_sites(t.ctx, a, t.study_id),
    "study_info.protocol_summary": lambda t, a, n: study_info.protocol_summary(
        t.ctx, a, t.study_id
    ),
    "reports.enrolment_report": lambda t, a, n: reports.enrolment_report(
        t.ctx, a, t.study_id, simulations=50, seed=1
    ),
    "reports.forecast_from_database": lambda t, a, n: reports.forecast_from_database(
        t.ctx, a, t.study_id, simulations=50, seed=1
    ),
    "report_views.consort": lambda t, a, n: report_views.consort(t.ctx, a, t.study_id),
    "report_views.consort_figure": lambda t, a, n: report_views.consort_figure(
        t.ctx, a, t.study_id, fmt="svg"
    ),
    "report_views.visit_compliance": lambda t, a, n: report_views.visit_compliance(
        t.ctx, a, t.study_id
    ),
    "report_views.deviations": lambda t, a, n: report_views.deviations(t.ctx, a, t.study_id),
    "report_views.crc_workload": lambda t, a, n: report_views.crc_workload(t.ctx, a, t.study_id),
    "report_views.unblinding_events": lambda t, a, n: report_views.unblinding_events(
        t.ctx, a, t.study_id
    ),
    "report_views.dsmb_report_html": lambda t, a, n: report_views.dsmb_report_html(
        t.ctx, a, t.study_id
    ),
    # issue 15 (x15b): data quality, missing data, consents
    "quality.quality_report": lambda t, a, n: quality.quality_report(
        t.ctx, a, t.study_id, number=n
    ),
    "quality.missing_data": lambda t, a, n: quality.missing_data(t.ctx, a, t.study_id),
    "consent.consent_worklist": lambda t, a, n: consent.consent_worklist(t.ctx, a, t.study_id),
    "consent.subject_consents": lambda t, a, n: consent.subject_consents(t.ctx, a, t.study_id, n),
    # issue 14 (x14a, x14b): the subject page, casebook, CRC dossier, queries, lists that scale
    "admin.user_page": lambda t, a, n: admin.user_page(t.ctx, a, t.study_id, limit=200),
    "casebook.casebook": lambda t, a, n: casebook.casebook(t.ctx, a, t.study_id, n),
    "crc_dossier.case_dossier": lambda t, a, n: each(
        [partial(crc_dossier.case_dossier, t.ctx, a, t.study_id, case) for case in crc_cases(t, n)]
    ),
    "crc_dossier.cases_waiting_for_site": lambda t, a, n: crc_dossier.cases_waiting_for_site(
        t.ctx, a, t.study_id
    ),
    "dashboard.screening_log_page": lambda t, a, n: dashboard.screening_log_page(
        t.ctx, a, t.study_id, limit=200
    ),
    "queries.subject_counts": lambda t, a, n: queries.subject_counts(t.ctx, a, t.study_id),
    "query_pages.form_queries": lambda t, a, n: each(
        [
            partial(query_pages.form_queries, t.ctx, a, t.study_id, n, form_code=f, visit_code=v)
            for f, v in saved_forms(t, n)
        ]
    ),
    "query_pages.query_list": lambda t, a, n: query_pages.query_list(
        t.ctx, a, t.study_id, status=query_pages.ALL, limit=200
    ),
    "record_grid.status_grid": lambda t, a, n: record_grid.status_grid(
        t.ctx, a, t.study_id, limit=200
    ),
    "subject_record.eligibility_checklist": lambda t, a, n: each(
        [
            partial(subject_record.eligibility_checklist, t.ctx, a, t.study_id, n, gate=gate)
            for gate in Gate
        ]
    ),
    "subject_record.form_statuses": lambda t, a, n: subject_record.form_statuses(
        t.ctx, a, t.study_id, n
    ),
    "subject_record.saved_form": lambda t, a, n: each(
        [
            partial(subject_record.saved_form, t.ctx, a, t.study_id, n, form_code=f, visit_code=v)
            for f, v in saved_forms(t, n)
        ]
    ),
    "subject_record.stored_randomization": lambda t, a, n: subject_record.stored_randomization(
        t.ctx, a, t.study_id, n
    ),
    "subject_record.subject_today": lambda t, a, n: subject_record.subject_today(
        t.ctx, a, t.study_id, n
    ),
    # issue 15 (x15a): locks, the lock checklist, SDV and sign-off (services/records/)
    "records.checklist.lock_checklist": lambda t, a, n: records_checklist.lock_checklist(
        t.ctx, a, study_id=t.study_id
    ),
    "records.locks.database_lock_status": lambda t, a, n: records_locks.database_lock_status(
        t.ctx, a, study_id=t.study_id
    ),
    "records.locks.subject_locks": lambda t, a, n: records_locks.subject_locks(
        t.ctx, a, study_id=t.study_id, number=n
    ),
    "records.review.sdv_status": lambda t, a, n: records_review.sdv_status(
        t.ctx, a, study_id=t.study_id
    ),
    "records.review.subject_signatures": lambda t, a, n: records_review.subject_signatures(
        t.ctx, a, study_id=t.study_id, number=n
    ),
}
PER_SUBJECT = {
    "queries.get_subject",
    "queries.subject_actions",
    "screening.check_eligibility",
    "history.subject_history",
    "consent.subject_consents",
    "quality.quality_report",
    # issue 14
    "casebook.casebook",
    "crc_dossier.case_dossier",
    "query_pages.form_queries",
    "subject_record.eligibility_checklist",
    "subject_record.form_statuses",
    "subject_record.saved_form",
    "subject_record.stored_randomization",
    "subject_record.subject_today",
    "records.locks.subject_locks",
    "records.review.subject_signatures",
}

WRITE_ACTIONS = {
    # issue 14 (x14b): the site's reply to the committee; swept below with the population
    "crc_dossier.reply_to_crc",
    # issue 16 (x16a): files swept for arms in tests/integration/test_submission.py and, both
    # worlds of the pair, in tests/integration/test_pair_services.py; ADaM is unblinded only
    "submission.export_adam",
    "submission.export_sdtm",
    # issue 15 (x15a): swept in tests/integration/test_records_hold.py
    "records.locks.lock_database",
    "records.locks.lock_record",
    "records.locks.unlock_database",
    "records.locks.unlock_record",
    "records.review.mark_sdv",
    "records.review.sign_records",
    # issue 15 (x15b)
    "consent.record_reconsent",
    "data_queries.assign_query",
    "data_queries.verify_query",
    "exits.record_contact",
    "exits.record_exit",
    "quality.exclude_rule",
    "quality.revoke_exclusion",
    "quality.run_quality_rules",
    "amendments.propose_amendment",
    "amendments.sign_amendment",
    "preferences.set_time_zone",
    "admin.activate_site",
    "admin.deactivate_site",
    "admin.deactivate_user",
    "admin.grant_role",
    "admin.reactivate_user",
    "admin.clear_signin_backoff",
    "accounts.begin_totp",
    "accounts.cancel_invitation",
    "accounts.change_password",
    "accounts.confirm_totp",
    "accounts.decide_approval",
    "accounts.disable_totp",
    "accounts.invite",
    "accounts.issue_reset_link",  # the local operator's only
    "accounts.reset_totp",
    "accounts.send_password_reset",
    "accounts.set_email",
    "mail.flush_outbox",  # the local operator's only
    "mail.list_outbox",
    "mail.show_mail",
    "admin.revoke_role",
    "crc.crc_eligibility_decision",
    "devices.destroy_device",
    "devices.quarantine_lot",
    "devices.receive_shipment",
    "devices.register_lot",
    "devices.return_device",
    "devices.ship_devices",
    "devices.stock_demo_site",
    "crc.decide_therapy_case",
    "data_queries.answer_query",
    "data_queries.close_query",
    "data_queries.raise_query",
    "data_queries.reopen_query",
    "exports.export_csv",  # files swept for arms in tests/integration/test_exports.py
    "exports.export_odm",
    "exports.export_sdtm",
    "followup.complete_subject",
    "followup.correct_form_data",
    "followup.emergency_unblind",
    "followup.mark_lost_to_follow_up",
    "followup.miss_visit",
    "followup.record_adverse_event",
    "followup.record_death",
    "followup.record_discharge",
    "followup.record_procedure",
    "followup.record_therapy",
    "followup.record_visit",
    "followup.unblind_subject",
    "followup.withdraw",
    "lists.extend",
    "lists.generate_list",
    "lists.import_list",
    "lists.discard_list",
    "maintenance.backup_database",  # a file of every row, arms encrypted; operator only
    "maintenance.restore_database",
    "maintenance.verify_audit",
    "randomization.randomize",
    "screening.complete_screening",
    "screening.confirm_criterion",
    "screening.decline_consent",
    "screening.record_anatomy",
    "screening.record_consent",
    "screening.record_screening_form",
    "screening.register_subject",
    "screening.screen_fail_other",
    "setup.create_demo_users",
    "setup.create_user",
    "setup.initialize_study",
    "unblinding.confirm_trial_unblinding",
    "unblinding.mark_notification_read",
    "unblinding.mark_randomized_in_error",
    "unblinding.request_trial_unblinding",
}
"""Actions; their results for blinded callers are swept where the population builds them."""

HELPERS = {
    "auth.reauthenticate",
    "common.acting_on",
    "dashboard.current_protocol",
    "audit_trail.record_disclosure",  # writes the audit entry of a disclosure another made
    "audit_trail.disclosure_entry",
}
"""(ctx, actor) helpers that other services call; not user actions. current_protocol gives
the pages the protocol definition to render forms from: arm definitions, never an allocation."""


def _own_services(module: object) -> dict[str, Callable[..., object]]:
    """The public (ctx, actor, ...) functions defined in ``module`` itself."""
    return {
        name: fn
        for name, fn in inspect.getmembers(module, inspect.isfunction)
        if fn.__module__ == getattr(module, "__name__", None)
        and not name.startswith("_")
        and list(inspect.signature(fn).parameters)[:2] == ["ctx", "actor"]
    }


def service_functions() -> dict[str, Callable[..., object]]:
    """Every public function of trialdesk.services and its subpackages whose parameters start
    with (ctx, actor). A function moved into a subpackage keeps the name of the top-level
    module that only re-exports it (``lists.list_info``, ``devices.register_lot``); one no
    such module re-exports is named by its path (``records.locks.lock_record``)."""
    prefix = "trialdesk.services."
    shims = [
        module
        for info in pkgutil.iter_modules(trialdesk.services.__path__)
        if not info.ispkg
        for module in [importlib.import_module(prefix + info.name)]
        if not _own_services(module)
    ]
    found: dict[str, Callable[..., object]] = {}
    for info in pkgutil.walk_packages(trialdesk.services.__path__, prefix):
        module = importlib.import_module(info.name)
        path = info.name.removeprefix(prefix)
        for name, fn in _own_services(module).items():
            alias = next(
                (
                    shim.__name__.removeprefix(prefix)
                    for shim in shims
                    if "." in path and getattr(shim, name, None) is fn
                ),
                path,
            )
            found[f"{alias}.{name}"] = fn
    return found


def test_rand6_sweep_covers_every_service() -> None:
    """RAND-6: every service is either swept as a read or classified as an action; every
    public function of services.queries is swept."""
    found = set(service_functions())
    unclassified = found - READ_CALLS.keys() - WRITE_ACTIONS - HELPERS
    assert not unclassified, (
        f"new service functions {sorted(unclassified)}: add each to READ_CALLS (it reads) or "
        "WRITE_ACTIONS in tests/integration/test_blinding_sweep.py"
    )
    stale = (READ_CALLS.keys() | WRITE_ACTIONS | HELPERS) - found
    assert not stale, f"listed but no longer services: {sorted(stale)}"
    in_queries = {
        f"queries.{name}"
        for name, fn in inspect.getmembers(queries, inspect.isfunction)
        if fn.__module__ == queries.__name__ and not name.startswith("_")
    }
    assert in_queries <= READ_CALLS.keys()


# --- the population --------------------------------------------------------------------------

BLINDED = ("admin", "manager", "coordinator", "crc", "monitor", "coord-stat", "mgr-dsmb")
"""Every blinded role, plus users holding a blinded and an unblinded role (ACC-2)."""


@dataclass
class Population:
    subjects: dict[str, str] = field(default_factory=dict)  # label -> number
    arms: dict[str, str] = field(default_factory=dict)  # number -> arm (ground truth)
    results: list[tuple[str, object]] = field(default_factory=list)  # seen by blinded callers


def _user(t: Trial, username: str, roles: list[tuple[Role, str | None]]) -> Actor:
    create_user(
        t.ctx,
        operator_actor(),
        t.study_id,
        username=username,
        full_name=username.replace("-", " ").title(),
        password=PASSWORD,
        roles=roles,
    )
    return t.actor(username)


def populate(t: Trial) -> Population:
    """Subjects in many states; results returned to blinded callers are kept for the sweep."""
    pop = Population()
    coord = t.actor("coordinator")
    _user(t, "coordinator-2", [(Role.COORDINATOR, j.SITE)])
    _user(t, "coord-stat", [(Role.COORDINATOR, j.SITE), (Role.STATISTICIAN, None)])
    _user(t, "mgr-dsmb", [(Role.MANAGER, None), (Role.DSMB, None)])

    pop.subjects["registered"] = j.register(t)
    pop.subjects["screening"] = j.consented(t)
    pop.subjects["echo_qualified"] = j.echo_qualified(t)
    asked = j.echo_qualified(t)
    screening.crc_eligibility_decision(
        t.ctx,
        t.actor("crc"),
        t.study_id,
        asked,
        decision="request_info",
        reason="Please send the echo report",
        password=PASSWORD,
    )
    (case,) = crc_cases(t, asked)
    pop.results.append(
        (
            "reply to the CRC",
            crc_dossier.reply_to_crc(t.ctx, coord, t.study_id, case, text="Report uploaded"),
        )
    )
    pop.subjects["crc_info_replied"] = asked
    pop.subjects["awaiting_procedure"] = j.awaiting_procedure(t)

    rejected = j.echo_qualified(t)
    screening.crc_eligibility_decision(
        t.ctx,
        t.actor("crc"),
        t.study_id,
        rejected,
        decision="reject",
        reason="Severe MAC on review",
        password=PASSWORD,
    )
    pop.subjects["crc_rejected"] = rejected

    anatomy_failed = j.awaiting_procedure(t)
    t.clock.set_day(j.PROCEDURE)
    screening.record_anatomy(
        t.ctx,
        t.actor("implanter"),
        t.study_id,
        anatomy_failed,
        forms=fd.failing_anatomy_forms("ANAT-2"),
    )
    pop.subjects["anatomy_failed"] = anatomy_failed

    by_coord = j.anatomy_suitable(t)
    pop.results.append(
        ("randomize by coordinator", randomization.randomize(t.ctx, coord, t.study_id, by_coord))
    )
    pop.results.append(
        (
            "randomize by coord-stat (ACC-2)",
            randomization.randomize(
                t.ctx, t.actor("coord-stat"), t.study_id, j.anatomy_suitable(t), idempotency_key="k"
            ),
        )
    )
    pop.subjects["randomized_by_coordinator"] = by_coord

    number, arm = j.procedure_done(t)
    pop.arms[number] = arm
    today = dt.date.fromisoformat(fd.DISCHARGE_DATE)
    pop.results.append(
        (
            "therapy",
            followup.record_therapy(
                t.ctx, coord, t.study_id, number, therapy_date=today, therapy_type="crt"
            ),
        )
    )
    (ae,) = fd.adverse_event_forms(fd.DISCHARGE_DATE).values()
    pop.results.append(
        (
            "adverse event",
            followup.record_adverse_event(t.ctx, coord, t.study_id, number, values=ae),
        )
    )
    therapy_case = crc_cases(t, number)[-1]
    pop.results.append(
        (
            "therapy case: more information requested",
            crc.decide_therapy_case(
                t.ctx,
                t.actor("crc"),
                t.study_id,
                therapy_case,
                classification="request_info",
                reason="Please send the discharge letter",
                password=PASSWORD,
            ),
        )
    )
    pop.subjects["procedure_done"] = number

    number, arm = j.procedure_done(t)
    pop.arms[number] = arm
    followup.emergency_unblind(
        t.ctx,
        t.actor("coordinator-2"),
        t.study_id,
        number,
        reason="acute deterioration",
        password=PASSWORD,
    )
    pop.subjects["emergency_unblinded_by_other"] = number

    number, arm = j.procedure_done(t)
    pop.arms[number] = arm
    pop.results.append(
        (
            "withdraw",
            followup.withdraw(
                t.ctx,
                coord,
                t.study_id,
                number,
                withdrawn_on=today,
                reason="moved",
                follow_up_contact_allowed=True,
            ),
        )
    )
    pop.subjects["withdrawn"] = number

    number, arm = j.randomized(t)
    pop.arms[number] = arm
    unblinding.mark_randomized_in_error(
        t.ctx, t.actor("statistician"), t.study_id, number, "randomized before CRC sign-off"
    )
    pop.subjects["randomized_in_error"] = number

    number, arm = j.procedure_done(t, "S102")
    pop.arms[number] = arm
    pop.subjects["other_site"] = number

    number, arm = j.blinded_visits_done(t)
    pop.arms[number] = arm
    pop.results.append(
        (
            "correction",
            followup.correct_form_data(
                t.ctx,
                coord,
                t.study_id,
                number,
                form_code="follow_up",
                changes={"kccq_overall_score": 61.5},
                reason="transcription error",
                visit_code="M24",
            ),
        )
    )
    pop.results.append(
        (
            "data query",
            data_queries.raise_query(
                t.ctx,
                t.actor("monitor"),
                t.study_id,
                number,
                form_code="follow_up",
                field="nyha_class",
                text="Please confirm NYHA class against the source",
                visit_code="M24",
            ),
        )
    )
    pop.subjects["m24_done_still_blinded"] = number

    hard_lock(t)  # REC-5: trial unblinding needs the hard database lock
    pop.results.append(
        (
            "trial unblinding requested",
            unblinding.request_trial_unblinding(
                t.ctx, t.actor("manager"), t.study_id, "last subject's 24 months done", PASSWORD
            ),
        )
    )
    return pop


@pytest.fixture
def population(trial: Trial) -> Population:
    return trial.prepared(populate)


# --- the sweeps ------------------------------------------------------------------------------


def test_rand6_acc2_no_read_service_shows_an_arm_to_a_blinded_role(
    trial: Trial, population: Population
) -> None:
    """RAND-6, ACC-2: every blinded role (and users holding a blinded plus an unblinded role)
    reads every subject through every read service and sees no arm, label or list content;
    results of actions returned to blinded callers carry none either."""
    leaks: list[str] = []
    numbers = list(population.subjects.values())
    for username in BLINDED:
        actor = trial.actor(username)
        for name, call in READ_CALLS.items():
            targets = numbers if name in PER_SUBJECT else numbers[:1]
            for number in targets:
                text = outcome(call, trial, actor, number)
                if arm_leaks(text):
                    leaks.append(f"{username} {name}({number}): {arm_leaks(text)}")
    for label, result in population.results:
        if arm_leaks(dump(result)):
            leaks.append(f"{label}: {arm_leaks(dump(result))}")
    assert not leaks, "\n".join(leaks)

    # the same reads do show arms to the unblinded: the sweep can see a leak if there is one
    stat = trial.actor("statistician")
    for number, arm in population.arms.items():
        text = outcome(READ_CALLS["queries.get_subject"], trial, stat, number)
        assert arm in arm_leaks(text)


def test_rand6_audit_trail_never_carries_an_arm(trial: Trial, population: Population) -> None:
    """RAND-6: blinded roles read the audit trail, so no entry names an arm."""
    from trialdesk.store.tables import AuditEntryRow

    with trial.ctx.uow(readonly=True) as uow:
        entries = uow.session.scalars(select(AuditEntryRow)).all()
        uow.session.expunge_all()  # keep loaded values after the unit of work closes
    actions = {e.action for e in entries}
    assert {"allocate", "emergency_unblind", "mark_randomized_in_error"} <= actions
    leaks = [
        f"#{e.id} {e.action} {e.entity_id}: {arm_leaks(text)}"
        for e in entries
        for text in [" ".join([e.action, e.entity, e.entity_id, e.old, e.new, e.reason or ""])]
        if arm_leaks(text)
    ]
    assert not leaks, "\n".join(leaks)


EXEMPT_COLUMNS = {
    ("protocol_versions", "text"): "the protocol defines the arms; it allocates no one",
    ("users", "password_hash"): "an argon2 hash, opaque",
}


def _database_text(trial: Trial) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Every text value of every column of every row (reflected, so new tables count), and
    binary columns that are not Fernet ciphertext."""
    values: list[tuple[str, str, str]] = []
    plain_binary: list[tuple[str, str]] = []
    engine = trial.runtime.engine
    meta = MetaData()
    meta.reflect(bind=engine)
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)).mappings():
                for column, value in row.items():
                    if value is None or (table.name, column) in EXEMPT_COLUMNS:
                        continue
                    if isinstance(value, bytes | memoryview):
                        if not bytes(value).startswith(b"gAAAAA"):
                            plain_binary.append((table.name, column))
                        continue
                    values.append((table.name, column, str(value)))
    return values, plain_binary


def test_rand6_database_read_as_text_shows_no_arm(trial: Trial, population: Population) -> None:
    """RAND-6: a blinded database reader sees no arm: every column of every row as text, and
    every binary column holds ciphertext."""
    values, plain_binary = _database_text(trial)
    assert {table for table, _c, _v in values} >= {"randomizations", "audit_entries", "subjects"}
    assert not plain_binary, f"binary columns not encrypted: {sorted(set(plain_binary))}"
    leaks = [f"{t}.{c}: {arm_leaks(v)}" for t, c, v in values if arm_leaks(v)]
    assert not leaks, "\n".join(leaks)
    # the arms are there, encrypted: the key turns each randomization back into its arm
    from trialdesk.store.tables import RandomizationRow, SubjectRow

    with trial.ctx.uow(readonly=True) as uow:
        stored = {
            number: trial.ctx.cipher.decrypt(arm_enc)
            for number, arm_enc in uow.session.execute(
                select(SubjectRow.number, RandomizationRow.arm_enc).join(
                    RandomizationRow, RandomizationRow.subject_id == SubjectRow.id
                )
            )
        }
    assert population.arms.items() <= stored.items()


def test_rand6_arm_specific_procedure_form_is_not_readable_by_blinded_roles(
    trial: Trial, population: Population
) -> None:
    """RAND-6: what tells the arm as surely as its code (the arm's procedure form) is not in
    the audit trail or in plain database text."""
    proxies = arm_proxies()
    values, _binary = _database_text(trial)
    leaks = [f"{t}.{c}" for t, c, v in values for p in proxies if p in v]
    assert not leaks, sorted(set(leaks))


# --- who sees what -------------------------------------------------------------------------


def test_acc1_acc2_implanter_sees_own_site_arm_only(trial: Trial, population: Population) -> None:
    """ACC-1: the implanter of the subject's site sees its arm; an implanter of another site
    gets 'not found' and does not list it. ACC-2: coordinator + statistician sees no arm."""
    own = population.subjects["procedure_done"]
    arm = population.arms[own]
    view = queries.get_subject(trial.ctx, trial.actor("implanter"), trial.study_id, own)
    assert view.arm is not None and view.arm.code == arm

    other = j.staff(trial, "implanter", "S102")
    with pytest.raises(NotFound, match=f"subject {own} not found"):
        queries.get_subject(trial.ctx, other, trial.study_id, own)
    with pytest.raises(NotFound):
        screening.check_eligibility(trial.ctx, other, trial.study_id, own)
    listed = queries.list_subjects(trial.ctx, other, trial.study_id, limit=500)
    assert {v.number for v in listed.items} == {population.subjects["other_site"]}
    assert listed.total == 1

    dual = trial.actor("coord-stat")
    assert queries.get_subject(trial.ctx, dual, trial.study_id, own).arm is None
    assert queries.get_subject(trial.ctx, trial.actor("mgr-dsmb"), trial.study_id, own).arm is None


def test_rand7_emergency_unblinding_by_a_colleague_keeps_others_blinded(
    trial: Trial, population: Population
) -> None:
    """RAND-7, RAND-6: after a colleague broke the code for one subject, the site coordinator
    still sees the flag but not the arm."""
    number = population.subjects["emergency_unblinded_by_other"]
    view = queries.get_subject(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert view.emergency_unblinded is True and view.arm is None
