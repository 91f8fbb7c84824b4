"""`trialdesk lock ...`, `trialdesk sdv ...` and `trialdesk sign ...` (issue 15, lane x15a):
records that hold: locks at four levels and the database lock with its checklist (REC-3, REC-5),
source-data verification (REC-1) and the investigator's e-signature (REC-2, SIG-1).

Each command signs in as ``--user``/``TRIALDESK_USER``, calls one service and prints what it
returns, or JSON with ``--json``. Locks, unlocks and signatures ask for the password again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from trialdesk.cli.common import print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt, signed_in_call
from trialdesk.cli.runtime import Session, signature_password
from trialdesk.services.records import checklist, locks, review

lock_app = typer.Typer(help="Locks and the database lock.", no_args_is_help=True)
sdv_app = typer.Typer(help="Source-data verification (monitor).", no_args_is_help=True)
sign_app = typer.Typer(help="Investigator e-signatures.", no_args_is_help=True)

VisitOpt = typer.Option(None, "--visit", help="visit code")
FormOpt = typer.Option(None, "--form", help="form code")


def _pw(s: Session) -> str:
    return signature_password(s.runtime.context.settings)


def _show(data: Any, json_out: bool, line: Callable[[Any], str]) -> None:
    if json_out:
        print_json(data)
    elif isinstance(data, list):
        for item in data:
            typer.echo(line(item))
    else:
        typer.echo(line(data))


def _lock_line(v: dict[str, Any]) -> str:
    state = "active" if v["active"] else f"lifted by {v['unlocked_by']}: {v['unlock_reason']}"
    return f"lock {v['id']} [{v['kind']}] {v['describes']}: {v['reason']} ({state})"


@lock_app.command("record")
def lock_record(
    number: str,
    level: str = typer.Option(..., "--level", help="form, visit or casebook"),
    reason: str = typer.Option(..., "--reason"),
    visit: str | None = VisitOpt,
    form: str | None = FormOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Lock a form record, a visit or a casebook (data manager, study manager; signed)."""
    view = signed_in_call(
        user,
        study,
        lambda s: locks.lock_record(
            s.runtime.context, s.actor, study_id=s.study.id, number=number, level=level,
            visit=visit, form=form, reason=reason, password=_pw(s),
        ),
    )  # fmt: skip
    _show(view.to_dict(), json_out, _lock_line)


@lock_app.command("unlock")
def unlock_record(
    lock_id: int,
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Lift a record lock or a freeze at unblinding, with a reason (signed)."""
    view = signed_in_call(
        user,
        study,
        lambda s: locks.unlock_record(
            s.runtime.context, s.actor, study_id=s.study.id, lock_id=lock_id, reason=reason,
            password=_pw(s),
        ),
    )  # fmt: skip
    _show(view.to_dict(), json_out, _lock_line)


@lock_app.command("list")
def list_locks(
    number: str,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The subject's locks, lifted ones too, and the study's database lock."""
    views = signed_in_call(
        user,
        study,
        lambda s: locks.subject_locks(
            s.runtime.context, s.actor, study_id=s.study.id, number=number
        ),
    )
    _show([v.to_dict() for v in views], json_out, _lock_line)


@lock_app.command("database")
def lock_database(
    kind: str = typer.Option(..., "--kind", help="soft (interim, reversible) or hard (final)"),
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Lock the study database (signed); the hard lock needs an empty checklist."""
    view = signed_in_call(
        user,
        study,
        lambda s: locks.lock_database(
            s.runtime.context, s.actor, study_id=s.study.id, kind=kind, reason=reason,
            password=_pw(s),
        ),
    )  # fmt: skip
    _show(view.to_dict(), json_out, _lock_line)


@lock_app.command("unlock-database")
def unlock_database(
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Lift the soft database lock (signed); the hard lock is final."""
    view = signed_in_call(
        user,
        study,
        lambda s: locks.unlock_database(
            s.runtime.context, s.actor, study_id=s.study.id, reason=reason, password=_pw(s)
        ),
    )
    _show(view.to_dict(), json_out, _lock_line)


@lock_app.command("checklist")
def lock_checklist(
    site: str | None = typer.Option(None, "--site"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """What blocks the hard database lock, one line each."""
    view = signed_in_call(
        user,
        study,
        lambda s: checklist.lock_checklist(
            s.runtime.context, s.actor, study_id=s.study.id, site=site
        ),
    )
    data = view.to_dict()
    if json_out:
        print_json(data)
        return
    typer.echo("ready for the hard lock" if data["ready"] else f"{len(data['blockers'])} blockers")
    for b in data["blockers"]:
        typer.echo(f"  [{b['kind']}] {b['site']} {b['subject']}: {b['text']}")


def _sdv_line(v: dict[str, Any]) -> str:
    at = f" at {v['visit']}" if v["visit"] else ""
    why = f" ({v['why']})" if v["why"] else ""
    return f"{v['subject']} {v['form']}{at}: {v['status']}{why}"


@sdv_app.command("mark")
def mark_sdv(
    number: str,
    form: str,
    visit: str = typer.Option("", "--visit"),
    field: list[str] | None = typer.Option(None, "--field", help="only these fields"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Mark a saved form (or chosen fields) verified against source (monitor)."""
    view = signed_in_call(
        user,
        study,
        lambda s: review.mark_sdv(
            s.runtime.context, s.actor, study_id=s.study.id, number=number, form=form,
            visit=visit, fields=field or None,
        ),
    )  # fmt: skip
    _show(view.to_dict(), json_out, _sdv_line)


@sdv_app.command("status")
def sdv_status(
    site: str | None = typer.Option(None, "--site"),
    subject: str | None = typer.Option(None, "--subject"),
    visit: str | None = VisitOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """SDV per record and counts by subject, site and visit."""
    view = signed_in_call(
        user,
        study,
        lambda s: review.sdv_status(
            s.runtime.context, s.actor, study_id=s.study.id, site=site, number=subject,
            visit=visit,
        ),
    )  # fmt: skip
    data = view.to_dict()
    if json_out:
        print_json(data)
        return
    for site_code, c in data["by_site"].items():
        typer.echo(
            f"site {site_code}: {c['verified']}/{c['required']} verified, {c['pending']} "
            f"pending, {c['invalidated']} cleared by a change"
        )
    for record in data["records"]:
        typer.echo("  " + _sdv_line(record))


def _sig_line(v: dict[str, Any]) -> str:
    what = (
        v["level"]
        + (f" {v['visit']}" if v["visit"] else "")
        + (f" {v['form']}" if v["form"] else "")
    )
    state = "valid" if v["valid"] else "NO LONGER VALID: " + "; ".join(v["invalid_because"])
    return (
        f"signature {v['id']} {v['subject']} {what} by {v['signed_name']} {v['signed_at']}: {state}"
    )


@sign_app.command("records")
def sign_records(
    number: str,
    level: str = typer.Option(..., "--level", help="form, visit or casebook"),
    visit: str | None = VisitOpt,
    form: str | None = FormOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """E-sign a form, a visit or the casebook (investigator; the password again)."""
    view = signed_in_call(
        user,
        study,
        lambda s: review.sign_records(
            s.runtime.context, s.actor, study_id=s.study.id, number=number, level=level,
            visit=visit, form=form, password=_pw(s),
        ),
    )  # fmt: skip
    _show(view.to_dict(), json_out, _sig_line)


@sign_app.command("list")
def list_signatures(
    number: str,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The subject's signatures, each valid or with what changed since."""
    views = signed_in_call(
        user,
        study,
        lambda s: review.subject_signatures(
            s.runtime.context, s.actor, study_id=s.study.id, number=number
        ),
    )
    _show([v.to_dict() for v in views], json_out, _sig_line)
