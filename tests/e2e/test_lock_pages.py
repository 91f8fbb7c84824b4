"""The pages of locks, SDV and signatures (issue 15, lane x15a): the monitor verifies and
locks from the subject's page, the investigator signs; a later correction shows the
signature as no longer valid; the checklist page lists the blockers (REC-1..REC-5)."""

from __future__ import annotations

from tests import journey as j
from tests.conftest import PASSWORD, Trial
from tests.e2e.test_web_pages import csrf_of, signed_in
from trialdesk.services import followup


def test_rec1_rec2_rec3_subject_records_page_forms_and_invalidation(trial: Trial) -> None:
    """REC-1, REC-2, REC-3: forms are offered by role; the SDV mark, the signature and the
    lock posted from the page are shown; a correction shows the signature no longer valid."""
    number, _arm = j.procedure_done(trial)
    j.record_visit(trial, number, "M1", j.visit_dates()["M1"])
    page = f"/subjects/{number}/records"
    monitor, coordinator = signed_in(trial, "monitor"), signed_in(trial, "coordinator")
    seen = monitor.get(page)
    assert seen.status_code == 200 and "Verified against source" in seen.text
    assert "Sign: I attest" not in seen.text
    assert "Verified against source" not in coordinator.get(page).text
    token = csrf_of(monitor, page)
    done = monitor.post(
        f"{page}/sdv", data={"csrf_token": token, "form": "follow_up", "visit": "M1"},
        follow_redirects=False,
    )  # fmt: skip
    assert done.status_code == 303
    signed = coordinator.post(
        f"{page}/sign",
        data={"csrf_token": csrf_of(coordinator, page), "level": "casebook",
              "password": PASSWORD},
        follow_redirects=False,
    )  # fmt: skip
    assert signed.status_code == 303
    followup.correct_form_data(
        trial.ctx, trial.actor("coordinator"), trial.study_id, number, form_code="follow_up",
        visit_code="M1", changes={"kccq_overall_score": 70}, reason="re-scored",
    )  # fmt: skip
    text = monitor.get(page).text
    assert "no longer valid" in text and "follow_up at M1" in text
    assert "invalidated" in text  # the SDV mark cleared by the change
    locked = monitor.post(
        f"{page}/lock",
        data={"csrf_token": token, "level": "casebook", "reason": "review",
              "password": PASSWORD},
        follow_redirects=False,
    )  # fmt: skip
    assert locked.status_code == 303
    assert "a lock of the casebook of" in monitor.get(page).text
    checklist = monitor.get("/records/checklist")
    assert checklist.status_code == 200 and number in checklist.text
    assert coordinator.get("/records/checklist").status_code == 403
