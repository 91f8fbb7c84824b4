"""Form values: typed, range-checked, every problem reported, nothing half-saved (DATA-1)."""

from __future__ import annotations

import datetime as dt

import pytest

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.forms import FieldSpec, FormSpec, to_json_values, validate_values

TTE = FormSpec(
    code="tte",
    name="Transthoracic echo (core lab)",
    fields=(
        FieldSpec("exam_date", "Exam date", "date"),
        FieldSpec("exam_time", "Exam time", "time", required=False),
        FieldSpec("read_at", "Read at", "datetime", required=False),
        FieldSpec("lvef_pct", "LVEF", "decimal", unit="%", min=10, max=70),
        FieldSpec("lvedd_mm", "LVEDD", "integer", unit="mm", min=30, max=100),
        FieldSpec("mr_grade", "MR grade", "choice", choices=("0", "1", "2", "3", "4")),
        FieldSpec("comment", "Comment", "text", required=False, max_length=20),
        FieldSpec("heart_team", "Heart team: no surgery", "boolean", required=False),
    ),
)

GOOD_STRINGS = {
    "exam_date": "2027-01-05",
    "exam_time": "14:30",
    "read_at": "2027-01-05T14:30:00+00:00",
    "lvef_pct": "35.5",
    "lvedd_mm": "64",
    "mr_grade": "3",
    "comment": "  good window  ",
    "heart_team": "Yes",
}


def test_data1_strings_from_web_or_cli_become_typed_values() -> None:
    """DATA-1: web-form/CLI strings are converted to int, float, str, bool, date, time."""
    typed = validate_values(TTE, GOOD_STRINGS)
    assert typed == {
        "exam_date": dt.date(2027, 1, 5),
        "exam_time": dt.time(14, 30),
        "read_at": dt.datetime(2027, 1, 5, 14, 30, tzinfo=dt.UTC),
        "lvef_pct": 35.5,
        "lvedd_mm": 64,
        "mr_grade": "3",
        "comment": "good window",
        "heart_team": True,
    }
    assert type(typed["lvedd_mm"]) is int
    assert type(typed["lvef_pct"]) is float


def test_data1_json_values_are_accepted_and_optional_blanks_are_none() -> None:
    """DATA-1: JSON numbers/booleans work; optional fields left out come back as None."""
    typed = validate_values(
        TTE,
        {"exam_date": "2027-01-05", "lvef_pct": 40, "lvedd_mm": 64.0, "mr_grade": 2, "comment": ""},
    )
    assert typed["lvef_pct"] == 40.0
    assert typed["lvedd_mm"] == 64
    assert typed["mr_grade"] == "2"
    assert typed["exam_time"] is None
    assert typed["read_at"] is None
    assert typed["comment"] is None
    assert typed["heart_team"] is None


def test_data1_stored_json_round_trips() -> None:
    """DATA-1: stored JSON values (ISO strings) read back to the same typed values."""
    typed = validate_values(TTE, GOOD_STRINGS)
    stored = to_json_values(typed)
    assert stored["exam_date"] == "2027-01-05"
    assert stored["exam_time"] == "14:30:00"
    assert stored["read_at"] == "2027-01-05T14:30:00+00:00"
    assert validate_values(TTE, stored) == typed


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        ("exam_date", "05/01/2027", "'05/01/2027' is not a date (YYYY-MM-DD)"),
        ("exam_date", "2027-02-30", "'2027-02-30' is not a valid calendar date"),
        ("exam_date", 20270105, "20270105 is not a date (YYYY-MM-DD)"),
        ("exam_time", "2:30pm", "'2:30pm' is not a time (HH:MM or HH:MM:SS)"),
        ("exam_time", "25:00", "'25:00' is not a valid time of day"),
        ("read_at", "2027-01-05T14:30:00", "needs a time zone offset"),
        ("read_at", "yesterday", "'yesterday' is not a date and time"),
        ("lvef_pct", "75", "75 % is above the maximum 70 %"),
        ("lvef_pct", "9.5", "9.5 % is below the minimum 10 %"),
        ("lvef_pct", "12,5", "'12,5' is not a number (use '.' as the decimal point)"),
        ("lvef_pct", "nan", "'nan' is not a number"),
        ("lvef_pct", float("inf"), "inf is not a finite number"),
        ("lvef_pct", True, "True is not a number"),
        ("lvedd_mm", "64.5", "'64.5' is not a whole number"),
        ("lvedd_mm", True, "must be a whole number, not yes/no"),
        ("lvedd_mm", 101, "101 mm is above the maximum 100 mm"),
        ("lvedd_mm", "29", "29 mm is below the minimum 30 mm"),
        ("mr_grade", "5", "'5' is not one of the choices: 0, 1, 2, 3, 4"),
        ("mr_grade", "3+", "'3+' is not one of the choices: 0, 1, 2, 3, 4"),
        ("comment", "x" * 21, "is 21 characters long; the maximum is 20"),
        ("comment", 12, "12 is not text"),
        ("heart_team", "1", "'1' is not yes/no (yes, no, true or false)"),
        ("heart_team", "maybe", "'maybe' is not yes/no"),
    ],
)
def test_data1_each_bad_value_gets_a_per_field_message(
    field: str, raw: object, message: str
) -> None:
    """DATA-1: a bad value of any type raises with one message for that field only."""
    result: dict[str, object] | None = None
    with pytest.raises(ValidationFailed) as err:
        result = validate_values(TTE, GOOD_STRINGS | {field: raw})
    assert result is None
    assert set(err.value.problems) == {field}
    assert message in err.value.problems[field]
    assert f"{field}: {message}" in err.value.message


def test_data1_every_problem_is_collected_into_one_error() -> None:
    """DATA-1: unknown, required, wrong-type and out-of-range problems all come back at once."""
    raw: dict[str, object] = {
        "exam_date": "  ",
        "lvef_pct": "75",
        "lvedd_mm": "abc",
        "mr_grade": None,
        "heart_team": "perhaps",
        "lvef": 35,
    }
    before = dict(raw)
    with pytest.raises(ValidationFailed) as err:
        validate_values(TTE, raw)
    assert err.value.problems == {
        "lvef": "is not a field of form tte",
        "exam_date": "is required",
        "lvef_pct": "75 % is above the maximum 70 %",
        "lvedd_mm": "'abc' is not a whole number",
        "mr_grade": "is required",
        "heart_team": "'perhaps' is not yes/no (yes, no, true or false)",
    }
    assert err.value.message.startswith("form tte: 6 problems: ")
    assert raw == before


def test_data1_boundaries_are_inclusive() -> None:
    """DATA-1: the minimum and maximum themselves are allowed."""
    typed = validate_values(TTE, GOOD_STRINGS | {"lvef_pct": "70", "lvedd_mm": "30"})
    assert (typed["lvef_pct"], typed["lvedd_mm"]) == (70.0, 30)


def test_data1_datetime_keeps_its_offset_and_accepts_z() -> None:
    """DATA-1: aware datetimes only; 'Z' and explicit offsets are both fine."""
    typed = validate_values(TTE, GOOD_STRINGS | {"read_at": "2027-01-05T14:30:00Z"})
    assert typed["read_at"] == dt.datetime(2027, 1, 5, 14, 30, tzinfo=dt.UTC)
    cet = validate_values(TTE, GOOD_STRINGS | {"read_at": "2027-01-05T15:30:00+01:00"})
    read_at = cet["read_at"]
    assert isinstance(read_at, dt.datetime)
    assert read_at.utcoffset() == dt.timedelta(hours=1)


def test_data1_choice_field_without_choices_is_reported_not_crashed() -> None:
    """DATA-1: a protocol defect shows as a field message, never a traceback."""
    form = FormSpec("f", "F", (FieldSpec("c", "C", "choice"),))
    with pytest.raises(ValidationFailed) as err:
        validate_values(form, {"c": "x"})
    assert err.value.problems == {"c": "has no choices defined in the protocol"}
