"""DATA-1: every field of the flagship forms, given bad input through the services, is refused
with a message for that field, and nothing is half-saved: no new row in any table, no new
audit entry. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, inspect, select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import Trial, flagship
from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.forms import FieldSpec
from trialdesk.protocol.loader import parse_protocol
from trialdesk.protocol.specs import form_spec
from trialdesk.services import followup, screening
from trialdesk.store.audit import verify_chain
from trialdesk.store.tables import Base, FormRecordRow, VisitRow

BEFORE_CONSENT = "2027-01-01"
FUTURE = "2031-01-01"


def _bad_values(spec: FieldSpec) -> Iterator[tuple[str, object]]:
    """(what, value) pairs that are wrong for ``spec`` whatever the other fields hold."""
    if spec.required:
        yield "blank", None
    kind = spec.type
    if kind == "integer":
        yield "not a number", "twelve"
        yield "a fraction", 2.5
        if spec.max is not None:
            yield "above max", int(spec.max) + 1
        if spec.min is not None:
            yield "below min", int(spec.min) - 1
    elif kind == "decimal":
        yield "comma decimal", "1,5"
        if spec.max is not None:
            yield "above max", spec.max + 0.5
        if spec.min is not None:
            yield "below min", spec.min - 0.5
    elif kind == "date":
        yield "no such day", "2027-02-30"
        yield "not a date", "next week"
        yield "before consent", BEFORE_CONSENT
        yield "in the future", FUTURE
    elif kind == "time":
        yield "no such time", "25:61"
    elif kind == "choice":
        yield "unknown choice", "not-a-choice"
    elif kind == "boolean":
        yield "not yes/no", "maybe"
    elif kind == "text":
        yield "not text", 12345
        if spec.max_length is not None:
            yield "too long", "x" * (spec.max_length + 1)
    else:  # pragma: no cover - a new field type needs bad values here
        raise AssertionError(f"no bad values for type {kind}")


@dataclass(frozen=True)
class Case:
    form: str
    field: str
    what: str
    call: Callable[[], Any]


def _counts(t: Trial) -> dict[str, int]:
    """Rows per table (every table of the schema that the database has)."""
    with t.ctx.uow(readonly=True) as uow:
        present = set(inspect(uow.session.connection()).get_table_names())
        return {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
            if table.name in present
        }


def _root(t: Trial) -> tuple[int, str]:
    with t.ctx.uow(readonly=True) as uow:
        result = verify_chain(uow.session)
        assert result.ok, result.problem
        return result.entries, result.root


def _cases(t: Trial) -> list[Case]:
    """Subjects at the right points of the journey, and one refused call per bad value."""
    in_screening = j.consented(t)
    awaiting = j.awaiting_procedure(t)
    followed, _arm = j.procedure_done(t)
    coord, implanter = t.actor("coordinator"), t.actor("implanter")
    forms = flagship().protocol
    cases: list[Case] = []

    def each(code: str, good: dict[str, Any], make: Callable[[dict[str, Any]], Any]) -> None:
        for spec in form_spec(forms.form(code)).fields:
            for what, value in _bad_values(spec):
                cases.append(Case(code, spec.code, what, partial(make, {**good, spec.code: value})))
        cases.append(
            Case(code, "bogus_field", "unknown field", partial(make, {**good, "bogus_field": 1}))
        )

    def screening_form(code: str, values: dict[str, Any]) -> Any:
        return screening.record_screening_form(
            t.ctx, coord, t.study_id, in_screening, form_code=code, values=values
        )

    def anatomy_step(code: str, values: dict[str, Any]) -> Any:
        return screening.record_anatomy(
            t.ctx, implanter, t.study_id, awaiting, forms={**fd.anatomy_forms(), code: values}
        )

    def visit(values: dict[str, Any]) -> Any:
        on = j.visit_dates()["M1"]
        return followup.record_visit(
            t.ctx,
            coord,
            t.study_id,
            followed,
            visit_code="M1",
            visit_date=on,
            forms={"follow_up": values},
        )

    for code, good in fd.screening_forms().items():
        each(
            code,
            good,
            partial(screening_form, code),
        )
    for code, good in fd.anatomy_forms().items():
        each(code, good, partial(anatomy_step, code))
    (visit_values,) = fd.follow_up_forms().values()
    each("follow_up", visit_values, visit)
    (ae_values,) = fd.adverse_event_forms().values()
    each(
        "adverse_event",
        ae_values,
        lambda values: followup.record_adverse_event(
            t.ctx, coord, t.study_id, followed, values=values
        ),
    )
    return cases


def test_data1_every_bad_field_is_refused_alone_and_nothing_is_written(trial: Trial) -> None:
    """DATA-1: for the screening, anatomy, follow-up and adverse-event forms, each field given
    each kind of bad value is refused with exactly one problem, naming that field, and after
    all of them no table has a new row and the audit chain has no new entry."""
    cases = _cases(trial)
    trial.clock.set_day(fd.M1_DATE)  # every form's good dates are on or before today
    before_counts, before_root = _counts(trial), _root(trial)
    wrong: list[str] = []
    for case in cases:
        label = f"{case.form}.{case.field} ({case.what})"
        try:
            case.call()
        except ValidationFailed as exc:
            keys = list(exc.problems)
            if len(keys) != 1 or keys[0].split(".")[-1] != case.field:
                wrong.append(f"{label}: problems {exc.problems}")
            elif not exc.problems[keys[0]].strip() or not exc.message.strip():
                wrong.append(f"{label}: empty message")
            elif "Traceback" in exc.message:
                wrong.append(f"{label}: a traceback as the message")
        except Exception as exc:  # any other error is a wrong answer here
            wrong.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            wrong.append(f"{label}: was accepted")
    assert not wrong, "\n".join(wrong)
    assert len(cases) > 150
    assert _counts(trial) == before_counts
    assert _root(trial) == before_root


def test_data1_good_values_are_accepted_by_the_same_calls(trial: Trial) -> None:
    """DATA-1 control: the unchanged good values are saved, so the refusals above are about
    the bad field alone."""
    number, _arm = j.procedure_done(trial)
    trial.clock.set_day(fd.M1_DATE)
    before = _counts(trial)
    j.record_visit(trial, number, "M1", j.visit_dates()["M1"])
    (ae,) = fd.adverse_event_forms().values()
    followup.record_adverse_event(
        trial.ctx, trial.actor("coordinator"), trial.study_id, number, values=ae
    )
    after = _counts(trial)
    assert after["visits"] == before["visits"] + 1
    assert after["form_records"] == before["form_records"] + 2


@pytest.fixture
def two_form_trial(make_trial: Callable[..., Trial]) -> Trial:
    """The flagship with a second form (six-minute walk) at the M1 visit."""
    old = "window_after: 7, forms: [follow_up]"
    text = flagship().text
    assert old in text
    text = text.replace(old, "window_after: 7, forms: [follow_up, six_minute_walk]", 1)
    return make_trial(parse_protocol(text, source="two forms at M1"))


@pytest.mark.parametrize(
    ("bad", "problem_key"),
    [
        ({"distance_m": 5000}, "six_minute_walk.distance_m"),  # refused before anything is added
        ({"test_date": FUTURE}, "test_date"),  # refused while saving, after the first form
    ],
    ids=["range", "future-date"],
)
def test_data1_visit_with_a_bad_second_form_saves_neither_form_nor_visit(
    two_form_trial: Trial, bad: dict[str, Any], problem_key: str
) -> None:
    """DATA-1: a visit whose second form is bad leaves no visit row, no form and no audit
    entry, even when the refusal comes after the visit row and the first form were added."""
    t = two_form_trial
    number, _arm = j.procedure_done(t)
    on = j.visit_dates()["M1"]
    t.clock.set_day(on)
    forms = fd.follow_up_forms(on.isoformat())
    walk = {"test_date": on.isoformat(), "distance_m": 340}
    before_counts, before_root = _counts(t), _root(t)
    with pytest.raises(ValidationFailed) as refused:
        followup.record_visit(
            t.ctx,
            t.actor("coordinator"),
            t.study_id,
            number,
            visit_code="M1",
            visit_date=on,
            forms={**forms, "six_minute_walk": {**walk, **bad}},
        )
    assert list(refused.value.problems) == [problem_key]
    assert _counts(t) == before_counts
    assert _root(t) == before_root
    # the same visit with both forms good is saved whole
    followup.record_visit(
        t.ctx,
        t.actor("coordinator"),
        t.study_id,
        number,
        visit_code="M1",
        visit_date=on,
        forms={**forms, "six_minute_walk": walk},
    )
    with t.ctx.uow(readonly=True) as uow:
        visits = uow.session.scalar(select(func.count()).select_from(VisitRow))
        saved = set(
            uow.session.scalars(
                select(FormRecordRow.form_code).where(FormRecordRow.visit_code == "M1")
            )
        )
    assert (visits, saved) == (1, {"follow_up", "six_minute_walk"})


def test_data1_visit_date_argument_outside_consent_and_today_writes_nothing(trial: Trial) -> None:
    """DATA-1/LIFE-2: the visit date itself, before randomization or in the future, is refused
    with a message for that field and writes nothing."""
    number, _arm = j.procedure_done(trial)
    on = j.visit_dates()["M1"]
    trial.clock.set_day(on)
    before_counts, before_root = _counts(trial), _root(trial)
    for day, reason in (
        (j.PROCEDURE - dt.timedelta(days=1), "before randomization"),
        (on + dt.timedelta(days=1), "in the future"),
    ):
        with pytest.raises(ValidationFailed) as refused:
            followup.record_visit(
                trial.ctx,
                trial.actor("coordinator"),
                trial.study_id,
                number,
                visit_code="M1",
                visit_date=day,
                forms=fd.follow_up_forms(on.isoformat()),
            )
        assert refused.value.problems == {"visit_date": reason}
    assert _counts(trial) == before_counts
    assert _root(trial) == before_root
