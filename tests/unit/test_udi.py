"""GS1 UDI parsing (SUP-1): a device is named by a UDI whose check digit, dates and parts are
checked before any record is looked up."""

from __future__ import annotations

import datetime as dt

import pytest

from trialdesk.domain.errors import ValidationFailed
from trialdesk.domain.udi import check_gtin, format_udi, gtin_check_digit, parse_udi

GOOD = "(01)00812345000016(17)290131(10)LOT2701(21)SN000123"


def test_sup1_udi_parses_into_di_and_production_identifiers() -> None:
    udi = parse_udi(GOOD)
    assert (udi.gtin, udi.lot, udi.serial, udi.expiry) == (
        "00812345000016",
        "LOT2701",
        "SN000123",
        dt.date(2029, 1, 31),
    )
    assert udi.text == GOOD
    assert format_udi("00812345000016", lot="L", serial="S", expiry=None) == (
        "(01)00812345000016(10)L(21)S"
    )


def test_sup1_gtin_check_digit_matches_gs1_examples() -> None:
    """Published GS1 examples: 0061414100003 -> 6 (GTIN-14 00614141000036)."""
    assert gtin_check_digit("0061414100003") == 6
    assert check_gtin("00614141000036") == "00614141000036"


def test_sup1_day_zero_expiry_is_the_last_day_of_the_month() -> None:
    assert parse_udi("(01)00812345000016(17)280200(21)A").expiry == dt.date(2028, 2, 29)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("(01)00812345000017(17)290131(10)LOT2701(21)SN000123", "wrong check digit"),
        ("0100812345000016172901311" + "0LOT2701", "not a GS1 UDI"),
        ("(01)0081234500001(10)LOT", "not 14 digits"),
        ("(01)00812345000016", "no lot or serial"),
        ("(01)00812345000016(17)291331(21)S1", "bad expiry date"),
        ("(01)00812345000016(99)X(21)S1", "unknown AI (99)"),
        ("(01)00812345000016(21)S1(21)S2", "repeated AI (21)"),
        ("(01)00812345000016(21)S1 trailing(", "not a GS1 UDI"),
        ("(01)00812345000016(21)" + "X" * 21, "bad serial"),
        ("", "not a GS1 UDI"),
    ],
)
def test_sup1_malformed_udi_gets_one_clear_problem(text: str, problem: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_udi(text, "device_udi")
    assert info.value.problems == {"device_udi": problem}
    assert info.value.message
