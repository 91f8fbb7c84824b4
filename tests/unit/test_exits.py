"""Death and withdrawal through the protocol's forms, withdrawal kinds, and follow-up contacts
after a withdrawal that allows contact (REC-9, LIFE-4)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import flagship
from tests.protocol_variants import records_variant
from trialdesk.domain.errors import PreconditionFailed, ValidationFailed
from trialdesk.domain.exits import (
    ExitFacts,
    ExitFormSpec,
    ExitKind,
    WithdrawalKindSpec,
    check_record_after_exit,
    contact_visits,
    read_exit,
    withdrawal_kind,
)
from trialdesk.protocol.specs import exit_form_specs, withdrawal_kind_specs

D = dt.date
SUBJECT = "S101-0001"
EXITED = D(2029, 6, 1)


def flagship_kinds() -> list[WithdrawalKindSpec]:
    return withdrawal_kind_specs(flagship().protocol)


def test_rec9_exits_read_the_protocols_forms() -> None:
    """The flagship's death and withdrawal forms (unused before) are the exits' records."""
    forms = exit_form_specs(flagship().protocol)
    assert forms == {
        "death": ExitFormSpec("death", "death_date", "cause"),
        "withdrawal": ExitFormSpec("withdrawal", "withdrawal_date", "reason"),
    }
    variant = exit_form_specs(records_variant().protocol)
    assert variant["withdrawal"] == ExitFormSpec("withdrawal", "withdrawal_date", None, "scope")
    assert variant["death"] == ExitFormSpec("death", "death_date")


def test_rec9_death_date_and_cause_come_from_the_death_form() -> None:
    spec = exit_form_specs(flagship().protocol)["death"]
    on, cause, kind = read_exit(spec, {"death_date": EXITED, "cause": "cardiovascular"})
    assert (on, cause, kind) == (EXITED, "cardiovascular", None)
    with pytest.raises(ValidationFailed, match="needs death_date"):
        read_exit(spec, {"death_date": None, "cause": "unknown"})


def test_rec9_withdrawal_kind_given_beside_the_flagship_form() -> None:
    spec = exit_form_specs(flagship().protocol)["withdrawal"]
    values = {"withdrawal_date": EXITED, "reason": "subject_decision"}
    on, reason, kind = read_exit(spec, values, kinds=flagship_kinds(), kind="further_data")
    assert (on, reason) == (EXITED, "subject_decision")
    assert kind is not None and kind.contact_allowed
    with pytest.raises(ValidationFailed, match="say what the subject withdraws from: further_data"):
        read_exit(spec, values, kinds=flagship_kinds())
    with pytest.raises(ValidationFailed, match="unknown withdrawal kind 'partly'"):
        read_exit(spec, values, kinds=flagship_kinds(), kind="partly")


def test_rec9_second_trial_reads_the_kind_from_its_form() -> None:
    protocol = records_variant().protocol
    spec = exit_form_specs(protocol)["withdrawal"]
    kinds = withdrawal_kind_specs(protocol)
    values = {"withdrawal_date": EXITED, "scope": "visits"}
    _, _, kind = read_exit(spec, values, kinds=kinds)
    assert kind is not None and kind.code == "visits" and kind.contact_forms == {"annual_contact"}
    with pytest.raises(ValidationFailed, match="is 'visits' on the form, not 'everything'"):
        read_exit(spec, values, kinds=kinds, kind="everything")


def _exit(kind: ExitKind, withdrawal: str | None = None) -> ExitFacts:
    chosen = withdrawal_kind(flagship_kinds(), withdrawal) if withdrawal else None
    return ExitFacts(kind, EXITED, chosen)


@pytest.mark.parametrize(
    ("facts", "form", "on", "refusal"),
    [
        # late entries of what happened before the exit are always accepted (LIFE-4)
        (_exit(ExitKind.DEATH), "adverse_event", D(2029, 5, 30), None),
        (_exit(ExitKind.WITHDRAWAL, "all_contact"), "follow_up", EXITED, None),
        # after the exit
        (_exit(ExitKind.DEATH), "annual_contact", D(2030, 1, 1), "subject-died"),
        (_exit(ExitKind.LOST), "annual_contact", D(2030, 1, 1), "subject-lost"),
        (_exit(ExitKind.WITHDRAWAL, "all_contact"), "annual_contact", D(2030, 1, 1),
         "withdrawn-no-contact"),
        (_exit(ExitKind.WITHDRAWAL, "further_data"), "annual_contact", D(2030, 1, 1), None),
        (_exit(ExitKind.WITHDRAWAL, "further_data"), "death", D(2031, 2, 1), None),
        (_exit(ExitKind.WITHDRAWAL, "further_data"), "follow_up", D(2029, 9, 1),
         "withdrawn-contact-only"),
        (_exit(ExitKind.WITHDRAWAL, "further_data"), "adverse_event", None,
         "withdrawn-contact-only"),
    ],
)  # fmt: skip
def test_rec9_what_may_be_recorded_after_an_exit(
    facts: ExitFacts, form: str, on: dt.date | None, refusal: str | None
) -> None:
    if refusal is None:
        check_record_after_exit(facts, form, on, subject=SUBJECT)
        return
    with pytest.raises(PreconditionFailed) as info:
        check_record_after_exit(facts, form, on, subject=SUBJECT)
    assert info.value.code == refusal
    assert SUBJECT in info.value.message and "2029-06-01" in info.value.message


def test_rec9_contact_only_refusal_names_the_allowed_contacts() -> None:
    with pytest.raises(PreconditionFailed) as info:
        check_record_after_exit(
            _exit(ExitKind.WITHDRAWAL, "further_data"), "follow_up", D(2029, 9, 1), subject=SUBJECT
        )
    assert info.value.message == (
        "S101-0001 withdrew on 2029-06-01 (Withdraws from further visits and data collection; "
        "may be contacted for vital status); after that only follow-up contacts are recorded "
        "(annual_contact, death), not follow_up"
    )


def test_rec9_withdrawn_subjects_contacts_follow_the_annual_schedule() -> None:
    """A withdrawal that allows contact keeps the annual contacts on the worklist."""
    visits = [(v.code, v.forms) for v in flagship().protocol.visits]
    further, everything = (
        withdrawal_kind(flagship_kinds(), c) for c in ("further_data", "all_contact")
    )
    assert contact_visits(further, visits) == ["Y3", "Y4", "Y5"]
    assert contact_visits(everything, visits) == []
