"""When each site was opened and closed, as recorded (issue 16, REP-1): its creation (sites
are created active), and every activation and deactivation, from the audit trail. Read only;
the forecast (:mod:`trialdesk.reports.enrolment`) turns them into site-local dates."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from trialdesk.store.tables import AuditEntryRow

OPENING = {"create_site": True, "activate_site": True, "deactivate_site": False}


def site_activity(session: Session, study_id: int) -> dict[str, list[tuple[str, bool]]]:
    """Site code -> (UTC time as stored, active after it), oldest first."""
    rows = session.execute(
        select(AuditEntryRow.entity_id, AuditEntryRow.action, AuditEntryRow.at)
        .where(
            AuditEntryRow.study_id == study_id,
            AuditEntryRow.entity == "site",
            AuditEntryRow.action.in_(sorted(OPENING)),
        )
        .order_by(AuditEntryRow.id)
    ).tuples()
    out: dict[str, list[tuple[str, bool]]] = {}
    for code, action, at in rows.all():
        out.setdefault(code, []).append((at, OPENING[action]))
    return out
