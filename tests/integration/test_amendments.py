"""Protocol amendments (PROT-2, PROT-3): a signed new version applies from its effective date;
records already made keep the version they were made under."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from sqlalchemy import func, select

from tests import flagship_data as fd
from tests import journey as j
from tests.conftest import PASSWORD, Trial, flagship
from tests.protocol_variants import amended, design_changed
from trialdesk.domain.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ValidationFailed,
)
from trialdesk.protocol.loader import LoadedProtocol, parse_protocol
from trialdesk.services import amendments, queries, screening
from trialdesk.services.access import operator_actor
from trialdesk.services.setup import initialize_study
from trialdesk.store.tables import (
    AuditEntryRow,
    ProtocolAmendmentRow,
    ProtocolVersionRow,
    SiteRow,
    SubjectRow,
    VisitRow,
)


def _counts(t: Trial) -> tuple[int, int, int]:
    with t.ctx.uow(readonly=True) as uow:
        return (
            int(uow.session.scalar(select(func.count()).select_from(ProtocolVersionRow)) or 0),
            int(uow.session.scalar(select(func.count()).select_from(ProtocolAmendmentRow)) or 0),
            int(uow.session.scalar(select(func.count()).select_from(AuditEntryRow)) or 0),
        )


def _subject_version(t: Trial, number: str) -> str:
    with t.ctx.uow(readonly=True) as uow:
        subject = uow.session.scalars(select(SubjectRow).where(SubjectRow.number == number)).one()
        row = uow.session.get(ProtocolVersionRow, subject.protocol_version_id)
        assert row is not None
        return row.version


def _register_on(t: Trial, day: dt.date) -> str:
    t.clock.set_day(day)
    coord = t.actor("coordinator")
    number = screening.register_subject(
        t.ctx, coord, t.study_id, site_code=j.SITE, registered_on=day
    ).number
    screening.record_consent(
        t.ctx, coord, t.study_id, number, consent_date=day, consent_version="v1.0"
    )
    return number


def _screen_on(t: Trial, number: str, day: dt.date) -> None:
    t.clock.set_day(day)
    coord = t.actor("coordinator")
    for code, values in fd.screening_forms(day.isoformat()).items():
        screening.record_screening_form(
            t.ctx, coord, t.study_id, number, form_code=code, values=values
        )
    for criterion in fd.INVESTIGATOR_CRITERIA:
        screening.confirm_criterion(
            t.ctx,
            coord,
            t.study_id,
            number,
            criterion_id=criterion,
            confirmed=True,
            password=PASSWORD,
        )


def test_prot2_amendment_widens_m6_and_adds_a_criterion_from_its_effective_date(
    trial: Trial,
) -> None:
    """PROT-2: subjects registered before keep their version's criteria and screening result;
    a not-done M6 follows the new window; subjects registered from the effective date must
    meet the new criterion; the audit names who signed and when."""
    t = trial
    enrolled, _arm = j.procedure_done(t)  # randomized 2027-02-15; M6 window ends 2027-09-13
    registered_before = j.consented(t)
    effective = dt.date(2027, 3, 5)

    t.clock.set_day("2027-03-01")
    preview = amendments.preview_amendment(
        t.ctx, t.actor("manager"), t.study_id, amended(), effective_from=effective
    )
    assert not preview.refusals and not preview.needs_statistician
    assert any("INC-19" in line for line in preview.lines)
    assert any("M6" in line and "+45" in line for line in preview.lines)
    assert any(
        line.startswith("1 subject in follow-up has M6 not yet done") for line in preview.impact
    )
    view = amendments.propose_amendment(
        t.ctx,
        t.actor("manager"),
        t.study_id,
        amended(),
        reason="Wider M6 window; remote monitoring consent",
        password=PASSWORD,
        effective_from=effective,
    )
    assert view.status == "signed" and view.effective_from == "2027-03-05"
    assert [s.username for s in view.signatures] == ["manager"]

    # before the effective date a new subject still gets 1.0
    early = _register_on(t, dt.date(2027, 3, 3))
    assert _subject_version(t, early) == "1.0"

    # a subject registered before keeps its criteria: no INC-19 demanded, still eligible
    _screen_on(t, registered_before, dt.date(2027, 3, 6))
    with pytest.raises(NotFound, match="INC-19"):
        screening.confirm_criterion(
            t.ctx,
            t.actor("coordinator"),
            t.study_id,
            registered_before,
            criterion_id="INC-19",
            confirmed=True,
            password=PASSWORD,
        )
    result = screening.complete_screening(
        t.ctx, t.actor("coordinator"), t.study_id, registered_before
    )
    assert result.state == "echo_qualified" and result.protocol_version == "1.0"

    # a subject registered from the effective date must satisfy INC-19
    late = _register_on(t, dt.date(2027, 3, 6))
    assert _subject_version(t, late) == "1.1"
    _screen_on(t, late, dt.date(2027, 3, 6))
    coord = t.actor("coordinator")
    with pytest.raises(PreconditionFailed, match="INC-19"):
        screening.complete_screening(t.ctx, coord, t.study_id, late)
    screening.confirm_criterion(
        t.ctx, coord, t.study_id, late, criterion_id="INC-19", confirmed=False, password=PASSWORD
    )
    failed = screening.complete_screening(t.ctx, coord, t.study_id, late)
    assert failed.state == "screen_failed" and failed.screen_failure_detail == "INC-19"

    # M6 on 2027-09-20: late under 1.0 (ends 09-13), on time under 1.1 (ends 09-28)
    j.record_visit(t, enrolled, "M6", dt.date(2027, 9, 20))
    with t.ctx.uow(readonly=True) as uow:
        visit = uow.session.scalars(select(VisitRow).where(VisitRow.visit_code == "M6")).one()
        version = uow.session.get(ProtocolVersionRow, visit.protocol_version_id)
        assert visit.timing == "on_time" and visit.window_end == dt.date(2027, 9, 28)
        assert version is not None and version.version == "1.1"
        entries = [
            (e.actor, e.protocol_sha256, json.loads(e.new))
            for e in uow.session.scalars(
                select(AuditEntryRow).where(AuditEntryRow.action == "amendment_signed")
            )
        ]
    shown = queries.get_subject(t.ctx, coord, t.study_id, enrolled)
    m6 = next(v for v in shown.visits if v.code == "M6")
    m1 = next(v for v in shown.visits if v.code == "M1")
    assert (m6.timing, m6.protocol_version, m1.protocol_version) == ("on_time", "1.1", "1.1")
    assert shown.protocol_version == "1.0"  # the subject itself stays on its version

    ((actor, sha256, signed),) = entries
    assert actor == "manager" and sha256 == amended().sha256
    (signature,) = signed["signatures"]
    assert signature["name"] == "Morgan Manager" and signature["at"].startswith("2027-03-01")
    assert "Approval of protocol amendment 1.1" in signature["meaning"]


def test_prot2_visit_done_before_the_effective_date_keeps_the_old_window(trial: Trial) -> None:
    """PROT-2: a visit dated before the effective date is judged by the version then in force."""
    t = trial
    number, _arm = j.procedure_done(t)
    t.clock.set_day("2027-03-01")
    amendments.propose_amendment(
        t.ctx,
        t.actor("manager"),
        t.study_id,
        amended(criterion=False),
        reason="Wider M6 window",
        password=PASSWORD,
        effective_from=dt.date(2027, 9, 25),
    )
    j.record_visit(t, number, "M6", dt.date(2027, 9, 20))  # before 09-25: the 1.0 window
    with t.ctx.uow(readonly=True) as uow:
        visit = uow.session.scalars(select(VisitRow).where(VisitRow.visit_code == "M6")).one()
        assert visit.timing == "late" and visit.window_end == dt.date(2027, 9, 13)


def test_prot2_design_change_of_a_running_study_waits_for_the_statistician(
    trial: Trial,
) -> None:
    """PROT-2, SIG-1: an allocation-ratio change with randomized subjects stays pending, and
    changes nothing, until the unblinded statistician signs; the audit keeps both signatures."""
    t = trial
    j.randomized(t)
    t.clock.set_day("2027-03-01")
    view = amendments.propose_amendment(
        t.ctx,
        t.actor("manager"),
        t.study_id,
        design_changed(),
        reason="2:1 allocation",
        password=PASSWORD,
        effective_from=dt.date(2027, 3, 5),
    )
    assert view.status == "pending" and view.needs_statistician
    t.clock.set_day("2027-03-06")
    assert _subject_version(t, _register_on(t, dt.date(2027, 3, 6))) == "1.0"
    with pytest.raises(PreconditionFailed, match="awaiting the statistician"):
        amendments.propose_amendment(
            t.ctx,
            t.actor("manager"),
            t.study_id,
            amended(version="1.2"),
            reason="x",
            password=PASSWORD,
        )
    with pytest.raises(PermissionDenied):
        amendments.sign_amendment(t.ctx, t.actor("manager"), t.study_id, view.id, PASSWORD)

    signed = amendments.sign_amendment(
        t.ctx, t.actor("statistician"), t.study_id, view.id, PASSWORD
    )
    # signed after the planned date: it takes effect from today, never retroactively
    assert signed.status == "signed" and signed.effective_from == "2027-03-06"
    assert [s.username for s in signed.signatures] == ["manager", "statistician"]
    assert _subject_version(t, _register_on(t, dt.date(2027, 3, 6))) == "1.1"
    with t.ctx.uow(readonly=True) as uow:
        actions = [
            e.action
            for e in uow.session.scalars(
                select(AuditEntryRow)
                .where(AuditEntryRow.entity == "protocol")
                .order_by(AuditEntryRow.id)
            )
        ]
    assert actions == [
        "load_protocol",
        "propose_amendment",
        "cosign_amendment",
        "move_amendment_effective_date",
        "amendment_signed",
    ]
    with pytest.raises(PreconditionFailed, match="already signed"):
        amendments.sign_amendment(t.ctx, t.actor("statistician"), t.study_id, view.id, PASSWORD)


def test_prot2_wrong_password_is_refused_audited_and_changes_nothing(trial: Trial) -> None:
    """PROT-2, SIG-1: a wrong password signs nothing and leaves a signature_failed entry."""
    t = trial
    before = _counts(t)
    with pytest.raises(AuthenticationFailed):
        amendments.propose_amendment(
            t.ctx, t.actor("manager"), t.study_id, amended(), reason="r", password="wrong"
        )
    versions, amendments_after, entries = _counts(t)
    assert (versions, amendments_after) == before[:2] and entries == before[2] + 1
    with t.ctx.uow(readonly=True) as uow:
        last = uow.session.scalars(select(AuditEntryRow).order_by(AuditEntryRow.id.desc())).first()
        assert last is not None and last.action == "signature_failed" and last.actor == "manager"
        assert "protocol amendment 1.1" in json.loads(last.new)["meaning"]


def test_prot2_dry_run_and_refused_amendments_write_nothing(trial: Trial) -> None:
    """PROT-2: the preview writes nothing; bad amendments get one clear message each."""
    t = trial
    manager = t.actor("manager")
    before = _counts(t)
    amendments.preview_amendment(t.ctx, manager, t.study_id, amended())
    cases: list[tuple[LoadedProtocol, dt.date | None, str]] = [
        (flagship(), None, "nothing to amend"),
        (amended(version="1.0"), None, "version label '1.0' is already used"),
        (amended(), dt.date(2027, 1, 1), "in the past at some site"),
        (
            parse_protocol(amended().text.replace("name: CARILLON-style", "name: Other", 1)),
            None,
            "keeps the protocol's name",
        ),
    ]
    for loaded, effective, message in cases:
        with pytest.raises(PreconditionFailed, match=message):
            amendments.propose_amendment(
                t.ctx,
                manager,
                t.study_id,
                loaded,
                reason="r",
                password=PASSWORD,
                effective_from=effective,
            )
    with pytest.raises(ValidationFailed, match="reason"):
        amendments.propose_amendment(
            t.ctx, manager, t.study_id, amended(), reason=" ", password=PASSWORD
        )
    with pytest.raises(PermissionDenied):
        amendments.propose_amendment(
            t.ctx, t.actor("coordinator"), t.study_id, amended(), reason="r", password=PASSWORD
        )
    assert _counts(t) == before


def test_prot3_in_place_edit_of_the_live_protocol_points_to_amend(trial: Trial) -> None:
    """PROT-3: re-initialising with a changed file is refused and names `protocol amend`."""
    before = _counts(trial)
    with pytest.raises(PreconditionFailed, match="trialdesk protocol amend"):
        initialize_study(trial.ctx, operator_actor(), amended(), code="FLAGSHIP", mode="demo")
    assert _counts(trial) == before


def test_prot2_versions_are_listed_with_their_signatures(trial: Trial) -> None:
    """PROT-2: every role reads the versions, their status, effective date and signers."""
    t = trial
    amendments.propose_amendment(
        t.ctx, t.actor("manager"), t.study_id, amended(), reason="r", password=PASSWORD
    )
    versions = amendments.list_protocol_versions(t.ctx, t.actor("monitor"), t.study_id)
    assert [(v.version, v.status, v.current) for v in versions] == [
        ("1.0", "signed", False),
        ("1.1", "signed", True),
    ]
    assert versions[1].signatures[0].name == "Morgan Manager"
    assert versions[1].effective_from is not None
    diff = amendments.amendment_diff(t.ctx, t.actor("crc"), t.study_id, versions[1].amendment or 0)
    assert any("INC-19" in line for line in diff.lines)


def test_prot2_rand6_blinded_readers_of_a_design_amendment_see_no_arm(trial: Trial) -> None:
    """PROT-2, RAND-6: the diff of a ratio/label/procedure-form change names no arm to a
    blinded role (the manager who signs it included), nor in the audit; the statistician
    reads the arms."""
    t = trial
    j.randomized(t)
    t.clock.set_day("2027-03-01")
    manager = t.actor("manager")
    preview = amendments.preview_amendment(t.ctx, manager, t.study_id, design_changed())
    view = amendments.propose_amendment(
        t.ctx, manager, t.study_id, design_changed(), reason="2:1", password=PASSWORD
    )
    arm_words = re.compile(
        r"\b(INT|CTRL)\b|Intervention|Control \(sham|CARILLON implant|implant_procedure"
        r"|sham_procedure"
    )
    for username in ("admin", "manager", "coordinator", "crc", "monitor"):
        shown = amendments.amendment_diff(t.ctx, t.actor(username), t.study_id, view.id)
        versions = amendments.list_protocol_versions(t.ctx, t.actor(username), t.study_id)
        text = json.dumps([shown.to_dict(), [v.to_dict() for v in versions]])
        assert not arm_words.search(text), username
    assert not arm_words.search(json.dumps(preview.to_dict()))
    assert any("allocation ratio 1:1 -> 2:1" in line for line in preview.lines)
    stat = amendments.amendment_diff(t.ctx, t.actor("statistician"), t.study_id, view.id)
    assert any("arm INT ratio 1 -> 2" in line for line in stat.lines)
    with t.ctx.uow(readonly=True) as uow:
        entries = [
            e.new + (e.reason or "")
            for e in uow.session.scalars(
                select(AuditEntryRow).where(AuditEntryRow.entity == "protocol")
            )
        ]
    assert entries and not any(arm_words.search(e) for e in entries)


def test_prot3_no_code_path_can_edit_a_stored_protocol_in_place(trial: Trial) -> None:
    """PROT-3: the store refuses to change a stored version's text (any caller, any path)."""
    with trial.ctx.uow() as uow:
        row = uow.session.scalars(select(ProtocolVersionRow)).one()
        row.text = amended().text
        with pytest.raises(ValueError, match="cannot be changed in place"):
            uow.session.flush()
    with trial.ctx.uow(readonly=True) as uow:
        stored = uow.session.scalars(select(ProtocolVersionRow)).one()
        assert stored.sha256 == flagship().sha256 and stored.text == flagship().text


def test_prot2_a_site_added_by_an_amendment_exists_once_signed(trial: Trial) -> None:
    """PROT-2: a signed amendment that adds a site creates it (active, with the file's zone)
    and audits the creation; existing sites keep their rows."""
    t = trial
    site = flagship().protocol.sites[0]
    text = (
        flagship()
        .text.replace('version: "1.0"', 'version: "1.2"', 1)
        .replace(
            "sites:\n",
            "sites:\n"
            f"  - {{code: S999, name: New site, country: {site.country}, "
            "timezone: Australia/Sydney}\n",
            1,
        )
    )
    t.clock.set_day("2027-03-01")
    amendments.propose_amendment(
        t.ctx,
        t.actor("manager"),
        t.study_id,
        parse_protocol(text),
        reason="A new site in Sydney",
        password=PASSWORD,
        effective_from=dt.date(2027, 3, 5),
    )
    with t.ctx.uow(readonly=True) as uow:
        rows = uow.session.execute(
            select(SiteRow.name, SiteRow.timezone, SiteRow.active).where(SiteRow.code == "S999")
        ).all()
        created = uow.session.scalars(
            select(AuditEntryRow.entity_id).where(AuditEntryRow.action == "create_site")
        ).all()
        sites = uow.session.scalar(select(func.count()).select_from(SiteRow))
    assert [tuple(r) for r in rows] == [("New site", "Australia/Sydney", True)]
    assert created.count("S999") == 1
    assert sites == len(flagship().protocol.sites) + 1
