"""Unknown and concealed forms through the pages and the API (issue 12): a form the protocol
lacks, or one that is not a screening form, gets a clear 4xx and changes nothing; a data query
on the index procedure record gets the same 422 for an implant and a sham subject (RAND-6)."""

from __future__ import annotations

import pytest

from tests import journey as j
from tests.conftest import Trial
from tests.e2e.test_api_support import Api, problem_code
from tests.e2e.test_web_pages import csrf_of, signed_in
from tests.integration.test_clinical_dates import _snapshot


@pytest.mark.req("DATA-1")
@pytest.mark.parametrize(
    ("form", "status", "says"),
    [
        ("no_such_form", 404, "form no_such_form is not in protocol"),
        ("follow_up", 404, "has not been saved"),  # saved forms are shown (issue 14)
        ("implant_procedure", 422, "concealed because it would tell the arm"),
    ],
)
def test_data1_a_page_for_a_form_unknown_unsaved_or_concealed_is_a_clear_4xx(
    trial: Trial, form: str, status: int, says: str
) -> None:
    """The form page answers each case with one clear message; a POST changes nothing."""
    number = j.consented(trial)
    browser = signed_in(trial, "coordinator")
    page = browser.get(f"/subjects/{number}/forms/{form}")
    assert page.status_code == status
    assert says in page.text
    before = _snapshot(trial)
    posted = browser.post(
        f"/subjects/{number}/forms/{form}",
        data={"csrf_token": csrf_of(browser), f"{form}.x": "1"},
    )
    assert 400 <= posted.status_code < 500
    assert _snapshot(trial) == before


@pytest.mark.req("DATA-1")
def test_data1_the_api_has_no_get_on_a_subject_form_and_says_so(trial: Trial) -> None:
    number = j.consented(trial)
    api = Api(trial)
    response = api.get("coordinator", f"/subjects/{number}/forms/no_such_form")
    assert response.status_code == 405
    posted = api.post("coordinator", f"/subjects/{number}/forms/no_such_form", {"values": {}})
    assert posted.status_code == 422
    assert problem_code(posted) == "validation-failed"


@pytest.mark.req("RAND-6")
def test_rand6_api_query_on_the_index_procedure_is_the_same_422_for_both_arms(
    trial: Trial,
) -> None:
    by_arm: dict[str, str] = {}
    while len(by_arm) < 2:
        number, arm = j.procedure_done(trial)
        by_arm.setdefault(arm, number)
    api = Api(trial)
    answers = set()
    for number in by_arm.values():
        response = api.post(
            "monitor",
            "/queries",
            {"subject": number, "form": "index_procedure", "field": "procedure_date", "text": "?"},
        )
        assert response.status_code == 422, response.text
        body = response.json()
        answers.add((body["detail"].replace(number, "N"), str(body.get("errors"))))
    assert len(answers) == 1
