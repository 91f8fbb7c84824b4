"""Who the caller is and what they may do (ACC-1, ACC-2). Every service checks here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from trialdesk.domain.errors import NotFound, PermissionDenied
from trialdesk.domain.lifecycle import Action, SubjectState
from trialdesk.domain.permissions import (
    PERMISSION_TITLES,
    Permission,
    permitted_actions,
    roles_with,
)
from trialdesk.domain.roles import ROLE_TITLES, Role

BLINDED_ROLES: frozenset[Role] = frozenset(
    {Role.ADMIN, Role.MANAGER, Role.COORDINATOR, Role.CRC, Role.MONITOR}
)
"""Roles that never see an arm by themselves (SYSTEM.md §1)."""


@dataclass(frozen=True)
class Grant:
    role: Role
    study_id: int
    site_id: int | None = None


@dataclass(frozen=True)
class Actor:
    """An authenticated caller. The local operator runs set-up and maintenance commands."""

    username: str
    full_name: str
    user_id: int | None = None
    grants: frozenset[Grant] = frozenset()
    operator: bool = False

    @property
    def label(self) -> str:
        return self.username

    def roles(self, study_id: int) -> set[Role]:
        return {g.role for g in self.grants if g.study_id == study_id}

    def has(self, study_id: int, roles: Iterable[Role], site_id: int | None = None) -> bool:
        wanted = set(roles)
        for grant in self.grants:
            if grant.study_id != study_id or grant.role not in wanted:
                continue
            if grant.site_id is None or site_id is None or grant.site_id == site_id:
                return True
        return False

    def site_ids(self, study_id: int) -> set[int] | None:
        """Sites this actor is limited to, or None when some grant covers every site."""
        sites: set[int] = set()
        for grant in self.grants:
            if grant.study_id != study_id:
                continue
            if grant.site_id is None:
                return None
            sites.add(grant.site_id)
        return sites

    def may(self, study_id: int, permission: Permission, site_id: int | None = None) -> bool:
        """True when a role held (for ``site_id``, when given) carries ``permission``."""
        return self.has(study_id, roles_with(permission), site_id)

    def roles_at(self, study_id: int, site_id: int) -> set[Role]:
        """Roles that apply at one site: study-wide grants and grants for that site."""
        return {
            g.role
            for g in self.grants
            if g.study_id == study_id and (g.site_id is None or g.site_id == site_id)
        }

    def sees_site(self, study_id: int, site_id: int) -> bool:
        allowed = self.site_ids(study_id)
        return allowed is None or site_id in allowed


def operator_actor(name: str = "local-operator") -> Actor:
    return Actor(username=name, full_name="Local operator", operator=True)


def require(
    actor: Actor,
    study_id: int,
    what: Permission | Iterable[Role],
    *,
    site_id: int | None = None,
    action: str | None = None,
) -> None:
    """Refuse unless the actor holds the permission ``what`` (for ``site_id`` when the grant
    is site-scoped). ``what`` may still be a list of roles in the services wave 2 of issue 13
    has not converted yet (they name the ``action`` themselves)."""
    if isinstance(what, Permission):
        holders = roles_with(what)
        roles = [role for role in Role if role in holders]
        action = action or PERMISSION_TITLES[what]
    else:
        roles = list(what)
        action = action or "this action"
    if actor.has(study_id, roles, site_id):
        return
    titles = " or ".join(ROLE_TITLES[r] for r in roles)
    if site_id is not None and actor.has(study_id, roles, None):
        raise PermissionDenied(
            f"'{action}' needs the role {titles} at this site; {actor.username} holds it "
            "for another site only"
        )
    raise PermissionDenied(f"'{action}' needs the role {titles}; {actor.username} does not hold it")


def require_site_visible(actor: Actor, study_id: int, site_id: int, what: str) -> None:
    """A site-scoped user asking for another site's record gets 'not found', not 'forbidden',
    so existence does not leak (ACC-1)."""
    if not actor.sees_site(study_id, site_id):
        raise NotFound(f"{what} not found")


def offered_actions(actor: Actor, study_id: int, site_id: int, state: SubjectState) -> list[Action]:
    """Actions on a subject at ``site_id`` in ``state`` that this actor's roles there may
    take (the lifecycle and the permission table together); facts such as 'procedure
    already recorded' are the calling service's to add."""
    if actor.operator:
        return []
    return permitted_actions(actor.roles_at(study_id, site_id), state)
