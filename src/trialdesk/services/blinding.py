"""The one place that decides whether a caller may see a subject's arm (RAND-6, ACC-2)."""

from __future__ import annotations

from trialdesk.domain.roles import Role
from trialdesk.services.access import BLINDED_ROLES, Actor

TRIAL_UNBLINDED_ROLES: frozenset[Role] = frozenset(
    {Role.COORDINATOR, Role.IMPLANTER, Role.MANAGER, Role.CRC, Role.MONITOR}
)
"""Who sees arms after trial-level unblinding; site roles still only for their own site."""


def may_see_arm(
    actor: Actor,
    study_id: int,
    site_id: int,
    *,
    subject_unblinded: bool,
    for_procedure: bool = False,
    trial_unblinded: bool = False,
) -> bool:
    """True when the actor may read this subject's allocation.

    - the implanting team of the subject's own site, for the procedure (the action needs it);
    - the unblinded statistician and DSMB members, when they hold no blinded role (ACC-2);
    - the subject's own site staff once the subject has been unblinded (RAND-7);
    - site and study roles (not the administrator) once the whole trial is unblinded (RAND-7).
    """
    if actor.operator:
        return False
    if for_procedure and actor.has(study_id, [Role.IMPLANTER], site_id):
        return True
    roles = actor.roles(study_id)
    if subject_unblinded and actor.has(study_id, [Role.COORDINATOR, Role.IMPLANTER], site_id):
        return True
    if trial_unblinded and actor.has(study_id, TRIAL_UNBLINDED_ROLES, site_id):
        return True
    if roles & BLINDED_ROLES:
        return False
    if roles & {Role.STATISTICIAN, Role.DSMB}:
        return True
    return actor.has(study_id, [Role.IMPLANTER], site_id)


def may_see_arm_definitions(actor: Actor, study_id: int) -> bool:
    """Arm codes and labels are shown only to unblinded by-arm readers; for everyone else no
    arm name appears anywhere, which keeps every blinded output checkable by one rule."""
    roles = actor.roles(study_id)
    return bool(roles & {Role.STATISTICIAN, Role.DSMB}) and not roles & BLINDED_ROLES
