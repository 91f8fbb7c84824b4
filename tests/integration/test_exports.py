"""Standard exports through the services (EXP-1) and their blinding (RAND-6), on both backends.

One populated trial per test (the blinding sweep's population: subjects in many states, an
adverse event, a correction with a reason, an emergency unblinding, a randomization in error).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest

from tests.arm_text import without_ct_wording
from tests.conftest import Trial
from tests.integration.test_blinding_sweep import Population, arm_leaks, arm_proxies, populate
from trialdesk.domain.errors import PermissionDenied, TrialError, ValidationFailed
from trialdesk.reports.define import define_problems
from trialdesk.reports.exports import Dataset, Variable, check_dataset, odm_problems
from trialdesk.services import exports
from trialdesk.services.submission import sdtm_datasets

# SDTMIG 3.4 variable order of each subject-level domain produced (every variable of the
# domain; an export may leave permissible ones out but never reorders them).
SDTMIG_34 = {
    "DM": "STUDYID DOMAIN USUBJID SUBJID RFSTDTC RFENDTC RFXSTDTC RFXENDTC RFICDTC RFPENDTC "
    "DTHDTC DTHFL SITEID INVID INVNAM BRTHDTC AGE AGEU SEX RACE ETHNIC ARMCD ARM ACTARMCD "
    "ACTARM ARMNRS ACTARMUD COUNTRY DMDTC DMDY",
    "DS": "STUDYID DOMAIN USUBJID DSSEQ DSGRPID DSREFID DSSPID DSTERM DSDECOD DSCAT DSSCAT "
    "EPOCH DSDTC DSSTDTC DSDY DSSTDY",
    "SV": "STUDYID DOMAIN USUBJID VISITNUM VISIT SVPRESP SVOCCUR SVREASOC SVCNTMOD SVEPCHGI "
    "VISITDY TAETORD EPOCH SVSTDTC SVENDTC SVSTDY SVENDY SVUPDES",
    "AE": "STUDYID DOMAIN USUBJID AESEQ AEGRPID AEREFID AESPID AETERM AEMODIFY AELLT AELLTCD "
    "AEDECOD AEPTCD AEHLT AEHLTCD AEHLGT AEHLGTCD AECAT AESCAT AEPRESP AEBODSYS AEBDSYCD AESOC "
    "AESOCCD AELOC AESEV AESER AEACN AEACNOTH AEREL AERELNST AEPATT AEOUT AESCAN AESCONG "
    "AESDISAB AESDTH AESHOSP AESLIFE AESOD AESMIE AECONTRT AETOXGR EPOCH AEDTC AESTDTC AEENDTC "
    "AEDY AESTDY AEENDY AEDUR AEENRF AEENRTPT AEENTPT",
}
REQUIRED = {
    "DM": {"STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID", "SEX", "ARMCD", "ARM", "COUNTRY"},
    "DS": {"STUDYID", "DOMAIN", "USUBJID", "DSSEQ", "DSTERM", "DSDECOD"},
    "SV": {"STUDYID", "DOMAIN", "USUBJID", "VISITNUM"},
    "AE": {"STUDYID", "DOMAIN", "USUBJID", "AESEQ", "AETERM"},
}
CONTROLLED = {
    ("DM", "SEX"): {"F", "M", "U"},
    ("DM", "AGEU"): {"YEARS", ""},
    ("DM", "DTHFL"): {"Y", ""},
    ("DM", "ARMNRS"): {"SCREEN FAILURE", "NOT ASSIGNED", "ASSIGNED, NOT TREATED", ""},
    ("DS", "DSCAT"): {"PROTOCOL MILESTONE", "DISPOSITION EVENT"},
    ("DS", "DSDECOD"): {
        "INFORMED CONSENT OBTAINED",
        "RANDOMIZED",
        "SCREEN FAILURE",
        "COMPLETED",
        "WITHDRAWAL BY SUBJECT",
        "LOST TO FOLLOW-UP",
        "DEATH",
    },
    ("SV", "SVOCCUR"): {"Y", "N"},
    ("AE", "AESEV"): {"MILD", "MODERATE", "SEVERE"},
    ("AE", "AESER"): {"Y", "N"},
    ("AE", "AEOUT"): {
        "RECOVERED/RESOLVED",
        "RECOVERING/RESOLVING",
        "NOT RECOVERED/NOT RESOLVED",
        "RECOVERED/RESOLVED WITH SEQUELAE",
        "FATAL",
        "UNKNOWN",
        "",
    },
}


@pytest.fixture
def population(trial: Trial) -> Population:
    return trial.prepared(populate)


def run(
    trial: Trial, kind: str, username: str, out: Path, *, unblinded: bool = False
) -> exports.ExportResult:
    call = {"csv": exports.export_csv, "odm": exports.export_odm, "sdtm": exports.export_sdtm}
    return call[kind](trial.ctx, trial.actor(username), trial.study_id, out, unblinded=unblinded)


def read_xpt(path: Path) -> tuple[pd.DataFrame, list[str], pd.DataFrame]:
    frame, meta = pyreadstat.read_xport(str(path))
    by_pandas = pd.read_sas(str(path), format="xport", encoding="utf-8")
    return frame, [label or "" for label in meta.column_labels], by_pandas


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_exp1_odm_validates_against_the_xsd_and_a_broken_document_fails(
    trial: Trial, population: Population, tmp_path: Path
) -> None:
    """EXP-1: the blinded and the unblinded ODM 1.3.2 documents validate against the ODM XSD
    (odmlib's copy); the same document with a required attribute removed does not."""
    for username, unblinded in (("monitor", False), ("statistician", True)):
        out = tmp_path / f"odm-{username}"
        result = run(trial, "odm", username, out, unblinded=unblinded)
        document = (out / "odm.xml").read_bytes()
        assert result.files == ["odm.xml", "odm_audit.xml"]
        assert odm_problems(document) == []
        text = document.decode()
        # metadata comes from the protocol; clinical data carries audit records
        for oid in ('OID="F.demographics"', 'OID="IG.tte"', 'OID="CL.demographics.sex"'):
            assert oid in text
        assert 'StudyEventOID="SE.M24"' in text and "<AuditRecord>" in text
        assert "<ReasonForChange>transcription error</ReasonForChange>" in text
        assert 'Value="61.5"' in text
        broken = document.replace(b'<FormDef OID="F.randomization"', b"<FormDef", 1)
        assert broken != document
        assert odm_problems(broken) != []
    assert odm_problems(b"<ODM") != []


def test_exp1_xpt_round_trips_through_pyreadstat_and_pandas(
    trial: Trial, population: Population, tmp_path: Path
) -> None:
    """EXP-1: every XPT file reads back through pyreadstat and pandas.read_sas with the same
    values, variable labels and dataset name as the datasets that were written."""
    out = tmp_path / "sdtm"
    result = run(trial, "sdtm", "statistician", out, unblinded=True)
    expected, _loaded = sdtm_datasets(trial.ctx, trial.study_id, unblinded=True)
    assert (
        sorted(
            [f"{d.name.lower()}.xpt" for d in expected] + ["acrf.html", "define.html", "define.xml"]
        )
        == result.files
    )
    assert {d.name for d in expected} >= {"DM", "DS", "SV", "AE", "TA", "TE", "TV", "TI", "TS"}
    for ds in expected:
        frame, labels, by_pandas = read_xpt(out / f"{ds.name.lower()}.xpt")
        names = [v.name for v in ds.variables]
        assert list(frame.columns) == names == list(by_pandas.columns)
        assert labels == [v.label for v in ds.variables]
        assert len(frame) == len(ds.rows) == len(by_pandas), ds.name
        for i, row in enumerate(ds.rows):
            for var in ds.variables:
                want: object = row.get(var.name)
                if var.type == "Num":
                    want = float("nan") if want is None else float(want)  # type: ignore[arg-type]
                else:
                    want = "" if want is None else str(want)
                got_rs, got_pd = frame.iloc[i][var.name], by_pandas.iloc[i][var.name]
                if var.type == "Char" and isinstance(got_pd, float):
                    got_pd = ""  # pandas reads an all-blank character value as missing
                assert same(got_rs, want) and same(got_pd, want), (ds.name, var.name, i)
    assert define_problems((out / "define.xml").read_bytes()) == []


def test_exp1_sdtm_names_labels_order_and_terms_follow_sdtmig(
    trial: Trial, population: Population, tmp_path: Path
) -> None:
    """EXP-1: names of at most 8 characters, labels of at most 40, DM/DS/SV/AE variables in
    SDTMIG 3.4 order with the required ones present, and controlled terms from CDISC CT."""
    out = tmp_path / "sdtm"
    run(trial, "sdtm", "statistician", out, unblinded=True)
    for path in sorted(out.glob("*.xpt")):
        frame, labels, _ = read_xpt(path)
        assert all(len(n) <= 8 for n in frame.columns), path.name
        assert all(len(label) <= 40 for label in labels), path.name
    for domain, order in SDTMIG_34.items():
        frame, _labels, _ = read_xpt(out / f"{domain.lower()}.xpt")
        names = list(frame.columns)
        reference = order.split()
        assert set(names) <= set(reference), domain
        assert names == sorted(names, key=reference.index), domain
        assert REQUIRED[domain] <= set(names), domain
        assert set(frame["DOMAIN"]) == {domain}
    for (domain, variable), terms in CONTROLLED.items():
        frame, _labels, _ = read_xpt(out / f"{domain.lower()}.xpt")
        assert set(frame[variable]) <= terms, (domain, variable, set(frame[variable]))
    ds = read_xpt(out / "ds.xpt")[0]
    assert {"RANDOMIZED", "WITHDRAWAL BY SUBJECT"} <= set(ds["DSDECOD"])
    assert len(read_xpt(out / "ae.xpt")[0]) >= 1


def test_exp1_xpt_limits_are_checked_before_writing(tmp_path: Path) -> None:
    """EXP-1: a variable name over 8 characters or a label over 40 is refused, naming it."""
    long_name = Dataset("DM", "Demographics", [Variable("STUDYID99", "Study Identifier")])
    long_label = Dataset("DM", "Demographics", [Variable("STUDYID", "x" * 41)])
    with pytest.raises(ValueError, match="STUDYID99: not a SAS v5 name"):
        check_dataset(long_name)
    with pytest.raises(ValueError, match="STUDYID: label longer than 40"):
        check_dataset(long_label)
    check_dataset(Dataset("DM", "Demographics", [Variable("STUDYID", "x" * 40)]))


def _all_text(directory: Path) -> dict[str, str]:
    return {p.name: p.read_bytes().decode("latin-1") for p in sorted(directory.iterdir())}


def test_exp1_rand6_blinded_exports_carry_no_arm(
    trial: Trial, population: Population, tmp_path: Path
) -> None:
    """EXP-1, RAND-6: every file of every blinded export (monitor, manager, and the
    statistician without --unblinded), read as text, names no arm code or label and no
    arm-specific procedure form; DM's arm variables are empty and TA is not written. The
    unblinded statistician's export does carry each subject's arm."""
    proxies = arm_proxies()
    leaks: list[str] = []
    for username in ("monitor", "manager", "statistician"):
        for kind in ("csv", "odm", "sdtm"):
            out = tmp_path / f"{kind}-{username}"
            result = run(trial, kind, username, out)
            assert result.blinded
            for name, raw in _all_text(out).items():
                text = without_ct_wording(raw)
                found = arm_leaks(text) + [p for p in proxies if p in text]
                if found:
                    leaks.append(f"{username} {kind} {name}: {found}")
    assert not leaks, "\n".join(leaks)

    blinded = tmp_path / "sdtm-monitor"
    assert not (blinded / "ta.xpt").exists()
    dm = read_xpt(blinded / "dm.xpt")[0]
    for variable in ("ARMCD", "ARM", "ACTARMCD", "ACTARM"):
        assert set(dm[variable]) == {""}
    csv_dir = tmp_path / "csv-monitor"
    header = (csv_dir / "randomizations.csv").read_text().splitlines()[0].split(",")
    assert "arm_enc" not in header and "arm" not in header
    assert "password_hash" not in (csv_dir / "users.csv").read_text()

    # the unblinded statistician's export: arms per subject, where the blinded ones had none
    out = tmp_path / "sdtm-unblinded"
    run(trial, "sdtm", "statistician", out, unblinded=True)
    dm = read_xpt(out / "dm.xpt")[0]
    arms = dict(zip(dm["SUBJID"], dm["ARMCD"], strict=True))
    assert {n: arms[n] for n in population.arms} == population.arms
    assert set(read_xpt(out / "ta.xpt")[0]["ARMCD"]) == {"INT", "CTRL"}
    out = tmp_path / "csv-unblinded"
    run(trial, "csv", "statistician", out, unblinded=True)
    rows = list(csv.DictReader((out / "randomizations.csv").open(encoding="utf-8")))
    assert {r["arm"] for r in rows} <= {"INT", "CTRL"} and rows
    out = tmp_path / "odm-unblinded"
    run(trial, "odm", "statistician", out, unblinded=True)
    text = (out / "odm.xml").read_text()
    assert re.search(r'ItemOID="I\.randomization\.armcd" Value="(INT|CTRL)"', text)
    assert any(f'FormOID="F.{p}"' in text for p in proxies)


@pytest.mark.parametrize("kind", ["csv", "odm", "sdtm"])
def test_exp1_rand6_who_may_export(trial: Trial, kind: str, tmp_path: Path) -> None:
    """EXP-1, RAND-6: an unblinded export is refused with code 'blinded' to everyone but the
    unblinded statistician (also to one holding a blinded role besides); site roles may not
    export; a non-empty target is refused. A refusal writes nothing."""
    from trialdesk.domain.roles import Role
    from trialdesk.services.access import operator_actor
    from trialdesk.services.setup import create_user

    create_user(
        trial.ctx,
        operator_actor(),
        trial.study_id,
        username="coord-stat",
        full_name="Coord Stat",
        password="correct horse battery",
        roles=[(Role.COORDINATOR, "S101"), (Role.STATISTICIAN, None)],
    )
    for username in ("monitor", "manager", "coord-stat", "dsmb"):
        out = tmp_path / f"no-{username}"
        with pytest.raises(TrialError) as caught:
            run(trial, kind, username, out, unblinded=True)
        assert isinstance(caught.value, PermissionDenied)
        if username != "dsmb":
            assert caught.value.code == "blinded", username
        assert not out.exists()
    for username in ("coordinator", "implanter", "crc"):
        out = tmp_path / f"no-{username}"
        with pytest.raises(PermissionDenied) as denied:
            run(trial, kind, username, out)
        assert denied.value.code == "forbidden"
        assert not out.exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ValidationFailed, match="not empty"):
        run(trial, kind, "monitor", busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
