"""Submission exports (issue 16, EXP-1): SDTM and ADaM as SAS XPORT v5, each with its
Define-XML 2.1 (``define.xml``, its stylesheet-free rendering ``define.html``) and the
annotated CRF the define links to (``acrf.html``).

Thin: the study is read by :mod:`trialdesk.store.submission`, mapped by
:mod:`trialdesk.reports.sdtm` / :mod:`trialdesk.reports.adam`, described by
:mod:`trialdesk.reports.define`. What this module decides is what the reader may see
(RAND-6): a blinded export (monitor, study manager, blinded statistician) carries no arm, no
device record and no index-procedure content except its date, which both arms' procedure
forms carry alike; only the unblinded statistician may ask for ``unblinded=True``, and that
export is an audited disclosure (issue 12). ADaM is by arm by nature: unblinded only.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from trialdesk.protocol.loader import LoadedProtocol
from trialdesk.reports import define
from trialdesk.reports.exports import Dataset, check_dataset, write_xpt
from trialdesk.reports.sdtm import Reading, SdtmInput, build_sdtm
from trialdesk.services import audit_trail
from trialdesk.services.access import Actor
from trialdesk.services.common import loaded_protocol, version_in_force
from trialdesk.services.context import ServiceContext
from trialdesk.services.endpoints import ArmsBlinded
from trialdesk.services.exports import ExportResult, _authorize, _out
from trialdesk.services.forms import CONCEALED_PROCEDURE_FORM, concealed_procedure
from trialdesk.store.submission import StudySubmission


def _read(
    ctx: ServiceContext, study_id: int, unblinded: bool
) -> tuple[StudySubmission, LoadedProtocol, dict[int, Reading]]:
    with ctx.uow(readonly=True) as uow:
        study = uow.submission.read(study_id)
        loaded = loaded_protocol(ctx, uow, version_in_force(uow, study_id))
    readings: dict[int, Reading] = {}
    for subject in study.subjects:
        arm = None
        if unblinded and subject.allocation is not None:
            arm = ctx.cipher.decrypt(subject.allocation.arm_enc)
        form_code: str | None = None
        values: dict[str, object] = {}
        for record in subject.forms:
            if record.form_code != CONCEALED_PROCEDURE_FORM:
                continue
            code, real = concealed_procedure(ctx, record)
            if unblinded:
                form_code, values = code, dict(real)
            else:  # the date only: both arms' procedure forms carry it alike
                values = {"procedure_date": real.get("procedure_date")}
        readings[subject.id] = Reading(arm=arm, procedure_form=form_code, procedure=values)
    return study, loaded, readings


def read_coding(path: Path | None) -> dict[str, tuple[str, str]]:
    """The MedDRA import place: a CSV with columns AETERM, AEDECOD, AEBODSYS (one line per
    reported term, matched in upper case); without it AEDECOD carries the reported term."""
    if path is None:
        return {}
    out: dict[str, tuple[str, str]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            term = (row.get("AETERM") or "").strip().upper()
            if term:
                out[term] = ((row.get("AEDECOD") or term).strip(), (row.get("AEBODSYS") or ""))
    return out


def sdtm_datasets(
    ctx: ServiceContext,
    study_id: int,
    *,
    unblinded: bool,
    coding: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[list[Dataset], LoadedProtocol]:
    """The SDTM datasets of the study (no permission check: callers check)."""
    study, loaded, readings = _read(ctx, study_id, unblinded)
    data = SdtmInput(study, loaded.protocol, readings, unblinded, dict(coding or {}))
    return build_sdtm(data), loaded


def _write(out: Path, datasets: list[Dataset], document: define.DefineDocument) -> list[str]:
    for dataset in datasets:
        check_dataset(dataset)
    files: list[str] = []
    for dataset in datasets:
        name = f"{dataset.name.lower()}.xpt"
        write_xpt(dataset, out / name)
        files.append(name)
    xml = define.define_xml(document)
    problems = define.define_problems(xml)
    if problems:  # never hand out a define that does not validate
        raise ValueError("define.xml does not validate: " + "; ".join(problems[:3]))
    (out / "define.xml").write_bytes(xml)
    (out / "define.html").write_text(define.define_html(document), encoding="utf-8")
    files += ["define.xml", "define.html"]
    if document.acrf:
        (out / "acrf.html").write_text(document.acrf, encoding="utf-8")
        files.append("acrf.html")
    return sorted(files)


def export_sdtm(
    ctx: ServiceContext,
    actor: Actor,
    study_id: int,
    out_dir: Path,
    *,
    unblinded: bool = False,
    coding: Path | None = None,
) -> ExportResult:
    """SDTM as XPORT v5 with Define-XML 2.1, its HTML rendering and the annotated CRF
    (EXP-1). Every dataset is checked (names, labels, lengths) and the define validated
    before the first file is written."""
    _authorize(actor, study_id, unblinded, "export sdtm")
    terms = read_coding(coding)
    datasets, loaded = sdtm_datasets(ctx, study_id, unblinded=unblinded, coding=terms)
    document = define.sdtm_define(
        datasets, loaded.protocol, _study_code(datasets), unblinded=unblinded, now=ctx.now()
    )
    out = _out(out_dir)
    files = _write(out, datasets, document)
    if unblinded:
        audit_trail.record_disclosure(
            ctx, actor, study_id, "export_sdtm", what="sdtm", detail={"files": len(files)}
        )
    notes = (
        []
        if unblinded
        else [
            "blinded export: DM ARMCD, ARM, ACTARMCD, ACTARM and ACTARMUD are written empty; "
            "TA (trial arms), DI and DX (devices) and SUPPPR (procedure steps) are not "
            "written; PR names the index procedure without its arm"
        ]
    )
    if not terms:
        notes.append("AEDECOD: no MedDRA coding imported; the reported term in upper case")
    return ExportResult("sdtm", str(out), not unblinded, files, notes)


def _study_code(datasets: list[Dataset]) -> str:
    for ds in datasets:
        for row in ds.rows:
            return str(row.get("STUDYID", ""))
    return ""


def export_adam(
    ctx: ServiceContext, actor: Actor, study_id: int, out_dir: Path, *, unblinded: bool = True
) -> ExportResult:
    """ADaM (ADSL, ADAE for END-1, ADEFF for END-2) with its Define-XML: by arm, so the
    unblinded statistician's only, and an audited disclosure."""
    from trialdesk.reports import adam
    from trialdesk.services import endpoints

    if not unblinded:
        raise ArmsBlinded("ADaM datasets are by arm: there is no blinded ADaM export")
    _authorize(actor, study_id, True, "export adam")
    efficacy = endpoints.efficacy_summary(ctx, actor, study_id)
    safety = endpoints.safety_summary(ctx, actor, study_id)
    datasets, loaded = sdtm_datasets(ctx, study_id, unblinded=True)
    study, _loaded, _readings = _read(ctx, study_id, False)
    in_error = [
        s.number for s in study.subjects if s.allocation is not None and s.allocation.in_error
    ]
    analysis = adam.build_adam(
        datasets,
        loaded.protocol,
        outcomes=efficacy.outcomes,
        safety=adam.SafetyFacts(
            safety.arm, safety.horizon_days, tuple(safety.analysed), tuple(safety.with_event)
        ),
        in_error=in_error,
    )
    document = define.adam_define(analysis, loaded.protocol, _study_code(datasets), now=ctx.now())
    out = _out(out_dir)
    files = _write(out, analysis, document)
    audit_trail.record_disclosure(
        ctx, actor, study_id, "export_adam", what="adam", detail={"files": len(files)}
    )
    return ExportResult("adam", str(out), False, files, [])
