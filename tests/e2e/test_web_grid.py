"""The record status grid and the subject casebook (issue 14). SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re

from tests import flagship_data as fd
from tests import journey
from tests.conftest import Trial
from tests.e2e.test_web_pages import signed_in
from trialdesk.services import data_queries, followup, record_grid


def _followed(t: Trial) -> tuple[str, str]:
    """Subject A with M1 done and a query on it answered by a correction; subject B
    randomized the same day whose M1 is never recorded."""
    a, _arm = journey.procedure_done(t)
    b, _arm = journey.procedure_done(t)
    on = journey.visit_dates()["M1"]
    t.clock.set_day(on)
    followup.record_visit(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        a,
        visit_code="M1",
        visit_date=on,
        forms=fd.follow_up_forms(on.isoformat()),
    )
    query = data_queries.raise_query(
        t.ctx,
        t.actor("monitor"),
        t.study_id,
        a,
        form_code="follow_up",
        field="nyha_class",
        text="Source says III",
        visit_code="M1",
    )
    data_queries.answer_query(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        query.id,
        text="Corrected",
        new_value="III",
        reason="transcription error",
    )
    return a, b


def test_rep_grid_cells_link_to_forms_and_show_windows(trial: Trial) -> None:
    """Issue 14: each cell says the form's or visit's status and links to it; a visit past
    its window unrecorded is overdue, one with an unresolved query says so; the status and
    site filters narrow the rows in the service."""
    a, b = _followed(trial)
    registered = journey.register(trial)
    trial.clock.set_day(journey.visit_dates()["M1"] + dt.timedelta(days=20))
    grid = record_grid.status_grid(trial.ctx, trial.actor("monitor"), trial.study_id)
    rows = {r.subject: r for r in grid.rows}
    m1 = [c.code for c in grid.columns].index("M1")
    tte = [c.code for c in grid.columns].index("tte")
    assert rows[a].cells[m1].status == "query"
    assert rows[a].cells[m1].url == f"/subjects/{a}/queries/follow_up?visit=M1"
    assert rows[b].cells[m1].status == "overdue"
    assert rows[b].cells[m1].url == f"/subjects/{b}/visits/M1"
    assert rows[a].cells[tte].status == "complete"
    assert rows[registered].cells[tte].status == "not_started"
    overdue = record_grid.status_grid(
        trial.ctx, trial.actor("monitor"), trial.study_id, status="overdue"
    )
    assert [r.subject for r in overdue.rows] == [b] and overdue.total == 1
    other = record_grid.status_grid(trial.ctx, trial.actor("monitor"), trial.study_id, site="S102")
    assert other.total == 0

    page = signed_in(trial, "monitor").get("/grid").text
    assert f'href="/subjects/{a}/queries/follow_up?visit=M1"' in page
    assert "overdue (window closed), window" in page
    filtered = signed_in(trial, "monitor").get("/grid", params={"status": "overdue"}).text
    assert f">{b}</a>" in filtered and f">{a}</a>" not in filtered
    assert signed_in(trial, "monitor").get("/grid", params={"status": "x"}).status_code == 422


def test_data2_casebook_shows_values_history_and_queries_printable(trial: Trial) -> None:
    """DATA-2, issue 14: the casebook shows every saved form by visit, each value with its
    corrections (old, new, who, why) and its queries; a print stylesheet hides the
    navigation; the concealed procedure record is left out (RAND-6)."""
    a, _b = _followed(trial)
    page = signed_in(trial, "monitor").get(f"/subjects/{a}/casebook").text
    assert page.index("<h2>Screening</h2>") < page.index("<h2>M1 (1 month)</h2>")
    assert "Changed from II to III by coordinator" in page and "transcription error" in page
    assert "Query #1 (answered): Source says III; answer: Corrected" in page
    assert "index procedure record is concealed" in page
    assert re.search(r"implant_procedure|sham_procedure", page) is None
    css = signed_in(trial, "monitor").get("/static/site.css").text
    assert "@media print" in css
    assert signed_in(trial, "coordinator").get("/subjects/S102-9999/casebook").status_code == 404
