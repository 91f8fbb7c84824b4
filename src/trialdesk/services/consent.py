"""Consent documents and versions as protocol data (REC-8, LIFE-2): the first consent and
every re-consent are checked against the version approved and in force at the subject's site
on the day signed; an amendment bringing a version marked ``reconsent`` puts the subjects
still in the study who signed an older one on the re-consent worklist, and their next visit
shows it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from trialdesk.domain.consent import (
    ConsentDocumentSpec,
    ConsentDue,
    SignedConsent,
    check_consent,
    consent_due,
)
from trialdesk.domain.errors import ActionNotAllowed, NotFound, PreconditionFailed, Refusal
from trialdesk.domain.lifecycle import POST_CONSENT, SubjectState
from trialdesk.domain.permissions import Permission
from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.protocol.specs import consent_specs
from trialdesk.services.access import Actor, require, require_site_visible
from trialdesk.services.common import (
    Acting,
    acting_with,
    loaded_protocol,
    require_text,
    site_today,
    subject_in_scope,
)
from trialdesk.services.context import ServiceContext
from trialdesk.store.records import Consent, ProtocolVersion, Site, Subject
from trialdesk.store.uow import UnitOfWork


@dataclass(frozen=True)
class ConsentChoice:
    """A consent as the caller named it, checked: the document and version to store."""

    document: str
    version: str


def split_label(
    documents: list[ConsentDocumentSpec], label: str, document: str | None
) -> tuple[str | None, str]:
    """``ICF v1.0`` names document ICF, version v1.0 (the label the demo has always used);
    a bare label is a version of ``document``, or of the protocol's first document."""
    text = label.strip()
    if document is None:
        head, _, tail = text.partition(" ")
        if tail and any(d.code == head for d in documents):
            return head, tail.strip()
        first = next((d for d in documents if d.required), documents[0] if documents else None)
        return (first.code if first is not None else None), text
    return document.strip(), text


def _consent_protocol(
    ctx: ServiceContext, uow: UnitOfWork, subject: Subject
) -> tuple[ProtocolVersion, LoadedProtocol]:
    """The newest signed protocol version (never older than the subject's own): its consent
    section dates every version itself, including one an amendment brings from a later day."""
    own = uow.protocols.get(subject.protocol_version_id)
    newest = uow.protocols.newest(subject.study_id)
    version = own if newest is None or newest.id < own.id else newest
    return version, loaded_protocol(ctx, uow, version)


def checked_consent(
    ctx: ServiceContext,
    uow: UnitOfWork,
    subject: Subject,
    site: Site,
    *,
    signed_on: dt.date,
    version: str,
    document: str | None,
) -> tuple[ConsentChoice, int]:
    """The document and version named, refused unless approved and in force at the site on
    ``signed_on`` (REC-8); with the protocol version whose consent section was read. A
    protocol without a consent section takes the label as written (LIFE-2)."""
    label = require_text(version, "consent_version", "the consent form version")
    pv, loaded = _consent_protocol(ctx, uow, subject)
    documents = consent_specs(loaded.protocol)
    if not documents:
        return ConsentChoice(document or "", label), pv.id
    code, text = split_label(documents, label, document)
    checked = check_consent(
        documents, code or "", text, site=site.code, country=site.country, on=signed_on
    )
    return ConsentChoice(code or "", checked.version), pv.id


def add_consent(
    act: Acting, choice: ConsentChoice, signed_on: dt.date, protocol_version_id: int
) -> Consent:
    return act.uow.consents.add(
        study_id=act.subject.study_id,
        subject_id=act.subject.id,
        document=choice.document,
        version=choice.version,
        signed_on=signed_on,
        protocol_version_id=protocol_version_id,
        recorded_by=act.actor.label,
        recorded_at=act.now,
    )


def _signed(
    subject: Subject, rows: list[Consent], documents: list[ConsentDocumentSpec]
) -> list[SignedConsent]:
    """The subject's consents; one recorded before consent rows existed counts as the label
    on the subject."""
    if rows:
        return [SignedConsent(r.document, r.version, r.signed_on) for r in rows]
    if subject.consent_date is None or subject.consent_version is None:
        return []
    code, text = split_label(documents, subject.consent_version, None)
    return [SignedConsent(code or "", text, subject.consent_date)]


@dataclass(frozen=True)
class ConsentView:
    document: str
    version: str
    signed_on: str
    recorded_by: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ConsentDueView:
    subject: str
    site: str
    document: str
    signed: str | None
    required: str
    since: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SubjectConsents:
    subject: str
    consents: list[ConsentView]
    due: list[ConsentDueView]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "consents": [c.to_dict() for c in self.consents],
            "due": [d.to_dict() for d in self.due],
        }


def _due(
    ctx: ServiceContext, uow: UnitOfWork, subject: Subject, site: Site, today: dt.date
) -> list[ConsentDue]:
    _pv, loaded = _consent_protocol(ctx, uow, subject)
    documents = consent_specs(loaded.protocol)
    if not documents or subject.consent_date is None:
        return []
    signed = _signed(subject, uow.consents.for_subject(subject.id), documents)
    in_study = SubjectState(subject.state) in POST_CONSENT
    due = consent_due(
        documents, signed, site=site.code, country=site.country, today=today, in_study=in_study
    )
    return [d for d in due if d.signed is not None]


def _due_view(subject: Subject, site: Site, due: ConsentDue) -> ConsentDueView:
    return ConsentDueView(
        subject=subject.number,
        site=site.code,
        document=due.document,
        signed=due.signed,
        required=due.required,
        since=None if due.since is None else due.since.isoformat(),
    )


def reconsent_due(
    ctx: ServiceContext, uow: UnitOfWork, subject: Subject, site: Site, on: dt.date
) -> list[str]:
    """What the subject's next visit shows: ``ICF v2.0 (signed v1.0)`` per document due."""
    return [
        f"{d.document} {d.required} (signed {d.signed})" for d in _due(ctx, uow, subject, site, on)
    ]


def _consents_of(
    ctx: ServiceContext, uow: UnitOfWork, subject: Subject, site: Site, now: dt.datetime
) -> SubjectConsents:
    today = site_today(site, now)
    return SubjectConsents(
        subject=subject.number,
        consents=[
            ConsentView(r.document, r.version, r.signed_on.isoformat(), r.recorded_by)
            for r in uow.consents.for_subject(subject.id)
        ],
        due=[_due_view(subject, site, d) for d in _due(ctx, uow, subject, site, today)],
    )


def subject_consents(
    ctx: ServiceContext, actor: Actor, study_id: int, number: str
) -> SubjectConsents:
    """The consents a subject signed and the re-consent now due (SUBJECT_READ)."""
    require(actor, study_id, Permission.SUBJECT_READ)
    with ctx.uow(readonly=True) as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        return _consents_of(ctx, uow, read.subject, read.site, ctx.now())


def record_reconsent(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    number: str,
    *,
    signed_on: dt.date,
    version: str,
    document: str | None = None,
) -> SubjectConsents:
    """A second (or later) consent, e.g. to the version an amendment brought (REC-8): the
    subject must have consented already and still be in the study; the version must be in
    force at the site that day and not already signed."""
    now = ctx.now()
    with ctx.uow() as uow:
        read = subject_in_scope(uow, actor, study_id, number)
        subject = read.subject
        require(actor, study_id, Permission.CONSENT_RECORD, site_id=subject.site_id)
        if subject.consent_date is None:
            raise PreconditionFailed(
                f"{number} has no consent recorded yet: record the first consent",
                Refusal.CONSENT_NOT_RECORDED,
            )
        if SubjectState(subject.state) not in POST_CONSENT:
            raise ActionNotAllowed(
                f"cannot record a re-consent for {number}: it is {subject.state} (no longer in "
                "the study)"
            )
        act = acting_with(ctx, uow, actor, read, now)
        act.check_date(signed_on, "re-consent", field="signed_on")
        choice, pv_id = checked_consent(
            ctx, uow, subject, read.site, signed_on=signed_on, version=version, document=document
        )
        own = uow.consents.for_subject(subject.id)
        if any((c.document, c.version) == (choice.document, choice.version) for c in own):
            raise PreconditionFailed(
                f"{number} has already signed {choice.document} {choice.version}",
                Refusal.CONSENT_ALREADY_SIGNED,
            )
        add_consent(act, choice, signed_on, pv_id)
        act.audit(
            "record_reconsent",
            entity="consent",
            new={
                "document": choice.document,
                "version": choice.version,
                "signed_on": signed_on.isoformat(),
                "previous": [f"{c.document} {c.version}" for c in own],
            },
        )
        uow.commit()
        return _consents_of(ctx, uow, subject, read.site, now)


def consent_worklist(
    ctx: ServiceContext, actor: Actor, study_id: int, *, site: str | None = None
) -> list[ConsentDueView]:
    """Subjects still in the study who must re-consent today at their site (REC-8)."""
    require(actor, study_id, Permission.CONSENT_WORKLIST_READ)
    now = ctx.now()
    with ctx.uow(readonly=True) as uow:
        site_id = None
        if site is not None:
            wanted = uow.sites.by_code(study_id, site)
            if wanted is None:
                raise NotFound(f"site {site} not found")
            require_site_visible(actor, study_id, wanted.id, f"site {site}")
            site_id = wanted.id
        rows = uow.subjects.on_study(
            study_id,
            [s.value for s in POST_CONSENT],
            site_ids=actor.site_ids(study_id),
            site_code=site,
        )
        out: list[ConsentDueView] = []
        for subject, site_row in rows:
            if site_id is not None and subject.site_id != site_id:
                continue
            today = site_today(site_row, now)
            due = _due(ctx, uow, subject, site_row, today)
            out += [_due_view(subject, site_row, d) for d in due]
        return out
