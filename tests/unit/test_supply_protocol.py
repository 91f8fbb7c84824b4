"""The protocol's optional `supply:` section (SUP-1, SUP-2): checked against the arms, forms
and sites it names, each problem with its line; a protocol without it still loads."""

from __future__ import annotations

import pytest

from tests.conftest import flagship
from trialdesk.protocol.loader import ProtocolInvalid, parse_protocol


def _variant(old: str, new: str) -> str:
    text = flagship().text
    assert old in text
    return text.replace(old, new)


def test_sup2_flagship_supply_section_reads_as_written() -> None:
    supply = flagship().protocol.supply
    assert supply is not None
    assert (supply.device_arms, supply.device_field, supply.released_field) == (
        ["INT"],
        "device_udi",
        "implant_released",
    )
    assert supply.reorder_level_for("S101") == 2


def test_sup2_protocol_without_supply_loads() -> None:
    text = flagship().text
    plain = parse_protocol(text[: text.index("\nsupply:")] + "\n")
    assert plain.protocol.supply is None


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ("device_arms: [INT]", "device_arms: [XYZ]", "supply.device_arms[0]", "unknown arm 'XYZ'"),
        ("device_arms: [INT]", "device_arms: [CTRL]", "supply.device_field", "sham_procedure"),
        ("device_field: device_udi", "device_field: start_time", "supply.device_field", "text"),
        (
            "released_field: implant_released",
            "released_field: device_udi",
            "supply.released_field",
            "no boolean field 'device_udi'",
        ),
        (
            "  reorder_level: 2\n",
            "  reorder_level: 2\n  site_reorder_levels: {S999: 3}\n",
            "supply.site_reorder_levels.S999",
            "unknown site 'S999'",
        ),
        ("  reorder_level: 2\n", "  reorder_level: -1\n", "supply.reorder_level", ""),
    ],
)
def test_sup1_bad_supply_section_is_reported_where_it_is(
    old: str, new: str, where: str, message: str
) -> None:
    with pytest.raises(ProtocolInvalid) as info:
        parse_protocol(_variant(old, new))
    found = [str(p) for p in info.value.problems]
    assert any(where in p and message in p for p in found), found
