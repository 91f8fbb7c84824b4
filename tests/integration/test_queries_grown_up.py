"""Queries grown up on both backends (REC-7): assignment to a person of the site, coded
responses from the protocol, "verified" once the monitor accepts the answer, each query's age
and age band; every refusal writes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests import journey as j
from tests.conftest import Trial
from trialdesk.domain.errors import PermissionDenied, PreconditionFailed, ValidationFailed
from trialdesk.services import data_queries as dq
from trialdesk.store.tables import AuditEntryRow, Base


def _counts(t: Trial) -> dict[str, int]:
    with t.ctx.uow(readonly=True) as uow:
        return {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def _raised(t: Trial) -> tuple[str, int]:
    number = j.consented(t)
    j.enter_screening(t, number)
    view = dq.raise_query(
        t.ctx,
        t.actor("monitor"),
        t.study_id,
        number,
        form_code="nyha",
        field="nyha_class",
        text="NYHA class does not match the source",
    )
    return number, view.id


def test_rec7_assign_answer_with_a_code_and_verify(trial: Trial) -> None:
    """REC-7: the monitor assigns the query to the site's coordinator; the coordinator answers
    "confirmed as is"; the monitor verifies; each step audited; the query leaves the open list
    and keeps its age."""
    _, query_id = _raised(trial)
    monitor = trial.actor("monitor")
    assigned = dq.assign_query(trial.ctx, monitor, trial.study_id, query_id, assignee="coordinator")
    assert (assigned.assignee, assigned.assigned_to) == ("coordinator", "coordinator")
    mine = dq.open_queries(
        trial.ctx, trial.actor("coordinator"), trial.study_id, assignee="coordinator"
    )
    assert [q.id for q in mine] == [query_id]

    trial.clock.advance(days=3)
    answered = dq.answer_query(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        query_id,
        text="",
        response="confirmed",
    )
    assert answered.response == "confirmed" and (answered.answer or "").startswith("Confirmed")
    assert answered.age_days == 3 and answered.age_band == "0-7 days"

    trial.clock.advance(days=20)
    verified = dq.verify_query(trial.ctx, monitor, trial.study_id, query_id)
    assert verified.status == "verified" and verified.verified_by == "monitor"
    assert verified.age_days == 23 and verified.age_band == "15-30 days"
    assert dq.open_queries(trial.ctx, monitor, trial.study_id) == []
    [listed] = dq.open_queries(trial.ctx, monitor, trial.study_id, status="verified")
    assert listed.age_days == 23  # age stops at verification
    with trial.ctx.uow(readonly=True) as uow:
        actions = uow.session.scalars(
            select(AuditEntryRow.action).where(AuditEntryRow.entity == "data_query")
        ).all()
    assert actions == ["raise_query", "assign_query", "answer_query", "verify_query"]


def test_rec7_coded_responses_follow_the_protocol(trial: Trial) -> None:
    """REC-7: "corrected" needs the corrected value, "confirmed" forbids one, "not_available"
    needs an explanation, an unknown code lists the protocol's; nothing is written."""
    _, query_id = _raised(trial)
    coord = trial.actor("coordinator")
    before = _counts(trial)
    cases = [
        ({"response": "corrected"}, "needs the queried value corrected"),
        (
            {"response": "confirmed", "new_value": "III", "reason": "typo"},
            "keeps the value as it is",
        ),
        ({"response": "not_available"}, "needs an explanation"),
        ({"response": "maybe"}, "unknown response 'maybe'; choose one of: corrected"),
    ]
    for extra, message in cases:
        with pytest.raises(ValidationFailed, match=message):
            dq.answer_query(trial.ctx, coord, trial.study_id, query_id, text="", **extra)
    assert _counts(trial) == before
    view = dq.answer_query(
        trial.ctx,
        coord,
        trial.study_id,
        query_id,
        text="source says IVa",
        response="corrected",
        new_value="IVa",
        reason="transcription error",
    )
    assert view.response == "corrected" and view.value_changed


def test_rec7_refusals_verify_and_assign(trial: Trial) -> None:
    """REC-7: an open query cannot be verified; a coordinator cannot verify or assign; a
    person who cannot answer the site's queries cannot be assigned; nothing is written."""
    _, query_id = _raised(trial)
    monitor = trial.actor("monitor")
    before = _counts(trial)
    with pytest.raises(PreconditionFailed, match="cannot verify query") as e:
        dq.verify_query(trial.ctx, monitor, trial.study_id, query_id)
    assert e.value.code == "query-open"
    with pytest.raises(PermissionDenied):
        dq.verify_query(trial.ctx, trial.actor("coordinator"), trial.study_id, query_id)
    with pytest.raises(PermissionDenied):
        dq.assign_query(
            trial.ctx, trial.actor("coordinator"), trial.study_id, query_id, assignee="x"
        )
    for person in ("statistician", "nobody"):
        with pytest.raises(ValidationFailed, match=f"{person} cannot answer queries of site"):
            dq.assign_query(trial.ctx, monitor, trial.study_id, query_id, assignee=person)
    assert _counts(trial) == before
