"""Consent as protocol data on both backends (REC-8): an unknown, not-yet-effective or
superseded version is refused and changes nothing; an amendment bringing a version marked
``reconsent`` puts subjects on the re-consent worklist and flags their next visit; the
re-consent is recorded, audited, and not accepted twice."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from tests import journey as j
from tests.conftest import PASSWORD, Trial, flagship
from trialdesk.domain.errors import (
    ActionNotAllowed,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.protocol.loader import LoadedProtocol, parse_protocol
from trialdesk.services import amendments, consent, screening, visits
from trialdesk.store.tables import AuditEntryRow, Base

V2_FROM = dt.date(2027, 3, 1)


def _with_v2() -> LoadedProtocol:
    """The flagship amended: ICF v2.0 in force from 2027-03-01, re-consent required."""
    text = flagship().text.replace('version: "1.0"', 'version: "1.1"', 1)
    old = "        - {version: v1.0}\n"
    assert text.count(old) == 1
    text = text.replace(
        old,
        old + "        - {version: v2.0, effective_from: 2027-03-01, reconsent: true}\n",
    )
    return parse_protocol(text)


def _amend(t: Trial) -> None:
    t.clock.set_day("2027-02-20")
    amendments.propose_amendment(
        t.ctx,
        t.actor("manager"),
        t.study_id,
        _with_v2(),
        reason="Consent form v2.0 (new risk information)",
        password=PASSWORD,
        effective_from=V2_FROM,
    )


def _counts(t: Trial) -> dict[str, int]:
    with t.ctx.uow(readonly=True) as uow:
        return {
            table.name: int(uow.session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def _consent(t: Trial, number: str, version: str, on: dt.date) -> None:
    screening.record_consent(
        t.ctx, t.actor("coordinator"), t.study_id, number, consent_date=on, consent_version=version
    )


def test_rec8_unknown_version_is_refused_and_changes_nothing(trial: Trial) -> None:
    """REC-8: "NO-SUCH-ICF v99" (the issue's example) is refused naming the versions; the
    subject stays registered, nothing is written."""
    number = j.register(trial)
    before = _counts(trial)
    with pytest.raises(ValidationFailed, match=r"ICF has no version 'NO-SUCH-ICF v99'.*v1\.0"):
        _consent(trial, number, "NO-SUCH-ICF v99", j.CONSENT)
    assert _counts(trial) == before


def test_rec8_document_and_version_label_is_read_as_both(trial: Trial) -> None:
    """REC-8: the demo's label "ICF v1.0" is document ICF, version v1.0."""
    number = j.register(trial)
    _consent(trial, number, "ICF v1.0", j.CONSENT)
    [signed] = consent.subject_consents(
        trial.ctx, trial.actor("coordinator"), trial.study_id, number
    ).consents
    assert (signed.document, signed.version, signed.signed_on) == ("ICF", "v1.0", "2027-01-25")


def test_rec8_not_yet_effective_and_superseded_versions_are_refused(trial: Trial) -> None:
    """REC-8: after the amendment is signed, v2.0 cannot be signed before 2027-03-01, and v1.0
    cannot be signed from then on; each refusal names the version to sign."""
    _amend(trial)
    early = j.register(trial)  # registered 2027-01-25 (the journey's consent day)
    trial.clock.set_day("2027-02-25")
    before = _counts(trial)
    with pytest.raises(
        PreconditionFailed, match=r"only from 2027-03-01; on 2027-02-25 sign v1\.0"
    ) as e:
        _consent(trial, early, "v2.0", dt.date(2027, 2, 25))
    assert e.value.code == "consent-version-not-in-force"
    trial.clock.set_day("2027-03-02")
    with pytest.raises(PreconditionFailed, match=r"replaced at site S101 by v2\.0") as e:
        _consent(trial, early, "v1.0", dt.date(2027, 3, 2))
    assert e.value.code == "consent-version-superseded"
    assert _counts(trial) == before
    _consent(trial, early, "v2.0", dt.date(2027, 3, 2))


def test_rec8_reconsent_after_an_amendment_is_required_flagged_and_recorded(
    trial: Trial,
) -> None:
    """REC-8: a subject who signed v1.0 is on the re-consent worklist once v2.0 is in force,
    the next visit says so; the re-consent is recorded and audited, then nothing is due; the
    same version twice is refused."""
    number, _ = j.procedure_done(trial)  # consented v1.0 on 2027-01-25
    _amend(trial)
    coord = trial.actor("coordinator")
    trial.clock.set_day("2027-02-27")
    assert consent.consent_worklist(trial.ctx, coord, trial.study_id) == []

    trial.clock.set_day("2027-03-05")
    [due] = consent.consent_worklist(trial.ctx, trial.actor("monitor"), trial.study_id)
    assert (due.subject, due.document, due.signed, due.required, due.since) == (
        number,
        "ICF",
        "v1.0",
        "v2.0",
        "2027-03-01",
    )
    trial.clock.set_day("2027-03-12")  # M1 (target 2027-03-17) is due
    [next_visit] = [
        v for v in visits.visit_worklist(trial.ctx, coord, trial.study_id) if v.subject == number
    ]
    assert (next_visit.visit, next_visit.reconsent) == ("M1", "ICF v2.0 (signed v1.0)")

    result = consent.record_reconsent(
        trial.ctx, coord, trial.study_id, number, signed_on=dt.date(2027, 3, 5), version="v2.0"
    )
    assert [(c.version, c.signed_on) for c in result.consents] == [
        ("v1.0", "2027-01-25"),
        ("v2.0", "2027-03-05"),
    ]
    assert result.due == []
    assert consent.consent_worklist(trial.ctx, coord, trial.study_id) == []
    with trial.ctx.uow(readonly=True) as uow:
        entry = uow.session.scalars(
            select(AuditEntryRow).where(AuditEntryRow.action == "record_reconsent")
        ).one()
    assert '"v2.0"' in (entry.new or "") and entry.actor == "coordinator"

    before = _counts(trial)
    with pytest.raises(PreconditionFailed, match=r"already signed ICF v2\.0") as e:
        consent.record_reconsent(
            trial.ctx, coord, trial.study_id, number, signed_on=dt.date(2027, 3, 5), version="v2.0"
        )
    assert e.value.code == "consent-already-signed"
    assert _counts(trial) == before


def test_rec8_reconsent_needs_a_first_consent_and_a_subject_in_the_study(trial: Trial) -> None:
    """REC-8: a re-consent for a subject never consented, or a screen failure, is refused."""
    number = j.register(trial)
    coord = trial.actor("coordinator")
    with pytest.raises(PreconditionFailed) as e:
        consent.record_reconsent(
            trial.ctx, coord, trial.study_id, number, signed_on=j.CONSENT, version="v1.0"
        )
    assert e.value.code == "consent-not-recorded"
    screening.decline_consent(trial.ctx, coord, trial.study_id, number, reason="declined")
    with pytest.raises((ActionNotAllowed, PreconditionFailed)):
        consent.record_reconsent(
            trial.ctx, coord, trial.study_id, number, signed_on=j.CONSENT, version="v1.0"
        )
