"""`trialdesk queries ...` (the monitor's data queries, DATA-2) and `trialdesk crc ...` (the
Central Review Committee's queue and e-signed decisions, ELIG-3, THER-2, THER-3, SIG-1).

Each command signs in as ``--user``/``TRIALDESK_USER``, calls one service and prints what it
returns, or JSON with ``--json``. Decisions ask for the password again to sign.
"""

from __future__ import annotations

from typing import Any

import typer

from trialdesk.cli.common import print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt, signed_in_call
from trialdesk.cli.runtime import Session, signature_password
from trialdesk.services import crc, data_queries

queries_app = typer.Typer(help="Data queries on saved form fields.", no_args_is_help=True)
crc_app = typer.Typer(help="Central Review Committee work queue.", no_args_is_help=True)


def _query_line(q: dict[str, Any]) -> str:
    where = f"{q['form']}.{q['field']}" + (f" at {q['visit']}" if q["visit"] else "")
    line = f"query {q['id']} [{q['status']}] {q['subject']} (site {q['site']}) {where}"
    line += f"\n  question: {q['text']}"
    if q["answer"]:
        changed = " (value changed)" if q["value_changed"] else ""
        line += f"\n  answer by {q['answered_by']}: {q['answer']}{changed}"
    if q.get("assigned_to"):  # issue 15 (x15b): REC-6, REC-7
        rule = f"rule {q['rule']}, " if q.get("rule") else ""
        overdue = ", overdue" if q.get("overdue") else ""
        line += (
            f"\n  {rule}assigned to {q['assigned_to']}, {q['age_days']} days old "
            f"({q['age_band']}{overdue})"
        )
    if q.get("verified_by"):
        line += f"\n  verified by {q['verified_by']}"
    return line


def _show_query(view: data_queries.QueryView, json_out: bool) -> None:
    data = view.to_dict()
    if json_out:
        print_json(data)
    else:
        typer.echo(_query_line(data))


@queries_app.command("raise")
def raise_(
    number: str,
    form_code: str,
    field: str,
    text: str = typer.Option(..., "--text", help="the question for the site"),
    visit: str = typer.Option("", "--visit", help="visit code of the form (none for screening)"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Raise a query on one field of a saved form (monitor or data manager)."""
    view = signed_in_call(
        user,
        study,
        lambda s: data_queries.raise_query(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            form_code=form_code,
            field=field,
            text=text,
            visit_code=visit,
        ),
    )
    _show_query(view, json_out)


@queries_app.command("answer")
def answer(
    query_id: int,
    text: str = typer.Option("", "--text", help="the site's answer"),
    value: str | None = typer.Option(None, "--value", help="corrected value of the field"),
    reason: str | None = typer.Option(None, "--reason", help="reason for the change (DATA-2)"),
    response: str | None = typer.Option(
        None, "--response", help="a coded response of the protocol (REC-7), e.g. confirmed"
    ),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Answer an open query (site coordinator), optionally correcting the value."""
    view = signed_in_call(
        user,
        study,
        lambda s: data_queries.answer_query(
            s.runtime.context,
            s.actor,
            s.study.id,
            query_id,
            text=text,
            new_value=value,
            reason=reason,
            response=response,
        ),
    )
    _show_query(view, json_out)


@queries_app.command("close")
def close(
    query_id: int,
    note: str | None = typer.Option(None, "--note"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Close an answered query (monitor or data manager)."""
    view = signed_in_call(
        user,
        study,
        lambda s: data_queries.close_query(
            s.runtime.context, s.actor, s.study.id, query_id, note=note
        ),
    )
    _show_query(view, json_out)


@queries_app.command("reopen")
def reopen(
    query_id: int,
    text: str = typer.Option(..., "--text", help="why the answer is not enough"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Reopen an answered or closed query (monitor or data manager)."""
    view = signed_in_call(
        user,
        study,
        lambda s: data_queries.reopen_query(
            s.runtime.context, s.actor, s.study.id, query_id, text=text
        ),
    )
    _show_query(view, json_out)


@queries_app.command("list")
def list_(
    site: str | None = typer.Option(None, "--site"),
    status: str | None = typer.Option(
        None, "--status", help="open, answered, verified or closed (default: open, answered)"
    ),
    assignee: str | None = typer.Option(None, "--assignee", help="assigned to this user"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Queries not yet closed, oldest first (site staff see their own site only)."""
    views = signed_in_call(
        user,
        study,
        lambda s: data_queries.open_queries(
            s.runtime.context, s.actor, s.study.id, site=site, status=status, assignee=assignee
        ),
    )
    items = [v.to_dict() for v in views]
    if json_out:
        print_json(items)
        return
    for item in items:
        typer.echo(_query_line(item))
    typer.echo(f"{len(items)} queries")


def _case_line(c: dict[str, Any]) -> str:
    line = f"case {c['id']} [{c['status']}] {c['kind']}: {c['subject']} (site {c['site']}), "
    line += f"opened {c['opened_at'][:10]}"
    therapy = c.get("therapy")
    if therapy:
        early = ", EARLY" if therapy["early"] else ""
        line += (
            f"\n  therapy {therapy['type']} on {therapy['date']}, "
            f"{therapy['months_since_randomization']:.1f} months after randomization{early} "
            f"({therapy['review']})"
        )
    if c.get("decision"):
        line += f"\n  {c['decision']}: {c['reason']} (signed by {c['signed_name']}, {c['meaning']})"
    return line


@crc_app.command("queue")
def queue(
    user: str | None = UserOpt, study: str | None = StudyOpt, json_out: bool = JsonOpt
) -> None:
    """Open and info-requested CRC cases, oldest first."""
    views = signed_in_call(
        user, study, lambda s: crc.crc_queue(s.runtime.context, s.actor, s.study.id)
    )
    items = [v.to_dict() for v in views]
    if json_out:
        print_json(items)
        return
    for item in items:
        typer.echo(_case_line(item))
    typer.echo(f"{len(items)} cases waiting")


@crc_app.command("decide-therapy")
def decide_therapy(
    case_id: int,
    classification: str = typer.Option(
        ..., "--classification", help=", ".join(crc.THERAPY_DECISIONS)
    ),
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Review an additional therapy (e-signed); the subject stays on the trial."""

    def call(s: Session) -> Any:
        pw = signature_password(s.runtime.context.settings)
        return crc.decide_therapy_case(
            s.runtime.context,
            s.actor,
            s.study.id,
            case_id,
            classification=classification,
            reason=reason,
            password=pw,
        )

    data = signed_in_call(user, study, call).to_dict()
    if json_out:
        print_json(data)
    else:
        typer.echo(_case_line(data))


@crc_app.command("decide-eligibility")
def decide_eligibility(
    number: str,
    decision: str = typer.Option(..., "--decision", help=", ".join(crc.CRC_DECISIONS)),
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Eligibility decision for the implant procedure (e-signed)."""

    def call(s: Session) -> Any:
        pw = signature_password(s.runtime.context.settings)
        return crc.crc_eligibility_decision(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            decision=decision,
            reason=reason,
            password=pw,
        )

    data = signed_in_call(user, study, call).to_dict()
    if json_out:
        print_json(data)
    else:
        typer.echo(f"{data['number']} at site {data['site']}: {data['state']}")


# --- issue 15 (lane x15b): queries grown up (REC-7) ---------------------------------------------


@queries_app.command("assign")
def assign(
    query_id: int,
    to: str = typer.Option(..., "--to", help="a username of the site; '' for the whole site"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Assign a query to a person of the subject's site (monitor or data manager)."""
    view = signed_in_call(
        user,
        study,
        lambda s: data_queries.assign_query(
            s.runtime.context, s.actor, s.study.id, query_id, assignee=to
        ),
    )
    _show_query(view, json_out)


@queries_app.command("verify")
def verify(
    query_id: int,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Accept the site's answer: the query is verified (monitor or data manager)."""
    view = signed_in_call(
        user,
        study,
        lambda s: data_queries.verify_query(s.runtime.context, s.actor, s.study.id, query_id),
    )
    _show_query(view, json_out)
