"""GS1 Unique Device Identifiers (SUP-1): parse and check the human-readable form.

A GS1 UDI is the device identifier (DI: application identifier (01), a GTIN-14 whose last
digit is a mod-10 check digit) followed by production identifiers (PI): (17) expiry date
and (11) production date as YYMMDD, (10) lot or batch, (21) serial number. Only the
bracketed human-readable form (``(01)00812345000016(17)290131(10)LOT2701(21)SN000123``) is
accepted: the unbracketed element string needs the FNC1 separator a keyboard cannot type.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

from trialdesk.domain.errors import ValidationFailed

_ELEMENT = re.compile(r"\((\d{2})\)([^()]*)")
_PI_TEXT = re.compile(r"^[!-~]{1,20}$")  # GS1 AI (10)/(21): up to 20 printable characters
KNOWN_AIS = {
    "01": "GTIN",
    "11": "production date",
    "17": "expiry date",
    "10": "lot",
    "21": "serial",
}


@dataclass(frozen=True)
class Udi:
    gtin: str
    lot: str | None
    serial: str | None
    expiry: dt.date | None
    production: dt.date | None

    @property
    def text(self) -> str:
        return format_udi(self.gtin, lot=self.lot, serial=self.serial, expiry=self.expiry)


def gtin_check_digit(body: str) -> int:
    """GS1 mod-10: weights 3 and 1 alternating from the rightmost digit of the body."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def check_gtin(gtin: str, field: str = "gtin") -> str:
    if not re.fullmatch(r"\d{14}", gtin):
        raise ValidationFailed(
            f"GTIN {gtin!r} must be 14 digits (GS1 GTIN-14)", {field: "not 14 digits"}
        )
    expected = gtin_check_digit(gtin[:13])
    if int(gtin[13]) != expected:
        raise ValidationFailed(
            f"GTIN {gtin} has check digit {gtin[13]}, expected {expected}: mistyped or not a GTIN",
            {field: "wrong check digit"},
        )
    return gtin


def _yymmdd(value: str, what: str, field: str) -> dt.date:
    if not re.fullmatch(r"\d{6}", value):
        raise ValidationFailed(f"UDI {what} {value!r} is not YYMMDD", {field: f"bad {what}"})
    year, month, day = 2000 + int(value[:2]), int(value[2:4]), int(value[4:])
    if day == 0 and 1 <= month <= 12:  # GS1: day 00 means the last day of the month
        day = calendar.monthrange(year, month)[1]
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise ValidationFailed(
            f"UDI {what} {value!r} is not a calendar date", {field: f"bad {what}"}
        ) from None


def parse_udi(text: str, field: str = "udi") -> Udi:
    """The UDI's parts, or one message naming what is wrong with it."""
    value = (text or "").strip()
    if not value.startswith("(01)"):
        raise ValidationFailed(
            f"UDI {value!r} must start with the device identifier (01) followed by a GTIN-14, "
            "in GS1 human-readable form, e.g. (01)00812345000016(17)290131(10)LOT2701(21)SN001",
            {field: "not a GS1 UDI"},
        )
    parts: dict[str, str] = {}
    pos = 0
    for match in _ELEMENT.finditer(value):
        if match.start() != pos:
            break
        ai, data = match.group(1), match.group(2)
        if ai not in KNOWN_AIS:
            raise ValidationFailed(
                f"UDI application identifier ({ai}) is not one of "
                + ", ".join(f"({k}) {v}" for k, v in KNOWN_AIS.items()),
                {field: f"unknown AI ({ai})"},
            )
        if ai in parts:
            raise ValidationFailed(f"UDI repeats ({ai})", {field: f"repeated AI ({ai})"})
        parts[ai] = data
        pos = match.end()
    if pos != len(value):
        raise ValidationFailed(
            f"UDI {value!r} cannot be read after character {pos + 1}", {field: "not a GS1 UDI"}
        )
    gtin = check_gtin(parts["01"], field)
    for ai in ("10", "21"):
        if ai in parts and not _PI_TEXT.fullmatch(parts[ai]):
            raise ValidationFailed(
                f"UDI {KNOWN_AIS[ai]} {parts[ai]!r} must be 1 to 20 printable characters",
                {field: f"bad {KNOWN_AIS[ai]}"},
            )
    if "10" not in parts and "21" not in parts:
        raise ValidationFailed(
            "UDI has no production identifier: a tracked device needs (10) lot and (21) serial",
            {field: "no lot or serial"},
        )
    expiry = _yymmdd(parts["17"], "expiry date", field) if "17" in parts else None
    made = _yymmdd(parts["11"], "production date", field) if "11" in parts else None
    return Udi(
        gtin=gtin, lot=parts.get("10"), serial=parts.get("21"), expiry=expiry, production=made
    )


def format_udi(gtin: str, *, lot: str | None, serial: str | None, expiry: dt.date | None) -> str:
    """The human-readable UDI in GS1 order: (01), (17), (10), (21)."""
    text = f"(01){gtin}"
    if expiry is not None:
        text += f"(17){expiry.strftime('%y%m%d')}"
    if lot:
        text += f"(10){lot}"
    if serial:
        text += f"(21){serial}"
    return text
