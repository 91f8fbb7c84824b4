"""The device lifecycle as data (domain/supply.py): every move's states, and what a blinded
caller may learn of where a device is (SUP-1, SUP-2, RAND-6)."""

from __future__ import annotations

import pytest

from trialdesk.domain.supply import (
    AT_SITES,
    MOVES,
    DeviceMove,
    DeviceState,
    blinded_place,
    may_move,
    not_shippable,
    target,
)

D = DeviceState


def test_sup1_every_move_starts_and_ends_where_the_table_says() -> None:
    """SUP-1: ship only from the depot, receive only in transit, implant only from the
    shelf, a quarantine wherever a device is still in stock, never out of a final state."""
    assert {m: (sorted(t.sources), t.target) for m, t in MOVES.items()} == {
        DeviceMove.SHIP: (["at_depot"], D.IN_TRANSIT),
        DeviceMove.RECEIVE: (["in_transit"], D.AT_SITE),
        DeviceMove.QUARANTINE: (["at_depot", "at_site", "in_transit"], D.QUARANTINED),
        DeviceMove.IMPLANT: (["at_site"], D.IMPLANTED),
        DeviceMove.USE_NOT_RELEASED: (["at_site"], D.QUARANTINED),
        DeviceMove.RETURN: (["at_site", "quarantined"], D.RETURNED),
        DeviceMove.DESTROY_AT_SITE: (["at_site", "quarantined"], D.DESTROYED),
        DeviceMove.DESTROY_AT_DEPOT: (["at_depot", "quarantined", "returned"], D.DESTROYED),
    }


@pytest.mark.parametrize("final", [D.IMPLANTED, D.DESTROYED])
def test_sup1_nothing_moves_a_device_out_of_a_final_state(final: DeviceState) -> None:
    """SUP-1: an implanted or destroyed device is accounted for; no move starts there."""
    assert not [m for m in DeviceMove if may_move(m, final)]


def test_sup1_a_device_reaches_every_state_from_the_depot() -> None:
    """SUP-1: the table is connected: every state is reachable from registration."""
    seen = {D.AT_DEPOT}
    frontier = [D.AT_DEPOT]
    while frontier:
        state = frontier.pop()
        for move in DeviceMove:
            if may_move(move, state) and target(move) not in seen:
                seen.add(target(move))
                frontier.append(target(move))
    assert seen == set(DeviceState)


def test_rand6_a_blinded_caller_sees_use_and_non_use_at_a_site_alike() -> None:
    """RAND-6, SUP-2: once delivered, implanted, quarantined after use, on the shelf,
    returned and destroyed are one place; the depot's own states stay apart."""
    delivered = {
        blinded_place(state, shipped=True, in_transit=False)
        for state in (D.AT_SITE, D.IMPLANTED, D.QUARANTINED, D.RETURNED, D.DESTROYED)
    }
    assert delivered == {AT_SITES}
    assert blinded_place(D.IN_TRANSIT, shipped=True, in_transit=True) == "in_transit"
    assert blinded_place(D.QUARANTINED, shipped=False, in_transit=False) == "quarantined_at_depot"
    assert blinded_place(D.AT_DEPOT, shipped=False, in_transit=False) == "at_depot"


def test_rand6_a_shipped_device_is_refused_shipping_without_naming_its_state() -> None:
    """RAND-6: the refusal to ship a device that left the depot is the same whatever
    happened to it at the site."""
    answers = {not_shippable(s, shipped=True) for s in (D.IMPLANTED, D.AT_SITE, D.RETURNED)}
    assert answers == {"is not in depot stock (it was shipped)"}
    assert not_shippable(D.QUARANTINED, shipped=False) == "is quarantined at the depot"
