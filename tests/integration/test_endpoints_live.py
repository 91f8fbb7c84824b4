"""Endpoints from live data (END-1, END-2, END-3), on SQLite and PostgreSQL.

A small trial is built through the services: five subjects per arm, each with a scripted
history chosen once its arm is known (as the implanting team sees it), plus surplus subjects
marked "randomized in error". Every number is checked against a count by hand of that
dataset (day 0 = randomization, 2027-02-15 for everyone; baseline KCCQ 48.5):

| subject | history (day) | END-2 outcome (F = follow-up days, MI = mitral) |
|---|---|---|
| I1 | MAE device embolization 100; M12 340; M24 720 KCCQ 70 | F 720, KCCQ +21.5 |
| I2 | non-MAE AE 50; M12 350 and M18 545 report HF stays; M24 730 KCCQ 50 | F 730, HF 350, +1.5 |
| I3 | mitral repair 300; M12 360; MAE PCI 400; M24 745 KCCQ 55 | F 730, MI 300, +6.5 |
| I4 | died 100 | F 100, death 100 |
| I5 | M6 180; withdrew 200 | F 200 |
| C1 | M6 180; died 200 | F 200, death 200 |
| C2 | M12 362; LVAD 500; M24 730 KCCQ 45 | F 730, LVAD 500, -3.5 |
| C3 | M12 364 reports 2 HF hospitalizations; withdrew 400 | F 400, HF 364 |
| C4 | M12 370; M24 725 KCCQ 53.5 | F 725, +5.0 |
| C5 | MAE cardiac perforation 30; M12 365; M24 730 KCCQ 48.5; mitral surgery 800 | F 730, 0.0 |
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial
from trialdesk.domain.endpoints import SubjectOutcome, safety_bound
from trialdesk.domain.errors import PermissionDenied
from trialdesk.domain.roles import Role
from trialdesk.services import endpoints, followup
from trialdesk.services.access import operator_actor
from trialdesk.services.allocation.unblinding import mark_randomized_in_error
from trialdesk.services.setup import create_user

DAY0 = j.PROCEDURE
PER_ARM = 5


def day(n: int) -> dt.date:
    return DAY0 + dt.timedelta(days=n)


def _visit(t: Trial, number: str, code: str, n: int, *, kccq: float = 61.0, hf: int = 0) -> None:
    on = day(n)
    t.clock.set_day(on)
    forms = fd.follow_up_forms(on.isoformat())
    forms["follow_up"].update(kccq_overall_score=kccq, hf_hospitalizations=hf)
    followup.record_visit(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        visit_code=code,
        visit_date=on,
        forms=forms,
    )


def _ae(t: Trial, number: str, n: int, category: str) -> None:
    t.clock.set_day(day(n))
    (values,) = fd.adverse_event_forms(day(n).isoformat(), mae_category=category).values()
    followup.record_adverse_event(t.ctx, t.actor("coordinator"), t.study_id, number, values=values)


def _therapy(t: Trial, number: str, n: int, kind: str) -> None:
    t.clock.set_day(day(n))
    followup.record_therapy(
        t.ctx, t.actor("coordinator"), t.study_id, number, therapy_date=day(n), therapy_type=kind
    )


def _death(t: Trial, number: str, n: int) -> None:
    t.clock.set_day(day(n))
    followup.record_death(
        t.ctx, t.actor("coordinator"), t.study_id, number, death_date=day(n), cause="heart failure"
    )


def _withdraw(t: Trial, number: str, n: int) -> None:
    t.clock.set_day(day(n))
    followup.withdraw(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        withdrawn_on=day(n),
        reason="subject decision",
        follow_up_contact_allowed=False,
    )


def _enrol(t: Trial) -> tuple[dict[str, list[str]], list[str]]:
    """Five subjects per arm as the implanter sees the arms, plus at least one surplus."""
    by_arm: dict[str, list[str]] = {"INT": [], "CTRL": []}
    surplus: list[str] = []
    while min(len(v) for v in by_arm.values()) < PER_ARM:
        assert len(surplus) + sum(map(len, by_arm.values())) < 40, "list never balances"
        number, arm = j.procedure_done(t)
        (by_arm[arm] if len(by_arm[arm]) < PER_ARM else surplus).append(number)
    surplus.append(j.procedure_done(t)[0])
    return by_arm, surplus


def build(t: Trial) -> tuple[dict[str, str], list[str]]:
    """The dataset of the module docstring; returns scenario name -> subject number."""
    by_arm, surplus = _enrol(t)
    s = {f"I{i + 1}": n for i, n in enumerate(by_arm["INT"])}
    s |= {f"C{i + 1}": n for i, n in enumerate(by_arm["CTRL"])}

    _ae(t, s["I1"], 100, "device_embolization")
    _visit(t, s["I1"], "M12", 340)
    _visit(t, s["I1"], "M24", 720, kccq=70.0)

    _ae(t, s["I2"], 50, "none")
    _visit(t, s["I2"], "M12", 350, hf=1)
    _visit(t, s["I2"], "M18", 545, hf=3)
    _visit(t, s["I2"], "M24", 730, kccq=50.0)

    _therapy(t, s["I3"], 300, "transcatheter_mitral_repair")
    _visit(t, s["I3"], "M12", 360)
    _ae(t, s["I3"], 400, "pci")
    _visit(t, s["I3"], "M24", 745, kccq=55.0)

    _death(t, s["I4"], 100)

    _visit(t, s["I5"], "M6", 180)
    _withdraw(t, s["I5"], 200)

    _visit(t, s["C1"], "M6", 180)
    _death(t, s["C1"], 200)

    _visit(t, s["C2"], "M12", 362)
    _therapy(t, s["C2"], 500, "lvad")
    _visit(t, s["C2"], "M24", 730, kccq=45.0)

    _visit(t, s["C3"], "M12", 364, hf=2)
    _withdraw(t, s["C3"], 400)

    _visit(t, s["C4"], "M12", 370)
    _visit(t, s["C4"], "M24", 725, kccq=53.5)

    _ae(t, s["C5"], 30, "cardiac_perforation")
    _visit(t, s["C5"], "M12", 365)
    _visit(t, s["C5"], "M24", 730, kccq=48.5)
    _therapy(t, s["C5"], 800, "mitral_surgery")

    # surplus subjects: an early MAE that must not count, then flagged in error
    for number in surplus:
        _ae(t, number, 10, "vessel_erosion")
        mark_randomized_in_error(
            t.ctx, t.actor("statistician"), t.study_id, number, "randomized twice by mistake"
        )
    t.clock.set_day(day(900))
    return s, surplus


EXPECTED: dict[str, dict[str, Any]] = {
    "I1": dict(follow_up_days=720, kccq_change=21.5),
    "I2": dict(follow_up_days=730, hf_hospitalization_day=350, kccq_change=1.5),
    "I3": dict(follow_up_days=730, mitral_intervention_day=300, kccq_change=6.5),
    "I4": dict(follow_up_days=100, death_day=100),
    "I5": dict(follow_up_days=200),
    "C1": dict(follow_up_days=200, death_day=200),
    "C2": dict(follow_up_days=730, transplant_or_lvad_day=500, kccq_change=-3.5),
    "C3": dict(follow_up_days=400, hf_hospitalization_day=364),
    "C4": dict(follow_up_days=725, kccq_change=5.0),
    "C5": dict(follow_up_days=730, kccq_change=0.0),
}


def test_end1_end2_end3_numbers_match_a_hand_count(trial: Trial) -> None:
    """END-1, END-2, END-3 from the recorded data: per subject and in total, for the
    statistician and the DSMB alike, in-error randomizations left out and counted."""
    s, surplus = build(trial)
    stat, dsmb = trial.actor("statistician"), trial.actor("dsmb")

    # END-1: I1..I4 have 12 months (M12 done, or died first); I5 withdrew at day 200.
    # Events: only I1 (I3's PCI is at day 400; C5 is control; the surplus are in error).
    safety = endpoints.safety_summary(trial.ctx, stat, trial.study_id)
    assert sorted(safety.analysed) == sorted(s[k] for k in ("I1", "I2", "I3", "I4"))
    assert safety.with_event == [s["I1"]]
    assert (safety.subjects, safety.events, safety.not_yet_evaluable) == (4, 1, 1)
    assert safety.excluded_in_error == len(surplus)
    assert safety.event_free_rate == 0.75
    bound = safety_bound(1, 4, goal=0.90)
    assert safety.lower_bound == bound.lower_bound and safety.goal == 0.90
    assert safety.meets_goal is False
    assert endpoints.safety_summary(trial.ctx, dsmb, trial.study_id) == safety
    # at day 345 only I1 (M12 at 340) and I4 (died at 100) have 12 months
    early = endpoints.safety_summary(trial.ctx, stat, trial.study_id, as_of=day(345))
    assert sorted(early.analysed) == sorted([s["I1"], s["I4"]])
    assert (early.subjects, early.events, early.not_yet_evaluable) == (2, 1, 3)

    # END-2: every outcome as counted by hand, then the pairs by hand (module docstring):
    # I1 wins all 5 (death C1, LVAD C2, HF C3, KCCQ C4 and C5); I2 wins death C1 and LVAD C2
    # and loses 3 on HF; I3 wins death C1 and LVAD C2 and loses 3 on the mitral repair;
    # I4 loses all 5 on death; I5 beats C1 on death and ties the rest (follow-up ends at 200).
    efficacy = endpoints.efficacy_summary(trial.ctx, stat, trial.study_id)
    number_to_name = {n: k for k, n in s.items()}
    got = {number_to_name[o.subject_id]: o for o in efficacy.outcomes}
    assert set(got) == set(EXPECTED)
    for name, fields in EXPECTED.items():
        arm = "INT" if name.startswith("I") else "CTRL"
        want = SubjectOutcome(subject_id=s[name], arm=arm, **fields)
        assert got[name] == want, name
    assert (efficacy.n_intervention, efficacy.n_control) == (5, 5)
    assert efficacy.excluded_in_error == len(surplus)
    result = efficacy.win_ratio
    assert result is not None
    assert (result["wins"], result["losses"], result["ties"], result["pairs"]) == (10, 11, 4, 25)
    by_level = {t["level"]: (t["wins"], t["losses"]) for t in result["by_level"]}
    assert by_level == {
        "death": (4, 5),
        "transplant_or_lvad": (3, 0),
        "mitral_intervention": (0, 3),
        "hf_hospitalization": (1, 3),
        "kccq": (2, 0),
    }
    assert result["win_ratio"] == pytest.approx(10 / 11)
    json.dumps(efficacy.to_dict(), allow_nan=False)  # JSON-ready, no NaN or Infinity
    assert endpoints.efficacy_summary(trial.ctx, dsmb, trial.study_id) == efficacy

    # as of day 360 follow-up stops at the last contact before it
    cut = endpoints.efficacy_summary(trial.ctx, stat, trial.study_id, as_of=day(360))
    cut_by_name = {number_to_name[o.subject_id]: o for o in cut.outcomes}
    assert cut_by_name["I3"].follow_up_days == 360
    assert cut_by_name["I3"].mitral_intervention_day == 300
    assert cut_by_name["I3"].kccq_change is None
    assert cut_by_name["C2"].follow_up_days == 1  # discharge; M12 and LVAD come later
    assert cut_by_name["C2"].transplant_or_lvad_day is None


def test_end3_interim_flips_to_due_exactly_at_half(trial: Trial) -> None:
    """END-3: 10 randomized (surplus in error left out) need 5 past 12 months. M12 visits on
    days 340, 350, 360, 362, 364 make the fifth on day 364; day 365 adds the rest."""
    _names, surplus = build(trial)
    manager = trial.actor("manager")
    before = endpoints.interim_status(trial.ctx, manager, trial.study_id, as_of=day(363))
    assert (before.randomized, before.past_12_months, before.threshold) == (10, 4, 5)
    assert before.due is False and before.first_due_on is None
    assert before.excluded_in_error == len(surplus)
    at = endpoints.interim_status(trial.ctx, manager, trial.study_id, as_of=day(364))
    assert (at.past_12_months, at.due, at.first_due_on) == (5, True, day(364).isoformat())
    # later: day 365 passes for everyone still on study (C4, C5; not I4, I5, C1 who left)
    now = endpoints.interim_status(trial.ctx, trial.actor("statistician"), trial.study_id)
    assert (now.randomized, now.past_12_months, now.due) == (10, 7, True)
    assert now.first_due_on == day(364).isoformat()
    # before anyone is randomized there is nothing to look at
    empty = endpoints.interim_status(trial.ctx, manager, trial.study_id, as_of=day(-1))
    assert (empty.randomized, empty.due, empty.first_due_on) == (0, False, None)
    with pytest.raises(PermissionDenied) as refused:
        endpoints.interim_status(trial.ctx, trial.actor("coordinator"), trial.study_id)
    assert refused.value.code == "forbidden"


@pytest.mark.parametrize("role", ["coordinator", "manager", "crc", "monitor", "admin", "implanter"])
def test_end2_blinded_roles_are_refused_by_arm_results(trial: Trial, role: str) -> None:
    """END-1/END-2, RAND-6: a blinded caller gets code 'blinded' and a message naming no arm."""
    number, _arm = j.procedure_done(trial)
    j.record_visit(trial, number, "M12", j.visit_dates()["M12"])
    actor = trial.actor(role)
    for call in (endpoints.safety_summary, endpoints.efficacy_summary):
        with pytest.raises(PermissionDenied) as refused:
            call(trial.ctx, actor, trial.study_id)
        assert refused.value.code == "blinded"
        assert isinstance(refused.value, endpoints.ArmsBlinded)
        text = refused.value.message
        assert not any(word in text for word in ("INT", "CTRL", "Intervention", "Control"))


def test_end2_statistician_who_also_holds_a_blinded_role_is_refused(trial: Trial) -> None:
    """ACC-2: the blinded view wins for a statistician who is also study manager."""
    create_user(
        trial.ctx,
        operator_actor(),
        trial.study_id,
        username="stat-manager",
        full_name="Sam Both",
        password=PASSWORD,
        roles=[(Role.STATISTICIAN, None), (Role.MANAGER, None)],
    )
    both = trial.actor("stat-manager")
    with pytest.raises(PermissionDenied) as refused:
        endpoints.efficacy_summary(trial.ctx, both, trial.study_id)
    assert refused.value.code == "blinded"
    # the interim status reveals no arm: the manager role is enough
    assert endpoints.interim_status(trial.ctx, both, trial.study_id).randomized == 0
