"""CONSORT flow from live data (REP-2), on SQLite and PostgreSQL.

The dataset is built through the services (see :func:`build_dataset`): one screen failure of
each reason, two subjects still in screening, seven randomized subjects (six at S101, one at
S102) whose arms are learnt as the unblinded statistician sees them; among them one implant
not released, one withdrawal, one loss to follow-up, one death, one randomization in error
(no procedure). The expected boxes are counted by hand from that list.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import pytest

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial, flagship
from tests.factory import hard_lock
from trialdesk.domain.errors import PermissionDenied, ValidationFailed
from trialdesk.services import data_queries, endpoints, followup, queries, screening
from trialdesk.services.allocation import unblinding
from trialdesk.services.report_views import consort, consort_figure

DAY0 = j.PROCEDURE
ARM_WORDS = ("Intervention", "Control", "CARILLON", "sham", "INT", "CTRL")


def day(n: int) -> dt.date:
    return DAY0 + dt.timedelta(days=n)


@dataclass
class Dataset:
    arms: dict[str, str] = field(default_factory=dict)  # number -> arm (statistician's view)
    roles: dict[str, str] = field(default_factory=dict)  # label -> number
    quick_crc: int = 0  # eligibility cases decided the same hour they opened


def _visit(t: Trial, number: str, code: str, on: dt.date, site: str = j.SITE) -> None:
    t.clock.set_day(on)
    coordinator = j.staff(t, "coordinator", site)
    forms = fd.follow_up_forms(on.isoformat())
    followup.record_visit(
        t.ctx, coordinator, t.study_id, number, visit_code=code, visit_date=on, forms=forms
    )


def build_dataset(t: Trial) -> Dataset:
    """The population described in the module docstring, built through the services."""
    data = Dataset()
    coord = t.actor("coordinator")
    # one screen failure of every reason (LIFE-3)
    declined = j.register(t)
    screening.decline_consent(t.ctx, coord, t.study_id, declined, reason="not interested")
    not_met = j.consented(t)
    j.enter_screening(t, not_met, fd.failing_screening_forms("INC-1"))
    screening.complete_screening(t.ctx, coord, t.study_id, not_met)
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
    anatomy = j.awaiting_procedure(t)
    t.clock.set_day(j.PROCEDURE)
    screening.record_anatomy(
        t.ctx, t.actor("implanter"), t.study_id, anatomy, forms=fd.failing_anatomy_forms("ANAT-2")
    )
    other = j.consented(t)
    screening.screen_fail_other(t.ctx, coord, t.study_id, other, reason="moved abroad")
    # still in screening: one consented, one whose CRC review took two days
    data.roles["in_screening"] = j.consented(t)
    slow = j.echo_qualified(t)
    t.clock.set_day(j.SCREENING + dt.timedelta(days=2))
    screening.crc_eligibility_decision(
        t.ctx,
        t.actor("crc"),
        t.study_id,
        slow,
        decision="approve",
        reason="Suitable anatomy",
        password=PASSWORD,
    )
    data.roles["slow_crc"] = slow
    data.quick_crc = 2  # rejected and anatomy (approved) were decided at once

    # randomized: six at S101, one at S102; arms as the statistician sees them
    numbers = [j.randomized(t)[0] for _ in range(6)]
    numbers.append(j.randomized(t, "S102")[0])
    data.quick_crc += 7
    stat = t.actor("statistician")
    for number in numbers:
        arm = queries.get_subject(t.ctx, stat, t.study_id, number).arm
        assert arm is not None
        data.arms[number] = arm.code
    assert set(data.arms.values()) == {"INT", "CTRL"}, "the list gave one arm only; reseed"
    in_error = numbers[5]
    unblinding.mark_randomized_in_error(
        t.ctx, stat, t.study_id, in_error, "randomized before CRC sign-off"
    )
    data.roles["in_error"] = in_error
    treated = numbers[:5] + numbers[6:]
    not_released = next(n for n in treated if data.arms[n] == "INT")
    data.roles["not_released"] = not_released
    for number in treated:
        site = number.split("-")[0]
        t.clock.set_day(j.PROCEDURE)
        if data.arms[number] == "INT":
            forms = fd.implant_procedure_forms(
                released=number != not_released, udi=j.device_udi(t, site)
            )
        else:
            forms = fd.sham_procedure_forms()
        (values,) = forms.values()
        followup.record_procedure(
            t.ctx, j.staff(t, "implanter", site), t.study_id, number, values=values
        )
        t.clock.set_day(fd.DISCHARGE_DATE)
        followup.record_discharge(
            t.ctx,
            j.staff(t, "coordinator", site),
            t.study_id,
            number,
            discharged_on=dt.date.fromisoformat(fd.DISCHARGE_DATE),
        )
    others = [n for n in numbers[:5] if n != not_released]
    withdrawn, lost, died, visits = others[:4]
    data.roles.update(withdrawn=withdrawn, lost=lost, died=died, visits=visits)
    data.roles["s102"] = numbers[6]

    # visits: on time and late at S101, early at S102, missed twice before a loss (SCHED-2)
    _visit(t, not_released, "M1", day(30))
    _visit(t, visits, "M1", day(30))
    _visit(t, numbers[6], "M1", day(20), site="S102")
    t.clock.set_day(day(40))
    followup.withdraw(
        t.ctx,
        coord,
        t.study_id,
        withdrawn,
        withdrawn_on=day(40),
        reason="moved",
        follow_up_contact_allowed=False,
    )
    t.clock.set_day(day(100))
    followup.record_death(
        t.ctx, coord, t.study_id, died, death_date=day(100), cause="heart failure"
    )
    _visit(t, visits, "M6", day(220))
    t.clock.set_day(day(230))
    followup.miss_visit(t.ctx, coord, t.study_id, lost, visit_code="M1", reason="no answer")
    followup.miss_visit(t.ctx, coord, t.study_id, lost, visit_code="M6", reason="no answer")
    followup.mark_lost_to_follow_up(
        t.ctx, coord, t.study_id, lost, on=day(230), reason="unreachable"
    )

    # a data query, an emergency unblinding and a trial-level unblinding request
    data_queries.raise_query(
        t.ctx,
        t.actor("monitor"),
        t.study_id,
        visits,
        form_code="follow_up",
        field="nyha_class",
        text="Please confirm NYHA class against the source",
        visit_code="M1",
    )
    followup.emergency_unblind(
        t.ctx, coord, t.study_id, visits, reason="acute deterioration", password=PASSWORD
    )
    hard_lock(t)  # REC-5: trial unblinding needs the hard database lock
    unblinding.request_trial_unblinding(
        t.ctx, t.actor("manager"), t.study_id, "final analysis", PASSWORD
    )
    return data


@pytest.fixture
def dataset(trial: Trial) -> Dataset:
    return trial.prepared(build_dataset)


def _expected_arm(data: Dataset, arm: str) -> dict[str, int]:
    members = [n for n, a in data.arms.items() if a == arm]
    roles = data.roles
    not_received = sum(n in (roles["not_released"], roles["in_error"]) for n in members)
    return {
        "allocated": len(members),
        "received": len(members) - not_received,
        "not_received": not_received,
        "lost_to_follow_up": sum(n == roles["lost"] for n in members),
        "discontinued": sum(n in (roles["withdrawn"], roles["died"]) for n in members),
        "analysed": len(members) - sum(n == roles["in_error"] for n in members),
    }


POOLED = {
    "phases": ["Enrolment"],
    "assessed": 14,
    "excluded": {
        "criteria_not_met": 1,
        "crc_rejected": 1,
        "anatomy_unsuitable": 1,
        "declined": 1,
        "other": 1,
    },
    "randomized": 7,
}


def test_rep2_consort_boxes_match_the_dataset_per_arm_for_the_statistician(
    trial: Trial, dataset: Dataset
) -> None:
    """REP-2: assessed, excluded by reason, randomized; per arm allocated, received / not
    received with reasons, lost, discontinued with reasons, analysed, all as counted by hand."""
    flow = consort(trial.ctx, trial.actor("statistician"), trial.study_id)
    doc = flow.to_json()
    assert {k: doc[k] for k in POOLED if k != "phases"} == {
        k: v for k, v in POOLED.items() if k != "phases"
    }
    assert doc["phases"] == ["Enrolment", "Allocation", "Follow-up", "Analysis"]
    assert flow.in_screening == 2
    for arm in ("INT", "CTRL"):
        expected = _expected_arm(dataset, arm)
        assert {k: doc["arms"][arm][k] for k in expected} == expected
    assert flow.arms is not None
    by_code = {a.code: a for a in flow.arms}
    in_error_arm = dataset.arms[dataset.roles["in_error"]]
    assert by_code["INT"].not_received_reasons.get("implant not released") == 1
    assert by_code[in_error_arm].not_received_reasons.get("procedure not yet done") == 1
    assert by_code[in_error_arm].excluded_from_analysis == {"randomized in error": 1}
    died_arm = dataset.arms[dataset.roles["died"]]
    assert by_code[died_arm].discontinued_reasons.get("died") == 1
    json.dumps(doc)  # the CLI prints it as is


def test_rep2_consort_as_of_cuts_exits_at_their_date(trial: Trial, dataset: Dataset) -> None:
    """REP-2: with a cut-off between the death (day 100) and the loss (day 230) the loss is not
    counted yet, the death and withdrawal are."""
    flow = consort(trial.ctx, trial.actor("statistician"), trial.study_id, as_of=day(150))
    doc = flow.to_json()
    assert doc["randomized"] == 7
    assert sum(a["lost_to_follow_up"] for a in doc["arms"].values()) == 0
    assert sum(a["discontinued"] for a in doc["arms"].values()) == 2
    before = consort(trial.ctx, trial.actor("statistician"), trial.study_id, as_of=j.CONSENT)
    assert before.to_json()["randomized"] == 0


@pytest.mark.parametrize("role", ["manager", "monitor", "admin"])
def test_rep2_rand6_blinded_roles_get_pooled_boxes_only(
    trial: Trial, dataset: Dataset, role: str
) -> None:
    """REP-2, RAND-6: blinded study-wide roles get the pooled counts, no `arms`, and a figure
    with no arm label."""
    actor = trial.actor(role)
    flow = consort(trial.ctx, actor, trial.study_id)
    assert flow.to_json() == POOLED
    assert flow.arms is None
    svg = consort_figure(trial.ctx, actor, trial.study_id, fmt="svg").decode()
    assert "Randomized (n=7)" in svg and "Assessed for eligibility (n=14)" in svg
    assert not [w for w in ARM_WORDS if w in svg]


def test_rep2_figure_shows_arm_boxes_to_the_unblinded_statistician(
    trial: Trial, dataset: Dataset
) -> None:
    """REP-2: the statistician's SVG carries each arm's allocation box; PNG renders too."""
    stat = trial.actor("statistician")
    svg = consort_figure(trial.ctx, stat, trial.study_id, fmt="svg").decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for arm in flagship().protocol.arms:
        n = sum(a == arm.code for a in dataset.arms.values())
        assert f"Allocated to {arm.label} (n={n})" in svg
    assert "implant not released (n=1)" in svg
    png = consort_figure(trial.ctx, stat, trial.study_id, fmt="png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_rep2_site_roles_and_bad_format_are_refused(trial: Trial, dataset: Dataset) -> None:
    """REP-2: the flow is a study-wide report (site coordinators are refused); an unknown
    figure format gets one clear message."""
    with pytest.raises(PermissionDenied, match="CONSORT flow"):
        consort(trial.ctx, trial.actor("coordinator"), trial.study_id)
    with pytest.raises(ValidationFailed, match="unknown figure format 'pdf'"):
        consort_figure(trial.ctx, trial.actor("manager"), trial.study_id, fmt="pdf")


def test_rep2_consort_2025_reasons_for_each_loss_and_analysed_as_the_endpoints_define(
    trial: Trial, dataset: Dataset
) -> None:
    """REP-2, END-1, END-2 (issue 16): each loss with its recorded reason; "analysed" is the
    primary endpoints' analysis set as the endpoint code computes it (END-2: every randomized
    subject in its arm but randomizations in error; END-1: intervention subjects with 12
    months of follow-up or an event or death within them), the others with their reason."""
    stat = trial.actor("statistician")
    doc = consort(trial.ctx, stat, trial.study_id).to_json()
    roles, arms = dataset.roles, dataset.arms
    lost_arm, withdrawn_arm = arms[roles["lost"]], arms[roles["withdrawn"]]
    assert doc["arms"][lost_arm]["reasons"]["lost_to_follow_up"] == {"unreachable": 1}
    assert doc["arms"][withdrawn_arm]["reasons"]["discontinued"].get("withdrew consent") == 1
    other = "CTRL" if lost_arm == "INT" else "INT"
    assert doc["arms"][other]["reasons"]["lost_to_follow_up"] == {}

    efficacy = endpoints.efficacy_summary(trial.ctx, stat, trial.study_id)
    safety = endpoints.safety_summary(trial.ctx, stat, trial.study_id)
    assert doc["arms"]["INT"]["analysed"] == efficacy.n_intervention
    assert doc["arms"]["CTRL"]["analysed"] == efficacy.n_control
    assert doc["arms"]["INT"]["analysed_safety"] == safety.subjects
    assert "analysed_safety" not in doc["arms"]["CTRL"]
    # by hand: in the intervention arm only the death (day 100) is evaluable at 12 months
    treated = [n for n, a in arms.items() if a == "INT" and n != roles["in_error"]]
    evaluable = [n for n in treated if n == roles["died"]]
    assert doc["arms"]["INT"]["analysed_safety"] == len(evaluable)
    waiting = len(treated) - len(evaluable)
    not_analysed = doc["arms"]["INT"]["reasons"]["not_analysed_safety"]
    assert not_analysed == ({"12 months of follow-up not yet reached": waiting} if waiting else {})


def test_rep2_figure_labels_the_four_phases_for_the_statistician_enrolment_only_blinded(
    trial: Trial, dataset: Dataset
) -> None:
    """REP-2 (CONSORT 2025): phase labels on the diagram; a blinded reader's pooled diagram
    labels enrolment only (the other phases are per arm)."""
    svg = consort_figure(trial.ctx, trial.actor("statistician"), trial.study_id).decode()
    for phase in ("Enrolment", "Allocation", "Follow-up", "Analysis"):
        assert phase in svg
    assert "primary efficacy" in svg and "primary safety" in svg
    assert "unreachable (n=1)" in svg
    blinded = consort_figure(trial.ctx, trial.actor("manager"), trial.study_id).decode()
    assert "Enrolment" in blinded
    assert not [p for p in ("Allocation", "Follow-up", "Analysis") if p in blinded]
