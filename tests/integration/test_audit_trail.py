"""The study's audit trail as its readers get it (AUD-1, RAND-6), on both databases: one time
per action, filters by action, user, subject and date range, the users' failed sign-ins and
e-signatures, every disclosure audited, and the blinded projection (no per-device entry, no
hash or id, whole seconds).

Found as an insider: the gap between the procedure-form entry and the procedure entry was
~3.7 ms for implants and ~1.3 ms for shams (microsecond times, every role); unblinded exports
left no entry; failed sign-ins and e-signatures were missing from the study's export; the
trail could be filtered by subject only."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests import journey as j
from tests.conftest import PASSWORD, Trial
from trialdesk.domain.errors import (
    AuthenticationFailed,
    PermissionDenied,
    TrialError,
    ValidationFailed,
)
from trialdesk.services import (
    audit_trail,
    devices,
    endpoints,
    exports,
    followup,
    history,
    report_views,
    screening,
    submission,
)
from trialdesk.services.allocation import lists
from trialdesk.services.audit_trail import AuditFilter
from trialdesk.services.auth import authenticate
from trialdesk.store.tables import AuditEntryRow

ARM_TOKENS = ("INT", "CTRL", "Intervention", "sham")


class TickingClock:
    """Moves 1 ms forward at every reading, like a real clock during a service call."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(milliseconds=1)
        return self.now


def _entries_after(trial: Trial, last_id: int) -> list[AuditEntryRow]:
    with trial.ctx.uow(readonly=True) as uow:
        rows = list(
            uow.session.scalars(select(AuditEntryRow).where(AuditEntryRow.id > last_id)).all()
        )
        uow.session.expunge_all()
    return rows


def _last_id(trial: Trial) -> int:
    with trial.ctx.uow(readonly=True) as uow:
        return int(uow.session.scalar(select(func.max(AuditEntryRow.id))) or 0)


@pytest.mark.req("AUD-1", "RAND-6")
def test_aud1_every_entry_of_one_action_carries_the_actions_time(trial: Trial) -> None:
    """AUD-1, RAND-6: with a clock that moves at every reading, every entry an implant or a
    sham procedure writes (form, device use, state change) carries one time, so no gap inside
    the action tells how long its arm's work took."""
    seen_arms: set[str] = set()
    for _ in range(6):
        number, arm = j.randomized(trial)
        values = j.procedure_values(trial, arm)
        ticking = TickingClock(trial.clock.now)
        trial.runtime.context.clock = ticking
        try:
            before = _last_id(trial)
            followup.record_procedure(
                trial.ctx, trial.actor("implanter"), trial.study_id, number, values=values
            )
        finally:
            trial.runtime.context.clock = trial.clock
        written = _entries_after(trial, before)
        assert len(written) >= 3, [e.action for e in written]
        assert len({e.at for e in written}) == 1, [(e.action, e.at) for e in written]
        seen_arms.add(arm)
        if seen_arms == {"INT", "CTRL"}:
            break
    assert seen_arms == {"INT", "CTRL"}


@pytest.mark.req("AUD-1", "RAND-6")
def test_rand6_blinded_readers_get_times_in_whole_seconds_and_no_chain_values(
    trial: Trial,
) -> None:
    """RAND-6: a blinded reader's trail and subject history carry whole seconds and no id,
    sequence or hash; the unblinded statistician's carry them."""
    number = j.register(trial)
    trial.clock.now = trial.clock.now.replace(microsecond=654321)
    screening.record_consent(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        number,
        consent_date=j.CONSENT,
        consent_version="v1.0",
    )
    where = AuditFilter(subject=number)
    blinded = audit_trail.audit_entries(trial.ctx, trial.actor("monitor"), trial.study_id, where)
    assert blinded.blinded and blinded.total >= 2
    for e in blinded.items:
        assert e.at.endswith(":00Z") and "." not in e.at
        assert (e.id, e.seq, e.hash, e.prev_hash) == (None, None, None, None)
    full = audit_trail.audit_entries(trial.ctx, trial.actor("statistician"), trial.study_id, where)
    assert not full.blinded and all(e.hash and e.id for e in full.items)
    assert "654321Z" in {e.at[-7:] for e in full.items}
    shown = history.subject_history(trial.ctx, trial.actor("coordinator"), trial.study_id, number)
    assert shown and all(e.at.microsecond == 0 for e in shown)


@pytest.mark.req("AUD-1")
def test_aud1_filters_by_action_user_subject_and_dates(trial: Trial) -> None:
    """AUD-1: each filter alone and together; a prefix; an unknown subject reads as empty;
    a reversed range is one clear refusal."""
    monitor = trial.actor("monitor")
    first = j.register(trial)
    trial.clock.set_day(j.CONSENT + dt.timedelta(days=3))
    second = screening.register_subject(
        trial.ctx,
        trial.actor("coordinator"),
        trial.study_id,
        site_code="S101",
        registered_on=j.CONSENT,
    ).number

    def read(**where: Any) -> list[audit_trail.AuditEntryView]:
        return audit_trail.audit_entries(
            trial.ctx,
            monitor,
            trial.study_id,
            AuditFilter(**where),
            limit=1000,
        ).items

    registered = read(action="register")
    assert {e.subject for e in registered} >= {first, second}
    assert all(e.action == "register" for e in registered)
    assert {e.action for e in read(action="regist*")} >= {"register"}
    assert all(e.actor == "coordinator" for e in read(user="coordinator"))
    assert read(user="coordinator") and not read(user="nobody-at-all")
    assert {e.subject for e in read(subject=second)} == {second}
    later = read(since=j.CONSENT + dt.timedelta(days=1), action="register")
    assert {e.subject for e in later} == {second}
    earlier = read(until=j.CONSENT + dt.timedelta(days=1), action="register")
    assert second not in {e.subject for e in earlier} and first in {e.subject for e in earlier}
    assert read(subject="S999-9999") == []
    with pytest.raises(ValidationFailed):
        read(since=dt.date(2027, 2, 2), until=dt.date(2027, 2, 1))
    page = audit_trail.audit_entries(trial.ctx, monitor, trial.study_id, limit=2, offset=1)
    assert len(page.items) == 2 and page.total > 3
    for role in ("coordinator", "implanter", "crc", "dsmb"):
        with pytest.raises(PermissionDenied):
            audit_trail.audit_entries(trial.ctx, trial.actor(role), trial.study_id)


@pytest.mark.req("AUD-1", "SIG-1")
def test_aud1_failed_sign_ins_and_signatures_are_in_the_studys_trail(
    trial: Trial, tmp_path: Path
) -> None:
    """AUD-1, SIG-1: a wrong password at sign-in and a wrong e-signature password are in the
    study's trail (filtered and in the CSV export); a failure under a username nobody has
    belongs to no study."""
    with pytest.raises(AuthenticationFailed):
        authenticate(trial.ctx, "coordinator", "wrong password")
    with pytest.raises(AuthenticationFailed):
        authenticate(trial.ctx, "no-such-user-anywhere", "wrong password")
    number = j.echo_qualified(trial)
    with pytest.raises(AuthenticationFailed):
        screening.crc_eligibility_decision(
            trial.ctx,
            trial.actor("crc"),
            trial.study_id,
            number,
            decision="approve",
            reason="ok",
            password="not it",
        )
    monitor = trial.actor("monitor")
    signins = audit_trail.audit_entries(
        trial.ctx, monitor, trial.study_id, AuditFilter(action="sign_in_failed")
    ).items
    assert [e.entity_id for e in signins] == ["coordinator"]
    signatures = audit_trail.audit_entries(
        trial.ctx, monitor, trial.study_id, AuditFilter(action="signature_failed")
    ).items
    assert [e.actor for e in signatures] == ["crc"]
    out = tmp_path / "export"
    exports.export_csv(trial.ctx, monitor, trial.study_id, out)
    with (out / "audit_entries.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    actions = [(r["action"], r["entity_id"]) for r in rows]
    assert ("sign_in_failed", "coordinator") in actions
    assert ("signature_failed", "crc") in actions
    assert "no-such-user-anywhere" not in json.dumps(rows)


def _disclosures(trial: Trial) -> list[tuple[str, str, str]]:
    page = audit_trail.audit_entries(
        trial.ctx,
        trial.actor("monitor"),
        trial.study_id,
        AuditFilter(action="disclose_*"),
        limit=1000,
    )
    for entry in page.items:
        text = json.dumps(entry.to_dict())
        assert not [t for t in ARM_TOKENS if t in text], text
    return [(e.action, e.actor, e.entity_id) for e in page.items]


@pytest.mark.req("AUD-1", "RAND-6")
def test_aud1_every_kind_of_disclosure_is_audited_without_an_arm(
    trial: Trial, tmp_path: Path
) -> None:
    """AUD-1, RAND-6: unblinded CSV, ODM, SDTM and ADaM exports, by-arm endpoints, the DSMB report,
    the recall list and a list download each write who, what and when, never an arm; blinded
    exports and refused requests write none."""
    number, arm = j.procedure_done(trial)
    stat, dsmb = trial.actor("statistician"), trial.actor("dsmb")
    for role in ("monitor", "manager"):
        exports.export_csv(trial.ctx, trial.actor(role), trial.study_id, tmp_path / role)
        with pytest.raises(TrialError):
            exports.export_csv(
                trial.ctx, trial.actor(role), trial.study_id, tmp_path / f"u{role}", unblinded=True
            )
    with pytest.raises(TrialError):
        endpoints.safety_summary(trial.ctx, trial.actor("manager"), trial.study_id)
    assert _disclosures(trial) == []

    exports.export_csv(trial.ctx, stat, trial.study_id, tmp_path / "csv", unblinded=True)
    exports.export_odm(trial.ctx, stat, trial.study_id, tmp_path / "odm", unblinded=True)
    exports.export_sdtm(trial.ctx, stat, trial.study_id, tmp_path / "sdtm", unblinded=True)
    submission.export_adam(trial.ctx, stat, trial.study_id, tmp_path / "adam")
    endpoints.efficacy_summary(trial.ctx, dsmb, trial.study_id)
    endpoints.time_in_lab(trial.ctx, stat, trial.study_id)
    report_views.dsmb_report_html(trial.ctx, dsmb, trial.study_id)
    devices.recall_subjects(trial.ctx, stat, trial.study_id, devices.DEMO_LOT)
    (live,) = lists.list_info(trial.ctx, stat, trial.study_id)
    lists.download_list(trial.ctx, stat, trial.study_id, live.id)
    found = _disclosures(trial)
    actions = {action for action, _actor, _what in found}
    assert actions >= {
        "disclose_export_csv",
        "disclose_export_odm",
        "disclose_export_sdtm",
        "disclose_export_adam",
        "disclose_endpoint_by_arm",
        "disclose_dsmb_report",
        "disclose_recall_list",
        "disclose_list_download",
    }
    assert ("disclose_dsmb_report", "dsmb", "DSMB report") in found
    assert ("disclose_recall_list", "statistician", devices.DEMO_LOT) in found
    assert arm in ("INT", "CTRL") and number


@pytest.mark.req("RAND-6", "SUP-2")
def test_rand6_blinded_trail_has_no_entry_for_one_arm_only(trial: Trial) -> None:
    """RAND-6, SUP-2: after a lot quarantine the stored trail has one entry per device still
    on a shelf (the implanted one is missing); the blinded reader's trail has the lot's entry
    only, the statistician's has both."""
    while j.procedure_done(trial)[1] != "INT":
        pass
    devices.quarantine_lot(
        trial.ctx, trial.actor("manager"), trial.study_id, devices.DEMO_LOT, "field notice"
    )
    where = AuditFilter(action="quarantine_*")
    blinded = audit_trail.audit_entries(trial.ctx, trial.actor("manager"), trial.study_id, where)
    assert [(e.action, e.entity) for e in blinded.items] == [
        ("quarantine_device_lot", "device_lot")
    ]
    assert blinded.items[0].new is None
    full = audit_trail.audit_entries(trial.ctx, trial.actor("statistician"), trial.study_id, where)
    per_device = [e for e in full.items if e.entity == "device"]
    assert len(per_device) == len(devices.DEMO_SERIALS) - 1  # the implanted one is not held
    _ = PASSWORD
