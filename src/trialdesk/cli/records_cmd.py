"""Issue 15, lane x15b: `trialdesk quality ...` (data-quality rules from the protocol, REC-6,
and the missing-data report, REC-10), `trialdesk consent ...` (re-consent and its worklist,
REC-8) and `trialdesk exit ...` (death and withdrawal on the protocol's forms, contacts after
a withdrawal, REC-9).

Each command signs in as ``--user``/``TRIALDESK_USER``, calls one service and prints what it
returns, or JSON with ``--json``; a refusal is one line on stderr and exit status 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from trialdesk.cli.common import print_json
from trialdesk.cli.options import JsonOpt, StudyOpt, UserOpt, signed_in_call
from trialdesk.cli.runtime import (
    Session,
    parse_values,
    require_date,
)
from trialdesk.services import consent, exits, quality

quality_app = typer.Typer(
    help="Data-quality rules and the missing-data report.", no_args_is_help=True
)
consent_app = typer.Typer(help="Consents, re-consent and its worklist.", no_args_is_help=True)
exit_app = typer.Typer(
    help="Exits on the protocol's forms; contacts after withdrawal.", no_args_is_help=True
)

SiteOpt = typer.Option(None, "--site", help="one site only")


def _run(
    user: str | None,
    study: str | None,
    json_out: bool,
    call: Callable[[Session], Any],
    line: Callable[[dict[str, Any]], str],
) -> None:
    result = signed_in_call(user, study, call)
    items = result if isinstance(result, list) else [result]
    data = [i.to_dict() if hasattr(i, "to_dict") else i for i in items]
    if json_out:
        print_json(data if isinstance(result, list) else data[0])
        return
    if not data:
        typer.echo("nothing")
    for item in data:
        typer.echo(line(item))


def _finding(d: dict[str, Any]) -> str:
    where = f"{d['form']}.{d['field']}" + (f" at {d['visit']}" if d["visit"] else "")
    excluded = f" [excluded: {d['excluded']}]" if d["excluded"] else ""
    return f"{d['rule']} ({d['severity']}) {d['subject']} {where}: {d['detail']}{excluded}"


@quality_app.command("report")
def report(
    subject: str | None = typer.Option(None, "--subject"),
    site: str | None = SiteOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """What the protocol's data-quality rules find now (no query is touched)."""
    _run(
        user,
        study,
        json_out,
        lambda s: quality.quality_report(
            s.runtime.context, s.actor, s.study.id, number=subject, site=site
        ),
        _finding,
    )


@quality_app.command("run")
def run(
    subject: str | None = typer.Option(None, "--subject"),
    site: str | None = SiteOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Run every rule (on-save and on-demand): open, reopen or resolve their queries."""

    def line(r: dict[str, Any]) -> str:
        found = "\n".join(_finding(d) for d in r["discrepancies"])
        head = (
            f"{r['subjects']} subjects checked: {len(r['opened'])} queries opened, "
            f"{len(r['reopened'])} reopened, {len(r['resolved'])} resolved"
        )
        return head + (f"\n{found}" if found else "")

    _run(
        user,
        study,
        json_out,
        lambda s: quality.run_quality_rules(
            s.runtime.context, s.actor, s.study.id, number=subject, site=site
        ),
        line,
    )


def _exclusion(e: dict[str, Any]) -> str:
    where = e["form"] + (f" at {e['visit']}" if e["visit"] else "")
    state = f"revoked by {e['revoked_by']}" if e["revoked_by"] else "excluded"
    return f"exclusion {e['id']}: {e['rule']} on {where} of {e['subject']} {state}: {e['reason']}"


@quality_app.command("exclude")
def exclude(
    number: str,
    rule: str = typer.Option(..., "--rule"),
    form: str = typer.Option(..., "--form"),
    visit: str = typer.Option("", "--visit"),
    seq: int = typer.Option(1, "--seq", min=1),
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Exclude a rule for one record, with a reason (monitor or data manager)."""
    _run(
        user,
        study,
        json_out,
        lambda s: quality.exclude_rule(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            rule_id=rule,
            form_code=form,
            visit_code=visit,
            seq=seq,
            reason=reason,
        ),
        _exclusion,
    )


@quality_app.command("revoke")
def revoke(
    exclusion_id: int,
    reason: str = typer.Option(..., "--reason"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Bring an excluded rule back for its record."""
    _run(
        user,
        study,
        json_out,
        lambda s: quality.revoke_exclusion(
            s.runtime.context, s.actor, s.study.id, exclusion_id=exclusion_id, reason=reason
        ),
        _exclusion,
    )


@quality_app.command("missing")
def missing(
    site: str | None = SiteOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The missing-data report per visit and form."""

    def line(r: dict[str, Any]) -> str:
        chase = f" — chase {', '.join(r['subjects'])}" if r["subjects"] else ""
        return (
            f"{r['visit'] or '-'} {r['form']}: {r['expected']} expected, {r['complete']} "
            f"complete, {r['incomplete']} incomplete, {r['not_saved']} not saved, "
            f"{r['marked_missing']} marked missing{chase}"
        )

    _run(
        user,
        study,
        json_out,
        lambda s: quality.missing_data(s.runtime.context, s.actor, s.study.id, site=site),
        line,
    )


def _due(d: dict[str, Any]) -> str:
    since = f" since {d['since']}" if d["since"] else ""
    return (
        f"{d['subject']} (site {d['site']}): sign {d['document']} {d['required']} "
        f"(signed {d['signed']}){since}"
    )


def _consents(c: dict[str, Any]) -> str:
    lines = [f"{c['subject']}:"]
    lines += [f"  {x['document']} {x['version']} signed {x['signed_on']}" for x in c["consents"]]
    lines += ["  due: " + _due(d) for d in c["due"]]
    return "\n".join(lines)


@consent_app.command("worklist")
def worklist(
    site: str | None = SiteOpt,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Subjects who must re-consent today at their site."""
    _run(
        user,
        study,
        json_out,
        lambda s: consent.consent_worklist(s.runtime.context, s.actor, s.study.id, site=site),
        _due,
    )


@consent_app.command("show")
def show(
    number: str,
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The consents a subject signed and any re-consent due."""
    _run(
        user,
        study,
        json_out,
        lambda s: consent.subject_consents(s.runtime.context, s.actor, s.study.id, number),
        _consents,
    )


@consent_app.command("reconsent")
def reconsent(
    number: str,
    date: str = typer.Option(..., "--date", help="the day signed (site-local)"),
    version: str = typer.Option(..., "--version"),
    document: str | None = typer.Option(None, "--document", help="default: the main consent"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Record a re-consent (e.g. to the version an amendment brought)."""
    on = require_date(date, "--date")
    _run(
        user,
        study,
        json_out,
        lambda s: consent.record_reconsent(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            signed_on=on,
            version=version,
            document=document,
        ),
        _consents,
    )


def _subject(v: dict[str, Any]) -> str:
    return f"{v['number']} at site {v['site']}: {v['state']}"


@exit_app.command("record")
def record(
    number: str,
    kind_of_exit: str = typer.Argument(..., metavar="death|withdrawal"),
    values: str = typer.Option(..., "--values", help="the form's values: JSON or @FILE"),
    kind: str | None = typer.Option(None, "--kind", help="what the subject withdraws from"),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Record a death or a withdrawal on the protocol's form."""
    form = parse_values(values)
    _run(
        user,
        study,
        json_out,
        lambda s: exits.record_exit(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            exit=kind_of_exit,
            values=form,
            kind=kind,
        ),
        _subject,
    )


@exit_app.command("contact")
def contact(
    number: str,
    visit: str = typer.Option(..., "--visit"),
    date: str = typer.Option(..., "--date"),
    forms: str = typer.Option(..., "--forms", help='{"form": {values}}: JSON or @FILE'),
    user: str | None = UserOpt,
    study: str | None = StudyOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Record a follow-up contact of a subject who withdrew but allows contact."""
    on = require_date(date, "--date")
    parsed = parse_values(forms, "--forms")
    _run(
        user,
        study,
        json_out,
        lambda s: exits.record_contact(
            s.runtime.context,
            s.actor,
            s.study.id,
            number,
            visit_code=visit,
            contact_date=on,
            forms=parsed,
        ),
        _subject,
    )
