"""Submission exports on a simulated trial (issue 16, EXP-1, END-1, END-2), both databases.

The demo driver simulates a small trial through the services; the exported files are then
checked against the database with this test's own queries, the defines against the
Define-XML 2.1 XSD, and both primary endpoints are recomputed from the ADaM files by code
written here (pair rule and Clopper-Pearson bound) and compared with trialdesk's figures.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

import pyreadstat
import pytest
from lxml import etree
from scipy.stats import beta
from sqlalchemy import select

from tests.conftest import Trial
from trialdesk.demo.trial import SimulationConfig, simulate_trial
from trialdesk.domain.errors import PermissionDenied
from trialdesk.reports.define import define_problems, define_schema_path
from trialdesk.reports.sdtm import TS_PARAMETERS
from trialdesk.services import endpoints, submission
from trialdesk.services.forms import CONCEALED_PROCEDURE_FORM, concealed_procedure
from trialdesk.store.tables import FormRecordRow, RandomizationRow, SubjectRow, VisitRow

DOCS = Path(__file__).resolve().parents[2] / "docs" / "exports.md"


def _simulated(t: Trial) -> None:
    """16 subjects followed past 24 months, with more deaths, unreleased implants and
    hospitalizations than the defaults so that every DM rule meets a case; flagship
    amendment 1 takes effect in the middle, so hospitalizations are counted at 1.0 visits
    before it and dated on the adverse-event form after it."""
    config = SimulationConfig(
        subjects=16,
        sites=3,
        seed=5,
        start=dt.date(2027, 1, 4),
        as_of=dt.date(2029, 9, 1),
        screened_per_site_month=4.0,
        deaths_per_year=0.25,
        implant_not_released=0.3,
        adverse_events_per_year=1.5,
        hf_hospitalizations_per_year=0.6,
        amendment_on=dt.date(2028, 3, 1),
    )
    simulate_trial(t.ctx, "FLAGSHIP", config)


@pytest.fixture
def simulated(trial: Trial) -> Trial:
    trial.prepared(_simulated)
    trial.clock.set_day(dt.date(2040, 1, 1))  # after everything simulated: nothing cut off
    return trial


def _xpt(path: Path) -> list[dict[str, object]]:
    frame, _meta = pyreadstat.read_xport(str(path))
    return [dict(row) for row in frame.to_dict(orient="records")]


def _iso(value: object) -> str:
    return value.isoformat() if value is not None else ""  # type: ignore[attr-defined]


def test_dm_deaths_reference_dates_and_actual_arm_match_the_database(
    simulated: Trial, tmp_path: Path
) -> None:
    """EXP-1: DM holds exactly the consented non-test subjects; for every one of them the
    death flag and date, RFSTDTC (randomization), RFENDTC (exit), RFICDTC (consent),
    RFXSTDTC (procedure date) and ACTARMCD (the arm only when its procedure was done and, for
    the implant, released; UNPLAN when not released) equal this test's own reading of the
    database; TS carries SSTDTC = the first consent and every parameter docs/exports.md lists."""
    t = simulated
    out = tmp_path / "sdtm"
    submission.export_sdtm(t.ctx, t.actor("statistician"), t.study_id, out, unblinded=True)
    dm = {str(r["SUBJID"]): r for r in _xpt(out / "dm.xpt")}
    with t.ctx.uow(readonly=True) as uow:
        subjects = list(
            uow.session.scalars(select(SubjectRow).where(SubjectRow.study_id == t.study_id))
        )
        rands = {r.subject_id: r for r in uow.session.scalars(select(RandomizationRow))}
        procedures = {
            f.subject_id: concealed_procedure(t.ctx, f)
            for f in uow.session.scalars(
                select(FormRecordRow).where(FormRecordRow.form_code == CONCEALED_PROCEDURE_FORM)
            )
        }
        finals = {
            v.subject_id: v.visit_date
            for v in uow.session.scalars(select(VisitRow).where(VisitRow.visit_code == "Y5"))
        }
        deaths = {
            f.subject_id: json.loads(f.data)["death_date"]
            for f in uow.session.scalars(
                select(FormRecordRow).where(FormRecordRow.form_code == "death")
            )
        }
    consented = {s.number for s in subjects if s.consent_date and not s.test_subject}
    assert set(dm) == consented
    died = 0
    for s in subjects:
        if s.number not in consented:
            continue
        row = dm[s.number]
        if s.state == "died":
            died += 1
            assert row["DTHFL"] == "Y"
            assert row["DTHDTC"] == deaths.get(s.id, _iso(s.exit_date))
        else:
            assert row["DTHFL"] == "" and row["DTHDTC"] == ""
        assert row["RFICDTC"] == _iso(s.consent_date)
        assert row["RFSTDTC"] == _iso(s.randomized_on)
        rand = rands.get(s.id)
        if rand is None:
            assert row["ARMCD"] == row["ACTARMCD"] == ""
            assert row["ARMNRS"] in ("SCREEN FAILURE", "NOT ASSIGNED")
            continue
        ended = s.exit_date
        if s.state == "completed" and ended is None:  # completion records no exit date
            ended = finals.get(s.id)
        assert row["RFENDTC"] == _iso(ended)
        arm = t.ctx.cipher.decrypt(rand.arm_enc)
        assert row["ARMCD"] == arm
        if s.id not in procedures:
            assert row["ACTARMCD"] == "" and row["ARMNRS"] == "ASSIGNED, NOT TREATED"
            continue
        _form, values = procedures[s.id]
        assert row["RFXSTDTC"] == values["procedure_date"]
        expected = "UNPLAN" if values.get("implant_released") is False else arm
        assert row["ACTARMCD"] == expected
    assert died > 0
    assert any(r["ACTARMCD"] == "UNPLAN" for r in dm.values())
    ho = _xpt(out / "ho.xpt")
    dated = [r for r in ho if r["HOSTDTC"]]
    assert dated and all(r["HOCAT"] == "HEART FAILURE" for r in dated)
    assert [r for r in ho if not r["HOSTDTC"] and r["HODTC"]]  # counted at a 1.0 visit
    ts = _xpt(out / "ts.xpt")
    codes = {str(r["TSPARMCD"]) for r in ts}
    first_consent = min(_iso(s.consent_date) for s in subjects if s.number in consented)
    assert [r["TSVAL"] for r in ts if r["TSPARMCD"] == "SSTDTC"] == [first_consent]
    documented = set(re.findall(r"`([A-Z0-9]{4,8})`", DOCS.read_text(encoding="utf-8")))
    assert set(TS_PARAMETERS) <= documented
    assert set(TS_PARAMETERS) == codes


def test_every_define_validates_and_a_broken_one_does_not(simulated: Trial, tmp_path: Path) -> None:
    """EXP-1: the blinded SDTM, unblinded SDTM and ADaM defines validate against the
    Define-XML 2.1 XSD (odmlib's copy), by trialdesk's own check (xmlschema) and
    independently by lxml; the same document without an ItemDef's DataType does not."""
    t = simulated
    submission.export_sdtm(t.ctx, t.actor("monitor"), t.study_id, tmp_path / "b")
    submission.export_sdtm(
        t.ctx, t.actor("statistician"), t.study_id, tmp_path / "u", unblinded=True
    )
    submission.export_adam(t.ctx, t.actor("statistician"), t.study_id, tmp_path / "a")
    schema = etree.XMLSchema(etree.parse(str(define_schema_path())))
    for folder in ("b", "u", "a"):
        document = (tmp_path / folder / "define.xml").read_bytes()
        assert define_problems(document) == [], folder
        assert schema.validate(etree.fromstring(document)), (folder, schema.error_log)
        assert b"<html" in (tmp_path / folder / "define.html").read_bytes()
        broken = document.replace(b' DataType="text"', b"", 1)
        assert broken != document and define_problems(broken)
        assert not schema.validate(etree.fromstring(broken))
    assert (tmp_path / "u" / "acrf.html").exists()


def _pair(a: dict[str, object], b: dict[str, object], threshold: float) -> int:
    """Own pair rule (docs/endpoints.md): the first component that differs within the shared
    follow-up decides (the earlier event loses), then KCCQ change by the threshold."""
    shared = min(float(a["FUDAYS"]), float(b["FUDAYS"]))  # type: ignore[arg-type]
    for code in ("DEATH", "TXLVAD", "MITRAL", "HFHOSP"):
        da = a[code] if a[code] is not None and float(a[code]) <= shared else None  # type: ignore[arg-type]
        db = b[code] if b[code] is not None and float(b[code]) <= shared else None  # type: ignore[arg-type]
        if da is None and db is None:
            continue
        if db is None:
            return -1
        if da is None:
            return 1
        if da != db:
            return -1 if float(da) < float(db) else 1  # type: ignore[arg-type]
    ka, kb = a["KCCQCHG"], b["KCCQCHG"]
    if ka is not None and kb is not None:
        diff = float(ka) - float(kb)  # type: ignore[arg-type]
        if diff >= threshold - 1e-9:
            return 1
        if -diff >= threshold - 1e-9:
            return -1
    return 0


def test_both_primary_endpoints_rebuild_from_the_adam_files(
    simulated: Trial, tmp_path: Path
) -> None:
    """END-1, END-2: the win ratio (wins, losses, ratio) recomputed from ADHCE and the safety
    bound (events, subjects, Clopper-Pearson one-sided 95 % lower bound) from ADMAE, by this
    test's own code, equal trialdesk's endpoint figures; ADaM is refused blinded."""
    t = simulated
    stat = t.actor("statistician")
    with pytest.raises(PermissionDenied):
        submission.export_adam(t.ctx, t.actor("monitor"), t.study_id, tmp_path / "m")
    submission.export_adam(t.ctx, stat, t.study_id, tmp_path / "a")
    efficacy = endpoints.efficacy_summary(t.ctx, stat, t.study_id)
    safety = endpoints.safety_summary(t.ctx, stat, t.study_id)
    subjects: dict[str, dict[str, object]] = {}
    for row in _xpt(tmp_path / "a" / "adhce.xpt"):
        rec = subjects.setdefault(str(row["USUBJID"]), {"ARM": row["ARMCD"]})
        value = row["AVAL"]
        is_event = row["CNSR"] == 0
        if row["PARAMCD"] in ("FUDAYS", "KCCQCHG"):
            rec[str(row["PARAMCD"])] = None if value is None or math.isnan(value) else value  # type: ignore[arg-type]
        else:
            rec[str(row["PARAMCD"])] = value if is_event else None
    treated = [s for s in subjects.values() if s["ARM"] == "INT"]
    control = [s for s in subjects.values() if s["ARM"] == "CTRL"]
    results = [_pair(a, b, efficacy.kccq_threshold) for a in treated for b in control]
    wins, losses = results.count(1), results.count(-1)
    assert efficacy.win_ratio is not None
    assert (wins, losses) == (efficacy.win_ratio["wins"], efficacy.win_ratio["losses"])
    if losses:
        assert math.isclose(wins / losses, efficacy.win_ratio["win_ratio"])
    mae = [r for r in _xpt(tmp_path / "a" / "admae.xpt") if r["ANL01FL"] == "Y"]
    assert mae and wins and losses
    events = sum(1 for r in mae if r["AVAL"] == 0)
    assert (events, len(mae)) == (safety.events, safety.subjects)
    if mae:
        free = len(mae) - events
        bound = 0.0 if free == 0 else float(beta.ppf(0.05, free, events + 1))
        assert safety.lower_bound is not None
        assert math.isclose(bound, safety.lower_bound, rel_tol=1e-9, abs_tol=1e-12)
