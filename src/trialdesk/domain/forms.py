"""Form values: raw input to typed values, every problem at once (DATA-1).

Raw values come as JSON values or as strings from a web form or the CLI; they come back
typed (int, float, str, bool, date, time, aware datetime) or not at all: one
:class:`ValidationFailed` lists a message per bad field, so nothing is ever half-saved.
Stored values (:func:`to_json_values`) go back through :func:`validate_values` on reading.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from trialdesk.domain.errors import ValidationFailed

FieldType = Literal["integer", "decimal", "text", "date", "time", "datetime", "choice", "boolean"]

_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2})?$")
_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?$"
)
_TRUE = frozenset({"yes", "true"})
_FALSE = frozenset({"no", "false"})


@dataclass(frozen=True)
class FieldSpec:
    """One field of a form; ``min``/``max`` bound numbers, ``choices`` are codes."""

    code: str
    label: str
    type: FieldType
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    required: bool = True
    max_length: int | None = None


@dataclass(frozen=True)
class FormSpec:
    code: str
    name: str
    fields: tuple[FieldSpec, ...]
    repeating: bool = False

    def field(self, code: str) -> FieldSpec:
        for spec in self.fields:
            if spec.code == code:
                return spec
        raise KeyError(code)


class _FieldError(Exception):
    """One field's problem; the message is shown to the user as is."""


def _fmt(number: float, unit: str | None) -> str:
    text = str(int(number)) if float(number).is_integer() else repr(float(number))
    return f"{text} {unit}" if unit else text


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _integer(value: object) -> int:
    if isinstance(value, bool):
        raise _FieldError("must be a whole number, not yes/no")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.match(text):
            return int(text)
        if _DECIMAL.match(text) and float(text).is_integer():
            return int(float(text))
    raise _FieldError(f"{value!r} is not a whole number")


def _decimal(value: object) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and _DECIMAL.match(value.strip()):
        number = float(value.strip())
    if number is None:
        hint = " (use '.' as the decimal point)" if isinstance(value, str) and "," in value else ""
        raise _FieldError(f"{value!r} is not a number{hint}")
    if not math.isfinite(number):
        raise _FieldError(f"{value!r} is not a finite number")
    return number


def _date(value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        raise _FieldError("must be a date without a time")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            raise _FieldError(f"{value.strip()!r} is not a valid calendar date") from None
    raise _FieldError(f"{value!r} is not a date (YYYY-MM-DD)")


def _time(value: object) -> dt.time:
    if isinstance(value, dt.time):
        return value
    if isinstance(value, str) and _TIME.match(value.strip()):
        try:
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            raise _FieldError(f"{value.strip()!r} is not a valid time of day") from None
    raise _FieldError(f"{value!r} is not a time (HH:MM or HH:MM:SS)")


def _datetime(value: object) -> dt.datetime:
    parsed: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and _DATETIME.match(value.strip()):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _FieldError(f"{value.strip()!r} is not a valid date and time") from None
    if parsed is None:
        raise _FieldError(f"{value!r} is not a date and time (e.g. 2027-01-05T14:30:00+00:00)")
    if parsed.utcoffset() is None:
        raise _FieldError("needs a time zone offset (e.g. 2027-01-05T14:30:00+00:00)")
    return parsed


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _FieldError(f"{value!r} is not yes/no (yes, no, true or false)")


def _text(value: object, spec: FieldSpec) -> str:
    if not isinstance(value, str):
        raise _FieldError(f"{value!r} is not text")
    text = value.strip()
    if spec.max_length is not None and len(text) > spec.max_length:
        raise _FieldError(f"is {len(text)} characters long; the maximum is {spec.max_length}")
    return text


def _choice(value: object, spec: FieldSpec) -> str:
    if not spec.choices:
        raise _FieldError("has no choices defined in the protocol")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # JSON number for a numeric code such as an MR grade
    if isinstance(value, str) and value.strip() in spec.choices:
        return value.strip()
    raise _FieldError(f"{value!r} is not one of the choices: {', '.join(spec.choices)}")


def _number_in_range(number: float, spec: FieldSpec) -> None:
    if spec.min is not None and number < spec.min:
        raise _FieldError(
            f"{_fmt(number, spec.unit)} is below the minimum {_fmt(spec.min, spec.unit)}"
        )
    if spec.max is not None and number > spec.max:
        raise _FieldError(
            f"{_fmt(number, spec.unit)} is above the maximum {_fmt(spec.max, spec.unit)}"
        )


def convert(spec: FieldSpec, value: object) -> object:
    """One non-blank raw value to its typed value; raises ValidationFailed for this field."""
    try:
        return _convert(spec, value)
    except _FieldError as exc:
        raise ValidationFailed(f"{spec.code}: {exc}", {spec.code: str(exc)}) from None


def _convert(spec: FieldSpec, value: object) -> object:
    if spec.type == "integer":
        whole = _integer(value)
        _number_in_range(whole, spec)
        return whole
    if spec.type == "decimal":
        number = _decimal(value)
        _number_in_range(number, spec)
        return number
    if spec.type == "text":
        return _text(value, spec)
    if spec.type == "date":
        return _date(value)
    if spec.type == "time":
        return _time(value)
    if spec.type == "datetime":
        return _datetime(value)
    if spec.type == "choice":
        return _choice(value, spec)
    if spec.type == "boolean":
        return _boolean(value)
    raise _FieldError(f"has unknown field type {spec.type!r} in the protocol")


def validate_values(form: FormSpec, raw: Mapping[str, object]) -> dict[str, object]:
    """Every field of ``form`` typed (optional blanks as ``None``), or ValidationFailed.

    Blank means missing, ``None`` or whitespace-only text. Text is stripped of surrounding
    whitespace. All problems (unknown fields, required blanks, wrong types, out-of-range
    numbers, unknown choices, overlong text) are collected into one error keyed by field.
    """
    problems: dict[str, str] = {}
    known = {spec.code for spec in form.fields}
    for key in raw:
        if key not in known:
            problems[str(key)] = f"is not a field of form {form.code}"
    typed: dict[str, object] = {}
    for spec in form.fields:
        value = raw.get(spec.code)
        if _is_blank(value):
            if spec.required:
                problems[spec.code] = "is required"
            typed[spec.code] = None
            continue
        try:
            typed[spec.code] = _convert(spec, value)
        except _FieldError as exc:
            problems[spec.code] = str(exc)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        lines = "; ".join(f"{key}: {msg}" for key, msg in problems.items())
        raise ValidationFailed(f"form {form.code}: {count}: {lines}", problems)
    return typed


def to_json_values(typed: Mapping[str, object]) -> dict[str, object]:
    """Typed values as JSON-ready values: dates, times and datetimes as ISO strings."""
    out: dict[str, object] = {}
    for key, value in typed.items():
        if isinstance(value, (dt.date, dt.time)):  # datetime is a date
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out
