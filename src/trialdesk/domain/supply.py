"""A device's life (SUP-1, SUP-2) as data: states, named moves, one transition table, like the
subject's lifecycle (domain/lifecycle.py).

A device is registered at the depot, shipped to a site, received there, then implanted,
returned or destroyed; a quarantine (a lot recall or a device used but not released) holds it
wherever it is. Every change of a device's state goes through :data:`MOVES`, so the services
never spell a state or a "from" list themselves. What a blinded caller may learn of a device
(:func:`blinded_place`) is a rule too: at a site, use and non-use must look alike (RAND-6).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DeviceState(StrEnum):
    AT_DEPOT = "at_depot"
    IN_TRANSIT = "in_transit"
    AT_SITE = "at_site"
    IMPLANTED = "implanted"
    RETURNED = "returned"
    DESTROYED = "destroyed"
    QUARANTINED = "quarantined"


class DeviceMove(StrEnum):
    SHIP = "ship"
    RECEIVE = "receive"
    QUARANTINE = "quarantine"
    IMPLANT = "implant"
    USE_NOT_RELEASED = "use_not_released"
    RETURN = "return"
    DESTROY_AT_SITE = "destroy_at_site"
    DESTROY_AT_DEPOT = "destroy_at_depot"


class LotStatus(StrEnum):
    RELEASED = "released"
    QUARANTINED = "quarantined"


class ShipmentStatus(StrEnum):
    IN_TRANSIT = "in_transit"
    RECEIVED = "received"


class DeviceEventKind(StrEnum):
    """One row of a device's log (its event kind); the two procedure kinds tell use."""

    REGISTERED = "registered"
    SHIPPED = "shipped"
    RECEIVED = "received"
    QUARANTINED = "quarantined"
    IMPLANTED = "implanted"
    USED_NOT_RELEASED = "used_not_released"
    RETURNED = "returned"
    DESTROYED = "destroyed"


D = DeviceState


@dataclass(frozen=True)
class Transition:
    sources: frozenset[DeviceState]
    target: DeviceState


MOVES: dict[DeviceMove, Transition] = {
    DeviceMove.SHIP: Transition(frozenset({D.AT_DEPOT}), D.IN_TRANSIT),
    DeviceMove.RECEIVE: Transition(frozenset({D.IN_TRANSIT}), D.AT_SITE),
    DeviceMove.QUARANTINE: Transition(
        frozenset({D.AT_DEPOT, D.IN_TRANSIT, D.AT_SITE}), D.QUARANTINED
    ),
    DeviceMove.IMPLANT: Transition(frozenset({D.AT_SITE}), D.IMPLANTED),
    DeviceMove.USE_NOT_RELEASED: Transition(frozenset({D.AT_SITE}), D.QUARANTINED),
    DeviceMove.RETURN: Transition(frozenset({D.AT_SITE, D.QUARANTINED}), D.RETURNED),
    DeviceMove.DESTROY_AT_SITE: Transition(frozenset({D.AT_SITE, D.QUARANTINED}), D.DESTROYED),
    DeviceMove.DESTROY_AT_DEPOT: Transition(
        frozenset({D.AT_DEPOT, D.QUARANTINED, D.RETURNED}), D.DESTROYED
    ),
}
"""Every state change of a device: the states it may start from and where it ends."""


def may_move(move: DeviceMove, state: str) -> bool:
    """Whether a device in ``state`` may make ``move``."""
    return state in MOVES[move].sources


def sources(move: DeviceMove) -> list[str]:
    """The states ``move`` starts from, sorted (for the guarded update's WHERE)."""
    return sorted(MOVES[move].sources)


def target(move: DeviceMove) -> DeviceState:
    return MOVES[move].target


STATUSES: tuple[DeviceState, ...] = tuple(DeviceState)
"""Every state, in the order the inventory counts them."""

LEFT_STOCK: tuple[DeviceState, ...] = (D.IMPLANTED, D.RETURNED, D.DESTROYED)
"""Ways a device leaves a site's stock (shown apart to callers who may see the site's arms)."""

HELD_AT_SITE: tuple[DeviceState, ...] = (D.IN_TRANSIT, D.AT_SITE, D.QUARANTINED)
"""States in which a device assigned to a site is listed in the site's stock."""

USED: tuple[DeviceState, ...] = (D.IMPLANTED, D.QUARANTINED)
"""States a device may be in after the index procedure (a used device, released or not)."""

AT_SITES = "at_sites"
"""Blinded lot count: every device delivered to a site, whatever happened to it since."""

DEPOT_PLACES: dict[str, str] = {
    D.AT_DEPOT: "at_depot",
    D.QUARANTINED: "quarantined_at_depot",
    D.DESTROYED: "destroyed_at_depot",
}
"""Blinded lot counts of devices never shipped (none of them can have been used)."""


def blinded_place(state: str, *, shipped: bool, in_transit: bool) -> str:
    """Where a device is, for a caller who may not see every site's arms (SUP-2, RAND-6).
    A device never shipped cannot have been used, so the depot's counts stay apart; one on a
    shipment not yet received is in transit; everything delivered is one count, at_sites,
    because at a site use (implanted, or used and quarantined) and non-use (on the shelf,
    returned, destroyed) would otherwise tell implants apart."""
    if not shipped:
        return DEPOT_PLACES.get(state, AT_SITES)
    return D.IN_TRANSIT.value if in_transit else AT_SITES


def not_shippable(state: str, *, shipped: bool) -> str:
    """Why a device not at the depot cannot ship, from what the depot knows of it alone.

    Once a device has left the depot, whether it sits on a shelf, was implanted, used and
    quarantined, returned or destroyed at a site is usage, and usage is the arm (SUP-2,
    RAND-6): the refusal names none of it, for every caller (the supply role is blinded).
    A device never shipped cannot have been used, so the depot's own states are named."""
    if not shipped:
        return f"is {state.replace('_', ' ')} at the depot"
    return "is not in depot stock (it was shipped)"
