"""Data-quality rules from the protocol file on both backends (REC-6): a rule opens a query on
save, assigned to the site; the same data under a second protocol file give that file's
answer; a correction that removes the finding marks the query answered; a rule excluded for
a record opens nothing; on-demand rules run only on demand; bad input changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import Trial
from tests.protocol_variants import records_variant
from trialdesk.domain.errors import NotFound, PermissionDenied, ValidationFailed
from trialdesk.services import data_queries as dq
from trialdesk.services import followup, quality
from trialdesk.store.tables import AuditEntryRow, Base


def _counts(t: Trial) -> dict[str, int]:
    with t.ctx.uow(readonly=True) as uow:
        return {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def _m1(t: Trial, number: str, **changes: Any) -> None:
    """Record visit M1 with the follow-up values changed as given."""
    on = j.visit_dates()["M1"]
    t.clock.set_day(on)
    forms = fd.follow_up_forms(on.isoformat())
    forms["follow_up"].update(changes)
    followup.record_visit(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        visit_code="M1",
        visit_date=on,
        forms=forms,
    )


def _rule_queries(t: Trial) -> list[dq.QueryView]:
    return [q for q in dq.open_queries(t.ctx, t.actor("monitor"), t.study_id) if q.rule]


def test_rec6_flagship_rule_opens_a_query_on_save_assigned_to_the_site(trial: Trial) -> None:
    """REC-6: DQ-8 of flagship.yaml (end-systolic not below end-diastolic diameter) opens a
    query when M1 is saved, raised by the system, assigned to the site, audited."""
    number, _ = j.procedure_done(trial)
    _m1(trial, number, lvesd_mm=70.0, lvedd_mm=62.0)
    [query] = _rule_queries(trial)
    assert (query.rule, query.form, query.visit, query.field) == (
        "DQ-8",
        "follow_up",
        "M1",
        "lvesd_mm",
    )
    assert query.status == "open" and query.raised_by == "system" and query.origin == "rule"
    assert query.assigned_to == "site S101" and query.severity == "major"
    assert "follow_up.lvesd_mm at M1 is 70" in query.text
    with trial.ctx.uow(readonly=True) as uow:
        raised = uow.session.scalars(
            select(AuditEntryRow).where(
                AuditEntryRow.action == "raise_query", AuditEntryRow.actor == "system"
            )
        ).all()
    assert len(raised) == 1 and '"DQ-8"' in (raised[0].new or "")


def test_rec6_correction_that_removes_the_finding_answers_the_query(trial: Trial) -> None:
    """REC-6: correcting the value answers the rule's query for the monitor to verify; a
    correction that brings the finding back reopens it."""
    number, _ = j.procedure_done(trial)
    _m1(trial, number, lvesd_mm=70.0)
    coord = trial.actor("coordinator")

    def correct(value: float) -> None:
        followup.correct_form_data(
            trial.ctx,
            coord,
            trial.study_id,
            number,
            form_code="follow_up",
            visit_code="M1",
            changes={"lvesd_mm": value},
            reason="transcription error",
        )

    correct(50.0)
    [query] = dq.open_queries(trial.ctx, trial.actor("monitor"), trial.study_id)
    assert query.status == "answered" and query.answered_by == "system"
    correct(71.0)
    [again] = dq.open_queries(trial.ctx, trial.actor("monitor"), trial.study_id)
    assert again.id == query.id and again.status == "open" and again.reopened == 1


def test_rec6_the_same_data_under_a_second_protocol_file_give_its_rules_answer(
    make_trial: Callable[..., Trial], monkeypatch: pytest.MonkeyPatch
) -> None:
    """REC-6: an LVEF of 65 % at M1 is within the flagship's DQ-7 (10-75 %) but outside the
    second protocol's R-LVEF (20-60 % for an ischemic cardiomyopathy): the query comes from
    the file, not from code."""
    monkeypatch.setattr(j, "CONSENT_VERSION", "A")
    t = make_trial(records_variant())
    number, _ = j.procedure_done(t)
    _m1(t, number, lvef_pct=65.0)
    [query] = _rule_queries(t)
    assert (query.rule, query.field, query.severity) == ("R-LVEF", "lvef_pct", "major")
    assert "outside 20..60" in query.text


def test_rec6_flagship_accepts_what_the_second_protocol_queries(trial: Trial) -> None:
    """REC-6: the flagship's own rules raise nothing for an LVEF of 65 %."""
    number, _ = j.procedure_done(trial)
    _m1(trial, number, lvef_pct=65.0)
    assert _rule_queries(trial) == []


def test_rec6_exclusion_closes_the_query_and_keeps_the_finding_visible(trial: Trial) -> None:
    """REC-6: excluding DQ-8 for M1's follow-up form closes its query with the reason; an
    on-demand run reports the finding as excluded and opens no query."""
    number, _ = j.procedure_done(trial)
    _m1(trial, number, lvesd_mm=70.0)
    monitor = trial.actor("monitor")
    excluded = quality.exclude_rule(
        trial.ctx,
        monitor,
        trial.study_id,
        number,
        rule_id="DQ-8",
        form_code="follow_up",
        visit_code="M1",
        reason="dilated ventricle confirmed by the core lab",
    )
    assert excluded.rule == "DQ-8" and excluded.excluded_by == "monitor"
    assert _rule_queries(trial) == []
    run = quality.run_quality_rules(trial.ctx, monitor, trial.study_id, number=number)
    assert run.opened == []
    [found] = [d for d in run.discrepancies if d.rule == "DQ-8"]
    assert found.excluded == "dilated ventricle confirmed by the core lab"
    quality.revoke_exclusion(
        trial.ctx, monitor, trial.study_id, exclusion_id=excluded.id, reason="core lab retracted"
    )
    again = quality.run_quality_rules(trial.ctx, monitor, trial.study_id, number=number)
    assert len(again.reopened) == 1


def test_rec6_on_demand_rule_runs_only_on_demand(trial: Trial) -> None:
    """REC-6: DQ-5 (KCCQ changed by more than 40 points) is ``run: on_demand``: saving opens
    nothing; the monitor's run opens its query."""
    number, _ = j.procedure_done(trial)
    _m1(trial, number, kccq_overall_score=99.0)
    assert [q for q in _rule_queries(trial) if q.rule == "DQ-5"] == []
    run = quality.run_quality_rules(trial.ctx, trial.actor("monitor"), trial.study_id)
    assert len(run.opened) == 1
    assert [q.rule for q in _rule_queries(trial)] == ["DQ-5"]
    report = quality.quality_report(trial.ctx, trial.actor("coordinator"), trial.study_id)
    assert [d.rule for d in report] == ["DQ-5"]


def test_rec6_bad_exclusions_are_refused_and_change_nothing(trial: Trial) -> None:
    """REC-6: an unknown rule, a blank reason, a record never saved, and a coordinator (no
    permission) are each refused with one message; nothing is written."""
    number, _ = j.procedure_done(trial)
    _m1(trial, number, lvesd_mm=70.0)
    before = _counts(trial)
    monitor = trial.actor("monitor")
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (ValidationFailed, {"rule_id": "DQ-99"}, "no data-quality rule 'DQ-99'"),
        (ValidationFailed, {"reason": "  "}, "a reason for excluding the rule is required"),
        (NotFound, {"visit_code": "M6"}, "form follow_up at M6 of"),
    ]
    for error, change, message in cases:
        args: dict[str, Any] = {
            "rule_id": "DQ-8",
            "form_code": "follow_up",
            "visit_code": "M1",
            "reason": "why",
            **change,
        }
        with pytest.raises(error, match=message):
            quality.exclude_rule(trial.ctx, monitor, trial.study_id, number, **args)
    with pytest.raises(PermissionDenied):
        quality.exclude_rule(
            trial.ctx,
            trial.actor("coordinator"),
            trial.study_id,
            number,
            rule_id="DQ-8",
            form_code="follow_up",
            visit_code="M1",
            reason="why",
        )
    assert _counts(trial) == before


def test_rec10_missing_data_report_per_visit_and_form(trial: Trial) -> None:
    """REC-10: the report counts each visit's and form's expected records; a visit done
    counts its forms complete; nothing is claimed missing for a visit not yet done."""
    number, _ = j.procedure_done(trial)
    _m1(trial, number)
    rows = {
        (r.visit, r.form): r
        for r in quality.missing_data(trial.ctx, trial.actor("monitor"), trial.study_id)
    }
    assert rows[("M1", "follow_up")].complete == 1
    assert ("M6", "follow_up") not in rows
    assert all(r.not_saved == 0 for r in rows.values() if r.visit == "M1")
    assert rows[(None, "discharge")].complete == 1  # kept on the subject, not as a form
    assert rows[(None, "index_procedure")].complete == 1


def test_rec10_a_not_available_answer_marks_the_record_missing(trial: Trial) -> None:
    """REC-10, REC-7: the site answers a query "not available" (a code that marks missing):
    the missing-data report counts that record as marked missing, with the reason."""
    number, _ = j.procedure_done(trial)
    _m1(trial, number)
    query = dq.raise_query(
        trial.ctx,
        trial.actor("monitor"),
        trial.study_id,
        number,
        form_code="follow_up",
        field="six_minute_walk_m",
        text="Walk distance not in the source",
        visit_code="M1",
    )
    dq.answer_query(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        query.id,
        text="test not done: patient in a wheelchair that day",
        response="not_available",
    )
    rows = {
        (r.visit, r.form): r
        for r in quality.missing_data(trial.ctx, trial.actor("monitor"), trial.study_id)
    }
    assert rows[("M1", "follow_up")].marked_missing == 1
    assert rows[("M1", "follow_up")].complete == 0
