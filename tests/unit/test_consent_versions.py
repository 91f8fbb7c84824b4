"""Consent versions as protocol data (REC-8, LIFE-2): a version is accepted only when approved
and in force at the site on the consent date; re-consent after an amendment is worked out per
subject. Tested with the flagship and with a second trial whose approvals differ by country
and site."""

from __future__ import annotations

import datetime as dt
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import flagship
from tests.protocol_variants import records_variant
from trialdesk.domain.consent import (
    ConsentDocumentSpec,
    ConsentDue,
    SignedConsent,
    check_consent,
    consent_due,
    reconsent_worklist,
    version_in_force,
)
from trialdesk.domain.errors import PreconditionFailed, ValidationFailed
from trialdesk.protocol.specs import consent_specs

D = dt.date
SITES = {"S101": "US", "S201": "CA", "S301": "DE", "S302": "DE"}


@cache
def variant() -> tuple[ConsentDocumentSpec, ...]:
    return tuple(consent_specs(records_variant().protocol))


@cache
def flagship_docs() -> tuple[ConsentDocumentSpec, ...]:
    return tuple(consent_specs(flagship().protocol))


def check(site: str, on: dt.date, version: str, document: str = "ICF") -> str:
    return check_consent(
        variant(), document, version, site=site, country=SITES[site], on=on
    ).version


def refusal(site: str, on: dt.date, version: str, document: str = "ICF") -> PreconditionFailed:
    with pytest.raises(PreconditionFailed) as info:
        check(site, on, version, document)
    return info.value


def test_rec8_flagship_version_is_in_force_from_the_start_everywhere() -> None:
    docs = flagship_docs()
    for site, country in (("S101", "US"), ("S405", "AU")):
        assert check_consent(docs, "ICF", "v1.0", site=site, country=country, on=D(2019, 1, 1))
    with pytest.raises(ValidationFailed, match=r"ICF has no version 'v99' \(versions: v1.0\)"):
        check_consent(docs, "ICF", "v99", site="S101", country="US", on=D(2027, 2, 1))


def test_rec8_made_up_document_or_version_is_refused() -> None:
    """The issue's finding: "NO-SUCH-ICF v99" was accepted."""
    with pytest.raises(ValidationFailed, match=r"unknown consent document 'NO-SUCH-ICF' \("):
        check("S101", D(2027, 2, 1), "v99", document="NO-SUCH-ICF")
    with pytest.raises(ValidationFailed, match=r"ICF has no version 'v99' \(versions: A, B\)"):
        check("S101", D(2027, 2, 1), "v99")


def test_rec8_version_not_yet_in_force_is_refused_and_the_right_one_named() -> None:
    problem = refusal("S101", D(2027, 2, 10), "B")
    assert problem.code == "consent-version-not-in-force"
    assert (
        problem.message
        == "ICF B is in force at site S101 only from 2027-03-01; on 2027-02-10 sign A"
    )
    assert check("S101", D(2027, 2, 10), "A") == "A"
    assert check("S101", D(2027, 3, 1), "B") == "B"


def test_rec8_superseded_version_is_refused() -> None:
    problem = refusal("S101", D(2027, 3, 5), "A")
    assert problem.code == "consent-version-superseded"
    assert problem.message == "ICF A was replaced at site S101 by B on 2027-03-01; sign B"


def test_rec8_country_and_site_approvals_differ() -> None:
    """Germany approved B from 2027-04-15; site S302 (Munich) only from 2027-05-02; Canada
    never: A stays in force there."""
    assert check("S301", D(2027, 4, 14), "A") == "A"
    assert check("S301", D(2027, 4, 15), "B") == "B"
    assert refusal("S302", D(2027, 4, 20), "B").message.startswith(
        "ICF B is in force at site S302 only from 2027-05-02"
    )
    assert check("S302", D(2027, 4, 20), "A") == "A"
    assert check("S302", D(2027, 5, 2), "B") == "B"
    problem = refusal("S201", D(2028, 1, 1), "B")
    assert (problem.code, problem.message) == (
        "consent-version-not-approved",
        "ICF B is not approved for site S201",
    )
    assert check("S201", D(2028, 1, 1), "A") == "A"


def test_rec8_optional_document_has_its_own_dates() -> None:
    assert refusal("S101", D(2027, 1, 31), "G1", "GEN").code == "consent-version-not-in-force"
    assert check("S101", D(2027, 2, 1), "G1", "GEN") == "G1"


@settings(max_examples=300, derandomize=True, database=None)
@given(
    site=st.sampled_from(sorted(SITES)),
    on=st.dates(D(2026, 6, 1), D(2028, 6, 1)),
)
def test_rec8_exactly_the_version_in_force_may_be_signed(site: str, on: dt.date) -> None:
    """REC-8 property: on any day at any site, the one version in force is accepted and every
    other version of the document is refused."""
    for document in variant():
        current = version_in_force(document, site, SITES[site], on)
        for version in document.versions:
            if current is not None and version.version == current.version:
                assert check(site, on, version.version, document.code) == version.version
            else:
                with pytest.raises(PreconditionFailed):
                    check(site, on, version.version, document.code)


def _due(
    site: str, signed: list[SignedConsent], today: dt.date, *, in_study: bool = True
) -> list[ConsentDue]:
    return consent_due(
        variant(), signed, site=site, country=SITES[site], today=today, in_study=in_study
    )


SIGNED_A = [SignedConsent("ICF", "A", D(2027, 1, 20))]


def test_rec8_reconsent_required_once_the_new_version_is_in_force_at_the_site() -> None:
    """After the amendment's version B (reconsent) takes effect at a subject's site, a subject
    still in the study who signed A must sign B; not before, not elsewhere, not once signed,
    not after leaving the study."""
    assert _due("S101", SIGNED_A, D(2027, 2, 28)) == []
    assert _due("S101", SIGNED_A, D(2027, 3, 1)) == [ConsentDue("ICF", "A", "B", D(2027, 3, 1))]
    assert _due("S302", SIGNED_A, D(2027, 4, 20)) == []
    assert _due("S302", SIGNED_A, D(2027, 5, 2)) == [ConsentDue("ICF", "A", "B", D(2027, 5, 2))]
    assert _due("S201", SIGNED_A, D(2028, 1, 1)) == []
    both = [*SIGNED_A, SignedConsent("ICF", "B", D(2027, 3, 10))]
    assert _due("S101", both, D(2027, 4, 1)) == []
    assert _due("S101", SIGNED_A, D(2027, 4, 1), in_study=False) == []


def test_rec8_required_document_never_signed_is_due_optional_one_is_not() -> None:
    assert _due("S101", [], D(2027, 4, 1)) == [ConsentDue("ICF", None, "B", None)]
    assert _due("S201", [], D(2027, 4, 1)) == [ConsentDue("ICF", None, "A", None)]


def test_rec8_reconsent_worklist_lists_subjects_who_signed_an_older_version() -> None:
    rows = [
        ("S101-0001", "S101", "US", True, SIGNED_A),
        ("S101-0002", "S101", "US", True, [SignedConsent("ICF", "B", D(2027, 3, 2))]),
        ("S101-0003", "S101", "US", False, SIGNED_A),
        ("S201-0001", "S201", "CA", True, SIGNED_A),
        ("S301-0001", "S301", "DE", True, SIGNED_A),
        ("S301-0002", "S301", "DE", True, []),
    ]
    worklist = reconsent_worklist(variant(), rows, today=D(2027, 4, 20))
    assert worklist == [
        ("S101-0001", ConsentDue("ICF", "A", "B", D(2027, 3, 1))),
        ("S301-0001", ConsentDue("ICF", "A", "B", D(2027, 4, 15))),
    ]


def test_rec8_flagship_needs_no_reconsent_until_an_amendment_brings_one() -> None:
    signed = [SignedConsent("ICF", "v1.0", D(2027, 1, 20))]
    due = consent_due(
        flagship_docs(), signed, site="S101", country="US", today=D(2031, 1, 1), in_study=True
    )
    assert due == []
