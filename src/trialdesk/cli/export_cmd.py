"""`trialdesk export {csv,odm,sdtm,adam}`: standard exports into a new directory (EXP-1, RAND-6)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import typer

from trialdesk.cli.common import print_json
from trialdesk.cli.options import StudyOpt, UserOpt, signed_in_call
from trialdesk.services import exports, submission
from trialdesk.services.exports import ExportResult

app = typer.Typer(help="Standard exports (blinded unless --unblinded).", no_args_is_help=True)

Exporter = Callable[..., ExportResult]


def _run(call: Exporter, out: Path, unblinded: bool, user: str | None, study: str | None) -> None:
    result = signed_in_call(
        user,
        study,
        lambda s: call(s.runtime.context, s.actor, s.study.id, out, unblinded=unblinded),
    )
    print_json(result.to_dict())


OutOpt = typer.Option(..., "--out", help="a new or empty directory")
UnblindedOpt = typer.Option(False, "--unblinded", help="with arms (unblinded statistician only)")


@app.command("csv")
def csv_cmd(
    out: Path = OutOpt,
    unblinded: bool = UnblindedOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """One CSV file per table."""
    _run(exports.export_csv, out, unblinded, user, study)


@app.command("odm")
def odm_cmd(
    out: Path = OutOpt,
    unblinded: bool = UnblindedOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """CDISC ODM 1.3.2 XML: protocol metadata and clinical data with audit records."""
    _run(exports.export_odm, out, unblinded, user, study)


@app.command("sdtm")
def sdtm_cmd(
    out: Path = OutOpt,
    unblinded: bool = UnblindedOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    meddra: Path | None = typer.Option(
        None, "--meddra", help="CSV of AE coding: AETERM, AEDECOD, AEBODSYS"
    ),
) -> None:
    """SDTM as SAS XPORT v5 with define.xml, define.html and the annotated CRF; --meddra
    imports AE coding (CSV: AETERM, AEDECOD, AEBODSYS)."""
    _run(partial(submission.export_sdtm, coding=meddra), out, unblinded, user, study)


@app.command("adam")
def adam_cmd(
    out: Path = OutOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
) -> None:
    """ADaM ADSL, ADMAE (END-1), ADHCE (END-2) with Define-XML 2.1 (unblinded statistician)."""
    _run(submission.export_adam, out, True, user, study)
