"""Protocol amendments (PROT-2, PROT-3): a new version is loaded beside the old one, read as
a diff, e-signed by the study manager and in force at each site from its effective date.

A protocol in use is never edited: every record keeps the version it was made under.
Subjects registered from the effective date get the new version; a subject registered before
keeps its own version's criteria (and its screening result); visits not yet done follow the
version in force on the day (:func:`trialdesk.services.common.schedule_protocol`). A change of
arms, ratio or randomization of a study with randomized subjects also needs the unblinded
statistician's signature; until then the amendment is pending and changes nothing (SIG-1).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select, update

from trialdesk.domain.errors import Conflict, NotFound, PermissionDenied, PreconditionFailed
from trialdesk.domain.lifecycle import ON_STUDY
from trialdesk.domain.roles import Role
from trialdesk.protocol.diff import ProtocolDiff, diff_protocols
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.services.access import Actor, require
from trialdesk.services.auth import reauthenticate
from trialdesk.services.blinding import may_see_arm_definitions
from trialdesk.services.common import (
    current_protocol_row,
    protocol_of,
    require_text,
    site_today,
    study_by_id,
)
from trialdesk.services.context import ServiceContext
from trialdesk.services.setup import site_row
from trialdesk.store.audit import PendingEntry
from trialdesk.store.tables import (
    NotificationRow,
    ProtocolAmendmentRow,
    ProtocolVersionRow,
    RandomizationRow,
    SiteRow,
    StudyRow,
    SubjectRow,
    VisitRow,
)
from trialdesk.store.uow import UnitOfWork

READERS = list(Role)
"""Every role of the study may read which protocol versions exist and when they apply."""
PREVIEWERS = (Role.MANAGER, Role.STATISTICIAN)


# --- read models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    name: str
    username: str
    at: str
    meaning: str


@dataclass(frozen=True)
class VersionView:
    """One protocol version of the study; ``amendment`` is None for the initial one."""

    id: int
    version: str
    sha256: str
    status: str  # pending | signed
    current: bool
    effective_from: str | None
    loaded_at: str
    loaded_by: str
    amendment: int | None = None
    reason: str | None = None
    needs_statistician: bool = False
    signatures: list[Signature] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AmendmentPreview:
    """What signing would change: the diff and what it means for subjects already enrolled."""

    study: str
    old_version: str
    old_sha256: str
    new_version: str
    new_sha256: str
    effective_from: str
    changes: list[dict[str, str]]
    lines: list[str]
    impact: list[str]
    needs_statistician: bool
    refusals: list[str]
    """Why this version cannot be proposed (empty when it can)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AmendmentView:
    id: int
    study: str
    version: str
    sha256: str
    previous_version: str
    status: str  # pending | signed
    effective_from: str
    reason: str
    needs_statistician: bool
    signatures: list[Signature]
    lines: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(moment: dt.datetime | dt.date | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _utc(moment: dt.datetime) -> str:
    """UTC ISO 8601; SQLite hands stored times back without their zone (they are UTC)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).isoformat()


def _signatures(row: ProtocolAmendmentRow) -> list[Signature]:
    out = [Signature(row.manager_name, row.manager_by, _utc(row.manager_at), row.manager_meaning)]
    if row.statistician_by is not None:
        assert row.statistician_at is not None
        out.append(
            Signature(
                row.statistician_name or "",
                row.statistician_by,
                _utc(row.statistician_at),
                row.statistician_meaning or "",
            )
        )
    return out


# --- reading ----------------------------------------------------------------------------------


def list_protocol_versions(ctx: ServiceContext, actor: Actor, study_id: int) -> list[VersionView]:
    """Every version of the study's protocol with its status, effective date and signers."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="list protocol versions")
        study_by_id(uow, study_id)
        amendments = {
            a.version_id: a
            for a in uow.session.scalars(
                select(ProtocolAmendmentRow).where(ProtocolAmendmentRow.study_id == study_id)
            )
        }
        out = []
        for row in uow.session.scalars(
            select(ProtocolVersionRow)
            .where(ProtocolVersionRow.study_id == study_id)
            .order_by(ProtocolVersionRow.id)
        ):
            a = amendments.get(row.id)
            out.append(
                VersionView(
                    id=row.id,
                    version=row.version,
                    sha256=row.sha256,
                    status=row.status,
                    current=row.current,
                    effective_from=_iso(row.effective_from),
                    loaded_at=_utc(row.loaded_at),
                    loaded_by=row.loaded_by,
                    amendment=a.id if a else None,
                    reason=a.reason if a else None,
                    needs_statistician=a.needs_statistician if a else False,
                    signatures=_signatures(a) if a else [],
                )
            )
        return out


def _latest_site_today(uow: UnitOfWork, study_id: int, now: dt.datetime) -> dt.date:
    """The latest calendar date at any site of the study: an effective date before it would
    already be past somewhere, so it is the earliest one allowed."""
    days = [
        site_today(s, now)
        for s in uow.session.scalars(select(SiteRow).where(SiteRow.study_id == study_id))
    ]
    return max(days) if days else now.astimezone(dt.UTC).date()


def _randomized_count(uow: UnitOfWork, study_id: int) -> int:
    return int(
        uow.session.scalar(
            select(func.count())
            .select_from(RandomizationRow)
            .where(RandomizationRow.study_id == study_id)
        )
        or 0
    )


def _refusals(
    uow: UnitOfWork,
    study_id: int,
    previous: ProtocolVersionRow,
    old: LoadedProtocol,
    new: LoadedProtocol,
    diff: ProtocolDiff,
) -> list[str]:
    """Why ``new`` cannot be an amendment of the running study (each a full sentence)."""
    out = []
    if new.sha256 == old.sha256 or diff.empty:
        out.append("the file is the protocol already in use; there is nothing to amend")
    existing = uow.session.scalars(
        select(ProtocolVersionRow).where(ProtocolVersionRow.study_id == study_id)
    ).all()
    if any(v.sha256 == new.sha256 for v in existing) and new.sha256 != old.sha256:
        out.append("this exact file was already loaded as a version of the study")
    if new.protocol.name != old.protocol.name:
        out.append(
            f"the file is protocol {new.protocol.name!r}, not {old.protocol.name!r}; an amendment "
            "keeps the protocol's name"
        )
    if new.protocol.version in {v.version for v in existing}:
        out.append(
            f"version label {new.protocol.version!r} is already used; give the amendment a new "
            "'version'"
        )
    if diff.sites_removed:
        out.append(
            "sites cannot be removed by an amendment (their records stay under their version); "
            "deactivate them instead: " + ", ".join(diff.sites_removed)
        )
    if diff.sites_moved:
        out.append(
            "a site's country or time zone cannot change (its clinical dates depend on it): "
            + ", ".join(diff.sites_moved)
        )
    if diff.arms_removed and _randomized_count(uow, study_id):
        out.append("an arm cannot be removed once subjects are randomized")
    return out


def _count(uow: UnitOfWork, stmt: Any) -> int:
    return int(uow.session.scalar(stmt) or 0)


def _impact(
    uow: UnitOfWork,
    study_id: int,
    new: LoadedProtocol,
    diff: ProtocolDiff,
    effective: dt.date,
    needs_statistician: bool,
) -> list[str]:
    """What the amendment changes for subjects already in the study, in sentences."""
    day = effective.isoformat()
    out: list[str] = []
    registered = _count(
        uow, select(func.count()).select_from(SubjectRow).where(SubjectRow.study_id == study_id)
    )
    on_study = select(SubjectRow.id).where(
        SubjectRow.study_id == study_id,
        SubjectRow.state.in_([s.value for s in ON_STUDY]),
        SubjectRow.randomized_on.is_not(None),
    )
    in_follow_up = _count(uow, select(func.count()).select_from(on_study.subquery()))

    def not_done(code: str) -> int:
        done = select(VisitRow.subject_id).where(VisitRow.visit_code == code)
        return _count(
            uow,
            select(func.count()).select_from(on_study.where(SubjectRow.id.not_in(done)).subquery()),
        )

    for code in diff.windows_changed:
        v = new.protocol.visit(code)
        n = not_done(code)
        out.append(
            f"{n} subject{'s' if n != 1 else ''} in follow-up ha{'ve' if n != 1 else 's'} {code} "
            f"not yet done: from {day} {'they' if n != 1 else 'it'} will use the new window "
            f"-{v.window_before}/+{v.window_after} days around day {v.target_day}; "
            f"{code} visits already recorded keep the window they were judged by"
        )
    for code in diff.visits_added:
        out.append(
            f"new visit {code}: from {day} it is scheduled for the {in_follow_up} subjects in "
            "follow-up whose window for it is still open or later"
        )
    for code in diff.visits_removed:
        n = not_done(code)
        out.append(
            f"visit {code} is no longer scheduled from {day}: {n} subjects in follow-up have it "
            "not yet done; recorded ones stay valid under their version"
        )
    for kind, ids in (
        ("new criterion", diff.criteria_added),
        ("changed criterion", diff.criteria_changed),
        ("removed criterion", diff.criteria_removed),
    ):
        for cid in ids:
            out.append(
                f"{kind} {cid} applies to subjects registered from {day}; the {registered} "
                f"subject{'s' if registered != 1 else ''} already registered keep their "
                "version's criteria and their screening result"
            )
    if diff.section("forms"):
        out.append(
            "changed forms are used for records made under the new version (new subjects, and "
            f"visits done from {day}); records already saved stay valid under their version"
        )
    for code in diff.sites_added:
        out.append(f"site {code} is created when the amendment is signed")
    if diff.design_changed:
        randomized = _randomized_count(uow, study_id)
        if needs_statistician:
            out.append(
                f"the allocation design changes while {randomized} subjects are randomized: the "
                "unblinded statistician must co-sign, and the allocation list must be generated "
                "again for the new design before it takes effect"
            )
        else:
            out.append("the allocation design changes; no subject is randomized yet")
    if not out and diff.changes:
        out.append("no subject already registered is affected")
    return out


def _check_effective(
    uow: UnitOfWork, study_id: int, previous: ProtocolVersionRow, on: dt.date, now: dt.datetime
) -> None:
    earliest = _latest_site_today(uow, study_id, now)
    if on < earliest:
        raise PreconditionFailed(
            f"effective date {on.isoformat()} is in the past at some site (today there is "
            f"{earliest.isoformat()}); an amendment never applies retroactively",
            reason="effective-date-past",
        )
    if previous.effective_from is not None and on < previous.effective_from:
        raise PreconditionFailed(
            f"effective date {on.isoformat()} is before that of version {previous.version} "
            f"({previous.effective_from.isoformat()})",
            reason="effective-date-order",
        )


def _preview(
    ctx: ServiceContext,
    uow: UnitOfWork,
    study: StudyRow,
    loaded: LoadedProtocol,
    effective_from: dt.date | None,
    actor: Actor,
) -> tuple[AmendmentPreview, ProtocolVersionRow, ProtocolDiff]:
    previous = current_protocol_row(uow, study.id)
    old = protocol_of(ctx, previous)
    hide = not may_see_arm_definitions(actor, study.id)
    diff = diff_protocols(old.protocol, loaded.protocol, hide_arms=hide)
    effective = effective_from or _latest_site_today(uow, study.id, ctx.now())
    needs_stat = diff.design_changed and _randomized_count(uow, study.id) > 0
    preview = AmendmentPreview(
        study=study.code,
        old_version=previous.version,
        old_sha256=previous.sha256,
        new_version=loaded.protocol.version,
        new_sha256=loaded.sha256,
        effective_from=effective.isoformat(),
        changes=diff.to_dict()["changes"],
        lines=diff.lines(),
        impact=_impact(uow, study.id, loaded, diff, effective, needs_stat),
        needs_statistician=needs_stat,
        refusals=_refusals(uow, study.id, previous, old, loaded, diff),
    )
    return preview, previous, diff


def preview_amendment(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    loaded: LoadedProtocol,
    *,
    effective_from: dt.date | None = None,
) -> AmendmentPreview:
    """The diff of ``loaded`` against the study's protocol; writes nothing (dry run)."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, PREVIEWERS, action="preview a protocol amendment")
        preview, _previous, _diff = _preview(
            ctx, uow, study_by_id(uow, study_id), loaded, effective_from, actor
        )
        return preview


def _amendment(uow: UnitOfWork, study_id: int, amendment_id: int) -> ProtocolAmendmentRow:
    row = uow.session.get(ProtocolAmendmentRow, amendment_id)
    if row is None or row.study_id != study_id:
        raise NotFound(f"amendment {amendment_id} not found")
    return row


def _view(
    ctx: ServiceContext, uow: UnitOfWork, actor: Actor, row: ProtocolAmendmentRow
) -> AmendmentView:
    study = study_by_id(uow, row.study_id)
    new = uow.session.get(ProtocolVersionRow, row.version_id)
    old = uow.session.get(ProtocolVersionRow, row.previous_version_id)
    assert new is not None and old is not None
    diff = diff_protocols(
        protocol_of(ctx, old).protocol,
        protocol_of(ctx, new).protocol,
        hide_arms=not may_see_arm_definitions(actor, study.id),
    )
    return AmendmentView(
        id=row.id,
        study=study.code,
        version=new.version,
        sha256=new.sha256,
        previous_version=old.version,
        status=row.status,
        effective_from=row.effective_from.isoformat(),
        reason=row.reason,
        needs_statistician=row.needs_statistician,
        signatures=_signatures(row),
        lines=diff.lines(),
    )


def amendment_diff(
    ctx: ServiceContext, actor: Actor, study_id: int, amendment_id: int
) -> AmendmentView:
    """A stored amendment with its diff against the version it amends (names no arm of any
    subject; protocol arms are the protocol's, not allocations)."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, READERS, action="view a protocol amendment")
        return _view(ctx, uow, actor, _amendment(uow, study_id, amendment_id))


# --- signing ----------------------------------------------------------------------------------


def _lock_study(uow: UnitOfWork, study_id: int) -> StudyRow:
    """One amendment action at a time per study (SQLite writers are serialized)."""
    stmt = select(StudyRow).where(StudyRow.id == study_id)
    if uow.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    study = uow.session.scalars(stmt).one_or_none()
    if study is None:
        raise NotFound(f"study {study_id} not found")
    return study


def _pending(uow: UnitOfWork, study_id: int) -> ProtocolAmendmentRow | None:
    return uow.session.scalars(
        select(ProtocolAmendmentRow).where(
            ProtocolAmendmentRow.study_id == study_id, ProtocolAmendmentRow.status == "pending"
        )
    ).first()


def _refuse_if_pending(uow: UnitOfWork, study_id: int) -> None:
    pending = _pending(uow, study_id)
    if pending is not None:
        raise PreconditionFailed(
            f"amendment {pending.id} is awaiting the statistician's signature; sign it before "
            "proposing another",
            reason="amendment-pending",
        )


def _entry(
    ctx: ServiceContext,
    actor: Actor,
    study: StudyRow,
    action: str,
    entity_id: str,
    new: Any,
    sha256: str,
    reason: str | None = None,
) -> PendingEntry:
    return PendingEntry(
        stream=f"study:{study.id}",
        at=ctx.now(),
        actor=actor.label,
        action=action,
        entity="protocol",
        entity_id=entity_id,
        study_id=study.id,
        new=new,
        reason=reason,
        protocol_sha256=sha256,
    )


def _take_effect(
    ctx: ServiceContext,
    uow: UnitOfWork,
    actor: Actor,
    study: StudyRow,
    row: ProtocolAmendmentRow,
    version: ProtocolVersionRow,
) -> None:
    """The last signature: the version becomes the study's newest signed one (in force from
    its effective date) and the sites it adds are created."""
    now = ctx.now()
    earliest = _latest_site_today(uow, study.id, now)
    if row.effective_from < earliest:  # the co-signature came after the planned date
        uow.record(
            _entry(
                ctx,
                actor,
                study,
                "move_amendment_effective_date",
                version.version,
                {"from": row.effective_from.isoformat(), "to": earliest.isoformat()},
                version.sha256,
                "signed after the planned effective date; an amendment is never retroactive",
            )
        )
        row.effective_from = earliest
    uow.session.execute(
        update(ProtocolVersionRow)
        .where(ProtocolVersionRow.study_id == study.id, ProtocolVersionRow.id != version.id)
        .values(current=False)
        .execution_options(synchronize_session=False)
    )
    version.status = "signed"
    version.current = True
    version.effective_from = row.effective_from
    row.status = "signed"
    loaded = protocol_of(ctx, version)
    known = set(uow.session.scalars(select(SiteRow.code).where(SiteRow.study_id == study.id)))
    for site in loaded.protocol.sites:
        if site.code in known:
            continue
        uow.session.add(site_row(study.id, loaded.protocol, site))
        uow.record(
            _entry(
                ctx,
                actor,
                study,
                "create_site",
                site.code,
                {"name": site.name, "country": site.country, "timezone": site.timezone},
                version.sha256,
            )
        )
    # caps of existing sites follow the newest signed version
    for site in loaded.protocol.sites:
        if site.code in known:
            uow.session.execute(
                update(SiteRow)
                .where(SiteRow.study_id == study.id, SiteRow.code == site.code)
                .values(cap=site.cap)
                .execution_options(synchronize_session=False)
            )
    uow.record(
        _entry(
            ctx,
            actor,
            study,
            "amendment_signed",
            version.version,
            {
                "amendment": row.id,
                "version": version.version,
                "sha256": version.sha256,
                "effective_from": row.effective_from.isoformat(),
                "signatures": [asdict(s) for s in _signatures(row)],
            },
            version.sha256,
        )
    )


def propose_amendment(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    loaded: LoadedProtocol,
    *,
    reason: str,
    password: str,
    effective_from: dt.date | None = None,
) -> AmendmentView:
    """Load ``loaded`` as a new version and sign it as study manager (SIG-1). It takes effect
    at once (from ``effective_from``) unless it changes the allocation design of a running
    study, which waits for the statistician's signature (:func:`sign_amendment`)."""
    text = require_text(reason, "reason", "a reason for the amendment")
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, [Role.MANAGER], action="amend the protocol")
        study = study_by_id(uow, study_id)
        _refuse_if_pending(uow, study_id)
        preview, previous, _diff = _preview(ctx, uow, study, loaded, effective_from, actor)
        if preview.refusals:
            raise PreconditionFailed(
                "the amendment cannot be made: " + "; ".join(preview.refusals),
                reason="amendment-refused",
            )
        effective = dt.date.fromisoformat(preview.effective_from)
        _check_effective(uow, study_id, previous, effective, ctx.now())
        code = study.code
    meaning = (
        f"Approval of protocol amendment {loaded.protocol.version} of study {code}, "
        f"effective {effective.isoformat()}"
    )
    reauthenticate(ctx, actor, password, meaning=meaning)
    with ctx.uow() as uow:
        study = _lock_study(uow, study_id)
        _refuse_if_pending(uow, study_id)
        preview, previous, _diff = _preview(ctx, uow, study, loaded, effective, actor)
        if preview.refusals:
            raise Conflict("the study's protocol changed meanwhile; review the amendment again")
        now = ctx.now()
        version = ProtocolVersionRow(
            study_id=study.id,
            name=loaded.protocol.name,
            version=loaded.protocol.version,
            sha256=loaded.sha256,
            text=loaded.text,
            loaded_at=now,
            loaded_by=actor.label,
            current=False,
            status="pending",
            effective_from=effective,
        )
        uow.session.add(version)
        uow.session.flush()
        row = ProtocolAmendmentRow(
            study_id=study.id,
            version_id=version.id,
            previous_version_id=previous.id,
            status="pending",
            effective_from=effective,
            reason=text,
            needs_statistician=preview.needs_statistician,
            manager_by=actor.username,
            manager_name=actor.full_name,
            manager_at=now,
            manager_meaning=meaning,
        )
        uow.session.add(row)
        uow.session.flush()
        uow.record(
            _entry(
                ctx,
                actor,
                study,
                "propose_amendment",
                version.version,
                {
                    "amendment": row.id,
                    "version": version.version,
                    "sha256": version.sha256,
                    "previous": {"version": previous.version, "sha256": previous.sha256},
                    "effective_from": effective.isoformat(),
                    # sections only: the audit never names an arm; both texts are stored
                    "sections_changed": sorted({c["section"] for c in preview.changes}),
                    "needs_statistician": preview.needs_statistician,
                    "signature": {
                        "name": actor.full_name,
                        "username": actor.username,
                        "at": now.isoformat(),
                        "meaning": meaning,
                    },
                },
                version.sha256,
                text,
            )
        )
        if preview.needs_statistician:
            uow.session.add(
                NotificationRow(
                    study_id=study.id,
                    recipient_role=Role.STATISTICIAN.value,
                    subject_id=None,
                    text=f"Protocol amendment {version.version} of study {study.code} changes "
                    f"the allocation design; it takes effect when an unblinded statistician "
                    f"signs it (amendment {row.id}).",
                    created_at=now,
                )
            )
        else:
            _take_effect(ctx, uow, actor, study, row, version)
        uow.session.flush()
        view = _view(ctx, uow, actor, row)
        uow.commit()
        return view


def sign_amendment(
    ctx: ServiceContext, actor: Actor, study_id: int, amendment_id: int, password: str
) -> AmendmentView:
    """The unblinded statistician's co-signature of a design-changing amendment (SIG-1)."""
    with ctx.uow(readonly=True) as uow:
        require(actor, study_id, [Role.STATISTICIAN], action="sign a protocol amendment")
        study = study_by_id(uow, study_id)
        row = _amendment(uow, study_id, amendment_id)
        _check_signable(row, actor)
        new = uow.session.get(ProtocolVersionRow, row.version_id)
        assert new is not None
        meaning = (
            f"Statistical approval of protocol amendment {new.version} of study {study.code} "
            "(allocation design)"
        )
    reauthenticate(ctx, actor, password, meaning=meaning)
    with ctx.uow() as uow:
        study = _lock_study(uow, study_id)
        row = _amendment(uow, study_id, amendment_id)
        _check_signable(row, actor)
        version = uow.session.get(ProtocolVersionRow, row.version_id)
        assert version is not None
        now = ctx.now()
        row.statistician_by = actor.username
        row.statistician_name = actor.full_name
        row.statistician_at = now
        row.statistician_meaning = meaning
        uow.record(
            _entry(
                ctx,
                actor,
                study,
                "cosign_amendment",
                version.version,
                {
                    "amendment": row.id,
                    "sha256": version.sha256,
                    "signature": {
                        "name": actor.full_name,
                        "username": actor.username,
                        "at": now.isoformat(),
                        "meaning": meaning,
                    },
                },
                version.sha256,
            )
        )
        _take_effect(ctx, uow, actor, study, row, version)
        uow.session.flush()
        view = _view(ctx, uow, actor, row)
        uow.commit()
        return view


def _check_signable(row: ProtocolAmendmentRow, actor: Actor) -> None:
    if row.status != "pending":
        raise PreconditionFailed(
            f"amendment {row.id} is already {row.status}", reason="amendment-not-pending"
        )
    if not row.needs_statistician:  # pragma: no cover - such amendments are never pending
        raise PreconditionFailed(f"amendment {row.id} needs no second signature")
    if row.manager_by == actor.username:
        raise PermissionDenied(
            "the person who signed the amendment as study manager cannot also sign it as "
            "statistician (two-person rule)"
        )
