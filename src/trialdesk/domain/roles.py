"""Roles of SYSTEM.md §1 and the rules of who may see allocation (ACC-1, ACC-2)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    COORDINATOR = "coordinator"
    IMPLANTER = "implanter"
    CRC = "crc"
    MONITOR = "monitor"
    STATISTICIAN = "statistician"
    DSMB = "dsmb"


SITE_SCOPED: frozenset[Role] = frozenset({Role.COORDINATOR, Role.IMPLANTER})
"""Roles granted for one site; they see only that site's subjects (ACC-1)."""

ROLE_TITLES: dict[Role, str] = {
    Role.ADMIN: "administrator",
    Role.MANAGER: "study manager",
    Role.COORDINATOR: "site coordinator / investigator",
    Role.IMPLANTER: "implanting (cath-lab) team",
    Role.CRC: "Central Review Committee member",
    Role.MONITOR: "monitor / data manager",
    Role.STATISTICIAN: "unblinded statistician",
    Role.DSMB: "DSMB member",
}
