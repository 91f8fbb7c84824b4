"""E-signature records (SIG-1), the scheduled unblinding offer and completion (SCHED-3,
RAND-7), and time in the lab by arm for the unblinded statistician only (RAND-8, PROC-1/2)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from trialdesk.domain.errors import PermissionDenied, PreconditionFailed
from trialdesk.services import followup, queries
from trialdesk.services.endpoints import time_in_lab
from trialdesk.store.tables import AuditEntryRow, ConfirmationRow, CrcCaseRow


def test_sig1_confirmation_and_crc_decision_store_name_time_and_meaning(trial: Trial) -> None:
    """SIG-1: a signed record names the signer (printed name), the time and the meaning."""
    number = j.awaiting_procedure(trial)
    with trial.ctx.uow(readonly=True) as uow:
        confirmation = uow.session.scalars(
            select(ConfirmationRow).where(ConfirmationRow.criterion_id == "INC-8")
        ).one()
        assert (confirmation.signed_by, confirmation.signed_name) == (
            "coordinator",
            "Casey Coordinator",
        )
        assert "INC-8" in confirmation.meaning and confirmation.signed_at is not None
        case = uow.session.scalars(select(CrcCaseRow)).one()
        assert (case.signed_by, case.signed_name, case.decision) == (
            "crc",
            "Riley Reviewer",
            "approve",
        )
        assert case.meaning and case.signed_at is not None
        entries = [
            e.new
            for e in uow.session.scalars(
                select(AuditEntryRow).where(AuditEntryRow.action == "crc_approve")
            )
        ]
        assert len(entries) == 1 and '"signature"' in entries[0] and "Riley Reviewer" in entries[0]
    assert number


def test_sched3_rand7_unblinding_offered_after_m24_and_completion_needs_y5(trial: Trial) -> None:
    """SCHED-3, RAND-7: the subject view offers unblinding once M24 is done (not before);
    completing before the 5-year contact is refused, after it allowed."""
    number, _arm = j.procedure_done(trial)
    coord = trial.actor("coordinator")
    dates = j.visit_dates()
    for code in ("M1", "M6", "M12", "M18"):
        j.record_visit(trial, number, code, dates[code])
    assert not queries.get_subject(trial.ctx, coord, trial.study_id, number).unblinding_due
    j.record_visit(trial, number, "M24", dates["M24"])
    assert queries.get_subject(trial.ctx, coord, trial.study_id, number).unblinding_due
    followup.unblind_subject(trial.ctx, coord, trial.study_id, number, password=PASSWORD)
    view = queries.get_subject(trial.ctx, coord, trial.study_id, number)
    assert view.state == "unblinded" and not view.unblinding_due
    j.record_visit(trial, number, "Y3", dates["Y3"])
    with pytest.raises(PreconditionFailed) as info:
        followup.complete_subject(trial.ctx, coord, trial.study_id, number)
    assert info.value.code == "final-visit-missing"
    for code in ("Y4", "Y5"):
        j.record_visit(trial, number, code, dates[code])
    assert followup.complete_subject(trial.ctx, coord, trial.study_id, number).state == "completed"


def test_rand8_proc1_proc2_time_in_lab_by_arm_for_the_statistician_only(trial: Trial) -> None:
    """RAND-8: implant and sham are recorded alike (start and end), so the unblinded
    statistician compares time in the lab by arm; blinded roles are refused."""
    arms = [j.procedure_done(trial)[1] for _ in range(4)]
    report = time_in_lab(trial.ctx, trial.actor("statistician"), trial.study_id)
    implant = fd.implant_procedure_forms()["implant_procedure"]
    sham = fd.sham_procedure_forms()["sham_procedure"]
    expected = {"INT": j_minutes(implant), "CTRL": j_minutes(sham)}
    for code in ("INT", "CTRL"):
        n = arms.count(code)
        row = report.arms[code]
        assert row["n"] == n
        if n:
            assert row["mean"] == expected[code] and row["min"] == row["max"] == expected[code]
    for role in ("coordinator", "manager", "crc", "monitor", "admin"):
        with pytest.raises(PermissionDenied) as info:
            time_in_lab(trial.ctx, trial.actor(role), trial.study_id)
        assert info.value.code == "blinded"


def j_minutes(form: dict[str, object]) -> int:
    start, end = str(form["start_time"]), str(form["end_time"])
    return (int(end[:2]) * 60 + int(end[3:5])) - (int(start[:2]) * 60 + int(start[3:5]))
