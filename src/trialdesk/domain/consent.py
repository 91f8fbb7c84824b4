"""Consent documents and versions as protocol data (REC-8, LIFE-2).

A version is *in force* at a site on a day when it is approved there (everywhere, or by the
site's own approval, else its country's) from a date on or before that day, and no later
version of the same document is in force there already. Recording a consent checks exactly
that, so a made-up version, a version not yet approved at the site and a superseded one are
each refused with their own message. A later version marked ``reconsent`` puts every subject
still in the study who signed an earlier one on the re-consent worklist from the day it is in
force at their site. Pure, stdlib only; dates are passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trialdesk.domain.errors import PreconditionFailed, ValidationFailed

START = dt.date.min
"""An undated first version is in force from the start of the study."""


@dataclass(frozen=True)
class ApprovalSpec:
    site: str | None
    country: str | None
    effective_from: dt.date


@dataclass(frozen=True)
class ConsentVersionSpec:
    version: str
    effective_from: dt.date | None = None
    approvals: tuple[ApprovalSpec, ...] = ()
    reconsent: bool = False


@dataclass(frozen=True)
class ConsentDocumentSpec:
    code: str
    name: str
    versions: tuple[ConsentVersionSpec, ...]
    required: bool = True

    def version(self, label: str) -> ConsentVersionSpec | None:
        for version in self.versions:
            if version.version == label:
                return version
        return None


def approved_from(version: ConsentVersionSpec, site: str, country: str) -> dt.date | None:
    """The first day ``version`` may be signed at ``site``; None when it is not approved
    there. A site's own approval wins over its country's."""
    base = version.effective_from or START
    if not version.approvals:
        return base
    for approval in version.approvals:
        if approval.site == site:
            return max(base, approval.effective_from)
    for approval in version.approvals:
        if approval.country == country and approval.site is None:
            return max(base, approval.effective_from)
    return None


def version_in_force(
    document: ConsentDocumentSpec, site: str, country: str, on: dt.date
) -> ConsentVersionSpec | None:
    """The version to sign at ``site`` on ``on``: the latest one approved there by then."""
    current: ConsentVersionSpec | None = None
    for version in document.versions:
        start = approved_from(version, site, country)
        if start is not None and start <= on:
            current = version
    return current


def _document(documents: Sequence[ConsentDocumentSpec], code: str) -> ConsentDocumentSpec:
    for document in documents:
        if document.code == code:
            return document
    known = ", ".join(d.code for d in documents) or "none"
    raise ValidationFailed(
        f"unknown consent document {code!r} (documents: {known})", {"document": "unknown"}
    )


def check_consent(
    documents: Sequence[ConsentDocumentSpec],
    document_code: str,
    version_label: str,
    *,
    site: str,
    country: str,
    on: dt.date,
) -> ConsentVersionSpec:
    """The version a consent signed at ``site`` on ``on`` names, if it may be signed there
    then; otherwise one clear refusal (REC-8). Nothing is written by a refusal."""
    document = _document(documents, document_code)
    version = document.version(version_label)
    if version is None:
        known = ", ".join(v.version for v in document.versions)
        raise ValidationFailed(
            f"{document.code} has no version {version_label!r} (versions: {known})",
            {"version": "unknown"},
        )
    current = version_in_force(document, site, country, on)
    start = approved_from(version, site, country)
    label = f"{document.code} {version.version}"
    if start is None:
        raise PreconditionFailed(
            f"{label} is not approved for site {site}", reason="consent-version-not-approved"
        )
    if start > on:
        now = f"; on {on} sign {current.version}" if current is not None else ""
        raise PreconditionFailed(
            f"{label} is in force at site {site} only from {start}{now}",
            reason="consent-version-not-in-force",
        )
    if current is not None and current.version != version.version:
        since = approved_from(current, site, country)
        raise PreconditionFailed(
            f"{label} was replaced at site {site} by {current.version} on {since}; sign "
            f"{current.version}",
            reason="consent-version-superseded",
        )
    return version


@dataclass(frozen=True)
class SignedConsent:
    document: str
    version: str
    on: dt.date


@dataclass(frozen=True)
class ConsentDue:
    """A subject who must sign ``required`` of ``document`` (``signed`` is what they have,
    None when they have not signed the document at all)."""

    document: str
    signed: str | None
    required: str
    since: dt.date | None


def _latest(
    document: ConsentDocumentSpec, consents: Iterable[SignedConsent]
) -> SignedConsent | None:
    order = {v.version: i for i, v in enumerate(document.versions)}
    own = [c for c in consents if c.document == document.code and c.version in order]
    return max(own, key=lambda c: (order[c.version], c.on), default=None)


def consent_due(
    documents: Sequence[ConsentDocumentSpec],
    consents: Iterable[SignedConsent],
    *,
    site: str,
    country: str,
    today: dt.date,
    in_study: bool,
) -> list[ConsentDue]:
    """What a subject still has to sign today: a required document never signed, or a
    re-consent version in force at the site newer than the one signed. Nobody outside the
    study (screen failed, completed, withdrawn, died, lost) is asked (REC-8)."""
    if not in_study:
        return []
    signed = list(consents)
    out: list[ConsentDue] = []
    for document in documents:
        latest = _latest(document, signed)
        current = version_in_force(document, site, country, today)
        if latest is None:
            if document.required and current is not None:
                out.append(ConsentDue(document.code, None, current.version, None))
            continue
        order = [v.version for v in document.versions]
        index = order.index(latest.version)
        for version in document.versions[index + 1 :]:
            start = approved_from(version, site, country)
            if version.reconsent and start is not None and start <= today:
                required = current.version if current is not None else version.version
                since = None if start == START else start
                out.append(ConsentDue(document.code, latest.version, required, since))
                break
    return out


def reconsent_worklist(
    documents: Sequence[ConsentDocumentSpec],
    subjects: Iterable[tuple[str, str, str, bool, Sequence[SignedConsent]]],
    *,
    today: dt.date,
) -> list[tuple[str, ConsentDue]]:
    """``(subject, site, country, in study, consents)`` rows -> who must re-consent, to what,
    since when; subjects who never signed a document are the consent worklist's, not this."""
    out: list[tuple[str, ConsentDue]] = []
    for subject, site, country, in_study, consents in subjects:
        for due in consent_due(
            documents, consents, site=site, country=country, today=today, in_study=in_study
        ):
            if due.signed is not None:
                out.append((subject, due))
    return out
