"""The study's audit trail as its readers see it (AUD-1, RAND-6): filtered by action, user,
subject and date range, and projected for the reader; and the disclosure entries.

Two projections, decided once here and used by every adapter and by the CSV export:

- **Unblinded readers** (the statistician or a DSMB member holding no blinded role) get every
  entry as stored: its id, stream, sequence number, hashes, exact time, old and new values.
- **Blinded readers** get a projection that is arm-free by construction: no entry that exists
  for one arm only (per-device supply entries, :data:`ARM_REVEALING_ENTITIES`), the values of
  supply entries left out (device statuses and sites tell usage), no hash or chain value of
  any kind (an entry's hash, the previous hash, a list's fingerprint: each is a checkable
  digest over something the projection leaves out), no id or sequence number (their gaps
  would count the entries left out) and times in whole seconds (within an action every entry
  carries one time; between actions, sub-second gaps would tell how long the server worked).
  Verifying the chain is an operator act on the database (``trialdesk audit verify``).

The study's trail is every entry written for the study, plus the security log of its users:
failed sign-ins and failed or refused e-signatures, written in the user's own stream.
Failures under a username nobody has (stream ``auth``) belong to no study and stay with the
installation's operator.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from trialdesk.domain.errors import NotFound, PermissionDenied, ValidationFailed
from trialdesk.domain.roles import Role
from trialdesk.services.access import Actor, require
from trialdesk.services.blinding import TRIAL_UNBLINDED_ROLES, may_see_arm_definitions
from trialdesk.services.context import ServiceContext
from trialdesk.store.audit import PendingEntry
from trialdesk.store.records import AuditEntry, AuditQuery
from trialdesk.store.uow import UnitOfWork

AUDIT_READERS = (Role.MONITOR, Role.MANAGER, Role.ADMIN, Role.STATISTICIAN)
"""Study-wide roles that read the whole trail (an inspector is given one of these)."""
ARM_REVEALING_ENTITIES = frozenset({"device"})
"""Record kinds written for one arm only (a device is used by implant subjects only):
per-device entries are left out of blinded projections; lot and shipment entries stay."""
VALUELESS_STREAM_PREFIXES = ("supply:",)
"""Streams whose values a blinded reader does not get (device statuses and sites)."""
DIGEST_KEYS = frozenset({"fingerprint", "seal", "hash", "prev_hash", "sha256"})
"""Keys of old/new values holding a digest over concealed content (a list's fingerprint)."""
SECURITY_SUFFIXES = ("_failed", "_refused")
"""Actions of the users' own streams that belong to the study's trail: failed sign-ins and
failed or refused e-signatures."""
DISCLOSURE_STREAM = "disclosure:{study_id}"
MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditFilter:
    """What to read; every part optional. ``action`` is an exact action, or a prefix ending
    in ``*`` (``disclose_*``); dates are inclusive, UTC."""

    action: str | None = None
    user: str | None = None
    subject: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None


@dataclass(frozen=True)
class AuditEntryView:
    stream: str
    at: str
    """ISO 8601 UTC; whole seconds for blinded readers."""
    actor: str
    action: str
    entity: str
    entity_id: str
    subject: str | None
    old: Any
    new: Any
    reason: str | None
    protocol_sha256: str | None
    id: int | None = None
    """Unblinded readers only, like ``seq``, ``prev_hash`` and ``hash``."""
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AuditPage:
    total: int
    blinded: bool
    items: list[AuditEntryView]

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "blinded": self.blinded,
            "items": [i.to_dict() for i in self.items],
        }


BLINDED_COLUMNS = (
    "stream",
    "at",
    "actor",
    "action",
    "entity",
    "entity_id",
    "subject",
    "old",
    "new",
    "reason",
    "protocol_sha256",
)
FULL_COLUMNS = ("id", "stream", "seq", "prev_hash", "hash", *BLINDED_COLUMNS[1:])
"""The columns of the audit export for each projection, in order."""


# --------------------------------------------------------------------------- projection


def reads_unblinded(uow: UnitOfWork, actor: Actor, study_id: int) -> bool:
    """True when ``actor`` gets the trail as stored: an unblinded by-arm reader, or a study
    role that sees arms once the whole trial is unblinded (RAND-7)."""
    if may_see_arm_definitions(actor, study_id):
        return True
    if not actor.has(study_id, TRIAL_UNBLINDED_ROLES):
        return False
    study = uow.studies.get(study_id)
    return study is not None and study.trial_unblinded_at is not None


def whole_seconds(at: str) -> str:
    """``2027-01-25T12:00:00.123456Z`` -> ``2027-01-25T12:00:00Z``."""
    return at.split(".", 1)[0].removesuffix("Z") + "Z"


def _without_digests(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_digests(v) for k, v in value.items() if k not in DIGEST_KEYS}
    if isinstance(value, list):
        return [_without_digests(v) for v in value]
    return value


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def project(row: AuditEntry, subject: str | None, *, blinded: bool) -> AuditEntryView:
    """One stored entry as a reader sees it (blinded readers get no entry whose entity is in
    :data:`ARM_REVEALING_ENTITIES`: the queries leave those out)."""
    old, new = _parsed(row.old), _parsed(row.new)
    if not blinded:
        return AuditEntryView(
            stream=row.stream,
            at=row.at,
            actor=row.actor,
            action=row.action,
            entity=row.entity,
            entity_id=row.entity_id,
            subject=subject,
            old=old,
            new=new,
            reason=row.reason,
            protocol_sha256=row.protocol_sha256,
            id=row.id,
            seq=row.seq,
            prev_hash=row.prev_hash,
            hash=row.hash,
        )
    if row.stream.startswith(VALUELESS_STREAM_PREFIXES):
        old = new = None
    return AuditEntryView(
        stream=row.stream,
        at=whole_seconds(row.at),
        actor=row.actor,
        action=row.action,
        entity=row.entity,
        entity_id=row.entity_id,
        subject=subject,
        old=_without_digests(old),
        new=_without_digests(new),
        reason=row.reason,
        protocol_sha256=row.protocol_sha256,
    )


# --------------------------------------------------------------------------- reading


def _day_start(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00"


def _query(
    uow: UnitOfWork, study_id: int, where: AuditFilter, *, blinded: bool
) -> AuditQuery | None:
    """The repository's query for ``where``: the study's entries and its users' security log
    (see the module docstring); None when the filter can match nothing (an unknown subject:
    the same empty answer as a subject with no entries). Blinded readers never get an entry
    whose entity is in :data:`ARM_REVEALING_ENTITIES`."""
    action = where.action.strip() if where.action else None
    subject_id = None
    if where.subject:
        subject = uow.subjects.get(study_id, where.subject.strip())
        if subject is None:
            return None
        subject_id = subject.id
    return AuditQuery(
        study_id=study_id,
        security_suffixes=SECURITY_SUFFIXES,
        action=action if action and not action.endswith("*") else None,
        action_prefix=action[:-1] if action and action.endswith("*") else None,
        actor=where.user.strip() if where.user else None,
        subject_id=subject_id,
        since_at=_day_start(where.since) if where.since is not None else None,
        until_at=_day_start(where.until + dt.timedelta(days=1))
        if where.until is not None
        else None,
        excluded_entities=tuple(sorted(ARM_REVEALING_ENTITIES)) if blinded else (),
    )


def _check_filter(where: AuditFilter) -> None:
    if where.since and where.until and where.since > where.until:
        raise ValidationFailed(
            f"the date range starts ({where.since}) after it ends ({where.until})",
            {"since": "after until"},
        )
    for name, value in (("action", where.action), ("user", where.user), ("subject", where.subject)):
        if value is not None and len(value) > 80:
            raise ValidationFailed(f"{name} is longer than 80 characters", {name: "too long"})


def _projected(
    uow: UnitOfWork, rows: Sequence[AuditEntry], *, blinded: bool
) -> list[AuditEntryView]:
    numbers = uow.audit_entries.subject_numbers({r.subject_id for r in rows if r.subject_id})
    return [
        project(r, numbers.get(r.subject_id) if r.subject_id else None, blinded=blinded)
        for r in rows
    ]


def study_entries(
    uow: UnitOfWork, study_id: int, where: AuditFilter, *, blinded: bool
) -> list[AuditEntryView]:
    """Every entry of the study matching ``where``, in the order written, projected; the CSV
    export's audit file (the caller has checked the reader)."""
    query = _query(uow, study_id, where, blinded=blinded)
    if query is None:
        return []
    return _projected(uow, uow.audit_entries.find(query), blinded=blinded)


def require_reader(actor: Actor, study_id: int) -> None:
    require(actor, study_id, AUDIT_READERS, action="read the audit trail")
    if actor.site_ids(study_id) is not None:
        raise PermissionDenied(
            "'read the audit trail' needs a study-wide role; a site-scoped grant does not cover it"
        )


def audit_entries(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    where: AuditFilter | None = None,
    *,
    limit: int = 100,
    offset: int = 0,
) -> AuditPage:
    """The study's audit trail filtered by action, user, subject and date range (AUD-1), as
    the reader may see it; oldest first."""
    where = where or AuditFilter()
    _check_filter(where)
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ValidationFailed(
            f"limit must be 1 to {MAX_PAGE} and offset 0 or more", {"limit": "out of range"}
        )
    with ctx.uow(readonly=True) as uow:
        if uow.studies.get(study_id) is None:
            raise NotFound(f"study {study_id} not found")
        require_reader(actor, study_id)
        blinded = not reads_unblinded(uow, actor, study_id)
        query = _query(uow, study_id, where, blinded=blinded)
        if query is None:
            return AuditPage(0, blinded, [])
        total = uow.audit_entries.count(query)
        rows = uow.audit_entries.find(query, offset=offset, limit=limit)
        return AuditPage(total, blinded, _projected(uow, rows, blinded=blinded))


# --------------------------------------------------------------------------- disclosures


DISCLOSURES = {
    "export_csv": "unblinded CSV export",
    "export_odm": "unblinded ODM export",
    "export_sdtm": "unblinded SDTM export",
    "dsmb_report": "DSMB report by arm",
    "endpoint_by_arm": "endpoint results by arm",
    "recall_list": "device recall list",
    "list_download": "allocation list download",
    # x16a (issue 16)
    "export_adam": "ADaM export (by arm)",
}
"""Kinds of disclosure, each audited as ``disclose_<kind>`` (AUD-1, RAND-6)."""


def disclosure_entry(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    kind: str,
    *,
    what: str,
    detail: dict[str, Any] | None = None,
) -> PendingEntry:
    """The entry for one disclosure of arm information: who, what, when, never the arm."""
    if kind not in DISCLOSURES:
        raise ValueError(f"unknown disclosure kind {kind!r}")
    return PendingEntry(
        stream=DISCLOSURE_STREAM.format(study_id=study_id),
        at=ctx.now(),
        actor=actor.label,
        action=f"disclose_{kind}",
        entity="disclosure",
        entity_id=what[:80],
        study_id=study_id,
        new={"kind": DISCLOSURES[kind], **(detail or {})},
    )


def record_disclosure(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    kind: str,
    *,
    what: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Audit a disclosure in its own unit of work (read services call this once they have
    built what they disclose)."""
    with ctx.uow() as uow:
        uow.record(disclosure_entry(ctx, actor, study_id, kind, what=what, detail=detail))
        uow.commit()


def csv_rows(
    entries: Sequence[AuditEntryView], *, blinded: bool
) -> tuple[list[str], list[list[Any]]]:
    """The audit export's header and rows for ``entries`` (old/new as canonical JSON)."""
    columns = list(BLINDED_COLUMNS if blinded else FULL_COLUMNS)
    out: list[list[Any]] = []
    for entry in entries:
        data = entry.to_dict()
        out.append(
            [
                json.dumps(data[c], sort_keys=True, separators=(",", ":"))
                if c in ("old", "new") and data[c] is not None
                else data[c]
                for c in columns
            ]
        )
    return columns, out
