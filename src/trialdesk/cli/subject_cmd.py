"""`trialdesk subject ACTION ...`: walk a subject through the protocol from the shell.

Every command signs in as ``--user``/``TRIALDESK_USER`` (password from ``TRIALDESK_PASSWORD``
or a prompt), calls one service, and prints the subject as the service returns it (blinded
as the service decides), or JSON with ``--json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from trialdesk.cli.common import print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt, signed_in_call
from trialdesk.cli.runtime import (
    Session,
    guarded,
    open_runtime,
    parse_date,
    parse_values,
    require_date,
    sign_in,
    signature_password,
)
from trialdesk.domain.audit import utc_iso
from trialdesk.domain.timefmt import format_moment, is_time_zone
from trialdesk.protocol.models import Gate
from trialdesk.services import followup, queries, screening
from trialdesk.services.allocation import randomization
from trialdesk.services.history import subject_history
from trialdesk.services.preferences import viewer_zone

app = typer.Typer(help="Subject actions, one per step of the journey.", no_args_is_help=True)


def _run(
    user: str | None, study: str | None, json_out: bool, call: Callable[[Session], Any]
) -> None:
    result = signed_in_call(user, study, call)
    data = result.to_dict() if hasattr(result, "to_dict") else result
    if json_out:
        print_json(data)
    else:
        _print_human(data)


def _print_human(data: Any) -> None:
    if isinstance(data, dict) and "number" in data:
        line = f"{data['number']} at site {data['site']}: {data['state']}"
        if data.get("randomization_number"):
            line += f", randomized, number {data['randomization_number']}"
        if data.get("arm"):
            line += f", arm {data['arm']['code']} ({data['arm']['label']})"
        if data.get("screen_failure_reason"):
            line += f" ({data['screen_failure_reason']}: {data.get('screen_failure_detail')})"
        typer.echo(line)
        typer.echo("  allowed now: " + (", ".join(data["allowed_actions"]) or "none"))
        for v in data.get("visits", []):
            done = f" {v['status']} {v['visit_date'] or ''} {v['timing'] or ''}".rstrip()
            typer.echo(f"  {v['code']:4} {v['window_start']}..{v['window_end']}{done}")
    elif isinstance(data, dict) and "randomization_number" in data:
        line = f"{data['subject']}: randomized, number {data['randomization_number']}"
        if "arm" in data:
            line += f", arm {data['arm']['code']} ({data['arm']['label']})"
        typer.echo(line)
    else:
        print_json(data)


@app.command("register")
def register(
    site: str = typer.Option(..., "--site"),
    date: str | None = typer.Option(None, "--date", help="registration date"),
    test: bool = typer.Option(False, "--test", help="a test subject (draws from test lists)"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Enter a candidate in the screening log."""
    on = parse_date(date, "--date")
    _run(
        user,
        study,
        json_out,
        lambda s: screening.register_subject(
            s.runtime.context, s.actor, s.study.id, site_code=site, registered_on=on, test=test
        ),
    )


@app.command("consent")
def consent(
    number: str,
    date: str = typer.Option(..., "--date"),
    version: str = typer.Option(..., "--version", help="consent form version"),
    document: str | None = typer.Option(
        None, "--document", help="consent document (default: the protocol's main one)"
    ),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Record signed informed consent (the version must be in force at the site, REC-8)."""
    on = require_date(date, "--date")
    _run(
        user,
        study,
        json_out,
        lambda s: screening.record_consent(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            consent_date=on,
            consent_version=version,
            document=document,
        ),
    )


@app.command("decline")
def decline(
    number: str,
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The candidate declines consent (screen failure: declined)."""
    _run(
        user,
        study,
        json_out,
        lambda s: screening.decline_consent(
            s.runtime.context, s.actor, s.study.id, number, reason=reason
        ),
    )


@app.command("form")
def form(
    number: str,
    form_code: str,
    values: str = typer.Option(..., "--values", help="JSON object or @FILE"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Save a screening form."""
    data = parse_values(values)
    _run(
        user,
        study,
        json_out,
        lambda s: screening.record_screening_form(
            s.runtime.context, s.actor, s.study.id, number, form_code=form_code, values=data
        ),
    )


@app.command("confirm")
def confirm(
    number: str,
    criterion: str,
    met: bool = typer.Option(..., "--met/--not-met", help="the investigator's answer"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Confirm (e-sign) a criterion that has no machine rule."""

    def call(s: Session) -> Any:
        pw = signature_password(s.runtime.context.settings)
        return screening.confirm_criterion(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            criterion_id=criterion,
            confirmed=met,
            password=pw,
        )

    _run(user, study, json_out, call)


@app.command("eligibility")
def eligibility(
    number: str,
    gate: Gate = typer.Option(Gate.ECHO, "--gate"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Which criteria are met, not met, or waiting for data or confirmation."""

    def call(s: Session) -> Any:
        result = screening.check_eligibility(
            s.runtime.context, s.actor, s.study.id, number, gate=gate
        )
        return {
            "eligible": result.eligible,
            "failed": list(result.failed_ids),
            "pending": list(result.pending_ids),
            "criteria": [
                {"id": o.id, "kind": o.kind, "status": o.status.value, "missing": list(o.missing)}
                for o in result.outcomes
            ],
        }

    _run(user, study, json_out, call)


@app.command("complete-screening")
def complete_screening(
    number: str, user: str | None = UserOpt, study: str | None = StudyOpt, json_out: bool = JsonOpt
) -> None:
    """Evaluate the echo-gate criteria: qualified (CRC case opens) or screen failure."""
    _run(
        user,
        study,
        json_out,
        lambda s: screening.complete_screening(s.runtime.context, s.actor, s.study.id, number),
    )


@app.command("crc")
def crc(
    number: str,
    decision: str = typer.Option(..., "--decision", help="approve, reject or request_info"),
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """CRC eligibility decision, e-signed."""

    def call(s: Session) -> Any:
        pw = signature_password(s.runtime.context.settings)
        return screening.crc_eligibility_decision(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            decision=decision,
            reason=reason,
            password=pw,
        )

    _run(user, study, json_out, call)


@app.command("anatomy")
def anatomy(
    number: str,
    forms: str = typer.Option(..., "--forms", help='{"angiogram": {...}, ...} or @FILE'),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Procedure-day angiogram and venogram: suitable or screen failure (anatomy)."""
    data = parse_values(forms, "--forms")
    _run(
        user,
        study,
        json_out,
        lambda s: screening.record_anatomy(
            s.runtime.context, s.actor, s.study.id, number, forms=data
        ),
    )


@app.command("screen-fail")
def screen_fail(
    number: str,
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """End screening for another reason."""
    _run(
        user,
        study,
        json_out,
        lambda s: screening.screen_fail_other(
            s.runtime.context, s.actor, s.study.id, number, reason=reason
        ),
    )


@app.command("randomize")
def randomize(
    number: str,
    idempotency_key: str | None = typer.Option(None, "--idempotency-key"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Randomize on the procedure day (the implanting team sees the arm)."""
    _run(
        user,
        study,
        json_out,
        lambda s: randomization.randomize(
            s.runtime.context, s.actor, s.study.id, number, idempotency_key=idempotency_key
        ),
    )


@app.command("procedure")
def procedure(
    number: str,
    values: str = typer.Option(..., "--values"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Index procedure (implant steps or sham), by the implanting team."""
    data = parse_values(values)
    _run(
        user,
        study,
        json_out,
        lambda s: followup.record_procedure(
            s.runtime.context, s.actor, s.study.id, number, values=data
        ),
    )


@app.command("discharge")
def discharge(
    number: str,
    date: str = typer.Option(..., "--date"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    on = require_date(date, "--date")
    _run(
        user,
        study,
        json_out,
        lambda s: followup.record_discharge(
            s.runtime.context, s.actor, s.study.id, number, discharged_on=on
        ),
    )


@app.command("visit")
def visit(
    number: str,
    visit_code: str,
    date: str = typer.Option(..., "--date"),
    forms: str | None = typer.Option(None, "--forms", help='{"follow_up": {...}} or @FILE'),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Record a follow-up visit or contact with its forms."""
    on = require_date(date, "--date")
    data = parse_values(forms, "--forms")
    _run(
        user,
        study,
        json_out,
        lambda s: followup.record_visit(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            visit_code=visit_code,
            visit_date=on,
            forms=data,
        ),
    )


@app.command("miss-visit")
def miss_visit(
    number: str,
    visit_code: str,
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    _run(
        user,
        study,
        json_out,
        lambda s: followup.miss_visit(
            s.runtime.context, s.actor, s.study.id, number, visit_code=visit_code, reason=reason
        ),
    )


@app.command("therapy")
def therapy(
    number: str,
    date: str = typer.Option(..., "--date"),
    therapy_type: str = typer.Option(..., "--type"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """An additional therapy (goes to the CRC)."""
    on = require_date(date, "--date")
    _run(
        user,
        study,
        json_out,
        lambda s: followup.record_therapy(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            therapy_date=on,
            therapy_type=therapy_type,
        ),
    )


@app.command("adverse-event")
def adverse_event(
    number: str,
    values: str = typer.Option(..., "--values"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    data = parse_values(values)
    _run(
        user,
        study,
        json_out,
        lambda s: followup.record_adverse_event(
            s.runtime.context, s.actor, s.study.id, number, values=data
        ),
    )


@app.command("unblind")
def unblind(
    number: str, user: str | None = UserOpt, study: str | None = StudyOpt, json_out: bool = JsonOpt
) -> None:
    """Scheduled unblinding after the 24-month evaluation (e-signed)."""

    def call(s: Session) -> Any:
        pw = signature_password(s.runtime.context.settings)
        return followup.unblind_subject(s.runtime.context, s.actor, s.study.id, number, password=pw)

    _run(user, study, json_out, call)


@app.command("emergency-unblind")
def emergency_unblind(
    number: str,
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Break the code for one subject in an emergency (e-signed, manager notified)."""

    def call(s: Session) -> Any:
        pw = signature_password(s.runtime.context.settings)
        return followup.emergency_unblind(
            s.runtime.context, s.actor, s.study.id, number, reason=reason, password=pw
        )

    _run(user, study, json_out, call)


@app.command("withdraw")
def withdraw(
    number: str,
    date: str = typer.Option(..., "--date"),
    reason: str = typer.Option(..., "--reason"),
    contact: bool = typer.Option(False, "--contact-allowed/--no-contact"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    on = require_date(date, "--date")
    _run(
        user,
        study,
        json_out,
        lambda s: followup.withdraw(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            withdrawn_on=on,
            reason=reason,
            follow_up_contact_allowed=contact,
        ),
    )


@app.command("lost")
def lost(
    number: str,
    date: str = typer.Option(..., "--date"),
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Lost to follow-up, confirmed by the investigator."""
    on = require_date(date, "--date")
    _run(
        user,
        study,
        json_out,
        lambda s: followup.mark_lost_to_follow_up(
            s.runtime.context, s.actor, s.study.id, number, on=on, reason=reason
        ),
    )


@app.command("death")
def death(
    number: str,
    date: str = typer.Option(..., "--date"),
    cause: str = typer.Option(..., "--cause"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    on = require_date(date, "--date")
    _run(
        user,
        study,
        json_out,
        lambda s: followup.record_death(
            s.runtime.context, s.actor, s.study.id, number, death_date=on, cause=cause
        ),
    )


@app.command("complete")
def complete(
    number: str, user: str | None = UserOpt, study: str | None = StudyOpt, json_out: bool = JsonOpt
) -> None:
    """Completion after the final (60-month) contact."""
    _run(
        user,
        study,
        json_out,
        lambda s: followup.complete_subject(s.runtime.context, s.actor, s.study.id, number),
    )


@app.command("show")
def show(
    number: str, user: str | None = UserOpt, study: str | None = StudyOpt, json_out: bool = JsonOpt
) -> None:
    """One subject, as your role may see it."""
    _run(
        user,
        study,
        json_out,
        lambda s: queries.get_subject(s.runtime.context, s.actor, s.study.id, number),
    )


@app.command("history")
def history(
    number: str,
    tz: str | None = typer.Option(
        None, "--tz", help="show times in this IANA zone (default: your own setting)"
    ),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Every change to one subject's record, from its audit trail, times in your zone (TIME-1).

    JSON gives each time in UTC (``at``) and as shown (``shown``)."""
    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        ctx, actor, study_id = runtime.context, session.actor, session.study.id
        entries = guarded(lambda: subject_history(ctx, actor, study_id, number))
        zone = tz or guarded(lambda: viewer_zone(ctx, actor, study_id))
        if not is_time_zone(zone):
            raise typer.BadParameter(f"{zone!r} is not an IANA time zone", param_hint="--tz")
    rows = [
        {
            "at": utc_iso(e.at),
            "shown": format_moment(e.at, zone),
            "actor": e.actor,
            "action": e.action,
            "record": f"{e.entity} {e.entity_id}",
            "reason": e.reason,
        }
        for e in entries
    ]
    if json_out:
        print_json(rows)
        return
    typer.echo(f"{number}: {len(rows)} entries, times in {zone}")
    for r in rows:
        reason = f"  ({r['reason']})" if r["reason"] else ""
        typer.echo(f"  {r['shown']}  {r['actor']:<14} {r['action']:<24} {r['record']}{reason}")


@app.command("list")
def list_(
    site: str | None = typer.Option(None, "--site"),
    state: str | None = typer.Option(None, "--state"),
    offset: int = typer.Option(0, "--offset"),
    limit: int = typer.Option(50, "--limit"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Subjects you may see."""

    def call(s: Session) -> Any:
        page = queries.list_subjects(
            s.runtime.context,
            s.actor,
            s.study.id,
            site=site,
            state=state,
            offset=offset,
            limit=limit,
        )
        return {
            "total": page.total,
            "offset": page.offset,
            "limit": page.limit,
            "items": [i.to_dict() for i in page.items],
        }

    with open_runtime() as runtime:
        session = sign_in(runtime, user, study)
        data = guarded(lambda: call(session))
    if json_out:
        print_json(data)
        return
    for item in data["items"]:
        typer.echo(f"{item['number']}\t{item['state']}\t{item['randomization_number'] or ''}")
    typer.echo(f"{len(data['items'])} of {data['total']}")
