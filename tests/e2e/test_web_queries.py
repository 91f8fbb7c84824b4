"""Data queries end to end on the pages (issue 14, DATA-2): the monitor raises a query on a
field of a form instance (the visit named), the site answers (correcting the value with a
reason), the monitor closes and reopens; the whole thread shows on the form and the query list
filters by status, site, age and subject and pages in the service. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from tests import flagship_data as fd
from tests import journey
from tests.conftest import Trial
from tests.e2e.test_web_pages import csrf_of, signed_in
from trialdesk.domain.errors import ValidationFailed
from trialdesk.services import data_queries, followup, query_pages


def _m1_done(t: Trial) -> str:
    number, _arm = journey.procedure_done(t)
    on = journey.visit_dates()["M1"]
    t.clock.set_day(on)
    followup.record_visit(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        visit_code="M1",
        visit_date=on,
        forms=fd.follow_up_forms(on.isoformat()),
    )
    return number


def test_data2_query_raised_answered_with_correction_closed_and_reopened(trial: Trial) -> None:
    """DATA-2: every step through the pages; the thread on the form names the visit and
    shows each step with who and the texts, the correction's old and new value and reason."""
    number = _m1_done(trial)
    form_page = f"/subjects/{number}/queries/follow_up?visit=M1"
    monitor = signed_in(trial, "monitor")
    page = monitor.get(form_page).text
    assert "Follow-up visit at M1 (1 month)" in page or "at M1 (1 month)" in page
    assert "Raise a query on" in page and "Send answer" not in page
    raised = monitor.post(
        f"/subjects/{number}/queries/follow_up",
        data={
            "field": "nyha_class",
            "visit": "M1",
            "text": "Source says NYHA III; please check",
            "csrf_token": csrf_of(monitor, form_page),
        },
    )
    assert raised.status_code == 303
    assert "Query raised." in monitor.get(raised.headers["location"]).text

    site = signed_in(trial, "coordinator")
    listed = site.get("/queries").text
    assert "Source says NYHA III; please check" in listed and "follow_up.nyha_class" in listed
    assert ">M1<" in listed  # the visit named
    page = site.get(form_page).text
    assert "Send answer" in page and "Raise a query on" not in page
    (query,) = query_pages.query_list(trial.ctx, trial.actor("monitor"), trial.study_id).items
    qid = query.query.id
    answered = site.post(
        f"/queries/{qid}/answer",
        data={
            "subject": number,
            "form": "follow_up",
            "visit": "M1",
            "text": "Transcription error, corrected",
            "new_value": "III",
            "reason": "source document says class III",
            "csrf_token": csrf_of(site, form_page),
        },
    )
    assert answered.status_code == 303
    assert "Answer sent to the monitor." in site.get(answered.headers["location"]).text

    page = monitor.get(form_page).text
    assert "Transcription error, corrected" in page
    assert "value changed from “II” to “III”: source document says class III" in page
    token = csrf_of(monitor, form_page)
    back = {"subject": number, "form": "follow_up", "visit": "M1", "csrf_token": token}
    closed = monitor.post(f"/queries/{qid}/close", data={**back, "text": ""})
    assert closed.status_code == 303
    reopened = monitor.post(f"/queries/{qid}/reopen", data={**back, "text": "Date also wrong"})
    assert reopened.status_code == 303
    page = monitor.get(form_page).text
    steps = ["Raised</strong>", "Answered</strong>", "Closed</strong>", "Reopened</strong>"]
    positions = [page.index(s) for s in steps]
    assert positions == sorted(positions)
    assert "Date also wrong" in page
    view = data_queries.open_queries(trial.ctx, trial.actor("monitor"), trial.study_id)[0]
    assert view.status == "open" and view.reopened == 1


def test_data2_refused_steps_keep_the_text_and_change_nothing(trial: Trial) -> None:
    """DATA-2: an empty question, or closing an unanswered query, is refused with one
    message; the typed text is kept and no query changes."""
    number = _m1_done(trial)
    form_page = f"/subjects/{number}/queries/follow_up?visit=M1"
    monitor = signed_in(trial, "monitor")
    token = csrf_of(monitor, form_page)
    empty = monitor.post(
        f"/subjects/{number}/queries/follow_up",
        data={"field": "lvef_pct", "visit": "M1", "text": "  ", "csrf_token": token},
    )
    assert empty.status_code == 422
    assert not data_queries.open_queries(trial.ctx, trial.actor("monitor"), trial.study_id)
    data_queries.raise_query(
        trial.ctx,
        trial.actor("monitor"),
        trial.study_id,
        number,
        form_code="follow_up",
        field="lvef_pct",
        text="Check LVEF",
        visit_code="M1",
    )
    (q,) = data_queries.open_queries(trial.ctx, trial.actor("monitor"), trial.study_id)
    refused = monitor.post(
        f"/queries/{q.id}/close",
        data={"subject": number, "form": "follow_up", "visit": "M1", "csrf_token": token},
    )
    assert refused.status_code == 422 and "has no answer yet" in refused.text
    site = signed_in(trial, "coordinator")
    wrong = site.post(
        f"/queries/{q.id}/answer",
        data={
            "subject": number,
            "form": "follow_up",
            "visit": "M1",
            "text": "Corrected",
            "new_value": "not a number",
            "reason": "typo",
            "csrf_token": csrf_of(site, form_page),
        },
    )
    assert wrong.status_code == 422
    assert 'value="not a number"' in wrong.text and "Corrected</textarea>" in wrong.text
    (q,) = data_queries.open_queries(trial.ctx, trial.actor("monitor"), trial.study_id)
    assert q.status == "open"


def test_data2_query_list_filters_by_status_site_age_subject_and_pages(trial: Trial) -> None:
    """DATA-2: status, age (days since raised), site and subject filters and the paging are
    the repository's (the page never slices): each filter narrows the count it shows."""
    number = _m1_done(trial)
    monitor_actor = trial.actor("monitor")
    for field in ("nyha_class", "lvef_pct", "lvedd_mm"):
        data_queries.raise_query(
            trial.ctx,
            monitor_actor,
            trial.study_id,
            number,
            form_code="follow_up",
            field=field,
            text=f"Check {field}",
            visit_code="M1",
        )
    trial.clock.set_day(journey.visit_dates()["M1"] + dt.timedelta(days=10))
    data_queries.raise_query(
        trial.ctx,
        monitor_actor,
        trial.study_id,
        number,
        form_code="follow_up",
        field="mr_grade",
        text="Check MR grade",
        visit_code="M1",
    )

    def count(**filters: object) -> int:
        return query_pages.query_list(trial.ctx, monitor_actor, trial.study_id, **filters).total  # type: ignore[arg-type]

    assert count() == 4
    assert count(older_than_days=7) == 3
    assert count(status="closed") == 0
    assert count(site="S101") == 4 and count(site="S102") == 0
    assert count(subject=number) == 4 and count(subject="S199") == 0
    page = query_pages.query_list(trial.ctx, monitor_actor, trial.study_id, offset=2, limit=2)
    assert [line.query.field for line in page.items] == ["lvedd_mm", "mr_grade"]
    assert page.total == 4
    newest = query_pages.query_list(trial.ctx, monitor_actor, trial.study_id, newest_first=True)
    assert newest.items[0].query.field == "mr_grade" and newest.items[0].age_days == 0
    with pytest.raises(ValidationFailed):
        query_pages.query_list(trial.ctx, monitor_actor, trial.study_id, status="pending")

    monitor = signed_in(trial, "monitor")
    aged = monitor.get("/queries", params={"older_than": "7"}).text
    assert "Showing 1–3 of 3" in aged and "Check MR grade" not in aged
    assert monitor.get("/queries", params={"per_page": "7"}).status_code == 422
    assert monitor.get("/queries", params={"status": "bogus"}).status_code == 422
