"""Amendment 1 of the flagship on a running study (issue 16, END-2, PROT-2): hospitalizations
recorded after the effective date carry their own dates and the win ratio reads them; counts
recorded under 1.0 stay, dated at their visit."""

from __future__ import annotations

import datetime as dt

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from trialdesk.protocol.flagship_amendment import AMENDMENT_REASON, flagship_v2_path
from trialdesk.protocol.loader import load_protocol
from trialdesk.services import amendments, endpoints, followup

DAY0 = j.PROCEDURE


def _day(n: int) -> dt.date:
    return DAY0 + dt.timedelta(days=n)


def test_win_ratio_reads_admission_dates_after_the_amendment(trial: Trial) -> None:
    """END-2: subject A's 1.0 M1 visit counts one HF stay (dated at the visit, day 30); after
    amendment 1 subject B's HF hospitalization is an adverse event admitted on day 40 and
    reported on day 45: the win ratio dates it day 40, and A's stays at day 30."""
    t = trial
    a, _arm_a = j.procedure_done(t)
    b, _arm_b = j.procedure_done(t)
    t.clock.set_day(_day(30))
    forms = fd.follow_up_forms(_day(30).isoformat())
    forms["follow_up"]["hf_hospitalizations"] = 1
    followup.record_visit(
        t.ctx, t.actor("coordinator"), t.study_id, a, visit_code="M1", visit_date=_day(30),
        forms=forms,
    )  # fmt: skip
    t.clock.set_day(_day(35))
    view = amendments.propose_amendment(
        t.ctx,
        t.actor("manager"),
        t.study_id,
        load_protocol(flagship_v2_path()),
        reason=AMENDMENT_REASON,
        password=PASSWORD,
        effective_from=_day(36),
    )
    assert view.status == "signed"
    t.clock.set_day(_day(45))
    (values,) = fd.adverse_event_forms(_day(38).isoformat()).values()
    values |= {
        "serious": True,
        "hospitalized": True,
        "hospitalization_reason": "heart_failure",
        "admission_date": _day(40).isoformat(),
        "hospital_discharge_date": _day(44).isoformat(),
    }
    followup.record_adverse_event(t.ctx, t.actor("coordinator"), t.study_id, b, values=values)
    summary = endpoints.efficacy_summary(t.ctx, t.actor("statistician"), t.study_id)
    days = {o.subject_id: o.hf_hospitalization_day for o in summary.outcomes}
    assert days[a] == 30
    assert days[b] == 40
