"""A subject's record history as an inspector reads it: who did what, when (AUD-1, TIME-1).

Read from the subject's audit stream, so it is exactly what the hash chain protects. Values
are not repeated here (forms and the subject page show them); the list says which action,
on which record, with the reason given. Entries never carry an arm; allocation details (list,
slot, stratum) are left out for everyone, and records that exist only for one arm (device
assignments) are shown only to those who may see the subject's arm. Those who may not see it
read times in whole seconds, the resolution of the blinded audit projection
(services/audit_trail.py): every entry of one action carries one time, and sub-second gaps
between actions would tell how long the server worked on each.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor, require
from trialdesk.services.audit_trail import ARM_REVEALING_ENTITIES
from trialdesk.services.blinding import may_see_arm
from trialdesk.services.common import subject_in_scope
from trialdesk.services.context import ServiceContext


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    at: dt.datetime  # UTC; adapters show it in the viewer's zone
    actor: str
    action: str
    entity: str
    entity_id: str
    reason: str | None


def subject_history(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str
) -> list[HistoryEntry]:
    """The subject's audit entries in chain order, for anyone who may see the subject."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, list(Role), action="view subject history")
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        sees_arm = may_see_arm(
            actor,
            study_id,
            subject.site_id,
            subject_unblinded=subject.unblinded_on is not None,
            trial_unblinded=read.trial_unblinded,
        )
        rows = uow.audit_entries.stream(f"subject:{subject.id}")
        return [
            HistoryEntry(
                seq=row.seq,
                at=_shown_time(row.at, exact=sees_arm),
                actor=row.actor,
                action=row.action,
                entity=row.entity,
                entity_id=row.entity_id,
                reason=row.reason,
            )
            for row in rows
            if sees_arm or row.entity not in ARM_REVEALING_ENTITIES
        ]


def _shown_time(at: str, *, exact: bool) -> dt.datetime:
    moment = dt.datetime.fromisoformat(at)
    return moment if exact else moment.replace(microsecond=0)
