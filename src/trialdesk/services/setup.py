"""Set-up actions: create a study from a protocol, its sites and users (local operator or
administrator)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select

from trialdesk.domain.errors import (
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.domain.roles import SITE_SCOPED, Role
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.models import Protocol, Site
from trialdesk.services.access import Actor
from trialdesk.services.auth import hash_password
from trialdesk.services.context import ServiceContext
from trialdesk.services.mail import check_address
from trialdesk.store.audit import PendingEntry
from trialdesk.store.tables import (
    ProtocolVersionRow,
    RoleGrantRow,
    SiteRow,
    StudyRow,
    SubjectRow,
    UserRow,
)
from trialdesk.store.uow import UnitOfWork

STUDY_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
"""A study code: it appears in API paths (``/api/v1/studies/{code}``) and on the command line."""

DEMO_USERS: tuple[tuple[str, str, Role], ...] = (
    ("admin", "Alex Admin", Role.ADMIN),
    ("manager", "Morgan Manager", Role.MANAGER),
    ("coordinator", "Casey Coordinator", Role.COORDINATOR),
    ("implanter", "Ira Implanter", Role.IMPLANTER),
    ("crc", "Riley Reviewer", Role.CRC),
    ("monitor", "Mo Monitor", Role.MONITOR),
    ("statistician", "Sam Statistician", Role.STATISTICIAN),
    ("dsmb", "Dana DSMB", Role.DSMB),
)


@dataclass(frozen=True)
class StudyInfo:
    id: int
    code: str
    name: str
    mode: str
    protocol_name: str
    protocol_version: str
    protocol_sha256: str
    sites: int
    created: bool


def _study_entry(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    action: str,
    entity: str,
    entity_id: str,
    new: object,
    protocol_sha256: str | None = None,
) -> PendingEntry:
    return PendingEntry(
        stream=f"study:{study_id}",
        at=ctx.now(),
        actor=actor.label,
        action=action,
        entity=entity,
        entity_id=entity_id,
        study_id=study_id,
        new=new,
        protocol_sha256=protocol_sha256,
    )


def initialize_study(
    ctx: ServiceContext, actor: Actor, loaded: LoadedProtocol, *, code: str, mode: str = "live"
) -> StudyInfo:
    """Create the study with its protocol and sites; re-running with the same file is a no-op.

    A different protocol for an existing study is refused: a protocol in use is never edited
    in place (PROT-3); a new version is a signed amendment (:mod:`.amendments`).
    """
    if not actor.operator:
        raise PreconditionFailed("studies are created by the local operator ('trialdesk init')")
    if mode not in {"live", "demo", "sandbox"}:
        raise ValidationFailed(f"unknown study mode {mode!r}", {"mode": "live, demo or sandbox"})
    if not STUDY_CODE.fullmatch(code):
        raise ValidationFailed(
            f"invalid study code {code!r}",
            {"code": "1-40 letters, digits, '-' or '_', starting with a letter or digit"},
        )
    p = loaded.protocol
    now = ctx.now()
    with ctx.uow() as uow:
        study = uow.session.scalars(select(StudyRow).where(StudyRow.code == code)).one_or_none()
        if study is not None:
            current = uow.session.scalars(
                select(ProtocolVersionRow).where(
                    ProtocolVersionRow.study_id == study.id, ProtocolVersionRow.current.is_(True)
                )
            ).first()
            if current is None or current.sha256 != loaded.sha256:
                running = f"{current.version} ({current.sha256[:12]})" if current else "?"
                raise PreconditionFailed(
                    f"study {code} already runs protocol {running}; "
                    "a protocol in use cannot be edited or replaced in place (PROT-3); "
                    "load the new version as a signed amendment: "
                    f"trialdesk protocol amend FILE --study {code} --effective DATE",
                    reason="protocol-locked",
                )
            if study.mode != mode:
                raise PreconditionFailed(
                    f"study {code} was created in {study.mode} mode, not {mode}",
                    reason="study-mode",
                )
            return _info(uow, study, current, created=False)
        study = StudyRow(code=code, name=p.title, mode=mode, created_at=now)
        uow.session.add(study)
        uow.session.flush()
        version = ProtocolVersionRow(
            study_id=study.id,
            name=p.name,
            version=p.version,
            sha256=loaded.sha256,
            text=loaded.text,
            loaded_at=now,
            loaded_by=actor.label,
            current=True,
        )
        uow.session.add(version)
        uow.record(
            _study_entry(
                ctx,
                actor,
                study.id,
                "create_study",
                "study",
                code,
                {"name": p.title, "mode": mode},
                loaded.sha256,
            )
        )
        uow.record(
            _study_entry(
                ctx,
                actor,
                study.id,
                "load_protocol",
                "protocol",
                p.version,
                {"name": p.name, "version": p.version, "sha256": loaded.sha256},
                loaded.sha256,
            )
        )
        for site in p.sites:
            uow.session.add(site_row(study.id, p, site))
            uow.record(
                _study_entry(
                    ctx,
                    actor,
                    study.id,
                    "create_site",
                    "site",
                    site.code,
                    {"name": site.name, "country": site.country, "timezone": site.timezone},
                    loaded.sha256,
                )
            )
        uow.session.flush()
        info = _info(uow, study, version, created=True)
        uow.commit()
        return info


def site_row(study_id: int, protocol: Protocol, site: Site) -> SiteRow:
    """A new, active site of the study as the protocol file defines it (init and amendments)."""
    return SiteRow(
        study_id=study_id,
        code=site.code,
        name=site.name,
        country=site.country,
        region=protocol.country(site.country).region,
        timezone=site.timezone,
        cap=site.cap,
        planned_activation=site.planned_activation,
        active=True,
    )


def _info(
    uow: UnitOfWork, study: StudyRow, version: ProtocolVersionRow | None, *, created: bool
) -> StudyInfo:
    sites = uow.session.scalar(
        select(func.count()).select_from(SiteRow).where(SiteRow.study_id == study.id)
    )
    return StudyInfo(
        id=study.id,
        code=study.code,
        name=study.name,
        mode=study.mode,
        protocol_name=version.name if version else "",
        protocol_version=version.version if version else "",
        protocol_sha256=version.sha256 if version else "",
        sites=int(sites or 0),
        created=created,
    )


def list_studies(ctx: ServiceContext, actor: Actor) -> list[StudyInfo]:
    """Studies the actor holds a role in (all of them for the local operator)."""
    with ctx.uow(readonly=True) as uow:
        studies = uow.session.scalars(select(StudyRow).order_by(StudyRow.id)).all()
        visible = {g.study_id for g in actor.grants}
        out = []
        for study in studies:
            if actor.operator or study.id in visible:
                version = uow.session.scalars(
                    select(ProtocolVersionRow).where(
                        ProtocolVersionRow.study_id == study.id,
                        ProtocolVersionRow.current.is_(True),
                    )
                ).first()
                out.append(_info(uow, study, version, created=False))
        return out


def resolve_study(ctx: ServiceContext, actor: Actor, code: str | None) -> StudyInfo:
    """The study named by ``code``, or the only one the actor can see."""
    studies = list_studies(ctx, actor)
    if code is not None:
        for study in studies:
            if study.code == code:
                return study
        raise NotFound(f"study {code} not found")
    if len(studies) == 1:
        return studies[0]
    if not studies:
        raise NotFound("no study found; run 'trialdesk init' first")
    raise ValidationFailed(
        "several studies here; name one with --study (" + ", ".join(s.code for s in studies) + ")",
        {"study": "required"},
    )


def create_user(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    *,
    username: str,
    full_name: str,
    password: str,
    roles: list[tuple[Role, str | None]],
    email: str | None = None,
) -> int:
    """The local operator creates a user with a password in a demo or sandbox study (the demo
    users of ``init --demo``, the simulator's users). In a live study nobody chooses another
    person's password: people are invited (:func:`trialdesk.services.accounts.invite`)."""
    if not actor.operator:
        raise PermissionDenied(
            "users are invited by e-mail ('invite'); only the local operator creates demo and "
            "sandbox users with a password"
        )
    username = username.strip()
    if not username or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValidationFailed(
            f"invalid username {username!r}", {"username": "letters, digits, - _ ."}
        )
    address = check_address(email) if email else None
    password_hash = hash_password(ctx, password)
    now = ctx.now()
    with ctx.uow() as uow:
        study = uow.session.get(StudyRow, study_id)
        if study is None:
            raise NotFound(f"study {study_id} not found")
        if study.mode == "live":
            raise PreconditionFailed(
                f"study {study.code} is live: a person chooses their own password there; "
                "invite them by e-mail ('trialdesk users invite')",
                reason="invite-instead",
            )
        exists = uow.session.scalars(select(UserRow).where(UserRow.username == username)).first()
        if exists is not None:
            raise ValidationFailed(f"user {username} already exists", {"username": "taken"})
        user = UserRow(
            username=username,
            full_name=full_name,
            password_hash=password_hash,
            active=True,
            created_at=now,
            email=address,
        )
        uow.session.add(user)
        uow.session.flush()
        granted = []
        for role, site_code in roles:
            site_id = None
            if role in SITE_SCOPED:
                if site_code is None:
                    raise ValidationFailed(f"role {role.value} needs a site", {"site": "required"})
                site = uow.session.scalars(
                    select(SiteRow).where(SiteRow.study_id == study_id, SiteRow.code == site_code)
                ).one_or_none()
                if site is None:
                    raise NotFound(f"site {site_code} not found")
                site_id = site.id
            uow.session.add(
                RoleGrantRow(
                    user_id=user.id,
                    study_id=study_id,
                    role=role.value,
                    site_id=site_id,
                    granted_at=now,
                )
            )
            granted.append({"role": role.value, "site": site_code if site_id else None})
        uow.record(
            PendingEntry(
                stream=f"user:{user.id}",
                at=now,
                actor=actor.label,
                action="create_user",
                entity="user",
                entity_id=username,
                study_id=study_id,
                new={"full_name": full_name, "roles": granted, "mode": study.mode},
            )
        )
        uow.commit()
        return user.id


def create_demo_users(ctx: ServiceContext, actor: Actor, study_id: int, password: str) -> list[str]:
    """One user per role; site-scoped ones at the study's first site.

    A demo user that already exists (made for another demo study of this installation) is
    given its demo role in this study too, so it can switch between the studies (PROT-1);
    one that already holds a role here is left alone, so running it again changes nothing.
    Returns the names created or granted.
    """
    from trialdesk.services.admin import grant_role  # admin builds on this module's users

    with ctx.uow(readonly=True) as uow:
        first_site = uow.session.scalars(
            select(SiteRow.code).where(SiteRow.study_id == study_id).order_by(SiteRow.id)
        ).first()
        existing = set(uow.session.scalars(select(UserRow.username)).all())
        in_study = set(
            uow.session.scalars(
                select(UserRow.username)
                .join(RoleGrantRow, RoleGrantRow.user_id == UserRow.id)
                .where(RoleGrantRow.study_id == study_id)
            ).all()
        )
    if first_site is None:
        raise PreconditionFailed("the study has no sites; demo users need one")
    made = []
    for username, full_name, role in DEMO_USERS:
        site = first_site if role in SITE_SCOPED else None
        if username in in_study:
            continue
        if username in existing:
            grant_role(ctx, actor, study_id, username, role.value, site)
            made.append(username)
            continue
        create_user(
            ctx,
            actor,
            study_id,
            username=username,
            full_name=full_name,
            password=password,
            roles=[(role, site)],
        )
        made.append(username)
    return made


@dataclass(frozen=True)
class StudyContents:
    """What a set-up tool checks before it writes to a study (the simulator does)."""

    study: StudyInfo
    subjects: int
    protocol: LoadedProtocol


def study_contents(ctx: ServiceContext, actor: Actor, code: str | None) -> StudyContents:
    """The study (``code``, or the only one), its subject count and current protocol; for the
    local operator only, like the other set-up actions. Reads, never writes."""
    if not actor.operator:
        raise PreconditionFailed("study contents are read by the local operator")
    study = resolve_study(ctx, actor, code)
    with ctx.uow(readonly=True) as uow:
        subjects = uow.session.scalar(
            select(func.count()).select_from(SubjectRow).where(SubjectRow.study_id == study.id)
        )
        row = uow.session.scalars(
            select(ProtocolVersionRow).where(
                ProtocolVersionRow.study_id == study.id, ProtocolVersionRow.current.is_(True)
            )
        ).first()
        if row is None:
            raise NotFound(f"study {study.code} has no protocol loaded")
        loaded = ctx.protocol(row.sha256, row.text)
    return StudyContents(study=study, subjects=int(subjects or 0), protocol=loaded)
